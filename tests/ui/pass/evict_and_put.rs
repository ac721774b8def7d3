//! `#[cache_evict]` on any return type, several keys and tags, `before`,
//! `propagate`; `#[cache_put]`; and the helpers derived from `#[redis_cached]`.

use cache_runtime::{Cache, CacheError, cache_evict, cache_put, redis_cached};

#[redis_cached(key = "user:{id}", ttl = 60, tag = "users", tag = "team:{team}")]
async fn get_user(db: &str, team: u32, id: u64) -> Option<String> {
    Some(format!("{db}{team}{id}"))
}

#[cache_evict(key = "user:{id}")]
async fn touch(id: u64) {
    let _ = id;
}

#[cache_evict(key = "user:{a}", key = "user:{b}", tag = "team:{team}", before = true)]
async fn merge(a: u64, b: u64, team: u32) -> u64 {
    a + b + u64::from(team)
}

#[derive(Debug)]
struct AppError;

impl From<CacheError> for AppError {
    fn from(_: CacheError) -> Self {
        AppError
    }
}

#[cache_evict(tag = "users", propagate = true)]
async fn import() -> Result<usize, AppError> {
    Ok(1)
}

#[cache_put(key = "user:{id}", ttl = 60, tag = "users")]
async fn save(id: u64, name: String) -> Result<String, String> {
    Ok(format!("{id}{name}"))
}

struct Repo {
    cache: Cache,
    tenant: String,
}

impl Repo {
    #[redis_cached(key = "t:{self.tenant}:{id}", cache = self.cache)]
    async fn item(&self, id: u64) -> u64 {
        id
    }

    // The invalidator of a default key needs no `self`.
    #[redis_cached(ttl = 5)]
    async fn by_default(&self, id: u64) -> u64 {
        id
    }
}

fn main() {
    drop(get_user("db", 1, 2));
    drop(get_user_invalidate(2));
    drop(get_user_refresh("db", 1, 2));
    drop(touch(1));
    drop(merge(1, 2, 3));
    drop(import());
    drop(save(1, "x".into()));
    let repo = Repo {
        cache: Cache::builder().build().unwrap(),
        tenant: "t".into(),
    };
    drop(repo.item_invalidate(1));
    drop(Repo::by_default_invalidate(1));
}
