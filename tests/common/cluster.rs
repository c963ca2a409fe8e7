//! A real Redis Cluster per test: `redis-server` processes with
//! `cluster-enabled`, on free ports (and free bus ports, port + 10000), in one
//! temp dir, joined by `redis-cli --cluster create`; every node killed and the
//! dir removed when dropped. Failover, crashes and resharding are driven with
//! the same tools an operator would use.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::{free_port, wait_for_pong};

/// One node as `CLUSTER NODES` describes it.
#[derive(Clone, Debug)]
pub struct Node {
    pub id: String,
    pub port: u16,
    pub primary: bool,
    /// For a replica: its primary's id.
    pub replica_of: Option<String>,
    /// Slot ranges owned (primaries), inclusive.
    pub slots: Vec<(u16, u16)>,
    pub failed: bool,
}

impl Node {
    pub fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }
}

pub struct RedisCluster {
    dir: PathBuf,
    nodes: BTreeMap<u16, Child>,
}

impl RedisCluster {
    /// `primaries` primaries with `replicas` replicas each, slots spread
    /// evenly by `redis-cli --cluster create`, waiting until every node
    /// reports the cluster `ok`.
    pub fn start(primaries: usize, replicas: usize) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "synckairos-cluster-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = Self {
            dir,
            nodes: BTreeMap::new(),
        };
        let ports: Vec<u16> = (0..primaries * (1 + replicas))
            .map(|_| cluster.spawn_node())
            .collect();
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let replicas = replicas.to_string();
        let mut create = vec!["create"];
        create.extend(nodes.iter().map(String::as_str));
        create.extend(["--cluster-replicas", &replicas, "--cluster-yes"]);
        cluster_tool(&create);
        cluster.wait_until("the cluster is ok on every node", |c| c.healthy());
        // A replica still on its first sync has nothing to fail over with.
        cluster.wait_until("every replica to be in sync", |c| {
            c.nodes.keys().all(|&port| {
                let info = c.cli(port, &["info", "replication"]);
                info.contains("role:master")
                    || info.contains("master_link_status:up")
                        && info.contains("master_sync_in_progress:0")
            })
        });
        cluster
    }

    /// A seed URL for SyncKairos (`REDIS_URL`, with `REDIS_CLUSTER=true`):
    /// one node, a primary (the one with the lowest port), as an operator
    /// might give.
    pub fn url(&self) -> String {
        let port = self.primaries().iter().map(|p| p.port).min();
        format!("redis://127.0.0.1:{}", port.expect("a primary"))
    }

    /// Options for a [`RedisStore`](synckairos::store::redis::RedisStore) of
    /// its own on this cluster: 16 buckets, the outbox on.
    pub fn store_options(&self) -> synckairos::store::redis::RedisOptions {
        synckairos::store::redis::RedisOptions {
            url: self.url(),
            cluster: true,
            buckets: 16,
            ttl_seconds: 3600,
            timeout: Duration::from_secs(1),
            pool_size: 2,
            outbox: vec![synckairos::store::OutboxGroup::Audit],
        }
    }

    /// Runs a command on one node through `redis-cli` (`-c`: follows
    /// redirects) and returns its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-c", "-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The topology as a live node sees it.
    pub fn topology(&self) -> Vec<Node> {
        let port = self.live_ports()[0];
        parse_nodes(&self.cli(port, &["cluster", "nodes"]))
    }

    pub fn primaries(&self) -> Vec<Node> {
        self.topology()
            .into_iter()
            .filter(|n| n.primary && !n.failed)
            .collect()
    }

    /// The primary that owns `slot`.
    pub fn owner(&self, slot: u16) -> Node {
        self.primaries()
            .into_iter()
            .find(|n| n.owns(slot))
            .unwrap_or_else(|| panic!("no primary owns slot {slot}"))
    }

    /// The hash slot of a key (or hash tag), as Redis computes it.
    pub fn keyslot(&self, key: &str) -> u16 {
        let port = self.live_ports()[0];
        self.cli(port, &["cluster", "keyslot", key])
            .parse()
            .expect("a slot number")
    }

    /// A replica of `primary`.
    pub fn replica_of(&self, primary: &Node) -> Node {
        self.topology()
            .into_iter()
            .find(|n| n.replica_of.as_deref() == Some(primary.id.as_str()) && !n.failed)
            .unwrap_or_else(|| panic!("{} has no live replica", primary.port))
    }

    /// A manual failover (`CLUSTER FAILOVER` on a replica of `primary`):
    /// returns the new primary once every live node agrees.
    pub fn failover(&self, primary: &Node) -> Node {
        let replica = self.replica_of(primary);
        assert_eq!(self.cli(replica.port, &["cluster", "failover"]), "OK");
        self.wait_until("the replica to take over", |c| {
            c.topology()
                .iter()
                .any(|n| n.id == replica.id && n.primary && !n.slots.is_empty())
                && c.healthy()
        });
        self.topology()
            .into_iter()
            .find(|n| n.id == replica.id)
            .unwrap()
    }

    /// SIGKILL a primary (a crash) and wait until the others have marked it
    /// failed and elected its replica for its slots (`cluster-node-timeout`
    /// is 1 s, so a few seconds). Returns the elected replica.
    pub fn kill_primary(&mut self, primary: &Node) -> Node {
        let replica = self.replica_of(primary);
        if let Some(mut child) = self.nodes.remove(&primary.port) {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.wait_until("a replica to be elected", |c| {
            c.topology()
                .iter()
                .any(|n| n.id == replica.id && n.primary && n.slots == primary.slots)
                && c.healthy()
        });
        self.topology()
            .into_iter()
            .find(|n| n.id == replica.id)
            .unwrap()
    }

    /// Adds an empty primary and moves `slots` slots to it from `from`
    /// (`redis-cli --cluster reshard`, live: keys migrate with MIGRATE, and
    /// clients see ASK/MOVED meanwhile). Returns the new node's port.
    pub fn add_primary_and_reshard(&mut self, from: &Node, slots: u16) -> u16 {
        let new = self.add_primary(from);
        cluster_tool(&[
            "reshard",
            &format!("127.0.0.1:{}", from.port),
            "--cluster-from",
            &from.id,
            "--cluster-to",
            &new.id,
            "--cluster-slots",
            &slots.to_string(),
            "--cluster-yes",
        ]);
        self.wait_until("the reshard to settle", |c| c.healthy());
        new.port
    }

    /// Starts a node and joins it (through `seed`) as a primary owning no
    /// slot yet.
    pub fn add_primary(&mut self, seed: &Node) -> Node {
        let port = self.spawn_node();
        cluster_tool(&[
            "add-node",
            &format!("127.0.0.1:{port}"),
            &format!("127.0.0.1:{}", seed.port),
        ]);
        self.wait_until("the new node to join", |c| {
            c.topology().iter().any(|n| n.port == port) && c.healthy()
        });
        self.topology()
            .into_iter()
            .find(|n| n.port == port)
            .unwrap()
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes.keys().copied().collect()
    }

    /// Every live node says `cluster_state:ok`, all slots assigned, and
    /// all agree on the primaries' slots.
    fn healthy(&self) -> bool {
        let mut views = Vec::new();
        for &port in self.nodes.keys() {
            let info = self.cli(port, &["cluster", "info"]);
            if !info.contains("cluster_state:ok") || !info.contains("cluster_slots_assigned:16384")
            {
                return false;
            }
            let mut primaries: Vec<(String, Vec<(u16, u16)>)> =
                parse_nodes(&self.cli(port, &["cluster", "nodes"]))
                    .into_iter()
                    .filter(|n| n.primary && !n.slots.is_empty())
                    .map(|n| (n.id, n.slots))
                    .collect();
            primaries.sort();
            views.push(primaries);
        }
        views.windows(2).all(|w| w[0] == w[1])
    }

    fn wait_until(&self, what: &str, ok: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ok(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts one empty cluster-enabled node on a free port pair.
    fn spawn_node(&mut self) -> u16 {
        let port = free_port_pair();
        let dir = self.dir.join(port.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(["--cluster-node-timeout", "1000"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args(["--protected-mode", "no", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        self.nodes.insert(port, child);
        wait_for_pong(port);
        port
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.nodes) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free port whose bus port (+10000) is free too, both below 65536.
fn free_port_pair() -> u16 {
    loop {
        let port = free_port();
        if port <= 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// Parses `CLUSTER NODES`: `<id> <ip:port@bus> <flags> <primary|-> <ping> <pong> <epoch> <state> <slots…>`.
pub fn parse_nodes(text: &str) -> Vec<Node> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let port = f[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let flags = f[2];
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|x| (x, x)),
                })
                .collect();
            Some(Node {
                id: f[0].to_owned(),
                port,
                primary: flags.contains("master"),
                replica_of: (f[3] != "-").then(|| f[3].to_owned()),
                slots,
                failed: flags.contains("fail") && !flags.contains("fail?")
                    || flags.contains("noaddr"),
            })
        })
        .collect()
}

/// `redis-cli --cluster <args>`, the operator's tool; fails the test with
/// its output unless it succeeds.
fn cluster_tool(args: &[&str]) {
    let out = Command::new("redis-cli")
        .arg("--cluster")
        .args(args)
        .output()
        .expect("redis-cli runs");
    assert!(
        out.status.success(),
        "redis-cli --cluster {}: {}",
        args[0],
        String::from_utf8_lossy(&out.stdout)
    );
}
