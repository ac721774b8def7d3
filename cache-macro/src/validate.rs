//! Checks that need the function and the arguments together, before any code
//! is generated. Independent problems are reported together.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, Pat, ReturnType, Type};

use crate::args::{Args, Attribute, Given};
use crate::template::{self, Segment, Template};

/// Everything `expand` needs for `#[redis_cached]` and `#[cache_put]`,
/// already checked.
pub struct Plan {
    pub key: KeyPlan,
    /// Tag templates: sets that each stored entry joins.
    pub tags: Vec<Template>,
    pub ttl_millis: Option<u64>,
    pub stale_millis: Option<u64>,
    pub fail_safe_millis: Option<u64>,
    pub fail_safe_throttle_millis: Option<u64>,
    pub soft_timeout_millis: Option<u64>,
    pub early_refresh: bool,
    /// Where `stale`, or else `soft_timeout`, or else `early_refresh` is
    /// written: each may run the body after its caller has an answer, so the
    /// errors saying that the body is not `Send + 'static` point there.
    pub detach_span: Option<Span>,
    pub lock: bool,
    pub coalesce: bool,
    /// Where `local = true` is written, if it is.
    pub local: Option<Span>,
    /// Where `format = "binary"` is written, if it is: the `binary`
    /// feature is required there.
    pub binary: Option<Span>,
    /// `format = "json"` is written: the cache's default format is not used.
    pub json: bool,
    /// `cache_if = path`: stores a value only when it returns true.
    pub cache_if: Option<syn::Path>,
    /// `ttl_from = path`: the TTL of a value, bounded by `ttl`.
    pub ttl_from: Option<syn::Path>,
    pub shape: Shape,
    pub return_type: Type,
    pub has_receiver: bool,
}

/// Everything `expand` needs for `#[cache_evict]`.
pub struct EvictPlan {
    pub keys: Vec<Template>,
    pub tags: Vec<Template>,
    pub before: bool,
    /// Where `propagate = true` is written, if it is: `E: From<CacheError>`
    /// is required there.
    pub propagate: Option<Span>,
    /// `OkValues` for a `Result` (evict after `Ok` only), else `AnyValue`.
    pub success: Shape,
    /// `()` when the function declares no return type.
    pub return_type: Type,
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

pub fn validate(attribute: Attribute, args: &Args, function: &ItemFn) -> syn::Result<Plan> {
    let mut errors = Errors::default();
    let sig = &function.sig;
    check_async(attribute, sig, &mut errors);

    let return_type = check_return_type(&sig.output, sig.ident.span(), &mut errors);

    let has_receiver = sig.receiver().is_some();
    let parameters = named_parameters(function);
    let check = |lit: &syn::LitStr, errors: &mut Errors| {
        check_template(lit, &parameters, has_receiver, &sig.ident, errors)
    };

    let key = match args.keys.first() {
        Some(lit) => check(lit, &mut errors).map(KeyPlan::Template),
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
    let tags: Vec<Template> = args
        .tags
        .iter()
        .filter_map(|lit| check(lit, &mut errors))
        .collect();

    let ttl_millis = args.ttl.as_ref().and_then(|ttl| {
        duration_millis(
            &ttl.value,
            "ttl",
            "entries are never stored without an expiry",
            &mut errors,
        )
    });
    let stale_millis = args.stale.as_ref().and_then(|stale| {
        duration_millis(
            &stale.value,
            "stale",
            "leave `stale` out to serve no stale values",
            &mut errors,
        )
    });

    let fail_safe_millis = args.fail_safe.as_ref().and_then(|fail_safe| {
        duration_millis(
            &fail_safe.value,
            "fail_safe",
            "leave `fail_safe` out to keep no value past its TTL",
            &mut errors,
        )
    });
    let fail_safe_throttle_millis = args.fail_safe_throttle.as_ref().and_then(|throttle| {
        duration_millis(
            &throttle.value,
            "fail_safe_throttle",
            "leave `fail_safe_throttle` out to run the body again at the next call",
            &mut errors,
        )
    });
    let soft_timeout_millis = args.soft_timeout.as_ref().and_then(|soft_timeout| {
        duration_millis(
            &soft_timeout.value,
            "soft_timeout",
            "leave `soft_timeout` out to wait for the body",
            &mut errors,
        )
    });
    let early_refresh = args.early_refresh.as_ref().is_some_and(Given::is_true);
    check_fail_safe(args, return_type.as_ref(), &mut errors);

    let local = args
        .local
        .as_ref()
        .filter(|local| local.is_true())
        .map(|local| local.name);

    let mut shape = return_type.as_ref().map_or(Shape::AnyValue, shape_of);
    if let Some(cache_none) = &args.cache_none {
        if return_type.is_some() && shape != Shape::SomeValues {
            errors.at(
                cache_none.name,
                "`cache_none` only applies to functions returning `Option<T>`",
            );
        } else if cache_none.is_true() {
            shape = Shape::OptionValues;
        }
    }

    match (errors.0, key, return_type) {
        (None, Some(key), Some(return_type)) => Ok(Plan {
            key,
            tags,
            ttl_millis,
            stale_millis,
            fail_safe_millis,
            fail_safe_throttle_millis,
            soft_timeout_millis,
            early_refresh,
            detach_span: detach_span(args),
            binary: args
                .format
                .as_ref()
                .filter(|format| format.value.value() == "binary")
                .map(|format| format.value.span()),
            json: args
                .format
                .as_ref()
                .is_some_and(|format| format.value.value() == "json"),
            cache_if: args.cache_if.as_ref().map(|given| given.value.clone()),
            ttl_from: args.ttl_from.as_ref().map(|given| given.value.clone()),
            lock: args.lock.as_ref().is_some_and(Given::is_true),
            coalesce: args.coalesce.as_ref().is_none_or(Given::is_true),
            local,
            shape,
            return_type,
            has_receiver,
        }),
        (Some(error), _, _) => Err(error),
        (None, _, _) => unreachable!("a missing part always comes with an error"),
    }
}

pub fn validate_evict(args: &Args, function: &ItemFn) -> syn::Result<EvictPlan> {
    let mut errors = Errors::default();
    let sig = &function.sig;
    check_async(Attribute::Evict, sig, &mut errors);
    if args.keys.is_empty() && args.tags.is_empty() {
        errors.at(
            Span::call_site(),
            "#[cache_evict] needs at least one `key = \"…\"` or `tag = \"…\"` to evict",
        );
    }
    let has_receiver = sig.receiver().is_some();
    let parameters = named_parameters(function);
    let templates = |lits: &[syn::LitStr], errors: &mut Errors| -> Vec<Template> {
        lits.iter()
            .filter_map(|lit| check_template(lit, &parameters, has_receiver, &sig.ident, errors))
            .collect()
    };
    let keys = templates(&args.keys, &mut errors);
    let tags = templates(&args.tags, &mut errors);

    let return_type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    let success = match shape_of(strip_parens(&return_type)) {
        Shape::OkValues => Shape::OkValues,
        _ => Shape::AnyValue,
    };
    let propagate = match &args.propagate {
        Some(propagate) if propagate.is_true() && success != Shape::OkValues => {
            errors.at(
                propagate.name,
                "`propagate` returns a failed eviction as the function's error, so the function must return `Result<T, E>` with `E: From<cache_runtime::CacheError>`",
            );
            None
        }
        Some(propagate) if propagate.is_true() => Some(propagate.name),
        _ => None,
    };

    match errors.0 {
        Some(error) => Err(error),
        None => Ok(EvictPlan {
            keys,
            tags,
            before: args.before.as_ref().is_some_and(Given::is_true),
            propagate,
            success,
            return_type,
        }),
    }
}

/// `fail_safe`, `fail_safe_throttle` and `soft_timeout` together: the last
/// two need the first, which needs a body that can fail or be slow.
fn check_fail_safe(args: &Args, return_type: Option<&Type>, errors: &mut Errors) {
    let fail_safe = args.fail_safe.as_ref();
    if let (Some(throttle), None) = (&args.fail_safe_throttle, fail_safe) {
        errors.at(
            throttle.name,
            "`fail_safe_throttle` needs `fail_safe = …`: it answers calls with the last good value that `fail_safe` keeps",
        );
    }
    if let (Some(soft_timeout), None) = (&args.soft_timeout, fail_safe) {
        errors.at(
            soft_timeout.name,
            "`soft_timeout` needs `fail_safe = …`: a slow body is answered with the last good value that `fail_safe` keeps past the TTL (a `stale` value is already served at once)",
        );
    }
    // A return type already refused has its own error.
    let Some(return_type) = return_type else {
        return;
    };
    let can_fail = shape_of(return_type) == Shape::OkValues;
    if let (Some(throttle), Some(_), false) = (&args.fail_safe_throttle, fail_safe, can_fail) {
        errors.at(
            throttle.name,
            "`fail_safe_throttle` throttles the body after it returns an `Err`, and this function cannot: return a `Result`",
        );
    }
    if let Some(fail_safe) = fail_safe
        && !can_fail
        && args.soft_timeout.is_none()
    {
        errors.at(
            fail_safe.name,
            "`fail_safe` answers a failed call with the last good value, and this function cannot fail: return a `Result`, or add `soft_timeout = …` to answer slow calls",
        );
    }
}

/// Where `stale`, or else `soft_timeout`, or else `early_refresh = true`,
/// is written: any of them may run the body after its caller has an answer.
fn detach_span(args: &Args) -> Option<Span> {
    let early_refresh = args
        .early_refresh
        .as_ref()
        .filter(|early| early.is_true())
        .map(|early| early.value.span());
    [args.stale.as_ref(), args.soft_timeout.as_ref()]
        .into_iter()
        .flatten()
        .map(|given| given.value.span())
        .chain(early_refresh)
        .next()
}

fn check_async(attribute: Attribute, sig: &syn::Signature, errors: &mut Errors) {
    if sig.asyncness.is_none() {
        errors.at(
            sig.fn_token.span,
            format!(
                "#[{}] only applies to `async fn`: the cache is read and written asynchronously",
                attribute.name()
            ),
        );
    }
}

/// Parses a key or tag template and checks it against the parameters.
fn check_template(
    lit: &syn::LitStr,
    parameters: &[String],
    has_receiver: bool,
    function_name: &syn::Ident,
    errors: &mut Errors,
) -> Option<Template> {
    match template::parse(lit) {
        Ok(template) => {
            check_placeholders(&template, parameters, has_receiver, function_name, errors);
            check_delimiters(&template, errors);
            Some(template)
        }
        Err(error) => {
            errors.push(error);
            None
        }
    }
}

/// A duration argument in milliseconds: an integer is seconds; a string is
/// a whole number and a unit, `ms`, `s`, `m` or `h` (`"250ms"`, `"90s"`).
/// Errors are spanned at the literal.
fn duration_millis(
    lit: &syn::Lit,
    name: &str,
    why_not_zero: &str,
    errors: &mut Errors,
) -> Option<u64> {
    let (millis, span) = match lit {
        syn::Lit::Int(int) => {
            if !int.suffix().is_empty() {
                errors.at(
                    int.span(),
                    format!(
                        "`{name}` is a plain number of seconds, without a suffix; for another unit, write a string: `{name} = \"{}{}\"`",
                        int.base10_digits(),
                        int.suffix()
                    ),
                );
                return None;
            }
            let Ok(seconds) = int.base10_parse::<u64>() else {
                errors.at(int.span(), format!("`{name}` is too large"));
                return None;
            };
            (seconds.checked_mul(1000), int.span())
        }
        syn::Lit::Str(string) => match parse_duration(&string.value()) {
            Ok(millis) => (Some(millis), string.span()),
            Err(why) => {
                errors.at(string.span(), format!("`{name}`: {why}"));
                return None;
            }
        },
        other => {
            errors.at(
                other.span(),
                format!("`{name}` must be a number of seconds or a string with a unit"),
            );
            return None;
        }
    };
    match millis {
        Some(0) => {
            errors.at(
                span,
                format!("`{name}` must be greater than zero: {why_not_zero}"),
            );
            None
        }
        Some(millis) => Some(millis),
        None => {
            errors.at(span, format!("`{name}` is too large"));
            None
        }
    }
}

/// `"250ms"`, `"90s"`, `"5m"`, `"1h"` in milliseconds, or why not.
fn parse_duration(text: &str) -> Result<u64, String> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return Err(format!(
            "`{text}` is not a duration: write a whole number and a unit, as in \"250ms\", \"90s\", \"5m\" or \"1h\""
        ));
    }
    let per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => {
            return Err(format!(
                "`\"{text}\"` has no unit: write `\"{text}s\"` (or `ms`, `m`, `h`), or the number of seconds without quotes"
            ));
        }
        other => {
            return Err(format!(
                "unknown unit `{other}`: use `ms`, `s`, `m` or `h`, as in \"250ms\" or \"90s\""
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(per_unit))
        .ok_or_else(|| format!("`{text}` is too large"))
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

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_take_a_whole_number_and_a_unit() {
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert_eq!(parse_duration("90s"), Ok(90_000));
        assert_eq!(parse_duration("5m"), Ok(300_000));
        assert_eq!(parse_duration("1h"), Ok(3_600_000));
        for wrong in [
            "",
            "s",
            "60",
            "1.5s",
            "5d",
            "-1s",
            " 5s",
            "5 s",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(wrong).is_err(), "{wrong:?}");
        }
    }
}
