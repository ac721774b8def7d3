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

/// A `redis-server` ready to join a cluster.
fn start_node() -> RedisServer {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
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
}

/// Runs `redis-cli` with `args`, and panics with its output if it fails.
fn redis_cli(args: &[&str]) {
    let output = Command::new("redis-cli")
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(
        output.status.success(),
        "redis-cli {args:?} failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

impl RedisCluster {
    pub fn start(masters: usize) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..masters).map(|_| start_node()).collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        let mut create = vec!["--cluster", "create"];
        create.extend(addresses.iter().map(String::as_str));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        redis_cli(&create);
        let cluster = RedisCluster { nodes };
        cluster.wait_until_ok();
        cluster
    }

    fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.is_ok() {
            assert!(Instant::now() < deadline, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn address(&self, node: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[node].port())
    }

    /// The cluster id of node `node`.
    pub fn id_of(&self, node: usize) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.nodes[node].client())
            .expect("CLUSTER MYID")
    }

    /// Moves `slots` slots, keys included, from node `from` to node `to`.
    pub fn reshard(&self, from: usize, to: usize, slots: usize) {
        redis_cli(&[
            "--cluster",
            "reshard",
            &self.address(from),
            "--cluster-from",
            &self.id_of(from),
            "--cluster-to",
            &self.id_of(to),
            "--cluster-slots",
            &slots.to_string(),
            "--cluster-yes",
        ]);
    }

    /// Starts one more master and joins it to the cluster, with no slot
    /// yet; returns its index in `nodes`.
    pub fn add_master(&mut self) -> usize {
        self.nodes.push(start_node());
        let new = self.nodes.len() - 1;
        redis_cli(&[
            "--cluster",
            "add-node",
            &self.address(new),
            &self.address(0),
        ]);
        self.wait_until_ok();
        new
    }

    /// Whether node `node` serves `key`'s slot.
    pub fn owns(&self, node: usize, key: &str) -> bool {
        // Any other node answers MOVED.
        redis::cmd("EXISTS")
            .arg(key)
            .query::<i64>(&mut self.nodes[node].client())
            .is_ok()
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
