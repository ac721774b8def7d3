//! Formats and compression through a real Redis: `format = "binary"`, the
//! builder's default format, compression of large values, entries of either
//! format read by either, and entries that are corrupt, truncated or claim a
//! huge size read as misses and overwritten.

mod support;

use cache_runtime::{Cache, Format, Outcome, redis_cached, track_outcome};
use cache_tests::{Calls, RedisServer};
use redis::Commands;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u32,
    name: String,
}

fn user_list(count: u32) -> Vec<User> {
    (0..count)
        .map(|id| User {
            id,
            name: format!("user{id}"),
        })
        .collect()
}

#[redis_cached(key = "users:{count}", format = "binary", cache = cache)]
async fn users_binary(cache: &Cache, calls: &Calls, count: u32) -> Vec<User> {
    calls.bump();
    user_list(count)
}

#[redis_cached(key = "users:{count}", format = "json", cache = cache)]
async fn users_json(cache: &Cache, calls: &Calls, count: u32) -> Vec<User> {
    calls.bump();
    user_list(count)
}

#[redis_cached(key = "users:{count}", cache = cache)]
async fn users_default(cache: &Cache, calls: &Calls, count: u32) -> Vec<User> {
    calls.bump();
    user_list(count)
}

fn raw(server: &RedisServer, key: &str) -> Vec<u8> {
    server.client().get(key).unwrap()
}

#[tokio::test]
async fn binary_values_round_trip_and_are_compact() {
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();

    assert_eq!(users_binary(&cache, &calls, 3).await, user_list(3));
    let (value, outcome) = track_outcome(users_binary(&cache, &calls, 3)).await;
    assert_eq!((value, outcome), (user_list(3), Some(Outcome::Hit)));
    let binary = raw(&server, "users:3");
    assert_eq!(binary[0], 0xB1, "a header, not JSON");
    let json = serde_json::to_vec(&user_list(3)).unwrap();
    assert!(binary.len() < json.len() / 2, "{} bytes", binary.len());
}

#[tokio::test]
async fn switching_format_is_not_a_flag_day() {
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();

    // Written in JSON, read by the binary function, and the other way.
    users_json(&cache, &calls, 4).await;
    let (value, outcome) = track_outcome(users_binary(&cache, &calls, 4)).await;
    assert_eq!((value, outcome), (user_list(4), Some(Outcome::Hit)));
    users_binary(&cache, &calls, 5).await;
    let (value, outcome) = track_outcome(users_json(&cache, &calls, 5)).await;
    assert_eq!((value, outcome), (user_list(5), Some(Outcome::Hit)));
    assert_eq!(calls.get(), 2);
}

#[tokio::test]
async fn the_builders_format_applies_to_functions_without_one() {
    let server = RedisServer::start();
    let cache = server
        .cache_builder()
        .format(Format::Binary)
        .build()
        .unwrap();
    let calls = Calls::default();

    users_default(&cache, &calls, 6).await;
    assert_eq!(raw(&server, "users:6")[0], 0xB1);
    users_json(&cache, &calls, 7).await;
    assert_eq!(raw(&server, "users:7")[0], b'{', "`format = \"json\"` wins");
}

#[tokio::test]
async fn large_values_are_compressed_in_either_format() {
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();
    let json_len = serde_json::to_vec(&user_list(5_000)).unwrap().len();

    users_json(&cache, &calls, 5_000).await;
    let compressed_json: usize = server.client().strlen("users:5000").unwrap();
    assert!(
        compressed_json * 3 < json_len,
        "{compressed_json} of {json_len}"
    );
    let (value, outcome) = track_outcome(users_binary(&cache, &calls, 5_000)).await;
    assert_eq!((value.len(), outcome), (5_000, Some(Outcome::Hit)));

    let _: () = server.client().del("users:5000").unwrap();
    users_binary(&cache, &calls, 5_000).await;
    let compressed_binary: usize = server.client().strlen("users:5000").unwrap();
    assert!(compressed_binary < compressed_json, "{compressed_binary}");
}

/// Entries that a bug, another program or a truncated write left behind.
#[tokio::test]
async fn corrupt_truncated_and_oversized_entries_are_misses_that_get_overwritten() {
    let server = RedisServer::start();
    let cache = server
        .cache_builder()
        .max_value_size(1 << 20)
        .build()
        .unwrap();
    let calls = Calls::default();
    users_binary(&cache, &calls, 2_000).await;
    let good = raw(&server, "users:2000");
    assert_eq!(good[3], 1, "compressed");

    let truncated = good[..good.len() / 2].to_vec();
    let mut garbage = good.clone();
    for byte in &mut garbage[20..] {
        *byte = byte.wrapping_mul(31).wrapping_add(7);
    }
    // A small entry whose header claims 4 GiB of value: refused by its claim,
    // before anything is allocated.
    let mut bomb = good[..5].to_vec();
    bomb.extend_from_slice(&u32::MAX.to_le_bytes());
    bomb.extend_from_slice(&[0xff; 64]);

    for (what, bytes) in [
        ("truncated", truncated),
        ("garbage", garbage),
        ("bomb", bomb),
    ] {
        let _: () = server.client().set("users:2000", &bytes).unwrap();
        let runs = calls.get();
        let (value, outcome) = track_outcome(users_binary(&cache, &calls, 2_000)).await;
        assert_eq!(value.len(), 2_000, "{what}");
        assert_eq!(outcome, Some(Outcome::Miss), "{what}");
        assert_eq!(calls.get(), runs + 1, "{what}");
        assert_eq!(raw(&server, "users:2000"), good, "{what}: overwritten");
    }
}

/// Serde types that a format without a schema cannot read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Loose {
    Number(u32),
    Text(String),
}

#[redis_cached(key = "loose:{id}", format = "binary", cache = cache)]
async fn loose(cache: &Cache, calls: &Calls, id: u32) -> Loose {
    calls.bump();
    Loose::Text(id.to_string())
}

#[tokio::test]
async fn a_type_the_binary_format_cannot_hold_is_returned_counted_and_not_stored() {
    support::install();
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();

    for _ in 0..2 {
        assert_eq!(loose(&cache, &calls, 1).await, Loose::Text("1".into()));
    }
    assert_eq!(calls.get(), 2, "never a wrong value: not stored at all");
    assert!(!server.exists("loose:1"));
    assert_eq!(support::of("formats::loose").errors, 2);
}
