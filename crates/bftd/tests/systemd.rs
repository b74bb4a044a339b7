//! Issue 12 item 3: bftd under systemd. The unit files pass
//! `systemd-analyze verify`; a replica started as systemd starts a
//! `Type=notify` service (a `NOTIFY_SOCKET` datagram socket, `WATCHDOG_USEC`)
//! says READY=1 once it serves, reports its regency and cid in STATUS=,
//! feeds the watchdog while its control thread runs, and stops feeding it
//! while the control thread is wedged (injected stall), so systemd would
//! restart it.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bftd::config::Durability;
use common::*;

/// The next notification datagram, or `None` after `timeout`.
fn next(sock: &UnixDatagram, timeout: Duration) -> Option<String> {
    sock.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    match sock.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("recv on the notify socket: {e}"),
    }
}

/// Reads notifications until one contains `needle`; panics after `timeout`.
/// Returns every message read, the matching one last.
fn wait_for(sock: &UnixDatagram, needle: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {needle:?} within {timeout:?}; got {seen:?}"
        );
        if let Some(m) = next(sock, left) {
            let hit = m.contains(needle);
            seen.push(m);
            if hit {
                return seen;
            }
        }
    }
}

#[test]
fn a_replica_started_as_a_notify_service_reports_ready_status_and_feeds_the_watchdog_only_while_its_control_thread_runs(
) {
    let mut cluster = Cluster::start_with(
        "systemd-notify",
        Opts {
            durability: Durability::Fsync,
            fault_injection: true,
            ..Opts::new(4)
        },
    );
    let all = cluster.endpoints().join(",");
    ok_etcdctl(&all, &["put", "k", "v"]);
    // Replica 3 restarts as systemd would start it.
    cluster.kill(3);
    let path = cluster.dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let watchdog = Duration::from_millis(800);
    cluster.start_replica_with_env(
        3,
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", &watchdog.as_micros().to_string()),
        ],
    );
    let seen = wait_for(&sock, "READY=1", Duration::from_secs(20));
    // READY comes once the client port listens: nothing before it said so.
    assert!(seen.iter().all(|m| !m.contains("WATCHDOG=1")), "{seen:?}");
    ok_etcdctl(&cluster.endpoints()[3], &["get", "k"]);
    // The watchdog is fed (a quarter of its interval apart) with a status.
    let seen = wait_for(&sock, "WATCHDOG=1", watchdog);
    let last = seen.last().unwrap();
    assert!(last.contains("STATUS=regency "), "{last}");
    assert!(last.contains(", cid "), "{last}");

    // Wedge the control thread for 3 s: the pings stop within half the
    // watchdog interval (plus one period), then resume.
    let r = http_request(
        cluster.config.replicas[3].http_addr,
        "PUT",
        "/debug/stall_control?ms=3000",
    );
    assert!(r.starts_with("ok"), "{r}");
    let stalled_at = Instant::now();
    wait_for(
        &sock,
        "STATUS=control thread silent",
        Duration::from_secs(2),
    );
    assert!(stalled_at.elapsed() < watchdog * 2);
    // While silent, no ping for longer than the watchdog interval: systemd
    // would have killed the replica.
    let quiet_from = Instant::now();
    let mut pinged_at = None;
    while pinged_at.is_none() && quiet_from.elapsed() < Duration::from_secs(10) {
        if let Some(m) = next(&sock, Duration::from_secs(10)) {
            if m.contains("WATCHDOG=1") {
                pinged_at = Some(Instant::now());
            }
        }
    }
    let pinged_at = pinged_at.expect("the watchdog is fed again after the stall");
    assert!(
        pinged_at - quiet_from > watchdog,
        "pinged {:?} after going silent",
        pinged_at - quiet_from
    );
    assert!(stalled_at.elapsed() >= Duration::from_millis(2_900));
    ok_etcdctl(&cluster.endpoints()[3], &["put", "k", "after"]);
}

/// configs/bftd@.service with ExecStart pointed at the built binary
/// (systemd-analyze checks that it exists), written to `dir`.
fn unit_for_verify(dir: &Path) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let text = std::fs::read_to_string(root.join("bftd@.service")).unwrap();
    assert!(text.contains("/usr/local/bin/bftd"), "ExecStart");
    let out = dir.join("bftd@.service");
    let bin = env!("CARGO_BIN_EXE_bftd");
    std::fs::write(&out, text.replace("/usr/local/bin/bftd", bin)).unwrap();
    out
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let dir = std::env::temp_dir().join(format!("bftd-units-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let template = unit_for_verify(&dir);
    // A template is verified through an instance of it.
    let instance = dir.join("bftd@0.service");
    std::os::unix::fs::symlink(&template, &instance).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&instance)
        .output()
        .expect("systemd-analyze (Debian's systemd package) runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Lines about the machine (no systemd running here) are not about the
    // unit; every line naming the unit file is.
    let about_unit: Vec<&str> = text.lines().filter(|l| l.contains("bftd")).collect();
    assert!(out.status.success() && about_unit.is_empty(), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
