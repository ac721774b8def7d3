//! The announcer: tells every process's local tier, through a Redis pub/sub
//! channel, that a key, a prefix or everything changed in Redis, and owes
//! (and sends again in the background) what may not have gone out. Only
//! tiers that Redis refuses tracking listen to the channel; the others hear
//! of the change from Redis itself.

use std::sync::Arc;

use crate::change::{Change, channel};
use crate::error::CacheError;
use crate::incident::Incident;
use crate::retry::Round;
use crate::store::Store;

/// Sends this process's invalidation messages.
pub(crate) struct Announcer {
    store: Arc<Store>,
    channel: String,
    /// Who sends: a process ignores its own messages.
    sender: String,
    owed: Arc<OwedMessages>,
}

impl Announcer {
    pub(crate) fn new(store: Arc<Store>, key_prefix: &str) -> Announcer {
        Announcer {
            store,
            channel: channel(key_prefix),
            sender: crate::random::token(),
            owed: Arc::default(),
        }
    }

    /// Who this process's messages come from.
    #[cfg(feature = "local")]
    pub(crate) fn sender(&self) -> &str {
        &self.sender
    }

    /// Tells every other process's local tier that `change` happened in
    /// Redis.
    ///
    /// A message that may not have reached Redis (the connection failed, the
    /// deadline passed, or the server answered with a transient error such
    /// as `LOADING` or `CLUSTERDOWN`) is owed, and sent again in the
    /// background until Redis takes it. One Redis refuses (`NOPERM` for a
    /// user without the channel, `ERR`) is logged instead, since sending it
    /// again would not help: the local tiers of other processes that hear
    /// only the channel (Redis refused them tracking) then keep their copies
    /// until their TTL (`max_ttl` at most).
    pub(crate) async fn announce(&self, change: &Change) {
        let message = change.message(&self.sender);
        let store = &self.store;
        match store.publish(&self.channel, &message).await {
            Ok(()) => {}
            Err(CacheError::Redis(error)) if matches!(error.code(), Some("NOPERM" | "ERR")) => {
                store.incidents().warn(Incident::Announce, || {
                    format!(
                        "Redis refused an invalidation message on `{}`: {}; the local copies of other processes that Redis refuses tracking live until their TTL",
                        self.channel,
                        store.scrub(&error)
                    )
                });
            }
            Err(error) => {
                store.incidents().warn(Incident::Announce, || {
                    format!(
                        "an invalidation message on `{}` may not have reached Redis: {}; it is sent again in the background",
                        self.channel,
                        store.scrub(&error)
                    )
                });
                self.owe(message);
            }
        }
    }

    /// Owes an invalidation message, and makes sure a task sends the
    /// messages owed: one pipeline per round, until none is owed. Replies
    /// that are errors are refusals, as in [`Announcer::announce`]: not sent
    /// again.
    fn owe(&self, message: String) {
        if !self.owed.owe(message, Change::All.message(&self.sender)) {
            return;
        }
        let (store, channel, owed) = (self.store.clone(), self.channel.clone(), self.owed.clone());
        let send_owed = move || {
            let (store, channel, owed) = (store.clone(), channel.clone(), owed.clone());
            async move {
                let batch = owed.batch();
                if store.publish_all(&channel, &batch).await.is_err() {
                    return Round::Failed;
                }
                if !owed.sent(&batch) {
                    return Round::Progress;
                }
                store
                    .incidents()
                    .recovered(|| format!("owed invalidation messages on `{channel}` sent"));
                Round::Done
            }
        };
        if crate::retry::spawn_until_done(send_owed).is_err() {
            self.owed.stopped();
        }
    }
}

/// Invalidation messages that may not have reached Redis (their `PUBLISH`
/// failed, or missed its deadline), waiting to be sent again. Owing a
/// message does not stop this process from using Redis: Redis already holds
/// the change; only the other processes' local tiers are owed the news.
#[derive(Default)]
struct OwedMessages(std::sync::Mutex<Owed>);

#[derive(Default)]
struct Owed {
    /// In the order they were owed; sent again in that order.
    messages: Vec<String>,
    /// Whether a task is sending them.
    replaying: bool,
}

/// The most messages owed; past it, one message that drops every local copy
/// stands for them all.
const MAX_OWED: usize = 1_000;

impl OwedMessages {
    /// Owes `message`, or, past [`MAX_OWED`], `everything` instead of all
    /// the messages owed. Returns whether a task must start sending them.
    fn owe(&self, message: String, everything: String) -> bool {
        let mut owed = self.lock();
        owed.messages.push(message);
        if owed.messages.len() > MAX_OWED {
            owed.messages = vec![everything];
        }
        !std::mem::replace(&mut owed.replaying, true)
    }

    /// The messages to send now.
    fn batch(&self) -> Vec<String> {
        self.lock().messages.clone()
    }

    /// `batch` went out: forgets it. Returns whether nothing is owed any
    /// more, in which case the sending task ends (and the next message owed
    /// starts another).
    fn sent(&self, batch: &[String]) -> bool {
        let mut owed = self.lock();
        // Messages are only appended, unless too many were replaced by one
        // for everything, which has not gone out yet: then keep it. Never
        // forget a message by its text alone: the same text owed again after
        // the batch was read may be news the batch did not carry.
        if owed.messages.starts_with(batch) {
            owed.messages.drain(..batch.len());
        }
        let done = owed.messages.is_empty();
        if done {
            owed.replaying = false;
        }
        done
    }

    /// No task could be started: the next message owed tries again.
    fn stopped(&self) {
        self.lock().replaying = false;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Owed> {
        crate::sync::lock(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: usize) -> String {
        format!("k me key:{n}")
    }

    #[test]
    fn owed_messages_go_in_order_and_one_task_sends_them() {
        let owed = OwedMessages::default();
        assert!(
            owed.owe(message(1), "a me ".into()),
            "the first starts a task"
        );
        assert!(!owed.owe(message(2), "a me ".into()), "one task at a time");
        let batch = owed.batch();
        assert_eq!(batch, [message(1), message(2)]);
        // Owed again while the batch is on its way: it may be news the batch
        // did not carry, so it stays owed.
        owed.owe(message(1), "a me ".into());
        assert!(!owed.sent(&batch));
        assert_eq!(owed.batch(), [message(1)]);
        assert!(owed.sent(&[message(1)]), "nothing owed: the task ends");
        assert!(
            owed.owe(message(3), "a me ".into()),
            "the next starts a task"
        );
    }

    #[test]
    fn too_many_owed_messages_become_one_for_everything() {
        let owed = OwedMessages::default();
        for n in 0..=MAX_OWED {
            owed.owe(message(n), "a me ".into());
        }
        let batch = owed.batch();
        assert_eq!(batch, ["a me "]);
        // A batch read before the overflow is not what is owed any more.
        assert!(!owed.sent(&[message(0)]));
        assert!(owed.sent(&batch));
    }
}
