//! The connection to Redis: one multiplexed connection, supervised.
//!
//! Why not redis-rs's `ConnectionManager`: it spawns its connection and its
//! reconnections on whichever Tokio runtime the caller happens to be on. When
//! that runtime ends (every `#[tokio::test]` has its own), the connection dies
//! with it, and its default retry policy stalls callers for seconds while the
//! server is down. Instead:
//!
//! - Connections are made on a small runtime of our own, on a dedicated
//!   thread that lives as long as the process, so the task that drives a
//!   connection never depends on a caller's runtime. Callers on any runtime
//!   talk to it through the connection's channel.
//! - A call never waits for a reconnection. After a connection-level failure
//!   (I/O error, closed connection, deadline passed) the connection is marked
//!   down and every call skips Redis at once, a circuit breaker, while a
//!   supervisor task reconnects with a capped exponential backoff, and puts
//!   the new connection in place when it answers PING.
//! - The very first calls wait, within the deadline, for the first connection
//!   attempt, so that a program's first call can already use the cache.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, Value};
use tokio::sync::{Notify, oneshot};

use crate::config::{Config, redact_url};
use crate::error::CacheError;
use crate::incident::{Incident, Incidents};

/// One connection: to a single server, or to a Redis Cluster (which
/// redis-rs routes by slot, following MOVED and ASK redirects).
#[derive(Clone)]
pub(crate) enum RedisConnection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl RedisConnection {
    async fn send(&mut self, cmd: &Cmd) -> redis::RedisResult<Value> {
        use redis::aio::ConnectionLike;
        match self {
            RedisConnection::Single(connection) => connection.send_packed_command(cmd).await,
            RedisConnection::Cluster(connection) => connection.req_packed_command(cmd).await,
        }
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
    /// Not connected; the supervisor is reconnecting.
    Down,
    /// The cache cannot work at all (bad URL, no I/O thread).
    Disabled,
}

pub(crate) struct Shared {
    state: RwLock<State>,
    /// Notified when the state leaves `Connecting`.
    settled: Notify,
    /// Notified when a call sees the connection fail.
    wake_supervisor: Notify,
    pub(crate) redacted_url: String,
    /// The URL's password, to scrub from error messages should a server or a
    /// library ever echo it.
    password: Option<String>,
    pub(crate) incidents: Incidents,
    /// Why the last connection attempt failed, while it is not connected.
    last_connect_error: std::sync::Mutex<Option<String>>,
}

/// Owns the supervisor: when the last `Cache` handle drops, so does this,
/// and the supervisor stops and closes the connection.
pub(crate) struct Connection {
    pub(crate) shared: Arc<Shared>,
    deadline: Duration,
    cluster: bool,
    _stop_supervisor: Option<oneshot::Sender<()>>,
}

impl Connection {
    pub(crate) fn new(config: &Config) -> Result<Self, crate::error::ConfigError> {
        let redacted_url = config.redacted_target();
        let server = open_server(config).map_err(|e| crate::error::ConfigError::InvalidUrl {
            url: redacted_url.clone(),
            reason: e.to_string(),
        })?;
        let shared = Arc::new(Shared {
            state: RwLock::new(State::Connecting),
            settled: Notify::new(),
            wake_supervisor: Notify::new(),
            redacted_url,
            password: crate::config::url_password(&config.url).map(str::to_owned),
            incidents: Incidents::new(config.log_interval),
            last_connect_error: Default::default(),
        });
        let runtime = match &config.connection_runtime {
            Some(current) => Ok(current),
            None => io_runtime(),
        };
        let stop = match runtime {
            Ok(io) => {
                let (stop_tx, stop_rx) = oneshot::channel();
                io.spawn(supervise(
                    shared.clone(),
                    server,
                    config.connect_timeout,
                    config.max_reconnect_backoff,
                    stop_rx,
                ));
                Some(stop_tx)
            }
            Err(reason) => {
                shared.set_state(State::Disabled);
                tracing::error!(
                    target: "cache_runtime",
                    "caching is disabled: cannot start the cache's I/O thread: {reason}"
                );
                None
            }
        };
        Ok(Connection {
            shared,
            deadline: config.deadline,
            cluster: !config.cluster_urls.is_empty(),
            _stop_supervisor: stop,
        })
    }

    /// A connection that never connects: every call runs uncached.
    pub(crate) fn disabled(config: &Config) -> Self {
        let shared = Arc::new(Shared {
            state: RwLock::new(State::Disabled),
            settled: Notify::new(),
            wake_supervisor: Notify::new(),
            redacted_url: redact_url(&config.url),
            password: None,
            incidents: Incidents::new(config.log_interval),
            last_connect_error: Default::default(),
        });
        Connection {
            shared,
            deadline: config.deadline,
            cluster: false,
            _stop_supervisor: None,
        }
    }

    /// Whether a connection is up right now.
    pub(crate) fn is_connected(&self) -> bool {
        matches!(*self.shared.read_state(), State::Up { .. })
    }

    /// Why the last connection attempt failed, if the cache is not connected.
    pub(crate) fn last_connect_error(&self) -> Option<String> {
        self.shared
            .last_connect_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
        let mut generation_used = None;
        let attempt = tokio::time::timeout(self.deadline, async {
            let (generation, mut connection) = self.acquire().await?;
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
                    self.shared.mark_down(generation);
                }
                Err(CacheError::Redis(error))
            }
            Ok(Err(other)) => Err(other),
            Err(_elapsed) => {
                // A stalled server: stop sending to it until it answers again.
                if let Some(generation) = breaker {
                    self.shared.mark_down(generation);
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
        tokio::time::timeout(self.deadline, async {
            let (_, connection) = self.acquire().await?;
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

    /// The current connection, waiting (within the caller's deadline) only
    /// while the first connection attempt is in flight.
    async fn acquire(&self) -> Result<(u64, RedisConnection), CacheError> {
        // The hot path: read the state, without registering as a waiter.
        if let Some(ready) = self.ready() {
            return ready;
        }
        loop {
            let settled = self.shared.settled.notified();
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
        match &*self.shared.read_state() {
            State::Up {
                generation,
                connection,
            } => Some(Ok((*generation, connection.clone()))),
            State::Down | State::Disabled => Some(Err(CacheError::Unavailable)),
            State::Connecting => None,
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

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-written
        // (every write is a single assignment), so poisoning is harmless.
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set_state(&self, state: State) {
        let was_connecting = {
            let mut guard = self
                .state
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let was_connecting = matches!(*guard, State::Connecting);
            *guard = state;
            was_connecting
        };
        if was_connecting {
            self.settled.notify_waiters();
        }
    }

    /// Takes connection `generation` out of service, if it is still current.
    fn mark_down(&self, generation: u64) {
        {
            let mut guard = self
                .state
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match &*guard {
                State::Up {
                    generation: current,
                    ..
                } if *current == generation => *guard = State::Down,
                _ => return,
            }
        }
        self.wake_supervisor.notify_one();
    }
}

/// Errors that mean the connection itself is broken, not just this command.
fn is_connection_failure(error: &RedisError) -> bool {
    error.is_unrecoverable_error()
        || error.is_io_error()
        || error.is_connection_dropped()
        || error.is_timeout()
}

/// Connects, then keeps reconnecting whenever the connection fails, until
/// the `Cache` is dropped.
async fn supervise(
    shared: Arc<Shared>,
    server: Server,
    connect_timeout: Duration,
    max_backoff: Duration,
    mut stop: oneshot::Receiver<()>,
) {
    let mut generation = 0u64;
    loop {
        let connect = connect_with_backoff(&shared, &server, connect_timeout, max_backoff);
        let mut connection = tokio::select! {
            _ = &mut stop => return,
            connection = connect => connection,
        };
        generation += 1;
        shared.set_state(State::Up {
            generation,
            connection: connection.clone(),
        });
        // Wait for a call to report a failure, and meanwhile check the idle
        // connection now and then, so that a server that died or restarted
        // while nobody called is reconnected to before the next call.
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = shared.wake_supervisor.notified() => break,
                _ = tokio::time::sleep(HEALTH_CHECK_INTERVAL) => {
                    if !answers_ping(&mut connection, connect_timeout).await {
                        shared.mark_down(generation);
                        break;
                    }
                }
            }
        }
    }
}

/// Tries to connect until it succeeds, backing off 0, 25, 50, 100 … ms
/// between attempts, capped at `max_backoff`.
async fn connect_with_backoff(
    shared: &Shared,
    server: &Server,
    connect_timeout: Duration,
    max_backoff: Duration,
) -> RedisConnection {
    let mut backoff = Duration::ZERO;
    let mut failures = 0u64;
    loop {
        let attempt = connect(server, connect_timeout)
            .await
            .map_err(|error| shared.scrub(&error.to_string()));
        *shared
            .last_connect_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = attempt.as_ref().err().cloned();
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
                shared.set_state(State::Down);
                shared.incidents.warn(Incident::Connect, || {
                    format!(
                        "cannot connect to Redis at {}: {error}; calls run uncached while it retries",
                        shared.redacted_url
                    )
                });
                backoff = next_backoff(backoff, max_backoff);
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// How often the supervisor checks a connection that is up.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(1);

async fn answers_ping(connection: &mut RedisConnection, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, connection.send(&redis::cmd("PING"))).await,
        Ok(Ok(_))
    )
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
        connection
            .send(&redis::cmd("PING"))
            .await
            .map_err(CacheError::Redis)?;
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

/// The runtime that drives every connection: one thread, for the whole
/// process, so that connections outlive the runtimes of their callers.
pub(crate) fn io_runtime() -> Result<&'static tokio::runtime::Handle, &'static str> {
    static IO: OnceLock<Result<tokio::runtime::Handle, String>> = OnceLock::new();
    IO.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("cache-runtime-io".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .map_err(|e| e.to_string())?;
        Ok(handle)
    })
    .as_ref()
    .map_err(String::as_str)
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
