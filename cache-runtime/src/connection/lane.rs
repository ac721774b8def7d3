//! A lane's state machine: one connection, driven on one runtime, as its
//! calls and its supervisor move it between connecting, up, suspect, down
//! and abandoned.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};

use tokio::sync::Notify;

use super::server::RedisConnection;
use crate::error::CacheError;
use crate::status::ConnectionStatus;
use crate::sync::{read, write};

pub(super) enum State {
    /// The first connection attempt has not finished yet.
    Connecting,
    /// Connected. The generation tells connections apart, so that a failure
    /// seen on an old connection never takes down its replacement.
    Up {
        generation: u64,
        connection: RedisConnection,
    },
    /// A call's deadline passed. With the connection on the caller's
    /// runtime, that runtime may have been too busy to read a reply that had
    /// come: so calls skip Redis, as when down, while the supervisor asks
    /// the same connection for a PING, and puts it back in service if it
    /// answers, without reconnecting.
    Suspect {
        generation: u64,
        connection: RedisConnection,
    },
    /// Not connected; the supervisor is reconnecting.
    Down,
    /// The cache cannot work at all (bad URL, no I/O thread).
    Disabled,
    /// The lane's supervisor is gone: its runtime shut down, or it panicked.
    Abandoned,
}

/// One connection and its supervisor, driven on one runtime.
pub(super) struct Lane {
    state: RwLock<State>,
    /// Set with `State::Abandoned`, and never cleared: read by every call
    /// without taking the state's lock.
    abandoned: AtomicBool,
    /// Notified when the state leaves `Connecting`.
    settled: Notify,
    /// Notified when a call sees the connection fail.
    pub(super) wake_supervisor: Notify,
    /// Why this lane's last connection attempt failed, while it is not
    /// connected.
    pub(super) last_connect_error: std::sync::Mutex<Option<String>>,
}

/// The lanes of the runtimes that called, by runtime.
pub(super) type Lanes = RwLock<HashMap<tokio::runtime::Id, Arc<Lane>>>;

impl Lane {
    pub(super) fn new(state: State) -> Self {
        Lane {
            abandoned: AtomicBool::new(matches!(state, State::Abandoned)),
            state: RwLock::new(state),
            settled: Notify::new(),
            wake_supervisor: Notify::new(),
            last_connect_error: Default::default(),
        }
    }

    pub(super) fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
        self.set_state(State::Abandoned);
    }

    pub(super) fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }

    /// Where this lane stands: a suspect connection serves no call, so it
    /// counts as disconnected, as do a disabled and an abandoned lane.
    pub(super) fn status(&self) -> ConnectionStatus {
        match *self.read_state() {
            State::Connecting => ConnectionStatus::Connecting,
            State::Up { .. } => ConnectionStatus::Connected,
            State::Suspect { .. } | State::Down | State::Disabled | State::Abandoned => {
                ConnectionStatus::Disconnected
            }
        }
    }

    /// Returns once the first connection attempt has ended (at once if it
    /// has).
    pub(super) async fn settled(&self) {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            // Register before reading the state, as in `acquire`.
            settled.as_mut().enable();
            if !matches!(*self.read_state(), State::Connecting) {
                return;
            }
            settled.await;
        }
    }

    /// The current connection, waiting (within the caller's deadline) only
    /// while the first connection attempt is in flight.
    pub(super) async fn acquire(&self) -> Result<(u64, RedisConnection), CacheError> {
        // The hot path: read the state, without registering as a waiter.
        if let Some(ready) = self.ready() {
            return ready;
        }
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            // Register before reading the state again, so a change between
            // the read and the wait cannot be missed.
            settled.as_mut().enable();
            if let Some(ready) = self.ready() {
                return ready;
            }
            settled.await;
        }
    }

    /// The connection, or why there is none; `None` while connecting.
    fn ready(&self) -> Option<Result<(u64, RedisConnection), CacheError>> {
        match &*self.read_state() {
            State::Up {
                generation,
                connection,
            } => Some(Ok((*generation, connection.clone()))),
            State::Suspect { .. } | State::Down | State::Disabled | State::Abandoned => {
                Some(Err(CacheError::Unavailable))
            }
            State::Connecting => None,
        }
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        read(&self.state)
    }

    pub(super) fn set_state(&self, state: State) {
        let was_connecting = {
            let mut guard = write(&self.state);
            let was_connecting = matches!(*guard, State::Connecting);
            *guard = state;
            was_connecting
        };
        if was_connecting {
            self.settled.notify_waiters();
        }
    }

    /// Takes connection `generation` out of service, if it is still
    /// current, and has the supervisor reconnect.
    pub(super) fn mark_down(&self, generation: u64) {
        if self.take_down(generation) {
            self.wake_supervisor.notify_one();
        }
    }

    /// Takes connection `generation` out of service (up or suspect), if it
    /// is still current; whether it did.
    pub(super) fn take_down(&self, generation: u64) -> bool {
        let mut guard = write(&self.state);
        match &*guard {
            State::Up {
                generation: current,
                ..
            }
            | State::Suspect {
                generation: current,
                ..
            } if *current == generation => {
                *guard = State::Down;
                true
            }
            _ => false,
        }
    }

    /// A call's deadline passed on connection `generation`: out of service
    /// until the supervisor's PING says whether it still answers.
    pub(super) fn mark_suspect(&self, generation: u64) {
        {
            let mut guard = write(&self.state);
            match &*guard {
                State::Up {
                    generation: current,
                    connection,
                } if *current == generation => {
                    *guard = State::Suspect {
                        generation,
                        connection: connection.clone(),
                    }
                }
                _ => return,
            }
        }
        self.wake_supervisor.notify_one();
    }

    /// Whether connection `generation` is up.
    pub(super) fn is_in_service(&self, generation: u64) -> bool {
        matches!(&*self.read_state(), State::Up { generation: current, .. } if *current == generation)
    }

    /// Whether connection `generation` is suspect.
    pub(super) fn is_suspect(&self, generation: u64) -> bool {
        matches!(&*self.read_state(), State::Suspect { generation: current, .. } if *current == generation)
    }

    /// Puts suspect connection `generation` back in service; whether it did.
    pub(super) fn restore(&self, generation: u64) -> bool {
        let mut guard = write(&self.state);
        match &*guard {
            State::Suspect {
                generation: current,
                connection,
            } if *current == generation => {
                *guard = State::Up {
                    generation,
                    connection: connection.clone(),
                };
                true
            }
            _ => false,
        }
    }
}

/// Travels with a lane's supervisor. When the supervisor's future is
/// dropped (its runtime shut down, or the cache was dropped), the lane is
/// marked abandoned, which also drops its connection, and a runtime's lane
/// is forgotten.
pub(super) struct LaneGuard {
    pub(super) lane: Arc<Lane>,
    pub(super) forget_from: Option<(Weak<Lanes>, tokio::runtime::Id)>,
}

impl Drop for LaneGuard {
    fn drop(&mut self) {
        self.lane.abandon();
        if let Some((lanes, id)) = &self.forget_from
            && let Some(lanes) = lanes.upgrade()
        {
            let mut lanes = write(&lanes);
            if lanes
                .get(id)
                .is_some_and(|lane| Arc::ptr_eq(lane, &self.lane))
            {
                lanes.remove(id);
            }
        }
    }
}
