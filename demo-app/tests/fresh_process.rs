//! The binary as it starts: the first `/healthz` each Actix worker answers
//! reports Redis as it is. Each worker connects to Redis at its first
//! request, and the check used to report that connection, not yet made,
//! as down; it now waits (up to a second) for the first attempt to end.

mod common;

use cache_tests::RedisServer;
use serde_json::Value;

use common::process::{DemoProcess, http_get};

/// More first requests than this machine has workers (Actix starts one per
/// core, and hands new connections to them in turn): each request comes on
/// a new connection, so every worker answers its first one among them.
const REQUESTS: usize = 6;

fn health(app: &DemoProcess) -> Value {
    let (status, body) = http_get(app.port(), "/healthz");
    assert_eq!(status, 200, "{body}\n{}", app.log());
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn a_fresh_process_reports_redis_up_from_each_workers_first_check() {
    let redis = RedisServer::start();
    let app = DemoProcess::start("fresh-up", &redis.url(), 3);
    for request in 1..=REQUESTS {
        let health = health(&app);
        assert_eq!(
            (&health["status"], &health["redis"]),
            (&Value::from("ok"), &Value::from("up")),
            "request {request}: {health}"
        );
    }
}

#[test]
fn a_fresh_process_without_redis_reports_it_down() {
    let port = common::process::free_port();
    let app = DemoProcess::start("fresh-down", &format!("redis://127.0.0.1:{port}"), 3);
    for request in 1..=REQUESTS {
        let health = health(&app);
        assert_eq!(
            (&health["status"], &health["redis"], &health["database"]),
            (
                &Value::from("degraded"),
                &Value::from("down"),
                &Value::from("up")
            ),
            "request {request}: {health}"
        );
    }
}
