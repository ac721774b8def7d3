//! Test support: a real `redis-server` per test, on a free loopback port.
//!
//! Each [`RedisServer`] is its own process, so tests are isolated from each
//! other and can kill, stall (`SIGSTOP`) or restart their server. It is
//! killed when dropped. There is no mock anywhere: if `redis-server` is not
//! installed, the test fails and says how to install it.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, CacheBuilder};

/// A `redis-server` child process on `127.0.0.1:<port>`.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
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

/// A Redis Cluster of `redis-server` children: masters only, on free ports
/// below 55535 (the cluster bus uses port + 10000), formed with
/// `redis-cli --cluster create`. Nodes are killed on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(masters: usize) -> RedisCluster {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| {
                let config_file = std::env::temp_dir().join(format!(
                    "cache-tests-nodes-{}-{}.conf",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed)
                ));
                let _ = std::fs::remove_file(&config_file);
                RedisServer::start_with(
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &config_file.to_string_lossy(),
                        "--cluster-node-timeout",
                        "1000",
                        // Slots of a dead master fail; the others keep serving.
                        "--cluster-require-full-coverage",
                        "no",
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                )
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.is_ok() {
            assert!(Instant::now() < deadline, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// Whether every node says `cluster_state:ok` and knows every node.
    fn is_ok(&self) -> bool {
        self.nodes.iter().all(|node| {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut node.client())
                .unwrap_or_default();
            info.contains("cluster_state:ok")
                && info.contains(&format!("cluster_known_nodes:{}", self.nodes.len()))
        })
    }

    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Every key of every node.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .nodes
            .iter()
            .filter(|node| node.child.is_some())
            .flat_map(|node| {
                redis::cmd("KEYS")
                    .arg("*")
                    .query::<Vec<String>>(&mut node.client())
                    .unwrap_or_default()
            })
            .collect();
        keys.sort();
        keys
    }
}

/// A throwaway CA and a server certificate it signed for 127.0.0.1, made
/// with the `openssl` command line in a fresh temporary directory.
pub struct TestCertificates {
    pub dir: std::path::PathBuf,
}

impl TestCertificates {
    pub fn generate() -> TestCertificates {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cache-tests-tls-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the certificate directory");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let steps: [&[&str]; 3] = [
            &[
                &["req", "-x509"],
                &ec[..],
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=cache-tests CA",
                ],
            ]
            .concat(),
            &[
                &["req"],
                &ec[..],
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "san.cnf",
            ],
        ];
        std::fs::write(
            dir.join("san.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("write san.cnf");
        for args in steps {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .unwrap_or_else(|e| panic!("run openssl (apt-get install openssl): {e}"));
            assert!(
                output.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        TestCertificates { dir }
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).to_string_lossy().into_owned()
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("ca.crt")).expect("read ca.crt")
    }

    /// `redis-server` arguments for a TLS port using these certificates.
    pub fn server_args(&self, tls_port: u16) -> Vec<String> {
        [
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &self.path("server.crt"),
            "--tls-key-file",
            &self.path("server.key"),
            "--tls-ca-cert-file",
            &self.path("ca.crt"),
            "--tls-auth-clients",
            "no",
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

impl Drop for TestCertificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy in front of a Redis server that stalls one request: the
/// first one (across all its connections) whose bytes contain `pattern` is
/// never forwarded, nor is anything after it on that connection, while the
/// connection stays open. It stands for a network that loses one request:
/// the client's deadline passes, and the server never sees the command.
pub struct StallingProxy {
    port: u16,
    stalled: std::sync::Arc<AtomicUsize>,
}

impl StallingProxy {
    /// Listens on a free loopback port, forwarding to `127.0.0.1:target_port`.
    /// Call it inside the runtime that will drive the proxy.
    pub async fn start(target_port: u16, pattern: &'static [u8]) -> StallingProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let stalled = std::sync::Arc::new(AtomicUsize::new(0));
        let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let stalled_count = stalled.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                else {
                    continue;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let armed = armed.clone();
                let stalled = stalled_count.clone();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 64 * 1024];
                    loop {
                        let read = match client_read.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => read,
                        };
                        let bytes = &buffer[..read];
                        if bytes.windows(pattern.len()).any(|window| window == pattern)
                            && armed.swap(false, Ordering::SeqCst)
                        {
                            stalled.fetch_add(1, Ordering::SeqCst);
                            // Hold both halves open, forwarding nothing more.
                            std::future::pending::<()>().await;
                        }
                        if server_write.write_all(bytes).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        StallingProxy { port, stalled }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// How many requests it has stalled (0 or 1).
    pub fn stalled(&self) -> usize {
        self.stalled.load(Ordering::SeqCst)
    }
}

/// Polls `condition` every 20 ms until it holds or `limit` passes; returns
/// how long it took, or `None`.
pub async fn eventually<F, Fut>(limit: Duration, mut condition: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < limit {
        if condition().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Counts body runs: pass `&Calls` to a cached function (it is not part of
/// the key) and bump it in the body.
#[derive(Default)]
pub struct Calls(AtomicUsize);

impl Calls {
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}
