//! Closed-loop etcd v3 load generator.
//!
//! Each client owns one gRPC connection to one endpoint (clients are assigned
//! to endpoints round-robin), issues one operation, waits for the reply, and
//! repeats. Latency is recorded per operation in microseconds for operations
//! that start inside the measurement window (after the warm-up). Every loop
//! is bounded by the run's deadline and by a total operation budget.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, Txn, TxnOp};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tokio::time::Instant;

/// Distinct error messages kept per run.
pub const ERROR_SAMPLES_MAX: usize = 5;
const ERROR_MESSAGE_CHARS_MAX: usize = 300;
/// Pause after a failed operation so a dead endpoint is not spun on.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);
/// Highest latency the histogram tracks; larger values are clamped.
const LATENCY_US_MAX: u64 = 120_000_000;
/// Prefix of every key the load generator writes.
pub const KEY_PREFIX: &str = "/bftd-perf/";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Put a random key.
    Put,
    /// Linearizable get of a random key (keys are written once first).
    Get,
    /// kube-apiserver style conditional update: if mod_revision(key) > 0
    /// then put(key) else get(key) (keys are written once first).
    Txn,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::Txn => "txn",
        }
    }
}

/// How keys are named.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum KeyShape {
    /// `/bftd-perf/k0000000042`: the default, realistic key.
    Prefixed,
    /// One byte from `[0-9A-Za-z]` (key space at most 62): the smallest
    /// request the etcd API allows, for BFT-SMaRt's "0/0" micro-benchmark.
    OneByte,
}

/// The keys of [`KeyShape::OneByte`].
const ONE_BYTE_KEYS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

#[derive(Clone, Debug)]
pub struct LoadgenConfig {
    /// host:port or http://host:port, one connection per client.
    pub endpoints: Vec<String>,
    pub clients: u32,
    pub op: Op,
    pub warmup: Duration,
    pub duration: Duration,
    pub key_space: u64,
    pub key_shape: KeyShape,
    pub value_bytes: usize,
    pub seed: u64,
    /// Upper bound on operations issued by all clients together (warm-up
    /// included).
    pub ops_max: u64,
    /// Per-operation timeout; a timed-out operation counts as an error.
    pub op_timeout: Duration,
    pub connect_timeout: Duration,
    /// Mutual TLS: the CA to trust and the client certificate to present
    /// (endpoints then start with `https://`); `None` = plaintext.
    pub tls: Option<ClientTls>,
}

/// A client's TLS files, PEM text.
#[derive(Clone, Debug)]
pub struct ClientTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl ClientTls {
    /// Reads the CA, certificate and key PEM files.
    pub fn read(
        ca: &std::path::Path,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<Self> {
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))
        };
        Ok(Self {
            ca_pem: read(ca)?,
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }

    fn options(&self) -> etcd_client::TlsOptions {
        etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(&self.ca_pem))
            .identity(etcd_client::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ))
    }
}

impl LoadgenConfig {
    fn validate(&self) -> Result<()> {
        anyhow::ensure!(!self.endpoints.is_empty(), "no endpoints");
        anyhow::ensure!(self.clients > 0, "--clients must be > 0");
        anyhow::ensure!(self.key_space > 0, "--key-space must be > 0");
        anyhow::ensure!(
            self.key_shape != KeyShape::OneByte || self.key_space <= ONE_BYTE_KEYS.len() as u64,
            "one-byte keys allow a key space of at most {}",
            ONE_BYTE_KEYS.len()
        );
        anyhow::ensure!(!self.duration.is_zero(), "--duration-s must be > 0");
        anyhow::ensure!(self.ops_max > 0, "--ops-max must be > 0");
        anyhow::ensure!(!self.op_timeout.is_zero(), "--op-timeout-ms must be > 0");
        Ok(())
    }
}

/// The result of one run. Latencies in microseconds.
#[derive(Clone, Debug, Serialize)]
pub struct LoadgenReport {
    pub op: Op,
    pub clients: u32,
    pub endpoints: usize,
    pub duration_s: f64,
    /// Successful operations started inside the measurement window.
    pub ops: u64,
    pub ops_per_s: f64,
    pub errors: u64,
    /// True if the --ops-max budget ended the run before the deadline.
    pub ops_max_reached: bool,
    pub latency_us_p50: u64,
    pub latency_us_p99: u64,
    pub latency_us_p999: u64,
    pub latency_us_max: u64,
    pub latency_us_mean: f64,
    pub error_samples: Vec<String>,
    /// Latency of the operations that started inside the window and after
    /// the [`SplitMark`] was set (None: no mark given, or never set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_split: Option<PhaseLatency>,
    /// Successful operations in the window that took [`STALL_US`] or more,
    /// in start order (at most [`STALLS_MAX`]): when they started and on
    /// which client, to line them up with what the servers did then.
    pub stalls: Vec<Stall>,
    /// Stalls beyond the [`STALLS_MAX`] kept.
    pub stalls_dropped: u64,
}

/// An operation that took [`STALL_US`] or more (issue 11: "no stalls above
/// 10 ms in 10,000 sequential 1-client puts").
#[derive(Clone, Debug, Serialize)]
pub struct Stall {
    /// Start of the operation, ms after the measurement window opened.
    pub at_ms: f64,
    pub latency_ms: f64,
    pub client: u32,
}

/// Latency of part of the window (see [`LoadgenReport::after_split`]).
#[derive(Clone, Debug, Serialize)]
pub struct PhaseLatency {
    /// Operations counted (successful, started after the mark).
    pub ops: u64,
    pub latency_us_p50: u64,
    pub latency_us_p99: u64,
    pub latency_us_max: u64,
}

/// An instant, set once by someone watching the run (the flood benchmark:
/// when a new leader took over), after which the load generator also keeps
/// the latencies apart.
#[derive(Debug, Default)]
pub struct SplitMark(std::sync::OnceLock<Instant>);

impl SplitMark {
    /// Sets the mark to `at` unless it is set already.
    pub fn set(&self, at: Instant) {
        let _ = self.0.set(at);
    }

    pub fn get(&self) -> Option<Instant> {
        self.0.get().copied()
    }
}

/// An operation at least this long is a stall, µs.
pub const STALL_US: u64 = 10_000;
/// Stalls kept per run (the rest are counted).
pub const STALLS_MAX: usize = 1000;

impl LoadgenReport {
    pub fn print_human(&self) {
        println!(
            "op={} clients={} endpoints={} duration={:.1}s ops={}{}",
            self.op.name(),
            self.clients,
            self.endpoints,
            self.duration_s,
            self.ops,
            if self.ops_max_reached {
                " (stopped by --ops-max)"
            } else {
                ""
            }
        );
        println!(
            "ops/s {:.1}  p50 {:.3} ms  p99 {:.3} ms  p999 {:.3} ms  max {:.3} ms  errors {}",
            self.ops_per_s,
            us_to_ms(self.latency_us_p50),
            us_to_ms(self.latency_us_p99),
            us_to_ms(self.latency_us_p999),
            us_to_ms(self.latency_us_max),
            self.errors
        );
        for sample in &self.error_samples {
            println!("  error: {sample}");
        }
        let total = self.stalls.len() as u64 + self.stalls_dropped;
        if total > 0 {
            println!(
                "stalls (>= {} ms): {total}; first at (ms into the window) / latency ms / client:",
                STALL_US / 1000
            );
            for s in self.stalls.iter().take(20) {
                println!("  {:>10.1}  {:>8.1}  {}", s.at_ms, s.latency_ms, s.client);
            }
        }
    }
}

pub fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// What is shared read-only by all clients of a run.
struct Shared {
    config: LoadgenConfig,
    split: Option<Arc<SplitMark>>,
    /// Pre-built keys: nothing is formatted on the hot path.
    keys: Vec<String>,
    value: Vec<u8>,
    ops_issued: AtomicU64,
}

/// What one client hands back.
struct ClientResult {
    histogram: Histogram<u64>,
    after_split: Histogram<u64>,
    errors: u64,
    error_samples: Vec<String>,
    ops_max_reached: bool,
    stalls: Vec<Stall>,
    stalls_dropped: u64,
}

/// Runs the load and returns the merged report.
pub async fn run(config: &LoadgenConfig) -> Result<LoadgenReport> {
    run_with_split(config, None).await
}

/// [`run`], and if `split` gets set during the run, the latency of the
/// operations started after it apart ([`LoadgenReport::after_split`]).
pub async fn run_with_split(
    config: &LoadgenConfig,
    split: Option<Arc<SplitMark>>,
) -> Result<LoadgenReport> {
    config.validate()?;
    let shared = Arc::new(Shared {
        split: split.clone(),
        keys: (0..config.key_space)
            .map(|i| key_name(config.key_shape, i))
            .collect(),
        value: value_bytes(config.value_bytes, config.seed),
        config: config.clone(),
        ops_issued: AtomicU64::new(0),
    });
    let mut clients = Vec::with_capacity(config.clients as usize);
    for index in 0..config.clients {
        let endpoint = &config.endpoints[index as usize % config.endpoints.len()];
        clients.push(connect(endpoint, config).await?);
    }
    if matches!(config.op, Op::Get | Op::Txn) {
        prefill(&mut clients, &shared).await?;
    }

    let start = Instant::now();
    let measure_start = start + config.warmup;
    let measure_end = measure_start + config.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for (index, client) in clients.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        tasks.spawn(client_loop(
            index as u32,
            client,
            shared,
            measure_start,
            measure_end,
        ));
    }
    let mut histogram = new_histogram();
    let mut after_split = new_histogram();
    let mut errors = 0;
    let mut error_samples = Vec::new();
    let mut ops_max_reached = false;
    let mut stalls = Vec::new();
    let mut stalls_dropped = 0;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.context("load generator client task failed")?;
        stalls.extend(result.stalls);
        stalls_dropped += result.stalls_dropped;
        histogram
            .add(&result.histogram)
            .context("merge histograms")?;
        after_split
            .add(&result.after_split)
            .context("merge histograms")?;
        errors += result.errors;
        ops_max_reached |= result.ops_max_reached;
        for sample in result.error_samples {
            add_error_sample(&mut error_samples, sample);
        }
    }
    stalls.sort_by(|a: &Stall, b: &Stall| a.at_ms.total_cmp(&b.at_ms));
    if stalls.len() > STALLS_MAX {
        stalls_dropped += (stalls.len() - STALLS_MAX) as u64;
        stalls.truncate(STALLS_MAX);
    }
    // If the op budget ended the run early, the window is shorter.
    let measured_end = Instant::now().min(measure_end);
    let duration_s = measured_end
        .saturating_duration_since(measure_start)
        .as_secs_f64();
    let ops = histogram.len();
    Ok(LoadgenReport {
        op: config.op,
        clients: config.clients,
        endpoints: config.endpoints.len(),
        duration_s,
        ops,
        ops_per_s: if duration_s > 0.0 {
            ops as f64 / duration_s
        } else {
            0.0
        },
        errors,
        ops_max_reached,
        latency_us_p50: histogram.value_at_quantile(0.50),
        latency_us_p99: histogram.value_at_quantile(0.99),
        latency_us_p999: histogram.value_at_quantile(0.999),
        latency_us_max: histogram.max(),
        latency_us_mean: histogram.mean(),
        error_samples,
        after_split: split.and_then(|mark| mark.get()).map(|_| PhaseLatency {
            ops: after_split.len(),
            latency_us_p50: after_split.value_at_quantile(0.50),
            latency_us_p99: after_split.value_at_quantile(0.99),
            latency_us_max: after_split.max(),
        }),
        stalls,
        stalls_dropped,
    })
}

async fn client_loop(
    index: u32,
    mut client: Client,
    shared: Arc<Shared>,
    measure_start: Instant,
    measure_end: Instant,
) -> ClientResult {
    let config = &shared.config;
    // One stream per client, derived from the run's seed.
    let mut rng = ChaCha8Rng::seed_from_u64(
        config.seed ^ (u64::from(index) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let mut result = ClientResult {
        histogram: new_histogram(),
        after_split: new_histogram(),
        errors: 0,
        error_samples: Vec::new(),
        ops_max_reached: false,
        stalls: Vec::new(),
        stalls_dropped: 0,
    };
    loop {
        let started = Instant::now();
        if started >= measure_end {
            break;
        }
        if shared.ops_issued.fetch_add(1, Ordering::Relaxed) >= config.ops_max {
            result.ops_max_reached = true;
            break;
        }
        let key = &shared.keys[rng.gen_range(0..shared.keys.len())];
        let outcome = tokio::time::timeout(
            config.op_timeout,
            one_op(&mut client, config.op, key, &shared.value),
        )
        .await;
        let latency_us = started
            .elapsed()
            .as_micros()
            .min(u128::from(LATENCY_US_MAX)) as u64;
        let in_window = started >= measure_start;
        let error = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(describe_error(&e)),
            Err(_) => Some(format!(
                "timeout after {} ms",
                config.op_timeout.as_millis()
            )),
        };
        match error {
            None if in_window => {
                result.histogram.saturating_record(latency_us.max(1));
                let after_mark = shared
                    .split
                    .as_ref()
                    .and_then(|mark| mark.get())
                    .is_some_and(|mark| started >= mark);
                if after_mark {
                    result.after_split.saturating_record(latency_us.max(1));
                }
                if latency_us >= STALL_US {
                    if result.stalls.len() < STALLS_MAX {
                        result.stalls.push(Stall {
                            at_ms: started.duration_since(measure_start).as_secs_f64() * 1e3,
                            latency_ms: us_to_ms(latency_us),
                            client: index,
                        });
                    } else {
                        result.stalls_dropped += 1;
                    }
                }
            }
            None => {}
            Some(message) => {
                if in_window {
                    result.errors += 1;
                }
                add_error_sample(&mut result.error_samples, message);
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }
    result
}

async fn one_op(
    client: &mut Client,
    op: Op,
    key: &str,
    value: &[u8],
) -> Result<(), etcd_client::Error> {
    match op {
        Op::Put => client.put(key, value, None).await.map(drop),
        Op::Get => client.get(key, None).await.map(drop),
        Op::Txn => {
            let txn = Txn::new()
                .when([Compare::mod_revision(key, CompareOp::Greater, 0)])
                .and_then([TxnOp::put(key, value, None)])
                .or_else([TxnOp::get(key, None)]);
            client.txn(txn).await.map(drop)
        }
    }
}

/// Writes every key once so get/txn hit existing keys. Not measured.
async fn prefill(clients: &mut [Client], shared: &Shared) -> Result<()> {
    let config = &shared.config;
    let deadline = Instant::now() + config.op_timeout.max(Duration::from_secs(10)) * 6;
    let client_count = clients.len();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, client) in clients.iter().enumerate() {
        let mut client = client.clone();
        let keys: Vec<String> = shared
            .keys
            .iter()
            .skip(index)
            .step_by(client_count)
            .cloned()
            .collect();
        let value = shared.value.clone();
        tasks.spawn(async move {
            for key in keys {
                tokio::time::timeout_at(deadline, client.put(key.as_str(), value.as_slice(), None))
                    .await
                    .map_err(|_| {
                        anyhow::anyhow!("prefill of {key} did not finish before the deadline")
                    })?
                    .map_err(|e| anyhow::anyhow!("prefill put {key}: {}", describe_error(&e)))?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("prefill task failed")??;
    }
    Ok(())
}

/// Connects one client to one endpoint.
pub async fn connect(endpoint: &str, config: &LoadgenConfig) -> Result<Client> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(config.connect_timeout)
        .with_timeout(config.op_timeout);
    if let Some(tls) = &config.tls {
        options = options.with_tls(tls.options());
    }
    tokio::time::timeout(
        config.connect_timeout,
        Client::connect([endpoint], Some(options)),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "connect to {endpoint}: timeout after {:?}",
            config.connect_timeout
        )
    })?
    .with_context(|| format!("connect to {endpoint}"))
}

/// Waits until a put succeeds on every endpoint. `check_alive` runs between
/// attempts and aborts the wait (e.g. when a server process has exited).
pub async fn wait_until_put_succeeds(
    endpoints: &[String],
    timeout: Duration,
    mut check_alive: impl FnMut() -> Result<()>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let attempt_timeout = Duration::from_secs(2);
    let options = || {
        ConnectOptions::new()
            .with_connect_timeout(attempt_timeout)
            .with_timeout(attempt_timeout)
    };
    let key = format!("{KEY_PREFIX}ready");
    for endpoint in endpoints {
        loop {
            check_alive()?;
            let attempt = async {
                let mut client = Client::connect([endpoint.as_str()], Some(options())).await?;
                client.put(key.as_str(), "1", None).await
            };
            let last_error = match tokio::time::timeout(attempt_timeout, attempt).await {
                Ok(Ok(_)) => break,
                Ok(Err(e)) => describe_error(&e),
                Err(_) => format!("attempt timed out after {attempt_timeout:?}"),
            };
            anyhow::ensure!(
                Instant::now() < deadline,
                "no put succeeded on {endpoint} within {timeout:?}; last error: {last_error}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// A short, stable description: gRPC statuses without their metadata.
pub fn describe_error(e: &etcd_client::Error) -> String {
    let message = match e {
        etcd_client::Error::GRpcStatus(status) => {
            format!("grpc {:?}: {}", status.code(), status.message())
        }
        other => other.to_string(),
    };
    message.chars().take(ERROR_MESSAGE_CHARS_MAX).collect()
}

fn add_error_sample(samples: &mut Vec<String>, message: String) {
    if samples.len() < ERROR_SAMPLES_MAX && !samples.contains(&message) {
        samples.push(message);
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

fn key_name(shape: KeyShape, index: u64) -> String {
    match shape {
        KeyShape::Prefixed => format!("{KEY_PREFIX}k{index:010}"),
        KeyShape::OneByte => char::from(ONE_BYTE_KEYS[index as usize]).to_string(),
    }
}

/// A deterministic value of `len` printable bytes.
fn value_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen_range(b'a'..=b'z')).collect()
}
