//! A Redis Cluster of test servers, formed with `redis-cli`.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::RedisServer;

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
