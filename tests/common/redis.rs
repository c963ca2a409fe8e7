//! A real `redis-server` per test, on a free port, in its own temp dir; killed
//! when dropped, even if the test fails. Never the machine's shared instance.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` process owned by one test.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Append-only file on, so data survives a restart.
    persistent: bool,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// As [`RedisServer::start`], keeping its data across [`RedisServer::restart`].
    pub fn start_persistent() -> Self {
        Self::start_with(true)
    }

    fn start_with(persistent: bool) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("synckairos-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            port,
            dir,
            child: None,
            persistent,
        };
        server.spawn();
        server
    }

    /// `redis://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Options for a [`RedisStore`](synckairos::store::redis::RedisStore)
    /// of its own on this server: 16 buckets, the outbox on.
    pub fn store_options(&self) -> synckairos::store::redis::RedisOptions {
        synckairos::store::redis::RedisOptions {
            url: self.url(),
            cluster: false,
            buckets: 16,
            ttl_seconds: 3600,
            timeout: std::time::Duration::from_secs(1),
            pool_size: 2,
            outbox: vec![synckairos::store::OutboxGroup::Audit],
        }
    }

    /// The key names of a deployment with [`RedisServer::store_options`]'s 16 buckets.
    pub fn layout(&self) -> synckairos::store::redis::keys::Layout {
        synckairos::store::redis::keys::Layout::new(16)
    }

    /// SIGKILL, as a crash or a network cut would look to clients.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port (with its data only if persistent).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs one command through `redis-cli` and returns its raw output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Starts `MONITOR`: every command the server executes, one line each.
    pub fn monitor(&self) -> Monitor {
        let mut child = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "monitor"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli monitor runs");
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        // The first line is "OK" once monitoring is active.
        let mut ok = String::new();
        lines.read_line(&mut ok).unwrap();
        assert_eq!(ok.trim(), "OK");
        Monitor { child, lines }
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(if self.persistent {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "no"]
            })
            .args(["--protected-mode", "no", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        self.child = Some(child);
        wait_for_pong(self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `MONITOR`.
pub struct Monitor {
    child: Child,
    lines: BufReader<ChildStdout>,
}

impl Monitor {
    /// Every line up to the one containing `marker` (sent by the test itself,
    /// e.g. with `ECHO`, so the test knows all earlier commands were seen).
    pub fn lines_until(&mut self, marker: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let mut line = String::new();
            if self.lines.read_line(&mut line).unwrap() == 0 {
                panic!("monitor ended before {marker}");
            }
            if line.contains(marker) {
                return seen;
            }
            seen.push(line.trim().to_owned());
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until the server answers PING (at most 10 s).
pub fn wait_for_pong(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let mut reply = [0u8; 7];
            if s.write_all(b"PING\r\n").is_ok()
                && s.read_exact(&mut reply).is_ok()
                && &reply == b"+PONG\r\n"
            {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("redis-server on port {port} did not start");
}
