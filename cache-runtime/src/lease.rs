//! Leases: what keeps a value read before an eviction from being stored
//! after it, in any process.
//!
//! A miss takes a lease on the entry's own key before it runs the body,
//! `SET key <marker> NX PX <lease>`, the marker being
//! [`codec::LEASE_PREFIX`] and a random token, and joins the key's tag sets
//! at once. Every eviction deletes the key (by key, tag or prefix), and the
//! lease with it. The store replaces the key only while it still holds the
//! marker, in one script ([`Store::replace_if_holds`]). So a store lands
//! only if no eviction reached the key between the lease and the store, and
//! the body ran after the lease was taken: a value the body read before an
//! eviction returned is never stored after it. Why this holds, and how it
//! composes with the rest, is in ARCHITECTURE.md ("Leases").
//!
//! The lease lives in the entry's key, so it needs no other slot in a
//! cluster. A reader that finds a marker treats it as a miss in progress.
//! While the body runs, the lease is extended every third of its length, so
//! a slow body keeps it; a crashed holder's lease expires after one length.
//! One background task per cache extends all its leases ([`Leases`]), so
//! that a miss pays for no task of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::codec::LEASE_PREFIX;
use crate::random;
use crate::store::Store;
use crate::sync::lock;

/// The leases one cache holds now, which its keeper extends.
#[derive(Default)]
pub(crate) struct Leases {
    held: Mutex<HashMap<u64, Held>>,
    next_id: AtomicU64,
    keeper: OnceLock<()>,
}

/// A lease the keeper extends: its key, its marker, the tag sets it joined
/// (kept from expiring while the body runs, so that a tag's eviction still
/// finds the lease), and when it was taken.
struct Held {
    key: String,
    marker: Vec<u8>,
    tags: Vec<String>,
    taken: Instant,
}

impl Leases {
    /// Registers a lease with the keeper, which starts with the first one.
    fn register(
        self: &Arc<Self>,
        store: &Arc<Store>,
        key: &str,
        marker: &[u8],
        tags: &[String],
        length: Duration,
    ) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let held = Held {
            key: key.to_owned(),
            marker: marker.to_vec(),
            tags: tags.to_vec(),
            taken: Instant::now(),
        };
        lock(&self.held).insert(id, held);
        self.keeper
            .get_or_init(|| keep(Arc::downgrade(self), Arc::downgrade(store), length));
        id
    }

    fn unregister(&self, id: u64) {
        lock(&self.held).remove(&id);
    }

    /// The leases held for a third of their length or longer: those whose
    /// body outlasts the keeper's first tick.
    fn due(&self, length: Duration) -> Vec<(String, Vec<u8>, Vec<String>)> {
        lock(&self.held)
            .values()
            .filter(|held| held.taken.elapsed() >= length / 3)
            .map(|held| (held.key.clone(), held.marker.clone(), held.tags.clone()))
            .collect()
    }
}

/// What became of an attempt to take a lease.
pub(crate) enum LeaseAttempt {
    Taken(Lease),
    /// The key holds something: another caller's lease, or an entry stored
    /// since the lookup. The body runs, and its result is not stored.
    Busy,
    /// Redis could not be asked. The body runs, and its result is not
    /// stored: a store that cannot be checked is skipped.
    Failed,
}

/// A held lease. Consumed by the store that replaces it; released
/// otherwise, in the background if dropped first (panic, cancellation).
pub(crate) struct Lease {
    store: Arc<Store>,
    leases: Arc<Leases>,
    id: u64,
    key: String,
    marker: Vec<u8>,
    done: bool,
}

/// Tries once to take the lease on `key`, whose entry joins `tags`: on an
/// absent key, or, with `replaces`, on one that still holds those bytes (an
/// entry that did not decode, which the store then overwrites; empty for a
/// key of another type).
pub(crate) async fn take(
    store: &Arc<Store>,
    leases: &Arc<Leases>,
    key: &str,
    tags: &[String],
    length: Duration,
    replaces: Option<&[u8]>,
) -> LeaseAttempt {
    let mut marker = LEASE_PREFIX.to_vec();
    marker.extend_from_slice(random::token().as_bytes());
    // The guard exists before the command is sent: if the caller is dropped
    // while it is on its way, the drop releases whatever it set.
    let mut lease = Lease {
        store: store.clone(),
        leases: leases.clone(),
        id: leases.register(store, key, &marker, tags, length),
        key: key.to_owned(),
        marker,
        done: false,
    };
    match store
        .take_lease(key, &lease.marker, length, tags, replaces)
        .await
    {
        Ok(true) => LeaseAttempt::Taken(lease),
        Ok(false) => {
            lease.done = true;
            LeaseAttempt::Busy
        }
        // A deadline, a dropped connection, or a tag set's command failing
        // after the SET: whether the lease was set is unknown, so the drop
        // releases it by its marker, in the background, rather than make
        // other callers skip their stores for a whole lease.
        Err(_) => LeaseAttempt::Failed,
    }
}

impl Lease {
    /// The marker the key holds while the lease stands.
    pub(crate) fn marker(&self) -> &[u8] {
        &self.marker
    }

    /// The store replaced the lease (or found it gone): nothing to release.
    pub(crate) fn consumed(mut self) {
        self.done = true;
    }

    /// Releases the lease when nothing is stored (an `Err`, a `None`, a value
    /// too large): other callers then miss, and store, at once. If Redis
    /// cannot be reached, the drop retries in the background.
    pub(crate) async fn release(mut self) {
        self.done = self
            .store
            .delete_if_holds(&self.key, &self.marker[..])
            .await
            .is_ok();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.leases.unregister(self.id);
        if self.done {
            return;
        }
        self.store
            .release_in_background(std::mem::take(&mut self.key), &self.marker);
    }
}

/// The keeper: every third of a lease's length, on the I/O runtime, extends
/// each lease held that long, so that a body slower than one length keeps
/// it. An extension finds the key holding something else once an eviction
/// deleted the lease, and does nothing; a failed one is tried again at the
/// next tick, and the lease expires if none succeeds. Ends with its cache.
fn keep(leases: Weak<Leases>, store: Weak<Store>, length: Duration) {
    let Ok(io) = crate::io::io_runtime() else {
        return;
    };
    io.spawn(async move {
        loop {
            tokio::time::sleep(length / 3).await;
            let (Some(leases), Some(store)) = (leases.upgrade(), store.upgrade()) else {
                return;
            };
            let due = leases.due(length);
            drop(leases);
            for (key, marker, tags) in due {
                if let Ok(true) = store.extend_if_holds(&key, &marker, length).await
                    && !tags.is_empty()
                {
                    let _ = store.join_tag_sets(&key, length, &tags).await;
                }
            }
        }
    });
}
