//! A real `redis-server` per test, on a free loopback port, that the test
//! can kill, stall (`SIGSTOP`) or restart.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, CacheBuilder};

/// A `redis-server` child process on `127.0.0.1:<port>`.
pub struct RedisServer {
    port: u16,
    /// `None` once killed.
    pub(crate) child: Option<Child>,
    /// Extra `redis-server` arguments, kept for restarts.
    extra_args: Vec<String>,
}

const START_TIMEOUT: Duration = Duration::from_secs(10);

impl RedisServer {
    /// Starts a server on a free port.
    pub fn start() -> RedisServer {
        RedisServer::start_with(Vec::new())
    }

    /// Starts a server on a free port with extra `redis-server` arguments
    /// (TLS, …). The plain port [`RedisServer::port`] is always open too.
    pub fn start_with(extra_args: Vec<String>) -> RedisServer {
        // Another test may take the port between our probe and the server's
        // bind; the server then exits and we try another one.
        let mut last_error = String::new();
        for _ in 0..10 {
            let port = free_port();
            match spawn_server(port, &extra_args) {
                Ok(child) => {
                    return RedisServer {
                        port,
                        child: Some(child),
                        extra_args,
                    };
                }
                Err(error) => last_error = error,
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    /// A port on which nothing listens, for "Redis is absent" tests;
    /// [`RedisServer::start_on`] can later start a server there.
    pub fn unused_port() -> u16 {
        free_port()
    }

    /// Starts a server on `port`, retrying while the port is still held.
    pub fn start_on(port: u16) -> RedisServer {
        RedisServer::start_on_with(port, Vec::new())
    }

    fn start_on_with(port: u16, extra_args: Vec<String>) -> RedisServer {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match spawn_server(port, &extra_args) {
                Ok(child) => {
                    return RedisServer {
                        port,
                        child: Some(child),
                        extra_args,
                    };
                }
                Err(error) if Instant::now() > deadline => {
                    panic!("could not start redis-server on port {port}: {error}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A builder for a cache on this server, with a deadline generous enough
    /// for a loaded CI machine. Tests that measure fault handling set their own.
    pub fn cache_builder(&self) -> CacheBuilder {
        Cache::builder()
            .url(self.url())
            .deadline(Duration::from_secs(1))
    }

    /// A cache on this server (see [`RedisServer::cache_builder`]).
    pub fn cache(&self) -> Cache {
        self.cache_builder().build().expect("valid cache config")
    }

    /// A direct, synchronous connection for inspecting and planting entries.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(5)))
            .expect("connect to the test redis-server")
    }

    /// Whether `key` exists.
    pub fn exists(&self, key: &str) -> bool {
        redis::Commands::exists(&mut self.client(), key).expect("EXISTS")
    }

    /// Every key, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.keys_matching("*")
    }

    /// The keys that match the glob-style `pattern`, sorted.
    pub fn keys_matching(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> =
            redis::Commands::keys(&mut self.client(), pattern).expect("KEYS");
        keys.sort();
        keys
    }

    /// Creates the ACL user `name`, allowed every command, key and channel
    /// but for `rules` (`-client`, `resetchannels`…, applied after), and
    /// returns the URL that logs in as it.
    pub fn user_url(&self, name: &str, rules: &[&str]) -> String {
        let password = format!("{name}-pw");
        let _: () = redis::cmd("ACL")
            .arg(
                &[
                    "SETUSER",
                    name,
                    "on",
                    &format!(">{password}"),
                    "~*",
                    "&*",
                    "+@all",
                ][..],
            )
            .arg(rules)
            .query(&mut self.client())
            .expect("ACL SETUSER");
        format!("redis://{name}:{password}@127.0.0.1:{}", self.port)
    }

    /// `CLIENT LIST`: one line per connected client, the asking one included.
    pub fn client_list(&self) -> String {
        redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut self.client())
            .expect("CLIENT LIST")
    }

    /// Closes the connections local tiers listen on (those with tracking on
    /// or subscribed to a channel: flags `t` or `P` in `CLIENT LIST`);
    /// returns how many.
    pub fn kill_listeners(&self) -> usize {
        let mut redis = self.client();
        let mut killed = 0;
        for line in self.client_list().lines() {
            let field = |name: &str| line.split(' ').find_map(|field| field.strip_prefix(name));
            let flags = field("flags=").unwrap_or_default();
            if let (true, Some(id)) = (flags.contains(['t', 'P']), field("id=")) {
                let _: () = redis::cmd("CLIENT")
                    .arg(&["KILL", "ID", id][..])
                    .query(&mut redis)
                    .expect("CLIENT KILL ID");
                killed += 1;
            }
        }
        killed
    }

    /// Kills the server (`SIGKILL`) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a new, empty server on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port;
        let extra_args = std::mem::take(&mut self.extra_args);
        *self = RedisServer::start_on_with(port, extra_args);
    }

    /// Stalls the server with `SIGSTOP`: connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Resumes a server stalled by [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("server is running").id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A stopped process ignores nothing but SIGKILL, which is what
            // `kill` sends, so a paused server is cleaned up too.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
        }
        self.kill();
    }
}

fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = listener.local_addr().expect("local addr").port();
        drop(listener);
        // Redis Cluster uses port + 10000 for its bus: stay below 55535.
        if port < 55535 {
            return port;
        }
    }
}

fn spawn_server(port: u16, extra_args: &[String]) -> Result<Child, String> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--dir", &std::env::temp_dir().to_string_lossy()])
        .args(extra_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                panic!(
                    "redis-server is not installed: install it (`apt-get install redis-server`), or run `.ci/run`, which does"
                );
            }
            format!("spawn redis-server: {e}")
        })?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "redis-server exited with {status} (port {port} taken?)"
            ));
        }
        if ping(port) {
            // The answer must come from our child, not another test's server.
            return match child.try_wait() {
                Ok(None) => Ok(child),
                _ => Err(format!("port {port} is answered by another server")),
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!("redis-server did not answer on port {port}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}
