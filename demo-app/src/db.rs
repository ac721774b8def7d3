//! The database: a SQLx pool for whichever backend `DATABASE_URL` names, its
//! migrations, and each query in the three dialects.
//!
//! Nothing here knows about the cache; [`crate::repo`] puts it in front.
//!
//! One enum over the three pool types, rather than `sqlx::Any`: the dialects
//! differ anyway (placeholders are `$1` on PostgreSQL and SQLite, `?` on
//! MySQL; MySQL has no `INSERT … RETURNING`), and typed pools keep every row
//! decoded by the backend's own driver. Queries are plain strings, checked by
//! the tests against all three backends: no `query!` macro, which would need
//! a database at compile time.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateDatabase, MigrateError};
use sqlx::mysql::{MySql, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgPool, PgPoolOptions, Postgres};
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Database, QueryBuilder, Transaction};

use crate::model::{NewUser, User};
use crate::redact;

/// A file in the working directory, created on first start.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://demo-app.db";

/// How long a query waits for a free connection, or for a new one to a
/// database that does not answer. SQLx's default is 30 s: a health check
/// should say "down" long before that.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// A pool on one of the three supported backends.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    MySql(MySqlPool),
}

/// A row as the queries select it: `id, username, email`.
type Row = (i64, String, String);

fn user((id, username, email): Row) -> User {
    User {
        id,
        username,
        email,
    }
}

/// A row on MySQL, whose text columns arrive as bytes.
///
/// The schema gives them the binary collation `utf8mb4_bin`, so that the
/// unique email is compared exactly, as on the other backends (see the
/// migration). MySQL then flags the columns as binary, and SQLx declines to
/// decode a binary column as `String`: the bytes are decoded here instead.
type MySqlRow = (i64, Vec<u8>, Vec<u8>);

fn mysql_user((id, username, email): MySqlRow) -> Result<User, sqlx::Error> {
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).map_err(|e| sqlx::Error::Decode(e.into()));
    Ok(User {
        id,
        username: text(username)?,
        email: text(email)?,
    })
}

const SELECT_ALL: &str = "SELECT id, username, email FROM users ORDER BY id";
const COUNT: &str = "SELECT COUNT(*) FROM users";
const UPDATE_PG: &str = "UPDATE users SET username = $1, email = $2 WHERE id = $3";
const UPDATE_MY: &str = "UPDATE users SET username = ?, email = ? WHERE id = ?";

impl Db {
    /// Connects to `url`: `sqlite://FILE`, `postgres://…` or `mysql://…`
    /// (MySQL or MariaDB). A missing SQLite file or PostgreSQL/MySQL database
    /// is created, so that a fresh machine needs no setup step.
    pub async fn connect(url: &str) -> Result<Db, sqlx::Error> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        match scheme {
            "sqlite" => {
                let options = SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    // WAL lets reads go on while a write commits; with it,
                    // NORMAL sync is still safe against corruption.
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal);
                let pool = SqlitePoolOptions::new()
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await?;
                Ok(Db::Sqlite(pool))
            }
            "postgres" | "postgresql" => {
                if !Postgres::database_exists(url).await? {
                    Postgres::create_database(url).await?;
                }
                let pool = PgPoolOptions::new()
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect(url)
                    .await?;
                Ok(Db::Postgres(pool))
            }
            "mysql" | "mariadb" => {
                if !MySql::database_exists(url).await? {
                    MySql::create_database(url).await?;
                }
                let pool = MySqlPoolOptions::new()
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect(url)
                    .await?;
                Ok(Db::MySql(pool))
            }
            _ => Err(sqlx::Error::Configuration(
                format!(
                    "DATABASE_URL must start with sqlite://, postgres:// or mysql://, not `{}`",
                    redact::url(url)
                )
                .into(),
            )),
        }
    }

    /// Applies the migrations in `migrations/<backend>/` that have not run
    /// yet. They are compiled into the binary by `sqlx::migrate!`.
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        match self {
            Db::Sqlite(pool) => sqlx::migrate!("migrations/sqlite").run(pool).await,
            Db::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await,
            Db::MySql(pool) => sqlx::migrate!("migrations/mysql").run(pool).await,
        }
    }

    /// The backend's name, for logs and the health check.
    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
            Db::MySql(_) => "mysql",
        }
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        match self {
            Db::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
            Db::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
            Db::MySql(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
        }
    }

    /// Closes every connection; later queries fail with `PoolClosed`.
    pub async fn close(&self) {
        match self {
            Db::Sqlite(pool) => pool.close().await,
            Db::Postgres(pool) => pool.close().await,
            Db::MySql(pool) => pool.close().await,
        }
    }

    pub async fn fetch_all_users(&self) -> Result<Vec<User>, sqlx::Error> {
        match self {
            Db::Sqlite(pool) => {
                let rows: Vec<Row> = sqlx::query_as(SELECT_ALL).fetch_all(pool).await?;
                Ok(rows.into_iter().map(user).collect())
            }
            Db::Postgres(pool) => {
                let rows: Vec<Row> = sqlx::query_as(SELECT_ALL).fetch_all(pool).await?;
                Ok(rows.into_iter().map(user).collect())
            }
            Db::MySql(pool) => {
                let rows: Vec<MySqlRow> = sqlx::query_as(SELECT_ALL).fetch_all(pool).await?;
                rows.into_iter().map(mysql_user).collect()
            }
        }
    }

    pub async fn fetch_user(&self, id: i64) -> Result<Option<User>, sqlx::Error> {
        const PG: &str = "SELECT id, username, email FROM users WHERE id = $1";
        const MY: &str = "SELECT id, username, email FROM users WHERE id = ?";
        match self {
            Db::Sqlite(pool) => {
                let row: Option<Row> = sqlx::query_as(PG).bind(id).fetch_optional(pool).await?;
                Ok(row.map(user))
            }
            Db::Postgres(pool) => {
                let row: Option<Row> = sqlx::query_as(PG).bind(id).fetch_optional(pool).await?;
                Ok(row.map(user))
            }
            Db::MySql(pool) => {
                let row: Option<MySqlRow> =
                    sqlx::query_as(MY).bind(id).fetch_optional(pool).await?;
                row.map(mysql_user).transpose()
            }
        }
    }

    pub async fn count_users(&self) -> Result<i64, sqlx::Error> {
        match self {
            Db::Sqlite(pool) => sqlx::query_scalar(COUNT).fetch_one(pool).await,
            Db::Postgres(pool) => sqlx::query_scalar(COUNT).fetch_one(pool).await,
            Db::MySql(pool) => sqlx::query_scalar(COUNT).fetch_one(pool).await,
        }
    }

    /// The largest id so far, or 0; what `seed` numbers new users after.
    pub async fn max_id(&self) -> Result<i64, sqlx::Error> {
        const MAX_ID: &str = "SELECT COALESCE(MAX(id), 0) FROM users";
        match self {
            Db::Sqlite(pool) => sqlx::query_scalar(MAX_ID).fetch_one(pool).await,
            Db::Postgres(pool) => sqlx::query_scalar(MAX_ID).fetch_one(pool).await,
            Db::MySql(pool) => sqlx::query_scalar(MAX_ID).fetch_one(pool).await,
        }
    }

    pub async fn insert_user(&self, new: &NewUser) -> Result<User, sqlx::Error> {
        const PG: &str = "INSERT INTO users (username, email) VALUES ($1, $2) RETURNING id";
        const MY: &str = "INSERT INTO users (username, email) VALUES (?, ?)";
        let id: i64 = match self {
            Db::Sqlite(pool) => {
                let query = sqlx::query_scalar(PG).bind(&new.username).bind(&new.email);
                query.fetch_one(pool).await?
            }
            Db::Postgres(pool) => {
                let query = sqlx::query_scalar(PG).bind(&new.username).bind(&new.email);
                query.fetch_one(pool).await?
            }
            Db::MySql(pool) => {
                let query = sqlx::query(MY).bind(&new.username).bind(&new.email);
                let done = query.execute(pool).await?;
                i64::try_from(done.last_insert_id()).expect("ids fit the BIGINT column")
            }
        };
        Ok(User {
            id,
            username: new.username.clone(),
            email: new.email.clone(),
        })
    }

    /// Replaces a user's fields; `None` if no row has this id.
    pub async fn update_user(&self, id: i64, new: &NewUser) -> Result<Option<User>, sqlx::Error> {
        let done = match self {
            Db::Sqlite(pool) => {
                let query = sqlx::query(UPDATE_PG).bind(&new.username).bind(&new.email);
                query.bind(id).execute(pool).await?.rows_affected()
            }
            Db::Postgres(pool) => {
                let query = sqlx::query(UPDATE_PG).bind(&new.username).bind(&new.email);
                query.bind(id).execute(pool).await?.rows_affected()
            }
            Db::MySql(pool) => {
                let query = sqlx::query(UPDATE_MY).bind(&new.username).bind(&new.email);
                query.bind(id).execute(pool).await?.rows_affected()
            }
        };
        Ok(updated(id, new, done))
    }

    /// Starts a transaction: see [`Tx`].
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Db::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            Db::Postgres(pool) => Tx::Postgres(pool.begin().await?),
            Db::MySql(pool) => Tx::MySql(pool.begin().await?),
        })
    }

    /// Deletes a user; `false` if no row has this id.
    pub async fn delete_user(&self, id: i64) -> Result<bool, sqlx::Error> {
        const PG: &str = "DELETE FROM users WHERE id = $1";
        const MY: &str = "DELETE FROM users WHERE id = ?";
        let deleted = match self {
            Db::Sqlite(pool) => sqlx::query(PG)
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected(),
            Db::Postgres(pool) => sqlx::query(PG)
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected(),
            Db::MySql(pool) => sqlx::query(MY)
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected(),
        };
        Ok(deleted > 0)
    }

    /// Inserts `users` in one transaction, `batch` rows per `INSERT`, and
    /// calls `progress` with the number of rows after each batch.
    ///
    /// Multi-row `INSERT … VALUES (…), (…), …` in one transaction is what
    /// makes seeding 100 000 rows take seconds: one statement per row would
    /// pay a round trip each, and one transaction per row a disk sync each.
    pub async fn insert_users(
        &self,
        users: &[NewUser],
        batch: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<(), sqlx::Error> {
        match self {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                for chunk in users.chunks(batch) {
                    insert_values(chunk).build().execute(&mut *tx).await?;
                    progress(chunk.len());
                }
                tx.commit().await
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                for chunk in users.chunks(batch) {
                    insert_values(chunk).build().execute(&mut *tx).await?;
                    progress(chunk.len());
                }
                tx.commit().await
            }
            Db::MySql(pool) => {
                let mut tx = pool.begin().await?;
                for chunk in users.chunks(batch) {
                    insert_values(chunk).build().execute(&mut *tx).await?;
                    progress(chunk.len());
                }
                tx.commit().await
            }
        }
    }
}

/// A database transaction, on whichever backend the pool is: the statements
/// made through it take effect together at [`Tx::commit`], or not at all.
/// Dropping it uncommitted rolls it back, as SQLx's own transactions do.
pub enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
    MySql(Transaction<'static, MySql>),
}

impl Tx {
    /// [`Db::update_user`], inside the transaction.
    pub async fn update_user(
        &mut self,
        id: i64,
        new: &NewUser,
    ) -> Result<Option<User>, sqlx::Error> {
        let done = match self {
            Tx::Sqlite(tx) => {
                let query = sqlx::query(UPDATE_PG).bind(&new.username).bind(&new.email);
                query.bind(id).execute(&mut **tx).await?.rows_affected()
            }
            Tx::Postgres(tx) => {
                let query = sqlx::query(UPDATE_PG).bind(&new.username).bind(&new.email);
                query.bind(id).execute(&mut **tx).await?.rows_affected()
            }
            Tx::MySql(tx) => {
                let query = sqlx::query(UPDATE_MY).bind(&new.username).bind(&new.email);
                query.bind(id).execute(&mut **tx).await?.rows_affected()
            }
        };
        Ok(updated(id, new, done))
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
            Tx::MySql(tx) => tx.commit().await,
        }
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.rollback().await,
            Tx::Postgres(tx) => tx.rollback().await,
            Tx::MySql(tx) => tx.rollback().await,
        }
    }
}

/// The user an `UPDATE` of `rows_affected` rows made, if it found its row.
///
/// MySQL counts matched rows here, not only changed ones, because SQLx
/// connects with CLIENT_FOUND_ROWS: an update that changes nothing still
/// finds its row, as on the other backends.
fn updated(id: i64, new: &NewUser, rows_affected: u64) -> Option<User> {
    (rows_affected > 0).then(|| User {
        id,
        username: new.username.clone(),
        email: new.email.clone(),
    })
}

/// `INSERT INTO users (username, email) VALUES (…), (…), …` with one pair of
/// bound parameters per user, in the backend's placeholder syntax.
fn insert_values<'a, DB>(users: &'a [NewUser]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    &'a String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut query = QueryBuilder::new("INSERT INTO users (username, email) ");
    query.push_values(users, |mut row, user| {
        row.push_bind(&user.username).push_bind(&user.email);
    });
    query
}
