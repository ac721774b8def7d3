use cache_runtime::cache_evict;

struct AppError;

// `propagate` needs `AppError: From<cache_runtime::CacheError>`.
#[cache_evict(key = "user:{id}", propagate = true)]
async fn rename_user(id: u64) -> Result<(), AppError> {
    let _ = id;
    Ok(())
}

fn main() {
    drop(rename_user(1));
}
