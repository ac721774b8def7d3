//! Configuration: a builder with documented defaults, and `REDIS_URL`.

use std::fmt;
use std::time::Duration;

use crate::error::ConfigError;
use crate::keys::MIN_MAX_KEY_LEN;

/// Used when neither the builder nor `REDIS_URL` names a server.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// How long one Redis operation may take before the call gives up on the cache.
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(50);
/// How long one connection attempt (TCP, TLS, AUTH, PING) may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The TTL of a function whose attribute sets none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Keys longer than this are shortened by hashing.
pub const DEFAULT_MAX_KEY_LEN: usize = 256;
/// The longest wait between two reconnection attempts. It bounds how long
/// caching stays off after Redis comes back.
pub const DEFAULT_MAX_RECONNECT_BACKOFF: Duration = Duration::from_millis(500);
/// The shortest interval between two log lines about the same kind of incident.
pub const DEFAULT_LOG_INTERVAL: Duration = Duration::from_secs(5);
/// The largest share of a TTL taken off at random, so that keys written
/// together do not all expire together.
pub const DEFAULT_TTL_JITTER: f64 = 0.1;
/// How long a `lock = true` lock lives unless released: the bound on how long
/// a crashed holder can keep other processes waiting.
pub const DEFAULT_LOCK_LEASE: Duration = Duration::from_secs(10);
/// How long a process waits for the lock holder's value before it runs the
/// body itself.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(5);
/// Encoded entries larger than this are not stored (the call still returns
/// its value): one huge value must not fill Redis or stall its connection.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 16 * 1024 * 1024;

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
    pub(crate) local_tier: Option<crate::local::LocalTier>,
    /// Where connections are driven.
    pub(crate) connection_placement: ConnectionPlacement,
}

/// Where the cache's connections to Redis are driven
/// ([`CacheBuilder::connection_placement`]).
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

/// Builds a [`Cache`](crate::Cache).
///
/// ```no_run
/// use std::time::Duration;
/// use cache_runtime::Cache;
///
/// Cache::builder()
///     .url("redis://127.0.0.1:6379")
///     .prefix("myapp:v2")
///     .deadline(Duration::from_millis(30))
///     .default_ttl(Duration::from_secs(60))
///     .build()
///     .expect("valid cache configuration")
///     .install()
///     .expect("installed before the first cached call");
/// ```
#[derive(Clone, Default)]
pub struct CacheBuilder {
    url: Option<String>,
    prefix: Option<String>,
    deadline: Option<Duration>,
    connect_timeout: Option<Duration>,
    default_ttl: Option<Duration>,
    max_key_len: Option<usize>,
    max_reconnect_backoff: Option<Duration>,
    log_interval: Option<Duration>,
    ttl_jitter: Option<f64>,
    lock_lease: Option<Duration>,
    lock_wait: Option<Duration>,
    max_value_size: Option<usize>,
    tls_root_ca: Option<Vec<u8>>,
    cluster_urls: Option<Vec<String>>,
    local_tier: Option<crate::local::LocalTier>,
    connection_placement: ConnectionPlacement,
}

impl fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("prefix", &self.prefix)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl CacheBuilder {
    /// The Redis server, as `redis://[user:password@]host:port[/db]`,
    /// `rediss://…` for TLS, or `redis+unix:///path`. Default: `REDIS_URL`,
    /// else [`DEFAULT_URL`].
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// A namespace put in front of every key, followed by `:`; for example the
    /// application's name and version, so that a new release with changed
    /// types never reads the old release's entries. Default: none.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// How long one Redis operation may take. Past it the call carries on
    /// without the cache. Default: [`DEFAULT_DEADLINE`].
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// How long one connection attempt may take. Default: [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// The TTL of functions whose attribute sets none. Default: [`DEFAULT_TTL`].
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl);
        self
    }

    /// Keys longer than this many bytes are shortened by hashing.
    /// Default: [`DEFAULT_MAX_KEY_LEN`]; at least 128.
    pub fn max_key_len(mut self, bytes: usize) -> Self {
        self.max_key_len = Some(bytes);
        self
    }

    /// The longest wait between reconnection attempts while Redis is down.
    /// Default: [`DEFAULT_MAX_RECONNECT_BACKOFF`].
    pub fn max_reconnect_backoff(mut self, backoff: Duration) -> Self {
        self.max_reconnect_backoff = Some(backoff);
        self
    }

    /// The shortest interval between two log lines about the same kind of
    /// incident. Default: [`DEFAULT_LOG_INTERVAL`].
    pub fn log_interval(mut self, interval: Duration) -> Self {
        self.log_interval = Some(interval);
        self
    }

    /// The largest share of each TTL taken off at random, from 0 (no jitter)
    /// to 0.5. The stored TTL never exceeds the one asked for (plus `stale`).
    /// Default: [`DEFAULT_TTL_JITTER`].
    pub fn ttl_jitter(mut self, ratio: f64) -> Self {
        self.ttl_jitter = Some(ratio);
        self
    }

    /// How long the `lock = true` lock lives unless released.
    /// Default: [`DEFAULT_LOCK_LEASE`].
    pub fn lock_lease(mut self, lease: Duration) -> Self {
        self.lock_lease = Some(lease);
        self
    }

    /// How long a process waits for another process's value under
    /// `lock = true` before it runs the body itself. Default: [`DEFAULT_LOCK_WAIT`].
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = Some(wait);
        self
    }

    /// Encoded entries larger than this many bytes are not stored: the call
    /// returns its value, and the incident is logged and counted
    /// (`oversized`). Default: [`DEFAULT_MAX_VALUE_SIZE`] (16 MiB).
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = Some(bytes);
        self
    }

    /// PEM-encoded root certificates to trust for a `rediss://` URL, instead
    /// of the system's (for a private CA). Default: the system's roots.
    pub fn tls_root_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_ca = Some(pem.into());
        self
    }

    /// Connects to a Redis Cluster through these seed nodes instead of one
    /// server (the cluster's other nodes are discovered). Default: the
    /// comma-separated `REDIS_CLUSTER_URLS`, when set and no `url` is given.
    pub fn cluster_urls<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cluster_urls = Some(urls.into_iter().map(Into::into).collect());
        self
    }

    /// Sets up the local tier: an in-process copy of hot entries, used by
    /// functions with `local = true` (or all, with
    /// [`LocalTier::for_all_functions`](crate::LocalTier::for_all_functions)).
    /// Default: started with [`LocalTier::new`](crate::LocalTier::new)'s
    /// settings at the first `local = true` call.
    pub fn local_tier(mut self, local_tier: crate::local::LocalTier) -> Self {
        self.local_tier = Some(local_tier);
        self
    }

    /// Where the connections to Redis are driven. Default:
    /// [`ConnectionPlacement::PerRuntime`], one connection per runtime that
    /// calls; [`ConnectionPlacement::IoThread`] for one connection in all.
    pub fn connection_placement(mut self, placement: ConnectionPlacement) -> Self {
        self.connection_placement = placement;
        self
    }

    /// Validates the configuration and creates the cache. It connects in the
    /// background: this returns at once, and never fails because Redis is down.
    pub fn build(self) -> Result<crate::Cache, ConfigError> {
        let config = self.into_config()?;
        crate::Cache::from_config(config)
    }

    pub(crate) fn into_config(self) -> Result<Config, ConfigError> {
        let cluster_urls = match (&self.cluster_urls, &self.url) {
            (Some(urls), _) => urls.clone(),
            // An explicit `url` means one server, whatever the environment says.
            (None, Some(_)) => Vec::new(),
            (None, None) => std::env::var("REDIS_CLUSTER_URLS")
                .map(|urls| {
                    urls.split(',')
                        .map(str::trim)
                        .filter(|url| !url.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        };
        let url = self
            .url
            .or_else(|| std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let key_prefix = match self.prefix {
            None => String::new(),
            Some(prefix) => {
                validate_prefix(&prefix)?;
                format!("{prefix}:")
            }
        };
        let positive = |value: Option<Duration>, default: Duration, setting: &'static str| {
            let value = value.unwrap_or(default);
            if value.is_zero() {
                Err(ConfigError::ZeroDuration { setting })
            } else {
                Ok(value)
            }
        };
        let max_key_len = self.max_key_len.unwrap_or(DEFAULT_MAX_KEY_LEN);
        if max_key_len < MIN_MAX_KEY_LEN {
            return Err(ConfigError::MaxKeyLenTooSmall {
                requested: max_key_len,
                minimum: MIN_MAX_KEY_LEN,
            });
        }
        Ok(Config {
            url,
            key_prefix,
            deadline: positive(self.deadline, DEFAULT_DEADLINE, "deadline")?,
            connect_timeout: positive(
                self.connect_timeout,
                DEFAULT_CONNECT_TIMEOUT,
                "connect_timeout",
            )?,
            default_ttl: positive(self.default_ttl, DEFAULT_TTL, "default_ttl")?,
            max_key_len,
            max_reconnect_backoff: positive(
                self.max_reconnect_backoff,
                DEFAULT_MAX_RECONNECT_BACKOFF,
                "max_reconnect_backoff",
            )?,
            log_interval: self.log_interval.unwrap_or(DEFAULT_LOG_INTERVAL),
            ttl_jitter: match self.ttl_jitter.unwrap_or(DEFAULT_TTL_JITTER) {
                ratio if (0.0..=0.5).contains(&ratio) => ratio,
                ratio => return Err(ConfigError::InvalidJitter { ratio }),
            },
            lock_lease: positive(self.lock_lease, DEFAULT_LOCK_LEASE, "lock_lease")?,
            lock_wait: positive(self.lock_wait, DEFAULT_LOCK_WAIT, "lock_wait")?,
            max_value_size: self.max_value_size.unwrap_or(DEFAULT_MAX_VALUE_SIZE),
            tls_root_ca: self.tls_root_ca,
            cluster_urls,
            local_tier: self.local_tier,
            connection_placement: self.connection_placement,
        })
    }
}

fn validate_prefix(prefix: &str) -> Result<(), ConfigError> {
    let reason = if prefix.is_empty() {
        "it is empty; leave the prefix unset instead"
    } else if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "it contains whitespace or control characters"
    } else if prefix.contains(['{', '}', '*', '?', '[', ']']) {
        "it contains a glob or hash-tag character (`{ } * ? [ ]`)"
    } else {
        return Ok(());
    };
    Err(ConfigError::InvalidPrefix {
        prefix: prefix.to_owned(),
        reason,
    })
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
pub fn redact_url(url: &str) -> String {
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
    fn invalid_settings_are_rejected() {
        let err = CacheBuilder::default()
            .deadline(Duration::ZERO)
            .into_config()
            .unwrap_err();
        assert_eq!(
            err,
            ConfigError::ZeroDuration {
                setting: "deadline"
            }
        );
        assert!(matches!(
            CacheBuilder::default().max_key_len(10).into_config(),
            Err(ConfigError::MaxKeyLenTooSmall { .. })
        ));
        assert!(matches!(
            CacheBuilder::default().prefix("a b").into_config(),
            Err(ConfigError::InvalidPrefix { .. })
        ));
    }

    #[test]
    fn prefix_gets_its_separator() {
        let config = CacheBuilder::default()
            .url("redis://x")
            .prefix("app:v1")
            .into_config()
            .unwrap();
        assert_eq!(config.key_prefix, "app:v1:");
    }
}
