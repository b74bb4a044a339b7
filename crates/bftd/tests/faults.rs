//! Issue "Survive faults", process-level: real `bftd run` processes, n = 4
//! and n = 7, each scenario asserting that no acknowledged write is lost and
//! that service resumes (the thesis' Tables 6.2-6.5, the KmMR paper's
//! Scenario 2). The leader partition crosses a real network boundary
//! (network namespaces the test creates); the other partitions use the
//! replicas' fault switch.
//!
//! One scenario runs at a time (a process-wide lock): they use short
//! timeouts, and two clusters sharing two cores would blur them.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits until replica `at`'s revision is at least `k` past `from` (the
/// writers made progress), or fails after `timeout`.
fn wait_progress(c: &Cluster, at: u16, from: usize, k: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while revision(c, at) < from + k {
        assert!(
            Instant::now() < deadline,
            "no progress at replica {at}: revision {}, wanted {}",
            revision(c, at),
            from + k
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Revision of replica `i` (every acknowledged put is one revision).
fn revision(c: &Cluster, i: u16) -> usize {
    c.status(i)["revision"].as_u64().unwrap() as usize
}

fn endpoints_except(c: &Cluster, skip: &[u16]) -> Vec<String> {
    (0..c.n() as u16)
        .filter(|i| !skip.contains(i))
        .map(|i| c.client_addr(i).to_string())
        .collect()
}

/// SIGKILL of the leader under 16 closed-loop writers: nothing acknowledged
/// is lost, writers pause for less than a second, the restarted leader
/// catches up and every replica converges.
fn leader_sigkill(n: usize) {
    let _g = serial();
    let mut c = Cluster::start_with(&format!("kill-leader-{n}"), Opts::new(n));
    let leader = c.leader(Duration::from_secs(5));
    let witness = (leader + 1) % n as u16;
    let w = Writers::start(
        endpoints_except(&c, &[leader]),
        16,
        "kl",
        Duration::from_secs(30),
    );
    let probe_at = witness;
    wait_progress(&c, probe_at, 0, 200, Duration::from_secs(15));
    let killed_at = Instant::now();
    c.kill(leader);
    let before = revision(&c, probe_at);
    wait_progress(&c, probe_at, before, 300, Duration::from_secs(15));
    let r = w.stop();
    assert!(
        r.errors.is_empty(),
        "{} errors, first {:?}",
        r.errors.len(),
        r.errors.first()
    );
    let pause = r.pause_around(killed_at);
    assert!(
        pause < Duration::from_secs(1),
        "writers paused {pause:?} after the leader died"
    );
    assert_ne!(
        c.leader(Duration::from_secs(5)),
        leader,
        "a new leader took over"
    );
    c.start_replica(leader);
    c.wait_serving(leader, Duration::from_secs(30));
    c.wait_converged(Duration::from_secs(30));
    r.assert_none_lost(&c.client_addr(leader).to_string(), "kl/");
    eprintln!(
        "n = {n}: {} writes, pause {pause:?} across the leader's death",
        r.total()
    );
}

#[test]
fn leader_sigkill_and_restart_n4() {
    leader_sigkill(4);
}

#[test]
fn leader_sigkill_and_restart_n7() {
    leader_sigkill(7);
}

/// A follower dies and comes back: service never stops, it catches up.
fn follower_sigkill(n: usize) {
    let _g = serial();
    let mut c = Cluster::start_with(&format!("kill-follower-{n}"), Opts::new(n));
    let victim = n as u16 - 1;
    let w = Writers::start(
        endpoints_except(&c, &[victim]),
        8,
        "kf",
        Duration::from_secs(30),
    );
    let probe_at = 0;
    wait_progress(&c, probe_at, 0, 100, Duration::from_secs(15));
    c.kill(victim);
    let before = revision(&c, probe_at);
    wait_progress(&c, probe_at, before, 300, Duration::from_secs(15));
    c.start_replica(victim);
    c.wait_serving(victim, Duration::from_secs(30));
    let before = revision(&c, probe_at);
    wait_progress(&c, probe_at, before, 100, Duration::from_secs(15));
    let r = w.stop();
    assert!(
        r.errors.is_empty(),
        "{} errors, first {:?}",
        r.errors.len(),
        r.errors.first()
    );
    c.wait_converged(Duration::from_secs(30));
    r.assert_none_lost(&c.client_addr(victim).to_string(), "kf/");
}

#[test]
fn follower_sigkill_and_restart_n4() {
    follower_sigkill(4);
}

#[test]
fn follower_sigkill_and_restart_n7() {
    follower_sigkill(7);
}

/// f+1 replicas die: no quorum, so writes and linearizable reads stop —
/// with an error, never a wrong answer — and resume when they return.
fn f_plus_one_killed(n: usize) {
    let _g = serial();
    let f = (n - 1) / 3;
    let mut c = Cluster::start_with(&format!("kill-f1-{n}"), Opts::new(n));
    let ep0 = c.client_addr(0).to_string();
    ok_etcdctl(&ep0, &["put", "k", "before"]);
    c.wait_converged(Duration::from_secs(10));
    let victims: Vec<u16> = (n - f - 1..n).map(|i| i as u16).collect();
    for &v in &victims {
        c.kill(v);
    }
    let (ok, out) = etcdctl(&ep0, &["--command-timeout=2s", "put", "k", "during"], None);
    assert!(!ok, "a write succeeded without a quorum: {out}");
    let (ok, out) = etcdctl(&ep0, &["--command-timeout=2s", "get", "k"], None);
    assert!(!ok, "a linearizable read succeeded without a quorum: {out}");
    // A serializable read answers from local state: the last committed value.
    assert_eq!(
        ok_etcdctl(&ep0, &["get", "k", "--consistency=s", "--print-value-only"]),
        "before\n"
    );
    for &v in &victims {
        c.start_replica(v);
    }
    for &v in &victims {
        c.wait_serving(v, Duration::from_secs(30));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, _) = etcdctl(&ep0, &["--command-timeout=3s", "put", "k", "after"], None);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "service did not resume");
    }
    c.wait_converged(Duration::from_secs(30));
    let last = c.client_addr(victims[0]).to_string();
    assert_eq!(
        ok_etcdctl(&last, &["get", "k", "--print-value-only"]),
        "after\n"
    );
}

#[test]
fn f_plus_one_killed_stops_service_without_wrong_answers_n4() {
    f_plus_one_killed(4);
}

#[test]
fn f_plus_one_killed_stops_service_without_wrong_answers_n7() {
    f_plus_one_killed(7);
}

/// The leader is cut off from every other replica by the network (its own
/// namespace, blackhole routes) while its clients still reach it: the
/// others elect a new leader and keep serving; after the heal the old
/// leader catches up.
#[test]
fn leader_partitioned_by_the_network_n4() {
    if !Netns::available() {
        eprintln!("SKIPPED leader_partitioned_by_the_network_n4: needs root and iproute2 (run ./scripts/test.sh as root)");
        return;
    }
    let _g = serial();
    let o = Opts {
        netns: true,
        ..Opts::new(4)
    };
    let c = Cluster::start_with("netpart", o);
    let leader = c.leader(Duration::from_secs(5));
    let w = Writers::start(
        endpoints_except(&c, &[leader]),
        8,
        "np",
        Duration::from_secs(40),
    );
    let witness = (leader + 1) % 4;
    let probe_at = witness;
    wait_progress(&c, probe_at, 0, 100, Duration::from_secs(15));
    c.netns.as_ref().unwrap().isolate(leader);
    let before = revision(&c, probe_at);
    wait_progress(&c, probe_at, before, 200, Duration::from_secs(20));
    assert_ne!(c.status(witness)["leader"].as_u64().unwrap() as u16, leader);
    c.netns.as_ref().unwrap().rejoin(leader);
    let r = w.stop();
    assert!(
        r.errors.is_empty(),
        "{} errors, first {:?}",
        r.errors.len(),
        r.errors.first()
    );
    c.wait_converged(Duration::from_secs(30));
    r.assert_none_lost(&c.client_addr(leader).to_string(), "np/");
}

/// A follower is cut off (fault switch): service continues; after the heal
/// it catches up.
fn follower_partitioned(n: usize) {
    let _g = serial();
    let o = Opts {
        fault_injection: true,
        ..Opts::new(n)
    };
    let c = Cluster::start_with(&format!("fpart-{n}"), o);
    let victim = n as u16 - 1;
    let rest: Vec<u16> = (0..victim).collect();
    let w = Writers::start(
        endpoints_except(&c, &[victim]),
        8,
        "fp",
        Duration::from_secs(30),
    );
    let probe_at = 0;
    wait_progress(&c, probe_at, 0, 100, Duration::from_secs(15));
    c.partition(&[victim], &rest);
    let before = revision(&c, probe_at);
    wait_progress(&c, probe_at, before, 300, Duration::from_secs(15));
    c.heal_all();
    let r = w.stop();
    assert!(
        r.errors.is_empty(),
        "{} errors, first {:?}",
        r.errors.len(),
        r.errors.first()
    );
    c.wait_converged(Duration::from_secs(30));
    r.assert_none_lost(&c.client_addr(victim).to_string(), "fp/");
}

#[test]
fn follower_partitioned_and_healed_n4() {
    follower_partitioned(4);
}

#[test]
fn follower_partitioned_and_healed_n7() {
    follower_partitioned(7);
}

/// Every replica cut off from every other: nothing can be decided (writes
/// fail, nothing wrong is answered); after the heal service resumes and
/// the replicas converge.
fn everyone_partitioned(n: usize) {
    let _g = serial();
    let o = Opts {
        fault_injection: true,
        ..Opts::new(n)
    };
    let c = Cluster::start_with(&format!("allpart-{n}"), o);
    let ep: Vec<String> = c.endpoints();
    ok_etcdctl(&ep[1], &["put", "k", "before"]);
    c.wait_converged(Duration::from_secs(10));
    for i in 0..n as u16 {
        let others: Vec<u16> = (0..n as u16).filter(|&j| j != i).collect();
        c.block(i, &others);
    }
    let (ok, out) = etcdctl(
        &ep[1],
        &["--command-timeout=2s", "put", "k", "during"],
        None,
    );
    assert!(!ok, "a write succeeded with every replica cut off: {out}");
    c.heal_all();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, _) = etcdctl(&ep[2], &["--command-timeout=3s", "put", "k", "after"], None);
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "service did not resume after the heal"
        );
    }
    // The write that timed out during the partition has an unknown outcome
    // (as with etcd): replica 1's proxy sends it again until it is
    // executed, so it may still be ordered after "after". Once no replica
    // has a request of its own outstanding or one pending, it is settled
    // (CI run of c65946a: "during" was ordered after "final" when this
    // waited for "after" alone), and a write made then is what every
    // replica must show.
    c.wait_settled(Duration::from_secs(30));
    ok_etcdctl(&ep[3], &["put", "k", "final"]);
    c.wait_converged(Duration::from_secs(30));
    for e in &ep {
        assert_eq!(
            ok_etcdctl(e, &["get", "k", "--print-value-only"]),
            "final\n",
            "{e}"
        );
    }
}

#[test]
fn everyone_partitioned_then_healed_n4() {
    everyone_partitioned(4);
}

#[test]
fn everyone_partitioned_then_healed_n7() {
    everyone_partitioned(7);
}
