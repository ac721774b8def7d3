//! The other process of the local-tier tests: reads `get <id>` lines on
//! stdin and answers `<value> <outcome>` on stdout, where the value comes
//! from a `local = true` cached function whose "database" is the Redis key
//! `db:<id>`.
//!
//! Usage: `local_worker <redis-url>`

use std::io::{BufRead, Write};
use std::time::Duration;

use cache_runtime::{Cache, LocalTierSettings, redis_cached, track_outcome};

#[redis_cached(key = "value:{id}", ttl = 60, local = true, cache = cache)]
async fn value(cache: &Cache, db: &redis::Client, id: u32) -> String {
    let mut connection = db.get_connection().expect("the database");
    redis::Commands::get::<_, Option<String>>(&mut connection, format!("db:{id}"))
        .expect("read the database")
        .unwrap_or_default()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let url = std::env::args()
        .nth(1)
        .expect("usage: local_worker <redis-url>");
    let cache = Cache::builder()
        .url(url.as_str())
        .deadline(Duration::from_secs(1))
        .local_tier(LocalTierSettings::new())
        .build()
        .expect("cache");
    let db = redis::Client::open(url.as_str()).expect("database client");
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line.expect("stdin");
        let Some(id) = line.strip_prefix("get ") else {
            continue;
        };
        let id: u32 = id.trim().parse().expect("an id");
        let (value, outcome) = track_outcome(value(&cache, &db, id)).await;
        let outcome = outcome.map_or("none".to_owned(), |o| format!("{o:?}").to_lowercase());
        writeln!(stdout, "{value} {outcome}").expect("stdout");
        stdout.flush().expect("stdout");
    }
}
