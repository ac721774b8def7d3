//! The demo app: a users service over SQLx whose reads are cached in Redis
//! with `#[redis_cached]`.
//!
//! Where to look:
//! - [`repo`]: the cached reads and the writes that keep them correct, the
//!   part that shows the library;
//! - [`routes`]: the handlers, with their `X-Cache` and `X-Cache-Tier`
//!   headers, and the page's `/stats`;
//! - [`model`]: the data: a user, what a client sends, and the errors;
//! - [`db`]: the SQL, written once for SQLite, PostgreSQL and MySQL;
//! - [`metrics`]: the cache's metrics as Prometheus text, through the
//!   exporter, and each function's counters read back;
//! - [`redact`]: credentials hidden from the URLs the app prints;
//! - [`seed`] and [`mod@bench`]: the `seed` and `bench` commands.

use std::time::Duration;

use cache_runtime::{Cache, CacheBuilder, LocalTierSettings};

pub mod bench;
pub mod db;
pub mod metrics;
pub mod model;
pub mod redact;
pub mod repo;
pub mod routes;
pub mod seed;

/// Put in front of every key. It names the release's data format: a release
/// that changes `User` would bump it to `demo:v2`, and never read the
/// entries the old release wrote in the old shape.
pub const CACHE_PREFIX: &str = "demo:v1";

/// How long one Redis operation may take before the call goes on without the
/// cache.
///
/// The runtime's default, 50 ms, suits small values. The all-users entry for
/// 100 000 rows is about 7 MB of JSON, which Redis takes some 10 to 40 ms to
/// receive or send on a loaded machine; with the default, a busy moment would
/// make the lookup give up and run the slow query instead. 250 ms leaves room
/// for that, and still bounds how long a hung Redis can delay a request.
pub const CACHE_DEADLINE: Duration = Duration::from_millis(250);

/// The app's cache settings; the URL comes from `REDIS_URL` unless set.
///
/// The local tier (for `list_users`, `local = true`) is started with the
/// cache rather than at the first call: it then listens to Redis by the
/// first `GET /users`, and the access after the miss's (whose own store
/// Redis reports back, dropping the miss's copy) keeps a copy for the next
/// ones. Started at the first call instead, the tier stays bypassed until
/// it listens, and the first accesses all read Redis.
pub fn cache_builder() -> CacheBuilder {
    Cache::builder()
        .prefix(CACHE_PREFIX)
        .deadline(CACHE_DEADLINE)
        .local_tier(LocalTierSettings::new())
}
