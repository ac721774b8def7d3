//! The local tier sees every change to a key in Redis, whoever or whatever
//! makes it: another program's `SET`, `DEL` or `EXPIRE`, an expiry, an
//! eviction by `maxmemory`, `FLUSHDB` and `FLUSHALL`. Redis reports each one
//! (`CLIENT TRACKING`), and the next call reads Redis. A user that Redis
//! refuses tracking falls back to the library's own invalidation messages.
//!
//! Each test polls for the change to be seen, up to [`SEEN_WITHIN`], and
//! prints how long it took (run with `--nocapture`).

use std::time::{Duration, Instant};

use cache_runtime::{Cache, LocalTierSettings, Outcome, redis_cached, track_outcome};
use cache_tests::{Calls, RedisServer, eventually};
use redis::Commands;

/// How long a change may take to reach a local copy here: the issue asks
/// for 250 ms on loopback, and this leaves room for a loaded machine. A
/// copy that nothing reports lives for `max_ttl` (60 s).
const SEEN_WITHIN: Duration = Duration::from_secs(1);

#[redis_cached(key = "seen:{id}", ttl = 60, local = true, cache = cache)]
async fn seen(cache: &Cache, calls: &Calls, id: u32) -> u32 {
    calls.bump();
    id
}

/// The key `seen(id)` is stored under.
fn key(id: u32) -> String {
    format!("app:seen:{id}")
}

/// An entry as the library stores it, holding `value`.
fn entry(value: u32) -> String {
    format!(r#"{{"v":1,"data":{value}}}"#)
}

/// A cache with a local tier, its keys under `app:`, on `url`.
fn cache_on(url: &str) -> Cache {
    Cache::builder()
        .url(url)
        .prefix("app")
        .deadline(Duration::from_secs(1))
        .local_tier(LocalTierSettings::new())
        .build()
        .unwrap()
}

/// Calls `seen(id)` until it is served from the local tier.
async fn serve_locally(cache: &Cache, calls: &Calls, id: u32) {
    let served = eventually(Duration::from_secs(5), || async {
        track_outcome(seen(cache, calls, id)).await.1 == Some(Outcome::Local)
    })
    .await;
    assert!(served.is_some(), "seen({id}) was never served locally");
}

/// Whether `condition` holds within [`SEEN_WITHIN`], asked every
/// millisecond; prints how long it took.
async fn seen_in_time<F, Fut>(what: &str, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < SEEN_WITHIN {
        if condition().await {
            println!("{what}: seen after {:?}", started.elapsed());
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!("{what}: not seen within {SEEN_WITHIN:?}");
    false
}

/// Whether the next calls of `seen(id)` run the body (the key is gone from
/// Redis) within [`SEEN_WITHIN`].
async fn runs_again(what: &str, cache: &Cache, calls: &Calls, id: u32) -> bool {
    let before = calls.get();
    seen_in_time(what, || async {
        seen(cache, calls, id).await;
        calls.get() > before
    })
    .await
}

#[tokio::test]
async fn another_programs_set_reaches_the_local_copy() {
    let server = RedisServer::start();
    let cache = cache_on(&server.url());
    let calls = Calls::default();
    serve_locally(&cache, &calls, 1).await;

    let _: () = server.client().set(key(1), entry(41)).unwrap();
    assert!(seen_in_time("SET", || async { seen(&cache, &calls, 1).await == 41 }).await);
}

#[tokio::test]
async fn another_programs_del_reaches_the_local_copy() {
    let server = RedisServer::start();
    let cache = cache_on(&server.url());
    let calls = Calls::default();
    serve_locally(&cache, &calls, 1).await;

    let _: () = server.client().del(key(1)).unwrap();
    assert!(runs_again("DEL", &cache, &calls, 1).await);
}

#[tokio::test]
async fn another_programs_expire_reaches_the_local_copy() {
    let server = RedisServer::start();
    let cache = cache_on(&server.url());
    let calls = Calls::default();
    // The copy was made when the entry had 60 s to live.
    serve_locally(&cache, &calls, 1).await;

    let _: () = server.client().pexpire(key(1), 200).unwrap();
    let expired = eventually(Duration::from_secs(5), || async { !server.exists(&key(1)) }).await;
    assert!(expired.is_some(), "the entry never expired");
    assert!(runs_again("EXPIRE, then expiry", &cache, &calls, 1).await);
}

#[redis_cached(key = "brief:{id}", ttl = "300ms", local = true, cache = cache)]
async fn brief(cache: &Cache, calls: &Calls, id: u32) -> u32 {
    calls.bump();
    id
}

/// The copy's own bound (the entry's `PTTL`, read with it) ends it at the
/// same time as Redis's expiry, with or without tracking; Redis reports the
/// expiry too.
#[tokio::test]
async fn an_expiry_reaches_the_local_copy() {
    let server = RedisServer::start();
    let cache = cache_on(&server.url());
    let calls = Calls::default();
    let served = eventually(Duration::from_secs(5), || async {
        track_outcome(brief(&cache, &calls, 1)).await.1 == Some(Outcome::Local)
    })
    .await;
    assert!(served.is_some(), "never served locally");

    let expired = eventually(Duration::from_secs(5), || async {
        !server.exists("app:brief:1")
    })
    .await;
    assert!(expired.is_some(), "the entry never expired");
    let before = calls.get();
    assert!(
        seen_in_time("expiry", || async {
            brief(&cache, &calls, 1).await;
            calls.get() > before
        })
        .await
    );
}

#[tokio::test]
async fn an_eviction_by_maxmemory_reaches_the_local_copy() {
    let server = RedisServer::start();
    let cache = cache_on(&server.url());
    let calls = Calls::default();
    serve_locally(&cache, &calls, 1).await;

    // Little room above what is used, and any key may go.
    let mut redis = server.client();
    let info: String = redis::cmd("INFO").arg("memory").query(&mut redis).unwrap();
    let used: u64 = info
        .lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|used| used.trim().parse().ok())
        .expect("used_memory in INFO");
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory-policy", "allkeys-random"][..])
        .query(&mut redis)
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory", &(used + (1 << 20)).to_string()][..])
        .query(&mut redis)
        .unwrap();
    // Fillers, outside the cache's prefix, until Redis evicts the entry.
    let filler = "x".repeat(1024);
    let mut written = 0;
    while server.exists(&key(1)) {
        assert!(written < 200_000, "Redis never evicted the entry");
        let mut fill = redis::pipe();
        for n in written..written + 200 {
            fill.set(format!("filler:{n}"), &filler).ignore();
        }
        let _: () = fill.query(&mut redis).unwrap();
        written += 200;
    }
    assert!(runs_again("eviction by maxmemory", &cache, &calls, 1).await);
}

#[tokio::test]
async fn flushdb_and_flushall_reach_every_local_copy() {
    let server = RedisServer::start();
    let cache = cache_on(&server.url());
    let calls = Calls::default();
    for flush in ["FLUSHDB", "FLUSHALL"] {
        for id in [1, 2] {
            serve_locally(&cache, &calls, id).await;
        }
        let _: () = redis::cmd(flush).query(&mut server.client()).unwrap();
        for id in [1, 2] {
            assert!(runs_again(flush, &cache, &calls, id).await, "{flush}, {id}");
        }
    }
}

/// Without a key prefix, Redis tracks every key.
#[tokio::test]
async fn without_a_prefix_every_key_is_tracked() {
    #[redis_cached(key = "bare:{id}", ttl = 60, local = true, cache = cache)]
    async fn bare(cache: &Cache, id: u32) -> u32 {
        id
    }
    let server = RedisServer::start();
    let cache = server
        .cache_builder()
        .local_tier(LocalTierSettings::new())
        .build()
        .unwrap();
    let served = eventually(Duration::from_secs(5), || async {
        track_outcome(bare(&cache, 1)).await.1 == Some(Outcome::Local)
    })
    .await;
    assert!(served.is_some(), "never served locally");

    let _: () = server.client().set("bare:1", entry(41)).unwrap();
    assert!(seen_in_time("SET, no prefix", || async { bare(&cache, 1).await == 41 }).await);
}

/// A user refused the invalidation channel (and PING): Redis still reports
/// every change to it.
#[tokio::test]
async fn a_user_refused_the_channel_still_hears_every_change() {
    let server = RedisServer::start();
    let cache = cache_on(&server.user_url("app", &["-ping", "resetchannels"]));
    let calls = Calls::default();
    serve_locally(&cache, &calls, 1).await;

    let _: () = server.client().set(key(1), entry(41)).unwrap();
    assert!(
        seen_in_time("SET, channel refused", || async {
            seen(&cache, &calls, 1).await == 41
        })
        .await
    );
}

/// A user refused `CLIENT TRACKING`: the tier hears this library's
/// invalidation messages only, as it did before tracking.
#[tokio::test]
async fn a_user_refused_tracking_falls_back_to_the_librarys_messages() {
    let server = RedisServer::start();
    let url = server.user_url("untracked", &["-client"]);
    hears_only_the_librarys_messages(&server, &url).await;
}

/// A server without RESP3's `HELLO`, as before Redis 6: the same fallback.
#[tokio::test]
async fn a_server_without_resp3_falls_back_to_the_librarys_messages() {
    let server = RedisServer::start_with(
        ["--rename-command", "HELLO", ""]
            .map(str::to_owned)
            .to_vec(),
    );
    hears_only_the_librarys_messages(&server, &server.url()).await;
}

/// Whether a local tier on `url` hears another process's eviction, through
/// the channel, and keeps its copy through another program's write, which
/// only the copy's expiry (`max_ttl` at most) ends.
async fn hears_only_the_librarys_messages(server: &RedisServer, url: &str) {
    let cache = cache_on(url);
    let writer = cache_on(&server.url());
    let calls = Calls::default();
    serve_locally(&cache, &calls, 1).await;

    writer.delete("seen:1").await.unwrap();
    assert!(runs_again("eviction, without tracking", &cache, &calls, 1).await);

    serve_locally(&cache, &calls, 1).await;
    let _: () = server.client().set(key(1), entry(41)).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        track_outcome(seen(&cache, &calls, 1)).await,
        (1, Some(Outcome::Local)),
        "without tracking, another program's write is not heard of"
    );
}
