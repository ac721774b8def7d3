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
mod io;
mod keys;
mod local;
mod lock;
pub mod metrics;
mod random;
mod retry;
mod sync;
mod units;

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

#[doc = include_str!("../docs/redis_cached.md")]
pub use cache_macro::redis_cached;

#[doc = include_str!("../docs/cache_put.md")]
pub use cache_macro::cache_put;

#[doc = include_str!("../docs/cache_evict.md")]
pub use cache_macro::cache_evict;
