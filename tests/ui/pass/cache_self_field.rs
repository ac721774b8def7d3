use cache_runtime::{Cache, redis_cached};

struct Service {
    cache: Cache,
    region: String,
    calls: u32,
}

impl Service {
    #[redis_cached(key = "price:{self.region}:{sku}", cache = self.cache)]
    async fn price(&self, sku: u32) -> u64 {
        u64::from(sku) + self.region.len() as u64
    }

    // The body may mutate `self` although the cache comes from it.
    #[redis_cached(key = "stock:{self.region}:{sku}", cache = self.cache)]
    async fn stock(&mut self, sku: u32) -> u32 {
        self.calls += 1;
        sku * 2
    }
}

fn build_only(service: &mut Service) {
    drop(service.price(7));
    drop(service.stock(7));
}

// Only type-checked: building a `Cache` would start its connection.
fn main() {}
