//! Tokio runtimes built by hand, for tests that need more than one runtime
//! or must drive one from plain threads.

use tokio::runtime::Runtime;

/// A current-thread runtime with I/O and timers.
pub fn current_thread_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a current-thread runtime")
}

/// A runtime with one worker thread, so that its tasks run between calls.
pub fn one_worker_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("build a one-worker runtime")
}
