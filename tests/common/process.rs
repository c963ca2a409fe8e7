//! SyncKairos as a separate OS process of the built binary, for tests where
//! isolation matters (several instances, SIGTERM, kill -9).

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::cluster::RedisCluster;
use super::redis::RedisServer;

/// The binary with an empty environment, on loopback, port 0, JSON logs,
/// rate limits off (tests drive it from one address as fast as they can).
pub fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_synckairos"));
    cmd.env_clear()
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("LOG_FORMAT", "json")
        .env("RATE_LIMIT_GENERAL", "0")
        .env("RATE_LIMIT_SWITCH", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A started instance; killed if the test ends before it exits. Its output
/// is read continuously by a thread of its own: a pipe nobody reads fills up
/// (64 KiB) and then blocks the server on its next log line.
pub struct Instance {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    /// The start-up log line.
    pub started: serde_json::Value,
}

impl Instance {
    /// Starts the binary with `env` and waits for its start-up line.
    pub fn start(env: &[(&str, &str)]) -> Self {
        let mut child = binary().envs(env.iter().copied()).spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = stdout.next().expect("a start-up line").unwrap();
        let started =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("start-up line: {line}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let readers = vec![collect(stdout, log.clone()), collect(stderr, log.clone())];
        Self {
            child,
            log,
            readers,
            started,
        }
    }

    /// `host:port` it listens on.
    pub fn addr(&self) -> String {
        self.started["addr"].as_str().unwrap().to_owned()
    }

    /// `http://host:port`
    pub fn base(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// SIGKILL: the process dies mid-whatever, with no shutdown at all.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM, waits for the exit (failing the test after 15 s rather
    /// than hanging it), and returns the status and the rest of the log.
    pub fn terminate(mut self) -> (ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within 15 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let rest = std::mem::take(&mut *self.log.lock().unwrap());
        (status, rest)
    }
}

/// Reads lines until EOF (the process exited) into `log`.
fn collect<R: std::io::Read + Send + 'static>(
    lines: Lines<BufReader<R>>,
    log: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            log.lock().unwrap().push(line);
        }
    })
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` instances on `redis`, each a separate OS process.
pub fn instances(redis: &RedisServer, n: usize) -> Vec<Instance> {
    let url = redis.url();
    (0..n)
        .map(|_| Instance::start(&[("REDIS_URL", url.as_str())]))
        .collect()
}

/// `n` instances on a Redis Cluster, each a separate OS process.
pub fn cluster_instances(
    cluster: &RedisCluster,
    n: usize,
    extra: &[(&str, &str)],
) -> Vec<Instance> {
    let url = cluster.url();
    let mut env = vec![("REDIS_URL", url.as_str()), ("REDIS_CLUSTER", "true")];
    env.extend_from_slice(extra);
    (0..n).map(|_| Instance::start(&env)).collect()
}
