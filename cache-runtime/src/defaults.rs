//! The default of every setting, in one place: what a cache built with
//! [`Cache::builder`](crate::Cache::builder) and no calls to its setters
//! uses.

use std::time::Duration;

/// The Redis server, when neither the builder nor `REDIS_URL` names one.
pub const URL: &str = "redis://127.0.0.1:6379";
/// How long one Redis operation may take before the call gives up on the cache.
pub const DEADLINE: Duration = Duration::from_millis(50);
/// How long one connection attempt (TCP, TLS, AUTH, PING) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The TTL of a function whose attribute sets none.
pub const TTL: Duration = Duration::from_secs(300);
/// Keys longer than this are shortened by hashing.
pub const MAX_KEY_LEN: usize = 256;
/// The longest wait between two reconnection attempts. It bounds how long
/// caching stays off after Redis comes back.
pub const MAX_RECONNECT_BACKOFF: Duration = Duration::from_millis(500);
/// The shortest interval between two log lines about the same kind of incident.
pub const LOG_INTERVAL: Duration = Duration::from_secs(5);
/// The largest share of a TTL taken off at random, so that keys written
/// together do not all expire together.
pub const TTL_JITTER: f64 = 0.1;
/// How long a `lock = true` lock lives unless released: the bound on how long
/// a crashed holder can keep other processes waiting.
pub const LOCK_LEASE: Duration = Duration::from_secs(10);
/// How long a miss's lease lives unless extended: the bound on how long a
/// crashed process's miss keeps other callers of its key from storing. A
/// running body's lease is extended every third of this.
pub const LEASE: Duration = Duration::from_secs(10);
/// How long a process waits for the lock holder's value before it runs the
/// body itself.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);
/// Values whose serialized form (before compression) is larger than this
/// are not stored (the call still returns its value): one huge value must
/// not fill Redis or stall its connection. A compressed entry that claims
/// more is a miss, read without allocating its claim.
pub const MAX_VALUE_SIZE: usize = 16 * 1024 * 1024;
/// Serialized values larger than this many bytes are compressed (LZ4), in
/// any format: large values then cost Redis memory and the network about a
/// fifth of their size (BENCHMARKS.md, "Large values"), while an entry of
/// typical size stays readable JSON in `redis-cli`.
pub const COMPRESS_ABOVE: usize = 16 * 1024;
/// The most entries the local tier keeps.
pub const LOCAL_MAX_ENTRIES: u64 = 10_000;
/// The most bytes the local tier keeps, counted as the entries' serialized
/// sizes (before compression).
pub const LOCAL_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// The longest a local copy is used.
pub const LOCAL_MAX_TTL: Duration = Duration::from_secs(60);
/// How often the local tier's connections are PINGed (and, in a cluster, its
/// masters compared with the cluster's).
pub const LOCAL_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(1);
