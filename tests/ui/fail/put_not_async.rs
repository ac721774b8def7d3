use cache_runtime::cache_put;

#[cache_put(key = "user:{id}", ttl = 60)]
fn save_user(id: u64) -> String {
    id.to_string()
}

fn main() {
    drop(save_user(1));
}
