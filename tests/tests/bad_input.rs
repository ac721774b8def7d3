//! Values the cache cannot or should not store: larger than
//! `max_value_size`, or not serializable at run time. The call returns its
//! value every time; nothing is stored; the incident is counted. (Argument
//! values with every byte, empty and huge strings are in `keys.rs`; entries
//! of the wrong Redis type and deeply nested JSON in `undecodable.rs`.)

mod support;

use std::collections::HashMap;

use cache_runtime::{Cache, CacheError, redis_cached};
use cache_tests::{Calls, RedisServer};

#[redis_cached(key = "blob:{len}", ttl = 60, cache = cache)]
async fn blob(cache: &Cache, calls: &Calls, len: usize) -> String {
    calls.bump();
    "x".repeat(len)
}

#[tokio::test]
async fn a_value_over_max_value_size_is_returned_but_not_stored() {
    support::install();
    let server = RedisServer::start();
    let cache = server.cache_builder().max_value_size(1024).build().unwrap();
    let calls = Calls::default();

    assert_eq!(blob(&cache, &calls, 2000).await.len(), 2000);
    assert_eq!(blob(&cache, &calls, 2000).await.len(), 2000);
    assert_eq!(calls.get(), 2, "recomputed: it was not stored");
    assert!(!server.exists("blob:2000"));
    let metrics = support::of("bad_input::blob");
    assert_eq!(metrics.oversized, 2);

    blob(&cache, &calls, 10).await;
    blob(&cache, &calls, 10).await;
    assert_eq!(calls.get(), 3, "small values are still cached");

    let error = cache
        .set("big", &"y".repeat(4096), std::time::Duration::from_secs(5))
        .await;
    assert!(
        matches!(error, Err(CacheError::TooLarge { max: 1024, .. })),
        "{error:?}"
    );
}

/// serde_json refuses maps whose keys are not strings, at run time.
#[redis_cached(key = "pairs:{id}", ttl = 60, cache = cache)]
async fn pairs(cache: &Cache, calls: &Calls, id: u8) -> HashMap<(u8, u8), u8> {
    calls.bump();
    HashMap::from([((id, id), id)])
}

#[tokio::test]
async fn a_value_serde_cannot_serialize_is_returned_but_not_stored() {
    support::install();
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();

    assert_eq!(pairs(&cache, &calls, 1).await[&(1, 1)], 1);
    assert_eq!(pairs(&cache, &calls, 1).await[&(1, 1)], 1);
    assert_eq!(calls.get(), 2);
    assert!(!server.exists("pairs:1"));
    let metrics = support::of("bad_input::pairs");
    assert_eq!(metrics.errors, 2, "counted as errors");
    assert!(cache.is_connected(), "the connection is fine");
}
