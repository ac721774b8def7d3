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
//!   Redis takes to deliver a message (measured in BENCHMARKS.md).
//!
//! What bounds a stale copy when something fails:
//! - **The subscription drops** (Redis restarts, the connection is killed):
//!   the tier is emptied at once and bypassed until it has resubscribed.
//! - **The subscription goes silent** (a half-open connection, a stalled
//!   server): it is PINGed every [`LocalTier::health_check_interval`], and one
//!   that does not answer within the connect timeout counts as dropped. A
//!   copy made stale meanwhile lives at most that interval plus that timeout.
//! - **A message may not have gone out** (its PUBLISH failed or missed its
//!   deadline): the sender owes it, and sends the messages it owes again in
//!   the background, backing off up to once a second, until Redis takes
//!   them; more than a thousand owed become one message that drops every
//!   copy. Meanwhile the sender goes on using Redis, which holds the change.
//!   Redis refusing the message (`NOPERM`, `ERR`) is only logged: such a
//!   process cannot subscribe either, so its own tier stays off.
//! - **A read crosses a message**: a value read from Redis is kept only if no
//!   message about its key (or a prefix, a tag, or the subscription) arrived
//!   between the read's start and its copy, so an old value read just before
//!   another process's write is not kept after that write's message.
//! - **Redis is changed behind the library's back** (a `SET` from another
//!   program, `FLUSHDB`, a key evicted by `maxmemory`): nobody announces it,
//!   and a copy lives until its own TTL, capped by [`LocalTier::max_ttl`].

use std::any::Any;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::incident::{Incident, Incidents};

/// The longest [`LocalTier::max_ttl`]: past it, `Instant` arithmetic (and
/// moka) would overflow, and no copy needs to live longer.
const LONGEST_MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// The local tier's settings, for [`CacheBuilder::local_tier`](crate::CacheBuilder::local_tier).
#[derive(Debug, Clone)]
pub struct LocalTier {
    max_entries: u64,
    max_bytes: u64,
    max_ttl: Duration,
    health_check_interval: Duration,
    for_all_functions: bool,
}

impl Default for LocalTier {
    fn default() -> Self {
        LocalTier {
            max_entries: 10_000,
            max_bytes: 64 * 1024 * 1024,
            max_ttl: Duration::from_secs(60),
            health_check_interval: Duration::from_secs(1),
            for_all_functions: false,
        }
    }
}

impl LocalTier {
    /// The defaults: 10 000 entries, 64 MiB, 60 s, a health check every
    /// second, only `local = true` functions.
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
    marks: Marks,
    /// The subscription's failures, rate-limited.
    incidents: Incidents,
    _stop_subscriber: Option<oneshot::Sender<()>>,
}

/// Counts the changes a read from Redis may have crossed, so that what it
/// read is not kept if one did. Keys are spread over stripes: a message
/// about one key spoils only the reads in its stripe.
struct Marks {
    /// Prefixes, tags, and the subscription going down or up.
    every_key: AtomicU64,
    stripes: [AtomicU64; MARK_STRIPES],
}

/// Enough that a write to one key rarely spoils a read of another (a read
/// spoiled is only a fill skipped: the next call reads Redis again).
const MARK_STRIPES: usize = 1024;

/// The changes counted when a read started; see [`Tier::mark`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    every_key: u64,
    stripe: usize,
    in_stripe: u64,
}

impl Marks {
    fn stripe(key: &str) -> usize {
        let hash =
            std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(key);
        (hash % MARK_STRIPES as u64) as usize
    }

    fn mark(&self, key: &str) -> Mark {
        let stripe = Marks::stripe(key);
        Mark {
            every_key: self.every_key.load(Ordering::SeqCst),
            stripe,
            in_stripe: self.stripes[stripe].load(Ordering::SeqCst),
        }
    }

    fn changed_since(&self, mark: Mark) -> bool {
        self.every_key.load(Ordering::SeqCst) != mark.every_key
            || self.stripes[mark.stripe].load(Ordering::SeqCst) != mark.in_stripe
    }

    fn count(&self, change: &Change) {
        match change {
            Change::Key(key) => self.stripes[Marks::stripe(key)].fetch_add(1, Ordering::SeqCst),
            Change::Prefix(_) | Change::All => self.every_key.fetch_add(1, Ordering::SeqCst),
        };
    }
}

impl Tier {
    pub(crate) fn start(config: &Config, client: Option<redis::Client>) -> Arc<Tier> {
        let settings = config.local_tier.clone().unwrap_or_default();
        let min_weight = (settings.max_bytes / settings.max_entries).max(1);
        let entries = moka::sync::Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(|_key: &String, entry: &LocalEntry| entry.weight)
            .time_to_live(settings.max_ttl)
            // For prefix evictions (`invalidate_entries_if`), which moka
            // refuses otherwise.
            .support_invalidation_closures()
            .build();
        let channel = channel(&config.key_prefix);
        let (stop_tx, stop_rx) = oneshot::channel();
        let tier = Arc::new(Tier {
            entries,
            settings,
            min_weight,
            instance: crate::random::token(),
            channel,
            subscribed: AtomicBool::new(false),
            marks: Marks {
                every_key: AtomicU64::new(0),
                stripes: [const { AtomicU64::new(0) }; MARK_STRIPES],
            },
            incidents: Incidents::new(config.log_interval),
            _stop_subscriber: Some(stop_tx),
        });
        match (client, crate::io::io_runtime()) {
            (Some(client), Ok(io)) => {
                io.spawn(subscribe(
                    Arc::downgrade(&tier),
                    client,
                    config.connect_timeout,
                    stop_rx,
                ));
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

    /// Notes the changes counted so far, before reading `key` from Redis;
    /// [`Tier::insert`] keeps what was read only if none came since.
    pub(crate) fn mark(&self, key: &str) -> Mark {
        self.marks.mark(key)
    }

    /// Keeps a copy of `value` for at most `ttl` (and `max_ttl`), unless a
    /// change that may cover `key` was counted since `since`.
    pub(crate) fn insert<T>(
        &self,
        key: &str,
        value: &T,
        ops: &LocalOps<T>,
        ttl: Duration,
        encoded_len: usize,
        since: Mark,
    ) {
        if !self.usable() || self.marks.changed_since(since) {
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
        // A change counted between the check above and the insert may have
        // dropped the key before the copy went in: take the copy out again.
        // `forget` counts, then drops; this inserts, then reads the count.
        // The fences (here and in `forget`) order each pair, so one of the
        // two sees the other whatever orderings moka uses inside.
        std::sync::atomic::fence(Ordering::SeqCst);
        if !self.usable() || self.marks.changed_since(since) {
            self.entries.invalidate(key);
        }
    }

    /// Drops the copies `change` covers, after counting it (see [`Marks`]).
    pub(crate) fn forget(&self, change: &Change) {
        self.marks.count(change);
        std::sync::atomic::fence(Ordering::SeqCst);
        match change {
            Change::Key(key) => self.entries.invalidate(key),
            Change::Prefix(prefix) => {
                let prefix = prefix.clone();
                if self
                    .entries
                    .invalidate_entries_if(move |key, _| key.starts_with(&prefix))
                    .is_err()
                {
                    // Cannot happen with closures enabled at build; if it
                    // did, dropping everything is still correct.
                    self.entries.invalidate_all();
                }
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

/// Invalidation messages that may not have reached Redis (their `PUBLISH`
/// failed, or missed its deadline), waiting to be sent again. Owing a
/// message does not stop this process from using Redis: Redis already holds
/// the change; only the other processes' local tiers are owed the news.
#[derive(Default)]
pub(crate) struct OwedMessages(std::sync::Mutex<Owed>);

#[derive(Default)]
struct Owed {
    /// In the order they were owed; sent again in that order.
    messages: Vec<String>,
    /// Whether a task is sending them.
    replaying: bool,
}

/// The most messages owed; past it, one message that drops every local copy
/// stands for them all.
const MAX_OWED: usize = 1_000;

impl OwedMessages {
    /// Owes `message`, or, past [`MAX_OWED`], `everything` instead of all
    /// the messages owed. Returns whether a task must start sending them.
    pub(crate) fn owe(&self, message: String, everything: String) -> bool {
        let mut owed = self.lock();
        owed.messages.push(message);
        if owed.messages.len() > MAX_OWED {
            owed.messages = vec![everything];
        }
        !std::mem::replace(&mut owed.replaying, true)
    }

    /// The messages to send now.
    pub(crate) fn batch(&self) -> Vec<String> {
        self.lock().messages.clone()
    }

    /// `batch` went out: forgets it. Returns whether nothing is owed any
    /// more, in which case the sending task ends (and the next message owed
    /// starts another).
    pub(crate) fn sent(&self, batch: &[String]) -> bool {
        let mut owed = self.lock();
        // Messages are only appended, unless too many were replaced by one
        // for everything, which has not gone out yet: then keep it. Never
        // forget a message by its text alone: the same text owed again after
        // the batch was read may be news the batch did not carry.
        if owed.messages.starts_with(batch) {
            owed.messages.drain(..batch.len());
        }
        let done = owed.messages.is_empty();
        if done {
            owed.replaying = false;
        }
        done
    }

    /// No task could be started: the next message owed tries again.
    pub(crate) fn stopped(&self) {
        self.lock().replaying = false;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Owed> {
        crate::sync::lock(&self.0)
    }
}

/// The invalidation channel of caches with this key prefix.
pub(crate) fn channel(key_prefix: &str) -> String {
    format!("{key_prefix}#invalidate")
}

impl Tier {
    /// The subscription went up or down: either way, copies made before may
    /// have missed messages, and so may reads in the air.
    fn set_subscribed(&self, subscribed: bool) {
        self.subscribed.store(subscribed, Ordering::SeqCst);
        self.forget(&Change::All);
    }
}

/// Why a subscription ended.
enum Ended {
    /// The tier is gone.
    TierDropped,
    /// The server closed the connection.
    Closed,
    Failed(redis::RedisError),
    /// A health-check PING got no answer in time.
    Silent(Duration),
}

/// Keeps the subscription to the invalidation channel; while it is down, the
/// tier is empty and unused.
async fn subscribe(
    tier: Weak<Tier>,
    client: redis::Client,
    ping_timeout: Duration,
    mut stop: oneshot::Receiver<()>,
) {
    let mut backoff = Duration::from_millis(25);
    loop {
        let ended = tokio::select! {
            _ = &mut stop => return,
            ended = session(&tier, &client, ping_timeout) => ended,
        };
        let Some(strong) = tier.upgrade() else {
            return;
        };
        let was_subscribed = strong.usable();
        if was_subscribed {
            // A subscription that worked: the next attempt starts quickly.
            backoff = Duration::from_millis(25);
        }
        strong.set_subscribed(false);
        let why = match ended {
            Ended::TierDropped => return,
            Ended::Closed => "the connection was closed".to_owned(),
            Ended::Failed(error) => error.to_string(),
            Ended::Silent(timeout) => format!("a PING got no answer within {timeout:?}"),
        };
        strong.incidents.warn(Incident::Subscribe, || {
            let state = if was_subscribed {
                "lost"
            } else {
                "cannot subscribe"
            };
            format!(
                "the local tier's invalidation channel `{}`: {state} ({why}); the local tier is emptied and bypassed until it is subscribed again",
                strong.channel
            )
        });
        drop(strong);
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

/// One subscription, from connecting to its end.
async fn session(tier: &Weak<Tier>, client: &redis::Client, ping_timeout: Duration) -> Ended {
    let Some((channel, interval)) = tier
        .upgrade()
        .map(|tier| (tier.channel.clone(), tier.settings.health_check_interval))
    else {
        return Ended::TierDropped;
    };
    let mut pubsub = match client.get_async_pubsub().await {
        Ok(pubsub) => pubsub,
        Err(error) => return Ended::Failed(error),
    };
    if let Err(error) = pubsub.subscribe(&channel).await {
        return Ended::Failed(error);
    }
    match tier.upgrade() {
        Some(tier) => {
            let was_subscribed = tier.usable();
            tier.set_subscribed(true);
            if !was_subscribed {
                tier.incidents.recovered(|| {
                    format!("the local tier's invalidation channel `{channel}` is subscribed")
                });
            }
        }
        None => return Ended::TierDropped,
    }
    let (mut sink, mut messages) = pubsub.split();
    let mut health_check = tokio::time::interval(interval);
    health_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    health_check.reset();
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else {
                    return Ended::Closed;
                };
                let Some(tier) = tier.upgrade() else {
                    return Ended::TierDropped;
                };
                if let Ok(text) = message.get_payload::<String>() {
                    tier.receive(&text);
                }
            }
            _ = health_check.tick() => {
                match tokio::time::timeout(ping_timeout, sink.ping::<redis::Value>()).await {
                    // An error reply (PING refused to an ACL user) is an
                    // answer too.
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) if crate::connection::is_server_reply(&error) => {}
                    Ok(Err(error)) => return Ended::Failed(error),
                    Err(_) => return Ended::Silent(ping_timeout),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tier as if subscribed, without Redis: its messages are fed by hand.
    fn subscribed_tier() -> Arc<Tier> {
        let config = crate::config::CacheBuilder::default()
            .into_config()
            .expect("the default configuration is valid");
        let tier = Tier::start(&config, None);
        tier.subscribed.store(true, Ordering::SeqCst);
        tier
    }

    fn ops() -> LocalOps<u32> {
        Probe::<u32>::new()
            .local_ops()
            .expect("u32 is Clone + Send + Sync")
    }

    fn keep(tier: &Tier, key: &str, value: u32, since: Mark) -> Option<u32> {
        let ops = ops();
        tier.insert(key, &value, &ops, Duration::from_secs(60), 8, since);
        tier.get(key, &ops, Instant::now())
    }

    #[test]
    fn a_read_that_crossed_a_message_about_its_key_is_not_kept() {
        let tier = subscribed_tier();
        let since = tier.mark("user:1");
        tier.receive("k elsewhere user:1");
        assert_eq!(keep(&tier, "user:1", 1, since), None);
        assert_eq!(keep(&tier, "user:1", 2, tier.mark("user:1")), Some(2));
    }

    #[test]
    fn a_message_about_a_key_in_another_stripe_spoils_no_read() {
        let tier = subscribed_tier();
        let other = (0..)
            .map(|n| format!("user:{n}"))
            .find(|key| Marks::stripe(key) != Marks::stripe("user:1"))
            .expect("keys spread over stripes");
        let since = tier.mark("user:1");
        tier.receive(&format!("k elsewhere {other}"));
        assert_eq!(keep(&tier, "user:1", 1, since), Some(1));
    }

    #[test]
    fn a_prefix_a_tag_or_the_subscription_spoils_every_read() {
        let tier = subscribed_tier();
        for spoil in [
            &|tier: &Tier| tier.receive("p elsewhere order:"),
            &|tier: &Tier| tier.receive("a elsewhere "),
            &|tier: &Tier| tier.set_subscribed(true),
        ] as [&dyn Fn(&Tier); 3]
        {
            let since = tier.mark("user:1");
            spoil(&tier);
            assert_eq!(keep(&tier, "user:1", 1, since), None);
        }
    }

    #[test]
    fn this_processs_own_messages_are_ignored() {
        let tier = subscribed_tier();
        let since = tier.mark("user:1");
        tier.receive(&format!("k {} user:1", tier.instance));
        assert_eq!(keep(&tier, "user:1", 1, since), Some(1));
    }

    #[test]
    fn a_prefix_message_drops_the_copies_under_it() {
        let tier = subscribed_tier();
        let ops = ops();
        for key in ["order:1", "order:2", "user:1"] {
            assert_eq!(keep(&tier, key, 1, tier.mark(key)), Some(1));
        }
        tier.receive("p elsewhere order:");
        assert_eq!(tier.get("order:1", &ops, Instant::now()), None);
        assert_eq!(tier.get("order:2", &ops, Instant::now()), None);
        assert_eq!(tier.get("user:1", &ops, Instant::now()), Some(1));
    }

    fn message(n: usize) -> String {
        format!("k me key:{n}")
    }

    #[test]
    fn owed_messages_go_in_order_and_one_task_sends_them() {
        let owed = OwedMessages::default();
        assert!(
            owed.owe(message(1), "a me ".into()),
            "the first starts a task"
        );
        assert!(!owed.owe(message(2), "a me ".into()), "one task at a time");
        let batch = owed.batch();
        assert_eq!(batch, [message(1), message(2)]);
        // Owed again while the batch is on its way: it may be news the batch
        // did not carry, so it stays owed.
        owed.owe(message(1), "a me ".into());
        assert!(!owed.sent(&batch));
        assert_eq!(owed.batch(), [message(1)]);
        assert!(owed.sent(&[message(1)]), "nothing owed: the task ends");
        assert!(
            owed.owe(message(3), "a me ".into()),
            "the next starts a task"
        );
    }

    #[test]
    fn too_many_owed_messages_become_one_for_everything() {
        let owed = OwedMessages::default();
        for n in 0..=MAX_OWED {
            owed.owe(message(n), "a me ".into());
        }
        let batch = owed.batch();
        assert_eq!(batch, ["a me "]);
        // A batch read before the overflow is not what is owed any more.
        assert!(!owed.sent(&[message(0)]));
        assert!(owed.sent(&batch));
    }

    #[test]
    fn max_ttl_is_capped_rather_than_overflowing() {
        let settings = LocalTier::new().max_ttl(Duration::MAX);
        assert_eq!(settings.max_ttl, LONGEST_MAX_TTL);
    }
}
