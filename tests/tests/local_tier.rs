//! The local tier: hits served in-process without Redis, bounded, never
//! outliving the Redis entry, and dropped in every process when any process
//! writes or evicts the key (tested with a second process). What else
//! reaches a local copy (another program's writes, expiry, eviction by
//! `maxmemory`, flushes) is in `tracking.rs`.
//!
//! Redis reports this process's own stores back to it too, which drops the
//! copy the store made: the call after a miss may read Redis once more
//! before the key is served locally.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_runtime::{Cache, LocalTierSettings, Outcome, cache_put, redis_cached, track_outcome};
use cache_tests::{Calls, RedisServer, StallingProxy, eventually};
use redis::Commands;

#[redis_cached(key = "local:{id}", ttl = 60, local = true, cache = cache)]
async fn local(cache: &Cache, calls: &Calls, id: u32) -> Vec<u32> {
    calls.bump();
    vec![id; 3]
}

async fn outcome_of(cache: &Cache, calls: &Calls, id: u32) -> Option<Outcome> {
    track_outcome(local(cache, calls, id)).await.1
}

/// A cache whose local tier listens (it is bypassed until then).
async fn local_cache(server: &RedisServer, tier: LocalTierSettings) -> Cache {
    listening(server.cache_builder().local_tier(tier).build().unwrap()).await
}

/// `cache`, once its local tier listens.
async fn listening(cache: Cache) -> Cache {
    // Before `local`'s first call: it takes its metric handles then.
    support::install();
    let calls = Calls::default();
    assert!(
        comes_to_serve_locally(&cache, &calls, 999_999, Duration::from_secs(5)).await,
        "the local tier never came up"
    );
    cache
}

/// Whether, within `limit`, a call of `local(id)` after another one is
/// served from the local tier.
async fn comes_to_serve_locally(cache: &Cache, calls: &Calls, id: u32, limit: Duration) -> bool {
    eventually(limit, || async {
        local(cache, calls, id).await;
        outcome_of(cache, calls, id).await == Some(Outcome::Local)
    })
    .await
    .is_some()
}

#[tokio::test]
async fn a_second_call_is_served_locally_without_redis() {
    let server = RedisServer::start();
    let cache = local_cache(&server, LocalTierSettings::new()).await;
    let calls = Calls::default();

    assert_eq!(outcome_of(&cache, &calls, 1).await, Some(Outcome::Miss));
    // Redis counts no read while the key is served locally: the answers
    // came from the process. (Eventually: Redis's report of the miss's own
    // store may still be on its way, and drop the copy once more.)
    let served_without_redis = eventually(Duration::from_secs(5), || async {
        let reads = gets_served(&server);
        let value = local(&cache, &calls, 1).await;
        let outcome = outcome_of(&cache, &calls, 1).await;
        value == [1, 1, 1] && outcome == Some(Outcome::Local) && gets_served(&server) == reads
    })
    .await;
    assert!(served_without_redis.is_some());
    assert_eq!(calls.get(), 1);

    // Through the cache, an eviction reaches the local copy at once.
    local_invalidate(&cache, 1).await.unwrap();
    assert_eq!(outcome_of(&cache, &calls, 1).await, Some(Outcome::Miss));
    let metrics = support::of("local_tier::local");
    assert!(metrics.local_hits >= 3);
}

/// How many `GET`s the server has run.
fn gets_served(server: &RedisServer) -> u64 {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut server.client())
        .unwrap();
    stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_get:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().unwrap())
}

#[tokio::test]
async fn a_hit_from_redis_fills_the_local_tier() {
    let server = RedisServer::start();
    let cache = local_cache(&server, LocalTierSettings::new()).await;
    let calls = Calls::default();
    let _: () = server
        .client()
        .set("local:5", r#"{"v":1,"data":[7]}"#)
        .unwrap();
    assert_eq!(
        track_outcome(local(&cache, &calls, 5)).await,
        (vec![7], Some(Outcome::Hit))
    );
    // Eventually: the report of the `SET` above may cross that first read.
    assert!(comes_to_serve_locally(&cache, &calls, 5, Duration::from_secs(5)).await);
    assert_eq!(local(&cache, &calls, 5).await, [7]);
    assert_eq!(calls.get(), 0);
}

#[redis_cached(key = "short:{id}", ttl = 1, local = true, cache = cache)]
async fn short(cache: &Cache, calls: &Calls, id: u32) -> u32 {
    calls.bump();
    id
}

#[tokio::test]
async fn a_local_copy_never_outlives_its_redis_entry() {
    let server = RedisServer::start();
    let cache = local_cache(&server, LocalTierSettings::new()).await;
    let calls = Calls::default();
    short(&cache, &calls, 1).await;
    short(&cache, &calls, 1).await;
    assert_eq!(calls.get(), 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    short(&cache, &calls, 1).await;
    assert_eq!(calls.get(), 2, "expired locally with its TTL");
}

#[tokio::test]
async fn the_local_tier_is_bounded() {
    let server = RedisServer::start();
    let cache = local_cache(
        &server,
        LocalTierSettings::new().max_entries(20).max_bytes(1 << 20),
    )
    .await;
    let calls = Calls::default();
    for id in 0..500 {
        local(&cache, &calls, id).await;
    }
    let mut local_hits = 0;
    for id in 0..500 {
        if outcome_of(&cache, &calls, id).await == Some(Outcome::Local) {
            local_hits += 1;
        }
    }
    assert!(
        local_hits <= 100,
        "kept about 20 of 500 entries, not {local_hits}"
    );
}

/// 4 to 6 KB of JSON.
#[redis_cached(key = "wide:{id}", ttl = 60, local = true, cache = cache)]
async fn wide(cache: &Cache, id: u32) -> Vec<u32> {
    vec![id; 2000]
}

/// How many of 100 wide entries, each read three times, the third read
/// finds in the local tier (the second refills it, as the first one's store
/// dropped its copy).
async fn wide_entries_kept(server: &RedisServer, max_bytes: u64) -> usize {
    let cache = local_cache(server, LocalTierSettings::new().max_bytes(max_bytes)).await;
    for _ in 0..2 {
        for id in 0..100 {
            wide(&cache, id).await;
        }
    }
    let mut kept = 0;
    for id in 0..100 {
        if track_outcome(wide(&cache, id)).await.1 == Some(Outcome::Local) {
            kept += 1;
        }
    }
    kept
}

#[tokio::test]
async fn the_local_tier_is_bounded_by_bytes() {
    let server = RedisServer::start();
    // 100 entries of 4 to 6 KB: all fit in the default 64 MiB, about 12 in
    // 64 KiB.
    let roomy = wide_entries_kept(&server, 64 << 20).await;
    let tight = wide_entries_kept(&server, 64 << 10).await;
    assert!(
        roomy >= 90,
        "64 MiB should keep the 100 entries, kept {roomy}"
    );
    assert!(
        tight <= 20,
        "64 KiB should keep about 12 entries, kept {tight}"
    );
}

#[redis_cached(key = "fresh:{id}", ttl = 1, stale = 60, local = true, cache = cache)]
async fn local_stale(cache: Arc<Cache>, calls: Arc<Calls>, id: u32) -> usize {
    calls.bump();
    calls.get() * 100 + id as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_stale_a_local_copy_lives_only_while_the_value_is_fresh() {
    let server = RedisServer::start();
    let cache = Arc::new(local_cache(&server, LocalTierSettings::new()).await);
    let calls = Arc::new(Calls::default());
    let call = || track_outcome(local_stale(cache.clone(), calls.clone(), 1));

    assert_eq!(call().await, (101, Some(Outcome::Miss)));
    let local = eventually(Duration::from_secs(5), || async {
        call().await == (101, Some(Outcome::Local))
    })
    .await;
    assert!(local.is_some(), "the value never reached the local tier");
    // Past `ttl`: the local copy is gone, and Redis serves the stale value
    // while one refresh runs.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(call().await, (101, Some(Outcome::Stale)));
    // The refreshed value comes from Redis once, then from the local tier.
    let refreshed = eventually(Duration::from_secs(5), || async {
        call().await == (201, Some(Outcome::Local))
    })
    .await;
    assert!(
        refreshed.is_some(),
        "the refreshed value reached the local tier"
    );
    assert_eq!(calls.get(), 2, "one miss, one refresh");
    // That copy, filled from a Redis hit, ends with its value's freshness too.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(call().await, (201, Some(Outcome::Stale)));
}

#[cache_put(key = "local:{id}", ttl = 60, cache = cache)]
async fn put_local(cache: &Cache, id: u32, value: Vec<u32>) -> Vec<u32> {
    value
}

/// The second process.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: std::io::Lines<BufReader<ChildStdout>>,
}

impl Worker {
    fn start(url: &str) -> Worker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_local_worker"))
            .arg(url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the worker process");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Worker {
            child,
            stdin,
            stdout,
        }
    }

    fn get(&mut self, id: u32) -> (String, String) {
        writeln!(self.stdin, "get {id}").unwrap();
        let line = self.stdout.next().expect("an answer").unwrap();
        let (value, outcome) = line.rsplit_once(' ').unwrap();
        (value.to_owned(), outcome.to_owned())
    }

    /// Asks until the answer is `value`; returns how long that took.
    fn until(&mut self, id: u32, value: &str) -> Duration {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if self.get(id).0 == value {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("the other process kept its old value of {id}");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[redis_cached(key = "value:{id}", ttl = 60, cache = cache)]
async fn value_here(cache: &Cache, id: u32) -> String {
    unreachable!("only evicted here, {id}")
}

#[tokio::test]
async fn another_process_drops_its_copy_when_this_one_evicts_or_writes() {
    let server = RedisServer::start();
    let cache = server.cache();
    let mut worker = Worker::start(&server.url());
    let mut db = server.client();
    let _: () = db.set("db:1", "v1").unwrap();
    worker.until(1, "v1");
    let warm = eventually(Duration::from_secs(5), || {
        let local = worker.get(1).1 == "local";
        async move { local }
    })
    .await;
    assert!(warm.is_some(), "the worker serves key 1 locally");

    // A write elsewhere: the database, then the eviction, in this process.
    // Twenty times, to report how soon the other process sees it (the
    // figure in BENCHMARKS.md; run with --nocapture).
    let mut delays = Vec::new();
    for round in 0..20 {
        let value = format!("v2.{round}");
        let _: () = db.set("db:1", &value).unwrap();
        value_here_invalidate(&cache, 1).await.unwrap();
        delays.push(worker.until(1, &value));
        worker.until(1, &value); // served locally again before the next round
    }
    delays.sort();
    println!(
        "eviction seen by the other process after: median {:?}, max {:?} (20 rounds)",
        delays[10], delays[19]
    );
    assert!(delays[19] < Duration::from_secs(2), "{delays:?}");
    let _: () = db.set("db:1", "v2").unwrap();
    value_here_invalidate(&cache, 1).await.unwrap();

    // A write-through elsewhere replaces the value in Redis and locally.
    worker.until(1, "v2");
    let _: () = db.set("db:1", "v3").unwrap();
    cache
        .set("value:1", &"v3".to_owned(), Duration::from_secs(60))
        .await
        .unwrap();
    worker.until(1, "v3");

    // If the worker's listener drops, it cannot trust its copies: it
    // empties its tier and asks Redis until it listens again. A change made
    // before then is reported to no one.
    assert_eq!(server.kill_listeners(), 1, "the worker's listener");
    let _: () = db.set("value:1", r#"{"v":1,"data":"v4"}"#).unwrap();
    worker.until(1, "v4");
}

#[tokio::test]
async fn a_put_in_this_process_reaches_this_processs_local_copy() {
    let server = RedisServer::start();
    let cache = local_cache(&server, LocalTierSettings::new()).await;
    let calls = Calls::default();
    assert!(comes_to_serve_locally(&cache, &calls, 3, Duration::from_secs(5)).await);
    put_local(&cache, 3, vec![9]).await;
    assert_eq!(local(&cache, &calls, 3).await, [9]);
}

#[tokio::test]
async fn a_failed_eviction_still_drops_the_local_copy() {
    let mut server = RedisServer::start();
    let cache = local_cache(&server, LocalTierSettings::new()).await;
    let calls = Calls::default();
    assert!(comes_to_serve_locally(&cache, &calls, 8, Duration::from_secs(5)).await);

    server.kill();
    local_invalidate(&cache, 8).await.unwrap_err();
    let before = calls.get();
    local(&cache, &calls, 8).await;
    assert_eq!(calls.get(), before + 1, "the local copy was not used");
}

/// `Cache::local_tier_status`: the copies the tier holds, what they count
/// against `max_bytes`, and whether it listens; none without a tier.
#[tokio::test]
async fn the_local_tier_says_what_it_holds() {
    let mut server = RedisServer::start();
    assert_eq!(
        server.cache().local_tier_status(),
        None,
        "no tier set up, and no `local = true` call"
    );
    let cache = local_cache(
        &server,
        LocalTierSettings::new().health_check_interval(Duration::from_millis(100)),
    )
    .await;
    cache.clear_local_tier();
    let empty = cache.local_tier_status().expect("a tier");
    assert_eq!((empty.entries, empty.bytes, empty.listening), (0, 0, true));

    let calls = Calls::default();
    assert!(comes_to_serve_locally(&cache, &calls, 4, Duration::from_secs(5)).await);
    let one = cache.local_tier_status().unwrap();
    assert_eq!(one.entries, 1);
    assert_eq!(
        one.bytes,
        cache_runtime::defaults::LOCAL_MAX_BYTES / cache_runtime::defaults::LOCAL_MAX_ENTRIES,
        "a small entry counts as max_bytes / max_entries"
    );
    assert!(one.listening);

    // Redis goes: the listener notices, and the tier empties and stops.
    server.kill();
    let stopped = eventually(Duration::from_secs(5), || async {
        let status = cache.local_tier_status().unwrap();
        !status.listening && status.entries == 0
    })
    .await;
    assert!(stopped.is_some(), "{:?}", cache.local_tier_status());
}

#[redis_cached(key = "plain:{id}", ttl = 60, cache = cache)]
async fn plain(cache: &Cache, calls: &Calls, id: u32) -> Vec<u32> {
    calls.bump();
    vec![id]
}

#[tokio::test]
async fn the_builders_switch_puts_every_function_in_the_local_tier() {
    let server = RedisServer::start();
    let calls = Calls::default();
    let every_function =
        local_cache(&server, LocalTierSettings::new().for_all_functions(true)).await;
    let served_locally = eventually(Duration::from_secs(5), || async {
        track_outcome(plain(&every_function, &calls, 1)).await.1 == Some(Outcome::Local)
    })
    .await;
    assert!(served_locally.is_some());

    // Without it, a function without `local = true` reads Redis every time.
    let only_marked = local_cache(&server, LocalTierSettings::new()).await;
    plain(&only_marked, &calls, 2).await;
    assert_eq!(
        track_outcome(plain(&only_marked, &calls, 2)).await.1,
        Some(Outcome::Hit)
    );
    assert_eq!(calls.get(), 2);
}

#[tokio::test]
async fn a_silent_connection_empties_and_bypasses_the_local_tier() {
    let server = RedisServer::start();
    let cache = listening(
        server
            .cache_builder()
            .deadline(Duration::from_millis(100))
            .connect_timeout(Duration::from_millis(300))
            .local_tier(LocalTierSettings::new().health_check_interval(Duration::from_millis(100)))
            .build()
            .unwrap(),
    )
    .await;
    let calls = Calls::default();
    // Eventually: on a loaded machine, a store or a PING may miss these
    // short deadlines.
    assert!(
        comes_to_serve_locally(&cache, &calls, 4, Duration::from_secs(10)).await,
        "the key was never served locally"
    );

    // A stalled server closes nothing: only the listener's health check
    // can tell that messages may be lost.
    server.pause();
    let bypassed = eventually(Duration::from_secs(10), || async {
        outcome_of(&cache, &calls, 4).await != Some(Outcome::Local)
    })
    .await;
    server.resume();
    assert!(
        bypassed.is_some(),
        "the local tier kept serving while its listener could not answer"
    );

    // Once the server answers, the tier listens again and serves again.
    assert!(
        comes_to_serve_locally(&cache, &calls, 4, Duration::from_secs(10)).await,
        "the local tier never came back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_message_that_may_be_lost_is_sent_again() {
    let server = RedisServer::start();
    // A reader refused `CLIENT TRACKING` hears only the channel: what this
    // test is about.
    let reader = listening(
        Cache::builder()
            .url(server.user_url("untracked", &["-client"]))
            .deadline(Duration::from_secs(1))
            .local_tier(LocalTierSettings::new())
            .build()
            .unwrap(),
    )
    .await;
    let proxy = StallingProxy::start(server.port(), b"PUBLISH").await;
    let writer = Cache::builder()
        .url(proxy.url())
        .deadline(Duration::from_millis(300))
        .build()
        .unwrap();
    let calls = Calls::default();
    local(&reader, &calls, 6).await;
    assert_eq!(outcome_of(&reader, &calls, 6).await, Some(Outcome::Local));

    // The write reaches Redis; its message never does.
    writer
        .set("local:6", &vec![60u32], Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(proxy.stalled(), 1, "the PUBLISH was not stalled");

    // The writer owes the message and sends it again in the background; the
    // reader drops its copy and reads the new value from Redis.
    let dropped = eventually(Duration::from_secs(10), || async {
        local(&reader, &calls, 6).await == [60]
    })
    .await;
    assert!(
        dropped.is_some(),
        "the reader kept its copy of a value written elsewhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_eviction_drops_the_local_copies_under_it_everywhere() {
    let server = RedisServer::start();
    let reader = local_cache(&server, LocalTierSettings::new()).await;
    let calls = Calls::default();
    for id in [11, 12] {
        assert!(comes_to_serve_locally(&reader, &calls, id, Duration::from_secs(5)).await);
    }

    // From another process (here, another cache): the message drops them.
    let writer = server.cache();
    writer.invalidate_prefix("local:1").await.unwrap();
    let dropped = eventually(Duration::from_secs(10), || async {
        outcome_of(&reader, &calls, 11).await != Some(Outcome::Local)
    })
    .await;
    assert!(
        dropped.is_some(),
        "a copy outlived another process's prefix eviction"
    );
    assert_ne!(outcome_of(&reader, &calls, 12).await, Some(Outcome::Local));

    // In this process: at once.
    assert!(comes_to_serve_locally(&reader, &calls, 12, Duration::from_secs(5)).await);
    reader.invalidate_prefix("local:12").await.unwrap();
    assert_eq!(outcome_of(&reader, &calls, 12).await, Some(Outcome::Miss));
}

/// An ACL user refused the invalidation channel, `CLIENT TRACKING`, and
/// PING too (it is in `@connection`, which restrictive roles leave out): a
/// refused PING still proves the server answers.
#[tokio::test]
async fn a_user_refused_the_channel_and_tracking_still_caches_in_redis() {
    support::install();
    let server = RedisServer::start();
    let cache = Cache::builder()
        .url(server.user_url("app", &["-ping", "-client", "resetchannels"]))
        .deadline(Duration::from_secs(1))
        .local_tier(LocalTierSettings::new())
        .build()
        .unwrap();
    let calls = Calls::default();

    // Its local tier cannot listen (give it time to try): it stays off, and
    // every call asks Redis.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Redis refuses the write's PUBLISH (NOPERM): nothing to send again,
    // and lookups go on.
    put_local(&cache, 7, vec![70]).await;
    for _ in 0..2 {
        assert_eq!(
            track_outcome(local(&cache, &calls, 7)).await,
            (vec![70], Some(Outcome::Hit))
        );
    }
    assert_eq!(calls.get(), 0);
}
