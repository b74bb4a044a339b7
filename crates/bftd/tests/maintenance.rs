//! Issue 8 item 3, with etcdctl 3.4 as a user runs it: `endpoint health`,
//! the gRPC health service, `defrag`, `snapshot save` and a new cluster
//! seeded from that file (`bftd init --from-snapshot` / `[storage]
//! initial_snapshot`), and etcd's auto-compaction (revision and periodic
//! modes) observed as `get --rev=<old>` failing with etcd's error.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bftd::config::Durability;
use common::*;

fn opts() -> Opts {
    Opts {
        durability: Durability::Memory,
        ..Opts::new(4)
    }
}

/// The revision of the store as `etcdctl get -w json` reports it.
fn revision(ep: &str) -> i64 {
    let out = ok_etcdctl(ep, &["get", "none", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["header"]["revision"].as_i64().unwrap()
}

/// The gRPC health status (grpc.health.v1, service "") of `addr`.
fn grpc_health(addr: std::net::SocketAddr) -> i32 {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ch = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        HealthClient::new(ch)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status
    })
}

/// Waits until `etcdctl get k --rev=<rev>` fails with etcd's compacted
/// error (auto-compaction got past `rev`); panics after `timeout`.
fn wait_compacted(ep: &str, rev: i64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let (ok, out) = etcdctl(ep, &["get", "k", &format!("--rev={rev}")], None);
        if !ok {
            assert!(
                out.contains("required revision has been compacted"),
                "{out}"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "revision {rev} not compacted after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `text` without ANSI color sequences (tracing colors its fields).
fn without_colors(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(ch) = chars.next() {
        if ch == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

fn lines_with(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

#[test]
fn health_defrag_and_a_saved_snapshot_that_seeds_a_new_cluster() {
    let dir = std::env::temp_dir().join(format!("bftd-it-maint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("saved.db");
    let (saved_rev, saved_digest) = {
        let c = Cluster::start_with("snapsave", opts());
        let ep = c.endpoints();
        let all = ep.join(",");
        for i in 0..20 {
            ok_etcdctl(
                &ep[i % 4],
                &["put", &format!("key{i:02}"), &format!("v{i}")],
            );
        }
        ok_etcdctl(&ep[0], &["put", "key00", "new"]);
        ok_etcdctl(&ep[1], &["del", "key01"]);
        ok_etcdctl(&ep[2], &["compact", "5"]); // revision 23 now
                                               // etcdctl's health check (a read through consensus and the alarm
                                               // list) and the gRPC health service.
        let health = ok_etcdctl(&all, &["endpoint", "health"]);
        for e in &ep {
            assert!(health.contains(&format!("{e} is healthy")), "{health}");
        }
        for i in 0..4 {
            assert_eq!(grpc_health(c.client_addr(i)), 1, "SERVING at replica {i}");
        }
        let defrag = ok_etcdctl(&all, &["defrag"]);
        for e in &ep {
            assert!(
                defrag.contains(&format!("Finished defragmenting etcd member[{e}]")),
                "{defrag}"
            );
        }
        let (rev, digest) = c.wait_converged(Duration::from_secs(10));
        assert_eq!(rev, 23);
        let out = ok_etcdctl(&ep[1], &["snapshot", "save", file.to_str().unwrap()]);
        assert!(out.contains("Snapshot saved at"), "{out}");
        assert_eq!(std::fs::metadata(&file).unwrap().len() % 512, 32);
        (rev as i64, digest)
    };

    // `bftd init --from-snapshot`: a damaged file is refused, nothing is
    // written; a good one is copied and pinned in the config.
    let mut damaged = std::fs::read(&file).unwrap();
    damaged[40] ^= 1;
    let bad = dir.join("damaged.db");
    std::fs::write(&bad, &damaged).unwrap();
    let init = |to: &Path, from: &Path| {
        Command::new(BFTD)
            .args(["init", "--replicas", "4", "--base-port", "40000", "--dir"])
            .arg(to)
            .arg("--from-snapshot")
            .arg(from)
            .output()
            .unwrap()
    };
    let out = init(&dir.join("refused"), &bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("checksum mismatch"),
        "{err}"
    );
    assert!(!dir.join("refused").exists());
    let out = init(&dir.join("seeded"), &file);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("revision 23"),
        "{said}"
    );
    let cfg = bftd::config::ClusterConfig::load(&dir.join("seeded/bftd.toml")).unwrap();
    let sha = cfg.storage.initial_snapshot_sha256.clone();
    assert_eq!(sha.len(), 64);

    // A new cluster (new keys, new ports) from the saved file; on disk, so
    // a restart replays its log.
    let seed = dir.join("seeded").join(bftd::seed::INITIAL_SNAPSHOT_FILE);
    let seed_path = seed.clone();
    let mut c = Cluster::start_configured("snapseed", Opts::new(4), move |cfg| {
        cfg.storage.initial_snapshot = seed_path.to_str().unwrap().into();
        cfg.storage.initial_snapshot_sha256 = sha;
    });
    let ep = c.endpoints();
    let (rev, digest) = c.wait_converged(Duration::from_secs(10));
    assert_eq!((rev as i64, &digest), (saved_rev, &saved_digest));
    assert_eq!(
        ok_etcdctl(&ep[3], &["get", "key00", "--print-value-only"]),
        "new\n"
    );
    assert_eq!(ok_etcdctl(&ep[2], &["get", "key01"]), "");
    let keys = ok_etcdctl(&ep[1], &["get", "--prefix", "key", "--keys-only"]);
    assert_eq!(keys.lines().filter(|l| !l.is_empty()).count(), 19, "{keys}");
    // The history and compaction come along; writes continue after them.
    assert_eq!(
        ok_etcdctl(&ep[0], &["get", "key00", "--rev=6", "--print-value-only"]),
        "v0\n"
    );
    let (ok, out) = etcdctl(&ep[0], &["get", "key00", "--rev=4"], None);
    assert!(
        !ok && out.contains("required revision has been compacted"),
        "{out}"
    );
    ok_etcdctl(&ep[0], &["put", "after", "x"]);
    assert_eq!(revision(&ep[3]), saved_rev + 1);

    // A replica restarting before any checkpoint replays its log on the
    // seed.
    c.kill(2);
    c.start_replica(2);
    c.wait_serving(2, Duration::from_secs(10));
    c.wait_converged(Duration::from_secs(10));
    let log = without_colors(&std::fs::read_to_string(c.log_path(2)).unwrap());
    let recovered = log
        .lines()
        .filter(|l| l.contains("recovered from the data directory"))
        .nth(1)
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        recovered.contains("checkpoint=None") && !recovered.contains("replayed=0"),
        "{recovered}"
    );
    assert_eq!(
        lines_with(&c.log_path(2), "starting from the initial snapshot"),
        2
    );
    // One that finds the pinned file damaged refuses to start, saying why.
    c.kill(2);
    let good = std::fs::read(&seed).unwrap();
    std::fs::write(&seed, &damaged).unwrap();
    c.start_replica(2);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = c.children[2].as_mut().unwrap().try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "replica 2 started from a damaged seed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    c.children[2] = None;
    assert!(!status.success());
    let log = c.log_tail(2);
    assert!(
        log.contains("initial_snapshot") && log.contains("checksum mismatch"),
        "{log}"
    );
    std::fs::write(&seed, &good).unwrap();
    c.start_replica(2);
    c.wait_serving(2, Duration::from_secs(10));
    let (rev, _) = c.wait_converged(Duration::from_secs(10));
    assert_eq!(rev as i64, saved_rev + 1);
    drop(c);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn auto_compaction_in_revision_mode_keeps_the_last_revisions_and_only_the_leader_submits() {
    let c = Cluster::start_configured("autorev", opts(), |cfg| {
        cfg.api.auto_compaction_mode = "revision".into();
        cfg.api.auto_compaction_retention = "5".into();
        cfg.api.auto_compaction_revision_interval_ms = 200;
    });
    let ep = c.endpoints();
    for i in 0..20 {
        ok_etcdctl(&ep[i % 4], &["put", "k", &format!("v{i}")]);
    }
    let current = revision(&ep[0]);
    assert_eq!(current, 21);
    // Compacted to current - 5 = 16: 15 is gone, 16 is still readable.
    wait_compacted(&ep[1], current - 6, Duration::from_secs(10));
    assert_eq!(
        ok_etcdctl(&ep[2], &["get", "k", "--rev=16", "--print-value-only"]),
        "v14\n"
    );
    c.wait_converged(Duration::from_secs(10));
    let leader = c.leader(Duration::from_secs(5));
    for i in 0..4u16 {
        let n = lines_with(&c.log_path(i), "starting auto revision compaction");
        if i == leader {
            assert!(n >= 1, "the leader compacted");
        } else {
            assert_eq!(n, 0, "replica {i} is not the leader but compacted");
        }
    }
}

#[test]
fn auto_compaction_in_periodic_mode_compacts_to_the_revision_of_one_retention_ago() {
    let c = Cluster::start_configured("autoper", opts(), |cfg| {
        cfg.api.auto_compaction_mode = "periodic".into();
        cfg.api.auto_compaction_retention = "1s".into();
    });
    let ep = c.endpoints();
    for i in 0..10 {
        ok_etcdctl(&ep[i % 4], &["put", "k", &format!("v{i}")]);
    }
    // A retention later the revision of the writes is the oldest sample:
    // everything before it is compacted, the last write stays readable.
    wait_compacted(&ep[3], 10, Duration::from_secs(10));
    assert_eq!(
        ok_etcdctl(&ep[0], &["get", "k", "--rev=11", "--print-value-only"]),
        "v9\n"
    );
    let leader = c.leader(Duration::from_secs(5));
    assert!(lines_with(&c.log_path(leader), "completed auto periodic compaction") >= 1);
}

/// etcd's MoveLeader as `etcdctl move-leader` runs it (it finds the leader
/// among its endpoints and asks it): the transferee leads at every replica
/// and serves writes; a non-member id is etcd's "bad leader transferee";
/// a replica that does not lead answers "not leader" (through the JSON
/// gateway, as etcdctl never sends it there).
#[test]
fn move_leader_hands_the_leadership_to_the_member_asked_for() {
    let cluster = Cluster::start_with("move-leader", opts());
    let all = cluster.endpoints().join(",");
    ok_etcdctl(&all, &["put", "k", "before"]);
    let leader = cluster.leader(Duration::from_secs(10));
    let to = (leader + 2) % 4;
    let members: serde_json::Value =
        serde_json::from_str(&ok_etcdctl(&all, &["member", "list", "-w", "json"])).unwrap();
    let id_of = |r: u16| {
        members["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == format!("bftd-{r}"))
            .unwrap()["ID"]
            .as_u64()
            .unwrap()
    };
    let out = ok_etcdctl(&all, &["move-leader", &format!("{:x}", id_of(to))]);
    assert!(
        out.contains(&format!(
            "Leadership transferred from {:x} to {:x}",
            id_of(leader),
            id_of(to)
        )),
        "{out}"
    );
    assert_eq!(cluster.leader(Duration::from_secs(10)), to);
    assert_eq!(
        cluster.metric(
            leader,
            "bftd_leader_changes_started_total{reason=\"leader_move\"}"
        ),
        1
    );
    let joined: u64 = (0..4u16)
        .filter(|&i| i != leader)
        .map(|i| cluster.metric(i, "bftd_leader_moves_joined_total"))
        .sum();
    // The first backups join the leader's STOP by the move rule; the rest
    // may join by the f+1 STOPs rule.
    assert!(joined >= 1, "{joined} backups joined the move");
    ok_etcdctl(
        &cluster.endpoints()[leader as usize],
        &["put", "k", "after"],
    );
    for ep in cluster.endpoints() {
        let got = ok_etcdctl(&ep, &["get", "k", "--print-value-only"]);
        assert_eq!(got.trim(), "after", "{ep}");
    }
    // Moving to the leader itself succeeds at once.
    ok_etcdctl(&all, &["move-leader", &format!("{:x}", id_of(to))]);
    assert_eq!(cluster.leader(Duration::from_secs(10)), to);

    let (ok, out) = etcdctl(&all, &["move-leader", "1234"], None);
    assert!(
        !ok && out.contains("etcdserver: bad leader transferee"),
        "{out}"
    );
    let body = http_request(
        cluster.client_addr(leader),
        "POST",
        "/v3/maintenance/transfer-leadership",
    );
    assert!(body.contains("etcdserver: not leader"), "{body}");
    assert_eq!(cluster.leader(Duration::from_secs(10)), to);
}
