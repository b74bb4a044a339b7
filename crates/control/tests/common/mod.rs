#![allow(dead_code)]
//! A tiny hand-driven network for scenario tests of the consensus core:
//! replicas exchange real signed and verified messages; the test decides
//! which messages are delivered, held or dropped, and when batches become
//! durable.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use control::{Config, Decision, Output, Replica, Target};
use wire::{
    ClientId, Keyring, Message, ReplicaId, Request, SecretKey, Signature, Signer, Verifier,
};

pub const CLUSTER: u64 = 0xC0DE;

pub fn secret(i: u16) -> SecretKey {
    let mut seed = [42u8; 32];
    seed[..2].copy_from_slice(&i.to_be_bytes());
    SecretKey::from_seed(seed)
}

/// A message on the wire between two replicas.
#[derive(Debug, Clone)]
pub struct Packet {
    pub from: ReplicaId,
    pub to: ReplicaId,
    pub msg: Message,
}

pub struct Net {
    pub n: usize,
    pub replicas: Vec<Replica>,
    pub signers: Vec<Signer>,
    pub verifiers: Vec<Verifier>,
    /// Packets sent and not yet delivered, in send order.
    pub wire: VecDeque<Packet>,
    /// Proposals waiting to become durable, per replica.
    pub unpersisted: Vec<Vec<(u32, u64, Arc<wire::Batch>)>>,
    /// REGENCY records waiting to become durable, per replica.
    pub unpersisted_regencies: Vec<Vec<u32>>,
    /// ACCEPT records waiting to become durable, per replica.
    pub unpersisted_accepts: Vec<Vec<(u32, u64, wire::Digest)>>,
    /// When true, persistence is acknowledged as soon as it is asked for.
    pub auto_persist: Vec<bool>,
    /// What each replica made durable, for [`Net::restart`].
    pub disks: Vec<Disk>,
    pub configs: Vec<Config>,
    pub decisions: Vec<Vec<Decision>>,
    pub seqs: HashMap<u16, u64>,
    /// Crashed replicas: they receive nothing, send nothing, do not tick.
    pub down: Vec<bool>,
    /// Regencies each replica reported installing, in order.
    pub regencies: Vec<Vec<u32>>,
    /// The "application" of each replica: executed requests in order,
    /// replaced when a checkpoint is installed.
    pub apps: Vec<Vec<(u64, u64, Vec<u8>)>>,
    /// Checkpoints installed by state transfer, per replica (cids).
    pub installed: Vec<Vec<u64>>,
}

/// A replica's durable records (what a restart reads back).
#[derive(Debug, Clone, Default)]
pub struct Disk {
    pub regency: u32,
    /// Proposals made durable: (regency, cid, batch).
    pub proposals: Vec<(u32, u64, Arc<wire::Batch>)>,
    /// Accepts made durable: (regency, cid, digest).
    pub accepts: Vec<(u32, u64, wire::Digest)>,
}

impl Net {
    pub fn new(n: usize) -> Self {
        Self::with_config(n, |_| {})
    }

    pub fn with_config(n: usize, tweak: impl Fn(&mut Config)) -> Self {
        let keyring = Arc::new(Keyring::new(
            CLUSTER,
            (0..n as u16).map(|i| secret(i).public()).collect(),
            HashMap::new(),
        ));
        let configs: Vec<Config> = (0..n as u16)
            .map(|i| {
                let mut c = Config::new(n, ReplicaId(i));
                tweak(&mut c);
                c
            })
            .collect();
        let replicas = configs.iter().map(|c| Replica::start(c.clone())).collect();
        Self {
            n,
            replicas,
            signers: (0..n as u16)
                .map(|i| Signer::new(CLUSTER, ReplicaId(i), secret(i)))
                .collect(),
            verifiers: (0..n)
                .map(|_| Verifier::new(keyring.clone(), 1024))
                .collect(),
            wire: VecDeque::new(),
            unpersisted: vec![Vec::new(); n],
            unpersisted_regencies: vec![Vec::new(); n],
            unpersisted_accepts: vec![Vec::new(); n],
            auto_persist: vec![true; n],
            disks: vec![Disk::default(); n],
            configs,
            decisions: vec![Vec::new(); n],
            seqs: HashMap::new(),
            down: vec![false; n],
            regencies: vec![Vec::new(); n],
            apps: vec![Vec::new(); n],
            installed: vec![Vec::new(); n],
        }
    }

    /// A request of replica `origin`'s proxy client, signed, with the next seq.
    pub fn request(&mut self, origin: u16, payload: &[u8]) -> Request {
        let seq = self.seqs.entry(origin).or_insert(0);
        *seq += 1;
        let r = Request::new(
            ClientId(origin as u64),
            *seq,
            payload.to_vec(),
            Signature::PENDING,
        );
        self.signers[origin as usize].sign_request(r).into_inner()
    }

    /// Replica `origin` sends a request of its own to every replica.
    pub fn submit(&mut self, origin: u16, payload: &[u8]) -> Request {
        let r = self.request(origin, payload);
        self.broadcast(origin, Message::Request(r.clone()));
        r
    }

    /// Puts a (signed) message from `from` on the wire to every replica.
    pub fn broadcast(&mut self, from: u16, msg: Message) {
        for to in 0..self.n as u16 {
            self.send(from, to, msg.clone());
        }
    }

    pub fn send(&mut self, from: u16, to: u16, msg: Message) {
        if self.down[from as usize] || self.down[to as usize] {
            return;
        }
        self.wire.push_back(Packet {
            from: ReplicaId(from),
            to: ReplicaId(to),
            msg,
        });
    }

    /// Signs `msg` as replica `from` would (for crafting Byzantine messages).
    pub fn sign(&self, from: u16, msg: Message) -> Message {
        self.signers[from as usize].sign(msg).into_inner()
    }

    pub fn handle(&mut self, at: usize, outs: Vec<Output>) {
        for o in outs {
            match o {
                Output::Send { to, msg } => {
                    let msg = self.signers[at].sign(msg).into_inner();
                    match to {
                        Target::All => self.broadcast(at as u16, msg),
                        Target::One(r) => self.send(at as u16, r.0, msg),
                    }
                }
                Output::Persist {
                    cid,
                    regency,
                    batch,
                } => {
                    if self.auto_persist[at] {
                        self.persisted(at, regency, cid, batch);
                    } else {
                        self.unpersisted[at].push((regency, cid, batch));
                    }
                }
                Output::PersistAccept {
                    regency,
                    cid,
                    digest,
                } => {
                    if self.auto_persist[at] {
                        self.accept_persisted(at, regency, cid, digest);
                    } else {
                        self.unpersisted_accepts[at].push((regency, cid, digest));
                    }
                }
                Output::Deliver(d) => {
                    for r in d.fresh_requests() {
                        self.apps[at].push((r.client.0, r.seq, r.payload.clone()));
                    }
                    if let Some(clients) = &d.checkpoint {
                        let app = encode_app(&self.apps[at]);
                        let blob =
                            control::checkpoint::encode(d.cid, Some(&d.proof), clients, &app);
                        let chunk = self.configs[at].snapshot_chunk_bytes;
                        let p = control::checkpoint::prepare(blob, chunk).expect("well-formed");
                        self.replicas[at].on_checkpoint(p);
                    }
                    self.decisions[at].push(d);
                }
                Output::Regency { regency, .. } => {
                    self.regencies[at].push(regency);
                    if self.auto_persist[at] {
                        self.regency_persisted(at, regency);
                    } else {
                        self.unpersisted_regencies[at].push(regency);
                    }
                }
                Output::InstallCheckpoint { info, app, .. } => {
                    self.apps[at] = decode_app(&app);
                    self.installed[at].push(info.cid);
                }
            }
        }
    }

    fn persisted(&mut self, at: usize, regency: u32, cid: u64, batch: Arc<wire::Batch>) {
        let d = batch.digest();
        self.disks[at].proposals.push((regency, cid, batch));
        let mut out = Vec::new();
        self.replicas[at].on_persisted(cid, d, &mut out);
        self.handle(at, out);
    }

    fn accept_persisted(&mut self, at: usize, regency: u32, cid: u64, digest: wire::Digest) {
        self.disks[at].accepts.push((regency, cid, digest));
        let mut out = Vec::new();
        self.replicas[at].on_accept_persisted(regency, cid, digest, &mut out);
        self.handle(at, out);
    }

    fn regency_persisted(&mut self, at: usize, regency: u32) {
        self.disks[at].regency = self.disks[at].regency.max(regency);
        let mut out = Vec::new();
        self.replicas[at].on_regency_persisted(regency, &mut out);
        self.handle(at, out);
    }

    /// Acknowledges every proposal and REGENCY record replica `at` asked
    /// to persist.
    pub fn persist_all(&mut self, at: usize) {
        for (regency, cid, batch) in std::mem::take(&mut self.unpersisted[at]) {
            self.persisted(at, regency, cid, batch);
        }
        for regency in std::mem::take(&mut self.unpersisted_regencies[at]) {
            self.regency_persisted(at, regency);
        }
        for (regency, cid, digest) in std::mem::take(&mut self.unpersisted_accepts[at]) {
            self.accept_persisted(at, regency, cid, digest);
        }
    }

    /// Restarts crashed replica `r` from its durable records, as the host
    /// does: the regency, the delivered decisions (this harness keeps them
    /// as its "decision log"), the votes for open instances, then
    /// `mark_restarted` and `catch_up`. What was not durable is lost.
    pub fn restart(&mut self, r: u16) {
        let at = r as usize;
        assert!(self.down[at], "restart a crashed replica");
        self.unpersisted[at].clear();
        self.unpersisted_regencies[at].clear();
        self.unpersisted_accepts[at].clear();
        let disk = self.disks[at].clone();
        let mut clients = control::ClientTable::default();
        for d in &self.decisions[at] {
            for req in d.batch.requests() {
                clients.mark_executed(req.client, req.seq);
            }
        }
        let (last, proof) = self.decisions[at]
            .last()
            .map_or((0, None), |d| (d.cid, Some(d.proof.clone())));
        let regency = disk
            .proposals
            .iter()
            .map(|p| p.0)
            .max()
            .unwrap_or(0)
            .max(disk.regency);
        let mut core = Replica::new(self.configs[at].clone(), regency, last, proof, clients);
        let keep = self.configs[at].decision_log_max();
        let from = self.decisions[at].len().saturating_sub(keep);
        core.recover_decisions(self.decisions[at][from..].iter().map(|d| wire::Decided {
            batch: d.batch.clone(),
            proof: d.proof.clone(),
        }));
        let mut open: Vec<_> = disk.proposals.iter().filter(|p| p.1 > last).collect();
        open.sort_by_key(|p| (p.1, p.0));
        for (reg, cid, batch) in open {
            core.recover_vote(*reg, *cid, batch.clone());
        }
        for &(reg, cid, digest) in &disk.accepts {
            if cid > last {
                core.recover_accept(reg, cid, digest);
            }
        }
        core.mark_restarted();
        self.replicas[at] = core;
        self.down[at] = false;
        let mut out = Vec::new();
        self.replicas[at].catch_up(&mut out);
        self.handle(at, out);
    }

    /// One tick at every live replica.
    pub fn tick(&mut self) {
        for at in 0..self.n {
            if self.down[at] {
                continue;
            }
            let mut out = Vec::new();
            self.replicas[at].on_tick(&mut out);
            self.handle(at, out);
        }
    }

    /// Alternates ticks and delivering every queued packet, `ticks` times.
    pub fn run_ticks(&mut self, ticks: usize) {
        for _ in 0..ticks {
            self.tick();
            self.run(1_000_000);
        }
    }

    /// Crashes replica `r`: in-flight packets to and from it are lost.
    pub fn crash(&mut self, r: u16) {
        self.down[r as usize] = true;
        let id = ReplicaId(r);
        self.wire.retain(|p| p.from != id && p.to != id);
    }

    /// Delivers one packet through the receiver's verifier into its core.
    pub fn deliver(&mut self, p: Packet) {
        if self.down[p.to.index()] {
            return;
        }
        let to = p.to.index();
        let Ok(v) = self.verifiers[to].verify(p.from, p.msg) else {
            return;
        };
        let mut out = Vec::new();
        self.replicas[to].on_message(v, &mut out);
        self.handle(to, out);
    }

    /// Delivers packets in order until none is left or `steps_max` were
    /// delivered. Returns the number delivered.
    pub fn run(&mut self, steps_max: usize) -> usize {
        self.run_filtered(steps_max, |_| true)
    }

    /// Like [`Net::run`], but packets for which `keep` is false are dropped.
    pub fn run_filtered(
        &mut self,
        steps_max: usize,
        mut keep: impl FnMut(&Packet) -> bool,
    ) -> usize {
        let mut steps = 0;
        while steps < steps_max {
            let Some(p) = self.wire.pop_front() else {
                break;
            };
            if keep(&p) {
                self.deliver(p);
            }
            steps += 1;
        }
        assert!(self.wire.is_empty() || steps == steps_max);
        steps
    }

    /// Delivers the first queued packet matching `pred`, if any.
    pub fn deliver_first(&mut self, pred: impl Fn(&Packet) -> bool) -> bool {
        match self.wire.iter().position(pred) {
            Some(i) => {
                let p = self.wire.remove(i).expect("index in range");
                self.deliver(p);
                true
            }
            None => false,
        }
    }

    /// Removes and returns every queued packet matching `pred`.
    pub fn hold(&mut self, pred: impl Fn(&Packet) -> bool) -> Vec<Packet> {
        let (held, rest): (Vec<_>, Vec<_>) = self.wire.drain(..).partition(|p| pred(p));
        self.wire = rest.into();
        held
    }

    /// The (cid, batch digest) sequence each replica delivered.
    pub fn log(&self, at: usize) -> Vec<(u64, wire::Digest)> {
        self.decisions[at]
            .iter()
            .map(|d| (d.cid, d.batch.digest()))
            .collect()
    }

    /// Executed requests of replica `at`, in order: (client, seq, payload).
    pub fn executed(&self, at: usize) -> Vec<(u64, u64, Vec<u8>)> {
        self.apps[at].clone()
    }

    /// Asserts that no two replicas delivered different batches for a cid,
    /// that every replica delivered cids in order (skipping only what a
    /// state-transferred checkpoint covered), and that replicas executed the
    /// same requests in the same order (as far as each got).
    pub fn assert_agreement(&self) {
        for a in 0..self.n {
            let mut expect = 1;
            let mut jumps = self.installed[a].iter().peekable();
            for d in &self.decisions[a] {
                while jumps.peek().is_some_and(|&&c| c < d.cid) {
                    expect = expect.max(*jumps.next().expect("peeked") + 1);
                }
                assert_eq!(d.cid, expect, "replica {a} delivered out of order");
                expect += 1;
            }
            for b in 0..self.n {
                for (ca, da) in self.log(a) {
                    if let Some((_, db)) = self.log(b).into_iter().find(|(cb, _)| *cb == ca) {
                        assert_eq!(da, db, "replicas {a} and {b} disagree at cid {ca}");
                    }
                }
                let (ea, eb) = (&self.apps[a], &self.apps[b]);
                let common = ea.len().min(eb.len());
                assert_eq!(
                    ea[..common],
                    eb[..common],
                    "replicas {a} and {b} executed differently"
                );
            }
        }
    }
}

pub fn is_kind(p: &Packet, kind: &str) -> bool {
    p.msg.kind() == kind
}

pub fn cid_of(p: &Packet) -> Option<u64> {
    match &p.msg {
        Message::Propose(m) => Some(m.cid),
        Message::Write(m) => Some(m.cid),
        Message::Accept(m) => Some(m.cid),
        _ => None,
    }
}

/// The test "application" snapshot: executed (client, seq, payload).
pub fn encode_app(app: &[(u64, u64, Vec<u8>)]) -> Vec<u8> {
    let mut w = wire::codec::Writer::default();
    w.count(app.len());
    for (c, s, p) in app {
        w.u64(*c);
        w.u64(*s);
        w.bytes(p);
    }
    w.into_vec()
}

pub fn decode_app(bytes: &[u8]) -> Vec<(u64, u64, Vec<u8>)> {
    let mut r = wire::codec::Reader::new(bytes);
    let n = r.count("app", usize::MAX, 20).expect("test app");
    (0..n)
        .map(|_| {
            (
                r.u64().unwrap(),
                r.u64().unwrap(),
                r.bytes("p", usize::MAX).unwrap().to_vec(),
            )
        })
        .collect()
}
