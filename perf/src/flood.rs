//! `flood`: the KmMR flood experiment (seeds/kmmr-paper.txt, Table 2 and
//! Fig. 9-10) on one machine.
//!
//! Each replica (bftd: 4 replicas, 10.77.0.1-4) or member (etcd: 3 members,
//! 10.77.0.11-13) runs in its own network namespace behind a veth pair on
//! one bridge (see [`crate::netns`]); the load client runs in the root
//! namespace, the flooder in namespace `bftdperf-fl` (10.77.0.200), confined
//! by a CPU cgroup. For each system, each victim role (a backup, then the
//! leader) and each flood (none; 65,495-byte UDP, 64-byte UDP, TCP SYN at
//! fractions of the flooder's calibrated maximum rate) one step measures a
//! closed-loop "0/0" workload: N clients put a 1-byte key with an empty
//! value through the non-victim endpoints.
//!
//! The flood targets the victim's consensus port (bftd: `replica_addr`;
//! etcd: the raft peer port 2380). The rate reported is what the flooder
//! put on the wire (its veth's counters) during the measurement window.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::runtime::Runtime;

use crate::bftd_cluster::{BftdCluster, BftdClusterConfig};
use crate::etcd_cluster::{EtcdCluster, EtcdClusterConfig};
use crate::flooder::{self, FloodKind, FloodSpec, FlooderCgroup};
use crate::kv_compare::System;
use crate::loadgen::{self, KeyShape, LoadgenConfig, LoadgenReport, Op, SplitMark};
use crate::netns::{self, NetHost, Topology};
use crate::placement::{self, Placement, Roles, Snapshot, REST_CPU, VICTIM_CPU};
use crate::procs::{ChildGuard, ScratchDir};
use crate::report;

const BFTD_BASE_PORT: u16 = 2379;
const BFTD_REPLICA_PORT_OFFSET: u16 = 10_000;
const ETCD_CLIENT_PORT: u16 = 2379;
const ETCD_PEER_PORT: u16 = 2380;
/// veth default; 65,495-byte datagrams leave the flooder as 45 fragments.
const MTU: usize = 1500;
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
const FLOODER_STOP_GRACE: Duration = Duration::from_secs(2);
/// The calibration flood's start-up time, left out of the measurement.
const CALIBRATE_SKIP: Duration = Duration::from_millis(300);
/// How often a step asks a non-victim replica (member) for its regency
/// (raft term) to time a leader change.
const CHANGE_POLL_INTERVAL: Duration = Duration::from_millis(50);
const CHANGE_POLL_TIMEOUT: Duration = Duration::from_millis(500);
const FLOODER_HOST: &str = "fl";
const SINK_HOST: &str = "sink";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum VictimRole {
    /// A backup (bftd) or follower (etcd).
    Backup,
    Leader,
}

impl VictimRole {
    pub fn name(self) -> &'static str {
        match self {
            VictimRole::Backup => "backup",
            VictimRole::Leader => "leader",
        }
    }
}

#[derive(Clone, Debug)]
pub struct FloodConfig {
    pub systems: Vec<System>,
    pub etcd_bin: PathBuf,
    pub bftd_bin: PathBuf,
    pub durability: String,
    pub clients: u32,
    pub warmup: Duration,
    pub measure: Duration,
    /// Fractions of the calibrated maximum, each > 0 and <= 1 (1 = as fast
    /// as the flooder can). The no-flood step is always measured first.
    pub fractions: Vec<f64>,
    pub kinds: Vec<FloodKind>,
    pub roles: Vec<VictimRole>,
    /// The flooder's CPU quota, percent of one core.
    pub flooder_cpu_pct: u32,
    /// Split: the victim and the flooder on CPU 1, the rest on CPU 0.
    pub placement: Placement,
    pub calibrate: Duration,
    /// Pause after each step (the victim recovers before the next).
    pub settle: Duration,
    pub op_timeout: Duration,
    pub ready_timeout: Duration,
    pub seed: u64,
    pub out_dir: PathBuf,
    /// This binary (it provides `flood-send`).
    pub self_exe: PathBuf,
}

/// One measured step.
#[derive(Clone, Debug)]
pub struct StepRow {
    pub system: System,
    pub role: VictimRole,
    pub victim: usize,
    /// None: no flood.
    pub kind: Option<FloodKind>,
    /// Fraction of the calibrated maximum (0 = no flood).
    pub fraction: f64,
    /// Requested datagrams/SYNs per second (0 = unlimited).
    pub target_pps: u64,
    /// Datagrams (or SYNs) per second the flooder put on the wire.
    pub rate_pps: f64,
    pub rate_mbps: f64,
    pub report: LoadgenReport,
    pub leader_before: usize,
    pub leader_after: Option<usize>,
    pub rss_mb_before: Option<f64>,
    pub rss_mb_during: Option<f64>,
    pub rss_mb_after: Option<f64>,
    /// CPU time and softirqs from the flood's start to the end of the load
    /// (None: could not be read).
    pub usage: Option<Snapshot>,
    /// (threads of the victim, how many were allowed off its CPU) at the
    /// end of the load; None with placement none.
    pub victim_threads: Option<(usize, usize)>,
    /// The leader change seen from a non-victim during the step (None: its
    /// status could not be read before the flood).
    pub change: Option<ChangeReport>,
}

/// A step's view of leadership, from a non-victim replica (member).
#[derive(Clone, Debug)]
pub struct ChangeReport {
    /// Which node was asked.
    pub observer: usize,
    /// bftd: regency; etcd: raft term. Before the flood started.
    pub epoch_before: u64,
    /// The highest seen during the step.
    pub epoch_last: u64,
    /// Time from the flood's start to the first answer with a higher
    /// epoch (None: no change).
    pub first_change: Option<Duration>,
    /// bftd: the leader's index; etcd: its member id. Before / last seen.
    pub leader_before: u64,
    pub leader_last: u64,
    pub polls: u64,
    pub poll_errors: u64,
}

/// Flooder maximum, per kind, measured against the sink host.
#[derive(Clone, Debug)]
pub struct Calibration {
    pub kind: FloodKind,
    pub max_pps: f64,
    pub max_mbps: f64,
}

/// Builds the network, calibrates the flooder, runs every system, writes
/// CSV, Markdown and the SVG plot, and tears everything down.
pub fn run(runtime: &Runtime, config: &FloodConfig) -> Result<Vec<StepRow>> {
    validate(config)?;
    let log_dir = config.out_dir.join("logs").join("flood");
    if log_dir.exists() {
        std::fs::remove_dir_all(&log_dir)
            .with_context(|| format!("remove {}", log_dir.display()))?;
    }
    std::fs::create_dir_all(&log_dir).with_context(|| format!("create {}", log_dir.display()))?;
    crate::kv_compare::remove_stale_scratch_dirs(&config.out_dir);
    let scratch = ScratchDir::create(
        config
            .out_dir
            .join(format!("scratch-{}", std::process::id())),
    )?;
    if config.placement == Placement::Split {
        placement::check_split_possible()?;
        // Every thread of the harness (the load generator), and so every
        // server it spawns from now on, starts on the rest's CPU; each step
        // moves its victim.
        placement::pin_self(REST_CPU).context("pin the harness")?;
    }
    let topology = Topology::create(&hosts()).context("create the network")?;
    let cgroup = FlooderCgroup::create(config.flooder_cpu_pct)?;
    println!(
        "network: bridge {} {}, {} namespaces; flooder confined to {} % of a core ({})",
        netns::BRIDGE,
        netns::BRIDGE_IP,
        topology.hosts().len(),
        config.flooder_cpu_pct,
        cgroup.path().display()
    );

    let calibrations = calibrate(config, &topology, &cgroup, &log_dir)?;
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for &system in &config.systems {
        let outcome = run_system(
            runtime,
            config,
            system,
            &topology,
            &cgroup,
            &calibrations,
            scratch.path(),
            &log_dir,
            &mut rows,
        );
        if let Err(e) = outcome {
            eprintln!("{}: {e:#}", system_label(system));
            failures.push(format!("{}: {e:#}", system_label(system)));
        }
    }
    drop(cgroup);
    drop(topology);
    drop(scratch);

    write_outputs(config, &calibrations, &rows, &failures)?;
    anyhow::ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(rows)
}

fn validate(config: &FloodConfig) -> Result<()> {
    anyhow::ensure!(!config.systems.is_empty(), "nothing to run");
    anyhow::ensure!(config.clients > 0, "--clients must be > 0");
    anyhow::ensure!(!config.measure.is_zero(), "--measure-s must be > 0");
    anyhow::ensure!(!config.roles.is_empty(), "no victim role");
    for &fraction in &config.fractions {
        anyhow::ensure!(
            fraction > 0.0 && fraction <= 1.0,
            "rate fractions must be in (0, 1], got {fraction}"
        );
    }
    // SAFETY: geteuid has no preconditions.
    anyhow::ensure!(
        unsafe { libc::geteuid() } == 0,
        "flood needs root (network namespaces, cgroups, raw sockets)"
    );
    if config.systems.contains(&System::Bftd) {
        crate::bftd_demo::BftdDemo::check_binary(&config.bftd_bin)?;
    }
    anyhow::ensure!(
        config.self_exe.is_file(),
        "cannot find this binary at {}",
        config.self_exe.display()
    );
    if config.kinds.contains(&FloodKind::Syn) {
        anyhow::ensure!(
            Path::new("/usr/sbin/hping3").exists(),
            "the tcp-syn flood needs hping3 (apt-get install hping3)"
        );
    }
    Ok(())
}

/// bftd replicas r0-r3 at .1-.4, etcd members e1-e3 at .11-.13, the
/// flooder at .200 and an empty calibration target at .201.
fn hosts() -> Vec<NetHost> {
    let mut hosts = Vec::new();
    for i in 0..4u8 {
        hosts.push(NetHost::new(
            &format!("r{i}"),
            Ipv4Addr::new(10, 77, 0, i + 1),
        ));
    }
    for i in 1..=3u8 {
        hosts.push(NetHost::new(
            &format!("e{i}"),
            Ipv4Addr::new(10, 77, 0, 10 + i),
        ));
    }
    hosts.push(NetHost::new(FLOODER_HOST, Ipv4Addr::new(10, 77, 0, 200)));
    hosts.push(NetHost::new(SINK_HOST, Ipv4Addr::new(10, 77, 0, 201)));
    hosts
}

fn system_label(system: System) -> &'static str {
    crate::failover::system_name(system)
}

/// The flooder's maximum rate of each kind (as fast as it can, confined),
/// against a namespace where nothing listens.
fn calibrate(
    config: &FloodConfig,
    topology: &Topology,
    cgroup: &FlooderCgroup,
    log_dir: &Path,
) -> Result<Vec<Calibration>> {
    let sink = topology.host(SINK_HOST);
    let flooder = topology.host(FLOODER_HOST);
    let mut calibrations = Vec::new();
    for &kind in &config.kinds {
        let spec = FloodSpec {
            kind,
            target: SocketAddrV4::new(sink.ip, ETCD_PEER_PORT),
            pps: 0,
            duration: CALIBRATE_SKIP + config.calibrate + Duration::from_secs(2),
        };
        let log_path = log_dir.join(format!("calibrate-{}.log", kind.name()));
        let mut process = flooder::spawn(
            &spec,
            &flooder.netns(),
            cgroup,
            flooder_cpu(config),
            &config.self_exe,
            &log_path,
        )?;
        std::thread::sleep(CALIBRATE_SKIP);
        let start = (Instant::now(), netns::link_counters(&flooder.host_veth())?);
        std::thread::sleep(config.calibrate);
        let end = (Instant::now(), netns::link_counters(&flooder.host_veth())?);
        process.ensure_running()?;
        process.stop(FLOODER_STOP_GRACE);
        let (pps, mbps) = wire_rate(kind, start, end);
        anyhow::ensure!(
            pps > 0.0,
            "the {} flooder sent nothing (log {})",
            kind.name(),
            log_path.display()
        );
        println!(
            "calibration: {} at most {:.0}/s ({:.0} Mbit/s on the wire)",
            kind.name(),
            pps,
            mbps
        );
        calibrations.push(Calibration {
            kind,
            max_pps: pps,
            max_mbps: mbps,
        });
    }
    let (periods, throttled_ns) = cgroup.throttled();
    println!(
        "calibration: flooder cgroup throttled {periods} times, {:.1} s in total",
        throttled_ns as f64 / 1e9
    );
    Ok(calibrations)
}

fn flooder_cpu(config: &FloodConfig) -> Option<usize> {
    (config.placement == Placement::Split).then_some(VICTIM_CPU)
}

/// (datagrams or SYNs per second, Mbit/s) between two samples of the
/// flooder's veth (root side: its rx is what the flooder sent).
fn wire_rate(
    kind: FloodKind,
    start: (Instant, netns::LinkCounters),
    end: (Instant, netns::LinkCounters),
) -> (f64, f64) {
    let seconds = end.0.duration_since(start.0).as_secs_f64().max(1e-6);
    let packets = end.1.rx_packets.saturating_sub(start.1.rx_packets);
    let bytes = end.1.rx_bytes.saturating_sub(start.1.rx_bytes);
    let datagrams = packets as f64 / kind.packets_per_datagram(MTU) as f64;
    (datagrams / seconds, bytes as f64 * 8.0 / 1e6 / seconds)
}

/// Either cluster, in the namespaces.
enum Cluster {
    Etcd(EtcdCluster),
    Bftd(BftdCluster),
}

impl Cluster {
    fn start(
        config: &FloodConfig,
        system: System,
        topology: &Topology,
        scratch: &Path,
        log_dir: &Path,
    ) -> Result<Self> {
        Ok(match system {
            System::Etcd => {
                let data_root = scratch.join("etcd");
                std::fs::create_dir_all(&data_root)?;
                Cluster::Etcd(EtcdCluster::start(EtcdClusterConfig {
                    etcd_bin: config.etcd_bin.clone(),
                    members: 3,
                    base_port: ETCD_CLIENT_PORT,
                    data_root,
                    log_dir: log_dir.to_path_buf(),
                    cluster_token: format!("bftd-perf-flood-{}", std::process::id()),
                    hosts: (1..=3)
                        .map(|i| topology.host(&format!("e{i}")).clone())
                        .collect(),
                    tls: None,
                })?)
            }
            System::Bftd => Cluster::Bftd(BftdCluster::start(&BftdClusterConfig {
                bftd_bin: config.bftd_bin.clone(),
                replicas: 4,
                base_port: BFTD_BASE_PORT,
                durability: config.durability.clone(),
                dir: scratch.join("bftd"),
                log_dir: log_dir.to_path_buf(),
                log_prefix: "bftd".into(),
                hosts: (0..4)
                    .map(|i| topology.host(&format!("r{i}")).clone())
                    .collect(),
                tls: false,
            })?),
        })
    }

    fn host_name(&self, index: usize) -> String {
        match self {
            Cluster::Etcd(_) => format!("e{}", index + 1),
            Cluster::Bftd(_) => format!("r{index}"),
        }
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        match self {
            Cluster::Etcd(c) => c.wait_ready(timeout).await,
            Cluster::Bftd(c) => c.wait_ready(timeout).await,
        }
    }

    async fn leader(&self) -> Result<usize> {
        match self {
            Cluster::Etcd(c) => c.leader_index(STATUS_TIMEOUT).await,
            Cluster::Bftd(c) => c.leader(STATUS_TIMEOUT).await.map(|(leader, _)| leader),
        }
    }

    fn size(&self) -> usize {
        self.client_endpoints().len()
    }

    fn client_endpoints(&self) -> Vec<String> {
        match self {
            Cluster::Etcd(c) => c.client_endpoints(),
            Cluster::Bftd(c) => c.client_endpoints(),
        }
    }

    /// The victim's consensus listener.
    fn consensus_addr(&self, index: usize, topology: &Topology) -> SocketAddrV4 {
        let ip = topology.host(&self.host_name(index)).ip;
        match self {
            Cluster::Etcd(_) => SocketAddrV4::new(ip, ETCD_PEER_PORT),
            Cluster::Bftd(_) => {
                SocketAddrV4::new(ip, BFTD_BASE_PORT + BFTD_REPLICA_PORT_OFFSET + index as u16)
            }
        }
    }

    fn pid(&self, index: usize) -> Option<u32> {
        match self {
            Cluster::Etcd(c) => c.pid(index),
            Cluster::Bftd(c) => c.pid(index),
        }
    }

    /// Where a step asks node `index` for its leader and epoch.
    fn observer(&self, index: usize) -> Observer {
        match self {
            Cluster::Etcd(c) => Observer::Etcd(c.client_endpoints()[index].clone()),
            Cluster::Bftd(c) => Observer::Bftd(c.replicas()[index].http_addr.clone()),
        }
    }

    fn ensure_running(&mut self) -> Result<()> {
        match self {
            Cluster::Etcd(c) => c.ensure_running(),
            Cluster::Bftd(c) => c.ensure_running(),
        }
    }

    fn stop(self) -> Result<()> {
        match self {
            Cluster::Etcd(c) => c.stop(),
            Cluster::Bftd(c) => {
                c.stop();
                Ok(())
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_system(
    runtime: &Runtime,
    config: &FloodConfig,
    system: System,
    topology: &Topology,
    cgroup: &FlooderCgroup,
    calibrations: &[Calibration],
    scratch: &Path,
    log_dir: &Path,
    rows: &mut Vec<StepRow>,
) -> Result<()> {
    let mut cluster = Cluster::start(config, system, topology, scratch, log_dir)?;
    println!(
        "{}: {} nodes at {}",
        system_label(system),
        cluster.size(),
        cluster.client_endpoints().join(",")
    );
    let outcome = (|| -> Result<()> {
        runtime.block_on(cluster.wait_ready(config.ready_timeout))?;
        // A backup stays the same victim across steps unless it becomes
        // leader; the leader victim is whoever leads when a step starts.
        let mut backup: Option<usize> = None;
        for &role in &config.roles {
            let mut steps: Vec<(Option<FloodKind>, f64)> = vec![(None, 0.0)];
            for &kind in &config.kinds {
                for &fraction in &config.fractions {
                    steps.push((Some(kind), fraction));
                }
            }
            for (kind, fraction) in steps {
                cluster.ensure_running()?;
                let leader = runtime.block_on(cluster.leader())?;
                let victim = match role {
                    VictimRole::Leader => leader,
                    VictimRole::Backup => {
                        let pick = backup
                            .filter(|&b| b != leader)
                            .unwrap_or((leader + 1) % cluster.size());
                        backup = Some(pick);
                        pick
                    }
                };
                let calibration = kind.map(|k| {
                    calibrations
                        .iter()
                        .find(|c| c.kind == k)
                        .expect("every kind is calibrated")
                });
                let row = run_step(
                    runtime,
                    config,
                    system,
                    &mut cluster,
                    topology,
                    cgroup,
                    log_dir,
                    StepPlan {
                        role,
                        victim,
                        leader,
                        kind,
                        fraction,
                        max_pps: calibration.map_or(0.0, |c| c.max_pps),
                    },
                )?;
                print_step(&row);
                rows.push(row);
            }
        }
        Ok(())
    })();
    let stopped = cluster.stop();
    outcome.and(stopped)
}

struct StepPlan {
    role: VictimRole,
    victim: usize,
    leader: usize,
    kind: Option<FloodKind>,
    fraction: f64,
    max_pps: f64,
}

#[allow(clippy::too_many_arguments)]
fn run_step(
    runtime: &Runtime,
    config: &FloodConfig,
    system: System,
    cluster: &mut Cluster,
    topology: &Topology,
    cgroup: &FlooderCgroup,
    log_dir: &Path,
    plan: StepPlan,
) -> Result<StepRow> {
    let victim_pid = cluster.pid(plan.victim);
    let other_pids: Vec<u32> = (0..cluster.size())
        .filter(|&i| i != plan.victim)
        .filter_map(|i| cluster.pid(i))
        .collect();
    if config.placement == Placement::Split {
        // The victim of the last step may be a bystander now.
        for &pid in &other_pids {
            placement::pin_process(pid, REST_CPU)?;
        }
        if let Some(pid) = victim_pid {
            placement::pin_process(pid, VICTIM_CPU)?;
        }
    }
    let rss_mb_before = victim_pid.and_then(rss_mb);
    let endpoints: Vec<String> = cluster
        .client_endpoints()
        .into_iter()
        .enumerate()
        .filter(|&(i, _)| i != plan.victim)
        .map(|(_, e)| e)
        .collect();
    let flooder_veth = topology.host(FLOODER_HOST).host_veth();
    let target_pps = if plan.fraction >= 1.0 {
        0
    } else {
        (plan.fraction * plan.max_pps).round().max(1.0) as u64
    };
    // Leadership before the flood, as a non-victim sees it.
    let observer_index = (plan.victim + 1) % cluster.size();
    let observer = cluster.observer(observer_index);
    let before = match runtime.block_on(observer.read(STATUS_TIMEOUT)) {
        Ok(seen) => Some(seen),
        Err(e) => {
            eprintln!("note: no leader change timing this step: {e:#}");
            None
        }
    };
    let mut roles = Roles {
        victim: victim_pid,
        others: other_pids,
        flooder_pgid: None,
    };
    let usage_before = Snapshot::take(&roles).ok();
    let flood_start = tokio::time::Instant::now();
    let load_end = flood_start + config.warmup + config.measure;
    let mut flood: Option<ChildGuard> = match plan.kind {
        None => None,
        Some(kind) => {
            let spec = FloodSpec {
                kind,
                target: cluster.consensus_addr(plan.victim, topology),
                pps: target_pps,
                duration: config.warmup + config.measure + Duration::from_secs(2),
            };
            let log_path = log_dir.join(format!(
                "flooder-{}-{}-{}-{:.0}.log",
                system_label(system),
                plan.role.name(),
                kind.name(),
                plan.fraction * 100.0
            ));
            Some(flooder::spawn(
                &spec,
                &topology.host(FLOODER_HOST).netns(),
                cgroup,
                flooder_cpu(config),
                &config.self_exe,
                &log_path,
            )?)
        }
    };
    roles.flooder_pgid = flood.as_ref().map(ChildGuard::pid);
    let split = Arc::new(SplitMark::default());
    let watch_task = before.map(|before| {
        let observer = observer.clone();
        let split = Arc::clone(&split);
        runtime.spawn(async move {
            watch_leadership(
                observer,
                observer_index,
                before,
                flood_start,
                load_end,
                &split,
            )
            .await
        })
    });
    let load = LoadgenConfig {
        endpoints,
        clients: config.clients,
        op: Op::Put,
        warmup: config.warmup,
        duration: config.measure,
        key_space: 62,
        key_shape: KeyShape::OneByte,
        value_bytes: 0,
        seed: config.seed,
        ops_max: u64::MAX / 2,
        op_timeout: config.op_timeout,
        connect_timeout: Duration::from_secs(5),
        tls: None,
    };
    let load_split = Arc::clone(&split);
    let load_task =
        runtime.spawn(async move { loadgen::run_with_split(&load, Some(load_split)).await });
    std::thread::sleep(config.warmup);
    let start = (Instant::now(), netns::link_counters(&flooder_veth)?);
    std::thread::sleep(config.measure / 2);
    let rss_mb_during = victim_pid.and_then(rss_mb);
    std::thread::sleep(config.measure / 2);
    let end = (Instant::now(), netns::link_counters(&flooder_veth)?);
    let report = runtime
        .block_on(load_task)
        .context("load task failed")?
        .context("load generator")?;
    // Before the flooder stops, so its CPU time is still readable.
    let usage = match (usage_before, Snapshot::take(&roles)) {
        (Some(before), Ok(after)) => Some(after.delta(&before)),
        _ => None,
    };
    let victim_threads = victim_pid
        .filter(|_| config.placement == Placement::Split)
        .and_then(|pid| placement::threads_off_cpu(pid, VICTIM_CPU));
    if let Some(process) = flood.as_mut() {
        if let Err(e) = process.ensure_running() {
            eprintln!("note: the flooder ended early: {e:#}");
        }
        process.stop(FLOODER_STOP_GRACE);
    }
    drop(flood);
    let change = match watch_task {
        Some(task) => Some(runtime.block_on(task).context("leader watch task failed")?),
        None => None,
    };
    std::thread::sleep(config.settle);
    let rss_mb_after = victim_pid.and_then(rss_mb);
    let leader_after = runtime.block_on(cluster.leader()).ok();
    let (rate_pps, rate_mbps) = match plan.kind {
        Some(kind) => wire_rate(kind, start, end),
        None => (0.0, 0.0),
    };
    Ok(StepRow {
        system,
        role: plan.role,
        victim: plan.victim,
        kind: plan.kind,
        fraction: plan.fraction,
        target_pps,
        rate_pps,
        rate_mbps,
        report,
        leader_before: plan.leader,
        leader_after,
        rss_mb_before,
        rss_mb_during,
        rss_mb_after,
        usage,
        victim_threads,
        change,
    })
}

/// Where leadership is read: a bftd replica's `/status` (HTTP address) or
/// an etcd member's Maintenance Status (client endpoint).
#[derive(Clone, Debug)]
enum Observer {
    Bftd(String),
    Etcd(String),
}

/// (epoch, leader) as one node reports it: bftd (regency, leader index),
/// etcd (raft term, leader member id).
#[derive(Clone, Copy, Debug)]
struct Seen {
    epoch: u64,
    leader: u64,
}

impl Observer {
    async fn read(&self, timeout: Duration) -> Result<Seen> {
        match self {
            Observer::Bftd(addr) => {
                let status = crate::bftd_cluster::fetch_status(addr, timeout).await?;
                Ok(Seen {
                    epoch: status.regency,
                    leader: status.leader,
                })
            }
            Observer::Etcd(endpoint) => {
                let (_, leader, term) =
                    crate::etcd_cluster::member_raft_status(endpoint, timeout).await?;
                Ok(Seen {
                    epoch: term,
                    leader,
                })
            }
        }
    }
}

/// Polls `observer` every [`CHANGE_POLL_INTERVAL`] until `until`; the first
/// answer with an epoch above `before` sets `split` (the load generator
/// then keeps the latency after the change apart) and is timed from
/// `flood_start`.
async fn watch_leadership(
    observer: Observer,
    observer_index: usize,
    before: Seen,
    flood_start: tokio::time::Instant,
    until: tokio::time::Instant,
    split: &SplitMark,
) -> ChangeReport {
    let mut report = ChangeReport {
        observer: observer_index,
        epoch_before: before.epoch,
        epoch_last: before.epoch,
        first_change: None,
        leader_before: before.leader,
        leader_last: before.leader,
        polls: 0,
        poll_errors: 0,
    };
    let mut ticker = tokio::time::interval(CHANGE_POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while tokio::time::Instant::now() < until {
        ticker.tick().await;
        report.polls += 1;
        match observer.read(CHANGE_POLL_TIMEOUT).await {
            Ok(seen) => {
                let now = tokio::time::Instant::now();
                if seen.epoch > report.epoch_last {
                    report.epoch_last = seen.epoch;
                }
                report.leader_last = seen.leader;
                if seen.epoch > before.epoch && report.first_change.is_none() {
                    report.first_change = Some(now.duration_since(flood_start));
                    split.set(now);
                }
            }
            Err(_) => report.poll_errors += 1,
        }
    }
    report
}

/// VmRSS of a process in MiB.
fn rss_mb(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn kind_name(kind: Option<FloodKind>) -> &'static str {
    kind.map_or("none", FloodKind::name)
}

fn print_step(row: &StepRow) {
    let r = &row.report;
    println!(
        "  {} victim {} ({}) {:>9} {:>4.0}%: {:>8.0}/s {:>7.1} Mbit/s | p50 {:.2} ms p99 {:.2} ms {:.0} ops/s errors {} | leader {}→{} | RSS {} → {} → {} MiB",
        system_label(row.system),
        row.victim,
        row.role.name(),
        kind_name(row.kind),
        row.fraction * 100.0,
        row.rate_pps,
        row.rate_mbps,
        loadgen::us_to_ms(r.latency_us_p50),
        loadgen::us_to_ms(r.latency_us_p99),
        r.ops_per_s,
        r.errors,
        row.leader_before,
        row.leader_after.map_or("?".into(), |l| l.to_string()),
        fmt_mb(row.rss_mb_before),
        fmt_mb(row.rss_mb_during),
        fmt_mb(row.rss_mb_after),
    );
    if let Some(u) = &row.usage {
        println!(
            "      CPU s victim {:.2} others {:.2} flooder {:.2} load {:.2} | NET_RX/CPU {} NET_TX/CPU {} | softirq s/CPU {} busy s/CPU {} | victim threads off CPU {VICTIM_CPU}: {}",
            u.victim_cpu_s,
            u.others_cpu_s,
            u.flooder_cpu_s,
            u.loadgen_cpu_s,
            placement::per_cpu(&u.cpus.net_rx),
            placement::per_cpu(&u.cpus.net_tx),
            placement::per_cpu_s(&u.cpus.softirq_s),
            placement::per_cpu_s(&u.cpus.busy_s),
            threads_cell(row),
        );
    }
    if let Some(c) = &row.change {
        println!(
            "      {} seen by {}: {}→{}, first change {} | p99 after it {}",
            epoch_name(row.system),
            c.observer,
            c.epoch_before,
            c.epoch_last,
            change_cell(row),
            after_change_p99_cell(row),
        );
    }
    for sample in &r.error_samples {
        println!("      error: {sample}");
    }
}

fn epoch_name(system: System) -> &'static str {
    match system {
        System::Bftd => "regency",
        System::Etcd => "raft term",
    }
}

/// "12 ms" after the flood's start, or "none".
fn change_cell(row: &StepRow) -> String {
    match &row.change {
        None => "?".into(),
        Some(c) => c
            .first_change
            .map_or("none".into(), |d| format!("{} ms", d.as_millis())),
    }
}

fn after_change_p99_cell(row: &StepRow) -> String {
    match &row.report.after_split {
        Some(p) if p.ops > 0 => format!(
            "{:.2} ms ({} ops)",
            loadgen::us_to_ms(p.latency_us_p99),
            p.ops
        ),
        Some(_) => "no op measured".into(),
        None => "-".into(),
    }
}

fn threads_cell(row: &StepRow) -> String {
    row.victim_threads
        .map_or("-".into(), |(all, off)| format!("{off} of {all}"))
}

fn fmt_mb(mb: Option<f64>) -> String {
    mb.map_or("?".into(), |v| format!("{v:.1}"))
}

fn write_outputs(
    config: &FloodConfig,
    calibrations: &[Calibration],
    rows: &[StepRow],
    failures: &[String],
) -> Result<()> {
    let csv_path = config.out_dir.join("flood.csv");
    let md_path = config.out_dir.join("flood.md");
    let svg_path = config.out_dir.join("flood.svg");
    std::fs::write(&csv_path, to_csv(config.placement, rows))
        .with_context(|| format!("write {}", csv_path.display()))?;
    let (headers, body) = side_by_side(config, rows);
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let (rss_headers, rss_body) = rss_table(rows);
    let (change_headers, change_body) = change_table(rows);
    let (usage_headers, usage_body) = usage_table(rows);
    println!();
    print!("{}", report::text_table(&headers, &body, 3));
    println!("\nleader changes (seen from a non-victim) and p99 after them:");
    print!("{}", report::text_table(&change_headers, &change_body, 3));
    println!(
        "\nwhere the CPU went, flood start to load end (placement {}):",
        config.placement.name()
    );
    print!("{}", report::text_table(&usage_headers, &usage_body, 3));
    println!("\nvictim RSS (MiB) before / during / after the flood, at the highest rate:");
    print!("{}", report::text_table(&rss_headers, &rss_body, 3));
    let mut markdown = describe_setup(config, calibrations);
    markdown.push_str("\n## Latency and throughput per step\n\n");
    markdown.push_str(&report::markdown_table(&headers, &body, 3));
    markdown.push_str(
        "\n## Leader changes\n\n\
         Polled every 50 ms from a non-victim (bftd: `/status` regency; etcd: Maintenance \
         Status raft term) from the flood's start to the end of the load. \"change\" is the time \
         from the flood's start to the first answer with a higher regency (term); \"p99 after\" \
         covers the measured operations that started after that answer; the ratio compares it \
         with the no-flood step of the same system and victim role.\n\n",
    );
    markdown.push_str(&report::markdown_table(&change_headers, &change_body, 3));
    markdown.push_str(&format!(
        "\n## Placement: where the CPU went\n\n\
         Placement `{}`{}. Deltas from the flood's start to the end of the load: \
         softirqs raised (/proc/softirqs) and softirq and busy seconds (/proc/stat) per CPU \
         (CPU 0/CPU 1), and utime+stime seconds (/proc/PID/stat, all threads) of the victim, the \
         other nodes together, the flooder (its process group) and the harness (load generator \
         and polling). \"off CPU\" counts the victim's threads allowed anywhere but CPU \
         {VICTIM_CPU} at the end of the load.\n\n",
        config.placement.name(),
        match config.placement {
            Placement::Split => format!(
                ": the victim (every thread) and the flooder on CPU {VICTIM_CPU}, the other \
                 nodes and the load generator on CPU {REST_CPU} (sched_setaffinity; the servers \
                 start pinned to CPU {REST_CPU}, so bftd's and etcd's runtimes size themselves \
                 for one CPU)"
            ),
            Placement::None => String::from(": no pinning"),
        }
    ));
    markdown.push_str(&report::markdown_table(&usage_headers, &usage_body, 3));
    markdown.push_str("\n## Victim RSS (MiB), highest rate of each flood\n\n");
    markdown.push_str(&report::markdown_table(&rss_headers, &rss_body, 3));
    if !failures.is_empty() {
        markdown.push_str("\n## Failures\n\n");
        for failure in failures {
            markdown.push_str(&format!("- {}\n", failure.replace('\n', " ")));
        }
    }
    std::fs::write(&md_path, markdown).with_context(|| format!("write {}", md_path.display()))?;
    let plot_rows: Vec<crate::plot::PlotRow> =
        rows.iter().map(crate::plot::PlotRow::from_step).collect();
    match crate::plot::flood_svg(&svg_path, &plot_rows) {
        Ok(()) => println!(
            "\nwrote {}, {} and {}",
            csv_path.display(),
            md_path.display(),
            svg_path.display()
        ),
        Err(e) => {
            eprintln!("plot: {e:#}");
            println!("\nwrote {} and {}", csv_path.display(), md_path.display());
        }
    }
    Ok(())
}

fn to_csv(placement: Placement, rows: &[StepRow]) -> String {
    let mut out = String::from(
        "system,victim_role,victim,flood_kind,step_pct,target_pps,rate_pps,rate_mbps,p50_ms,p99_ms,p999_ms,max_ms,ops_per_s,errors,leader_before,leader_after,rss_mb_before,rss_mb_during,rss_mb_after,\
         placement,observer,epoch_before,epoch_last,change_ms,ops_after_change,p99_after_change_ms,\
         net_rx_per_cpu,net_tx_per_cpu,softirq_s_per_cpu,busy_s_per_cpu,victim_cpu_s,others_cpu_s,flooder_cpu_s,loadgen_cpu_s,victim_threads,victim_threads_off_cpu\n",
    );
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.1}"));
    for row in rows {
        let r = &row.report;
        out.push_str(&format!(
            "{},{},{},{},{:.0},{},{:.0},{:.1},{:.3},{:.3},{:.3},{:.3},{:.1},{},{},{},{},{},{}\n",
            system_label(row.system),
            row.role.name(),
            row.victim,
            kind_name(row.kind),
            row.fraction * 100.0,
            row.target_pps,
            row.rate_pps,
            row.rate_mbps,
            loadgen::us_to_ms(r.latency_us_p50),
            loadgen::us_to_ms(r.latency_us_p99),
            loadgen::us_to_ms(r.latency_us_p999),
            loadgen::us_to_ms(r.latency_us_max),
            r.ops_per_s,
            r.errors,
            row.leader_before,
            row.leader_after.map_or(String::new(), |l| l.to_string()),
            opt(row.rss_mb_before),
            opt(row.rss_mb_during),
            opt(row.rss_mb_after),
        ));
        // The columns of issue 11 (placement, leader change), appended.
        out.pop();
        let change = row.change.as_ref();
        let after = row.report.after_split.as_ref();
        let usage = row.usage.as_ref();
        let cells = [
            placement.name().to_string(),
            change.map_or(String::new(), |c| c.observer.to_string()),
            change.map_or(String::new(), |c| c.epoch_before.to_string()),
            change.map_or(String::new(), |c| c.epoch_last.to_string()),
            change
                .and_then(|c| c.first_change)
                .map_or(String::new(), |d| d.as_millis().to_string()),
            after.map_or(String::new(), |p| p.ops.to_string()),
            after.filter(|p| p.ops > 0).map_or(String::new(), |p| {
                format!("{:.3}", loadgen::us_to_ms(p.latency_us_p99))
            }),
            usage.map_or(String::new(), |u| placement::per_cpu(&u.cpus.net_rx)),
            usage.map_or(String::new(), |u| placement::per_cpu(&u.cpus.net_tx)),
            usage.map_or(String::new(), |u| placement::per_cpu_s(&u.cpus.softirq_s)),
            usage.map_or(String::new(), |u| placement::per_cpu_s(&u.cpus.busy_s)),
            usage.map_or(String::new(), |u| format!("{:.2}", u.victim_cpu_s)),
            usage.map_or(String::new(), |u| format!("{:.2}", u.others_cpu_s)),
            usage.map_or(String::new(), |u| format!("{:.2}", u.flooder_cpu_s)),
            usage.map_or(String::new(), |u| format!("{:.2}", u.loadgen_cpu_s)),
            row.victim_threads
                .map_or(String::new(), |(all, _)| all.to_string()),
            row.victim_threads
                .map_or(String::new(), |(_, off)| off.to_string()),
        ];
        out.push(',');
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// The no-flood p99 of the same system and victim role, µs.
fn no_flood_p99(rows: &[StepRow], row: &StepRow) -> Option<u64> {
    rows.iter()
        .find(|r| r.system == row.system && r.role == row.role && r.kind.is_none())
        .map(|r| r.report.latency_us_p99)
}

/// One line per step: when leadership changed, and the p99 around it.
fn change_table(rows: &[StepRow]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let headers = vec![
        "system",
        "victim",
        "flood",
        "step",
        "regency/term",
        "change",
        "p99 no flood",
        "p99 step",
        "p99 after",
        "after / no flood",
    ];
    let body = rows
        .iter()
        .map(|row| {
            let base = no_flood_p99(rows, row);
            let after = row.report.after_split.as_ref().filter(|p| p.ops > 0);
            let ms = |us: u64| format!("{:.2}", loadgen::us_to_ms(us));
            vec![
                system_label(row.system).to_string(),
                format!("{} ({})", row.role.name(), row.victim),
                kind_name(row.kind).to_string(),
                format!("{:.0}%", row.fraction * 100.0),
                row.change.as_ref().map_or("?".into(), |c| {
                    format!("{}→{}", c.epoch_before, c.epoch_last)
                }),
                change_cell(row),
                base.map_or("-".into(), ms),
                ms(row.report.latency_us_p99),
                after.map_or("-".into(), |p| ms(p.latency_us_p99)),
                match (after, base) {
                    (Some(p), Some(b)) if b > 0 => {
                        format!(
                            "{:+.0} %",
                            (p.latency_us_p99 as f64 / b as f64 - 1.0) * 100.0
                        )
                    }
                    _ => "-".into(),
                },
            ]
        })
        .collect();
    (headers, body)
}

/// One line per step: softirqs and CPU time, per CPU and per role.
fn usage_table(rows: &[StepRow]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let headers = vec![
        "system",
        "victim",
        "flood",
        "step",
        "NET_RX",
        "NET_TX",
        "softirq s",
        "busy s",
        "victim s",
        "others s",
        "flooder s",
        "load s",
        "off CPU",
    ];
    let body = rows
        .iter()
        .map(|row| {
            let mut line = vec![
                system_label(row.system).to_string(),
                format!("{} ({})", row.role.name(), row.victim),
                kind_name(row.kind).to_string(),
                format!("{:.0}%", row.fraction * 100.0),
            ];
            match &row.usage {
                Some(u) => line.extend([
                    placement::per_cpu(&u.cpus.net_rx),
                    placement::per_cpu(&u.cpus.net_tx),
                    placement::per_cpu_s(&u.cpus.softirq_s),
                    placement::per_cpu_s(&u.cpus.busy_s),
                    format!("{:.2}", u.victim_cpu_s),
                    format!("{:.2}", u.others_cpu_s),
                    format!("{:.2}", u.flooder_cpu_s),
                    format!("{:.2}", u.loadgen_cpu_s),
                ]),
                None => line.extend(vec!["?".to_string(); 8]),
            }
            line.push(threads_cell(row));
            line
        })
        .collect();
    (headers, body)
}

/// The flood rate as a person reads it: Mbit/s for big datagrams, packets
/// per second otherwise.
fn rate_cell(row: &StepRow) -> String {
    match row.kind {
        None => "0".into(),
        Some(FloodKind::UdpBig) => format!("{:.0} Mb/s", row.rate_mbps),
        Some(_) => format!("{:.1} kpps", row.rate_pps / 1000.0),
    }
}

/// One line per (role, flood, step), the systems side by side.
fn side_by_side(config: &FloodConfig, rows: &[StepRow]) -> (Vec<String>, Vec<Vec<String>>) {
    let systems: Vec<System> = config
        .systems
        .iter()
        .copied()
        .filter(|s| rows.iter().any(|r| r.system == *s))
        .collect();
    let mut headers: Vec<String> = vec!["victim".into(), "flood".into(), "step".into()];
    for &system in &systems {
        let name = system_label(system);
        for column in ["rate", "p50 ms", "p99 ms", "ops/s", "err", "leader"] {
            headers.push(format!("{name} {column}"));
        }
    }
    let mut keys: Vec<(VictimRole, Option<FloodKind>, u64)> = Vec::new();
    for row in rows {
        let key = (row.role, row.kind, (row.fraction * 100.0).round() as u64);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let mut body = Vec::new();
    for (role, kind, pct) in keys {
        let mut line = vec![
            role.name().to_string(),
            kind_name(kind).to_string(),
            format!("{pct}%"),
        ];
        for &system in &systems {
            let found = rows.iter().find(|r| {
                r.system == system
                    && r.role == role
                    && r.kind == kind
                    && (r.fraction * 100.0).round() as u64 == pct
            });
            match found {
                Some(row) => {
                    let r = &row.report;
                    line.push(rate_cell(row));
                    line.push(format!("{:.2}", loadgen::us_to_ms(r.latency_us_p50)));
                    line.push(format!("{:.2}", loadgen::us_to_ms(r.latency_us_p99)));
                    line.push(format!("{:.0}", r.ops_per_s));
                    line.push(r.errors.to_string());
                    line.push(format!(
                        "{}→{}",
                        row.leader_before,
                        row.leader_after.map_or("?".into(), |l| l.to_string())
                    ));
                }
                None => line.extend(vec!["-".to_string(); 6]),
            }
        }
        body.push(line);
    }
    (headers, body)
}

/// The victim's RSS around the strongest step of each flood.
fn rss_table(rows: &[StepRow]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let headers = vec![
        "system", "victim", "flood", "rate", "before", "during", "after",
    ];
    let body = rows
        .iter()
        .filter(|r| r.kind.is_some() && r.fraction >= 1.0)
        .map(|r| {
            vec![
                system_label(r.system).to_string(),
                format!("{} ({})", r.role.name(), r.victim),
                kind_name(r.kind).to_string(),
                rate_cell(r),
                fmt_mb(r.rss_mb_before),
                fmt_mb(r.rss_mb_during),
                fmt_mb(r.rss_mb_after),
            ]
        })
        .collect();
    (headers, body)
}

fn describe_setup(config: &FloodConfig, calibrations: &[Calibration]) -> String {
    let mut text = format!(
        "# flood\n\n\
         - every replica/member in its own network namespace, veth pairs on bridge {} \
         ({}/24); load client in the root namespace; flooder in namespace bftdperf-{FLOODER_HOST}, \
         cgroup cpu quota {} % of one core\n\
         - placement `{}` (see \"Placement\" below)\n\
         - bftd: 4 `bftd run` replicas (durability {}, pin_cores off); etcd: 3 members\n\
         - workload \"0/0\": {} closed-loop clients on the non-victim endpoints, put of a 1-byte \
         key (62 distinct keys) with an empty value; {:?} warm-up, {:?} measured per step\n\
         - floods at the victim's consensus port (bftd replica_addr, etcd peer 2380), \
         steps at {:?} of the calibrated maximum (100 % = unlimited)\n\
         - rate = what the flooder put on the wire during the window (its veth counters); \
         UDP datagrams of 65,495 B leave as {} fragments at MTU {MTU}\n",
        netns::BRIDGE,
        netns::BRIDGE_IP,
        config.flooder_cpu_pct,
        config.placement.name(),
        config.durability,
        config.clients,
        config.warmup,
        config.measure,
        config.fractions,
        FloodKind::UdpBig.packets_per_datagram(MTU),
    );
    for c in calibrations {
        text.push_str(&format!(
            "- calibrated maximum {}: {:.0}/s, {:.0} Mbit/s\n",
            c.kind.name(),
            c.max_pps,
            c.max_mbps
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::PhaseLatency;

    fn report(p99_us: u64, after_split: Option<PhaseLatency>) -> LoadgenReport {
        LoadgenReport {
            op: Op::Put,
            clients: 8,
            endpoints: 3,
            duration_s: 10.0,
            ops: 1000,
            ops_per_s: 100.0,
            errors: 0,
            ops_max_reached: false,
            latency_us_p50: 1000,
            latency_us_p99: p99_us,
            latency_us_p999: p99_us,
            latency_us_max: p99_us,
            latency_us_mean: 1000.0,
            error_samples: Vec::new(),
            after_split,
            stalls: Vec::new(),
            stalls_dropped: 0,
        }
    }

    fn row(kind: Option<FloodKind>, p99_us: u64, change: Option<ChangeReport>) -> StepRow {
        let after_split = change
            .as_ref()
            .and_then(|c| c.first_change)
            .map(|_| PhaseLatency {
                ops: 500,
                latency_us_p50: 900,
                latency_us_p99: 2500,
                latency_us_max: 3000,
            });
        StepRow {
            system: System::Bftd,
            role: VictimRole::Leader,
            victim: 0,
            kind,
            fraction: if kind.is_some() { 1.0 } else { 0.0 },
            target_pps: 0,
            rate_pps: 2000.0,
            rate_mbps: 1000.0,
            report: report(p99_us, after_split),
            leader_before: 0,
            leader_after: Some(1),
            rss_mb_before: Some(30.0),
            rss_mb_during: None,
            rss_mb_after: Some(31.0),
            usage: Some(Snapshot {
                cpus: placement::CpuCounters {
                    net_rx: vec![100, 5000],
                    net_tx: vec![0, 0],
                    softirq_s: vec![0.5, 1.5],
                    busy_s: vec![5.0, 5.0],
                },
                victim_cpu_s: 1.9,
                others_cpu_s: 3.9,
                flooder_cpu_s: 1.0,
                loadgen_cpu_s: 0.4,
            }),
            victim_threads: Some((8, 0)),
            change,
        }
    }

    #[test]
    fn csv_rows_match_the_header_and_still_plot() {
        let change = ChangeReport {
            observer: 1,
            epoch_before: 0,
            epoch_last: 1,
            first_change: Some(Duration::from_millis(1250)),
            leader_before: 0,
            leader_last: 1,
            polls: 100,
            poll_errors: 0,
        };
        let rows = vec![
            row(None, 2000, None),
            row(Some(FloodKind::UdpBig), 9000, Some(change)),
        ];
        let csv = to_csv(Placement::Split, &rows);
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        for line in lines {
            assert_eq!(line.split(',').count(), header.len(), "{line}");
        }
        let at = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let flooded: Vec<&str> = csv.lines().nth(2).unwrap().split(',').collect();
        assert_eq!(flooded[at("change_ms")], "1250");
        assert_eq!(flooded[at("p99_after_change_ms")], "2.500");
        assert_eq!(flooded[at("net_rx_per_cpu")], "100/5000");
        assert_eq!(flooded[at("placement")], "split");
        assert_eq!(crate::plot::parse_flood_csv(&csv).unwrap().len(), 2);

        let (_, body) = change_table(&rows);
        // p99 after the change against the no-flood p99: 2.5 ms vs 2 ms.
        assert_eq!(body[1][5], "1250 ms");
        assert_eq!(body[1][9], "+25 %");
        assert_eq!(body[0][5], "?");
    }
}
