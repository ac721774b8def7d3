//! The local tier, with the `local` feature: moka holding decoded values,
//! the marks that keep a read which crossed a change from being kept, and
//! the subscription to the invalidation channel.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::oneshot;

use super::LocalOps;
use crate::change::{Change, channel};
use crate::config::{Config, LocalTierSettings};
use crate::incident::{Incident, Incidents};

#[derive(Clone)]
struct LocalEntry {
    value: Arc<dyn std::any::Any + Send + Sync>,
    expires_at: Instant,
    weight: u32,
}

/// A cache's local tier, with its invalidation subscription.
pub(crate) struct LocalTier {
    entries: moka::sync::Cache<String, LocalEntry>,
    settings: LocalTierSettings,
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
/// spoiled is only a copy not kept: the next call reads Redis again).
const MARK_STRIPES: usize = 1024;

/// The changes counted when a read started; see [`LocalTier::mark`].
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

impl LocalTier {
    pub(crate) fn start(
        config: &Config,
        client: Option<redis::Client>,
        instance: String,
    ) -> Arc<LocalTier> {
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
        let tier = Arc::new(LocalTier {
            entries,
            settings,
            min_weight,
            instance,
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
    /// [`LocalTier::insert`] keeps what was read only if none came since.
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
        if ttl.is_zero() || !self.usable() || self.marks.changed_since(since) {
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

    /// Applies an invalidation message from another process.
    fn receive(&self, message: &str) {
        match Change::parse(message) {
            Some((sender, change)) if sender != self.instance => self.forget(&change),
            _ => {}
        }
    }
}

impl LocalTier {
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
    LocalTierDropped,
    /// The server closed the connection.
    Closed,
    Failed(redis::RedisError),
    /// A health-check PING got no answer in time.
    Silent(Duration),
}

/// Keeps the subscription to the invalidation channel; while it is down, the
/// tier is empty and unused.
async fn subscribe(
    tier: Weak<LocalTier>,
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
            Ended::LocalTierDropped => return,
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
async fn session(tier: &Weak<LocalTier>, client: &redis::Client, ping_timeout: Duration) -> Ended {
    let Some((channel, interval)) = tier
        .upgrade()
        .map(|tier| (tier.channel.clone(), tier.settings.health_check_interval))
    else {
        return Ended::LocalTierDropped;
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
        None => return Ended::LocalTierDropped,
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
                    return Ended::LocalTierDropped;
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
    use crate::local::{Probe, ViaClone};

    /// A tier as if subscribed, without Redis: its messages are fed by hand.
    fn subscribed_tier() -> Arc<LocalTier> {
        let config = crate::builder::CacheBuilder::default()
            .into_config()
            .expect("the default configuration is valid");
        let tier = LocalTier::start(&config, None, "this-process".to_owned());
        tier.subscribed.store(true, Ordering::SeqCst);
        tier
    }

    fn ops() -> LocalOps<u32> {
        Probe::<u32>::new()
            .local_ops()
            .expect("u32 is Clone + Send + Sync")
    }

    fn keep(tier: &LocalTier, key: &str, value: u32, since: Mark) -> Option<u32> {
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
            &|tier: &LocalTier| tier.receive("p elsewhere order:"),
            &|tier: &LocalTier| tier.receive("a elsewhere "),
            &|tier: &LocalTier| tier.set_subscribed(true),
        ] as [&dyn Fn(&LocalTier); 3]
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
}
