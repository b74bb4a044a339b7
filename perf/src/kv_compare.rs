//! `kv-compare`: etcd and bftd side by side, same client, same machine, one
//! run.
//!
//! Layout under the out dir:
//!   logs/kv-compare/etcd-N.log, bftd-demo.log  server logs (replaced each run)
//!   scratch-<pid>/                              data dirs, removed at the end
//!   kv-compare.csv, kv-compare.md               results

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::runtime::Runtime;

use crate::bftd_demo::{BftdDemo, BftdDemoConfig};
use crate::etcd_cluster::{EtcdCluster, EtcdClusterConfig};
use crate::loadgen::{self, LoadgenConfig};
use crate::procs::{self, ScratchDir};
use crate::report::{self, Row};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum System {
    Etcd,
    Bftd,
}

#[derive(Clone, Debug)]
pub struct KvCompareConfig {
    /// Client counts to measure, in order, for each system.
    pub client_counts: Vec<u32>,
    /// Everything but endpoints and clients, shared by every run.
    pub load: LoadgenConfig,
    pub systems: Vec<System>,
    pub etcd_bin: PathBuf,
    pub etcd_members: usize,
    pub etcd_base_port: u16,
    pub bftd_bin: PathBuf,
    pub bftd_replicas: u16,
    pub bftd_base_port: u16,
    pub durability: String,
    pub ready_timeout: Duration,
    pub out_dir: PathBuf,
}

/// Runs every requested system, prints the table and writes CSV/Markdown.
pub fn run(runtime: &Runtime, config: &KvCompareConfig) -> Result<Vec<Row>> {
    anyhow::ensure!(
        !config.client_counts.is_empty(),
        "--clients needs at least one count"
    );
    anyhow::ensure!(!config.systems.is_empty(), "nothing to run");
    if config.systems.contains(&System::Bftd) {
        // Fail before spending a minute on etcd.
        BftdDemo::check_binary(&config.bftd_bin)?;
    }
    // Each benchmark replaces only its own logs.
    let log_dir = config.out_dir.join("logs").join("kv-compare");
    if log_dir.exists() {
        std::fs::remove_dir_all(&log_dir)
            .with_context(|| format!("remove {}", log_dir.display()))?;
    }
    std::fs::create_dir_all(&log_dir).with_context(|| format!("create {}", log_dir.display()))?;
    remove_stale_scratch_dirs(&config.out_dir);
    let scratch = ScratchDir::create(
        config
            .out_dir
            .join(format!("scratch-{}", std::process::id())),
    )?;

    let mut rows = Vec::new();
    for system in &config.systems {
        match system {
            System::Etcd => rows.extend(run_etcd(runtime, config, scratch.path(), &log_dir)?),
            System::Bftd => rows.extend(run_bftd(runtime, config, scratch.path(), &log_dir)?),
        }
    }
    drop(scratch);

    let rows = report::side_by_side(&rows);
    println!();
    print!("{}", report::to_text(&rows));
    let csv_path = config.out_dir.join("kv-compare.csv");
    let md_path = config.out_dir.join("kv-compare.md");
    std::fs::write(&csv_path, report::to_csv(&rows))
        .with_context(|| format!("write {}", csv_path.display()))?;
    let markdown = format!("{}\n{}", describe_setup(config), report::to_markdown(&rows));
    std::fs::write(&md_path, markdown).with_context(|| format!("write {}", md_path.display()))?;
    println!("\nwrote {} and {}", csv_path.display(), md_path.display());
    Ok(rows)
}

/// Removes `scratch-<pid>` dirs left by runs that were SIGKILLed (a killed
/// run cannot clean up; its servers die with it through PR_SET_PDEATHSIG).
pub fn remove_stale_scratch_dirs(out_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(out_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("scratch-")
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid > 0 && !procs::is_alive(pid) {
            eprintln!("removing stale {}", entry.path().display());
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                eprintln!("remove {}: {e}", entry.path().display());
            }
        }
    }
}

fn run_etcd(
    runtime: &Runtime,
    config: &KvCompareConfig,
    scratch: &Path,
    log_dir: &Path,
) -> Result<Vec<Row>> {
    if config.durability != "fsync" {
        eprintln!("note: etcd 3.4 has no --unsafe-no-fsync; etcd always runs with fsync");
    }
    let data_root = scratch.join("etcd");
    std::fs::create_dir_all(&data_root)
        .with_context(|| format!("create {}", data_root.display()))?;
    let mut cluster = EtcdCluster::start(EtcdClusterConfig {
        etcd_bin: config.etcd_bin.clone(),
        members: config.etcd_members,
        base_port: config.etcd_base_port,
        data_root,
        log_dir: log_dir.to_path_buf(),
        cluster_token: format!("bftd-perf-{}", std::process::id()),
        hosts: Vec::new(),
        tls: None,
    })?;
    println!(
        "etcd: {} members at {}",
        config.etcd_members,
        cluster.client_endpoints().join(",")
    );
    runtime.block_on(cluster.wait_ready(config.ready_timeout))?;
    let rows = measure(
        runtime,
        config,
        "etcd",
        "fsync",
        &cluster.client_endpoints(),
    )?;
    cluster.stop()?;
    Ok(rows)
}

fn run_bftd(
    runtime: &Runtime,
    config: &KvCompareConfig,
    scratch: &Path,
    log_dir: &Path,
) -> Result<Vec<Row>> {
    let mut demo = BftdDemo::start(&BftdDemoConfig {
        bftd_bin: config.bftd_bin.clone(),
        replicas: config.bftd_replicas,
        base_port: config.bftd_base_port,
        data_dir: scratch.join("bftd"),
        durability: config.durability.clone(),
        log_path: log_dir.join("bftd-demo.log"),
    })?;
    println!(
        "bftd: {} replicas at {}",
        config.bftd_replicas,
        demo.endpoints().join(",")
    );
    runtime.block_on(demo.wait_ready(config.ready_timeout))?;
    let rows = measure(
        runtime,
        config,
        "bftd",
        &config.durability,
        demo.endpoints(),
    )?;
    demo.stop();
    Ok(rows)
}

/// One loadgen run per client count against `endpoints`.
fn measure(
    runtime: &Runtime,
    config: &KvCompareConfig,
    system: &str,
    durability: &str,
    endpoints: &[String],
) -> Result<Vec<Row>> {
    let mut rows = Vec::with_capacity(config.client_counts.len());
    for &clients in &config.client_counts {
        let load = LoadgenConfig {
            endpoints: endpoints.to_vec(),
            clients,
            ..config.load.clone()
        };
        println!(
            "{system}: {clients} clients, {:?} after {:?} warm-up",
            load.duration, load.warmup
        );
        let result = runtime
            .block_on(loadgen::run(&load))
            .with_context(|| format!("{system} loadgen with {clients} clients"))?;
        result.print_human();
        rows.push(Row::new(system, durability, &result));
    }
    Ok(rows)
}

fn describe_setup(config: &KvCompareConfig) -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let etcd_version = Command::new(&config.etcd_bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "etcd version unknown".to_string());
    let load = &config.load;
    format!(
        "# kv-compare\n\n\
         - op: {}, key space {}, value {} B, seed {}\n\
         - closed loop, {:?} measured after {:?} warm-up, op timeout {:?}\n\
         - etcd: {} members ({etcd_version}, always fsync); bftd: {} replicas, durability {}\n\
         - load generator and all servers on one machine with {cores} cores\n",
        load.op.name(),
        load.key_space,
        load.value_bytes,
        load.seed,
        load.duration,
        load.warmup,
        load.op_timeout,
        config.etcd_members,
        config.bftd_replicas,
        config.durability,
    )
}
