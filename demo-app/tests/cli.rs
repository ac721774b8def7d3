//! The `demo-app` binary's command line as a user meets it: the environment
//! variables it reads, its `--help`, and its messages for bad input.
//!
//! Each test runs the binary in a child process with an environment of its
//! own, since clap reads the variables from the process environment.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `demo-app args…` with only the variables in `env`.
fn demo_app(args: &[&str], env: &[(&str, &str)]) -> Output {
    demo_app_in(&std::env::temp_dir(), args, env)
}

/// [`demo_app`], run in `dir`.
fn demo_app_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_demo-app"))
        .current_dir(dir)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("demo-app runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A Redis URL nothing listens on: the demo works without Redis, and these
/// tests leave the shared one alone.
fn unreachable_redis() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    format!("redis://127.0.0.1:{port}")
}

/// An empty directory for one test's SQLite file, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("demo-app-cli-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn help_names_the_commands_and_variables_but_no_password() {
    let output = demo_app(
        &["--help"],
        &[
            ("DATABASE_URL", "postgres://app:s3cret@db/demo"),
            ("REDIS_URL", "redis://:s3cret@cache:6379"),
        ],
    );
    assert!(output.status.success(), "{output:?}");
    let help = stdout(&output);
    for expected in [
        "serve",
        "seed",
        "bench",
        "--database-url <URL>",
        "[env: DATABASE_URL]",
        "[env: REDIS_URL]",
        "[env: REDIS_CLUSTER_URLS]",
        "[env: BIND_ADDR=]",
        "[env: SEED_USERS=]",
        "[env: RUST_LOG=]",
        "[default: sqlite://demo-app.db]",
        "[default: 100000]",
    ] {
        assert!(help.contains(expected), "no `{expected}` in:\n{help}");
    }
    assert!(!help.contains("s3cret"), "{help}");

    let output = demo_app(&["help", "bench"], &[]);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout(&output).contains("--runs <N>"), "{output:?}");
}

#[test]
fn the_environment_configures_the_database_and_the_seed() {
    let dir = TempDir::new("env");
    let database_url = format!("sqlite://{}", dir.0.join("demo.db").display());
    let redis_url = unreachable_redis();
    let env = [
        ("DATABASE_URL", database_url.as_str()),
        ("REDIS_URL", redis_url.as_str()),
        ("SEED_USERS", "3"),
        ("RUST_LOG", "error"),
    ];

    let output = demo_app(&["seed"], &env);
    assert!(output.status.success(), "{output:?}");
    let out = stdout(&output);
    assert!(out.starts_with("added 3 users in "), "{out}");
    assert!(out.ends_with("; the table has 3\n"), "{out}");
    assert!(dir.0.join("demo.db").exists(), "DATABASE_URL was used");

    // An option wins over its variable.
    let output = demo_app(&["seed", "--users", "2"], &env);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout(&output).ends_with("; the table has 5\n"),
        "{output:?}"
    );
}

#[test]
fn an_empty_variable_counts_as_unset() {
    let dir = TempDir::new("empty");
    let env = [
        ("DATABASE_URL", ""),
        ("REDIS_URL", ""),
        ("REDIS_CLUSTER_URLS", ""),
        ("SEED_USERS", ""),
        ("RUST_LOG", ""),
    ];
    let output = demo_app_in(&dir.0, &["seed", "--users", "1"], &env);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout(&output).ends_with("; the table has 1\n"),
        "{output:?}"
    );
    assert!(
        dir.0.join("demo-app.db").exists(),
        "the default database, sqlite://demo-app.db, was used"
    );
}

#[test]
fn an_unsupported_database_is_a_clear_error_without_its_password() {
    let redis_url = unreachable_redis();
    let output = demo_app(
        &["seed", "--users", "1"],
        &[
            ("DATABASE_URL", "ftp://app:s3cret@files/demo"),
            ("REDIS_URL", &redis_url),
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let message = stderr(&output);
    assert!(
        message.contains(
            "DATABASE_URL must start with sqlite://, postgres:// or mysql://, not `ftp://app:***@files/demo`"
        ),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
}

#[test]
fn bad_numbers_are_usage_errors() {
    let output = demo_app(&["seed"], &[("SEED_USERS", "lots")]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let message = stderr(&output);
    assert!(
        message.contains(
            "invalid value 'lots' for '--seed-users <N>': SEED_USERS (or --seed-users) must be a number"
        ),
        "{message}"
    );

    let output = demo_app(&["bench", "--runs", "0"], &[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let message = stderr(&output);
    assert!(message.contains("must be at least 1"), "{message}");
    assert!(message.contains("try '--help'"), "{message}");
}
