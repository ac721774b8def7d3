//! The cached-call state machine, plain Rust and testable without the macro.
//!
//! ```text
//! lookup ─┬─ fresh hit ───────────────────────────────────► return it
//!         ├─ stale hit (`stale`) ─ spawn one refresh ─────► return it
//!         └─ miss, or Redis failed
//!              │ coalescing: join the key's flight
//!              ├─ follower ─ wait for the leader's entry ─► return it
//!              └─ leader
//!                   │ `lock`: take the Redis lock, or wait for its holder's entry
//!                   └─ run the body ─ share and store the entry if the shape
//!                                     allows ─────────────► return the result
//! ```
//!
//! Nothing here returns a cache error to the caller: a failed lookup runs the
//! body, a failed store still returns the body's value. Both are counted in
//! the function's [`CallSite`] and logged, rate-limited.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::cache::{Cache, Lookup};
use crate::codec;
use crate::flight::{self, FlightState, Joined, LeaderGuard};
use crate::incident::Incident;
use crate::local::{Change, LocalOps, Mark, Tier};
use crate::lock::{HeldLock, LockAttempt};
use crate::metrics::CallSite;

/// Which results of a function are stored, and in what form.
///
/// The macro picks the shape from the declared return type: [`OkValues`] for
/// `Result`, [`SomeValues`] (or [`OptionValues`] with `cache_none = true`)
/// for `Option`, [`AnyValue`] for everything else.
///
/// The impls are `#[diagnostic::do_not_recommend]`, so that a value that is
/// not `Serialize + DeserializeOwned` is reported with the message below, once,
/// rather than as one `Serialize` and one `Deserialize` error per use.
#[diagnostic::on_unimplemented(
    message = "the return type `{R}` cannot be cached",
    label = "the cached value must implement `serde::Serialize` and `serde::de::DeserializeOwned`"
)]
pub trait Shape<R> {
    /// What is stored in Redis.
    type Stored: Serialize + DeserializeOwned;
    /// The part of `result` to store, or `None` to store nothing.
    fn storable(result: &R) -> Option<&Self::Stored>;
    /// Rebuilds a result from a stored value.
    fn from_stored(stored: Self::Stored) -> R;
}

/// `Result<T, E>`: stores `Ok(T)` as `T`; an `Err` is never stored.
pub struct OkValues;
/// `Option<T>`: stores `Some(T)` as `T`; `None` is never stored.
pub struct SomeValues;
/// `Option<T>` with `cache_none = true`: stores `Some` and `None` alike.
pub struct OptionValues;
/// Any other `T`: always stored.
pub struct AnyValue;

#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned, E> Shape<Result<T, E>> for OkValues {
    type Stored = T;
    fn storable(result: &Result<T, E>) -> Option<&T> {
        result.as_ref().ok()
    }
    fn from_stored(stored: T) -> Result<T, E> {
        Ok(stored)
    }
}

#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned> Shape<Option<T>> for SomeValues {
    type Stored = T;
    fn storable(result: &Option<T>) -> Option<&T> {
        result.as_ref()
    }
    fn from_stored(stored: T) -> Option<T> {
        Some(stored)
    }
}

#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned> Shape<Option<T>> for OptionValues {
    type Stored = Option<T>;
    fn storable(result: &Option<T>) -> Option<&Option<T>> {
        Some(result)
    }
    fn from_stored(stored: Option<T>) -> Option<T> {
        stored
    }
}

#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned> Shape<T> for AnyValue {
    type Stored = T;
    fn storable(result: &T) -> Option<&T> {
        Some(result)
    }
    fn from_stored(stored: T) -> T {
        stored
    }
}

/// An entry's full key, the full keys of the tag sets it joins, and the
/// eviction epoch before its lookup.
struct EntryKey {
    key: String,
    tags: Vec<String>,
    epoch: u64,
}

impl EntryKey {
    fn new(cache: &Cache, key: String, tags: Vec<String>) -> EntryKey {
        EntryKey {
            key,
            tags,
            epoch: cache.flights().epoch(),
        }
    }
}

/// How one cached call ended, as recorded on its span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A value from the local tier.
    Local,
    /// A fresh value from Redis.
    Hit,
    /// A stale value from Redis (`stale = …`); a background refresh runs.
    Stale,
    /// No usable entry; another caller ran the body and this one got its value.
    Coalesced,
    /// No usable entry; this caller ran the body.
    Miss,
    /// Redis could not be used; the body ran uncached.
    Error,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Local => "local",
            Outcome::Hit => "hit",
            Outcome::Stale => "stale",
            Outcome::Coalesced => "coalesced",
            Outcome::Miss => "miss",
            Outcome::Error => "error",
        }
    }
}

tokio::task_local! {
    static OUTCOME: Cell<Option<Outcome>>;
}

/// Runs `future` and reports how the last cached call that finished inside it
/// ended: for a web handler's `X-Cache: HIT` header, or a test.
///
/// ```no_run
/// # use cache_runtime::{redis_cached, track_outcome, Outcome};
/// # #[redis_cached(key = "answer")] async fn answer() -> u32 { 42 }
/// # async fn handler() {
/// let (value, outcome) = track_outcome(answer()).await;
/// let header = if outcome == Some(Outcome::Hit) { "HIT" } else { "MISS" };
/// # }
/// ```
///
/// `None` if no cached call finished inside `future`.
pub async fn track_outcome<F: Future>(future: F) -> (F::Output, Option<Outcome>) {
    OUTCOME
        .scope(Cell::new(None), async {
            let output = future.await;
            (output, OUTCOME.with(Cell::get))
        })
        .await
}

/// Runs one cached call: the lookup, then on a miss the body and the store.
///
/// `key` is the full key (prefix included, see [`Cache::key_builder`]);
/// `tags`, the full keys of the tag sets the entry joins when stored.
///
/// Not an `async fn`: one would keep its arguments, the body among them, in
/// its state beside the `async` block that runs the call, and every call
/// moves that state a few times. Here the block owns them, once.
pub fn cached_call<S, R, Fut>(
    cache: &Cache,
    site: &'static CallSite,
    key: String,
    tags: Vec<String>,
    local_ops: Option<LocalOps<S::Stored>>,
    body: Fut,
) -> Observe<impl Future<Output = (R, Outcome)>>
where
    S: Shape<R>,
    Fut: Future<Output = R>,
{
    let key = EntryKey::new(cache, key, tags);
    let local = local_tier_for(cache, site, local_ops);
    let observed = Observed::start(site);
    let started = observed.started;
    let call = async move {
        if let Some(value) = local_hit(&key, &local, started) {
            site.record_local_hit();
            return (S::from_stored(value), Outcome::Local);
        }
        let local = mark_read(local, &key);
        // With a local tier, the lookup also reads what filling it needs
        // (the entry's remaining TTL, its encoded size), in the same round
        // trip. Not in a helper `async fn`, whose frame every call would copy.
        // Scoped, so that what is only needed on a hit does not take room in
        // the state kept across the miss path's `.await`.
        let lookup = {
            let (lookup, fill_local) = match local {
                Some(_) => cache.lookup_for_local::<S::Stored>(&key.key).await,
                None => (cache.lookup::<S::Stored>(&key.key).await, None),
            };
            match lookup {
                // Without `stale`, entries carry no freshness: every hit is fresh.
                Lookup::Hit(entry) => {
                    keep_local_copy(cache, &key, &local, fill_local, &entry.value);
                    site.record_hit();
                    return (S::from_stored(entry.value), Outcome::Hit);
                }
                lookup => lookup,
            }
        };
        fill_boxed::<S, R, Fut>(cache, site, &key, lookup, body, local).await
    };
    Observe::new(call, observed)
}

/// [`fill`] on the heap. A future is as large as its largest state, and every
/// call moves its future a few times (into the caller's): the miss path (coalescing, the lock wait, the body, the store)
/// is several times the size of the lookup, so kept inline it would make
/// every hit copy it. Boxed, it costs a miss one allocation instead. Not an
/// `async fn`: one would hold its arguments, the body among them, inline.
fn fill_boxed<'a, S, R, Fut>(
    cache: &'a Cache,
    site: &'static CallSite,
    key: &'a EntryKey,
    lookup: Lookup<S::Stored>,
    body: Fut,
    local: LocalFill<'a, S::Stored>,
) -> Pin<Box<impl Future<Output = (R, Outcome)>>>
where
    S: Shape<R>,
    Fut: Future<Output = R>,
{
    Box::pin(fill::<S, R, Fut>(cache, site, key, lookup, body, local))
}

/// The local tier one call uses, and how.
type LocalTierUse<'a, T> = Option<(&'a Tier, LocalOps<T>)>;

/// After a local miss: the local tier to fill, and the changes counted before
/// the read from Redis (a read that crossed one is not kept).
type LocalFill<'a, T> = Option<(&'a Tier, LocalOps<T>, Mark)>;

/// Marks the local tier's changes before a read from Redis: only on a local
/// miss, so that a local hit does not pay for hashing the key again.
fn mark_read<'a, T>(local: LocalTierUse<'a, T>, key: &EntryKey) -> LocalFill<'a, T> {
    local.map(|(tier, ops)| (tier, ops, tier.mark(&key.key)))
}

/// The local tier this call uses, if any: the function's type must allow it
/// (`local_ops`), the function or the builder must ask for it, and no
/// eviction may be parked (local copies are not trusted then, as Redis is
/// not).
fn local_tier_for<'a, T>(
    cache: &'a Cache,
    site: &CallSite,
    local_ops: Option<LocalOps<T>>,
) -> LocalTierUse<'a, T> {
    local_ops
        .filter(|_| !cache.parked().any())
        .and_then(|ops| cache.local_for(site).map(|tier| (&**tier, ops)))
}

/// The local tier's copy of the entry, unless there is none or it had
/// expired by `now`. The call's start stands for "now": one clock read fewer
/// on the fastest path, for a copy that expired at most a few nanoseconds ago.
fn local_hit<T>(key: &EntryKey, local: &LocalTierUse<'_, T>, now: Instant) -> Option<T> {
    let (tier, ops) = local.as_ref()?;
    tier.get(&key.key, ops, now)
}

/// Keeps a copy of a value read from Redis in the local tier, for at most
/// `fill`'s TTL; not one that this process evicted while it was read (the
/// eviction has already dropped the local copy), nor one that an
/// invalidation message crossed.
fn keep_local_copy<T>(
    cache: &Cache,
    key: &EntryKey,
    local: &LocalFill<'_, T>,
    fill: Option<(Duration, usize)>,
    value: &T,
) {
    if let (Some((tier, ops, since)), Some((ttl, encoded_len))) = (local, fill)
        && !cache.flights().evicted_since(&key.key, key.epoch)
    {
        tier.insert(&key.key, value, ops, ttl, encoded_len, *since);
    }
}

/// [`cached_call`] for functions with `stale = …`: a stale entry is returned
/// at once while the body runs in the background, which is why the body must
/// be `Send + 'static` here.
///
/// With a local tier, a local copy lives only while its value is fresh: once
/// it is stale, calls go to Redis, which serves the stale value and starts
/// the refresh, and the next fresh hit from Redis fills the tier again.
pub fn cached_call_stale<S, R, Fut>(
    cache: &Cache,
    site: &'static CallSite,
    key: String,
    tags: Vec<String>,
    local_ops: Option<LocalOps<S::Stored>>,
    body: Fut,
) -> Observe<impl Future<Output = (R, Outcome)>>
where
    S: Shape<R>,
    S::Stored: Send,
    R: Send + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    let key = EntryKey::new(cache, key, tags);
    let local = local_tier_for(cache, site, local_ops);
    let observed = Observed::start(site);
    let started = observed.started;
    let call = async move {
        if let Some(value) = local_hit(&key, &local, started) {
            site.record_local_hit();
            return (S::from_stored(value), Outcome::Local);
        }
        let local = mark_read(local, &key);
        // As in `cached_call`: the lookup reads what filling the local tier
        // needs, scoped away from the miss path's state.
        let lookup = {
            let (lookup, fill_local) = match local {
                Some(_) => cache.lookup_for_local::<S::Stored>(&key.key).await,
                None => (cache.lookup::<S::Stored>(&key.key).await, None),
            };
            match lookup {
                Lookup::Hit(entry) => {
                    // How much longer the value is fresh; `None`: always (an
                    // entry stored without `stale`).
                    let fresh_for = entry
                        .fresh_until
                        .map(|until| until.saturating_sub(codec::now_millis()));
                    if fresh_for == Some(0) {
                        site.record_stale_hit();
                        spawn_refresh::<S, R, Fut>(cache, site, key, body);
                        return (S::from_stored(entry.value), Outcome::Stale);
                    }
                    let fill_local = fill_local.map(|(ttl, encoded_len)| {
                        let fresh = fresh_for.map_or(ttl, Duration::from_millis);
                        (ttl.min(fresh), encoded_len)
                    });
                    keep_local_copy(cache, &key, &local, fill_local, &entry.value);
                    site.record_hit();
                    return (S::from_stored(entry.value), Outcome::Hit);
                }
                lookup => lookup,
            }
        };
        fill_boxed::<S, R, Fut>(cache, site, &key, lookup, body, local).await
    };
    Observe::new(call, observed)
}

pin_project_lite::pin_project! {
    /// A cached call's future: the call, polled (and, if cancelled, dropped)
    /// inside its span, then its outcome and latency recorded. A type of its
    /// own rather than an `async` wrapper, which would hold the call's future
    /// twice.
    ///
    /// The call's key, epoch, span and start time are taken when this is
    /// built: the generated code awaits it at once.
    pub struct Observe<F> {
        #[pin]
        call: tracing::instrument::Instrumented<F>,
        site: &'static CallSite,
        started: Instant,
        finished: bool,
    }
}

impl<F> Observe<F> {
    fn new(call: F, observed: Observed) -> Self {
        Observe {
            call: call.instrument(observed.span),
            site: observed.site,
            started: observed.started,
            finished: false,
        }
    }
}

impl<R, F: Future<Output = (R, Outcome)>> Future for Observe<F> {
    type Output = R;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        let mut this = self.project();
        assert!(!*this.finished, "a cached call polled after it finished");
        let Poll::Ready((result, outcome)) = this.call.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        *this.finished = true;
        let elapsed = this.started.elapsed();
        this.site.record_latency(elapsed);
        let _ = OUTCOME.try_with(|tracked| tracked.set(Some(outcome)));
        let span = this.call.as_ref().get_ref().span();
        span.record("outcome", outcome.as_str());
        span.record("elapsed_us", crate::units::micros(elapsed));
        Poll::Ready(result)
    }
}

/// A call's site, span and start, taken before its future is built.
struct Observed {
    site: &'static CallSite,
    span: tracing::Span,
    started: Instant,
}

impl Observed {
    fn start(site: &'static CallSite) -> Observed {
        site.register();
        let span = tracing::debug_span!(
            "redis_cached",
            function = site.name(),
            outcome = tracing::field::Empty,
            elapsed_us = tracing::field::Empty,
        );
        Observed {
            site,
            span,
            started: Instant::now(),
        }
    }
}

/// After a miss or a failed lookup: coalesce with other callers of the key,
/// or run the body.
async fn fill<S, R, Fut>(
    cache: &Cache,
    site: &'static CallSite,
    key: &EntryKey,
    lookup: Lookup<S::Stored>,
    body: Fut,
    local: LocalFill<'_, S::Stored>,
) -> (R, Outcome)
where
    S: Shape<R>,
    Fut: Future<Output = R>,
{
    let redis_failed = matches!(lookup, Lookup::Failed);
    if redis_failed {
        site.record_error();
    } else {
        site.record_miss();
    }
    let flight = if site.options.coalesce {
        loop {
            match cache.flights().join(&key.key) {
                Joined::Leader(guard) => break Some(guard),
                Joined::Follower(receiver) => match flight::follow(receiver).await {
                    FlightState::Done(bytes) => match cache.decode::<S::Stored>(&bytes) {
                        Some(entry) => {
                            site.record_coalesced();
                            return (S::from_stored(entry.value), Outcome::Coalesced);
                        }
                        None => break None,
                    },
                    // The leader's result was not shareable (or it panicked):
                    // run our own body now rather than queue behind another
                    // leader.
                    FlightState::Released => break None,
                    // The leader was cancelled: take over, or follow whoever did.
                    FlightState::Abandoned | FlightState::Running => continue,
                },
            }
        }
    } else {
        None
    };
    run_body::<S, R, Fut>(cache, site, key, redis_failed, body, flight, local).await
}

/// The leader's part (or an uncoalesced caller's): with `lock`, first make
/// sure no other process is already running the body for this key; then run
/// it, share the entry with followers and store it.
async fn run_body<S, R, Fut>(
    cache: &Cache,
    site: &'static CallSite,
    key: &EntryKey,
    redis_failed: bool,
    body: Fut,
    flight: Option<LeaderGuard>,
    local: LocalFill<'_, S::Stored>,
) -> (R, Outcome)
where
    S: Shape<R>,
    Fut: Future<Output = R>,
{
    let outcome = if redis_failed {
        Outcome::Error
    } else {
        Outcome::Miss
    };
    let mut held = None;
    if site.options.lock && !redis_failed {
        match wait_for_lock(cache, &key.key).await {
            LockWait::Held(lock) => held = Some(lock),
            LockWait::Entry(bytes) => {
                if let Some(entry) = cache.decode::<S::Stored>(&bytes) {
                    if let Some(flight) = flight {
                        flight.finish(FlightState::Done(Arc::from(bytes)));
                    }
                    site.record_coalesced();
                    return (S::from_stored(entry.value), Outcome::Coalesced);
                }
            }
            LockWait::GaveUp => {}
        }
    }
    let result = body.await;
    let entry = entry_of::<S, R>(cache, site, &result);
    // A local copy never outlives the value's freshness (`stale`), counted
    // from when the value was encoded, not from when its store returned.
    let local_fill = match &entry {
        Entry::Ready {
            bytes, fresh_until, ..
        } => Some((*fresh_until, bytes.len())),
        _ => None,
    };
    match share_and_store(cache, key, entry, flight, redis_failed).await {
        StoreOutcome::Failed => site.record_error(),
        StoreOutcome::Stored => {
            if let (Some((tier, ops, since)), Some((fresh_until, encoded_len)), Some(stored)) =
                (&local, local_fill, S::storable(&result))
            {
                let ttl = fresh_until.saturating_duration_since(Instant::now());
                tier.insert(&key.key, stored, ops, ttl, encoded_len, *since);
            }
        }
        StoreOutcome::NotStored => {}
    }
    if let Some(lock) = held {
        lock.release().await;
    }
    (result, outcome)
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

fn entry_of<S: Shape<R>, R>(cache: &Cache, site: &CallSite, result: &R) -> Entry {
    let Some(stored) = S::storable(result) else {
        return Entry::Nothing;
    };
    let ttl = site_ttl(cache, site);
    let stale = Duration::from_secs(site.options.stale_secs);
    let fresh_until =
        (!stale.is_zero()).then(|| codec::now_millis().saturating_add(crate::units::millis(ttl)));
    match cache.encode(stored, fresh_until) {
        Some(bytes) if bytes.len() > cache.config().max_value_size => {
            site.record_oversized();
            cache.incidents().warn(Incident::TooLarge, || {
                format!(
                    "a result of `{}` is {} bytes, over the {}-byte `max_value_size`: it is returned but not cached",
                    site.name(),
                    bytes.len(),
                    cache.config().max_value_size
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
async fn share_and_store(
    cache: &Cache,
    key: &EntryKey,
    entry: Entry,
    flight: Option<LeaderGuard>,
    redis_failed: bool,
) -> StoreOutcome {
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
                    || cache.flights().evicted_since(&key.key, key.epoch)
            };
            if redis_failed || evicted() {
                // With Redis failing, the lookup has already been counted.
                // Evicted meanwhile: what we read may predate the write.
                StoreOutcome::NotStored
            } else if cache
                .store(&key.key, &bytes, redis_ttl, &key.tags)
                .await
                .is_err()
            {
                StoreOutcome::Failed
            } else if evicted() {
                // An eviction that came while the store was on its way may
                // have reached Redis first: undo the store.
                let _ = cache.send(redis::cmd("UNLINK").arg(&key.key)).await;
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

/// The function's TTL, less jitter.
fn site_ttl(cache: &Cache, site: &CallSite) -> Duration {
    let ttl = match site.options.ttl_secs {
        0 => cache.default_ttl(),
        seconds => Duration::from_secs(seconds),
    };
    cache.jittered(ttl)
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
async fn wait_for_lock(cache: &Cache, key: &str) -> LockWait {
    let config = cache.config();
    let give_up_at = Instant::now() + config.lock_wait;
    loop {
        match cache.try_lock(key, config.lock_lease).await {
            LockAttempt::Acquired(lock) => {
                // The previous holder may have stored and released between
                // our lookup and our lock: check once more before running.
                return match cache.send_get(key).await {
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
        match cache.send_get(key).await {
            Ok(Some(bytes)) => return LockWait::Entry(bytes),
            Ok(None) => {}
            Err(_) => return LockWait::GaveUp,
        }
    }
}

/// Starts the one background refresh of a stale key, unless one is already
/// running in this process (or, with `lock`, in another).
fn spawn_refresh<S, R, Fut>(cache: &Cache, site: &'static CallSite, key: EntryKey, body: Fut)
where
    S: Shape<R>,
    S::Stored: Send,
    R: Send + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    let Joined::Leader(flight) = cache.flights().join(&key.key) else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let cache = cache.clone();
    let span = tracing::debug_span!("redis_cached_refresh", function = site.name());
    runtime.spawn(
        async move {
            // A caller whose stale read crossed the previous refresh's store
            // gets here just after that refresh closed its flight: if the
            // entry is fresh now, there is nothing to refresh. Only an entry
            // that may be trusted (no eviction parked, none since the flight
            // began) counts, since the flight's followers get it; and only
            // its envelope is decoded.
            if !cache.parked().any()
                && let Ok(Some(bytes)) = cache.send_get(&key.key).await
                && !flight.invalidated()
                && let Ok(entry) = codec::decode::<serde::de::IgnoredAny>(&bytes)
                && entry
                    .fresh_until
                    .is_none_or(|until| codec::now_millis() < until)
            {
                flight.finish(FlightState::Done(Arc::from(bytes)));
                return;
            }
            let held = if site.options.lock {
                match cache.try_lock(&key.key, cache.config().lock_lease).await {
                    LockAttempt::Acquired(lock) => Some(lock),
                    // Another process refreshes it; or Redis fails, and the
                    // store would fail too.
                    LockAttempt::Busy | LockAttempt::Failed => return,
                }
            } else {
                None
            };
            site.record_refresh();
            let result = body.await;
            let entry = entry_of::<S, R>(&cache, site, &result);
            drop(result);
            match share_and_store(&cache, &key, entry, Some(flight), false).await {
                StoreOutcome::Failed => site.record_error(),
                // Local copies elsewhere end with the old value's freshness
                // anyway; the message spares them clock skew between hosts.
                StoreOutcome::Stored => cache.announce(Change::Key(key.key)).await,
                StoreOutcome::NotStored => {}
            }
            if let Some(lock) = held {
                lock.release().await;
            }
        }
        .instrument(span),
    );
}

/// Write-through, for `#[cache_put]` and the derived `…_refresh` helpers: runs
/// the body and stores what its shape allows, with the site's TTL (and
/// `stale`), without looking up first.
pub async fn put_call<S, R, Fut>(
    cache: &Cache,
    site: &'static CallSite,
    key: String,
    tags: Vec<String>,
    body: Fut,
) -> R
where
    S: Shape<R>,
    Fut: Future<Output = R>,
{
    site.register();
    let result = body.await;
    if let Entry::Ready {
        bytes, redis_ttl, ..
    } = entry_of::<S, R>(cache, site, &result)
    {
        if cache.store(&key, &bytes, redis_ttl, &tags).await.is_err() {
            site.record_error();
        }
        // Other processes' local copies hold the value this one replaced.
        cache.announce(Change::Key(key)).await;
    }
    result
}

/// Whether a result counts as success, for `#[cache_evict]`: `Ok` for a
/// `Result`, anything else always.
pub trait Succeeded<R> {
    fn succeeded(result: &R) -> bool;
}

impl<T, E> Succeeded<Result<T, E>> for OkValues {
    fn succeeded(result: &Result<T, E>) -> bool {
        result.is_ok()
    }
}

impl<R> Succeeded<R> for AnyValue {
    fn succeeded(_: &R) -> bool {
        true
    }
}
