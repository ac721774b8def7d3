//! The supported shapes behave, not just compile: methods with `self` fields
//! in the key, generics, the default key, and futures that can be spawned.

use std::fmt::Display;
use std::sync::Arc;

use cache_runtime::{Cache, redis_cached};
use cache_tests::{Calls, RedisServer};
use serde::Serialize;
use serde::de::DeserializeOwned;

struct Repo {
    cache: Cache,
    tenant: String,
    calls: Calls,
}

impl Repo {
    #[redis_cached(key = "tenant:{self.tenant}:item:{id}", ttl = 60, cache = self.cache)]
    async fn item(&self, id: u32) -> String {
        self.calls.bump();
        format!("{}/{id}", self.tenant)
    }

    /// No `key`: the type's path, the method's name, then each parameter.
    #[redis_cached(ttl = 60, cache = self.cache)]
    async fn defaulted(&self, id: u32, name: &str) -> String {
        self.calls.bump();
        format!("{name}{id}")
    }
}

#[tokio::test]
async fn methods_key_on_self_fields_they_name() {
    let server = RedisServer::start();
    let repo = |tenant: &str| Repo {
        cache: server.cache(),
        tenant: tenant.into(),
        calls: Calls::default(),
    };
    let (acme, globex) = (repo("acme"), repo("globex"));

    assert_eq!(acme.item(1).await, "acme/1");
    assert_eq!(globex.item(1).await, "globex/1");
    assert_eq!(acme.item(1).await, "acme/1");
    assert_eq!((acme.calls.get(), globex.calls.get()), (1, 1));
    assert_eq!(
        server.keys_matching("tenant:*"),
        ["tenant:acme:item:1", "tenant:globex:item:1"]
    );
}

#[tokio::test]
async fn the_default_key_is_the_path_and_every_parameter() {
    let server = RedisServer::start();
    let repo = Repo {
        cache: server.cache(),
        tenant: "t".into(),
        calls: Calls::default(),
    };
    assert_eq!(repo.defaulted(7, "a:b").await, "a:b7");
    assert_eq!(repo.defaulted(7, "a:b").await, "a:b7");
    assert_eq!(repo.calls.get(), 1);
    assert_eq!(server.keys(), ["shapes::Repo::defaulted:7:a%3Ab"]);
}

#[redis_cached(key = "generic:{id}", ttl = 60, cache = cache)]
async fn generic<T, Id>(cache: &Cache, calls: &Calls, id: Id, value: T) -> T
where
    T: Serialize + DeserializeOwned + Send,
    Id: Display + Send,
{
    calls.bump();
    value
}

#[tokio::test]
async fn generic_functions_store_each_instantiation_under_its_key() {
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();

    assert_eq!(generic(&cache, &calls, 1, vec![1u8]).await, [1]);
    assert_eq!(
        generic(&cache, &calls, "x", "text".to_owned()).await,
        "text"
    );
    assert_eq!(generic(&cache, &calls, 1, vec![9u8]).await, [1], "a hit");
    assert_eq!(calls.get(), 2);
}

#[redis_cached(key = "spawned:{id}", ttl = 60, cache = cache)]
async fn owned_args(cache: Arc<Cache>, calls: Arc<Calls>, id: u32) -> u32 {
    calls.bump();
    tokio::task::yield_now().await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rewritten_future_is_send_and_can_be_spawned() {
    let server = RedisServer::start();
    let cache = Arc::new(server.cache());
    let calls = Arc::new(Calls::default());

    let first = tokio::spawn(owned_args(cache.clone(), calls.clone(), 3));
    assert_eq!(first.await.unwrap(), 3);
    let second = tokio::spawn(owned_args(cache.clone(), calls.clone(), 3));
    assert_eq!(second.await.unwrap(), 3);
    assert_eq!(calls.get(), 1);
}
