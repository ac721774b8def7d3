//! Test support: an app on a chosen database, with its own `redis-server`,
//! driven through actix's test service; and small request helpers.
//!
//! Every test gets a clean database of its own, so the tests of one binary
//! can run in parallel and again and again:
//! - SQLite: a new file in the temp directory;
//! - PostgreSQL: a schema named after the test, dropped and recreated, in the
//!   database of `TEST_POSTGRES_URL`;
//! - MySQL/MariaDB: a database named after the test (`demo_test_<test>`),
//!   dropped and recreated, on the server of `TEST_MYSQL_URL`.
//!
//! A database server that does not answer fails the test with what to
//! start: these tests never skip.
//!
//! [`process`] runs the `demo-app` binary itself, for the tests that need
//! its workers or a real socket.

// Each test binary uses its own backend only.
#![allow(dead_code)]

pub mod process;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use actix_web::test::{self, TestRequest};
use actix_web::{App, web};
use cache_tests::RedisServer;
use demo_app::db::Db;
use demo_app::model::User;
use demo_app::repo::Repo;
use demo_app::routes;
use demo_app::seed;
use indicatif::ProgressBar;
use serde_json::Value;
use sqlx::mysql::{MySql, MySqlConnectOptions};
use sqlx::pool::{Pool, PoolOptions};
use sqlx::postgres::{PgConnectOptions, Postgres};
use sqlx::{Connection, Database, Executor, IntoArguments};

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/demo_test";
pub const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/demo_test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

/// The app under test: its repository, its Redis, and its database.
pub struct TestApp {
    pub repo: Repo,
    /// `None` for tests that start without Redis.
    pub redis: Option<RedisServer>,
    sqlite_file: Option<PathBuf>,
}

impl TestApp {
    /// An app on a fresh database for `test`, with its own `redis-server`.
    pub async fn start(backend: Backend, test: &str) -> TestApp {
        let redis = RedisServer::start();
        let url = redis.url();
        let mut app = TestApp::with_redis_url(backend, test, &url).await;
        app.redis = Some(redis);
        app
    }

    /// An app whose Redis URL names a port nothing listens on. Returns the
    /// port, where the test can start a server later.
    pub async fn start_without_redis(backend: Backend, test: &str) -> (TestApp, u16) {
        let port = RedisServer::unused_port();
        let url = format!("redis://127.0.0.1:{port}");
        (TestApp::with_redis_url(backend, test, &url).await, port)
    }

    async fn with_redis_url(backend: Backend, test: &str, redis_url: &str) -> TestApp {
        // Before any cached call in this binary, as `main` does.
        demo_app::metrics::install();
        let (db, sqlite_file) = match backend {
            Backend::Sqlite => {
                let (db, file) = sqlite_db(test).await;
                (db, Some(file))
            }
            Backend::Postgres => (postgres_db(test).await, None),
            Backend::MySql => (mysql_db(test).await, None),
        };
        db.migrate().await.expect("the migrations apply");
        // The app's own settings (prefix, deadline), with a deadline generous
        // enough for a loaded CI machine: a slow Redis reply must not turn an
        // expected hit into a miss.
        let cache = demo_app::cache_builder()
            .url(redis_url)
            .deadline(Duration::from_secs(1))
            .build()
            .expect("a valid cache configuration");
        TestApp {
            repo: Repo::new(db, cache),
            redis: None,
            sqlite_file,
        }
    }

    pub fn redis(&mut self) -> &mut RedisServer {
        self.redis.as_mut().expect("this test has a redis-server")
    }

    /// Adds `count` users through the seeding code; returns them all.
    pub async fn seed(&self, count: u64) -> Vec<User> {
        let progress = ProgressBar::hidden();
        seed::seed(&self.repo, count, &progress)
            .await
            .expect("seeding works");
        assert_eq!(progress.position(), count, "the bar counts every row");
        assert!(progress.is_finished());
        self.repo.db().fetch_all_users().await.expect("the users")
    }

    /// The app as actix's test service, which runs requests through the real
    /// routing, extractors and handlers, without a socket. It holds its own
    /// handle on the repository, so the test can still kill Redis.
    #[allow(clippy::type_complexity)]
    pub fn service(
        &self,
    ) -> impl Future<
        Output = impl Service<
            actix_http::Request,
            Response = ServiceResponse<impl MessageBody + use<>>,
            Error = actix_web::Error,
        > + use<>,
    > + use<> {
        service_of(self.repo.clone())
    }
}

/// [`TestApp::service`] over `repo`: for a second instance of the app, in
/// another thread, sharing the repository's pool and cache.
pub async fn service_of(
    repo: Repo,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    test::init_service(
        App::new()
            .app_data(web::Data::new(repo))
            .configure(routes::configure),
    )
    .await
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(file) = &self.sqlite_file {
            for suffix in ["", "-wal", "-shm"] {
                let mut path = file.clone().into_os_string();
                path.push(suffix);
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

async fn sqlite_db(test: &str) -> (Db, PathBuf) {
    let dir = std::env::temp_dir().join("demo-app-tests");
    std::fs::create_dir_all(&dir).expect("create the temp directory");
    let file = dir.join(format!("{test}-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let db = Db::connect(&format!("sqlite://{}", file.display()))
        .await
        .expect("SQLite opens a new file");
    (db, file)
}

/// A database server the tests need, and what to say when it does not answer.
struct Server {
    name: &'static str,
    /// The environment variable with its URL, and the URL without it.
    var: &'static str,
    default_url: &'static str,
    /// How to start it and create its database by hand.
    setup: &'static str,
}

const POSTGRES: Server = Server {
    name: "PostgreSQL",
    var: "TEST_POSTGRES_URL",
    default_url: DEFAULT_POSTGRES_URL,
    setup: "Start PostgreSQL and create the database \
            (scripts/test does both; by hand: `pg_ctlcluster 15 main start` and \
            `psql -h 127.0.0.1 -U postgres -c 'CREATE DATABASE demo_test'`)",
};

const MYSQL: Server = Server {
    name: "MySQL/MariaDB",
    var: "TEST_MYSQL_URL",
    default_url: DEFAULT_MYSQL_URL,
    setup: "Start MariaDB and create the database \
            (scripts/test does both; by hand: start mariadbd, then \
            `mariadb -h 127.0.0.1 -u root -e 'CREATE DATABASE IF NOT EXISTS demo_test'`)",
};

impl Server {
    fn url(&self) -> String {
        std::env::var(self.var).unwrap_or_else(|_| self.default_url.into())
    }

    /// Runs `statements`, which drop and recreate a test's schema or
    /// database, on the server of `url`; fails the test, saying what to
    /// start, if it does not answer.
    async fn recreate<DB>(&self, url: &str, statements: [String; 2])
    where
        DB: Database,
        for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
        for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    {
        let admin = PoolOptions::<DB>::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "\n\n{} is not reachable at {url}: {error}\n\
                     These tests never skip. {}, or set {} to a server that runs.\n",
                    self.name, self.setup, self.var
                )
            });
        for statement in statements {
            sqlx::query(&statement)
                .execute(&admin)
                .await
                .unwrap_or_else(|error| panic!("`{statement}` failed: {error}"));
        }
        admin.close().await;
    }
}

/// The pool a test's app uses, on the schema or database `options` name.
async fn test_pool<DB: Database>(options: <DB::Connection as Connection>::Options) -> Pool<DB> {
    PoolOptions::<DB>::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .expect("connect to the test's schema or database")
}

async fn postgres_db(test: &str) -> Db {
    let url = POSTGRES.url();
    let schema = format!("test_{}", short_name(test));
    let statements = [
        format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        format!("CREATE SCHEMA {schema}"),
    ];
    POSTGRES.recreate::<Postgres>(&url, statements).await;
    let options = PgConnectOptions::from_str(&url)
        .expect("a valid TEST_POSTGRES_URL")
        .options([("search_path", schema.as_str())]);
    Db::Postgres(test_pool(options).await)
}

async fn mysql_db(test: &str) -> Db {
    let url = MYSQL.url();
    let base = url.rsplit('/').next().unwrap_or("demo_test");
    let base = base.split('?').next().unwrap_or(base);
    let database = format!("{base}_{}", short_name(test));
    let statements = [
        format!("DROP DATABASE IF EXISTS `{database}`"),
        format!("CREATE DATABASE `{database}`"),
    ];
    MYSQL.recreate::<MySql>(&url, statements).await;
    let options = MySqlConnectOptions::from_str(&url)
        .expect("a valid TEST_MYSQL_URL")
        .database(&database);
    Db::MySql(test_pool(options).await)
}

/// `test`, short enough for a schema or database name (at most 63 and 64
/// bytes on PostgreSQL and MySQL), and still unique: a shortened name ends
/// with a hash of the whole one.
fn short_name(test: &str) -> String {
    const KEEP: usize = 40;
    if test.len() <= KEEP {
        return test.to_owned();
    }
    // FNV-1a: stable across runs and Rust versions, unlike `DefaultHasher`.
    let hash = test.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{}_{:08x}", &test[..KEEP], hash as u32)
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    /// The `X-Cache` header, if any.
    pub cache: Option<String>,
    /// The `X-Cache-Tier` header, if any.
    pub tier: Option<String>,
    /// The `X-Cache-Outcome` header, if any.
    pub outcome: Option<String>,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "the body is not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn user(&self) -> User {
        serde_json::from_slice(&self.body).expect("a user")
    }

    pub fn users(&self) -> Vec<User> {
        serde_json::from_slice(&self.body).expect("a list of users")
    }

    /// Asserts a JSON error body with this status, and returns its message.
    #[track_caller]
    pub fn assert_error(&self, status: StatusCode) -> String {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert!(
            self.content_type.starts_with("application/json"),
            "an error is JSON, not `{}`: {}",
            self.content_type,
            self.text()
        );
        let message = self.json()["error"].as_str().map(str::to_owned);
        message.unwrap_or_else(|| panic!("no `error` field in {}", self.text()))
    }
}

/// Sends `request` through `app`.
pub async fn call<S, B>(app: &S, request: TestRequest) -> Reply
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let response = test::call_service(app, request.to_request()).await;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("an ASCII header").to_owned())
    };
    let status = response.status();
    let cache = header("x-cache");
    let tier = header("x-cache-tier");
    let outcome = header("x-cache-outcome");
    let content_type = header("content-type").unwrap_or_default();
    let body = test::read_body(response).await.to_vec();
    Reply {
        status,
        cache,
        tier,
        outcome,
        content_type,
        body,
    }
}

pub fn get(path: &str) -> TestRequest {
    TestRequest::get().uri(path)
}

pub fn post(path: &str, body: Value) -> TestRequest {
    TestRequest::post().uri(path).set_json(body)
}

pub fn put(path: &str, body: Value) -> TestRequest {
    TestRequest::put().uri(path).set_json(body)
}

pub fn patch(path: &str, body: Value) -> TestRequest {
    TestRequest::patch().uri(path).set_json(body)
}

pub fn delete(path: &str) -> TestRequest {
    TestRequest::delete().uri(path)
}

/// A request with this raw body, sent as JSON.
pub fn raw_json(request: TestRequest, body: &'static str) -> TestRequest {
    request.insert_header(ContentType::json()).set_payload(body)
}

/// A value unique to this test process and call, for emails.
pub fn unique(label: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{label}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
