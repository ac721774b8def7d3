//! Checks that need the function and the arguments together, before any code
//! is generated. Independent problems are reported together.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, Pat, ReturnType, Type};

use crate::args::CachedArgs;
use crate::template::{self, Segment, Template};

/// Everything `expand` needs, already checked.
pub struct Plan {
    pub key: KeyPlan,
    pub ttl_seconds: Option<u64>,
    pub stale_seconds: Option<u64>,
    /// Where `stale = …` is written: the errors saying that the body is not
    /// `Send + 'static`, as `stale` requires, point there.
    pub stale_span: Option<Span>,
    pub lock: bool,
    pub coalesce: bool,
    pub shape: Shape,
    pub return_type: Type,
    pub has_receiver: bool,
}

pub enum KeyPlan {
    Template(Template),
    /// No `key`: the function's path, then every parameter except `self`.
    Default(Vec<syn::Ident>),
}

/// Which results are stored, chosen from the declared return type.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `Result<T, E>`: `Ok` only.
    OkValues,
    /// `Option<T>`: `Some` only.
    SomeValues,
    /// `Option<T>` with `cache_none = true`.
    OptionValues,
    /// Anything else.
    AnyValue,
}

/// Collects errors so that independent problems are reported in one pass.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(existing) => existing.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn at(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }
}

pub fn validate(args: CachedArgs, function: &ItemFn) -> syn::Result<Plan> {
    let mut errors = Errors::default();
    let sig = &function.sig;

    if sig.asyncness.is_none() {
        errors.at(
            sig.fn_token.span,
            "#[redis_cached] only applies to `async fn`: the cache is read and written asynchronously",
        );
    }

    let return_type = check_return_type(&sig.output, sig.ident.span(), &mut errors);

    let has_receiver = sig.receiver().is_some();
    let parameters = named_parameters(function);

    let key = match &args.key {
        Some(lit) => match template::parse(lit) {
            Ok(template) => {
                check_placeholders(
                    &template,
                    &parameters,
                    has_receiver,
                    &sig.ident,
                    &mut errors,
                );
                check_delimiters(&template, &mut errors);
                Some(KeyPlan::Template(template))
            }
            Err(error) => {
                errors.push(error);
                None
            }
        },
        None => {
            let mut idents = Vec::new();
            for input in &sig.inputs {
                if let FnArg::Typed(typed) = input {
                    match &*typed.pat {
                        Pat::Ident(pat) => idents.push(pat.ident.clone()),
                        other => errors.at(
                            other.span(),
                            "without `key`, every parameter is part of the key, so each needs a plain name; destructure it in the body, or set `key = \"…\"`",
                        ),
                    }
                }
            }
            Some(KeyPlan::Default(idents))
        }
    };

    let ttl_seconds = args.ttl.as_ref().and_then(|lit| {
        seconds(
            lit,
            "ttl",
            "entries are never stored without an expiry",
            &mut errors,
        )
    });
    let stale_seconds = args.stale.as_ref().and_then(|lit| {
        seconds(
            lit,
            "stale",
            "leave `stale` out to serve no stale values",
            &mut errors,
        )
    });

    let mut shape = return_type.as_ref().map_or(Shape::AnyValue, shape_of);
    if let Some((keyword, value)) = &args.cache_none {
        if return_type.is_some() && shape != Shape::SomeValues {
            errors.at(
                keyword.span,
                "`cache_none` only applies to functions returning `Option<T>`",
            );
        } else if value.value {
            shape = Shape::OptionValues;
        }
    }

    match (errors.0, key, return_type) {
        (None, Some(key), Some(return_type)) => Ok(Plan {
            key,
            ttl_seconds,
            stale_seconds,
            stale_span: args.stale.as_ref().map(syn::LitInt::span),
            lock: args.lock.as_ref().is_some_and(|lit| lit.value),
            coalesce: args.coalesce.as_ref().is_none_or(|lit| lit.value),
            shape,
            return_type,
            has_receiver,
        }),
        (Some(error), _, _) => Err(error),
        (None, _, _) => unreachable!("a missing part always comes with an error"),
    }
}

/// A whole number of seconds greater than zero, without a suffix.
fn seconds(lit: &syn::LitInt, name: &str, why_not_zero: &str, errors: &mut Errors) -> Option<u64> {
    match lit.base10_parse::<u64>() {
        Ok(0) => {
            errors.at(
                lit.span(),
                format!("`{name}` must be greater than zero: {why_not_zero}"),
            );
            None
        }
        Ok(seconds) if !lit.suffix().is_empty() => {
            errors.at(
                lit.span(),
                format!("`{name}` is a plain number of seconds, without a suffix"),
            );
            Some(seconds)
        }
        Ok(seconds) => Some(seconds),
        Err(_) => {
            errors.at(
                lit.span(),
                format!("`{name}` must be a whole number of seconds greater than zero"),
            );
            None
        }
    }
}

fn check_return_type(output: &ReturnType, name_span: Span, errors: &mut Errors) -> Option<Type> {
    let ty = match output {
        ReturnType::Default => {
            errors.at(
                name_span,
                "a cached function must return a value: this one returns `()`, so there is nothing to cache",
            );
            return None;
        }
        ReturnType::Type(_, ty) => strip_parens(ty),
    };
    let problem = match ty {
        Type::Tuple(tuple) if tuple.elems.is_empty() => {
            "a cached function must return a value: `()` leaves nothing to cache"
        }
        Type::ImplTrait(_) => {
            "a cached function cannot return `impl Trait`: a value read back from Redis needs a concrete type; name the type"
        }
        Type::Reference(_) => {
            "a cached function must return an owned value: a reference cannot be read back from Redis; return the owned type"
        }
        Type::Never(_) => "a cached function must return a value: `!` never returns one",
        _ => return Some(ty.clone()),
    };
    // `new_spanned` underlines the whole type (`&'static str`, `impl Display`),
    // where `ty.span()` is only its first token on stable.
    errors.push(syn::Error::new_spanned(ty, problem));
    None
}

fn strip_parens(ty: &Type) -> &Type {
    match ty {
        Type::Paren(inner) => strip_parens(&inner.elem),
        Type::Group(inner) => strip_parens(&inner.elem),
        other => other,
    }
}

/// `Result<…>` (including aliases such as `io::Result<T>`) and `Option<…>`,
/// recognised by the last path segment, as `?` users would expect.
fn shape_of(ty: &Type) -> Shape {
    let Type::Path(path) = ty else {
        return Shape::AnyValue;
    };
    match path.path.segments.last() {
        Some(last) if last.ident == "Result" => Shape::OkValues,
        Some(last) if last.ident == "Option" => Shape::SomeValues,
        _ => Shape::AnyValue,
    }
}

fn named_parameters(function: &ItemFn) -> Vec<String> {
    function
        .sig
        .inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Typed(typed) => match &*typed.pat {
                Pat::Ident(pat) => Some(pat.ident.to_string()),
                _ => None,
            },
            FnArg::Receiver(_) => None,
        })
        .collect()
}

fn check_placeholders(
    template: &Template,
    parameters: &[String],
    has_receiver: bool,
    function_name: &syn::Ident,
    errors: &mut Errors,
) {
    for segment in &template.segments {
        let Segment::Placeholder(placeholder) = segment else {
            continue;
        };
        let root = placeholder.root.as_str();
        let known = if root == "self" {
            has_receiver
        } else {
            parameters.iter().any(|p| p == root)
        };
        if known {
            continue;
        }
        let message = if root == "self" {
            format!(
                "`{{{}}}` uses `self`, but `{function_name}` has no `self` parameter",
                placeholder.text()
            )
        } else {
            let mut names: Vec<&str> = parameters.iter().map(String::as_str).collect();
            if has_receiver {
                names.insert(0, "self");
            }
            let available = if names.is_empty() {
                "it has no parameters".to_owned()
            } else {
                format!("its parameters are: {}", names.join(", "))
            };
            format!(
                "`{{{}}}` names no parameter of `{function_name}`; {available}",
                placeholder.text()
            )
        };
        errors.at(template.span, message);
    }
}

/// An escaped value only holds `[A-Za-z0-9._%-]`; between two placeholders the
/// template needs some other character, or the boundary between the two
/// values would be ambiguous (`"{a}{b}"` renders ("1", "23") and ("12", "3")
/// alike). See `cache_runtime`'s `keys` module.
fn check_delimiters(template: &Template, errors: &mut Errors) {
    let mut previous_was_placeholder = false;
    let mut between = String::new();
    for segment in &template.segments {
        match segment {
            Segment::Literal(text) => between.push_str(text),
            Segment::Placeholder(placeholder) => {
                let delimited = between.bytes().any(|b| !is_escaped_output(b));
                if previous_was_placeholder && !delimited {
                    errors.at(
                        template.span,
                        format!(
                            "`{{{}}}` must be separated from the previous placeholder by a delimiter such as `:` or `/` (letters, digits, `-`, `_`, `.` and `%` can be part of a value); otherwise two different arguments could give the same key",
                            placeholder.text()
                        ),
                    );
                }
                previous_was_placeholder = true;
                between.clear();
            }
        }
    }
}

/// Bytes that the runtime's escaping can emit (`cache_runtime::keys`).
fn is_escaped_output(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'%')
}
