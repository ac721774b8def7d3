//! `demo-app bench`: the blog post's table, measured on this machine against
//! the configured database and Redis.
//!
//! The blog post timed `getUsers()`, its cached "all users" query, twice:
//! 45 861 ms the first time (MySQL), 5 ms the second (Redis). This times our
//! equivalent, [`Repo::list_users`], the same way, a few times over, and
//! reports medians. It calls the repository directly, not over HTTP, so the
//! figures are the cache's and the database's, without JSON encoding of the
//! response or the network.

use std::fmt::Write;
use std::time::{Duration, Instant};

use cache_runtime::{Outcome, track_outcome};

use crate::repo::{Repo, RepoError};

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
}

/// Why the benchmark could not measure.
#[derive(Debug)]
pub enum BenchError {
    Database(RepoError),
    /// The cache did not behave as the measurement needs.
    Cache(String),
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BenchError::Database(error) => write!(f, "{error}"),
            BenchError::Cache(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for BenchError {}

impl From<RepoError> for BenchError {
    fn from(error: RepoError) -> Self {
        BenchError::Database(error)
    }
}

/// Runs `runs` rounds of: the query alone; the first access; the second.
pub async fn measure(repo: &Repo, runs: usize) -> Result<Measurement, BenchError> {
    let mut m = Measurement::default();
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

        let started = Instant::now();
        let (users, outcome) = track_outcome(repo.list_users()).await;
        m.local.push(started.elapsed());
        users?;
        if outcome != Some(Outcome::Local) {
            return Err(BenchError::Cache(format!(
                "the third access should be a local-tier hit, but was {outcome:?}"
            )));
        }
    }
    Ok(m)
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
    for (label, times) in rows {
        let mut sorted = times.clone();
        sorted.sort();
        let _ = writeln!(
            out,
            "{label:<48}{:>12}{:>12}{:>12}",
            ms(median(&sorted)),
            ms(sorted.first().copied().unwrap_or_default()),
            ms(sorted.last().copied().unwrap_or_default()),
        );
    }
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
    let _ = writeln!(
        out,
        "the blog post, MySQL + Redis in 2015: 45861 ms, then 5 ms (9172x)."
    );
    out
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
    }
}
