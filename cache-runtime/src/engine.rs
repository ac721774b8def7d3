//! The engine: holds the working parts one cache is made of (its
//! configuration, store, flights, local tier, announcer, parked evictions
//! and fail-safe throttles), shared by every handle on the cache and by its
//! background tasks. Its methods are the small steps that need several parts at once
//! (announcing a change also drops the local copy; decoding logs what does
//! not decode); the calls and evictions are run by [`crate::call`] and
//! [`crate::evict`].

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::announce::Announcer;
use crate::change::Change;
use crate::codec::{self, Decoded, Encoded, Encoding, Metadata};
use crate::config::Config;
use crate::error::{CacheError, ConfigError};
use crate::flight::Flights;
use crate::incident::{Incident, Incidents};
use crate::keys::{KeyBuilder, TAG_MARKER};
use crate::lease::Leases;
use crate::local::LocalTier;
use crate::metrics::CallSite;
use crate::parked::Parked;
use crate::store::Store;
use crate::throttle::Throttles;

/// One cache's parts.
pub(crate) struct Engine {
    pub(crate) config: Config,
    pub(crate) store: Arc<Store>,
    pub(crate) flights: Arc<Flights>,
    pub(crate) leases: Arc<Leases>,
    pub(crate) parked: Parked,
    pub(crate) announcer: Announcer,
    pub(crate) throttles: Throttles,
    local: OnceLock<Arc<LocalTier>>,
}

impl Engine {
    /// The parts of a cache with this configuration; its local tier starts
    /// now if the configuration sets one up.
    pub(crate) fn new(config: Config) -> Result<Engine, ConfigError> {
        let store = Store::new(&config)?;
        let engine = Engine::with_store(config, store);
        #[cfg(feature = "local")]
        if engine.config.local_tier.is_some() {
            engine.local_tier();
        }
        Ok(engine)
    }

    /// The parts of a cache that never connects: every call runs uncached.
    pub(crate) fn disabled(config: Config) -> Engine {
        let store = Store::disabled(&config);
        Engine::with_store(config, store)
    }

    fn with_store(config: Config, store: Store) -> Engine {
        let store = Arc::new(store);
        Engine {
            announcer: Announcer::new(store.clone(), &config.key_prefix),
            config,
            store,
            flights: Arc::default(),
            leases: Arc::default(),
            parked: Parked::default(),
            throttles: Throttles::default(),
            local: OnceLock::new(),
        }
    }

    pub(crate) fn incidents(&self) -> &Incidents {
        self.store.incidents()
    }

    /// Logs (rate-limited, password scrubbed) a Redis operation that
    /// failed: `what` happened, because of `error`.
    pub(crate) fn warn_redis_failed(&self, incident: Incident, what: &str, error: &CacheError) {
        self.incidents().warn(incident, || {
            format!(
                "{what}: {} (Redis at {})",
                self.store.scrub(error),
                self.store.redacted_url()
            )
        });
    }

    /// The local tier, started on first use.
    #[cfg(feature = "local")]
    pub(crate) fn local_tier(&self) -> &Arc<LocalTier> {
        self.local.get_or_init(|| {
            LocalTier::start(
                &self.config,
                crate::connection::Nodes::of(&self.config),
                self.announcer.sender().to_owned(),
            )
        })
    }

    /// The local tier, if a call of `site` should use it.
    pub(crate) fn local_for(&self, site: &CallSite) -> Option<&Arc<LocalTier>> {
        #[cfg(feature = "local")]
        if site.options.local {
            return Some(self.local_tier());
        }
        // Without the `local` feature, `local = true` does not compile.
        #[cfg(not(feature = "local"))]
        let _ = site;
        self.local.get().filter(|tier| tier.for_all_functions())
    }

    /// What the local tier holds, if it has started.
    pub(crate) fn local_status(&self) -> Option<crate::status::LocalTierStatus> {
        self.local.get().map(|tier| tier.status())
    }

    /// Drops this process's local copies that `change` covers.
    pub(crate) fn forget_local(&self, change: &Change) {
        if let Some(tier) = self.local.get() {
            tier.forget(change);
        }
    }

    /// Tells this process's local tier, and through the invalidation channel
    /// every other process's that Redis refuses tracking, that `change`
    /// happened in Redis.
    pub(crate) async fn announce(&self, change: Change) {
        self.forget_local(&change);
        self.announcer.announce(&change).await;
    }

    /// `ttl` less a random share of up to `ttl_jitter` of it, so that keys
    /// written together do not expire together; never more than `ttl`.
    pub(crate) fn jittered(&self, ttl: Duration) -> Duration {
        let ratio = self.config.ttl_jitter;
        if ratio == 0.0 {
            return ttl;
        }
        let cut = ttl.mul_f64(ratio * crate::random::unit());
        ttl.saturating_sub(cut).max(Duration::from_millis(1))
    }

    /// Starts a key: behind the prefix.
    pub(crate) fn key_builder(&self, capacity_hint: usize) -> KeyBuilder {
        KeyBuilder::new(
            &self.config.key_prefix,
            self.config.max_key_len,
            capacity_hint,
        )
    }

    /// Starts the key of a tag's set: behind the prefix and the tag marker.
    pub(crate) fn tag_builder(&self, capacity_hint: usize) -> KeyBuilder {
        let mut builder = self.key_builder(TAG_MARKER.len() + capacity_hint);
        builder.push_literal(TAG_MARKER);
        builder
    }

    /// The stored form of `key`, used as given (unescaped).
    pub(crate) fn full_key(&self, key: &str) -> String {
        let mut builder = self.key_builder(key.len());
        builder.push_literal(key);
        builder.finish()
    }

    /// The full key of a tag's set.
    pub(crate) fn tag_key(&self, tag: &str) -> String {
        let mut builder = self.tag_builder(tag.len());
        builder.push_literal(tag);
        builder.finish()
    }

    /// Encodes a result of `site`'s function for storing, in its format;
    /// logs a failure.
    pub(crate) fn encode<T: Serialize + DeserializeOwned>(
        &self,
        site: &CallSite,
        value: &T,
        metadata: Metadata,
    ) -> Option<Encoded> {
        let encoding = Encoding {
            format: site.options.format.unwrap_or(self.config.encoding.format),
            ..self.config.encoding
        };
        codec::encode(value, metadata, encoding)
            .map_err(|error| {
                self.incidents().warn(Incident::Encode, || {
                    format!(
                        "a result of `{}` cannot be serialized, so it is not cached: {error}",
                        site.name()
                    )
                });
            })
            .ok()
    }

    /// Decodes a stored entry; one that does not decode is logged, and read
    /// as a miss that the next store overwrites.
    pub(crate) fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Option<Decoded<T>> {
        self.decode_within(bytes, self.config.max_value_size)
    }

    /// Decodes an entry this process encoded, shared by a flight's leader:
    /// one too large to store is still shared, so its size is not bounded.
    pub(crate) fn decode_shared<T: DeserializeOwned>(&self, bytes: &[u8]) -> Option<Decoded<T>> {
        self.decode_within(bytes, usize::MAX)
    }

    fn decode_within<T: DeserializeOwned>(
        &self,
        bytes: &[u8],
        max_value_size: usize,
    ) -> Option<Decoded<T>> {
        match codec::decode(bytes, max_value_size) {
            Ok(value) => Some(value),
            Err(error) => {
                self.incidents().warn(Incident::Decode, || {
                    format!(
                        "a cached value no longer decodes as `{}`, so it is treated as a miss and overwritten: {error}",
                        std::any::type_name::<T>()
                    )
                });
                None
            }
        }
    }
}
