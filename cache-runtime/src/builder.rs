//! [`CacheBuilder`]: the settings a program chooses, validated into the
//! configuration a cache runs with.

use std::fmt;
use std::time::Duration;

use crate::codec::Format;
use crate::config::{Config, ConnectionPlacement, LocalTierSettings};
use crate::defaults;
use crate::error::ConfigError;
use crate::keys::MIN_MAX_KEY_LEN;
use crate::redact::redact_url;

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
    lease: Option<Duration>,
    max_value_size: Option<usize>,
    format: Option<Format>,
    compress_above: Option<usize>,
    tls_root_ca: Option<Vec<u8>>,
    cluster_urls: Option<Vec<String>>,
    local_tier: Option<LocalTierSettings>,
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
    /// else [`defaults::URL`].
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
    /// without the cache. Default: [`defaults::DEADLINE`].
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// How long one connection attempt may take. Default: [`defaults::CONNECT_TIMEOUT`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// The TTL of functions whose attribute sets none. Default: [`defaults::TTL`].
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl);
        self
    }

    /// Keys longer than this many bytes are shortened by hashing.
    /// Default: [`defaults::MAX_KEY_LEN`]; at least 128.
    pub fn max_key_len(mut self, bytes: usize) -> Self {
        self.max_key_len = Some(bytes);
        self
    }

    /// The longest wait between reconnection attempts while Redis is down.
    /// Default: [`defaults::MAX_RECONNECT_BACKOFF`].
    pub fn max_reconnect_backoff(mut self, backoff: Duration) -> Self {
        self.max_reconnect_backoff = Some(backoff);
        self
    }

    /// The shortest interval between two log lines about the same kind of
    /// incident. Default: [`defaults::LOG_INTERVAL`].
    pub fn log_interval(mut self, interval: Duration) -> Self {
        self.log_interval = Some(interval);
        self
    }

    /// The largest share of each TTL taken off at random, from 0 (no jitter)
    /// to 0.5. The stored TTL never exceeds the one asked for (plus `stale`).
    /// Default: [`defaults::TTL_JITTER`].
    pub fn ttl_jitter(mut self, ratio: f64) -> Self {
        self.ttl_jitter = Some(ratio);
        self
    }

    /// How long the `lock = true` lock lives unless released.
    /// Default: [`defaults::LOCK_LEASE`].
    pub fn lock_lease(mut self, lease: Duration) -> Self {
        self.lock_lease = Some(lease);
        self
    }

    /// How long a process waits for another process's value under
    /// `lock = true` before it runs the body itself. Default: [`defaults::LOCK_WAIT`].
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = Some(wait);
        self
    }

    /// How long a miss's lease lives unless extended (every third of it,
    /// while the body runs): the bound on how long a crashed process keeps
    /// other callers of its key from storing. Default: [`defaults::LEASE`].
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Values whose serialized form (before compression) is larger than this
    /// many bytes are not stored: the call returns its value, and the
    /// incident is logged and counted (`oversized`). A compressed entry that
    /// claims more is read as a miss, without allocating its claim.
    /// Default: [`defaults::MAX_VALUE_SIZE`] (16 MiB).
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = Some(bytes);
        self
    }

    /// The format of every function that does not choose one with
    /// `format = …`. Default: [`Format::Json`], readable in `redis-cli`.
    /// [`Format::Binary`] needs the `binary` feature (`build` refuses it
    /// otherwise). Entries in either format are read whatever this says.
    pub fn format(mut self, format: Format) -> Self {
        self.format = Some(format);
        self
    }

    /// Serialized values larger than this many bytes are stored compressed
    /// (LZ4), in any format. Default: [`defaults::COMPRESS_ABOVE`] (16 KiB);
    /// `usize::MAX` never compresses.
    pub fn compress_above(mut self, bytes: usize) -> Self {
        self.compress_above = Some(bytes);
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
    /// [`LocalTierSettings::for_all_functions`]). Set this way, the tier
    /// starts, and listens to Redis for changes, when the cache is built, so
    /// the first calls already keep copies. Default: started with
    /// [`LocalTierSettings::new`]'s settings at the first `local = true`
    /// call, and bypassed until it listens.
    pub fn local_tier(mut self, local_tier: LocalTierSettings) -> Self {
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
            .unwrap_or_else(|| defaults::URL.to_owned());
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
        let max_key_len = self.max_key_len.unwrap_or(defaults::MAX_KEY_LEN);
        if max_key_len < MIN_MAX_KEY_LEN {
            return Err(ConfigError::MaxKeyLenTooSmall {
                requested: max_key_len,
                minimum: MIN_MAX_KEY_LEN,
            });
        }
        require_features(
            &url,
            &cluster_urls,
            self.tls_root_ca.is_some(),
            self.local_tier.is_some(),
            self.format == Some(Format::Binary),
        )?;
        Ok(Config {
            url,
            key_prefix,
            deadline: positive(self.deadline, defaults::DEADLINE, "deadline")?,
            connect_timeout: positive(
                self.connect_timeout,
                defaults::CONNECT_TIMEOUT,
                "connect_timeout",
            )?,
            default_ttl: positive(self.default_ttl, defaults::TTL, "default_ttl")?,
            max_key_len,
            max_reconnect_backoff: positive(
                self.max_reconnect_backoff,
                defaults::MAX_RECONNECT_BACKOFF,
                "max_reconnect_backoff",
            )?,
            log_interval: self.log_interval.unwrap_or(defaults::LOG_INTERVAL),
            ttl_jitter: match self.ttl_jitter.unwrap_or(defaults::TTL_JITTER) {
                ratio if (0.0..=0.5).contains(&ratio) => ratio,
                ratio => return Err(ConfigError::InvalidJitter { ratio }),
            },
            lock_lease: positive(self.lock_lease, defaults::LOCK_LEASE, "lock_lease")?,
            lock_wait: positive(self.lock_wait, defaults::LOCK_WAIT, "lock_wait")?,
            lease: positive(self.lease, defaults::LEASE, "lease")?,
            max_value_size: self.max_value_size.unwrap_or(defaults::MAX_VALUE_SIZE),
            encoding: crate::codec::Encoding {
                format: self.format.unwrap_or_default(),
                compress_above: self.compress_above.unwrap_or(defaults::COMPRESS_ABOVE),
            },
            tls_root_ca: self.tls_root_ca,
            cluster_urls,
            local_tier: self.local_tier,
            connection_placement: self.connection_placement,
        })
    }
}

/// Refuses what needs a cargo feature that is off, rather than quietly
/// running without it.
fn require_features(
    url: &str,
    cluster_urls: &[String],
    tls_root_ca: bool,
    local_tier: bool,
    binary_format: bool,
) -> Result<(), ConfigError> {
    let off = |feature, needed_for| {
        Err(ConfigError::FeatureDisabled {
            feature,
            needed_for,
        })
    };
    if !cfg!(feature = "cluster") && !cluster_urls.is_empty() {
        return off(
            "cluster",
            "a Redis Cluster (`cluster_urls` or `REDIS_CLUSTER_URLS`)",
        );
    }
    let tls_url = std::iter::once(url)
        .chain(cluster_urls.iter().map(String::as_str))
        .any(|url| url.starts_with("rediss://"));
    if !cfg!(feature = "tls") && tls_url {
        return off("tls", "a `rediss://` URL");
    }
    if !cfg!(feature = "tls") && tls_root_ca {
        return off("tls", "`tls_root_ca_pem`");
    }
    if !cfg!(feature = "local") && local_tier {
        return off("local", "the local tier (`local_tier`)");
    }
    if !cfg!(feature = "binary") && binary_format {
        return off("binary", "the binary format (`format(Format::Binary)`)");
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn what_needs_a_feature_that_is_off_is_refused_by_name() {
        let feature_off = |builder: CacheBuilder| match builder.into_config() {
            Err(ConfigError::FeatureDisabled { feature, .. }) => Some(feature),
            _ => None,
        };
        let tls = CacheBuilder::default().url("rediss://127.0.0.1:6380");
        assert_eq!(feature_off(tls), (!cfg!(feature = "tls")).then_some("tls"));
        let cluster = CacheBuilder::default().cluster_urls(["redis://127.0.0.1:7000"]);
        assert_eq!(
            feature_off(cluster),
            (!cfg!(feature = "cluster")).then_some("cluster")
        );
        let local = CacheBuilder::default().local_tier(LocalTierSettings::new());
        assert_eq!(
            feature_off(local),
            (!cfg!(feature = "local")).then_some("local")
        );
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
