//! Issue 12 item 2: the DPDK build in containers, on hugepages. The test
//! reserves 2 MiB hugepages (`/proc/sys/vm/nr_hugepages`, restored when it
//! ends), builds the DPDK image from this build's `bftd` with
//! `scripts/container-image.sh` (the binary, its libraries, the EAL's
//! plugin directory with the virtual-device drivers), and runs 4 replicas
//! as 4 containers on two private Docker networks of its own:
//!
//! - clients: etcdctl on the host reaches each replica's client and status
//!   ports through the kernel (eth0 in the container);
//! - replica links: each replica's DPDK port is a `net_af_packet` vdev on
//!   its interface on this network (eth1), with the EAL on hugepages
//!   (`--in-memory`: memfd hugepages, no hugetlbfs mount). The port answers
//!   for an address of that subnet Docker did not assign (.111+i); the
//!   kernel owns .11+i, so it drops the smoltcp traffic instead of
//!   answering it with RSTs.
//!
//! It checks that the EAL really holds hugepages (HugePages_Free drops,
//! each replica's HugetlbPages), serves etcdctl, SIGKILLs the leader's
//! container (its pages come back), sees a new regency take writes,
//! restarts the old leader and sees it catch up to the same revision.
//! Everything it created is removed when it ends, also on failure.
//!
//! Runs where `docker info` works and as root (skips with the reason
//! otherwise). Build: `cargo test -p bftd --features dpdk --test container_dpdk`.
#![cfg(feature = "dpdk")]

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
/// Hugepage memory of each replica's EAL (`-m`), MiB.
const EAL_MEM_MB: u64 = 64;
const HUGEPAGE_KB: u64 = 2048;
/// 2 MiB pages each replica's EAL takes.
const PAGES_PER_REPLICA: u64 = EAL_MEM_MB * 1024 / HUGEPAGE_KB;
/// Pages the test reserves: every replica's, and room for a restarted
/// one's before the kernel has taken back its predecessor's.
const PAGES: u64 = (N as u64 + 1) * PAGES_PER_REPLICA;
/// The container's interfaces follow the attach order: `--network` at
/// create time (clients), then `docker network connect` (replica links).
const CLIENT_IFACE: &str = "eth0";
const DPDK_IFACE: &str = "eth1";
const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

/// A field of /proc/meminfo (pages for HugePages_*, kB otherwise).
fn meminfo(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("/proc/meminfo has no {key}"))
}

/// 2 MiB hugepages reserved for the test; the old `nr_hugepages` comes back
/// when dropped.
struct Hugepages {
    old: u64,
}

impl Hugepages {
    fn reserve(pages: u64) -> Self {
        assert_eq!(
            meminfo("Hugepagesize"),
            HUGEPAGE_KB,
            "the default hugepage size is not 2 MiB"
        );
        let old: u64 = std::fs::read_to_string(NR_HUGEPAGES)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let guard = Hugepages { old };
        let want = old + pages;
        // One compaction first: the kernel needs free 2 MiB blocks.
        let _ = std::fs::write("/proc/sys/vm/compact_memory", "1");
        std::fs::write(NR_HUGEPAGES, want.to_string())
            .unwrap_or_else(|e| panic!("writing {want} to {NR_HUGEPAGES}: {e}"));
        let total = meminfo("HugePages_Total");
        assert!(
            total >= want,
            "asked the kernel for {want} hugepages of 2 MiB, it found {total}: free memory \
             (or reserve them at boot with hugepages={want} on the kernel command line)"
        );
        eprintln!(
            "hugepages: nr_hugepages {old} -> {want} (HugePages_Total {total}, HugePages_Free {})",
            meminfo("HugePages_Free")
        );
        guard
    }
}

impl Drop for Hugepages {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(NR_HUGEPAGES, self.old.to_string()) {
            eprintln!("could not restore {NR_HUGEPAGES} to {}: {e}", self.old);
            return;
        }
        let total = meminfo("HugePages_Total");
        if total == self.old {
            eprintln!("hugepages: nr_hugepages restored to {}", self.old);
        } else {
            eprintln!(
                "hugepages: nr_hugepages set back to {}, HugePages_Total is {total} \
                 (pages still in use are freed when released)",
                self.old
            );
        }
    }
}

/// One of the test's private networks.
struct Network {
    name: String,
    /// The first three octets of its /24.
    subnet: [u8; 3],
}

impl Network {
    fn ip(&self, last: u8) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, last)
    }
}

/// Everything the test creates, removed when dropped (also when the test
/// panics; then the containers' logs are printed first), hugepages last.
/// Each resource is recorded before it is created.
struct Deployment {
    pid: u32,
    tag: String,
    dir: PathBuf,
    clients: Option<Network>,
    links: Option<Network>,
    /// Network names recorded before creation, for the cleanup.
    networks: Vec<String>,
    containers: Vec<String>,
    /// Dropped after the containers are gone.
    _hugepages: Hugepages,
}

impl Deployment {
    fn new(hugepages: Hugepages) -> Self {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("bftd-dpdkc-it-{pid}"));
        let _ = std::fs::remove_dir_all(&dir);
        Deployment {
            pid,
            tag: format!("bftd-dpdkc-it:{pid}"),
            dir,
            clients: None,
            links: None,
            networks: Vec::new(),
            containers: Vec::new(),
            _hugepages: hugepages,
        }
    }

    /// Replica `i`'s kernel address for clients.
    fn client_ip(&self, i: usize) -> Ipv4Addr {
        self.clients.as_ref().unwrap().ip(11 + i as u8)
    }

    /// The kernel's address of replica `i`'s container on the replica-link
    /// network (Docker assigns it; nothing uses it).
    fn kernel_link_ip(&self, i: usize) -> Ipv4Addr {
        self.links.as_ref().unwrap().ip(11 + i as u8)
    }

    /// Replica `i`'s DPDK port's address: on the replica-link subnet, owned
    /// by no kernel.
    fn dpdk_ip(&self, i: usize) -> Ipv4Addr {
        self.links.as_ref().unwrap().ip(111 + i as u8)
    }

    fn endpoint(&self, i: usize) -> String {
        format!("{}:2379", self.client_ip(i))
    }

    fn endpoints(&self, which: impl IntoIterator<Item = usize>) -> Vec<String> {
        which.into_iter().map(|i| self.endpoint(i)).collect()
    }

    fn name(&self, i: usize) -> &str {
        &self.containers[i]
    }

    /// Builds the DPDK image from this build's binary.
    fn build_image(&mut self) {
        let out = run(
            "bash",
            &[IMAGE_SCRIPT, "--binary", BFTD, "--dpdk", "--tag", &self.tag],
        )
        .unwrap_or_else(|e| panic!("building the image: {e}"));
        for line in out
            .lines()
            .filter(|l| l.starts_with("DPDK") || l.starts_with("built"))
        {
            eprintln!("{line}");
        }
    }

    /// A private network `bftd-dpdkc-it-<pid>-<what>` on a /24 of 10.<second>
    /// no other Docker network holds.
    fn create_network(&mut self, what: &str, second: u8) -> Network {
        let name = format!("bftd-dpdkc-it-{}-{what}", self.pid);
        self.networks.push(name.clone());
        let mut tried = Vec::new();
        for attempt in 0..16u32 {
            let third = ((self.pid + attempt * 37) % 256) as u8;
            let subnet = format!("10.{second}.{third}.0/24");
            match docker(&[
                "network",
                "create",
                "--driver",
                "bridge",
                "--subnet",
                &subnet,
                "--label",
                "bftd-dpdkc-it",
                &name,
            ]) {
                Ok(_) => {
                    return Network {
                        name,
                        subnet: [10, second, third],
                    }
                }
                Err(e) if e.contains("overlap") => tried.push(subnet),
                Err(e) => panic!("{e}"),
            }
        }
        panic!("no free /24 for the network {name}; tried {tried:?}");
    }

    /// Writes bftd.toml and keys: clients and status on the client
    /// network, replica links on DPDK ports on the replica-link network.
    fn write_config(&self) {
        let ips: Vec<String> = (0..N).map(|i| self.client_ip(i).to_string()).collect();
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
                "--owner",
                "0",
            ],
        )
        .unwrap_or_else(|e| panic!("writing the config: {e}"));
        eprintln!("{out}");
        let path = etc.join("bftd.toml");
        let mut c = bftd::config::ClusterConfig::load(&path).unwrap();
        c.dataplane.io = "dpdk".into();
        c.dpdk = Some(bftd::config::Dpdk {
            eal_args: [
                "--in-memory",
                "--iova-mode=va",
                "--no-pci",
                "-m",
                &EAL_MEM_MB.to_string(),
                "--log-level=notice",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            port: "net_af_packet0".into(),
            prefix_len: 24,
            ..Default::default()
        });
        for (i, r) in c.replicas.iter_mut().enumerate() {
            r.replica_addr = SocketAddr::from((self.dpdk_ip(i), 2380));
            r.dpdk_eal_args = vec![format!("--vdev=net_af_packet0,iface={DPDK_IFACE}")];
        }
        c.validate().unwrap();
        std::fs::write(&path, c.to_toml()).unwrap();
        let c = bftd::config::ClusterConfig::load(&path).unwrap();
        assert_eq!(c.dataplane.io, "dpdk");
        assert_eq!(c.data_dir(2), PathBuf::from("/var/lib/bftd/replica-2"));
    }

    /// Creates replica `i`'s container on the client network, attaches it
    /// to the replica-link network, and starts it: config and keys
    /// read-only, a read-only root file system, data and /tmp (the EAL's
    /// runtime directory) on tmpfs. It runs as root inside the container
    /// with every capability dropped but three: CAP_NET_RAW (the af_packet
    /// socket; Docker hands `--cap-add` capabilities to a non-root user
    /// only as a bounding set it cannot use, so uid 10001 gets "Could not
    /// open AF_PACKET socket"), CAP_NET_ADMIN (the af_packet driver sets
    /// the interface's MAC and promiscuous mode when the port starts:
    /// "rte_eth_dev_start: Operation not permitted" without it; the
    /// container's own network namespace only) and CAP_SYS_NICE (only so Docker's seccomp
    /// profile lets the EAL call get_mempolicy/set_mempolicy; without it
    /// "set_mempolicy: Operation not permitted", "EAL: FATAL: Cannot init
    /// memory"). Root without CAP_DAC_OVERRIDE cannot write a volume owned
    /// by the image's uid 10001, hence the tmpfs (and keys chowned to 0).
    fn start(&mut self, i: usize) {
        let name = format!("bftd-dpdkc-it-{}-{i}", self.pid);
        self.containers.push(name.clone());
        let etc = format!("{}:/etc/bftd:ro", self.dir.join("etc").display());
        let clients = self.clients.as_ref().unwrap().name.clone();
        let links = self.links.as_ref().unwrap().name.clone();
        ok_docker(&[
            "create",
            "--name",
            &name,
            "--label",
            "bftd-dpdkc-it",
            "--network",
            &clients,
            "--ip",
            &self.client_ip(i).to_string(),
            "--env",
            &format!("BFTD_ID={i}"),
            "--env",
            "RUST_LOG=info",
            "--volume",
            &etc,
            "--user",
            "0",
            "--tmpfs",
            "/var/lib/bftd",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--cap-drop",
            "ALL",
            "--cap-add",
            "NET_RAW",
            "--cap-add",
            "NET_ADMIN",
            "--cap-add",
            "SYS_NICE",
            "--security-opt",
            "no-new-privileges",
            "--health-interval",
            "1s",
            "--health-retries",
            "2",
            &self.tag,
        ]);
        ok_docker(&[
            "network",
            "connect",
            "--ip",
            &self.kernel_link_ip(i).to_string(),
            &links,
            &name,
        ]);
        ok_docker(&["start", &name]);
    }

    fn inspect(&self, i: usize, format: &str) -> String {
        inspect(self.name(i), format)
    }

    fn host_pid(&self, i: usize) -> u32 {
        self.inspect(i, "{{.State.Pid}}").parse().unwrap()
    }

    /// Checks the container's interfaces are where the config expects
    /// them: the MAC Docker gave it on each network against the
    /// interface's in the container's network namespace.
    fn check_interfaces(&self, i: usize) {
        let pid = self.host_pid(i);
        for (net, iface) in [
            (&self.clients.as_ref().unwrap().name, CLIENT_IFACE),
            (&self.links.as_ref().unwrap().name, DPDK_IFACE),
        ] {
            let want = self.inspect(
                i,
                &format!("{{{{(index .NetworkSettings.Networks \"{net}\").MacAddress}}}}"),
            );
            // The container's /sys belongs to its network namespace.
            let path = format!("/proc/{pid}/root/sys/class/net/{iface}/address");
            let have = std::fs::read_to_string(&path).unwrap_or_else(|e| format!("{path}: {e}"));
            assert_eq!(
                have.trim(),
                want,
                "replica {i}: {iface} in the container is not its interface on {net} \
                 (Docker attached the networks in another order?)"
            );
        }
    }

    /// Replica `i`'s hugetlb memory (`HugetlbPages` of its process), kB.
    fn hugetlb_kb(&self, i: usize) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.host_pid(i))).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("HugetlbPages:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Waits until Docker reports replica `i` `want` ("healthy").
    fn wait_health(&self, i: usize, want: &str, timeout: Duration) {
        wait_health(self.name(i), want, timeout, 40)
    }

    fn logs(&self, i: usize) -> String {
        docker_logs(self.name(i), Some(40))
    }

    fn status_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from((self.client_ip(i), 2381))
    }

    fn field(&self, i: usize, name: &str) -> Option<u64> {
        field(self.status_addr(i), name)
    }

    /// The leader replicas `among` agree on.
    fn leader(&self, among: &[usize], timeout: Duration) -> usize {
        let addrs: Vec<SocketAddr> = among.iter().map(|&i| self.status_addr(i)).collect();
        leader(&addrs, timeout)
    }

    /// Waits until every replica reports the same revision and state
    /// digest; returns the revision.
    fn wait_converged(&self, timeout: Duration) -> u64 {
        let all: Vec<SocketAddr> = (0..N).map(|i| self.status_addr(i)).collect();
        wait_converged(&all, timeout)
    }

    /// Waits until HugePages_Free satisfies `ok`; returns it.
    fn wait_free_pages(&self, what: &str, ok: impl Fn(u64) -> bool, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let free = meminfo("HugePages_Free");
            if ok(free) {
                return free;
            }
            assert!(
                Instant::now() < deadline,
                "HugePages_Free is {free}, not {what} within {timeout:?}"
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
        remove_all(&self.containers, &[], &self.networks, &self.tag);
        let _ = std::fs::remove_dir_all(&self.dir);
        // `_hugepages` drops after this: nr_hugepages comes back.
    }
}

#[test]
fn four_dpdk_replicas_in_containers_on_hugepages_survive_the_leaders_sigkill() {
    if let Some(why) = docker_unavailable(IMAGE_UID) {
        eprintln!("SKIPPED container_dpdk test: {why}");
        return;
    }
    let t0 = Instant::now();
    let free_before = meminfo("HugePages_Free");
    let mut d = Deployment::new(Hugepages::reserve(PAGES));
    let free_reserved = meminfo("HugePages_Free");
    assert!(
        free_reserved >= free_before + PAGES,
        "HugePages_Free {free_before} -> {free_reserved} after reserving {PAGES}"
    );
    d.build_image();
    d.clients = Some(d.create_network("clients", 214));
    d.links = Some(d.create_network("links", 215));
    d.write_config();
    for i in 0..N {
        d.start(i);
    }
    for i in 0..N {
        d.wait_health(i, "healthy", Duration::from_secs(60));
    }
    eprintln!(
        "image built, 4 DPDK containers healthy after {:?}",
        t0.elapsed()
    );

    for i in 0..N {
        d.check_interfaces(i);
        let logs = docker_logs(d.name(i), None);
        assert!(
            logs.contains("starting DPDK"),
            "replica {i} runs its links on DPDK:\n{logs}"
        );
        let kb = d.hugetlb_kb(i);
        assert!(
            kb >= EAL_MEM_MB * 1024,
            "replica {i}'s EAL holds {kb} kB of hugepages, expected -m {EAL_MEM_MB} MiB:\n{logs}"
        );
    }
    // The EALs took their pages from the reserve.
    let free_running = meminfo("HugePages_Free");
    eprintln!(
        "HugePages_Free: {free_before} before, {free_reserved} reserved, {free_running} with 4 replicas running \
         (HugetlbPages per replica: {:?} kB)",
        (0..N).map(|i| d.hugetlb_kb(i)).collect::<Vec<_>>()
    );
    assert!(
        free_reserved - free_running >= N as u64 * PAGES_PER_REPLICA,
        "HugePages_Free dropped by {} pages only, 4 EALs with -m {EAL_MEM_MB} take {}",
        free_reserved - free_running,
        N as u64 * PAGES_PER_REPLICA
    );

    // etcdctl on the host against the containers' client addresses.
    let all = d.endpoints(0..N).join(",");
    ok_etcdctl(&all, &["put", "c/hello", "world"]);
    for i in 0..N {
        let v = ok_etcdctl(&d.endpoint(i), &["get", "c/hello", "--print-value-only"]);
        assert_eq!(v.trim(), "world", "replica {i}");
    }

    // SIGKILL of the leader's container: its pages come back, and the
    // others move to a new regency and serve writes.
    let leader = d.leader(&[0, 1, 2, 3], Duration::from_secs(10));
    let others: Vec<usize> = (0..N).filter(|&i| i != leader).collect();
    let regency = d.field(others[0], "regency").unwrap();
    let held = meminfo("HugePages_Free");
    let cut = Instant::now();
    ok_docker(&["kill", "--signal", "KILL", d.name(leader)]);
    let some = d.endpoints(others.iter().copied()).join(",");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out) = etcdctl(&some, &["put", "kill/first", "x"], None);
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no write through the others after the leader's SIGKILL: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "leader {leader} killed: a write went through the others after {:?}",
        cut.elapsed()
    );
    let new_leader = d.leader(&others, Duration::from_secs(10));
    assert_ne!(new_leader, leader);
    assert!(d.field(others[0], "regency").unwrap() > regency);
    for k in 0..20 {
        ok_etcdctl(&some, &["put", &format!("kill/{k}"), &k.to_string()]);
    }
    let freed = d.wait_free_pages(
        "back by the killed replica's pages",
        |f| f >= held + PAGES_PER_REPLICA,
        Duration::from_secs(10),
    );
    eprintln!("HugePages_Free {held} -> {freed} after the SIGKILL");

    // Restarted (same container; its data on a tmpfs is gone): it
    // catches up by state transfer.
    ok_docker(&["start", d.name(leader)]);
    d.wait_health(leader, "healthy", Duration::from_secs(60));
    ok_etcdctl(&some, &["put", "kill/after", "y"]);
    let rev = d.wait_converged(Duration::from_secs(60));
    let keys = ok_etcdctl(
        &d.endpoint(leader),
        &["get", "--prefix", "kill/", "--keys-only"],
    );
    assert_eq!(keys.lines().filter(|l| !l.is_empty()).count(), 22, "{keys}");
    let kb = d.hugetlb_kb(leader);
    assert!(kb >= EAL_MEM_MB * 1024, "restarted replica holds {kb} kB");
    eprintln!(
        "old leader {leader} restarted and caught up to revision {rev} (HugePages_Free {}); done in {:?}",
        meminfo("HugePages_Free"),
        t0.elapsed()
    );
}
