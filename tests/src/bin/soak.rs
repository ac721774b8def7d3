//! The fault and soak program: many concurrent callers of a cached function
//! against a real `redis-server`, while faults are injected in turn: kill and
//! restart, SIGSTOP/SIGCONT, CLIENT PAUSE, CLIENT KILL, maxmemory with
//! noeviction, DEBUG SLEEP and corrupted values. Every result is checked
//! against the uncached function. Prints one line of figures.
//!
//! Run: `cargo run --release -p cache-tests --bin soak -- [--seconds 45]`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, Outcome, redis_cached, track_outcome};
use cache_tests::RedisServer;
use redis::Commands;

const CALLERS: usize = 32;
const HOT_KEYS: u64 = 64;
const DEADLINE: Duration = Duration::from_millis(50);
const BODY: Duration = Duration::from_millis(2);

/// What the cached function must always return.
fn expected(id: u64) -> u64 {
    id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7
}

#[redis_cached(key = "soak:{id}", ttl = 2, lock = true, cache = cache)]
async fn compute(cache: &Cache, id: u64) -> u64 {
    tokio::time::sleep(BODY).await;
    expected(id)
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    KillRestart,
    Stop,
    ClientPause,
    ClientKill,
    MaxMemory,
    DebugSleep,
    Corrupt,
}

const FAULTS: [Fault; 7] = [
    Fault::KillRestart,
    Fault::Stop,
    Fault::ClientPause,
    Fault::ClientKill,
    Fault::MaxMemory,
    Fault::DebugSleep,
    Fault::Corrupt,
];

#[derive(Default)]
struct Figures {
    calls: AtomicU64,
    wrong: AtomicU64,
    failed: AtomicU64,
    late: AtomicU64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: u64 = std::env::args()
        .skip_while(|arg| arg != "--seconds")
        .nth(1)
        .map_or(45, |s| s.parse().expect("--seconds takes a whole number"));
    let run_for = Duration::from_secs(seconds);

    let mut server = RedisServer::start_with(vec!["--enable-debug-command".into(), "yes".into()]);
    let cache = Arc::new(
        Cache::builder()
            .url(server.url())
            .deadline(DEADLINE)
            .connect_timeout(Duration::from_millis(500))
            .lock_wait(Duration::from_millis(200))
            .build()
            .expect("cache"),
    );
    let figures = Arc::new(Figures::default());
    let under_fault = Arc::new(AtomicBool::new(false));
    let fault_latencies = Arc::new(std::sync::Mutex::new(Vec::<Duration>::new()));
    let stop = Arc::new(AtomicBool::new(false));

    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..CALLERS {
        let (cache, figures, under_fault, fault_latencies, stop) = (
            cache.clone(),
            figures.clone(),
            under_fault.clone(),
            fault_latencies.clone(),
            stop.clone(),
        );
        callers.spawn(async move {
            let mut id = caller as u64;
            while !stop.load(Ordering::Relaxed) {
                id = (id * 31 + 7) % HOT_KEYS;
                let started = Instant::now();
                let result = tokio::spawn({
                    let cache = cache.clone();
                    async move { compute(&cache, id).await }
                })
                .await;
                let took = started.elapsed();
                figures.calls.fetch_add(1, Ordering::Relaxed);
                match result {
                    Ok(value) if value == expected(id) => {}
                    Ok(_) => {
                        figures.wrong.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        figures.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if took > DEADLINE + BODY {
                    figures.late.fetch_add(1, Ordering::Relaxed);
                }
                if under_fault.load(Ordering::Relaxed) {
                    fault_latencies.lock().unwrap().push(took);
                }
            }
        });
    }

    // Inject faults in turn: each lasts a second, then a recovery period
    // measures how long until a call is a cache hit again.
    let started = Instant::now();
    let mut faults = 0u64;
    let mut recoveries: Vec<Duration> = Vec::new();
    let mut next = 0;
    while started.elapsed() + Duration::from_secs(3) < run_for {
        let fault = FAULTS[next % FAULTS.len()];
        next += 1;
        faults += 1;
        under_fault.store(true, Ordering::Relaxed);
        inject(&mut server, fault).await;
        under_fault.store(false, Ordering::Relaxed);
        recoveries.push(time_to_first_hit(&cache).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    while callers.join_next().await.is_some() {}

    // Locks are released when their call ends (in the background after a
    // panic or cancellation); give those a moment, well under the lease.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leaked: Vec<String> = server.client().keys("*#lock").unwrap_or_default();

    let mut latencies = fault_latencies.lock().unwrap().clone();
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    let worst_recovery = recoveries.iter().max().copied().unwrap_or_default();
    println!(
        "seconds={} calls={} faults={} wrong={} failed={} late={} fault_p50_ms={:.1} fault_p99_ms={:.1} fault_max_ms={:.1} first_hit_after_recovery_max_ms={:.0} leaked_locks={}",
        started.elapsed().as_secs(),
        figures.calls.load(Ordering::Relaxed),
        faults,
        figures.wrong.load(Ordering::Relaxed),
        figures.failed.load(Ordering::Relaxed),
        figures.late.load(Ordering::Relaxed),
        ms(percentile(0.5)),
        ms(percentile(0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
        ms(worst_recovery),
        leaked.len(),
    );
}

/// Applies one fault for about a second, then undoes it.
async fn inject(server: &mut RedisServer, fault: Fault) {
    let hold = Duration::from_secs(1);
    match fault {
        Fault::KillRestart => {
            server.kill();
            tokio::time::sleep(hold).await;
            server.restart();
        }
        Fault::Stop => {
            server.pause();
            tokio::time::sleep(hold).await;
            server.resume();
        }
        Fault::ClientPause => {
            let _: redis::RedisResult<()> = redis::cmd("CLIENT")
                .arg(&["PAUSE", "1000", "ALL"][..])
                .query(&mut server.client());
            tokio::time::sleep(hold).await;
        }
        Fault::ClientKill => {
            let _: redis::RedisResult<u64> = redis::cmd("CLIENT")
                .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"][..])
                .query(&mut server.client());
            tokio::time::sleep(hold).await;
        }
        Fault::MaxMemory => {
            let mut admin = server.client();
            let _: redis::RedisResult<()> = redis::cmd("CONFIG")
                .arg(&["SET", "maxmemory-policy", "noeviction"][..])
                .query(&mut admin);
            let _: redis::RedisResult<()> = redis::cmd("CONFIG")
                .arg(&["SET", "maxmemory", "1"][..])
                .query(&mut admin);
            tokio::time::sleep(hold).await;
            let _: redis::RedisResult<()> = redis::cmd("CONFIG")
                .arg(&["SET", "maxmemory", "0"][..])
                .query(&mut admin);
        }
        Fault::DebugSleep => {
            // Blocks the server for 0.8 s from a thread of its own.
            let url = server.url();
            let sleeper = std::thread::spawn(move || {
                let client = redis::Client::open(url).unwrap();
                if let Ok(mut connection) = client.get_connection() {
                    let _: redis::RedisResult<()> = redis::cmd("DEBUG")
                        .arg(&["SLEEP", "0.8"][..])
                        .query(&mut connection);
                }
            });
            tokio::time::sleep(hold).await;
            let _ = sleeper.join();
        }
        Fault::Corrupt => {
            let mut admin = server.client();
            for id in 0..HOT_KEYS {
                let garbage: &[u8] = if id % 2 == 0 {
                    b"\xff\xfe garbage"
                } else {
                    br#"{"v":1,"data":"not a number"}"#
                };
                let _: redis::RedisResult<()> = admin.set(format!("soak:{id}"), garbage);
            }
            tokio::time::sleep(hold).await;
        }
    }
}

/// How long after a fault ends until a call is answered from the cache.
async fn time_to_first_hit(cache: &Cache) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let (_, outcome) = track_outcome(compute(cache, 0)).await;
        if outcome == Some(Outcome::Hit) {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
