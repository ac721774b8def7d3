//! `demo-app`: configuration, the command line, and the server.

use std::error::Error;
use std::process::ExitCode;

use actix_web::middleware::Logger;
use actix_web::{App, HttpServer, web};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use demo_app::db::{self, Db};
use demo_app::redact;
use demo_app::repo::Repo;
use demo_app::seed;
use demo_app::{bench, routes};

// The help's first line is the package's description, from Cargo.toml.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// What to do; `serve` when none is given.
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Debug, PartialEq, Eq, Subcommand)]
enum Command {
    /// Start the web server (the default); an empty table gets SEED_USERS users first
    Serve,
    /// Add users, in batched multi-row INSERTs in one transaction
    Seed {
        /// How many users to add [default: SEED_USERS]
        #[arg(long, value_name = "N")]
        users: Option<u64>,
    },
    /// Time the first and the second access of all users, as the blog post did
    Bench {
        /// How many times to measure each access
        #[arg(long, value_name = "N", default_value_t = 5, value_parser = at_least_one)]
        runs: usize,
    },
}

/// The settings, each an option or its environment variable. `global` lets
/// them come after the command too: `demo-app bench --database-url …`.
#[derive(Debug, PartialEq, Eq, Args)]
struct Config {
    /// sqlite://FILE, postgres://user[:password]@host[:port]/db, or mysql://… for MySQL and
    /// MariaDB; a missing file or database is created
    // The URLs may hold a password: `--help` must not print the ones set.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = db::DEFAULT_DATABASE_URL
    )]
    database_url: String,

    /// The Redis server
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "REDIS_URL",
        hide_env_values = true,
        default_value = cache_runtime::defaults::URL
    )]
    redis_url: String,

    /// A Redis Cluster's seed nodes, comma-separated, used instead of --redis-url
    #[arg(
        long,
        global = true,
        value_name = "URLS",
        env = "REDIS_CLUSTER_URLS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    redis_cluster_urls: Vec<String>,

    /// Where the server listens
    #[arg(
        long,
        global = true,
        value_name = "ADDR",
        env = "BIND_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    bind_addr: String,

    /// The users an empty table gets on first start (serve, bench); 0 for none
    #[arg(
        long,
        global = true,
        value_name = "N",
        env = "SEED_USERS",
        default_value_t = 100_000,
        value_parser = seed_users
    )]
    seed_users: u64,

    /// Log levels, such as `info,cache_runtime=debug`
    #[arg(
        long,
        global = true,
        value_name = "FILTER",
        env = "RUST_LOG",
        default_value = DEFAULT_LOG
    )]
    log: String,
}

const DEFAULT_LOG: &str = "info,sqlx=warn";

impl Cli {
    /// The command line and the environment, as [`Parser::parse`] reads
    /// them, except that a variable set to the empty string counts as unset
    /// (clap would take `""` as the value), as the runtime does for
    /// `REDIS_URL`: `SEED_USERS= demo-app` seeds the default 100 000 users.
    fn parse_args_and_env() -> Cli {
        let command = Cli::command().mut_args(|arg| match arg.get_env() {
            Some(name) if std::env::var_os(name).is_some_and(|value| value.is_empty()) => {
                arg.env(None)
            }
            _ => arg,
        });
        Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|error| error.exit())
    }
}

/// clap's own message would name only `--seed-users`, and the value more
/// often comes from the variable.
fn seed_users(value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| "SEED_USERS (or --seed-users) must be a number".to_owned())
}

fn at_least_one(value: &str) -> Result<usize, String> {
    match value.parse() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err("must be a number".to_owned()),
    }
}

impl Config {
    /// The cache's settings with this configuration's Redis.
    ///
    /// Cluster seeds win over `--redis-url`, as in the runtime's own reading
    /// of the environment (where `REDIS_CLUSTER_URLS` wins over `REDIS_URL`).
    fn cache_builder(&self) -> cache_runtime::CacheBuilder {
        let cluster = self.cluster_urls();
        let builder = demo_app::cache_builder();
        if cluster.is_empty() {
            builder.url(&self.redis_url)
        } else {
            builder.cluster_urls(cluster)
        }
    }

    fn cluster_urls(&self) -> Vec<&str> {
        self.redis_cluster_urls
            .iter()
            .map(|url| url.trim())
            .filter(|url| !url.is_empty())
            .collect()
    }

    /// The Redis the cache uses, its password hidden, for messages.
    fn redis(&self) -> String {
        match self.cluster_urls().as_slice() {
            [] => redact::url(&self.redis_url),
            urls => {
                let urls: Vec<String> = urls.iter().map(|url| redact::url(url)).collect();
                format!("Cluster {}", urls.join(","))
            }
        }
    }
}

#[actix_web::main]
async fn main() -> ExitCode {
    // `--help`, `--version` and bad arguments exit here, with clap's message
    // and status (2 for bad arguments).
    let Cli { command, config } = Cli::parse_args_and_env();
    init_logging(&config.log);
    // Before the first cached call: each function takes its metric handles
    // from the recorder installed then.
    demo_app::metrics::install();
    match run(command.unwrap_or(Command::Serve), config).await {
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
            let total = seed::seed(&repo, users, &seed::progress_bar(users)).await?;
            println!(
                "added {users} users in {:.1} s; the table has {total}",
                started.elapsed().as_secs_f64()
            );
        }
        Command::Bench { runs } => {
            seed_if_empty(&repo, config.seed_users).await?;
            println!(
                "database {} ({}), Redis {}",
                redact::url(&config.database_url),
                repo.db().backend(),
                config.redis(),
            );
            let measurement = bench::measure(web::Data::new(repo), runs).await?;
            println!("{} users, {runs} runs\n", measurement.users);
            print!("{}", bench::render(&measurement));
        }
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
    let cache = config.cache_builder().build()?;
    Ok(Repo::new(db, cache))
}

/// The blog post's setup: an empty table gets its 100 000 users.
async fn seed_if_empty(repo: &Repo, users: u64) -> Result<(), Box<dyn Error>> {
    if users == 0 || repo.db().count_users().await? > 0 {
        return Ok(());
    }
    tracing::info!("the users table is empty: adding {users} users (SEED_USERS)");
    let started = std::time::Instant::now();
    seed::seed(repo, users, &seed::progress_bar(users)).await?;
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
                r#""%r" %s %b bytes %D ms X-Cache: %{X-Cache}o %{X-Cache-Tier}o"#,
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

/// Logs to stderr at the levels `--log` (or `RUST_LOG`) gives; an
/// unparsable filter falls back to the default.
fn init_logging(spec: &str) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;

    let filter: Targets = spec
        .parse()
        .ok()
        // SQLx logs PostgreSQL's notices, such as "relation
        // _sqlx_migrations already exists, skipping", at INFO.
        .unwrap_or_else(|| DEFAULT_LOG.parse().expect("a valid filter"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .finish()
        .with(filter)
        .init();
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;

    #[test]
    fn cli() {
        Cli::command().debug_assert();
    }

    /// Parses `line` as clap would, with the environment left out: these
    /// tests check the options and defaults whatever the shell exports
    /// (`tests/cli.rs` checks the environment variables, in a child process).
    fn parse(line: &str) -> Result<Cli, clap::Error> {
        let matches = Cli::command()
            .mut_args(|arg| arg.env(None))
            .try_get_matches_from(std::iter::once("demo-app").chain(line.split_whitespace()))?;
        Cli::from_arg_matches(&matches)
    }

    fn command(line: &str) -> Option<Command> {
        parse(line)
            .unwrap_or_else(|e| panic!("`{line}`: {e}"))
            .command
    }

    fn error(line: &str) -> ErrorKind {
        match parse(line) {
            Ok(cli) => panic!("`{line}` parsed as {cli:?}"),
            Err(e) => e.kind(),
        }
    }

    #[test]
    fn commands_parse() {
        assert_eq!(command(""), None, "serve by default");
        assert_eq!(command("serve"), Some(Command::Serve));
        assert_eq!(command("seed"), Some(Command::Seed { users: None }));
        assert_eq!(
            command("seed --users 500"),
            Some(Command::Seed { users: Some(500) })
        );
        assert_eq!(command("bench"), Some(Command::Bench { runs: 5 }));
        assert_eq!(command("bench --runs 3"), Some(Command::Bench { runs: 3 }));
        assert_eq!(error("--help"), ErrorKind::DisplayHelp);
        assert_eq!(error("help"), ErrorKind::DisplayHelp);
        assert_eq!(error("help bench"), ErrorKind::DisplayHelp);
        assert_eq!(error("seed --users"), ErrorKind::InvalidValue);
        assert_eq!(error("seed --users x"), ErrorKind::ValueValidation);
        assert_eq!(error("bench --runs 0"), ErrorKind::ValueValidation);
        assert_eq!(error("serve now"), ErrorKind::UnknownArgument);
    }

    #[test]
    fn bad_numbers_say_what_is_wrong() {
        let message = parse("bench --runs 0").unwrap_err().to_string();
        assert!(message.contains("must be at least 1"), "{message}");
        let message = parse("bench --runs x").unwrap_err().to_string();
        assert!(message.contains("must be a number"), "{message}");
    }

    #[test]
    fn config_defaults_and_overrides() {
        let defaults = parse("").unwrap().config;
        assert_eq!(
            defaults,
            Config {
                database_url: "sqlite://demo-app.db".into(),
                redis_url: "redis://127.0.0.1:6379".into(),
                redis_cluster_urls: Vec::new(),
                bind_addr: "127.0.0.1:8080".into(),
                seed_users: 100_000,
                log: "info,sqlx=warn".into(),
            }
        );

        // Before or after the command: the settings are global.
        for line in [
            "--seed-users 10 --database-url postgres://localhost/demo seed",
            "seed --seed-users 10 --database-url postgres://localhost/demo",
        ] {
            let config = parse(line).unwrap().config;
            assert_eq!(config.seed_users, 10, "{line}");
            assert_eq!(config.database_url, "postgres://localhost/demo", "{line}");
        }
        let cluster = parse("--redis-cluster-urls redis://a:7000,redis://b:7001").unwrap();
        assert_eq!(
            cluster.config.redis_cluster_urls,
            ["redis://a:7000", "redis://b:7001"]
        );
        assert_eq!(error("--seed-users lots"), ErrorKind::ValueValidation);
    }
}
