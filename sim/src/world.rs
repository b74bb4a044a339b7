//! The simulated world: n hosts, the network, the clients, the clock, the
//! checkers; [`World::run`] plays a safety phase (faults on) and then a
//! liveness phase (faults healed) and returns a [`Report`].
//!
//! One tick, in order:
//! 1. phase change (heal), scheduled crashes and restarts;
//! 2. clients call (safety phase only) and proxies send requests;
//! 3. the network delivers what is due, per receiver, batch-verified;
//! 4. disks acknowledge what is due;
//! 5. every replica's `on_tick`.

use std::collections::BTreeMap;
use std::sync::Arc;

use wire::{Keyring, ReplicaId, SecretKey, Signer};

use crate::byzantine::{Behavior, ByzStats, Collusion, FORGED_KEY_PREFIX};
use crate::checkers::{Check, Checker, Violation};
use crate::diagnosis::{Cause, Watch};
use crate::disk::Disk;
use crate::history::History;
use crate::host::Host;
use crate::linearizability;
use crate::network::{NetStats, Network};
use crate::params::{Options, Params, Profile};
use crate::rng::Prng;
use crate::trace::Trace;
use crate::workload::{Client, OpId};

/// Everything the hosts share: time, network, trace, clients and history,
/// checkers, the colluders' board.
pub struct Env {
    /// The current tick.
    pub now: u64,
    /// The run's parameters.
    pub params: Params,
    /// Packets in flight.
    pub net: Network,
    /// Trace hash and log.
    pub trace: Trace,
    /// Client calls and returns.
    pub history: History,
    /// The simulated etcd clients.
    pub clients: Vec<Client>,
    /// Agreement/state checker fed by every delivery.
    pub checker: Checker,
    /// Shared by the Byzantine replicas.
    pub board: Collusion,
}

impl Env {
    /// Operation `op` returned `result` at its replica.
    pub fn complete(&mut self, op: OpId, result: Result<kv::Response, kv::KvError>) {
        let o = &self.history.ops[op as usize];
        let (kind, client) = (o.op, o.client);
        let out = kind.output(result);
        self.trace.event(self.now, b'o', &[op as u64], || {
            format!("client c{client} op #{op} {kind:?} -> {out:?}")
        });
        self.clients[client].complete(&kind, &out, self.now, &self.params.workload);
        assert_eq!(self.clients[client].busy, None);
        self.history.ret(self.now, op, out);
    }

    /// Operation `op`'s replica crashed; it never returns.
    pub fn abandon(&mut self, client: usize, op: OpId) {
        self.history.abandon(op);
        self.clients[client].abandon(self.now);
    }
}

/// The lease a run with a [`Behavior::EarlyLeaseExpiry`] replica grants.
pub const SIM_LEASE_ID: i64 = 7_000_001;
/// The key put with [`SIM_LEASE_ID`].
pub const SIM_LEASE_KEY: &[u8] = b"lease/held";
/// When that lease is set up, tick.
const LEASE_SETUP_TICK: u64 = 1;

/// Totals of a run.
#[derive(Debug, Default, Clone)]
pub struct RunStats {
    /// Ticks run.
    pub ticks: u64,
    /// Live correct replicas holding lease [`SIM_LEASE_ID`] at the end.
    pub lease_holders: usize,
    /// Highest cid decided at a correct replica.
    pub decisions: u64,
    /// Client operations called.
    pub ops_called: usize,
    /// Client operations that returned.
    pub ops_completed: usize,
    /// Client operations still owed a return at the end (not abandoned).
    pub ops_outstanding: usize,
    /// Ticks from call to return of the operations that returned: the
    /// median and the largest (0 when none returned). Read off the
    /// history; changes nothing in a run.
    pub op_latency_ticks_p50: u64,
    /// See `op_latency_ticks_p50`.
    pub op_latency_ticks_max: u64,
    /// Network counters.
    pub net: NetStats,
    /// Messages refused by correct replicas' verifiers, by reason.
    pub refused: BTreeMap<&'static str, u64>,
    /// What the Byzantine replicas did, summed.
    pub byzantine: ByzStats,
    /// Keys whose linearizability search hit its bound.
    pub lin_inconclusive_keys: u32,
    /// Highest regency a correct replica entered.
    pub regency_max: u32,
    /// SYNCs applied by correct replicas.
    pub syncs_applied: u64,
    /// Checkpoints taken by correct replicas.
    pub checkpoints_taken: u64,
    /// State transfers started by correct replicas.
    pub transfers_started: u64,
    /// Decisions correct replicas got by state transfer.
    pub transfer_decisions: u64,
    /// Checkpoints correct replicas installed by state transfer.
    pub checkpoints_installed: u64,
    /// Fetched checkpoints that did not match their trusted digest.
    pub bad_checkpoints: u64,
    /// Restarts, and decisions re-executed from the durable log by them.
    pub restarts: u64,
    /// See `restarts`.
    pub recovered_decisions: u64,
    /// Client operations abandoned because a checkpoint installation
    /// skipped the cid that executed them.
    pub ops_indeterminate: u64,
    /// Checkpoint cids at which correct replicas' blob digests differ.
    pub checkpoint_splits: usize,
    /// Events in the trace hash.
    pub trace_events: u64,
}

/// The outcome of one seed.
#[derive(Debug, Clone)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The options it ran with (for the replay command).
    pub options: Options,
    /// One line of drawn parameters.
    pub summary: String,
    /// Hash of every event: equal for equal runs.
    pub trace_hash: String,
    /// Everything the checkers found.
    pub violations: Vec<Violation>,
    /// Gaps of control this run's faults can hit ([`Params::known_gaps`]).
    pub known_gaps: Vec<&'static str>,
    /// Why the run did not finish in time, if it did not
    /// ([`crate::diagnosis`]).
    pub causes: Vec<Cause>,
    /// Totals.
    pub stats: RunStats,
}

impl Report {
    /// A liveness violation whose diagnosed causes are all known, open
    /// control bugs or gaps ([`crate::diagnosis::OPEN`]) is expected.
    /// Nothing else is.
    pub fn is_expected(&self, v: &Violation) -> bool {
        v.check == Check::Liveness
            && !self.causes.is_empty()
            && self.causes.iter().all(Cause::is_open)
    }

    /// Violations that are not expected.
    pub fn unexpected(&self) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(|v| !self.is_expected(v))
    }

    /// True if the run broke nothing it should not have.
    pub fn passed(&self) -> bool {
        self.unexpected().next().is_none()
    }

    /// The command that replays this seed exactly.
    pub fn replay_command(&self) -> String {
        replay_command(self.seed, &self.options)
    }
}

/// The command that replays `seed` under `opts`, verbose.
pub fn replay_command(seed: u64, opts: &Options) -> String {
    let mut cmd = format!("cargo run -p sim --release -- --seed {seed} --verbose");
    if opts.profile == Profile::Full {
        cmd.push_str(" --profile full");
    }
    if opts.ops_per_client_max != Options::default().ops_per_client_max {
        cmd.push_str(&format!(" --ops {}", opts.ops_per_client_max));
    }
    if let Some(t) = opts.max_ticks {
        cmd.push_str(&format!(" --max-ticks {t}"));
    }
    cmd
}

/// The deterministic key of replica `i` in the run `seed`.
pub fn replica_key(seed: u64, i: u16) -> SecretKey {
    let mut h = blake3::Hasher::new();
    h.update(b"bftd-sim replica key")
        .update(&seed.to_le_bytes())
        .update(&i.to_le_bytes());
    SecretKey::from_seed(*h.finalize().as_bytes())
}

/// A simulated cluster.
pub struct World {
    /// The replicas, by id.
    pub hosts: Vec<Host>,
    /// Everything else.
    pub env: Env,
    options: Options,
    healed: bool,
}

impl World {
    /// Builds the cluster `params` describes.
    pub fn new(params: Params, options: Options) -> Self {
        params.validate();
        let seed = params.seed;
        let n = params.n;
        let cluster_id = Prng::fork(seed, "cluster", 0).u64();
        let keys: Vec<SecretKey> = (0..n as u16).map(|i| replica_key(seed, i)).collect();
        let keyring = Arc::new(Keyring::new(
            cluster_id,
            keys.iter().map(|k| k.public()).collect(),
            std::collections::HashMap::new(),
        ));
        let hosts: Vec<Host> = (0..n as u16)
            .map(|i| {
                let me = ReplicaId(i);
                let cfg = params.control.config(n, me);
                cfg.validate().expect("drawn control config is valid");
                Host::new(
                    cfg,
                    Signer::new(cluster_id, me, keys[i as usize].clone()),
                    keyring.clone(),
                    Disk::new(
                        params.disk.ack_delay_max_ticks,
                        Prng::fork(seed, "disk", i as u64),
                    ),
                    params.behavior_of(me),
                    Prng::fork(seed, "byzantine", i as u64),
                    params.workload.proxy_window,
                    params.workload.bundle_ops_max,
                )
            })
            .collect();
        // Correct replicas host clients; Byzantine ones are attackers only.
        let mut clients = Vec::new();
        for h in hosts.iter().filter(|h| h.is_correct()) {
            for _ in 0..params.workload.clients_per_replica {
                let index = clients.len();
                clients.push(Client::new(
                    index,
                    h.id,
                    params.workload.ops_per_client,
                    Prng::fork(seed, "client", index as u64),
                ));
            }
        }
        let correct: Vec<bool> = hosts.iter().map(|h| h.is_correct()).collect();
        let mut board = Collusion::default();
        let mut correct_ids: Vec<ReplicaId> = hosts
            .iter()
            .filter(|h| h.is_correct())
            .map(|h| h.id)
            .collect();
        let mut rng = Prng::fork(seed, "collusion", 0);
        rng.shuffle(&mut correct_ids);
        let b_len = rng.range(1, correct_ids.len() as u64 - 1) as usize;
        board.b_side = correct_ids[..b_len].to_vec();
        board.b_side.sort();
        board.handoff = params
            .byzantine
            .iter()
            .filter(|(_, b)| *b == Behavior::LeaderHandoff)
            .map(|(r, _)| *r)
            .collect();
        board.handoff.sort();

        let mut trace = Trace::new(options.verbose);
        trace.note(0, || format!("seed {seed}: {}", params.summary()));
        let env = Env {
            now: 0,
            net: Network::new(params.network.clone(), Prng::fork(seed, "network", 0)),
            trace,
            history: History::new(),
            clients,
            checker: Checker::new(keyring, correct),
            board,
            params,
        };
        Self {
            hosts,
            env,
            options,
            healed: false,
        }
    }

    /// Runs one tick.
    pub fn step(&mut self) {
        let now = self.env.now;
        let p = &self.env.params;
        if !self.healed && now >= p.safety_ticks {
            self.heal();
        }
        let crashes: Vec<(usize, bool)> = self
            .env
            .params
            .crashes
            .iter()
            .filter_map(|c| {
                if c.crash_tick == now {
                    Some((c.replica.index(), true))
                } else if c.restart_tick == now {
                    Some((c.replica.index(), false))
                } else {
                    None
                }
            })
            .collect();
        for (i, crash) in crashes {
            if crash && self.hosts[i].up {
                self.hosts[i].crash(&mut self.env);
            } else if !crash && !self.hosts[i].up {
                self.hosts[i].restart(&mut self.env);
            }
        }
        if now == LEASE_SETUP_TICK {
            self.set_up_lease();
        }
        if !self.healed {
            self.clients_call();
        }
        for h in &mut self.hosts {
            if h.up {
                h.flush_proxy(&mut self.env);
            }
        }
        let mut inbox: Vec<Vec<crate::network::Packet>> = vec![Vec::new(); self.hosts.len()];
        for pkt in self.env.net.take_due(now, &mut self.env.trace) {
            inbox[pkt.to.index()].push(pkt);
        }
        for (h, packets) in self.hosts.iter_mut().zip(inbox) {
            if h.up {
                h.receive(&mut self.env, packets);
            } else if !packets.is_empty() {
                let id = h.id;
                let count = packets.len() as u64;
                self.env.trace.event(now, b'X', &[id.0 as u64, count], || {
                    format!("{id:?} down: {count} packets lost")
                });
            }
        }
        for h in &mut self.hosts {
            if h.up {
                h.disk_step(&mut self.env);
            }
        }
        for h in &mut self.hosts {
            if h.up {
                h.tick(&mut self.env);
            }
        }
        self.env.now += 1;
    }

    fn clients_call(&mut self) {
        let now = self.env.now;
        for c in 0..self.env.clients.len() {
            let r = self.env.clients[c].replica;
            if !self.env.clients[c].ready(now) || !self.hosts[r.index()].up {
                continue;
            }
            let id = self.env.history.next_id();
            let op = self.env.clients[c].next_op(&self.env.params.workload, id);
            let got = self.env.history.call(now, c, r, op);
            assert_eq!(got, id);
            self.env.trace.event(now, b'i', &[id as u64, c as u64], || {
                format!("client c{c} at {r:?} calls #{id} {op:?}")
            });
            if self.env.params.workload.serializable_reads && !op.writes() {
                let result = self.hosts[r.index()].store.execute_read_only(&op.command());
                self.env.complete(id, result);
                continue;
            }
            self.hosts[r.index()].submit(c, id, op.command());
        }
    }

    /// Ends the safety phase: the network heals, crashed replicas restart.
    fn heal(&mut self) {
        self.healed = true;
        let now = self.env.now;
        self.env.net.heal(now);
        for h in &mut self.hosts {
            if !h.up {
                h.restart(&mut self.env);
            }
        }
        self.env
            .trace
            .event(now, b'H', &[], || "HEAL: liveness phase".to_string());
    }

    /// Correct replicas that are up.
    fn live_correct(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(|h| h.is_correct() && h.up)
    }

    /// Liveness reached: every owed operation returned, every correct
    /// replica decided the same cids, nothing in flight between them.
    fn settled(&self) -> bool {
        if self.env.history.outstanding().next().is_some() {
            return false;
        }
        let mut last = self.live_correct().map(|h| h.core.last_decided());
        let first = last.next();
        if last.any(|l| Some(l) != first) {
            return false;
        }
        let correct: Vec<bool> = self.hosts.iter().map(|h| h.is_correct() && h.up).collect();
        !self.env.net.any_between(|r| correct[r.index()])
    }

    /// Plays the run to the end and checks it.
    pub fn run(mut self) -> Report {
        self.play()
    }

    /// Like [`World::run`], but leaves the world for inspection.
    pub fn play(&mut self) -> Report {
        let p = &self.env.params;
        let end = p.safety_ticks + p.liveness_ticks_max;
        let safety_ticks = p.safety_ticks;
        while self.env.now < end {
            self.step();
            if self.env.now > safety_ticks && self.settled() {
                break;
            }
        }
        let mut violations = std::mem::take(&mut self.env.checker.violations);
        let mut causes = Vec::new();
        if !self.settled() {
            violations.extend(self.liveness_violations());
            causes = self.diagnose();
        }
        let now = self.env.now;
        let findings = linearizability::check_history(&self.env.history, now);
        violations.extend(findings.violations);
        violations.extend(self.forgery_violations());
        violations.extend(self.lease_violations());
        violations.extend(self.client_table_violations());
        let report = Report {
            seed: self.env.params.seed,
            options: Options {
                verbose: false,
                ..self.options.clone()
            },
            summary: self.env.params.summary(),
            trace_hash: self.env.trace.hash_hex(),
            violations,
            known_gaps: self.env.params.known_gaps(),
            causes,
            stats: self.stats(findings.inconclusive_keys),
        };
        self.env.trace.note(now, || {
            format!(
                "end: {} violations, trace {} ({} events)",
                report.violations.len(),
                report.trace_hash,
                report.stats.trace_events
            )
        });
        report
    }

    fn liveness_violations(&self) -> Vec<Violation> {
        let now = self.env.now;
        let mut out = Vec::new();
        let owed: Vec<_> = self.env.history.outstanding().collect();
        if !owed.is_empty() {
            let first: Vec<String> = owed
                .iter()
                .take(5)
                .map(|o| {
                    format!(
                        "#{} c{} at {:?} called t{} {:?}",
                        o.id, o.client, o.replica, o.call.tick, o.op
                    )
                })
                .collect();
            out.push(Violation {
                check: Check::Liveness,
                tick: now,
                detail: format!(
                    "{} operations never returned within {} ticks of the heal, e.g. {}",
                    owed.len(),
                    self.env.params.liveness_ticks_max,
                    first.join("; ")
                ),
            });
        }
        let max = self
            .live_correct()
            .map(|h| h.core.last_decided())
            .max()
            .unwrap_or(0);
        let behind: Vec<String> = self
            .live_correct()
            .filter(|h| h.core.last_decided() < max)
            .map(|h| {
                let c = &h.core;
                let s = c.stats();
                format!(
                    "{:?} at cid {} ({} pending, {} open, regency {}{}, fetched {}, transfers {} \
                     (decisions {}, checkpoints {}, bad {}), stops {})",
                    h.id,
                    c.last_decided(),
                    c.pending_len(),
                    c.open_instances(),
                    c.regency(),
                    if c.is_syncing() { " syncing" } else { "" },
                    s.batches_fetched,
                    s.transfers_started,
                    s.transfer_decisions,
                    s.transfer_checkpoints,
                    s.transfer_bad_checkpoints,
                    s.stops_sent,
                )
            })
            .collect();
        if !behind.is_empty() {
            out.push(Violation {
                check: Check::Liveness,
                tick: now,
                detail: format!("correct replicas behind cid {max}: {}", behind.join(", ")),
            });
        }
        if out.is_empty() {
            out.push(Violation {
                check: Check::Liveness,
                tick: now,
                detail: "messages between correct replicas still in flight at the deadline".into(),
            });
        }
        out
    }

    /// Why the run did not settle (see [`crate::diagnosis`]).
    fn diagnose(&self) -> Vec<Cause> {
        let now = self.env.now;
        let c = &self.env.params.control;
        let recent = 4 * (c.request_timeout_ticks + self.env.params.network.delay_max_ticks);
        let max = self
            .live_correct()
            .map(|h| h.core.last_decided())
            .max()
            .unwrap_or(0);
        let mut causes: Vec<Cause> = self
            .live_correct()
            .filter(|h| h.core.last_decided() < max)
            .map(|h| {
                let w = &h.watch;
                let next = h.core.last_decided() + 1;
                if w.fetches.contains_key(&next) {
                    Cause::FetchedBatchNeverDelivered
                } else if Watch::recent(w.snapshot_request_tick, now, recent) {
                    Cause::CheckpointFetchStalled
                } else if Watch::recent(w.state_request_tick, now, recent) {
                    Cause::TransferStalled
                } else if h.core.is_syncing() {
                    Cause::StuckWaitingForSync
                } else if h.stats.crashes > 0 && h.core.stats().transfers_started == 0 {
                    Cause::RestartedIdle
                } else {
                    Cause::LagInsideWindow
                }
            })
            .collect();
        if self.live_correct().any(|h| h.core.is_syncing()) {
            causes.push(Cause::StuckWaitingForSync);
        }
        let owed = self.env.history.outstanding().next().is_some();
        if causes.is_empty() && !owed {
            let transferring = self
                .live_correct()
                .any(|h| Watch::recent(h.watch.state_request_tick, now, recent));
            causes.push(if transferring {
                Cause::EndlessTransfer
            } else {
                Cause::Unknown
            });
        }
        if causes.is_empty() {
            causes.push(Cause::Unknown);
        }
        causes.sort();
        causes.dedup();
        causes
    }

    /// A forged request executed anywhere correct means a forgery got past
    /// the verifier.
    fn forgery_violations(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        for h in self.hosts.iter().filter(|h| h.is_correct()) {
            let mut end = FORGED_KEY_PREFIX.to_vec();
            *end.last_mut().expect("non-empty") += 1;
            let req = kv::pb::etcdserverpb::RangeRequest {
                key: FORGED_KEY_PREFIX.to_vec(),
                range_end: end,
                count_only: true,
                ..Default::default()
            };
            let count = h.store.range(&req).map(|r| r.count).unwrap_or(0);
            if count > 0 {
                out.push(Violation {
                    check: Check::Forgery,
                    tick: self.env.now,
                    detail: format!("{:?} executed {count} forged requests", h.id),
                });
            }
        }
        out
    }

    /// Correct replicas at the same cid must have the same executed-request
    /// table (it decides what executes; it travels with checkpoints).
    /// With a [`Behavior::EarlyLeaseExpiry`] replica in the run: a correct
    /// replica grants lease [`SIM_LEASE_ID`] (a TTL far beyond the run) and
    /// puts [`SIM_LEASE_KEY`] with it. No correct replica runs a lessor
    /// here, so only the liars ever vote it expired.
    fn set_up_lease(&mut self) {
        if !self
            .hosts
            .iter()
            .any(|h| h.behavior == Some(Behavior::EarlyLeaseExpiry))
        {
            return;
        }
        let Some(h) = self.hosts.iter_mut().find(|h| h.is_correct() && h.up) else {
            return;
        };
        h.submit_uncalled(
            kv::pb::etcdserverpb::LeaseGrantRequest {
                ttl: 1 << 30,
                id: SIM_LEASE_ID,
            }
            .into(),
        );
        h.submit_uncalled(
            kv::pb::etcdserverpb::PutRequest {
                key: SIM_LEASE_KEY.to_vec(),
                value: b"held".to_vec(),
                lease: SIM_LEASE_ID,
                ..Default::default()
            }
            .into(),
        );
    }

    /// The lease of [`World::set_up_lease`] expired at a correct replica:
    /// its key was deleted, or the key is there and the lease is not. Only
    /// f+1 replicas' votes may expire a lease, and here at most f (the
    /// Byzantine ones) vote.
    fn lease_violations(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        for h in self.live_correct() {
            let page = h
                .store
                .watch_events(SIM_LEASE_KEY, b"", 1, usize::MAX)
                .unwrap_or_default();
            let deleted = page
                .events
                .iter()
                .any(|e| e.r#type == kv::pb::mvccpb::event::EventType::Delete as i32);
            let orphan = !page.events.is_empty() && h.store.lease(SIM_LEASE_ID, false).is_none();
            if deleted || orphan {
                out.push(Violation {
                    check: Check::Lease,
                    tick: self.env.now,
                    detail: format!(
                        "{:?}: lease {SIM_LEASE_ID} expired with at most f replicas voting \
                         (key deleted: {deleted})",
                        h.id
                    ),
                });
            }
        }
        out
    }

    fn client_table_violations(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        let mut by_cid: BTreeMap<u64, ReplicaId> = BTreeMap::new();
        for h in self.live_correct() {
            let cid = h.core.last_decided();
            match by_cid.get(&cid) {
                None => {
                    by_cid.insert(cid, h.id);
                }
                Some(&other) if self.hosts[other.index()].core.clients() != h.core.clients() => {
                    out.push(Violation {
                        check: Check::ClientTable,
                        tick: self.env.now,
                        detail: format!(
                            "{other:?} and {:?} at cid {cid} have different client tables",
                            h.id
                        ),
                    });
                }
                Some(_) => {}
            }
        }
        out
    }

    fn stats(&self, inconclusive: u32) -> RunStats {
        let mut s = RunStats {
            ticks: self.env.now,
            decisions: self.env.checker.max_decided(),
            ops_called: self.env.history.ops.len(),
            ops_completed: self.env.history.completed(),
            ops_outstanding: self.env.history.outstanding().count(),
            net: self.env.net.stats.clone(),
            lin_inconclusive_keys: inconclusive,
            trace_events: self.env.trace.events(),
            ..RunStats::default()
        };
        let mut latencies: Vec<u64> = self
            .env
            .history
            .ops
            .iter()
            .filter_map(|o| o.ret.as_ref().map(|(t, _)| t.tick - o.call.tick))
            .collect();
        latencies.sort_unstable();
        s.op_latency_ticks_p50 = latencies.get(latencies.len() / 2).copied().unwrap_or(0);
        s.op_latency_ticks_max = latencies.last().copied().unwrap_or(0);
        s.regency_max = self.env.checker.max_regency();
        s.checkpoint_splits = self.env.checker.checkpoint_splits();
        for h in &self.hosts {
            if h.is_correct() {
                for (k, v) in &h.stats.refused {
                    *s.refused.entry(k).or_default() += v;
                }
                let c = h.core.stats();
                s.syncs_applied += c.syncs_applied;
                s.transfers_started += c.transfers_started;
                s.transfer_decisions += c.transfer_decisions;
                s.bad_checkpoints += c.transfer_bad_checkpoints;
                s.checkpoints_taken += h.stats.checkpoints_taken;
                s.checkpoints_installed += h.stats.checkpoints_installed;
                s.restarts += h.stats.crashes;
                s.recovered_decisions += h.stats.recovered_decisions;
                s.ops_indeterminate += h.stats.ops_indeterminate;
                if h.up && h.store.lease(SIM_LEASE_ID, false).is_some() {
                    s.lease_holders += 1;
                }
            }
            let b = &h.byz_stats;
            let t = &mut s.byzantine;
            t.dropped += b.dropped;
            t.forged += b.forged;
            t.replayed += b.replayed;
            t.corrupted += b.corrupted;
            t.undecodable += b.undecodable + h.stats.undecodable;
            t.lies += b.lies;
            t.equivocations += b.equivocations;
            t.delayed += b.delayed;
            t.stop_lies += b.stop_lies;
            t.future_stops += b.future_stops;
            t.bad_syncs += b.bad_syncs;
            t.transfer_lies += b.transfer_lies;
            t.chunks_injected += b.chunks_injected;
            t.flood_requests += b.flood_requests;
            t.lease_votes += b.lease_votes;
            t.handoffs += b.handoffs;
            t.wrong_batches += b.wrong_batches;
        }
        s
    }
}
