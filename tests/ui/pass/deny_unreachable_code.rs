//! A crate that denies `unreachable_code`, even with `forbid`, which no inner
//! `allow` can lift, can use all three attributes, on free functions and on
//! methods, returning `Result` or not: the return-type pin in the moved body
//! is no unreachable code. The other `unused` lints stay quiet too.

#![forbid(unreachable_code)]
#![deny(unused)]

use cache_runtime::{CacheError, cache_evict, cache_put, redis_cached};

#[derive(Debug)]
struct AppError;

impl From<CacheError> for AppError {
    fn from(_: CacheError) -> Self {
        AppError
    }
}

#[redis_cached(key = "user:{id}", ttl = 60)]
async fn get_user(id: u64) -> Result<String, AppError> {
    if id == 0 {
        return Err(AppError);
    }
    Ok(id.to_string())
}

#[redis_cached(ttl = 60)]
async fn count(id: u64) -> u64 {
    id + 1
}

#[cache_put(key = "user:{id}", ttl = 60)]
async fn save(id: u64) -> Result<String, AppError> {
    Ok(id.to_string())
}

#[cache_evict(key = "user:{id}")]
async fn forget(id: u64) {
    let _ = id;
}

#[cache_evict(key = "user:{id}", propagate = true)]
async fn remove(id: u64) -> Result<(), AppError> {
    if id == 0 {
        return Err(AppError);
    }
    Ok(())
}

struct Repo {
    tenant: String,
}

impl Repo {
    #[redis_cached(key = "t:{self.tenant}:{id}", ttl = 60)]
    async fn name(&self, id: u64) -> Result<String, AppError> {
        Ok(format!("{}/{id}", self.tenant))
    }

    #[cache_put(key = "t:{self.tenant}:{id}")]
    async fn rename(&self, id: u64) -> Option<String> {
        Some(format!("{}/{id}", self.tenant))
    }

    #[cache_evict(key = "t:{self.tenant}:{id}")]
    async fn drop_name(&mut self, id: u64) -> Result<u64, AppError> {
        self.tenant.push('!');
        Ok(id)
    }
}

fn main() {
    drop(get_user(1));
    drop(get_user_invalidate(1));
    drop(get_user_refresh(1));
    drop(count(1));
    drop(save(1));
    drop(forget(1));
    drop(remove(1));
    let mut repo = Repo { tenant: "t".into() };
    drop(repo.name(1));
    drop(repo.rename(1));
    drop(repo.drop_name(1));
}
