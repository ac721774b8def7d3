//! A proxy that loses one request, for tests of what a lost command does.

use std::sync::atomic::{AtomicUsize, Ordering};

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
