//! The replica's consensus core: Mod-SMaRt, driven only by inputs.
//!
//! **Normal case** (Sousa & Bessani, EDCC 2012, Alg. 1-2; BFT-SMaRt DSN'14
//! Sec. III-B):
//! 1. the leader of the regency proposes a batch: PROPOSE(r, cid, batch);
//! 2. a replica that accepts the proposal sends WRITE(r, cid, H(batch));
//! 3. after a Byzantine quorum of matching WRITEs, and once the batch is
//!    durable, it sends a signed ACCEPT(r, cid, H(batch));
//! 4. after a quorum of matching ACCEPTs the batch is decided; decisions are
//!    delivered strictly in cid order.
//!
//! Beyond BFT-SMaRt, the leader keeps up to `pipeline_depth` instances in
//! flight.
//!
//! **Synchronization phase** (leader change; BFT-SMaRt DSN'14 Sec. III-C,
//! after Cachin's "Yet another visit to Paxos"): a request not ordered
//! within the request timeout is forwarded to the leader; after a second
//! timeout the replica broadcasts STOP(r+1). f+1 STOPs make a replica join;
//! 2f+1 install regency r+1. Each replica sends a signed STOPDATA to the new
//! leader, which collects n-f and broadcasts them in SYNC; every replica
//! computes the same [`crate::sync::plan`] from them and writes the kept
//! values in the new regency. Robustness (Aardvark): backups also replace a
//! leader that delivers far less than recent regencies did while requests
//! wait.
//!
//! Inputs: verified messages and requests, persistence acknowledgements,
//! ticks. Outputs: [`Output`]s. No clocks, threads, sockets or randomness.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::Arc;

use wire::{
    Accept, Batch, BatchReply, Cid, Decided, DecisionProof, Digest, Fetch, Message, Propose,
    Regency, ReplicaId, Request, SnapshotChunk, SnapshotRequest, StateReply, StateRequest, Stop,
    StopData, Sync, Verified, Write,
};

use crate::checkpoint::Prepared;
use crate::clients::ClientTable;
use crate::config::Config;
use crate::instance::Instance;
use crate::output::{Decision, Output, Target};
use crate::pending::{Pending, Refused};
use crate::sync::{plan, SyncPlan};
use crate::transfer::{Assembly, ChunkOutcome, Transfer};

/// Counters of what the core did and refused, by reason.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub requests_accepted: u64,
    pub requests_duplicate: u64,
    pub requests_already_executed: u64,
    pub requests_refused_full: u64,
    /// Requests refused because their client already has
    /// `pending_per_client_max` waiting.
    pub requests_refused_client_full: u64,
    pub requests_forwarded: u64,
    pub proposals_sent: u64,
    pub decisions: u64,
    pub requests_executed: u64,
    pub requests_deduplicated: u64,
    /// STOPs sent, regencies installed, SYNCs sent and applied.
    pub stops_sent: u64,
    pub regencies_installed: u64,
    pub syncs_sent: u64,
    pub syncs_applied: u64,
    /// Leader changes started because of request timeouts, SYNC timeouts,
    /// low leader throughput, and a lost link to the leader.
    pub timeouts_request: u64,
    pub timeouts_leader_link: u64,
    pub timeouts_sync: u64,
    pub timeouts_throughput: u64,
    /// Leader changes started because the leader's ACCEPTs lagged the
    /// other replicas' (`Config::leader_lag_max_ticks`).
    pub timeouts_leader_lag: u64,
    /// Instances decided here in the current regency whose leader ACCEPT
    /// arrived before the decision or within `leader_lag_max_ticks` of it,
    /// and those where it came later or never (counted while the check is
    /// on).
    pub leader_accepts_on_time: u64,
    pub leader_accepts_late: u64,
    /// Leader moves asked of this replica as leader (etcd's MoveLeader),
    /// and moves of the current leader this replica joined.
    pub leader_moves_started: u64,
    pub leader_moves_joined: u64,
    /// Batches fetched from other replicas by digest.
    pub batches_fetched: u64,
    /// Proposals taken from a fetched batch: the leader's PROPOSE had not
    /// arrived while more than f replicas had voted for its digest.
    pub proposals_fetched: u64,
    /// ACCEPTs sent on more than f matching ACCEPTs for this replica's own
    /// written value, before a quorum of WRITEs arrived here.
    pub accepts_amplified: u64,
    /// State transfers started, decisions and checkpoints installed by them.
    pub transfers_started: u64,
    pub transfer_decisions: u64,
    pub transfer_checkpoints: u64,
    /// Checkpoint manifests fetched that did not match the trusted digest
    /// (or the proof was missing), and fetched checkpoints that did not
    /// decode.
    pub transfer_bad_checkpoints: u64,
    /// Snapshot chunks from the asked source that did not match their
    /// hash in the manifest (the source is dropped, the verified prefix
    /// kept).
    pub transfer_bad_chunks: u64,
    /// Snapshot chunks ignored: not from the asked source, for another
    /// checkpoint, or not the next offset.
    pub transfer_ignored_chunks: u64,
    /// Messages for another regency than the current one.
    pub drop_wrong_regency: u64,
    /// Messages for instances already decided.
    pub drop_stale_cid: u64,
    /// Messages for instances beyond the window.
    pub drop_future_cid: u64,
    /// PROPOSEs not from the leader of their regency.
    pub drop_not_leader: u64,
    /// PROPOSEs of the current leader that arrived before its SYNC, kept
    /// until the SYNC is applied.
    pub early_proposals: u64,
    /// PROPOSEs whose batch breaks the limits or repeats a request.
    pub drop_bad_batch: u64,
    /// A second, different PROPOSE for the same instance (equivocation).
    pub drop_equivocation: u64,
    /// A second, different WRITE or ACCEPT from the same replica.
    pub drop_conflicting_vote: u64,
    /// Leader-change messages that do not fit the current state.
    pub drop_sync: u64,
}

/// Why [`Replica::move_leader`] refused (etcd's MoveLeader errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoveLeaderError {
    /// This replica does not lead a regency whose SYNC is applied.
    #[error("not the leader")]
    NotLeader,
    /// The transferee is not another replica of the cluster.
    #[error("bad leader transferee")]
    BadTransferee,
}

/// Where the replica is in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Ordering requests in the current regency.
    Normal,
    /// The current regency is installed; waiting for its SYNC (since the
    /// given tick).
    Syncing { since: u64 },
}

/// Aardvark-style leader monitoring: throughput and latency per
/// observation window.
#[derive(Debug, Default)]
struct Monitor {
    window_start_tick: u64,
    executed_at_window_start: u64,
    /// Sum over the window's ticks of the requests pending here: by
    /// Little's law, divided by the requests executed in the window, the
    /// mean ticks a request waited, at a resolution finer than a tick.
    pending_ticks: u64,
    /// Requests executed when the current regency was entered.
    executed_at_regency_start: u64,
    /// Consecutive regencies, up to the current one, in which this replica
    /// executed nothing: each doubles the window (up to 64 times), as
    /// consecutive failed syncs double the SYNC timeout, so that under
    /// eventual synchrony some correct leader gets a window long enough
    /// for its first instances.
    unproductive_regencies: u32,
    /// Best window of the current regency, among windows of at least
    /// [`BASELINE_REQUESTS_MIN`] requests.
    best_current: Option<Window>,
    /// Best windows of recent earlier regencies (newest last).
    best_recent: VecDeque<Window>,
}

/// What one observation window showed: the most requests executed in a
/// window, and the lowest mean wait, in thousandths of a tick (the two may
/// come from different windows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    executed: u64,
    wait_millitick: u64,
}

impl Window {
    fn best(self, other: Window) -> Window {
        Window {
            executed: self.executed.max(other.executed),
            wait_millitick: self.wait_millitick.min(other.wait_millitick),
        }
    }
}

/// A window counts as a baseline only with at least this many requests
/// executed (fewer say little about what the leader can do).
const BASELINE_REQUESTS_MIN: u64 = 8;

/// A leader whose throughput fell is replaced when the mean wait of a
/// request has grown to at least this many times the best (demand is
/// there; the leader does not serve it), or requests wait half a window.
const WAIT_GROWTH_MIN: u64 = 2;

/// The mean wait below which growth is not counted, thousandths of a tick:
/// waits shorter than a quarter tick are noise at a tick's resolution.
const WAIT_FLOOR_MILLITICK: u64 = 250;

const RECENT_REGENCIES: usize = 4;

/// How the current leader's ACCEPTs keep pace with the instances decided
/// here (see `Config::leader_lag_max_ticks`).
#[derive(Debug, Default)]
struct LeaderLag {
    /// Open instances whose leader ACCEPT arrived before this replica
    /// decided them.
    early: BTreeSet<Cid>,
    /// Instances decided here by the others' ACCEPTs, waiting for the
    /// leader's: the tick of the decision.
    waiting: BTreeMap<Cid, u64>,
    /// Instances of the current window whose leader ACCEPT was on time, and
    /// late.
    on_time: u64,
    late: u64,
}

/// Most instances a window must hold before the leader's lag is judged.
const LEADER_LAG_INSTANCES_MIN: u64 = 8;

/// The consensus state of one replica.
#[derive(Debug)]
pub struct Replica {
    cfg: Config,
    regency: Regency,
    phase: Phase,
    /// Highest cid delivered; instance cids start at 1.
    last_decided: Cid,
    /// Proof of `last_decided` (every correct replica keeps one: the
    /// synchronization phase relies on it).
    last_decided_proof: Option<DecisionProof>,
    /// Open instances, `last_decided < cid <= last_decided + instance_window`.
    instances: BTreeMap<Cid, Instance>,
    /// Leader only: the next cid to propose.
    next_proposal: Cid,
    pending: Pending,
    clients: ClientTable,
    tick: u64,
    /// Highest regency each replica asked for with STOP.
    stop_votes: Vec<Regency>,
    /// Highest regency this replica sent STOP for.
    stop_sent: Regency,
    /// Leader of the regency being synchronized: STOPDATAs collected.
    stopdata: BTreeMap<ReplicaId, StopData>,
    /// A regency installed whose STOPDATA waits for the REGENCY record to
    /// be durable ([`Replica::on_regency_persisted`]): STOPDATA promises to
    /// leave the old regency, and a crash must not bring this replica back
    /// in it.
    stopdata_owed: Option<Regency>,
    /// This replica proposes only in regencies from this one on: after a
    /// restart from disk it cannot know what it proposed before the crash
    /// in the regency it recovered, so it leaves that regency's proposals
    /// to a leader change rather than risk proposing another value.
    propose_from: Regency,
    /// Consecutive regencies that failed to synchronize (timeout backoff).
    failed_syncs: u32,
    /// Highest regency seen per replica in its normal-case messages (to
    /// adopt a regency this replica missed).
    seen_regency: Vec<Regency>,
    /// Decided instances whose own ACCEPT still waits for the batch to be
    /// durable: `cid -> (regency, digest)`.
    late_accepts: BTreeMap<Cid, (Regency, Digest)>,
    /// Accepts being made durable, by cid: their ACCEPTs leave once the
    /// host acknowledges them.
    accepts_owed: BTreeMap<Cid, (Regency, Digest)>,
    /// Batches asked for with FETCH: `cid -> (digest, tick asked)`.
    fetching: BTreeMap<Cid, (Digest, u64)>,
    /// Values the applied SYNC chose that are being fetched: `cid -> digest`.
    pending_sync_values: BTreeMap<Cid, Digest>,
    /// PROPOSEs of the current regency's leader that arrived while this
    /// replica waited for the regency's SYNC (the network reordered them):
    /// taken once the SYNC is applied. At most one per cid of the window.
    early_proposals: BTreeMap<Cid, Propose>,
    /// The highest cid reported behind to the host.
    behind_reported: Cid,
    /// Decisions delivered since the newest checkpoint, oldest first
    /// (bounded by `decision_log_max`): for FETCH and state transfer.
    log: VecDeque<Decided>,
    /// The newest checkpoint, ready to serve.
    checkpoint: Option<Prepared>,
    /// The one before it, still served: a transfer that started on it
    /// finishes even if its sources took a newer one meanwhile.
    previous_checkpoint: Option<Prepared>,
    /// The state transfer in progress, if any.
    transfer: Option<Transfer>,
    monitor: Monitor,
    leader_lag: LeaderLag,
    /// The undecided next cid while a later one is decided, since when.
    stuck_since: Option<(Cid, u64)>,
    /// Last tick this replica delivered a decision or asked for state.
    last_progress_tick: u64,
    /// Per replica: whether its link was seen up at least once, and since
    /// which tick it is down (None while up).
    link_seen_up: Vec<bool>,
    link_down_since: Vec<Option<u64>>,
    stats: Stats,
}

impl Replica {
    /// A replica that has delivered every instance up to `last_decided`
    /// (proven by `last_decided_proof`, `None` only for cid 0) and executed
    /// the requests recorded in `clients`, in regency `regency`.
    ///
    /// Panics if `cfg` is invalid: the caller validates configs at start-up.
    pub fn new(
        cfg: Config,
        regency: Regency,
        last_decided: Cid,
        last_decided_proof: Option<DecisionProof>,
        clients: ClientTable,
    ) -> Self {
        cfg.validate()
            .expect("control config must be validated at start-up");
        assert!(last_decided_proof
            .as_ref()
            .is_none_or(|p| p.cid == last_decided));
        let pending = Pending::new(cfg.pending_requests_max, cfg.pending_per_client_max);
        let n = cfg.n;
        Self {
            regency,
            phase: Phase::Normal,
            last_decided,
            last_decided_proof,
            instances: BTreeMap::new(),
            next_proposal: last_decided + 1,
            pending,
            clients,
            tick: 0,
            stop_votes: vec![regency; n],
            stop_sent: regency,
            stopdata: BTreeMap::new(),
            stopdata_owed: None,
            propose_from: 0,
            failed_syncs: 0,
            seen_regency: vec![regency; n],
            late_accepts: BTreeMap::new(),
            accepts_owed: BTreeMap::new(),
            fetching: BTreeMap::new(),
            pending_sync_values: BTreeMap::new(),
            early_proposals: BTreeMap::new(),
            behind_reported: last_decided,
            log: VecDeque::new(),
            checkpoint: None,
            previous_checkpoint: None,
            transfer: None,
            monitor: Monitor::default(),
            leader_lag: LeaderLag::default(),
            stuck_since: None,
            last_progress_tick: 0,
            link_seen_up: vec![false; n],
            link_down_since: vec![None; n],
            stats: Stats::default(),
            cfg,
        }
    }

    /// A fresh replica: nothing decided, regency 0.
    pub fn start(cfg: Config) -> Self {
        Self::new(cfg, 0, 0, None, ClientTable::default())
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }
    pub fn id(&self) -> ReplicaId {
        self.cfg.me
    }
    pub fn regency(&self) -> Regency {
        self.regency
    }
    pub fn leader(&self) -> ReplicaId {
        self.cfg.leader_of(self.regency)
    }
    pub fn is_leader(&self) -> bool {
        self.leader() == self.cfg.me
    }
    /// True while a state transfer is in progress.
    pub fn is_transferring(&self) -> bool {
        self.transfer.is_some()
    }
    /// True while a new regency waits for its SYNC.
    pub fn is_syncing(&self) -> bool {
        matches!(self.phase, Phase::Syncing { .. })
    }
    pub fn last_decided(&self) -> Cid {
        self.last_decided
    }
    pub fn last_decided_proof(&self) -> Option<&DecisionProof> {
        self.last_decided_proof.as_ref()
    }
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
    pub fn clients(&self) -> &ClientTable {
        &self.clients
    }
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    /// Instances open (proposed or voted on, not yet delivered).
    pub fn open_instances(&self) -> usize {
        self.instances.len()
    }

    // ------------------------------------------------------------ inputs

    /// A client request, verified by the dataplane (from this replica's
    /// proxy or from another replica). Added to the pending pool unless it
    /// was executed, is pending already, or the pool is full.
    pub fn on_request(&mut self, request: Verified<Request>, out: &mut Vec<Output>) {
        self.admit_request(request);
        self.try_propose(out);
        self.check_invariants();
    }

    fn admit_request(&mut self, request: Verified<Request>) {
        if self.clients.is_executed(request.client, request.seq) {
            self.stats.requests_already_executed += 1;
            return;
        }
        match self.pending.insert(request, self.tick) {
            Ok(()) => self.stats.requests_accepted += 1,
            Err(Refused::Duplicate) => self.stats.requests_duplicate += 1,
            Err(Refused::Full) => self.stats.requests_refused_full += 1,
            Err(Refused::ClientFull) => self.stats.requests_refused_client_full += 1,
        }
    }

    /// A message from a replica (this one included), verified by the
    /// dataplane: senders matched to links, signatures and proofs checked.
    pub fn on_message(&mut self, msg: Verified<Message>, out: &mut Vec<Output>) {
        let msg = match msg.into_request() {
            Ok(request) => return self.on_request(request, out),
            Err(m) => m,
        };
        // The requests a STOP carries are verified with it.
        for r in msg.stop_requests() {
            self.admit_request(r);
        }
        match msg.into_inner() {
            Message::Request(_) => unreachable!("requests were split off above"),
            Message::Propose(p) => self.on_propose(p, out),
            Message::Write(w) => self.on_write(w, out),
            Message::Accept(a) => self.on_accept(a, out),
            Message::Stop(s) => self.on_stop(s, out),
            Message::StopData(s) => self.on_stopdata(s, out),
            Message::Sync(s) => self.on_sync(s, out),
            Message::Fetch(f) => self.on_fetch(f, out),
            Message::Batch(b) => self.on_batch(b, out),
            Message::StateRequest(r) => self.on_state_request(r, out),
            Message::StateReply(r) => self.on_state_reply(r, out),
            Message::SnapshotRequest(r) => self.on_snapshot_request(r, out),
            Message::SnapshotChunk(c) => self.on_snapshot_chunk(c, out),
        }
        self.check_invariants();
    }

    /// The host made the proposal of `cid` with `digest` durable: this
    /// replica now sends its WRITE (Mod-SMaRt step 2, after the vote is on
    /// disk) and its ACCEPT once a quorum of WRITEs is in.
    pub fn on_persisted(&mut self, cid: Cid, digest: Digest, out: &mut Vec<Output>) {
        self.persisted(cid, digest, out);
        self.check_invariants();
    }

    fn persisted(&mut self, cid: Cid, digest: Digest, out: &mut Vec<Output>) {
        if let Some(&(regency, d)) = self.late_accepts.get(&cid) {
            if d == digest {
                self.late_accepts.remove(&cid);
                self.send_accept(regency, cid, d, out);
            }
            return;
        }
        let me = self.cfg.me;
        let Some(inst) = self.instances.get_mut(&cid) else {
            return;
        };
        if inst.proposal_digest() != Some(digest) {
            return; // a proposal of an older regency, or already replaced
        }
        inst.persisted = true;
        if !inst.write_sent {
            inst.write_sent = true;
            inst.record_write(digest);
            // Count its own WRITE at once (the copy it sends itself is then
            // a duplicate).
            if inst.writes[me.index()].is_none() {
                inst.writes[me.index()] = Some(digest);
            }
            out.push(Output::Send {
                to: Target::All,
                msg: Message::Write(Write {
                    regency: inst.regency,
                    cid,
                    replica: me,
                    digest,
                }),
            });
        }
        self.try_accept(cid, out);
    }

    /// The host made the REGENCY record of `regency` durable: if this
    /// replica installed that regency and owes its STOPDATA, it sends it
    /// now (a STOPDATA is a promise never to vote in the older regency
    /// again, so it leaves only once a crash cannot undo the move).
    pub fn on_regency_persisted(&mut self, regency: Regency, out: &mut Vec<Output>) {
        if self.stopdata_owed == Some(regency) && self.regency == regency {
            self.stopdata_owed = None;
            let stopdata = self.stopdata_for(regency);
            out.push(Output::Send {
                to: Target::One(self.leader()),
                msg: Message::StopData(stopdata),
            });
        }
        self.check_invariants();
    }

    /// One tick of logical time (the host's `tick_ms`): request and SYNC
    /// timeouts, leader throughput monitoring.
    pub fn on_tick(&mut self, out: &mut Vec<Output>) {
        self.tick_inner(out);
        self.check_invariants();
    }

    fn tick_inner(&mut self, out: &mut Vec<Output>) {
        self.tick += 1;
        self.transfer_tick(out);
        self.refetch(out);
        self.check_stuck(out);
        // Anti-entropy: a replica that delivered nothing for a while asks
        // whether it missed decisions on a quiet cluster.
        if self.tick - self.last_progress_tick >= 4 * self.cfg.request_timeout_ticks {
            self.catch_up(out);
        }
        match self.phase {
            Phase::Normal => {
                self.check_request_timeouts(out);
                self.monitor_throughput(out);
                self.check_leader_link(out);
            }
            Phase::Syncing { since } => {
                let timeout = self.cfg.sync_timeout_ticks << self.failed_syncs.min(6);
                if self.tick - since >= timeout {
                    self.stats.timeouts_sync += 1;
                    self.failed_syncs += 1;
                    self.phase = Phase::Syncing { since: self.tick };
                    if self.stop_sent > self.regency {
                        // STOPs for the next regency may have been lost.
                        self.broadcast_stop(self.stop_sent, out);
                    } else {
                        self.send_stop(self.regency + 1, out);
                    }
                }
            }
        }
    }

    /// The link with `peer` went up or down (the host's transport reports
    /// it). A leader whose link stays down past `leader_link_timeout_ticks`
    /// is suspected: a crashed process's connections reset at once.
    pub fn on_link(&mut self, peer: ReplicaId, up: bool) {
        let i = peer.index();
        if i >= self.cfg.n || peer == self.cfg.me {
            return;
        }
        if up {
            self.link_seen_up[i] = true;
            self.link_down_since[i] = None;
        } else if self.link_seen_up[i] && self.link_down_since[i].is_none() {
            self.link_down_since[i] = Some(self.tick);
        }
        self.check_invariants();
    }

    fn check_leader_link(&mut self, out: &mut Vec<Output>) {
        let timeout = self.cfg.leader_link_timeout_ticks;
        if timeout == 0 || self.is_leader() || self.stop_sent > self.regency {
            return;
        }
        let leader = self.leader().index();
        if self.link_down_since[leader].is_some_and(|t| self.tick - t >= timeout) {
            self.stats.timeouts_leader_link += 1;
            self.send_stop(self.regency + 1, out);
        }
    }

    /// The next instance is not decided here while a later one is: this
    /// replica missed messages (a partition, an equivocating leader). After
    /// a request timeout in that state it catches up by state transfer.
    fn check_stuck(&mut self, out: &mut Vec<Output>) {
        let next = self.last_decided + 1;
        let stuck = self
            .instances
            .get(&next)
            .is_none_or(|i| i.decided.is_none())
            && self
                .instances
                .range(next + 1..)
                .any(|(_, i)| i.decided.is_some());
        match (stuck, self.stuck_since) {
            (false, _) => self.stuck_since = None,
            (true, None) => self.stuck_since = Some((next, self.tick)),
            (true, Some((cid, _))) if cid != next => self.stuck_since = Some((next, self.tick)),
            (true, Some((_, since))) => {
                if self.tick - since >= self.cfg.request_timeout_ticks {
                    self.stuck_since = Some((next, self.tick));
                    self.catch_up(out);
                }
            }
        }
    }

    /// After a restart from disk: a proposal this replica made durable
    /// before the crash for an undecided instance (so it may have sent its
    /// WRITE), reported as written in the next STOPDATA. Whether it also
    /// ACCEPTed is the log's ACCEPT records' ([`Replica::recover_accept`]):
    /// an ACCEPT leaves only once durable, so none is forgotten and none is
    /// claimed that was not sent.
    ///
    /// A vote of the recovered regency itself becomes the instance's
    /// proposal again, durable: a different PROPOSE for the same cid in
    /// that regency is then refused as equivocation, as it would have been
    /// without the crash (a restarted replica never votes twice).
    ///
    /// Returns false if the vote is outside the open window (decided, or
    /// too far ahead) and was dropped.
    ///
    /// # Panics
    /// On a vote of a regency after the one the core was created in, or two
    /// different votes for one cid in the recovered regency: the host
    /// checks its log for those first.
    pub fn recover_vote(&mut self, regency: Regency, cid: Cid, batch: Arc<Batch>) -> bool {
        assert!(
            regency <= self.regency,
            "vote from a regency after the recovered one"
        );
        if cid <= self.last_decided || cid > self.last_decided + self.cfg.instance_window as u64 {
            return false;
        }
        let (n, d, current) = (self.cfg.n, batch.digest(), self.regency);
        let inst = self
            .instances
            .entry(cid)
            .or_insert_with(|| Instance::new(cid, current, n));
        assert_eq!(
            inst.regency, current,
            "recovered instances vote in the recovered regency"
        );
        inst.keep_batch(batch.clone());
        if !inst.written.contains(&(regency, d)) {
            if inst.written.len() == wire::sync::WRITTEN_MAX {
                inst.written.remove(0);
            }
            inst.written.push((regency, d));
            inst.written.sort_by_key(|w| w.0);
        }
        if regency == current {
            assert!(
                inst.proposal_digest().is_none_or(|p| p == d),
                "two durable proposals for cid {cid} in regency {regency}"
            );
            inst.proposal = Some(batch);
            inst.persisted = true;
            inst.write_sent = true;
        }
        self.check_invariants();
        true
    }

    /// After a restart from disk, once its proposal was recovered
    /// ([`Replica::recover_vote`]): this replica's ACCEPT of `digest` for
    /// `cid` in `regency`, from the log. Returns false if the instance is
    /// outside the open window or holds no such recovered proposal (the
    /// record is then ignored: an ACCEPT is only ever of a durable
    /// proposal).
    pub fn recover_accept(&mut self, regency: Regency, cid: Cid, digest: Digest) -> bool {
        let current = self.regency;
        let Some(inst) = self.instances.get_mut(&cid) else {
            return false;
        };
        if !inst.written.contains(&(regency, digest)) {
            return false;
        }
        if inst.accepted.is_none_or(|(r, _)| r <= regency) {
            inst.accepted = Some((regency, digest));
        }
        if regency == current {
            inst.accept_sent = true;
        }
        self.check_invariants();
        true
    }

    /// After a restart from disk, right after [`Replica::new`]: the
    /// decisions the host replayed from its log (the newest ones, ascending,
    /// ending at the recovered last decision), kept to serve FETCH and
    /// state transfer and shown as `recent` proofs in STOPDATA, as if this
    /// replica had delivered them without the crash. Only the newest
    /// `decision_log_max` are kept.
    ///
    /// # Panics
    /// If they are not consecutive or do not end at the last decision.
    pub fn recover_decisions(&mut self, decided: impl IntoIterator<Item = Decided>) {
        assert!(
            self.log.is_empty(),
            "recover_decisions once, right after new"
        );
        for d in decided {
            if let Some(prev) = self.log.back() {
                assert_eq!(
                    d.proof.cid,
                    prev.proof.cid + 1,
                    "recovered decisions are consecutive"
                );
            }
            if self.log.len() == self.cfg.decision_log_max() {
                self.log.pop_front();
            }
            self.log.push_back(d);
        }
        if let Some(last) = self.log.back() {
            assert_eq!(
                last.proof.cid, self.last_decided,
                "recovered decisions end at the last one"
            );
        }
        self.check_invariants();
    }

    /// After a restart from disk (anything recovered): this replica will
    /// not propose in the regency it recovered (see `propose_from`).
    pub fn mark_restarted(&mut self) {
        self.propose_from = self.regency + 1;
    }

    /// Asks the other replicas whether this one is behind (after a restart
    /// from disk): a state transfer that ends as soon as the replies show
    /// nothing newer.
    pub fn catch_up(&mut self, out: &mut Vec<Output>) {
        self.last_progress_tick = self.tick;
        if self.transfer.is_none() {
            self.stats.transfers_started += 1;
            self.transfer = Some(Transfer::new(self.last_decided, self.tick));
            self.request_state(out);
        }
    }

    // ------------------------------------------------------ normal case

    /// Index check for an instance message: counts the drop and returns
    /// false unless `cid` is open or may be opened in this regency.
    fn admit(
        &mut self,
        regency: Regency,
        cid: Cid,
        from: ReplicaId,
        out: &mut Vec<Output>,
    ) -> bool {
        if regency > self.regency {
            self.note_regency(from, regency, out);
        }
        if regency != self.regency {
            self.stats.drop_wrong_regency += 1;
            return false;
        }
        if cid <= self.last_decided {
            self.stats.drop_stale_cid += 1;
            return false;
        }
        if cid > self.last_decided + self.cfg.instance_window as u64 {
            self.stats.drop_future_cid += 1;
            self.report_behind(cid, out);
            return false;
        }
        true
    }

    fn instance(&mut self, cid: Cid) -> &mut Instance {
        let (n, regency) = (self.cfg.n, self.regency);
        let inst = self
            .instances
            .entry(cid)
            .or_insert_with(|| Instance::new(cid, regency, n));
        if inst.regency < regency {
            inst.reset_votes(regency);
        }
        inst
    }

    /// Mod-SMaRt step 1 -> 2: accept the leader's PROPOSE and send WRITE.
    fn on_propose(&mut self, p: Propose, out: &mut Vec<Output>) {
        if !self.admit(p.regency, p.cid, p.leader, out) {
            return;
        }
        if p.leader != self.cfg.leader_of(p.regency) {
            self.stats.drop_not_leader += 1;
            return;
        }
        if self.is_syncing() {
            // The leader sends its SYNC and its first PROPOSEs together;
            // a PROPOSE that overtook the SYNC waits for it (seed 309961:
            // every regency lost the PROPOSE at enough replicas to miss
            // its WRITE quorum, forever). `admit` bounds the cid.
            self.stats.early_proposals += 1;
            self.early_proposals.entry(p.cid).or_insert(p);
            return;
        }
        if self.pending_sync_values.contains_key(&p.cid) {
            // The SYNC chose this cid's value: only that value is written.
            self.stats.drop_equivocation += 1;
            return;
        }
        if !self.batch_is_valid(&p.batch) {
            self.stats.drop_bad_batch += 1;
            return;
        }
        self.take_proposal(p.cid, p.batch, out);
    }

    /// Makes `batch` the value of `cid` in the current regency (from a
    /// PROPOSE or from SYNC): persist it; the WRITE leaves once it is
    /// durable ([`Replica::on_persisted`]).
    fn take_proposal(&mut self, cid: Cid, batch: Arc<Batch>, out: &mut Vec<Output>) {
        let regency = self.regency;
        let inst = self.instance(cid);
        match inst.proposal_digest() {
            Some(d) if d == batch.digest() => return,
            Some(_) => {
                self.stats.drop_equivocation += 1;
                return;
            }
            None => {}
        }
        inst.keep_batch(batch.clone());
        inst.proposal = Some(batch.clone());
        for r in batch.requests() {
            self.pending.mark_proposed(r.client, r.seq, cid);
        }
        out.push(Output::Persist {
            cid,
            regency,
            batch,
        });
        // ACCEPTs may have arrived before the proposal, and the instance
        // may even be decided already, waiting for this batch.
        self.try_decide(cid, out);
        self.deliver_ready(out);
    }

    /// A batch is valid if it is within the limits and names each (client,
    /// seq) once. (Empty batches are no-ops a SYNC may choose.)
    fn batch_is_valid(&self, b: &Batch) -> bool {
        if b.len() > self.cfg.batch_requests_max || b.encoded_len() > self.cfg.batch_bytes_max {
            return false;
        }
        let mut seen = HashSet::with_capacity(b.len());
        !b.is_empty() && b.requests().iter().all(|r| seen.insert((r.client, r.seq)))
    }

    /// Mod-SMaRt step 2: record a WRITE.
    fn on_write(&mut self, w: Write, out: &mut Vec<Output>) {
        if !self.admit(w.regency, w.cid, w.replica, out) {
            return;
        }
        let slot = &mut self.instance(w.cid).writes[w.replica.index()];
        match slot {
            None => *slot = Some(w.digest),
            Some(d) if *d == w.digest => return,
            Some(_) => {
                self.stats.drop_conflicting_vote += 1;
                return;
            }
        }
        self.check_late_proposal(w.cid, w.digest, out);
        self.try_accept(w.cid, out);
    }

    /// Replicas that voted for `d` in `cid`'s current regency (WRITE or
    /// ACCEPT), in id order.
    fn vouchers(inst: &Instance, d: &Digest) -> Vec<ReplicaId> {
        (0..inst.writes.len())
            .filter(|&i| {
                inst.writes[i].as_ref() == Some(d)
                    || inst.accepts[i].as_ref().is_some_and(|a| &a.digest == d)
            })
            .map(|i| ReplicaId(i as u16))
            .collect()
    }

    /// The leader's PROPOSE is late here while more than f replicas voted
    /// for digest `d` in this regency: at least one correct replica took
    /// `d` as the leader's (signed, validated) proposal, so `d` is what the
    /// leader proposed, and this replica writes it too, fetching the batch
    /// from those replicas if it lacks it. Without this, a quorum that
    /// needs this replica (one replica silent or flooded: the other three
    /// form every quorum) waits for the slow PROPOSE or a request timeout
    /// (issue 11, item 2; simulator seed 13 of
    /// `a_silent_backup_never_makes_the_others_change_leader`). A correct replica
    /// still writes at most one value per regency (`take_proposal` refuses
    /// a second), which is all the quorum intersection needs.
    fn check_late_proposal(&mut self, cid: Cid, d: Digest, out: &mut Vec<Output>) {
        if self.is_syncing() || self.pending_sync_values.contains_key(&cid) {
            return;
        }
        let f = self.cfg.f();
        let Some(inst) = self.instances.get(&cid) else {
            return;
        };
        if inst.proposal.is_some() || inst.decided.is_some() || inst.regency != self.regency {
            return;
        }
        let vouchers = Self::vouchers(inst, &d);
        if vouchers.len() <= f {
            return;
        }
        if let Some(batch) = inst.batch(&d).cloned() {
            if self.batch_is_valid(&batch) {
                self.stats.proposals_fetched += 1;
                self.take_proposal(cid, batch, out);
            }
            return;
        }
        if self.fetching.contains_key(&cid) {
            return; // one fetch per instance at a time
        }
        self.fetching.insert(cid, (d, self.tick));
        let me = self.cfg.me;
        let targets: Vec<Target> = vouchers
            .into_iter()
            .filter(|&r| r != me)
            .map(Target::One)
            .collect();
        self.send_fetch(cid, d, &targets, out);
    }

    /// Mod-SMaRt step 2 -> 3: a quorum of WRITEs matches the durable
    /// proposal; send the (signed) ACCEPT.
    ///
    /// Also on more than f ACCEPTs for the value this replica wrote
    /// (ACCEPT amplification, as Bracha's broadcast echoes f+1 READYs):
    /// one of them is from a correct replica, which accepted only after a
    /// quorum of WRITEs, so everything a STOPDATA's `accepted` claims (a
    /// quorum wrote the value in this regency) holds, and a correct
    /// replica still accepts only the one value it wrote. Without it, one
    /// slow WRITE among three replicas (the fourth silent or flooded)
    /// stalls the instance until it arrives (issue 11, item 2; simulator
    /// seed 11 of `a_silent_backup_costs_at_most_half_again_in_median_latency`).
    fn try_accept(&mut self, cid: Cid, out: &mut Vec<Output>) {
        let q = self.cfg.quorum();
        let f = self.cfg.f();
        let Some(inst) = self.instances.get_mut(&cid) else {
            return;
        };
        let Some(d) = inst.proposal_digest() else {
            return;
        };
        if inst.accept_sent || !inst.persisted {
            return;
        }
        assert!(inst.write_sent, "a durable proposal has its WRITE sent");
        if inst.writes_for(&d) < q {
            if inst.accepts_for(&d) <= f {
                return;
            }
            self.stats.accepts_amplified += 1;
        }
        let regency = inst.regency;
        self.send_accept(regency, cid, d, out);
    }

    /// Accepts `digest` for `cid` in `regency`: the host makes the accept
    /// durable first ([`Output::PersistAccept`]); the ACCEPT leaves in
    /// [`Replica::on_accept_persisted`].
    fn send_accept(&mut self, regency: Regency, cid: Cid, digest: Digest, out: &mut Vec<Output>) {
        if let Some(inst) = self.instances.get_mut(&cid) {
            inst.accept_sent = true;
            inst.accepted = Some((regency, digest));
        }
        if self.accepts_owed.insert(cid, (regency, digest)) == Some((regency, digest)) {
            return; // already being made durable
        }
        out.push(Output::PersistAccept {
            regency,
            cid,
            digest,
        });
    }

    /// The host made this replica's accept of `digest` for `cid` in
    /// `regency` durable ([`Output::PersistAccept`]): the ACCEPT leaves
    /// (Mod-SMaRt step 3).
    pub fn on_accept_persisted(
        &mut self,
        regency: Regency,
        cid: Cid,
        digest: Digest,
        out: &mut Vec<Output>,
    ) {
        if self.accepts_owed.get(&cid) == Some(&(regency, digest)) {
            self.accepts_owed.remove(&cid);
            out.push(Output::Send {
                to: Target::All,
                msg: Message::Accept(Accept {
                    regency,
                    cid,
                    replica: self.cfg.me,
                    digest,
                    signature: wire::Signature::PENDING,
                }),
            });
        }
        self.check_invariants();
    }

    /// Mod-SMaRt step 3: record a signed ACCEPT.
    fn on_accept(&mut self, a: Accept, out: &mut Vec<Output>) {
        self.note_leader_accept(&a);
        if !self.admit(a.regency, a.cid, a.replica, out) {
            return;
        }
        let slot = &mut self.instance(a.cid).accepts[a.replica.index()];
        match slot {
            None => *slot = Some(a),
            Some(x) if x.digest == a.digest => return,
            Some(_) => {
                self.stats.drop_conflicting_vote += 1;
                return;
            }
        }
        self.check_late_proposal(a.cid, a.digest, out);
        self.try_accept(a.cid, out);
        self.try_decide(a.cid, out);
    }

    /// Mod-SMaRt step 3 -> 4: a quorum of ACCEPTs. If this replica holds
    /// that batch, the instance is decided; if not (it saw another proposal
    /// or none), it fetches the batch by digest.
    fn try_decide(&mut self, cid: Cid, out: &mut Vec<Output>) {
        let q = self.cfg.quorum();
        let Some(inst) = self.instances.get_mut(&cid) else {
            return;
        };
        if inst.decided.is_some() {
            return;
        }
        let Some(d) = inst.accept_quorum(q) else {
            return;
        };
        let proof = inst.proof_for(&d);
        self.note_decided_here(cid);
        self.learn_decision(proof, out);
    }

    /// Whether this replica watches the leader's ACCEPTs now.
    fn watches_leader_lag(&self) -> bool {
        self.cfg.leader_lag_max_ticks > 0 && !self.is_leader() && !self.is_syncing()
    }

    /// An ACCEPT of the current leader in its regency: on time if the
    /// instance is not decided here yet; otherwise as late as the ticks
    /// since its decision (`Config::leader_lag_max_ticks`).
    fn note_leader_accept(&mut self, a: &Accept) {
        if !self.watches_leader_lag() || a.regency != self.regency || a.replica != self.leader() {
            return;
        }
        if let Some(t) = self.leader_lag.waiting.remove(&a.cid) {
            let late = self.tick - t >= self.cfg.leader_lag_max_ticks;
            self.count_leader_accepts(late, 1);
            return;
        }
        let open = a.cid > self.last_decided
            && a.cid <= self.last_decided + self.cfg.instance_window as u64
            && self
                .instances
                .get(&a.cid)
                .is_none_or(|i| i.decided.is_none());
        if open {
            self.leader_lag.early.insert(a.cid);
        }
    }

    /// This replica decided `cid` from a quorum of ACCEPTs of the current
    /// regency: the leader's ACCEPT was either among the early ones, or is
    /// now awaited.
    fn note_decided_here(&mut self, cid: Cid) {
        if !self.watches_leader_lag() {
            return;
        }
        if self.leader_lag.early.remove(&cid) {
            self.count_leader_accepts(false, 1);
            return;
        }
        // Bounded: at most `instance_window` decisions a tick for as many
        // ticks as an ACCEPT may lag; past that the oldest counts as late.
        let cap = self.cfg.instance_window * (self.cfg.leader_lag_max_ticks as usize + 1);
        if self.leader_lag.waiting.len() >= cap {
            self.leader_lag.waiting.pop_first();
            self.count_leader_accepts(true, 1);
        }
        self.leader_lag.waiting.insert(cid, self.tick);
    }

    /// Counts `n` leader ACCEPTs of the window as late or on time.
    fn count_leader_accepts(&mut self, late: bool, n: u64) {
        if late {
            self.leader_lag.late += n;
            self.stats.leader_accepts_late += n;
        } else {
            self.leader_lag.on_time += n;
            self.stats.leader_accepts_on_time += n;
        }
    }

    /// Records a decision proof for an open instance (from a quorum of
    /// ACCEPTs here, or from a STOPDATA in a SYNC); delivers it when its
    /// batch is held, or fetches the batch by digest.
    fn learn_decision(&mut self, proof: DecisionProof, out: &mut Vec<Output>) {
        let cid = proof.cid;
        if cid <= self.last_decided || cid > self.last_decided + self.cfg.instance_window as u64 {
            return;
        }
        let digest = proof.digest;
        let inst = self.instance(cid);
        if inst.decided.is_some() {
            return;
        }
        let have = inst.batch(&digest).is_some();
        inst.decided = Some(proof);
        if have {
            self.deliver_ready(out);
        } else {
            self.fetch(cid, digest, out);
        }
    }

    /// Delivers decided instances in cid order, de-duplicating requests.
    fn deliver_ready(&mut self, out: &mut Vec<Output>) {
        while let Some(inst) = self.instances.get(&(self.last_decided + 1)) {
            let Some(proof) = &inst.decided else {
                break;
            };
            if inst.batch(&proof.digest).is_none() {
                break; // being fetched
            }
            let inst = self
                .instances
                .remove(&(self.last_decided + 1))
                .expect("present");
            let proof = inst.decided.clone().expect("checked above");
            let batch = inst
                .batch(&proof.digest)
                .cloned()
                .expect("decided instance holds its batch");
            // The decision implies a quorum of WRITEs: this replica's own
            // ACCEPT may still be owed to replicas short of a quorum.
            if !inst.accept_sent {
                let regency = proof.accepts[0].regency;
                if inst.persisted && inst.proposal_digest() == Some(proof.digest) {
                    self.send_accept(regency, inst.cid, proof.digest, out);
                } else if regency == self.regency {
                    self.late_accepts.insert(inst.cid, (regency, proof.digest));
                }
            }
            let mut fresh = Vec::with_capacity(batch.len());
            for (i, r) in batch.requests().iter().enumerate() {
                self.pending.remove(r.client, r.seq);
                if self.clients.mark_executed(r.client, r.seq) {
                    fresh.push(i as u32);
                } else {
                    self.stats.requests_deduplicated += 1;
                }
            }
            self.last_decided = inst.cid;
            self.last_decided_proof = Some(proof.clone());
            self.last_progress_tick = self.tick;
            if self.log.len() == self.cfg.decision_log_max() {
                self.log.pop_front();
            }
            self.log.push_back(Decided {
                batch: batch.clone(),
                proof: proof.clone(),
            });
            let period = self.cfg.checkpoint_period;
            self.fetching.remove(&inst.cid);
            self.stats.decisions += 1;
            self.stats.requests_executed += fresh.len() as u64;
            out.push(Output::Deliver(Decision {
                cid: inst.cid,
                regency: proof.accepts[0].regency,
                proof,
                batch,
                fresh,
                checkpoint: (inst.cid % period == 0).then(|| self.clients.clone()),
            }));
        }
        let floor = self
            .last_decided
            .saturating_sub(self.cfg.instance_window as u64);
        self.late_accepts.retain(|&c, _| c > floor);
        self.accepts_owed.retain(|&c, _| c > floor);
        let last = self.last_decided;
        self.leader_lag.early.retain(|&c| c > last);
        self.next_proposal = self.next_proposal.max(self.last_decided + 1);
        self.try_propose(out);
    }

    /// Leader: propose batches of pending requests while the pipeline has
    /// room (the previous instance decided, or fewer than `pipeline_depth`
    /// in flight).
    fn try_propose(&mut self, out: &mut Vec<Output>) {
        if !self.is_leader() || self.is_syncing() || self.regency < self.propose_from {
            return;
        }
        while self.next_proposal <= self.last_decided + self.cfg.pipeline_depth as u64 {
            // Propose when the previous instance is decided, or when enough
            // requests wait to fill another batch (BFT-SMaRt batching, with
            // pipelining under heavy load).
            let in_flight = self.next_proposal - self.last_decided - 1;
            if in_flight > 0 && self.pending.unproposed() < self.cfg.pipeline_batch_min {
                return;
            }
            let cid = self.next_proposal;
            let requests =
                self.pending
                    .take_batch(cid, self.cfg.batch_requests_max, self.cfg.batch_bytes_max);
            if requests.is_empty() {
                return;
            }
            self.next_proposal += 1;
            self.stats.proposals_sent += 1;
            out.push(Output::Send {
                to: Target::All,
                msg: Message::Propose(Propose {
                    regency: self.regency,
                    cid,
                    leader: self.cfg.me,
                    batch: Arc::new(Batch::new(requests)),
                    signature: wire::Signature::PENDING,
                }),
            });
        }
    }

    // ---------------------------------------------------- fetching batches

    fn fetch(&mut self, cid: Cid, digest: Digest, out: &mut Vec<Output>) {
        if self.fetching.get(&cid).is_some_and(|(d, _)| *d == digest) {
            return;
        }
        self.fetching.insert(cid, (digest, self.tick));
        self.send_fetch(cid, digest, &[Target::All], out);
    }

    /// Asks `targets` for the batch of `cid` with `digest`.
    fn send_fetch(&mut self, cid: Cid, digest: Digest, targets: &[Target], out: &mut Vec<Output>) {
        self.stats.batches_fetched += 1;
        for &to in targets {
            out.push(Output::Send {
                to,
                msg: Message::Fetch(Fetch {
                    cid,
                    digest,
                    replica: self.cfg.me,
                }),
            });
        }
    }

    fn on_fetch(&mut self, f: Fetch, out: &mut Vec<Output>) {
        if f.replica == self.cfg.me {
            return;
        }
        let empty = Batch::new(Vec::new());
        let open = self.instances.get(&f.cid).and_then(|i| i.batch(&f.digest));
        let done = || {
            self.log
                .iter()
                .find(|d| d.proof.cid == f.cid && d.proof.digest == f.digest)
                .map(|d| &d.batch)
        };
        let batch = match open.or_else(done) {
            Some(b) => b.clone(),
            None if f.digest == empty.digest() => Arc::new(empty),
            None => return,
        };
        out.push(Output::Send {
            to: Target::One(f.replica),
            msg: Message::Batch(BatchReply { cid: f.cid, batch }),
        });
    }

    /// FETCHes unanswered for a request timeout are asked again (the
    /// replicas asked may have been down, or have moved on).
    fn refetch(&mut self, out: &mut Vec<Output>) {
        let (tick, timeout) = (self.tick, self.cfg.request_timeout_ticks);
        let due: Vec<(Cid, Digest)> = self
            .fetching
            .iter_mut()
            .filter(|(_, (_, t))| tick - *t >= timeout)
            .map(|(&c, (d, t))| {
                *t = tick;
                (c, *d)
            })
            .collect();
        for (cid, digest) in due {
            self.send_fetch(cid, digest, &[Target::All], out);
        }
    }

    fn on_batch(&mut self, b: BatchReply, out: &mut Vec<Output>) {
        let Some(&(want, _)) = self.fetching.get(&b.cid) else {
            return;
        };
        if b.batch.digest() != want || b.cid <= self.last_decided {
            return;
        }
        self.fetching.remove(&b.cid);
        self.instance(b.cid).keep_batch(b.batch.clone());
        if self.pending_sync_values.get(&b.cid) == Some(&want) {
            // The SYNC chose this value: write it now.
            self.pending_sync_values.remove(&b.cid);
            self.take_proposal(b.cid, b.batch, out);
        } else {
            // A late PROPOSE's batch, vouched for by more than f votes.
            self.check_late_proposal(b.cid, want, out);
        }
        self.try_decide(b.cid, out);
        self.deliver_ready(out);
    }

    // ----------------------------------------------- leader change: STOP

    /// Request timeouts: first forward to the leader, then ask for a leader
    /// change.
    fn check_request_timeouts(&mut self, out: &mut Vec<Output>) {
        let Some(deadline) = self.tick.checked_sub(self.cfg.request_timeout_ticks) else {
            return;
        };
        if self.pending.oldest_tick().is_none_or(|t| t > deadline) {
            return;
        }
        let (first, second) =
            self.pending
                .timed_out(deadline, self.tick, self.cfg.stop_requests_max);
        if !first.is_empty() {
            // Maybe the request was ordered while this replica missed it:
            // check before blaming the leader.
            self.catch_up(out);
        }
        if !self.is_leader() {
            for r in first {
                self.stats.requests_forwarded += 1;
                out.push(Output::Send {
                    to: Target::One(self.leader()),
                    msg: Message::Request(r.into_inner()),
                });
            }
        }
        if second {
            self.stats.timeouts_request += 1;
            if self.stop_sent > self.regency {
                // Still waiting for the regency asked for: STOPs may have
                // been lost (a replica was down), so ask again.
                self.broadcast_stop(self.stop_sent, out);
            } else {
                self.send_stop(self.regency + 1, out);
            }
        }
    }

    /// Aardvark: at the end of each window, a backup compares the requests
    /// executed in it with the best windows of this regency and recent ones;
    /// a leader far below while demand is there is replaced. Demand is
    /// there when requests wait half a window, or when a request's mean
    /// wait (Little's law over the window: pending requests summed per
    /// tick, over requests executed) grew [`WAIT_GROWTH_MIN`] times over
    /// the best window's while on average at least half a request was
    /// pending: a leader whose receive path is flooded keeps
    /// ordering, slower, while its clients queue (issue 11, item 3; RBFT
    /// monitors latency as well as throughput for this reason). A load
    /// that drops lowers throughput but not the wait; a load that grows
    /// raises the wait but not throughput beyond the best.
    ///
    /// A regency's first window starts when its SYNC is applied
    /// (`apply_plan`), not when it was entered, and the window doubles with
    /// each consecutive regency that executed nothing (regression seed
    /// 109838: a fixed window shorter than a SYNC plus one instance
    /// replaced every leader forever).
    fn monitor_throughput(&mut self, out: &mut Vec<Output>) {
        self.monitor.pending_ticks += self.pending.len() as u64;
        self.expire_leader_lag();
        let w = self.cfg.throughput_window_ticks << self.monitor.unproductive_regencies.min(6);
        if self.tick < self.monitor.window_start_tick + w {
            return;
        }
        let executed = self.stats.requests_executed - self.monitor.executed_at_window_start;
        let pending_ticks = self.monitor.pending_ticks;
        let (lag_on_time, lag_late) = (self.leader_lag.on_time, self.leader_lag.late);
        self.start_monitor_window();
        if self.leader_lags(lag_on_time, lag_late) {
            self.stats.timeouts_leader_lag += 1;
            self.send_stop(self.regency + 1, out);
            return;
        }
        let m = &mut self.monitor;
        let wait_millitick = match executed {
            0 if pending_ticks > 0 => u64::MAX,
            0 => 0,
            _ => pending_ticks.saturating_mul(1000) / executed,
        };
        let expected = m
            .best_recent
            .iter()
            .chain(m.best_current.iter())
            .copied()
            .reduce(Window::best);
        let this = Window {
            executed,
            wait_millitick,
        };
        if executed >= BASELINE_REQUESTS_MIN {
            m.best_current = Some(m.best_current.map_or(this, |b| b.best(this)));
        }
        let Some(expected) = expected else {
            return;
        };
        let waiting = self
            .pending
            .oldest_tick()
            .is_some_and(|t| self.tick - t >= w / 2);
        // Demand: on average at least half a request pending over the
        // window (one request that arrived in an idle window's last tick is
        // none, though nothing was executed to divide its wait by).
        let demand = pending_ticks.saturating_mul(2) >= w;
        let slower = demand
            && wait_millitick
                >= WAIT_GROWTH_MIN
                    .saturating_mul(expected.wait_millitick.max(WAIT_FLOOR_MILLITICK));
        let pct = self.cfg.throughput_min_pct;
        if pct > 0
            && !self.is_leader()
            && (waiting || slower)
            && executed * 100 < expected.executed * pct
        {
            self.stats.timeouts_throughput += 1;
            self.send_stop(self.regency + 1, out);
        }
    }

    /// Starts the monitors' next observation window at this tick (at the
    /// end of a window, and when a regency's SYNC is applied).
    fn start_monitor_window(&mut self) {
        let m = &mut self.monitor;
        m.window_start_tick = self.tick;
        m.executed_at_window_start = self.stats.requests_executed;
        m.pending_ticks = 0;
        self.leader_lag.on_time = 0;
        self.leader_lag.late = 0;
    }

    /// Instances decided here whose leader ACCEPT has not come within
    /// `leader_lag_max_ticks` count as late now (a leader that sends none
    /// is as late as one that sends them too late).
    fn expire_leader_lag(&mut self) {
        let (tick, max) = (self.tick, self.cfg.leader_lag_max_ticks);
        let before = self.leader_lag.waiting.len();
        self.leader_lag.waiting.retain(|_, t| tick - *t < max);
        let expired = (before - self.leader_lag.waiting.len()) as u64;
        self.count_leader_accepts(true, expired);
    }

    /// RBFT-style monitoring of the leader itself, at the end of each
    /// throughput window: when most instances of the window (at least
    /// [`LEADER_LAG_INSTANCES_MIN`]) were decided here well before the
    /// leader's ACCEPT arrived, the leader processes the quorum's messages
    /// slower than its peers (a flooded receive path, a starved core: issue
    /// 11, item 3). Throughput alone misses it: a flooded leader still
    /// orders most requests, each later, and closed-loop clients slow down
    /// with it. Unlike throughput and latency, the lag does not grow with
    /// the load, which every replica carries alike. `on_time` and `late`
    /// are the window's counts.
    fn leader_lags(&self, on_time: u64, late: u64) -> bool {
        let total = on_time + late;
        self.watches_leader_lag() && total >= LEADER_LAG_INSTANCES_MIN && late * 2 > total
    }

    /// Hands the leadership to replica `to` (etcd's MoveLeader; BFT-SMaRt
    /// has no such call): the leader asks for the regency in
    /// `(regency, regency + n)` that `to` leads with a STOP, and the backups
    /// join it ([`Replica::on_stop`]) while the leader keeps up. Returns that
    /// regency; it is installed once 2f+1 replicas have asked for it.
    ///
    /// # Errors
    /// [`MoveLeaderError::NotLeader`] unless this replica leads a regency
    /// whose SYNC is applied; [`MoveLeaderError::BadTransferee`] for `to`
    /// not a replica or this one.
    pub fn move_leader(
        &mut self,
        to: ReplicaId,
        out: &mut Vec<Output>,
    ) -> Result<Regency, MoveLeaderError> {
        if !self.is_leader() || self.phase != Phase::Normal {
            return Err(MoveLeaderError::NotLeader);
        }
        let n = self.cfg.n as u64;
        if to.index() >= self.cfg.n || to == self.cfg.me {
            return Err(MoveLeaderError::BadTransferee);
        }
        let ahead = (to.0 as u64 + n - self.cfg.me.0 as u64) % n;
        let Some(target) = self.regency.checked_add(ahead as Regency) else {
            // Regency numbers are used up (not reachable in practice).
            return Err(MoveLeaderError::NotLeader);
        };
        assert_eq!(self.cfg.leader_of(target), to);
        self.stats.leader_moves_started += 1;
        self.send_stop(target, out);
        Ok(target)
    }

    /// Whether this replica joins a STOP of the current leader for
    /// `regency` (the leader moving its leadership, [`Replica::move_leader`]):
    /// only a regency in `(regency, regency + n)` led by another replica,
    /// and only while no request here has waited a request timeout since
    /// it arrived. A leader that stalls cannot hand its regency to a
    /// colluder to escape the request timeouts (its requests are old by
    /// then, whatever fresh timeouts a new regency gave them), so a chain
    /// of Byzantine leaders passing the leadership along ends at the
    /// normal rotation.
    fn joins_leader_move(&self, from: ReplicaId, regency: Regency) -> bool {
        let n = self.cfg.n as u64;
        from == self.leader()
            && regency > self.regency
            && (regency as u64) < self.regency as u64 + n
            && self.cfg.leader_of(regency) != from
            && self
                .pending
                .first_arrival_tick()
                .is_none_or(|t| self.tick - t < self.cfg.request_timeout_ticks)
    }

    /// Broadcasts STOP(`regency`) with the oldest pending requests, once per
    /// regency.
    fn send_stop(&mut self, regency: Regency, out: &mut Vec<Output>) {
        if regency <= self.stop_sent || regency <= self.regency {
            return;
        }
        self.stop_sent = regency;
        self.broadcast_stop(regency, out);
    }

    fn broadcast_stop(&mut self, regency: Regency, out: &mut Vec<Output>) {
        self.stats.stops_sent += 1;
        self.pending.restart_timeouts(self.tick);
        let requests = self
            .pending
            .older_than(self.tick, self.cfg.stop_requests_max)
            .into_iter()
            .map(Verified::into_inner)
            .collect();
        out.push(Output::Send {
            to: Target::All,
            msg: Message::Stop(Stop {
                regency,
                replica: self.cfg.me,
                requests,
            }),
        });
    }

    /// STOP: f+1 asking for a regency above this one make this replica
    /// join; 2f+1 install it.
    fn on_stop(&mut self, s: Stop, out: &mut Vec<Output>) {
        let slot = &mut self.stop_votes[s.replica.index()];
        if s.regency <= *slot {
            return;
        }
        *slot = s.regency;
        if self.joins_leader_move(s.replica, s.regency) {
            self.stats.leader_moves_joined += 1;
            self.send_stop(s.regency, out);
        }
        let f = self.cfg.f();
        if let Some(join) = self.kth_highest_stop(f + 1) {
            self.send_stop(join, out);
        }
        if let Some(install) = self.kth_highest_stop(self.cfg.quorum()) {
            if install > self.regency {
                self.install(install, out);
            }
        }
    }

    /// The highest regency above the current one that at least `k`
    /// replicas asked for.
    fn kth_highest_stop(&self, k: usize) -> Option<Regency> {
        let mut votes = self.stop_votes.clone();
        votes.sort_unstable_by(|a, b| b.cmp(a));
        votes.get(k - 1).copied().filter(|&r| r > self.regency)
    }

    /// Installs `regency`: stop voting in the old one, wait for SYNC. The
    /// STOPDATA to the new leader leaves once the host has made the
    /// REGENCY record durable ([`Replica::on_regency_persisted`]).
    fn install(&mut self, regency: Regency, out: &mut Vec<Output>) {
        assert!(regency > self.regency);
        self.enter_regency(regency, out);
        self.phase = Phase::Syncing { since: self.tick };
        self.stopdata.retain(|_, sd| sd.regency == regency);
        self.stopdata_owed = Some(regency);
    }

    /// This replica's STOPDATA for `regency`: its last decision with the
    /// proof, its votes on every open instance, and the proofs of the
    /// decisions it delivered in the window below its last one (so that
    /// [`crate::sync::plan`] can start below a replica that is ahead).
    fn stopdata_for(&self, regency: Regency) -> StopData {
        let window = self.cfg.instance_window as u64;
        let floor = self.last_decided.saturating_sub(window);
        let recent: Vec<DecisionProof> = self
            .log
            .iter()
            .map(|d| &d.proof)
            .filter(|p| p.cid > floor && p.cid < self.last_decided)
            .cloned()
            .collect();
        let open: Vec<_> = self
            .instances
            .values()
            .filter(|i| !i.written.is_empty() || i.accepted.is_some() || i.decided.is_some())
            .map(Instance::open_vote)
            .collect();
        assert!(recent.len() <= self.cfg.stopdata_entries_max());
        assert!(open.len() <= self.cfg.stopdata_entries_max());
        StopData {
            regency,
            replica: self.cfg.me,
            last_decided: self.last_decided,
            last_decided_proof: self.last_decided_proof.clone(),
            open,
            recent,
            signature: wire::Signature::PENDING,
        }
    }

    /// Moves to `regency` (installed or adopted): old votes stop counting,
    /// pending requests get a fresh timeout and will be proposed again.
    fn enter_regency(&mut self, regency: Regency, out: &mut Vec<Output>) {
        self.regency = regency;
        self.stopdata_owed = None;
        self.stop_sent = self.stop_sent.max(regency);
        self.stats.regencies_installed += 1;
        for inst in self.instances.values_mut() {
            inst.reset_votes(regency);
        }
        self.pending.clear_proposed();
        self.pending.reset_ages(self.tick);
        self.late_accepts.clear();
        self.accepts_owed.retain(|_, (r, _)| *r >= regency);
        self.pending_sync_values.clear();
        self.early_proposals.clear();
        self.next_proposal = self.last_decided + 1;
        self.leader_lag = LeaderLag::default();
        let m = &mut self.monitor;
        if let Some(best) = m.best_current.take() {
            m.best_recent.push_back(best);
            if m.best_recent.len() > RECENT_REGENCIES {
                m.best_recent.pop_front();
            }
        }
        if self.stats.requests_executed == m.executed_at_regency_start {
            m.unproductive_regencies = m.unproductive_regencies.saturating_add(1);
        } else {
            m.unproductive_regencies = 0;
        }
        m.executed_at_regency_start = self.stats.requests_executed;
        self.start_monitor_window();
        out.push(Output::Regency {
            regency,
            leader: self.leader(),
        });
    }

    /// A replica in a higher regency than this one: once f+1 replicas are
    /// seen there, at least one correct replica installed it, so this one
    /// adopts it (it missed the STOPs, e.g. while restarting) and catches up.
    fn note_regency(&mut self, from: ReplicaId, regency: Regency, out: &mut Vec<Output>) {
        let slot = &mut self.seen_regency[from.index()];
        *slot = (*slot).max(regency);
        let mut seen = self.seen_regency.clone();
        seen.sort_unstable_by(|a, b| b.cmp(a));
        let adopt = seen[self.cfg.f()];
        if adopt > self.regency {
            self.enter_regency(adopt, out);
            self.phase = Phase::Normal;
            self.report_behind(self.last_decided + 1, out);
        }
    }

    // ------------------------------------ leader change: STOPDATA, SYNC

    /// STOPDATA at the leader of its regency: collect n-f, then SYNC once
    /// they are sound.
    fn on_stopdata(&mut self, sd: StopData, out: &mut Vec<Output>) {
        if sd.regency < self.regency || self.cfg.leader_of(sd.regency) != self.cfg.me {
            self.stats.drop_sync += 1;
            return;
        }
        if sd.regency > self.regency {
            // Another replica installed it first; keep it for when this one
            // does (at most one per replica).
            self.stopdata.insert(sd.replica, sd);
            return;
        }
        self.stopdata.insert(sd.replica, sd);
        self.try_sync(out);
    }

    fn try_sync(&mut self, out: &mut Vec<Output>) {
        if !self.is_syncing() || !self.is_leader() {
            return;
        }
        let collected: Vec<StopData> = self
            .stopdata
            .values()
            .filter(|s| s.regency == self.regency)
            .cloned()
            .collect();
        if collected.len() < self.cfg.n - self.cfg.f() {
            return;
        }
        if plan(
            &collected,
            self.cfg.f(),
            self.cfg.quorum(),
            self.cfg.instance_window,
        )
        .is_none()
        {
            return; // not sound yet: wait for more STOPDATAs
        }
        self.stats.syncs_sent += 1;
        self.stopdata.clear();
        out.push(Output::Send {
            to: Target::All,
            msg: Message::Sync(Sync {
                regency: self.regency,
                leader: self.cfg.me,
                stopdata: collected,
            }),
        });
    }

    /// SYNC: compute the plan from the STOPDATAs and write the kept values
    /// in the new regency.
    fn on_sync(&mut self, s: Sync, out: &mut Vec<Output>) {
        let n_f = self.cfg.n - self.cfg.f();
        let mut replicas = HashSet::new();
        let well_formed = s.leader == self.cfg.leader_of(s.regency)
            && s.stopdata.len() >= n_f
            && s.stopdata
                .iter()
                .all(|sd| sd.regency == s.regency && replicas.insert(sd.replica));
        let current = s.regency == self.regency && self.is_syncing();
        if !well_formed || !(current || s.regency > self.regency) {
            self.stats.drop_sync += 1;
            return;
        }
        let Some(plan) = plan(
            &s.stopdata,
            self.cfg.f(),
            self.cfg.quorum(),
            self.cfg.instance_window,
        ) else {
            self.stats.drop_sync += 1; // a leader must only send sound sets
            return;
        };
        if s.regency > self.regency {
            // n-f replicas installed it: at least f+1 correct did.
            self.enter_regency(s.regency, out);
        }
        self.apply_plan(plan, &s.stopdata, out);
    }

    fn apply_plan(&mut self, plan: SyncPlan, stopdata: &[StopData], out: &mut Vec<Output>) {
        self.phase = Phase::Normal;
        self.failed_syncs = 0;
        // The new leader is judged from here on: the ticks spent syncing
        // are not its window.
        self.start_monitor_window();
        self.stats.syncs_applied += 1;
        // Every decision proof in the SYNC (verified by the dataplane) lets
        // this replica deliver that instance without state transfer.
        let proofs = stopdata.iter().flat_map(|sd| {
            sd.last_decided_proof
                .iter()
                .chain(sd.open.iter().filter_map(|o| o.decided.as_ref()))
                .chain(sd.recent.iter())
        });
        let mut proofs: Vec<DecisionProof> = proofs.cloned().collect();
        proofs.sort_by_key(|p| p.cid);
        proofs.dedup_by_key(|p| p.cid);
        for p in proofs {
            self.learn_decision(p, out);
        }
        if plan.base > self.last_decided + 1 {
            self.report_behind(plan.base, out);
        }
        let top = plan.values.last().map_or(plan.base, |v| v.0);
        for (cid, digest) in plan.values {
            if cid <= self.last_decided || cid > self.last_decided + self.cfg.instance_window as u64
            {
                continue;
            }
            let empty = Batch::new(Vec::new());
            let have = if digest == empty.digest() {
                Some(Arc::new(empty))
            } else {
                self.instance(cid).batch(&digest).cloned()
            };
            match have {
                Some(batch) => self.take_proposal(cid, batch, out),
                None => {
                    // Someone in S wrote it (more than f did, or a proof
                    // names it): ask everyone, write it when it arrives.
                    self.pending_sync_values.insert(cid, digest);
                    self.fetch(cid, digest, out);
                }
            }
        }
        self.next_proposal = self.next_proposal.max(top + 1).max(self.last_decided + 1);
        self.try_propose(out);
        for (_, p) in std::mem::take(&mut self.early_proposals) {
            self.on_propose(p, out);
        }
    }

    /// Decisions up to `cid` exist that this replica lacks: start (or
    /// extend) a state transfer.
    fn report_behind(&mut self, cid: Cid, out: &mut Vec<Output>) {
        if cid <= self.behind_reported || cid <= self.last_decided {
            return;
        }
        self.behind_reported = cid;
        match &mut self.transfer {
            Some(t) => t.target = t.target.max(cid),
            None => {
                self.stats.transfers_started += 1;
                self.transfer = Some(Transfer::new(cid, self.tick));
                self.request_state(out);
            }
        }
    }

    fn request_state(&mut self, out: &mut Vec<Output>) {
        let req = StateRequest {
            replica: self.cfg.me,
            from_cid: self.last_decided + 1,
        };
        for r in (0..self.cfg.n as u16)
            .map(ReplicaId)
            .filter(|r| *r != self.cfg.me)
        {
            out.push(Output::Send {
                to: Target::One(r),
                msg: Message::StateRequest(req),
            });
        }
    }

    // ------------------------------------------------- state transfer

    /// The host took a checkpoint after delivering `p.info.cid` (see
    /// [`Decision::checkpoint`]; made with [`crate::checkpoint::prepare`]
    /// using `snapshot_chunk_bytes`): keep it to serve state transfer, and
    /// drop the decisions it covers from the log.
    pub fn on_checkpoint(&mut self, p: Prepared) {
        assert!(
            p.info.cid <= self.last_decided,
            "checkpoint of an undelivered instance"
        );
        assert!(p.info.len <= p.blob.len() as u64);
        assert_eq!(
            p.hashes.len() as u64,
            crate::checkpoint::chunks_of(p.info.len, self.cfg.snapshot_chunk_bytes),
            "checkpoint prepared with another chunk size"
        );
        if self
            .checkpoint
            .as_ref()
            .is_some_and(|c| c.info.cid >= p.info.cid)
        {
            return;
        }
        // Keep one window below the checkpoint: replicas a little behind
        // fetch those batches rather than the whole checkpoint.
        let keep_from = p.info.cid.saturating_sub(self.cfg.instance_window as u64);
        while self.log.front().is_some_and(|d| d.proof.cid <= keep_from) {
            self.log.pop_front();
        }
        self.previous_checkpoint = self.checkpoint.replace(p);
        self.check_invariants();
    }

    fn on_state_request(&mut self, req: StateRequest, out: &mut Vec<Output>) {
        if req.replica == self.cfg.me {
            return;
        }
        let mut bytes = 0;
        let decisions = self
            .log
            .iter()
            .filter(|d| d.proof.cid >= req.from_cid)
            .take_while(|d| {
                bytes += d.batch.encoded_len() + 256;
                bytes <= self.cfg.state_reply_bytes_max
            })
            .take(self.cfg.state_reply_decisions_max())
            .cloned()
            .collect();
        out.push(Output::Send {
            to: Target::One(req.replica),
            msg: Message::StateReply(StateReply {
                replica: self.cfg.me,
                regency: self.regency,
                last_decided: self.last_decided,
                checkpoint: self.checkpoint.as_ref().map(|c| c.info),
                decisions,
            }),
        });
    }

    /// Serves one chunk of the newest checkpoint's body; the first also
    /// carries the manifest and the decision proof.
    fn on_snapshot_request(&mut self, req: SnapshotRequest, out: &mut Vec<Output>) {
        let Some(p) = [&self.checkpoint, &self.previous_checkpoint]
            .into_iter()
            .flatten()
            .find(|p| p.info.cid == req.cid)
        else {
            return;
        };
        let chunk = self.cfg.snapshot_chunk_bytes as u64;
        if req.replica == self.cfg.me
            || p.info.cid != req.cid
            || req.offset > p.info.len
            || req.offset % chunk != 0
        {
            return;
        }
        let start = req.offset as usize;
        let end = (req.offset + chunk).min(p.info.len) as usize;
        let first = req.offset == 0;
        out.push(Output::Send {
            to: Target::One(req.replica),
            msg: Message::SnapshotChunk(SnapshotChunk {
                replica: self.cfg.me,
                cid: p.info.cid,
                total: p.info.len,
                offset: req.offset,
                bytes: p.body()[start..end].to_vec(),
                hashes: if first { p.hashes.to_vec() } else { Vec::new() },
                proof: if first { p.proof.clone() } else { None },
            }),
        });
    }

    fn on_state_reply(&mut self, rep: StateReply, out: &mut Vec<Output>) {
        let Some(t) = &mut self.transfer else {
            // No transfer in progress (f+1 replies showed nothing newer):
            // a later reply's decisions still continue the log, as each
            // carries its own proof (a replica one decision ahead of the
            // others is the only one that can show it).
            let first = rep.decisions.first().map_or(0, |d| d.proof.cid);
            let skip = (self.last_decided + 1).saturating_sub(first) as usize;
            for d in rep.decisions.into_iter().skip(skip) {
                if d.proof.cid != self.last_decided + 1 || !self.apply_proven(d, out) {
                    break;
                }
            }
            return;
        };
        t.replies.insert(rep.replica, rep);
        self.transfer_progress(out);
    }

    /// Delivers a decision shown with its (verified) proof for the next
    /// cid; false if it could not be delivered.
    fn apply_proven(&mut self, d: Decided, out: &mut Vec<Output>) -> bool {
        let next = self.last_decided + 1;
        assert_eq!(d.proof.cid, next);
        self.stats.transfer_decisions += 1;
        let inst = self.instance(next);
        inst.keep_batch(d.batch);
        inst.decided = Some(d.proof);
        self.deliver_ready(out);
        self.last_decided >= next
    }

    fn on_snapshot_chunk(&mut self, chunk: SnapshotChunk, out: &mut Vec<Output>) {
        let me = self.cfg.me;
        let Some(a) = self.transfer.as_mut().and_then(|t| t.assembly.as_mut()) else {
            self.stats.transfer_ignored_chunks += 1;
            return;
        };
        match a.add(chunk) {
            ChunkOutcome::Ignored => {
                self.stats.transfer_ignored_chunks += 1;
                return;
            }
            ChunkOutcome::Bad => {
                // f+1 reported this digest, so this source lied (or its
                // chunk was damaged): the next one, from the verified prefix.
                self.stats.transfer_bad_chunks += 1;
                a.next_source();
                out.push(Self::snapshot_request(me, a));
                return;
            }
            ChunkOutcome::More => {
                out.push(Self::snapshot_request(me, a));
                // Progress: the source is alive, its timeout starts over.
                if let Some(t) = &mut self.transfer {
                    t.last_request_tick = self.tick;
                }
                return;
            }
            ChunkOutcome::Complete => {}
        }
        let info = a.info;
        let (body, hashes, proof) = a.take();
        if let Some(t) = &mut self.transfer {
            t.assembly = None;
        }
        let blob = crate::checkpoint::with_proof(body, proof.as_ref());
        let Ok(ckpt) = crate::checkpoint::decode(&blob, &wire::Limits::default(), usize::MAX)
            .ok()
            .filter(|c| c.cid == info.cid)
            .ok_or(())
        else {
            // Every chunk matched the digest f+1 replicas reported, so a
            // correct replica made this blob: it cannot fail to decode
            // unless the hash collided. Start over rather than trust it.
            self.stats.transfer_bad_checkpoints += 1;
            self.transfer_progress(out);
            return;
        };
        if ckpt.cid > self.last_decided {
            let p = Prepared {
                info,
                blob: Arc::new(blob),
                hashes: Arc::new(hashes),
                proof,
            };
            self.install_checkpoint(p, ckpt, out);
        }
        self.transfer_progress(out);
    }

    fn snapshot_request(me: ReplicaId, a: &Assembly) -> Output {
        Output::Send {
            to: Target::One(a.current_source()),
            msg: Message::SnapshotRequest(SnapshotRequest {
                replica: me,
                cid: a.info.cid,
                offset: a.offset(),
            }),
        }
    }

    /// Jumps to a verified checkpoint: its de-duplication table, its last
    /// decision and its (verified) proof; the host replaces the
    /// application state.
    fn install_checkpoint(
        &mut self,
        p: Prepared,
        ckpt: crate::checkpoint::Checkpoint,
        out: &mut Vec<Output>,
    ) {
        assert!(ckpt.cid > self.last_decided);
        self.stats.transfer_checkpoints += 1;
        self.last_decided = ckpt.cid;
        self.last_decided_proof = ckpt.proof;
        self.clients = ckpt.clients;
        self.instances.retain(|&c, _| c > ckpt.cid);
        self.late_accepts.retain(|&c, _| c > ckpt.cid);
        self.accepts_owed.retain(|&c, _| c > ckpt.cid);
        self.fetching.retain(|&c, _| c > ckpt.cid);
        self.pending_sync_values.retain(|&c, _| c > ckpt.cid);
        let clients = &self.clients;
        self.pending
            .retain(|r| !clients.is_executed(r.client, r.seq));
        self.log.clear();
        self.next_proposal = self.next_proposal.max(self.last_decided + 1);
        let (info, blob) = (p.info, p.blob.clone());
        self.previous_checkpoint = self.checkpoint.replace(p);
        out.push(Output::InstallCheckpoint {
            info,
            blob,
            app: ckpt.app,
        });
    }

    /// Applies what the replies allow: consecutive decisions from any
    /// reply, or a checkpoint f+1 replicas agree on when the gap reaches
    /// below every reply's decisions.
    fn transfer_progress(&mut self, out: &mut Vec<Output>) {
        loop {
            let next = self.last_decided + 1;
            let Some(d) = self
                .transfer
                .as_ref()
                .and_then(|t| t.decision(next))
                .cloned()
            else {
                break;
            };
            if !self.apply_proven(d, out) {
                break; // cannot happen: the batch was just kept
            }
        }
        let Some(t) = &mut self.transfer else {
            return;
        };
        // Done once n-f replicas (this one included) answered and this
        // replica has what f+1 of them (one correct) show: a single reply,
        // or a message for a far cid, cannot keep it going, and the first
        // replies (maybe from replicas as far behind as this one) cannot
        // end it before the others are heard.
        let (n, f) = (self.cfg.n, self.cfg.f());
        if t.replies.len() + 1 >= n - f && self.last_decided >= t.kth_highest_reported(f + 1) {
            self.transfer = None;
            return;
        }
        if t.assembly.is_none() {
            if let Some((info, sources)) = t.trusted_checkpoint(self.last_decided, self.cfg.f() + 1)
            {
                let a = Assembly::new(info, sources, self.cfg.snapshot_chunk_bytes);
                out.push(Self::snapshot_request(self.cfg.me, &a));
                t.assembly = Some(a);
            }
        }
    }

    /// Retries a state transfer that made no progress within the request
    /// timeout: the next checkpoint source, or a new round of requests.
    fn transfer_tick(&mut self, out: &mut Vec<Output>) {
        let (tick, timeout, me) = (self.tick, self.cfg.request_timeout_ticks, self.cfg.me);
        let Some(t) = &mut self.transfer else {
            return;
        };
        if tick - t.last_request_tick < timeout {
            return;
        }
        t.last_request_tick = tick;
        match &mut t.assembly {
            Some(a) if a.source + 1 < a.sources.len() => {
                a.next_source();
                out.push(Self::snapshot_request(me, a));
            }
            _ => {
                // Every source tried (they may have replaced that checkpoint
                // by a newer one), or no progress: ask for state again.
                t.assembly = None;
                t.replies.clear();
                self.request_state(out);
            }
        }
    }

    /// Invariants checked after every message (TigerBeetle style: cheap,
    /// always on).
    fn check_invariants(&self) {
        assert!(self.instances.len() <= self.cfg.instance_window + 1);
        if let Some((&first, _)) = self.instances.first_key_value() {
            assert!(
                first > self.last_decided,
                "open instance at or below last decided"
            );
        }
        assert!(self.next_proposal > self.last_decided);
        assert!(self.pending.len() <= self.cfg.pending_requests_max);
        assert!(self.pending.unproposed() <= self.pending.len());
        if cfg!(debug_assertions) {
            self.pending.check();
        }
        assert!(self.stop_sent >= self.regency);
        assert!(self.stopdata.len() <= self.cfg.n);
        assert!(self.late_accepts.len() <= self.cfg.instance_window);
        assert!(self.accepts_owed.len() <= 2 * self.cfg.instance_window + 2);
        assert!(self.fetching.len() <= self.cfg.instance_window + 1);
        assert!(self.pending_sync_values.len() <= self.cfg.instance_window);
        assert!(self.log.len() <= self.cfg.decision_log_max());
        assert!(self.leader_lag.early.len() <= self.cfg.instance_window);
        assert!(
            self.leader_lag.waiting.len()
                <= self.cfg.instance_window * (self.cfg.leader_lag_max_ticks as usize + 1)
        );
    }
}
