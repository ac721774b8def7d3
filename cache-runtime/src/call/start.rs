//! The miss path's steps before the body, compiled once for every function:
//! coalescing with this process's other callers, the cross-process lock, the
//! lease (or the wait for another process's entry), and the same for a
//! background refresh. What they come to is a [`Leader`] that runs the body,
//! or an entry another caller stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::EntryKey;
use crate::codec;
use crate::engine::Engine;
use crate::flight::{self, FlightState, Joined, LeaderGuard};
use crate::lease::{self, Lease, LeaseAttempt};
use crate::lock::{HeldLock, LockAttempt, try_lock};
use crate::metrics::CallSite;
use crate::observe::Outcome;

/// Whose run of the body this is, and how it was reached.
pub(super) struct Run<'a> {
    pub(super) engine: &'a Arc<Engine>,
    pub(super) site: &'static CallSite,
    pub(super) key: &'a EntryKey,
    /// Whether Redis failed the lookup: the result is then not stored.
    pub(super) redis_failed: bool,
    /// The entry the lookup found and could not decode (empty for a key of
    /// another type), or an expired one without `fail_safe`: the lease
    /// replaces it, so that the store overwrites it.
    pub(super) undecodable: Option<Vec<u8>>,
    /// The expired entry that `fail_safe` keeps: the run's store replaces it
    /// if no eviction (and no other store) reached it first, and no lease is
    /// taken, so that other callers still find it while the body runs.
    pub(super) expired: Option<Vec<u8>>,
}

/// The miss path before the body: first coalescing with this process's
/// other callers of the key (the flight), then, with `lock`, with other
/// processes; then the key's lease (`lease.rs`), or, while another process
/// holds it, a wait for that process's entry. Each may find the entry
/// another caller stored; when it does not decode, the path goes on as if
/// nothing had been found.
pub(super) struct MissStart {
    stage: Stage,
    flight: Option<LeaderGuard>,
    held: Option<HeldLock>,
    /// Until when to wait for another process: for the lock holder's entry,
    /// then for the lease holder's. One deadline for the whole miss, so that
    /// the waits do not add up.
    give_up_at: Instant,
    /// An entry found that did not decode, for the lease to replace.
    undecodable: Option<Vec<u8>>,
    /// How many followers had joined the flight before the last read that
    /// may find another caller's entry was sent: only those may get it.
    joined_before_read: u64,
}

/// Where [`MissStart`] goes on from.
#[derive(Clone, Copy)]
enum Stage {
    Coalesce,
    Lock,
    Lease,
}

/// What a step of [`MissStart`] came to.
pub(super) enum Step {
    /// Another caller's entry, read from Redis: the caller decodes it, and
    /// if it does, [`MissStart::accept`]s it.
    Found(Arc<[u8]>),
    /// The entry the flight's leader encoded, from its own run.
    Shared(Arc<[u8]>),
    /// The last good value's entry, which the flight's leader answered with
    /// when its body failed (`fail_safe`).
    FailSafe(Arc<[u8]>),
    /// This caller runs the body.
    Lead(Leader),
}

impl MissStart {
    /// Counts the miss (or the lookup Redis failed).
    pub(super) fn new(run: &Run<'_>) -> MissStart {
        if run.redis_failed {
            run.site.record_error();
        } else {
            run.site.record_miss();
        }
        MissStart {
            stage: Stage::Coalesce,
            flight: None,
            held: None,
            give_up_at: Instant::now() + run.engine.config.lock_wait,
            undecodable: run.undecodable.clone(),
            joined_before_read: 0,
        }
    }

    /// Goes on until an entry is found or the body is to run.
    pub(super) async fn next(&mut self, run: &Run<'_>) -> Step {
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
                        Joined::Follower(follower) => match flight::follow(follower).await {
                            FlightState::Done(bytes) => return Step::Shared(bytes),
                            FlightState::Found(bytes, _) => return Step::Found(bytes),
                            FlightState::FailSafe(bytes) => return Step::FailSafe(bytes),
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
        if let Stage::Lock = self.stage {
            // An entry from the lock holder that does not decode: run the
            // body without the lock.
            self.stage = Stage::Lease;
            if site.options.lock && !run.redis_failed {
                let expired = run.expired.as_deref();
                self.note_read();
                match wait_for_lock(engine, &run.key.key, expired, self.give_up_at).await {
                    LockWait::Held(lock) => self.held = Some(lock),
                    LockWait::Entry(bytes) => return self.found(bytes),
                    LockWait::GaveUp => {}
                }
            }
        }
        // The lease, taken before the body runs: its store lands only if no
        // eviction reached the key meanwhile. Not when Redis failed the
        // lookup: nothing is stored then, and this process's callers share
        // the result as before.
        let guard = if run.redis_failed {
            StoreGuard::Unchecked { shared: true }
        } else if let Some(expired) = &run.expired {
            StoreGuard::Replaces(expired.clone())
        } else {
            loop {
                let replaces = self.undecodable.take();
                match lease::take(
                    &engine.store,
                    &engine.leases,
                    &run.key.key,
                    &run.key.tags,
                    engine.config.lease,
                    replaces.as_deref(),
                )
                .await
                {
                    LeaseAttempt::Taken(lease) => break StoreGuard::Lease(lease),
                    LeaseAttempt::Failed => break StoreGuard::Unchecked { shared: false },
                    // Without coalescing, every caller runs its own body.
                    LeaseAttempt::Busy if !site.options.coalesce => {
                        break StoreGuard::Unchecked { shared: false };
                    }
                    LeaseAttempt::Busy => {}
                }
                // Another process's miss holds the lease: wait for its entry
                // (coalescing across processes), or for the lease to go.
                if Instant::now() + LOCK_POLL > self.give_up_at {
                    break StoreGuard::Unchecked { shared: false };
                }
                tokio::time::sleep(LOCK_POLL).await;
                self.note_read();
                match engine.store.get(&run.key.key).await {
                    Ok(Some(bytes)) if !codec::is_lease(&bytes) => return self.found(bytes),
                    Ok(_) => {}
                    Err(_) => break StoreGuard::Unchecked { shared: false },
                }
            }
        };
        Step::Lead(Leader {
            flight: self.flight.take(),
            held: self.held.take(),
            guard,
            outcome: if run.redis_failed {
                Outcome::Error
            } else {
                Outcome::Miss
            },
        })
    }

    /// An entry found in Redis: kept, in case it does not decode, for the
    /// lease to replace.
    fn found(&mut self, bytes: Vec<u8>) -> Step {
        let found = Arc::from(bytes.as_slice());
        self.undecodable = Some(bytes);
        Step::Found(found)
    }

    /// Before a read that may find another caller's entry: the followers
    /// that joined so far may get it, as they came before the read was sent.
    fn note_read(&mut self) {
        if let Some(flight) = &self.flight {
            self.joined_before_read = flight.joined();
        }
    }

    /// The found entry decoded: the flight this caller leads, if any, shares
    /// it with the followers that joined before it was read.
    pub(super) fn accept(self, bytes: Arc<[u8]>) {
        if let Some(flight) = self.flight {
            flight.finish(FlightState::Found(bytes, self.joined_before_read));
        }
    }
}

/// A caller that runs the body: its flight, its lock, what its store must
/// find in the key, and what the call is counted as.
pub(crate) struct Leader {
    pub(super) flight: Option<LeaderGuard>,
    pub(super) held: Option<HeldLock>,
    pub(super) guard: StoreGuard,
    pub(super) outcome: Outcome,
}

/// What a run's store must find in the entry's key to replace it.
pub(super) enum StoreGuard {
    /// Its lease: a miss.
    Lease(Lease),
    /// The stale entry it refreshes, byte for byte.
    Replaces(Vec<u8>),
    /// Nothing can be checked (no lease: another process held it for longer
    /// than `lock_wait`, or Redis failed): the result is not stored. It is
    /// `shared` with this process's other callers of the key only if Redis
    /// failed the lookup, as no eviction reaches it then; otherwise they
    /// may have come after an eviction that this result predates.
    Unchecked { shared: bool },
}

impl StoreGuard {
    /// Whether a result that is not stored may go to this process's other
    /// callers: its lease still stands (no eviction came), or Redis failed
    /// the lookup.
    pub(super) async fn shareable(&self, engine: &Engine, key: &str) -> bool {
        match self.expected() {
            Some(expected) => matches!(
                engine.store.get(key).await,
                Ok(Some(bytes)) if bytes == expected
            ),
            None => matches!(self, StoreGuard::Unchecked { shared: true }),
        }
    }

    /// What the key must hold for a store to replace it: the lease's marker,
    /// or the stale entry; `None` when nothing can be checked.
    pub(super) fn expected(&self) -> Option<&[u8]> {
        match self {
            StoreGuard::Lease(lease) => Some(lease.marker()),
            StoreGuard::Replaces(stale) => Some(stale),
            StoreGuard::Unchecked { .. } => None,
        }
    }

    /// Nothing was stored: the lease, if any, is released at once, so that
    /// other callers store theirs.
    pub(super) async fn release(self) {
        if let StoreGuard::Lease(lease) = self {
            lease.release().await;
        }
    }
}

/// Before a background refresh's body, for an entry read fresh until
/// `seen_fresh_until`: `None` when there is nothing to do.
pub(super) async fn start_refresh(
    engine: &Engine,
    site: &'static CallSite,
    key: &EntryKey,
    seen_fresh_until: u64,
    flight: LeaderGuard,
) -> Option<Leader> {
    // A caller whose read crossed the previous refresh's store gets here
    // just after that refresh closed its flight: if the entry was replaced
    // by a fresh one, there is nothing to refresh. Only an entry that may be
    // trusted (no eviction parked, none since the flight began) counts,
    // since the flight's followers get it; and only its envelope is decoded.
    if engine.parked.any() {
        return None;
    }
    // Read before the entry is, so that a follower that comes later (maybe
    // after an eviction that the read predates) does not get it.
    let joined_before_read = flight.joined();
    let current = engine.store.get(&key.key).await.ok()?;
    let guard = match current {
        // Another caller's miss is running the body.
        Some(bytes) if codec::is_lease(&bytes) => return None,
        Some(bytes) => {
            if !flight.invalidated()
                && let Ok(fresh_until) = codec::fresh_until(&bytes, engine.config.max_value_size)
                && fresh_until != Some(seen_fresh_until)
                && fresh_until.is_none_or(|until| codec::now_millis() < until)
            {
                flight.finish(FlightState::Found(Arc::from(bytes), joined_before_read));
                return None;
            }
            // Replaced only if no eviction (and no other store) reaches it
            // before the refresh's store.
            StoreGuard::Replaces(bytes)
        }
        // Evicted or expired since the stale read: refresh under a lease,
        // as a miss would.
        None => match lease::take(
            &engine.store,
            &engine.leases,
            &key.key,
            &key.tags,
            engine.config.lease,
            None,
        )
        .await
        {
            LeaseAttempt::Taken(lease) => StoreGuard::Lease(lease),
            LeaseAttempt::Busy | LeaseAttempt::Failed => return None,
        },
    };
    // The key's lock, whatever `lock` says: one refresh in all processes,
    // not one per process. It costs a round trip no caller waits for.
    let held = match try_lock(&engine.store, &key.key, engine.config.lock_lease).await {
        LockAttempt::Acquired(lock) => Some(lock),
        // Another process refreshes it; or Redis fails, and the store would
        // fail too.
        LockAttempt::Busy | LockAttempt::Failed => {
            guard.release().await;
            return None;
        }
    };
    site.record_refresh();
    Some(Leader {
        flight: Some(flight),
        held,
        guard,
        outcome: Outcome::Stale,
    })
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

/// Takes the key's lock, or waits (until `give_up_at`) for the holder's
/// entry, taking the lock over if the holder gives it up without storing.
/// An entry equal to `expired` (the one `fail_safe` keeps) is not the
/// holder's.
async fn wait_for_lock(
    engine: &Engine,
    key: &str,
    expired: Option<&[u8]>,
    give_up_at: Instant,
) -> LockWait {
    let is_new = |bytes: &Vec<u8>| !codec::is_lease(bytes) && Some(bytes.as_slice()) != expired;
    let config = &engine.config;
    loop {
        match try_lock(&engine.store, key, config.lock_lease).await {
            LockAttempt::Acquired(lock) => {
                // The previous holder may have stored and released between
                // our lookup and our lock: check once more before running.
                return match engine.store.get(key).await {
                    Ok(Some(bytes)) if is_new(&bytes) => {
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
            Ok(Some(bytes)) if is_new(&bytes) => return LockWait::Entry(bytes),
            Ok(_) => {}
            Err(_) => return LockWait::GaveUp,
        }
    }
}
