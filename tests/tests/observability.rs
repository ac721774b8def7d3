//! Each cached call has a tracing span (function, outcome, duration), each
//! function has counters, and logs are rate-limited and never show a password.

mod support;

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use cache_runtime::{Cache, Outcome, redis_cached, track_outcome};
use cache_tests::{Calls, RedisServer};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// A span's name and its fields, as recorded so far.
type SpanRecord = (&'static str, HashMap<String, String>);

/// A minimal subscriber that keeps every span's fields and every event's
/// message, from every thread, for the tests to read.
#[derive(Default)]
struct Capture {
    next_id: AtomicU64,
    spans: Mutex<HashMap<u64, SpanRecord>>,
    events: Mutex<Vec<String>>,
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Subscriber for &'static Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = HashMap::new();
        span.record(&mut Fields(&mut fields));
        self.spans
            .lock()
            .unwrap()
            .insert(id, (span.metadata().name(), fields));
        Id::from_u64(id)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some((_, fields)) = self.spans.lock().unwrap().get_mut(&span.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        let message = fields.remove("message").unwrap_or_default();
        self.events.lock().unwrap().push(message);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture: &'static Capture = Box::leak(Box::default());
        tracing::subscriber::set_global_default(capture).expect("first subscriber");
        capture
    })
}

/// The `redis_cached` spans of one function, in creation order.
fn spans_of(function: &str) -> Vec<HashMap<String, String>> {
    let spans = capture().spans.lock().unwrap();
    let mut ids: Vec<_> = spans
        .iter()
        .filter(|(_, (name, fields))| {
            *name == "redis_cached" && fields.get("function").map(String::as_str) == Some(function)
        })
        .map(|(id, _)| *id)
        .collect();
    ids.sort();
    ids.iter().map(|id| spans[id].1.clone()).collect()
}

fn events_containing(needle: &str) -> Vec<String> {
    let events = capture().events.lock().unwrap();
    events
        .iter()
        .filter(|e| e.contains(needle))
        .cloned()
        .collect()
}

#[redis_cached(key = "traced:{id}", ttl = 60, cache = cache)]
async fn traced(cache: &Cache, id: u32) -> u32 {
    tracing::info!("inside the body of traced");
    id
}

#[tokio::test]
async fn every_call_has_a_span_with_function_outcome_and_duration() {
    capture();
    let mut server = RedisServer::start();
    let cache = server
        .cache_builder()
        .deadline(Duration::from_millis(200))
        .build()
        .unwrap();

    traced(&cache, 1).await;
    traced(&cache, 1).await;
    server.kill();
    traced(&cache, 1).await;

    let spans = spans_of("observability::traced");
    let outcomes: Vec<&str> = spans.iter().map(|s| s["outcome"].as_str()).collect();
    assert_eq!(outcomes, ["miss", "hit", "error"]);
    for span in &spans {
        let elapsed: u64 = span["elapsed_us"].parse().expect("a duration in µs");
        assert!(elapsed < 60_000_000);
    }
}

#[redis_cached(key = "counted:{id}", ttl = 60, cache = cache)]
async fn counted(cache: &Cache, id: u32) -> u32 {
    id
}

#[tokio::test]
async fn counters_per_function_count_hits_misses_and_errors() {
    capture();
    support::install();
    let mut server = RedisServer::start();
    let cache = server
        .cache_builder()
        .deadline(Duration::from_millis(200))
        .build()
        .unwrap();

    counted(&cache, 1).await;
    counted(&cache, 1).await;
    counted(&cache, 1).await;
    counted(&cache, 2).await;
    server.kill();
    counted(&cache, 1).await;

    let metrics = support::of("observability::counted");
    assert_eq!((metrics.hits, metrics.misses, metrics.errors), (2, 2, 1));
    assert_eq!(metrics.durations.len(), 5);
}

#[redis_cached(key = "tracked:{id}", ttl = 60, cache = cache)]
async fn tracked(cache: &Cache, id: u32) -> u32 {
    id
}

#[tokio::test]
async fn track_outcome_reports_hit_or_miss() {
    capture();
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();
    let (value, outcome) = track_outcome(tracked(&cache, 9)).await;
    assert_eq!((value, outcome), (9, Some(Outcome::Miss)));
    let (_, outcome) = track_outcome(tracked(&cache, 9)).await;
    assert_eq!(outcome, Some(Outcome::Hit));
    let (_, outcome) = track_outcome(async { calls.bump() }).await;
    assert_eq!(outcome, None, "no cached call inside");
}

#[redis_cached(key = "secret:{id}", ttl = 60, cache = cache)]
async fn behind_a_password(cache: &Cache, calls: &Calls, id: u32) -> u32 {
    calls.bump();
    id
}

#[tokio::test]
async fn logs_are_rate_limited_and_never_show_the_password() {
    capture();
    let port = RedisServer::unused_port();
    let url = format!("redis://app:hunter2@127.0.0.1:{port}");
    let cache = Cache::builder()
        .url(&url)
        .deadline(Duration::from_millis(100))
        .log_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let calls = Calls::default();
    for id in 0..50 {
        assert_eq!(behind_a_password(&cache, &calls, id).await, id);
    }
    assert_eq!(calls.get(), 50);

    let redacted = format!("redis://app:***@127.0.0.1:{port}");
    let lookups = events_containing("lookup failed, running the function uncached")
        .into_iter()
        .filter(|e| e.contains(&redacted))
        .count();
    assert_eq!(lookups, 1, "50 failures, one log line per interval");
    let all = capture().events.lock().unwrap().join("\n");
    assert!(all.contains(&redacted), "the incident names the server");
    assert!(!all.contains("hunter2"), "a password leaked into the logs");
    assert!(!format!("{cache:?}").contains("hunter2"));
    assert!(!format!("{:?}", Cache::builder().url(&url)).contains("hunter2"));
}
