//! The deployment files say what the operators rely on: fly.toml parses and
//! has the essential keys; the Dockerfile builds in stages and runs as a
//! non-root user on port 3000. (`docker build` itself cannot run here.)

use toml::Value;

fn read(file: &str) -> String {
    std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .try_fold(v, |v, key| v.get(key))
        .unwrap_or_else(|| panic!("fly.toml has no {path}"))
}

#[test]
fn fly_toml_has_the_essential_keys() {
    let fly: Value = toml::from_str(&read("fly.toml")).expect("fly.toml parses");
    assert!(get(&fly, "app").is_str());
    assert!(get(&fly, "primary_region").is_str());
    assert_eq!(
        get(&fly, "http_service.internal_port").as_integer(),
        Some(3000)
    );
    assert_eq!(get(&fly, "http_service.force_https").as_bool(), Some(true));
    assert_eq!(
        get(&fly, "http_service.min_machines_running").as_integer(),
        Some(2)
    );
    assert_eq!(
        get(&fly, "http_service.concurrency.type").as_str(),
        Some("connections")
    );
    let checks = get(&fly, "http_service.checks").as_array().unwrap();
    assert!(checks.iter().any(|c| c["path"].as_str() == Some("/health")));
    assert_eq!(get(&fly, "metrics.path").as_str(), Some("/metrics"));
    assert_eq!(get(&fly, "metrics.port").as_integer(), Some(3000));
    assert_eq!(
        get(&fly, "deploy.release_command").as_str(),
        Some("synckairos migrate")
    );
    assert_eq!(get(&fly, "env.MIGRATE").as_str(), Some("false"));
    // Behind Fly's proxy the client address comes from Fly-Client-IP.
    assert_eq!(get(&fly, "env.TRUST_PROXY").as_str(), Some("true"));
    // Secrets are set with `fly secrets set`, never committed.
    let env = get(&fly, "env").as_table().unwrap();
    assert!(!env.contains_key("REDIS_URL") && !env.contains_key("DATABASE_URL"));
    // The grace period fits in the kill timeout.
    let grace: u64 = get(&fly, "env.SHUTDOWN_GRACE_SECONDS")
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let kill: u64 = get(&fly, "kill_timeout")
        .as_str()
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(grace < kill, "grace {grace}s, kill timeout {kill}s");
}

#[test]
fn the_dockerfile_builds_in_stages_and_runs_unprivileged_on_3000() {
    let docker = read("Dockerfile");
    let stages = docker.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "multi-stage");
    assert!(
        docker.contains("COPY Cargo.toml Cargo.lock"),
        "dependency layer first"
    );
    assert!(docker.contains("--release --locked"));
    assert!(
        docker
            .lines()
            .any(|l| l.starts_with("USER ") && !l.contains("root"))
    );
    assert!(docker.contains("EXPOSE 3000"));
    assert!(
        !docker.contains("\nHEALTHCHECK"),
        "Fly checks /health itself"
    );
    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target"));
}
