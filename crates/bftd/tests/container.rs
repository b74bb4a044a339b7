//! Issue 12 item 2: the container image built here with no registry. The
//! test builds the image from this build's `bftd` with
//! `scripts/container-image.sh` (FROM scratch: the binary, its libraries
//! and the loader), writes a config with `scripts/container-config.sh`,
//! and runs 4 replicas as 4 containers (non-root, config and keys
//! read-only, data on a named volume) on a private Docker network of its
//! own. Host-side etcdctl talks to them at their addresses on that bridge.
//! Then: the leader's container is disconnected from the network and a
//! new regency serves writes through the others; reconnected, it catches
//! up; a rolling `docker restart` of all four under writers loses no
//! acknowledged write. Everything it created is removed when it ends, also
//! on failure (the image tag too).
//!
//! Runs where `docker info` works (skips with the reason otherwise) and as
//! root (the key files are handed to the image's user, uid 10001).

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::docker::{
    docker, docker_logs, docker_unavailable, field, inspect, leader, ok_docker, remove_all, run,
    wait_converged, wait_health,
};
use common::*;

const N: usize = 4;
/// The image's user (deploy/container/Dockerfile).
const IMAGE_UID: u32 = 10001;
const IMAGE_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../scripts/container-image.sh"
);
const CONFIG_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../scripts/container-config.sh"
);
/// Why this machine cannot run the test, if it cannot.
fn unavailable() -> Option<String> {
    docker_unavailable(IMAGE_UID)
}

/// Everything the test creates, removed when dropped (also when the test
/// panics; then the containers' logs are printed first). Each resource is
/// recorded before it is created.
struct Deployment {
    pid: u32,
    tag: String,
    dir: PathBuf,
    network: Option<String>,
    /// The first three octets of the network's /24.
    subnet: [u8; 3],
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl Deployment {
    fn new() -> Self {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("bftd-it-container-{pid}"));
        let _ = std::fs::remove_dir_all(&dir);
        Deployment {
            pid,
            tag: format!("bftd:it-{pid}"),
            dir,
            network: None,
            subnet: [0; 3],
            containers: Vec::new(),
            volumes: Vec::new(),
        }
    }

    fn ip(&self, i: usize) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 11 + i as u8)
    }

    fn endpoint(&self, i: usize) -> String {
        format!("{}:2379", self.ip(i))
    }

    fn endpoints(&self, which: impl IntoIterator<Item = usize>) -> Vec<String> {
        which.into_iter().map(|i| self.endpoint(i)).collect()
    }

    fn name(&self, i: usize) -> &str {
        &self.containers[i]
    }

    /// Builds the image from this build's binary.
    fn build_image(&mut self) {
        let out = run(
            "bash",
            &[IMAGE_SCRIPT, "--binary", BFTD, "--tag", &self.tag],
        )
        .unwrap_or_else(|e| panic!("building the image: {e}"));
        eprintln!("{}", out.lines().last().unwrap_or(""));
    }

    /// A private network with a /24 no other Docker network holds.
    fn create_network(&mut self) {
        let name = format!("bftd-it-{}", self.pid);
        self.network = Some(name.clone());
        let mut tried = Vec::new();
        for attempt in 0..16u32 {
            let third = ((self.pid + attempt * 37) % 256) as u8;
            self.subnet = [10, 213, third];
            let subnet = format!("10.213.{third}.0/24");
            match docker(&[
                "network", "create", "--driver", "bridge", "--subnet", &subnet, "--label",
                "bftd-it", &name,
            ]) {
                Ok(_) => return,
                Err(e) if e.contains("overlap") => tried.push(subnet),
                Err(e) => panic!("{e}"),
            }
        }
        panic!("no free /24 for the test network; tried {tried:?}");
    }

    /// Writes bftd.toml and keys for the containers' addresses.
    fn write_config(&self) {
        let ips: Vec<String> = (0..N).map(|i| self.ip(i).to_string()).collect();
        let etc = self.dir.join("etc");
        let out = run(
            "bash",
            &[
                CONFIG_SCRIPT,
                "--dir",
                etc.to_str().unwrap(),
                "--ips",
                &ips.join(","),
                "--bftd",
                BFTD,
            ],
        )
        .unwrap_or_else(|e| panic!("writing the config: {e}"));
        eprintln!("{out}");
        let c = bftd::config::ClusterConfig::load(&etc.join("bftd.toml")).unwrap();
        for (i, r) in c.replicas.iter().enumerate() {
            assert_eq!(r.client_addr, self.endpoint(i).parse().unwrap());
        }
        assert_eq!(c.data_dir(2), PathBuf::from("/var/lib/bftd/replica-2"));
    }

    /// Starts replica `i` in its container: the image's user, config and
    /// keys read-only, data on its own volume, a read-only root file
    /// system, no capabilities, health checked every second.
    fn start(&mut self, i: usize) {
        let name = format!("bftd-it-{}-{i}", self.pid);
        let volume = format!("{name}-data");
        self.volumes.push(volume.clone());
        ok_docker(&["volume", "create", "--label", "bftd-it", &volume]);
        self.containers.push(name.clone());
        let etc = format!("{}:/etc/bftd:ro", self.dir.join("etc").display());
        ok_docker(&[
            "run",
            "--detach",
            "--name",
            &name,
            "--label",
            "bftd-it",
            "--network",
            self.network.as_deref().unwrap(),
            "--ip",
            &self.ip(i).to_string(),
            "--env",
            &format!("BFTD_ID={i}"),
            "--env",
            "RUST_LOG=info",
            "--volume",
            &etc,
            "--volume",
            &format!("{volume}:/var/lib/bftd"),
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--health-interval",
            "1s",
            "--health-retries",
            "2",
            &self.tag,
        ]);
    }

    fn inspect(&self, i: usize, format: &str) -> String {
        inspect(self.name(i), format)
    }

    /// Waits until Docker reports replica `i` `want` ("healthy",
    /// "unhealthy").
    fn wait_health(&self, i: usize, want: &str, timeout: Duration) {
        wait_health(self.name(i), want, timeout, 30)
    }

    fn logs(&self, i: usize) -> String {
        docker_logs(self.name(i), Some(30))
    }

    fn status_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from((self.ip(i), 2381))
    }

    fn field(&self, i: usize, name: &str) -> Option<u64> {
        field(self.status_addr(i), name)
    }

    /// The leader replicas `among` agree on.
    fn leader(&self, among: &[usize], timeout: Duration) -> usize {
        let addrs: Vec<SocketAddr> = among.iter().map(|&i| self.status_addr(i)).collect();
        leader(&addrs, timeout)
    }

    /// Waits until replica `i` has decided every instance the others had
    /// decided when it was called; returns that cid.
    fn wait_caught_up(&self, i: usize, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let target = (0..N)
            .filter(|&j| j != i)
            .filter_map(|j| self.field(j, "last_decided_cid"))
            .max()
            .expect("the other replicas answer /status");
        loop {
            let at = self.field(i, "last_decided_cid");
            if at.is_some_and(|c| c >= target) {
                return target;
            }
            assert!(
                Instant::now() < deadline,
                "replica {i} at cid {at:?}, not caught up to {target} within {timeout:?}:\n{}",
                self.logs(i)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every replica reports the same revision and state
    /// digest; returns the revision.
    fn wait_converged(&self, timeout: Duration) -> u64 {
        let all: Vec<SocketAddr> = (0..N).map(|i| self.status_addr(i)).collect();
        wait_converged(&all, timeout)
    }

    /// Waits until replica `at`'s revision passes `from` by `k`.
    fn wait_revision(&self, at: usize, from: u64, k: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let rev = self.field(at, "revision");
            if let Some(r) = rev.filter(|&r| r >= from + k) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "replica {at} at revision {rev:?}, wanted {} within {timeout:?}",
                from + k
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.containers.len() {
                eprintln!("--- {} ---\n{}", self.name(i), self.logs(i));
            }
        }
        let networks: Vec<String> = self.network.iter().cloned().collect();
        remove_all(&self.containers, &self.volumes, &networks, &self.tag);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn four_replicas_in_containers_survive_a_disconnected_leader_and_a_rolling_restart() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED container test: {why}");
        return;
    }
    let t0 = Instant::now();
    let mut d = Deployment::new();
    d.build_image();
    d.create_network();
    d.write_config();
    for i in 0..N {
        d.start(i);
    }
    for i in 0..N {
        d.wait_health(i, "healthy", Duration::from_secs(60));
    }
    eprintln!("image built, 4 containers healthy after {:?}", t0.elapsed());

    // The replica runs as the image's user, not root.
    for i in 0..N {
        let pid = d.inspect(i, "{{.State.Pid}}");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert_eq!(
            uid.split_whitespace().nth(1),
            Some(IMAGE_UID.to_string().as_str()),
            "{uid}"
        );
    }

    // etcdctl on the host against the containers.
    let all = d.endpoints(0..N).join(",");
    ok_etcdctl(&all, &["put", "c/hello", "world"]);
    for i in 0..N {
        let v = ok_etcdctl(&d.endpoint(i), &["get", "c/hello", "--print-value-only"]);
        assert_eq!(v.trim(), "world", "replica {i}");
    }
    let health = ok_etcdctl(&all, &["endpoint", "health"]);
    assert_eq!(health.matches("is healthy").count(), N, "{health}");

    // The leader's container leaves the network: the others move to a new
    // regency and serve writes.
    let leader = d.leader(&[0, 1, 2, 3], Duration::from_secs(10));
    let others: Vec<usize> = (0..N).filter(|&i| i != leader).collect();
    let witness = others[0];
    let regency = d.field(witness, "regency").unwrap();
    let net = d.network.clone().unwrap();
    let cut = Instant::now();
    ok_docker(&["network", "disconnect", &net, d.name(leader)]);
    let some = d.endpoints(others.iter().copied()).join(",");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out) = etcdctl(&some, &["put", "part/first", "x"], None);
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no write through the others after the leader left: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "leader {leader} disconnected: a write went through the others after {:?}",
        cut.elapsed()
    );
    let new_leader = d.leader(&others, Duration::from_secs(10));
    assert_ne!(new_leader, leader);
    assert!(d.field(witness, "regency").unwrap() > regency);
    for k in 0..20 {
        ok_etcdctl(&some, &["put", &format!("part/{k}"), &k.to_string()]);
    }
    // Its own status address is gone with the network: HEALTHCHECK says so.
    d.wait_health(leader, "unhealthy", Duration::from_secs(30));

    // Back on the network (same address): it catches up and serves.
    ok_docker(&[
        "network",
        "connect",
        "--ip",
        &d.ip(leader).to_string(),
        &net,
        d.name(leader),
    ]);
    ok_etcdctl(&some, &["put", "part/after", "y"]);
    let cid = d.wait_caught_up(leader, Duration::from_secs(60));
    d.wait_health(leader, "healthy", Duration::from_secs(30));
    d.wait_converged(Duration::from_secs(30));
    let keys = ok_etcdctl(
        &d.endpoint(leader),
        &["get", "--prefix", "part/", "--keys-only"],
    );
    assert_eq!(keys.lines().filter(|l| !l.is_empty()).count(), 22, "{keys}");
    eprintln!(
        "old leader {leader} caught up to cid {cid} after {:?}",
        t0.elapsed()
    );

    // Rolling restart, one container at a time, under 4 writers (one per
    // replica): each comes back healthy and caught up while the others
    // keep taking writes, and no acknowledged write is lost.
    let writers = Writers::start(d.endpoints(0..N), N, "roll", Duration::from_secs(120));
    let probe = |i: usize| (i + 1) % N;
    let rev = d.field(probe(0), "revision").unwrap();
    d.wait_revision(probe(0), rev, 20, Duration::from_secs(30));
    for i in 0..N {
        let rev = d.field(probe(i), "revision").unwrap();
        let t = Instant::now();
        ok_docker(&["restart", "--time", "30", d.name(i)]);
        let restarted = t.elapsed();
        d.wait_health(i, "healthy", Duration::from_secs(60));
        let cid = d.wait_caught_up(i, Duration::from_secs(60));
        d.wait_revision(probe(i), rev, 20, Duration::from_secs(30));
        eprintln!(
            "replica {i} restarted in {restarted:?}, healthy and caught up to cid {cid} after {:?}",
            t.elapsed()
        );
    }
    let r = writers.stop();
    eprintln!(
        "rolling restart: {} writes acknowledged, {} failed (writes to a restarting replica)",
        r.total(),
        r.errors.len()
    );
    assert!(
        r.total() >= 100,
        "writers made too little progress: {} acknowledged, errors e.g. {:?}",
        r.total(),
        &r.errors[..r.errors.len().min(5)]
    );
    d.wait_converged(Duration::from_secs(30));
    for i in 0..N {
        r.assert_none_lost(&d.endpoint(i), "roll/");
    }
    eprintln!("done in {:?}", t0.elapsed());
}
