//! The cluster config file (TOML): protocol constants shared by every
//! replica, and one `[[replica]]` table per replica with its public key and
//! addresses. See `configs/default.toml` for every field with its meaning.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use wire::{Keyring, Limits, PublicKey, ReplicaId, SecretKey};

/// The embedded default config (no replicas): `configs/default.toml`.
pub const DEFAULT_TOML: &str = include_str!("../../../configs/default.toml");

/// Why a config was refused. Each message says what to change.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
    #[error("replica {id}: key file {path}: {reason}")]
    Key {
        id: u16,
        path: PathBuf,
        reason: String,
    },
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid(msg.into()))
}

/// How a write becomes durable before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// On disk (fsync) at a quorum before the decision.
    Fsync,
    /// In memory at a quorum (BFT-SMaRt's default).
    Memory,
}

/// Where the kv store keeps the values of its history (`[storage]
/// kv_backend`); the key index is in the heap either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvBackend {
    /// In LMDB under the data directory ([`ClusterConfig::kv_dir`]), a
    /// cache rebuilt at every start (default).
    #[default]
    Lmdb,
    /// In the heap (the store as it was before LMDB).
    Heap,
}

/// Core pinning policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinCores {
    /// Pin when the machine has at least 2 cores.
    Auto,
    On,
    Off,
}

/// Largest `instance_window` (and `pipeline_depth`) a config may ask for:
/// open instances are kept in memory and reported in STOPDATA.
pub const INSTANCE_WINDOW_MAX: usize = 4096;

/// `[protocol]`: constants every replica must share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protocol {
    pub batch_requests_max: usize,
    pub batch_bytes_max: usize,
    pub pipeline_depth: usize,
    #[serde(default = "defaults::pipeline_batch_min")]
    pub pipeline_batch_min: usize,
    pub instance_window: usize,
    pub request_bytes_max: usize,
    pub pending_requests_max: usize,
    pub tick_ms: u64,
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    #[serde(default = "defaults::sync_timeout_ms")]
    pub sync_timeout_ms: u64,
    #[serde(default = "defaults::leader_link_timeout_ms")]
    pub leader_link_timeout_ms: u64,
    #[serde(default = "defaults::leader_lag_max_ms")]
    pub leader_lag_max_ms: u64,
    #[serde(default = "defaults::throughput_window_ms")]
    pub throughput_window_ms: u64,
    #[serde(default = "defaults::throughput_min_pct")]
    pub throughput_min_pct: u64,
    #[serde(default = "defaults::checkpoint_period")]
    pub checkpoint_period: u64,
    /// Space quota of the kv store, bytes of `kv::Store::size_bytes`
    /// (etcd's `--quota-backend-bytes`; 0 = etcd's default, 2 GiB; at most
    /// [`QUOTA_BACKEND_BYTES_MAX`]). A protocol constant: whether a write
    /// is refused with "database space exceeded" depends on it, so every
    /// replica must use the same value or their states diverge.
    #[serde(default = "defaults::quota_backend_bytes")]
    pub quota_backend_bytes: u64,
}

/// Largest `[protocol] quota_backend_bytes`: 64 GiB (etcd suggests at most
/// 8 GiB for bbolt; bftd keeps the whole store in memory and snapshots it
/// at every checkpoint, so the limit is what a replica's memory holds).
pub const QUOTA_BACKEND_BYTES_MAX: u64 = 64 << 30;

/// Defaults of fields added after the first config format, so older
/// config files still load (the values of `configs/default.toml`).
mod defaults {
    pub fn dpdk_port() -> String {
        "0".into()
    }
    pub fn dpdk_prefix_len() -> u8 {
        24
    }
    pub fn dpdk_descriptors() -> u16 {
        256
    }
    pub fn dpdk_socket_buffer_bytes() -> usize {
        256 * 1024
    }
    pub fn dpdk_link_timeout_ms() -> u64 {
        3000
    }
    pub fn dpdk_poll_idle_us() -> u64 {
        50
    }
    pub fn request_timeout_ms() -> u64 {
        1000
    }
    pub fn sync_timeout_ms() -> u64 {
        1000
    }
    pub fn leader_link_timeout_ms() -> u64 {
        50
    }
    pub fn leader_lag_max_ms() -> u64 {
        20
    }
    pub fn throughput_window_ms() -> u64 {
        1000
    }
    pub fn throughput_min_pct() -> u64 {
        50
    }
    pub fn client_connections_max() -> usize {
        4096
    }
    pub fn client_idle_timeout_ms() -> u64 {
        300_000
    }
    pub fn http2_max_concurrent_streams() -> u32 {
        128
    }
    pub fn http2_stream_window_bytes() -> u32 {
        1 << 20
    }
    pub fn http2_connection_window_bytes() -> u32 {
        2 << 20
    }
    pub fn request_bytes_pending_per_connection_max() -> usize {
        16 << 20
    }
    pub fn request_bytes_pending_max() -> usize {
        256 << 20
    }
    pub fn range_response_bytes_max() -> usize {
        64 << 20
    }
    pub fn watch_progress_notify_interval_ms() -> u64 {
        600_000
    }
    pub fn watches_per_stream_max() -> usize {
        65_536
    }
    pub fn watch_scan_changes_max() -> usize {
        10_000
    }
    pub fn lease_check_interval_ms() -> u64 {
        500
    }
    pub fn bcrypt_cost() -> u32 {
        api::auth::DEFAULT_BCRYPT_COST
    }
    pub fn auto_compaction_mode() -> String {
        "periodic".into()
    }
    pub fn auto_compaction_retention() -> String {
        "0".into()
    }
    pub fn auto_compaction_revision_interval_ms() -> u64 {
        300_000
    }
    pub fn checkpoint_period() -> u64 {
        1024
    }
    pub fn quota_backend_bytes() -> u64 {
        kv::DEFAULT_QUOTA_BACKEND_BYTES
    }
    pub fn pipeline_batch_min() -> usize {
        16
    }
    pub fn threads() -> String {
        "auto".into()
    }
    pub fn io() -> String {
        "uring".into()
    }
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    pub durability: Durability,
    /// "{id}" is replaced by the replica id; relative to the config file.
    pub data_dir: String,
    /// A bftd snapshot file (`etcdctl snapshot save` from a bftd cluster)
    /// whose store the cluster starts from instead of an empty one;
    /// relative to the config file; "" (default) = empty. Read whenever a
    /// replica starts without a checkpoint; see [`crate::seed`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub initial_snapshot: String,
    /// The sha256 (64 hex digits, the file's trailing etcd checksum) that
    /// `initial_snapshot` must have: every replica then starts from the
    /// identical store, or refuses to start.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub initial_snapshot_sha256: String,
    /// Where the kv store keeps its values: "lmdb" (default) or "heap".
    #[serde(default)]
    pub kv_backend: KvBackend,
}

/// `[dataplane]`: threads, pinning and queue bounds of one replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataplane {
    pub pin_cores: PinCores,
    /// Where the receive pipeline runs: "separate" (its own thread, on the
    /// dataplane core), "inline" (on the control thread), or "auto"
    /// (separate when pinned to dedicated cores, inline otherwise).
    #[serde(default = "defaults::threads")]
    pub threads: String,
    pub control_core: usize,
    pub dataplane_core: usize,
    pub verify_batch_max: usize,
    pub rx_budget_per_peer: usize,
    /// Microseconds the dataplane keeps polling after traffic before it
    /// sleeps (0 = never spin).
    #[serde(default)]
    pub rx_spin_us: u64,
    pub tx_queue_messages_max: usize,
    /// Interface of replica links: "uring" (io_uring, falls back to epoll
    /// where refused), "epoll", or "dpdk" (kernel bypass: the `[dpdk]`
    /// section; needs a build with the `dpdk` feature).
    #[serde(default = "defaults::io")]
    pub io: String,
    pub control_queue_messages_max: usize,
}

/// `[dpdk]`: the kernel-bypass transport of replica links, used with
/// `[dataplane] io = "dpdk"` (a build with the `dpdk` feature). Each
/// replica's DPDK port answers for the IPv4 address of its `replica_addr`
/// (a specific address, on the peers' subnet) and accepts links on its
/// port; client traffic stays on the kernel's sockets (separate ports and
/// queues). The EAL's main lcore is `[dataplane] dataplane_core` unless
/// `eal_args` name cores (`-l`, `--lcores`, `-c`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dpdk {
    /// EAL arguments of every replica, e.g. `["--in-memory"]` (hugepages,
    /// no hugetlbfs mount needed) or `["--no-huge", "-m", "256"]`; each
    /// replica's `dpdk_eal_args` (its device) follow.
    #[serde(default)]
    pub eal_args: Vec<String>,
    /// Port id (`"0"`) or device name (`"net_af_packet0"`, a PCI address).
    #[serde(default = "defaults::dpdk_port")]
    pub port: String,
    /// Receive and transmit queue of the port used for replica links.
    #[serde(default)]
    pub queue: u16,
    /// Prefix length of the replicas' subnet on the port.
    #[serde(default = "defaults::dpdk_prefix_len")]
    pub prefix_len: u8,
    /// Descriptors of the receive and of the transmit queue.
    #[serde(default = "defaults::dpdk_descriptors")]
    pub descriptors: u16,
    /// TCP window per link (socket buffer), bytes.
    #[serde(default = "defaults::dpdk_socket_buffer_bytes")]
    pub socket_buffer_bytes: usize,
    /// A link silent this long (keep-alives every third of it) is closed
    /// and redialed, ms.
    #[serde(default = "defaults::dpdk_link_timeout_ms")]
    pub link_timeout_ms: u64,
    /// Idle sleep of the poll loop between looks at the port, µs; 0 spins
    /// (a dedicated dataplane core).
    #[serde(default = "defaults::dpdk_poll_idle_us")]
    pub poll_idle_us: u64,
}

impl Default for Dpdk {
    fn default() -> Self {
        Self {
            eal_args: Vec::new(),
            port: defaults::dpdk_port(),
            queue: 0,
            prefix_len: defaults::dpdk_prefix_len(),
            descriptors: defaults::dpdk_descriptors(),
            socket_buffer_bytes: defaults::dpdk_socket_buffer_bytes(),
            link_timeout_ms: defaults::dpdk_link_timeout_ms(),
            poll_idle_us: defaults::dpdk_poll_idle_us(),
        }
    }
}

/// `[api]`: the etcd API side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    pub proxy_queue_ops_max: usize,
    pub proxy_bundle_ops_max: usize,
    /// Client connections at most (more: the longest idle one is closed,
    /// or the new one if none is idle); lowered at start-up to fit the
    /// open-files limit.
    #[serde(default = "defaults::client_connections_max")]
    pub client_connections_max: usize,
    /// A client connection with no request in progress for this long is
    /// closed, ms.
    #[serde(default = "defaults::client_idle_timeout_ms")]
    pub client_idle_timeout_ms: u64,
    /// HTTP/2 streams at once per client connection.
    #[serde(default = "defaults::http2_max_concurrent_streams")]
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 initial window per stream and per connection, bytes.
    #[serde(default = "defaults::http2_stream_window_bytes")]
    pub http2_stream_window_bytes: u32,
    #[serde(default = "defaults::http2_connection_window_bytes")]
    pub http2_connection_window_bytes: u32,
    /// Request bytes in flight per connection and in all, bytes (counted
    /// from each gRPC message's declared length).
    #[serde(default = "defaults::request_bytes_pending_per_connection_max")]
    pub request_bytes_pending_per_connection_max: usize,
    #[serde(default = "defaults::request_bytes_pending_max")]
    pub request_bytes_pending_max: usize,
    /// Largest Range or Txn response, bytes; above it ResourceExhausted
    /// (page with `limit`).
    #[serde(default = "defaults::range_response_bytes_max")]
    pub range_response_bytes_max: usize,
    /// A watcher that asked for progress notifications and got no event
    /// for this long is sent an empty response at the current revision,
    /// ms (etcd's `--experimental-watch-progress-notify-interval`, 10 min).
    #[serde(default = "defaults::watch_progress_notify_interval_ms")]
    pub watch_progress_notify_interval_ms: u64,
    /// Watchers on one Watch stream at most; a create beyond it is
    /// answered canceled with the reason.
    #[serde(default = "defaults::watches_per_stream_max")]
    pub watches_per_stream_max: usize,
    /// History changes one watch read scans at most before the stream
    /// serves its other watchers (bounds how long a far-behind watcher
    /// holds the store's read lock).
    #[serde(default = "defaults::watch_scan_changes_max")]
    pub watch_scan_changes_max: usize,
    /// How often this replica looks for leases its clock says expired and
    /// votes to expire them, ms (a lease expires on f+1 replicas' votes;
    /// a vote leaves at most this late).
    #[serde(default = "defaults::lease_check_interval_ms")]
    pub lease_check_interval_ms: u64,
    /// bcrypt cost of stored password hashes (etcd's `--bcrypt-cost`,
    /// default 10, 4 to 31). Each Authenticate costs 2^cost rounds.
    #[serde(default = "defaults::bcrypt_cost")]
    pub bcrypt_cost: u32,
    /// etcd's `--auto-compaction-mode`: "periodic" or "revision" (see
    /// [`crate::compactor`]).
    #[serde(default = "defaults::auto_compaction_mode")]
    pub auto_compaction_mode: String,
    /// etcd's `--auto-compaction-retention`: periodic, a duration ("1h",
    /// "30m", or a bare number of hours); revision, a number of
    /// revisions; "0" = off (the default, as etcd).
    #[serde(default = "defaults::auto_compaction_retention")]
    pub auto_compaction_retention: String,
    /// Revision mode checks this often, ms (etcd: 5 minutes).
    #[serde(default = "defaults::auto_compaction_revision_interval_ms")]
    pub auto_compaction_revision_interval_ms: u64,
}

/// `[client_tls]`: TLS on the client port, as etcd's `--cert-file`,
/// `--key-file`, `--trusted-ca-file` and `--client-cert-auth` configure
/// it. Off while `cert_file` is empty (the default). Paths are relative to
/// the config file; "{id}" becomes the replica id (each replica serves its
/// own certificate). See [`api::tls`] for what a client must present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// The replica's certificate chain, PEM, leaf first (etcd's
    /// `--cert-file`).
    #[serde(default)]
    pub cert_file: String,
    /// Its private key, PEM (etcd's `--key-file`).
    #[serde(default)]
    pub key_file: String,
    /// CA certificates, PEM, that client certificates must chain to
    /// (etcd's `--trusted-ca-file`); when set, every client must present
    /// one, as in etcd.
    #[serde(default)]
    pub trusted_ca_file: String,
    /// Require client certificates (etcd's `--client-cert-auth`); needs
    /// `trusted_ca_file`. The certificate's Common Name is the user name
    /// under etcd auth.
    #[serde(default)]
    pub client_cert_auth: bool,
    /// Serve the status port (`http_addr`: /status, /metrics, /healthz)
    /// behind the same TLS (and client certificates) too.
    #[serde(default)]
    pub http_tls: bool,
}

impl ClientTls {
    /// Whether TLS is on.
    pub fn is_on(&self) -> bool {
        !self.cert_file.is_empty()
    }

    fn is_off(&self) -> bool {
        *self == Self::default()
    }
}

/// One `[[replica]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaEntry {
    pub id: u16,
    /// ed25519 public key, 64 hex digits.
    pub public_key: String,
    /// Replica-to-replica (consensus) address, TCP.
    pub replica_addr: SocketAddr,
    /// etcd v3 gRPC address for clients: TLS when `[client_tls]` is on,
    /// plaintext otherwise.
    pub client_addr: SocketAddr,
    /// A plaintext client listener beside the TLS one (etcd's
    /// `--listen-client-urls` with an `http://` and an `https://` URL),
    /// e.g. on loopback for local tools; only with `[client_tls]` on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_plain_addr: Option<SocketAddr>,
    /// HTTP status and Prometheus metrics address. Bind it to loopback
    /// (`127.0.0.1:port`) to keep it off the network, or serve it behind
    /// TLS with `[client_tls] http_tls`.
    pub http_addr: SocketAddr,
    /// Secret key file; default `keys/replica-{id}.key` next to the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// This replica's own EAL arguments with `[dataplane] io = "dpdk"`
    /// (after `[dpdk] eal_args`): its device, e.g.
    /// `["--vdev=net_af_packet0,iface=eth1"]` or `["-a", "0000:00:08.0"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dpdk_eal_args: Vec<String>,
}

/// A whole cluster config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub cluster_id: u64,
    pub protocol: Protocol,
    pub storage: Storage,
    pub dataplane: Dataplane,
    /// Only with `[dataplane] io = "dpdk"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpdk: Option<Dpdk>,
    pub api: Api,
    #[serde(default, skip_serializing_if = "ClientTls::is_off")]
    pub client_tls: ClientTls,
    #[serde(default, rename = "replica")]
    pub replicas: Vec<ReplicaEntry>,
    /// Directory of the file it was loaded from (relative paths resolve
    /// against it).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl ClusterConfig {
    /// The embedded default, without replicas.
    pub fn default_template() -> Self {
        let mut c: ClusterConfig =
            toml::from_str(DEFAULT_TOML).expect("embedded default config parses");
        c.base_dir = PathBuf::from(".");
        c
    }

    /// Parses TOML text; `base_dir` is where relative paths resolve.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut c: ClusterConfig = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        c.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        c.validate()?;
        Ok(c)
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// The TOML text of this config.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }

    /// Number of replicas.
    pub fn n(&self) -> usize {
        self.replicas.len()
    }

    /// Checks everything a replica relies on at start-up.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = self.replicas.len();
        if n < 4 {
            return invalid(format!(
                "{n} [[replica]] tables: BFT needs n = 3f+1 >= 4 replicas (use `bftd init --replicas 4`)"
            ));
        }
        for (i, r) in self.replicas.iter().enumerate() {
            if r.id as usize != i {
                return invalid(format!(
                    "[[replica]] number {i} has id {}: ids must be 0..{n} in order",
                    r.id
                ));
            }
            PublicKey::from_hex(&r.public_key)
                .map_err(|e| ConfigError::Invalid(format!("replica {}: public_key: {e}", r.id)))?;
        }
        // One key counted twice would let one replica cast two votes.
        let mut keys = std::collections::HashMap::new();
        for r in &self.replicas {
            let k = r.public_key.trim().to_ascii_lowercase();
            if let Some(first) = keys.insert(k, r.id) {
                return invalid(format!(
                    "replicas {first} and {} have the same public_key: every replica needs its \
                     own key (`bftd init` writes one per replica)",
                    r.id
                ));
            }
        }
        let mut addrs = HashSet::new();
        for r in &self.replicas {
            let plain = r.client_plain_addr.into_iter();
            for a in [r.replica_addr, r.client_addr, r.http_addr]
                .into_iter()
                .chain(plain)
            {
                if !addrs.insert(a) {
                    return invalid(format!("address {a} is used twice"));
                }
            }
        }
        let p = &self.protocol;
        if p.pipeline_depth == 0 || p.batch_requests_max == 0 || p.tick_ms == 0 {
            return invalid("pipeline_depth, batch_requests_max and tick_ms must be at least 1");
        }
        if p.instance_window < p.pipeline_depth {
            return invalid("instance_window must be >= pipeline_depth");
        }
        if p.batch_bytes_max < p.request_bytes_max + 128 {
            return invalid("batch_bytes_max must hold at least one request of request_bytes_max");
        }
        // Upper bounds: every one sizes a buffer, table or message.
        for (v, max, name) in [
            (p.instance_window, INSTANCE_WINDOW_MAX, "instance_window"),
            (p.pipeline_depth, INSTANCE_WINDOW_MAX, "pipeline_depth"),
            (p.batch_requests_max, 1 << 16, "batch_requests_max"),
            (p.batch_bytes_max, 64 << 20, "batch_bytes_max"),
            (p.request_bytes_max, 32 << 20, "request_bytes_max"),
            (p.pending_requests_max, 1 << 22, "pending_requests_max"),
            (p.checkpoint_period as usize, 1 << 24, "checkpoint_period"),
            (p.tick_ms as usize, 60_000, "tick_ms"),
            (
                p.request_timeout_ms as usize,
                3_600_000,
                "request_timeout_ms",
            ),
            (p.sync_timeout_ms as usize, 3_600_000, "sync_timeout_ms"),
            (p.leader_lag_max_ms as usize, 3_600_000, "leader_lag_max_ms"),
            (
                p.throughput_window_ms as usize,
                3_600_000,
                "throughput_window_ms",
            ),
            (p.throughput_min_pct as usize, 100, "throughput_min_pct"),
        ] {
            if v > max {
                return invalid(format!(
                    "[protocol] {name} = {v} is above its maximum {max}"
                ));
            }
        }
        if p.quota_backend_bytes > QUOTA_BACKEND_BYTES_MAX {
            return invalid(format!(
                "[protocol] quota_backend_bytes = {} is above its maximum {QUOTA_BACKEND_BYTES_MAX} \
                 (64 GiB)",
                p.quota_backend_bytes
            ));
        }
        self.auto_compaction().map_err(ConfigError::Invalid)?;
        self.validate_client_tls()?;
        let st = &self.storage;
        if st.initial_snapshot.is_empty() != st.initial_snapshot_sha256.is_empty() {
            return invalid(
                "[storage] initial_snapshot and initial_snapshot_sha256 go together: set both \
                 (`bftd init --from-snapshot` does) or neither",
            );
        }
        if !st.initial_snapshot_sha256.is_empty()
            && (st.initial_snapshot_sha256.len() != 64
                || hex::decode(&st.initial_snapshot_sha256).is_err())
        {
            return invalid(format!(
                "[storage] initial_snapshot_sha256 = {:?}: 64 hex digits (the file's trailing \
                 sha256)",
                st.initial_snapshot_sha256
            ));
        }
        self.control_config(0)
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("[protocol]: {e}")))?;
        let d = &self.dataplane;
        if !matches!(d.threads.as_str(), "auto" | "separate" | "inline") {
            return invalid(format!(
                "[dataplane] threads = {:?}: use \"auto\", \"separate\" or \"inline\"",
                d.threads
            ));
        }
        if d.io == "dpdk" {
            if !cfg!(feature = "dpdk") {
                return invalid(
                    "[dataplane] io = \"dpdk\": this bftd was built without DPDK (build with \
                     `--features dpdk`, or use \"uring\")",
                );
            }
            for r in &self.replicas {
                if !matches!(r.replica_addr, SocketAddr::V4(a) if !a.ip().is_unspecified()) {
                    return invalid(format!(
                        "replica {}: replica_addr {} must be a specific IPv4 address with \
                         io = \"dpdk\" (the DPDK port answers for it)",
                        r.id, r.replica_addr
                    ));
                }
            }
        } else if d.io.parse::<nic::Io>().is_err() {
            return invalid(format!(
                "[dataplane] io = {:?}: use \"uring\", \"epoll\" or \"dpdk\"",
                d.io
            ));
        }
        for (v, name) in [
            (d.verify_batch_max, "verify_batch_max"),
            (d.rx_budget_per_peer, "rx_budget_per_peer"),
            (d.tx_queue_messages_max, "tx_queue_messages_max"),
            (p.request_timeout_ms as usize, "request_timeout_ms"),
            (p.sync_timeout_ms as usize, "sync_timeout_ms"),
            (p.throughput_window_ms as usize, "throughput_window_ms"),
            (p.checkpoint_period as usize, "checkpoint_period"),
            (d.control_queue_messages_max, "control_queue_messages_max"),
            (self.api.proxy_queue_ops_max, "proxy_queue_ops_max"),
            (self.api.proxy_bundle_ops_max, "proxy_bundle_ops_max"),
        ] {
            if v == 0 {
                return invalid(format!("{name} must be at least 1"));
            }
        }
        Ok(())
    }

    fn validate_client_tls(&self) -> Result<(), ConfigError> {
        let t = &self.client_tls;
        if !t.is_on() {
            if !t.is_off() {
                return invalid(
                    "[client_tls] has settings but no cert_file: set cert_file and key_file \
                     to turn TLS on (`bftd init --tls` writes them), or remove the section",
                );
            }
            if let Some(r) = self.replicas.iter().find(|r| r.client_plain_addr.is_some()) {
                return invalid(format!(
                    "replica {}: client_plain_addr is a plaintext listener beside TLS, but \
                     [client_tls] is off (client_addr is plaintext already): remove it or turn \
                     TLS on",
                    r.id
                ));
            }
            return Ok(());
        }
        if t.key_file.is_empty() {
            return invalid(
                "[client_tls] cert_file needs key_file (the certificate's private key)",
            );
        }
        if t.client_cert_auth && t.trusted_ca_file.is_empty() {
            return invalid(
                "[client_tls] client_cert_auth needs trusted_ca_file: the CA that signs the \
                 client certificates",
            );
        }
        Ok(())
    }

    /// The TLS files of replica `id`'s client port, `None` when
    /// `[client_tls]` is off. The files are read by
    /// [`api::tls::ServerTls::load`], which says which one is wrong.
    pub fn client_tls_files(&self, id: u16) -> Option<api::tls::TlsFiles> {
        let t = &self.client_tls;
        if !t.is_on() {
            return None;
        }
        let path = |p: &str| self.resolve(&p.replace("{id}", &id.to_string()));
        Some(api::tls::TlsFiles {
            cert_file: path(&t.cert_file),
            key_file: path(&t.key_file),
            trusted_ca_file: (!t.trusted_ca_file.is_empty()).then(|| path(&t.trusted_ca_file)),
            client_cert_auth: t.client_cert_auth,
        })
    }

    /// The URL scheme of `client_addr`: "https" with `[client_tls]` on.
    pub fn client_scheme(&self) -> &'static str {
        if self.client_tls.is_on() {
            "https"
        } else {
            "http"
        }
    }

    /// The entry of replica `id`.
    pub fn replica(&self, id: u16) -> Result<&ReplicaEntry, ConfigError> {
        self.replicas.get(id as usize).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "no replica {id}: this cluster has ids 0..{}",
                self.n()
            ))
        })
    }

    /// The keyring of the cluster (validated public keys).
    pub fn keyring(&self) -> Arc<Keyring> {
        let keys = self
            .replicas
            .iter()
            .map(|r| PublicKey::from_hex(&r.public_key).expect("validated at load"))
            .collect();
        Arc::new(Keyring::new(self.cluster_id, keys, Default::default()))
    }

    /// Encoding limits shared by the cluster.
    pub fn limits(&self) -> Limits {
        let p = &self.protocol;
        let base = Limits {
            request_bytes_max: p.request_bytes_max,
            batch_requests_max: p.batch_requests_max,
            message_bytes_max: 2 * p.batch_bytes_max + 64 * 1024,
            instances_max: p.instance_window.max(64) * 2,
            state_reply_decisions_max: 0,
            replicas_max: self.n().max(4),
        };
        // The bounds the consensus core keeps when it sends, derived in
        // one place (control::Config), so sender and decoder agree.
        self.control_config(0).wire_limits(base)
    }

    /// The consensus core's config for replica `id`.
    pub fn control_config(&self, id: u16) -> control::Config {
        let p = &self.protocol;
        let ticks = |ms: u64| ms.div_ceil(p.tick_ms).max(1);
        control::Config {
            n: self.n(),
            me: ReplicaId(id),
            batch_requests_max: p.batch_requests_max,
            batch_bytes_max: p.batch_bytes_max,
            pipeline_depth: p.pipeline_depth,
            pipeline_batch_min: p.pipeline_batch_min,
            instance_window: p.instance_window,
            pending_requests_max: p.pending_requests_max,
            request_timeout_ticks: ticks(p.request_timeout_ms),
            sync_timeout_ticks: ticks(p.sync_timeout_ms),
            leader_link_timeout_ticks: if p.leader_link_timeout_ms == 0 {
                0
            } else {
                ticks(p.leader_link_timeout_ms)
            },
            leader_lag_max_ticks: if p.leader_lag_max_ms == 0 {
                0
            } else {
                ticks(p.leader_lag_max_ms)
            },
            throughput_window_ticks: ticks(p.throughput_window_ms),
            throughput_min_pct: p.throughput_min_pct,
            stop_requests_max: 64,
            checkpoint_period: p.checkpoint_period,
            state_reply_bytes_max: (p.batch_bytes_max / 2).max(p.request_bytes_max + 1024),
            ..control::Config::new(self.n(), ReplicaId(id))
        }
    }

    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The `[api]` auto-compaction, `None` when off.
    ///
    /// # Errors
    /// A mode or retention that does not parse (see
    /// [`crate::compactor::parse`]).
    pub fn auto_compaction(&self) -> Result<Option<crate::compactor::AutoCompaction>, String> {
        let a = &self.api;
        crate::compactor::parse(
            &a.auto_compaction_mode,
            &a.auto_compaction_retention,
            std::time::Duration::from_millis(a.auto_compaction_revision_interval_ms),
        )
    }

    /// Path of `[storage] initial_snapshot`, if set.
    pub fn initial_snapshot_path(&self) -> Option<PathBuf> {
        (!self.storage.initial_snapshot.is_empty())
            .then(|| self.resolve(&self.storage.initial_snapshot))
    }

    /// Data directory of replica `id`.
    pub fn data_dir(&self, id: u16) -> PathBuf {
        self.resolve(&self.storage.data_dir.replace("{id}", &id.to_string()))
    }

    /// The LMDB directory of replica `id`'s kv values:
    /// `<data_dir>/host-kv.lmdb` (a `host-` name, so the log's recovery
    /// passes over it: `storage::HOST_FILE_PREFIX`).
    pub fn kv_dir(&self, id: u16) -> PathBuf {
        self.data_dir(id)
            .join(format!("{}kv.lmdb", storage::HOST_FILE_PREFIX))
    }

    /// Where replica `id`'s kv store keeps its values (`[storage]
    /// kv_backend`): LMDB in [`ClusterConfig::kv_dir`] with the map
    /// `kv::lmdb_map_size_bytes` derives from `[protocol]
    /// quota_backend_bytes`, or the heap.
    pub fn kv_value_backend(&self, id: u16) -> kv::ValueBackend {
        match self.storage.kv_backend {
            KvBackend::Heap => kv::ValueBackend::Heap,
            KvBackend::Lmdb => {
                kv::ValueBackend::lmdb_for_quota(self.kv_dir(id), self.protocol.quota_backend_bytes)
            }
        }
    }

    /// Path of replica `id`'s secret key file.
    pub fn key_path(&self, id: u16) -> PathBuf {
        match self
            .replicas
            .get(id as usize)
            .and_then(|r| r.key_file.as_deref())
        {
            Some(p) => self.resolve(p),
            None => self.resolve(&format!("keys/replica-{id}.key")),
        }
    }

    /// Reads replica `id`'s secret key and checks it matches the config.
    pub fn load_secret(&self, id: u16) -> Result<SecretKey, ConfigError> {
        let path = self.key_path(id);
        let err = |reason: String| ConfigError::Key {
            id,
            path: path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
        let key = SecretKey::from_hex(&text).map_err(|e| err(e.to_string()))?;
        if key.public().to_hex() != self.replica(id)?.public_key {
            return Err(err(
                "does not match this replica's public_key in the config".into(),
            ));
        }
        Ok(key)
    }
}

/// Writes a secret key file readable only by its owner.
pub fn write_secret(path: &Path, key: &SecretKey) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{}", key.to_hex())?;
    f.sync_all()
}

/// Ports of a loopback cluster: clients at `base..base+n`, replicas at
/// `base+10000+i`, HTTP at `base+20000+i`.
pub fn loopback_entry(id: u16, base_port: u16, public_key: &PublicKey) -> ReplicaEntry {
    let at = |off: u32| -> SocketAddr {
        let port = base_port as u32 + off + id as u32;
        assert!(
            port <= u16::MAX as u32,
            "port {port} out of range: lower --base-port"
        );
        SocketAddr::from(([127, 0, 0, 1], port as u16))
    };
    ReplicaEntry {
        id,
        public_key: public_key.to_hex(),
        client_addr: at(0),
        client_plain_addr: None,
        replica_addr: at(10_000),
        http_addr: at(20_000),
        key_file: None,
        dpdk_eal_args: Vec::new(),
    }
}

/// Writes a loopback cluster of `n` replicas into `dir`: `bftd.toml` and
/// `keys/replica-{i}.key`. Refuses to overwrite an existing config.
pub fn init_loopback(
    dir: &Path,
    n: usize,
    base_port: u16,
    durability: Durability,
) -> Result<PathBuf, ConfigError> {
    let path = dir.join("bftd.toml");
    if path.exists() {
        return invalid(format!(
            "{} exists: refusing to overwrite a cluster config (remove it or pick another --dir)",
            path.display()
        ));
    }
    if n < 4 || n > 1000 {
        return invalid(format!(
            "--replicas {n}: choose 4 to 1000 (n = 3f+1 for f faults)"
        ));
    }
    if base_port as usize + 20_000 + n > u16::MAX as usize {
        return invalid(format!(
            "--base-port {base_port} too high for {n} replicas (needs base+20000+n <= 65535)"
        ));
    }
    let mut cfg = ClusterConfig::default_template();
    cfg.storage.durability = durability;
    cfg.base_dir = dir.to_path_buf();
    for i in 0..n as u16 {
        let key = SecretKey::generate();
        let key_path = cfg.resolve(&format!("keys/replica-{i}.key"));
        write_secret(&key_path, &key).map_err(|e| ConfigError::Key {
            id: i,
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        cfg.replicas
            .push(loopback_entry(i, base_port, &key.public()));
    }
    cfg.validate()?;
    std::fs::create_dir_all(dir).map_err(|source| ConfigError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    std::fs::write(&path, cfg.to_toml()).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses_and_init_writes_a_loadable_cluster() {
        let t = ClusterConfig::default_template();
        assert_eq!(t.storage.durability, Durability::Fsync);
        let dir = std::env::temp_dir().join(format!("bftd-cfg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = init_loopback(&dir, 4, 30000, Durability::Memory).unwrap();
        let c = ClusterConfig::load(&path).unwrap();
        assert_eq!(c.n(), 4);
        assert_eq!(c.replica(2).unwrap().client_addr.port(), 30002);
        assert_eq!(
            c.load_secret(3).unwrap().public().to_hex(),
            c.replicas[3].public_key
        );
        assert!(c.load_secret(3).is_ok());
        assert!(
            init_loopback(&dir, 4, 30000, Durability::Memory).is_err(),
            "no overwrite"
        );
        assert_eq!(c.control_config(1).quorum(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kv_values_go_to_lmdb_under_the_data_dir_with_a_map_from_the_quota_unless_heap() {
        let mut c = ClusterConfig::default_template();
        assert_eq!(c.storage.kv_backend, KvBackend::Lmdb, "the default");
        c.protocol.quota_backend_bytes = 1 << 30;
        let want_dir = c.data_dir(2).join("host-kv.lmdb");
        assert_eq!(c.kv_dir(2), want_dir);
        assert_eq!(
            c.kv_value_backend(2),
            kv::ValueBackend::Lmdb {
                dir: want_dir,
                map_size_bytes: kv::lmdb_map_size_bytes(1 << 30),
            }
        );
        // A config written before the field loads with LMDB.
        let old = c.to_toml().replace("kv_backend = \"lmdb\"\n", "");
        assert!(!old.contains("kv_backend"));
        let loaded: ClusterConfig = toml::from_str(&old).unwrap();
        assert_eq!(loaded.storage.kv_backend, KvBackend::Lmdb);
        let heap: ClusterConfig = toml::from_str(
            &c.to_toml()
                .replace("kv_backend = \"lmdb\"", "kv_backend = \"heap\""),
        )
        .unwrap();
        assert_eq!(heap.kv_value_backend(2), kv::ValueBackend::Heap);
    }

    #[test]
    fn the_embedded_default_matches_the_defaults_of_newer_fields() {
        // A config written before these fields existed still loads, with
        // the same values as the embedded default.
        let t = ClusterConfig::default_template();
        let p = &t.protocol;
        assert_eq!(p.request_timeout_ms, defaults::request_timeout_ms());
        assert_eq!(p.sync_timeout_ms, defaults::sync_timeout_ms());
        assert_eq!(p.leader_link_timeout_ms, defaults::leader_link_timeout_ms());
        assert_eq!(p.throughput_window_ms, defaults::throughput_window_ms());
        assert_eq!(p.throughput_min_pct, defaults::throughput_min_pct());
        assert_eq!(p.checkpoint_period, defaults::checkpoint_period());
        assert_eq!(p.pipeline_batch_min, defaults::pipeline_batch_min());
        assert_eq!(p.quota_backend_bytes, defaults::quota_backend_bytes());
        assert_eq!(p.quota_backend_bytes, 2 << 30);
        assert_eq!(t.dataplane.threads, defaults::threads());
        assert_eq!(t.dataplane.io, defaults::io());
        let a = &t.api;
        assert_eq!(a.client_connections_max, defaults::client_connections_max());
        assert_eq!(a.client_idle_timeout_ms, defaults::client_idle_timeout_ms());
        assert_eq!(
            a.http2_max_concurrent_streams,
            defaults::http2_max_concurrent_streams()
        );
        assert_eq!(
            a.http2_stream_window_bytes,
            defaults::http2_stream_window_bytes()
        );
        assert_eq!(
            a.http2_connection_window_bytes,
            defaults::http2_connection_window_bytes()
        );
        assert_eq!(
            a.request_bytes_pending_per_connection_max,
            defaults::request_bytes_pending_per_connection_max()
        );
        assert_eq!(
            a.request_bytes_pending_max,
            defaults::request_bytes_pending_max()
        );
        assert_eq!(
            a.range_response_bytes_max,
            defaults::range_response_bytes_max()
        );
        assert_eq!(a.auto_compaction_mode, defaults::auto_compaction_mode());
        assert_eq!(
            a.auto_compaction_retention,
            defaults::auto_compaction_retention()
        );
        assert_eq!(
            a.auto_compaction_revision_interval_ms,
            defaults::auto_compaction_revision_interval_ms()
        );
        assert_eq!(t.auto_compaction(), Ok(None), "off by default, as etcd");
        let d = api::ApiLimits::default();
        assert_eq!(a.client_connections_max, d.client_connections_max);
        assert_eq!(a.range_response_bytes_max, d.range_response_bytes_max);
        let old: String = DEFAULT_TOML
            .lines()
            .filter(|l| {
                ![
                    "request_timeout_ms",
                    "checkpoint_period",
                    "quota_backend_bytes",
                    "threads =",
                    "io =",
                ]
                .iter()
                .any(|k| l.starts_with(k))
            })
            .collect::<Vec<_>>()
            .join("\n");
        let parsed: ClusterConfig = toml::from_str(&old).unwrap();
        assert_eq!(parsed.protocol, t.protocol);
        assert_eq!(parsed.dataplane, t.dataplane);
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let mut c = ClusterConfig::default_template();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("n = 3f+1 >= 4"), "{err}");
        for i in 0..4 {
            c.replicas.push(loopback_entry(
                i,
                30000,
                &SecretKey::from_seed([i as u8; 32]).public(),
            ));
        }
        c.validate().unwrap();
        c.replicas[1].client_addr = c.replicas[0].client_addr;
        assert!(c.validate().unwrap_err().to_string().contains("used twice"));
        let unknown = format!("{}\nbogus = 1\n", DEFAULT_TOML);
        assert!(ClusterConfig::parse(&unknown, Path::new("x.toml")).is_err());
    }

    fn four() -> ClusterConfig {
        let mut c = ClusterConfig::default_template();
        for i in 0..4 {
            c.replicas.push(loopback_entry(
                i,
                30000,
                &SecretKey::from_seed([i as u8; 32]).public(),
            ));
        }
        c
    }

    #[test]
    fn a_public_key_listed_twice_is_refused() {
        let mut c = four();
        c.replicas[3].public_key = c.replicas[1].public_key.to_uppercase();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("replicas 1 and 3 have the same public_key"),
            "{err}"
        );
    }

    #[test]
    fn config_numbers_above_their_bounds_are_refused_not_allocated() {
        let mut c = four();
        c.protocol.instance_window = 100_000_000_000;
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("instance_window = 100000000000 is above"),
            "{err}"
        );
        let mut c = four();
        c.protocol.pending_requests_max = 8; // below n x the per-client share
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("pending_requests_max (8) must be >="), "{err}");
        let mut c = four();
        c.protocol.quota_backend_bytes = QUOTA_BACKEND_BYTES_MAX + 1;
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("quota_backend_bytes = 68719476737 is above"),
            "{err}"
        );
        c.protocol.quota_backend_bytes = QUOTA_BACKEND_BYTES_MAX;
        c.validate().unwrap();
        c.protocol.quota_backend_bytes = 0; // etcd's default
        c.validate().unwrap();
    }

    #[test]
    fn auto_compaction_and_initial_snapshot_keys_are_checked_at_load() {
        let mut c = four();
        c.api.auto_compaction_mode = "revision".into();
        c.api.auto_compaction_retention = "1h".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("auto_compaction_retention"), "{err}");
        c.api.auto_compaction_retention = "100".into();
        c.validate().unwrap();
        let mut c = four();
        c.storage.initial_snapshot = "seed.db".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("go together"), "{err}");
        c.storage.initial_snapshot_sha256 = "ab".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("64 hex digits"), "{err}");
        c.storage.initial_snapshot_sha256 = "ab".repeat(32);
        c.validate().unwrap();
    }
}
