use cache_runtime::cache_evict;

#[cache_evict(before = true)]
async fn rename_user(id: u64) -> Result<(), String> {
    let _ = id;
    Ok(())
}

fn main() {
    drop(rename_user(1));
}
