//! The repository: every read is a `#[redis_cached]` function, and every
//! write evicts exactly the cache entries it made stale.
//!
//! This is the file to read to learn the library. The SQL itself, written
//! once for the three backends, is in [`crate::db`]; here is only what
//! caching adds.
//!
//! **Reads** are ordinary `async fn`s with `#[redis_cached(key = …, ttl = …)]`
//! on them. The first call runs the body (the SQL query) and stores the `Ok`
//! value in Redis; the next calls, until the TTL runs out, read it from Redis
//! without touching the database. Each key is written once, in its read's
//! attribute: `"users:all"`, `"user:{id}"`, `"users:count"`.
//!
//! **Writes** change the database first, then evict the entry of every read
//! whose answer they changed, so that the next read runs its query again. They
//! evict through the helpers the macro derives from each read:
//! `self.get_user_invalidate(id)` deletes exactly the key `self.get_user(id)`
//! stores, rendered from the same template, so a write names the *reads* it
//! affects and never spells a key. (With `cache = self.cache`, the helpers
//! take `&self` and the key's parameters.) We preferred them to the other two
//! ways the library offers:
//!
//! - `#[cache_evict(key = "users:all", …)]` on a write would say the same
//!   thing in its attribute, but by restating the read's key: the macro checks
//!   that the template's `{…}` name parameters, not that a read uses the key,
//!   so a typo there compiles and evicts nothing.
//! - A `tag = "…"` on the reads and `#[cache_evict(tag = "…")]` on the writes
//!   suit a group of entries that always change together. Ours do not (an
//!   update changes the list but not the count), and evicting a tag scans its
//!   Redis set, several round trips where a key takes one.
//!
//! The test `cache_keys_are_the_ones_writes_evict` (in
//! `tests/scenarios/mod.rs`) checks, through HTTP and the keys Redis holds,
//! that each write removes what the reads stored.
//!
//! **Reads racing writes.** A read that missed just before a write may still
//! be running its query when the write evicts. The runtime takes care of it
//! within this process: evicting a key closes that key's read in the air, so
//! it does not store the old rows it read, and later readers do not join it.
//! That works key by key (the list and the count are separate reads in the
//! air), which is one more reason for each write to evict every key it made
//! stale. Across processes it does not: a read in another process can store
//! old rows after this one's eviction, and the TTL bounds how long they live.
//!
//! **Transactions.** [`Repo::update_users`] changes several users in one
//! database transaction, and shows how evictions wait for its commit, or
//! vanish with its rollback ([`cache_runtime::deferred`]).
//!
//! **Redis outages** need nothing here. A read whose lookup fails runs its
//! body. An eviction that fails (Redis unreachable during a write) is parked
//! by the runtime: until it has been replayed, in the background, the cache's
//! lookups are skipped, so a Redis that comes back with its old data (a
//! snapshot, a network cut) never serves an entry the write made stale.

use std::sync::Arc;

use cache_runtime::{Cache, redis_cached};

use crate::db::Db;
use crate::model::{NewUser, RepoError, User};

/// The users table, behind a Redis cache.
///
/// The cache is a field, not the process-wide default: each
/// `#[redis_cached(…, cache = self.cache)]` below uses this instance. That is
/// what lets every test give its repository its own `redis-server`.
/// Cloning is cheap: the pool and the cache are shared handles.
#[derive(Clone)]
pub struct Repo {
    db: Db,
    cache: Cache,
}

impl Repo {
    pub fn new(db: Db, cache: Cache) -> Repo {
        Repo { db, cache }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    // ----- Reads: each one a cached function -------------------------------
    //
    // The TTL is a safety net, not the consistency mechanism: the writes
    // below evict what they change, so a client that writes, then reads,
    // reads its write. The TTL bounds how long an entry can stay stale in
    // the cases eviction cannot see: a row changed in the database behind the
    // app's back, or written by another process running this app.
    //
    // Next to each read, the macro also generates `<read>_invalidate` (used
    // by the writes) and `<read>_refresh` (not used: see the writes).

    /// Every user: the blog post's query, and the point of the demo. Its
    /// first call reads 100 000 rows from the database; the next ones find
    /// them in this process (the local tier), or else in one Redis value.
    ///
    /// `Result<…, RepoError>`: `Ok` values are cached, errors never are, so a
    /// database outage is not remembered after it ends.
    ///
    /// `local = true` keeps the decoded list in this process as well, and a
    /// local hit hands out a clone of what is stored: an `Arc`, so the clone
    /// costs a reference count, not 100 000 users. Redis reports every change
    /// to the entry (the writes' evictions, or anything else) to every
    /// process, which drops its local copy.
    ///
    /// `format = "binary"`: every process pays one Redis hit before its
    /// local tier has a copy, and in JSON that hit moves and decodes 6.8 MB;
    /// in the binary format (compressed, as every large value is) it moves
    /// about a fifth of that and decodes several times faster. The other
    /// reads stay JSON, readable in `redis-cli`, where a user is a few dozen
    /// bytes either way.
    #[redis_cached(key = "users:all", ttl = 60, local = true, format = "binary", cache = self.cache)]
    pub async fn list_users(&self) -> Result<Arc<Vec<User>>, RepoError> {
        Ok(Arc::new(self.db.fetch_all_users().await?))
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
    // Why delete rather than store the new value (`#[cache_put]`, or the
    // derived `get_user_refresh`): two concurrent updates of one user could
    // store their values in the opposite order to the one in which they
    // reached the database, leaving the loser's value cached. Deleting has no
    // order to get wrong, and the next read, a miss, stores the row the
    // database holds.
    //
    // The `_invalidate` helpers return a `Result`, which the writes ignore:
    // the write is committed by then and must not fail, and the runtime has
    // already logged, counted and parked a failed eviction (see the module
    // documentation).

    /// Inserts a user. Changes: the list and the count. The new id has no
    /// entry to evict: [`Repo::get_user`] caches no misses, and no backend
    /// reuses a deleted row's id.
    pub async fn create_user(&self, new: &NewUser) -> Result<User, RepoError> {
        new.validate()?;
        let user = self.db.insert_user(new).await?;
        let _ = self.list_users_invalidate().await;
        let _ = self.count_users_invalidate().await;
        Ok(user)
    }

    /// Replaces a user's fields. Changes: that user's entry and the list; the
    /// count stays the same.
    ///
    /// One `UPDATE` is a transaction of its own, committed when it returns,
    /// so the evictions simply follow it. For several statements that must
    /// commit together, see [`Repo::update_users`].
    pub async fn update_user(&self, id: i64, new: &NewUser) -> Result<User, RepoError> {
        new.validate()?;
        let user = self
            .db
            .update_user(id, new)
            .await?
            .ok_or(RepoError::NotFound)?;
        let _ = self.get_user_invalidate(id).await;
        let _ = self.list_users_invalidate().await;
        Ok(user)
    }

    /// Replaces several users' fields at once, all or nothing (`PATCH
    /// /users`): if one id is unknown or one email is taken, no user changes.
    /// Changes: each of these users' entries and the list.
    ///
    /// The updates run in one database transaction, and their evictions are
    /// issued inside [`cache_runtime::deferred`], which collects them instead
    /// of sending them:
    ///
    /// - sent before the commit, an eviction would let a read in between
    ///   store the old row again (the database still answers with it), with
    ///   nothing left to evict it after the commit;
    /// - after a rollback the old rows are still true, and so are their
    ///   cached entries: the collected evictions are dropped, and the next
    ///   reads are still hits. (Were they sent, nothing would be wrong, but
    ///   every read of these users would miss once for nothing.)
    pub async fn update_users(&self, users: &[User]) -> Result<Vec<User>, RepoError> {
        let changes: Vec<(i64, NewUser)> = users
            .iter()
            .map(|user| {
                let new = NewUser {
                    username: user.username.clone(),
                    email: user.email.clone(),
                };
                new.validate().map(|()| (user.id, new))
            })
            .collect::<Result<_, _>>()?;
        if changes.is_empty() {
            return Ok(Vec::new());
        }

        let mut tx = self.db.begin().await?;
        let (updated, evictions) = cache_runtime::deferred(async {
            let mut updated = Vec::with_capacity(changes.len());
            for (id, new) in &changes {
                // A taken email fails here, as a unique violation, after the
                // earlier users' updates and evictions.
                let user = tx.update_user(*id, new).await?;
                updated.push(user.ok_or(RepoError::NotFound)?);
                let _ = self.get_user_invalidate(*id).await; // collected, not sent
            }
            let _ = self.list_users_invalidate().await; // collected, not sent
            Ok::<_, RepoError>(updated)
        })
        .await;

        match updated {
            Ok(updated) => {
                let committed = tx.commit().await;
                // Evict even if the commit reports an error: when the
                // connection fails during a COMMIT, the database may have
                // committed all the same. A needless eviction costs one
                // miss; a missing one would serve the old rows until the TTL.
                let _ = evictions.apply().await;
                committed?;
                Ok(updated)
            }
            Err(error) => {
                // Nothing changed: the evictions go with the transaction.
                drop(evictions);
                if let Err(rollback) = tx.rollback().await {
                    // The server discards the transaction anyway when the
                    // connection closes; the error that caused it matters more.
                    tracing::warn!("rollback failed: {rollback}");
                }
                Err(error)
            }
        }
    }

    /// Deletes a user. Changes: that user's entry, the list and the count.
    pub async fn delete_user(&self, id: i64) -> Result<(), RepoError> {
        if !self.db.delete_user(id).await? {
            return Err(RepoError::NotFound);
        }
        let _ = self.get_user_invalidate(id).await;
        let _ = self.list_users_invalidate().await;
        let _ = self.count_users_invalidate().await;
        Ok(())
    }

    /// Evicts the cached list without changing the table: the page's
    /// "Evict the list" button (`DELETE /cache/users`), so that the next
    /// access runs the query. An error means Redis could not be reached:
    /// the runtime has parked the eviction, and retries it.
    pub async fn evict_users_list(&self) -> Result<(), cache_runtime::CacheError> {
        self.list_users_invalidate().await
    }

    /// Evicts what a bulk insert changes (see [`crate::seed`]): the list and
    /// the count. New ids have no entries: [`Repo::get_user`] caches no misses.
    pub async fn users_inserted(&self) {
        let _ = self.list_users_invalidate().await;
        let _ = self.count_users_invalidate().await;
    }
}
