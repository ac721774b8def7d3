//! The attributes' arguments, `name = value` each:
//!
//! - `#[redis_cached]`: `key`, `ttl`, `tag`, `cache_none`, `cache`, `stale`,
//!   `lock`, `coalesce`, `local`;
//! - `#[cache_put]`: `key`, `ttl`, `tag`, `cache_none`, `cache`;
//! - `#[cache_evict]`: `key` and `tag` (each any number of times), `cache`,
//!   `before`, `propagate`.
//!
//! Parsed by hand, like tracing-attributes: an unknown, misplaced or repeated
//! name is an error spanned at that name, and a value of the wrong kind is an
//! error spanned at the value.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::{Expr, LitBool, LitInt, LitStr, Token};

mod kw {
    syn::custom_keyword!(key);
    syn::custom_keyword!(ttl);
    syn::custom_keyword!(tag);
    syn::custom_keyword!(cache_none);
    syn::custom_keyword!(cache);
    syn::custom_keyword!(stale);
    syn::custom_keyword!(lock);
    syn::custom_keyword!(coalesce);
    syn::custom_keyword!(before);
    syn::custom_keyword!(propagate);
    syn::custom_keyword!(local);
}

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
            Attribute::Cached => "redis_cached",
            Attribute::Put => "cache_put",
            Attribute::Evict => "cache_evict",
        }
    }

    fn arguments(self) -> &'static [&'static str] {
        match self {
            Attribute::Cached => &[
                "key",
                "ttl",
                "tag",
                "cache_none",
                "cache",
                "stale",
                "lock",
                "coalesce",
                "local",
            ],
            Attribute::Put => &["key", "ttl", "tag", "cache_none", "cache"],
            Attribute::Evict => &["key", "tag", "cache", "before", "propagate"],
        }
    }

    fn expected(self) -> String {
        let names: Vec<String> = self
            .arguments()
            .iter()
            .map(|name| format!("`{name}`"))
            .collect();
        let (last, rest) = names.split_last().expect("every attribute has arguments");
        format!("expected {} or {last}", rest.join(", "))
    }
}

/// The arguments as written, with their spans; checked by `validate`.
pub struct Args {
    pub attribute: Attribute,
    pub keys: Vec<LitStr>,
    pub tags: Vec<LitStr>,
    pub ttl: Option<LitInt>,
    /// The keyword too, to point at it when the return type is not an `Option`.
    pub cache_none: Option<(kw::cache_none, LitBool)>,
    pub cache: Option<Expr>,
    pub stale: Option<LitInt>,
    pub lock: Option<LitBool>,
    pub coalesce: Option<LitBool>,
    pub before: Option<LitBool>,
    /// The keyword too, to point at it when the return type is not a `Result`.
    pub propagate: Option<(kw::propagate, LitBool)>,
    /// The keyword too: the `Clone` requirement is reported there.
    pub local: Option<(kw::local, LitBool)>,
}

impl Args {
    pub fn parse(attribute: Attribute, tokens: proc_macro2::TokenStream) -> syn::Result<Args> {
        syn::parse::Parser::parse2(
            |input: ParseStream| Args::parse_in(attribute, input),
            tokens,
        )
    }

    fn parse_in(attribute: Attribute, input: ParseStream) -> syn::Result<Args> {
        let mut args = Args {
            attribute,
            keys: Vec::new(),
            tags: Vec::new(),
            ttl: None,
            cache_none: None,
            cache: None,
            stale: None,
            lock: None,
            coalesce: None,
            before: None,
            propagate: None,
            local: None,
        };
        while !input.is_empty() {
            args.parse_argument(input)?;
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }

    fn parse_argument(&mut self, input: ParseStream) -> syn::Result<()> {
        let lookahead = input.lookahead1();
        if lookahead.peek(kw::key) {
            let name: kw::key = input.parse()?;
            self.allowed("key", name.span)?;
            let value: LitStr = value(
                input,
                "`key` must be a string literal, as in `key = \"user:{id}\"`",
            )?;
            // Only eviction takes several keys.
            if self.attribute != Attribute::Evict && !self.keys.is_empty() {
                return Err(duplicate("key", name.span));
            }
            self.keys.push(value);
        } else if lookahead.peek(kw::tag) {
            let name: kw::tag = input.parse()?;
            self.allowed("tag", name.span)?;
            let value: LitStr = value(
                input,
                "`tag` must be a string literal, as in `tag = \"users\"`",
            )?;
            self.tags.push(value);
        } else if lookahead.peek(kw::ttl) {
            let name: kw::ttl = input.parse()?;
            self.allowed("ttl", name.span)?;
            let value: LitInt = value(
                input,
                "`ttl` must be a whole number of seconds, as in `ttl = 60`",
            )?;
            set_once(&mut self.ttl, value, name.span, "ttl")?;
        } else if lookahead.peek(kw::cache_none) {
            let name: kw::cache_none = input.parse()?;
            self.allowed("cache_none", name.span)?;
            let value: LitBool = value(input, "`cache_none` must be `true` or `false`")?;
            set_once(&mut self.cache_none, (name, value), name.span, "cache_none")?;
        } else if lookahead.peek(kw::cache) {
            let name: kw::cache = input.parse()?;
            self.allowed("cache", name.span)?;
            input.parse::<Token![=]>()?;
            let value: Expr = input.parse()?;
            set_once(&mut self.cache, value, name.span, "cache")?;
        } else if lookahead.peek(kw::stale) {
            let name: kw::stale = input.parse()?;
            self.allowed("stale", name.span)?;
            let value: LitInt = value(
                input,
                "`stale` must be a whole number of seconds, as in `stale = 300`",
            )?;
            set_once(&mut self.stale, value, name.span, "stale")?;
        } else if lookahead.peek(kw::lock) {
            let name: kw::lock = input.parse()?;
            self.allowed("lock", name.span)?;
            let value: LitBool = value(input, "`lock` must be `true` or `false`")?;
            set_once(&mut self.lock, value, name.span, "lock")?;
        } else if lookahead.peek(kw::coalesce) {
            let name: kw::coalesce = input.parse()?;
            self.allowed("coalesce", name.span)?;
            let value: LitBool = value(input, "`coalesce` must be `true` or `false`")?;
            set_once(&mut self.coalesce, value, name.span, "coalesce")?;
        } else if lookahead.peek(kw::before) {
            let name: kw::before = input.parse()?;
            self.allowed("before", name.span)?;
            let value: LitBool = value(input, "`before` must be `true` or `false`")?;
            set_once(&mut self.before, value, name.span, "before")?;
        } else if lookahead.peek(kw::propagate) {
            let name: kw::propagate = input.parse()?;
            self.allowed("propagate", name.span)?;
            let value: LitBool = value(input, "`propagate` must be `true` or `false`")?;
            set_once(&mut self.propagate, (name, value), name.span, "propagate")?;
        } else if lookahead.peek(kw::local) {
            let name: kw::local = input.parse()?;
            self.allowed("local", name.span)?;
            let value: LitBool = value(input, "`local` must be `true` or `false`")?;
            set_once(&mut self.local, (name, value), name.span, "local")?;
        } else if input.peek(syn::Ident) {
            let unknown: syn::Ident = input.parse()?;
            return Err(syn::Error::new(
                unknown.span(),
                format!(
                    "unknown argument `{unknown}`: {}",
                    self.attribute.expected()
                ),
            ));
        } else {
            return Err(lookahead.error());
        }
        Ok(())
    }

    /// An argument of another attribute (`before` on `#[redis_cached]`) is an
    /// error at its name.
    fn allowed(&self, name: &str, span: Span) -> syn::Result<()> {
        if self.attribute.arguments().contains(&name) {
            return Ok(());
        }
        Err(syn::Error::new(
            span,
            format!(
                "`{name}` does not apply to #[{}]: {}",
                self.attribute.name(),
                self.attribute.expected()
            ),
        ))
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

fn set_once<T>(slot: &mut Option<T>, value: T, name_span: Span, name: &str) -> syn::Result<()> {
    if slot.is_some() {
        return Err(duplicate(name, name_span));
    }
    *slot = Some(value);
    Ok(())
}
