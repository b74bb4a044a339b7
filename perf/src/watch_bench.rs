//! `watch`: etcd and bftd side by side, same client, same machine, one run.
//!
//! Two measurements per system, on a fresh cluster each:
//! 1. **put → event latency**: one writer puts `puts` keys in a closed loop
//!    through member/replica 0; one watcher on member/replica 1 watches
//!    their prefix. Latency is from just before the put is sent to the
//!    event's arrival (same process, one clock): p50, p99, max.
//! 2. **fan-out**: `watchers` watchers of one prefix on member/replica 1
//!    (`watchers_per_stream` per gRPC stream), then `fanout_puts` puts at
//!    `fanout_rate` per second through member/replica 0. Reported: the
//!    server's RSS before and after the watchers were created (the
//!    process serving them), and delivered events per second (all
//!    watchers together) while the puts run and until the last event.
//!
//! Results go to `<out>/watch.md` and are printed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use etcd_client::{Client, WatchOptions};
use hdrhistogram::Histogram;
use tokio::runtime::Runtime;

use crate::bftd_demo::{BftdDemo, BftdDemoConfig};
use crate::etcd_cluster::{EtcdCluster, EtcdClusterConfig};
use crate::kv_compare::{remove_stale_scratch_dirs, System};
use crate::procs::ScratchDir;

/// What `bftd-perf watch` runs.
#[derive(Clone, Debug)]
pub struct WatchBenchConfig {
    pub systems: Vec<System>,
    /// Puts of the latency measurement (closed loop, one writer).
    pub puts: u32,
    /// Watchers of the fan-out measurement, on one member/replica.
    pub watchers: u32,
    pub watchers_per_stream: u32,
    /// Puts of the fan-out measurement, and their rate (per second).
    pub fanout_puts: u32,
    pub fanout_rate: u32,
    pub value_bytes: usize,
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

/// One system's numbers.
#[derive(Clone, Debug, Default)]
pub struct WatchRow {
    pub system: String,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    pub events_latency: u64,
    pub rss_before_mb: f64,
    pub rss_after_mb: f64,
    pub fanout_events: u64,
    pub fanout_events_per_s: f64,
    pub fanout_seconds: f64,
}

/// Runs every requested system and writes `<out>/watch.md`.
pub fn run(runtime: &Runtime, config: &WatchBenchConfig) -> Result<Vec<WatchRow>> {
    anyhow::ensure!(
        config.watchers_per_stream > 0,
        "--watchers-per-stream must be positive"
    );
    anyhow::ensure!(config.fanout_rate > 0, "--fanout-rate must be positive");
    if config.systems.contains(&System::Bftd) {
        BftdDemo::check_binary(&config.bftd_bin)?;
    }
    let log_dir = config.out_dir.join("logs").join("watch");
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
        let row = match system {
            System::Etcd => {
                let data_root = scratch.path().join("etcd");
                std::fs::create_dir_all(&data_root)?;
                let mut cluster = EtcdCluster::start(EtcdClusterConfig {
                    etcd_bin: config.etcd_bin.clone(),
                    members: config.etcd_members,
                    base_port: config.etcd_base_port,
                    data_root,
                    log_dir: log_dir.clone(),
                    cluster_token: format!("bftd-perf-watch-{}", std::process::id()),
                    hosts: Vec::new(),
                    tls: None,
                })?;
                runtime.block_on(cluster.wait_ready(config.ready_timeout))?;
                let pid = cluster.pid(1).context("etcd member 1 runs")?;
                let row =
                    runtime.block_on(measure(config, "etcd", &cluster.client_endpoints(), pid))?;
                cluster.stop()?;
                row
            }
            System::Bftd => {
                let mut demo = BftdDemo::start(&BftdDemoConfig {
                    bftd_bin: config.bftd_bin.clone(),
                    replicas: config.bftd_replicas,
                    base_port: config.bftd_base_port,
                    data_dir: scratch.path().join("bftd"),
                    durability: config.durability.clone(),
                    log_path: log_dir.join("bftd-demo.log"),
                })?;
                runtime.block_on(demo.wait_ready(config.ready_timeout))?;
                let demo_pid = demo.pid().context("the demo runs")?;
                let pid = replica_pid(demo_pid, 1)
                    .context("find replica 1's process (a child of the demo)")?;
                let row = runtime.block_on(measure(config, "bftd", demo.endpoints(), pid))?;
                demo.stop();
                row
            }
        };
        rows.push(row);
    }
    drop(scratch);
    let md = to_markdown(config, &rows);
    print!("\n{md}");
    let path = config.out_dir.join("watch.md");
    std::fs::write(&path, &md).with_context(|| format!("write {}", path.display()))?;
    println!("\nwrote {}", path.display());
    Ok(rows)
}

/// The PID of the `bftd run --id <id>` child of the demo process.
fn replica_pid(demo_pid: u32, id: u16) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // "pid (comm) state ppid ..."
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(demo_pid) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let id_arg = id.to_string();
        if args
            .windows(2)
            .any(|w| w[0] == b"--id" && w[1] == id_arg.as_bytes())
        {
            return Some(pid);
        }
    }
    None
}

/// Resident set size of `pid`, MB.
fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn measure(
    config: &WatchBenchConfig,
    system: &str,
    endpoints: &[String],
    watched_pid: u32,
) -> Result<WatchRow> {
    anyhow::ensure!(endpoints.len() >= 2, "{system}: needs two endpoints");
    let (writer_ep, watcher_ep) = (endpoints[0].clone(), endpoints[1].clone());
    let mut row = WatchRow {
        system: system.to_string(),
        ..WatchRow::default()
    };
    println!("{system}: put -> event latency, {} puts", config.puts);
    latency(config, &writer_ep, &watcher_ep, &mut row).await?;
    println!(
        "{system}: fan-out, {} watchers on {watcher_ep}, {} puts at {}/s",
        config.watchers, config.fanout_puts, config.fanout_rate
    );
    fanout(config, &writer_ep, &watcher_ep, watched_pid, &mut row).await?;
    Ok(row)
}

async fn latency(
    config: &WatchBenchConfig,
    writer_ep: &str,
    watcher_ep: &str,
    row: &mut WatchRow,
) -> Result<()> {
    let mut writer = Client::connect([writer_ep], None).await?;
    let mut watch_client = Client::connect([watcher_ep], None).await?;
    let start_rev = writer
        .get("lat/", None)
        .await?
        .header()
        .map_or(0, |h| h.revision())
        + 1;
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(start_rev);
    let mut stream = watch_client.watch("lat/", Some(opts)).await?;
    let first = stream.message().await?.context("watch created")?;
    anyhow::ensure!(first.created(), "the first watch response is `created`");
    let sent: Arc<sent::SentTimes> = Arc::default();
    let epoch = Instant::now();
    let value = vec![b'x'; config.value_bytes];
    let puts = config.puts;
    let sent2 = sent.clone();
    let writer_task = tokio::spawn(async move {
        for i in 0..puts {
            let key = format!("lat/{i:08}");
            sent2.set(i, epoch.elapsed().as_micros() as u64);
            writer.put(key, value.clone(), None).await?;
        }
        anyhow::Ok(())
    });
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut seen = 0u32;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen < puts {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, stream.message())
            .await
            .context("events in time")??
            .context("the watch stays open")?;
        let now = epoch.elapsed().as_micros() as u64;
        for e in msg.events() {
            let key = e.kv().map(|kv| kv.key().to_vec()).unwrap_or_default();
            let i: u32 = std::str::from_utf8(&key[4..])?.parse()?;
            let at = sent.get(i).context("an event for a put that was sent")?;
            hist.record(now.saturating_sub(at).max(1))?;
            seen += 1;
        }
    }
    writer_task.await??;
    row.events_latency = hist.len();
    row.latency_p50_ms = hist.value_at_quantile(0.5) as f64 / 1000.0;
    row.latency_p99_ms = hist.value_at_quantile(0.99) as f64 / 1000.0;
    row.latency_max_ms = hist.max() as f64 / 1000.0;
    Ok(())
}

async fn fanout(
    config: &WatchBenchConfig,
    writer_ep: &str,
    watcher_ep: &str,
    pid: u32,
    row: &mut WatchRow,
) -> Result<()> {
    row.rss_before_mb = rss_mb(pid);
    let received = Arc::new(AtomicU64::new(0));
    let last_event_us = Arc::new(AtomicU64::new(0));
    let epoch = Instant::now();
    let streams = config.watchers.div_ceil(config.watchers_per_stream);
    let mut tasks = Vec::new();
    let mut created = 0;
    for s in 0..streams {
        let n = config
            .watchers_per_stream
            .min(config.watchers - s * config.watchers_per_stream);
        let mut client = Client::connect([watcher_ep], None).await?;
        let mut stream = client
            .watch("fan/", Some(WatchOptions::new().with_prefix()))
            .await?;
        for _ in 1..n {
            stream
                .watch("fan/", Some(WatchOptions::new().with_prefix()))
                .await?;
        }
        // Every watcher of the stream is created before the puts start.
        let mut ok = 0;
        while ok < n {
            let m = stream.message().await?.context("created")?;
            anyhow::ensure!(
                m.created() && !m.canceled(),
                "watch refused: {}",
                m.cancel_reason()
            );
            ok += 1;
        }
        created += n;
        let (received, last) = (received.clone(), last_event_us.clone());
        tasks.push(tokio::spawn(async move {
            let _client = client;
            while let Ok(Some(m)) = stream.message().await {
                received.fetch_add(m.events().len() as u64, Ordering::Relaxed);
                last.store(epoch.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
        }));
    }
    anyhow::ensure!(created == config.watchers, "created {created} watchers");
    row.rss_after_mb = rss_mb(pid);
    let mut writer = Client::connect([writer_ep], None).await?;
    let value = vec![b'x'; config.value_bytes];
    let gap = Duration::from_secs_f64(1.0 / f64::from(config.fanout_rate));
    let started_us = epoch.elapsed().as_micros() as u64;
    let mut next = Instant::now();
    for i in 0..config.fanout_puts {
        tokio::time::sleep_until(next.into()).await;
        next += gap;
        writer
            .put(format!("fan/{i:08}"), value.clone(), None)
            .await?;
    }
    let want = u64::from(config.fanout_puts) * u64::from(config.watchers);
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    row.fanout_events = received.load(Ordering::Relaxed);
    let secs = (last_event_us
        .load(Ordering::Relaxed)
        .saturating_sub(started_us)) as f64
        / 1e6;
    row.fanout_seconds = secs;
    row.fanout_events_per_s = if secs > 0.0 {
        row.fanout_events as f64 / secs
    } else {
        0.0
    };
    for t in tasks {
        t.abort();
    }
    Ok(())
}

fn to_markdown(config: &WatchBenchConfig, rows: &[WatchRow]) -> String {
    let mut s = format!(
        "# watch\n\n\
         - latency: one writer (closed loop, {} puts of {} B) at member/replica 0, one prefix \
         watcher at member/replica 1; put sent -> event received\n\
         - fan-out: {} watchers of one prefix at member/replica 1 ({} per stream), {} puts at \
         {}/s at member/replica 0; RSS of the process serving the watchers\n\
         - etcd: {} members; bftd: {} replicas, durability {}; one machine, {} cores\n\n",
        config.puts,
        config.value_bytes,
        config.watchers,
        config.watchers_per_stream,
        config.fanout_puts,
        config.fanout_rate,
        config.etcd_members,
        config.bftd_replicas,
        config.durability,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    s.push_str(
        "| system | p50 ms | p99 ms | max ms | events | RSS before MB | RSS with watchers MB | \
         fan-out events | events/s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.2} | {} | {:.0} | {:.0} | {} | {:.0} |\n",
            r.system,
            r.latency_p50_ms,
            r.latency_p99_ms,
            r.latency_max_ms,
            r.events_latency,
            r.rss_before_mb,
            r.rss_after_mb,
            r.fanout_events,
            r.fanout_events_per_s
        ));
    }
    s
}

/// Send times by put index, shared by the writer and the watcher.
mod sent {
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct SentTimes(Mutex<HashMap<u32, u64>>);

    impl SentTimes {
        pub fn set(&self, i: u32, at_us: u64) {
            self.0.lock().unwrap().insert(i, at_us);
        }
        pub fn get(&self, i: u32) -> Option<u64> {
            self.0.lock().unwrap().get(&i).copied()
        }
    }
}
