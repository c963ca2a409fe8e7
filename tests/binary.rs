//! The `synckairos` binary as an operator runs it: configuration from the
//! environment, one start-up line, clean shutdown on SIGTERM, one clear line
//! on bad configuration.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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

/// Waits for the child to exit, failing the test (not hanging it) after `limit`.
fn wait_for_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the child if a test fails before it exits.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serves_with_no_configuration_and_stops_cleanly_on_sigterm() {
    let mut guard = Guard(binary().spawn().unwrap());
    let stdout = guard.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();

    // The start-up line names the backend and the bound address.
    let started: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(started["message"], "synckairos listening");
    assert_eq!(started["backend"], "memory");
    let addr = started["addr"].as_str().unwrap().to_owned();

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let health = client
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let pid = guard.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = guard.0.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("synckairos stopped")),
        "{rest:?}"
    );
}

#[tokio::test]
async fn a_stalled_client_does_not_hold_shutdown_beyond_the_grace_period() {
    use std::io::Write;
    let mut guard = Guard(binary().env("SHUTDOWN_GRACE_SECONDS", "1").spawn().unwrap());
    let stdout = guard.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let started: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let addr = started["addr"].as_str().unwrap().to_owned();

    // A request whose body never arrives.
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    stalled
        .write_all(b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();

    let pid = guard.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Exits by itself (this would block until the client gave up before).
    let status = wait_for_exit(&mut guard.0, Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("grace period")), "{rest:?}");
    drop(stalled);
}

#[test]
fn bad_configuration_fails_with_one_clear_line_and_no_backtrace() {
    for (var, value, expect) in [
        ("PORT", "not-a-port", "invalid value 'not-a-port'"),
        ("SESSION_TTL_SECONDS", "0", "SESSION_TTL_SECONDS"),
        ("LOG_FORMAT", "xml", "invalid value 'xml'"),
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
