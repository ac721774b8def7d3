//! The local tier, with the `local` feature: moka holding decoded values,
//! and the marks that keep a read which crossed a change from being kept.
//! Its listener (`listener.rs`) tells it what changed in Redis.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::LocalOps;
use super::listener::Listener;
use crate::change::{Change, channel};
use crate::config::{Config, LocalTierSettings};
use crate::connection::Nodes;
use crate::incident::Incidents;
use crate::status::LocalTierStatus;

#[derive(Clone)]
struct LocalEntry {
    value: Arc<dyn std::any::Any + Send + Sync>,
    expires_at: Instant,
    weight: u32,
}

/// A cache's local tier; its listener runs while it lives.
pub(crate) struct LocalTier {
    entries: moka::sync::Cache<String, LocalEntry>,
    settings: LocalTierSettings,
    /// The weight below which no entry counts, so that `max_bytes` also
    /// bounds the number of entries.
    min_weight: u64,
    /// Tells this process's own messages apart.
    instance: String,
    /// Whether the listener hears every change: only then are copies used.
    listening: AtomicBool,
    marks: Marks,
    /// The listener's failures, rate-limited.
    incidents: Incidents,
    _stop_listener: Option<oneshot::Sender<()>>,
}

/// Counts the changes a read from Redis may have crossed, so that what it
/// read is not kept if one did. Keys are spread over stripes: a message
/// about one key spoils only the reads in its stripe.
struct Marks {
    /// Prefixes, tags, flushes, and the listener stopping or starting.
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
    /// Starts a tier, and its listener on `nodes` (none: the tier stays
    /// bypassed).
    pub(crate) fn start(config: &Config, nodes: Option<Nodes>, instance: String) -> Arc<LocalTier> {
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
        let (stop_tx, stop_rx) = oneshot::channel();
        let health_check_interval = settings.health_check_interval;
        let tier = Arc::new(LocalTier {
            entries,
            settings,
            min_weight,
            instance,
            listening: AtomicBool::new(false),
            marks: Marks {
                every_key: AtomicU64::new(0),
                stripes: [const { AtomicU64::new(0) }; MARK_STRIPES],
            },
            incidents: Incidents::new(config.log_interval),
            _stop_listener: Some(stop_tx),
        });
        match (nodes, crate::io::io_runtime()) {
            (Some(nodes), Ok(io)) => {
                let listener = Listener {
                    nodes,
                    key_prefix: config.key_prefix.clone(),
                    channel: channel(&config.key_prefix),
                    timeout: config.connect_timeout,
                    health_check_interval,
                };
                io.spawn(listener.run(Arc::downgrade(&tier), stop_rx));
            }
            _ => tracing::warn!(
                target: "cache_runtime",
                "the local tier cannot listen to Redis for changes, so it stays off"
            ),
        }
        tier
    }

    pub(crate) fn for_all_functions(&self) -> bool {
        self.settings.for_all_functions
    }

    fn usable(&self) -> bool {
        self.listening.load(Ordering::Acquire)
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
        serialized_len: usize,
        since: Mark,
    ) {
        if ttl.is_zero() || !self.usable() || self.marks.changed_since(since) {
            return;
        }
        let weight = (serialized_len as u64).max(self.min_weight);
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

    /// What the tier holds now. moka counts its entries and their weight
    /// as it catches up on its bookkeeping: this catches up first, so that
    /// a copy just kept or dropped is counted.
    pub(crate) fn status(&self) -> LocalTierStatus {
        self.entries.run_pending_tasks();
        LocalTierStatus {
            entries: self.entries.entry_count(),
            bytes: self.entries.weighted_size(),
            listening: self.usable(),
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
    pub(super) fn receive(&self, message: &str) {
        match Change::parse(message) {
            Some((sender, change)) if sender != self.instance => self.forget(&change),
            _ => {}
        }
    }

    /// Applies what Redis reported: `keys` changed. This process's own
    /// writes are reported too, and drop the copies they just made: the
    /// next call reads Redis again (a copy cannot tell whose write it
    /// heard of).
    pub(super) fn changed(&self, keys: Vec<String>) {
        for key in keys {
            self.forget(&Change::Key(key));
        }
    }

    /// Applies what Redis reported after a `FLUSHDB` or `FLUSHALL`.
    pub(super) fn changed_everything(&self) {
        self.forget(&Change::All);
    }
}

/// The listener's side of the tier.
impl LocalTier {
    pub(super) fn is_listening(&self) -> bool {
        self.usable()
    }

    /// The listener started or stopped: either way, copies made before may
    /// have missed a change, and so may reads in the air.
    pub(super) fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::SeqCst);
        self.forget(&Change::All);
    }

    pub(super) fn incidents(&self) -> &Incidents {
        &self.incidents
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::{Probe, ViaClone};

    /// A tier as if listening, without Redis: what it hears is fed by hand.
    fn listening_tier() -> Arc<LocalTier> {
        let config = crate::builder::CacheBuilder::default()
            .into_config()
            .expect("the default configuration is valid");
        let tier = LocalTier::start(&config, None, "this-process".to_owned());
        tier.listening.store(true, Ordering::SeqCst);
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
        let tier = listening_tier();
        let since = tier.mark("user:1");
        tier.receive("k elsewhere user:1");
        assert_eq!(keep(&tier, "user:1", 1, since), None);
        assert_eq!(keep(&tier, "user:1", 2, tier.mark("user:1")), Some(2));
    }

    #[test]
    fn a_change_redis_reports_drops_the_copy_and_spoils_reads_in_flight() {
        let tier = listening_tier();
        let ops = ops();
        assert_eq!(keep(&tier, "user:1", 1, tier.mark("user:1")), Some(1));
        let since = tier.mark("user:2");
        tier.changed(vec!["user:1".into(), "user:2".into()]);
        assert_eq!(tier.get("user:1", &ops, Instant::now()), None);
        assert_eq!(keep(&tier, "user:2", 2, since), None);
        assert_eq!(keep(&tier, "user:2", 2, tier.mark("user:2")), Some(2));
    }

    #[test]
    fn a_message_about_a_key_in_another_stripe_spoils_no_read() {
        let tier = listening_tier();
        let other = (0..)
            .map(|n| format!("user:{n}"))
            .find(|key| Marks::stripe(key) != Marks::stripe("user:1"))
            .expect("keys spread over stripes");
        let since = tier.mark("user:1");
        tier.receive(&format!("k elsewhere {other}"));
        assert_eq!(keep(&tier, "user:1", 1, since), Some(1));
    }

    #[test]
    fn a_prefix_a_tag_a_flush_or_the_listener_spoils_every_read() {
        let tier = listening_tier();
        for spoil in [
            &|tier: &LocalTier| tier.receive("p elsewhere order:"),
            &|tier: &LocalTier| tier.receive("a elsewhere "),
            &|tier: &LocalTier| tier.changed_everything(),
            &|tier: &LocalTier| tier.set_listening(true),
        ] as [&dyn Fn(&LocalTier); 4]
        {
            let since = tier.mark("user:1");
            spoil(&tier);
            assert_eq!(keep(&tier, "user:1", 1, since), None);
        }
    }

    #[test]
    fn this_processs_own_messages_are_ignored() {
        let tier = listening_tier();
        let since = tier.mark("user:1");
        tier.receive(&format!("k {} user:1", tier.instance));
        assert_eq!(keep(&tier, "user:1", 1, since), Some(1));
    }

    #[test]
    fn a_prefix_message_drops_the_copies_under_it() {
        let tier = listening_tier();
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
