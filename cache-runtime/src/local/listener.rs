//! The local tier's listener: keeps the tier told of every change to its
//! keys in Redis, through `CLIENT TRACKING` on every master or, where Redis
//! refuses tracking, through the library's invalidation channel; and empties
//! the tier whenever it cannot be sure it heard everything.
//!
//! One session at a time, from connecting to its end:
//!
//! ```text
//! masters ─► tracking on each (RESP3, BCAST) ─► listening: drop what Redis reports
//!               │ refused                            PING every node, and in a cluster
//!               ▼                                    compare the masters, each interval
//!            the channel (RESP2 pub/sub) ───────► listening: drop what messages name
//! ```
//!
//! Whatever ends a session (a connection lost, a PING unanswered, the
//! masters changed) empties the tier and leaves it bypassed until the next
//! session is listening.

use std::sync::Weak;
use std::time::Duration;

use futures_util::StreamExt;
use redis::{ProtocolVersion, PushInfo, RedisError};
use tokio::sync::{mpsc, oneshot};

use super::tier::LocalTier;
use crate::connection::{Heard, Node, Nodes, NotTracking, Tracking, is_server_reply};
use crate::incident::Incident;

/// What the listener reaches, and how.
pub(super) struct Listener {
    pub(super) nodes: Nodes,
    /// The keys to track: the cache's key prefix (empty: every key).
    pub(super) key_prefix: String,
    /// The invalidation channel, for a server that refuses tracking.
    pub(super) channel: String,
    /// The longest a connection attempt or a PING may take.
    pub(super) timeout: Duration,
    pub(super) health_check_interval: Duration,
}

/// Why a session ended.
enum Ended {
    /// The tier is gone.
    LocalTierDropped,
    /// The server closed a connection.
    Closed,
    Failed(RedisError),
    /// Redis gave no answer in time: to a PING, or to a connection attempt.
    Silent(Duration),
    /// The cluster's masters are not those tracked any more.
    MastersChanged,
}

impl Listener {
    /// Listens until `stop` fires or the tier is dropped; after a session
    /// ends, starts the next one, backing off from 25 ms to 500 ms.
    pub(super) async fn run(self, tier: Weak<LocalTier>, mut stop: oneshot::Receiver<()>) {
        let mut backoff = Duration::from_millis(25);
        // Whether Redis refused tracking when last asked: said once, until it
        // accepts again.
        let mut tracking_refused = false;
        loop {
            let ended = tokio::select! {
                _ = &mut stop => return,
                ended = self.session(&tier, &mut tracking_refused) => ended,
            };
            let Some(strong) = tier.upgrade() else {
                return;
            };
            let was_listening = strong.is_listening();
            if was_listening {
                // A session that worked: the next attempt starts quickly.
                backoff = Duration::from_millis(25);
            }
            strong.set_listening(false);
            let why = match ended {
                Ended::LocalTierDropped => return,
                Ended::Closed => "the connection was closed".to_owned(),
                Ended::Failed(error) => self.nodes.scrub(&error.to_string()),
                Ended::Silent(timeout) => format!("Redis gave no answer within {timeout:?}"),
                Ended::MastersChanged => "the cluster's masters changed".to_owned(),
            };
            strong.incidents().warn(Incident::Listen, || {
                let state = if was_listening {
                    "lost"
                } else {
                    "cannot start"
                };
                format!(
                    "the local tier's invalidation stream: {state} ({why}); the local tier is emptied and bypassed until it listens again"
                )
            });
            drop(strong);
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    /// One session: tracking if Redis accepts it, else the channel.
    async fn session(&self, tier: &Weak<LocalTier>, tracking_refused: &mut bool) -> Ended {
        match self.start_tracking().await {
            Ok(session) => {
                if std::mem::take(tracking_refused)
                    && let Some(tier) = tier.upgrade()
                {
                    tier.incidents().recovered(|| {
                        "Redis tracks the local tier's keys again: every change reaches the local copies".to_owned()
                    });
                }
                session.listen(self, tier).await
            }
            Err(NotTracking::Refused(error)) => {
                if !std::mem::replace(tracking_refused, true) {
                    self.warn_tracking_refused(tier, &error);
                }
                self.listen_to_channel(tier).await
            }
            Err(NotTracking::Failed(error)) => Ended::Failed(error),
        }
    }

    /// Turns tracking on at every master; all of them, or none.
    async fn start_tracking(&self) -> Result<TrackingSession, NotTracking> {
        let masters = self
            .nodes
            .masters(self.timeout)
            .await
            .map_err(NotTracking::Failed)?;
        let (reports, received) = mpsc::unbounded_channel();
        let mut connections = Vec::with_capacity(masters.len());
        for node in &masters {
            let connection =
                Tracking::start(node, &self.key_prefix, reports.clone(), self.timeout).await?;
            connections.push(connection);
        }
        Ok(TrackingSession {
            masters: masters.iter().map(Node::address).collect(),
            connections,
            received,
        })
    }

    /// Logs, once until tracking is accepted again, that Redis refused it.
    fn warn_tracking_refused(&self, tier: &Weak<LocalTier>, error: &RedisError) {
        let Some(tier) = tier.upgrade() else {
            return;
        };
        tier.incidents().warn(Incident::Tracking, || {
            format!(
                "Redis refused to track the local tier's keys ({}): the tier hears only this library's invalidation messages on `{}`, so a change made by another program, an expiry or an eviction reaches a local copy only when the copy expires (`max_ttl` at most)",
                self.nodes.scrub(&error.to_string()),
                self.channel
            )
        });
    }

    /// The fallback session: the invalidation channel, on a RESP2 pub/sub
    /// connection (the server, or the first seed of a cluster).
    async fn listen_to_channel(&self, tier: &Weak<LocalTier>) -> Ended {
        let client = match self.nodes.channel_node().client(ProtocolVersion::RESP2) {
            Ok(client) => client,
            Err(error) => return Ended::Failed(error),
        };
        let subscribing = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            Ok(pubsub)
        };
        let pubsub = match tokio::time::timeout(self.timeout, subscribing).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(error)) => return Ended::Failed(error),
            Err(_) => return Ended::Silent(self.timeout),
        };
        if let Err(ended) = came_up(tier, || {
            format!("the invalidation channel `{}`", self.channel)
        }) {
            return ended;
        }
        let (mut sink, mut messages) = pubsub.split();
        let mut health_check = self.health_check();
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else {
                        return Ended::Closed;
                    };
                    let Some(tier) = tier.upgrade() else {
                        return Ended::LocalTierDropped;
                    };
                    if let Ok(text) = message.get_payload::<String>() {
                        tier.receive(&text);
                    }
                }
                _ = health_check.tick() => {
                    match tokio::time::timeout(self.timeout, sink.ping::<redis::Value>()).await {
                        // An error reply (PING refused to an ACL user) is an
                        // answer too.
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) if is_server_reply(&error) => {}
                        Ok(Err(error)) => return Ended::Failed(error),
                        Err(_) => return Ended::Silent(self.timeout),
                    }
                }
            }
        }
    }

    fn health_check(&self) -> tokio::time::Interval {
        let mut health_check = tokio::time::interval(self.health_check_interval);
        health_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        health_check.reset();
        health_check
    }
}

/// Tracking on at every master, and what they report.
struct TrackingSession {
    /// The masters' addresses, sorted: what a cluster's topology check
    /// compares.
    masters: Vec<String>,
    connections: Vec<Tracking>,
    /// Every connection's reports, and each one's end.
    received: mpsc::UnboundedReceiver<PushInfo>,
}

impl TrackingSession {
    async fn listen(mut self, listener: &Listener, tier: &Weak<LocalTier>) -> Ended {
        if let Err(ended) = came_up(tier, || {
            let keys = match listener.key_prefix.as_str() {
                "" => "every key".to_owned(),
                prefix => format!("the keys under `{prefix}`"),
            };
            format!("Redis tracks {keys} on {}", self.masters.join(", "))
        }) {
            return ended;
        }
        let mut health_check = listener.health_check();
        loop {
            tokio::select! {
                report = self.received.recv() => {
                    let Some(report) = report else {
                        return Ended::Closed;
                    };
                    let Some(tier) = tier.upgrade() else {
                        return Ended::LocalTierDropped;
                    };
                    match Heard::of(report) {
                        Heard::Keys(keys) => tier.changed(keys),
                        Heard::Everything => tier.changed_everything(),
                        Heard::Closed => return Ended::Closed,
                        Heard::Nothing => {}
                    }
                }
                _ = health_check.tick() => {
                    if let Err(ended) = self.check(listener).await {
                        return ended;
                    }
                }
            }
        }
    }

    /// Every node answers a PING; in a cluster, the masters are still those
    /// tracked.
    async fn check(&mut self, listener: &Listener) -> Result<(), Ended> {
        let timeout = listener.timeout;
        let pings = futures_util::future::join_all(self.connections.iter_mut().map(Tracking::ping));
        for answer in tokio::time::timeout(timeout, pings)
            .await
            .map_err(|_| Ended::Silent(timeout))?
        {
            answer.map_err(Ended::Failed)?;
        }
        if !listener.nodes.is_cluster() {
            return Ok(());
        }
        let masters = tokio::time::timeout(timeout, self.connections[0].masters())
            .await
            .map_err(|_| Ended::Silent(timeout))?
            .map_err(Ended::Failed)?;
        if masters
            .iter()
            .map(Node::address)
            .ne(self.masters.iter().cloned())
        {
            return Err(Ended::MastersChanged);
        }
        Ok(())
    }
}

/// The session is listening: the tier may be used again (emptied first, as
/// anything may have changed before), and says so if it was not.
fn came_up(tier: &Weak<LocalTier>, what: impl FnOnce() -> String) -> Result<(), Ended> {
    let tier = tier.upgrade().ok_or(Ended::LocalTierDropped)?;
    let was_listening = tier.is_listening();
    tier.set_listening(true);
    if !was_listening {
        tier.incidents()
            .recovered(|| format!("the local tier listens: {}", what()));
    }
    Ok(())
}
