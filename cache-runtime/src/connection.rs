//! The connection to Redis: one multiplexed connection per Tokio runtime
//! that calls, each supervised.
//!
//! Why not redis-rs's `ConnectionManager`: it spawns its connection and its
//! reconnections on whichever Tokio runtime the caller happens to be on, and
//! every caller shares it. When that runtime ends (every `#[tokio::test]` has
//! its own), the connection dies with it for every other runtime too, and its
//! default retry policy stalls callers for seconds while the server is down.
//! Instead:
//!
//! - Each runtime that calls gets a connection of its own, driven by a task
//!   on that runtime (a *lane*). A hit then needs no wake-up of another
//!   thread: the caller, the connection's task and the reply stay on the
//!   caller's runtime, as with a hand-written redis-rs connection. A runtime
//!   that stalls or ends takes only its own lane with it; when it ends, its
//!   lane's task is dropped, which closes the connection and forgets the
//!   lane. Actix-web's workers (one single-threaded runtime each) thus each
//!   have one connection. `ConnectionPlacement::IoThread` instead keeps one
//!   connection for the whole cache, on a thread of its own.
//! - A runtime that cannot drive a connection (its lane's task panicked, say
//!   because the runtime has no I/O driver) is served by the I/O thread's
//!   lane, a small runtime of our own on a dedicated thread that lives as
//!   long as the process.
//! - A call never waits for a reconnection. After a connection-level failure
//!   (I/O error, closed connection) the lane is marked down and its calls
//!   skip Redis at once, a circuit breaker, while its supervisor reconnects
//!   with a capped exponential backoff, and puts the new connection in
//!   place when it answers PING. A missed deadline marks the lane suspect
//!   instead: calls skip Redis just the same, but the supervisor first
//!   PINGs the same connection, since the caller's runtime may only have
//!   been too busy to read the reply in time, and keeps it if it answers.
//! - The very first calls of a lane wait, within the deadline, for its first
//!   connection attempt, so that a program's first call can already use the
//!   cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

use futures_util::FutureExt;
use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, Value};
use tokio::runtime::Handle;
use tokio::sync::{Notify, watch};

use crate::config::{Config, ConnectionPlacement, redact_url};
use crate::error::CacheError;
use crate::incident::{Incident, Incidents};
use crate::io::{io_runtime, is_io_runtime};
use crate::sync::{lock, read, write};

/// One connection: to a single server, or to a Redis Cluster (which
/// redis-rs routes by slot, following MOVED and ASK redirects).
#[derive(Clone)]
pub(crate) enum RedisConnection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// Sends one command. A server error (`OOM`, `NOPERM`, `WRONGTYPE`…)
    /// is an `Err`: redis-rs hands it back as an `Ok` reply, which every
    /// caller would otherwise take for success.
    async fn send(&mut self, cmd: &Cmd) -> redis::RedisResult<Value> {
        use redis::aio::ConnectionLike;
        match self {
            RedisConnection::Single(connection) => connection.send_packed_command(cmd).await,
            RedisConnection::Cluster(connection) => connection.req_packed_command(cmd).await,
        }
        .and_then(Value::extract_error)
    }

    async fn send_pipeline(&mut self, pipeline: &Pipeline) -> redis::RedisResult<Vec<Value>> {
        use redis::aio::ConnectionLike;
        match self {
            RedisConnection::Single(connection) => {
                connection
                    .send_packed_commands(pipeline, 0, pipeline.len())
                    .await
            }
            RedisConnection::Cluster(connection) => {
                connection
                    .req_packed_commands(pipeline, 0, pipeline.len())
                    .await
            }
        }
    }
}

/// Where to connect.
enum Server {
    Single(Client, AsyncConnectionConfig),
    Cluster(ClusterClient),
}

enum Request<'a> {
    One(&'a Cmd),
    Many(&'a Pipeline),
}

enum State {
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

/// What every lane of a connection shares.
pub(crate) struct Shared {
    pub(crate) redacted_url: String,
    /// The URL's password, to scrub from error messages should a server or a
    /// library ever echo it.
    password: Option<String>,
    pub(crate) incidents: Incidents,
    /// `None` for a connection that never connects.
    server: Option<Server>,
    connect_timeout: Duration,
    max_backoff: Duration,
}

/// One connection and its supervisor, driven on one runtime.
struct Lane {
    state: RwLock<State>,
    /// Set with `State::Abandoned`, and never cleared: read by every call
    /// without taking the state's lock.
    abandoned: AtomicBool,
    /// Notified when the state leaves `Connecting`.
    settled: Notify,
    /// Notified when a call sees the connection fail.
    wake_supervisor: Notify,
    /// Why this lane's last connection attempt failed, while it is not
    /// connected.
    last_connect_error: std::sync::Mutex<Option<String>>,
}

/// The lanes of the runtimes that called, by runtime.
type Lanes = RwLock<HashMap<tokio::runtime::Id, Arc<Lane>>>;

/// Who asks about the connection: a runtime, with the lane its calls use (if
/// any yet), or code outside any runtime.
enum Asker {
    Runtime(Option<Arc<Lane>>),
    Outside,
}

/// Owns the supervisors: when the last `Cache` handle drops, so does this,
/// and every supervisor stops and closes its connection (a supervisor on a
/// runtime that is not running stops when that runtime next runs, or drops).
pub(crate) struct Connection {
    pub(crate) shared: Arc<Shared>,
    placement: ConnectionPlacement,
    lanes: Arc<Lanes>,
    /// The lane on the cache's I/O thread: every call's with
    /// `ConnectionPlacement::IoThread`, else the fallback of a runtime whose
    /// own lane could not run.
    io_lane: OnceLock<Arc<Lane>>,
    deadline: Duration,
    cluster: bool,
    /// Dropped with the connection; every supervisor then stops.
    stop_supervisors: watch::Sender<()>,
}

impl Connection {
    pub(crate) fn new(config: &Config) -> Result<Self, crate::error::ConfigError> {
        let redacted_url = config.redacted_target();
        let server = open_server(config).map_err(|e| crate::error::ConfigError::InvalidUrl {
            url: redacted_url.clone(),
            reason: e.to_string(),
        })?;
        let shared = Arc::new(Shared {
            redacted_url,
            password: crate::config::url_password(&config.url).map(str::to_owned),
            incidents: Incidents::new(config.log_interval),
            server: Some(server),
            connect_timeout: config.connect_timeout,
            max_backoff: config.max_reconnect_backoff,
        });
        let connection = Connection {
            shared,
            placement: config.connection_placement,
            lanes: Default::default(),
            io_lane: OnceLock::new(),
            deadline: config.deadline,
            cluster: !config.cluster_urls.is_empty(),
            stop_supervisors: watch::channel(()).0,
        };
        // Start connecting now, where the first calls will most likely come
        // from, so that they find the connection ready. Built outside a
        // runtime, a cache connects only when a runtime calls.
        match (connection.placement, Handle::try_current()) {
            (ConnectionPlacement::PerRuntime, Ok(runtime)) if !is_io_runtime(&runtime) => {
                connection.runtime_lane(&runtime);
            }
            (ConnectionPlacement::PerRuntime, Err(_)) => {}
            // Built by the cache's own background work: that is where its
            // calls go.
            (ConnectionPlacement::PerRuntime, Ok(_)) | (ConnectionPlacement::IoThread, _) => {
                connection.io_lane();
            }
        }
        Ok(connection)
    }

    /// A connection that never connects: every call runs uncached.
    pub(crate) fn disabled(config: &Config) -> Self {
        let shared = Arc::new(Shared {
            redacted_url: redact_url(&config.url),
            password: None,
            incidents: Incidents::new(config.log_interval),
            server: None,
            connect_timeout: config.connect_timeout,
            max_backoff: config.max_reconnect_backoff,
        });
        Connection {
            shared,
            placement: ConnectionPlacement::IoThread,
            lanes: Default::default(),
            io_lane: OnceLock::from(Arc::new(Lane::new(State::Disabled))),
            deadline: config.deadline,
            cluster: false,
            stop_supervisors: watch::channel(()).0,
        }
    }

    /// Whether the calling runtime's connection is up right now. On a
    /// runtime that has no connection yet, this starts one (so that waiting
    /// for `is_connected` works); outside a runtime, whether any is up.
    pub(crate) fn is_connected(&self) -> bool {
        match self.asking_lane(true) {
            Asker::Runtime(lane) => lane.is_some_and(|lane| lane.is_up()),
            Asker::Outside => self.all_lanes().iter().any(|lane| lane.is_up()),
        }
    }

    /// Why the calling runtime's last connection attempt failed (outside a
    /// runtime: any lane's), if it is not connected.
    pub(crate) fn last_connect_error(&self) -> Option<String> {
        let lanes = match self.asking_lane(false) {
            Asker::Runtime(lane) => lane.into_iter().collect(),
            Asker::Outside => self.all_lanes(),
        };
        lanes
            .iter()
            .find_map(|lane| lock(&lane.last_connect_error).clone())
    }

    /// The lane the calling runtime's calls go through, as [`Connection::lane`]
    /// picks it; started if `start`, else only if it exists.
    fn asking_lane(&self, start: bool) -> Asker {
        let Ok(runtime) = Handle::try_current() else {
            return Asker::Outside;
        };
        let io_lane = || match start {
            true => Some(self.io_lane()),
            false => self.io_lane.get().cloned(),
        };
        if self.placement == ConnectionPlacement::IoThread || is_io_runtime(&runtime) {
            return Asker::Runtime(io_lane());
        }
        let lane = match start {
            true => Some(self.runtime_lane(&runtime)),
            false => read(&self.lanes).get(&runtime.id()).cloned(),
        };
        match lane {
            // Its runtime cannot drive it: its calls go to the I/O thread.
            Some(lane) if lane.is_abandoned() => Asker::Runtime(io_lane()),
            lane => Asker::Runtime(lane),
        }
    }

    fn all_lanes(&self) -> Vec<Arc<Lane>> {
        let lanes = read(&self.lanes);
        lanes.values().chain(self.io_lane.get()).cloned().collect()
    }

    /// The lane this call goes through.
    fn lane(&self) -> Arc<Lane> {
        if self.placement == ConnectionPlacement::PerRuntime
            && let Ok(runtime) = Handle::try_current()
            // The cache's own background tasks (lock releases, replayed
            // evictions) run on the I/O thread: they use its lane.
            && !is_io_runtime(&runtime)
        {
            let lane = self.runtime_lane(&runtime);
            if !lane.is_abandoned() {
                return lane;
            }
        }
        self.io_lane()
    }

    /// The calling runtime's lane, started on first use.
    fn runtime_lane(&self, runtime: &Handle) -> Arc<Lane> {
        let id = runtime.id();
        if let Some(lane) = read(&self.lanes).get(&id) {
            return lane.clone();
        }
        let lane = {
            let mut lanes = write(&self.lanes);
            if let Some(lane) = lanes.get(&id) {
                return lane.clone();
            }
            let lane = Arc::new(Lane::new(State::Connecting));
            lanes.insert(id, lane.clone());
            lane
        };
        // Spawned outside the lock: on a runtime that is shutting down, the
        // task is dropped at once, and its guard takes the lock to forget
        // the lane.
        let guard = LaneGuard {
            lane: lane.clone(),
            forget_from: Some((Arc::downgrade(&self.lanes), id)),
        };
        runtime.spawn(supervise(
            self.shared.clone(),
            guard,
            self.stop_supervisors.subscribe(),
        ));
        lane
    }

    /// The lane on the cache's I/O thread, started on first use.
    fn io_lane(&self) -> Arc<Lane> {
        self.io_lane
            .get_or_init(|| {
                if self.shared.server.is_none() {
                    return Arc::new(Lane::new(State::Disabled));
                }
                match io_runtime() {
                    Ok(io) => {
                        let lane = Arc::new(Lane::new(State::Connecting));
                        let guard = LaneGuard {
                            lane: lane.clone(),
                            forget_from: None,
                        };
                        io.spawn(supervise(
                            self.shared.clone(),
                            guard,
                            self.stop_supervisors.subscribe(),
                        ));
                        lane
                    }
                    Err(reason) => {
                        tracing::error!(
                            target: "cache_runtime",
                            "caching is disabled: cannot start the cache's I/O thread: {reason}"
                        );
                        Arc::new(Lane::new(State::Disabled))
                    }
                }
            })
            .clone()
    }

    /// Sends one command, within the deadline.
    ///
    /// Server errors (`WRONGTYPE`, `OOM`, …) leave the connection up; failures
    /// of the connection itself, and deadlines, take it down until the
    /// supervisor has reconnected.
    pub(crate) async fn send(&self, cmd: &Cmd) -> Result<Value, CacheError> {
        self.request(Request::One(cmd)).await
    }

    /// Sends a pipeline within one deadline; the replies come as an array.
    pub(crate) async fn send_pipeline(
        &self,
        pipeline: &Pipeline,
    ) -> Result<Vec<Value>, CacheError> {
        match self.request(Request::Many(pipeline)).await? {
            Value::Array(replies) => Ok(replies),
            other => Ok(vec![other]),
        }
    }

    async fn request(&self, request: Request<'_>) -> Result<Value, CacheError> {
        let lane = self.lane();
        let mut generation_used = None;
        let attempt = tokio::time::timeout(self.deadline, async {
            let (generation, mut connection) = lane.acquire().await?;
            generation_used = Some(generation);
            match request {
                Request::One(cmd) => connection.send(cmd).await,
                Request::Many(pipeline) => {
                    connection.send_pipeline(pipeline).await.map(Value::Array)
                }
            }
            .map_err(CacheError::Redis)
        })
        .await;
        // In a cluster, one failing node says nothing of the others, and
        // redis-rs reconnects to nodes itself: only the supervisor's health
        // check takes a cluster connection out of service.
        let breaker = if self.cluster { None } else { generation_used };
        match attempt {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(CacheError::Redis(error))) => {
                if let Some(generation) = breaker
                    && is_connection_failure(&error)
                {
                    lane.mark_down(generation);
                }
                Err(CacheError::Redis(error))
            }
            Ok(Err(other)) => Err(other),
            Err(_elapsed) => {
                // A stalled server, or a runtime too busy to read the reply:
                // stop sending until the connection answers again.
                if let Some(generation) = breaker {
                    lane.mark_suspect(generation);
                }
                Err(CacheError::Timeout(self.deadline))
            }
        }
    }

    /// Whether this is a Redis Cluster connection.
    pub(crate) fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// Sends `cmd` to one cluster node, within the deadline (for `SCAN`,
    /// which walks one node's keyspace).
    pub(crate) async fn send_to_node(
        &self,
        cmd: &Cmd,
        host: &str,
        port: u16,
    ) -> Result<Value, CacheError> {
        let lane = self.lane();
        tokio::time::timeout(self.deadline, async {
            let (_, connection) = lane.acquire().await?;
            let RedisConnection::Cluster(mut cluster) = connection else {
                return Err(CacheError::Unavailable);
            };
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.to_owned(),
                port,
            });
            cluster
                .route_command(cmd.clone(), route)
                .await
                .map_err(CacheError::Redis)
        })
        .await
        .unwrap_or(Err(CacheError::Timeout(self.deadline)))
    }
}

impl Lane {
    fn new(state: State) -> Self {
        Lane {
            abandoned: AtomicBool::new(matches!(state, State::Abandoned)),
            state: RwLock::new(state),
            settled: Notify::new(),
            wake_supervisor: Notify::new(),
            last_connect_error: Default::default(),
        }
    }

    fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
        self.set_state(State::Abandoned);
    }

    fn is_up(&self) -> bool {
        matches!(*self.read_state(), State::Up { .. })
    }

    fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }

    /// The current connection, waiting (within the caller's deadline) only
    /// while the first connection attempt is in flight.
    async fn acquire(&self) -> Result<(u64, RedisConnection), CacheError> {
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

    fn set_state(&self, state: State) {
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
    fn mark_down(&self, generation: u64) {
        if self.take_down(generation) {
            self.wake_supervisor.notify_one();
        }
    }

    /// Takes connection `generation` out of service (up or suspect), if it
    /// is still current; whether it did.
    fn take_down(&self, generation: u64) -> bool {
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
    fn mark_suspect(&self, generation: u64) {
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
    fn is_in_service(&self, generation: u64) -> bool {
        matches!(&*self.read_state(), State::Up { generation: current, .. } if *current == generation)
    }

    /// Whether connection `generation` is suspect.
    fn is_suspect(&self, generation: u64) -> bool {
        matches!(&*self.read_state(), State::Suspect { generation: current, .. } if *current == generation)
    }

    /// Puts suspect connection `generation` back in service; whether it did.
    fn restore(&self, generation: u64) -> bool {
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
struct LaneGuard {
    lane: Arc<Lane>,
    forget_from: Option<(Weak<Lanes>, tokio::runtime::Id)>,
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

impl Shared {
    /// `message` without the URL's password.
    pub(crate) fn scrub(&self, message: &str) -> String {
        match &self.password {
            Some(password) => message.replace(password.as_str(), "***"),
            None => message.to_owned(),
        }
    }
}

/// Errors that mean the connection itself is broken, not just this command.
fn is_connection_failure(error: &RedisError) -> bool {
    error.is_unrecoverable_error()
        || error.is_io_error()
        || error.is_connection_dropped()
        || error.is_timeout()
}

/// Drives one lane until its cache or its runtime goes away: connects, then
/// keeps reconnecting whenever the connection fails.
///
/// A panic on a runtime's lane (a runtime without an I/O driver panics at
/// the first connection attempt) abandons the lane for good, and its
/// runtime's calls go through the I/O thread's. A panic on the I/O thread's
/// lane, which has no fallback, restarts its supervisor after a pause.
async fn supervise(shared: Arc<Shared>, guard: LaneGuard, stop: watch::Receiver<()>) {
    let mut stopped = stop.clone();
    let on_io_thread = guard.forget_from.is_none();
    // Kept across restarts, so that a failure seen on a connection from
    // before a panic never takes down one made after it.
    let mut generation = 0u64;
    loop {
        let outcome = std::panic::AssertUnwindSafe(supervise_lane(
            &shared,
            &guard.lane,
            stop.clone(),
            &mut generation,
        ))
        .catch_unwind()
        .await;
        if outcome.is_ok() {
            return;
        }
        if !on_io_thread {
            guard.lane.abandon();
            tracing::error!(
                target: "cache_runtime",
                "the cache's connection task panicked on this Tokio runtime (does it have its I/O driver enabled?); its calls use the cache's own I/O thread instead"
            );
            // Keep the abandoned lane in the map while its runtime lives, so
            // that its calls go to the I/O thread rather than start (and
            // panic) again; the guard forgets it when the runtime or the
            // cache goes.
            let _ = stopped.changed().await;
            return;
        }
        guard.lane.set_state(State::Down);
        // Rate-limited: a panic that repeats would otherwise log every
        // restart.
        shared.incidents.warn(Incident::Connect, || {
            "the cache's connection task on its I/O thread panicked; calls run uncached until it has restarted and reconnected".to_owned()
        });
        tokio::select! {
            _ = stopped.changed() => return,
            _ = tokio::time::sleep(PANIC_RESTART_DELAY) => {}
        }
    }
}

/// How long the I/O thread's supervisor waits before it restarts after a
/// panic: long enough not to spin on a panic that repeats.
const PANIC_RESTART_DELAY: Duration = Duration::from_secs(1);

async fn supervise_lane(
    shared: &Shared,
    lane: &Lane,
    mut stop: watch::Receiver<()>,
    generation: &mut u64,
) {
    let Some(server) = &shared.server else {
        return;
    };
    // `changed` returns (an error) only when the sender drops with the cache.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    loop {
        let connect = connect_with_backoff(shared, lane, server);
        let mut connection = tokio::select! {
            _ = &mut stopped => return,
            connection = connect => connection,
        };
        *generation += 1;
        let generation = *generation;
        lane.set_state(State::Up {
            generation,
            connection: connection.clone(),
        });
        // Wait for a call to report a failure, and meanwhile check the idle
        // connection now and then, so that a server that died or restarted
        // while nobody called is reconnected to before the next call.
        loop {
            let answered = tokio::select! {
                _ = &mut stopped => return,
                _ = lane.wake_supervisor.notified() => {
                    if lane.is_in_service(generation) {
                        // A wake-up left over from a connection this one
                        // replaced: nothing to do.
                        continue;
                    }
                    if !lane.is_suspect(generation) {
                        break;
                    }
                    // A deadline passed: the server stalled, or the runtime
                    // was too busy to read its reply in time. Only the
                    // former needs a new connection.
                    let answered = tokio::select! {
                        _ = &mut stopped => return,
                        answered = answers_ping(&mut connection, shared.connect_timeout) => answered,
                    };
                    answered && lane.restore(generation)
                }
                _ = tokio::time::sleep(HEALTH_CHECK_INTERVAL) => {
                    tokio::select! {
                        _ = &mut stopped => return,
                        answered = answers_ping(&mut connection, shared.connect_timeout) => answered,
                    }
                }
            };
            if !answered {
                lane.take_down(generation);
                break;
            }
        }
    }
}

/// Tries to connect until it succeeds, backing off 0, 25, 50, 100 … ms
/// between attempts, capped at `max_backoff`.
async fn connect_with_backoff(shared: &Shared, lane: &Lane, server: &Server) -> RedisConnection {
    let mut backoff = Duration::ZERO;
    let mut failures = 0u64;
    loop {
        let attempt = connect(server, shared.connect_timeout)
            .await
            .map_err(|error| shared.scrub(&error.to_string()));
        *lock(&lane.last_connect_error) = attempt.as_ref().err().cloned();
        match attempt {
            Ok(connection) => {
                if failures > 0 {
                    shared.incidents.recovered(|| {
                        format!(
                            "connected to Redis at {} after {failures} failed attempt(s); caching resumes",
                            shared.redacted_url
                        )
                    });
                }
                return connection;
            }
            Err(error) => {
                failures += 1;
                lane.set_state(State::Down);
                shared.incidents.warn(Incident::Connect, || {
                    format!(
                        "cannot connect to Redis at {}: {error}; calls run uncached while it retries",
                        shared.redacted_url
                    )
                });
                backoff = next_backoff(backoff, shared.max_backoff);
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// How often the supervisor checks a connection that is up.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(1);

async fn answers_ping(connection: &mut RedisConnection, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, ping(connection)).await,
        Ok(Ok(()))
    )
}

/// Sends PING. Any answer counts, an error reply included: an ACL user may
/// be refused PING (it is in `@connection`), and the server still answered.
async fn ping(connection: &mut RedisConnection) -> redis::RedisResult<()> {
    match connection.send(&redis::cmd("PING")).await {
        Err(error) if !is_server_reply(&error) => Err(error),
        _ => Ok(()),
    }
}

/// Whether `error` is the server's answer (`-ERR …`, `-NOPERM …`), as
/// opposed to the connection failing or a reply that could not be read.
pub(crate) fn is_server_reply(error: &RedisError) -> bool {
    error.code().is_some()
}

fn next_backoff(previous: Duration, max: Duration) -> Duration {
    let next = if previous.is_zero() {
        Duration::from_millis(25)
    } else {
        previous * 2
    };
    next.min(max)
}

/// One connection attempt: connect (with handshake), then PING, so that a
/// server that accepts connections but does not answer (stopped with
/// `SIGSTOP`, or paused) is not taken for a working one.
async fn connect(
    server: &Server,
    connect_timeout: Duration,
) -> Result<RedisConnection, CacheError> {
    tokio::time::timeout(connect_timeout, async {
        let mut connection = match server {
            Server::Single(client, config) => RedisConnection::Single(
                client
                    .get_multiplexed_async_connection_with_config(config)
                    .await
                    .map_err(CacheError::Redis)?,
            ),
            Server::Cluster(client) => RedisConnection::Cluster(
                client
                    .get_async_connection()
                    .await
                    .map_err(CacheError::Redis)?,
            ),
        };
        ping(&mut connection).await.map_err(CacheError::Redis)?;
        Ok(connection)
    })
    .await
    .unwrap_or(Err(CacheError::Timeout(connect_timeout)))
}

/// A client for the local tier's invalidation subscription: the server, or
/// the first seed of a cluster (a cluster delivers PUBLISH to every node).
pub(crate) fn pubsub_client(config: &Config) -> Option<Client> {
    match config.cluster_urls.first() {
        None => open_client(config).ok(),
        Some(seed) => Client::open(seed.as_str()).ok(),
    }
}

/// What to connect to: a cluster if seed URLs are configured, else one server.
fn open_server(config: &Config) -> redis::RedisResult<Server> {
    if config.cluster_urls.is_empty() {
        let connection_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            // Each call applies its own deadline.
            .set_response_timeout(None);
        return Ok(Server::Single(open_client(config)?, connection_config));
    }
    if config
        .cluster_urls
        .iter()
        .any(|url| url.starts_with("rediss://"))
    {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    ClusterClient::builder(config.cluster_urls.iter().map(String::as_str))
        .connection_timeout(config.connect_timeout)
        .response_timeout(config.deadline)
        // Fail fast on a dead node: each call has its deadline anyway, and a
        // node's slots must fail open, not stall their callers.
        .retries(1)
        .min_retry_wait(10)
        .max_retry_wait(50)
        .build()
        .map(Server::Cluster)
}

/// The client for `config.url`. A `rediss://` URL uses rustls, with the
/// configured root CA if there is one and the system's roots otherwise.
fn open_client(config: &Config) -> redis::RedisResult<Client> {
    if !config.url.starts_with("rediss://") {
        return Client::open(config.url.as_str());
    }
    // rustls needs a process-wide crypto provider and panics at the first
    // TLS connection without one. Install ring's unless the application
    // already installed one (then this fails, harmlessly).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match &config.tls_root_ca {
        None => Client::open(config.url.as_str()),
        Some(pem) => Client::build_with_tls(
            config.url.as_str(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_millis(500);
        let mut backoff = Duration::ZERO;
        let mut seen = vec![];
        for _ in 0..7 {
            backoff = next_backoff(backoff, max);
            seen.push(backoff.as_millis());
        }
        assert_eq!(seen, [25, 50, 100, 200, 400, 500, 500]);
    }
}
