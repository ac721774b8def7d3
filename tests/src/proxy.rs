//! Proxies in front of a Redis server that disturb its traffic: one loses a
//! request, for tests of what a lost command does; the other holds traffic
//! back for random short times, for tests of what late commands do.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::random::Xorshift;

/// A TCP proxy in front of a Redis server that stalls one request: the
/// first one (across all its connections) whose bytes contain `pattern` is
/// never forwarded, nor is anything after it on that connection, while the
/// connection stays open. It stands for a network that loses one request:
/// the client's deadline passes, and the server never sees the command.
/// [`StallingProxy::holding`] stalls one request or reply for a while
/// instead: one that comes late.
pub struct StallingProxy {
    port: u16,
    stalled: Arc<AtomicUsize>,
}

impl StallingProxy {
    /// Listens on a free loopback port, forwarding to `127.0.0.1:target_port`.
    /// Call it inside the runtime that will drive the proxy.
    pub async fn start(target_port: u16, pattern: &'static [u8]) -> StallingProxy {
        let (listener, port) = listen().await;
        let stalled = Arc::new(AtomicUsize::new(0));
        let armed = Arc::new(AtomicBool::new(true));
        let stalled_count = stalled.clone();
        serve(listener, target_port, move |direction, from, to| {
            let (armed, stalled) = (armed.clone(), stalled_count.clone());
            async move {
                match direction {
                    Direction::ToClient => forward(from, to).await,
                    Direction::ToServer => {
                        stall_once(from, to, pattern, None, &armed, &stalled).await;
                    }
                }
            }
        });
        StallingProxy { port, stalled }
    }

    /// Listens as [`StallingProxy::start`] does, but holds the first read of
    /// bytes, either way (a request or a reply), that contains `pattern`
    /// for `hold`, then forwards it and what queued behind it. Nothing is
    /// lost: one command, or its reply, comes late.
    pub async fn holding(
        target_port: u16,
        pattern: &'static [u8],
        hold: Duration,
    ) -> StallingProxy {
        let (listener, port) = listen().await;
        let stalled = Arc::new(AtomicUsize::new(0));
        let armed = Arc::new(AtomicBool::new(true));
        let stalled_count = stalled.clone();
        serve(listener, target_port, move |_, from, to| {
            let (armed, stalled) = (armed.clone(), stalled_count.clone());
            async move { stall_once(from, to, pattern, Some(hold), &armed, &stalled).await }
        });
        StallingProxy { port, stalled }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// How many requests (or, holding, replies) it has stalled (0 or 1).
    pub fn stalled(&self) -> usize {
        self.stalled.load(Ordering::SeqCst)
    }
}

/// How a [`DelayingProxy`] holds traffic back.
#[derive(Clone, Copy, Debug)]
pub struct Delays {
    /// One read of bytes in this many, on average, is held back.
    pub one_in: u64,
    /// The longest it is held; each hold is uniform in `(0, longest]`.
    pub longest: Duration,
}

/// A TCP proxy in front of a Redis server that holds traffic back for
/// random short times, both ways: some reads of bytes (see [`Delays`]) wait
/// before they are forwarded, and what follows them on their connection
/// waits behind them. Nothing is lost, and nothing is reordered within a
/// connection; across connections, a command sent after another can reach
/// the server first, and a reply can come late. It stands for a slow,
/// jittery network, short of the clients' deadlines.
pub struct DelayingProxy {
    port: u16,
    delayed: Arc<AtomicUsize>,
}

impl DelayingProxy {
    /// Listens on a free loopback port, forwarding to `127.0.0.1:target_port`
    /// with delays drawn from `seed`. Call it inside the runtime that will
    /// drive the proxy.
    pub async fn start(target_port: u16, delays: Delays, seed: u64) -> DelayingProxy {
        let (listener, port) = listen().await;
        let delayed = Arc::new(AtomicUsize::new(0));
        let delayed_count = delayed.clone();
        // Each direction of each connection draws its own delays.
        let pumps = AtomicU64::new(0);
        serve(listener, target_port, move |_, from, to| {
            let pump = pumps.fetch_add(1, Ordering::Relaxed);
            let random = Xorshift::new(seed.wrapping_add(pump.wrapping_mul(0x2545_f491)));
            let delayed = delayed_count.clone();
            async move { forward_with_delays(from, to, delays, random, &delayed).await }
        });
        DelayingProxy { port, delayed }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// How many reads of bytes it has held back so far.
    pub fn delayed(&self) -> usize {
        self.delayed.load(Ordering::SeqCst)
    }
}

/// Which way bytes flow through a proxied connection.
#[derive(Clone, Copy)]
enum Direction {
    ToServer,
    ToClient,
}

async fn listen() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let port = listener.local_addr().expect("the proxy's address").port();
    (listener, port)
}

/// Accepts connections on `listener`, joins each to a new connection to
/// `127.0.0.1:target_port`, and spawns `pump` for each direction of each.
fn serve<Pump, Pumping>(listener: TcpListener, target_port: u16, pump: Pump)
where
    Pump: Fn(Direction, OwnedReadHalf, OwnedWriteHalf) -> Pumping + Send + 'static,
    Pumping: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
            else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pump(Direction::ToClient, server_read, client_write));
            tokio::spawn(pump(Direction::ToServer, client_read, server_write));
        }
    });
}

async fn forward(mut from: OwnedReadHalf, mut to: OwnedWriteHalf) {
    let _ = tokio::io::copy(&mut from, &mut to).await;
}

/// Forwards every read, but the first one that contains `pattern`, if the
/// proxy is still `armed`, waits `hold` first; with no `hold`, it and all
/// that follows are never forwarded, while both halves stay open.
async fn stall_once(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    pattern: &[u8],
    hold: Option<Duration>,
    armed: &AtomicBool,
    stalled: &AtomicUsize,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let bytes = &buffer[..read];
        if bytes.windows(pattern.len()).any(|window| window == pattern)
            && armed.swap(false, Ordering::SeqCst)
        {
            stalled.fetch_add(1, Ordering::SeqCst);
            match hold {
                Some(hold) => tokio::time::sleep(hold).await,
                None => std::future::pending::<()>().await,
            }
        }
        if to.write_all(bytes).await.is_err() {
            return;
        }
    }
}

/// Forwards every read, holding some back first as `delays` says.
async fn forward_with_delays(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delays: Delays,
    mut random: Xorshift,
    delayed: &AtomicUsize,
) {
    let longest_micros = u64::try_from(delays.longest.as_micros()).unwrap_or(u64::MAX);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if random.one_in(delays.one_in) {
            delayed.fetch_add(1, Ordering::SeqCst);
            let hold = Duration::from_micros(1 + random.below(longest_micros));
            tokio::time::sleep(hold).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
