//! Parses the attributes' `name = value` arguments, as listed in [`ARGUMENTS`].
//!
//! Parsed by hand, like tracing-attributes: an unknown, misplaced or repeated
//! name is an error spanned at that name, and a value of the wrong kind is an
//! error spanned at the value. What a value means (a `ttl` of zero, a
//! placeholder naming no parameter) is checked later, by `validate`.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::{Expr, Ident, Lit, LitBool, LitStr, Path, Token};

use Attribute::{Cached, Evict, Put};

/// Which attribute is being parsed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    Cached,
    Put,
    Evict,
}

impl Attribute {
    pub fn name(self) -> &'static str {
        match self {
            Cached => "redis_cached",
            Put => "cache_put",
            Evict => "cache_evict",
        }
    }

    /// "expected `key`, `ttl` … or `local`": the arguments this attribute takes.
    fn expected(self) -> String {
        let names: Vec<String> = ARGUMENTS
            .iter()
            .filter(|argument| argument.on.contains(&self))
            .map(|argument| format!("`{}`", argument.name))
            .collect();
        let (last, rest) = names.split_last().expect("every attribute has arguments");
        format!("expected {} or {last}", rest.join(", "))
    }
}

/// Every argument of every attribute: name, the attributes that take it, and
/// its kind with the field of [`Args`] it fills. Adding one is a line here, a
/// field in `Args`, and its meaning in `validate`. The order is the order of
/// the "expected …" lists in error messages.
#[rustfmt::skip]
const ARGUMENTS: &[Argument] = &[
    Argument::new("key",        ALL,             Kind::Str(|args| &mut args.keys, &[Evict], "\"user:{id}\"")),
    Argument::new("ttl",        &[Cached, Put],  Kind::Duration(|args| &mut args.ttl, "60")),
    Argument::new("tag",        ALL,             Kind::Str(|args| &mut args.tags, ALL, "\"users\"")),
    Argument::new("cache_none", &[Cached, Put],  Kind::Bool(|args| &mut args.cache_none)),
    Argument::new("cache",      ALL,             Kind::Expr(|args| &mut args.cache)),
    Argument::new("stale",      &[Cached],       Kind::Duration(|args| &mut args.stale, "300")),
    Argument::new("lock",       &[Cached],       Kind::Bool(|args| &mut args.lock)),
    Argument::new("coalesce",   &[Cached],       Kind::Bool(|args| &mut args.coalesce)),
    Argument::new("before",     &[Evict],        Kind::Bool(|args| &mut args.before)),
    Argument::new("propagate",  &[Evict],        Kind::Bool(|args| &mut args.propagate)),
    Argument::new("local",      &[Cached],       Kind::Bool(|args| &mut args.local)),
    Argument::new("fail_safe",  &[Cached],       Kind::Duration(|args| &mut args.fail_safe, "3600")),
    Argument::new("fail_safe_throttle", &[Cached], Kind::Duration(|args| &mut args.fail_safe_throttle, "5")),
    Argument::new("soft_timeout", &[Cached],     Kind::Duration(|args| &mut args.soft_timeout, "1")),
    Argument::new("early_refresh", &[Cached],    Kind::Bool(|args| &mut args.early_refresh)),
    Argument::new("format",     &[Cached, Put],  Kind::Choice(|args| &mut args.format, &["json", "binary"])),
    Argument::new("cache_if",   &[Cached, Put],  Kind::Path(|args| &mut args.cache_if, "is_worth_caching")),
    Argument::new("ttl_from",   &[Cached, Put],  Kind::Path(|args| &mut args.ttl_from, "token_lifetime")),
];

const ALL: &[Attribute] = &[Cached, Put, Evict];

/// One row of [`ARGUMENTS`].
struct Argument {
    name: &'static str,
    /// The attributes that take it; elsewhere it is an error at its name.
    on: &'static [Attribute],
    kind: Kind,
}

impl Argument {
    const fn new(name: &'static str, on: &'static [Attribute], kind: Kind) -> Argument {
        Argument { name, on, kind }
    }
}

/// What an argument's value must be, and the field of [`Args`] it goes to.
enum Kind {
    /// A string literal: the field, the attributes that take it more than
    /// once (only eviction takes several keys), and an example value for the
    /// error about a value of another kind.
    Str(
        fn(&mut Args) -> &mut Vec<LitStr>,
        &'static [Attribute],
        &'static str,
    ),
    /// A duration: an integer literal (seconds) or a string literal with a
    /// unit (`"250ms"`); the field and an example.
    Duration(fn(&mut Args) -> &mut Option<Given<Lit>>, &'static str),
    /// `true` or `false`.
    Bool(fn(&mut Args) -> &mut Option<Given<LitBool>>),
    /// Any expression; syn's own errors say what is wrong with it.
    Expr(fn(&mut Args) -> &mut Option<Given<Expr>>),
    /// One of a few strings; the field and the choices.
    Choice(
        fn(&mut Args) -> &mut Option<Given<LitStr>>,
        &'static [&'static str],
    ),
    /// A path to a function; the field and an example.
    Path(fn(&mut Args) -> &mut Option<Given<Path>>, &'static str),
}

/// An argument given once, with the span of its name: some errors about its
/// value belong there (`cache_none` on a function not returning `Option`).
pub struct Given<T> {
    pub name: Span,
    pub value: T,
}

impl Given<LitBool> {
    pub fn is_true(&self) -> bool {
        self.value.value
    }
}

/// The arguments as written, with their spans; checked by `validate`.
#[derive(Default)]
pub struct Args {
    pub keys: Vec<LitStr>,
    pub tags: Vec<LitStr>,
    pub ttl: Option<Given<Lit>>,
    pub cache_none: Option<Given<LitBool>>,
    pub cache: Option<Given<Expr>>,
    pub stale: Option<Given<Lit>>,
    pub lock: Option<Given<LitBool>>,
    pub coalesce: Option<Given<LitBool>>,
    pub before: Option<Given<LitBool>>,
    pub propagate: Option<Given<LitBool>>,
    pub local: Option<Given<LitBool>>,
    pub fail_safe: Option<Given<Lit>>,
    pub fail_safe_throttle: Option<Given<Lit>>,
    pub soft_timeout: Option<Given<Lit>>,
    pub early_refresh: Option<Given<LitBool>>,
    pub format: Option<Given<LitStr>>,
    pub cache_if: Option<Given<Path>>,
    pub ttl_from: Option<Given<Path>>,
}

impl Args {
    pub fn parse(attribute: Attribute, tokens: proc_macro2::TokenStream) -> syn::Result<Args> {
        syn::parse::Parser::parse2(
            |input: ParseStream| Args::parse_in(attribute, input),
            tokens,
        )
    }

    fn parse_in(attribute: Attribute, input: ParseStream) -> syn::Result<Args> {
        let mut args = Args::default();
        while !input.is_empty() {
            args.parse_argument(attribute, input)?;
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }

    fn parse_argument(&mut self, attribute: Attribute, input: ParseStream) -> syn::Result<()> {
        // `Ident` does not accept keywords: `type = …` gets the list of names.
        if !input.peek(Ident) {
            let names: Vec<String> = ARGUMENTS
                .iter()
                .map(|argument| format!("`{}`", argument.name))
                .collect();
            return Err(input.error(format!("expected one of: {}", names.join(", "))));
        }
        let name: Ident = input.parse()?;
        let Some(argument) = ARGUMENTS.iter().find(|argument| name == argument.name) else {
            return Err(syn::Error::new(
                name.span(),
                format!("unknown argument `{name}`: {}", attribute.expected()),
            ));
        };
        if !argument.on.contains(&attribute) {
            return Err(syn::Error::new(
                name.span(),
                format!(
                    "`{name}` does not apply to #[{}]: {}",
                    attribute.name(),
                    attribute.expected()
                ),
            ));
        }
        let name = name.span();
        match argument.kind {
            Kind::Str(field, repeats_on, example) => {
                let value: LitStr = value(
                    input,
                    &format!(
                        "`{}` must be a string literal, as in `{} = {example}`",
                        argument.name, argument.name
                    ),
                )?;
                let values = field(self);
                if !values.is_empty() && !repeats_on.contains(&attribute) {
                    return Err(duplicate(argument.name, name));
                }
                values.push(value);
            }
            Kind::Duration(field, example) => {
                let message = format!(
                    "`{0}` must be a whole number of seconds or a string with a unit, as in `{0} = {example}` or `{0} = \"{example}s\"`",
                    argument.name
                );
                let value: Lit = value(input, &message)?;
                if !matches!(value, Lit::Int(_) | Lit::Str(_)) {
                    return Err(syn::Error::new(value.span(), message));
                }
                set_once(field(self), Given { name, value }, argument.name)?;
            }
            Kind::Bool(field) => {
                let value = value(
                    input,
                    &format!("`{}` must be `true` or `false`", argument.name),
                )?;
                set_once(field(self), Given { name, value }, argument.name)?;
            }
            Kind::Expr(field) => {
                input.parse::<Token![=]>()?;
                let value = input.parse()?;
                set_once(field(self), Given { name, value }, argument.name)?;
            }
            Kind::Choice(field, choices) => {
                let quoted: Vec<String> = choices.iter().map(|c| format!("\"{c}\"")).collect();
                let message = format!("`{}` is {}", argument.name, quoted.join(" or "));
                let value: LitStr = value(input, &message)?;
                if !choices.contains(&value.value().as_str()) {
                    return Err(syn::Error::new(value.span(), message));
                }
                set_once(field(self), Given { name, value }, argument.name)?;
            }
            Kind::Path(field, example) => {
                let message = format!(
                    "`{0}` must be the path of a function, as in `{0} = {example}`",
                    argument.name
                );
                let value: Path = value(input, &message)?;
                set_once(field(self), Given { name, value }, argument.name)?;
            }
        }
        Ok(())
    }
}

/// Parses `= value`; the error names the argument and shows an example,
/// where syn's would only say "expected string literal".
fn value<T: Parse>(input: ParseStream, message: &str) -> syn::Result<T> {
    input.parse::<Token![=]>()?;
    input
        .parse()
        .map_err(|error| syn::Error::new(error.span(), message))
}

fn duplicate(name: &str, span: Span) -> syn::Error {
    syn::Error::new(span, format!("duplicate `{name}` argument"))
}

fn set_once<T>(slot: &mut Option<Given<T>>, given: Given<T>, name: &str) -> syn::Result<()> {
    if slot.is_some() {
        return Err(duplicate(name, given.name));
    }
    *slot = Some(given);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(attribute: Attribute, tokens: &str) -> String {
        match Args::parse(attribute, tokens.parse().unwrap()) {
            Ok(_) => panic!("`{tokens}` parsed"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn each_name_is_one_row() {
        for (i, argument) in ARGUMENTS.iter().enumerate() {
            assert!(
                !argument.on.is_empty(),
                "`{}` applies nowhere",
                argument.name
            );
            assert!(
                ARGUMENTS[i + 1..].iter().all(|a| a.name != argument.name),
                "`{}` is listed twice",
                argument.name
            );
        }
    }

    #[test]
    fn several_keys_only_on_evict() {
        let two = "key = \"a:{x}\", key = \"b:{x}\", tag = \"t\", tag = \"u\"";
        let args = Args::parse(Evict, two.parse().unwrap()).unwrap();
        assert_eq!((args.keys.len(), args.tags.len()), (2, 2));
        assert_eq!(error(Cached, two), "duplicate `key` argument");
        assert_eq!(error(Put, two), "duplicate `key` argument");
    }

    #[test]
    fn lists_what_each_attribute_takes() {
        assert_eq!(
            error(Put, "stale = 5"),
            "`stale` does not apply to #[cache_put]: expected `key`, `ttl`, `tag`, `cache_none`, `cache`, `format`, `cache_if` or `ttl_from`"
        );
        assert_eq!(
            error(Evict, "nope = 5"),
            "unknown argument `nope`: expected `key`, `tag`, `cache`, `before` or `propagate`"
        );
        assert_eq!(
            error(Cached, "type = 5"),
            "expected one of: `key`, `ttl`, `tag`, `cache_none`, `cache`, `stale`, `lock`, `coalesce`, `before`, `propagate`, `local`, `fail_safe`, `fail_safe_throttle`, `soft_timeout`, `early_refresh`, `format`, `cache_if`, `ttl_from`"
        );
    }

    #[test]
    fn reads_flags() {
        let args = Args::parse(Evict, "propagate = true, before = false".parse().unwrap()).unwrap();
        assert!(args.propagate.as_ref().is_some_and(Given::is_true));
        assert!(!args.before.as_ref().unwrap().is_true());
        assert!(args.local.is_none());
    }
}
