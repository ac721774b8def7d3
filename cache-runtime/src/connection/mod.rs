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

mod lane;
#[cfg(feature = "local")]
mod listen;
mod server;
mod supervisor;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::{Cmd, Pipeline, Value};
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::config::{Config, ConnectionPlacement};
use crate::error::CacheError;
use crate::incident::Incidents;
use crate::io::{io_runtime, is_io_runtime};
use crate::redact::{redact_url, url_password};
use crate::status::ConnectionStatus;
use crate::sync::{lock, read, write};
use lane::{Lane, LaneGuard, Lanes, State};
#[cfg(feature = "local")]
pub(crate) use listen::{Heard, Node, Nodes, NotTracking, Tracking};
#[cfg(feature = "cluster")]
use server::RedisConnection;
pub(crate) use server::Shared;
#[cfg(feature = "local")]
pub(crate) use server::is_server_reply;
use server::{is_connection_failure, open_server};
use supervisor::supervise;

enum Request<'a> {
    One(&'a Cmd),
    Many(&'a Pipeline),
}

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
            password: url_password(&config.url).map(str::to_owned),
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
        self.status() == ConnectionStatus::Connected
    }

    /// Where the calling runtime's connection stands, started as
    /// [`Connection::is_connected`] starts it. Outside a runtime: connected
    /// if any lane is, else connecting if any lane is, else disconnected.
    pub(crate) fn status(&self) -> ConnectionStatus {
        match self.asking_lane(true) {
            Asker::Runtime(lane) => {
                lane.map_or(ConnectionStatus::Disconnected, |lane| lane.status())
            }
            Asker::Outside => {
                let statuses: Vec<ConnectionStatus> =
                    self.all_lanes().iter().map(|lane| lane.status()).collect();
                [ConnectionStatus::Connected, ConnectionStatus::Connecting]
                    .into_iter()
                    .find(|wanted| statuses.contains(wanted))
                    .unwrap_or(ConnectionStatus::Disconnected)
            }
        }
    }

    /// [`Connection::status`], once the calling runtime's first connection
    /// attempt has ended, or `limit` has passed. Outside a runtime, at once.
    pub(crate) async fn settled_status(&self, limit: Duration) -> ConnectionStatus {
        if let Asker::Runtime(Some(lane)) = self.asking_lane(true) {
            let _ = tokio::time::timeout(limit, lane.settled()).await;
        }
        self.status()
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
    #[cfg(feature = "cluster")]
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
            use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
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
