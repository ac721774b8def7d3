//! In-process coalescing: concurrent callers of one cold key wait for a
//! single run of the body.
//!
//! The first caller to miss a key becomes the flight's leader and runs the
//! body; later callers of the same key follow: they wait for the leader's
//! result, shared as the encoded entry (so results need not be `Clone`).
//!
//! - The leader publishes a result once it is stored under its lease (see
//!   `lease.rs`), or, not stored, known to predate no eviction. An entry it
//!   read from Redis (another process's, found while it waited) goes only to
//!   the followers that joined before the read was sent: a later one may
//!   have come after an eviction that the read predates. It closes the
//!   flight to newcomers before it sends the store: one arriving later finds
//!   the lease or the entry in Redis instead.
//! - A failed body with a last good value (`fail_safe`) shares that value,
//!   if the key still holds it.
//! - A result that is not stored (`Err`, `None`) or a panic releases the
//!   followers: each runs its own body at once, so none waits on a chain of
//!   failures, and nothing is left behind to poison later calls.
//! - A leader whose future is dropped (a cancelled request) abandons the
//!   flight: one follower takes over as the new leader, the others keep
//!   waiting for it.
//! - An eviction of the key while its flight is in the air (a write that
//!   committed while the read was running) closes the flight to newcomers and
//!   marks it invalidated: its leader neither stores the value it read nor
//!   hands it to the followers, who run their own body.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::change::Change;

/// What followers of a flight see.
#[derive(Clone)]
pub(crate) enum FlightState {
    Running,
    /// The encoded entry, stored under the leader's guard: for every
    /// follower.
    Done(Arc<[u8]>),
    /// An entry the leader read from Redis (another caller's, found while
    /// it waited): only for the followers that joined before the read was
    /// sent, the first this many; a later one may have come after an
    /// eviction that the read predates, and is released instead.
    Found(Arc<[u8]>, u64),
    /// The leader's body failed: the last good value's entry (`fail_safe`),
    /// which followers return as the leader did.
    FailSafe(Arc<[u8]>),
    /// No shareable result: run your own body.
    Released,
    /// The leader went away: try to lead.
    Abandoned,
}

struct Flight {
    state: watch::Sender<FlightState>,
    /// How many followers have joined.
    joins: AtomicU64,
    /// Set when the key is evicted while the flight is in the air.
    invalidated: AtomicBool,
}

#[derive(Default)]
pub(crate) struct Flights {
    in_flight: Mutex<HashMap<String, Arc<Flight>>>,
    /// Counts evictions; a call notes it before its lookup.
    epoch: AtomicU64,
    /// The latest evictions with their epochs, so that a call that did not
    /// lead a flight (coalescing off, or released by a failed leader) can
    /// still tell whether its key was evicted while its body ran.
    recent: Mutex<VecDeque<(u64, Change)>>,
}

/// How many recent evictions are remembered; a call that ran across more
/// than this many evictions does not store, to be safe.
const RECENT_EVICTIONS: usize = 1024;

pub(crate) enum Joined {
    Leader(LeaderGuard),
    Follower(Follower),
}

/// A follower of a flight: what it waits on, and which follower it is.
pub(crate) struct Follower {
    state: watch::Receiver<FlightState>,
    /// Its place among the flight's followers, from 1.
    joined: u64,
}

impl Flights {
    /// Leads the flight for `key`, or follows the one already in the air.
    pub(crate) fn join(self: &Arc<Self>, key: &str) -> Joined {
        let mut in_flight = self.lock();
        if let Some(flight) = in_flight.get(key) {
            return Joined::Follower(Follower {
                state: flight.state.subscribe(),
                joined: flight.joins.fetch_add(1, Ordering::SeqCst) + 1,
            });
        }
        let flight = Arc::new(Flight {
            state: watch::Sender::new(FlightState::Running),
            joins: AtomicU64::new(0),
            invalidated: AtomicBool::new(false),
        });
        in_flight.insert(key.to_owned(), flight.clone());
        Joined::Leader(LeaderGuard {
            flights: self.clone(),
            key: key.to_owned(),
            flight,
            finished: false,
        })
    }

    /// The eviction epoch now: note it before a lookup, and ask
    /// [`Flights::evicted_since`] before storing.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// `change` was (or is being) applied to Redis: reads of those keys in
    /// the air must not store what they read before it.
    pub(crate) fn evicted(&self, change: &Change) {
        {
            let mut recent = crate::sync::lock(&self.recent);
            let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
            recent.push_back((epoch, change.clone()));
            if recent.len() > RECENT_EVICTIONS {
                recent.pop_front();
            }
        }
        self.invalidate(|in_flight| change.covers(in_flight));
    }

    /// Whether `key` was evicted after epoch `since`.
    pub(crate) fn evicted_since(&self, key: &str, since: u64) -> bool {
        if self.epoch() == since {
            return false;
        }
        let recent = crate::sync::lock(&self.recent);
        match recent.front() {
            // Evictions after `since` were forgotten: assume the worst.
            Some((oldest, _)) if *oldest > since + 1 => true,
            _ => recent
                .iter()
                .any(|(epoch, change)| *epoch > since && change.covers(key)),
        }
    }

    /// The keys matching `evicted` were evicted: their flights must not store
    /// what they read, and newcomers must start new flights.
    fn invalidate(&self, evicted: impl Fn(&str) -> bool) {
        self.lock().retain(|key, flight| {
            if evicted(key) {
                flight.invalidated.store(true, Ordering::SeqCst);
                false
            } else {
                true
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Flight>>> {
        crate::sync::lock(&self.in_flight)
    }

    /// How many keys are in flight (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Held by the leader. Dropping it without [`LeaderGuard::finish`] abandons
/// the flight (or releases it, if the body panicked).
pub(crate) struct LeaderGuard {
    flights: Arc<Flights>,
    key: String,
    flight: Arc<Flight>,
    finished: bool,
}

impl LeaderGuard {
    /// Shows followers the result, without closing the flight yet.
    pub(crate) fn publish(&self, state: FlightState) {
        self.flight.state.send_replace(state);
    }

    /// How many followers have joined so far: read it before a read from
    /// Redis whose entry is to be shared ([`FlightState::Found`]).
    pub(crate) fn joined(&self) -> u64 {
        self.flight.joins.load(Ordering::SeqCst)
    }

    /// Whether the key was evicted since this flight started.
    pub(crate) fn invalidated(&self) -> bool {
        self.flight.invalidated.load(Ordering::SeqCst)
    }

    /// Closes the flight with its final state.
    pub(crate) fn finish(mut self, state: FlightState) {
        self.close(state);
    }

    /// Closes the flight to newcomers, who then start over with a lookup;
    /// the followers already waiting still get what the leader publishes.
    /// A leader calls it before it stores: a caller that comes after the
    /// store was sent may come after an eviction that the store lost to,
    /// and must not get the value.
    pub(crate) fn close_to_newcomers(&self) {
        let mut in_flight = self.flights.lock();
        if in_flight
            .get(&self.key)
            .is_some_and(|current| Arc::ptr_eq(current, &self.flight))
        {
            in_flight.remove(&self.key);
        }
    }

    fn close(&mut self, state: FlightState) {
        self.finished = true;
        self.close_to_newcomers();
        // A follower that subscribed before the removal sees this state; one
        // that comes after finds no flight and starts over with a lookup.
        if matches!(*self.flight.state.borrow(), FlightState::Running) {
            self.flight.state.send_replace(state);
        }
    }
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        if !self.finished {
            let state = if std::thread::panicking() {
                FlightState::Released
            } else {
                FlightState::Abandoned
            };
            self.close(state);
        }
    }
}

/// Waits for the flight to end; a leader that vanished counts as abandoned,
/// and an entry read for earlier followers only releases this one.
pub(crate) async fn follow(mut follower: Follower) -> FlightState {
    let state = match follower
        .state
        .wait_for(|state| !matches!(state, FlightState::Running))
        .await
    {
        Ok(state) => state.clone(),
        Err(_closed) => FlightState::Abandoned,
    };
    match state {
        FlightState::Found(_, for_joins) if follower.joined > for_joins => FlightState::Released,
        state => state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(joined: Joined) -> LeaderGuard {
        match joined {
            Joined::Leader(guard) => guard,
            Joined::Follower(_) => panic!("expected to lead"),
        }
    }

    fn follower(joined: Joined) -> Follower {
        match joined {
            Joined::Follower(follower) => follower,
            Joined::Leader(_) => panic!("expected to follow"),
        }
    }

    #[tokio::test]
    async fn followers_get_the_leaders_entry() {
        let flights = Arc::new(Flights::default());
        let guard = leader(flights.join("k"));
        let waiting = follower(flights.join("k"));
        assert!(matches!(flights.join("other"), Joined::Leader(_)));
        guard.publish(FlightState::Done(Arc::from(&b"entry"[..])));
        // Still open: a late follower sees the published entry at once.
        let late = follower(flights.join("k"));
        guard.finish(FlightState::Released);
        for receiver in [waiting, late] {
            assert!(
                matches!(follow(receiver).await, FlightState::Done(bytes) if &*bytes == b"entry")
            );
        }
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn an_eviction_invalidates_the_flight_and_closes_it_to_newcomers() {
        let flights = Arc::new(Flights::default());
        let guard = leader(flights.join("k"));
        let other = leader(flights.join("other"));
        flights.evicted(&Change::Key("k".into()));
        assert!(guard.invalidated());
        assert!(!other.invalidated());
        assert!(
            matches!(flights.join("k"), Joined::Leader(_)),
            "a new flight"
        );
    }

    #[test]
    fn evictions_are_remembered_by_epoch() {
        let flights = Flights::default();
        let before = flights.epoch();
        assert!(!flights.evicted_since("a", before));
        flights.evicted(&Change::Key("a".into()));
        flights.evicted(&Change::Prefix("p:".into()));
        assert!(flights.evicted_since("a", before));
        assert!(flights.evicted_since("p:1", before));
        assert!(!flights.evicted_since("b", before));
        assert!(!flights.evicted_since("a", flights.epoch()));
        for n in 0..RECENT_EVICTIONS + 1 {
            flights.evicted(&Change::Key(format!("other{n}")));
        }
        assert!(
            flights.evicted_since("b", before),
            "forgotten: assume evicted"
        );
    }

    #[tokio::test]
    async fn a_dropped_leader_abandons_and_a_new_caller_leads() {
        let flights = Arc::new(Flights::default());
        let guard = leader(flights.join("k"));
        let waiting = follower(flights.join("k"));
        drop(guard);
        assert!(matches!(follow(waiting).await, FlightState::Abandoned));
        assert!(matches!(flights.join("k"), Joined::Leader(_)));
    }

    #[tokio::test]
    async fn a_panicking_leader_releases_its_followers() {
        let flights = Arc::new(Flights::default());
        let waiting = {
            let flights = flights.clone();
            let guard = leader(flights.join("k"));
            let waiting = follower(flights.join("k"));
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                let _guard = guard;
                panic!("body panicked");
            }));
            assert!(result.is_err());
            waiting
        };
        assert!(matches!(follow(waiting).await, FlightState::Released));
        assert_eq!(flights.len(), 0, "nothing left to poison later calls");
    }
}
