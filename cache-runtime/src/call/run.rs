//! Runs of the body and what they store: the miss path's shell (the steps
//! before the body are in `start.rs`), its answer with the last good value
//! (`fail_safe`), the leader's share and store, and write-through. The runs
//! no caller waits for are in `detached.rs`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::start::{Leader, MissStart, Run, Step, StoreGuard};
use super::{BodyPolicy, Detach, EntryKey, LocalRead};
use crate::change::{Change, Target};
use crate::codec::{self, Encoded, Metadata};
use crate::engine::Engine;
use crate::evict::evict;
use crate::flight::{FlightState, LeaderGuard};
use crate::incident::Incident;
use crate::metrics::{CallSite, SiteKind};
use crate::observe::Outcome;
use crate::shape::{Shape, StoreRules};

/// [`miss`] on the heap. A future is as large as its largest state, and
/// every call moves its future a few times (into the caller's): the miss
/// path (coalescing, the lock wait, the body, the store) is several times
/// the size of the lookup, so kept inline it would make every hit copy it.
/// Boxed, it costs a miss one allocation instead. Not an `async fn`: one
/// would hold its arguments, the body among them, inline.
pub(super) fn miss_boxed<'a, P, S, R, Fut>(
    run: Run<'a>,
    body: Fut,
    local: LocalRead<'a, S::Stored>,
    fallback: Option<S::Stored>,
    rules: StoreRules<S::Stored>,
) -> Pin<Box<impl Future<Output = (R, Outcome)>>>
where
    P: BodyPolicy<S, R, Fut>,
    S: Shape<R>,
    Fut: Future<Output = R>,
{
    Box::pin(miss::<P, S, R, Fut>(run, body, local, fallback, rules))
}

/// After a miss or a failed lookup: coalesce with other callers of the key
/// (or, with `lock`, of other processes), or run the body and lead the run.
/// With an expired entry's value as `fallback` (`fail_safe`), a body that
/// fails or passes its `soft_timeout` is answered with it.
///
/// The shell of the miss path, and the only part of it generic over the
/// body's type: the steps before the body ([`MissStart`]) and after it
/// ([`Leader::finish`], [`Leader::fail_safe`]) are compiled once, in this
/// crate, and this shell only decodes what they found (generic over the
/// value's type) and runs the body.
async fn miss<P, S, R, Fut>(
    run: Run<'_>,
    body: Fut,
    local: LocalRead<'_, S::Stored>,
    fallback: Option<S::Stored>,
    rules: StoreRules<S::Stored>,
) -> (R, Outcome)
where
    P: BodyPolicy<S, R, Fut>,
    S: Shape<R>,
    Fut: Future<Output = R>,
{
    let soft_deadline = fallback.as_ref().and_then(|_| run.soft_deadline());
    let mut start = MissStart::new(&run);
    let mut leader = loop {
        let step = match soft_deadline {
            None => start.next(&run).await,
            Some(deadline) => {
                match tokio::time::timeout_at(deadline.into(), start.next(&run)).await {
                    Ok(step) => step,
                    Err(_) => return answer_fail_safe::<S, R>(&run, fallback, FailSafeCause::Slow),
                }
            }
        };
        match step {
            Step::Found(bytes) => {
                if let Some(entry) = run.engine.decode::<S::Stored>(&bytes) {
                    start.accept(bytes);
                    run.site.record_coalesced();
                    return (S::from_stored(entry.value), Outcome::Coalesced);
                }
            }
            // The value the leader checked is still in Redis: this caller's
            // own may be older. One that does not decode here, or a function
            // without `fail_safe`, runs its own body instead.
            Step::FailSafe(bytes) if run.site.options.fail_safe_millis > 0 => {
                if let Some(entry) = run.engine.decode::<S::Stored>(&bytes) {
                    run.site.record_fail_safe();
                    return (S::from_stored(entry.value), Outcome::FailSafe);
                }
            }
            Step::FailSafe(_) => {}
            // The leader's own entry, too large to store: not bounded by
            // `max_value_size` as one read from Redis is.
            Step::Shared(bytes) => {
                if let Some(entry) = run.engine.decode_shared::<S::Stored>(&bytes) {
                    start.accept(bytes);
                    run.site.record_coalesced();
                    return (S::from_stored(entry.value), Outcome::Coalesced);
                }
            }
            Step::Lead(leader) => break leader,
        }
    };
    let outcome = leader.outcome;
    let mut body = body;
    if let Some(deadline) = soft_deadline {
        // Detached, the body runs on past the deadline, and stores its result.
        match P::detach(run.engine, run.site, run.key, leader, rules, body) {
            Detach::Running(result) => {
                return match tokio::time::timeout_at(deadline.into(), result).await {
                    Ok(Ok(result)) if !S::failed(&result) => (result, outcome),
                    // Evicted by this process meanwhile: the error, not the
                    // evicted value.
                    Ok(Ok(result)) if run.evicted() => (result, outcome),
                    Ok(_) => answer_fail_safe::<S, R>(&run, fallback, FailSafeCause::Failed),
                    Err(_) => answer_fail_safe::<S, R>(&run, fallback, FailSafeCause::Slow),
                };
            }
            Detach::Refused(returned, returned_body) => (leader, body) = (returned, returned_body),
        }
    }
    let started = Instant::now();
    let result = body.await;
    let took = started.elapsed();
    if fallback.is_some() && S::failed(&result) {
        // Only while the key still holds it: an evicted value never comes
        // back as a fail-safe one.
        if leader.fail_safe(&run).await {
            return answer_fail_safe::<S, R>(&run, fallback, FailSafeCause::Failed);
        }
        return (result, outcome);
    }
    let entry = entry_of::<S, R>(run.engine, run.site, &result, took, &rules);
    let stored = leader.finish(&run, entry).await;
    if let (Some((tier, ops, since)), Some(stored), Some(value)) =
        (&local, stored, S::storable(&result))
    {
        let ttl = local_copy_ttl(run.site, stored, took);
        tier.insert(&run.key.key, value, ops, ttl, stored.serialized_len, *since);
    }
    (result, outcome)
}

/// How long the local copy of a value just stored may live: while it is
/// fresh (counted from when it was encoded, not from when its store
/// returned), and with `early_refresh` less the last stretch in which calls
/// read Redis to draw whether to refresh (`LOCAL_COPY_EARLY_END`).
fn local_copy_ttl(site: &CallSite, stored: Stored, took: Duration) -> Duration {
    let fresh = stored.fresh_until.saturating_duration_since(Instant::now());
    if !site.options.early_refresh {
        return fresh;
    }
    let window = took.saturating_mul(super::LOCAL_COPY_EARLY_END as u32);
    fresh.saturating_sub(window)
}

/// Why a call is answered with its last good value.
#[derive(Clone, Copy)]
enum FailSafeCause {
    /// The body failed (an `Err`).
    Failed,
    /// The body (or the wait for another caller's) passed `soft_timeout`.
    Slow,
}

/// Answers a call with its last good value (`fallback`), counted and
/// logged; only generic over the value, which it turns into a result.
fn answer_fail_safe<S: Shape<R>, R>(
    run: &Run<'_>,
    fallback: Option<S::Stored>,
    cause: FailSafeCause,
) -> (R, Outcome) {
    let Some(value) = fallback else {
        unreachable!("a call is only answered with its last good value when it has one");
    };
    note_fail_safe(run.engine, run.site, cause);
    (S::from_stored(value), Outcome::FailSafe)
}

/// Counts and logs (rate-limited) an answer with the last good value.
fn note_fail_safe(engine: &Engine, site: &CallSite, cause: FailSafeCause) {
    site.record_fail_safe();
    engine.incidents().warn(Incident::FailSafe, || match cause {
        FailSafeCause::Failed => format!(
            "`{}` failed: answered with its last good value (`fail_safe`)",
            site.name()
        ),
        FailSafeCause::Slow => format!(
            "`{}` passed its {} ms `soft_timeout`: answered with its last good value while it runs on (`fail_safe`)",
            site.name(),
            site.options.soft_timeout_millis
        ),
    });
}

impl Run<'_> {
    /// Whether this process evicted the key since the call's lookup.
    fn evicted(&self) -> bool {
        self.engine
            .flights
            .evicted_since(&self.key.key, self.key.epoch)
    }

    /// When a caller with a last good value stops waiting: `soft_timeout`
    /// after now, if the function has one.
    fn soft_deadline(&self) -> Option<Instant> {
        match self.site.options.soft_timeout_millis {
            0 => None,
            millis => Some(Instant::now() + Duration::from_millis(millis)),
        }
    }
}

impl Leader {
    /// After the body: shares and stores its entry ([`lead`]), then releases
    /// the lock. Returns what was stored.
    pub(super) async fn finish(self, run: &Run<'_>, entry: Entry) -> Option<Stored> {
        let stored = lead(run, entry, self.flight, self.guard).await;
        if let Some(lock) = self.held {
            lock.release().await;
        }
        stored
    }

    /// After a body that failed, with a last good value (`fail_safe`):
    /// whether the key still holds it (no eviction came), in which case the
    /// flight's followers get it too; with `fail_safe_throttle`, the key's
    /// next calls get it without running the body, for that long.
    pub(super) async fn fail_safe(self, run: &Run<'_>) -> bool {
        let throttle = run.site.options.fail_safe_throttle_millis;
        if throttle > 0 {
            run.engine
                .throttles
                .throttle(&run.key.key, Duration::from_millis(throttle));
        }
        // As for a store: newcomers from now on read Redis themselves.
        if let Some(flight) = &self.flight {
            flight.close_to_newcomers();
        }
        let still_there = !run.evicted() && self.guard.shareable(run.engine, &run.key.key).await;
        let entry = if still_there {
            Entry::FailSafe
        } else {
            Entry::Nothing
        };
        self.finish(run, entry).await;
        still_there
    }
}

/// An entry that a run stored: until when its value is fresh (`ttl` less
/// jitter after it was encoded), and its serialized size (before
/// compression: its weight in the local tier).
#[derive(Clone, Copy)]
pub(super) struct Stored {
    fresh_until: Instant,
    serialized_len: usize,
}

/// The leader's part of a run of the body, for a caller and a background
/// refresh alike: shares the result's entry with the flight's followers,
/// stores it, and counts a failed store. Returns what was stored.
///
/// The caller runs the body: a routine that took it would be generic over
/// its type, and compiled once per annotated function.
async fn lead(
    run: &Run<'_>,
    entry: Entry,
    flight: Option<LeaderGuard>,
    guard: StoreGuard,
) -> Option<Stored> {
    let stored = match &entry {
        Entry::Ready {
            fresh_until,
            raw_len,
            ..
        } => Some(Stored {
            fresh_until: *fresh_until,
            serialized_len: *raw_len,
        }),
        _ => None,
    };
    match share_and_store(run, entry, flight, guard).await {
        StoreOutcome::Failed => {
            run.site.record_error();
            None
        }
        StoreOutcome::Stored => stored,
        StoreOutcome::NotStored => None,
    }
}

/// What to store for a result.
pub(super) enum Entry {
    /// The shape stores nothing for this result (`Err`, `None`).
    Nothing,
    /// The function's `cache_if` declined the value, or its `ttl_from` gave
    /// it no time: for a write-through, the old entry must go.
    Declined,
    /// The body failed, and the call is answered with the last good value:
    /// the entry the run's guard expects, shared if the key still holds it.
    FailSafe,
    /// It could not be serialized (logged).
    Unencodable,
    /// Larger than `max_value_size` (logged): shared with the flight's
    /// followers, but not stored.
    TooLarge(Arc<[u8]>),
    /// The encoded entry, its value's serialized size (before
    /// compression), its Redis TTL (`ttl` less jitter, plus `stale` and
    /// `fail_safe`) and when its value stops being fresh (`ttl` less jitter
    /// after it was encoded, when `exp` was written).
    Ready {
        bytes: Arc<[u8]>,
        raw_len: usize,
        redis_ttl: Duration,
        fresh_until: Instant,
    },
}

/// The entry to store for `result`, which the body took `took` to make,
/// under the function's `rules`.
pub(super) fn entry_of<S: Shape<R>, R>(
    engine: &Engine,
    site: &CallSite,
    result: &R,
    took: Duration,
    rules: &StoreRules<S::Stored>,
) -> Entry {
    let Some(stored) = S::storable(result) else {
        return Entry::Nothing;
    };
    if !rules.admits(stored) {
        return Entry::Declined;
    }
    let options = &site.options;
    let ttl = rules.ttl(stored, site_ttl(engine, site));
    if ttl.is_zero() {
        return Entry::Declined;
    }
    let kept_past_ttl = Duration::from_millis(
        options
            .stale_millis
            .saturating_add(options.fail_safe_millis),
    );
    let metadata = Metadata {
        fresh_until: options
            .reads_freshness()
            .then(|| codec::now_millis().saturating_add(crate::units::millis(ttl))),
        took_millis: options.early_refresh.then(|| crate::units::millis(took)),
    };
    let max_value_size = engine.config.max_value_size;
    match engine.encode(site, stored, metadata) {
        Some(encoded) if encoded.raw_len > max_value_size => {
            site.record_oversized();
            engine.incidents().warn(Incident::TooLarge, || {
                format!(
                    "a result of `{}` is {} bytes, over the {max_value_size}-byte `max_value_size`: it is returned but not cached",
                    site.name(),
                    encoded.raw_len,
                )
            });
            Entry::TooLarge(encoded.bytes.into())
        }
        Some(Encoded { bytes, raw_len }) => Entry::Ready {
            bytes: bytes.into(),
            raw_len,
            redis_ttl: ttl + kept_past_ttl,
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

/// Shows the entry to the flight's followers, stores it if `guard` still
/// holds, and closes the flight.
async fn share_and_store(
    run: &Run<'_>,
    entry: Entry,
    flight: Option<LeaderGuard>,
    guard: StoreGuard,
) -> StoreOutcome {
    let Run { engine, key, .. } = *run;
    // Followers get an entry once it is known to predate no eviction: stored
    // under its guard, or, too large to store, with its lease still held.
    let share = |bytes: Arc<[u8]>| {
        if let Some(flight) = &flight {
            flight.publish(FlightState::Done(bytes));
        }
    };
    let outcome = match entry {
        Entry::Nothing | Entry::Declined => {
            guard.release().await;
            StoreOutcome::NotStored
        }
        Entry::FailSafe => {
            // Checked by `Leader::fail_safe` (the key still held the value)
            // after the flight was closed to newcomers, who read Redis
            // themselves: the followers may have it.
            if let (Some(flight), Some(expected)) = (&flight, guard.expected())
                && !flight.invalidated()
            {
                flight.publish(FlightState::FailSafe(Arc::from(expected)));
            }
            guard.release().await;
            StoreOutcome::NotStored
        }
        Entry::Unencodable => {
            guard.release().await;
            StoreOutcome::Failed
        }
        Entry::TooLarge(bytes) => {
            if let Some(flight) = &flight {
                flight.close_to_newcomers();
            }
            if guard.shareable(engine, &key.key).await {
                share(bytes);
            }
            guard.release().await;
            StoreOutcome::NotStored
        }
        Entry::Ready {
            bytes, redis_ttl, ..
        } => {
            // Evicted meanwhile, as its flight knows, or (for a call without
            // one) as the recent evictions say.
            let evicted = || {
                flight.as_ref().is_some_and(LeaderGuard::invalidated)
                    || engine.flights.evicted_since(&key.key, key.epoch)
            };
            if evicted() {
                // What we read may predate the write.
                guard.release().await;
                StoreOutcome::NotStored
            } else if let StoreGuard::Unchecked { shared } = guard {
                // With Redis failing, the lookup has already been counted.
                if shared {
                    share(bytes);
                }
                StoreOutcome::NotStored
            } else {
                // Newcomers from now on find the lease, then the entry, in
                // Redis: one that came after the store was sent may have come
                // after an eviction that the store lost to.
                if let Some(flight) = &flight {
                    flight.close_to_newcomers();
                }
                match store_guarded(engine, key, &bytes, redis_ttl, guard).await {
                    Err(()) => StoreOutcome::Failed,
                    // An eviction deleted the lease (or the stale entry):
                    // what the body read may predate the write.
                    Ok(false) => StoreOutcome::NotStored,
                    Ok(true) if evicted() => {
                        // An eviction that came while the store was on its
                        // way may have reached Redis first: undo the store.
                        let _ = engine.store.unlink(&[&key.key]).await;
                        StoreOutcome::NotStored
                    }
                    Ok(true) => {
                        share(bytes);
                        StoreOutcome::Stored
                    }
                }
            }
        }
    };
    if let Some(flight) = flight {
        flight.finish(FlightState::Released);
    }
    outcome
}

/// Stores an encoded entry, and its membership in its tag sets, only while
/// its key holds what `guard` expects; `Ok(false)` if it did not. Logs a
/// failure.
async fn store_guarded(
    engine: &Engine,
    key: &EntryKey,
    bytes: &[u8],
    ttl: Duration,
    guard: StoreGuard,
) -> Result<bool, ()> {
    let Some(expected) = guard.expected() else {
        return Ok(false);
    };
    let result = engine
        .store
        .replace_if_holds(&key.key, expected, bytes, ttl, &key.tags)
        .await;
    if let StoreGuard::Lease(lease) = guard {
        match result {
            // Replaced, or gone: nothing to release.
            Ok(_) => lease.consumed(),
            // Unknown: released by marker in the background.
            Err(_) => drop(lease),
        }
    }
    result.map_err(|error| warn_store_failed(engine, &error))
}

/// Logs a store that Redis failed.
fn warn_store_failed(engine: &Engine, error: &crate::error::CacheError) {
    engine.warn_redis_failed(
        Incident::Store,
        "cache store failed; the result is returned but not cached",
        error,
    );
}

/// Stores an encoded entry and its membership in the tag sets `tags` (full
/// keys), whatever the key holds: a write-through's. Logs a failure.
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
        .map_err(|error| warn_store_failed(engine, &error))
}

/// The function's TTL, less jitter.
fn site_ttl(engine: &Engine, site: &CallSite) -> Duration {
    let ttl = match site.options.ttl_millis {
        0 => engine.config.default_ttl,
        millis => Duration::from_millis(millis),
    };
    engine.jittered(ttl)
}

/// Write-through, for `#[cache_put]` and the derived `…_refresh` helpers: runs
/// the body and stores what its shape allows, with the site's TTL (and
/// `stale`), without looking up first.
pub(crate) async fn put_call<S, R, Fut>(
    engine: &Arc<Engine>,
    site: &'static CallSite,
    key: String,
    tags: Vec<String>,
    rules: StoreRules<S::Stored>,
    body: Fut,
) -> R
where
    S: Shape<R>,
    Fut: Future<Output = R>,
{
    site.register(SiteKind::Put);
    let started = Instant::now();
    let result = body.await;
    let entry = entry_of::<S, R>(engine, site, &result, started.elapsed(), &rules);
    put(engine, site, key, &tags, entry).await;
    result
}

/// Stores a write-through's entry, and tells other processes' local tiers.
///
/// A write whose value cannot be stored (too large, unencodable, the store
/// failed) evicts the key instead, through the one eviction routine: a miss
/// whose lease predates the write must not store what it read after this
/// call returns.
async fn put(
    engine: &Arc<Engine>,
    site: &'static CallSite,
    key: String,
    tags: &[String],
    entry: Entry,
) {
    let stored = match entry {
        // `Err`, `None`: the write did not happen.
        Entry::Nothing => return,
        Entry::TooLarge(_) | Entry::Unencodable | Entry::Declined | Entry::FailSafe => false,
        Entry::Ready {
            bytes, redis_ttl, ..
        } => {
            let stored = store(engine, &key, &bytes, redis_ttl, tags).await.is_ok();
            if !stored {
                site.record_error();
            }
            stored
        }
    };
    if stored {
        // Other processes' local copies hold the value this one replaced.
        engine.announce(Change::Key(key)).await;
    } else {
        let _ = evict(engine, vec![Target::Key(key)], None, false).await;
    }
}
