//! Settings: the validated configuration a cache runs with, and the
//! settings types the builder takes.

use std::fmt;
use std::time::Duration;

use crate::defaults;
use crate::redact::redact_url;

/// Everything a [`Cache`](crate::Cache) needs, validated.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) url: String,
    /// The prefix with its trailing `:`, or empty.
    pub(crate) key_prefix: String,
    pub(crate) deadline: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) default_ttl: Duration,
    pub(crate) max_key_len: usize,
    pub(crate) max_reconnect_backoff: Duration,
    pub(crate) log_interval: Duration,
    pub(crate) ttl_jitter: f64,
    pub(crate) lock_lease: Duration,
    pub(crate) lock_wait: Duration,
    pub(crate) lease: Duration,
    pub(crate) max_value_size: usize,
    /// The format of functions that do not choose one, and when values
    /// are compressed.
    pub(crate) encoding: crate::codec::Encoding,
    /// PEM root certificates trusted for `rediss://`, instead of the system's.
    pub(crate) tls_root_ca: Option<Vec<u8>>,
    /// Seed nodes of a Redis Cluster; empty for a single server at `url`.
    pub(crate) cluster_urls: Vec<String>,
    /// The local tier, if the builder set one up (else it starts with its
    /// defaults at the first `local = true` call).
    // Read only by the local tier: without its feature, `build()` refuses
    // the setting instead.
    #[cfg_attr(not(feature = "local"), allow(dead_code))]
    pub(crate) local_tier: Option<LocalTierSettings>,
    /// Where connections are driven.
    pub(crate) connection_placement: ConnectionPlacement,
}

/// Where the cache's connections to Redis are driven
/// ([`CacheBuilder::connection_placement`](crate::CacheBuilder::connection_placement)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ConnectionPlacement {
    /// One connection per Tokio runtime that calls, driven by a task on that
    /// runtime (the default). A hit then needs no wake-up of another thread,
    /// as with a redis-rs connection written by hand, and a runtime that
    /// stalls or ends takes only its own connection with it. Actix-web's
    /// workers (a runtime each) thus have a connection each.
    ///
    /// Not for short-lived runtimes (each connects before its first call can
    /// use Redis), nor for `current_thread` runtimes called into through
    /// `Handle::block_on` while nobody drives them (their connection, and
    /// their calls' deadlines, wait for that runtime to run): use
    /// [`ConnectionPlacement::IoThread`] there.
    #[default]
    PerRuntime,
    /// One connection for the whole cache, driven by the cache's own thread.
    /// Every call crosses to that thread and back (a few microseconds per
    /// hit on loopback); in exchange, however many runtimes call, Redis sees
    /// one connection, and replies are read off the socket beside the
    /// callers' threads rather than on them.
    IoThread,
}

impl Config {
    /// What the cache connects to, as logs and errors show it: passwords
    /// redacted.
    pub(crate) fn redacted_target(&self) -> String {
        if self.cluster_urls.is_empty() {
            return redact_url(&self.url);
        }
        let seeds: Vec<String> = self
            .cluster_urls
            .iter()
            .map(|url| redact_url(url))
            .collect();
        format!("cluster [{}]", seeds.join(", "))
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("target", &self.redacted_target())
            .field("key_prefix", &self.key_prefix)
            .field("deadline", &self.deadline)
            .field("connect_timeout", &self.connect_timeout)
            .field("default_ttl", &self.default_ttl)
            .field("max_key_len", &self.max_key_len)
            .field("max_reconnect_backoff", &self.max_reconnect_backoff)
            .field("log_interval", &self.log_interval)
            .field("ttl_jitter", &self.ttl_jitter)
            .field("lock_lease", &self.lock_lease)
            .field("lock_wait", &self.lock_wait)
            .field("lease", &self.lease)
            .field("max_value_size", &self.max_value_size)
            .field("encoding", &self.encoding)
            .field("tls_root_ca", &self.tls_root_ca.as_ref().map(|_| "<PEM>"))
            .finish()
    }
}

/// The longest [`LocalTierSettings::max_ttl`]: past it, `Instant` arithmetic (and
/// moka) would overflow, and no copy needs to live longer.
const LONGEST_MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

#[doc = include_str!("../docs/local_tier.md")]
#[derive(Debug, Clone)]
pub struct LocalTierSettings {
    pub(crate) max_entries: u64,
    pub(crate) max_bytes: u64,
    pub(crate) max_ttl: Duration,
    pub(crate) health_check_interval: Duration,
    pub(crate) for_all_functions: bool,
}

impl Default for LocalTierSettings {
    fn default() -> Self {
        LocalTierSettings {
            max_entries: defaults::LOCAL_MAX_ENTRIES,
            max_bytes: defaults::LOCAL_MAX_BYTES,
            max_ttl: defaults::LOCAL_MAX_TTL,
            health_check_interval: defaults::LOCAL_HEALTH_CHECK_INTERVAL,
            for_all_functions: false,
        }
    }
}

impl LocalTierSettings {
    /// Every setting at its default (see each setter).
    pub fn new() -> Self {
        LocalTierSettings::default()
    }

    /// The most entries kept. Default: [`defaults::LOCAL_MAX_ENTRIES`].
    pub fn max_entries(mut self, entries: u64) -> Self {
        self.max_entries = entries.max(1);
        self
    }

    /// The most bytes kept, counted as the entries' serialized sizes
    /// (before compression).
    /// Default: [`defaults::LOCAL_MAX_BYTES`].
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes.max(1);
        self
    }

    /// The longest a local copy is used, even if its Redis entry lives
    /// longer. Where Redis refuses the tier tracking, this also bounds how
    /// long a copy outlives a change that the library does not announce
    /// (another program's write, an eviction by `maxmemory`). At most a
    /// year.
    /// Default: [`defaults::LOCAL_MAX_TTL`].
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = ttl.min(LONGEST_MAX_TTL);
        self
    }

    /// How often the connections the tier listens on are PINGed (and, in a
    /// cluster, its masters compared with the cluster's). A connection that
    /// does not answer within the connect timeout is dropped, and the tier
    /// emptied, so this plus the connect timeout bounds how long a copy can
    /// outlive a report lost on a silently dead connection, or a change on
    /// a master that took over slots.
    /// Default: [`defaults::LOCAL_HEALTH_CHECK_INTERVAL`].
    pub fn health_check_interval(mut self, interval: Duration) -> Self {
        self.health_check_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Use the local tier for every function whose stored type is `Clone`,
    /// not only those with `local = true`. Default: `false`.
    pub fn for_all_functions(mut self, all: bool) -> Self {
        self.for_all_functions = all;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_ttl_is_capped_rather_than_overflowing() {
        let settings = LocalTierSettings::new().max_ttl(Duration::MAX);
        assert_eq!(settings.max_ttl, LONGEST_MAX_TTL);
    }
}
