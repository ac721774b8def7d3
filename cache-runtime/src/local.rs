//! The local tier: an in-process copy of hot entries, so that a hit costs a
//! hash-map lookup and a clone instead of a round trip and a decode.
//!
//! - **Opt-in**: `local = true` on the attribute, or
//!   [`LocalTier::for_all_functions`] on the builder (which applies to every
//!   function whose stored type is `Clone`, the only ones that can be served
//!   without decoding).
//! - **Bounded** by entries and bytes (moka, weighted by each entry's encoded
//!   size), and by time: a local copy never outlives its Redis entry, nor
//!   its value's freshness (with `stale`), nor [`LocalTier::max_ttl`].
//! - **Decoded once**: the copy is the decoded value behind an `Arc`; a local
//!   hit clones it.
//! - **Coherent across processes**: every eviction and every write-through
//!   (`#[cache_evict]`, `#[cache_put]`, the derived helpers, `Cache::set`,
//!   `delete` and `invalidate*`) publishes the key on a Redis pub/sub channel
//!   (`<prefix>#invalidate`) once Redis has applied it. Every process
//!   subscribes and drops its copy when the message arrives: within the time
//!   Redis takes to deliver a message (measured in BENCHMARKS.md). While the
//!   subscription is down, the local tier is emptied and bypassed, so a
//!   missed message can never leave a stale copy in use.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::oneshot;

/// The local tier's settings, for [`CacheBuilder::local_tier`](crate::CacheBuilder::local_tier).
#[derive(Debug, Clone)]
pub struct LocalTier {
    max_entries: u64,
    max_bytes: u64,
    max_ttl: Duration,
    for_all_functions: bool,
}

impl Default for LocalTier {
    fn default() -> Self {
        LocalTier {
            max_entries: 10_000,
            max_bytes: 64 * 1024 * 1024,
            max_ttl: Duration::from_secs(60),
            for_all_functions: false,
        }
    }
}

impl LocalTier {
    /// The defaults: 10 000 entries, 64 MiB, 60 s, only `local = true`
    /// functions.
    pub fn new() -> Self {
        LocalTier::default()
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

    /// The longest a local copy is used, even if its Redis entry lives longer.
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = ttl;
        self
    }

    /// Use the local tier for every function whose stored type is `Clone`,
    /// not only those with `local = true`.
    pub fn for_all_functions(mut self, all: bool) -> Self {
        self.for_all_functions = all;
        self
    }
}

/// How to put a decoded value in the local tier and take it out, for one
/// stored type. Built by generated code only where the type is `Clone`.
pub struct LocalOps<T> {
    to_any: fn(&T) -> Arc<dyn Any + Send + Sync>,
    from_any: fn(&(dyn Any + Send + Sync)) -> Option<T>,
}

impl<T> Clone for LocalOps<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for LocalOps<T> {}

/// Autoref specialization: `(&Probe::<T>::new()).local_ops()` is
/// `Some(LocalOps)` when `T: Clone + Send + Sync + 'static`, `None` otherwise.
pub struct Probe<T>(std::marker::PhantomData<T>);

impl<T> Probe<T> {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Probe(std::marker::PhantomData)
    }
}

pub trait ViaClone<T> {
    fn local_ops(&self) -> Option<LocalOps<T>>;
}

impl<T: Clone + Send + Sync + 'static> ViaClone<T> for Probe<T> {
    fn local_ops(&self) -> Option<LocalOps<T>> {
        Some(LocalOps {
            to_any: |value| Arc::new(value.clone()),
            from_any: |any| any.downcast_ref::<T>().cloned(),
        })
    }
}

pub trait NotLocal<T> {
    fn local_ops(&self) -> Option<LocalOps<T>>;
}

impl<T> NotLocal<T> for &Probe<T> {
    fn local_ops(&self) -> Option<LocalOps<T>> {
        None
    }
}

#[derive(Clone)]
struct LocalEntry {
    value: Arc<dyn Any + Send + Sync>,
    expires_at: Instant,
    weight: u32,
}

/// A cache's local tier, with its invalidation subscription.
pub(crate) struct Tier {
    entries: moka::sync::Cache<String, LocalEntry>,
    settings: LocalTier,
    /// The weight below which no entry counts, so that `max_bytes` also
    /// bounds the number of entries.
    min_weight: u64,
    /// Tells this process's own messages apart.
    instance: String,
    pub(crate) channel: String,
    /// Whether the invalidation subscription is up.
    subscribed: AtomicBool,
    _stop_subscriber: Option<oneshot::Sender<()>>,
}

impl Tier {
    pub(crate) fn start(
        settings: LocalTier,
        client: Option<redis::Client>,
        key_prefix: &str,
    ) -> Arc<Tier> {
        let min_weight = (settings.max_bytes / settings.max_entries).max(1);
        let entries = moka::sync::Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(|_key: &String, entry: &LocalEntry| entry.weight)
            .time_to_live(settings.max_ttl)
            .build();
        let channel = channel(key_prefix);
        let (stop_tx, stop_rx) = oneshot::channel();
        let tier = Arc::new(Tier {
            entries,
            settings,
            min_weight,
            instance: crate::random::token(),
            channel,
            subscribed: AtomicBool::new(false),
            _stop_subscriber: Some(stop_tx),
        });
        match (client, crate::connection::io_runtime()) {
            (Some(client), Ok(io)) => {
                io.spawn(subscribe(Arc::downgrade(&tier), client, stop_rx));
            }
            _ => tracing::warn!(
                target: "cache_runtime",
                "the local tier has no invalidation channel, so it stays off"
            ),
        }
        tier
    }

    pub(crate) fn for_all_functions(&self) -> bool {
        self.settings.for_all_functions
    }

    fn usable(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }

    /// A copy of the value kept for `key`, unless it had expired by `now`.
    pub(crate) fn get<T>(&self, key: &str, ops: &LocalOps<T>, now: Instant) -> Option<T> {
        if !self.usable() {
            return None;
        }
        let entry = self.entries.get(key)?;
        if entry.expires_at <= now {
            self.entries.invalidate(key);
            return None;
        }
        (ops.from_any)(&*entry.value)
    }

    /// Keeps a copy of `value` for at most `ttl` (and `max_ttl`).
    pub(crate) fn insert<T>(
        &self,
        key: &str,
        value: &T,
        ops: &LocalOps<T>,
        ttl: Duration,
        encoded_len: usize,
    ) {
        if !self.usable() {
            return;
        }
        let weight = (encoded_len as u64).max(self.min_weight);
        self.entries.insert(
            key.to_owned(),
            LocalEntry {
                value: (ops.to_any)(value),
                expires_at: Instant::now() + ttl.min(self.settings.max_ttl),
                weight: u32::try_from(weight).unwrap_or(u32::MAX),
            },
        );
    }

    pub(crate) fn forget(&self, change: &Change) {
        match change {
            Change::Key(key) => self.entries.invalidate(key),
            Change::Prefix(prefix) => {
                let prefix = prefix.clone();
                let _ = self
                    .entries
                    .invalidate_entries_if(move |key, _| key.starts_with(&prefix));
            }
            Change::All => self.entries.invalidate_all(),
        }
    }

    /// The message that tells other processes about `change`.
    pub(crate) fn message(&self, change: &Change) -> String {
        change.message(&self.instance)
    }

    fn receive(&self, message: &str) {
        let mut parts = message.splitn(3, ' ');
        let (Some(kind), Some(instance), text) = (parts.next(), parts.next(), parts.next()) else {
            return;
        };
        if instance == self.instance {
            return;
        }
        let text = text.unwrap_or_default().to_owned();
        match kind {
            "k" => self.forget(&Change::Key(text)),
            "p" => self.forget(&Change::Prefix(text)),
            _ => self.forget(&Change::All),
        }
    }
}

/// What changed in Redis, for local copies.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    Key(String),
    Prefix(String),
    /// A tag: its members are not known here, so every copy goes.
    All,
}

impl Change {
    /// The invalidation message: `<kind> <sender> <key or prefix>`. A
    /// process without a local tier sends as `-`.
    pub(crate) fn message(&self, instance: &str) -> String {
        let (kind, text) = match self {
            Change::Key(key) => ("k", key.as_str()),
            Change::Prefix(prefix) => ("p", prefix.as_str()),
            Change::All => ("a", ""),
        };
        format!("{kind} {instance} {text}")
    }
}

/// The invalidation channel of caches with this key prefix.
pub(crate) fn channel(key_prefix: &str) -> String {
    format!("{key_prefix}#invalidate")
}

/// Keeps the subscription to the invalidation channel; while it is down, the
/// tier is empty and unused.
async fn subscribe(tier: Weak<Tier>, client: redis::Client, mut stop: oneshot::Receiver<()>) {
    let mut backoff = Duration::from_millis(25);
    loop {
        let Some(channel) = tier.upgrade().map(|tier| tier.channel.clone()) else {
            return;
        };
        let session = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            if let Some(tier) = tier.upgrade() {
                // Copies from before the subscription may have missed messages.
                tier.entries.invalidate_all();
                tier.subscribed.store(true, Ordering::Release);
            }
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let Some(tier) = tier.upgrade() else {
                    return Ok(());
                };
                if let Ok(text) = message.get_payload::<String>() {
                    tier.receive(&text);
                }
            }
            redis::RedisResult::Ok(())
        };
        tokio::select! {
            _ = &mut stop => return,
            _ = session => {}
        }
        let Some(strong) = tier.upgrade() else {
            return;
        };
        strong.subscribed.store(false, Ordering::Release);
        strong.entries.invalidate_all();
        drop(strong);
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}
