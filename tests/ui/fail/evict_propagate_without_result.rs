use cache_runtime::cache_evict;

#[cache_evict(key = "user:{id}", propagate = true)]
async fn rename_user(id: u64) {
    let _ = id;
}

fn main() {
    drop(rename_user(1));
}
