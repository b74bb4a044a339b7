//! Issue "Kubernetes runs on bftd", Lease: a 4-replica cluster of real
//! processes on loopback, driven by etcdctl (Debian's etcd-client) and by
//! a clientv3-style keep-alive (etcd-client crate) across a leader SIGKILL.
//!
//! One cluster at a time (a process-wide lock).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The lease id (hex) etcdctl printed for `lease grant`.
fn granted(out: &str) -> String {
    // "lease 694d7b6a1c2e4f10 granted with TTL(60s)"
    let mut words = out.split_whitespace();
    assert_eq!(words.next(), Some("lease"), "{out}");
    words.next().expect("an id").to_string()
}

/// Polls `cond` every 50 ms until it holds, or fails after `timeout`.
fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn etcdctl_lease_grant_keep_alive_time_to_live_list_revoke_and_expiry() {
    let _g = serial();
    let c = Cluster::start_with("lease-etcdctl", Opts::new(4));
    let ep = c.endpoints();
    let id = granted(&ok_etcdctl(&ep[0], &["lease", "grant", "60"]));
    let lease = format!("--lease={id}");
    ok_etcdctl(&ep[1], &["put", &lease, "held", "v"]);
    let ttl = ok_etcdctl(&ep[2], &["lease", "timetolive", "--keys", &id]);
    assert!(
        ttl.contains("granted with TTL(60s)") && ttl.contains("attached keys([held])"),
        "{ttl}"
    );
    assert!(ok_etcdctl(&ep[3], &["lease", "list"]).contains(&id));
    let kept = ok_etcdctl(&ep[1], &["lease", "keep-alive", "--once", &id]);
    assert_eq!(kept.trim(), format!("lease {id} keepalived with TTL(60)"));
    assert_eq!(
        ok_etcdctl(&ep[0], &["lease", "revoke", &id]).trim(),
        format!("lease {id} revoked")
    );
    for e in &ep {
        assert_eq!(ok_etcdctl(e, &["get", "held"]), "", "revoked at {e}");
    }
    let (ok, out) = etcdctl(&ep[2], &["lease", "revoke", &id], None);
    assert!(!ok && out.contains("requested lease not found"), "{out}");

    // A lease nobody keeps alive expires: a watcher on another replica
    // sees its key deleted.
    let id = granted(&ok_etcdctl(&ep[0], &["lease", "grant", "2"]));
    let lease = format!("--lease={id}");
    let put = ok_etcdctl(&ep[0], &["put", &lease, "brief", "v", "-w", "json"]);
    let rev: serde_json::Value = serde_json::from_str(&put).unwrap();
    let rev = rev["header"]["revision"].as_u64().unwrap().to_string();
    let started = Instant::now();
    wait_until("the lease to expire", Duration::from_secs(30), || {
        ok_etcdctl(&ep[3], &["get", "brief"]).is_empty()
    });
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500),
        "expired after {elapsed:?}, before its TTL of 2 s"
    );
    let events = etcdctl_watch(
        &ep[2],
        &["brief", "--rev", &rev],
        6,
        Duration::from_secs(20),
    );
    assert_eq!(events, ["PUT", "brief", "v", "DELETE", "brief", ""]);
    assert!(ok_etcdctl(&ep[1], &["lease", "timetolive", &id]).contains("already expired"));
}

/// A lease kept alive through a backup survives the leader's SIGKILL and
/// restart; an idle one expires on the survivors' votes meanwhile.
#[test]
fn a_kept_alive_lease_survives_a_leader_sigkill_and_an_idle_one_expires() {
    let _g = serial();
    let mut c = Cluster::start_with("lease-kill-leader", Opts::new(4));
    let leader = c.leader(Duration::from_secs(5));
    let at = (leader + 1) % 4;
    let ep = c.client_addr(at).to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::<i64>::new()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (kept, idle) = rt.block_on(async {
        let mut client = etcd_client::Client::connect([ep.clone()], None)
            .await
            .unwrap();
        let kept = client.lease_grant(3, None).await.unwrap().id();
        let idle = client.lease_grant(3, None).await.unwrap().id();
        let with = |id| Some(etcd_client::PutOptions::new().with_lease(id));
        client.put("kept", "v", with(kept)).await.unwrap();
        client.put("idle", "v", with(idle)).await.unwrap();
        (kept, idle)
    });
    // The keeper: a keep-alive every second (TTL/3), as clientv3 sends.
    let keeper = {
        let (stop, answers, ep) = (stop.clone(), answers.clone(), ep.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut client = etcd_client::Client::connect([ep], None).await.unwrap();
                let (mut k, mut s) = client.lease_keep_alive(kept).await.unwrap();
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    k.keep_alive().await.unwrap();
                    let r = tokio::time::timeout(Duration::from_secs(10), s.message())
                        .await
                        .expect("a keep-alive answer in time")
                        .unwrap()
                        .unwrap();
                    answers.lock().unwrap().push(r.ttl());
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        })
    };
    c.kill(leader);
    let gone = |c: &Cluster, key: &str| {
        ok_etcdctl(&c.client_addr(at).to_string(), &["get", key]).is_empty()
    };
    wait_until("the idle lease to expire", Duration::from_secs(30), || {
        gone(&c, "idle")
    });
    assert!(!gone(&c, "kept"), "the kept-alive lease survived");
    c.start_replica(leader);
    c.wait_serving(leader, Duration::from_secs(30));
    // Time itself is what is tested here: the kept lease must outlive
    // twice its TTL more, through the restart.
    std::thread::sleep(Duration::from_secs(6));
    let restarted = c.client_addr(leader).to_string();
    wait_until(
        "the restarted leader to catch up",
        Duration::from_secs(30),
        || ok_etcdctl(&restarted, &["get", "idle"]).is_empty(),
    );
    assert_eq!(
        ok_etcdctl(&restarted, &["get", "kept", "--print-value-only"]),
        "v\n"
    );
    stop.store(true, Ordering::Relaxed);
    keeper.join().unwrap();
    let answers = answers.lock().unwrap();
    assert!(answers.len() >= 5, "{answers:?}");
    assert!(answers.iter().all(|t| *t == 3), "{answers:?}");
    let ttl = ok_etcdctl(&ep, &["lease", "timetolive", &format!("{idle:x}")]);
    assert!(ttl.contains("already expired"), "{ttl}");
}

/// etcdctl's `lock` and `elect` (clientv3's concurrency recipes, built on a
/// session lease, revisions and watches) with two contenders each.
#[test]
fn etcdctl_lock_and_elect_with_two_contenders() {
    let _g = serial();
    let c = Cluster::start_with("lease-lock", Opts::new(4));
    let ep = c.endpoints();
    // Two critical sections under one lock, through different replicas:
    // they never overlap.
    let section = "echo in $(date +%s%N); sleep 1; echo out $(date +%s%N)";
    let a = EtcdctlChild::spawn(&ep[0], &["lock", "L", "--", "sh", "-c", section]);
    let b = EtcdctlChild::spawn(&ep[2], &["lock", "L", "--", "sh", "-c", section]);
    let span = |x: &EtcdctlChild| -> (u128, u128) {
        let mut t = Vec::new();
        while t.len() < 2 {
            let line = x
                .next_line(Duration::from_secs(30))
                .expect("the critical section ran");
            if let Some(ns) = line.strip_prefix("in ").or(line.strip_prefix("out ")) {
                t.push(ns.trim().parse::<u128>().unwrap());
            }
        }
        (t[0], t[1])
    };
    let (a_in, a_out) = span(&a);
    let (b_in, b_out) = span(&b);
    assert!(
        a_out <= b_in || b_out <= a_in,
        "critical sections overlapped: a {a_in}..{a_out}, b {b_in}..{b_out}"
    );

    // An election: p1 leads, an observer sees it, p2 waits; p1 resigns
    // (Ctrl-C revokes its session) and p2 leads.
    let mut p1 = EtcdctlChild::spawn(&ep[0], &["elect", "E", "p1"]);
    let line = |x: &EtcdctlChild| x.next_line(Duration::from_secs(30)).expect("a line");
    assert!(line(&p1).starts_with("E/"));
    assert_eq!(line(&p1), "p1");
    let observer = EtcdctlChild::spawn(&ep[3], &["elect", "-l", "E"]);
    assert!(line(&observer).starts_with("E/"));
    assert_eq!(line(&observer), "p1");
    let p2 = EtcdctlChild::spawn(&ep[1], &["elect", "E", "p2"]);
    assert_eq!(
        p2.next_line(Duration::from_secs(2)),
        None,
        "p2 is not elected while p1 leads"
    );
    p1.interrupt();
    assert!(line(&p2).starts_with("E/"));
    assert_eq!(line(&p2), "p2");
    assert!(line(&observer).starts_with("E/"));
    assert_eq!(line(&observer), "p2");
}
