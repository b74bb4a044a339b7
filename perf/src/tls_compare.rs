//! `tls-compare`: put latency over mutual TLS beside plaintext, bftd and
//! etcd, in one run, interleaved.
//!
//! One bftd cluster (`bftd init --tls`: mutual TLS on each client port and
//! a plaintext listener beside it) and one etcd cluster (plaintext and
//! TLS listeners, `--cert-file --key-file --trusted-ca-file
//! --client-cert-auth`) run at the same time and share one CA: etcd serves
//! replica 0's certificate (SANs 127.0.0.1 and localhost), every client
//! presents the same CN=root client certificate. Each round measures, for
//! each client count, bftd plaintext, bftd mTLS, etcd plaintext, etcd mTLS
//! in turn (even rounds in reverse), so drift of the shared machine and
//! what one run leaves behind (disk writeback) hit all four alike. Each client
//! holds one connection for the whole run: this measures the per-request
//! cost of TLS, not handshakes.
//!
//! Writes `<out>/tls-compare.md` (setup, every run, medians over rounds)
//! and `<out>/tls-compare.csv`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::runtime::Runtime;

use crate::bftd_cluster::{BftdCluster, BftdClusterConfig};
use crate::etcd_cluster::{EtcdCluster, EtcdClusterConfig, EtcdTls};
use crate::kv_compare::remove_stale_scratch_dirs;
use crate::loadgen::{self, us_to_ms, ClientTls, LoadgenConfig, LoadgenReport};
use crate::procs::ScratchDir;
use crate::report::{markdown_table, text_table};

#[derive(Clone, Debug)]
pub struct TlsCompareConfig {
    pub client_counts: Vec<u32>,
    /// Times the whole interleaved sequence is repeated.
    pub rounds: u32,
    /// Everything but endpoints, clients and TLS.
    pub load: LoadgenConfig,
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

/// One measured run.
struct Run {
    round: u32,
    system: &'static str,
    transport: &'static str,
    report: LoadgenReport,
}

pub fn run(runtime: &Runtime, config: &TlsCompareConfig) -> Result<()> {
    anyhow::ensure!(!config.client_counts.is_empty(), "--clients needs a count");
    anyhow::ensure!(config.rounds >= 1, "--rounds must be at least 1");
    crate::bftd_demo::BftdDemo::check_binary(&config.bftd_bin)?;
    let log_dir = config.out_dir.join("logs").join("tls-compare");
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

    // bftd first: its `init --tls` writes the CA both systems use.
    let bftd_dir = scratch.path().join("bftd");
    let mut bftd = BftdCluster::start(&BftdClusterConfig {
        bftd_bin: config.bftd_bin.clone(),
        replicas: config.bftd_replicas,
        base_port: config.bftd_base_port,
        durability: config.durability.clone(),
        dir: bftd_dir.clone(),
        log_dir: log_dir.clone(),
        log_prefix: "bftd".into(),
        hosts: Vec::new(),
        tls: true,
    })?;
    let tls_dir = bftd_dir.join("tls");
    let client = ClientTls::read(
        &tls_dir.join("ca.pem"),
        &tls_dir.join("client-root.pem"),
        &tls_dir.join("client-root-key.pem"),
    )?;
    let data_root = scratch.path().join("etcd");
    std::fs::create_dir_all(&data_root)
        .with_context(|| format!("create {}", data_root.display()))?;
    let mut etcd = EtcdCluster::start(EtcdClusterConfig {
        etcd_bin: config.etcd_bin.clone(),
        members: config.etcd_members,
        base_port: config.etcd_base_port,
        data_root,
        log_dir: log_dir.clone(),
        cluster_token: format!("bftd-perf-tls-{}", std::process::id()),
        hosts: Vec::new(),
        tls: Some(EtcdTls {
            cert_file: tls_dir.join("replica-0.pem"),
            key_file: tls_dir.join("replica-0-key.pem"),
            trusted_ca_file: tls_dir.join("ca.pem"),
        }),
    })?;
    runtime.block_on(bftd.wait_ready(config.ready_timeout))?;
    runtime.block_on(etcd.wait_ready(config.ready_timeout))?;
    let targets: [(&'static str, &'static str, Vec<String>, Option<ClientTls>); 4] = [
        ("bftd", "plaintext", bftd.client_endpoints(), None),
        ("bftd", "mTLS", bftd.tls_endpoints(), Some(client.clone())),
        ("etcd", "plaintext", etcd.client_endpoints(), None),
        ("etcd", "mTLS", etcd.tls_endpoints(), Some(client)),
    ];
    println!(
        "bftd: {} (TLS) / {} (plaintext); etcd: {} / {}",
        targets[1].2.join(","),
        targets[0].2.join(","),
        targets[3].2.join(","),
        targets[2].2.join(",")
    );
    let mut runs = Vec::new();
    let measured = (|| -> Result<()> {
        for round in 1..=config.rounds {
            for &clients in &config.client_counts {
                // Even rounds run the sequence backwards (ABBA), so no
                // configuration always follows the same neighbour (e.g.
                // the disk writeback of etcd's 32-client run).
                let order: Vec<usize> = if round % 2 == 1 {
                    (0..targets.len()).collect()
                } else {
                    (0..targets.len()).rev().collect()
                };
                for (system, transport, endpoints, tls) in order.iter().map(|&i| &targets[i]) {
                    let load = LoadgenConfig {
                        endpoints: endpoints.clone(),
                        clients,
                        tls: tls.clone(),
                        ..config.load.clone()
                    };
                    println!("round {round}: {system} {transport}, {clients} clients");
                    let report = runtime
                        .block_on(loadgen::run(&load))
                        .with_context(|| format!("{system} {transport} {clients} clients"))?;
                    report.print_human();
                    runs.push(Run {
                        round,
                        system,
                        transport,
                        report,
                    });
                }
            }
        }
        Ok(())
    })();
    bftd.stop();
    etcd.stop()?;
    drop(scratch);
    measured?;

    let (headers, every) = every_run(&runs);
    let (sum_headers, summary) = medians(&runs, config);
    println!();
    print!("{}", text_table(&sum_headers, &summary, 2));
    let md = format!(
        "{}\n## Medians over {} rounds\n\n{}\n## Every run\n\n{}",
        describe_setup(config),
        config.rounds,
        markdown_table(&sum_headers, &summary, 2),
        markdown_table(&headers, &every, 3)
    );
    let md_path = config.out_dir.join("tls-compare.md");
    std::fs::write(&md_path, md).with_context(|| format!("write {}", md_path.display()))?;
    let csv_path = config.out_dir.join("tls-compare.csv");
    let mut csv = headers.join(",") + "\n";
    for line in &every {
        csv.push_str(&line.join(","));
        csv.push('\n');
    }
    std::fs::write(&csv_path, csv).with_context(|| format!("write {}", csv_path.display()))?;
    println!("\nwrote {} and {}", md_path.display(), csv_path.display());
    Ok(())
}

fn ms(us: u64) -> String {
    format!("{:.2}", us_to_ms(us))
}

fn every_run(runs: &[Run]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let headers = vec![
        "system",
        "transport",
        "round",
        "clients",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
    ];
    let body = runs
        .iter()
        .map(|r| {
            vec![
                r.system.to_string(),
                r.transport.to_string(),
                r.round.to_string(),
                r.report.clients.to_string(),
                format!("{:.0}", r.report.ops_per_s),
                ms(r.report.latency_us_p50),
                ms(r.report.latency_us_p99),
                ms(r.report.latency_us_max),
                r.report.errors.to_string(),
            ]
        })
        .collect();
    (headers, body)
}

fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty());
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Per system, transport and client count: medians of ops/s, p50, p99
/// over rounds, the largest max, all errors, and p50 against plaintext.
fn medians(runs: &[Run], config: &TlsCompareConfig) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let headers = vec![
        "system",
        "transport",
        "clients",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "p50 vs plaintext",
    ];
    let mut body = Vec::new();
    for &clients in &config.client_counts {
        for system in ["bftd", "etcd"] {
            let p50_of = |transport: &str| {
                median(
                    runs.iter()
                        .filter(|r| {
                            r.system == system
                                && r.transport == transport
                                && r.report.clients == clients
                        })
                        .map(|r| us_to_ms(r.report.latency_us_p50))
                        .collect(),
                )
            };
            let plain_p50 = p50_of("plaintext");
            for transport in ["plaintext", "mTLS"] {
                let these: Vec<&Run> = runs
                    .iter()
                    .filter(|r| {
                        r.system == system
                            && r.transport == transport
                            && r.report.clients == clients
                    })
                    .collect();
                let m = |f: &dyn Fn(&LoadgenReport) -> f64| {
                    median(these.iter().map(|r| f(&r.report)).collect())
                };
                let p50 = m(&|r| us_to_ms(r.latency_us_p50));
                body.push(vec![
                    system.to_string(),
                    transport.to_string(),
                    clients.to_string(),
                    format!("{:.0}", m(&|r| r.ops_per_s)),
                    format!("{p50:.2}"),
                    format!("{:.2}", m(&|r| us_to_ms(r.latency_us_p99))),
                    ms(these
                        .iter()
                        .map(|r| r.report.latency_us_max)
                        .max()
                        .unwrap_or(0)),
                    these
                        .iter()
                        .map(|r| r.report.errors)
                        .sum::<u64>()
                        .to_string(),
                    format!("{:+.0}%", 100.0 * (p50 / plain_p50 - 1.0)),
                ]);
            }
        }
    }
    (headers, body)
}

fn describe_setup(config: &TlsCompareConfig) -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let etcd_version = std::process::Command::new(&config.etcd_bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "etcd version unknown".to_string());
    let load = &config.load;
    format!(
        "# tls-compare\n\n\
         - op: {}, key space {}, value {} B; closed loop, {:?} measured after {:?} warm-up per run\n\
         - {} rounds; per client count, odd rounds run bftd plaintext, bftd mTLS, etcd plaintext, etcd mTLS, \
         even rounds the reverse\n\
         - mutual TLS: TLS 1.3, ECDSA P-256 certificates from one test CA (`bftd init --tls`), client CN=root; \
         bftd: rustls (ring), etcd: Go crypto/tls with --client-cert-auth\n\
         - etcd: {} members ({etcd_version}, fsync), plaintext and TLS listeners on each; bftd: {} replicas, \
         durability {}, TLS client port plus a plaintext listener (client_plain_addr) on each\n\
         - both clusters run at once; load generator and all servers on one machine with {cores} cores\n",
        load.op.name(),
        load.key_space,
        load.value_bytes,
        load.duration,
        load.warmup,
        config.rounds,
        config.etcd_members,
        config.bftd_replicas,
        config.durability,
    )
}
