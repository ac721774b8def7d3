use cache_runtime::redis_cached;

#[redis_cached]
async fn sum((a, b): (i32, i32)) -> i32 {
    a + b
}

fn main() {
    drop(sum((1, 2)));
}
