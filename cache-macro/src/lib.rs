//! The `#[redis_cached]`, `#[cache_put]` and `#[cache_evict]` attributes.
//! Depend on `cache-runtime`, which re-exports and documents them; the
//! generated code calls only `::cache_runtime::__private`.
//!
//! The macros are kept thin: they parse (`args`, `template`), validate
//! (`validate`) and expand (`expand`); all behaviour lives in the runtime.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod args;
mod expand;
mod template;
mod validate;

use proc_macro::TokenStream;

use args::Attribute;

/// Caches an `async fn`'s results in Redis. See `cache_runtime::redis_cached`.
#[proc_macro_attribute]
pub fn redis_cached(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::attribute(Attribute::Cached, args.into(), item.into()).into()
}

/// Runs an `async fn` and stores its result. See `cache_runtime::cache_put`.
#[proc_macro_attribute]
pub fn cache_put(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::attribute(Attribute::Put, args.into(), item.into()).into()
}

/// Evicts keys or tags when an `async fn` succeeds. See `cache_runtime::cache_evict`.
#[proc_macro_attribute]
pub fn cache_evict(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::attribute(Attribute::Evict, args.into(), item.into()).into()
}
