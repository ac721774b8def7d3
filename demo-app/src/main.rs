//! `demo-app`: configuration, the command line, and the server.

use std::error::Error;
use std::process::ExitCode;

use actix_web::middleware::Logger;
use actix_web::{App, HttpServer, web};
use demo_app::db::{self, Db};
use demo_app::redact;
use demo_app::repo::Repo;
use demo_app::seed::{self, Progress};
use demo_app::{bench, routes};

const USAGE: &str = "\
usage: demo-app [serve]             start the web server
       demo-app seed [--users N]    add N users (default: SEED_USERS)
       demo-app bench [--runs N]    time the first and the second access of all users
                                    (default: 5 runs)

environment:
  DATABASE_URL  sqlite://demo-app.db (the default: a file here), postgres://…, mysql://…
  REDIS_URL     redis://127.0.0.1:6379 by default
  BIND_ADDR     the address to listen on; 127.0.0.1:8080 by default
  SEED_USERS    the users an empty database gets on first start; 100000 by default
  RUST_LOG      log levels: `info,sqlx=warn` by default; e.g. `info,cache_runtime=debug`";

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Serve,
    Seed { users: Option<u64> },
    Bench { runs: usize },
    Help,
}

/// The command line, hand-parsed: three commands with one option each.
fn parse_args(args: &[String]) -> Result<Command, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let number = |option: &str, value: Option<&&str>| -> Result<u64, String> {
        value
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{option} needs a number"))
    };
    match args.as_slice() {
        [] | ["serve"] => Ok(Command::Serve),
        ["help" | "-h" | "--help", ..] => Ok(Command::Help),
        ["seed"] => Ok(Command::Seed { users: None }),
        ["seed", "--users", rest @ ..] if rest.len() <= 1 => Ok(Command::Seed {
            users: Some(number("--users", rest.first())?),
        }),
        ["bench"] => Ok(Command::Bench { runs: 5 }),
        ["bench", "--runs", rest @ ..] if rest.len() <= 1 => {
            match number("--runs", rest.first())? {
                0 => Err("--runs must be at least 1".to_owned()),
                runs => Ok(Command::Bench {
                    runs: runs as usize,
                }),
            }
        }
        _ => Err(format!("unexpected arguments: {}", args.join(" "))),
    }
}

/// Settings from the environment.
#[derive(Debug, PartialEq, Eq)]
struct Config {
    database_url: String,
    bind_addr: String,
    seed_users: u64,
}

impl Config {
    fn from_env() -> Result<Config, String> {
        Config::from_vars(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let seed_users = match var("SEED_USERS") {
            None => 100_000,
            Some(n) => n
                .parse()
                .map_err(|_| format!("SEED_USERS must be a number, not `{n}`"))?,
        };
        Ok(Config {
            database_url: var("DATABASE_URL")
                .unwrap_or_else(|| db::DEFAULT_DATABASE_URL.to_owned()),
            bind_addr: var("BIND_ADDR").unwrap_or_else(|| "127.0.0.1:8080".to_owned()),
            seed_users,
        })
    }
}

#[actix_web::main]
async fn main() -> ExitCode {
    init_logging();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match parse_args(&args) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(command) => command,
        Err(message) => {
            eprintln!("demo-app: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match Config::from_env() {
        Ok(config) => run(command, config).await,
        Err(message) => Err(message.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo-app: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> Result<(), Box<dyn Error>> {
    let repo = open(&config).await?;
    match command {
        Command::Serve => {
            seed_if_empty(&repo, config.seed_users).await?;
            serve(repo, &config.bind_addr).await?;
        }
        Command::Seed { users } => {
            let users = users.unwrap_or(config.seed_users);
            let started = std::time::Instant::now();
            let total = seed::seed(&repo, users, &mut Progress::new(users)).await?;
            println!(
                "added {users} users in {:.1} s; the table has {total}",
                started.elapsed().as_secs_f64()
            );
        }
        Command::Bench { runs } => {
            seed_if_empty(&repo, config.seed_users).await?;
            let redis_url = std::env::var("REDIS_URL")
                .unwrap_or_else(|_| cache_runtime::defaults::URL.to_owned());
            println!(
                "database {} ({}), Redis {}",
                redact::url(&config.database_url),
                repo.db().backend(),
                redact::url(&redis_url),
            );
            let measurement = bench::measure(web::Data::new(repo), runs).await?;
            println!("{} users, {runs} runs\n", measurement.users);
            print!("{}", bench::render(&measurement));
        }
        Command::Help => unreachable!("handled in main"),
    }
    Ok(())
}

/// Connects to the database (creating it if needed), migrates it, and puts
/// the cache in front.
async fn open(config: &Config) -> Result<Repo, Box<dyn Error>> {
    let url = &config.database_url;
    let db = Db::connect(url)
        .await
        .map_err(|e| format!("cannot open the database {}: {e}", redact::url(url)))?;
    db.migrate()
        .await
        .map_err(|e| format!("cannot migrate the database {}: {e}", redact::url(url)))?;
    // Connects in the background: the app starts, and works, without Redis.
    let cache = demo_app::cache_builder().build()?;
    Ok(Repo::new(db, cache))
}

/// The blog post's setup: an empty table gets its 100 000 users.
async fn seed_if_empty(repo: &Repo, users: u64) -> Result<(), Box<dyn Error>> {
    if users == 0 || repo.db().count_users().await? > 0 {
        return Ok(());
    }
    tracing::info!("the users table is empty: adding {users} users (SEED_USERS)");
    let started = std::time::Instant::now();
    seed::seed(repo, users, &mut Progress::new(users)).await?;
    tracing::info!("seeded in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

async fn serve(repo: Repo, bind_addr: &str) -> std::io::Result<()> {
    let backend = repo.db().backend();
    let repo = web::Data::new(repo);
    let server = HttpServer::new(move || {
        App::new()
            // One log line per request, with its cache outcome.
            .wrap(Logger::new(
                r#""%r" %s %b bytes %D ms X-Cache: %{X-Cache}o"#,
            ))
            .app_data(repo.clone())
            .configure(routes::configure)
    })
    .bind(bind_addr)?;
    for addr in server.addrs() {
        tracing::info!("listening on http://{addr}/ (database: {backend})");
    }
    server.run().await
}

fn init_logging() {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;

    let filter: Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse().ok())
        // SQLx logs PostgreSQL's notices, such as "relation
        // _sqlx_migrations already exists, skipping", at INFO.
        .unwrap_or_else(|| "info,sqlx=warn".parse().expect("a valid filter"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .finish()
        .with(filter)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn commands_parse() {
        assert_eq!(parse_args(&args("")), Ok(Command::Serve));
        assert_eq!(parse_args(&args("serve")), Ok(Command::Serve));
        assert_eq!(parse_args(&args("seed")), Ok(Command::Seed { users: None }));
        assert_eq!(
            parse_args(&args("seed --users 500")),
            Ok(Command::Seed { users: Some(500) })
        );
        assert_eq!(
            parse_args(&args("bench --runs 3")),
            Ok(Command::Bench { runs: 3 })
        );
        assert_eq!(parse_args(&args("--help")), Ok(Command::Help));
        assert!(parse_args(&args("seed --users")).is_err());
        assert!(parse_args(&args("seed --users x")).is_err());
        assert!(parse_args(&args("bench --runs 0")).is_err());
        assert!(parse_args(&args("serve now")).is_err());
    }

    #[test]
    fn config_defaults_and_overrides() {
        let defaults = Config::from_vars(|_| None).unwrap();
        assert_eq!(defaults.database_url, "sqlite://demo-app.db");
        assert_eq!(defaults.bind_addr, "127.0.0.1:8080");
        assert_eq!(defaults.seed_users, 100_000);

        let config = Config::from_vars(|name| match name {
            "SEED_USERS" => Some("10".into()),
            "DATABASE_URL" => Some("postgres://localhost/demo".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(config.seed_users, 10);
        assert_eq!(config.database_url, "postgres://localhost/demo");
        assert!(Config::from_vars(|_| Some("lots".into())).is_err());
    }
}
