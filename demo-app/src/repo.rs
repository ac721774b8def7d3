//! The repository: every read is a `#[redis_cached]` function, and every
//! write evicts exactly the cache entries it made stale.
//!
//! This is the file to read to learn the library. The SQL itself, in three
//! dialects, is in [`crate::db`]; here is only what caching adds:
//!
//! - a read is an ordinary `async fn` with `#[redis_cached(key = …, ttl = …)]`
//!   on it. Its first call runs the body (the SQL query) and stores the `Ok`
//!   value in Redis; the next calls, until the TTL runs out, read it from
//!   Redis without touching the database;
//! - a write changes the database first, then deletes the keys of every
//!   cached read whose answer it changed, so the next read runs the query
//!   again and sees the new rows;
//! - reads run through [`Repo::read`], so that a read already running when a
//!   write lands cannot put the old rows back (the one subtle part);
//! - a read whose Redis lookup fails simply runs its body: the runtime does
//!   that. What the app adds for outages is small: an eviction that failed is
//!   retried before the next read (see `Repo::evict`).

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use cache_runtime::{Cache, redis_cached};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use crate::db::Db;

/// A row of the `users` table. It is what the handlers send as JSON, and
/// what the cache stores, as JSON too: the cached type must implement
/// `Serialize` and `Deserialize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub email: String,
}

/// What a client sends to create a user or replace one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewUser {
    pub username: String,
    pub email: String,
}

/// The longest username or email, in characters: the `VARCHAR(255)` of the
/// PostgreSQL and MySQL schemas, checked here so that SQLite agrees and no
/// backend answers a too-long value with a database error.
pub const MAX_FIELD_CHARS: usize = 255;

impl NewUser {
    /// Checks what the schema cannot check the same way on every backend.
    pub fn validate(&self) -> Result<(), RepoError> {
        let invalid = |message: &str| Err(RepoError::Invalid(message.to_owned()));
        if self.username.trim().is_empty() {
            return invalid("`username` must not be empty");
        }
        if self.username.chars().count() > MAX_FIELD_CHARS {
            return invalid("`username` is longer than 255 characters");
        }
        if self.email.chars().count() > MAX_FIELD_CHARS {
            return invalid("`email` is longer than 255 characters");
        }
        // Whitespace is refused because MariaDB's unique index ignores
        // trailing spaces: `a@x.org ` would clash with `a@x.org` there only.
        let shape_ok = matches!(self.email.split_once('@'),
            Some((local, domain)) if !local.is_empty() && !domain.is_empty());
        if !shape_ok || self.email.chars().any(char::is_whitespace) {
            return invalid("`email` must look like name@domain, without spaces");
        }
        Ok(())
    }
}

/// Why a repository call failed.
#[derive(Debug)]
pub enum RepoError {
    /// No user has this id.
    NotFound,
    /// Another user already has this email (the `UNIQUE` constraint).
    DuplicateEmail,
    /// The input breaks a rule of [`NewUser::validate`].
    Invalid(String),
    /// The database failed: it is down, or something unexpected happened.
    Database(sqlx::Error),
}

impl From<sqlx::Error> for RepoError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            // `email` is the table's only unique column besides the id, which
            // the database assigns.
            sqlx::Error::Database(db_error) if db_error.is_unique_violation() => {
                RepoError::DuplicateEmail
            }
            _ => RepoError::Database(error),
        }
    }
}

impl fmt::Display for RepoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoError::NotFound => f.write_str("no such user"),
            RepoError::DuplicateEmail => f.write_str("a user with this email already exists"),
            RepoError::Invalid(message) => f.write_str(message),
            RepoError::Database(error) => write!(f, "database error: {error}"),
        }
    }
}

impl std::error::Error for RepoError {}

/// The cache keys, in one place.
///
/// Each `#[redis_cached]` read below renders its `key = "…"` template to one
/// of these strings, and the writes delete them by these names. The attribute
/// takes a string literal, so it cannot name these functions: the two must be
/// kept in step by hand, and the test `cache_keys_are_the_ones_writes_evict`
/// (in `tests/scenarios/mod.rs`) fails if they drift apart.
///
/// Keys are written here without the cache's prefix (`demo:v1:`); `Cache`'s
/// `delete`, `get` and `set` add it, exactly as the macro does.
pub mod keys {
    /// Read by [`Repo::list_users`](super::Repo::list_users).
    pub const ALL_USERS: &str = "users:all";

    /// Read by [`Repo::count_users`](super::Repo::count_users).
    pub const USER_COUNT: &str = "users:count";

    /// Read by [`Repo::get_user`](super::Repo::get_user): `"user:{id}"`.
    ///
    /// The macro escapes every placeholder value (`a:b` becomes `a%3Ab`) so
    /// that two different arguments can never share a key. A key built by hand
    /// from a user-supplied string must do the same with
    /// [`cache_runtime::escape_key_part`]; an `i64` prints as digits and `-`,
    /// which escaping keeps as they are, so none is needed here.
    pub fn user(id: i64) -> String {
        format!("user:{id}")
    }
}

/// The users table, behind a Redis cache.
///
/// The cache is a field, not the process-wide default: each
/// `#[redis_cached(…, cache = self.cache)]` below uses this instance. That is
/// what lets every test give its repository its own `redis-server`.
/// Cloning is cheap: the pool, the cache and the rest are shared handles.
#[derive(Clone)]
pub struct Repo {
    db: Db,
    cache: Cache,
    /// Orders evictions after the cached reads already running (see
    /// [`Repo::read`]).
    gate: Arc<RwLock<()>>,
    /// Keys whose eviction failed (see [`Repo::evict`]).
    unevicted: Arc<Mutex<HashSet<String>>>,
}

impl Repo {
    pub fn new(db: Db, cache: Cache) -> Repo {
        Repo {
            db,
            cache,
            gate: Arc::default(),
            unevicted: Arc::default(),
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Runs one cached read: `repo.read(repo.get_user(42)).await`. The
    /// handlers run every read this way.
    ///
    /// Deleting the changed keys after a write is not enough on its own when
    /// reads run concurrently. A read that missed just before the write runs
    /// its query, gets the old rows, and stores them: if that store lands
    /// after the write's eviction, the old rows are cached again. And a read
    /// that starts just after the write can join that read's query (the
    /// runtime coalesces concurrent misses of one key into one run of the
    /// body) and get the old rows at once. Either way a client could write,
    /// then read its old value.
    ///
    /// So reads share this gate, and a write's eviction takes it alone: it
    /// waits until the reads already running have finished, stores included,
    /// then deletes. Reads that start meanwhile wait for the eviction, then
    /// miss and query the database, which holds the write. Within this
    /// process, a write is visible to every read that starts after it
    /// returns. (Across processes, the TTL bounds the damage; see the README.)
    pub async fn read<F: Future>(&self, read: F) -> F::Output {
        let _reading = self.gate.read().await;
        self.retry_evictions().await;
        read.await
    }

    // ----- Reads: each one a cached function -------------------------------
    //
    // The TTL is a safety net, not the consistency mechanism: the writes
    // below evict what they change, so a client that writes, then reads,
    // reads its write. The TTL bounds how long an entry can stay stale in
    // the cases eviction cannot see: a row changed in the database behind the
    // app's back, or written by another process running this app.

    /// Every user: the blog post's query, and the point of the demo. Its
    /// first call reads 100 000 rows from the database; the next ones read
    /// one Redis value.
    ///
    /// `Result<Vec<User>, RepoError>`: `Ok` values are cached, errors never
    /// are, so a database outage is not remembered after it ends.
    #[redis_cached(key = "users:all", ttl = 60, cache = self.cache)]
    pub async fn list_users(&self) -> Result<Vec<User>, RepoError> {
        Ok(self.db.fetch_all_users().await?)
    }

    /// One user, by id.
    ///
    /// A missing user is `Err(NotFound)` rather than `Ok(None)` on purpose:
    /// `Ok(None)` would be cached (as `null`), so a lookup of an id that does
    /// not exist yet would keep answering 404 after the user is created,
    /// unless every insert also evicted that id's key, including inserts
    /// made outside this app, such as `demo-app seed`. An `Err` is never
    /// cached, and looking up a missing id costs one indexed query.
    #[redis_cached(key = "user:{id}", ttl = 60, cache = self.cache)]
    pub async fn get_user(&self, id: i64) -> Result<User, RepoError> {
        self.db.fetch_user(id).await?.ok_or(RepoError::NotFound)
    }

    /// The number of users, for the home page.
    #[redis_cached(key = "users:count", ttl = 60, cache = self.cache)]
    pub async fn count_users(&self) -> Result<i64, RepoError> {
        Ok(self.db.count_users().await?)
    }

    // ----- Writes: change the database, then evict -------------------------
    //
    // The order matters. Evicting first would let a read that runs between
    // the eviction and the write store the old row again.
    //
    // Why delete rather than store the new value: two concurrent updates of
    // one user could store their values in the opposite order to the one in
    // which they reached the database, leaving the loser's value cached.
    // Deleting has no order to get wrong, and the next read, a miss, stores
    // the row the database holds.

    /// Inserts a user. Changes: the list, the count, and the new id's entry
    /// (which cannot exist unless an eviction failed earlier, but deleting a
    /// missing key is cheap).
    pub async fn create_user(&self, new: &NewUser) -> Result<User, RepoError> {
        new.validate()?;
        let user = self.db.insert_user(new).await?;
        self.evict(&[&keys::user(user.id), keys::ALL_USERS, keys::USER_COUNT])
            .await;
        Ok(user)
    }

    /// Replaces a user's fields. Changes: that user's entry and the list; the
    /// count stays the same.
    pub async fn update_user(&self, id: i64, new: &NewUser) -> Result<User, RepoError> {
        new.validate()?;
        let user = self
            .db
            .update_user(id, new)
            .await?
            .ok_or(RepoError::NotFound)?;
        self.evict(&[&keys::user(id), keys::ALL_USERS]).await;
        Ok(user)
    }

    /// Deletes a user. Changes: that user's entry, the list and the count.
    pub async fn delete_user(&self, id: i64) -> Result<(), RepoError> {
        if !self.db.delete_user(id).await? {
            return Err(RepoError::NotFound);
        }
        self.evict(&[&keys::user(id), keys::ALL_USERS, keys::USER_COUNT])
            .await;
        Ok(())
    }

    /// Evicts what a bulk insert changes (see [`crate::seed`]): the list and
    /// the count. New ids have no entries: [`Repo::get_user`] caches no misses.
    pub async fn users_inserted(&self) {
        self.evict(&[keys::ALL_USERS, keys::USER_COUNT]).await;
    }

    /// Deletes `keys` from the cache.
    ///
    /// A failed eviction cannot fail the write, which is committed already.
    /// While Redis is unreachable nothing is served from it, so the stale
    /// entry is harmless until Redis answers again, possibly with its old
    /// data (it was only cut off, or it reloaded a snapshot). So the key is
    /// remembered, and the next read deletes it before it looks anything up
    /// (see [`Repo::retry_evictions`]).
    async fn evict(&self, keys: &[&str]) {
        // Waits for the reads already running: one of them may have read the
        // rows before this write and not stored them yet (see `Repo::read`).
        let _evicting = self.gate.write().await;
        let mut failed = Vec::new();
        for &key in keys {
            if let Err(error) = self.cache.delete(key).await {
                failed.push((key, error));
            }
        }
        if let Some((_, error)) = failed.first() {
            let keys: Vec<&str> = failed.iter().map(|(key, _)| *key).collect();
            tracing::warn!(
                "could not evict {keys:?} from the cache ({error}); the next read retries"
            );
            let mut unevicted = self.lock_unevicted();
            unevicted.extend(keys.into_iter().map(str::to_owned));
        }
    }

    /// Retries the evictions that failed. Every read calls this first (see
    /// [`Repo::read`]), so that no read is answered from an entry a write
    /// made stale. It costs nothing unless Redis failed during a write.
    ///
    /// Each caller deletes every pending key itself before it returns, rather
    /// than leaving it to whoever came first: a read must not go on to its
    /// lookup while another one is still deleting.
    async fn retry_evictions(&self) {
        let pending: Vec<String> = self.lock_unevicted().iter().cloned().collect();
        if pending.is_empty() {
            return;
        }
        for key in pending {
            if self.cache.delete(&key).await.is_ok() {
                self.lock_unevicted().remove(&key);
            }
        }
        if self.lock_unevicted().is_empty() {
            tracing::info!("done: the evictions that failed while Redis was unreachable");
        }
    }

    fn lock_unevicted(&self) -> MutexGuard<'_, HashSet<String>> {
        // The list stays valid whatever a panicking holder was doing.
        self.unevicted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
