//! The database: one SQLx pool on SQLite, PostgreSQL or MySQL, its
//! migrations, and each query, written once for the three.
//!
//! Nothing here knows about the cache; [`crate::repo`] puts it in front.
//!
//! One enum over the three pool types, rather than `sqlx::Any`: typed pools
//! keep every row decoded by the backend's own driver. Each query is written
//! once, as the body of an `each_backend!`, which compiles it once per driver
//! against that driver's own types, so it needs no trait bounds. The few
//! things the dialects do differently (placeholders, MySQL's text columns,
//! MySQL's lack of `INSERT … RETURNING`) are in one trait, `Dialect`.
//! Queries are plain strings, checked by the tests against all three
//! backends: no `query!` macro, which would need a database at compile time.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateDatabase, MigrateError};
use sqlx::mysql::{MySql, MySqlPool, MySqlPoolOptions, MySqlQueryResult};
use sqlx::postgres::{PgPool, PgPoolOptions, Postgres};
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Database, Encode, Executor, IntoArguments, QueryBuilder, Transaction, Type};

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

/// A database transaction, on whichever backend the pool is: the statements
/// made through it take effect together at [`Tx::commit`], or not at all.
/// Dropping it uncommitted rolls it back, as SQLx's own transactions do.
pub enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
    MySql(Transaction<'static, MySql>),
}

/// `match`es `$value` (a [`Db`] or a [`Tx`], as `self`) on its backend, and
/// runs `$body` with `$handle` bound to the pool or transaction and `$DB`
/// naming the backend's `sqlx::Database`.
///
/// The body is written once and compiled three times, each time against one
/// driver's concrete types: a query needs no trait bounds to run on all three.
macro_rules! each_backend {
    ($value:expr, |$handle:ident $(, $DB:ident)?| $body:expr) => {
        match $value {
            Self::Sqlite($handle) => {
                $(type $DB = Sqlite;)?
                $body
            }
            Self::Postgres($handle) => {
                $(type $DB = Postgres;)?
                $body
            }
            Self::MySql($handle) => {
                $(type $DB = MySql;)?
                $body
            }
        }
    };
}

/// What the three dialects do differently, in one place. The defaults are
/// PostgreSQL's, which SQLite shares; MySQL overrides them.
trait Dialect: Database {
    /// How the driver hands over a `username` or `email` column.
    type Text;

    /// The text of a `Self::Text`.
    fn text(raw: Self::Text) -> Result<String, sqlx::Error>;

    /// `sql`, written with PostgreSQL's numbered placeholders `$1, $2, …`
    /// (which SQLite accepts too), in this backend's syntax.
    fn sql(sql: &'static str) -> Cow<'static, str> {
        Cow::Borrowed(sql)
    }

    /// How to read the new row's id from an `INSERT`'s result, on a backend
    /// without `INSERT … RETURNING`; `None` where the `INSERT` returns it.
    const INSERTED_ID: Option<fn(&Self::QueryResult) -> i64> = None;
}

impl Dialect for Sqlite {
    type Text = String;
    fn text(raw: String) -> Result<String, sqlx::Error> {
        Ok(raw)
    }
}

impl Dialect for Postgres {
    type Text = String;
    fn text(raw: String) -> Result<String, sqlx::Error> {
        Ok(raw)
    }
}

impl Dialect for MySql {
    /// Bytes: the schema gives the text columns the binary collation
    /// `utf8mb4_bin`, so that the unique email is compared exactly, as on the
    /// other backends (see the migration). MySQL then flags the columns as
    /// binary, and SQLx declines to decode a binary column as `String`: the
    /// bytes are decoded here instead.
    type Text = Vec<u8>;
    fn text(raw: Vec<u8>) -> Result<String, sqlx::Error> {
        String::from_utf8(raw).map_err(|e| sqlx::Error::Decode(e.into()))
    }

    /// `?` placeholders.
    fn sql(sql: &'static str) -> Cow<'static, str> {
        Cow::Owned(positional(sql))
    }

    /// MySQL has no `INSERT … RETURNING`.
    const INSERTED_ID: Option<fn(&MySqlQueryResult) -> i64> =
        Some(|done| i64::try_from(done.last_insert_id()).expect("ids fit the BIGINT column"));
}

/// `sql` with each numbered placeholder `$n` replaced by `?`. A `?` takes
/// the next value bound, so the `$n` must come in order, each once: a query
/// that breaks this fails on every call, and so in the tests.
fn positional(sql: &str) -> String {
    let mut pieces = sql.split('$');
    let mut positional = pieces.next().unwrap_or_default().to_owned();
    for (expected, piece) in (1..).zip(pieces) {
        let digits = piece.len() - piece.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        assert_eq!(
            piece[..digits].parse::<usize>(),
            Ok(expected),
            "placeholders must be `$1, $2, …` in order: {sql}"
        );
        positional.push('?');
        positional.push_str(&piece[digits..]);
    }
    positional
}

/// A row as the queries select it: `id, username, email`.
type Row<DB> = (i64, <DB as Dialect>::Text, <DB as Dialect>::Text);

fn user<DB: Dialect>((id, username, email): Row<DB>) -> Result<User, sqlx::Error> {
    Ok(User {
        id,
        username: DB::text(username)?,
        email: DB::text(email)?,
    })
}

const SELECT_ALL: &str = "SELECT id, username, email FROM users ORDER BY id";

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
        each_backend!(self, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(drop))
    }

    /// Closes every connection; later queries fail with `PoolClosed`.
    pub async fn close(&self) {
        each_backend!(self, |pool| pool.close().await)
    }

    pub async fn fetch_all_users(&self) -> Result<Vec<User>, sqlx::Error> {
        each_backend!(self, |pool, DB| {
            let rows: Vec<Row<DB>> = sqlx::query_as(SELECT_ALL).fetch_all(pool).await?;
            rows.into_iter().map(user::<DB>).collect()
        })
    }

    pub async fn fetch_user(&self, id: i64) -> Result<Option<User>, sqlx::Error> {
        const SQL: &str = "SELECT id, username, email FROM users WHERE id = $1";
        each_backend!(self, |pool, DB| {
            let sql = DB::sql(SQL);
            let row: Option<Row<DB>> = sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?;
            row.map(user::<DB>).transpose()
        })
    }

    pub async fn count_users(&self) -> Result<i64, sqlx::Error> {
        const SQL: &str = "SELECT COUNT(*) FROM users";
        each_backend!(self, |pool| sqlx::query_scalar(SQL).fetch_one(pool).await)
    }

    /// The largest id so far, or 0; what `seed` numbers new users after.
    pub async fn max_id(&self) -> Result<i64, sqlx::Error> {
        const SQL: &str = "SELECT COALESCE(MAX(id), 0) FROM users";
        each_backend!(self, |pool| sqlx::query_scalar(SQL).fetch_one(pool).await)
    }

    pub async fn insert_user(&self, new: &NewUser) -> Result<User, sqlx::Error> {
        const SQL: &str = "INSERT INTO users (username, email) VALUES ($1, $2)";
        let id = each_backend!(self, |pool, DB| {
            let sql = DB::sql(SQL);
            match DB::INSERTED_ID {
                Some(inserted_id) => {
                    let query = sqlx::query(&sql).bind(&new.username).bind(&new.email);
                    inserted_id(&query.execute(pool).await?)
                }
                None => {
                    let sql = format!("{sql} RETURNING id");
                    let query = sqlx::query_scalar(&sql)
                        .bind(&new.username)
                        .bind(&new.email);
                    query.fetch_one(pool).await?
                }
            }
        });
        Ok(User {
            id,
            username: new.username.clone(),
            email: new.email.clone(),
        })
    }

    /// Replaces a user's fields; `None` if no row has this id.
    pub async fn update_user(&self, id: i64, new: &NewUser) -> Result<Option<User>, sqlx::Error> {
        each_backend!(self, |pool, DB| {
            let done = update::<DB>(pool, id, new).await?;
            Ok(updated(id, new, done.rows_affected()))
        })
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
        const SQL: &str = "DELETE FROM users WHERE id = $1";
        each_backend!(self, |pool, DB| {
            let sql = DB::sql(SQL);
            let done = sqlx::query(&sql).bind(id).execute(pool).await?;
            Ok(done.rows_affected() > 0)
        })
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
        each_backend!(self, |pool| {
            let mut tx = pool.begin().await?;
            for chunk in users.chunks(batch) {
                insert_values(chunk).build().execute(&mut *tx).await?;
                progress(chunk.len());
            }
            tx.commit().await
        })
    }
}

impl Tx {
    /// [`Db::update_user`], inside the transaction.
    pub async fn update_user(
        &mut self,
        id: i64,
        new: &NewUser,
    ) -> Result<Option<User>, sqlx::Error> {
        each_backend!(self, |tx, DB| {
            let done = update::<DB>(&mut **tx, id, new).await?;
            Ok(updated(id, new, done.rows_affected()))
        })
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        each_backend!(self, |tx| tx.commit().await)
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        each_backend!(self, |tx| tx.rollback().await)
    }
}

/// The one `UPDATE`, on a pool or in a transaction: generic over the
/// executor rather than in an `each_backend!`, because it runs on both.
async fn update<'c, DB>(
    executor: impl Executor<'c, Database = DB>,
    id: i64,
    new: &NewUser,
) -> Result<DB::QueryResult, sqlx::Error>
where
    DB: Dialect,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    let sql = DB::sql("UPDATE users SET username = $1, email = $2 WHERE id = $3");
    let query = sqlx::query(&sql).bind(&new.username).bind(&new.email);
    query.bind(id).execute(executor).await
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

#[cfg(test)]
mod tests {
    use super::positional;

    #[test]
    fn numbered_placeholders_become_positional() {
        assert_eq!(
            positional("UPDATE users SET username = $1, email = $2 WHERE id = $3"),
            "UPDATE users SET username = ?, email = ? WHERE id = ?"
        );
        assert_eq!(positional("SELECT 1"), "SELECT 1");
    }

    #[test]
    #[should_panic(expected = "in order")]
    fn placeholders_out_of_order_are_refused() {
        positional("UPDATE users SET email = $2, username = $1");
    }
}
