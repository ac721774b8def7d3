//! A bad URL is a clear error from the builder; a bad `REDIS_URL` for the
//! default cache disables caching (logged once) and never fails a call.

use cache_runtime::{Cache, ConfigError, redis_cached};
use cache_tests::Calls;

#[redis_cached(key = "n:{n}", ttl = 60)]
async fn square(calls: &Calls, n: u64) -> u64 {
    calls.bump();
    n * n
}

#[tokio::test]
async fn a_bad_url_is_reported_clearly_and_a_bad_redis_url_disables_caching() {
    let error = Cache::builder()
        .url("redis://app:hunter2@[::1:6379")
        .build()
        .unwrap_err();
    let ConfigError::InvalidUrl { url, .. } = &error else {
        panic!("expected InvalidUrl, got {error:?}");
    };
    assert_eq!(url, "redis://app:***@[::1:6379");
    let message = error.to_string();
    assert!(
        message.starts_with("invalid Redis URL `redis://app:***@[::1:6379`: "),
        "{message}"
    );
    assert!(!message.contains("hunter2") && !format!("{error:?}").contains("hunter2"));

    let error = Cache::builder()
        .url("http://example.com")
        .build()
        .unwrap_err();
    assert!(matches!(error, ConfigError::InvalidUrl { .. }), "{error}");

    // SAFETY: single-test binary; nothing else reads the environment yet.
    unsafe { std::env::set_var("REDIS_URL", "not a url") };
    let calls = Calls::default();
    assert_eq!(square(&calls, 3).await, 9);
    assert_eq!(square(&calls, 3).await, 9);
    assert_eq!(calls.get(), 2, "every call ran uncached");
    assert!(!Cache::global().is_connected());
}
