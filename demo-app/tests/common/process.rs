//! The `demo-app` binary serving on a free port, as a child process: for
//! the tests that need what `main` sets up (Actix's workers, each with its
//! own connection to Redis) or a real socket (a browser).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `demo-app serve` on a new SQLite file, killed on drop.
pub struct DemoProcess {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl DemoProcess {
    /// Starts the binary with `users` users and the Redis at `redis_url`,
    /// and returns once it accepts connections. Only a TCP connection is
    /// made to check that: no request reaches a worker before the test's.
    pub fn start(test: &str, redis_url: &str, users: u64) -> DemoProcess {
        let dir = std::env::temp_dir().join(format!("demo-app-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let port = free_port();
        let log = std::fs::File::create(dir.join("demo-app.log")).expect("a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_demo-app"))
            .current_dir(&dir)
            .env_clear()
            .env(
                "DATABASE_URL",
                format!("sqlite://{}", dir.join("demo.db").display()),
            )
            .env("REDIS_URL", redis_url)
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("SEED_USERS", users.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("demo-app starts");
        let mut process = DemoProcess { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("demo-app exited with {status}:\n{}", process.log());
            }
            assert!(
                Instant::now() < deadline,
                "demo-app did not listen within 60 s:\n{}",
                process.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        process
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What the process has logged (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("demo-app.log")).unwrap_or_default()
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `GET path` on a new connection to `127.0.0.1:port`: the status and the
/// body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to demo-app");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    (status, body.to_owned())
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}
