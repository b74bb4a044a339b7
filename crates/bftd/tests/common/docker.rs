//! Docker helpers of the container tests: every command under coreutils'
//! `timeout`, so a hung daemon fails the test instead of stalling it.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use bftd::health::Target;

/// Longest a single docker command may take before it counts as hung.
pub const DOCKER_COMMAND_TIMEOUT_S: u32 = 180;

/// Runs `program args` under coreutils' `timeout`; stdout on success, the
/// command and its output otherwise.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("timeout")
        .args([
            "--kill-after=5",
            &DOCKER_COMMAND_TIMEOUT_S.to_string(),
            program,
        ])
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{program} {} ({}): {stdout}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub fn docker(args: &[&str]) -> Result<String, String> {
    run("docker", args)
}

pub fn ok_docker(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Why this machine cannot run a container test, if it cannot: `docker
/// info` fails, or not root (the key files, mode 0600, are handed to the
/// image's user).
pub fn docker_unavailable(image_uid: u32) -> Option<String> {
    if let Err(e) = docker(&["info", "--format", "{{.ServerVersion}}"]) {
        return Some(format!("docker info failed: {e}"));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some(format!(
            "not root: the key files (mode 0600) must be chowned to the image's uid {image_uid}"
        ));
    }
    None
}

/// A container's log, its stdout and stderr (the replica logs to stderr),
/// the last `tail` lines of each or all of it; the error text if docker
/// fails.
pub fn docker_logs(name: &str, tail: Option<usize>) -> String {
    let tail = tail.map_or("all".to_string(), |t| t.to_string());
    let out = Command::new("timeout")
        .args(["--kill-after=5", &DOCKER_COMMAND_TIMEOUT_S.to_string()])
        .args(["docker", "logs", "--tail", &tail, name])
        .output();
    match out {
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("docker logs {name}: {e}"),
    }
}

/// `docker inspect --format FORMAT name`.
pub fn inspect(name: &str, format: &str) -> String {
    ok_docker(&["inspect", "--format", format, name])
}

/// Waits until Docker reports container `name` `want` ("healthy",
/// "unhealthy": the image's HEALTHCHECK, `bftd health`); fails early if
/// the container stopped. The failure shows the last probes and `tail`
/// lines of the log.
pub fn wait_health(name: &str, want: &str, timeout: Duration, tail: usize) {
    let deadline = Instant::now() + timeout;
    loop {
        let h = inspect(name, "{{.State.Status}} {{.State.Health.Status}}");
        match h.split_once(' ') {
            Some((_, s)) if s == want => return,
            Some(("running", _)) => {}
            _ => panic!(
                "container {name} is {h}:\n{}",
                docker_logs(name, Some(tail))
            ),
        }
        assert!(
            Instant::now() < deadline,
            "container {name} not {want} within {timeout:?} (is {h}); last probes:\n{}\nlog:\n{}",
            inspect(name, "{{range .State.Health.Log}}{{.Output}}{{end}}"),
            docker_logs(name, Some(tail))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `/status` of the replica whose status port is `addr`, if it answers.
pub fn status(addr: SocketAddr) -> Option<serde_json::Value> {
    let t = Target {
        addr,
        host: addr.to_string(),
        path: "/status".into(),
    };
    let body = bftd::health::check(&t, Duration::from_secs(2)).ok()?;
    serde_json::from_str(&body).ok()
}

/// One numeric field of [`status`].
pub fn field(addr: SocketAddr, name: &str) -> Option<u64> {
    status(addr)?[name].as_u64()
}

/// The leader the replicas at status addresses `among` agree on.
pub fn leader(among: &[SocketAddr], timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let seen: Vec<Option<u64>> = among.iter().map(|&a| field(a, "leader")).collect();
        if let Some(Some(l)) = seen.first() {
            if seen.iter().all(|s| *s == Some(*l)) {
                return *l as usize;
            }
        }
        assert!(
            Instant::now() < deadline,
            "replicas at {among:?} do not agree on a leader: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until every replica at `all` reports the same revision and state
/// digest; returns the revision.
pub fn wait_converged(all: &[SocketAddr], timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let states: Vec<Option<(u64, String)>> = all
            .iter()
            .map(|&a| {
                let s = status(a)?;
                Some((s["revision"].as_u64()?, s["state_digest"].as_str()?.into()))
            })
            .collect();
        if let Some(Some(first)) = states.first() {
            if states.iter().all(|s| s.as_ref() == Some(first)) {
                return first.0;
            }
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not converge within {timeout:?}: {states:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes what a container test made: the containers (with their
/// anonymous volumes), the named volumes, the networks and the image tag.
/// What is already gone is fine; anything else that fails is printed, not
/// raised (this runs in `Drop`, possibly while a test panics).
pub fn remove_all(containers: &[String], volumes: &[String], networks: &[String], image: &str) {
    let mut left = Vec::new();
    let mut remove = |args: &[&str]| {
        if let Err(e) = docker(args) {
            if !e.contains("No such") {
                left.push(e);
            }
        }
    };
    for c in containers {
        remove(&["rm", "--force", "--volumes", c]);
    }
    for v in volumes {
        remove(&["volume", "rm", "--force", v]);
    }
    for n in networks {
        remove(&["network", "rm", n]);
    }
    remove(&["image", "rm", "--force", image]);
    if !left.is_empty() {
        eprintln!("cleanup left behind: {left:#?}");
    }
}
