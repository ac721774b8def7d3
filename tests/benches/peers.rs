//! The peer benchmark: what one cached call costs through `#[redis_cached]`,
//! side by side with the alternatives, in one run against one real
//! `redis-server` (started here on a free loopback port).
//!
//! Cases, each for a small value (one user) and a large one (1,000 users):
//!
//! - `hand-written`, the baseline of every ratio: redis-rs
//!   `AsyncCommands::get` + `serde_json` decode of the very envelope our macro
//!   stores (`{"v":1,"data":…}`), with the key built by `format!`; on a miss,
//!   the body, then `PSETEX`. Its connection's task runs on the
//!   benchmark's runtime, as redis-rs does by default.
//! - `hand-written, connection on its own thread` (hits only): the same code
//!   on a connection driven from a thread of its own, as our cache's is with
//!   `ConnectionPlacement::IoThread`: what that placement costs hand-written.
//! - `redis_cached`: our macro, with the default placement of its
//!   connection (`ConnectionPlacement::PerRuntime`: driven on the caller's
//!   runtime, as the baseline's is).
//! - `redis_cached, connection on the I/O thread` (hits only): the same on a
//!   cache built with `ConnectionPlacement::IoThread`, one connection driven
//!   from the cache's own thread.
//! - `cached`: the `cached` crate (4.1), `#[concurrent_cached(redis = true)]`,
//!   whose store for an `async fn` is `AsyncRedisCache`. It encodes values
//!   with MessagePack, not JSON, so it moves and decodes other bytes.
//! - `binary`: our macro with `format = "binary"`: postcard for the small
//!   value, bitcode, LZ4-compressed, for the large one; against the
//!   hand-written JSON baseline, as the other cases.
//! - `local tier`: our macro with `local = true`: the value is kept decoded
//!   in process and each hit returns a clone of it. The cached type is the
//!   same as above (`User`, `Vec<User>`), so a large hit clones a thousand
//!   users. Its miss also reads the entry's `PTTL` and keeps a local copy.
//! - `local tier, Arc`: the same, with the value declared as `Arc<User>` /
//!   `Arc<Vec<User>>`, so that a hit's clone is a reference count: what the
//!   README advises for large values. Hits only.
//!
//! A hit reads a warm key; a miss uses a fresh key per call (lookup, body,
//! store). Each case reports its sequential latency (median and p99) and its
//! throughput with 64 concurrent tasks. Cases run in rounds whose order
//! rotates, so that drift in the machine's speed favours none; the figures
//! are medians over the rounds, and each ratio is the median of the rounds'
//! own ratios (a case against the baseline measured in the same round).
//!
//! Then a counting global allocator gives the allocations (and bytes) each
//! call makes, process-wide, so that those made on redis-rs's connection
//! task and on our I/O thread count too.
//!
//! Run: `cargo bench -p cache-tests --bench peers`; append `-- --quick` for a
//! short run, `-- --recorder` to record through a real `metrics` recorder,
//! `-- --allocs` for the allocation table alone,
//! `-- --alloc-sites [large] [miss]` to print the stacks of the allocations
//! one call makes (a small hit by default), ours and the baselines', or
//! `-- --profile CASE CALLS [large] [miss] [tasks]` to make only those calls
//! (over 64 tasks with `tasks`), under a profiler. Stacks are clearer with `CARGO_PROFILE_BENCH_DEBUG=line-tables-only`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, ConnectionPlacement, LocalTierSettings, redis_cached};
use cache_tests::RedisServer;
use cached::macros::concurrent_cached;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------
// The counting allocator.

/// `System`, counting allocations and requested bytes while [`COUNTING`] is
/// on. A `realloc` counts as one allocation of its new size. Off during the
/// timed phases, so that the shared counters cost nothing there.
struct Counting;

#[global_allocator]
static GLOBAL: Counting = Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);

#[inline]
fn count(size: usize) {
    if COUNTING.load(Relaxed) {
        ALLOCATIONS.fetch_add(1, Relaxed);
        ALLOCATED_BYTES.fetch_add(size as u64, Relaxed);
        sites::record(size);
    }
}

// SAFETY: every method forwards to `System` unchanged; counting has no effect
// on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// `--alloc-sites`: the stack of each counted allocation.
mod sites {
    use std::backtrace::Backtrace;
    use std::cell::Cell;
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    use std::sync::{Mutex, PoisonError};

    pub static ON: AtomicBool = AtomicBool::new(false);
    static RECORDED: Mutex<Vec<(usize, String, Backtrace)>> = Mutex::new(Vec::new());

    thread_local! {
        /// Set while recording, so that the recording's own allocations are
        /// not recorded.
        static BUSY: Cell<bool> = const { Cell::new(false) };
    }

    pub fn record(size: usize) {
        if !ON.load(Relaxed) {
            return;
        }
        let _ = BUSY.try_with(|busy| {
            if busy.replace(true) {
                return;
            }
            let thread = std::thread::current()
                .name()
                .unwrap_or("unnamed")
                .to_owned();
            let trace = Backtrace::force_capture();
            RECORDED
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((size, thread, trace));
            busy.set(false);
        });
    }

    pub fn take() -> Vec<(usize, String, Backtrace)> {
        std::mem::take(&mut *RECORDED.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The frames of a trace below the allocator, without the allocator's
    /// own frames and the runtime's plumbing, at most `max`.
    pub fn frames(trace: &Backtrace, max: usize) -> Vec<String> {
        const SKIP: [&str; 10] = [
            "std::backtrace",
            "peers::sites",
            "peers::count",
            "<peers::Counting",
            "__rust",
            "__rdl",
            "alloc::alloc::",
            "alloc::raw_vec::",
            "core::ops::function",
            "std::sys::backtrace",
        ];
        trace
            .to_string()
            .lines()
            .filter_map(|line| {
                let (number, symbol) = line.trim().split_once(": ")?;
                number.parse::<u32>().ok()?;
                Some(symbol.to_owned())
            })
            .skip_while(|symbol| SKIP.iter().any(|skip| symbol.contains(skip)))
            .take(max)
            .collect()
    }
}

// ---------------------------------------------------------------------------
// What is cached.

#[derive(Clone, Serialize, Deserialize)]
struct User {
    id: i64,
    username: String,
    email: String,
}

fn users(n: usize) -> Vec<User> {
    (0..n as i64)
        .map(|id| User {
            id,
            username: format!("user{id}"),
            email: format!("user{id}@example.com"),
        })
        .collect()
}

const TTL_SECS: u64 = 600;

// Ours. `small(cache, 1)` stores `bench:small:1`, which the hand-written
// baseline reads too.
#[redis_cached(key = "bench:small:{id}", ttl = 600, cache = cache)]
async fn small(cache: &Cache, id: i64) -> User {
    users(1).remove(0)
}

#[redis_cached(key = "bench:large:{id}", ttl = 600, cache = cache)]
async fn large(cache: &Cache, id: i64) -> Vec<User> {
    users(1000)
}

// Ours with the local tier, on keys of their own so that every case reads
// an entry it stored itself.
#[redis_cached(key = "bench:small-binary:{id}", ttl = 600, format = "binary", cache = cache)]
async fn small_binary(cache: &Cache, id: i64) -> User {
    users(1).remove(0)
}

#[redis_cached(key = "bench:large-binary:{id}", ttl = 600, format = "binary", cache = cache)]
async fn large_binary(cache: &Cache, id: i64) -> Vec<User> {
    users(1000)
}

#[redis_cached(key = "bench:small-local:{id}", ttl = 600, cache = cache, local = true)]
async fn small_local(cache: &Cache, id: i64) -> User {
    users(1).remove(0)
}

#[redis_cached(key = "bench:large-local:{id}", ttl = 600, cache = cache, local = true)]
async fn large_local(cache: &Cache, id: i64) -> Vec<User> {
    users(1000)
}

#[redis_cached(key = "bench:small-local-arc:{id}", ttl = 600, cache = cache, local = true)]
async fn small_local_arc(cache: &Cache, id: i64) -> Arc<User> {
    Arc::new(users(1).remove(0))
}

#[redis_cached(key = "bench:large-local-arc:{id}", ttl = 600, cache = cache, local = true)]
async fn large_local_arc(cache: &Cache, id: i64) -> Arc<Vec<User>> {
    Arc::new(users(1000))
}

/// Only for its future's size: a body that keeps 4 KB across an `.await`,
/// which a cached call's future should hold once.
#[redis_cached(key = "bench:wide-body:{id}", ttl = 600, cache = cache)]
async fn wide_body(cache: &Cache, id: i64) -> u8 {
    let buffer = [id as u8; 4096];
    tokio::task::yield_now().await;
    buffer[(id as usize) % buffer.len()]
}

// The `cached` crate: with `redis = true` on an `async fn`, the store is an
// `AsyncRedisCache` built on first use from `CACHED_REDIS_CONNECTION_STRING`.
// Its Redis path only takes `Result` functions.
#[concurrent_cached(redis = true, ttl_secs = 600, cache_prefix_block = { "bench-small" })]
async fn cached_small(_id: i64) -> Result<User, cached::RedisCacheError> {
    Ok(users(1).remove(0))
}

#[concurrent_cached(redis = true, ttl_secs = 600, cache_prefix_block = { "bench-large" })]
async fn cached_large(_id: i64) -> Result<Vec<User>, cached::RedisCacheError> {
    Ok(users(1000))
}

// The baseline: what a person writes by hand with redis-rs and serde_json,
// reading and writing our envelope.

#[derive(Serialize)]
struct EnvelopeRef<'a, T> {
    v: u32,
    data: &'a T,
}

#[derive(Deserialize)]
struct Envelope<T> {
    v: u32,
    data: T,
}

async fn hand_written<T: Serialize + DeserializeOwned>(
    mut conn: MultiplexedConnection,
    key: String,
    body: impl FnOnce() -> T,
) -> T {
    if let Ok(Some(bytes)) = conn.get::<_, Option<Vec<u8>>>(&key).await
        && let Ok(entry) = serde_json::from_slice::<Envelope<T>>(&bytes)
        && entry.v == 1
    {
        return entry.data;
    }
    let value = body();
    if let Ok(bytes) = serde_json::to_vec(&EnvelopeRef { v: 1, data: &value }) {
        let _: redis::RedisResult<()> = conn.pset_ex(&key, bytes, TTL_SECS * 1000).await;
    }
    value
}

/// The leanest hand-written hit: the connection's own `send_packed_command`,
/// without the two boxed futures of `AsyncCommands::get` and
/// `ConnectionLike::req_packed_command`. Only in the allocation table, to
/// tell exactly which allocations of our hit the baseline does not make.
async fn hand_written_lean<T: DeserializeOwned>(
    conn: &MultiplexedConnection,
    key: String,
) -> Option<T> {
    let mut conn = conn.clone();
    let reply = conn
        .send_packed_command(redis::cmd("GET").arg(&key))
        .await
        .ok()?;
    let redis::Value::BulkString(bytes) = reply else {
        return None;
    };
    let entry: Envelope<T> = serde_json::from_slice(&bytes).ok()?;
    (entry.v == 1).then_some(entry.data)
}

// ---------------------------------------------------------------------------
// The cases.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    HandWritten,
    /// The same code, on a connection whose task runs on a thread of its
    /// own, as ours is with `ConnectionPlacement::IoThread` (see
    /// [`connect_on_own_thread`]). Hits only.
    HandWrittenOwnThread,
    /// Allocation table only (hits only): see [`hand_written_lean`].
    HandWrittenLean,
    RedisCached,
    /// Ours, the connection driven on the cache's own thread. Hits only.
    RedisCachedIoThread,
    Cached,
    /// `format = "binary"`: postcard for the small value, bitcode (LZ4)
    /// for the large one.
    RedisCachedBinary,
    /// `local = true`, the value cloned on each hit.
    LocalTier,
    /// `local = true` on an `Arc` of the value. Hits only.
    LocalTierArc,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::HandWritten => "hand-written GET + serde_json (baseline)",
            Case::HandWrittenOwnThread => "hand-written, connection on its own thread",
            Case::HandWrittenLean => "hand-written, lean (send_packed_command)",
            Case::RedisCached => "#[redis_cached]",
            Case::RedisCachedIoThread => "#[redis_cached], connection on the I/O thread",
            Case::Cached => "cached 4.1 #[concurrent_cached(redis = true)]",
            Case::RedisCachedBinary => "#[redis_cached(format = \"binary\")]",
            Case::LocalTier => "#[redis_cached(local = true)]",
            Case::LocalTierArc => "#[redis_cached(local = true)] -> Arc<_>",
        }
    }
}

/// The cases timed on each path, the baseline first.
const HIT_CASES: [Case; 8] = [
    Case::HandWritten,
    Case::HandWrittenOwnThread,
    Case::RedisCached,
    Case::RedisCachedIoThread,
    Case::Cached,
    Case::RedisCachedBinary,
    Case::LocalTier,
    Case::LocalTierArc,
];
const MISS_CASES: [Case; 5] = [
    Case::HandWritten,
    Case::RedisCached,
    Case::Cached,
    Case::RedisCachedBinary,
    Case::LocalTier,
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Size {
    Small,
    Large,
}

impl Size {
    fn label(self) -> &'static str {
        match self {
            Size::Small => "small value (1 user)",
            Size::Large => "large value (1,000 users)",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Hit,
    Miss,
}

/// The key every hit reads.
const HIT_ID: i64 = 1;
/// Fresh ids for misses, shared by all cases so that no key is reused.
static FRESH_ID: AtomicI64 = AtomicI64::new(1_000_000);

struct Ctx {
    cache: Cache,
    /// The same server, its connection driven on the cache's own thread.
    cache_io_thread: Cache,
    /// Driven by a task on the benchmark's runtime, as redis-rs does by default.
    conn: MultiplexedConnection,
    /// Driven by a task on a runtime of its own, on its own thread.
    own_thread_conn: MultiplexedConnection,
}

/// A connection whose task runs on a single-threaded runtime on a thread of
/// its own, as our cache's connection does with
/// `ConnectionPlacement::IoThread` (`cache-runtime-io`): it tells
/// apart what our macro costs from what that placement changes.
fn connect_on_own_thread(url: String) -> MultiplexedConnection {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("bench-own-io".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a Tokio runtime");
            runtime.block_on(async move {
                let client = redis::Client::open(url).unwrap();
                let conn = client.get_multiplexed_async_connection().await.unwrap();
                sender.send(conn).unwrap();
                std::future::pending::<()>().await
            })
        })
        .expect("a thread");
    receiver.recv().expect("the connection")
}

/// One call of `case`.
async fn call(ctx: &'static Ctx, case: Case, size: Size, path: Path) {
    let id = match path {
        Path::Hit => HIT_ID,
        Path::Miss => FRESH_ID.fetch_add(1, Relaxed),
    };
    match (case, size) {
        (Case::HandWritten, Size::Small) => {
            let key = format!("bench:small:{id}");
            black_box(hand_written(ctx.conn.clone(), key, || users(1).remove(0)).await);
        }
        (Case::HandWritten, Size::Large) => {
            let key = format!("bench:large:{id}");
            black_box(hand_written(ctx.conn.clone(), key, || users(1000)).await);
        }
        (Case::HandWrittenOwnThread, Size::Small) => {
            let key = format!("bench:small:{id}");
            let conn = ctx.own_thread_conn.clone();
            black_box(hand_written(conn, key, || users(1).remove(0)).await);
        }
        (Case::HandWrittenOwnThread, Size::Large) => {
            let key = format!("bench:large:{id}");
            let conn = ctx.own_thread_conn.clone();
            black_box(hand_written(conn, key, || users(1000)).await);
        }
        (Case::HandWrittenLean, Size::Small) => {
            let key = format!("bench:small:{id}");
            black_box(hand_written_lean::<User>(&ctx.conn, key).await.unwrap());
        }
        (Case::HandWrittenLean, Size::Large) => {
            let key = format!("bench:large:{id}");
            black_box(
                hand_written_lean::<Vec<User>>(&ctx.conn, key)
                    .await
                    .unwrap(),
            );
        }
        (Case::RedisCached, Size::Small) => {
            black_box(small(&ctx.cache, id).await);
        }
        (Case::RedisCached, Size::Large) => {
            black_box(large(&ctx.cache, id).await);
        }
        (Case::RedisCachedIoThread, Size::Small) => {
            black_box(small(&ctx.cache_io_thread, id).await);
        }
        (Case::RedisCachedIoThread, Size::Large) => {
            black_box(large(&ctx.cache_io_thread, id).await);
        }
        (Case::Cached, Size::Small) => {
            black_box(cached_small(id).await.unwrap());
        }
        (Case::Cached, Size::Large) => {
            black_box(cached_large(id).await.unwrap());
        }
        (Case::LocalTier, Size::Small) => {
            black_box(small_local(&ctx.cache, id).await);
        }
        (Case::LocalTier, Size::Large) => {
            black_box(large_local(&ctx.cache, id).await);
        }
        (Case::RedisCachedBinary, Size::Small) => {
            black_box(small_binary(&ctx.cache, id).await);
        }
        (Case::RedisCachedBinary, Size::Large) => {
            black_box(large_binary(&ctx.cache, id).await);
        }
        (Case::LocalTierArc, Size::Small) => {
            black_box(small_local_arc(&ctx.cache, id).await);
        }
        (Case::LocalTierArc, Size::Large) => {
            black_box(large_local_arc(&ctx.cache, id).await);
        }
    }
}

// ---------------------------------------------------------------------------
// Measuring.

struct Plan {
    rounds: usize,
    /// Sequential calls per case and round, small and large.
    sequential: [usize; 2],
    /// Calls per case and round across the 64 tasks, small and large.
    concurrent: [usize; 2],
    /// Calls per allocation batch, small and large.
    alloc_calls: [usize; 2],
}

const TASKS: usize = 64;

#[derive(Clone, Copy)]
struct Sample {
    median: Duration,
    p99: Duration,
    per_second: f64,
}

async fn sequential(ctx: &'static Ctx, case: Case, size: Size, path: Path, n: usize) -> Sample {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        call(ctx, case, size, path).await;
        samples.push(started.elapsed());
    }
    samples.sort();
    Sample {
        median: samples[n / 2],
        p99: samples[n * 99 / 100],
        per_second: 0.0,
    }
}

async fn concurrent(ctx: &'static Ctx, case: Case, size: Size, path: Path, n: usize) -> f64 {
    let per_task = n.div_ceil(TASKS);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        set.spawn(async move {
            for _ in 0..per_task {
                call(ctx, case, size, path).await;
            }
        });
    }
    while let Some(joined) = set.join_next().await {
        joined.expect("a benchmark task panicked");
    }
    (TASKS * per_task) as f64 / started.elapsed().as_secs_f64()
}

async fn measure(ctx: &'static Ctx, plan: &Plan, case: Case, size: Size, path: Path) -> Sample {
    let i = size as usize;
    // Warm up (and, for a hit, make sure the entry is there).
    for _ in 0..plan.sequential[i] / 10 + 1 {
        call(ctx, case, size, path).await;
    }
    let mut sample = sequential(ctx, case, size, path, plan.sequential[i]).await;
    // Local hits are ~100x faster: more calls, so that spawning the tasks
    // is not most of what the throughput measures.
    let local_hit = path == Path::Hit && matches!(case, Case::LocalTier | Case::LocalTierArc);
    let calls = plan.concurrent[i] * if local_hit { 20 } else { 1 };
    sample.per_second = concurrent(ctx, case, size, path, calls).await;
    if path == Path::Miss {
        // Drop the fresh entries (up to ~150 MB per large case), untimed.
        // The hit entries go too; the next hit case's warm-up restores them.
        let _: () = redis::cmd("FLUSHDB")
            .query_async(&mut ctx.conn.clone())
            .await
            .expect("FLUSHDB");
    }
    sample
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn range(values: &[f64]) -> (f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// A ratio's median over rounds, with its range.
fn ratio_text(ratios: &[f64]) -> String {
    let (min, max) = range(ratios);
    format!("{:.2} ({min:.2}–{max:.2})", median(ratios.to_vec()))
}

/// `f(case, baseline)` for each round.
fn per_round(rounds: &[Sample], base: &[Sample], f: fn(&Sample, &Sample) -> f64) -> Vec<f64> {
    rounds.iter().zip(base).map(|(s, b)| f(s, b)).collect()
}

fn latency_ratio(case: &Sample, base: &Sample) -> f64 {
    case.median.as_secs_f64() / base.median.as_secs_f64()
}

/// Throughput as a cost, like latency: above 1 is slower than the baseline.
fn cost_ratio(case: &Sample, base: &Sample) -> f64 {
    base.per_second / case.per_second
}

/// Times every case of `path` for `size` in rotating rounds, prints the table
/// and returns each case's samples, one per round.
async fn compare(
    ctx: &'static Ctx,
    plan: &Plan,
    size: Size,
    path: Path,
    cases: &[Case],
) -> Vec<(Case, Vec<Sample>)> {
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); cases.len()];
    for round in 0..plan.rounds {
        for k in 0..cases.len() {
            let index = (k + round) % cases.len();
            samples[index].push(measure(ctx, plan, cases[index], size, path).await);
        }
    }
    let base = &samples[0];
    let path_label = match path {
        Path::Hit => "hit",
        Path::Miss => "miss (fresh key: lookup + body + store)",
    };
    println!();
    println!("{path_label}, {}", size.label());
    println!();
    println!("| case | median | p99 | 64 tasks | median × | p99 × | 64 tasks, cost × |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (case, rounds) in cases.iter().zip(&samples) {
        // Sub-microsecond figures (local hits) with two decimals.
        let micros = |f: fn(&Sample) -> Duration| {
            let value = median(rounds.iter().map(|s| f(s).as_secs_f64() * 1e6).collect());
            if value < 10.0 {
                format!("{value:.2}")
            } else {
                format!("{value:.1}")
            }
        };
        let latency = per_round(rounds, base, latency_ratio);
        let p99 = per_round(rounds, base, |s, b| {
            s.p99.as_secs_f64() / b.p99.as_secs_f64()
        });
        let cost = per_round(rounds, base, cost_ratio);
        println!(
            "| {} | {} µs | {} µs | {:.0}/s | {} | {} | {} |",
            case.label(),
            micros(|s| s.median),
            micros(|s| s.p99),
            median(rounds.iter().map(|s| s.per_second).collect()),
            ratio_text(&latency),
            ratio_text(&p99),
            ratio_text(&cost),
        );
    }
    cases.iter().copied().zip(samples).collect()
}

/// Allocations and bytes per call of `case`, averaged over five batches,
/// with the lowest and highest batch's allocations per call.
///
/// The count is process-wide: background work (the cache's once-a-second
/// health check, a few allocations) adds well under 0.01 per call.
async fn allocations(
    ctx: &'static Ctx,
    plan: &Plan,
    case: Case,
    size: Size,
    path: Path,
) -> AllocCount {
    let calls = plan.alloc_calls[size as usize];
    for _ in 0..calls / 10 + 1 {
        call(ctx, case, size, path).await;
    }
    const BATCHES: usize = 5;
    let mut batches = Vec::with_capacity(BATCHES);
    let (allocations, bytes) = (ALLOCATIONS.load(Relaxed), ALLOCATED_BYTES.load(Relaxed));
    for _ in 0..BATCHES {
        let before = ALLOCATIONS.load(Relaxed);
        COUNTING.store(true, Relaxed);
        for _ in 0..calls {
            call(ctx, case, size, path).await;
        }
        COUNTING.store(false, Relaxed);
        batches.push((ALLOCATIONS.load(Relaxed) - before) as f64 / calls as f64);
    }
    let all_calls = (BATCHES * calls) as f64;
    let (min, max) = range(&batches);
    if path == Path::Miss {
        let _: () = redis::cmd("FLUSHDB")
            .query_async(&mut ctx.conn.clone())
            .await
            .expect("FLUSHDB");
    }
    AllocCount {
        allocations: (ALLOCATIONS.load(Relaxed) - allocations) as f64 / all_calls,
        bytes: (ALLOCATED_BYTES.load(Relaxed) - bytes) as f64 / all_calls,
        min,
        max,
    }
}

#[derive(Clone, Copy)]
struct AllocCount {
    /// Per call, over all batches.
    allocations: f64,
    bytes: f64,
    /// The lowest and highest batch's allocations per call.
    min: f64,
    max: f64,
}

async fn allocation_table(ctx: &'static Ctx, plan: &Plan) -> Vec<((Case, Size, Path), AllocCount)> {
    println!();
    println!(
        "allocations per call (counting global allocator, all threads): mean over 5 batches of {} / {} calls (small / large), with the lowest and highest batch",
        plan.alloc_calls[0], plan.alloc_calls[1]
    );
    println!();
    println!("| path | case | small: allocs | small: bytes | large: allocs | large: bytes |");
    println!("|---|---|---:|---:|---:|---:|");
    let rows = [
        (Path::Hit, Case::HandWritten),
        (Path::Hit, Case::HandWrittenOwnThread),
        (Path::Hit, Case::HandWrittenLean),
        (Path::Hit, Case::RedisCached),
        (Path::Hit, Case::RedisCachedIoThread),
        (Path::Hit, Case::Cached),
        (Path::Hit, Case::RedisCachedBinary),
        (Path::Hit, Case::LocalTier),
        (Path::Hit, Case::LocalTierArc),
        (Path::Miss, Case::HandWritten),
        (Path::Miss, Case::RedisCached),
        (Path::Miss, Case::Cached),
        (Path::Miss, Case::RedisCachedBinary),
        (Path::Miss, Case::LocalTier),
    ];
    let mut counts = Vec::new();
    for (path, case) in rows {
        let mut cells = Vec::new();
        for size in [Size::Small, Size::Large] {
            let count = allocations(ctx, plan, case, size, path).await;
            counts.push(((case, size, path), count));
            cells.push(format!(
                "{:.2} ({:.2}–{:.2}) | {:.0}",
                count.allocations, count.min, count.max, count.bytes
            ));
        }
        let path = match path {
            Path::Hit => "hit",
            Path::Miss => "miss",
        };
        println!(
            "| {path} | {} | {} | {} |",
            case.label(),
            cells[0],
            cells[1]
        );
    }
    counts
}

/// `--alloc-sites [large] [miss]`: every allocation one call makes (a small
/// hit unless told otherwise), ours and the baselines', grouped by stack.
async fn print_alloc_sites(ctx: &'static Ctx, size: Size, path: Path) {
    let cases: &[Case] = match path {
        Path::Hit => &[Case::HandWrittenLean, Case::HandWritten, Case::RedisCached],
        Path::Miss => &[Case::HandWritten, Case::RedisCached],
    };
    for &case in cases {
        for _ in 0..100 {
            call(ctx, case, size, path).await;
        }
        sites::take();
        sites::ON.store(true, Relaxed);
        COUNTING.store(true, Relaxed);
        call(ctx, case, size, path).await;
        COUNTING.store(false, Relaxed);
        sites::ON.store(false, Relaxed);
        let recorded = sites::take();
        // Group identical stacks, in order of first appearance.
        let mut groups: Vec<(Vec<String>, String, usize, usize)> = Vec::new();
        for (bytes, thread, trace) in &recorded {
            let frames = sites::frames(trace, 12);
            match groups
                .iter_mut()
                .find(|(f, t, _, _)| *f == frames && t == thread)
            {
                Some(group) => {
                    group.2 += 1;
                    group.3 += bytes;
                }
                None => groups.push((frames, thread.clone(), 1, *bytes)),
            }
        }
        println!();
        println!(
            "{}, {}: {} allocations, {} bytes",
            case.label(),
            size.label(),
            recorded.len(),
            recorded.iter().map(|(bytes, _, _)| bytes).sum::<usize>()
        );
        for (frames, thread, count, bytes) in groups {
            println!("  {count} × ({bytes} B in all) on thread {thread}");
            for frame in frames {
                println!("      {frame}");
            }
        }
    }
}

// ---------------------------------------------------------------------------

fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown CPU", |(_, model)| model.trim())
        .to_owned();
    let meminfo = read("/proc/meminfo");
    let ram_gib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}, {ram_gib:.1} GiB RAM")
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let size = if args.iter().any(|a| a == "large") {
        Size::Large
    } else {
        Size::Small
    };
    let path = if args.iter().any(|a| a == "miss") {
        Path::Miss
    } else {
        Path::Hit
    };
    let profile = args.iter().position(|a| a == "--profile").map(|i| {
        let case = match args.get(i + 1).map(String::as_str) {
            Some("hand-written") => Case::HandWritten,
            Some("own-thread") => Case::HandWrittenOwnThread,
            Some("lean") => Case::HandWrittenLean,
            Some("redis_cached") => Case::RedisCached,
            Some("io-thread") => Case::RedisCachedIoThread,
            Some("cached") => Case::Cached,
            Some("binary") => Case::RedisCachedBinary,
            Some("local") => Case::LocalTier,
            Some("local-arc") => Case::LocalTierArc,
            _ => panic!(
                "--profile takes hand-written, own-thread, lean, redis_cached, io-thread, cached, binary, local or local-arc, then a number of calls"
            ),
        };
        let calls = args
            .get(i + 2)
            .and_then(|n| n.parse().ok())
            .expect("--profile CASE CALLS");
        (case, calls)
    });
    let mode = if let Some((case, calls)) = profile {
        Mode::Profile(case, size, path, calls, args.iter().any(|a| a == "tasks"))
    } else if args.iter().any(|a| a == "--alloc-sites") {
        Mode::AllocSites(size, path)
    } else if args.iter().any(|a| a == "--allocs") {
        Mode::Allocations
    } else {
        Mode::Everything
    };
    let plan = if quick {
        Plan {
            rounds: 4,
            sequential: [2_000, 200],
            concurrent: [6_400, 256],
            alloc_calls: [200, 20],
        }
    } else {
        Plan {
            rounds: 12,
            sequential: [10_000, 2_000],
            concurrent: [64_000, 2_560],
            alloc_calls: [2_000, 200],
        }
    };

    // `--recorder`: the cache records through a real `metrics` recorder (the
    // Prometheus exporter's, as the demo installs it), installed before the
    // first cached call; without it, recording is a no-op.
    if args.iter().any(|a| a == "--recorder") {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("no recorder installed yet");
        println!("recorder: metrics-exporter-prometheus installed (--recorder)");
    }
    let server = RedisServer::start();
    // `#[concurrent_cached(redis = true)]` reads its server from the
    // environment. Set it before any other thread exists.
    // SAFETY: the process is still single-threaded here.
    unsafe { std::env::set_var("CACHED_REDIS_CONNECTION_STRING", server.url()) };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    runtime.block_on(run(&server, &plan, mode));
}

enum Mode {
    Everything,
    /// `--allocs`: the allocation table only.
    Allocations,
    /// `--alloc-sites [large] [miss]`.
    AllocSites(Size, Path),
    /// `--profile CASE CALLS [large] [miss] [tasks]`: only that many calls
    /// of one case, sequential or (`tasks`) over 64 tasks, for a profiler
    /// (`valgrind --tool=callgrind`, `perf`): the difference between two runs
    /// with different counts is what the calls cost.
    Profile(Case, Size, Path, usize, bool),
}

async fn run(server: &RedisServer, plan: &Plan, mode: Mode) {
    let client = redis::Client::open(server.url()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    let ctx: &'static Ctx = Box::leak(Box::new(Ctx {
        // Local copies live as long as the entries, so that no local-tier
        // case falls back to Redis in the middle of a run.
        cache: server
            .cache_builder()
            .local_tier(LocalTierSettings::new().max_ttl(Duration::from_secs(TTL_SECS)))
            .build()
            .expect("a cache"),
        cache_io_thread: server
            .cache_builder()
            .connection_placement(ConnectionPlacement::IoThread)
            .build()
            .expect("a cache"),
        conn,
        own_thread_conn: connect_on_own_thread(server.url()),
    }));
    // Make the entries every hit reads, and check the cases agree.
    let a = small(&ctx.cache, HIT_ID).await;
    let b = hand_written_lean::<User>(&ctx.conn, format!("bench:small:{HIT_ID}"))
        .await
        .expect("the baseline reads the macro's entry");
    let c = cached_small(HIT_ID).await.unwrap();
    assert_eq!((a.id, &a.email), (b.id, &b.email));
    assert_eq!((a.id, &a.email), (c.id, &c.email));
    large(&ctx.cache, HIT_ID).await;
    cached_large(HIT_ID).await.unwrap();
    // The local tier serves nothing until it listens to Redis, and Redis
    // reports the warm-up's own stores back, which drops their copies: make
    // sure the local cases measure local hits.
    for case in [Case::LocalTier, Case::LocalTierArc] {
        for size in [Size::Small, Size::Large] {
            let started = Instant::now();
            loop {
                let (_, outcome) =
                    cache_runtime::track_outcome(call(ctx, case, size, Path::Hit)).await;
                if outcome == Some(cache_runtime::Outcome::Local) {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "{case:?} gives no local hit: {outcome:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    match mode {
        Mode::AllocSites(size, path) => return print_alloc_sites(ctx, size, path).await,
        Mode::Profile(case, size, path, calls, false) => {
            for _ in 0..calls {
                call(ctx, case, size, path).await;
            }
            return;
        }
        Mode::Profile(case, size, path, calls, true) => {
            let per_second = concurrent(ctx, case, size, path, calls).await;
            return println!("{per_second:.0} calls/s over {TASKS} tasks");
        }
        Mode::Everything | Mode::Allocations => {}
    }

    let mut info_conn = ctx.conn.clone();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut info_conn)
        .await
        .unwrap();
    let redis_version = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let mut sizes = Vec::new();
    for pattern in [
        "bench:small:1",
        "bench:large:1",
        "*bench-small*",
        "*bench-large*",
    ] {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut info_conn)
            .await
            .unwrap();
        let key = keys.first().expect("the entry was stored");
        let len: usize = redis::cmd("STRLEN")
            .arg(key)
            .query_async(&mut info_conn)
            .await
            .unwrap();
        sizes.push(len);
    }

    println!("peer benchmark: cargo bench -p cache-tests --bench peers");
    println!("machine: {}", machine());
    println!(
        "redis-server {redis_version} on 127.0.0.1 (loopback), one server for every case; load average at start: {}",
        load_average()
    );
    println!(
        "entries: small {} B JSON (ours, read by the baseline too) / {} B MessagePack (cached); large {} B JSON / {} B MessagePack",
        sizes[0], sizes[2], sizes[1], sizes[3]
    );
    // A future is moved (copied) when it is wrapped or awaited: the larger,
    // the more each call copies, beside the value itself.
    println!(
        "future sizes (small hit): #[redis_cached] {} B (local = true: {} B; with a body holding 4,096 B: {} B), hand-written {} B, lean {} B, cached {} B",
        std::mem::size_of_val(&small(&ctx.cache, HIT_ID)),
        std::mem::size_of_val(&small_local(&ctx.cache, HIT_ID)),
        std::mem::size_of_val(&wide_body(&ctx.cache, HIT_ID)),
        std::mem::size_of_val(&hand_written(ctx.conn.clone(), String::new(), || {
            users(1).remove(0)
        })),
        std::mem::size_of_val(&hand_written_lean::<User>(&ctx.conn, String::new())),
        std::mem::size_of_val(&cached_small(HIT_ID)),
    );
    if let Mode::Everything = mode {
        println!(
            "{} rounds, case order rotating; per case and round: {} / {} sequential calls (small / large), then {} / {} calls (20 times as many for local hits) over {TASKS} tasks on a {}-worker Tokio runtime",
            plan.rounds,
            plan.sequential[0],
            plan.sequential[1],
            plan.concurrent[0],
            plan.concurrent[1],
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        );
        println!(
            "figures: medians over rounds; ratios: median (and range) over rounds of case / baseline in the same round; above 1 is slower"
        );
    }

    let mut hits = Vec::new();
    if let Mode::Everything = mode {
        for size in [Size::Small, Size::Large] {
            hits.push((size, compare(ctx, plan, size, Path::Hit, &HIT_CASES).await));
            compare(ctx, plan, size, Path::Miss, &MISS_CASES).await;
        }
    }

    let counts = allocation_table(ctx, plan).await;
    // The allocation table's misses flushed the hit entries: nothing reads
    // them after this point.

    println!();
    println!(
        "targets: #[redis_cached] hit ≤ 1.05× the hand-written baseline; no allocation the baseline does not make; a local hit ≥ 100× faster than a Redis hit"
    );
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    for size in [Size::Small, Size::Large] {
        let allocs = |case: Case| {
            counts
                .iter()
                .find(|((c, s, p), _)| *c == case && *s == size && *p == Path::Hit)
                .map(|(_, count)| count.allocations)
                .unwrap()
        };
        let mut timing = String::new();
        if let Some((_, samples)) = hits.iter().find(|(s, _)| *s == size) {
            let rounds = |case: Case| {
                &samples
                    .iter()
                    .find(|(c, _)| *c == case)
                    .expect("every hit case was timed")
                    .1
            };
            let (base, ours) = (rounds(Case::HandWritten), rounds(Case::RedisCached));
            let latency = median(per_round(ours, base, latency_ratio));
            let cost = median(per_round(ours, base, cost_ratio));
            timing = format!(
                "Redis hit latency {latency:.2}× ({}), throughput cost {cost:.2}× ({}); ",
                verdict(latency <= 1.05),
                verdict(cost <= 1.05)
            );
            let io_thread = rounds(Case::RedisCachedIoThread);
            let latency = median(per_round(io_thread, base, latency_ratio));
            let cost = median(per_round(io_thread, base, cost_ratio));
            timing.push_str(&format!(
                "with the connection on the I/O thread {latency:.2}× ({}), {cost:.2}× ({}); ",
                verdict(latency <= 1.05),
                verdict(cost <= 1.05)
            ));
            // How many times faster than our Redis hit, per round.
            for case in [Case::LocalTier, Case::LocalTierArc] {
                let speedup = median(per_round(ours, rounds(case), latency_ratio));
                // The local case's throughput over ours.
                let throughput = median(per_round(ours, rounds(case), cost_ratio));
                timing.push_str(&format!(
                    "{}: a local hit {speedup:.0}× faster than the Redis hit ({}), {:.0}× its throughput; ",
                    case.label(),
                    verdict(speedup >= 100.0),
                    throughput
                ));
            }
        }
        println!(
            "- {}: {timing}allocations per hit {:.2}, baseline {:.2}, lean baseline {:.2}, local {:.2}, local Arc {:.2}",
            size.label(),
            allocs(Case::RedisCached),
            allocs(Case::HandWritten),
            allocs(Case::HandWrittenLean),
            allocs(Case::LocalTier),
            allocs(Case::LocalTierArc),
        );
    }
    println!("load average at end: {}", load_average());
}
