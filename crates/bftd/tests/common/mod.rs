#![allow(dead_code)]
//! A real bftd cluster for process-level tests: one `bftd run` child per
//! replica on 127.0.0.1 with free ports, killed by PID when dropped.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bftd::config::{ClusterConfig, Durability, PinCores, ReplicaEntry};

pub mod docker;

pub const BFTD: &str = env!("CARGO_BIN_EXE_bftd");

/// Loopback ports for test replicas, `k` distinct ones.
///
/// Taken below the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`): a port handed out by
/// `bind(0)` and released can be taken as the source port of any outgoing
/// connection (a replica link, etcdctl) before the replica binds it, or
/// while a killed replica is down, and the replica then exits with "Address
/// already in use" (CI flake of
/// `auto_compaction_in_periodic_mode_compacts_to_the_revision_of_one_retention_ago`).
/// A process-wide counter keeps parallel tests apart; a bind check skips
/// ports another process holds. Falls back to `bind(0)` when the ephemeral
/// range starts too low to leave room.
pub fn free_ports(k: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_lo: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    const LO: u32 = 10_000;
    if ephemeral_lo < LO + 2_000 {
        let ls: Vec<TcpListener> = (0..k)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind port 0"))
            .collect();
        return ls.iter().map(|l| l.local_addr().unwrap().port()).collect();
    }
    let span = ephemeral_lo - LO;
    let base = std::process::id().wrapping_mul(7919) % span;
    let mut out = Vec::with_capacity(k);
    for _ in 0..span {
        if out.len() == k {
            break;
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LO + (base + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            out.push(port);
        }
    }
    assert_eq!(
        out.len(),
        k,
        "no {k} free loopback ports in {LO}..{ephemeral_lo}"
    );
    out
}

pub struct Cluster {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub config: ClusterConfig,
    pub children: Vec<Option<Child>>,
    /// Replicas run with `--fault-injection`.
    pub fault_injection: bool,
    /// Replicas run in these network namespaces (one each), if any.
    pub netns: Option<Netns>,
}

/// How to build a test cluster.
pub struct Opts {
    pub n: usize,
    pub durability: Durability,
    pub fault_injection: bool,
    /// Each replica in its own network namespace on a bridge (needs root).
    pub netns: bool,
    /// Short timeouts so fault tests stay quick.
    pub fast_timeouts: bool,
    /// `[protocol] quota_backend_bytes`; `None` keeps the default (2 GiB).
    pub quota_backend_bytes: Option<u64>,
    /// Replica links over DPDK (`io = "dpdk"`, a `bftd --features dpdk`
    /// build): each replica's namespace gets a second interface, `dp0`, on
    /// a second bridge, driven by `net_af_packet` without hugepages; client
    /// and status traffic stay on the kernel's interface. Needs `netns`.
    pub dpdk: bool,
}

impl Opts {
    pub fn new(n: usize) -> Self {
        Self {
            n,
            durability: Durability::Fsync,
            fault_injection: false,
            netns: false,
            fast_timeouts: true,
            quota_backend_bytes: None,
            dpdk: false,
        }
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Cluster {
    /// Writes a config for `n` replicas with fresh keys and starts them all.
    pub fn start(name: &str, n: usize, durability: Durability) -> Self {
        Self::start_with(
            name,
            Opts {
                durability,
                fast_timeouts: false,
                ..Opts::new(n)
            },
        )
    }

    /// Like [`Cluster::start`], with options.
    pub fn start_with(name: &str, o: Opts) -> Self {
        Self::start_configured(name, o, |_| {})
    }

    /// Like [`Cluster::start_with`]; `edit` changes the config (replicas
    /// already listed, `base_dir` set) before it is written.
    pub fn start_configured(name: &str, o: Opts, edit: impl FnOnce(&mut ClusterConfig)) -> Self {
        let n = o.n;
        let dir = std::env::temp_dir().join(format!("bftd-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut cfg = ClusterConfig::default_template();
        cfg.storage.durability = o.durability;
        cfg.dataplane.pin_cores = PinCores::Off;
        if o.fast_timeouts {
            cfg.protocol.request_timeout_ms = 300;
            cfg.protocol.sync_timeout_ms = 500;
            cfg.protocol.checkpoint_period = 64;
        }
        if let Some(q) = o.quota_backend_bytes {
            cfg.protocol.quota_backend_bytes = q;
        }
        cfg.base_dir = dir.clone();
        let netns = o.netns.then(|| Netns::create(name, n));
        assert!(!o.dpdk || o.netns, "DPDK test clusters run in namespaces");
        if o.dpdk {
            let ns = netns.as_ref().expect("checked above");
            for i in 0..n as u16 {
                ns.add_dpdk_port(i);
            }
            cfg.dataplane.io = "dpdk".into();
            cfg.dpdk = Some(bftd::config::Dpdk {
                eal_args: ["--no-huge", "--no-pci", "--no-shconf", "-m", "256"]
                    .into_iter()
                    .chain(["--log-level=error"])
                    .map(String::from)
                    .collect(),
                port: "net_af_packet0".into(),
                ..Default::default()
            });
        }
        let ports = free_ports(3 * n);
        for i in 0..n as u16 {
            let key = wire::SecretKey::generate();
            bftd::config::write_secret(&dir.join(format!("keys/replica-{i}.key")), &key).unwrap();
            let (client_addr, replica_addr, http_addr) = match &netns {
                Some(ns) => {
                    let ip = ns.ip(i);
                    (
                        SocketAddr::new(ip, 2379),
                        SocketAddr::new(ip, 2380),
                        SocketAddr::new(ip, 2381),
                    )
                }
                None => {
                    let p = |k: usize| ports[3 * i as usize + k];
                    (addr(p(0)), addr(p(1)), addr(p(2)))
                }
            };
            let (replica_addr, dpdk_eal_args) = match &netns {
                Some(ns) if o.dpdk => (
                    SocketAddr::new(ns.dpdk_ip(i), 2380),
                    vec![
                        format!("--vdev=net_af_packet0,iface={}", Netns::DPDK_IFACE),
                        format!("--file-prefix=bftd{}r{i}", std::process::id()),
                    ],
                ),
                _ => (replica_addr, Vec::new()),
            };
            cfg.replicas.push(ReplicaEntry {
                id: i,
                public_key: key.public().to_hex(),
                client_addr,
                client_plain_addr: None,
                replica_addr,
                http_addr,
                key_file: None,
                dpdk_eal_args,
            });
        }
        edit(&mut cfg);
        cfg.validate().unwrap();
        let config_path = dir.join("bftd.toml");
        std::fs::write(&config_path, cfg.to_toml()).unwrap();
        let config = ClusterConfig::load(&config_path).unwrap();
        let mut c = Cluster {
            dir,
            config_path,
            config,
            children: (0..n).map(|_| None).collect(),
            fault_injection: o.fault_injection,
            netns,
        };
        for i in 0..n as u16 {
            c.start_replica(i);
        }
        for i in 0..n as u16 {
            c.wait_serving(i, Duration::from_secs(30));
        }
        c
    }

    pub fn n(&self) -> usize {
        self.config.n()
    }

    pub fn client_addr(&self, i: u16) -> SocketAddr {
        self.config.replicas[i as usize].client_addr
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.config
            .replicas
            .iter()
            .map(|r| r.client_addr.to_string())
            .collect()
    }

    pub fn log_path(&self, i: u16) -> PathBuf {
        self.dir.join(format!("replica-{i}.log"))
    }

    pub fn start_replica(&mut self, i: u16) {
        self.start_replica_with_env(i, &[]);
    }

    /// [`Cluster::start_replica`] with extra environment variables.
    pub fn start_replica_with_env(&mut self, i: u16, env: &[(&str, &str)]) {
        assert!(
            self.children[i as usize].is_none(),
            "replica {i} already running"
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .unwrap();
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.name(i), BFTD]);
                c
            }
            None => Command::new(BFTD),
        };
        cmd.args(["run", "--config"])
            .arg(&self.config_path)
            .args(["--id", &i.to_string()]);
        if self.fault_injection {
            cmd.arg("--fault-injection");
        }
        let child = cmd
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn bftd");
        self.children[i as usize] = Some(child);
    }

    /// Waits until replica `i` accepts client connections.
    pub fn wait_serving(&mut self, i: u16, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let a = self.client_addr(i);
        while TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_err() {
            if let Some(Some(c)) = self.children.get_mut(i as usize) {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("replica {i} exited ({st}):\n{}", self.log_tail(i));
                }
            }
            assert!(
                Instant::now() < deadline,
                "replica {i} not serving:\n{}",
                self.log_tail(i)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_tail(&self, i: u16) -> String {
        let s = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
        s.lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGKILLs replica `i` and reaps it.
    pub fn kill(&mut self, i: u16) {
        if let Some(mut c) = self.children[i as usize].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// GET `path` on replica `i`'s HTTP endpoint; the body.
    pub fn http_get(&self, i: u16, path: &str) -> String {
        http_get(self.config.replicas[i as usize].http_addr, path)
    }

    /// `/status` of replica `i`.
    pub fn status(&self, i: u16) -> serde_json::Value {
        serde_json::from_str(&self.http_get(i, "/status")).expect("status JSON")
    }

    /// The value of a Prometheus sample line starting with `prefix`.
    pub fn metric(&self, i: u16, prefix: &str) -> u64 {
        let text = self.http_get(i, "/metrics");
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
            .unwrap_or_else(|| panic!("no metric {prefix} in:\n{text}"))
    }

    /// Waits until every running replica reports the same revision and
    /// state digest; returns them.
    /// `/status` of every running replica, by id.
    fn running_status(&self) -> Vec<(u16, serde_json::Value)> {
        (0..self.n() as u16)
            .filter(|i| self.children[*i as usize].is_some())
            .map(|i| (i, self.status(i)))
            .collect()
    }

    /// Waits until no running replica has a request pending or one of its
    /// own clients' requests outstanding (`/status` `pending_requests`,
    /// `proxy_outstanding`): every write sent so far has been executed.
    pub fn wait_settled(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let busy: Vec<(u16, u64, u64)> = self
                .running_status()
                .into_iter()
                .map(|(i, s)| {
                    (
                        i,
                        s["pending_requests"].as_u64().unwrap(),
                        s["proxy_outstanding"].as_u64().unwrap(),
                    )
                })
                .filter(|&(_, pending, outstanding)| pending + outstanding > 0)
                .collect();
            if busy.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "requests still pending or outstanding (replica, pending, outstanding): {busy:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_converged(&self, timeout: Duration) -> (u64, String) {
        let deadline = Instant::now() + timeout;
        loop {
            let states: Vec<(u64, String)> = self
                .running_status()
                .into_iter()
                .map(|(_, s)| {
                    (
                        s["revision"].as_u64().unwrap(),
                        s["state_digest"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            if states.windows(2).all(|w| w[0] == w[1]) {
                return states[0].clone();
            }
            assert!(
                Instant::now() < deadline,
                "replicas did not converge: {states:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Cluster {
    /// Cuts (or, with an empty list, heals) replica `i`'s links to `peers`
    /// through its fault switch (needs `fault_injection`).
    pub fn block(&self, i: u16, peers: &[u16]) {
        let list: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
        let out = http_request(
            self.config.replicas[i as usize].http_addr,
            "PUT",
            &format!("/debug/blocked?peers={}", list.join(",")),
        );
        assert!(out.starts_with("ok"), "fault switch of replica {i}: {out}");
    }

    /// Cuts every link between the replicas in `a` and those in `b`.
    pub fn partition(&self, a: &[u16], b: &[u16]) {
        for &i in a {
            self.block(i, b);
        }
        for &j in b {
            self.block(j, a);
        }
    }

    /// Heals every fault-switch partition.
    pub fn heal_all(&self) {
        for i in 0..self.n() as u16 {
            if self.children[i as usize].is_some() {
                self.block(i, &[]);
            }
        }
    }

    /// The leader every running replica agrees on, waiting up to `timeout`
    /// for them to agree.
    pub fn leader(&self, timeout: Duration) -> u16 {
        let deadline = Instant::now() + timeout;
        loop {
            let leaders: Vec<u64> = (0..self.n() as u16)
                .filter(|i| self.children[*i as usize].is_some())
                .map(|i| self.status(i)["leader"].as_u64().unwrap())
                .collect();
            if leaders.windows(2).all(|w| w[0] == w[1]) {
                return leaders[0] as u16;
            }
            assert!(
                Instant::now() < deadline,
                "replicas disagree on the leader: {leaders:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i as u16);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A minimal HTTP/1.1 GET (the endpoint is ours; keeps tests free of an
/// HTTP client dependency).
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    http_request(addr, "GET", path)
}

/// A minimal HTTP/1.1 request without a body; returns the response body.
pub fn http_request(addr: SocketAddr, method: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect HTTP");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    let i = body.find("\r\n\r\n").expect("HTTP response");
    let (head, rest) = body.split_at(i + 4);
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let Some(i) = s.find("\r\n") else { break };
        let Ok(len) = usize::from_str_radix(s[..i].trim(), 16) else {
            break;
        };
        if len == 0 {
            break;
        }
        out.push_str(&s[i + 2..i + 2 + len]);
        s = &s[i + 2 + len + 2..];
    }
    out
}

/// Runs etcdctl (Debian's etcd-client) against `endpoints`; (success, stdout+stderr).
pub fn etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("etcdctl is installed (scripts/test.sh installs etcd-client)");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A long-running etcdctl (watch, lock, elect) whose stdout is read line by
/// line. Killed when dropped.
pub struct EtcdctlChild {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl EtcdctlChild {
    /// Starts `etcdctl ARGS` against `endpoint`.
    pub fn spawn(endpoint: &str, args: &[&str]) -> Self {
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcdctl is installed (scripts/test.sh installs etcd-client)");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The next line printed, if one comes within `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// SIGINT, as Ctrl-C: etcdctl closes its session (revokes its lease).
    pub fn interrupt(&mut self) {
        // SAFETY: signalling a child we spawned and have not reaped.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let _ = self.child.wait();
    }
}

impl Drop for EtcdctlChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `etcdctl watch ARGS` against `endpoint` until it printed `lines`
/// lines (or `timeout` passed), then kills it; returns the lines.
pub fn etcdctl_watch(
    endpoint: &str,
    args: &[&str],
    lines: usize,
    timeout: Duration,
) -> Vec<String> {
    let mut argv = vec!["watch"];
    argv.extend_from_slice(args);
    let child = EtcdctlChild::spawn(endpoint, &argv);
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < lines {
        match child.next_line(deadline.saturating_duration_since(Instant::now())) {
            Some(l) => out.push(l),
            None => break,
        }
    }
    out
}

pub fn ok_etcdctl(endpoints: &str, args: &[&str]) -> String {
    let (ok, out) = etcdctl(endpoints, args, None);
    assert!(ok, "etcdctl {args:?} failed: {out}");
    out
}

pub fn tmp(path: &Path) -> &Path {
    path
}

/// Network namespaces for a cluster: one per replica, each joined by a
/// veth pair to a bridge that lives in a "switch" namespace of its own
/// (so the host's firewall, e.g. Docker's `FORWARD DROP`, never sees the
/// traffic), plus one veth from the root namespace (where the test and its
/// clients run) to the same bridge. Everything is created by the test and
/// deleted when dropped. Needs root.
pub struct Netns {
    tag: String,
    n: usize,
    subnet: u8,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn ns_ip(ns: &str, args: &[&str]) -> Result<(), String> {
    let mut a = vec!["netns", "exec", ns, "ip"];
    a.extend_from_slice(args);
    ip(&a)
}

impl Netns {
    /// True when namespaces can be made here (root, `ip` present).
    pub fn available() -> bool {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        root && Command::new("ip").arg("-V").output().is_ok()
    }

    pub fn create(name: &str, n: usize) -> Self {
        assert!(
            Self::available(),
            "network namespace tests need root and iproute2"
        );
        let pid = std::process::id();
        let tag = format!("b{}{}", pid % 100_000, &name[..1]);
        let subnet = 100 + (pid % 100) as u8;
        let ns = Netns { tag, n, subnet };
        ns.cleanup();
        let sw = ns.switch();
        ip(&["netns", "add", &sw]).unwrap();
        ns_ip(&sw, &["link", "add", "br0", "type", "bridge"]).unwrap();
        ns_ip(&sw, &["link", "set", "br0", "up"]).unwrap();
        // Each replica: veth <ns end> in its namespace, <switch end> on the bridge.
        let plug = |inner: &str, port: &str| {
            ip(&["link", "set", port, "netns", &sw]).unwrap();
            ns_ip(&sw, &["link", "set", port, "master", "br0"]).unwrap();
            ns_ip(&sw, &["link", "set", port, "up"]).unwrap();
            let _ = inner;
        };
        for i in 0..n as u16 {
            let (name, inner, port) = (ns.name(i), ns.veth_ns(i), ns.veth_switch(i));
            ip(&["netns", "add", &name]).unwrap();
            ip(&["link", "add", &inner, "type", "veth", "peer", "name", &port]).unwrap();
            ip(&["link", "set", &inner, "netns", &name]).unwrap();
            plug(&inner, &port);
            ns_ip(
                &name,
                &[
                    "addr",
                    "add",
                    &format!("10.{subnet}.0.{}/24", i + 1),
                    "dev",
                    &inner,
                ],
            )
            .unwrap();
            ns_ip(&name, &["link", "set", &inner, "up"]).unwrap();
            ns_ip(&name, &["link", "set", "lo", "up"]).unwrap();
        }
        let (root, port) = (ns.veth_root(), format!("{}rs", ns.tag));
        ip(&["link", "add", &root, "type", "veth", "peer", "name", &port]).unwrap();
        plug(&root, &port);
        ip(&[
            "addr",
            "add",
            &format!("10.{subnet}.0.254/24"),
            "dev",
            &root,
        ])
        .unwrap();
        ip(&["link", "set", &root, "up"]).unwrap();
        ns
    }

    pub fn name(&self, i: u16) -> String {
        format!("{}n{i}", self.tag)
    }
    fn switch(&self) -> String {
        format!("{}sw", self.tag)
    }
    fn veth_ns(&self, i: u16) -> String {
        format!("{}p{i}", self.tag)
    }
    fn veth_switch(&self, i: u16) -> String {
        format!("{}s{i}", self.tag)
    }
    fn veth_root(&self) -> String {
        format!("{}rt", self.tag)
    }
    pub fn ip(&self, i: u16) -> std::net::IpAddr {
        std::net::IpAddr::from([10, self.subnet, 0, i as u8 + 1])
    }

    /// The interface a DPDK replica drives in its namespace.
    pub const DPDK_IFACE: &'static str = "dp0";

    /// Replica `i`'s address on the DPDK network (answered by its DPDK
    /// port, unknown to its kernel).
    pub fn dpdk_ip(&self, i: u16) -> std::net::IpAddr {
        std::net::IpAddr::from([10, self.subnet, 1, i as u8 + 1])
    }

    /// Gives replica `i`'s namespace a second interface, [`Self::DPDK_IFACE`]
    /// (no kernel address), on a second bridge `br1` of the switch.
    pub fn add_dpdk_port(&self, i: u16) {
        let sw = self.switch();
        if i == 0 {
            ns_ip(&sw, &["link", "add", "br1", "type", "bridge"]).unwrap();
            ns_ip(&sw, &["link", "set", "br1", "up"]).unwrap();
        }
        let (inner, port) = (format!("{}d{i}", self.tag), format!("{}e{i}", self.tag));
        ip(&["link", "add", &inner, "type", "veth", "peer", "name", &port]).unwrap();
        ip(&["link", "set", &port, "netns", &sw]).unwrap();
        ns_ip(&sw, &["link", "set", &port, "master", "br1"]).unwrap();
        ns_ip(&sw, &["link", "set", &port, "up"]).unwrap();
        ip(&["link", "set", &inner, "netns", &self.name(i)]).unwrap();
        ns_ip(
            &self.name(i),
            &["link", "set", &inner, "name", Self::DPDK_IFACE],
        )
        .unwrap();
        ns_ip(&self.name(i), &["link", "set", Self::DPDK_IFACE, "up"]).unwrap();
    }

    /// Cuts replica `i` off from every other replica (both directions, by
    /// blackhole routes in each namespace); the root namespace (clients)
    /// still reaches it.
    pub fn isolate(&self, i: u16) {
        for j in (0..self.n as u16).filter(|&j| j != i) {
            ns_ip(
                &self.name(i),
                &["route", "add", "blackhole", &format!("{}/32", self.ip(j))],
            )
            .unwrap();
            ns_ip(
                &self.name(j),
                &["route", "add", "blackhole", &format!("{}/32", self.ip(i))],
            )
            .unwrap();
        }
    }

    /// Undoes [`Netns::isolate`].
    pub fn rejoin(&self, i: u16) {
        for j in (0..self.n as u16).filter(|&j| j != i) {
            let _ = ns_ip(
                &self.name(i),
                &["route", "del", "blackhole", &format!("{}/32", self.ip(j))],
            );
            let _ = ns_ip(
                &self.name(j),
                &["route", "del", "blackhole", &format!("{}/32", self.ip(i))],
            );
        }
    }

    fn cleanup(&self) {
        for i in 0..self.n as u16 {
            let _ = ip(&["netns", "del", &self.name(i)]);
        }
        let _ = ip(&["netns", "del", &self.switch()]);
        let _ = ip(&["link", "del", &self.veth_root()]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Closed-loop writers of unique keys, in the background, bounded in time
/// and count. Every acknowledged write is recorded with when it was acked.
pub struct Writers {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<WriterResults>>,
}

#[derive(Default, Debug)]
pub struct WriterResults {
    /// Per writer: (key, value, ack time).
    pub acked: Vec<Vec<(String, String, Instant)>>,
    pub errors: Vec<String>,
}

impl Writers {
    /// `k` writers spread over `endpoints`, writing `{prefix}/w{w}/{i}`.
    pub fn start(endpoints: Vec<String>, k: usize, prefix: &str, limit: Duration) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stop2, prefix) = (stop.clone(), prefix.to_string());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let deadline = Instant::now() + limit;
                let mut tasks = Vec::new();
                for w in 0..k {
                    let ep = endpoints[w % endpoints.len()].clone();
                    let (stop, prefix) = (stop2.clone(), prefix.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut acked = Vec::new();
                        let mut errors = Vec::new();
                        let Ok(mut client) = etcd_client::Client::connect([ep], None).await else {
                            return (acked, vec!["connect failed".to_string()]);
                        };
                        for i in 0..1_000_000u64 {
                            if stop.load(std::sync::atomic::Ordering::Relaxed)
                                || Instant::now() > deadline
                            {
                                break;
                            }
                            let (key, val) = (format!("{prefix}/w{w}/{i}"), i.to_string());
                            let put = client.put(key.clone(), val.clone(), None);
                            match tokio::time::timeout(Duration::from_secs(5), put).await {
                                Ok(Ok(_)) => acked.push((key, val, Instant::now())),
                                Ok(Err(e)) => errors.push(e.to_string()),
                                Err(_) => errors.push("timed out".into()),
                            }
                        }
                        (acked, errors)
                    }));
                }
                let mut r = WriterResults::default();
                for t in tasks {
                    let (a, e) = t.await.unwrap();
                    r.acked.push(a);
                    r.errors.extend(e);
                }
                r
            })
        });
        Writers {
            stop,
            thread: Some(thread),
        }
    }

    /// Waits for the writers to reach the time limit they were started
    /// with, then returns what they did.
    pub fn join(mut self) -> WriterResults {
        self.thread.take().unwrap().join().unwrap()
    }

    pub fn stop(mut self) -> WriterResults {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl WriterResults {
    pub fn total(&self) -> usize {
        self.acked.iter().map(Vec::len).sum()
    }

    /// The longest gap between consecutive acknowledgements of one writer,
    /// over all writers, among gaps that contain `t`.
    pub fn pause_around(&self, t: Instant) -> Duration {
        self.acked
            .iter()
            .flat_map(|a| {
                a.windows(2)
                    .filter(|w| w[0].2 <= t && t <= w[1].2)
                    .map(|w| w[1].2 - w[0].2)
            })
            .max()
            .unwrap_or_default()
    }

    /// Asserts every acknowledged write is readable (with its value)
    /// through `endpoint`.
    pub fn assert_none_lost(&self, endpoint: &str, prefix: &str) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let kvs: std::collections::HashMap<String, String> = rt.block_on(async {
            let mut c = etcd_client::Client::connect([endpoint], None)
                .await
                .unwrap();
            let r = c
                .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
                .await
                .expect("read back the writes");
            r.kvs()
                .iter()
                .map(|kv| {
                    (
                        kv.key_str().unwrap().to_string(),
                        kv.value_str().unwrap().to_string(),
                    )
                })
                .collect()
        });
        let mut lost = Vec::new();
        for (k, v, _) in self.acked.iter().flatten() {
            if kvs.get(k) != Some(v) {
                lost.push(k.clone());
            }
        }
        assert!(
            lost.is_empty(),
            "{} acknowledged writes lost, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
    }
}
