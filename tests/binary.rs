//! The `synckairos` binary as an operator runs it: configuration from the
//! environment, one start-up line, clean shutdown on SIGTERM, one clear line
//! on bad configuration.

use std::io::{BufRead, BufReader, Lines, Write};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The binary with an empty environment, on loopback, port 0, JSON logs.
fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_synckairos"));
    cmd.env_clear()
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A started binary; killed if the test fails before it exits.
struct Running {
    child: Child,
    log: Lines<BufReader<ChildStdout>>,
    /// The start-up log line.
    started: serde_json::Value,
}

impl Running {
    fn start(env: &[(&str, &str)]) -> Self {
        let mut child = binary().envs(env.iter().copied()).spawn().unwrap();
        let mut log = BufReader::new(child.stdout.take().unwrap()).lines();
        let started = serde_json::from_str(&log.next().unwrap().unwrap()).unwrap();
        Self {
            child,
            log,
            started,
        }
    }

    fn addr(&self) -> String {
        self.started["addr"].as_str().unwrap().to_owned()
    }

    /// Sends SIGTERM, waits for the exit (failing the test after 15 s rather
    /// than hanging it), and returns the status and the rest of the log.
    fn terminate(mut self) -> (ExitStatus, Vec<String>) {
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
        let rest = self.log.by_ref().map_while(Result::ok).collect();
        (status, rest)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn serves_with_no_configuration_and_stops_cleanly_on_sigterm() {
    let server = Running::start(&[]);
    // The start-up line names the backend and the bound address.
    assert_eq!(server.started["message"], "synckairos listening");
    assert_eq!(server.started["backend"], "memory");

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let health = client
        .get(format!("http://{}/health", server.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let (status, log) = server.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(
        log.iter().any(|l| l.contains("synckairos stopped")),
        "{log:?}"
    );
}

#[test]
fn a_stalled_client_does_not_hold_shutdown_beyond_the_grace_period() {
    let server = Running::start(&[("SHUTDOWN_GRACE_SECONDS", "1")]);
    // A request whose body never arrives.
    let mut stalled = std::net::TcpStream::connect(server.addr()).unwrap();
    stalled
        .write_all(b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();

    // It exits by itself while the client still holds the connection.
    let (status, log) = server.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(log.iter().any(|l| l.contains("grace period")), "{log:?}");
    drop(stalled);
}

#[test]
fn bad_configuration_fails_with_one_clear_line_and_no_backtrace() {
    for (var, value, expect) in [
        ("PORT", "not-a-port", "invalid value 'not-a-port'"),
        ("SESSION_TTL_SECONDS", "0", "SESSION_TTL_SECONDS"),
        ("LOG_FORMAT", "xml", "invalid value 'xml'"),
        ("REDIS_URL", "mysql://nope", "invalid REDIS_URL"),
    ] {
        let out = binary().env(var, value).output().unwrap();
        assert!(!out.status.success(), "{var}={value} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{var}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
    }
}
