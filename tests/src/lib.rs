//! Test support: real `redis-server` processes, and the questions the tests
//! ask them and the cache.
//!
//! Each [`RedisServer`] is its own process, so tests are isolated from each
//! other and can kill, stall (`SIGSTOP`) or restart their server. It is
//! killed when dropped. There is no mock anywhere: if `redis-server` is not
//! installed, the test fails and says how to install it.
//!
//! [`architecture`] is different: it reads the workspace's sources, for the
//! test that keeps the crates' modules in one-way layers.

pub mod architecture;
mod calls;
mod cluster;
mod proxy;
mod random;
mod runtimes;
mod server;
mod tls;

pub use calls::{Calls, caches, eventually, resumes};
pub use cluster::RedisCluster;
pub use proxy::{DelayingProxy, Delays, StallingProxy};
pub use random::Xorshift;
pub use runtimes::{current_thread_runtime, one_worker_runtime};
pub use server::RedisServer;
pub use tls::TestCertificates;
