//! The MVCC store: etcd's `server/mvcc` key index and the KV part of
//! `etcdserver/apply.go`, as a deterministic state machine.
//!
//! Every key keeps its history as a list of events (puts and tombstones)
//! ordered by revision `(main, sub)`: `main` is the store revision of the
//! write transaction, `sub` the position of the change inside it, as in
//! etcd. A read at revision `r` sees, for every key, the newest event with
//! `main <= r`. Maps are `BTreeMap`s, nothing reads a clock or a random
//! source, and sorting is stable, so the same commands give the same bytes
//! on every replica.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::error::KvError;
use crate::pb::bftdkv::{command::Op, Command};
use crate::pb::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    response_op, CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest,
    DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use crate::pb::mvccpb::KeyValue;
use crate::validate;
use crate::values::{Reader, Values};

/// etcd's default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

/// Default largest read response, bytes of encoded key-values, for
/// [`Store::execute_read_only`] (see
/// [`Store::execute_read_only_limited`]). etcd has no such cap below
/// gRPC's send limit (math.MaxInt32, about 2 GiB), so a Range with
/// `limit = 0` over a large keyspace builds a response of any size; 64 MiB
/// bounds the memory one read can take while leaving room for the
/// paginated lists kube-apiserver makes (500 objects a page by default).
pub const DEFAULT_RANGE_RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Default space quota of a store, bytes of [`Store::size_bytes`]: etcd's
/// default `--quota-backend-bytes` (`DefaultQuotaBytes`, 2 GiB).
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Bytes [`Store::size_bytes`] counts for every stored history entry
/// beside its key and value: etcd's estimate of a key's metadata in its
/// quota check (`kvOverhead` in `etcdserver/quota.go`, 256).
pub const ENTRY_OVERHEAD_BYTES: u64 = 256;

/// What one history entry of `key` adds to [`Store::size_bytes`]: the key,
/// the value (none for a tombstone) and [`ENTRY_OVERHEAD_BYTES`].
pub(crate) fn entry_bytes(key: &[u8], event: &Event) -> u64 {
    let value = match event {
        Event::Put(p) => p.value_bytes as usize,
        Event::Tombstone => 0,
    };
    key.len() as u64 + value as u64 + ENTRY_OVERHEAD_BYTES
}

/// The revision of one change: `main` is the store revision of the write
/// transaction, `sub` the index of the change within it (etcd's
/// `revision{main, sub}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Revision {
    pub main: i64,
    pub sub: i64,
}

/// A put: the key's fields as of this revision. The value itself is in
/// the store's [`Values`], at the put's revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PutEvent {
    pub create_revision: i64,
    pub version: i64,
    pub lease: i64,
    /// Length of the value, bytes (values are at most a request, far
    /// below 4 GiB).
    pub value_bytes: u32,
}

/// One change of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Put(PutEvent),
    Tombstone,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub rev: Revision,
    pub event: Event,
}

/// The retained history of one key: never empty, strictly ascending
/// revisions, starts with a put, no two tombstones in a row. At most the
/// first entry has `main <= compact_revision`, and it is then a put.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct History {
    pub entries: Vec<Entry>,
}

impl History {
    /// The newest event with `main <= rev`.
    fn at(&self, rev: i64) -> Option<&Entry> {
        let n = self.entries.partition_point(|e| e.rev.main <= rev);
        n.checked_sub(1).map(|i| &self.entries[i])
    }

    /// The key's put as seen at `rev` and its revision, if the key exists
    /// then.
    fn live_at(&self, rev: i64) -> Option<(Revision, &PutEvent)> {
        match self.at(rev) {
            Some(Entry {
                rev,
                event: Event::Put(p),
            }) => Some((*rev, p)),
            _ => None,
        }
    }

    /// Drops what no read at `rev` or later can see: every event below the
    /// newest one with `main <= rev`, and that one too if it is a
    /// tombstone. Returns whether anything is left; adds the
    /// [`entry_bytes`] of what it dropped to `freed`.
    /// Removes what it drops from the digest `ranges` (reading the values
    /// from `values`) and adds the revisions of the puts it dropped to
    /// `dropped_puts`.
    fn compact(
        &mut self,
        key: &[u8],
        rev: i64,
        freed: &mut u64,
        ranges: &mut crate::digest::Ranges,
        values: &Reader<'_>,
        dropped_puts: &mut Vec<Revision>,
    ) -> bool {
        let n = self.entries.partition_point(|e| e.rev.main <= rev);
        if let Some(last) = n.checked_sub(1) {
            let drop = match self.entries[last].event {
                Event::Put(_) => last,
                Event::Tombstone => last + 1,
            };
            for e in self.entries.drain(..drop) {
                let bytes = entry_bytes(key, &e.event);
                *freed += bytes;
                let value: &[u8] = match e.event {
                    Event::Put(_) => {
                        dropped_puts.push(e.rev);
                        values.get(e.rev)
                    }
                    Event::Tombstone => &[],
                };
                ranges.remove(key, &e, value, bytes);
            }
        }
        !self.entries.is_empty()
    }
}

/// The key-value of `key`'s put `p` at `mod_revision` with `value`.
pub(crate) fn key_value(key: &[u8], mod_revision: i64, p: &PutEvent, value: &[u8]) -> KeyValue {
    assert_eq!(
        value.len(),
        p.value_bytes as usize,
        "the value has its indexed length"
    );
    KeyValue {
        key: key.to_vec(),
        create_revision: p.create_revision,
        mod_revision,
        version: p.version,
        value: value.to_vec(),
        lease: p.lease,
    }
}

pub(crate) fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

/// The keys a `(key, range_end)` pair selects, with etcd's conventions:
/// empty `range_end` = `key` alone; `"\0"` = every key `>= key`; otherwise
/// `[key, range_end)`, empty when `range_end <= key`.
pub(crate) fn key_bounds<'a>(
    key: &'a [u8],
    range_end: &'a [u8],
) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    if range_end.is_empty() {
        (Bound::Included(key), Bound::Included(key))
    } else if range_end == [0] {
        (Bound::Included(key), Bound::Unbounded)
    } else if range_end <= key {
        (Bound::Included(key), Bound::Excluded(key))
    } else {
        (Bound::Included(key), Bound::Excluded(range_end))
    }
}

/// The response to one applied [`Command`]: the etcd response type of the
/// request it carried.
///
/// Only `header.revision` is filled in by the store; the api layer fills
/// `cluster_id`, `member_id` and `raft_term`.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    LeaseGrant(crate::pb::etcdserverpb::LeaseGrantResponse),
    LeaseRevoke(crate::pb::etcdserverpb::LeaseRevokeResponse),
    /// A replica's collected keep-alives (bftd's `LeaseRenew`).
    LeaseRenew(crate::pb::bftdkv::LeaseRenewResponse),
    /// A replica's expiry vote (bftd's `LeaseExpire`).
    LeaseExpire(crate::pb::bftdkv::LeaseExpireResponse),
    Alarm(crate::pb::etcdserverpb::AlarmResponse),
    /// An auth store change (a header only).
    Auth(crate::pb::bftdkv::AuthResponse),
}

impl Response {
    /// The response header (every variant has one once the store made it).
    pub fn header_mut(&mut self) -> &mut ResponseHeader {
        let h = match self {
            Response::Range(r) => &mut r.header,
            Response::Put(r) => &mut r.header,
            Response::DeleteRange(r) => &mut r.header,
            Response::Txn(r) => &mut r.header,
            Response::Compaction(r) => &mut r.header,
            Response::LeaseGrant(r) => &mut r.header,
            Response::LeaseRevoke(r) => &mut r.header,
            Response::LeaseRenew(r) => &mut r.header,
            Response::LeaseExpire(r) => &mut r.header,
            Response::Alarm(r) => &mut r.header,
            Response::Auth(r) => &mut r.header,
        };
        h.get_or_insert_with(Default::default)
    }

    /// `header.revision`: the store revision after the command.
    pub fn revision(&self) -> i64 {
        let h = match self {
            Response::Range(r) => &r.header,
            Response::Put(r) => &r.header,
            Response::DeleteRange(r) => &r.header,
            Response::Txn(r) => &r.header,
            Response::Compaction(r) => &r.header,
            Response::LeaseGrant(r) => &r.header,
            Response::LeaseRevoke(r) => &r.header,
            Response::LeaseRenew(r) => &r.header,
            Response::LeaseExpire(r) => &r.header,
            Response::Alarm(r) => &r.header,
            Response::Auth(r) => &r.header,
        };
        h.as_ref().map_or(0, |h| h.revision)
    }
}

/// The writes of one command in progress (etcd's `storeTxnWrite`): all its
/// changes get main revision `begin_revision + 1`. Kept so that a command
/// that fails halfway can be undone.
pub(crate) struct WriteTxn {
    begin_revision: i64,
    changes: i64,
    touched: Vec<Vec<u8>>,
    live_delta: i64,
}

impl WriteTxn {
    pub(crate) fn new(begin_revision: i64) -> Self {
        Self {
            begin_revision,
            changes: 0,
            touched: Vec::new(),
            live_delta: 0,
        }
    }
    /// The revision reads inside the txn see: the next one once it wrote.
    fn view_revision(&self) -> i64 {
        self.begin_revision + i64::from(self.changes > 0)
    }
    fn write_revision(&self) -> i64 {
        self.begin_revision + 1
    }
}

/// The replicated MVCC key-value store with etcd v3 semantics.
///
/// - Revisions: an empty store is at revision 1. Every command that changes
///   at least one key (a Put, a DeleteRange that deletes a key, a Txn whose
///   executed ops write) raises the revision by exactly one; all writes of
///   one Txn share it.
/// - Per key: `create_revision`, `mod_revision`, `version` (1 on create,
///   +1 per put, gone after a delete), `lease` (a granted lease, or 0; a
///   Put naming a lease that is not granted fails with
///   [`KvError::LeaseNotFound`]).
/// - Leases (`lease.rs`): grant, revoke, renewals and f+1 expiry votes;
///   revoking deletes the lease's keys at one revision.
/// - Compaction drops history below the compaction revision; reads below it
///   fail with [`KvError::Compacted`].
///
/// - Space quota (etcd's `--quota-backend-bytes`): the store counts its
///   size ([`Store::size_bytes`]); a Put or a writing Txn that would leave
///   it above [`Store::quota_bytes`] fails with [`KvError::NoSpace`] and
///   changes nothing. DeleteRange and Compaction always run; compaction
///   frees space. See [`Store::set_quota_bytes`].
///
/// Deterministic: no clocks, randomness or hash-map order; equal command
/// sequences give equal responses, [`Store::state_digest`]s and
/// [`Store::snapshot`]s on every replica (given the same quota and
/// txn-ops limit), whatever their value backend.
///
/// - Values ([`crate::ValueBackend`]): the key index (every key's history
///   of revisions, create_revision, version, lease and value length) is in
///   the heap; the value bytes are in the heap ([`Store::new`]) or in LMDB
///   ([`Store::open`]), keyed by revision as etcd's bbolt `key` bucket.
///
/// Equality compares the logical state (index, values, leases, alarms,
/// auth, ranges), not where the values live.
#[derive(Debug, PartialEq, Eq)]
pub struct Store {
    pub(crate) keys: BTreeMap<Vec<u8>, History>,
    pub(crate) current_revision: i64,
    pub(crate) compact_revision: i64,
    pub(crate) live_keys: usize,
    pub(crate) max_txn_ops: usize,
    /// Sum of [`entry_bytes`] over every stored history entry.
    pub(crate) size_bytes: u64,
    pub(crate) quota_bytes: u64,
    /// The revision index for watches (see `watch.rs`): the revision and
    /// key of every history entry with `main >= compact_revision`. Derived
    /// from `keys`; not part of snapshots or digests.
    pub(crate) changes: BTreeMap<Revision, Vec<u8>>,
    /// Granted leases by id (see `lease.rs`).
    pub(crate) leases: BTreeMap<i64, crate::lease::Lease>,
    /// Bumped by every lease grant and renewal: the lease epoch counter.
    pub(crate) lease_epoch: u64,
    /// Distinct replica votes that expire a lease (configuration).
    pub(crate) lease_votes_needed: usize,
    /// Stored alarms: (member id, alarm type) (see `alarm.rs`).
    pub(crate) alarms: std::collections::BTreeSet<(u64, i32)>,
    /// Users, roles and permissions (see `auth.rs`); shared with readers
    /// until the next change.
    pub(crate) auth: std::sync::Arc<crate::auth::AuthStore>,
    /// The revision ranges and their set hashes over every history entry
    /// (see `digest.rs`): kept by `commit` and compaction, so the state
    /// digest needs no pass over `keys`.
    pub(crate) ranges: crate::digest::Ranges,
    /// The value of every put in `keys`, by revision (see `values.rs`).
    pub(crate) values: Values,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// An empty store at revision 1, never compacted, accepting txns of up
    /// to [`DEFAULT_MAX_TXN_OPS`] ops per level, with a space quota of
    /// [`DEFAULT_QUOTA_BACKEND_BYTES`].
    pub fn new() -> Self {
        Self::with_max_txn_ops(DEFAULT_MAX_TXN_OPS)
    }

    /// An empty store whose txns may hold up to `max_txn_ops` compares,
    /// success ops and failure ops per level (etcd's `--max-txn-ops`).
    /// Panics if `max_txn_ops` is 0.
    pub fn with_max_txn_ops(max_txn_ops: usize) -> Self {
        Self::with_values(max_txn_ops, Values::heap())
    }

    /// An empty store as [`Store::with_max_txn_ops`] whose values live on
    /// `backend`; an LMDB directory is wiped and created afresh (it is a
    /// cache: a replica rebuilds its store from its checkpoint and log).
    /// Panics if `max_txn_ops` is 0.
    ///
    /// # Errors
    /// The LMDB directory cannot be wiped, created or opened
    /// ([`crate::OpenError`] says where and why).
    pub fn open(
        backend: &crate::ValueBackend,
        max_txn_ops: usize,
    ) -> Result<Self, crate::OpenError> {
        Ok(Self::with_values(max_txn_ops, Values::open(backend)?))
    }

    /// Where this store keeps its values.
    pub fn value_backend(&self) -> crate::ValueBackend {
        self.values.backend()
    }

    pub(crate) fn with_values(max_txn_ops: usize, values: Values) -> Self {
        assert!(max_txn_ops > 0, "max_txn_ops must be positive");
        Self {
            keys: BTreeMap::new(),
            current_revision: 1,
            compact_revision: -1,
            live_keys: 0,
            max_txn_ops,
            size_bytes: 0,
            quota_bytes: DEFAULT_QUOTA_BACKEND_BYTES,
            changes: BTreeMap::new(),
            leases: BTreeMap::new(),
            lease_epoch: 0,
            lease_votes_needed: 1,
            alarms: std::collections::BTreeSet::new(),
            auth: Default::default(),
            ranges: crate::digest::Ranges::new(),
            values,
        }
    }

    /// The current store revision (etcd's `currentRev`); 1 on an empty
    /// store.
    pub fn revision(&self) -> i64 {
        self.current_revision
    }

    /// The revision of the last compaction (etcd's `compactMainRev`): -1
    /// until the first compaction, as etcd reports it in `HashKV`.
    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// The number of keys that exist at the current revision.
    pub fn key_count(&self) -> usize {
        self.live_keys
    }

    /// The configured maximum number of ops per txn level.
    pub fn max_txn_ops(&self) -> usize {
        self.max_txn_ops
    }

    /// The store's size, bytes: over every retained history entry (puts
    /// and tombstones of every key, down to the compaction revision), the
    /// key's length plus the value's length plus [`ENTRY_OVERHEAD_BYTES`].
    ///
    /// A function of the logical state alone, kept up to date by every
    /// write, rollback and compaction, and computed again by
    /// [`Store::restore`], so it is equal on every replica in the same
    /// state. It stands in for etcd's backend size (`Status.dbSize`) in
    /// the space quota; unlike bbolt's file it shrinks on compaction at
    /// once (no defragmentation).
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// The space quota, bytes of [`Store::size_bytes`] (see
    /// [`Store::set_quota_bytes`]).
    pub fn quota_bytes(&self) -> u64 {
        self.quota_bytes
    }

    /// Sets the space quota (etcd's `--quota-backend-bytes`), bytes of
    /// [`Store::size_bytes`]; 0 means [`DEFAULT_QUOTA_BACKEND_BYTES`], as in
    /// etcd. A Put or a writing Txn that would leave the size above it
    /// fails with [`KvError::NoSpace`].
    ///
    /// Whether a write is refused depends on the quota, so every replica
    /// must apply the same commands with the same quota (in bftd it is a
    /// `[protocol]` setting); set it before replaying or applying any
    /// command. Lowering it below the current size refuses every further
    /// write until compaction frees space; nothing stored is dropped.
    pub fn set_quota_bytes(&mut self, quota_bytes: u64) {
        self.quota_bytes = if quota_bytes == 0 {
            DEFAULT_QUOTA_BACKEND_BYTES
        } else {
            quota_bytes
        };
    }

    /// Whether the space alarm is raised: the size is at or above the
    /// quota, so every Put and every writing Txn that adds an entry is
    /// refused. The state of etcd's NOSPACE alarm, derived from the state
    /// here (no separate alarm to disarm): it clears when compaction
    /// brings the size below the quota.
    pub fn space_alarm(&self) -> bool {
        self.size_bytes >= self.quota_bytes
    }

    /// Checks a command as etcd's gRPC layer checks the request before
    /// proposing it: empty keys ([`KvError::EmptyKey`]), `ignore_value` with
    /// a value ([`KvError::ValueProvided`]), `ignore_lease` with a lease
    /// ([`KvError::LeaseProvided`]), unknown sort options
    /// ([`KvError::InvalidSortOption`]), too many ops per txn level
    /// ([`KvError::TooManyOps`]), empty txn ops ([`KvError::KeyNotFound`]),
    /// puts that overlap another put or a delete of the same branch
    /// ([`KvError::DuplicateKey`]), and a command without an op
    /// ([`KvError::EmptyCommand`]). Does not look at the state: revisions,
    /// missing keys and leases are checked by [`Store::apply`].
    ///
    /// As in etcd, each nesting level of a txn costs at least one op of the
    /// budget, so a valid txn nests at most `max_txn_ops + 1` deep; that
    /// bounds the recursion of every txn walk here.
    pub fn validate(&self, cmd: &Command) -> Result<(), KvError> {
        validate::check_command(cmd, self.max_txn_ops)
    }

    /// Applies one ordered command and returns etcd's response for it.
    ///
    /// Re-runs [`Store::validate`] first (the command may come from a
    /// Byzantine client or leader). On any error the store is left exactly
    /// as it was and the error is the same on every replica.
    ///
    /// Errors beyond validation: Range at a revision above the current one
    /// ([`KvError::FutureRevision`]) or below the compaction revision
    /// ([`KvError::Compacted`]); Put with `ignore_value`/`ignore_lease` on a
    /// missing key ([`KvError::KeyNotFound`]) or with a lease
    /// ([`KvError::LeaseNotFound`]); the same for the ops on a Txn's
    /// executed path; compaction errors as in [`Store::compact`]; a Put or
    /// a writing Txn that would leave [`Store::size_bytes`] above
    /// [`Store::quota_bytes`] ([`KvError::NoSpace`]; checked after the
    /// other errors, on the size the write would leave).
    pub fn apply(&mut self, cmd: &Command) -> Result<Response, KvError> {
        self.apply_from(None, cmd)
    }

    /// [`Store::apply`] for a command ordered on behalf of replica `origin`
    /// (the authenticated sender of the request that carried it; `None`
    /// for any other client). Only a lease expiry vote looks at it.
    ///
    /// # Errors
    /// As [`Store::apply`]; lease commands as `LeaseGrant` (TTL too large,
    /// lease exists) and `LeaseRevoke` (lease not found) in etcd.
    pub fn apply_from(&mut self, origin: Option<u16>, cmd: &Command) -> Result<Response, KvError> {
        self.validate(cmd)?;
        self.check_auth(cmd)?;
        match cmd.op.as_ref() {
            None => Err(KvError::EmptyCommand),
            Some(Op::Range(r)) => {
                let mut budget = DEFAULT_RANGE_RESPONSE_BYTES_MAX;
                self.range_view(r, self.current_revision, &mut budget)
                    .map(Response::Range)
            }
            Some(Op::Put(p)) => self.apply_put(p).map(Response::Put),
            Some(Op::DeleteRange(d)) => Ok(Response::DeleteRange(self.apply_delete_range(d))),
            Some(Op::Txn(t)) => self.apply_txn(t).map(Response::Txn),
            Some(Op::Compaction(c)) => self.apply_compaction(c).map(Response::Compaction),
            Some(Op::LeaseGrant(g)) => self.apply_lease_grant(g).map(Response::LeaseGrant),
            Some(Op::LeaseRevoke(r)) => self.apply_lease_revoke(r).map(Response::LeaseRevoke),
            Some(Op::LeaseRenew(r)) => Ok(Response::LeaseRenew(self.apply_lease_renew(r))),
            Some(Op::LeaseExpire(e)) => {
                Ok(Response::LeaseExpire(self.apply_lease_expire(origin, e)))
            }
            Some(Op::Alarm(a)) => Ok(Response::Alarm(self.apply_alarm(a))),
            Some(
                op @ (Op::AuthEnable(_)
                | Op::AuthDisable(_)
                | Op::UserAdd(_)
                | Op::UserDelete(_)
                | Op::UserChangePassword(_)
                | Op::UserGrantRole(_)
                | Op::UserRevokeRole(_)
                | Op::RoleAdd(_)
                | Op::RoleDelete(_)
                | Op::RoleGrantPermission(_)
                | Op::RoleRevokePermission(_)),
            ) => self.apply_auth(op).map(Response::Auth),
        }
    }

    /// Runs a read-only command (a Range, or a Txn whose ops are all
    /// Ranges, see [`Command::is_read_only`]) against the local state
    /// without changing it: serializable reads. Validates like
    /// [`Store::apply`] and returns the same response `apply` would give at
    /// this revision. A command that writes gets [`KvError::NotReadOnly`].
    ///
    /// Responses above [`DEFAULT_RANGE_RESPONSE_BYTES_MAX`] fail with
    /// [`KvError::ResponseTooLarge`]; see
    /// [`Store::execute_read_only_limited`].
    pub fn execute_read_only(&self, cmd: &Command) -> Result<Response, KvError> {
        self.execute_read_only_limited(cmd, DEFAULT_RANGE_RESPONSE_BYTES_MAX)
    }

    /// [`Store::execute_read_only`] with a cap on the response: when the
    /// key-values it returns (all Ranges of a read-only txn together) would
    /// encode to more than `response_bytes_max` bytes, the read stops and
    /// fails with [`KvError::ResponseTooLarge`] before building more; a
    /// client pages with `limit` instead. Never more than one key-value
    /// over the cap is built. Only reads are capped this way: they run at
    /// one replica and change nothing, so replicas with different caps
    /// stay in the same state.
    pub fn execute_read_only_limited(
        &self,
        cmd: &Command,
        response_bytes_max: usize,
    ) -> Result<Response, KvError> {
        self.validate(cmd)?;
        let mut budget = response_bytes_max;
        match cmd.op.as_ref() {
            Some(Op::Range(r)) => self
                .range_view(r, self.current_revision, &mut budget)
                .map(Response::Range),
            Some(Op::Txn(t)) if crate::command::txn_is_read_only(t) => {
                self.read_only_txn(t, &mut budget).map(Response::Txn)
            }
            _ => Err(KvError::NotReadOnly),
        }
    }

    /// A Range at the current state (a serializable, member-local read).
    ///
    /// Semantics of etcd's `applierV3backend.Range`: keys selected by
    /// `key`/`range_end` (see [`RangeRequest`]), as of `revision` (0 or
    /// less: current; above current: [`KvError::FutureRevision`]; below the
    /// compaction revision: [`KvError::Compacted`]); the min/max mod/create
    /// revision filters; `sort_order`/`sort_target` (a target other than
    /// KEY with order NONE sorts ascending; ties keep key order); `limit`
    /// (0 = none) with `more` set when results were cut; `count` = number of
    /// keys in the range at that revision before filters and limit;
    /// `count_only` returns no kvs; `keys_only` drops values.
    /// `header.revision` is the current revision. `serializable` is ignored
    /// here (the api layer decides where reads run).
    ///
    /// As in etcd, when neither sorting nor filters are asked for, only the
    /// first `limit + 1` keys are fetched, so a non-KEY `sort_target` with
    /// order NONE and a limit sorts only those keys.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, KvError> {
        validate::check_range(req)?;
        let mut budget = DEFAULT_RANGE_RESPONSE_BYTES_MAX;
        self.range_view(req, self.current_revision, &mut budget)
    }

    /// Compacts history up to `revision` (etcd `Compact`): afterwards reads
    /// below `revision` fail with [`KvError::Compacted`], reads at or above
    /// it see what they saw before. Fails with [`KvError::Compacted`] if
    /// `revision` is not above the current compaction revision and with
    /// [`KvError::FutureRevision`] if it is above the current revision.
    /// Does not change the revision.
    pub fn compact(&mut self, revision: i64) -> Result<CompactionResponse, KvError> {
        self.apply_compaction(&CompactionRequest {
            revision,
            physical: false,
        })
    }

    // ---- reads --------------------------------------------------------

    /// etcd's `Range` against a view at `view_revision` (the current
    /// revision, or inside a write txn the txn's own revision once it
    /// wrote).
    ///
    /// `budget`: bytes of encoded key-values still allowed in the response
    /// (usize::MAX: no cap); spent as key-values are built, and
    /// [`KvError::ResponseTooLarge`] when one does not fit. Keys are
    /// selected, filtered, sorted and limited by reference, so only the
    /// key-values returned are copied.
    fn range_view(
        &self,
        req: &RangeRequest,
        view_revision: i64,
        budget: &mut usize,
    ) -> Result<RangeResponse, KvError> {
        if req.revision > view_revision {
            return Err(KvError::FutureRevision);
        }
        let at = if req.revision <= 0 {
            view_revision
        } else {
            req.revision
        };
        if at < self.compact_revision {
            return Err(KvError::Compacted);
        }
        let bounds = key_bounds(&req.key, &req.range_end);

        if req.count_only {
            let count = self
                .keys
                .range::<[u8], _>(bounds)
                .filter(|(_, h)| h.live_at(at).is_some())
                .count();
            return Ok(RangeResponse {
                header: header(view_revision),
                kvs: Vec::new(),
                more: false,
                count: count as i64,
            });
        }

        let sort_order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
        let sort_target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
        let fetch_all = sort_order != SortOrder::None
            || req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        // etcd fetches `limit + 1` keys to learn `more`; an overflow (Go
        // wraps to a negative limit) means no limit.
        let fetch_limit = match (fetch_all, req.limit) {
            (false, l) if l > 0 => l
                .checked_add(1)
                .map(|l| usize::try_from(l).unwrap_or(usize::MAX)),
            _ => None,
        };

        // (key, revision, put) of each selected key.
        let mut found: Vec<(&[u8], Revision, &PutEvent)> = Vec::new();
        let mut count: i64 = 0;
        for (key, history) in self.keys.range::<[u8], _>(bounds) {
            let Some((mod_revision, put)) = history.live_at(at) else {
                continue;
            };
            count += 1;
            if !matches!(fetch_limit, Some(l) if found.len() >= l) {
                found.push((key.as_slice(), mod_revision, put));
            }
        }

        found.retain(|&(_, rev, p)| {
            let mod_revision = rev.main;
            !((req.max_mod_revision != 0 && mod_revision > req.max_mod_revision)
                || (req.min_mod_revision != 0 && mod_revision < req.min_mod_revision)
                || (req.max_create_revision != 0 && p.create_revision > req.max_create_revision)
                || (req.min_create_revision != 0 && p.create_revision < req.min_create_revision))
        });

        let order = if sort_target != SortTarget::Key && sort_order == SortOrder::None {
            SortOrder::Ascend
        } else {
            sort_order
        };
        let values = self.values.reader();
        if order != SortOrder::None {
            type Found<'a> = (&'a [u8], Revision, &'a PutEvent);
            let cmp = |a: &Found, b: &Found| match sort_target {
                SortTarget::Key => a.0.cmp(b.0),
                SortTarget::Version => a.2.version.cmp(&b.2.version),
                SortTarget::Create => a.2.create_revision.cmp(&b.2.create_revision),
                SortTarget::Mod => a.1.main.cmp(&b.1.main),
                SortTarget::Value => values.get(a.1).cmp(values.get(b.1)),
            };
            // Stable sorts: ties stay in key order on every replica (etcd's
            // Go sort.Sort leaves tie order unspecified).
            match order {
                SortOrder::Ascend => found.sort_by(cmp),
                SortOrder::Descend => found.sort_by(|a, b| cmp(b, a)),
                SortOrder::None => {}
            }
        }

        let mut more = false;
        if req.limit > 0 {
            let limit = usize::try_from(req.limit).unwrap_or(usize::MAX);
            if found.len() > limit {
                found.truncate(limit);
                more = true;
            }
        }
        let mut kvs = Vec::with_capacity(found.len());
        for (key, rev, put) in found {
            let kv = if req.keys_only {
                KeyValue {
                    key: key.to_vec(),
                    create_revision: put.create_revision,
                    mod_revision: rev.main,
                    version: put.version,
                    value: Vec::new(),
                    lease: put.lease,
                }
            } else {
                key_value(key, rev.main, put, values.get(rev))
            };
            // As a repeated field of the response: tag, length, message.
            let len = prost::Message::encoded_len(&kv);
            let bytes = 1 + prost::length_delimiter_len(len) + len;
            *budget = budget.checked_sub(bytes).ok_or(KvError::ResponseTooLarge)?;
            kvs.push(kv);
        }
        Ok(RangeResponse {
            header: header(view_revision),
            kvs,
            more,
            count,
        })
    }

    /// The live key-values in `[key, range_end)` at `at`.
    fn live_kvs(&self, key: &[u8], range_end: &[u8], at: i64) -> Vec<KeyValue> {
        let values = self.values.reader();
        self.keys
            .range::<[u8], _>(key_bounds(key, range_end))
            .filter_map(|(k, h)| {
                h.live_at(at)
                    .map(|(r, p)| key_value(k, r.main, p, values.get(r)))
            })
            .collect()
    }

    // ---- compares (etcd applyCompare / compareKV) -----------------------

    fn compare_holds(&self, c: &Compare, at: i64) -> bool {
        let mut any = false;
        let values = self.values.reader();
        let by_value = c.target == CompareTarget::Value as i32;
        for (_, history) in self.keys.range::<[u8], _>(key_bounds(&c.key, &c.range_end)) {
            let Some((rev, put)) = history.live_at(at) else {
                continue;
            };
            any = true;
            let view = CompareView {
                create_revision: put.create_revision,
                mod_revision: rev.main,
                version: put.version,
                lease: put.lease,
                // Only a VALUE compare reads the value.
                value: if by_value { values.get(rev) } else { &[] },
            };
            if !compare_kv(c, &view) {
                return false;
            }
        }
        if any {
            return true;
        }
        // No key: a VALUE compare always fails ("no way to represent a
        // missing value"); the others compare against zeroes.
        if c.target == CompareTarget::Value as i32 {
            return false;
        }
        compare_kv(c, &CompareView::default())
    }

    /// etcd's `compareToPath`: the branch taken by the txn and by every txn
    /// nested in the taken branches, in pre-order, all evaluated against the
    /// state before the txn runs.
    fn compare_to_path(&self, t: &TxnRequest, at: i64, path: &mut Vec<bool>) {
        let succeeded = t.compare.iter().all(|c| self.compare_holds(c, at));
        path.push(succeeded);
        let ops = if succeeded { &t.success } else { &t.failure };
        for op in ops {
            if let Some(Request::RequestTxn(nested)) = &op.request {
                self.compare_to_path(nested, at, path);
            }
        }
    }

    /// etcd's `checkRequests`: applies `check` to every non-txn op on the
    /// taken path.
    fn check_path(
        t: &TxnRequest,
        path: &[bool],
        cursor: &mut usize,
        check: &mut dyn FnMut(&RequestOp) -> Result<(), KvError>,
    ) -> Result<(), KvError> {
        let succeeded = path[*cursor];
        *cursor += 1;
        let ops = if succeeded { &t.success } else { &t.failure };
        for op in ops {
            match &op.request {
                Some(Request::RequestTxn(nested)) => Self::check_path(nested, path, cursor, check)?,
                _ => check(op)?,
            }
        }
        Ok(())
    }

    /// etcd's `checkRequestPut` and `checkRequestRange` over the taken path,
    /// against the state before the txn (revision `at`).
    fn check_txn_against_state(
        &self,
        t: &TxnRequest,
        path: &[bool],
        at: i64,
    ) -> Result<(), KvError> {
        if !crate::command::txn_is_read_only(t) {
            Self::check_path(t, path, &mut 0, &mut |op| {
                let Some(Request::RequestPut(p)) = &op.request else {
                    return Ok(());
                };
                if (p.ignore_value || p.ignore_lease) && self.live(&p.key, at).is_none() {
                    return Err(KvError::KeyNotFound);
                }
                if p.lease != 0 && !self.lease_exists(p.lease) {
                    return Err(KvError::LeaseNotFound);
                }
                Ok(())
            })?;
        }
        Self::check_path(t, path, &mut 0, &mut |op| {
            let Some(Request::RequestRange(r)) = &op.request else {
                return Ok(());
            };
            if r.revision == 0 {
                Ok(())
            } else if r.revision > at {
                Err(KvError::FutureRevision)
            } else if r.revision < self.compact_revision {
                Err(KvError::Compacted)
            } else {
                Ok(())
            }
        })
    }

    fn live(&self, key: &[u8], at: i64) -> Option<(Revision, &PutEvent)> {
        self.keys.get(key).and_then(|h| h.live_at(at))
    }

    /// A txn with only Ranges (and nested read-only txns) at the current
    /// revision.
    fn read_only_txn(&self, t: &TxnRequest, budget: &mut usize) -> Result<TxnResponse, KvError> {
        let at = self.current_revision;
        let mut path = Vec::new();
        self.compare_to_path(t, at, &mut path);
        self.check_txn_against_state(t, &path, at)?;
        let mut resp = self.read_only_txn_ops(t, &path, &mut 0, at, budget)?;
        resp.header = header(at);
        Ok(resp)
    }

    fn read_only_txn_ops(
        &self,
        t: &TxnRequest,
        path: &[bool],
        cursor: &mut usize,
        at: i64,
        budget: &mut usize,
    ) -> Result<TxnResponse, KvError> {
        let succeeded = path[*cursor];
        *cursor += 1;
        let ops = if succeeded { &t.success } else { &t.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(Request::RequestRange(r)) => Some(response_op::Response::ResponseRange(
                    self.range_view(r, at, budget)?,
                )),
                Some(Request::RequestTxn(nested)) => Some(response_op::Response::ResponseTxn(
                    self.read_only_txn_ops(nested, path, cursor, at, budget)?,
                )),
                Some(Request::RequestPut(_)) | Some(Request::RequestDeleteRange(_)) => {
                    return Err(KvError::NotReadOnly)
                }
                None => None,
            };
            responses.push(ResponseOp { response });
        }
        Ok(TxnResponse {
            header: Some(ResponseHeader::default()),
            succeeded,
            responses,
        })
    }

    // ---- writes -------------------------------------------------------

    pub(crate) fn commit(&mut self, tx: WriteTxn) {
        if tx.changes > 0 {
            self.current_revision += 1;
            assert_eq!(self.current_revision, tx.write_revision());
            assert_eq!(tx.touched.len() as i64, tx.changes, "one key per change");
            // Lease key sets follow each touched key's live put.
            let mut moved: Vec<&Vec<u8>> = tx.touched.iter().collect();
            moved.sort_unstable();
            moved.dedup();
            let moves: Vec<(Vec<u8>, i64, i64)> = moved
                .into_iter()
                .map(|k| {
                    let lease = |at| self.live(k, at).map_or(0, |(_, p)| p.lease);
                    (
                        k.clone(),
                        lease(tx.begin_revision),
                        lease(self.current_revision),
                    )
                })
                .collect();
            for (k, before, after) in moves {
                self.move_lease_key(&k, before, after);
            }
            let values = self.values.reader();
            for (sub, key) in tx.touched.into_iter().enumerate() {
                let rev = Revision {
                    main: self.current_revision,
                    sub: sub as i64,
                };
                let history = self.keys.get(&key).expect("a touched key has a history");
                let i = history
                    .entries
                    .binary_search_by(|e| e.rev.cmp(&rev))
                    .expect("each change of the txn is in its key's history");
                let e = &history.entries[i];
                let value: &[u8] = match e.event {
                    Event::Put(_) => values.get(rev),
                    Event::Tombstone => &[],
                };
                let added = self.ranges.add(&key, e, value, entry_bytes(&key, &e.event));
                assert!(added, "a new revision lies in the open range");
                self.changes.insert(rev, key);
            }
            drop(values);
            self.ranges.close_if_full(self.current_revision + 1);
        }
        // One write transaction of the value store per command.
        self.values.flush();
    }

    /// Undoes every change of `tx`: they are the trailing entries with main
    /// revision `tx.write_revision()` of the touched keys.
    fn rollback(&mut self, tx: WriteTxn) {
        let write_revision = tx.write_revision();
        for key in tx.touched.iter().rev() {
            let Some(history) = self.keys.get_mut(key) else {
                continue;
            };
            while history
                .entries
                .last()
                .is_some_and(|e| e.rev.main == write_revision)
            {
                let e = history.entries.pop().expect("checked non-empty");
                self.size_bytes = self
                    .size_bytes
                    .checked_sub(entry_bytes(key, &e.event))
                    .expect("the size counts every stored entry");
            }
            if history.entries.is_empty() {
                self.keys.remove(key);
            }
        }
        self.values.discard_staged();
        let live = self.live_keys as i64 - tx.live_delta;
        self.live_keys = usize::try_from(live).expect("live key count stays non-negative");
    }

    /// Appends `event` to `key`'s history at the txn's next revision, which
    /// it returns.
    fn push_change(&mut self, tx: &mut WriteTxn, key: &[u8], event: Event) -> Revision {
        let rev = Revision {
            main: tx.write_revision(),
            sub: tx.changes,
        };
        let history = self.keys.entry(key.to_vec()).or_default();
        if let Some(last) = history.entries.last() {
            assert!(last.rev < rev, "history revisions must ascend");
        }
        self.size_bytes += entry_bytes(key, &event);
        history.entries.push(Entry { rev, event });
        tx.changes += 1;
        tx.touched.push(key.to_vec());
        rev
    }

    /// etcd's `storeTxnWrite.put`: keeps `create_revision` and bumps
    /// `version` if the key exists, else creates it at version 1.
    fn put_key(&mut self, tx: &mut WriteTxn, key: &[u8], value: Vec<u8>, lease: i64) {
        let write_revision = tx.write_revision();
        let (create_revision, version) = match self.live(key, write_revision) {
            Some((_, p)) => (p.create_revision, p.version.saturating_add(1)),
            None => {
                tx.live_delta += 1;
                self.live_keys += 1;
                (write_revision, 1)
            }
        };
        let event = Event::Put(PutEvent {
            create_revision,
            version,
            lease,
            value_bytes: u32::try_from(value.len()).expect("a value below 4 GiB"),
        });
        let rev = self.push_change(tx, key, event);
        self.values.stage(rev, value);
    }

    /// etcd's `storeTxnWrite.deleteRange`: a tombstone for every key that
    /// exists in the txn's view. Returns how many.
    pub(crate) fn delete_keys(&mut self, tx: &mut WriteTxn, key: &[u8], range_end: &[u8]) -> i64 {
        let view = tx.view_revision();
        let doomed: Vec<Vec<u8>> = self
            .keys
            .range::<[u8], _>(key_bounds(key, range_end))
            .filter(|(_, h)| h.live_at(view).is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for k in &doomed {
            self.push_change(tx, k, Event::Tombstone);
            tx.live_delta -= 1;
            self.live_keys -= 1;
        }
        doomed.len() as i64
    }

    /// etcd's `applierV3backend.Put` inside a write txn.
    fn exec_put(&mut self, tx: &mut WriteTxn, p: &PutRequest) -> Result<PutResponse, KvError> {
        let prev = if p.ignore_value || p.ignore_lease || p.prev_kv {
            let values = self.values.reader();
            self.live(&p.key, tx.view_revision())
                .map(|(r, put)| key_value(&p.key, r.main, put, values.get(r)))
        } else {
            None
        };
        if (p.ignore_value || p.ignore_lease) && prev.is_none() {
            return Err(KvError::KeyNotFound);
        }
        let value = match (&prev, p.ignore_value) {
            (Some(prev), true) => prev.value.clone(),
            _ => p.value.clone(),
        };
        let lease = match (&prev, p.ignore_lease) {
            (Some(prev), true) => prev.lease,
            _ => p.lease,
        };
        self.put_key(tx, &p.key, value, lease);
        Ok(PutResponse {
            header: header(tx.write_revision()),
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    /// etcd's `applierV3backend.DeleteRange` inside a write txn.
    fn exec_delete(&mut self, tx: &mut WriteTxn, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let prev_kvs = if d.prev_kv {
            self.live_kvs(&d.key, &d.range_end, tx.view_revision())
        } else {
            Vec::new()
        };
        let deleted = self.delete_keys(tx, &d.key, &d.range_end);
        let revision = if deleted != 0 || tx.changes > 0 {
            tx.write_revision()
        } else {
            tx.begin_revision
        };
        DeleteRangeResponse {
            header: header(revision),
            deleted,
            prev_kvs,
        }
    }

    fn apply_put(&mut self, p: &PutRequest) -> Result<PutResponse, KvError> {
        if p.lease != 0 && !self.lease_exists(p.lease) {
            return Err(KvError::LeaseNotFound);
        }
        let mut tx = WriteTxn::new(self.current_revision);
        match self.exec_put(&mut tx, p) {
            Ok(_) if self.size_bytes > self.quota_bytes || self.nospace_armed() => {
                self.rollback(tx);
                Err(KvError::NoSpace)
            }
            Ok(resp) => {
                self.commit(tx);
                Ok(resp)
            }
            Err(e) => {
                self.rollback(tx);
                Err(e)
            }
        }
    }

    fn apply_delete_range(&mut self, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let mut tx = WriteTxn::new(self.current_revision);
        let resp = self.exec_delete(&mut tx, d);
        self.commit(tx);
        resp
    }

    /// etcd's `applierV3backend.Txn`: compares and nested compares against
    /// the state before the txn, then the state checks of the taken path,
    /// then the ops in order, each seeing the writes of the ones before.
    fn apply_txn(&mut self, t: &TxnRequest) -> Result<TxnResponse, KvError> {
        if crate::command::txn_is_read_only(t) {
            let mut budget = DEFAULT_RANGE_RESPONSE_BYTES_MAX;
            return self.read_only_txn(t, &mut budget);
        }
        let begin = self.current_revision;
        let mut path = Vec::new();
        self.compare_to_path(t, begin, &mut path);
        self.check_txn_against_state(t, &path, begin)?;

        let mut tx = WriteTxn::new(begin);
        let mut cursor = 0;
        match self.exec_txn(&mut tx, t, &path, &mut cursor) {
            // The quota, as etcd's capped applier: a txn that writes is
            // refused when it would leave the store over its quota.
            Ok(_) if self.size_bytes > self.quota_bytes || self.nospace_armed() => {
                self.rollback(tx);
                Err(KvError::NoSpace)
            }
            Ok(mut resp) => {
                assert_eq!(cursor, path.len(), "every nested txn on the path ran");
                resp.header = header(tx.view_revision());
                self.commit(tx);
                Ok(resp)
            }
            // Only reachable through etcd's validation gaps (a put with
            // ignore_value on a key an earlier op of the txn deleted, which
            // makes etcd panic): undo and report deterministically.
            Err(e) => {
                self.rollback(tx);
                Err(e)
            }
        }
    }

    fn exec_txn(
        &mut self,
        tx: &mut WriteTxn,
        t: &TxnRequest,
        path: &[bool],
        cursor: &mut usize,
    ) -> Result<TxnResponse, KvError> {
        let succeeded = path[*cursor];
        *cursor += 1;
        let ops = if succeeded { &t.success } else { &t.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                // Not capped: a write txn runs at every replica and its
                // outcome must not depend on a per-replica setting.
                Some(Request::RequestRange(r)) => {
                    let mut uncapped = usize::MAX;
                    Some(response_op::Response::ResponseRange(self.range_view(
                        r,
                        tx.view_revision(),
                        &mut uncapped,
                    )?))
                }
                Some(Request::RequestPut(p)) => {
                    Some(response_op::Response::ResponsePut(self.exec_put(tx, p)?))
                }
                Some(Request::RequestDeleteRange(d)) => Some(
                    response_op::Response::ResponseDeleteRange(self.exec_delete(tx, d)),
                ),
                // A nested txn's header stays empty, as in etcd.
                Some(Request::RequestTxn(nested)) => Some(response_op::Response::ResponseTxn(
                    self.exec_txn(tx, nested, path, cursor)?,
                )),
                None => None,
            };
            responses.push(ResponseOp { response });
        }
        Ok(TxnResponse {
            header: Some(ResponseHeader::default()),
            succeeded,
            responses,
        })
    }

    fn apply_compaction(&mut self, c: &CompactionRequest) -> Result<CompactionResponse, KvError> {
        let revision = c.revision;
        if revision <= self.compact_revision {
            return Err(KvError::Compacted);
        }
        if revision > self.current_revision {
            return Err(KvError::FutureRevision);
        }
        let mut freed = 0;
        let mut dropped_puts = Vec::new();
        let ranges = &mut self.ranges;
        let values = self.values.reader();
        self.keys
            .retain(|k, h| h.compact(k, revision, &mut freed, ranges, &values, &mut dropped_puts));
        drop(values);
        // One write transaction of the value store for the compaction
        // (etcd's `scheduleCompaction` deletes in batches; bftd's values
        // are a cache rebuilt at start, so one transaction is enough).
        dropped_puts.sort_unstable();
        self.values.remove(&dropped_puts);
        self.ranges.merge_after_compaction();
        self.size_bytes = self
            .size_bytes
            .checked_sub(freed)
            .expect("the size counts every stored entry");
        self.compact_revision = revision;
        // The index keeps what the histories still hold from the
        // compaction revision on (a tombstone at it is gone).
        self.changes = self.changes.split_off(&Revision {
            main: revision,
            sub: 0,
        });
        let gone: Vec<Revision> = self
            .changes
            .range(
                ..Revision {
                    main: revision + 1,
                    sub: 0,
                },
            )
            .filter(|(rev, key)| {
                self.keys
                    .get(key.as_slice())
                    .is_none_or(|h| h.entries.binary_search_by(|e| e.rev.cmp(rev)).is_err())
            })
            .map(|(rev, _)| *rev)
            .collect();
        for rev in gone {
            self.changes.remove(&rev);
        }
        Ok(CompactionResponse {
            header: header(self.current_revision),
        })
    }
}

/// The fields a Compare looks at; all zero for a missing key.
#[derive(Default)]
struct CompareView<'a> {
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    lease: i64,
    value: &'a [u8],
}

/// etcd's `compareKV`. A `target_union` of the wrong kind compares as 0 (or
/// the empty value); an unknown target compares as equal; an unknown result
/// holds.
fn compare_kv(c: &Compare, kv: &CompareView<'_>) -> bool {
    use std::cmp::Ordering;
    let int_of =
        |f: fn(&TargetUnion) -> Option<i64>| c.target_union.as_ref().and_then(f).unwrap_or(0);
    let ordering = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Value) => {
            let v: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.cmp(v)
        }
        Ok(CompareTarget::Create) => kv.create_revision.cmp(&int_of(|u| match u {
            TargetUnion::CreateRevision(r) => Some(*r),
            _ => None,
        })),
        Ok(CompareTarget::Mod) => kv.mod_revision.cmp(&int_of(|u| match u {
            TargetUnion::ModRevision(r) => Some(*r),
            _ => None,
        })),
        Ok(CompareTarget::Version) => kv.version.cmp(&int_of(|u| match u {
            TargetUnion::Version(r) => Some(*r),
            _ => None,
        })),
        Ok(CompareTarget::Lease) => kv.lease.cmp(&int_of(|u| match u {
            TargetUnion::Lease(r) => Some(*r),
            _ => None,
        })),
        Err(_) => Ordering::Equal,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ordering == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ordering != Ordering::Equal,
        Ok(CompareResult::Greater) => ordering == Ordering::Greater,
        Ok(CompareResult::Less) => ordering == Ordering::Less,
        Err(_) => true,
    }
}
