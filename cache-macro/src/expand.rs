//! The rewrite: the original `async fn`, whose body now runs inside the
//! runtime's cached-call path.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{ItemFn, LitStr};

use crate::args::CachedArgs;
use crate::template::{Placeholder, Segment};
use crate::validate::{self, KeyPlan, Plan, Shape};

/// Entry point: parse, validate, expand. On any error the original function
/// is emitted unchanged next to the error, so that one mistake gives one
/// error and the rest of the crate still sees the function.
pub fn redis_cached(args: TokenStream, item: TokenStream) -> TokenStream {
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let error = syn::Error::new(
                item_start(&item),
                "#[redis_cached] applies to an `async fn` with a body",
            );
            return with_error(item, error);
        }
    };
    let plan = syn::parse2::<CachedArgs>(args).and_then(|args| {
        let cache = args.cache.clone();
        validate::validate(args, &function).map(|plan| (plan, cache))
    });
    match plan {
        Ok((plan, cache)) => expand(&function, &plan, cache.as_ref()),
        Err(error) => with_error(item, error),
    }
}

/// The item's first token after its attributes and visibility (`struct`,
/// `impl`, `fn`…): what the attribute was wrongly put on.
fn item_start(item: &TokenStream) -> Span {
    let parser = |input: ParseStream| {
        input.call(syn::Attribute::parse_outer)?;
        input.parse::<syn::Visibility>()?;
        let start = input.span();
        input.parse::<TokenStream>()?;
        Ok(start)
    };
    parser
        .parse2(item.clone())
        .unwrap_or_else(|_| Span::call_site())
}

fn with_error(item: TokenStream, error: syn::Error) -> TokenStream {
    let error = error.to_compile_error();
    quote!(#item #error)
}

// Input:
//     #[redis_cached(key = "user:{id}", ttl = 60)]
//     async fn get_user(db: &Pool, id: i64) -> Result<User, Error> { BODY }
//
// Output:
//     async fn get_user(db: &Pool, id: i64) -> Result<User, Error> {
//         static __CACHE_SITE: CallSite = CallSite::new("crate::module::get_user").ttl_secs(60);
//         assert_storable::<OkValues, Result<User, Error>>();
//         // With `cache = EXPR`: `&Clone::clone(CacheSource::cache(&(EXPR)))`.
//         match CacheSource::cache(&default_cache()) {
//             __cache_ctx => {
//                 let __cache_key = { "user:" + escaped(id) };
//                 cached_call::<OkValues, Result<User, Error>, _>(
//                     __cache_ctx, &__CACHE_SITE, __cache_key,
//                     async move { BODY },
//                 ).await
//             }
//         }
//     }
fn expand(function: &ItemFn, plan: &Plan, cache: Option<&syn::Expr>) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    let name = sig.ident.to_string();
    let return_type = &plan.return_type;
    // Spanned at the return type: rustc reports an unsatisfied `Shape<R>`
    // at the shape argument, so "cannot be cached" points there.
    let shape = shape_path(plan.shape, return_type.span());

    let storable_check = quote_spanned! {return_type.span()=>
        ::cache_runtime::__private::assert_storable::<#shape, #return_type>();
    };
    let cache_source = match cache {
        // A clone of the handle (one reference count), not a borrow of the
        // user's value: the body's `async move` may then move or mutably
        // use what the expression names (`cache: Arc<Cache>`, `&mut self`).
        Some(expr) => quote_spanned! {expr.span()=>
            &::core::clone::Clone::clone(::cache_runtime::__private::CacheSource::cache(&(#expr)))
        },
        None => quote!(::cache_runtime::__private::CacheSource::cache(
            &::cache_runtime::__private::default_cache()
        )),
    };
    let (capacity_hint, key_parts) = key_parts(plan, &name);
    let options = call_options(plan);
    // With `stale`, the body may run in the background after the caller has
    // its (stale) value, so it must be `Send + 'static`: that entry point
    // says so, and the compiler checks it.
    let entry_point = if plan.stale_seconds.is_some() {
        format_ident!("cached_call_stale")
    } else {
        format_ident!("cached_call")
    };
    // Pins the body's output type, so that `?` and `return` inside the moved
    // block infer as they did in the original function, and type errors in
    // the body still point at the user's return type (as tracing does).
    let fake_return = quote_spanned! {return_type.span()=>
        #[allow(
            unknown_lints,
            unreachable_code,
            clippy::diverging_sub_expression,
            clippy::empty_loop,
            clippy::let_unit_value,
            clippy::needless_return,
            clippy::unreachable
        )]
        if false {
            let __cache_fake_return: #return_type = loop {};
            return __cache_fake_return;
        }
    };
    // Spanned at the return type too: the call and its `.await` require the
    // same `Shape` as `assert_storable`, and rustc reports a failed obligation
    // once per span, so a return type that cannot be cached gives one error
    // rather than three (two of them at the attribute). With `stale`, at
    // `stale = …` instead: there the call also requires the body to be
    // `Send + 'static`, and that is what a body that borrows a parameter or
    // holds an `Rc` is told.
    let call_span = plan.stale_span.unwrap_or_else(|| return_type.span());
    let call = quote_spanned! {call_span=>
        ::cache_runtime::__private::#entry_point::<#shape, #return_type, _>(
            __cache_ctx,
            &__CACHE_SITE,
            __cache_key,
            async move {
                #fake_return
                #block
            },
        )
        .await
    };

    quote! {
        #(#attrs)*
        #vis #sig {
            static __CACHE_SITE: ::cache_runtime::__private::CallSite =
                ::cache_runtime::__private::CallSite::new(
                    ::core::concat!(::core::module_path!(), "::", #name)
                )
                #options;
            #storable_check
            match #cache_source {
                __cache_ctx => {
                    let __cache_key = {
                        let mut __cache_key =
                            ::cache_runtime::__private::key_builder(__cache_ctx, #capacity_hint);
                        #key_parts
                        __cache_key.finish()
                    };
                    #call
                }
            }
        }
    }
}

/// `.ttl_secs(60).stale_secs(300).lock(true)`: the attribute's options, set
/// on the function's `static` call site.
fn call_options(plan: &Plan) -> TokenStream {
    let mut options = TokenStream::new();
    if let Some(seconds) = plan.ttl_seconds {
        options.extend(quote!(.ttl_secs(#seconds)));
    }
    if let Some(seconds) = plan.stale_seconds {
        options.extend(quote!(.stale_secs(#seconds)));
    }
    if plan.lock {
        options.extend(quote!(.lock(true)));
    }
    if !plan.coalesce {
        options.extend(quote!(.coalesce(false)));
    }
    options
}

fn shape_path(shape: Shape, span: Span) -> TokenStream {
    match shape {
        Shape::OkValues => quote_spanned!(span=> ::cache_runtime::__private::OkValues),
        Shape::SomeValues => quote_spanned!(span=> ::cache_runtime::__private::SomeValues),
        Shape::OptionValues => quote_spanned!(span=> ::cache_runtime::__private::OptionValues),
        Shape::AnyValue => quote_spanned!(span=> ::cache_runtime::__private::AnyValue),
    }
}

/// The statements that push the key's parts into `__cache_key`, and a guess
/// at the key's length.
///
/// Input:  `"user:{id}:{self.tenant}"`
/// Output: `push_literal("user:"); push_value(&id); push_literal(":"); push_value(&self.tenant);`
fn key_parts(plan: &Plan, function_name: &str) -> (usize, TokenStream) {
    const VALUE_LEN_GUESS: usize = 16;
    let mut hint = 0;
    let mut parts = TokenStream::new();
    match &plan.key {
        KeyPlan::Template(template) => {
            for segment in &template.segments {
                match segment {
                    Segment::Literal(text) => {
                        hint += text.len();
                        let text = LitStr::new(text, template.span);
                        parts.extend(quote!(__cache_key.push_literal(#text);));
                    }
                    Segment::Placeholder(placeholder) => {
                        hint += VALUE_LEN_GUESS;
                        let value = placeholder_expr(placeholder, template.span);
                        // Spanned at the template, so "doesn't implement
                        // `Display`" points at the key string.
                        parts.extend(
                            quote_spanned!(template.span=> __cache_key.push_value(&#value);),
                        );
                    }
                }
            }
        }
        KeyPlan::Default(parameters) => {
            hint += function_name.len() + 32;
            // Methods are told apart by their type, which a module path alone
            // would not do.
            if plan.has_receiver {
                parts.extend(quote! {
                    __cache_key.push_literal(::core::any::type_name::<Self>());
                    __cache_key.push_literal(::core::concat!("::", #function_name));
                });
            } else {
                parts.extend(quote! {
                    __cache_key.push_literal(::core::concat!(::core::module_path!(), "::", #function_name));
                });
            }
            for parameter in parameters {
                hint += 1 + VALUE_LEN_GUESS;
                parts.extend(quote_spanned! {parameter.span()=>
                    __cache_key.push_literal(":");
                    __cache_key.push_value(&#parameter);
                });
            }
        }
    }
    (hint, parts)
}

/// `{user.address.city}` as the expression `user.address.city`, spanned at
/// the template so that errors point there.
fn placeholder_expr(placeholder: &Placeholder, span: Span) -> TokenStream {
    let root = if placeholder.root == "self" {
        quote_spanned!(span=> self)
    } else {
        let ident = format_ident!("{}", placeholder.root, span = span);
        quote!(#ident)
    };
    let fields = placeholder.fields.iter().map(|field| {
        let member: syn::Member = match field.parse::<u32>() {
            Ok(index) => syn::Member::Unnamed(syn::Index { index, span }),
            Err(_) => syn::Member::Named(format_ident!("{}", field, span = span)),
        };
        quote!(.#member)
    });
    quote!(#root #(#fields)*)
}
