//! The `#[redis_cached]` attribute. Depend on `cache-runtime`, which
//! re-exports it and documents it; the generated code calls only
//! `::cache_runtime::__private`.
//!
//! The macro is kept thin: it parses (`args`, `template`), validates
//! (`validate`) and expands (`expand`); all behaviour lives in the runtime.

mod args;
mod expand;
mod template;
mod validate;

use proc_macro::TokenStream;

/// Caches an `async fn`'s results in Redis. See `cache_runtime::redis_cached`.
#[proc_macro_attribute]
pub fn redis_cached(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::redis_cached(args.into(), item.into()).into()
}
