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
/// `RUST_LOG` is passed through, to debug a test with e.g. `fred=debug`.
pub fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_synckairos"));
    cmd.env_clear();
    if let Ok(filter) = std::env::var("RUST_LOG") {
        cmd.env("RUST_LOG", filter);
    }
    cmd.env("HOST", "127.0.0.1")
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
    /// Starts the binary with `env` and waits for its start-up line (the
    /// first with an `addr`; lines before it, e.g. debug logs, are kept).
    pub fn start(env: &[(&str, &str)]) -> Self {
        let mut child = binary().envs(env.iter().copied()).spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut before = Vec::new();
        let started = loop {
            let line = stdout
                .next()
                .unwrap_or_else(|| panic!("no start-up line after {before:#?}"))
                .unwrap();
            match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(started) if started["addr"].is_string() => break started,
                _ => before.push(line),
            }
        };
        let log = Arc::new(Mutex::new(before));
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
    /// Kills the process; if the test is failing (or `KEEP_INSTANCE_LOGS`
    /// is set), keeps its log in a file named on stderr, since a failure is
    /// often explained only there.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() || std::env::var_os("KEEP_INSTANCE_LOGS").is_some() {
            let path = std::env::temp_dir().join(format!("synckairos-{}.log", self.child.id()));
            let log = self.log.lock().map(|l| l.join("\n")).unwrap_or_default();
            if std::fs::write(&path, log).is_ok() {
                eprintln!("instance log: {}", path.display());
            }
        }
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
