//! Runs of the body and what they store: the miss path (coalescing with
//! other callers, the lock, the leader's share and store), background
//! refreshes of stale entries, and write-through.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::{EntryKey, LocalRead};
use crate::change::Change;
use crate::codec;
use crate::engine::Engine;
use crate::flight::{self, FlightState, Joined, LeaderGuard};
use crate::incident::Incident;
use crate::lock::{HeldLock, LockAttempt, try_lock};
use crate::metrics::{CallSite, SiteKind};
use crate::observe::Outcome;
use crate::shape::Shape;

/// Whose run of the body this is, and how it was reached.
pub(super) struct Run<'a> {
    pub(super) engine: &'a Arc<Engine>,
    pub(super) site: &'static CallSite,
    pub(super) key: &'a EntryKey,
    /// Whether Redis failed the lookup: the result is then not stored.
    pub(super) redis_failed: bool,
}

/// [`miss`] on the heap. A future is as large as its largest state, and
/// every call moves its future a few times (into the caller's): the miss
/// path (coalescing, the lock wait, the body, the store) is several times
/// the size of the lookup, so kept inline it would make every hit copy it.
/// Boxed, it costs a miss one allocation instead. Not an `async fn`: one
/// would hold its arguments, the body among them, inline.
pub(super) fn miss_boxed<'a, S, R, Fut>(
    run: Run<'a>,
    body: Fut,
    local: LocalRead<'a, S::Stored>,
) -> Pin<Box<impl Future<Output = (R, Outcome)>>>
where
    S: Shape<R>,
    Fut: Future<Output = R>,
{
    Box::pin(miss::<S, R, Fut>(run, body, local))
}

/// After a miss or a failed lookup: coalesce with other callers of the key
/// (or, with `lock`, of other processes), or run the body and lead the run.
///
/// The shell of the miss path, and the only part of it generic over the
/// body's type: the steps before the body ([`MissStart`]) and after it
/// ([`Leader::finish`]) are compiled once, in this crate, and this shell
/// only decodes what they found (generic over the value's type) and runs
/// the body.
async fn miss<S, R, Fut>(run: Run<'_>, body: Fut, local: LocalRead<'_, S::Stored>) -> (R, Outcome)
where
    S: Shape<R>,
    Fut: Future<Output = R>,
{
    let mut start = MissStart::new(&run);
    let leader = loop {
        match start.next(&run).await {
            Step::Found(bytes) => {
                if let Some(entry) = run.engine.decode::<S::Stored>(&bytes) {
                    start.accept(bytes);
                    run.site.record_coalesced();
                    return (S::from_stored(entry.value), Outcome::Coalesced);
                }
            }
            Step::Lead(leader) => break leader,
        }
    };
    let outcome = leader.outcome;
    let result = body.await;
    let entry = entry_of::<S, R>(run.engine, run.site, &result);
    let stored = leader.finish(&run, entry).await;
    if let (Some((tier, ops, since)), Some(stored), Some(value)) =
        (&local, stored, S::storable(&result))
    {
        // Counted from when the value was encoded, not from when its store
        // returned.
        let ttl = stored.fresh_until.saturating_duration_since(Instant::now());
        tier.insert(&run.key.key, value, ops, ttl, stored.encoded_len, *since);
    }
    (result, outcome)
}

/// The miss path before the body: first coalescing with this process's
/// other callers of the key (the flight), then, with `lock`, with other
/// processes. Either may find the entry another caller stored; when it
/// does not decode, the path goes on as if nothing had been found.
struct MissStart {
    stage: Stage,
    flight: Option<LeaderGuard>,
}

/// Where [`MissStart`] goes on from.
#[derive(Clone, Copy)]
enum Stage {
    Coalesce,
    Lock,
    Body,
}

/// What a step of [`MissStart`] came to.
enum Step {
    /// Another caller's entry: the caller decodes it, and if it does,
    /// [`MissStart::accept`]s it.
    Found(Arc<[u8]>),
    /// This caller runs the body.
    Lead(Leader),
}

impl MissStart {
    /// Counts the miss (or the lookup Redis failed).
    fn new(run: &Run<'_>) -> MissStart {
        if run.redis_failed {
            run.site.record_error();
        } else {
            run.site.record_miss();
        }
        MissStart {
            stage: Stage::Coalesce,
            flight: None,
        }
    }

    /// Goes on until an entry is found or the body is to run.
    async fn next(&mut self, run: &Run<'_>) -> Step {
        let Run { engine, site, .. } = *run;
        if let Stage::Coalesce = self.stage {
            // A follower's entry that does not decode: run our own body now,
            // rather than queue behind another leader.
            self.stage = Stage::Lock;
            if site.options.coalesce {
                loop {
                    match engine.flights.join(&run.key.key) {
                        Joined::Leader(guard) => {
                            self.flight = Some(guard);
                            break;
                        }
                        Joined::Follower(receiver) => match flight::follow(receiver).await {
                            FlightState::Done(bytes) => return Step::Found(bytes),
                            // The leader's result was not shareable (or it
                            // panicked): run our own body now.
                            FlightState::Released => break,
                            // The leader was cancelled: take over, or follow
                            // whoever did.
                            FlightState::Abandoned | FlightState::Running => continue,
                        },
                    }
                }
            }
        }
        let mut held = None;
        if let Stage::Lock = self.stage {
            // An entry from the lock holder that does not decode: run the
            // body without the lock.
            self.stage = Stage::Body;
            if site.options.lock && !run.redis_failed {
                match wait_for_lock(engine, &run.key.key).await {
                    LockWait::Held(lock) => held = Some(lock),
                    LockWait::Entry(bytes) => return Step::Found(Arc::from(bytes)),
                    LockWait::GaveUp => {}
                }
            }
        }
        Step::Lead(Leader {
            flight: self.flight.take(),
            held,
            outcome: if run.redis_failed {
                Outcome::Error
            } else {
                Outcome::Miss
            },
        })
    }

    /// The found entry decoded: the flight this caller leads, if any, shares it.
    fn accept(self, bytes: Arc<[u8]>) {
        if let Some(flight) = self.flight {
            flight.finish(FlightState::Done(bytes));
        }
    }
}

/// A caller that runs the body: its flight, its lock, and what the call
/// is counted as.
struct Leader {
    flight: Option<LeaderGuard>,
    held: Option<HeldLock>,
    outcome: Outcome,
}

impl Leader {
    /// After the body: shares and stores its entry ([`lead`]), then releases
    /// the lock. Returns what was stored.
    async fn finish(self, run: &Run<'_>, entry: Entry) -> Option<Stored> {
        let stored = lead(run, entry, self.flight).await;
        if let Some(lock) = self.held {
            lock.release().await;
        }
        stored
    }
}

/// An entry that a run stored: until when its value is fresh (`ttl` less
/// jitter after it was encoded), and its encoded size.
#[derive(Clone, Copy)]
struct Stored {
    fresh_until: Instant,
    encoded_len: usize,
}

/// The leader's part of a run of the body, for a caller and a background
/// refresh alike: shares the result's entry with the flight's followers,
/// stores it, and counts a failed store. Returns what was stored.
///
/// The caller runs the body: a routine that took it would be generic over
/// its type, and compiled once per annotated function.
async fn lead(run: &Run<'_>, entry: Entry, flight: Option<LeaderGuard>) -> Option<Stored> {
    let stored = match &entry {
        Entry::Ready {
            bytes, fresh_until, ..
        } => Some(Stored {
            fresh_until: *fresh_until,
            encoded_len: bytes.len(),
        }),
        _ => None,
    };
    match share_and_store(run, entry, flight).await {
        StoreOutcome::Failed => {
            run.site.record_error();
            None
        }
        StoreOutcome::Stored => stored,
        StoreOutcome::NotStored => None,
    }
}

/// What to store for a result.
enum Entry {
    /// The shape stores nothing for this result (`Err`, `None`).
    Nothing,
    /// It could not be serialized (logged).
    Unencodable,
    /// Larger than `max_value_size` (logged): shared with the flight's
    /// followers, but not stored.
    TooLarge(Arc<[u8]>),
    /// The encoded entry, its Redis TTL (`ttl` less jitter, plus `stale`)
    /// and when its value stops being fresh (`ttl` less jitter after it was
    /// encoded, when `exp` was written).
    Ready {
        bytes: Arc<[u8]>,
        redis_ttl: Duration,
        fresh_until: Instant,
    },
}

fn entry_of<S: Shape<R>, R>(engine: &Engine, site: &CallSite, result: &R) -> Entry {
    let Some(stored) = S::storable(result) else {
        return Entry::Nothing;
    };
    let ttl = site_ttl(engine, site);
    let stale = Duration::from_secs(site.options.stale_secs);
    let fresh_until =
        (!stale.is_zero()).then(|| codec::now_millis().saturating_add(crate::units::millis(ttl)));
    let max_value_size = engine.config.max_value_size;
    match engine.encode(stored, fresh_until) {
        Some(bytes) if bytes.len() > max_value_size => {
            site.record_oversized();
            engine.incidents().warn(Incident::TooLarge, || {
                format!(
                    "a result of `{}` is {} bytes, over the {max_value_size}-byte `max_value_size`: it is returned but not cached",
                    site.name(),
                    bytes.len(),
                )
            });
            Entry::TooLarge(bytes.into())
        }
        Some(bytes) => Entry::Ready {
            bytes: bytes.into(),
            redis_ttl: ttl + stale,
            fresh_until: Instant::now() + ttl,
        },
        None => Entry::Unencodable,
    }
}

/// What became of an entry.
enum StoreOutcome {
    Stored,
    /// Nothing to store, too large, Redis known to be failing, or evicted
    /// while the body ran.
    NotStored,
    /// The store (or the encoding) failed.
    Failed,
}

/// Shows the entry to the flight's followers, stores it, and closes the
/// flight.
async fn share_and_store(run: &Run<'_>, entry: Entry, flight: Option<LeaderGuard>) -> StoreOutcome {
    let Run { engine, key, .. } = *run;
    let outcome = match entry {
        Entry::Nothing => StoreOutcome::NotStored,
        Entry::Unencodable => StoreOutcome::Failed,
        Entry::TooLarge(bytes) => {
            if let Some(flight) = &flight {
                flight.publish(FlightState::Done(bytes));
            }
            StoreOutcome::NotStored
        }
        Entry::Ready {
            bytes, redis_ttl, ..
        } => {
            // Followers get the entry now; the flight stays open until the
            // store is done, so that nobody arriving meanwhile misses and
            // runs the body again.
            if let Some(flight) = &flight {
                flight.publish(FlightState::Done(bytes.clone()));
            }
            // Evicted meanwhile, as its flight knows, or (for a call without
            // one) as the recent evictions say.
            let evicted = || {
                flight.as_ref().is_some_and(LeaderGuard::invalidated)
                    || engine.flights.evicted_since(&key.key, key.epoch)
            };
            if run.redis_failed || evicted() {
                // With Redis failing, the lookup has already been counted.
                // Evicted meanwhile: what we read may predate the write.
                StoreOutcome::NotStored
            } else if store(engine, &key.key, &bytes, redis_ttl, &key.tags)
                .await
                .is_err()
            {
                StoreOutcome::Failed
            } else if evicted() {
                // An eviction that came while the store was on its way may
                // have reached Redis first: undo the store.
                let _ = engine.store.unlink(&[&key.key]).await;
                StoreOutcome::NotStored
            } else {
                StoreOutcome::Stored
            }
        }
    };
    if let Some(flight) = flight {
        flight.finish(FlightState::Released);
    }
    outcome
}

/// Stores an encoded entry and its membership in the tag sets `tags` (full
/// keys); logs a failure.
async fn store(
    engine: &Engine,
    full_key: &str,
    bytes: &[u8],
    ttl: Duration,
    tags: &[String],
) -> Result<(), ()> {
    engine
        .store
        .set_tagged(full_key, bytes, ttl, tags)
        .await
        .map_err(|error| {
            engine.incidents().warn(Incident::Store, || {
                format!(
                    "cache store failed; the result is returned but not cached: {} (Redis at {})",
                    engine.store.scrub(&error),
                    engine.store.redacted_url()
                )
            });
        })
}

/// The function's TTL, less jitter.
fn site_ttl(engine: &Engine, site: &CallSite) -> Duration {
    let ttl = match site.options.ttl_secs {
        0 => engine.config.default_ttl,
        seconds => Duration::from_secs(seconds),
    };
    engine.jittered(ttl)
}

enum LockWait {
    Held(HeldLock),
    /// Another process stored the entry while we waited.
    Entry(Vec<u8>),
    /// No lock and no entry within `lock_wait`, or Redis failed: run the body.
    GaveUp,
}

/// How often a process waiting for the lock holder looks for its entry.
const LOCK_POLL: Duration = Duration::from_millis(20);

/// Takes the key's lock, or waits (at most `lock_wait`) for the holder's
/// entry, taking the lock over if the holder gives it up without storing.
async fn wait_for_lock(engine: &Engine, key: &str) -> LockWait {
    let config = &engine.config;
    let give_up_at = Instant::now() + config.lock_wait;
    loop {
        match try_lock(&engine.store, key, config.lock_lease).await {
            LockAttempt::Acquired(lock) => {
                // The previous holder may have stored and released between
                // our lookup and our lock: check once more before running.
                return match engine.store.get(key).await {
                    Ok(Some(bytes)) => {
                        lock.release().await;
                        LockWait::Entry(bytes)
                    }
                    _ => LockWait::Held(lock),
                };
            }
            LockAttempt::Failed => return LockWait::GaveUp,
            LockAttempt::Busy => {}
        }
        if Instant::now() + LOCK_POLL > give_up_at {
            return LockWait::GaveUp;
        }
        tokio::time::sleep(LOCK_POLL).await;
        match engine.store.get(key).await {
            Ok(Some(bytes)) => return LockWait::Entry(bytes),
            Ok(None) => {}
            Err(_) => return LockWait::GaveUp,
        }
    }
}

/// Starts the one background refresh of a stale key, unless one is already
/// running in this process (or, with `lock`, in another).
pub(super) fn spawn_refresh<S, R, Fut>(
    engine: &Arc<Engine>,
    site: &'static CallSite,
    key: EntryKey,
    body: Fut,
) where
    S: Shape<R>,
    S::Stored: Send,
    R: Send + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    let Joined::Leader(flight) = engine.flights.join(&key.key) else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let engine = engine.clone();
    let span = tracing::debug_span!("redis_cached_refresh", function = site.name());
    // Generic over the body's type, so kept to the body: what comes before
    // and after it is compiled once.
    runtime.spawn(
        async move {
            let Some(leader) = start_refresh(&engine, site, &key, flight).await else {
                return;
            };
            let result = body.await;
            let entry = entry_of::<S, R>(&engine, site, &result);
            drop(result);
            finish_refresh(&engine, site, key, leader, entry).await;
        }
        .instrument(span),
    );
}

/// Before a background refresh's body: `None` when there is nothing to do.
async fn start_refresh(
    engine: &Engine,
    site: &'static CallSite,
    key: &EntryKey,
    flight: LeaderGuard,
) -> Option<Leader> {
    // A caller whose stale read crossed the previous refresh's store gets
    // here just after that refresh closed its flight: if the entry is fresh
    // now, there is nothing to refresh. Only an entry that may be trusted
    // (no eviction parked, none since the flight began) counts, since the
    // flight's followers get it; and only its envelope is decoded.
    if !engine.parked.any()
        && let Ok(Some(bytes)) = engine.store.get(&key.key).await
        && !flight.invalidated()
        && let Ok(entry) = codec::decode::<serde::de::IgnoredAny>(&bytes)
        && entry
            .fresh_until
            .is_none_or(|until| codec::now_millis() < until)
    {
        flight.finish(FlightState::Done(Arc::from(bytes)));
        return None;
    }
    let held = if site.options.lock {
        match try_lock(&engine.store, &key.key, engine.config.lock_lease).await {
            LockAttempt::Acquired(lock) => Some(lock),
            // Another process refreshes it; or Redis fails, and the store
            // would fail too.
            LockAttempt::Busy | LockAttempt::Failed => return None,
        }
    } else {
        None
    };
    site.record_refresh();
    Some(Leader {
        flight: Some(flight),
        held,
        outcome: Outcome::Stale,
    })
}

/// After a background refresh's body: stores its entry, and tells other
/// processes' local tiers.
async fn finish_refresh(
    engine: &Arc<Engine>,
    site: &'static CallSite,
    key: EntryKey,
    leader: Leader,
    entry: Entry,
) {
    let run = Run {
        engine,
        site,
        key: &key,
        redis_failed: false,
    };
    if leader.finish(&run, entry).await.is_some() {
        // Local copies elsewhere end with the old value's freshness anyway;
        // the message spares them clock skew between hosts.
        engine.announce(Change::Key(key.key)).await;
    }
}

/// Write-through, for `#[cache_put]` and the derived `…_refresh` helpers: runs
/// the body and stores what its shape allows, with the site's TTL (and
/// `stale`), without looking up first.
pub(crate) async fn put_call<S, R, Fut>(
    engine: &Engine,
    site: &'static CallSite,
    key: String,
    tags: Vec<String>,
    body: Fut,
) -> R
where
    S: Shape<R>,
    Fut: Future<Output = R>,
{
    site.register(SiteKind::Put);
    let result = body.await;
    let entry = entry_of::<S, R>(engine, site, &result);
    put(engine, site, key, &tags, entry).await;
    result
}

/// Stores a write-through's entry, and tells other processes' local tiers.
async fn put(engine: &Engine, site: &CallSite, key: String, tags: &[String], entry: Entry) {
    if let Entry::Ready {
        bytes, redis_ttl, ..
    } = entry
    {
        if store(engine, &key, &bytes, redis_ttl, tags).await.is_err() {
            site.record_error();
        }
        // Other processes' local copies hold the value this one replaced.
        engine.announce(Change::Key(key)).await;
    }
}
