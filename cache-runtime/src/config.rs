//! Settings: the validated configuration a cache runs with, and the
//! settings types the builder takes.

use std::fmt;
use std::time::Duration;

use crate::defaults;

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
    pub(crate) max_value_size: usize,
    /// PEM root certificates trusted for `rediss://`, instead of the system's.
    pub(crate) tls_root_ca: Option<Vec<u8>>,
    /// Seed nodes of a Redis Cluster; empty for a single server at `url`.
    pub(crate) cluster_urls: Vec<String>,
    /// The local tier, if the builder set one up (else it starts with its
    /// defaults at the first `local = true` call).
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
            .field("max_value_size", &self.max_value_size)
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
    /// The defaults: 10 000 entries, 64 MiB, 60 s, a health check every
    /// second, only `local = true` functions.
    pub fn new() -> Self {
        LocalTierSettings::default()
    }

    /// The most entries kept.
    pub fn max_entries(mut self, entries: u64) -> Self {
        self.max_entries = entries.max(1);
        self
    }

    /// The most bytes kept, counted as the entries' encoded sizes.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes.max(1);
        self
    }

    /// The longest a local copy is used, even if its Redis entry lives
    /// longer: this also bounds how long a copy outlives a change made to
    /// Redis behind the library's back. At most a year.
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = ttl.min(LONGEST_MAX_TTL);
        self
    }

    /// How often the invalidation subscription is PINGed. A subscription
    /// that does not answer within the connect timeout is dropped, and the
    /// tier emptied, so this plus the connect timeout bounds how long a copy
    /// can outlive a message lost on a silently dead connection.
    pub fn health_check_interval(mut self, interval: Duration) -> Self {
        self.health_check_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Use the local tier for every function whose stored type is `Clone`,
    /// not only those with `local = true`.
    pub fn for_all_functions(mut self, all: bool) -> Self {
        self.for_all_functions = all;
        self
    }
}

/// The password in `url`, if it has one (`redis://user:PASSWORD@…`).
pub(crate) fn url_password(url: &str) -> Option<&str> {
    let authority_start = url.find("://")? + 3;
    let rest = &url[authority_start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    let password = match userinfo.find(':') {
        Some(colon) => &userinfo[colon + 1..],
        None => userinfo,
    };
    (!password.is_empty()).then_some(password)
}

/// `url` with the password, if any, replaced by `***`: the only form in which
/// a URL is ever logged, displayed or debug-printed.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        // Not a URL we can take apart: show nothing that could be a secret.
        return "<unparsable URL>".to_owned();
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let user = match userinfo.find(':') {
        Some(colon) => &userinfo[..colon],
        // `redis://secret@host` is read as a password by some clients.
        None => "",
    };
    format!(
        "{}{user}:***@{}",
        &url[..authority_start],
        &url[authority_start + at + 1..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("redis://app:s3cret@host:6379/2"),
            "redis://app:***@host:6379/2"
        );
        assert_eq!(redact_url("rediss://:s3cret@host"), "rediss://:***@host");
        assert_eq!(redact_url("redis://s3cret@host"), "redis://:***@host");
        assert_eq!(redact_url("redis://u:p@ss@host"), "redis://u:***@host");
        assert_eq!(redact_url("s3cret"), "<unparsable URL>");
        assert_eq!(url_password("redis://app:s3cret@host/1"), Some("s3cret"));
        assert_eq!(url_password("redis://s3cret@host"), Some("s3cret"));
        assert_eq!(url_password("redis://host:6379"), None);
    }

    #[test]
    fn max_ttl_is_capped_rather_than_overflowing() {
        let settings = LocalTierSettings::new().max_ttl(Duration::MAX);
        assert_eq!(settings.max_ttl, LONGEST_MAX_TTL);
    }
}
