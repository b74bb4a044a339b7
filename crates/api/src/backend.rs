//! What the API needs from a replica. bftd implements it over consensus;
//! tests implement it over one local store.

use kv::pb::bftdkv::Command;
use kv::{KvError, Response};
use tokio::sync::oneshot;

/// Why an operation was not accepted for ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// Too many operations are waiting at this replica (etcd: "too many
    /// requests").
    Overloaded,
    /// The replica is stopping.
    Stopped,
}

/// Why a replica refused to move its leadership (Maintenance.MoveLeader).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveLeaderRefused {
    /// This replica does not lead a working regency (etcd: "not leader").
    NotLeader,
    /// The target is not another member (etcd: "bad leader transferee").
    BadTransferee,
}

/// One member of the cluster as etcd's MemberList reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

/// Static facts about the cluster and this replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    pub cluster_id: u64,
    /// etcd member id of this replica.
    pub member_id: u64,
    pub members: Vec<MemberInfo>,
}

/// Live progress of this replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Regency (reported as etcd's raft_term).
    pub regency: u64,
    /// etcd member id of the current leader.
    pub leader_member_id: u64,
    /// Highest consensus instance decided (etcd's raft_index).
    pub last_decided_cid: u64,
    /// Highest consensus instance applied (etcd's raft_applied_index).
    pub last_applied_cid: u64,
}

/// A replica as seen by the API.
pub trait Backend: Send + Sync + 'static {
    /// Orders `command` through consensus; the receiver yields its result at
    /// this replica once executed.
    fn submit(
        &self,
        command: Command,
    ) -> Result<oneshot::Receiver<Result<Response, KvError>>, SubmitError>;
    /// Checks a command as the state machine will, before ordering it.
    fn validate(&self, command: &Command) -> Result<(), KvError>;
    /// Executes a read-only command on local state (etcd's serializable
    /// reads).
    fn read_local(&self, command: &Command) -> Result<Response, KvError>;
    /// Maintenance.HashKV: (hash, compact revision) at `revision`.
    fn hash_kv(&self, revision: i64) -> Result<(u32, i64), KvError>;
    /// Maintenance.Hash.
    fn hash(&self) -> u32;
    /// (revision, size in bytes) of the local store: `kv::Store::revision`
    /// and `kv::Store::size_bytes` (the size the space quota counts).
    fn store_size(&self) -> (i64, i64);
    /// (revision, `kv::Store::snapshot` bytes) of the local store, taken
    /// at one point (one read of the store): what Maintenance.Snapshot
    /// streams. The bytes restore with `kv::Store::restore`.
    fn snapshot(&self) -> (i64, Vec<u8>);
    /// The local store's space quota, bytes (`kv::Store::quota_bytes`, the
    /// cluster's `[protocol] quota_backend_bytes`): Maintenance.Alarm
    /// reports NOSPACE while the size is at or above it.
    fn quota_bytes(&self) -> u64;
    /// The changes of `[key, range_end)` from `from_revision` on, scanning
    /// at most `scan_max` history changes: `kv::Store::watch_events` on the
    /// local store.
    ///
    /// # Errors
    /// [`kv::WatchCompacted`] when `from_revision` is below the compaction
    /// revision.
    fn watch_events(
        &self,
        key: &[u8],
        range_end: &[u8],
        from_revision: i64,
        scan_max: usize,
    ) -> Result<kv::EventPage, kv::WatchCompacted>;
    /// The local store's revision, updated after every executed batch (and
    /// a checkpoint installed by state transfer): what wakes watchers. The
    /// sender going away means the replica stopped.
    fn revisions(&self) -> tokio::sync::watch::Receiver<i64>;
    /// The alarms stored in the local store (`kv::Store::alarms`).
    fn alarms(&self) -> Vec<kv::pb::etcdserverpb::AlarmMember>;
    /// The leases granted in the local store (`kv::Store::leases`).
    fn leases(&self) -> Vec<kv::LeaseInfo>;
    /// Lease `id` in the local store, with its keys when `keys`
    /// (`kv::Store::lease`).
    fn lease(&self, id: i64, keys: bool) -> Option<kv::LeaseInfo>;
    /// The local store's auth state (`kv::Store::auth`).
    fn auth(&self) -> std::sync::Arc<kv::auth::AuthStore>;
    /// `kv::Store::check_auth` on the local store: the checks the store
    /// will make of `command` for `command.user` when it applies it.
    fn check_auth(&self, command: &Command) -> Result<(), KvError>;
    /// Whether this replica has a working regency (etcd: a leader). Watch
    /// streams opened with `hasleader=true` fail with "etcdserver: no
    /// leader" while it has not.
    fn has_leader(&self) -> bool {
        true
    }
    fn progress(&self) -> Progress;
    /// Asks this replica, as leader, to hand the leadership to member
    /// `target_member_id` (a regency change to the regency it leads,
    /// `control::Replica::move_leader`); the move shows later in
    /// [`Backend::progress`]'s `leader_member_id`. A backend without
    /// consensus has no leadership to move: refused as not leader.
    fn move_leader(&self, _target_member_id: u64) -> Result<(), MoveLeaderRefused> {
        Err(MoveLeaderRefused::NotLeader)
    }
    fn cluster(&self) -> &ClusterInfo;
    /// Records the latency of one API call (for metrics); no-op by default.
    fn observe_request(&self, _latency: std::time::Duration) {}
}

/// etcd member id of replica `replica` in cluster `cluster_id`: a stable,
/// non-zero 64-bit id derived from both.
pub fn member_id(cluster_id: u64, replica: u16) -> u64 {
    let mut b = [0u8; 10];
    b[..8].copy_from_slice(&cluster_id.to_be_bytes());
    b[8..].copy_from_slice(&replica.to_be_bytes());
    let d = wire::hash::digest(&b);
    u64::from_be_bytes(d.0[..8].try_into().expect("8 bytes")).max(1)
}
