//! One simulated replica: the real `control::Replica` and `kv::Store`,
//! wired as the bftd process wires them (control loop, executor, proxy),
//! over the fake network and disk, with its [`Middleware`] at the edge.
//!
//! The core's [`Output`]s are carried out by `node::carry_out`, the same
//! code the bftd control thread runs; this host is its network, disk and
//! executor ([`SimIo`]).
//!
//! Durability follows `crates/storage`'s contract through [`Disk`], which
//! keeps the real `storage::Record`s: proposals and regencies are durable
//! before the core acts on them, decisions and checkpoints are written as
//! they happen; a crash loses what is not yet durable, and
//! [`Host::restart`] rebuilds the replica with `node::restore`, the
//! production restart path (checkpoint, decisions replayed, votes of open
//! instances recovered).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use control::checkpoint::Prepared;
use control::{ClientTable, Config, Decision, Output, Replica, Target};
use kv::Command;
use node::DiskJob;
use wire::{
    CheckpointInfo, ClientId, Keyring, Limits, Message, Regency, ReplicaId, Request, Signature,
    Signer, Verified, Verifier,
};

use crate::byzantine::{Behavior, ByzStats, Cx, Emit, Honest, Middleware};
use crate::diagnosis::Watch;
use crate::disk::Disk;
use crate::network::Packet;
use crate::rng::Prng;
use crate::trace::{describe, message_words};
use crate::workload::OpId;
use crate::world::Env;

/// Most commands decoded from one request (as the real executor bounds it).
pub const COMMANDS_PER_REQUEST_MAX: usize = 64;
/// The caller of an operation no simulated client made (the lease a run
/// with [`Behavior::EarlyLeaseExpiry`] sets up, the lying votes): its
/// result is not reported to the history.
pub const NO_CALLER: (usize, OpId) = (usize::MAX, OpId::MAX);

/// Capacity of each verifier's cache of verified request digests.
const VERIFIER_CACHE: usize = 1024;

/// The replica as the proxy of its etcd clients: queues their operations,
/// bundles them into signed requests, keeps the callers until the executor
/// answers.
#[derive(Debug)]
pub struct Proxy {
    /// (client index, op id, command) waiting for a window slot.
    queue: VecDeque<(usize, OpId, Command)>,
    /// Outstanding requests by seq: the callers, in command order
    /// (`node::proxy`, shared with bftd's proxy; time in ticks).
    outstanding: node::proxy::Outstanding<Vec<(usize, OpId)>>,
    /// The seq of the next request.
    pub next_seq: u64,
    bundle_ops_max: usize,
}

impl Proxy {
    fn new(window: usize, bundle_ops_max: usize) -> Self {
        assert!(window >= 1 && window as u64 <= control::clients::WINDOW);
        Self {
            queue: VecDeque::new(),
            outstanding: node::proxy::Outstanding::new(window),
            next_seq: 1,
            bundle_ops_max,
        }
    }

    /// Requests sent and not yet executed here.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Every caller waiting (queued or in a request), emptied.
    fn drain_callers(&mut self) -> Vec<(usize, OpId)> {
        let mut all: Vec<(usize, OpId)> = self.queue.drain(..).map(|(c, o, _)| (c, o)).collect();
        for callers in self.outstanding.drain() {
            all.extend(callers);
        }
        all.retain(|c| *c != NO_CALLER);
        all
    }
}

/// Counters of one host.
#[derive(Debug, Default, Clone)]
pub struct HostStats {
    /// Messages the verifier refused, by reason label.
    pub refused: BTreeMap<&'static str, u64>,
    /// Messages the verifier accepted.
    pub accepted: u64,
    /// Requests the proxy sent.
    pub requests_sent: u64,
    /// Overdue requests the proxy sent again.
    pub requests_resent: u64,
    /// Times the replica crashed.
    pub crashes: u64,
    /// Checkpoints taken after a decision.
    pub checkpoints_taken: u64,
    /// Checkpoints installed by state transfer.
    pub checkpoints_installed: u64,
    /// Decisions re-executed from the durable log at restarts.
    pub recovered_decisions: u64,
    /// Restarts that began from a durable checkpoint.
    pub recovered_from_checkpoint: u64,
    /// Votes of open instances recovered from the durable log at restarts.
    pub recovered_votes: u64,
    /// Client operations whose outcome this replica cannot report: their
    /// requests executed in cids a checkpoint installation skipped.
    pub ops_indeterminate: u64,
    /// Regencies entered.
    pub regencies: u64,
    /// Messages a Byzantine middleware emitted that no longer decoded.
    pub undecodable: u64,
}

/// One replica of the simulated cluster.
pub struct Host {
    /// This replica.
    pub id: ReplicaId,
    /// `Some` for a Byzantine replica.
    pub behavior: Option<Behavior>,
    cfg: Config,
    /// The real consensus core.
    pub core: Box<Replica>,
    /// Stands in for `core` while `node::carry_out` borrows it (never used).
    spare: Option<Box<Replica>>,
    /// What the middleware sees of the core (refreshed before it acts).
    view: View,
    /// Checkpoints the executor took during the current carry-out, reported
    /// to the core after it (as bftd's executor reports them).
    taken: Vec<Prepared>,
    /// The real kv store (decided state).
    pub store: kv::Store,
    signer: Signer,
    keyring: Arc<Keyring>,
    verifier: Verifier,
    /// The write-ahead log: writes in flight and what is durable.
    pub disk: Disk,
    /// The proxy of this replica's clients.
    pub proxy: Proxy,
    middleware: Box<dyn Middleware>,
    byz_rng: Prng,
    /// What the middleware did (zero for correct replicas).
    pub byz_stats: ByzStats,
    /// False while crashed.
    pub up: bool,
    /// Counters.
    pub stats: HostStats,
    /// What the core asked the network for lately.
    pub watch: Watch,
    /// Lease epochs this replica voted expired ([`Behavior::EarlyLeaseExpiry`]).
    lease_votes: BTreeSet<(i64, u64)>,
}

impl Host {
    /// A fresh replica.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: Config,
        signer: Signer,
        keyring: Arc<Keyring>,
        disk: Disk,
        behavior: Option<Behavior>,
        byz_rng: Prng,
        proxy_window: usize,
        bundle_ops_max: usize,
    ) -> Self {
        let middleware = behavior.map_or_else(
            || Box::new(Honest) as Box<dyn Middleware>,
            |b| b.middleware(),
        );
        let core = Box::new(Replica::start(cfg.clone()));
        Self {
            id: cfg.me,
            behavior,
            view: View::of(&core),
            core,
            spare: Some(Box::new(Replica::start(cfg.clone()))),
            taken: Vec::new(),
            store: {
                let mut s = kv::Store::new();
                s.set_lease_votes_needed(node::restore::lease_votes_needed(&cfg));
                s
            },
            cfg,
            signer,
            verifier: Verifier::new(keyring.clone(), VERIFIER_CACHE),
            keyring,
            disk,
            proxy: Proxy::new(proxy_window, bundle_ops_max),
            middleware,
            byz_rng,
            byz_stats: ByzStats::default(),
            up: true,
            stats: HostStats::default(),
            watch: Watch::default(),
            lease_votes: BTreeSet::new(),
        }
    }

    /// True unless Byzantine.
    pub fn is_correct(&self) -> bool {
        self.behavior.is_none()
    }

    /// A client's operation arrives at this replica's proxy.
    pub fn submit(&mut self, client: usize, op: OpId, command: Command) {
        assert!(self.up);
        self.proxy.queue.push_back((client, op, command));
    }

    /// Sends queued operations as requests while the window has room.
    pub fn flush_proxy(&mut self, env: &mut Env) {
        while !self.proxy.queue.is_empty() && !self.proxy.outstanding.is_full() {
            let take = self.proxy.bundle_ops_max.min(self.proxy.queue.len());
            let items: Vec<_> = self.proxy.queue.drain(..take).collect();
            let commands: Vec<Command> = items.iter().map(|(_, _, c)| c.clone()).collect();
            let seq = self.proxy.next_seq;
            self.proxy.next_seq += 1;
            let callers = items.iter().map(|(c, o, _)| (*c, *o)).collect();
            let payload = kv::command::encode_batch(&commands);
            let request = Request::new(
                ClientId::of_replica(self.id),
                seq,
                payload,
                Signature::PENDING,
            );
            let signed = self.signer.sign_request(request);
            self.proxy
                .outstanding
                .insert(seq, callers, signed.clone(), env.now);
            self.stats.requests_sent += 1;
            self.send_own_request(env, signed);
        }
    }

    /// A request of this replica's proxy: to every other replica, and to
    /// its own core (as bftd's control thread handles a proxy request).
    fn send_own_request(&mut self, env: &mut Env, signed: Verified<Request>) {
        let msg = Message::Request(signed.get().clone());
        self.view = View::of(&self.core);
        for to in self.others() {
            self.emit(env, to, msg.clone());
        }
        let mut out = Vec::new();
        self.core.on_request(signed, &mut out);
        self.carry_out(env, &mut out);
    }

    fn others(&self) -> impl Iterator<Item = ReplicaId> {
        let me = self.id;
        (0..self.cfg.n as u16)
            .map(ReplicaId)
            .filter(move |r| *r != me)
    }

    /// The middleware's context, from disjoint borrows of the host.
    fn cx<'a>(
        now: u64,
        core: &View,
        cluster_id: u64,
        signer: &'a Signer,
        rng: &'a mut Prng,
        board: &'a mut crate::byzantine::Collusion,
        stats: &'a mut ByzStats,
    ) -> Cx<'a> {
        Cx {
            now,
            me: core.me,
            n: core.n,
            f: core.f,
            cluster_id,
            leader: core.leader,
            regency: core.regency,
            last_decided: core.last_decided,
            signer,
            rng,
            board,
            stats,
        }
    }

    /// A signed message to another replica, through the middleware.
    fn emit(&mut self, env: &mut Env, to: ReplicaId, msg: Message) {
        let mut emits: Vec<Emit> = Vec::with_capacity(1);
        let mut cx = Self::cx(
            env.now,
            &self.view,
            self.keyring.cluster_id(),
            &self.signer,
            &mut self.byz_rng,
            &mut env.board,
            &mut self.byz_stats,
        );
        self.middleware.outgoing(&mut cx, to, msg, &mut emits);
        self.put_on_wire(env, emits);
    }

    /// Sends what a middleware emitted. What a Byzantine replica sends
    /// goes through the wire encoding, as on a real link: the receiver
    /// decodes it (with its decode-time checks) before verification, and
    /// bytes that do not decode never reach it.
    fn put_on_wire(&mut self, env: &mut Env, emits: Vec<Emit>) {
        for e in emits {
            if e.to == self.id {
                continue; // a middleware cannot reach its own core by the network
            }
            if e.to.index() >= self.cfg.n {
                // A Byzantine middleware answering a forged field (e.g. a
                // SNAPSHOT_REQUEST naming replica 8192): no such link.
                self.stats.undecodable += 1;
                continue;
            }
            let msg = if self.behavior.is_some() {
                match Message::decode(&e.msg.encode(), &Limits::default()) {
                    Ok(m) => m,
                    Err(_) => {
                        self.stats.undecodable += 1;
                        continue;
                    }
                }
            } else {
                e.msg
            };
            env.net.send(
                env.now,
                self.id,
                e.to,
                msg,
                e.extra_delay_ticks,
                &mut env.trace,
            );
        }
    }

    /// Carries out the core's outputs until none are left
    /// (`node::carry_out`, as the bftd control thread), then reports the
    /// checkpoints taken meanwhile to the core.
    pub fn carry_out(&mut self, env: &mut Env, out: &mut Vec<Output>) {
        let spare = self.spare.take().expect("carry_out is not re-entered");
        let mut core = std::mem::replace(&mut self.core, spare);
        let (mut work, mut own) = (Vec::new(), VecDeque::new());
        let done = node::carry_out(
            &mut core,
            &mut SimIo { host: self, env },
            out,
            &mut work,
            &mut own,
        );
        match done {
            Ok(()) => {}
            Err(never) => match never {},
        }
        for p in self.taken.drain(..) {
            core.on_checkpoint(p);
        }
        self.spare = Some(std::mem::replace(&mut self.core, core));
        self.view = View::of(&self.core);
    }

    /// Messages arriving this tick: middleware, batch verification, core.
    pub fn receive(&mut self, env: &mut Env, packets: Vec<Packet>) {
        self.view = View::of(&self.core);
        let mut items = Vec::with_capacity(packets.len());
        let mut emits = Vec::new();
        for p in packets {
            let mut cx = Self::cx(
                env.now,
                &self.view,
                self.keyring.cluster_id(),
                &self.signer,
                &mut self.byz_rng,
                &mut env.board,
                &mut self.byz_stats,
            );
            if let Some(m) = self.middleware.incoming(&mut cx, p.from, p.msg, &mut emits) {
                items.push((p.from, m));
            }
        }
        self.put_on_wire(env, emits);
        let labels: Vec<(ReplicaId, (u64, u64, u64))> =
            items.iter().map(|(f, m)| (*f, message_words(m))).collect();
        let results = self.verifier.verify_batch(items);
        let mut out = Vec::new();
        for ((from, (k, a, b)), res) in labels.into_iter().zip(results) {
            let me = self.id;
            match res {
                Ok(v) => {
                    self.stats.accepted += 1;
                    env.trace.event(
                        env.now,
                        b'r',
                        &[me.0 as u64, from.0 as u64, k, a, b],
                        || format!("recv {from:?}->{me:?} {}", describe(v.get())),
                    );
                    self.core.on_message(v, &mut out);
                    self.carry_out(env, &mut out);
                }
                Err(e) => {
                    *self.stats.refused.entry(e.label()).or_default() += 1;
                    env.trace.event(
                        env.now,
                        b'v',
                        &[me.0 as u64, from.0 as u64, k, a, b],
                        || format!("REFUSED {from:?}->{me:?} kind={k} cid/client={a}: {e}"),
                    );
                }
            }
        }
    }

    /// Acknowledges the proposals and regencies durable now (and carries
    /// out what they cause).
    pub fn disk_step(&mut self, env: &mut Env) {
        let mut out = Vec::new();
        for ack in self.disk.pop_due(env.now) {
            let me = self.id;
            let (what, x) = match ack {
                node::Ack::Proposal(cid, _) => ("proposal cid", cid),
                node::Ack::Regency(r) => ("regency", r as u64),
                node::Ack::Accept(_, cid, _) => ("accept cid", cid),
            };
            env.trace.event(env.now, b'p', &[me.0 as u64, x], || {
                format!("{me:?} persisted {what}={x}")
            });
            ack.apply(&mut self.core, &mut out);
            self.carry_out(env, &mut out);
        }
    }

    /// One tick of the replica's clock.
    pub fn tick(&mut self, env: &mut Env) {
        // Overdue own requests go to every replica again (as bftd's
        // control thread does on its tick).
        let retry = 2 * self.cfg.request_timeout_ticks;
        for signed in self.proxy.outstanding.overdue(env.now, retry) {
            self.stats.requests_resent += 1;
            self.send_own_request(env, signed);
        }
        if self.behavior == Some(Behavior::EarlyLeaseExpiry) && self.up {
            self.vote_leases_expired();
        }
        let mut out = Vec::new();
        self.core.on_tick(&mut out);
        self.carry_out(env, &mut out);
    }

    /// [`Behavior::EarlyLeaseExpiry`]: votes that every lease it knows
    /// expired, once per lease epoch, as soon as it sees the epoch.
    fn vote_leases_expired(&mut self) {
        let due: Vec<kv::pb::bftdkv::LeaseEpoch> = self
            .store
            .leases()
            .into_iter()
            .filter(|l| self.lease_votes.insert((l.id, l.epoch)))
            .map(|l| kv::pb::bftdkv::LeaseEpoch {
                id: l.id,
                epoch: l.epoch,
            })
            .collect();
        if !due.is_empty() {
            self.byz_stats.lease_votes += due.len() as u64;
            let vote = kv::pb::bftdkv::LeaseExpire { leases: due };
            self.proxy
                .queue
                .push_back((NO_CALLER.0, NO_CALLER.1, vote.into()));
        }
    }

    /// Queues an operation no simulated client made (see [`NO_CALLER`]).
    pub fn submit_uncalled(&mut self, command: Command) {
        assert!(self.up);
        self.proxy
            .queue
            .push_back((NO_CALLER.0, NO_CALLER.1, command));
    }

    /// The executor: applies a decision to the kv store, as bftd's
    /// executor does (writes everywhere, reads only at the origin replica),
    /// answers this replica's clients, takes the checkpoint the decision
    /// asks for, and reports to the checker.
    fn execute(&mut self, env: &mut Env, core: &Replica, d: Decision) {
        let me = ClientId::of_replica(self.id);
        for r in d.fresh_requests() {
            let own = r.client == me;
            let callers = if own {
                self.proxy.outstanding.take(r.seq)
            } else {
                None
            };
            let results = node::execute_request(&mut self.store, r, own, COMMANDS_PER_REQUEST_MAX);
            match (callers, results) {
                (Some(callers), Ok(results)) => {
                    assert_eq!(
                        callers.len(),
                        results.len(),
                        "one result per bundled operation"
                    );
                    for (caller, res) in callers.into_iter().zip(results) {
                        if caller != NO_CALLER {
                            env.complete(caller.1, res);
                        }
                    }
                }
                (callers, Err(e)) => {
                    env.trace.note(env.now, || {
                        format!("undecodable request {:?}#{}: {e}", r.client, r.seq)
                    });
                    assert!(callers.is_none(), "our own proxy's request did not decode");
                }
                (None, Ok(_)) => {}
            }
        }
        let state = self.store.state_digest();
        let id = self.id;
        env.trace.event(
            env.now,
            b'd',
            &[id.0 as u64, d.cid, d.fresh.len() as u64],
            || {
                format!(
                    "{id:?} DELIVER cid={} r{} {:?} fresh={} state={state:?}",
                    d.cid,
                    d.regency,
                    d.batch.digest(),
                    d.fresh.len()
                )
            },
        );
        env.checker.on_deliver(env.now, self.id, &d, state);
        assert!(
            core.last_decided() >= d.cid,
            "the core delivers only decided cids"
        );
        if let Some(clients) = &d.checkpoint {
            self.take_checkpoint(env, &d, clients);
        }
    }

    /// A checkpoint after `d` (`node::take_checkpoint`, as bftd's
    /// executor): the blob to the disk, the prepared checkpoint to the core
    /// once the carry-out is done.
    fn take_checkpoint(&mut self, env: &mut Env, d: &Decision, clients: &ClientTable) {
        let p = node::take_checkpoint(
            &self.store.snapshot(),
            d,
            clients,
            self.cfg.snapshot_chunk_bytes,
        );
        let info = p.info;
        self.disk.write(
            env.now,
            DiskJob::Checkpoint {
                cid: info.cid,
                blob: p.blob.clone(),
            },
        );
        self.taken.push(p);
        self.stats.checkpoints_taken += 1;
        env.checker.on_checkpoint(self.id, info.cid, info.digest);
        let id = self.id;
        env.trace
            .event(env.now, b'k', &[id.0 as u64, info.cid], || {
                format!(
                    "{id:?} CHECKPOINT cid={} {:?} {} bytes",
                    info.cid, info.digest, info.len
                )
            });
    }

    fn on_regency(&mut self, env: &mut Env, regency: wire::Regency, leader: ReplicaId) {
        self.stats.regencies += 1;
        env.checker.on_regency(env.now, self.id, regency, leader);
        let id = self.id;
        env.trace
            .event(env.now, b'g', &[id.0 as u64, regency as u64], || {
                format!("{id:?} REGENCY {regency} leader {leader:?}")
            });
    }

    /// State transfer brought a checkpoint: the kv store becomes its
    /// application state; it is stored as the newest checkpoint. Own
    /// requests executed in the cids it skips never get a Deliver here:
    /// their callers cannot be told the outcome (as an etcd client whose
    /// connection broke), so they are abandoned.
    fn install(&mut self, env: &mut Env, info: CheckpointInfo, app: &[u8], clients: &ClientTable) {
        self.store = match kv::Store::restore(app) {
            Ok(mut s) => {
                s.set_lease_votes_needed(node::restore::lease_votes_needed(&self.cfg));
                s
            }
            Err(e) => panic!(
                "{:?}: control installed checkpoint {} whose kv state does not decode: {e}",
                self.id, info.cid
            ),
        };
        self.stats.checkpoints_installed += 1;
        let state = self.store.state_digest();
        env.checker.on_install(env.now, self.id, info.cid, state);
        let me = ClientId::of_replica(self.id);
        let skipped = self
            .proxy
            .outstanding
            .take_executed(|seq| clients.is_executed(me, seq));
        for (_, callers) in skipped {
            for (client, op) in callers {
                self.stats.ops_indeterminate += 1;
                env.abandon(client, op);
            }
        }
        let id = self.id;
        env.trace
            .event(env.now, b'I', &[id.0 as u64, info.cid], || {
                format!(
                    "{id:?} INSTALL checkpoint cid={} {:?} state={state:?}",
                    info.cid, info.digest
                )
            });
    }

    /// Crashes the replica: in-memory consensus state and writes not yet
    /// durable are lost, waiting callers never hear back.
    pub fn crash(&mut self, env: &mut Env) {
        assert!(self.up);
        self.up = false;
        self.stats.crashes += 1;
        self.disk.crash();
        for (client, op) in self.proxy.drain_callers() {
            env.abandon(client, op);
        }
        let id = self.id;
        env.trace
            .event(env.now, b'c', &[id.0 as u64], || format!("{id:?} CRASH"));
    }

    /// Restarts from the durable log through `node::restore` (the bftd
    /// restart path): the newest durable checkpoint, the durable decisions
    /// after it re-executed, the votes of open instances given back to the
    /// core; then the core catches up by state transfer. (The proxy keeps
    /// its next request seq: a restarted proxy must not reuse seqs.)
    pub fn restart(&mut self, env: &mut Env) {
        assert!(!self.up);
        let rec = self.disk.durable.recover();
        let regency = rec.regency;
        let r = node::restore(
            self.cfg.clone(),
            rec,
            &Limits::default(),
            COMMANDS_PER_REQUEST_MAX,
        )
        .unwrap_or_else(|e| panic!("{:?}: the simulated disk does not restore: {e}", self.id));
        if r.checkpoint_cid.is_some() {
            self.stats.recovered_from_checkpoint += 1;
        }
        self.stats.recovered_decisions += r.replayed;
        self.stats.recovered_votes += r.votes;
        let last = r.core.last_decided();
        let regency = regency.max(r.core.regency());
        self.core = Box::new(r.core);
        self.store = r.store;
        self.verifier = Verifier::new(self.keyring.clone(), VERIFIER_CACHE);
        self.up = true;
        let state = self.store.state_digest();
        env.checker
            .on_restart(env.now, self.id, last, state, regency);
        let id = self.id;
        env.trace
            .event(env.now, b'R', &[id.0 as u64, last, regency as u64], || {
                format!("{id:?} RESTART at cid {last} regency {regency} state={state:?}")
            });
        // Ask the others whether it missed anything while down.
        let mut out = Vec::new();
        self.core.catch_up(&mut out);
        self.carry_out(env, &mut out);
    }
}

/// What a middleware sees of its replica's core.
#[derive(Debug, Clone, Copy)]
struct View {
    me: ReplicaId,
    n: usize,
    f: usize,
    leader: ReplicaId,
    regency: Regency,
    last_decided: wire::Cid,
}

impl View {
    fn of(core: &Replica) -> Self {
        Self {
            me: core.id(),
            n: core.config().n,
            f: core.config().f(),
            leader: core.leader(),
            regency: core.regency(),
            last_decided: core.last_decided(),
        }
    }
}

/// The simulated network, disk and executor of one host, as
/// `node::carry_out` sees them.
pub struct SimIo<'a> {
    host: &'a mut Host,
    env: &'a mut Env,
}

impl node::Host for SimIo<'_> {
    type Error = std::convert::Infallible;

    fn send(
        &mut self,
        core: &Replica,
        to: Target,
        msg: Message,
    ) -> Result<Option<Verified<Message>>, Self::Error> {
        let h = &mut *self.host;
        h.view = View::of(core);
        h.watch.on_send(self.env.now, &msg);
        let signed = h.signer.sign(msg);
        Ok(match to {
            Target::All => {
                for r in h.others().collect::<Vec<_>>() {
                    h.emit(self.env, r, signed.get().clone());
                }
                Some(signed)
            }
            Target::One(r) if r == h.id => Some(signed),
            Target::One(r) => {
                h.emit(self.env, r, signed.into_inner());
                None
            }
        })
    }

    fn write(&mut self, _: &Replica, job: DiskJob) -> Result<bool, Self::Error> {
        self.host.disk.write(self.env.now, job);
        Ok(false)
    }

    fn deliver(&mut self, core: &Replica, d: Decision) -> Result<(), Self::Error> {
        self.host.execute(self.env, core, d);
        Ok(())
    }

    fn install(
        &mut self,
        _: &Replica,
        info: CheckpointInfo,
        app: Vec<u8>,
        clients: ClientTable,
    ) -> Result<(), Self::Error> {
        self.host.install(self.env, info, &app, &clients);
        Ok(())
    }

    fn regency(
        &mut self,
        _: &Replica,
        regency: Regency,
        leader: ReplicaId,
    ) -> Result<(), Self::Error> {
        self.host.on_regency(self.env, regency, leader);
        Ok(())
    }
}
