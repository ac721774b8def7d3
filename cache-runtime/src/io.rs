//! The cache's own Tokio runtime: one thread for the whole process, which
//! drives the connections placed on it and the cache's background work
//! (retries, lock releases, the local tier's listener), so that they
//! outlive the runtimes of their callers.

use std::sync::OnceLock;

use tokio::runtime::Handle;

static IO_RUNTIME: OnceLock<Result<Handle, String>> = OnceLock::new();

/// The I/O runtime, started on first use; why it could not start, if it
/// could not.
pub(crate) fn io_runtime() -> Result<&'static Handle, &'static str> {
    IO_RUNTIME
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name("cache-runtime-io".into())
                .spawn(move || runtime.block_on(std::future::pending::<()>()))
                .map_err(|e| e.to_string())?;
            Ok(handle)
        })
        .as_ref()
        .map_err(String::as_str)
}

/// Whether `runtime` is the I/O runtime (without starting it).
pub(crate) fn is_io_runtime(runtime: &Handle) -> bool {
    matches!(IO_RUNTIME.get(), Some(Ok(io)) if io.id() == runtime.id())
}
