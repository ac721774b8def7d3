//! Errors the runtime can report.
//!
//! None of these ever reach the caller of a `#[redis_cached]` function: the
//! cached-call path turns every one of them into "run the body". They surface
//! only from the explicit APIs (`CacheBuilder::build`, `Cache::get`, …).

use std::fmt;
use std::time::Duration;

/// A configuration that cannot work, reported by [`CacheBuilder::build`](crate::CacheBuilder::build).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `ttl_jitter` outside `0.0..=0.5`.
    InvalidJitter {
        /// The ratio asked for.
        ratio: f64,
    },
    /// The Redis URL could not be parsed. The URL in the message has its password redacted.
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// Why it could not be used.
        reason: String,
    },
    /// A duration setting that must be positive was zero.
    ZeroDuration {
        /// The setting's name, as the builder method spells it.
        setting: &'static str,
    },
    /// `max_key_len` is too small to hold a hashed key.
    MaxKeyLenTooSmall {
        /// The length asked for, in bytes.
        requested: usize,
        /// The smallest length allowed, in bytes.
        minimum: usize,
    },
    /// The configuration needs a cargo feature of `cache-runtime` that is
    /// off.
    FeatureDisabled {
        /// The feature to turn on.
        feature: &'static str,
        /// What needs it.
        needed_for: &'static str,
    },
    /// The key prefix contains characters that would make keys ambiguous.
    InvalidPrefix {
        /// The prefix asked for.
        prefix: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::InvalidUrl { url, reason } => {
                write!(f, "invalid Redis URL `{url}`: {reason}")
            }
            ConfigError::InvalidJitter { ratio } => {
                write!(f, "`ttl_jitter` must be between 0.0 and 0.5, not {ratio}")
            }
            ConfigError::ZeroDuration { setting } => {
                write!(f, "`{setting}` must be greater than zero")
            }
            ConfigError::MaxKeyLenTooSmall { requested, minimum } => write!(
                f,
                "`max_key_len` is {requested} bytes, but a hashed key needs at least {minimum}"
            ),
            ConfigError::FeatureDisabled {
                feature,
                needed_for,
            } => write!(
                f,
                "{needed_for} needs the `{feature}` feature of cache-runtime: turn it on with `cache-runtime = {{ features = [\"{feature}\"] }}`"
            ),
            ConfigError::InvalidPrefix { prefix, reason } => {
                write!(f, "invalid key prefix `{prefix}`: {reason}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Returned by [`Cache::install`](crate::Cache::install) when the process-wide
/// default cache already exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlreadyInstalled;

impl fmt::Display for AlreadyInstalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "the default cache is already set: install it before the first cached call, and only once",
        )
    }
}

impl std::error::Error for AlreadyInstalled {}

/// Why one cache operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum CacheError {
    /// No connection: Redis was unreachable at the last attempt, or the
    /// configuration was invalid. The runtime reconnects in the background.
    Unavailable,
    /// The operation did not finish within the per-operation deadline.
    Timeout(Duration),
    /// Redis answered with an error, or the connection failed mid-operation.
    Redis(redis::RedisError),
    /// The value could not be serialized to JSON.
    Encode(serde_json::Error),
    /// The encoded value is larger than `max_value_size`.
    TooLarge {
        /// The encoded size, in bytes.
        size: usize,
        /// The configured `max_value_size`, in bytes.
        max: usize,
    },
    /// [`Cache::clear`](crate::Cache::clear) on a cache without a key
    /// prefix, which cannot tell its keys from any other program's.
    NoKeyPrefix,
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheError::Unavailable => f.write_str("Redis is unavailable"),
            CacheError::Timeout(deadline) => {
                write!(f, "Redis did not answer within {} ms", deadline.as_millis())
            }
            CacheError::Redis(e) => write!(f, "Redis error: {e}"),
            CacheError::Encode(e) => write!(f, "the value cannot be serialized to JSON: {e}"),
            CacheError::TooLarge { size, max } => write!(
                f,
                "the value is {size} bytes encoded, over the {max}-byte `max_value_size`"
            ),
            CacheError::NoKeyPrefix => f.write_str(
                "Cache::clear needs a key prefix (CacheBuilder::prefix): without one it cannot tell this cache's keys from any other program's in the database, so it removes nothing",
            ),
        }
    }
}

impl std::error::Error for CacheError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CacheError::Redis(e) => Some(e),
            CacheError::Encode(e) => Some(e),
            CacheError::Unavailable
            | CacheError::Timeout(_)
            | CacheError::TooLarge { .. }
            | CacheError::NoKeyPrefix => None,
        }
    }
}
