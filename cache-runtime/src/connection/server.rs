//! What a connection connects to: the server or cluster a configuration
//! names (TLS included), and one connection attempt to it, checked with a
//! PING. The commands themselves are the store's.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
#[cfg(feature = "cluster")]
use redis::cluster::ClusterClient;
#[cfg(feature = "cluster")]
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, Value};

use crate::config::Config;
use crate::error::CacheError;
use crate::incident::Incidents;

/// One connection: to a single server, or to a Redis Cluster (which
/// redis-rs routes by slot, following MOVED and ASK redirects).
#[derive(Clone)]
pub(super) enum RedisConnection {
    Single(MultiplexedConnection),
    #[cfg(feature = "cluster")]
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// Sends one command. A server error (`OOM`, `NOPERM`, `WRONGTYPE`…)
    /// is an `Err`: redis-rs hands it back as an `Ok` reply, which every
    /// caller would otherwise take for success.
    pub(super) async fn send(&mut self, cmd: &Cmd) -> redis::RedisResult<Value> {
        #[cfg(feature = "cluster")]
        use redis::aio::ConnectionLike;
        match self {
            RedisConnection::Single(connection) => connection.send_packed_command(cmd).await,
            #[cfg(feature = "cluster")]
            RedisConnection::Cluster(connection) => connection.req_packed_command(cmd).await,
        }
        .and_then(Value::extract_error)
    }

    pub(super) async fn send_pipeline(
        &mut self,
        pipeline: &Pipeline,
    ) -> redis::RedisResult<Vec<Value>> {
        #[cfg(feature = "cluster")]
        use redis::aio::ConnectionLike;
        match self {
            RedisConnection::Single(connection) => {
                connection
                    .send_packed_commands(pipeline, 0, pipeline.len())
                    .await
            }
            #[cfg(feature = "cluster")]
            RedisConnection::Cluster(connection) => {
                connection
                    .req_packed_commands(pipeline, 0, pipeline.len())
                    .await
            }
        }
    }
}

/// Where to connect.
pub(super) enum Server {
    Single(Client, AsyncConnectionConfig),
    #[cfg(feature = "cluster")]
    Cluster(ClusterClient),
}

/// What every lane of a connection shares.
pub(crate) struct Shared {
    pub(crate) redacted_url: String,
    /// The URL's password, to scrub from error messages should a server or a
    /// library ever echo it.
    pub(super) password: Option<String>,
    pub(crate) incidents: Incidents,
    /// `None` for a connection that never connects.
    pub(super) server: Option<Server>,
    pub(super) connect_timeout: Duration,
    pub(super) max_backoff: Duration,
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
pub(super) fn is_connection_failure(error: &RedisError) -> bool {
    error.is_unrecoverable_error()
        || error.is_io_error()
        || error.is_connection_dropped()
        || error.is_timeout()
}

/// Sends PING. Any answer counts, an error reply included: an ACL user may
/// be refused PING (it is in `@connection`), and the server still answered.
pub(super) async fn ping(connection: &mut RedisConnection) -> redis::RedisResult<()> {
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

/// One connection attempt: connect (with handshake), then PING, so that a
/// server that accepts connections but does not answer (stopped with
/// `SIGSTOP`, or paused) is not taken for a working one.
pub(super) async fn connect(
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
            #[cfg(feature = "cluster")]
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

/// What to connect to: a cluster if seed URLs are configured, else one
/// server. (A configuration that needs a feature that is off never gets
/// here: the builder refuses it.)
pub(super) fn open_server(config: &Config) -> redis::RedisResult<Server> {
    #[cfg(feature = "cluster")]
    if !config.cluster_urls.is_empty() {
        return open_cluster(config);
    }
    let connection_config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        // Each call applies its own deadline.
        .set_response_timeout(None);
    Ok(Server::Single(open_client(config)?, connection_config))
}

#[cfg(feature = "cluster")]
fn open_cluster(config: &Config) -> redis::RedisResult<Server> {
    #[cfg(feature = "tls")]
    if config
        .cluster_urls
        .iter()
        .any(|url| url.starts_with("rediss://"))
    {
        install_tls_provider();
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
pub(super) fn open_client(config: &Config) -> redis::RedisResult<Client> {
    #[cfg(feature = "tls")]
    if config.url.starts_with("rediss://") {
        install_tls_provider();
        if let Some(pem) = &config.tls_root_ca {
            return Client::build_with_tls(
                config.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            );
        }
    }
    Client::open(config.url.as_str())
}

/// rustls needs a process-wide crypto provider and panics at the first TLS
/// connection without one. Installs ring's unless the application already
/// installed one (then this fails, harmlessly).
#[cfg(feature = "tls")]
fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
