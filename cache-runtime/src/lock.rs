//! The cross-process lock behind `lock = true`: `SET key#lock token NX PX
//! lease`, released by compare-and-delete so that only its owner can release
//! it. The lease expires on its own, so a crashed holder cannot keep it.

use std::sync::Arc;
use std::time::Duration;

use crate::error::CacheError;
use crate::random;
use crate::store::Store;

/// The lock key of an entry. `#` never appears in an escaped value.
fn lock_key(full_key: &str) -> String {
    format!("{full_key}#lock")
}

pub(crate) enum LockAttempt {
    Acquired(HeldLock),
    /// Another process holds it.
    Busy,
    /// Redis could not be asked: carry on without the lock.
    Failed,
}

/// A held lock. Released explicitly, or, if dropped first (panic,
/// cancellation), in the background on the cache's I/O runtime.
pub(crate) struct HeldLock {
    store: Arc<Store>,
    key: String,
    token: String,
    released: bool,
}

/// Tries once to take the lock of `full_key` for `lease`.
pub(crate) async fn try_lock(store: &Arc<Store>, full_key: &str, lease: Duration) -> LockAttempt {
    let key = lock_key(full_key);
    let token = random::token();
    let held = |key, token| HeldLock {
        store: store.clone(),
        key,
        token,
        released: false,
    };
    match store.set_if_absent(&key, &token, lease).await {
        Ok(true) => LockAttempt::Acquired(held(key, token)),
        Ok(false) => LockAttempt::Busy,
        // A server error (OOM…) means the SET did not happen.
        Err(CacheError::Redis(error))
            if matches!(
                error.kind(),
                redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
            ) =>
        {
            LockAttempt::Failed
        }
        // A deadline or a dropped connection leaves it unknown whether the
        // SET happened: if it did, the lock is ours, so release it by its
        // token (in the background, on drop) rather than let it block other
        // processes for a whole lease.
        Err(_) => {
            drop(held(key, token));
            LockAttempt::Failed
        }
    }
}

impl HeldLock {
    /// Releases the lock; if Redis cannot be reached, the drop retries in
    /// the background.
    pub(crate) async fn release(mut self) {
        self.released = self
            .store
            .delete_if_holds(&self.key, &self.token)
            .await
            .is_ok();
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.store
            .release_in_background(std::mem::take(&mut self.key), self.token.as_bytes());
    }
}
