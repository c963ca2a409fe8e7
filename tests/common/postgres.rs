//! A real PostgreSQL per test: `initdb` into a temp dir and `pg_ctl start` on
//! a free port, stopped and removed when dropped, even if the test fails.
//! Never the machine's shared server (unless `DATABASE_URL` names one, see
//! [`database`]). As root (CI containers), the server runs as the `postgres`
//! user, since PostgreSQL refuses to run as root.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::redis::free_port;

/// A PostgreSQL server owned by one test.
pub struct PostgresServer {
    pub port: u16,
    dir: PathBuf,
    running: bool,
}

impl PostgresServer {
    /// Initialises a cluster in a fresh temp dir and starts it.
    pub fn start() -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "synckairos-pg-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            let owner = Command::new("chown")
                .args(["-R", "postgres:", dir.to_str().unwrap()])
                .status()
                .unwrap();
            assert!(owner.success(), "chown {dir:?} to postgres");
        }
        let data = dir.join("data");
        run(pg_command("initdb")
            .args(["-D", data.to_str().unwrap()])
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]));
        let mut server = Self {
            port,
            dir,
            running: false,
        };
        server.resume();
        server
    }

    /// `postgres://postgres@127.0.0.1:<port>/<db>`
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub fn database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }

    /// Stops the server (fast shutdown: sessions are cut, as in an outage).
    pub fn stop(&mut self) {
        if self.running {
            run(pg_command("pg_ctl").args([
                "stop",
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "fast",
                "-w",
            ]));
            self.running = false;
        }
    }

    /// Starts it again on the same port with the same data.
    pub fn resume(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.to_str().unwrap()
        );
        let log = self.dir.join("log");
        run(pg_command("pg_ctl").args([
            "start",
            "-w",
            "-D",
            self.data().to_str().unwrap(),
            "-o",
            &options,
            "-l",
            log.to_str().unwrap(),
        ]));
        self.running = true;
    }

    /// Runs SQL through `psql` and returns its unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        psql(&self.url(db), sql)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if self.running {
            let _ = pg_command("pg_ctl")
                .args([
                    "stop",
                    "-D",
                    self.data().to_str().unwrap(),
                    "-m",
                    "immediate",
                ])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh, empty database for one test, and whatever must live as long as
/// it: on the server `DATABASE_URL` names when it is set (the machine's
/// own, say), else on a server of the test's own.
pub struct TestDatabase {
    pub url: String,
    _server: Option<PostgresServer>,
}

/// See [`TestDatabase`].
pub fn database() -> TestDatabase {
    let name = format!("sk_{}", uuid::Uuid::new_v4().simple());
    match std::env::var("DATABASE_URL") {
        Ok(admin) => {
            psql(&admin, &format!("CREATE DATABASE {name}"));
            let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
            TestDatabase {
                url: format!("{base}/{name}"),
                _server: None,
            }
        }
        Err(_) => {
            let server = PostgresServer::start();
            TestDatabase {
                url: server.database(&name),
                _server: Some(server),
            }
        }
    }
}

/// Runs SQL on the database at `url` through `psql`; panics on an error.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            url,
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A PostgreSQL server program (`initdb`, `pg_ctl`), from PATH or Debian's
/// versioned directory, run as `postgres` when we are root.
fn pg_command(program: &str) -> Command {
    let path = find_program(program);
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(path);
        cmd
    } else {
        Command::new(path)
    }
}

fn find_program(program: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file());
    on_path
        .or_else(|| {
            let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .filter_map(|e| Some(e.ok()?.path().join("bin").join(program)))
                .filter(|p| p.is_file())
                .collect();
            versions.sort();
            versions.pop()
        })
        .unwrap_or_else(|| panic!("{program} not found (install postgresql)"))
}

fn is_root() -> bool {
    // The process owner of /proc/self is our effective uid.
    std::fs::metadata("/proc/self").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    })
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("PostgreSQL program runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `sql` without blocking the instances sharing the test's runtime.
pub async fn query(db: &str, sql: &str) -> String {
    let (db, sql) = (db.to_owned(), sql.to_owned());
    tokio::task::spawn_blocking(move || psql(&db, &sql))
        .await
        .unwrap()
}

/// Polls until `sql` answers `expected` (the audit drain is asynchronous);
/// fails the test after 60 s with the last answer.
pub async fn await_sql(db: &str, sql: &str, expected: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let got = query(db, sql).await;
        if got == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{sql}: {got}, expected {expected}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
