use std::io;

use cache_runtime::redis_cached;

// A `Result` alias is recognised by its last path segment: only `Ok` is stored.
#[redis_cached(key = "file-size:{path}")]
async fn file_size(path: &str) -> io::Result<u64> {
    let metadata = std::fs::metadata(path)?;
    Ok(metadata.len())
}

fn main() {
    drop(file_size("/etc/hostname"));
}
