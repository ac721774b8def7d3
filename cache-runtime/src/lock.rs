//! The cross-process lock behind `lock = true`: `SET key#lock token NX PX
//! lease`, released by compare-and-delete so that only its owner can release
//! it. The lease expires on its own, so a crashed holder cannot keep it.

use std::time::Duration;

use crate::cache::Cache;
use crate::error::CacheError;
use crate::random;

/// Deletes the lock only if it still holds our token.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// The lock key of an entry. `#` never appears in an escaped value.
pub(crate) fn lock_key(full_key: &str) -> String {
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
    cache: Cache,
    key: String,
    token: String,
    released: bool,
}

impl Cache {
    pub(crate) async fn try_lock(&self, full_key: &str, lease: Duration) -> LockAttempt {
        let key = lock_key(full_key);
        let token = random::token();
        let lease_ms = crate::units::ttl_millis(lease);
        let mut cmd = redis::cmd("SET");
        cmd.arg(&key).arg(&token).arg("NX").arg("PX").arg(lease_ms);
        let held = |released| HeldLock {
            cache: self.clone(),
            key,
            token,
            released,
        };
        match self.send(&cmd).await {
            Ok(redis::Value::Okay) => LockAttempt::Acquired(held(false)),
            Ok(_) => LockAttempt::Busy,
            // A server error (OOM…) means the SET did not happen.
            Err(CacheError::Redis(error))
                if matches!(
                    error.kind(),
                    redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
                ) =>
            {
                LockAttempt::Failed
            }
            // A deadline or a dropped connection leaves it unknown whether
            // the SET happened: if it did, the lock is ours, so release it
            // by its token (in the background, on drop) rather than let it
            // block other processes for a whole lease.
            Err(_) => {
                drop(held(false));
                LockAttempt::Failed
            }
        }
    }
}

impl HeldLock {
    /// Releases the lock; if Redis cannot be reached, the drop retries in
    /// the background.
    pub(crate) async fn release(mut self) {
        self.released = release(&self.cache, &self.key, &self.token).await;
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (cache, key, token) = (
            self.cache.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
        // Not awaited by anyone: if Redis is unreachable, the lease expires.
        if let Ok(io) = crate::io::io_runtime() {
            io.spawn(async move { release_in_background(&cache, &key, &token).await });
        }
    }
}

/// One compare-and-delete; whether Redis answered it.
async fn release(cache: &Cache, key: &str, token: &str) -> bool {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(RELEASE).arg(1).arg(key).arg(token);
    cache.send(&cmd).await.is_ok()
}

/// [`release`], retried while Redis is unreachable: run in the background
/// for locks whose holder is gone. After the last try the lease expires it.
async fn release_in_background(cache: &Cache, key: &str, token: &str) {
    for delay in RELEASE_RETRY_DELAYS {
        if release(cache, key, token).await {
            return;
        }
        tokio::time::sleep(delay).await;
    }
}

const RELEASE_RETRY_DELAYS: [Duration; 4] = [
    Duration::from_millis(100),
    Duration::from_millis(300),
    Duration::from_secs(1),
    Duration::ZERO,
];
