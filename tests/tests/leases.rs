//! Read-your-writes across processes: once an eviction has returned, no
//! store can land from a read that began before it, in any process.
//!
//! Each `Cache` built here has its own flights, eviction epochs and
//! connections, as a cache in another process would: what one evicts, the
//! others learn only through Redis. So these tests race two or three of them
//! on one `redis-server`, the "database" being a version number that a
//! writer bumps before it evicts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cache_evict, redis_cached};
use cache_tests::{RedisServer, StallingProxy, current_thread_runtime};
use redis::Commands;

/// The database: one row, at a version.
#[derive(Default)]
struct Db {
    version: AtomicU64,
}

/// Reads the row, then takes `delay_ms` before returning what it read: the
/// window in which a write and its eviction can overtake the read.
#[redis_cached(key = "row:{id}", ttl = 60, tag = "rows", cache = cache)]
async fn read_row(cache: &Cache, db: &Db, delay_ms: u64, id: u32) -> u64 {
    let version = db.version.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    version
}

/// Writes the row, then evicts its entry.
#[cache_evict(key = "row:{id}", cache = cache)]
async fn write_row(cache: &Cache, db: &Db, id: u32) {
    db.version.fetch_add(1, Ordering::SeqCst);
}

/// Writes the row, then evicts every entry tagged `rows`.
#[cache_evict(tag = "rows", cache = cache)]
async fn write_rows(cache: &Cache, db: &Db) {
    db.version.fetch_add(1, Ordering::SeqCst);
}

/// Process A starts a slow read; process B writes and evicts while A's body
/// runs (by `evict`); then a read in either process must see the write.
async fn race_a_read_with(evict: impl AsyncFnOnce(&Cache, &Db)) {
    let server = RedisServer::start();
    let (a, b) = (server.cache(), server.cache());
    let db = Db::default();

    let slow_read = read_row(&a, &db, 400, 1);
    let write = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        evict(&b, &db).await;
    };
    let (read, ()) = tokio::join!(slow_read, write);
    assert_eq!(read, 0, "the slow read began before the write");

    assert_eq!(
        read_row(&b, &db, 0, 1).await,
        1,
        "a read after the eviction returned got the value read before it"
    );
    assert_eq!(read_row(&a, &db, 0, 1).await, 1);
}

#[tokio::test]
async fn a_read_that_began_before_another_process_evicted_its_key_is_not_stored() {
    race_a_read_with(async |cache, db| write_row(cache, db, 1).await).await;
}

#[tokio::test]
async fn a_read_that_began_before_another_process_evicted_its_tag_is_not_stored() {
    race_a_read_with(async |cache, db| write_rows(cache, db).await).await;
}

#[tokio::test]
async fn a_read_that_began_before_another_process_evicted_its_prefix_is_not_stored() {
    race_a_read_with(async |cache, db| {
        db.version.fetch_add(1, Ordering::SeqCst);
        cache.invalidate_prefix("row:").await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_read_that_began_before_another_process_deleted_its_key_is_not_stored() {
    race_a_read_with(async |cache, db| {
        db.version.fetch_add(1, Ordering::SeqCst);
        cache.delete("row:1").await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn another_callers_lease_is_waited_for_then_run_around_and_never_overwritten() {
    let server = RedisServer::start();
    let cache = server
        .cache_builder()
        .lock_wait(Duration::from_millis(200))
        .build()
        .unwrap();
    let db = Db::default();
    // What a process that crashed while its body ran leaves behind, with a
    // lease longer than anyone waits.
    let crashed_lease = b"\0lease:crashed".to_vec();
    let _: () = server
        .client()
        .pset_ex("row:1", &crashed_lease, 60_000)
        .unwrap();

    assert_eq!(
        read_row(&cache, &db, 0, 1).await,
        0,
        "a lease is a miss in progress: after `lock_wait`, the body runs"
    );
    let held: Vec<u8> = server.client().get("row:1").unwrap();
    assert_eq!(
        held, crashed_lease,
        "another caller's lease is never overwritten"
    );
}

#[tokio::test]
async fn a_crashed_callers_lease_expires_and_the_waiting_caller_stores() {
    let server = RedisServer::start();
    let cache = server.cache();
    let db = Db::default();
    let _: () = server
        .client()
        .pset_ex("row:1", b"\0lease:crashed", 300)
        .unwrap();

    // Waits for the lease (`lock_wait` is 5 s), which expires first.
    assert_eq!(read_row(&cache, &db, 0, 1).await, 0);
    db.version.store(1, Ordering::SeqCst);
    assert_eq!(
        read_row(&cache, &db, 0, 1).await,
        0,
        "once the lease expired, the waiting caller took one and stored"
    );
}

#[tokio::test]
async fn a_body_slower_than_the_lease_keeps_it_and_stores() {
    let server = RedisServer::start();
    let cache = server
        .cache_builder()
        .lease(Duration::from_millis(300))
        .build()
        .unwrap();
    let db = Db::default();
    assert_eq!(read_row(&cache, &db, 1_000, 1).await, 0);
    db.version.store(1, Ordering::SeqCst);
    assert_eq!(
        read_row(&cache, &db, 0, 1).await,
        0,
        "the slow body's value was stored: its lease was extended while it ran"
    );
}

#[tokio::test]
async fn a_result_that_is_not_stored_releases_its_lease_at_once() {
    #[redis_cached(key = "maybe:{id}", ttl = 60, cache = cache)]
    async fn maybe_row(cache: &Cache, id: u32, found: bool) -> Option<u32> {
        found.then_some(id)
    }

    let server = RedisServer::start();
    let cache = server.cache();
    assert_eq!(maybe_row(&cache, 1, false).await, None);
    assert!(
        !server.exists("maybe:1"),
        "a `None` is not stored, and its lease is gone with it"
    );
    assert_eq!(maybe_row(&cache, 1, true).await, Some(1));
    assert!(server.exists("maybe:1"));
}

/// A history of writes and reads across three caches (three processes), each
/// read's body taking a random time between its read and its store. A
/// checker fails if a read that started after an eviction had returned got a
/// value older than the write before that eviction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_that_starts_after_an_eviction_returned_sees_an_older_value() {
    let server = RedisServer::start();
    let caches: Arc<Vec<Cache>> = Arc::new((0..3).map(|_| server.cache()).collect());
    let db = Arc::new(Db::default());
    let run_for = Duration::from_secs(3);
    let started = Instant::now();

    // (version written, when its eviction returned)
    let writer = {
        let (caches, db) = (caches.clone(), db.clone());
        tokio::spawn(async move {
            let mut evictions = Vec::new();
            let mut seed = 0x2545_f491_4f6c_dd1d_u64;
            while started.elapsed() < run_for {
                let cache = &caches[(next(&mut seed) % 3) as usize];
                write_row(cache, &db, 1).await;
                evictions.push((db.version.load(Ordering::SeqCst), Instant::now()));
                tokio::time::sleep(Duration::from_millis(next(&mut seed) % 40)).await;
            }
            evictions
        })
    };
    // (when the read started, what it got)
    let readers: Vec<_> = (0..6)
        .map(|reader| {
            let (caches, db) = (caches.clone(), db.clone());
            tokio::spawn(async move {
                let mut reads = Vec::new();
                let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ reader;
                while started.elapsed() < run_for {
                    let cache = &caches[(next(&mut seed) % 3) as usize];
                    let delay_ms = next(&mut seed) % 30;
                    let began = Instant::now();
                    let value = read_row(cache, &db, delay_ms, 1).await;
                    reads.push((began, value));
                }
                reads
            })
        })
        .collect();

    let evictions = writer.await.unwrap();
    let mut reads = Vec::new();
    for reader in readers {
        reads.extend(reader.await.unwrap());
    }
    assert!(
        evictions.len() > 20 && reads.len() > 100,
        "too little history"
    );
    let mut violations = Vec::new();
    for (began, value) in &reads {
        // The newest write whose eviction had returned when the read began.
        let required = evictions
            .iter()
            .filter(|(_, returned)| returned < began)
            .map(|(version, _)| *version)
            .max()
            .unwrap_or(0);
        if *value < required {
            violations.push((began.duration_since(started), *value, required));
        }
    }
    assert!(
        violations.is_empty(),
        "{} of {} reads got a value older than a write whose eviction had returned before they began (when, got, required): {:?}",
        violations.len(),
        reads.len(),
        &violations[..violations.len().min(10)]
    );
}

/// xorshift64: a reproducible sequence without a dependency.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::test]
async fn a_tag_eviction_finds_the_lease_of_a_body_slower_than_the_lease() {
    let server = RedisServer::start();
    let short_lease = || {
        server
            .cache_builder()
            .lease(Duration::from_millis(300))
            .build()
            .unwrap()
    };
    let (a, b) = (short_lease(), short_lease());
    let db = Db::default();
    // The tag set would expire with the lease's first length, unless kept.
    let slow_read = read_row(&a, &db, 1_200, 1);
    let write = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        write_rows(&b, &db).await;
    };
    let (read, ()) = tokio::join!(slow_read, write);
    assert_eq!(read, 0);
    assert_eq!(
        read_row(&b, &db, 0, 1).await,
        1,
        "the slow read's lease outlived its tag set, and it stored a value older than the write"
    );
}

#[tokio::test]
async fn a_write_through_that_cannot_store_evicts_the_key() {
    #[cache_runtime::cache_put(key = "row:{id}", ttl = 60, cache = cache)]
    async fn save_row(cache: &Cache, id: u32, text: String) -> String {
        text
    }

    let server = RedisServer::start();
    let cache = server.cache_builder().max_value_size(64).build().unwrap();
    assert_eq!(save_row(&cache, 1, "short".into()).await, "short");
    assert!(server.exists("row:1"));
    let long = "x".repeat(100);
    assert_eq!(save_row(&cache, 1, long.clone()).await, long);
    assert!(
        !server.exists("row:1"),
        "a write too large to store leaves no older value behind"
    );
}

/// A tag's eviction walks its set, unlinks the members it found, then
/// unlinks the set: a lease that joined the set in between, so that the
/// eviction did not find it, must still be found by the next one. Found by
/// `adversarial.rs`; here the proxy holds the first eviction's `UNLINK` of
/// the set while a slow read takes its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_joins_its_tag_set_during_a_tag_eviction_is_found_by_the_next_one() {
    let server = RedisServer::start();
    let proxy = StallingProxy::holding(
        server.port(),
        b"UNLINK\r\n$9\r\n#tag:rows",
        Duration::from_millis(300),
    )
    .await;
    let evicting = Cache::builder()
        .url(proxy.url())
        .deadline(Duration::from_secs(1))
        .build()
        .unwrap();
    let (reading, writing) = (server.cache(), server.cache());
    let db = Db::default();

    let first_write = async {
        db.version.fetch_add(1, Ordering::SeqCst);
        evicting.invalidate_tag("rows").await.unwrap();
    };
    let slow_read = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        read_row(&reading, &db, 800, 1).await
    };
    let second_write = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        write_rows(&writing, &db).await;
    };
    let ((), read, ()) = tokio::join!(first_write, slow_read, second_write);
    assert_eq!(read, 1, "the slow read began between the two writes");
    // An eviction that never unlinks the set has nothing for the proxy to
    // hold, and no such window.
    let held = proxy.stalled() == 1;
    assert_eq!(
        read_row(&writing, &db, 0, 1).await,
        2,
        "the slow read's lease left its tag set with the first eviction (whose UNLINK of the set \
         was held: {held}), escaped the second, and stored a value older than the second write"
    );
}

/// A caller that waits for another process's entry shares what it finds
/// with this process's other callers of the key (its flight's followers):
/// never with one that came after an eviction which that entry predates.
/// Found by `adversarial.rs`; here the proxy holds the reply that brings
/// the entry while another process writes and evicts, and a caller on
/// another runtime (another connection) comes after the eviction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_comes_after_an_eviction_never_gets_an_entry_found_before_it() {
    let server = RedisServer::start();
    let proxy =
        StallingProxy::holding(server.port(), br#""data":0}"#, Duration::from_millis(400)).await;
    let storing = server.cache();
    let waiting = Arc::new(
        Cache::builder()
            .url(proxy.url())
            .deadline(Duration::from_secs(1))
            .build()
            .unwrap(),
    );
    let writing = server.cache();
    let db = Arc::new(Db::default());

    let came_after_the_eviction = {
        let (waiting, db) = (waiting.clone(), db.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(450));
            current_thread_runtime().block_on(read_row(&waiting, &db, 0, 1))
        })
    };
    // Stores 0 at about 300 ms; the waiting caller's `GET` that finds it
    // comes back at about 700 ms; the write's eviction returns at about 400.
    let stored = read_row(&storing, &db, 300, 1);
    let waited = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        read_row(&waiting, &db, 0, 1).await
    };
    let write = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        write_row(&writing, &db, 1).await;
    };
    let (stored, waited, ()) = tokio::join!(stored, waited, write);
    assert_eq!((stored, waited), (0, 0), "both began before the write");
    assert_eq!(proxy.stalled(), 1, "the reply with the entry was held");
    let came_after = tokio::task::spawn_blocking(move || came_after_the_eviction.join())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        came_after, 1,
        "a caller that came after the eviction got the entry stored before it, \
         shared by this process's wait for it"
    );
}
