//! Issue "Kubernetes runs on bftd", Watch: a 4-replica cluster of real
//! processes on loopback, watched with etcdctl (Debian's etcd-client) and
//! with a clientv3-style client (etcd-client crate) while the leader is
//! SIGKILLed and restarted.
//!
//! One cluster at a time (a process-wide lock).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bftd::config::Durability;
use common::*;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn revision(c: &Cluster, i: u16) -> u64 {
    c.status(i)["revision"].as_u64().unwrap()
}

#[test]
fn etcdctl_watch_sees_history_and_live_changes_identically_on_every_replica() {
    let _g = serial();
    let c = Cluster::start("watch-etcdctl", 4, Durability::Fsync);
    let ep = c.endpoints();
    let from = revision(&c, 0) + 1;
    ok_etcdctl(&ep[0], &["put", "w/a", "1"]);
    ok_etcdctl(&ep[1], &["put", "other", "x"]);
    ok_etcdctl(&ep[2], &["put", "w/a", "2"]);
    ok_etcdctl(&ep[3], &["del", "w/a"]);
    ok_etcdctl(&ep[0], &["put", "w/b", "3"]);
    // etcdctl prints, per event: type, (prev key, prev value,) key, value.
    let want = [
        "PUT", "w/a", "1", //
        "PUT", "w/a", "1", "w/a", "2", //
        "DELETE", "w/a", "2", "w/a", "", //
        "PUT", "w/b", "3",
    ];
    let rev = from.to_string();
    let mut seen = Vec::new();
    for e in &ep {
        let lines = etcdctl_watch(
            e,
            &["--prefix", "w/", "--prev-kv", "--rev", &rev],
            want.len(),
            Duration::from_secs(20),
        );
        assert_eq!(lines, want, "history of w/ at {e}");
        seen.push(lines);
    }
    // A live watch on one replica sees a write made through another.
    let now = (revision(&c, 1) + 1).to_string();
    let watcher = {
        let e = ep[1].clone();
        std::thread::spawn(move || {
            etcdctl_watch(&e, &["w/live", "--rev", &now], 3, Duration::from_secs(20))
        })
    };
    ok_etcdctl(&ep[3], &["put", "w/live", "v"]);
    assert_eq!(watcher.join().unwrap(), ["PUT", "w/live", "v"]);
    // A start revision below the compaction is refused as etcd refuses it.
    let top = revision(&c, 0).to_string();
    ok_etcdctl(&ep[0], &["compact", &top]);
    let (ok, out) = etcdctl(&ep[2], &["watch", "w/", "--prefix", "--rev", &rev], None);
    assert!(!ok, "{out}");
    assert!(
        out.contains("required revision has been compacted"),
        "{out}"
    );
}

/// A watcher on a replica that stays up sees every acknowledged put exactly
/// once, in revision order, while 8 writers run and the leader is SIGKILLed
/// and restarted.
#[test]
fn a_watcher_sees_every_acknowledged_put_once_and_in_order_across_a_leader_sigkill() {
    let _g = serial();
    let mut c = Cluster::start_with("watch-kill-leader", Opts::new(4));
    let leader = c.leader(Duration::from_secs(5));
    let at = (leader + 1) % 4;
    let writers_at: Vec<String> = (0..4u16)
        .filter(|&i| i != leader)
        .map(|i| c.client_addr(i).to_string())
        .collect();
    let from = revision(&c, at) as i64 + 1;

    // The watcher: (key, value, mod_revision) of every event, in order.
    let seen: Arc<Mutex<Vec<(String, String, i64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (seen, stop, ep) = (seen.clone(), stop.clone(), c.client_addr(at).to_string());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut client = etcd_client::Client::connect([ep], None).await.unwrap();
                let opts = etcd_client::WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(from);
                let mut w = client.watch("kw/", Some(opts)).await.unwrap();
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let Ok(msg) =
                        tokio::time::timeout(Duration::from_millis(200), w.message()).await
                    else {
                        continue;
                    };
                    let resp = msg.expect("the watch stream survives").expect("open");
                    assert!(!resp.canceled(), "the watch was canceled: {resp:?}");
                    let mut s = seen.lock().unwrap();
                    for e in resp.events() {
                        let kv = e.kv().unwrap();
                        s.push((
                            kv.key_str().unwrap().to_string(),
                            kv.value_str().unwrap().to_string(),
                            kv.mod_revision(),
                        ));
                    }
                }
            })
        })
    };

    let w = Writers::start(writers_at, 8, "kw", Duration::from_secs(40));
    let wait_revision = |c: &Cluster, past: u64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while revision(c, at) < past {
            assert!(Instant::now() < deadline, "no progress at replica {at}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_revision(&c, from as u64 + 150);
    c.kill(leader);
    let r0 = revision(&c, at);
    wait_revision(&c, r0 + 150);
    c.start_replica(leader);
    c.wait_serving(leader, Duration::from_secs(30));
    let r1 = revision(&c, at);
    wait_revision(&c, r1 + 100);
    let r = w.stop();
    assert!(r.errors.is_empty(), "writer errors: {:?}", r.errors.first());

    // Wait until the watcher has reached the last revision, then stop it.
    let last = revision(&c, at) as i64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().last().map_or(0, |e| e.2) < last {
        assert!(Instant::now() < deadline, "the watcher fell behind");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();

    let seen = seen.lock().unwrap();
    assert!(
        c.metric(at, "bftd_watch_events_sent_total") >= seen.len() as u64,
        "the replica counts the events it sent"
    );
    assert!(
        seen.windows(2).all(|w| w[0].2 < w[1].2),
        "revisions strictly ascend (in order, none twice)"
    );
    let by_key: HashMap<&str, &str> = seen
        .iter()
        .map(|(k, v, _)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(by_key.len(), seen.len(), "every key is written once");
    let mut acked = 0;
    for (key, value, _) in r.acked.iter().flatten() {
        assert_eq!(
            by_key.get(key.as_str()),
            Some(&value.as_str()),
            "acknowledged put {key} seen by the watcher"
        );
        acked += 1;
    }
    eprintln!(
        "{acked} acknowledged puts, {} events seen at replica {at} across the leader's death",
        seen.len()
    );
}
