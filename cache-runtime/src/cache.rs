//! [`Cache`]: the public front of one cache — building and installing it,
//! and the operations a program calls by hand. The work is done below it.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::builder::CacheBuilder;
use crate::change::{Change, Target};
use crate::config::Config;
use crate::engine::Engine;
use crate::error::{AlreadyInstalled, CacheError, ConfigError};
use crate::evict::{Evicted, evict};
use crate::status::{ConnectionStatus, LocalTierStatus};

#[doc = include_str!("../docs/cache.md")]
#[derive(Clone)]
pub struct Cache {
    engine: Arc<Engine>,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("config", &self.engine.config)
            .field("connected", &self.is_connected())
            .finish()
    }
}

static GLOBAL: OnceLock<Cache> = OnceLock::new();

impl CacheBuilder {
    /// Validates the configuration and creates the cache. It connects in the
    /// background: this returns at once, and never fails because Redis is down.
    pub fn build(self) -> Result<Cache, ConfigError> {
        Cache::from_config(self.into_config()?)
    }
}

impl Cache {
    /// A builder with every setting at its default.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    /// A cache configured from the environment: `REDIS_URL`, else
    /// `redis://127.0.0.1:6379`, with default settings.
    pub fn from_env() -> Result<Cache, ConfigError> {
        Cache::builder().build()
    }

    fn from_config(config: Config) -> Result<Cache, ConfigError> {
        Ok(Cache {
            engine: Arc::new(Engine::new(config)?),
        })
    }

    /// The parts the work below the front is done with.
    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Makes this the process-wide default, used by every `#[redis_cached]`
    /// function without a `cache = …` argument.
    ///
    /// Call it before the first cached call: the default is created from the
    /// environment at that call, and is fixed from then on.
    pub fn install(self) -> Result<&'static Cache, AlreadyInstalled> {
        let mut installed = false;
        let global = GLOBAL.get_or_init(|| {
            installed = true;
            self
        });
        if installed {
            Ok(global)
        } else {
            Err(AlreadyInstalled)
        }
    }

    /// The process-wide default cache: the one [installed](Cache::install), or
    /// else one created from the environment on first use.
    ///
    /// An invalid `REDIS_URL` does not fail anything: it is logged once, and
    /// every cached call then runs its body uncached.
    pub fn global() -> &'static Cache {
        GLOBAL.get_or_init(|| {
            let config = CacheBuilder::default().into_config();
            match config.and_then(Cache::from_config) {
                Ok(cache) => cache,
                Err(error) => {
                    tracing::error!(
                        target: "cache_runtime",
                        "caching is disabled: {error}"
                    );
                    let fallback = CacheBuilder::default()
                        .url(crate::defaults::URL)
                        .into_config()
                        .expect("the default configuration is valid");
                    Cache {
                        engine: Arc::new(Engine::disabled(fallback)),
                    }
                }
            }
        })
    }

    /// Whether the cache is connected to Redis right now. `false` while Redis
    /// is unreachable: calls then run uncached, and the cache reconnects in the
    /// background.
    pub fn is_connected(&self) -> bool {
        self.engine.store.connection().is_connected()
    }

    /// Where the calling runtime's connection to Redis stands right now:
    /// [`ConnectionStatus::Connecting`] until its first attempt has ended.
    /// Like [`Cache::is_connected`], it answers for the connection the
    /// calling runtime's calls use, and starts it if there is none yet;
    /// outside a runtime, it answers connected if any connection is.
    ///
    /// A runtime's connection starts at its first call, so right after a
    /// program starts, most runtimes' are still connecting (an Actix-web
    /// worker's, until it serves its first request). A health check that
    /// wants the outcome of that first attempt, not "not yet", asks
    /// [`Cache::settled_connection_status`].
    pub fn connection_status(&self) -> ConnectionStatus {
        self.engine.store.connection().status()
    }

    /// [`Cache::connection_status`], once the calling runtime's first
    /// connection attempt has ended, or `limit` has passed, whichever comes
    /// first; at once if the first attempt had ended already. An attempt
    /// lasts at most [`CacheBuilder::connect_timeout`](crate::CacheBuilder::connect_timeout);
    /// past `limit`, the answer is [`ConnectionStatus::Connecting`].
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use cache_runtime::{Cache, ConnectionStatus};
    /// # async fn health(cache: &Cache) -> &'static str {
    /// // In a health check: a fresh worker reports how its first attempt
    /// // went, not that it has not made one yet.
    /// match cache.settled_connection_status(Duration::from_secs(1)).await {
    ///     ConnectionStatus::Connected => "up",
    ///     ConnectionStatus::Connecting => "connecting",
    ///     _ => "down",
    /// }
    /// # }
    /// ```
    pub async fn settled_connection_status(&self, limit: Duration) -> ConnectionStatus {
        self.engine.store.connection().settled_status(limit).await
    }

    /// What this process's local tier holds now: its copies, what they count
    /// against its `max_bytes`, and whether it listens to Redis (only then
    /// does it keep and serve copies). `None` while the cache has no local
    /// tier: one set up with
    /// [`CacheBuilder::local_tier`](crate::CacheBuilder::local_tier) starts
    /// with the cache, a default one at the first `local = true` call.
    ///
    /// The tier is the process's: every runtime that calls shares it.
    pub fn local_tier_status(&self) -> Option<LocalTierStatus> {
        self.engine.local_status()
    }

    /// Why the last connection attempt failed, while the cache is not
    /// connected (a refused connection, a TLS or authentication error…); any
    /// password is redacted. `None` once connected.
    pub fn last_connect_error(&self) -> Option<String> {
        self.engine.store.connection().last_connect_error()
    }

    /// Whether the cache talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.engine.store.is_cluster()
    }

    /// The per-operation deadline.
    pub fn deadline(&self) -> Duration {
        self.engine.config.deadline
    }

    /// The TTL used by functions whose attribute sets none.
    pub fn default_ttl(&self) -> Duration {
        self.engine.config.default_ttl
    }

    /// The stored form of `key`: behind the prefix, and hashed if too long.
    /// `key` is used as given, unescaped.
    pub fn full_key(&self, key: &str) -> String {
        self.engine.full_key(key)
    }

    /// Reads the value stored under `key` (see [`Cache::full_key`]).
    ///
    /// `Ok(None)` when there is no entry (a miss may be computing it), or
    /// when the entry no longer decodes as `T` (which is logged).
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CacheError> {
        let bytes = self.engine.store.get(&self.full_key(key)).await?;
        Ok(bytes
            .filter(|bytes| !crate::codec::is_lease(bytes))
            .and_then(|bytes| self.engine.decode(&bytes).map(|decoded| decoded.value)))
    }

    /// Stores `value` under `key` (see [`Cache::full_key`]) for `ttl`, and
    /// tells every process's local tier.
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        let bytes = crate::codec::encode_json(value, crate::codec::Metadata::default())
            .map_err(CacheError::Encode)?;
        let max = self.engine.config.max_value_size;
        if bytes.len() > max {
            return Err(CacheError::TooLarge {
                size: bytes.len(),
                max,
            });
        }
        let full_key = self.full_key(key);
        self.engine.store.set(&full_key, &bytes, ttl).await?;
        self.engine.announce(Change::Key(full_key)).await;
        Ok(())
    }

    /// Deletes `key` (see [`Cache::full_key`]), as `#[cache_evict]` does:
    /// see [`Cache::invalidate`]. Returns whether it existed; inside
    /// [`deferred`](crate::deferred), `false`, as the eviction waits for
    /// the commit.
    pub async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        let evicted = evict(
            &self.engine,
            vec![Target::Key(self.full_key(key))],
            None,
            false,
        );
        Ok(matches!(evicted.await?, Evicted::Applied(existed) if existed > 0))
    }

    /// Evicts one key (see [`Cache::full_key`]) through the one eviction
    /// routine that `#[cache_evict]` uses: this process's reads of the key
    /// in the air do not store what they read, its local copy goes, and
    /// every other process's local tier is told. Inside
    /// [`deferred`](crate::deferred), the eviction waits for
    /// [`PendingInvalidations::apply`](crate::PendingInvalidations::apply).
    /// A failure is returned, and parked: retried in the background while
    /// this process's lookups skip Redis, until a retry succeeds.
    pub async fn invalidate(&self, key: &str) -> Result<(), CacheError> {
        let target = Target::Key(self.full_key(key));
        evict(&self.engine, vec![target], None, false)
            .await
            .map(drop)
    }

    /// Evicts every entry stored with `tag`, as the tag renders (values in
    /// a tag template are escaped: see [`escape_key_part`]), as
    /// [`Cache::invalidate`] evicts a key.
    pub async fn invalidate_tag(&self, tag: &str) -> Result<(), CacheError> {
        let target = Target::Tag(self.engine.tag_key(tag));
        evict(&self.engine, vec![target], None, false)
            .await
            .map(drop)
    }

    /// Evicts every key that starts with `prefix` (after the cache's own
    /// prefix), walking the keyspace with `SCAN` in batches of 500 (on every
    /// master of a cluster), as [`Cache::invalidate`] evicts a key. Returns
    /// how many keys it evicted; inside [`deferred`](crate::deferred), 0, as
    /// the eviction waits for the commit.
    ///
    /// Like every eviction, a walk that fails part-way (a batch past the
    /// deadline, a user refused `SCAN`) is parked, and lookups skip Redis
    /// until a retry has walked the keyspace through: on a large keyspace,
    /// give the cache a deadline that a `SCAN` batch meets.
    pub async fn invalidate_prefix(&self, prefix: &str) -> Result<u64, CacheError> {
        let target = Target::Prefix(self.full_key(prefix));
        match evict(&self.engine, vec![target], None, false).await? {
            Evicted::Applied(evicted) => Ok(evicted),
            Evicted::Deferred => Ok(0),
        }
    }

    /// Removes every entry under the cache's key prefix
    /// ([`CacheBuilder::prefix`](crate::CacheBuilder::prefix)), with its tag
    /// sets, locks and leases: [`Cache::invalidate_prefix`] of the whole
    /// prefix, walking the keyspace with `SCAN` (on every master of a
    /// cluster). Every process's local tier drops its copies, this one's at
    /// once, the others' when the eviction's message reaches them. Returns
    /// how many keys it removed; inside [`deferred`](crate::deferred), 0, as
    /// it waits for the commit.
    ///
    /// Without a prefix it removes nothing and returns
    /// [`CacheError::NoKeyPrefix`]: it would not know which keys are this
    /// cache's.
    pub async fn clear(&self) -> Result<u64, CacheError> {
        if self.engine.config.key_prefix.is_empty() {
            return Err(CacheError::NoKeyPrefix);
        }
        self.invalidate_prefix("").await
    }

    /// Empties this process's local tier (if it has one); other processes
    /// keep theirs. The next calls read Redis. For benchmarks and operators.
    pub fn clear_local_tier(&self) {
        self.engine.forget_local(&Change::All);
    }
}

/// Escapes `value` exactly as a key placeholder does, for code that needs to
/// build a key by hand: `format!("user:{}", escape_key_part(name))`.
pub fn escape_key_part(value: &str) -> String {
    crate::keys::escape(value)
}
