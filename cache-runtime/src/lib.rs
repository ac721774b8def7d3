//! Memoize async functions in Redis.
//!
//! ```no_run
//! use cache_runtime::redis_cached;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct User { id: i64, name: String }
//!
//! #[redis_cached(key = "user:{id}", ttl = 60)]
//! async fn get_user(id: i64) -> Result<User, std::io::Error> {
//!     // The expensive part: a database query, an HTTP call…
//!     Ok(User { id, name: "Ada".into() })
//! }
//! ```
//!
//! The first call runs the body and stores `Ok` values under `user:42` for 60
//! seconds; the next calls read them from Redis. The cache never makes a call
//! fail: when Redis is down, slow or returns garbage, the body runs, its value
//! is returned, and the incident is logged (rate-limited) and counted.
//!
//! See the [`redis_cached`] attribute for its arguments, [`Cache`] and
//! [`CacheBuilder`] for configuration, and [`metrics`] for the counters.

mod cache;
mod call;
mod codec;
mod config;
mod connection;
mod error;
mod flight;
mod incident;
mod invalidate;
mod keys;
mod local;
mod lock;
pub mod metrics;
mod random;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use cache::{Cache, escape_key_part};
pub use call::{Outcome, track_outcome};
pub use codec::FORMAT_VERSION;
pub use config::{
    CacheBuilder, ConnectionPlacement, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DEADLINE,
    DEFAULT_LOCK_LEASE, DEFAULT_LOCK_WAIT, DEFAULT_LOG_INTERVAL, DEFAULT_MAX_KEY_LEN,
    DEFAULT_MAX_RECONNECT_BACKOFF, DEFAULT_TTL, DEFAULT_TTL_JITTER, DEFAULT_URL, redact_url,
};
pub use error::{AlreadyInstalled, CacheError, ConfigError};
pub use invalidate::{PendingInvalidations, Target, deferred};
pub use local::LocalTier;

/// Caches an `async fn`'s results in Redis.
///
/// ```ignore
/// #[redis_cached(key = "user:{id}", ttl = 60)]
/// async fn get_user(db: &SqlitePool, id: i64) -> Result<User, sqlx::Error> { … }
/// ```
///
/// # Arguments
///
/// - `key = "…"`: the key template. `{name}` puts in a parameter's `Display`
///   output, `{name.field}` (also `{self.field}`) a field's. Values are
///   escaped, so two different arguments never give the same key. Literal
///   text between two placeholders must contain a delimiter such as `:`.
///   `{{` and `}}` are literal braces. Parameters the template does not name
///   are not part of the key and need not be `Display`. Without `key`, the key
///   is the function's path followed by every parameter except `self`:
///   `my_crate::users::get_user:42`.
/// - `ttl = 60`: seconds, an integer greater than zero. Default: the cache's
///   default TTL ([`DEFAULT_TTL`], 300 s, unless the builder changes it).
/// - `cache_none = true`: also cache `None` from a function returning `Option`.
/// - `cache = <expr>`: use this [`Cache`] instead of the process-wide default.
///   The expression may name a `Cache`, a `&Cache`, an `Arc<Cache>` or a
///   `static LazyLock<Cache>`, and may use `self`.
/// - `tag = "users"` (any number): stored entries also join these tags, so
///   that [`cache_evict`]`(tag = …)` or [`Cache::invalidate_tag`] evicts them
///   all. Tags are templates like `key`.
/// - `stale = 300`: for this many seconds after `ttl`, serve the old value at
///   once while one background refresh runs. The body then runs after the
///   caller has returned, so it must be `Send + 'static`: take owned
///   parameters (a pool by value, not `&Pool`).
/// - `lock = true`: a Redis lock so that several processes run the body once
///   in total for a cold key.
/// - `coalesce = false`: turn off in-process coalescing of concurrent callers.
///
/// # Derived helpers
///
/// Next to `get_user`, the macro generates (with the same visibility):
///
/// - `get_user_invalidate(…) -> Result<(), CacheError>`: evicts exactly the
///   entry `get_user` stores for these arguments. It takes only the
///   parameters the key (and the `cache` expression) name, in their order.
/// - `get_user_refresh(…)`: the same parameters and return type as
///   `get_user`; runs the body and stores the result, whatever is cached.
///
/// In a trait `impl`, where extra methods are not allowed, use an inherent
/// `impl` for the cached method.
///
/// # What is stored
///
/// - `Result<T, E>`: `Ok` values only.
/// - `Option<T>`: `Some` values only, unless `cache_none = true`.
/// - Any other `T`: every value.
///
/// The stored type must implement `serde::Serialize` and `serde::Deserialize`.
/// The function keeps its signature; its future is `Send` whenever the
/// original body's is.
pub use cache_macro::redis_cached;

/// Runs an `async fn` and stores its result under the key (write-through),
/// without looking up first.
///
/// ```ignore
/// #[cache_put(key = "user:{id}", ttl = 60)]
/// async fn save_user(db: &Pool, id: i64, name: &str) -> Result<User, sqlx::Error> { … }
/// ```
///
/// Arguments: `key` (a template, as for [`redis_cached`]; without it, the
/// function's path and parameters), `ttl`, `tag`, `cache_none`, `cache`.
/// What is stored follows the same rules as [`redis_cached`]: `Ok` but not
/// `Err`, `Some` but not `None` unless `cache_none = true`.
pub use cache_macro::cache_put;

/// Evicts keys or tags when an `async fn` succeeds.
///
/// ```ignore
/// #[cache_evict(key = "user:{id}", tag = "user-lists")]
/// async fn rename_user(db: &Pool, id: i64, name: &str) -> Result<(), sqlx::Error> { … }
/// ```
///
/// - `key = "…"` and `tag = "…"`, any number of each (at least one): the
///   entries to evict, as templates checked against the parameters like
///   [`redis_cached`]'s.
/// - After the body, and only if it succeeded: `Ok` for a `Result`, always
///   otherwise. `before = true` evicts before the body runs instead.
/// - A failed eviction never fails the call: it is logged, counted
///   (`eviction_errors`) and retried in the background. With
///   `propagate = true` (on a function returning `Result<T, E>` with
///   `E: From<CacheError>`) it is retried twice inline and then returned as
///   the function's error.
/// - Inside [`deferred`], evictions wait for the transaction's commit.
/// - `cache = <expr>`: as for [`redis_cached`].
pub use cache_macro::cache_evict;
