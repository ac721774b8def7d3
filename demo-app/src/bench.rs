//! `demo-app bench`: the blog post's table, measured on this machine against
//! the configured database and Redis.
//!
//! The blog post timed `getUsers()`, its cached "all users" query, twice:
//! 45 861 ms the first time (MySQL), 5 ms the second (Redis). This times our
//! equivalent, [`Repo::list_users`], the same way, a few times over, and
//! reports medians: first by calling the repository directly (the cache's
//! and the database's figures alone), then as a browser would, `GET /users`
//! over HTTP from an in-process server, timed to the response's last byte
//! (with the JSON encoding of the response and the loopback transfer).

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix_web::{App, HttpServer, web};
use cache_runtime::{Outcome, track_outcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::model::RepoError;
use crate::repo::Repo;

/// Timings of each run, in run order.
#[derive(Debug, Clone, Default)]
pub struct Measurement {
    pub users: usize,
    /// The SQL query alone, without the cache.
    pub query: Vec<Duration>,
    /// The first access: a miss, so the query, then the store in Redis.
    pub first: Vec<Duration>,
    /// The second access: a hit, read from Redis (the local tier emptied
    /// first, to time the Redis hit the blog post timed).
    pub second: Vec<Duration>,
    /// The third access: a hit in this process's local tier.
    pub local: Vec<Duration>,
    /// `GET /users` over HTTP, the first access: a miss.
    pub http_first: Vec<Duration>,
    /// `GET /users` over HTTP, a later access: a local-tier hit, after an
    /// untimed access that refilled the tier (the miss's own store, which
    /// Redis reports back, dropped the copy the miss kept).
    pub http_second: Vec<Duration>,
    /// The size of the `/users` response body.
    pub http_bytes: usize,
}

/// Why the benchmark could not measure.
#[derive(Debug)]
pub enum BenchError {
    Database(RepoError),
    /// The cache did not behave as the measurement needs.
    Cache(String),
    /// The in-process HTTP server or the request to it failed.
    Http(String),
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BenchError::Database(error) => write!(f, "{error}"),
            BenchError::Cache(message) | BenchError::Http(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for BenchError {}

impl From<RepoError> for BenchError {
    fn from(error: RepoError) -> Self {
        BenchError::Database(error)
    }
}

/// Runs `runs` rounds of: the query alone; the first access; the second;
/// the third; then `runs` rounds of the first access and a local-tier hit
/// over HTTP.
pub async fn measure(repo: web::Data<Repo>, runs: usize) -> Result<Measurement, BenchError> {
    let mut m = Measurement::default();
    measure_calls(&repo, runs, &mut m).await?;
    measure_http(repo, runs, &mut m).await?;
    Ok(m)
}

async fn measure_calls(repo: &Repo, runs: usize, m: &mut Measurement) -> Result<(), BenchError> {
    for _ in 0..runs {
        let started = Instant::now();
        let users = repo.db().fetch_all_users().await.map_err(RepoError::from)?;
        m.query.push(started.elapsed());
        m.users = users.len();
        drop(users);

        // Make the next access a first one: what a write would do.
        repo.list_users_invalidate().await.map_err(|error| {
            BenchError::Cache(format!(
                "Redis is needed to measure the cache, and it failed: {error}"
            ))
        })?;

        let started = Instant::now();
        let (users, outcome) = track_outcome(repo.list_users()).await;
        m.first.push(started.elapsed());
        users?;
        if outcome != Some(Outcome::Miss) {
            return Err(BenchError::Cache(format!(
                "the first access should be a miss, but was {outcome:?}: is Redis reachable?"
            )));
        }

        // The first access also kept the list in this process: empty the
        // local tier, so that the second access reads Redis, as in the post.
        repo.cache().clear_local_tier();
        let started = Instant::now();
        let (users, outcome) = track_outcome(repo.list_users()).await;
        m.second.push(started.elapsed());
        users?;
        if outcome != Some(Outcome::Hit) {
            return Err(BenchError::Cache(format!(
                "the second access should be a hit, but was {outcome:?}: the first access could \
                 not store the list (see the log; a deadline too short for {} users?)",
                m.users
            )));
        }

        // Redis reports the first access's store back to this process, which
        // drops the copy of the list: should that report cross the second
        // access, it keeps no copy either, and the next access refills the
        // tier. Only a local-tier hit is timed.
        let mut outcome = None;
        for _ in 0..3 {
            let started = Instant::now();
            let (users, this_outcome) = track_outcome(repo.list_users()).await;
            let elapsed = started.elapsed();
            users?;
            outcome = this_outcome;
            if outcome == Some(Outcome::Local) {
                m.local.push(elapsed);
                break;
            }
        }
        if outcome != Some(Outcome::Local) {
            return Err(BenchError::Cache(format!(
                "the third access should be a local-tier hit, but was {outcome:?}"
            )));
        }
    }
    Ok(())
}

/// `GET /users` over HTTP from a server in this process with the app's
/// routes, per round: a miss after the list's eviction, timed; an access
/// that refills the local tier; a local-tier hit, timed.
async fn measure_http(
    repo: web::Data<Repo>,
    runs: usize,
    m: &mut Measurement,
) -> Result<(), BenchError> {
    let cache = repo.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(repo.clone())
            .configure(crate::routes::configure)
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .map_err(|error| BenchError::Http(format!("cannot start the HTTP server: {error}")))?;
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    let result = async {
        for _ in 0..runs {
            cache.list_users_invalidate().await.map_err(|error| {
                BenchError::Cache(format!(
                    "Redis is needed to measure the cache, and it failed: {error}"
                ))
            })?;
            let (elapsed, bytes) = get_users(addr, "MISS").await?;
            m.http_first.push(elapsed);
            m.http_bytes = bytes;
            // Redis reports the miss's own store back to this process, which
            // drops the copy the miss kept: an untimed access reads Redis
            // and refills the local tier (retried, should a report cross it).
            // `X-Cache: HIT` is also a Redis hit: the counters tell which.
            let mut refilled = false;
            for _ in 0..3 {
                get_users(addr, "HIT").await?;
                let local_hits = list_users_local_hits();
                let (elapsed, _) = get_users(addr, "HIT").await?;
                if list_users_local_hits() == local_hits + 1 {
                    m.http_second.push(elapsed);
                    refilled = true;
                    break;
                }
            }
            if !refilled {
                return Err(BenchError::Cache(
                    "GET /users after the refill should be a local-tier hit, but the local tier \
                     did not answer it"
                        .to_owned(),
                ));
            }
        }
        Ok(())
    }
    .await;
    handle.stop(true).await;
    result
}

/// `Repo::list_users`'s `function` label.
const LIST_USERS: &str = "demo_app::repo::list_users";

/// How many `list_users` calls the local tier has answered so far.
fn list_users_local_hits() -> u64 {
    let hits = crate::metrics::value(
        "cache_hits_total",
        &[("function", LIST_USERS), ("tier", "local")],
    );
    hits.map_or(0, |hits| hits as u64)
}

/// One `GET /users` on a new connection, timed from the connect to the last
/// byte; checks the status and the `X-Cache` header. Returns the body's size.
async fn get_users(addr: SocketAddr, x_cache: &str) -> Result<(Duration, usize), BenchError> {
    let http = |error: std::io::Error| BenchError::Http(format!("GET /users: {error}"));
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(http)?;
    stream
        .write_all(b"GET /users HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .map_err(http)?;
    let mut response = Vec::with_capacity(8 << 20);
    stream.read_to_end(&mut response).await.map_err(http)?;
    let elapsed = started.elapsed();
    let head_end = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| BenchError::Http("GET /users: no complete response".to_owned()))?;
    let head = String::from_utf8_lossy(&response[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        let status = head.lines().next().unwrap_or_default().to_owned();
        return Err(BenchError::Http(format!("GET /users answered {status}")));
    }
    let expected = format!("x-cache: {}", x_cache.to_ascii_lowercase());
    if !head.lines().any(|line| line == expected) {
        return Err(BenchError::Cache(format!(
            "GET /users should have been a {x_cache}, but its headers say otherwise:\n{head}"
        )));
    }
    Ok((elapsed, response.len() - head_end - 4))
}

/// The table `demo-app bench` prints.
pub fn render(m: &Measurement) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<48}{:>12}{:>12}{:>12}", "", "median", "min", "max");
    let rows = [
        ("database query alone (no cache)", &m.query),
        ("first access (miss: database, then Redis SET)", &m.first),
        ("second access (hit: Redis GET)", &m.second),
        ("third access (hit: local tier)", &m.local),
    ];
    write_rows(&mut out, &rows);
    let first = median_of(&m.first);
    let second = median_of(&m.second);
    let ratio = first.as_secs_f64() / second.as_secs_f64().max(1e-9);
    let _ = writeln!(
        out,
        "\nsecond access: {ratio:.1}x faster than the first (medians of {} runs, {} users).",
        m.first.len(),
        m.users
    );
    let local = median_of(&m.local);
    let local_ratio = first.as_secs_f64() / local.as_secs_f64().max(1e-9);
    let _ = writeln!(
        out,
        "third access (local tier): {local_ratio:.0}x faster than the first."
    );
    if !m.http_first.is_empty() {
        let _ = writeln!(
            out,
            "\nGET /users over HTTP ({:.1} MB of JSON), to the last byte:",
            m.http_bytes as f64 / 1e6
        );
        let rows = [
            ("first access (miss)", &m.http_first),
            ("later access (hit: local tier)", &m.http_second),
        ];
        write_rows(&mut out, &rows);
        let http_ratio = median_of(&m.http_first).as_secs_f64()
            / median_of(&m.http_second).as_secs_f64().max(1e-9);
        let _ = writeln!(
            out,
            "over HTTP, a local-tier hit is {http_ratio:.1}x faster than the first access."
        );
    }
    let _ = writeln!(
        out,
        "the blog post, MySQL + Redis in 2015: 45861 ms, then 5 ms (9172x)."
    );
    out
}

/// One line per row: its label, then the median, least and most time.
fn write_rows(out: &mut String, rows: &[(&str, &Vec<Duration>)]) {
    for (label, times) in rows {
        let mut sorted = (*times).clone();
        sorted.sort();
        let _ = writeln!(
            out,
            "{label:<48}{:>12}{:>12}{:>12}",
            ms(median(&sorted)),
            ms(sorted.first().copied().unwrap_or_default()),
            ms(sorted.last().copied().unwrap_or_default()),
        );
    }
}

fn median_of(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    median(&sorted)
}

fn median(sorted: &[Duration]) -> Duration {
    match sorted.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    }
}

/// Milliseconds, or microseconds below one (a local hit takes a few).
fn ms(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratio() {
        let ms = Duration::from_millis;
        let m = Measurement {
            users: 100_000,
            query: vec![ms(90), ms(100), ms(110)],
            first: vec![ms(300), ms(200), ms(250), ms(400)],
            second: vec![ms(20), ms(30), ms(10), ms(40)],
            local: vec![ms(1), ms(1), ms(1), ms(1)],
            http_first: vec![ms(300), ms(320), ms(310)],
            http_second: vec![ms(10), ms(9), ms(11)],
            http_bytes: 6_800_000,
        };
        let table = render(&m);
        assert!(table.contains("100.0 ms"), "{table}");
        assert!(
            table.contains("275.0 ms"),
            "median of an even count: {table}"
        );
        assert!(table.contains("25.0 ms"), "{table}");
        assert!(table.contains("11.0x faster"), "{table}");
        assert!(table.contains("275x faster than the first"), "{table}");
        assert!(table.contains("(6.8 MB of JSON)"), "{table}");
        assert!(
            table.contains("over HTTP, a local-tier hit is 31.0x faster"),
            "{table}"
        );
    }
}
