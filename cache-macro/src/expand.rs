//! The rewrites: the original `async fn`, whose body now runs inside one of
//! the runtime's entry points, plus, for `#[redis_cached]`, the helpers
//! derived from it.

use std::collections::HashSet;

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, LitStr, Pat, Type};

use crate::args::{Args, Attribute};
use crate::template::{Placeholder, Segment, Template};
use crate::validate::{self, EvictPlan, KeyPlan, Plan, Shape};

/// Entry point: parse, validate, expand. On any error the original function
/// is emitted unchanged next to the error, so that one mistake gives one
/// error and the rest of the crate still sees the function.
pub fn attribute(attribute: Attribute, args: TokenStream, item: TokenStream) -> TokenStream {
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let error = syn::Error::new(
                item_start(&item),
                format!(
                    "#[{}] applies to an `async fn` with a body",
                    attribute.name()
                ),
            );
            return with_error(item, error);
        }
    };
    let expanded = Args::parse(attribute, args).and_then(|args| {
        let cache = args.cache.as_ref().map(|cache| &cache.value);
        match attribute {
            Attribute::Cached => validate::validate(attribute, &args, &function)
                .map(|plan| expand_cached(&function, &plan, cache)),
            Attribute::Put => validate::validate(attribute, &args, &function)
                .map(|plan| expand_put(&function, &plan, cache)),
            Attribute::Evict => validate::validate_evict(&args, &function)
                .map(|plan| expand_evict(&function, &plan, cache)),
        }
    });
    match expanded {
        Ok(tokens) => tokens,
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
//     #[redis_cached(key = "user:{id}", ttl = 60, tag = "users")]
//     async fn get_user(db: &Pool, id: i64) -> Result<User, Error> { BODY }
//
// Output:
//     async fn get_user(db: &Pool, id: i64) -> Result<User, Error> {
//         static __CACHE_SITE: CallSite = CallSite::new("crate::module::get_user").ttl_millis(60000);
//         assert_storable::<OkValues, Result<User, Error>>();
//         // With `cache = EXPR`: `&Clone::clone(CacheSource::cache(&(EXPR)))`.
//         match CacheSource::cache(&default_cache()) {
//             __cache_ctx => {
//                 let __cache_key = { "user:" + escaped(id) };
//                 let __cache_tags = vec![{ "#tag:users" }];
//                 cached_call::<OkValues, Result<User, Error>, _>(
//                     __cache_ctx, &__CACHE_SITE, __cache_key, __cache_tags,
//                     async move { BODY },
//                 ).await
//             }
//         }
//     }
//     async fn get_user_invalidate(id: i64) -> Result<(), CacheError> { … }
//     async fn get_user_refresh(db: &Pool, id: i64) -> Result<User, Error> { … }
fn expand_cached(function: &ItemFn, plan: &Plan, cache: Option<&syn::Expr>) -> TokenStream {
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
    let site = call_site(&name, call_options(plan));
    let cache_source = cache_source(cache);
    let key = key_expr(plan, &name);
    let tags = tags_expr(&plan.tags);
    // With `stale`, `soft_timeout` or `early_refresh`, the body may run in
    // the background after the caller has an answer, so it must be
    // `Send + 'static`: that entry point says so, and the compiler checks it.
    let entry_point = if plan.detach_span.is_some() {
        format_ident!("cached_call_detachable")
    } else {
        format_ident!("cached_call")
    };
    let body = moved_body(return_type, block);
    // Spanned at the return type too: the call and its `.await` require the
    // same `Shape` as `assert_storable`, and rustc reports a failed obligation
    // once per span, so a return type that cannot be cached gives one error
    // rather than three (two of them at the attribute). With `stale` (or
    // `soft_timeout`, `early_refresh`), at its value instead: there the call
    // also requires the body to be `Send + 'static`, and that is what a body
    // that borrows a parameter or holds an `Rc` is told.
    let call_span = plan.detach_span.unwrap_or_else(|| return_type.span());
    let local_ops = local_ops(plan, &shape, return_type);
    let rules = store_rules(plan, &shape, return_type);
    let call = quote_spanned! {call_span=>
        ::cache_runtime::__private::#entry_point::<#shape, #return_type, _>(
            __cache_ctx,
            &__CACHE_SITE,
            __cache_key,
            __cache_tags,
            #local_ops,
            #rules,
            #body,
        )
        .await
    };
    let invalidate = invalidate_helper(function, plan, cache);
    let refresh = refresh_helper(function, plan, cache);

    quote! {
        #(#attrs)*
        #vis #sig {
            #site
            #storable_check
            match #cache_source {
                __cache_ctx => {
                    let __cache_key = #key;
                    let __cache_tags = #tags;
                    #call
                }
            }
        }

        #invalidate

        #refresh
    }
}

// Input:
//     #[cache_put(key = "user:{id}", ttl = 60)]
//     async fn save_user(db: &Pool, id: i64, …) -> Result<User, Error> { BODY }
//
// Output: the same function, whose body runs inside
//     put_call::<OkValues, Result<User, Error>, _>(ctx, &SITE, key, tags, async move { BODY })
fn expand_put(function: &ItemFn, plan: &Plan, cache: Option<&syn::Expr>) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    let name = sig.ident.to_string();
    let put = put_body_named(&name, &name, plan, cache, block);
    quote! {
        #(#attrs)*
        #vis #sig {
            #put
        }
    }
}

// Input:
//     #[cache_evict(key = "user:{id}", tag = "users")]
//     async fn rename_user(db: &Pool, id: i64, …) -> Result<(), Error> { BODY }
//
// Output: the same function, whose body runs inside
//     evict_call::<OkValues, Result<(), Error>, _>(
//         ctx, &SITE, vec![Target::Key("user:…"), Target::Tag("#tag:users")], before,
//         async move { BODY })
fn expand_evict(function: &ItemFn, plan: &EvictPlan, cache: Option<&syn::Expr>) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    let name = sig.ident.to_string();
    let return_type = &plan.return_type;
    let site = call_site(&name, TokenStream::new());
    let cache_source = cache_source(cache);
    let targets = targets_expr(&plan.keys, &plan.tags);
    let before = plan.before;
    let body = moved_body(return_type, block);
    let call = if let Some(propagate_span) = plan.propagate {
        // Spanned at `propagate`: a missing `E: From<CacheError>` points there.
        quote_spanned! {propagate_span=>
            ::cache_runtime::__private::evict_call_propagating(
                __cache_ctx, &__CACHE_SITE, __cache_targets, #before, #body,
            )
            .await
        }
    } else {
        let success = shape_path(plan.success, return_type.span());
        quote! {
            ::cache_runtime::__private::evict_call::<#success, #return_type, _>(
                __cache_ctx, &__CACHE_SITE, __cache_targets, #before, #body,
            )
            .await
        }
    };
    quote! {
        #(#attrs)*
        #vis #sig {
            #site
            match #cache_source {
                __cache_ctx => {
                    let __cache_targets = #targets;
                    #call
                }
            }
        }
    }
}

// Input: `#[redis_cached(key = "t:{self.tenant}:user:{id}", cache = self.cache)]
//         async fn get_user(&self, db: &Pool, id: i64) -> …`
// Output:
//     /// Evicts the entry `get_user` stores for these arguments.
//     #[allow(dead_code)]
//     async fn get_user_invalidate(&self, id: i64) -> Result<(), CacheError> {
//         invalidate(ctx, &SITE, vec![Target::Key("t:…:user:…")]).await
//     }
// It takes only what the key and the `cache` expression name, in their
// original order, so code that knows `get_user` never rebuilds its key.
fn invalidate_helper(function: &ItemFn, plan: &Plan, cache: Option<&syn::Expr>) -> TokenStream {
    let sig = &function.sig;
    let name = format_ident!("{}_invalidate", sig.ident);
    let vis = &function.vis;
    let cfgs = cfg_attributes(function);

    let mut needed: HashSet<String> = match &plan.key {
        KeyPlan::Template(template) => placeholder_roots(template),
        KeyPlan::Default(parameters) => parameters.iter().map(ToString::to_string).collect(),
    };
    if let Some(expr) = cache {
        collect_idents(expr.to_token_stream(), &mut needed);
    }
    let inputs: Vec<FnArg> = sig
        .inputs
        .iter()
        .filter(|input| match input {
            FnArg::Receiver(_) => needed.contains("self"),
            FnArg::Typed(typed) => match &*typed.pat {
                Pat::Ident(pat) => needed.contains(&pat.ident.to_string()),
                _ => false,
            },
        })
        .cloned()
        .map(without_mut)
        .collect();
    let (generics, where_clause) = generics_for(sig, &inputs);

    let site = call_site(&name.to_string(), TokenStream::new());
    let cache_source = cache_source(cache);
    let key = key_expr(plan, &sig.ident.to_string());
    let doc = format!(
        "Evicts the entry that `{}` stores for these arguments (deferred inside `cache_runtime::deferred`).",
        sig.ident
    );
    quote! {
        #(#cfgs)*
        #[doc = #doc]
        #[allow(dead_code)]
        #vis async fn #name #generics (#(#inputs),*)
            -> ::core::result::Result<(), ::cache_runtime::CacheError>
            #where_clause
        {
            #site
            match #cache_source {
                __cache_ctx => {
                    let __cache_key = #key;
                    ::cache_runtime::__private::invalidate(
                        __cache_ctx,
                        &__CACHE_SITE,
                        ::std::vec![::cache_runtime::Target::Key(__cache_key)],
                    )
                    .await
                }
            }
        }
    }
}

// Output: `async fn get_user_refresh(<the same parameters>) -> <the same type>`,
// which runs the body and stores its result (write-through), whatever is
// cached now.
fn refresh_helper(function: &ItemFn, plan: &Plan, cache: Option<&syn::Expr>) -> TokenStream {
    let mut sig = function.sig.clone();
    let function_name = sig.ident.to_string();
    sig.ident = format_ident!("{}_refresh", sig.ident);
    let vis = &function.vis;
    let cfgs = cfg_attributes(function);
    let doc =
        format!("Runs `{function_name}`'s body and stores its result, replacing the cached entry.");
    // The key names the original function, so both render the same key.
    let put = put_body_named(
        &sig.ident.to_string(),
        &function_name,
        plan,
        cache,
        &function.block,
    );
    quote! {
        #(#cfgs)*
        #[doc = #doc]
        #[allow(dead_code)]
        #vis #sig {
            #put
        }
    }
}

/// The body of a write-through function, `#[cache_put]` or a derived
/// `…_refresh` helper: its site is named `site_name`, while a default key
/// names `key_function` (the cached function, for a helper).
fn put_body_named(
    site_name: &str,
    key_function: &str,
    plan: &Plan,
    cache: Option<&syn::Expr>,
    block: &syn::Block,
) -> TokenStream {
    let return_type = &plan.return_type;
    let shape = shape_path(plan.shape, return_type.span());
    let site = call_site(site_name, call_options(plan));
    let cache_source = cache_source(cache);
    let key = key_expr(plan, key_function);
    let tags = tags_expr(&plan.tags);
    let body = moved_body(return_type, block);
    let rules = store_rules(plan, &shape, return_type);
    quote_spanned! {return_type.span()=>
        #site
        ::cache_runtime::__private::assert_storable::<#shape, #return_type>();
        match #cache_source {
            __cache_ctx => {
                let __cache_key = #key;
                let __cache_tags = #tags;
                ::cache_runtime::__private::put_call::<#shape, #return_type, _>(
                    __cache_ctx,
                    &__CACHE_SITE,
                    __cache_key,
                    __cache_tags,
                    #rules,
                    #body,
                )
                .await
            }
        }
    }
}

/// `#[cfg(…)]` attributes: a helper exists exactly when its function does.
fn cfg_attributes(function: &ItemFn) -> Vec<&syn::Attribute> {
    function
        .attrs
        .iter()
        .filter(|attr| attr.path().is_ident("cfg"))
        .collect()
}

/// A parameter without `mut`: the helper only reads it.
fn without_mut(mut input: FnArg) -> FnArg {
    if let FnArg::Typed(typed) = &mut input
        && let Pat::Ident(pat) = &mut *typed.pat
    {
        pat.mutability = None;
    }
    input
}

/// The function's generics and `where` clause if the kept parameters mention
/// any of its generic parameters, else none (an unused generic parameter
/// could not be inferred at the helper's call sites).
fn generics_for(sig: &syn::Signature, inputs: &[FnArg]) -> (TokenStream, TokenStream) {
    let mut generic_names = HashSet::new();
    for param in &sig.generics.params {
        match param {
            syn::GenericParam::Type(ty) => generic_names.insert(ty.ident.to_string()),
            syn::GenericParam::Lifetime(lt) => generic_names.insert(lt.lifetime.ident.to_string()),
            syn::GenericParam::Const(c) => generic_names.insert(c.ident.to_string()),
        };
    }
    let mut used = HashSet::new();
    for input in inputs {
        if let FnArg::Typed(typed) = input {
            collect_idents(typed.ty.to_token_stream(), &mut used);
        }
    }
    if generic_names.is_disjoint(&used) {
        return (TokenStream::new(), TokenStream::new());
    }
    let generics = &sig.generics;
    (
        generics.to_token_stream(),
        generics.where_clause.to_token_stream(),
    )
}

/// Every identifier (and lifetime name) in `tokens`.
fn collect_idents(tokens: TokenStream, into: &mut HashSet<String>) {
    for token in tokens {
        match token {
            TokenTree::Ident(ident) => {
                into.insert(ident.to_string());
            }
            TokenTree::Group(group) => collect_idents(group.stream(), into),
            TokenTree::Punct(_) | TokenTree::Literal(_) => {}
        }
    }
}

fn placeholder_roots(template: &Template) -> HashSet<String> {
    template
        .segments
        .iter()
        .filter_map(|segment| match segment {
            Segment::Placeholder(placeholder) => Some(placeholder.root.clone()),
            Segment::Literal(_) => None,
        })
        .collect()
}

/// `static __CACHE_SITE: CallSite = CallSite::new("crate::module::name")…;`
fn call_site(name: &str, options: TokenStream) -> TokenStream {
    quote! {
        static __CACHE_SITE: ::cache_runtime::__private::CallSite =
            ::cache_runtime::__private::CallSite::new(
                ::core::concat!(::core::module_path!(), "::", #name)
            )
            #options;
    }
}

/// The `&Cache` to use.
fn cache_source(cache: Option<&syn::Expr>) -> TokenStream {
    match cache {
        // A clone of the handle (one reference count), not a borrow of the
        // user's value: the body's `async move` may then move or mutably
        // use what the expression names (`cache: Arc<Cache>`, `&mut self`).
        Some(expr) => quote_spanned! {expr.span()=>
            &::core::clone::Clone::clone(::cache_runtime::__private::CacheSource::cache(&(#expr)))
        },
        None => quote!(::cache_runtime::__private::CacheSource::cache(
            &::cache_runtime::__private::default_cache()
        )),
    }
}

/// `async move { BODY }`, with the output type pinned: `?` and `return`
/// inside the moved block infer as they did in the original function, and
/// type errors in the body still point at the user's return type (as
/// tracing does).
///
/// The pin is a `return` of a value of the declared type on an edge that is
/// never taken. Matching on `None` gives that value without a diverging
/// expression, so nothing is unreachable and no lint needs an `allow`: a
/// crate may `forbid(unreachable_code)`, which no `allow` can override.
fn moved_body(return_type: &Type, block: &syn::Block) -> TokenStream {
    let fake_return = quote_spanned! {return_type.span()=>
        match ::core::option::Option::<#return_type>::None {
            ::core::option::Option::Some(__cache_fake_return) => return __cache_fake_return,
            ::core::option::Option::None => {}
        }
    };
    quote! {
        async move {
            #fake_return
            #block
        }
    }
}

/// How to keep the stored type in the local tier: `Some` when it is `Clone`
/// (autoref specialization picks that impl for concrete types), else `None`,
/// so that the builder's switch for all functions applies where it can.
/// With `local = true`, `Clone` is required, and reported at `local`.
fn local_ops(plan: &Plan, shape: &TokenStream, return_type: &Type) -> TokenStream {
    let stored = quote!(<#shape as ::cache_runtime::__private::Shape<#return_type>>::Stored);
    let required = plan.local.map(|span| {
        quote_spanned! {span=>
            ::cache_runtime::__private::assert_local::<#shape, #return_type>();
        }
    });
    quote! {{
        #required
        #[allow(unused_imports)]
        use ::cache_runtime::__private::{NotLocal as _, ViaClone as _};
        (&::cache_runtime::__private::Probe::<#stored>::new()).local_ops()
    }}
}

/// The rules that decide, from the value, whether and for how long it is
/// stored: `StoreRules::new()`, with `.cache_if(path)` and
/// `.ttl_from(path)`. A path that names no function, or one of the wrong
/// type, is an error at the path: the methods take `fn(&Stored) -> bool`
/// and `fn(&Stored) -> Duration`.
fn store_rules(plan: &Plan, shape: &TokenStream, return_type: &Type) -> TokenStream {
    let stored = quote!(<#shape as ::cache_runtime::__private::Shape<#return_type>>::Stored);
    let mut rules = quote!(::cache_runtime::__private::StoreRules::<#stored>::new());
    if let Some(path) = &plan.cache_if {
        rules = quote!(#rules.cache_if(#path));
    }
    if let Some(path) = &plan.ttl_from {
        rules = quote!(#rules.ttl_from(#path));
    }
    rules
}

/// `.ttl_millis(60000).stale_millis(300000).lock(true)`: the attribute's
/// options, set on the function's `static` call site.
fn call_options(plan: &Plan) -> TokenStream {
    let mut options = TokenStream::new();
    if let Some(millis) = plan.ttl_millis {
        options.extend(quote!(.ttl_millis(#millis)));
    }
    if let Some(millis) = plan.stale_millis {
        options.extend(quote!(.stale_millis(#millis)));
    }
    if let Some(millis) = plan.fail_safe_millis {
        options.extend(quote!(.fail_safe_millis(#millis)));
    }
    if let Some(millis) = plan.fail_safe_throttle_millis {
        options.extend(quote!(.fail_safe_throttle_millis(#millis)));
    }
    if let Some(millis) = plan.soft_timeout_millis {
        options.extend(quote!(.soft_timeout_millis(#millis)));
    }
    if plan.early_refresh {
        options.extend(quote!(.early_refresh(true)));
    }
    if let Some(span) = plan.binary {
        // Spanned at `"binary"`: without the `binary` feature, the error
        // that names it points there.
        options.extend(
            quote_spanned!(span=> .format(::cache_runtime::__private::binary_format::<()>())),
        );
    }
    if plan.json {
        options.extend(quote!(.format(::cache_runtime::Format::Json)));
    }
    if plan.lock {
        options.extend(quote!(.lock(true)));
    }
    if !plan.coalesce {
        options.extend(quote!(.coalesce(false)));
    }
    if plan.local.is_some() {
        options.extend(quote!(.local(true)));
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

/// Which builder starts a rendered template.
#[derive(Clone, Copy)]
enum Namespace {
    Key,
    Tag,
}

const VALUE_LEN_GUESS: usize = 16;

/// The entry's key, as an expression of type `String`.
fn key_expr(plan: &Plan, function_name: &str) -> TokenStream {
    match &plan.key {
        KeyPlan::Template(template) => template_expr(template, Namespace::Key),
        KeyPlan::Default(parameters) => {
            default_key_expr(parameters, plan.has_receiver, function_name)
        }
    }
}

/// `vec![tag, …]` as full tag-set keys (`Vec::new()`, which does not
/// allocate, when there are none).
fn tags_expr(tags: &[Template]) -> TokenStream {
    let tags = tags.iter().map(|tag| template_expr(tag, Namespace::Tag));
    quote!(::std::vec![#(#tags),*])
}

/// `vec![Target::Key(…), Target::Tag(…)]`
fn targets_expr(keys: &[Template], tags: &[Template]) -> TokenStream {
    let keys = keys.iter().map(|key| {
        let key = template_expr(key, Namespace::Key);
        quote!(::cache_runtime::Target::Key(#key))
    });
    let tags = tags.iter().map(|tag| {
        let tag = template_expr(tag, Namespace::Tag);
        quote!(::cache_runtime::Target::Tag(#tag))
    });
    quote!(::std::vec![#(#keys,)* #(#tags),*])
}

/// A block that renders `template` with `__cache_ctx`'s prefix.
///
/// Input:  `"user:{id}:{self.tenant}"`
/// Output: `{ let mut b = key_builder(ctx, hint); b.push_literal("user:");
///            b.push_value(&id); b.push_literal(":"); b.push_value(&self.tenant); b.finish() }`
fn template_expr(template: &Template, namespace: Namespace) -> TokenStream {
    let mut hint = 0;
    let mut parts = TokenStream::new();
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
                // Spanned at the template, so "doesn't implement `Display`"
                // points at the key string.
                parts.extend(quote_spanned!(template.span=> __cache_key.push_value(&#value);));
            }
        }
    }
    let builder = match namespace {
        Namespace::Key => quote!(key_builder),
        Namespace::Tag => quote!(tag_builder),
    };
    quote! {{
        let mut __cache_key = ::cache_runtime::__private::#builder(__cache_ctx, #hint);
        #parts
        __cache_key.finish()
    }}
}

/// Without `key`: the function's path, then every parameter except `self`.
/// Methods are told apart by their type, which a module path alone would not.
fn default_key_expr(
    parameters: &[syn::Ident],
    has_receiver: bool,
    function_name: &str,
) -> TokenStream {
    let hint = function_name.len() + 32 + parameters.len() * (1 + VALUE_LEN_GUESS);
    let path = if has_receiver {
        quote! {
            __cache_key.push_literal(::core::any::type_name::<Self>());
            __cache_key.push_literal(::core::concat!("::", #function_name));
        }
    } else {
        quote! {
            __cache_key.push_literal(::core::concat!(::core::module_path!(), "::", #function_name));
        }
    };
    let values = parameters.iter().map(|parameter| {
        quote_spanned! {parameter.span()=>
            __cache_key.push_literal(":");
            __cache_key.push_value(&#parameter);
        }
    });
    quote! {{
        let mut __cache_key = ::cache_runtime::__private::key_builder(__cache_ctx, #hint);
        #path
        #(#values)*
        __cache_key.finish()
    }}
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
