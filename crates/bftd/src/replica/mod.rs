//! One replica process: the threads of DESIGN.md wired together.
//!
//! ```text
//!  sockets ──read──▶ dataplane (poll, open, decode, verify) ──Verified──▶ control ──Decision──▶ executor ──▶ kv
//!     ▲                                                                 │  ▲  ▲                     │
//!     └───── write (flush) ◀── Outbox (sign, seal into link buffers) ◀──┘  │  └ own copies          └──▶ replies
//!  API (tokio): submit ──▶ op queue ──▶ combiner (bundle, sign) ──REQUEST──┘    (and take → combine)
//!  connector thread: accept/dial/handshake/redial only; hands sockets over
//! ```
//!
//! A message crosses two threads per hop: the sender's control thread
//! writes the socket, the receiver's dataplane thread reads it (no nic
//! threads in between). Every cross-thread path is a bounded crossbeam
//! queue sized from the config. The control and dataplane threads are
//! pinned to their cores when pinning is on.

mod control_loop;
mod executor;
mod proxy;
mod recovery;
pub mod status;
mod storage_thread;

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use dataplane::{DataplaneStats, Outbox, Receiver, RxConfig};
use kv::pb::bftdkv::Command;
use kv::{KvError, Response, Store};
use nic::{NicStats, RxPath, TcpConfig, TcpNic};
use parking_lot::RwLock;
use tokio::sync::oneshot;
use wire::{ClientId, ReplicaId, Signer, Verifier};

pub use nic::Io;

pub use proxy::{ProxyHandle, Refused};
pub use status::{Histograms, Status};

use crate::config::{ClusterConfig, ConfigError, Durability, PinCores};
use crate::metrics::{Sample, Source};

/// Requests of this replica's proxy being ordered at once (see
/// [`proxy`]): one, as a BFT-SMaRt client; operations arriving meanwhile
/// join the next bundle.
const PROXY_REQUESTS_IN_FLIGHT_MAX: usize = 1;

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error("recovery: {0}")]
    Recovery(String),
    #[error("[storage] initial_snapshot: {0}")]
    InitialSnapshot(String),
    /// The kv store's LMDB directory (`[storage] kv_backend = "lmdb"`).
    #[error("{0}")]
    KvStore(kv::OpenError),
}

/// A running replica's shared handles (for the API, metrics and tests).
pub struct Running {
    pub id: u16,
    pub config: Arc<ClusterConfig>,
    pub status: Arc<Status>,
    pub store: Arc<RwLock<Store>>,
    pub proxy: ProxyHandle,
    pub dataplane_stats: Arc<DataplaneStats>,
    pub control_stats: Arc<parking_lot::Mutex<control::Stats>>,
    pub hist: Arc<Histograms>,
    /// Counters of the transport.
    pub nic: Arc<NicStats>,
    /// The transport's fault switch (tests only, behind --fault-injection).
    pub faults: nic::FaultSwitch,
    pub cluster: api::ClusterInfo,
    /// The store's revision after each executed batch (watchers subscribe).
    pub revisions: tokio::sync::watch::Sender<i64>,
    threads: Vec<JoinHandle<()>>,
    /// Keeps the connector thread (link set-up) of the TCP transport
    /// running (the DPDK transport has none).
    _connector: Option<nic::Connector>,
}

fn spawn(
    name: &str,
    core: Option<usize>,
    f: impl FnOnce() + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            if let Some(c) = core {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
                    tracing::warn!(core = c, "could not pin thread to core");
                }
            }
            f()
        })
}

/// Cores to pin the control and dataplane threads to, per the policy.
/// A core id this machine does not have is an error when pinning is on
/// (never a silent unpinned run).
fn pinning(cfg: &ClusterConfig) -> Result<(Option<usize>, Option<usize>), ConfigError> {
    let cores = core_affinity::get_core_ids().map_or(0, |c| c.len());
    let on = match cfg.dataplane.pin_cores {
        PinCores::On => true,
        PinCores::Off => false,
        PinCores::Auto => cores >= 2,
    };
    if !on {
        return Ok((None, None));
    }
    let ok = |c: usize, name: &str| {
        if c < cores {
            Ok(Some(c))
        } else {
            Err(ConfigError::Invalid(format!(
                "[dataplane] {name} = {c}: this machine has cores 0..{} (set pin_cores = \"off\" \
                 to run unpinned)",
                cores.saturating_sub(1)
            )))
        }
    };
    Ok((
        ok(cfg.dataplane.control_core, "control_core")?,
        ok(cfg.dataplane.dataplane_core, "dataplane_core")?,
    ))
}

/// First proxy sequence number of this run: above every seq an earlier
/// run of this replica can have used, so the replicated de-duplication
/// table never drops this run's requests as old.
///
/// The wall clock in microseconds, or one more than the previous run's
/// first seq (kept in the data dir) if the clock was set back. A run sends
/// fewer than one request per microsecond, so its seqs stay below the
/// clock reading of any later start: this survives a wiped data dir (what
/// the recovery error advises), where a boot counter would start over
/// below the replicated de-duplication mark.
fn first_seq(data_dir: &Path) -> std::io::Result<u64> {
    std::fs::create_dir_all(data_dir)?;
    // Named so that storage's recovery, which reads this directory, knows
    // it is not a log file (`storage::HOST_FILE_PREFIX`); the name before
    // that is still read once, then removed.
    let path = data_dir.join(format!("{}proxy_first_seq", storage::HOST_FILE_PREFIX));
    let old = data_dir.join("proxy_first_seq");
    let prev = read_seq(&path)?.max(read_seq(&old)?);
    let clock_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let first = clock_us.max(prev + 1);
    let tmp = data_dir.join(format!("{}proxy_first_seq.tmp", storage::HOST_FILE_PREFIX));
    std::fs::write(&tmp, format!("{first}\n"))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    match std::fs::remove_file(&old) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    Ok(first)
}

/// The number in a first-seq file, 0 if there is none.
fn read_seq(path: &Path) -> std::io::Result<u64> {
    match std::fs::read_to_string(path) {
        Ok(s) => s.trim().parse::<u64>().map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: not a number ({e}); remove the file to reset",
                    path.display()
                ),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Starts replica `id` of `config` with the interface its config names
/// (`[dataplane] io`: io_uring, epoll, or DPDK); see [`start_with_io`] and
/// `start_dpdk`.
pub fn start(config: Arc<ClusterConfig>, id: u16) -> Result<Running, StartError> {
    if config.dataplane.io == "dpdk" {
        #[cfg(feature = "dpdk")]
        return start_dpdk(config, id);
        #[cfg(not(feature = "dpdk"))]
        return Err(ConfigError::Invalid(
            "[dataplane] io = \"dpdk\": this bftd was built without the `dpdk` feature".into(),
        )
        .into());
    }
    let io = config
        .dataplane
        .io
        .parse()
        .map_err(|e| ConfigError::Invalid(format!("[dataplane] io: {e}")))?;
    start_with_io(config, id, io)
}

/// Starts replica `id` of `config`: binds its replica port and starts its
/// threads, moving replica traffic with `io` (io_uring falls back to epoll
/// where the kernel refuses it). The API is served separately (see
/// [`crate::serve`]).
pub fn start_with_io(config: Arc<ClusterConfig>, id: u16, io: Io) -> Result<Running, StartError> {
    let entry = config.replica(id)?.clone();
    let secret = config.load_secret(id)?;
    let limits = config.limits();
    let mut tcp = TcpConfig::new(
        ReplicaId(id),
        entry.replica_addr,
        config
            .replicas
            .iter()
            .filter(|r| r.id != id)
            .map(|r| (ReplicaId(r.id), r.replica_addr))
            .collect(),
        secret,
        config.keyring(),
    );
    tcp.message_bytes_max = limits.message_bytes_max;
    tcp.tx_buffer_bytes_max = 2 * (4 + tcp.frame_bytes_max());
    tcp.tx_queue_messages_max = config.dataplane.tx_queue_messages_max;
    let TcpNic { connector, rx, tx } = TcpNic::start(tcp, io)?;
    tracing::info!(replica = id, io = ?connector.io(), "replica links");
    start_on(config, id, rx, tx, Some(connector))
}

/// EAL arguments of replica `id`: `[dpdk] eal_args`, the replica's own
/// `dpdk_eal_args`, and `-l <dataplane_core>` unless they name cores.
#[cfg(feature = "dpdk")]
fn eal_args(config: &ClusterConfig, id: u16, dpdk: &crate::config::Dpdk) -> Vec<String> {
    let entry = &config.replicas[id as usize];
    let mut args: Vec<String> = dpdk.eal_args.clone();
    args.extend(entry.dpdk_eal_args.iter().cloned());
    let names_cores = args.iter().any(|a| {
        a == "-l" || a == "-c" || a.starts_with("--lcores") || a.starts_with("-l") && a.len() > 2
    });
    if !names_cores {
        args.push("-l".into());
        args.push(config.dataplane.dataplane_core.to_string());
    }
    args
}

/// Starts replica `id` with its replica links on DPDK (`[dataplane] io =
/// "dpdk"`, the `[dpdk]` section): starts the EAL (once per process) and
/// the port, then the same threads as [`start_with_io`]. The port is
/// driven by the dataplane's poll (the control thread's when the dataplane
/// runs inline).
#[cfg(feature = "dpdk")]
pub fn start_dpdk(config: Arc<ClusterConfig>, id: u16) -> Result<Running, StartError> {
    use nic::dpdk::{DpdkConfig, DpdkNic};
    let dpdk = config.dpdk.clone().unwrap_or_default();
    let entry = config.replica(id)?.clone();
    let secret = config.load_secret(id)?;
    let limits = config.limits();
    let addr = nic::dpdk::ipv4(entry.replica_addr, "replica_addr")?;
    let mut peers = Vec::new();
    for r in config.replicas.iter().filter(|r| r.id != id) {
        peers.push((
            ReplicaId(r.id),
            nic::dpdk::ipv4(r.replica_addr, "replica_addr")?,
        ));
    }
    let mut dc = DpdkConfig::new(
        ReplicaId(id),
        addr,
        peers,
        secret,
        config.keyring(),
        eal_args(&config, id, &dpdk),
    );
    dc.prefix_len = dpdk.prefix_len;
    dc.port.port = dpdk.port.clone();
    dc.port.queue = dpdk.queue;
    dc.port.rx_descriptors = dpdk.descriptors;
    dc.port.tx_descriptors = dpdk.descriptors;
    dc.port.mbufs = 2 * dc.port.mbufs_min();
    dc.message_bytes_max = limits.message_bytes_max;
    dc.tx_buffer_bytes_max = 2 * (12 + dc.frame_bytes_max());
    dc.tx_queue_messages_max = config.dataplane.tx_queue_messages_max;
    dc.socket_buffer_bytes = dpdk.socket_buffer_bytes;
    dc.link_timeout_ms = dpdk.link_timeout_ms;
    dc.poll_idle_us = dpdk.poll_idle_us;
    tracing::info!(replica = id, eal_args = ?dc.eal_args, port = %dc.port.port, "starting DPDK");
    let DpdkNic { rx, tx } = DpdkNic::start(dc)?;
    tracing::info!(replica = id, io = "dpdk", mac = ?rx.mac(), "replica links");
    start_on(config, id, rx, tx, None)
}

/// Starts replica `id`'s threads over a started transport.
fn start_on<R: RxPath, T: nic::TxPath>(
    config: Arc<ClusterConfig>,
    id: u16,
    rx: R,
    tx: T,
    connector: Option<nic::Connector>,
) -> Result<Running, StartError> {
    let secret = config.load_secret(id)?;
    let keyring = config.keyring();
    let limits = config.limits();
    let n = config.n();
    let me = ReplicaId(id);
    let dp = &config.dataplane;
    let data_dir = config.data_dir(id);
    let (control_core, dataplane_core) = pinning(&config)?;
    // Without dedicated cores a separate dataplane thread isolates nothing
    // and costs a thread wake-up per message hop: run it inline.
    let inline = match dp.threads.as_str() {
        "inline" => true,
        "separate" => false,
        _ => dataplane_core.is_none(),
    };
    let nic = rx.stats().clone();
    let faults = rx.faults().clone();

    let durability = match config.storage.durability {
        Durability::Fsync => storage::Durability::Fsync,
        Durability::Memory => storage::Durability::Memory,
    };
    let restored = recovery::restore(
        &data_dir,
        durability,
        config.control_config(id),
        &limits,
        config.api.proxy_bundle_ops_max,
        config.protocol.quota_backend_bytes,
        &config.kv_value_backend(id),
        || crate::seed::initial_store(&config),
    )?;
    tracing::info!(
        replica = id,
        checkpoint = ?restored.checkpoint_cid,
        replayed = restored.replayed,
        votes = restored.votes,
        last_decided = restored.core.last_decided(),
        regency = restored.core.regency(),
        "recovered from the data directory"
    );

    let status = Arc::new(Status::default());
    let started_ms = status::now_ms();
    Status::set(&status.control_heartbeat_ms, started_ms);
    Status::set(&status.last_progress_ms, started_ms);
    // Stuck: three request timeouts without a decision (a leader change
    // fits in two), at least 3 s.
    Status::set(
        &status.stall_after_ms,
        (3 * config.protocol.request_timeout_ms).max(3_000),
    );
    Status::set(&status.last_applied_cid, restored.core.last_decided());
    Status::set(&status.revision, restored.store.revision() as u64);
    let dataplane_stats = Arc::new(DataplaneStats::default());
    let control_stats = Arc::new(parking_lot::Mutex::new(control::Stats::default()));
    let hist = Arc::new(Histograms::default());
    // The space quota was set before the log's decisions were re-executed
    // (0 in the config = kv's default).
    let quota = config.protocol.quota_backend_bytes;
    assert!(quota == 0 || restored.store.quota_bytes() == quota);
    let revisions = tokio::sync::watch::Sender::new(restored.store.revision());
    let store = Arc::new(RwLock::new(restored.store));

    let window = config.protocol.instance_window;
    let (to_control, inbox) = crossbeam_channel::bounded(dp.control_queue_messages_max);
    let (to_executor, exec_jobs) = crossbeam_channel::bounded(window * 2);
    let (storage_tx, storage_rx) = crossbeam_channel::bounded(window * 4);
    let (acks_tx, acks_rx) = crossbeam_channel::bounded(window * 2);
    let (checkpoints_tx, checkpoints_rx) = crossbeam_channel::bounded(4);
    let (links_tx, links_rx) = crossbeam_channel::bounded(4 * n);
    let signer = Signer::new(config.cluster_id, me, secret);
    // Threads that feed the control thread wake it when it waits in the
    // transport (inline dataplane).
    let wake = inline.then(|| rx.waker());
    let (proxy_handle, waiters, from_proxy) = proxy::Proxy::start(
        signer.clone(),
        first_seq(&data_dir)?,
        config.api.proxy_queue_ops_max,
        config.api.proxy_bundle_ops_max,
        PROXY_REQUESTS_IN_FLIGHT_MAX,
        wake.clone(),
    );
    let mut threads = Vec::new();

    let (storage, persisted) = match config.storage.durability {
        Durability::Fsync => {
            let st = restored.storage;
            let group_max = config.protocol.pipeline_depth.max(1) * 8;
            let h = hist.clone();
            let w = wake.clone();
            threads.push(spawn(&format!("storage-r{id}"), None, move || {
                storage_thread::run(st, storage_rx, acks_tx, group_max, h, w)
            })?);
            (Some(storage_tx), acks_rx)
        }
        // No storage thread: the control loop acknowledges inline and must
        // not wait on a channel whose sender is gone.
        Durability::Memory => (None, crossbeam_channel::never()),
    };

    let rx_cfg = RxConfig {
        rx_budget_per_peer: dp.rx_budget_per_peer,
        verify_batch_max: dp.verify_batch_max,
        spin: Duration::from_micros(dp.rx_spin_us),
        ..RxConfig::default()
    };
    let receiver = Receiver::new(
        rx,
        n,
        Verifier::new(keyring.clone(), 4 * config.protocol.pending_requests_max),
        limits,
        rx_cfg,
        to_control,
        dataplane_stats.clone(),
    )
    .with_link_events(links_tx);
    let inline_receiver = if inline {
        assert!(
            dp.control_queue_messages_max >= rx_cfg.events_per_round_max,
            "an inline round must fit the control queue (it is drained by the same thread)"
        );
        Some(receiver)
    } else {
        threads.push(spawn(
            &format!("dataplane-r{id}"),
            dataplane_core,
            move || receiver.run(),
        )?);
        None
    };
    tracing::info!(replica = id, inline, "dataplane");

    let control = control_loop::ControlLoop {
        inline: inline_receiver,
        core: restored.core,
        io: control_loop::Io {
            outbox: Outbox::new(signer, tx, dataplane_stats.clone()),
            storage: storage.clone(),
            to_executor,
            hist: hist.clone(),
            timing: Default::default(),
            timing_max: 4 * window,
        },
        inbox,
        from_proxy,
        proxy: waiters.clone(),
        // Twice the request timeout: by then the core forwarded it to the
        // leader once; a copy to every replica covers those that lost it.
        proxy_retry: Duration::from_millis(2 * config.protocol.request_timeout_ms.max(1)),
        persisted,
        checkpoints: checkpoints_rx,
        links: links_rx,
        tick: Duration::from_millis(config.protocol.tick_ms),
        status: status.clone(),
        stats: control_stats.clone(),
    };
    threads.push(spawn(&format!("control-r{id}"), control_core, move || {
        control.run()
    })?);

    let executor = executor::Executor {
        store: store.clone(),
        jobs: exec_jobs,
        me: ClientId::of_replica(me),
        waiters,
        status: status.clone(),
        commands_per_request_max: config.api.proxy_bundle_ops_max,
        range_response_bytes_max: config.api.range_response_bytes_max,
        quota_backend_bytes: config.protocol.quota_backend_bytes,
        lease_votes_needed: node::lease_votes_needed(&config.control_config(id)),
        checkpoints: checkpoints_tx,
        storage,
        snapshot_chunk_bytes: config.control_config(id).snapshot_chunk_bytes,
        hist: hist.clone(),
        wake,
        revisions: revisions.clone(),
    };
    threads.push(spawn(&format!("executor-r{id}"), None, move || {
        executor.run()
    })?);

    let cluster = api::ClusterInfo {
        cluster_id: config.cluster_id,
        member_id: api::member_id(config.cluster_id, id),
        members: config
            .replicas
            .iter()
            .map(|r| api::MemberInfo {
                id: api::member_id(config.cluster_id, r.id),
                name: format!("bftd-{}", r.id),
                peer_urls: vec![format!("http://{}", r.replica_addr)],
                client_urls: std::iter::once(format!(
                    "{}://{}",
                    config.client_scheme(),
                    r.client_addr
                ))
                .chain(r.client_plain_addr.map(|a| format!("http://{a}")))
                .collect(),
            })
            .collect(),
    };
    Ok(Running {
        id,
        config,
        status,
        store,
        proxy: proxy_handle,
        dataplane_stats,
        control_stats,
        hist,
        nic,
        faults,
        cluster,
        revisions,
        threads,
        _connector: connector,
    })
}

impl Running {
    /// Waits for the replica's threads (they run until the process ends).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// The API's view of a running replica.
pub struct ReplicaBackend {
    pub hist: Arc<Histograms>,
    pub store: Arc<RwLock<Store>>,
    pub proxy: ProxyHandle,
    pub status: Arc<Status>,
    pub cluster: api::ClusterInfo,
    pub cluster_id: u64,
    /// This replica's id.
    pub me: u16,
    /// Largest read response, bytes (`[api] range_response_bytes_max`).
    pub range_response_bytes_max: usize,
    /// The store's revision after each executed batch.
    pub revisions: tokio::sync::watch::Receiver<i64>,
}

impl api::Backend for ReplicaBackend {
    fn submit(
        &self,
        command: Command,
    ) -> Result<oneshot::Receiver<Result<Response, KvError>>, api::SubmitError> {
        let (tx, rx) = oneshot::channel();
        self.proxy.submit(command, tx).map_err(|e| match e {
            Refused::Overloaded => api::SubmitError::Overloaded,
            Refused::Stopped => api::SubmitError::Stopped,
        })?;
        Ok(rx)
    }
    fn validate(&self, command: &Command) -> Result<(), KvError> {
        self.store.read().validate(command)
    }
    fn read_local(&self, command: &Command) -> Result<Response, KvError> {
        self.store
            .read()
            .execute_read_only_limited(command, self.range_response_bytes_max)
    }
    fn hash_kv(&self, revision: i64) -> Result<(u32, i64), KvError> {
        self.store.read().hash_kv(revision)
    }
    fn hash(&self) -> u32 {
        self.store.read().hash()
    }
    fn store_size(&self) -> (i64, i64) {
        let s = self.store.read();
        (s.revision(), s.size_bytes() as i64)
    }
    fn quota_bytes(&self) -> u64 {
        self.store.read().quota_bytes()
    }
    fn snapshot(&self) -> (i64, Vec<u8>) {
        let s = self.store.read();
        (s.revision(), s.snapshot())
    }
    fn watch_events(
        &self,
        key: &[u8],
        range_end: &[u8],
        from_revision: i64,
        scan_max: usize,
    ) -> Result<kv::EventPage, kv::WatchCompacted> {
        self.store
            .read()
            .watch_events(key, range_end, from_revision, scan_max)
    }
    fn revisions(&self) -> tokio::sync::watch::Receiver<i64> {
        self.revisions.clone()
    }
    fn leases(&self) -> Vec<kv::LeaseInfo> {
        self.store.read().leases()
    }
    fn alarms(&self) -> Vec<kv::pb::etcdserverpb::AlarmMember> {
        self.store.read().alarms()
    }
    fn auth(&self) -> std::sync::Arc<kv::auth::AuthStore> {
        self.store.read().auth()
    }
    fn check_auth(&self, command: &kv::Command) -> Result<(), kv::KvError> {
        self.store.read().check_auth(command)
    }
    fn lease(&self, id: i64, keys: bool) -> Option<kv::LeaseInfo> {
        self.store.read().lease(id, keys)
    }
    fn has_leader(&self) -> bool {
        self.status.health(status::now_ms()).is_ok()
    }
    fn move_leader(&self, target_member_id: u64) -> Result<(), api::MoveLeaderRefused> {
        let s = &self.status;
        if Status::get(&s.leader) != self.me as u64 {
            return Err(api::MoveLeaderRefused::NotLeader);
        }
        let to = (0..self.cluster.members.len() as u16)
            .find(|&r| api::member_id(self.cluster_id, r) == target_member_id)
            .filter(|&r| r != self.me)
            .ok_or(api::MoveLeaderRefused::BadTransferee)?;
        Status::set(&s.move_leader_to, u64::from(to) + 1);
        Ok(())
    }
    fn progress(&self) -> api::Progress {
        let s = &self.status;
        api::Progress {
            regency: Status::get(&s.regency),
            leader_member_id: api::member_id(self.cluster_id, Status::get(&s.leader) as u16),
            last_decided_cid: Status::get(&s.last_decided_cid),
            last_applied_cid: Status::get(&s.last_applied_cid),
        }
    }
    fn cluster(&self) -> &api::ClusterInfo {
        &self.cluster
    }
    fn observe_request(&self, latency: Duration) {
        self.hist.api_request.observe(latency);
    }
}

/// What `/status` and `/metrics` read.
#[derive(Clone)]
pub struct Observer {
    pub id: u16,
    pub status: Arc<Status>,
    pub store: Arc<RwLock<Store>>,
    pub dataplane: Arc<DataplaneStats>,
    pub control: Arc<parking_lot::Mutex<control::Stats>>,
    pub nic: Arc<NicStats>,
    /// Set only with `bftd run --fault-injection` (tests).
    pub faults: Option<nic::FaultSwitch>,
    pub hist: Arc<Histograms>,
    /// The client port's connection table, once it exists (its counters
    /// are exported as `bftd_client_*`).
    pub client_port: std::sync::OnceLock<Arc<api::client_port::ConnTable>>,
    /// The cluster's shape from the config, exported as gauges so alert
    /// rules can compare against it (`bftd_replicas`,
    /// `bftd_quorum_replicas`, `bftd_checkpoint_period`).
    pub shape: ClusterShape,
}

/// The parts of the config that alert rules and dashboards compare live
/// values against; constant for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterShape {
    /// n, the number of replicas in the config.
    pub replicas: u64,
    /// The Byzantine quorum, ceil((n+f+1)/2) replicas (2f+1 when n = 3f+1).
    pub quorum: u64,
    /// Consensus instances between two checkpoints (`[protocol]
    /// checkpoint_period`): a replica further behind than this catches up
    /// by state transfer.
    pub checkpoint_period: u64,
}

impl ClusterShape {
    /// The shape of `config`.
    pub fn of(config: &ClusterConfig) -> Self {
        Self {
            replicas: config.n() as u64,
            quorum: config.control_config(0).quorum() as u64,
            checkpoint_period: config.protocol.checkpoint_period,
        }
    }
}

/// This process's resident set size, bytes (`/proc/self/statm`'s second
/// field times the page size); `None` where that file cannot be read.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions; it returns -1 on error.
    let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page_bytes).ok().map(|p| pages * p)
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Observer(replica {})", self.id)
    }
}

impl Source for Observer {
    fn samples(&self) -> Vec<Sample> {
        let s = &self.status;
        let g = Status::get;
        let mut v = vec![
            Sample::gauge("regency", "Current regency (leader epoch)", g(&s.regency)),
            Sample::gauge("leader", "Replica id of the current leader", g(&s.leader)),
            Sample::gauge(
                "last_decided_cid",
                "Highest consensus instance decided",
                g(&s.last_decided_cid),
            ),
            Sample::gauge(
                "last_applied_cid",
                "Highest consensus instance executed",
                g(&s.last_applied_cid),
            ),
            Sample::gauge("revision", "Key-value store revision", g(&s.revision)),
            Sample::gauge(
                "healthy",
                "1 when /healthz answers 200 (control thread alive, decisions moving while requests wait), else 0",
                u64::from(s.health(status::now_ms()).is_ok()),
            ),
            Sample::gauge(
                "state_transfer_running",
                "1 while this replica fetches the state from others",
                g(&s.transferring),
            ),
            Sample::gauge(
                "replicas",
                "Replicas in the cluster config (n)",
                self.shape.replicas,
            ),
            Sample::gauge(
                "quorum_replicas",
                "Byzantine quorum: replicas that must agree, ceil((n+f+1)/2)",
                self.shape.quorum,
            ),
            Sample::gauge(
                "checkpoint_period",
                "Consensus instances between two checkpoints (config)",
                self.shape.checkpoint_period,
            ),
            Sample::gauge(
                "pending_requests",
                "Requests waiting to be ordered",
                g(&s.pending_requests),
            ),
            Sample::counter(
                "decisions",
                "Consensus instances executed",
                g(&s.decisions_total),
            ),
            Sample::counter(
                "requests_executed",
                "Client requests executed",
                g(&s.requests_executed_total),
            ),
            Sample::histogram(
                "consensus_instance_seconds",
                "One consensus instance, proposal to decision, at this replica",
                &self.hist.consensus_instance,
            ),
            Sample::histogram(
                "consensus_write_phase_seconds",
                "Proposal to this replica's ACCEPT",
                &self.hist.write_phase,
            ),
            Sample::histogram(
                "consensus_accept_phase_seconds",
                "This replica's ACCEPT to the decision",
                &self.hist.accept_phase,
            ),
            Sample::histogram(
                "wal_fsync_seconds",
                "One write-ahead log group commit",
                &self.hist.fsync,
            ),
            Sample::histogram(
                "execute_seconds",
                "Executing one decision",
                &self.hist.execute,
            ),
            Sample::histogram(
                "api_request_seconds",
                "One etcd API call at this replica",
                &self.hist.api_request,
            ),
            Sample::histogram(
                "dataplane_verify_seconds",
                "Verifying one batch of received messages",
                &self.dataplane.verify_seconds,
            ),
        ];
        for (name, label, value) in self.dataplane.metrics() {
            let sample = Sample::counter(name, "Dataplane counter (see DataplaneStats)", value);
            v.push(if label.is_empty() {
                sample
            } else {
                sample.label("reason", label)
            });
        }
        let c = self.control.lock().clone();
        // One counter per reason.
        let by_reason = |v: &mut Vec<Sample>, name, help, reasons: &[(&str, u64)]| {
            for &(reason, value) in reasons {
                v.push(Sample::counter(name, help, value).label("reason", reason));
            }
        };
        by_reason(
            &mut v,
            "control_drops",
            "Messages the consensus core refused",
            &[
                ("wrong_regency", c.drop_wrong_regency),
                ("stale_cid", c.drop_stale_cid),
                ("future_cid", c.drop_future_cid),
                ("not_leader", c.drop_not_leader),
                ("bad_batch", c.drop_bad_batch),
                ("equivocation", c.drop_equivocation),
                ("conflicting_vote", c.drop_conflicting_vote),
            ],
        );
        v.push(Sample::counter(
            "proposals",
            "Batches proposed as leader",
            c.proposals_sent,
        ));
        v.push(Sample::counter(
            "requests_deduplicated",
            "Duplicate requests not executed",
            c.requests_deduplicated,
        ));
        v.push(Sample::counter(
            "requests_refused_full",
            "Requests refused: pending pool full",
            c.requests_refused_full,
        ));
        v.push(Sample::counter(
            "requests_refused_client_full",
            "Requests refused: their client's share of the pending pool full",
            c.requests_refused_client_full,
        ));
        by_reason(
            &mut v,
            "leader_changes_started",
            "Leader changes this replica asked for, by reason (leader_move: as leader, for MoveLeader)",
            &[
                ("request_timeout", c.timeouts_request),
                ("sync_timeout", c.timeouts_sync),
                ("leader_link", c.timeouts_leader_link),
                ("low_throughput", c.timeouts_throughput),
                ("leader_lag", c.timeouts_leader_lag),
                ("leader_move", c.leader_moves_started),
            ],
        );
        by_reason(
            &mut v,
            "leader_accepts",
            "Instances decided here in a regency this replica follows, by when the leader's ACCEPT came: before the decision or within leader_lag_max_ms (on_time), or later or never (late)",
            &[
                ("on_time", c.leader_accepts_on_time),
                ("late", c.leader_accepts_late),
            ],
        );
        v.push(Sample::counter(
            "leader_moves_joined",
            "Leadership moves of the current leader this replica joined",
            c.leader_moves_joined,
        ));
        v.push(Sample::counter(
            "transfer_bad_chunks",
            "Snapshot chunks that did not match the manifest (source dropped)",
            c.transfer_bad_chunks,
        ));
        v.push(Sample::counter(
            "transfer_ignored_chunks",
            "Snapshot chunks ignored (not asked for, not from the asked source)",
            c.transfer_ignored_chunks,
        ));
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.client_port.get() {
            let p = &t.stats;
            v.push(Sample::gauge(
                "client_connections_open",
                "Client port connections open (TLS handshakes included)",
                load(&p.connections_open),
            ));
            for (name, help, c) in [
                (
                    "client_connections_accepted",
                    "Client connections accepted",
                    &p.connections_accepted,
                ),
                (
                    "client_connections_refused",
                    "Client connections closed at once: the table was full and none idle",
                    &p.connections_refused,
                ),
                (
                    "client_connections_evicted",
                    "Idle client connections closed to make room",
                    &p.connections_evicted,
                ),
                (
                    "client_connections_idle_closed",
                    "Client connections closed after client_idle_timeout",
                    &p.connections_idle_closed,
                ),
                (
                    "client_accept_errors",
                    "Failed accepts on the client port (EMFILE, ...)",
                    &p.accept_errors,
                ),
                (
                    "client_streams_over_budget",
                    "Requests failed because a request-bytes budget was full",
                    &p.streams_over_budget,
                ),
                (
                    "client_tls_handshakes",
                    "TLS handshakes completed on the client port",
                    &p.tls_handshakes,
                ),
                (
                    "client_tls_handshakes_failed",
                    "TLS handshakes failed (bad or missing client certificate, not TLS, closed)",
                    &p.tls_handshakes_failed,
                ),
                (
                    "client_tls_handshakes_timed_out",
                    "TLS handshakes abandoned after the handshake timeout",
                    &p.tls_handshakes_timed_out,
                ),
            ] {
                v.push(Sample::counter(name, help, load(c)));
            }
        }
        let w = &api::watch::STATS;
        v.push(Sample::gauge(
            "watch_streams",
            "Watch streams open",
            load(&w.streams),
        ));
        v.push(Sample::gauge(
            "watchers",
            "Watchers open, over all streams",
            load(&w.watchers),
        ));
        v.push(Sample::counter(
            "watch_events_sent",
            "Watch events sent, over all watchers",
            load(&w.events_sent),
        ));
        v.push(Sample::counter(
            "watchers_compacted",
            "Watchers canceled because compaction passed them",
            load(&w.compacted),
        ));
        {
            let store = self.store.read();
            v.push(Sample::gauge(
                "leases",
                "Leases granted and not yet revoked or expired",
                store.lease_count() as u64,
            ));
            v.push(Sample::gauge(
                "keys",
                "Keys that exist at the current revision",
                store.key_count() as u64,
            ));
            v.push(Sample::gauge(
                "store_size_bytes",
                "Logical size of the store with its history (what the space quota limits)",
                store.size_bytes(),
            ));
        }
        if let Some(rss) = resident_memory_bytes() {
            v.push(Sample::gauge(
                "process_resident_memory_bytes",
                "Resident set size of this replica's process (/proc/self/statm)",
                rss,
            ));
        }
        for m in self.nic.metrics() {
            let name = m.name.strip_suffix("_total").unwrap_or(m.name);
            let mut sample =
                Sample::counter(name, "Transport counter (see nic::NicStats)", m.value);
            for (k, val) in m.labels {
                sample = sample.label(k, val);
            }
            v.push(sample);
        }
        v
    }
}

impl api::http::Observe for Observer {
    fn status_json(&self) -> serde_json::Value {
        let s = &self.status;
        let store = self.store.read();
        serde_json::json!({
            "replica": self.id,
            "regency": Status::get(&s.regency),
            "leader": Status::get(&s.leader),
            "last_decided_cid": Status::get(&s.last_decided_cid),
            "last_applied_cid": Status::get(&s.last_applied_cid),
            "revision": store.revision(),
            "state_digest": store.state_digest().to_hex(),
            "keys": store.key_count(),
            "pending_requests": Status::get(&s.pending_requests),
            "proxy_outstanding": Status::get(&s.proxy_outstanding),
            "transferring": Status::get(&s.transferring) == 1,
            "health": match s.health(status::now_ms()) {
                Ok(()) => "ok".to_string(),
                Err(e) => e,
            },
        })
    }
    fn metrics_text(&self) -> String {
        crate::metrics::encode(self.clone())
    }
    fn set_blocked(&self, peers: &[u16]) -> Result<(), String> {
        let f = self
            .faults
            .as_ref()
            .ok_or("fault injection is off (start the replica with --fault-injection)")?;
        let peers: Vec<wire::ReplicaId> = peers.iter().map(|&p| wire::ReplicaId(p)).collect();
        f.set_blocked(&peers);
        tracing::warn!(?peers, "fault injection: links to these replicas are cut");
        Ok(())
    }
    fn stall_control(&self, ms: u64) -> Result<(), String> {
        if self.faults.is_none() {
            return Err("fault injection is off (start the replica with --fault-injection)".into());
        }
        Status::set(&self.status.stall_control_until_ms, status::now_ms() + ms);
        tracing::warn!(ms, "fault injection: the control thread stalls");
        Ok(())
    }
    fn health(&self) -> Result<(), String> {
        self.status.health(status::now_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_core_the_machine_does_not_have_is_an_error_not_an_unpinned_run() {
        let mut c = ClusterConfig::default_template();
        c.dataplane.pin_cores = PinCores::On;
        c.dataplane.control_core = 99_999;
        let err = pinning(&c).unwrap_err().to_string();
        assert!(err.contains("control_core = 99999"), "{err}");
        c.dataplane.pin_cores = PinCores::Off;
        assert_eq!(pinning(&c).unwrap(), (None, None));
    }

    #[test]
    fn a_kv_directory_that_cannot_be_opened_stops_the_start_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("bftd-kvdir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = crate::config::init_loopback(&dir, 4, 31000, Durability::Memory).unwrap();
        let config = ClusterConfig::load(&path).unwrap();
        let kv_dir = config.kv_dir(0);
        std::fs::create_dir_all(&kv_dir).unwrap();
        std::fs::write(kv_dir.join("precious"), b"x").unwrap();
        let err = recovery::restore(
            &config.data_dir(0),
            storage::Durability::Memory,
            config.control_config(0),
            &config.limits(),
            config.api.proxy_bundle_ops_max,
            config.protocol.quota_backend_bytes,
            &config.kv_value_backend(0),
            || Ok(None),
        )
        .err()
        .expect("the start stops");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("cannot open kv store at {}: ", kv_dir.display())),
            "{text}"
        );
        assert!(kv_dir.join("precious").exists(), "nothing of it was wiped");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_cluster_shape_gauges_come_from_the_config() {
        let mut c = ClusterConfig::default_template();
        c.protocol.checkpoint_period = 64;
        for i in 0..7 {
            c.replicas.push(crate::config::ReplicaEntry {
                id: i,
                public_key: wire::SecretKey::generate().public().to_hex(),
                client_addr: ([127, 0, 0, 1], 1000 + i).into(),
                client_plain_addr: None,
                replica_addr: ([127, 0, 0, 1], 2000 + i).into(),
                http_addr: ([127, 0, 0, 1], 3000 + i).into(),
                key_file: None,
                dpdk_eal_args: Vec::new(),
            });
        }
        let shape = ClusterShape::of(&c);
        assert_eq!(
            shape,
            ClusterShape {
                replicas: 7,
                quorum: 5,
                checkpoint_period: 64
            }
        );
    }

    #[test]
    fn the_resident_set_size_is_read_from_proc_and_counts_touched_memory() {
        let before = resident_memory_bytes().expect("/proc/self/statm on Linux");
        assert!(before > 1 << 20, "{before} bytes");
        // Every page of this buffer is written, so it is resident while
        // it lives, whatever other tests of this process free meanwhile.
        let touched = std::hint::black_box(vec![1u8; 64 << 20]);
        let after = resident_memory_bytes().unwrap();
        assert!(after >= 64 << 20, "{before} -> {after}");
        drop(touched);
    }

    #[test]
    fn the_first_proxy_seq_is_above_any_earlier_run_even_after_the_data_dir_is_wiped() {
        let dir = std::env::temp_dir().join(format!("bftd-seq-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = first_seq(&dir).unwrap();
        let b = first_seq(&dir).unwrap();
        assert!(b > a);
        std::fs::remove_dir_all(&dir).unwrap(); // wiped: the boot count restarts
        let c = first_seq(&dir).unwrap();
        assert!(c > b, "{c} <= {b}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_first_seq_file_under_the_name_before_host_files_is_read_once_and_removed() {
        let dir = std::env::temp_dir().join(format!("bftd-seq-old-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // An earlier run far in the future (its clock was ahead).
        let ahead = u64::MAX / 2;
        std::fs::write(dir.join("proxy_first_seq"), format!("{ahead}\n")).unwrap();
        assert_eq!(first_seq(&dir).unwrap(), ahead + 1);
        assert!(!dir.join("proxy_first_seq").exists());
        assert_eq!(first_seq(&dir).unwrap(), ahead + 2);
        // Storage's recovery of this directory warns about nothing.
        let (_, rec) =
            storage::Storage::open(&dir, storage::Durability::Fsync, storage::Limits::default())
                .unwrap();
        assert!(rec.warnings.is_empty(), "{:?}", rec.warnings);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
