//! The store: every Redis command the runtime sends over its connections,
//! one typed method each (the connection applies the deadline). Nothing
//! above this module builds a command; the local tier's listener has
//! connections of its own, whose few commands (tracking, the channel, PING)
//! are in `connection/listen.rs`.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use crate::config::Config;
use crate::connection::Connection;
use crate::error::{CacheError, ConfigError};
use crate::incident::Incidents;
use crate::units::ttl_millis;

/// How many keys one `SCAN`/`SSCAN` step asks for.
const SCAN_BATCH: usize = 500;

/// Deletes the lock only if it still holds our token.
const RELEASE_LOCK: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// Replaces `KEYS[1]` with `ARGV[2]` (expiring in `ARGV[3]` ms) only while it
/// holds `ARGV[1]`: 1 if it did.
const REPLACE_IF_HOLDS: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 else return 0 end";

/// Sets `KEYS[1]` to the lease marker `ARGV[1]` (expiring in `ARGV[2]` ms)
/// only while it holds `ARGV[3]`, or is a key of another type (a `GET`
/// that fails): 1 if it did.
const LEASE_IF_HOLDS: &str = "local ok, current = pcall(redis.call, 'GET', KEYS[1]) if (not ok) or current == ARGV[3] then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 else return 0 end";

/// Unlinks `KEYS[2..]` and removes them from the tag set `KEYS[1]`, in one
/// step: a lease taken on one of those keys afterwards joins the set again,
/// and stays in it for the next eviction to find.
const UNLINK_MEMBERS: &str = "for i = 2, #KEYS do redis.call('UNLINK', KEYS[i]) redis.call('SREM', KEYS[1], KEYS[i]) end return #KEYS - 1";

/// Extends `KEYS[1]`'s expiry to `ARGV[2]` ms only while it holds `ARGV[1]`:
/// 1 if it did.
const EXTEND_IF_HOLDS: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";

/// A cache's Redis: its connection, and the commands sent over it.
pub(crate) struct Store {
    connection: Connection,
}

/// An entry read with its remaining TTL (for the local tier).
pub(crate) struct EntryWithTtl {
    pub(crate) bytes: Vec<u8>,
    /// How long the entry lives in Redis: `Duration::MAX` for an entry with
    /// no expiry (not written by this library), `None` if unknown.
    pub(crate) ttl: Option<Duration>,
}

impl Store {
    pub(crate) fn new(config: &Config) -> Result<Store, ConfigError> {
        Ok(Store {
            connection: Connection::new(config)?,
        })
    }

    /// A store that never connects: every call runs uncached.
    pub(crate) fn disabled(config: &Config) -> Store {
        Store {
            connection: Connection::disabled(config),
        }
    }

    pub(crate) fn connection(&self) -> &Connection {
        &self.connection
    }

    pub(crate) fn is_cluster(&self) -> bool {
        self.connection.is_cluster()
    }

    /// The rate-limited log of this cache's incidents.
    pub(crate) fn incidents(&self) -> &Incidents {
        &self.connection.shared.incidents
    }

    /// Where Redis is, as logs show it (password redacted).
    pub(crate) fn redacted_url(&self) -> &str {
        &self.connection.shared.redacted_url
    }

    /// An error's message without the URL's password.
    pub(crate) fn scrub(&self, error: &dyn std::fmt::Display) -> String {
        self.connection.shared.scrub(&error.to_string())
    }

    /// `GET key`. A key of another Redis type (a list, a hash…), or a reply
    /// that is not what GET answers (a confused proxy or server), reads as an
    /// entry that does not decode, which the next store overwrites.
    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let value = match self.connection.send(redis::cmd("GET").arg(key)).await {
            Ok(value) => value,
            Err(CacheError::Redis(error)) if error.code() == Some("WRONGTYPE") => {
                return Ok(Some(Vec::new()));
            }
            Err(error) => return Err(error),
        };
        Ok(match value {
            Value::BulkString(bytes) => Some(bytes),
            Value::Nil => None,
            _ => Some(Vec::new()),
        })
    }

    /// `GET key` and `PTTL key` in one round trip. `Ok(None)` for no entry;
    /// an empty entry for a key of another type, as [`Store::get`] reads it.
    pub(crate) async fn get_with_ttl(&self, key: &str) -> Result<Option<EntryWithTtl>, CacheError> {
        let mut pipeline = redis::pipe();
        pipeline.cmd("GET").arg(key).cmd("PTTL").arg(key);
        let mut replies = self.connection.send_pipeline(&pipeline).await?.into_iter();
        let (bytes, pttl) = match (replies.next(), replies.next()) {
            (Some(Value::BulkString(bytes)), Some(pttl)) => (bytes, pttl),
            // A key of another type: an entry that does not decode, as for
            // `get`, which the next store overwrites.
            (Some(Value::ServerError(error)), _) if error.code() == "WRONGTYPE" => {
                return Ok(Some(EntryWithTtl {
                    bytes: Vec::new(),
                    ttl: None,
                }));
            }
            _ => return Ok(None),
        };
        let ttl = match pttl {
            Value::Int(ms) if ms > 0 => Some(Duration::from_millis(ms.unsigned_abs())),
            Value::Int(-1) => Some(Duration::MAX),
            _ => None,
        };
        Ok(Some(EntryWithTtl { bytes, ttl }))
    }

    /// `SET key bytes PX ttl`: never without an expiry, never a zero one.
    pub(crate) async fn set(
        &self,
        key: &str,
        bytes: &[u8],
        ttl: Duration,
    ) -> Result<(), CacheError> {
        self.connection
            .send(&set_command(key, bytes, ttl_millis(ttl)))
            .await
            .map(drop)
    }

    /// [`Store::set`], plus, per tag set, `SADD` and an expiry no shorter
    /// than the entry's: `PEXPIRE … NX` gives a new set one, `PEXPIRE … GT`
    /// extends it.
    pub(crate) async fn set_tagged(
        &self,
        key: &str,
        bytes: &[u8],
        ttl: Duration,
        tags: &[String],
    ) -> Result<(), CacheError> {
        if tags.is_empty() {
            return self.set(key, bytes, ttl).await;
        }
        let ttl_ms = ttl_millis(ttl);
        if self.is_cluster() {
            // The entry and each tag set live in their own slots, and a
            // cluster pipeline must stay within one: one round trip each.
            self.set(key, bytes, ttl).await?;
            return self.join_tag_sets(key, ttl, tags).await;
        }
        let mut pipeline = redis::pipe();
        pipeline.add_command(set_command(key, bytes, ttl_ms));
        for tag in tags {
            tag_commands(&mut pipeline, key, tag, ttl_ms);
        }
        self.send_checked_pipeline(&pipeline).await
    }

    /// `UNLINK keys…`; how many existed. A cluster routes a multi-key
    /// `UNLINK` slot by slot.
    pub(crate) async fn unlink<K: redis::ToRedisArgs>(
        &self,
        keys: &[K],
    ) -> Result<u64, CacheError> {
        match self.connection.send(redis::cmd("UNLINK").arg(keys)).await? {
            Value::Int(n) => Ok(n.unsigned_abs()),
            _ => Ok(0),
        }
    }

    /// `PUBLISH channel message`.
    pub(crate) async fn publish(&self, channel: &str, message: &str) -> Result<(), CacheError> {
        self.connection
            .send(redis::cmd("PUBLISH").arg(channel).arg(message))
            .await
            .map(drop)
    }

    /// One `PUBLISH` per message, in one pipeline. Replies that are errors
    /// (refusals) are not failures: only the round trip can fail.
    pub(crate) async fn publish_all(
        &self,
        channel: &str,
        messages: &[String],
    ) -> Result<(), CacheError> {
        let mut pipeline = redis::pipe();
        for message in messages {
            pipeline.cmd("PUBLISH").arg(channel).arg(message);
        }
        self.connection.send_pipeline(&pipeline).await.map(drop)
    }

    /// `SET key token NX PX lease`: `Ok(true)` if it was set, `Ok(false)`
    /// if the key exists.
    pub(crate) async fn set_if_absent(
        &self,
        key: &str,
        token: &str,
        lease: Duration,
    ) -> Result<bool, CacheError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key)
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(ttl_millis(lease));
        Ok(matches!(self.connection.send(&cmd).await?, Value::Okay))
    }

    /// Takes a lease on an absent entry, `SET key marker NX PX lease`, or,
    /// with `replaces`, on an entry that still holds those bytes (one
    /// script); and adds the key to its tag sets as [`Store::set_tagged`]
    /// does, so that a tag's eviction removes the lease too. `Ok(true)` if
    /// the lease was taken; `Ok(false)` if the key holds something else
    /// (another lease, or an entry stored since the lookup).
    pub(crate) async fn take_lease(
        &self,
        key: &str,
        marker: &[u8],
        lease: Duration,
        tags: &[String],
        replaces: Option<&[u8]>,
    ) -> Result<bool, CacheError> {
        let lease_ms = ttl_millis(lease);
        let take = match replaces {
            None => {
                let mut set = redis::cmd("SET");
                set.arg(key).arg(marker).arg("NX").arg("PX").arg(lease_ms);
                set
            }
            Some(current) => {
                let mut script = redis::cmd("EVAL");
                script
                    .arg(LEASE_IF_HOLDS)
                    .arg(1)
                    .arg(key)
                    .arg(marker)
                    .arg(lease_ms)
                    .arg(current);
                script
            }
        };
        self.send_joining_tag_sets(take, key, lease, tags, |reply| {
            matches!(reply, Value::Okay | Value::Int(1))
        })
        .await
    }

    /// Stores an entry only while its key still holds `expected` (a lease's
    /// marker, or the stale entry a refresh replaces), in one script, and
    /// extends its tag sets' expiry to the entry's. `Ok(false)` if the key
    /// held something else or nothing: it was evicted, or the lease was lost.
    pub(crate) async fn replace_if_holds(
        &self,
        key: &str,
        expected: &[u8],
        bytes: &[u8],
        ttl: Duration,
        tags: &[String],
    ) -> Result<bool, CacheError> {
        let mut replace = redis::cmd("EVAL");
        replace
            .arg(REPLACE_IF_HOLDS)
            .arg(1)
            .arg(key)
            .arg(expected)
            .arg(bytes)
            .arg(ttl_millis(ttl));
        self.send_joining_tag_sets(replace, key, ttl, tags, |reply| {
            matches!(reply, Value::Int(1))
        })
        .await
    }

    /// Sends `command` (on `key`), and if its reply is `done`, adds `key` to
    /// each tag set with an expiry no shorter than `ttl`: in the same
    /// pipeline on a single server (the sets' commands are sent whatever the
    /// reply, harmlessly), one round trip each in a cluster, where every set
    /// lives in its own slot. Whether the reply was `done`.
    async fn send_joining_tag_sets(
        &self,
        command: redis::Cmd,
        key: &str,
        ttl: Duration,
        tags: &[String],
        done: fn(&Value) -> bool,
    ) -> Result<bool, CacheError> {
        if tags.is_empty() || self.is_cluster() {
            if !done(&self.connection.send(&command).await?) {
                return Ok(false);
            }
            self.join_tag_sets(key, ttl, tags).await?;
            return Ok(true);
        }
        let mut pipeline = redis::pipe();
        pipeline.add_command(command);
        for tag in tags {
            tag_commands(&mut pipeline, key, tag, ttl_millis(ttl));
        }
        let replies = self.connection.send_pipeline(&pipeline).await?;
        check_replies(&replies)?;
        Ok(replies.first().is_some_and(done))
    }

    /// Extends `key`'s expiry to `ttl` only while it holds `expected` (one
    /// script): `Ok(false)` once it holds something else.
    pub(crate) async fn extend_if_holds(
        &self,
        key: &str,
        expected: &[u8],
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(EXTEND_IF_HOLDS)
            .arg(1)
            .arg(key)
            .arg(expected)
            .arg(ttl_millis(ttl));
        Ok(matches!(self.connection.send(&cmd).await?, Value::Int(1)))
    }

    /// Adds `key` to each tag set, with an expiry no shorter than `ttl`, one
    /// round trip per set (in a cluster, each set lives in its own slot).
    pub(crate) async fn join_tag_sets(
        &self,
        key: &str,
        ttl: Duration,
        tags: &[String],
    ) -> Result<(), CacheError> {
        for tag in tags {
            let mut pipeline = redis::pipe();
            tag_commands(&mut pipeline, key, tag, ttl_millis(ttl));
            self.send_checked_pipeline(&pipeline).await?;
        }
        Ok(())
    }

    /// [`Store::delete_if_holds`] on the I/O runtime, retried while Redis is
    /// unreachable, for a lock or lease whose holder is gone (dropped by a
    /// panic or a cancellation). Not awaited by anyone: after the last try,
    /// the key's own expiry removes it.
    pub(crate) fn release_in_background(self: &Arc<Self>, key: String, token: &[u8]) {
        const RETRY_DELAYS: [Duration; 4] = [
            Duration::from_millis(100),
            Duration::from_millis(300),
            Duration::from_secs(1),
            Duration::ZERO,
        ];
        let (store, token) = (self.clone(), token.to_vec());
        if let Ok(io) = crate::io::io_runtime() {
            io.spawn(async move {
                for delay in RETRY_DELAYS {
                    if store.delete_if_holds(&key, &token[..]).await.is_ok() {
                        return;
                    }
                    tokio::time::sleep(delay).await;
                }
            });
        }
    }

    /// Deletes `key` only if it still holds `token` (one script).
    pub(crate) async fn delete_if_holds(
        &self,
        key: &str,
        token: impl redis::ToRedisArgs,
    ) -> Result<(), CacheError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RELEASE_LOCK).arg(1).arg(key).arg(token);
        self.connection.send(&cmd).await.map(drop)
    }

    /// Unlinks every member of a tag set in batches (`SSCAN`), each batch
    /// leaving the set as it goes. Returns how many members it had.
    ///
    /// Not the whole set at the end: a lease taken while the walk runs joins
    /// the set, and deleting the set would drop that membership, so that the
    /// next eviction of the tag would miss the lease, and its store (of what
    /// it read before that next write) would land. A set whose members have
    /// all left is deleted by Redis itself.
    pub(crate) async fn unlink_tag_set(&self, tag_key: &str) -> Result<u64, CacheError> {
        let mut cursor = 0u64;
        let mut evicted = 0u64;
        loop {
            let mut sscan = redis::cmd("SSCAN");
            sscan.arg(tag_key).arg(cursor).arg("COUNT").arg(SCAN_BATCH);
            let (next, members) = scan_reply(self.connection.send(&sscan).await?)?;
            if !members.is_empty() {
                evicted += members.len() as u64;
                self.unlink_members(tag_key, &members).await?;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok(evicted)
    }

    /// Unlinks a tag set's `members` and takes them out of the set.
    ///
    /// On one server, in one script ([`UNLINK_MEMBERS`]). In a cluster the
    /// members live in other slots than their set, so no script spans them:
    /// the memberships go first (`SREM`), then the keys (`UNLINK`), so that
    /// a lease taken in between, which joins the set again, is unlinked and
    /// keeps its membership; if the `UNLINK` fails, the memberships are put
    /// back, for the eviction's retry to find.
    async fn unlink_members(&self, tag_key: &str, members: &[Vec<u8>]) -> Result<(), CacheError> {
        if !self.is_cluster() {
            let mut script = redis::cmd("EVAL");
            script
                .arg(UNLINK_MEMBERS)
                .arg(members.len() + 1)
                .arg(tag_key)
                .arg(members);
            return self.connection.send(&script).await.map(drop);
        }
        self.connection
            .send(redis::cmd("SREM").arg(tag_key).arg(members))
            .await?;
        if let Err(error) = self.unlink(members).await {
            let _ = self
                .connection
                .send(redis::cmd("SADD").arg(tag_key).arg(members))
                .await;
            return Err(error);
        }
        Ok(())
    }

    /// Unlinks every key that starts with `full_prefix`, walking the
    /// keyspace with `SCAN MATCH` in batches: never `KEYS`, and never one
    /// command that blocks Redis for long. In a cluster, `SCAN` walks one
    /// node's keyspace, so every master's is walked. Returns how many keys
    /// it unlinked.
    pub(crate) async fn unlink_prefix(&self, full_prefix: &str) -> Result<u64, CacheError> {
        let pattern = format!("{}*", escape_glob(full_prefix));
        #[cfg(feature = "cluster")]
        if self.is_cluster() {
            let mut evicted = 0;
            for (host, port) in self.cluster_masters().await? {
                evicted += self.scan_and_unlink(&pattern, Some((&host, port))).await?;
            }
            return Ok(evicted);
        }
        self.scan_and_unlink(&pattern, None).await
    }

    /// `SCAN MATCH pattern` in batches, unlinking each batch; on one cluster
    /// node if `node` is given.
    async fn scan_and_unlink(
        &self,
        pattern: &str,
        node: Option<(&str, u16)>,
    ) -> Result<u64, CacheError> {
        let mut cursor = 0u64;
        let mut evicted = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH);
            let reply = match node {
                #[cfg(feature = "cluster")]
                Some((host, port)) => self.connection.send_to_node(&scan, host, port).await?,
                _ => self.connection.send(&scan).await?,
            };
            let (next, keys) = scan_reply(reply)?;
            if !keys.is_empty() {
                evicted += keys.len() as u64;
                self.unlink(&keys).await?;
            }
            cursor = next;
            if cursor == 0 {
                return Ok(evicted);
            }
        }
    }

    /// The masters of the cluster, as `(host, port)`, from `CLUSTER NODES`.
    #[cfg(feature = "cluster")]
    async fn cluster_masters(&self) -> Result<Vec<(String, u16)>, CacheError> {
        let reply = self
            .connection
            .send(redis::cmd("CLUSTER").arg("NODES"))
            .await?;
        let text = match reply {
            Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Value::VerbatimString { text, .. } => text,
            _ => return Err(CacheError::Unavailable),
        };
        Ok(text
            .lines()
            .filter_map(|line| {
                // <id> <host:port@bus[,hostname]> <flags> …
                let mut fields = line.split_whitespace();
                let address = fields.nth(1)?;
                let flags = fields.next()?;
                if !flags.split(',').any(|flag| flag == "master") || flags.contains("fail") {
                    return None;
                }
                let host_port = address.split(['@', ',']).next()?;
                let (host, port) = host_port.rsplit_once(':')?;
                Some((host.to_owned(), port.parse().ok()?))
            })
            .collect())
    }

    /// Sends a pipeline; a server error inside it, which comes back as a
    /// reply, becomes an error.
    async fn send_checked_pipeline(&self, pipeline: &redis::Pipeline) -> Result<(), CacheError> {
        check_replies(&self.connection.send_pipeline(pipeline).await?)
    }
}

/// The first server error among a pipeline's replies.
fn check_replies(replies: &[Value]) -> Result<(), CacheError> {
    for reply in replies {
        if let Value::ServerError(error) = reply {
            return Err(CacheError::Redis(error.clone().into()));
        }
    }
    Ok(())
}

/// `key`'s membership in tag set `tag`, with an expiry no shorter than
/// `ttl_ms`: `PEXPIRE … NX` gives a new set one, `PEXPIRE … GT` extends it.
fn tag_commands(pipeline: &mut redis::Pipeline, key: &str, tag: &str, ttl_ms: u64) {
    pipeline.cmd("SADD").arg(tag).arg(key);
    pipeline.cmd("PEXPIRE").arg(tag).arg(ttl_ms).arg("NX");
    pipeline.cmd("PEXPIRE").arg(tag).arg(ttl_ms).arg("GT");
}

/// `SET key value PX ttl_ms`, built in buffers of the right size: with
/// `redis::cmd("SET")`, the argument after a large value would grow the
/// command's buffer once more, copying the value into a buffer twice its size.
fn set_command(key: &str, bytes: &[u8], ttl_ms: u64) -> redis::Cmd {
    const U64_DIGITS: usize = 20;
    let data = "SET".len() + key.len() + bytes.len() + "PX".len() + U64_DIGITS;
    let mut cmd = redis::Cmd::with_capacity(5, data);
    cmd.arg("SET").arg(key).arg(bytes).arg("PX").arg(ttl_ms);
    cmd
}

/// `[cursor, [member, …]]`, as SCAN and SSCAN answer.
fn scan_reply(reply: Value) -> Result<(u64, Vec<Vec<u8>>), CacheError> {
    let unexpected = || {
        CacheError::Redis(redis::RedisError::from((
            redis::ErrorKind::Parse,
            "unexpected SCAN reply",
        )))
    };
    let Value::Array(mut parts) = reply else {
        return Err(unexpected());
    };
    if parts.len() != 2 {
        return Err(unexpected());
    }
    let members = match parts.pop() {
        Some(Value::Array(members)) => members
            .into_iter()
            .filter_map(|member| match member {
                Value::BulkString(bytes) => Some(bytes),
                _ => None,
            })
            .collect(),
        _ => return Err(unexpected()),
    };
    let cursor = match parts.pop() {
        Some(Value::BulkString(bytes)) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(unexpected)?,
        _ => return Err(unexpected()),
    };
    Ok((cursor, members))
}

/// `*`, `?`, `[`, `]` and `\` matched literally by SCAN MATCH.
fn escape_glob(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn scan_replies_are_parsed() {
        let reply = Value::Array(vec![
            Value::BulkString(b"17".to_vec()),
            Value::Array(vec![Value::BulkString(b"k1".to_vec())]),
        ]);
        assert_eq!(scan_reply(reply).unwrap(), (17, vec![b"k1".to_vec()]));
        assert!(scan_reply(Value::Nil).is_err());
    }
}
