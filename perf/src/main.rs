//! bftd-perf: load generator and side-by-side benchmarks (bftd vs etcd).

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use perf::failover::{self, FailoverConfig};
use perf::flood::{self, FloodConfig, VictimRole};
use perf::flooder::{self, FloodKind};
use perf::kv_compare::{self, KvCompareConfig, System};
use perf::loadgen::{self, KeyShape, LoadgenConfig, Op};
use perf::procs;
use perf::tls_compare::{self, TlsCompareConfig};
use perf::watch_bench::{self, WatchBenchConfig};

#[derive(Parser, Debug)]
#[command(
    name = "bftd-perf",
    version,
    about = "Load generator and side-by-side benchmarks for bftd and etcd"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Closed-loop etcd v3 load against running servers.
    Loadgen(LoadgenArgs),
    /// Start a loopback etcd cluster and the bftd demo cluster in turn and
    /// measure both with the same load generator.
    KvCompare(KvCompareArgs),
    /// Put latency over mutual TLS beside plaintext, bftd and etcd (with
    /// --cert-file/--key-file/--trusted-ca-file/--client-cert-auth), both
    /// clusters up at once, runs interleaved.
    TlsCompare(TlsCompareArgs),
    /// Watch side by side: put -> event latency at a watcher on another
    /// member/replica, and many watchers on one (RSS, events/s fan-out).
    Watch(WatchArgs),
    /// Crash (SIGKILL) the leader under write load and measure the failover
    /// time, writer pauses, errors and lost writes; etcd and bftd.
    Failover(FailoverArgs),
    /// The KmMR flood experiment: replicas in network namespaces, one victim
    /// flooded with UDP garbage or SYNs at stepped rates; latency of a
    /// closed-loop 0/0 workload. Needs root.
    Flood(FloodArgs),
    /// Remove what a SIGKILLed `flood` left behind: network namespaces,
    /// bridge, veths, firewall rules, the flooder cgroup. (`flood` also
    /// does this when it starts.)
    FloodCleanup,
    /// Redraw the flood plot (SVG) from a flood.csv.
    PlotFlood(PlotFloodArgs),
    /// One self-contained HTML page from a run's CSVs: a table per CSV,
    /// the flood plot, latency and throughput per system.
    Report(ReportArgs),
    /// (Internal, used by `flood`.) Send UDP garbage at a fixed rate.
    #[command(hide = true)]
    FloodSend(FloodSendArgs),
}

/// The workload, shared by both subcommands.
#[derive(Args, Debug, Clone)]
struct WorkloadArgs {
    #[arg(long, value_enum, default_value = "put")]
    op: Op,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    warmup_s: f64,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 1000)]
    key_space: u64,
    /// `one-byte`: keys of one byte (key space at most 62).
    #[arg(long, value_enum, default_value = "prefixed")]
    key_shape: KeyShape,
    #[arg(long, default_value_t = 64)]
    value_bytes: usize,
    /// Seed of the key choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Upper bound on operations per run (all clients, warm-up included).
    #[arg(long, default_value_t = 50_000_000)]
    ops_max: u64,
    /// Per-operation timeout; a timed-out operation counts as an error.
    #[arg(long, default_value_t = 5000)]
    op_timeout_ms: u64,
}

#[derive(Args, Debug)]
struct LoadgenArgs {
    /// Comma-separated host:port list; clients are assigned round-robin.
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    #[arg(long, default_value_t = 32)]
    clients: u32,
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Durability {
    Fsync,
    Memory,
}

#[derive(Args, Debug)]
struct KvCompareArgs {
    /// Comma-separated client counts, each measured on both systems.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    clients: Vec<u32>,
    #[command(flatten)]
    workload: WorkloadArgs,
    #[arg(long, default_value = "target/release/bftd")]
    bftd_bin: PathBuf,
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd_bin: PathBuf,
    /// bftd's durability (etcd 3.4 always fsyncs).
    #[arg(long, value_enum, default_value = "fsync")]
    durability: Durability,
    /// Results, logs and (temporary) data dirs go here.
    #[arg(long, default_value = "perf/out")]
    out: PathBuf,
    /// Run only one system.
    #[arg(long, value_enum)]
    only: Option<System>,
    #[arg(long, default_value_t = 3)]
    etcd_members: usize,
    /// Member i listens on base+2i (clients) and base+2i+1 (peers).
    #[arg(long, default_value_t = 32379)]
    etcd_base_port: u16,
    #[arg(long, default_value_t = 4)]
    bftd_replicas: u16,
    /// Replica i serves the etcd API on base+i.
    #[arg(long, default_value_t = 10379)]
    bftd_base_port: u16,
    /// Bound on the wait for a cluster to accept puts on every endpoint.
    #[arg(long, default_value_t = 60)]
    ready_timeout_s: u64,
}

#[derive(Args, Debug)]
struct TlsCompareArgs {
    /// Comma-separated client counts.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    clients: Vec<u32>,
    /// Repetitions of the interleaved sequence (medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    #[command(flatten)]
    workload: WorkloadArgs,
    #[arg(long, default_value = "target/release/bftd")]
    bftd_bin: PathBuf,
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd_bin: PathBuf,
    /// bftd's durability (etcd 3.4 always fsyncs).
    #[arg(long, value_enum, default_value = "fsync")]
    durability: Durability,
    /// Results, logs and (temporary) data dirs go here.
    #[arg(long, default_value = "perf/out")]
    out: PathBuf,
    #[arg(long, default_value_t = 3)]
    etcd_members: usize,
    /// Member i listens on base+2i (clients) and base+2i+1 (peers), and
    /// with TLS on base+2*members+i.
    #[arg(long, default_value_t = 32379)]
    etcd_base_port: u16,
    #[arg(long, default_value_t = 4)]
    bftd_replicas: u16,
    /// Replica i serves TLS on base+i, plaintext on base+5000+i (consensus
    /// base+10000+i, HTTP base+20000+i).
    #[arg(long, default_value_t = 10379)]
    bftd_base_port: u16,
    #[arg(long, default_value_t = 60)]
    ready_timeout_s: u64,
}

#[derive(Args, Debug)]
struct WatchArgs {
    /// Puts of the latency measurement (one writer, closed loop).
    #[arg(long, default_value_t = 2000)]
    puts: u32,
    /// Watchers of the fan-out measurement, all on member/replica 1.
    #[arg(long, default_value_t = 10_000)]
    watchers: u32,
    /// Watchers per gRPC stream (bftd's default allows 128 streams per
    /// connection; each stream here has its own connection).
    #[arg(long, default_value_t = 100)]
    watchers_per_stream: u32,
    /// Puts of the fan-out measurement, and their rate per second.
    #[arg(long, default_value_t = 200)]
    fanout_puts: u32,
    #[arg(long, default_value_t = 100)]
    fanout_rate: u32,
    #[arg(long, default_value_t = 64)]
    value_bytes: usize,
    #[arg(long, default_value = "target/release/bftd")]
    bftd_bin: PathBuf,
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd_bin: PathBuf,
    /// bftd's durability (etcd 3.4 always fsyncs).
    #[arg(long, value_enum, default_value = "fsync")]
    durability: Durability,
    /// Results, logs and (temporary) data dirs go here.
    #[arg(long, default_value = "perf/out")]
    out: PathBuf,
    /// Run only one system.
    #[arg(long, value_enum)]
    only: Option<System>,
    #[arg(long, default_value_t = 3)]
    etcd_members: usize,
    #[arg(long, default_value_t = 32379)]
    etcd_base_port: u16,
    #[arg(long, default_value_t = 4)]
    bftd_replicas: u16,
    #[arg(long, default_value_t = 10379)]
    bftd_base_port: u16,
    #[arg(long, default_value_t = 60)]
    ready_timeout_s: u64,
}

#[derive(Args, Debug)]
struct FailoverArgs {
    /// Runs per system, each on a fresh cluster.
    #[arg(long, default_value_t = 5)]
    runs: u32,
    /// Closed-loop writers, spread over the non-leader endpoints.
    #[arg(long, default_value_t = 16)]
    writers: u32,
    #[arg(long, default_value = "target/release/bftd")]
    bftd_bin: PathBuf,
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd_bin: PathBuf,
    /// Run only one system.
    #[arg(long, value_enum)]
    only: Option<System>,
    #[arg(long, value_enum, default_value = "fsync")]
    durability: Durability,
    #[arg(long, default_value = "perf/out")]
    out: PathBuf,
    /// Seconds of load before the leader is killed.
    #[arg(long, default_value_t = 2.0)]
    load_before_kill_s: f64,
    /// A run with no successful write issued after the kill by then fails.
    #[arg(long, default_value_t = 15.0)]
    recovery_timeout_s: f64,
    /// Seconds of load kept after the first post-kill success.
    #[arg(long, default_value_t = 2.0)]
    after_recovery_s: f64,
    /// Per-write timeout of the writers.
    #[arg(long, default_value_t = 1000)]
    op_timeout_ms: u64,
    /// From the kill on, one extra write every this many ms (resolution).
    #[arg(long, default_value_t = 20)]
    probe_interval_ms: u64,
    #[arg(long, default_value_t = 3)]
    etcd_members: usize,
    #[arg(long, default_value_t = 13379)]
    etcd_base_port: u16,
    #[arg(long, default_value_t = 4)]
    bftd_replicas: u16,
    /// Replica i: clients base+i, consensus base+10000+i, HTTP base+20000+i.
    #[arg(long, default_value_t = 11379)]
    bftd_base_port: u16,
    #[arg(long, default_value_t = 60)]
    ready_timeout_s: u64,
}

#[derive(Args, Debug)]
struct FloodArgs {
    /// Fewer, shorter steps (a smoke run of a couple of minutes).
    #[arg(long)]
    quick: bool,
    /// Closed-loop clients, spread over the non-victim endpoints.
    #[arg(long, default_value_t = 8)]
    clients: u32,
    #[arg(long, default_value = "target/release/bftd")]
    bftd_bin: PathBuf,
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd_bin: PathBuf,
    #[arg(long, value_enum)]
    only: Option<System>,
    #[arg(long, value_enum, default_value = "fsync")]
    durability: Durability,
    /// Floods to run (default: all three).
    #[arg(long, value_enum, value_delimiter = ',')]
    kinds: Vec<FloodKind>,
    /// Victim roles, in order (default: backup,leader).
    #[arg(long, value_enum, value_delimiter = ',')]
    victims: Vec<VictimRole>,
    /// Rate steps as fractions of the flooder's calibrated maximum
    /// (default 0.25,0.5,1; --quick: 1). A no-flood step always comes first.
    #[arg(long, value_delimiter = ',')]
    steps: Vec<f64>,
    /// Seconds measured per step (default 10; --quick: 3).
    #[arg(long)]
    measure_s: Option<f64>,
    /// Seconds of load (and flood) before measuring (default 2; --quick: 1).
    #[arg(long)]
    warmup_s: Option<f64>,
    /// The flooder's CPU quota in percent of one core (cgroup).
    #[arg(long, default_value_t = 50)]
    flooder_cpu_pct: u32,
    /// split: the flooded replica (member) and the flooder on CPU 1, the
    /// other replicas (members) and the load generator on CPU 0, as if they
    /// were separate hosts; none: the scheduler places everything.
    #[arg(long, value_enum, default_value = "split")]
    placement: perf::placement::Placement,
    #[arg(long, default_value_t = 5000)]
    op_timeout_ms: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value = "perf/out")]
    out: PathBuf,
    #[arg(long, default_value_t = 60)]
    ready_timeout_s: u64,
}

#[derive(Args, Debug)]
struct PlotFloodArgs {
    #[arg(long, default_value = "perf/out/flood.csv")]
    csv: PathBuf,
    #[arg(long, default_value = "perf/out/flood.svg")]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct ReportArgs {
    /// Results directories (searched for *.csv) or CSV files.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// The page to write (default: report.html in the one directory
    /// given, else perf/out/report.html).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The page's title (default: the inputs).
    #[arg(long)]
    title: Option<String>,
}

#[derive(Args, Debug)]
struct FloodSendArgs {
    #[arg(long)]
    target: SocketAddrV4,
    #[arg(long)]
    payload_bytes: usize,
    /// Datagrams per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pps: u64,
    #[arg(long)]
    duration_s: f64,
}

impl Durability {
    fn name(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Memory => "memory",
        }
    }
}

fn systems(only: Option<System>) -> Vec<System> {
    match only {
        Some(system) => vec![system],
        None => vec![System::Etcd, System::Bftd],
    }
}

impl WorkloadArgs {
    fn to_config(&self, endpoints: Vec<String>, clients: u32) -> Result<LoadgenConfig> {
        Ok(LoadgenConfig {
            endpoints,
            clients,
            op: self.op,
            warmup: seconds(self.warmup_s, "--warmup-s")?,
            duration: seconds(self.duration_s, "--duration-s")?,
            key_space: self.key_space,
            key_shape: self.key_shape,
            value_bytes: self.value_bytes,
            seed: self.seed,
            ops_max: self.ops_max,
            op_timeout: Duration::from_millis(self.op_timeout_ms),
            connect_timeout: Duration::from_secs(5),
            tls: None,
        })
    }
}

fn seconds(value: f64, flag: &str) -> Result<Duration> {
    anyhow::ensure!(
        (0.0..1e6).contains(&value),
        "{flag} must be in [0, 1e6), got {value}"
    );
    Ok(Duration::from_secs_f64(value))
}

fn main() {
    procs::install_panic_hook();
    let cli = Cli::parse();
    // The flooder is a plain loop: no runtime, no signal handling.
    if let Command::FloodSend(args) = &cli.command {
        let outcome = seconds(args.duration_s, "--duration-s").and_then(|duration| {
            flooder::send_udp(args.target, args.payload_bytes, args.pps, duration)
        });
        if let Err(e) = outcome {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("build tokio runtime")?;
    runtime.spawn(exit_on_signal());
    match cli.command {
        Command::Loadgen(args) => {
            let config = args.workload.to_config(args.endpoints, args.clients)?;
            let report = runtime.block_on(loadgen::run(&config))?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                report.print_human();
            }
            anyhow::ensure!(
                report.ops > 0,
                "no operation succeeded in the measurement window"
            );
        }
        Command::KvCompare(args) => {
            let systems = match args.only {
                Some(system) => vec![system],
                None => vec![System::Etcd, System::Bftd],
            };
            let durability = args.durability.name();
            let config = KvCompareConfig {
                client_counts: args.clients,
                load: args.workload.to_config(Vec::new(), 0)?,
                systems,
                etcd_bin: args.etcd_bin,
                etcd_members: args.etcd_members,
                etcd_base_port: args.etcd_base_port,
                bftd_bin: args.bftd_bin,
                bftd_replicas: args.bftd_replicas,
                bftd_base_port: args.bftd_base_port,
                durability: durability.to_string(),
                ready_timeout: Duration::from_secs(args.ready_timeout_s),
                out_dir: args.out,
            };
            kv_compare::run(&runtime, &config)?;
        }
        Command::TlsCompare(args) => {
            let config = TlsCompareConfig {
                client_counts: args.clients,
                rounds: args.rounds,
                load: args.workload.to_config(Vec::new(), 0)?,
                etcd_bin: args.etcd_bin,
                etcd_members: args.etcd_members,
                etcd_base_port: args.etcd_base_port,
                bftd_bin: args.bftd_bin,
                bftd_replicas: args.bftd_replicas,
                bftd_base_port: args.bftd_base_port,
                durability: args.durability.name().to_string(),
                ready_timeout: Duration::from_secs(args.ready_timeout_s),
                out_dir: args.out,
            };
            tls_compare::run(&runtime, &config)?;
        }
        Command::Watch(args) => {
            let config = WatchBenchConfig {
                systems: systems(args.only),
                puts: args.puts,
                watchers: args.watchers,
                watchers_per_stream: args.watchers_per_stream,
                fanout_puts: args.fanout_puts,
                fanout_rate: args.fanout_rate,
                value_bytes: args.value_bytes,
                etcd_bin: args.etcd_bin,
                etcd_members: args.etcd_members,
                etcd_base_port: args.etcd_base_port,
                bftd_bin: args.bftd_bin,
                bftd_replicas: args.bftd_replicas,
                bftd_base_port: args.bftd_base_port,
                durability: args.durability.name().to_string(),
                ready_timeout: Duration::from_secs(args.ready_timeout_s),
                out_dir: args.out,
            };
            watch_bench::run(&runtime, &config)?;
        }
        Command::Failover(args) => {
            let config = FailoverConfig {
                runs: args.runs,
                writers: args.writers,
                systems: systems(args.only),
                etcd_bin: args.etcd_bin,
                etcd_members: args.etcd_members,
                etcd_base_port: args.etcd_base_port,
                bftd_bin: args.bftd_bin,
                bftd_replicas: args.bftd_replicas,
                bftd_base_port: args.bftd_base_port,
                durability: args.durability.name().to_string(),
                load_before_kill: seconds(args.load_before_kill_s, "--load-before-kill-s")?,
                recovery_timeout: seconds(args.recovery_timeout_s, "--recovery-timeout-s")?,
                after_recovery: seconds(args.after_recovery_s, "--after-recovery-s")?,
                op_timeout: Duration::from_millis(args.op_timeout_ms),
                probe_interval: Duration::from_millis(args.probe_interval_ms),
                ready_timeout: Duration::from_secs(args.ready_timeout_s),
                out_dir: args.out,
            };
            let results = failover::run(&runtime, &config)?;
            let failed = results.iter().filter(|r| r.failover_ms.is_none()).count();
            let lost: u64 = results.iter().filter_map(|r| r.lost_writes).sum();
            anyhow::ensure!(
                failed == 0 && lost == 0,
                "{failed} run(s) did not recover, {lost} acknowledged write(s) lost"
            );
        }
        Command::Flood(args) => {
            let quick = args.quick;
            let pick = |value: Option<f64>, full: f64, quick_value: f64| {
                value.unwrap_or(if quick { quick_value } else { full })
            };
            let config = FloodConfig {
                systems: systems(args.only),
                etcd_bin: args.etcd_bin,
                bftd_bin: args.bftd_bin,
                durability: args.durability.name().to_string(),
                clients: args.clients,
                warmup: seconds(pick(args.warmup_s, 2.0, 1.0), "--warmup-s")?,
                measure: seconds(pick(args.measure_s, 10.0, 3.0), "--measure-s")?,
                fractions: match (args.steps.is_empty(), quick) {
                    (false, _) => args.steps,
                    (true, false) => vec![0.25, 0.5, 1.0],
                    (true, true) => vec![1.0],
                },
                kinds: if args.kinds.is_empty() {
                    FloodKind::ALL.to_vec()
                } else {
                    args.kinds
                },
                roles: if args.victims.is_empty() {
                    vec![VictimRole::Backup, VictimRole::Leader]
                } else {
                    args.victims
                },
                flooder_cpu_pct: args.flooder_cpu_pct,
                placement: args.placement,
                calibrate: Duration::from_secs(if quick { 1 } else { 2 }),
                settle: Duration::from_millis(if quick { 500 } else { 1000 }),
                op_timeout: Duration::from_millis(args.op_timeout_ms),
                ready_timeout: Duration::from_secs(args.ready_timeout_s),
                seed: args.seed,
                out_dir: args.out,
                self_exe: std::env::current_exe().context("locate this binary")?,
            };
            flood::run(&runtime, &config)?;
        }
        Command::FloodCleanup => {
            perf::netns::remove_leftovers()?;
            flooder::remove_cgroup();
            println!("removed the flood benchmark's namespaces, bridge, firewall rules and cgroup (if any)");
        }
        Command::PlotFlood(args) => {
            let text = std::fs::read_to_string(&args.csv)
                .with_context(|| format!("read {}", args.csv.display()))?;
            let rows = perf::plot::parse_flood_csv(&text)
                .with_context(|| format!("parse {}", args.csv.display()))?;
            perf::plot::flood_svg(&args.out, &rows)?;
            println!("wrote {}", args.out.display());
        }
        Command::Report(args) => {
            let files = perf::html_report::csv_files(&args.inputs)?;
            let title = args.title.unwrap_or_else(|| {
                let names: Vec<String> = args
                    .inputs
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                format!("bftd benchmark results: {}", names.join(", "))
            });
            let html = perf::html_report::html_page(&title, &files)?;
            let out = match (args.out, args.inputs.as_slice()) {
                (Some(out), _) => out,
                (None, [dir]) if dir.is_dir() => dir.join("report.html"),
                (None, _) => PathBuf::from("perf/out/report.html"),
            };
            if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("create {}", parent.display()))?;
            }
            std::fs::write(&out, html).with_context(|| format!("write {}", out.display()))?;
            println!("wrote {} ({} CSV files)", out.display(), files.len());
        }
        Command::FloodSend(_) => unreachable!("handled before the runtime starts"),
    }
    Ok(())
}

/// On SIGINT/SIGTERM: kill every child, remove scratch dirs, exit 130.
async fn exit_on_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        eprintln!(
            "warning: cannot install signal handlers; children are cleaned up only on normal exit"
        );
        return;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("interrupted: stopping child processes");
    procs::kill_all();
    std::process::exit(130);
}
