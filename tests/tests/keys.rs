//! Keys: readable, escaped so that different arguments never share a key,
//! and shortened by hashing (never truncation) when too long.

use cache_runtime::{Cache, redis_cached};
use cache_tests::{Calls, RedisServer, current_thread_runtime};
use proptest::prelude::*;

/// Returns its own arguments: if two argument tuples shared a key, the second
/// call would return the first call's arguments.
#[redis_cached(key = "k:{a}:{b}", ttl = 60, cache = cache)]
async fn echo(cache: &Cache, a: &str, b: &str) -> (String, String) {
    (a.to_owned(), b.to_owned())
}

#[tokio::test]
async fn values_that_contain_the_delimiter_do_not_collide() {
    let server = RedisServer::start();
    let cache = server.cache();

    assert_eq!(echo(&cache, "x:y", "z").await, ("x:y".into(), "z".into()));
    assert_eq!(echo(&cache, "x", "y:z").await, ("x".into(), "y:z".into()));
    assert_eq!(server.keys(), ["k:x%3Ay:z", "k:x:y%3Az"]);
}

#[tokio::test]
async fn special_characters_are_escaped() {
    let server = RedisServer::start();
    let cache = server.cache();
    let tricky = [
        "%", "%25", "{", "}", "{tag}", "*", "?", "[a]", "\n", " ", "", "é", "\0",
    ];
    for (i, a) in tricky.iter().enumerate() {
        assert_eq!(echo(&cache, a, "b").await.0, *a, "value #{i}");
    }
    for (i, a) in tricky.iter().enumerate() {
        assert_eq!(echo(&cache, a, "b").await.0, *a, "hit #{i}");
    }
    let keys = server.keys();
    assert_eq!(keys.len(), tricky.len(), "one key per value: {keys:?}");
    for key in &keys {
        assert!(
            key.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.%:".contains(&b)),
            "{key:?} holds an unescaped byte"
        );
    }
    assert!(
        keys.contains(&"k:%7Btag%7D:b".to_owned()),
        "no hash tag: {keys:?}"
    );
    assert!(
        keys.contains(&"k::b".to_owned()),
        "the empty string: {keys:?}"
    );
}

#[tokio::test]
async fn every_byte_value_gets_its_own_key() {
    let server = RedisServer::start();
    let cache = server.cache();
    for byte in 0..=255u8 {
        let a = String::from_utf8_lossy(&[byte]).into_owned();
        let a = if byte < 128 {
            a
        } else {
            char::from(byte).to_string()
        };
        assert_eq!(echo(&cache, &a, "").await.0, a);
    }
    // 128 ASCII characters plus 128 distinct two-byte characters.
    assert_eq!(server.keys().len(), 256);
}

#[redis_cached(key = "long:{a}", ttl = 60, cache = cache)]
async fn long(cache: &Cache, calls: &Calls, a: &str) -> usize {
    calls.bump();
    a.len()
}

#[tokio::test]
async fn long_keys_are_hashed_not_truncated() {
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();
    let base = "x".repeat(100_000);
    let (one, two) = (format!("{base}1"), format!("{base}2"));

    assert_eq!(long(&cache, &calls, &one).await, 100_001);
    assert_eq!(long(&cache, &calls, &two).await, 100_001);
    assert_eq!(
        calls.get(),
        2,
        "values differing only past the limit do not collide"
    );
    long(&cache, &calls, &one).await;
    assert_eq!(calls.get(), 2, "a long key is still a hit");

    let keys = server.keys();
    assert_eq!(keys.len(), 2);
    for key in keys {
        assert_eq!(key.len(), cache_runtime::defaults::MAX_KEY_LEN);
        assert!(
            key.starts_with("long:xxxx"),
            "the head stays readable: {key}"
        );
        let (_, hash) = key.rsplit_once('#').expect("hash suffix");
        assert_eq!(hash.len(), 64, "SHA-256 hex");
    }
}

#[tokio::test]
async fn huge_and_empty_arguments_work() {
    let server = RedisServer::start();
    let cache = server.cache();
    let huge = "%:{}".repeat(1 << 18); // 1 MiB, every byte escaped
    assert_eq!(echo(&cache, &huge, "").await.0.len(), huge.len());
    assert_eq!(echo(&cache, "", &huge).await.1.len(), huge.len());
    assert_eq!(echo(&cache, "", "").await, (String::new(), String::new()));
    assert_eq!(server.keys().len(), 3);
}

/// For any two different argument tuples, the second call returns its own
/// arguments: their keys differ. One server for all cases (starting one per
/// case would dominate), killed when the test ends.
#[test]
fn different_arguments_never_share_a_key() {
    use proptest::test_runner::{Config, TestRunner};

    let server = RedisServer::start();
    let cache = server.cache();
    let runtime = current_thread_runtime();
    let strategy = (".{0,8}", ".{0,8}", "[:%a-b{}*]{0,4}", "[:%a-b{}*]{0,4}");
    let mut runner = TestRunner::new(Config::with_cases(200));
    runner
        .run(&strategy, |(a, b, c, d)| {
            prop_assume!((&a, &b) != (&c, &d));
            let (first, second) = runtime.block_on(async {
                let _: () = redis::cmd("FLUSHDB").query(&mut server.client()).unwrap();
                (echo(&cache, &a, &b).await, echo(&cache, &c, &d).await)
            });
            prop_assert_eq!(first, (a, b));
            prop_assert_eq!(second, (c, d));
            Ok(())
        })
        .unwrap();
}
