//! Runs of the body that no caller waits for: the background refresh of a
//! stale entry (or, with `early_refresh`, of one near its end), and a body
//! that passed its `soft_timeout`, detached from its caller. Each stores
//! what it made through the same [`Leader`] steps as a miss.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;
use tracing::Instrument;

use super::run::{Entry, entry_of};
use super::start::{Leader, Run, start_refresh};
use super::{Detach, EntryKey};
use crate::change::Change;
use crate::engine::Engine;
use crate::flight::Joined;
use crate::metrics::CallSite;
use crate::shape::{Shape, StoreRules};

/// Starts the one background refresh of a stale key (or, with
/// `early_refresh`, of one near its end), read fresh until
/// `seen_fresh_until`, unless one is already running in this process (or,
/// with `lock`, in another).
pub(super) fn spawn_refresh<S, R, Fut>(
    engine: &Arc<Engine>,
    site: &'static CallSite,
    key: EntryKey,
    seen_fresh_until: u64,
    rules: StoreRules<S::Stored>,
    body: Fut,
) where
    S: Shape<R>,
    S::Stored: Send + 'static,
    R: Send + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    let Joined::Leader(flight) = engine.flights.join(&key.key) else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let engine = engine.clone();
    let span = tracing::debug_span!("redis_cached_refresh", function = site.name());
    // Generic over the body's type, so kept to the body: what comes before
    // and after it is compiled once.
    runtime.spawn(
        async move {
            let Some(leader) = start_refresh(&engine, site, &key, seen_fresh_until, flight).await
            else {
                return;
            };
            let started = Instant::now();
            let result = body.await;
            let entry = entry_of::<S, R>(&engine, site, &result, started.elapsed(), &rules);
            drop(result);
            finish_refresh(&engine, site, key, leader, entry).await;
        }
        .instrument(span),
    );
}

/// After a background refresh's body: stores its entry, and tells other
/// processes' local tiers.
async fn finish_refresh(
    engine: &Arc<Engine>,
    site: &'static CallSite,
    key: EntryKey,
    leader: Leader,
    entry: Entry,
) {
    let run = Run::detached(engine, site, &key);
    if leader.finish(&run, entry).await.is_some() {
        // Local copies elsewhere end with the old value's freshness anyway;
        // the message spares them clock skew between hosts.
        engine.announce(Change::Key(key.key)).await;
    }
}

/// Runs a miss's body, under `leader`, on after its caller stops waiting
/// (`soft_timeout`): sends the caller the result, then stores it, or, if
/// the body failed, shares the last good value with the flight.
pub(super) fn spawn_detached<S, R, Fut>(
    engine: &Arc<Engine>,
    site: &'static CallSite,
    key: &EntryKey,
    leader: Leader,
    rules: StoreRules<S::Stored>,
    body: Fut,
) -> Detach<R, Fut>
where
    S: Shape<R>,
    S::Stored: 'static,
    R: Send + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return Detach::Refused(leader, body);
    };
    let (sender, receiver) = oneshot::channel();
    let engine = engine.clone();
    let key = key.clone();
    let span = tracing::debug_span!("redis_cached_detached", function = site.name());
    runtime.spawn(
        async move {
            let started = Instant::now();
            let result = body.await;
            let entry = if S::failed(&result) {
                Entry::FailSafe
            } else {
                entry_of::<S, R>(&engine, site, &result, started.elapsed(), &rules)
            };
            // The caller may have stopped waiting.
            let _ = sender.send(result);
            let run = Run::detached(&engine, site, &key);
            match entry {
                Entry::FailSafe => {
                    leader.fail_safe(&run).await;
                }
                entry => {
                    leader.finish(&run, entry).await;
                }
            }
        }
        .instrument(span),
    );
    Detach::Running(receiver)
}

impl<'a> Run<'a> {
    /// A run of the body that no caller waits for: a background refresh, or
    /// a body detached at its `soft_timeout`. Its guard is already taken.
    fn detached(engine: &'a Arc<Engine>, site: &'static CallSite, key: &'a EntryKey) -> Run<'a> {
        Run {
            engine,
            site,
            key,
            redis_failed: false,
            undecodable: None,
            expired: None,
        }
    }
}
