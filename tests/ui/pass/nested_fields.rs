use cache_runtime::redis_cached;

struct Address {
    city: String,
}

struct User {
    id: u64,
    address: Address,
}

#[redis_cached(key = "weather:{user.address.city}:{user.id}")]
async fn weather(user: &User) -> String {
    format!("sunny in {}", user.address.city)
}

fn main() {
    let user = User {
        id: 1,
        address: Address {
            city: "Paris".into(),
        },
    };
    drop(weather(&user));
}
