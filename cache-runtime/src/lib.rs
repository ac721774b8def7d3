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

#![doc = include_str!("../docs/features.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// The layers, from the bottom up, in groups; each module calls only modules
// in its own group or below (ARCHITECTURE.md draws them, and
// tests/tests/architecture.rs checks that no two modules import each other
// in a cycle).
//
// Leaves: settings, keys, the stored format, errors, incidents, retries.
mod builder;
mod bypass;
mod change;
mod codec;
mod config;
pub mod defaults;
mod error;
mod incident;
mod io;
mod keys;
pub mod metrics;
mod random;
mod redact;
mod retry;
mod shape;
mod status;
mod sync;
mod units;
// The connection, and the store that owns every Redis command.
mod connection;
mod store;
// What the store's users keep: flights, the local tier, the announcer, the
// parked evictions; and the engine that holds one cache's parts.
mod announce;
mod engine;
mod flight;
mod local;
mod parked;
mod throttle;
// The work: the lock, eviction, and the cached-call state machine.
mod call;
mod evict;
mod lease;
mod lock;
mod observe;
// The public front, and what generated code calls.
mod cache;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use builder::CacheBuilder;
pub use bypass::bypass;
pub use cache::{Cache, escape_key_part};
pub use change::Target;
pub use codec::Format;
pub use config::{ConnectionPlacement, LocalTierSettings};
pub use error::{AlreadyInstalled, CacheError, ConfigError};
pub use evict::{PendingInvalidations, deferred};
pub use observe::{Outcome, track_outcome};
pub use status::{ConnectionStatus, LocalTierStatus};

#[doc = include_str!("../docs/redis_cached.md")]
pub use cache_macro::redis_cached;

#[doc = include_str!("../docs/cache_put.md")]
pub use cache_macro::cache_put;

#[doc = include_str!("../docs/cache_evict.md")]
pub use cache_macro::cache_evict;
