//! The attribute's arguments: `key = "…", ttl = 60, cache_none = true,
//! cache = <expr>, stale = 300, lock = true, coalesce = false`.
//!
//! Parsed by hand, like tracing-attributes: each argument is `name = value`,
//! an unknown or repeated name is an error spanned at that name, and a value
//! of the wrong kind is an error spanned at the value.

use syn::parse::{Parse, ParseStream};
use syn::{Expr, LitBool, LitInt, LitStr, Token};

mod kw {
    syn::custom_keyword!(key);
    syn::custom_keyword!(ttl);
    syn::custom_keyword!(cache_none);
    syn::custom_keyword!(cache);
    syn::custom_keyword!(stale);
    syn::custom_keyword!(lock);
    syn::custom_keyword!(coalesce);
}

/// The arguments as written, with their spans; checked by `validate`.
#[derive(Default)]
pub struct CachedArgs {
    pub key: Option<LitStr>,
    pub ttl: Option<LitInt>,
    /// The keyword too, to point at it when the return type is not an `Option`.
    pub cache_none: Option<(kw::cache_none, LitBool)>,
    pub cache: Option<Expr>,
    pub stale: Option<LitInt>,
    pub lock: Option<LitBool>,
    pub coalesce: Option<LitBool>,
}

const EXPECTED: &str =
    "expected `key`, `ttl`, `cache_none`, `cache`, `stale`, `lock` or `coalesce`";

impl Parse for CachedArgs {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut args = CachedArgs::default();
        while !input.is_empty() {
            let lookahead = input.lookahead1();
            if lookahead.peek(kw::key) {
                let name: kw::key = input.parse()?;
                input.parse::<Token![=]>()?;
                let value: LitStr = value(
                    input,
                    "`key` must be a string literal, as in `key = \"user:{id}\"`",
                )?;
                set_once(&mut args.key, value, name.span, "key")?;
            } else if lookahead.peek(kw::ttl) {
                let name: kw::ttl = input.parse()?;
                input.parse::<Token![=]>()?;
                let value: LitInt = value(
                    input,
                    "`ttl` must be a whole number of seconds, as in `ttl = 60`",
                )?;
                set_once(&mut args.ttl, value, name.span, "ttl")?;
            } else if lookahead.peek(kw::cache_none) {
                let name: kw::cache_none = input.parse()?;
                input.parse::<Token![=]>()?;
                let value: LitBool = value(input, "`cache_none` must be `true` or `false`")?;
                set_once(&mut args.cache_none, (name, value), name.span, "cache_none")?;
            } else if lookahead.peek(kw::cache) {
                let name: kw::cache = input.parse()?;
                input.parse::<Token![=]>()?;
                let value: Expr = input.parse()?;
                set_once(&mut args.cache, value, name.span, "cache")?;
            } else if lookahead.peek(kw::stale) {
                let name: kw::stale = input.parse()?;
                input.parse::<Token![=]>()?;
                let value: LitInt = value(
                    input,
                    "`stale` must be a whole number of seconds, as in `stale = 300`",
                )?;
                set_once(&mut args.stale, value, name.span, "stale")?;
            } else if lookahead.peek(kw::lock) {
                let name: kw::lock = input.parse()?;
                input.parse::<Token![=]>()?;
                let value: LitBool = value(input, "`lock` must be `true` or `false`")?;
                set_once(&mut args.lock, value, name.span, "lock")?;
            } else if lookahead.peek(kw::coalesce) {
                let name: kw::coalesce = input.parse()?;
                input.parse::<Token![=]>()?;
                let value: LitBool = value(input, "`coalesce` must be `true` or `false`")?;
                set_once(&mut args.coalesce, value, name.span, "coalesce")?;
            } else if input.peek(syn::Ident) {
                let unknown: syn::Ident = input.parse()?;
                return Err(syn::Error::new(
                    unknown.span(),
                    format!("unknown argument `{unknown}`: {EXPECTED}"),
                ));
            } else {
                return Err(lookahead.error());
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }
}

/// Parses an argument's value; the error names the argument and shows an
/// example, where syn's would only say "expected string literal".
fn value<T: Parse>(input: ParseStream, message: &str) -> syn::Result<T> {
    input
        .parse()
        .map_err(|error| syn::Error::new(error.span(), message))
}

fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    name_span: proc_macro2::Span,
    name: &str,
) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new(
            name_span,
            format!("duplicate `{name}` argument"),
        ));
    }
    *slot = Some(value);
    Ok(())
}
