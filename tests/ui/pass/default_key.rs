use cache_runtime::redis_cached;

// Without `key`, the key is the function's path and every parameter.
#[redis_cached]
async fn sum(a: i32, b: i32) -> i32 {
    a + b
}

#[redis_cached(ttl = 30)]
async fn greet(name: &str) -> String {
    format!("Hello, {name}")
}

#[redis_cached]
async fn constant() -> u8 {
    42
}

struct Shop;

impl Shop {
    // In a method, the key starts with the type's name; `self` is not part of it.
    #[redis_cached]
    async fn price(&self, item: u32) -> u64 {
        u64::from(item) * 100
    }
}

fn main() {
    drop(sum(1, 2));
    drop(greet("Ada"));
    drop(constant());
    drop(Shop.price(3));
}
