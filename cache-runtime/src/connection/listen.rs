//! The connections the local tier listens on: the nodes to reach (the
//! server, or every master of a cluster as `CLUSTER SLOTS` tells), one
//! connection per node with `CLIENT TRACKING … BCAST` on, and what Redis
//! reports on it, read into [`Heard`]. These connections send only what
//! listening needs: `CLIENT TRACKING`, `CLUSTER SLOTS` and `PING` (and, for
//! the channel the tier falls back to, `SUBSCRIBE`).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo,
    ProtocolVersion, PushInfo, PushKind, RedisError, RedisResult, Value,
};
use tokio::sync::mpsc;

use super::server::{is_server_reply, open_client};
use crate::config::Config;

/// One node, reached with the configuration's credentials and TLS.
#[derive(Clone)]
pub(crate) struct Node(ConnectionInfo);

impl Node {
    /// `host:port` (or the socket's path), for logs and to tell nodes apart.
    pub(crate) fn address(&self) -> String {
        match self.0.addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                format!("{host}:{port}")
            }
            ConnectionAddr::Unix(path) => path.display().to_string(),
            other => format!("{other:?}"),
        }
    }

    /// A client for this node that speaks `protocol`.
    pub(crate) fn client(&self, protocol: ProtocolVersion) -> RedisResult<Client> {
        let settings = self.0.redis_settings().clone().set_protocol(protocol);
        Client::open(self.0.clone().set_redis_settings(settings))
    }

    /// The node at `host:port`, reached as this one is (user, password,
    /// database, TLS).
    fn at(&self, host: &str, port: u16) -> Node {
        let addr = match self.0.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.to_owned(), port),
        };
        Node(self.0.clone().set_addr(addr))
    }

    fn host(&self) -> &str {
        match self.0.addr() {
            ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => host,
            _ => "",
        }
    }

    /// The masters this node names in its answer to `CLUSTER SLOTS`.
    async fn ask_masters(&self) -> RedisResult<Vec<Node>> {
        let mut connection = self
            .client(ProtocolVersion::RESP2)?
            .get_multiplexed_async_connection()
            .await?;
        let reply = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut connection)
            .await?;
        self.masters_in(&reply)
    }

    /// The masters a `CLUSTER SLOTS` reply from this node names, sorted by
    /// address, each once. An empty host stands for this node's.
    fn masters_in(&self, reply: &Value) -> RedisResult<Vec<Node>> {
        let unexpected = || RedisError::from((ErrorKind::Parse, "unexpected CLUSTER SLOTS reply"));
        let Value::Array(ranges) = reply else {
            return Err(unexpected());
        };
        let mut masters = Vec::with_capacity(ranges.len());
        for range in ranges {
            let Value::Array(range) = range else {
                return Err(unexpected());
            };
            let Some(Value::Array(master)) = range.get(2) else {
                return Err(unexpected());
            };
            let host = match master.first() {
                Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
                Some(Value::SimpleString(host)) => host.clone(),
                _ => return Err(unexpected()),
            };
            let Some(port) = master.get(1).and_then(|port| match port {
                Value::Int(port) => u16::try_from(*port).ok(),
                _ => None,
            }) else {
                return Err(unexpected());
            };
            if host == "?" {
                return Err(RedisError::from((
                    ErrorKind::Client,
                    "a master's address is unknown to the cluster",
                )));
            }
            let host = if host.is_empty() { self.host() } else { &host };
            masters.push(self.at(host, port));
        }
        if masters.is_empty() {
            return Err(RedisError::from((
                ErrorKind::Client,
                "the cluster has no slot assigned",
            )));
        }
        masters.sort_by_key(Node::address);
        masters.dedup_by_key(|node| node.address());
        Ok(masters)
    }
}

/// The nodes the local tier listens to: the configured server, or the seeds
/// of a cluster, from which it learns the masters.
pub(crate) struct Nodes {
    seeds: Vec<Node>,
    cluster: bool,
}

impl Nodes {
    /// The nodes `config` names; `None` if none can be reached (a URL that
    /// does not parse).
    pub(crate) fn of(config: &Config) -> Option<Nodes> {
        if config.cluster_urls.is_empty() {
            let server = open_client(config).ok()?.get_connection_info().clone();
            return Some(Nodes {
                seeds: vec![Node(server)],
                cluster: false,
            });
        }
        let seeds: Vec<Node> = config
            .cluster_urls
            .iter()
            .filter_map(|url| url.as_str().into_connection_info().ok())
            .map(Node)
            .collect();
        (!seeds.is_empty()).then_some(Nodes {
            seeds,
            cluster: true,
        })
    }

    pub(crate) fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The node for the invalidation channel: the server, or the first seed
    /// (a cluster delivers `PUBLISH` to every node).
    pub(crate) fn channel_node(&self) -> &Node {
        &self.seeds[0]
    }

    /// The nodes that hold keys now: the server; or every master of the
    /// cluster, as the first seed that answers within `timeout` tells.
    pub(crate) async fn masters(&self, timeout: Duration) -> RedisResult<Vec<Node>> {
        if !self.cluster {
            return Ok(self.seeds.clone());
        }
        let mut last_error = None;
        for seed in &self.seeds {
            match tokio::time::timeout(timeout, seed.ask_masters()).await {
                Ok(Ok(masters)) => return Ok(masters),
                Ok(Err(error)) => last_error = Some(error),
                Err(_) => last_error = Some(timed_out(timeout)),
            }
        }
        Err(last_error.unwrap_or_else(|| timed_out(timeout)))
    }

    /// `text` without any of the nodes' passwords.
    pub(crate) fn scrub(&self, text: &str) -> String {
        self.seeds
            .iter()
            .filter_map(|seed| seed.0.redis_settings().password())
            .filter(|password| !password.is_empty())
            .fold(text.to_owned(), |text, password| {
                text.replace(password, "***")
            })
    }
}

fn timed_out(timeout: Duration) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer within {timeout:?}"),
    ))
}

/// What Redis reported on a tracking connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Heard {
    /// These keys changed (written, deleted, expired, evicted…).
    Keys(Vec<String>),
    /// Every key may have changed: a `FLUSHDB` or `FLUSHALL`, or a report
    /// this release cannot read.
    Everything,
    /// The connection closed.
    Closed,
    /// Nothing about keys (a push of another kind).
    Nothing,
}

impl Heard {
    pub(crate) fn of(push: PushInfo) -> Heard {
        match push.kind {
            PushKind::Invalidate => match push.data.into_iter().next() {
                // A key that is not UTF-8 is none of this library's (they
                // are Rust strings): nothing to drop for it.
                Some(Value::Array(keys)) => Heard::Keys(
                    keys.into_iter()
                        .filter_map(|key| redis::from_redis_value::<String>(key).ok())
                        .collect(),
                ),
                // `Nil` after a flush; anything else, to be safe.
                _ => Heard::Everything,
            },
            PushKind::Disconnection => Heard::Closed,
            _ => Heard::Nothing,
        }
    }
}

/// Why tracking could not start on a node.
pub(crate) enum NotTracking {
    /// The server refused it: too old for RESP3 or `CLIENT TRACKING`, or
    /// the user may not run `HELLO` or `CLIENT TRACKING`. Trying again
    /// will not help.
    Refused(RedisError),
    /// The connection failed, or did not answer in time.
    Failed(RedisError),
}

/// A connection to one node on which Redis reports every change to a key
/// under the tracked prefix, whoever made it.
pub(crate) struct Tracking {
    connection: MultiplexedConnection,
    node: Node,
}

impl Tracking {
    /// Connects to `node` (RESP3) and turns on `CLIENT TRACKING ON BCAST`
    /// for the keys under `prefix` (all keys if it is empty); what Redis
    /// then reports is pushed to `reports`, and so is the connection's end.
    /// Everything changed after this returns is reported.
    pub(crate) async fn start(
        node: &Node,
        prefix: &str,
        reports: mpsc::UnboundedSender<PushInfo>,
        timeout: Duration,
    ) -> Result<Tracking, NotTracking> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            // The whole attempt has its deadline, and each PING its own.
            .set_response_timeout(None)
            .set_push_sender(reports);
        let attempt = async {
            let mut connection = node
                .client(ProtocolVersion::RESP3)
                .map_err(NotTracking::Failed)?
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(not_tracking)?;
            let mut track = redis::cmd("CLIENT");
            track.arg("TRACKING").arg("ON").arg("BCAST");
            if !prefix.is_empty() {
                track.arg("PREFIX").arg(prefix);
            }
            track
                .query_async::<()>(&mut connection)
                .await
                .map_err(not_tracking)?;
            Ok(Tracking {
                connection,
                node: node.clone(),
            })
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or_else(|_| Err(NotTracking::Failed(timed_out(timeout))))
    }

    /// Sends PING. Any answer counts, an error reply included (an ACL user
    /// may be refused PING, and the server still answered).
    pub(crate) async fn ping(&mut self) -> RedisResult<()> {
        match redis::cmd("PING")
            .query_async::<Value>(&mut self.connection)
            .await
        {
            Err(error) if !is_server_reply(&error) => Err(error),
            _ => Ok(()),
        }
    }

    /// The cluster's masters, as this node tells now.
    pub(crate) async fn masters(&mut self) -> RedisResult<Vec<Node>> {
        let reply = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut self.connection)
            .await?;
        self.node.masters_in(&reply)
    }
}

/// Whether a failure to start tracking is the server's refusal.
fn not_tracking(error: RedisError) -> NotTracking {
    // redis-rs reads "unknown command `HELLO`" (before Redis 6) as this kind.
    let resp3_unknown = error.kind() == ErrorKind::RESP3NotSupported;
    // NOPERM: an ACL user without `HELLO` or `CLIENT TRACKING`; ERR: an
    // unknown command or subcommand.
    if resp3_unknown || matches!(error.code(), Some("NOPERM" | "ERR")) {
        NotTracking::Refused(error)
    } else {
        NotTracking::Failed(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn range(start: i64, end: i64, host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::Int(start),
            Value::Int(end),
            Value::Array(vec![bulk(host), Value::Int(port), bulk("node-id")]),
            // A replica: not listened to.
            Value::Array(vec![bulk("10.0.0.9"), Value::Int(7009), bulk("replica-id")]),
        ])
    }

    fn seed() -> Node {
        Node(
            "redis://user:pw@10.0.0.1:7000/0"
                .into_connection_info()
                .expect("a valid URL"),
        )
    }

    #[test]
    fn the_masters_are_read_from_cluster_slots_each_once_with_the_seeds_login() {
        let reply = Value::Array(vec![
            range(0, 5000, "10.0.0.2", 7001),
            range(5001, 10000, "", 7000),
            range(10001, 16383, "10.0.0.2", 7001),
        ]);
        let masters = seed().masters_in(&reply).expect("a valid reply");
        let addresses: Vec<String> = masters.iter().map(Node::address).collect();
        assert_eq!(addresses, ["10.0.0.1:7000", "10.0.0.2:7001"]);
        assert_eq!(masters[1].0.redis_settings().password(), Some("pw"));
    }

    #[test]
    fn an_unknown_master_address_or_no_slot_is_an_error() {
        let unknown = Value::Array(vec![range(0, 16383, "?", 7000)]);
        assert!(seed().masters_in(&unknown).is_err());
        assert!(seed().masters_in(&Value::Array(vec![])).is_err());
        assert!(seed().masters_in(&Value::Nil).is_err());
    }

    #[test]
    fn reports_are_read_into_keys_everything_or_the_end() {
        let push = |kind, data| PushInfo { kind, data };
        assert_eq!(
            Heard::of(push(
                PushKind::Invalidate,
                vec![Value::Array(vec![bulk("a"), bulk("b")])]
            )),
            Heard::Keys(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            Heard::of(push(PushKind::Invalidate, vec![Value::Nil])),
            Heard::Everything
        );
        assert_eq!(
            Heard::of(push(PushKind::Disconnection, vec![])),
            Heard::Closed
        );
        assert_eq!(
            Heard::of(push(PushKind::Message, vec![bulk("channel"), bulk("text")])),
            Heard::Nothing
        );
    }

    #[test]
    fn passwords_are_scrubbed() {
        let nodes = Nodes {
            seeds: vec![seed()],
            cluster: true,
        };
        assert_eq!(nodes.scrub("WRONGPASS pw"), "WRONGPASS ***");
    }
}
