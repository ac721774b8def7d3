//! [`Cache`]: a handle on one Redis server, its configuration and connection.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, Decoded};
use crate::config::{CacheBuilder, Config};
use crate::connection::Connection;
use crate::error::{AlreadyInstalled, CacheError, ConfigError};
use crate::flight::Flights;
use crate::incident::Incident;
use crate::keys::{self, KeyBuilder};
use crate::retry::Round;

/// A Redis cache: where `#[redis_cached]` functions store their results.
///
/// Cloning is cheap and clones share one connection. Most programs use the
/// process-wide default (see [`Cache::global`]); `#[redis_cached(cache = …)]`
/// points a function at another instance.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    connection: Connection,
    flights: Arc<Flights>,
    parked: crate::invalidate::Parked,
    /// Invalidation messages that may not have reached Redis.
    owed_messages: crate::local::OwedMessages,
    local: std::sync::OnceLock<Arc<crate::local::Tier>>,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("config", &self.inner.config)
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// What a lookup found.
pub(crate) enum Lookup<T> {
    Hit(Decoded<T>),
    /// No entry, or one that no longer decodes.
    Miss,
    /// Redis could not be asked.
    Failed,
}

static GLOBAL: OnceLock<Cache> = OnceLock::new();

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

    pub(crate) fn from_config(config: Config) -> Result<Cache, ConfigError> {
        let connection = Connection::new(&config)?;
        let cache = Cache {
            inner: Arc::new(Inner {
                config,
                connection,
                flights: Arc::default(),
                parked: Default::default(),
                owed_messages: Default::default(),
                local: std::sync::OnceLock::new(),
            }),
        };
        if cache.inner.config.local_tier.is_some() {
            cache.local_tier();
        }
        Ok(cache)
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
                        .url(crate::config::DEFAULT_URL)
                        .into_config()
                        .expect("the default configuration is valid");
                    Cache {
                        inner: Arc::new(Inner {
                            connection: Connection::disabled(&fallback),
                            config: fallback,
                            flights: Arc::default(),
                            parked: Default::default(),
                            owed_messages: Default::default(),
                            local: std::sync::OnceLock::new(),
                        }),
                    }
                }
            }
        })
    }

    /// Whether the cache is connected to Redis right now. `false` while Redis
    /// is unreachable: calls then run uncached, and the cache reconnects in the
    /// background.
    pub fn is_connected(&self) -> bool {
        self.inner.connection.is_connected()
    }

    /// Why the last connection attempt failed, while the cache is not
    /// connected (a refused connection, a TLS or authentication error…); any
    /// password is redacted. `None` once connected.
    pub fn last_connect_error(&self) -> Option<String> {
        self.inner.connection.last_connect_error()
    }

    /// The per-operation deadline.
    pub fn deadline(&self) -> Duration {
        self.inner.config.deadline
    }

    /// The TTL used by functions whose attribute sets none.
    pub fn default_ttl(&self) -> Duration {
        self.inner.config.default_ttl
    }

    /// The stored form of `key`: behind the prefix, and hashed if too long.
    /// `key` is used as given, unescaped.
    pub fn full_key(&self, key: &str) -> String {
        let mut builder = self.key_builder(key.len());
        builder.push_literal(key);
        builder.finish()
    }

    /// Reads the value stored under `key` (see [`Cache::full_key`]).
    ///
    /// `Ok(None)` when there is no entry, or when the entry no longer decodes
    /// as `T` (which is logged).
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CacheError> {
        let full_key = self.full_key(key);
        match self.send_get(&full_key).await? {
            Some(bytes) => Ok(self.decode(&bytes).map(|decoded| decoded.value)),
            None => Ok(None),
        }
    }

    /// Stores `value` under `key` (see [`Cache::full_key`]) for `ttl`.
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        let bytes = codec::encode(value, None).map_err(CacheError::Encode)?;
        let max = self.inner.config.max_value_size;
        if bytes.len() > max {
            return Err(CacheError::TooLarge {
                size: bytes.len(),
                max,
            });
        }
        let full_key = self.full_key(key);
        self.send_set(&full_key, &bytes, ttl).await?;
        self.announce(crate::local::Change::Key(full_key)).await;
        Ok(())
    }

    /// Deletes `key` (see [`Cache::full_key`]). Returns whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        let full_key = self.full_key(key);
        // Reads of this key in the air must not store what they read before.
        let change = crate::local::Change::Key(full_key.clone());
        self.flights().evicted(&change);
        self.forget_local(&change);
        let value = self.send(redis::cmd("DEL").arg(&full_key)).await?;
        self.announce(crate::local::Change::Key(full_key)).await;
        Ok(matches!(value, redis::Value::Int(n) if n > 0))
    }

    /// Sends one command within the deadline.
    pub(crate) async fn send(&self, cmd: &redis::Cmd) -> Result<redis::Value, CacheError> {
        self.inner.connection.send(cmd).await
    }

    pub(crate) fn flights(&self) -> &Arc<Flights> {
        &self.inner.flights
    }

    pub(crate) fn parked(&self) -> &crate::invalidate::Parked {
        &self.inner.parked
    }

    /// Empties this process's local tier (if it has one); other processes
    /// keep theirs. The next calls read Redis. For benchmarks and operators.
    pub fn clear_local_tier(&self) {
        if let Some(tier) = self.inner.local.get() {
            tier.forget(&crate::local::Change::All);
        }
    }

    /// Drops this process's local copies that `change` covers.
    pub(crate) fn forget_local(&self, change: &crate::local::Change) {
        if let Some(tier) = self.inner.local.get() {
            tier.forget(change);
        }
    }

    /// The local tier, started on first use.
    pub(crate) fn local_tier(&self) -> &Arc<crate::local::Tier> {
        self.inner.local.get_or_init(|| {
            let config = &self.inner.config;
            crate::local::Tier::start(config, crate::connection::pubsub_client(config))
        })
    }

    /// The local tier, if this call should use it.
    pub(crate) fn local_for(
        &self,
        site: &crate::metrics::CallSite,
    ) -> Option<&Arc<crate::local::Tier>> {
        if site.options.local {
            return Some(self.local_tier());
        }
        self.inner
            .local
            .get()
            .filter(|tier| tier.for_all_functions())
    }

    /// Tells this process's local tier, and through the invalidation channel
    /// every other process's, that `change` happened in Redis.
    ///
    /// A message that may not have reached Redis (the connection failed, the
    /// deadline passed, or the server answered with a transient error such
    /// as `LOADING` or `CLUSTERDOWN`) is owed, and sent again in the
    /// background until Redis takes it. One Redis refuses (`NOPERM` for a
    /// user without the channel, `ERR`) is logged instead, since sending it
    /// again would not help: other processes' local tiers then keep their
    /// copies until their TTL (`LocalTier::max_ttl` at most).
    pub(crate) async fn announce(&self, change: crate::local::Change) {
        self.forget_local(&change);
        let message = self.message(&change);
        let channel = crate::local::channel(&self.inner.config.key_prefix);
        match self
            .send(redis::cmd("PUBLISH").arg(&channel).arg(&message))
            .await
        {
            Ok(_) => {}
            Err(CacheError::Redis(error)) if matches!(error.code(), Some("NOPERM" | "ERR")) => {
                self.incidents().warn(Incident::Announce, || {
                    format!(
                        "Redis refused an invalidation message on `{channel}`: {}; other processes' local copies live until their TTL",
                        self.scrub(&error)
                    )
                });
            }
            Err(error) => {
                self.incidents().warn(Incident::Announce, || {
                    format!(
                        "an invalidation message on `{channel}` may not have reached Redis: {}; it is sent again in the background",
                        self.scrub(&error)
                    )
                });
                self.owe(message, self.message(&crate::local::Change::All));
            }
        }
    }

    /// The invalidation message for `change`, as this process sends it.
    fn message(&self, change: &crate::local::Change) -> String {
        match self.inner.local.get() {
            Some(tier) => tier.message(change),
            // No local tier here: others may have one.
            None => change.message("-"),
        }
    }

    /// Owes an invalidation message, and makes sure a task sends the
    /// messages owed: one pipeline per round, until none is owed. Replies
    /// that are errors are refusals, as in `announce`: not sent again.
    fn owe(&self, message: String, everything: String) {
        if !self.inner.owed_messages.owe(message, everything) {
            return;
        }
        let cache = self.clone();
        let send_owed = move || {
            let cache = cache.clone();
            async move {
                let owed = &cache.inner.owed_messages;
                let channel = crate::local::channel(&cache.inner.config.key_prefix);
                let batch = owed.batch();
                let mut pipeline = redis::pipe();
                for message in &batch {
                    pipeline.cmd("PUBLISH").arg(&channel).arg(message);
                }
                if cache
                    .inner
                    .connection
                    .send_pipeline(&pipeline)
                    .await
                    .is_err()
                {
                    return Round::Failed;
                }
                if !owed.sent(&batch) {
                    return Round::Progress;
                }
                cache
                    .incidents()
                    .recovered(|| format!("owed invalidation messages on `{channel}` sent"));
                Round::Done
            }
        };
        if crate::retry::spawn_until_done(send_owed).is_err() {
            self.inner.owed_messages.stopped();
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }

    /// `ttl` less a random share of up to `ttl_jitter` of it, so that keys
    /// written together do not expire together; never more than `ttl`.
    pub(crate) fn jittered(&self, ttl: Duration) -> Duration {
        let ratio = self.inner.config.ttl_jitter;
        if ratio == 0.0 {
            return ttl;
        }
        let cut = ttl.mul_f64(ratio * crate::random::unit());
        ttl.saturating_sub(cut).max(Duration::from_millis(1))
    }

    pub(crate) fn key_builder(&self, capacity_hint: usize) -> KeyBuilder {
        KeyBuilder::new(
            &self.inner.config.key_prefix,
            self.inner.config.max_key_len,
            capacity_hint,
        )
    }

    /// Starts the key of a tag's set: behind the prefix and the tag marker.
    pub(crate) fn tag_builder(&self, capacity_hint: usize) -> KeyBuilder {
        let mut builder = self.key_builder(crate::invalidate::TAG_MARKER.len() + capacity_hint);
        builder.push_literal(crate::invalidate::TAG_MARKER);
        builder
    }

    /// The cached-call lookup: never an error, only what to do next.
    pub(crate) async fn lookup<T: DeserializeOwned>(&self, full_key: &str) -> Lookup<T> {
        // An eviction that failed is waiting to be applied: what Redis holds
        // may be what it should have evicted.
        if self.parked().any() {
            return Lookup::Failed;
        }
        match self.send_get(full_key).await {
            Ok(Some(bytes)) => match self.decode(&bytes) {
                Some(value) => Lookup::Hit(value),
                None => Lookup::Miss,
            },
            Ok(None) => Lookup::Miss,
            Err(error) => {
                self.warn_lookup_failed(&error);
                Lookup::Failed
            }
        }
    }

    /// Logs (rate-limited, password scrubbed) a lookup that Redis failed.
    fn warn_lookup_failed(&self, error: &CacheError) {
        self.incidents().warn(Incident::Lookup, || {
            format!(
                "cache lookup failed, running the function uncached: {} (Redis at {})",
                self.scrub(error),
                self.inner.connection.shared.redacted_url
            )
        });
    }

    /// [`Cache::lookup`] for a function with a local tier: also asks for the
    /// entry's remaining TTL (in the same round trip), so that the local copy
    /// never outlives it, and returns the entry's encoded size.
    pub(crate) async fn lookup_for_local<T: DeserializeOwned>(
        &self,
        full_key: &str,
    ) -> (Lookup<T>, Option<(Duration, usize)>) {
        if self.parked().any() {
            return (Lookup::Failed, None);
        }
        let mut pipeline = redis::pipe();
        pipeline.cmd("GET").arg(full_key).cmd("PTTL").arg(full_key);
        let replies = match self.inner.connection.send_pipeline(&pipeline).await {
            Ok(replies) => replies,
            Err(error) => {
                self.warn_lookup_failed(&error);
                return (Lookup::Failed, None);
            }
        };
        let mut replies = replies.into_iter();
        let (Some(value), Some(pttl)) = (replies.next(), replies.next()) else {
            return (Lookup::Miss, None);
        };
        let bytes = match value {
            redis::Value::BulkString(bytes) => bytes,
            redis::Value::Nil => return (Lookup::Miss, None),
            _ => return (Lookup::Miss, None),
        };
        let Some(decoded) = self.decode(&bytes) else {
            return (Lookup::Miss, None);
        };
        let ttl = match pttl {
            redis::Value::Int(ms) if ms > 0 => Some(Duration::from_millis(ms.unsigned_abs())),
            // No expiry (not written by this library): the local tier's own
            // `max_ttl` bounds the copy.
            redis::Value::Int(-1) => Some(Duration::MAX),
            _ => None,
        };
        (Lookup::Hit(decoded), ttl.map(|ttl| (ttl, bytes.len())))
    }

    /// Encodes a result for storing; logs a failure.
    pub(crate) fn encode<T: Serialize + ?Sized>(
        &self,
        value: &T,
        fresh_until: Option<u64>,
    ) -> Option<Vec<u8>> {
        codec::encode(value, fresh_until)
            .map_err(|error| {
                self.incidents().warn(Incident::Encode, || {
                    format!("the result cannot be serialized, so it is not cached: {error}")
                });
            })
            .ok()
    }

    /// The cached-call store of an encoded entry, and its membership in the
    /// tag sets `tags` (full keys). Logs a failure.
    pub(crate) async fn store(
        &self,
        full_key: &str,
        bytes: &[u8],
        ttl: Duration,
        tags: &[String],
    ) -> Result<(), ()> {
        let result = if tags.is_empty() {
            self.send_set(full_key, bytes, ttl).await
        } else {
            self.send_tagged_set(full_key, bytes, ttl, tags).await
        };
        result.map_err(|error| {
            self.incidents().warn(Incident::Store, || {
                format!(
                    "cache store failed; the result is returned but not cached: {} (Redis at {})",
                    self.scrub(&error),
                    self.inner.connection.shared.redacted_url
                )
            });
        })
    }

    pub(crate) async fn send_get(&self, full_key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let value = match self
            .inner
            .connection
            .send(redis::cmd("GET").arg(full_key))
            .await
        {
            Ok(value) => value,
            // A key of another Redis type (a list, a hash…): an entry that
            // does not decode, which the next store overwrites.
            Err(CacheError::Redis(error)) if error.code() == Some("WRONGTYPE") => {
                return Ok(Some(Vec::new()));
            }
            Err(error) => return Err(error),
        };
        Ok(match value {
            redis::Value::BulkString(bytes) => Some(bytes),
            redis::Value::Nil => None,
            // Not what GET answers: a confused proxy or server. Treat it as an
            // entry that does not decode, which the next store overwrites.
            _ => Some(Vec::new()),
        })
    }

    async fn send_set(
        &self,
        full_key: &str,
        bytes: &[u8],
        ttl: Duration,
    ) -> Result<(), CacheError> {
        // Never store without an expiry, and never a zero one (an error in Redis).
        let ttl_ms = crate::units::ttl_millis(ttl);
        self.inner
            .connection
            .send(&set_command(full_key, bytes, ttl_ms))
            .await
            .map(drop)
    }

    /// SET plus, per tag, SADD and an expiry no shorter than the entry's:
    /// `PEXPIRE … NX` gives a new set one, `PEXPIRE … GT` extends it.
    async fn send_tagged_set(
        &self,
        full_key: &str,
        bytes: &[u8],
        ttl: Duration,
        tags: &[String],
    ) -> Result<(), CacheError> {
        let ttl_ms = crate::units::ttl_millis(ttl);
        let tag_commands = |pipeline: &mut redis::Pipeline, tag: &str| {
            pipeline.cmd("SADD").arg(tag).arg(full_key);
            pipeline.cmd("PEXPIRE").arg(tag).arg(ttl_ms).arg("NX");
            pipeline.cmd("PEXPIRE").arg(tag).arg(ttl_ms).arg("GT");
        };
        if self.inner.connection.is_cluster() {
            // The entry and each tag set live in their own slots, and a
            // cluster pipeline must stay within one: one round trip each.
            self.send_set(full_key, bytes, ttl).await?;
            for tag in tags {
                let mut pipeline = redis::pipe();
                tag_commands(&mut pipeline, tag);
                self.send_checked_pipeline(&pipeline).await?;
            }
            return Ok(());
        }
        let mut pipeline = redis::pipe();
        pipeline.add_command(set_command(full_key, bytes, ttl_ms));
        for tag in tags {
            tag_commands(&mut pipeline, tag);
        }
        self.send_checked_pipeline(&pipeline).await
    }

    /// Sends a pipeline; a server error inside it, which comes back as a
    /// reply, becomes an error.
    async fn send_checked_pipeline(&self, pipeline: &redis::Pipeline) -> Result<(), CacheError> {
        for reply in self.inner.connection.send_pipeline(pipeline).await? {
            if let redis::Value::ServerError(error) = reply {
                return Err(CacheError::Redis(error.into()));
            }
        }
        Ok(())
    }

    /// Whether the cache talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.inner.connection.is_cluster()
    }

    /// The masters of the cluster, as `(host, port)`, from `CLUSTER NODES`.
    pub(crate) async fn cluster_masters(&self) -> Result<Vec<(String, u16)>, CacheError> {
        let reply = self.send(redis::cmd("CLUSTER").arg("NODES")).await?;
        let text = match reply {
            redis::Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            redis::Value::VerbatimString { text, .. } => text,
            _ => return Err(CacheError::Unavailable),
        };
        Ok(text
            .lines()
            .filter_map(|line| {
                // <id> <host:port@bus[,hostname]> <flags> …
                let mut fields = line.split_whitespace();
                let address = fields.nth(1)?;
                let flags = fields.next()?;
                if !flags.split(',').any(|flag| flag == "master") || flags.contains("fail") {
                    return None;
                }
                let host_port = address.split(['@', ',']).next()?;
                let (host, port) = host_port.rsplit_once(':')?;
                Some((host.to_owned(), port.parse().ok()?))
            })
            .collect())
    }

    /// Sends `cmd` to one node of the cluster.
    pub(crate) async fn send_to_node(
        &self,
        cmd: &redis::Cmd,
        host: &str,
        port: u16,
    ) -> Result<redis::Value, CacheError> {
        self.inner.connection.send_to_node(cmd, host, port).await
    }

    pub(crate) fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Option<Decoded<T>> {
        match codec::decode(bytes) {
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

    /// An error's message without the URL's password.
    pub(crate) fn scrub(&self, error: &dyn std::fmt::Display) -> String {
        self.inner.connection.shared.scrub(&error.to_string())
    }

    pub(crate) fn incidents(&self) -> &crate::incident::Incidents {
        &self.inner.connection.shared.incidents
    }
}

/// `SET key value PX ttl_ms`, built in buffers of the right size: with
/// `redis::cmd("SET")`, the argument after a large value would grow the
/// command's buffer once more, copying the value into a buffer twice its size.
fn set_command(full_key: &str, bytes: &[u8], ttl_ms: u64) -> redis::Cmd {
    const U64_DIGITS: usize = 20;
    let data = "SET".len() + full_key.len() + bytes.len() + "PX".len() + U64_DIGITS;
    let mut cmd = redis::Cmd::with_capacity(5, data);
    cmd.arg("SET")
        .arg(full_key)
        .arg(bytes)
        .arg("PX")
        .arg(ttl_ms);
    cmd
}

/// Escapes `value` exactly as a key placeholder does, for code that needs to
/// build a key by hand: `format!("user:{}", escape_key_part(name))`.
pub fn escape_key_part(value: &str) -> String {
    keys::escape(value)
}
