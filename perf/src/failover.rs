//! `failover`: crash the leader under load and measure how long writes stop.
//!
//! For each system, `runs` times: a fresh cluster (etcd: 3 members; bftd: 4
//! `bftd run` processes), `writers` closed-loop writers on the non-leader
//! endpoints, ~2 s of load, then SIGKILL of the leader process at t0.
//!
//! - failover time: t0 → completion of the first write *issued after t0*
//!   that succeeds. Closed-loop writers stuck in a request issued before t0
//!   cannot issue a new one, so a prober also issues one write every
//!   `probe_interval` from t0 on (open loop), which bounds the resolution.
//! - writer pause: per writer, the gap between its last successful
//!   completion before t0 and its first one after; the maximum over writers.
//! - errors: failed or timed-out writes that ended after t0.
//! - lost writes: every write is to a distinct key; after the run, every
//!   acknowledged key must be readable through a surviving endpoint.
//!
//! A run ends `after_recovery` after the first post-kill success, or at
//! `recovery_timeout` after t0: a cluster that never recovers is a failed
//! run in the table, not an error that hides the others.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use etcd_client::{Client, GetOptions};
use tokio::runtime::Runtime;

use crate::bftd_cluster::{BftdCluster, BftdClusterConfig};
use crate::etcd_cluster::{EtcdCluster, EtcdClusterConfig};
use crate::kv_compare::System;
use crate::loadgen::{self, describe_error, LoadgenConfig, KEY_PREFIX};
use crate::procs::ScratchDir;
use crate::report;

/// Pause after a failed write so a writer does not spin on a dead endpoint.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);
/// Keys fetched per range request of the read-back.
const READBACK_PAGE_KEYS: i64 = 5000;
const READBACK_TIMEOUT: Duration = Duration::from_secs(20);
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound on the writes one writer records (memory bound).
const WRITER_OPS_MAX: usize = 2_000_000;
const NONE_US: u64 = u64::MAX;

#[derive(Clone, Debug)]
pub struct FailoverConfig {
    pub runs: u32,
    pub writers: u32,
    pub systems: Vec<System>,
    pub etcd_bin: PathBuf,
    pub etcd_members: usize,
    pub etcd_base_port: u16,
    pub bftd_bin: PathBuf,
    pub bftd_replicas: u16,
    pub bftd_base_port: u16,
    pub durability: String,
    /// Load before the kill.
    pub load_before_kill: Duration,
    /// A run without a successful post-kill write by then has failed.
    pub recovery_timeout: Duration,
    /// Load kept after the first post-kill success (to see the pauses end).
    pub after_recovery: Duration,
    pub op_timeout: Duration,
    pub probe_interval: Duration,
    pub ready_timeout: Duration,
    pub out_dir: PathBuf,
}

/// One run of one system.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub system: System,
    pub run: u32,
    pub leader_before: usize,
    /// Leader after the run, if the survivors agreed on one.
    pub leader_after: Option<usize>,
    /// None: no write issued after the kill succeeded in time.
    pub failover_ms: Option<f64>,
    /// Who produced the first post-kill success.
    pub first_by_probe: bool,
    pub pause_ms_max: f64,
    pub errors_after_kill: u64,
    pub acked_writes: u64,
    /// None: the read-back failed.
    pub lost_writes: Option<u64>,
    pub note: String,
}

/// Runs every system `runs` times, prints the table, writes CSV/Markdown.
pub fn run(runtime: &Runtime, config: &FailoverConfig) -> Result<Vec<RunResult>> {
    anyhow::ensure!(config.runs > 0, "--runs must be > 0");
    anyhow::ensure!(config.writers > 0, "--writers must be > 0");
    anyhow::ensure!(!config.systems.is_empty(), "nothing to run");
    anyhow::ensure!(
        !config.probe_interval.is_zero(),
        "--probe-interval-ms must be > 0"
    );
    if config.systems.contains(&System::Bftd) {
        crate::bftd_demo::BftdDemo::check_binary(&config.bftd_bin)?;
    }
    let log_dir = config.out_dir.join("logs").join("failover");
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

    let mut results = Vec::new();
    for &system in &config.systems {
        for run in 1..=config.runs {
            let run_dir = scratch
                .path()
                .join(format!("{}-{run}", system_name(system)));
            std::fs::create_dir_all(&run_dir)
                .with_context(|| format!("create {}", run_dir.display()))?;
            println!("{} run {run}/{}", system_name(system), config.runs);
            let result = one_run(runtime, config, system, run, &run_dir, &log_dir)
                .with_context(|| format!("{} run {run}", system_name(system)))?;
            print_run(&result);
            std::fs::remove_dir_all(&run_dir)
                .with_context(|| format!("remove {}", run_dir.display()))?;
            results.push(result);
        }
    }
    drop(scratch);

    let summary = summary_rows(config, &results);
    println!();
    print!("{}", report::text_table(&SUMMARY_HEADERS, &summary, 1));
    let csv_path = config.out_dir.join("failover.csv");
    let md_path = config.out_dir.join("failover.md");
    std::fs::write(&csv_path, runs_csv(&results))
        .with_context(|| format!("write {}", csv_path.display()))?;
    let markdown = format!(
        "{}\n{}\n## Runs\n\n{}",
        describe_setup(config),
        report::markdown_table(&SUMMARY_HEADERS, &summary, 1),
        report::markdown_table(
            &RUN_HEADERS,
            &results.iter().map(run_cells).collect::<Vec<_>>(),
            1
        )
    );
    std::fs::write(&md_path, markdown).with_context(|| format!("write {}", md_path.display()))?;
    println!("\nwrote {} and {}", csv_path.display(), md_path.display());
    Ok(results)
}

pub fn system_name(system: System) -> &'static str {
    match system {
        System::Etcd => "etcd",
        System::Bftd => "bftd",
    }
}

/// Either cluster, behind the three things a failover run needs.
enum Cluster {
    Etcd(EtcdCluster),
    Bftd(BftdCluster),
}

impl Cluster {
    fn start(
        config: &FailoverConfig,
        system: System,
        run: u32,
        dir: &Path,
        log_dir: &Path,
    ) -> Result<Self> {
        Ok(match system {
            System::Etcd => {
                let run_log_dir = log_dir.join(format!("etcd-{run}"));
                std::fs::create_dir_all(&run_log_dir)?;
                Cluster::Etcd(EtcdCluster::start(EtcdClusterConfig {
                    etcd_bin: config.etcd_bin.clone(),
                    members: config.etcd_members,
                    base_port: config.etcd_base_port,
                    data_root: dir.to_path_buf(),
                    log_dir: run_log_dir,
                    cluster_token: format!("bftd-perf-failover-{}-{run}", std::process::id()),
                    hosts: Vec::new(),
                    tls: None,
                })?)
            }
            System::Bftd => Cluster::Bftd(BftdCluster::start(&BftdClusterConfig {
                bftd_bin: config.bftd_bin.clone(),
                replicas: config.bftd_replicas,
                base_port: config.bftd_base_port,
                durability: config.durability.clone(),
                dir: dir.join("bftd"),
                log_dir: log_dir.to_path_buf(),
                log_prefix: format!("bftd-run{run}"),
                hosts: Vec::new(),
                tls: false,
            })?),
        })
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

    fn client_endpoints(&self) -> Vec<String> {
        match self {
            Cluster::Etcd(c) => c.client_endpoints(),
            Cluster::Bftd(c) => c.client_endpoints(),
        }
    }

    fn kill(&mut self, index: usize) {
        match self {
            Cluster::Etcd(c) => c.kill_member(index),
            Cluster::Bftd(c) => c.kill_replica(index),
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

/// State shared by the writers, the prober and the main thread.
struct Shared {
    key_prefix: String,
    op_timeout: Duration,
    kill_at: OnceLock<Instant>,
    stop: AtomicBool,
    /// Hard end of every loop, whatever happens.
    deadline: Instant,
    /// µs from t0 to the first completion of a write issued after t0.
    first_success_us: AtomicU64,
    first_by_probe: AtomicBool,
}

impl Shared {
    fn record_success(&self, started: Instant, ended: Instant, by_probe: bool) {
        let Some(&t0) = self.kill_at.get() else {
            return;
        };
        if started < t0 {
            return;
        }
        let us = ended.duration_since(t0).as_micros() as u64;
        if self.first_success_us.fetch_min(us, Ordering::Relaxed) > us {
            self.first_by_probe.store(by_probe, Ordering::Relaxed);
        }
    }

    fn key(&self, writer: &str, seq: u64) -> String {
        format!("{}{writer}/{seq:08}", self.key_prefix)
    }
}

/// What one writer (or the prober) hands back.
#[derive(Default)]
struct WriterLog {
    /// (issued, completed) of each successful write, in order.
    successes: Vec<(Instant, Instant)>,
    /// Keys of acknowledged writes.
    acked: Vec<String>,
    errors_after_kill: u64,
    error_samples: Vec<String>,
}

fn one_run(
    runtime: &Runtime,
    config: &FailoverConfig,
    system: System,
    run: u32,
    dir: &Path,
    log_dir: &Path,
) -> Result<RunResult> {
    let mut cluster = Cluster::start(config, system, run, dir, log_dir)?;
    runtime.block_on(cluster.wait_ready(config.ready_timeout))?;
    let leader_before = runtime.block_on(cluster.leader())?;
    let endpoints: Vec<String> = cluster
        .client_endpoints()
        .into_iter()
        .enumerate()
        .filter(|&(i, _)| i != leader_before)
        .map(|(_, e)| e)
        .collect();
    println!(
        "  leader {leader_before}; {} writers on {}",
        config.writers,
        endpoints.join(",")
    );
    let shared = Arc::new(Shared {
        key_prefix: format!(
            "{KEY_PREFIX}failover/{}-{run}-{}/",
            system_name(system),
            std::process::id()
        ),
        op_timeout: config.op_timeout,
        kill_at: OnceLock::new(),
        stop: AtomicBool::new(false),
        deadline: Instant::now()
            + config.load_before_kill
            + config.recovery_timeout
            + config.after_recovery
            + config.op_timeout,
        first_success_us: AtomicU64::new(NONE_US),
        first_by_probe: AtomicBool::new(false),
    });
    let connect_config = LoadgenConfig {
        endpoints: endpoints.clone(),
        clients: config.writers,
        op: loadgen::Op::Put,
        warmup: Duration::ZERO,
        duration: Duration::from_secs(1),
        key_space: 1,
        key_shape: loadgen::KeyShape::Prefixed,
        value_bytes: 0,
        seed: 1,
        ops_max: 1,
        op_timeout: config.op_timeout,
        connect_timeout: Duration::from_secs(5),
        tls: None,
    };
    let (writer_clients, probe_clients) = runtime.block_on(async {
        let mut writers = Vec::new();
        for w in 0..config.writers as usize {
            writers.push(loadgen::connect(&endpoints[w % endpoints.len()], &connect_config).await?);
        }
        let mut probes = Vec::new();
        for endpoint in &endpoints {
            probes.push(loadgen::connect(endpoint, &connect_config).await?);
        }
        anyhow::Ok((writers, probes))
    })?;
    let writer_tasks: Vec<_> = writer_clients
        .into_iter()
        .enumerate()
        .map(|(w, client)| {
            runtime.spawn(writer_loop(format!("w{w:03}"), client, Arc::clone(&shared)))
        })
        .collect();

    std::thread::sleep(config.load_before_kill);
    let t0 = Instant::now();
    shared.kill_at.set(t0).expect("t0 is set once");
    cluster.kill(leader_before);
    let kill_reaped_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let prober = runtime.spawn(probe_loop(
        probe_clients,
        config.probe_interval,
        Arc::clone(&shared),
    ));

    // Bounded wait for recovery, then a little more load.
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let since_kill = t0.elapsed();
        let first_us = shared.first_success_us.load(Ordering::Relaxed);
        let recovered_long_enough = first_us != NONE_US
            && since_kill >= Duration::from_micros(first_us) + config.after_recovery;
        if recovered_long_enough || since_kill >= config.recovery_timeout {
            break;
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    for task in writer_tasks {
        logs.push(runtime.block_on(task).context("writer task failed")?);
    }
    let probe_log = runtime.block_on(prober).context("probe task failed")?;
    let end = Instant::now();

    let leader_after = runtime.block_on(cluster.leader()).ok();
    let mut acked: Vec<String> = logs.iter().flat_map(|l| l.acked.iter().cloned()).collect();
    acked.extend(probe_log.acked.iter().cloned());
    let readback_endpoint = endpoints[0].clone();
    let readback = runtime.block_on(read_keys(&readback_endpoint, &shared.key_prefix));
    cluster.stop()?;

    let first_us = shared.first_success_us.load(Ordering::Relaxed);
    let failover_ms = (first_us != NONE_US).then(|| first_us as f64 / 1000.0);
    let pause_ms_max = logs
        .iter()
        .map(|l| pause_across(&l.successes, t0, end).as_secs_f64() * 1000.0)
        .fold(0.0, f64::max);
    let errors_after_kill =
        logs.iter().map(|l| l.errors_after_kill).sum::<u64>() + probe_log.errors_after_kill;
    let mut samples: Vec<String> = Vec::new();
    for sample in logs
        .iter()
        .chain([&probe_log])
        .flat_map(|l| &l.error_samples)
    {
        if samples.len() < 3 && !samples.contains(sample) {
            samples.push(sample.clone());
        }
    }
    let mut note = format!("kill+reap {kill_reaped_ms:.0} ms");
    let lost_writes = match readback {
        Ok(present) => {
            let present: std::collections::HashSet<String> = present.into_iter().collect();
            let lost: Vec<&String> = acked.iter().filter(|k| !present.contains(*k)).collect();
            if let Some(first) = lost.first() {
                note.push_str(&format!("; first lost key {first}"));
            }
            Some(lost.len() as u64)
        }
        Err(e) => {
            note.push_str(&format!(
                "; read-back via {readback_endpoint} failed: {e:#}"
            ));
            None
        }
    };
    if failover_ms.is_none() {
        note.push_str(&format!(
            "; NOT RECOVERED within {:?}",
            config.recovery_timeout
        ));
    }
    if !samples.is_empty() {
        note.push_str(&format!("; errors: {}", samples.join(" | ")));
    }
    Ok(RunResult {
        system,
        run,
        leader_before,
        leader_after,
        failover_ms,
        first_by_probe: shared.first_by_probe.load(Ordering::Relaxed),
        pause_ms_max,
        errors_after_kill,
        acked_writes: acked.len() as u64,
        lost_writes,
        note,
    })
}

/// Gap between the last completion before t0 and the first at or after
/// it (or `end` if there was none after).
fn pause_across(successes: &[(Instant, Instant)], t0: Instant, end: Instant) -> Duration {
    let before = successes.iter().map(|s| s.1).filter(|&c| c < t0).max();
    let after = successes.iter().map(|s| s.1).filter(|&c| c >= t0).min();
    match (before, after) {
        (Some(b), Some(a)) => a - b,
        (Some(b), None) => end - b,
        (None, Some(a)) => a - t0,
        (None, None) => end - t0,
    }
}

async fn writer_loop(name: String, mut client: Client, shared: Arc<Shared>) -> WriterLog {
    let mut log = WriterLog::default();
    let mut seq: u64 = 0;
    while !shared.stop.load(Ordering::Relaxed)
        && Instant::now() < shared.deadline
        && log.successes.len() < WRITER_OPS_MAX
    {
        seq += 1;
        let key = shared.key(&name, seq);
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            shared.op_timeout,
            client.put(key.as_str(), seq.to_string(), None),
        )
        .await;
        let ended = Instant::now();
        match outcome {
            Ok(Ok(_)) => {
                log.successes.push((started, ended));
                log.acked.push(key);
                shared.record_success(started, ended, false);
            }
            failed => {
                let message = match failed {
                    Ok(Err(e)) => describe_error(&e),
                    _ => format!("timeout after {} ms", shared.op_timeout.as_millis()),
                };
                note_error(&mut log, &shared, ended, message);
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }
    log
}

/// From t0 on, one write every `interval`, round-robin over the clients,
/// each in its own task, until the first post-kill success (or the stop).
async fn probe_loop(clients: Vec<Client>, interval: Duration, shared: Arc<Shared>) -> WriterLog {
    let log = Arc::new(Mutex::new(WriterLog::default()));
    let mut tasks = tokio::task::JoinSet::new();
    let mut ticker = tokio::time::interval(interval);
    let mut seq: u64 = 0;
    while !shared.stop.load(Ordering::Relaxed)
        && Instant::now() < shared.deadline
        && shared.first_success_us.load(Ordering::Relaxed) == NONE_US
    {
        ticker.tick().await;
        seq += 1;
        let mut client = clients[seq as usize % clients.len()].clone();
        let key = shared.key("probe", seq);
        let (shared, log) = (Arc::clone(&shared), Arc::clone(&log));
        tasks.spawn(async move {
            let started = Instant::now();
            let budget = shared.deadline.saturating_duration_since(started);
            let outcome =
                tokio::time::timeout(budget, client.put(key.as_str(), seq.to_string(), None)).await;
            let ended = Instant::now();
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            match outcome {
                Ok(Ok(_)) => {
                    log.successes.push((started, ended));
                    log.acked.push(key);
                    shared.record_success(started, ended, true);
                }
                Ok(Err(e)) => note_error(&mut log, &shared, ended, describe_error(&e)),
                Err(_) => note_error(
                    &mut log,
                    &shared,
                    ended,
                    "probe: no reply before the run's end".into(),
                ),
            }
        });
    }
    // Probes still waiting are bounded by the run's deadline.
    while tasks.join_next().await.is_some() {}
    let log = std::mem::take(&mut *log.lock().unwrap_or_else(|p| p.into_inner()));
    log
}

fn note_error(log: &mut WriterLog, shared: &Shared, ended: Instant, message: String) {
    if shared.kill_at.get().is_some_and(|&t0| ended >= t0) {
        log.errors_after_kill += 1;
    }
    if log.error_samples.len() < 3 && !log.error_samples.contains(&message) {
        log.error_samples.push(message);
    }
}

/// Every key under `prefix`, through `endpoint` (paged, retried until
/// [`READBACK_TIMEOUT`]).
async fn read_keys(endpoint: &str, prefix: &str) -> Result<Vec<String>> {
    let deadline = Instant::now() + READBACK_TIMEOUT;
    let config = LoadgenConfig {
        endpoints: vec![endpoint.to_string()],
        clients: 1,
        op: loadgen::Op::Get,
        warmup: Duration::ZERO,
        duration: Duration::from_secs(1),
        key_space: 1,
        key_shape: loadgen::KeyShape::Prefixed,
        value_bytes: 0,
        seed: 1,
        ops_max: 1,
        op_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        tls: None,
    };
    let mut last_error = anyhow::anyhow!("no attempt");
    while Instant::now() < deadline {
        match read_keys_once(endpoint, prefix, &config).await {
            Ok(keys) => return Ok(keys),
            Err(e) => last_error = e,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last_error)
}

async fn read_keys_once(
    endpoint: &str,
    prefix: &str,
    config: &LoadgenConfig,
) -> Result<Vec<String>> {
    let mut client = loadgen::connect(endpoint, config).await?;
    let range_end = prefix_end(prefix);
    let mut keys = Vec::new();
    let mut from: Vec<u8> = prefix.as_bytes().to_vec();
    // Bounded: each page adds READBACK_PAGE_KEYS keys or ends the loop.
    for _ in 0..10_000 {
        let options = GetOptions::new()
            .with_range(range_end.clone())
            .with_keys_only()
            .with_limit(READBACK_PAGE_KEYS);
        let response = client
            .get(from.clone(), Some(options))
            .await
            .map_err(|e| anyhow::anyhow!("range {prefix}: {}", describe_error(&e)))?;
        let page = response.kvs();
        for kv in page {
            keys.push(String::from_utf8_lossy(kv.key()).into_owned());
        }
        match page.last() {
            Some(last) if response.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return Ok(keys),
        }
    }
    anyhow::bail!("range {prefix}: more than 10000 pages")
}

/// The etcd range end of a prefix (last byte incremented).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    let last = end.pop().expect("non-empty prefix");
    assert!(last < 0xff, "prefix must not end in 0xff");
    end.push(last + 1);
    end
}

const RUN_HEADERS: [&str; 10] = [
    "system",
    "run",
    "leader",
    "new leader",
    "failover ms",
    "max pause ms",
    "errors",
    "acked",
    "lost",
    "note",
];

fn run_cells(r: &RunResult) -> Vec<String> {
    vec![
        system_name(r.system).to_string(),
        r.run.to_string(),
        r.leader_before.to_string(),
        r.leader_after.map_or("?".into(), |l| l.to_string()),
        match r.failover_ms {
            Some(ms) => format!("{ms:.0}{}", if r.first_by_probe { " (probe)" } else { "" }),
            None => "FAILED".into(),
        },
        format!("{:.0}", r.pause_ms_max),
        r.errors_after_kill.to_string(),
        r.acked_writes.to_string(),
        r.lost_writes.map_or("?".into(), |l| l.to_string()),
        r.note.clone(),
    ]
}

fn print_run(r: &RunResult) {
    let cells = run_cells(r);
    println!(
        "  failover {} ms, max pause {} ms, errors {}, acked {}, lost {}, new leader {}; {}",
        cells[4], cells[5], cells[6], cells[7], cells[8], cells[3], cells[9]
    );
}

const SUMMARY_HEADERS: [&str; 10] = [
    "system",
    "runs",
    "recovered",
    "failover ms p50",
    "min",
    "max",
    "max pause ms",
    "errors",
    "acked",
    "lost writes",
];

fn summary_rows(config: &FailoverConfig, results: &[RunResult]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for &system in &config.systems {
        let runs: Vec<&RunResult> = results.iter().filter(|r| r.system == system).collect();
        let mut times: Vec<f64> = runs.iter().filter_map(|r| r.failover_ms).collect();
        times.sort_by(f64::total_cmp);
        let stat = |v: Option<f64>| v.map_or("-".to_string(), |ms| format!("{ms:.0}"));
        let median = if times.is_empty() {
            None
        } else if times.len() % 2 == 1 {
            Some(times[times.len() / 2])
        } else {
            Some((times[times.len() / 2 - 1] + times[times.len() / 2]) / 2.0)
        };
        let lost_known = runs.iter().all(|r| r.lost_writes.is_some());
        let lost: u64 = runs.iter().filter_map(|r| r.lost_writes).sum();
        rows.push(vec![
            system_name(system).to_string(),
            runs.len().to_string(),
            times.len().to_string(),
            stat(median),
            stat(times.first().copied()),
            stat(times.last().copied()),
            format!(
                "{:.0}",
                runs.iter().map(|r| r.pause_ms_max).fold(0.0, f64::max)
            ),
            runs.iter()
                .map(|r| r.errors_after_kill)
                .sum::<u64>()
                .to_string(),
            runs.iter().map(|r| r.acked_writes).sum::<u64>().to_string(),
            if lost_known {
                lost.to_string()
            } else {
                format!("{lost} (read-back failed in some runs)")
            },
        ]);
    }
    rows
}

fn runs_csv(results: &[RunResult]) -> String {
    let mut out = String::from(
        "system,run,leader_before,leader_after,failover_ms,first_by_probe,pause_ms_max,errors_after_kill,acked_writes,lost_writes,note\n",
    );
    for r in results {
        out.push_str(&format!(
            "{},{},{},{},{},{},{:.1},{},{},{},\"{}\"\n",
            system_name(r.system),
            r.run,
            r.leader_before,
            r.leader_after.map_or(String::new(), |l| l.to_string()),
            r.failover_ms.map_or(String::new(), |ms| format!("{ms:.1}")),
            r.first_by_probe,
            r.pause_ms_max,
            r.errors_after_kill,
            r.acked_writes,
            r.lost_writes.map_or(String::new(), |l| l.to_string()),
            r.note.replace('"', "'"),
        ));
    }
    out
}

fn describe_setup(config: &FailoverConfig) -> String {
    format!(
        "# failover\n\n\
         - SIGKILL of the leader process after {:?} of load; {} closed-loop writers on the \
         non-leader endpoints (distinct key per write), op timeout {:?}, plus one probe \
         write every {:?} from the kill on\n\
         - failover = kill → first successful completion of a write issued after the kill; \
         a run ends {:?} after that, or fails at {:?}\n\
         - etcd: {} members (loopback); bftd: {} `bftd run` processes, durability {}\n\
         - {} runs per system, fresh cluster each run, one machine with {} cores\n",
        config.load_before_kill,
        config.writers,
        config.op_timeout,
        config.probe_interval,
        config.after_recovery,
        config.recovery_timeout,
        config.etcd_members,
        config.bftd_replicas,
        config.durability,
        config.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
    }

    #[test]
    fn pause_spans_the_kill() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let ms = Duration::from_millis;
        let successes = [(t0 - ms(30), t0 - ms(20)), (t0 + ms(40), t0 + ms(50))];
        assert_eq!(pause_across(&successes, t0, t0 + ms(1000)), ms(70));
        // No success after the kill: the pause lasts until the end.
        assert_eq!(pause_across(&successes[..1], t0, t0 + ms(1000)), ms(1020));
    }
}
