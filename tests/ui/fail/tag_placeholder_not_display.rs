use cache_runtime::redis_cached;

struct Tenant;

#[redis_cached(key = "user:{id}", tag = "tenant:{tenant}")]
async fn get_user(tenant: &Tenant, id: u64) -> String {
    let _ = tenant;
    id.to_string()
}

fn main() {
    drop(get_user(&Tenant, 1));
}
