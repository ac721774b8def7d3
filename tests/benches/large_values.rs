//! Large values: a Redis hit on the demo's list (100,000 users) and on one
//! user, in JSON and in the binary format, against a hand-written `GET` and
//! `serde_json` decode of the same value; and what each stores (`STRLEN`).
//!
//! Run: `cargo bench -p cache-tests --bench large_values`
//!
//! A real `redis-server` is started on a free port. The cases are timed in
//! interleaved rounds (one call of each case per round), so that a slow
//! moment of the machine falls on all of them alike; each row is the median
//! of its rounds, and the ratio is to the hand-written row's median.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cache_runtime::{Cache, redis_cached};
use cache_tests::RedisServer;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

/// The demo's row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: i64,
    username: String,
    email: String,
}

fn users(count: i64) -> Vec<User> {
    (1..=count)
        .map(|id| User {
            id,
            username: format!("user{id}"),
            email: format!("user{id}@example.com"),
        })
        .collect()
}

const LIST: i64 = 100_000;

#[redis_cached(key = "lv:list:json", ttl = 3600, format = "json", cache = cache)]
async fn list_json(cache: &Cache) -> Vec<User> {
    users(LIST)
}

#[redis_cached(key = "lv:list:binary", ttl = 3600, format = "binary", cache = cache)]
async fn list_binary(cache: &Cache) -> Vec<User> {
    users(LIST)
}

#[redis_cached(key = "lv:one:json", ttl = 3600, format = "json", cache = cache)]
async fn one_json(cache: &Cache) -> User {
    users(42).remove(41)
}

#[redis_cached(key = "lv:one:binary", ttl = 3600, format = "binary", cache = cache)]
async fn one_binary(cache: &Cache) -> User {
    users(42).remove(41)
}

/// What a hand-written cache does on a hit: `GET`, then `serde_json`.
async fn hand_written<T: serde::de::DeserializeOwned>(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
) -> T {
    let bytes: Vec<u8> = conn.get(key).await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[derive(Clone, Copy)]
enum Case {
    HandWritten,
    Json,
    Binary,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::HandWritten => "hand-written GET + serde_json (baseline)",
            Case::Json => "#[redis_cached(format = \"json\")]",
            Case::Binary => "#[redis_cached(format = \"binary\")]",
        }
    }
}

const CASES: [Case; 3] = [Case::HandWritten, Case::Json, Case::Binary];

async fn time_rounds(rounds: usize, mut call: impl AsyncFnMut(Case)) -> Vec<(Case, Duration)> {
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); CASES.len()];
    for _ in 0..rounds {
        for (index, case) in CASES.into_iter().enumerate() {
            let started = Instant::now();
            call(case).await;
            times[index].push(started.elapsed());
        }
    }
    CASES
        .into_iter()
        .zip(times)
        .map(|(case, mut times)| {
            times.sort();
            (case, times[times.len() / 2])
        })
        .collect()
}

fn print_table(title: &str, rows: &[(Case, Duration)], stored: [usize; 3], unit: &str) {
    println!("\n{title}");
    println!(
        "| case | median hit | ratio to hand-written | stored bytes (`STRLEN`) | share of JSON's |"
    );
    println!("|---|---:|---:|---:|---:|");
    let base = rows[0].1.as_secs_f64();
    for ((case, median), bytes) in rows.iter().zip(stored) {
        let time = match unit {
            "ms" => format!("{:.2} ms", median.as_secs_f64() * 1e3),
            _ => format!("{:.1} µs", median.as_secs_f64() * 1e6),
        };
        println!(
            "| {} | {time} | {:.2}× | {bytes} | {:.0}% |",
            case.label(),
            median.as_secs_f64() / base,
            100.0 * bytes as f64 / stored[0] as f64,
        );
    }
}

#[tokio::main]
async fn main() {
    let server = RedisServer::start();
    let cache = server.cache_builder().build().unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();

    // Warm every key; the hand-written ones hold plain serde_json.
    let list = users(LIST);
    let _: () = conn
        .set("lv:list:raw", serde_json::to_vec(&list).unwrap())
        .await
        .unwrap();
    let _: () = conn
        .set("lv:one:raw", serde_json::to_vec(&list[41]).unwrap())
        .await
        .unwrap();
    assert_eq!(list_json(&cache).await, list);
    assert_eq!(list_binary(&cache).await, list);
    one_json(&cache).await;
    one_binary(&cache).await;
    drop(list);

    let strlen = async |key: &str| -> usize { conn.clone().strlen(key).await.unwrap() };
    let list_stored = [
        strlen("lv:list:raw").await,
        strlen("lv:list:json").await,
        strlen("lv:list:binary").await,
    ];
    let one_stored = [
        strlen("lv:one:raw").await,
        strlen("lv:one:json").await,
        strlen("lv:one:binary").await,
    ];

    let list_rows = time_rounds(30, async |case| match case {
        Case::HandWritten => {
            black_box(hand_written::<Vec<User>>(&mut conn.clone(), "lv:list:raw").await);
        }
        Case::Json => {
            black_box(list_json(&cache).await);
        }
        Case::Binary => {
            black_box(list_binary(&cache).await);
        }
    })
    .await;
    let one_rows = time_rounds(20_000, async |case| match case {
        Case::HandWritten => {
            black_box(hand_written::<User>(&mut conn.clone(), "lv:one:raw").await);
        }
        Case::Json => {
            black_box(one_json(&cache).await);
        }
        Case::Binary => {
            black_box(one_binary(&cache).await);
        }
    })
    .await;

    print_table(
        "a Redis hit on the demo's list (100,000 users), median of 30 interleaved rounds",
        &list_rows,
        list_stored,
        "ms",
    );
    print_table(
        "a Redis hit on one user, median of 20,000 interleaved rounds",
        &one_rows,
        one_stored,
        "µs",
    );
}
