//! Byzantine behaviours, plugged in at ONE seam: a per-replica
//! [`Middleware`] that sees every message the replica sends (after
//! signing, once per recipient) and every message it receives (before
//! verification), and may drop, duplicate, delay, replay, alter or forge.
//!
//! A Byzantine replica runs the real, unmodified `control::Replica`; only
//! what crosses its boundary is twisted (as Malachite's test middleware
//! does). Correct replicas get [`Honest`].
//!
//! # Adding a behaviour
//! 1. Add a variant to [`Behavior`] (with its parameters) and its
//!    [`Behavior::name`].
//! 2. Write a `struct` implementing [`Middleware`]; return it from
//!    [`Behavior::middleware`].
//! 3. Add it to [`Behavior::FULL_POOL`], and to [`Behavior::DEFAULT_POOL`]
//!    unless it is a leader fault; say whether it wants to be the first
//!    leader ([`Behavior::targets_leader`]) or the leader a leader change
//!    brings ([`Behavior::targets_next_leader`]).
//!
//! What a Byzantine replica emits crosses the wire encoding (the host
//! encodes and decodes it), so a lie the decoder refuses never arrives.
//! 4. Give it a test in `sim/tests/byzantine.rs` that pins it on a replica
//!    and checks what it should cause (or must never cause).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use kv::pb::etcdserverpb::PutRequest;
use wire::crypto::{
    accept_signed_bytes, propose_signed_bytes, request_signed_bytes, stopdata_signed_bytes,
};
use wire::{
    Accept, Batch, BatchReply, CheckpointInfo, Cid, ClientId, Decided, DecisionProof, Digest,
    Fetch, Limits, Message, OpenVote, Propose, Regency, ReplicaId, Request, SecretKey, Signature,
    Signer, SnapshotChunk, SnapshotRequest, StateReply, Stop, StopData, Sync, Write,
};

use crate::rng::Prng;

/// Key prefix of every write a Byzantine replica makes up. Correct clients
/// never touch it, so the linearizability checker ignores it.
pub const BYZANTINE_KEY_PREFIX: &[u8] = b"byz/";
/// Key prefix of writes inside *forged* requests (bad signature). If any
/// correct replica ever holds such a key, a forgery got through.
pub const FORGED_KEY_PREFIX: &[u8] = b"byz/forged/";

/// A Byzantine behaviour of one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Behavior {
    /// Sends nothing.
    Silent,
    /// As leader: a different PROPOSE (re-signed) to the replicas of the
    /// colluders' "B side", and WRITE/ACCEPT for that alternative there.
    /// As backup (an accomplice): votes for the leader's alternative
    /// towards the B side. Tries to get two values decided.
    Equivocate,
    /// Sends its messages, plus forgeries: ACCEPTs signed with a key that
    /// is not in the cluster, ACCEPTs and PROPOSEs claiming another sender,
    /// REQUESTs of another client signed with its own key, requests with an
    /// empty signature. Every one must be refused by the verifier.
    Forge,
    /// Sends its messages, plus replays of old messages it sent or
    /// received, to random replicas, late.
    Replay,
    /// Flips bytes of its messages (undecodable frames never reach the
    /// verifier; decodable ones fail signature checks or count as its own
    /// lies), or lies outright: WRITE/ACCEPT with a random digest,
    /// correctly signed.
    Corrupt,
    /// Delays its PROPOSEs by `delay_ticks` (when it is the leader).
    SlowLeader {
        /// Extra delay of each PROPOSE, ticks.
        delay_ticks: u64,
    },
    /// Signed lies in STOPDATA: claims to have accepted (and written) a
    /// value it never saw (the same made-up value at every colluder),
    /// omits its votes, reports a stale last decision, claims a far
    /// last decision without proof, reports digests nobody wrote, or files
    /// a real decision proof of an older cid under an open cid (and serves
    /// that older batch to whoever FETCHes it for the open cid).
    StopDataLies,
    /// The most dangerous STOPDATA lie alone: the real decision proof of
    /// its last decided cid filed under the next (open) cid, and that
    /// batch served to the FETCHes for it (see [`Behavior::StopDataLies`]).
    MisfiledProof,
    /// Sends STOPs for far-future regencies (with junk requests in them)
    /// and normal-case messages of far-future regencies, besides its
    /// honest traffic.
    FutureStops,
    /// As the new leader of a regency: SYNCs with too few STOPDATAs, with
    /// STOPDATAs of another regency, with one replica twice, different
    /// sound subsets to different replicas, or none at all.
    BadSync,
    /// Serves state transfer wrongly: stale or truncated STATE_REPLYs,
    /// decisions with forged proofs or batches that do not match them, a
    /// made-up checkpoint (the same at every colluder) and junk chunks for
    /// it, snapshot chunks with flipped bytes or a wrong offset.
    LyingTransfer,
    /// Answers every FETCH with a batch of the wrong digest.
    WrongBatch,
    /// A proof-backed out-of-order last decision in STOPDATA: it collects
    /// the ACCEPTs it receives, and claims as its last decision the highest
    /// cid it holds a valid proof of, above cids never decided (with
    /// pipelining, cid X can be decided while X-1 is not), showing no
    /// recent proofs and no open votes.
    OutOfOrderProof,
    /// Floods every replica with valid requests of its own client (fresh
    /// seqs far ahead), far more than the pending pools hold.
    RequestFlood,
    /// A lessor that lies: on every tick it votes, through its own proxy,
    /// that every lease it knows expired (its current epoch), however
    /// recently granted or renewed. Its messages are otherwise honest. Not
    /// in the drawn pools (adding it would change what every seed draws);
    /// pinned by `tests/byzantine.rs`.
    EarlyLeaseExpiry,
    /// A leader that stalls and passes the leadership on: whenever it
    /// leads, it proposes nothing and at once asks (STOP) for the regency
    /// led by the next colluder running this behaviour, or by the replica
    /// after it when alone (etcd's MoveLeader, misused to escape request
    /// timeouts). Not in the drawn pools; pinned by `tests/byzantine.rs`.
    LeaderHandoff,
}

impl Behavior {
    /// Behaviours of the default profile: none of them is a leader fault
    /// (a slow leader excepted), though a Byzantine replica may still lead
    /// a later regency.
    pub const DEFAULT_POOL: &'static [Behavior] = &[
        Behavior::Silent,
        Behavior::Forge,
        Behavior::Replay,
        Behavior::Corrupt,
        Behavior::SlowLeader { delay_ticks: 0 },
        Behavior::StopDataLies,
        Behavior::MisfiledProof,
        Behavior::FutureStops,
        Behavior::LyingTransfer,
        Behavior::WrongBatch,
        Behavior::OutOfOrderProof,
        Behavior::RequestFlood,
    ];
    /// Every behaviour.
    pub const FULL_POOL: &'static [Behavior] = &[
        Behavior::Silent,
        Behavior::Equivocate,
        Behavior::Forge,
        Behavior::Replay,
        Behavior::Corrupt,
        Behavior::SlowLeader { delay_ticks: 0 },
        Behavior::StopDataLies,
        Behavior::MisfiledProof,
        Behavior::FutureStops,
        Behavior::BadSync,
        Behavior::LyingTransfer,
        Behavior::WrongBatch,
        Behavior::OutOfOrderProof,
        Behavior::RequestFlood,
    ];

    /// Stable name for logs and summaries.
    pub fn name(&self) -> &'static str {
        match self {
            Behavior::Silent => "silent",
            Behavior::Equivocate => "equivocate",
            Behavior::Forge => "forge",
            Behavior::Replay => "replay",
            Behavior::Corrupt => "corrupt",
            Behavior::SlowLeader { .. } => "slow-leader",
            Behavior::StopDataLies => "stopdata-lies",
            Behavior::MisfiledProof => "misfiled-proof",
            Behavior::FutureStops => "future-stops",
            Behavior::BadSync => "bad-sync",
            Behavior::LyingTransfer => "lying-transfer",
            Behavior::WrongBatch => "wrong-batch",
            Behavior::OutOfOrderProof => "out-of-order-proof",
            Behavior::RequestFlood => "request-flood",
            Behavior::EarlyLeaseExpiry => "early-lease-expiry",
            Behavior::LeaderHandoff => "leader-handoff",
        }
    }

    /// The behaviour is about the leader; the generator puts it on the
    /// leader of regency 0 when it can.
    pub fn targets_leader(&self) -> bool {
        matches!(self, Behavior::Equivocate | Behavior::SlowLeader { .. })
    }

    /// The behaviour is about the leader a leader change installs; the
    /// generator puts it on the leader of regency 1 when it can.
    pub fn targets_next_leader(&self) -> bool {
        matches!(self, Behavior::BadSync)
    }

    /// The middleware that carries out this behaviour.
    pub fn middleware(self) -> Box<dyn Middleware> {
        match self {
            Behavior::Silent => Box::new(Silent),
            Behavior::Equivocate => Box::new(Equivocate),
            Behavior::Forge => Box::new(Forge),
            Behavior::Replay => Box::new(Replay::default()),
            Behavior::Corrupt => Box::new(Corrupt),
            Behavior::SlowLeader { delay_ticks } => Box::new(SlowLeader { delay_ticks }),
            Behavior::StopDataLies => Box::new(StopDataLies::default()),
            Behavior::MisfiledProof => Box::new(StopDataLies {
                misfile_only: true,
                ..StopDataLies::default()
            }),
            Behavior::FutureStops => Box::new(FutureStops),
            Behavior::BadSync => Box::new(BadSync::default()),
            Behavior::LyingTransfer => Box::new(LyingTransfer),
            Behavior::WrongBatch => Box::new(WrongBatch),
            Behavior::OutOfOrderProof => Box::new(StopDataLies {
                ooo_only: true,
                ..StopDataLies::default()
            }),
            Behavior::RequestFlood => Box::new(RequestFlood),
            // Its lie is in what its proxy orders (`Host::tick`).
            Behavior::EarlyLeaseExpiry => Box::new(Honest),
            Behavior::LeaderHandoff => Box::new(LeaderHandoff::default()),
        }
    }
}

/// One message a middleware puts on the network.
#[derive(Debug, Clone)]
pub struct Emit {
    /// Recipient (never the sender itself).
    pub to: ReplicaId,
    /// What it receives (any bytes a Byzantine replica may send).
    pub msg: Message,
    /// Added to the network's own delay.
    pub extra_delay_ticks: u64,
}

/// What Byzantine replicas share (they may collude): the equivocating
/// leader's alternative batches, and which correct replicas get them.
#[derive(Debug, Default)]
pub struct Collusion {
    /// Correct replicas that are shown the alternative value.
    pub b_side: Vec<ReplicaId>,
    /// The alternative batch per instance.
    pub alternatives: BTreeMap<Cid, Arc<Batch>>,
    /// The value every colluder claims in STOPDATA, per (regency, cid).
    pub fake_values: BTreeMap<(Regency, Cid), Digest>,
    /// The checkpoint every colluder claims, per cid.
    pub fake_checkpoints: BTreeMap<Cid, CheckpointInfo>,
    /// Batches seen, by digest (bounded), to serve misfiled values.
    pub batches: BTreeMap<Digest, Arc<Batch>>,
    /// `(cid, digest)` a colluder filed a decision proof of another cid
    /// under: FETCHes for them are answered with that batch.
    pub misfiled: BTreeMap<(Cid, Digest), Arc<Batch>>,
    /// The replicas running [`Behavior::LeaderHandoff`], in id order.
    pub handoff: Vec<ReplicaId>,
}

/// Bound of each of the colluders' maps.
const BOARD_ENTRIES_MAX: usize = 256;

fn bounded_insert<K: Ord, V>(m: &mut BTreeMap<K, V>, k: K, v: V) {
    if m.len() >= BOARD_ENTRIES_MAX {
        m.pop_first();
    }
    m.insert(k, v);
}

/// Counters of what Byzantine replicas did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ByzStats {
    /// Messages not sent (silence).
    pub dropped: u64,
    /// Forgeries sent (each must be refused).
    pub forged: u64,
    /// Old messages sent again.
    pub replayed: u64,
    /// Messages with flipped bytes that still decoded.
    pub corrupted: u64,
    /// Messages with flipped bytes that no longer decoded (dropped at decode).
    pub undecodable: u64,
    /// Well-formed votes for a digest nobody proposed.
    pub lies: u64,
    /// Messages for the alternative value sent to the B side.
    pub equivocations: u64,
    /// PROPOSEs held back by a slow leader.
    pub delayed: u64,
    /// STOPDATAs with signed lies.
    pub stop_lies: u64,
    /// STOPs (and votes) for far-future regencies.
    pub future_stops: u64,
    /// SYNCs twisted (or withheld) by a Byzantine new leader.
    pub bad_syncs: u64,
    /// STATE_REPLYs and SNAPSHOT_CHUNKs twisted.
    pub transfer_lies: u64,
    /// Junk SNAPSHOT_CHUNKs raced at a replica doing state transfer.
    pub chunks_injected: u64,
    /// Valid requests of its own client sent in floods.
    pub flood_requests: u64,
    /// Early lease expiry votes its proxy submitted.
    pub lease_votes: u64,
    /// STOPs of a leader passing the leadership on, and PROPOSEs it
    /// withheld.
    pub handoffs: u64,
    /// FETCHes answered with a batch of the wrong digest.
    pub wrong_batches: u64,
}

/// What a middleware may use: the replica's own key (a Byzantine replica
/// can sign anything as itself), its random stream, the colluders' board.
pub struct Cx<'a> {
    /// Current tick.
    pub now: u64,
    /// The Byzantine replica.
    pub me: ReplicaId,
    /// Cluster size.
    pub n: usize,
    /// Faults tolerated.
    pub f: usize,
    /// Cluster id (part of every signed string).
    pub cluster_id: u64,
    /// The leader of the replica's current regency.
    pub leader: ReplicaId,
    /// The replica's current regency.
    pub regency: Regency,
    /// The replica's last decided cid.
    pub last_decided: Cid,
    /// The replica's own signer (its key is its to misuse).
    pub signer: &'a Signer,
    /// The replica's own random stream.
    pub rng: &'a mut Prng,
    /// Shared with the other Byzantine replicas.
    pub board: &'a mut Collusion,
    /// Counters of what this replica did.
    pub stats: &'a mut ByzStats,
}

impl Cx<'_> {
    fn pass(&self, to: ReplicaId, msg: Message, emit: &mut Vec<Emit>) {
        emit.push(Emit {
            to,
            msg,
            extra_delay_ticks: 0,
        });
    }
    fn sign(&self, msg: Message) -> Message {
        self.signer.sign(msg).into_inner()
    }
    fn emit(&self, to: ReplicaId, msg: Message, emit: &mut Vec<Emit>) {
        if to != self.me {
            self.pass(to, msg, emit);
        }
    }
    /// A batch of one junk request (never what anyone proposed).
    fn junk_batch(&mut self, tag: &str) -> Arc<Batch> {
        Arc::new(Batch::new(vec![self.junk_request(tag)]))
    }
    /// Remembers the batches a message carries (for colluders' lies).
    fn remember_batches(&mut self, msg: &Message) {
        let mut keep =
            |b: &Arc<Batch>| bounded_insert(&mut self.board.batches, b.digest(), b.clone());
        match msg {
            Message::Propose(p) => keep(&p.batch),
            Message::Batch(b) => keep(&b.batch),
            Message::StateReply(r) => r.decisions.iter().for_each(|d| keep(&d.batch)),
            _ => {}
        }
    }
    fn other_than_me(&mut self) -> ReplicaId {
        let others: Vec<u16> = (0..self.n as u16).filter(|&i| i != self.me.0).collect();
        ReplicaId(*self.rng.pick(&others))
    }
    /// A request of this replica's own client writing under the Byzantine
    /// prefix (a valid request: its key signs its client id).
    fn junk_request(&mut self, tag: &str) -> Request {
        let seq = (1 << 40) + self.rng.range(0, 1 << 20);
        let payload = put_payload(format!("byz/{tag}/{}", self.me.0), seq);
        let r = Request::new(
            ClientId::of_replica(self.me),
            seq,
            payload,
            Signature::PENDING,
        );
        self.signer.sign_request(r).into_inner()
    }
}

/// The seam. Called for every message a replica sends to another replica
/// (after signing) and every message it receives (before verification).
pub trait Middleware {
    /// A message this replica's core sends to `to`; push what actually goes
    /// out (nothing, the message, others) onto `emit`.
    fn outgoing(&mut self, cx: &mut Cx<'_>, to: ReplicaId, msg: Message, emit: &mut Vec<Emit>);

    /// A message arriving from `from`, before verification; `None` drops
    /// it. May answer it by pushing onto `emit` (what the replica's core
    /// would not send).
    fn incoming(
        &mut self,
        _cx: &mut Cx<'_>,
        _from: ReplicaId,
        msg: Message,
        _emit: &mut Vec<Emit>,
    ) -> Option<Message> {
        Some(msg)
    }
}

/// A correct replica: everything passes unchanged.
pub struct Honest;

impl Middleware for Honest {
    fn outgoing(&mut self, cx: &mut Cx<'_>, to: ReplicaId, msg: Message, emit: &mut Vec<Emit>) {
        cx.pass(to, msg, emit);
    }
}

/// [`Behavior::Silent`].
pub struct Silent;

impl Middleware for Silent {
    fn outgoing(&mut self, cx: &mut Cx<'_>, _to: ReplicaId, _msg: Message, _emit: &mut Vec<Emit>) {
        cx.stats.dropped += 1;
    }
}

/// [`Behavior::SlowLeader`].
pub struct SlowLeader {
    delay_ticks: u64,
}

impl Middleware for SlowLeader {
    fn outgoing(&mut self, cx: &mut Cx<'_>, to: ReplicaId, msg: Message, emit: &mut Vec<Emit>) {
        let extra = match msg {
            Message::Propose(_) => {
                cx.stats.delayed += 1;
                self.delay_ticks
            }
            _ => 0,
        };
        emit.push(Emit {
            to,
            msg,
            extra_delay_ticks: extra,
        });
    }
}

/// [`Behavior::Equivocate`].
pub struct Equivocate;

impl Equivocate {
    /// The alternative batch for `p`: the same requests reversed, or with a
    /// junk request of this replica's client appended.
    fn alternative(cx: &mut Cx<'_>, p: &Propose) -> Arc<Batch> {
        if let Some(b) = cx.board.alternatives.get(&p.cid) {
            return b.clone();
        }
        let mut requests = p.batch.requests().to_vec();
        if requests.len() >= 2 && cx.rng.coin() {
            requests.reverse();
        } else {
            requests.push(cx.junk_request("equivocation"));
        }
        let b = Arc::new(Batch::new(requests));
        cx.board.alternatives.insert(p.cid, b.clone());
        b
    }
}

impl Middleware for Equivocate {
    fn outgoing(&mut self, cx: &mut Cx<'_>, to: ReplicaId, msg: Message, emit: &mut Vec<Emit>) {
        if !cx.board.b_side.contains(&to) {
            return cx.pass(to, msg, emit);
        }
        let msg = match msg {
            Message::Propose(p) if p.leader == cx.me => {
                let mut alt = p.clone();
                alt.batch = Self::alternative(cx, &p);
                alt.signature = Signature::PENDING;
                cx.stats.equivocations += 1;
                cx.sign(Message::Propose(alt))
            }
            Message::Write(mut w) => match cx.board.alternatives.get(&w.cid) {
                Some(b) => {
                    w.digest = b.digest();
                    cx.stats.equivocations += 1;
                    Message::Write(w)
                }
                None => Message::Write(w),
            },
            Message::Accept(mut a) => match cx.board.alternatives.get(&a.cid) {
                Some(b) => {
                    a.digest = b.digest();
                    a.signature = Signature::PENDING;
                    cx.stats.equivocations += 1;
                    cx.sign(Message::Accept(a))
                }
                None => Message::Accept(a),
            },
            m => m,
        };
        cx.pass(to, msg, emit);
    }
}

/// [`Behavior::Forge`].
pub struct Forge;

/// Kinds of forgery [`Forge`] makes.
const FORGERY_KINDS: usize = 13;

impl Forge {
    /// One forgery about the replica's current instance and regency. Every
    /// one must be refused by the verifier (bad signature, wrong sender,
    /// bad proof).
    fn forgery(cx: &mut Cx<'_>) -> Message {
        let (regency, cid) = (cx.regency, cx.last_decided + 1);
        let digest = Digest(cx.rng.bytes32());
        let stranger = SecretKey::from_seed(cx.rng.bytes32());
        let victim = cx.other_than_me();
        match cx.rng.index(FORGERY_KINDS) {
            // An ACCEPT of our own, signed with a key not in the cluster.
            0 => {
                let mut a = Accept {
                    regency,
                    cid,
                    replica: cx.me,
                    digest,
                    signature: Signature::PENDING,
                };
                a.signature = stranger.sign(&accept_signed_bytes(cx.cluster_id, &a));
                Message::Accept(a)
            }
            // An ACCEPT claiming to come from another replica.
            1 => {
                let mut a = Accept {
                    regency,
                    cid,
                    replica: victim,
                    digest,
                    signature: Signature::PENDING,
                };
                a.signature = cx
                    .signer
                    .key()
                    .sign(&accept_signed_bytes(cx.cluster_id, &a));
                Message::Accept(a)
            }
            // A PROPOSE in the leader's name (signed by us), or, if we lead,
            // in our name with an unsigned request inside.
            2 => {
                let r = forged_request(cx, ClientId::of_replica(cx.me), false);
                let mut p = Propose {
                    regency,
                    cid,
                    leader: cx.leader,
                    batch: Arc::new(Batch::new(vec![r])),
                    signature: Signature::PENDING,
                };
                let key = if cx.leader == cx.me {
                    &stranger
                } else {
                    cx.signer.key()
                };
                p.signature = key.sign(&propose_signed_bytes(cx.cluster_id, &p));
                Message::Propose(p)
            }
            // A REQUEST of another replica's client, signed with our key.
            3 => Message::Request(forged_request(cx, ClientId::of_replica(victim), true)),
            // A REQUEST of our own client with no signature at all.
            4 => Message::Request(forged_request(cx, ClientId::of_replica(cx.me), false)),
            // A STOPDATA of ours signed by a stranger.
            5 => {
                let mut sd = stopdata(cx.me, regency + 1, cx.last_decided, digest, cid);
                sd.signature = stranger.sign(&stopdata_signed_bytes(cx.cluster_id, &sd));
                Message::StopData(sd)
            }
            // A STOPDATA in another replica's name, signed with our key.
            6 => {
                let mut sd = stopdata(victim, regency + 1, cx.last_decided, digest, cid);
                sd.signature = cx
                    .signer
                    .key()
                    .sign(&stopdata_signed_bytes(cx.cluster_id, &sd));
                Message::StopData(sd)
            }
            // A STOP in another replica's name.
            7 => Message::Stop(Stop {
                regency: regency + 1,
                replica: victim,
                requests: vec![],
            }),
            // A SYNC of ours holding a STOPDATA forged in another's name.
            8 => {
                let mut sd = stopdata(victim, regency, cx.last_decided, digest, cid);
                sd.signature = cx
                    .signer
                    .key()
                    .sign(&stopdata_signed_bytes(cx.cluster_id, &sd));
                Message::Sync(Sync {
                    regency,
                    leader: cx.me,
                    stopdata: vec![sd],
                })
            }
            // A STATE_REPLY with a decision whose proof a stranger signed.
            9 => {
                let batch = cx.junk_batch("forged-decision");
                let proof = forged_proof(cx, &stranger, cid, batch.digest(), cx.n);
                state_reply(cx.me, regency, cid, vec![Decided { batch, proof }])
            }
            // A FETCH in another replica's name.
            10 => Message::Fetch(Fetch {
                cid,
                digest,
                replica: victim,
            }),
            // A STOP carrying a request of another replica's client.
            11 => {
                let r = forged_request(cx, ClientId::of_replica(victim), true);
                Message::Stop(Stop {
                    regency: regency + 1,
                    replica: cx.me,
                    requests: vec![r],
                })
            }
            // A STATE_REPLY whose proof is below a quorum.
            _ => {
                let batch = cx.junk_batch("short-proof");
                let mut proof = forged_proof(cx, cx.signer.key(), cid, batch.digest(), 1);
                proof.accepts.truncate(1);
                state_reply(cx.me, regency, cid, vec![Decided { batch, proof }])
            }
        }
    }
}

/// A STOPDATA of `replica` claiming `digest` accepted at `cid`, unsigned.
fn stopdata(replica: ReplicaId, regency: Regency, last: Cid, digest: Digest, cid: Cid) -> StopData {
    StopData {
        regency,
        replica,
        last_decided: last,
        last_decided_proof: None,
        open: vec![OpenVote {
            cid: cid.max(last + 1),
            accepted: Some((regency.saturating_sub(1), digest)),
            written: vec![(regency.saturating_sub(1), digest)],
            decided: None,
        }],
        recent: vec![],
        signature: Signature::PENDING,
    }
}

/// A made-up manifest for a checkpoint body of `len` bytes (a few digests).
fn junk_manifest(cx: &mut Cx<'_>, len: u64) -> Vec<Digest> {
    let n = len.div_ceil(1024).clamp(1, 8);
    (0..n)
        .map(|_| {
            let mut d = [0u8; 32];
            d.iter_mut().for_each(|b| *b = cx.rng.range(0, 255) as u8);
            Digest(d)
        })
        .collect()
}

/// A decision proof of `count` ACCEPTs (replicas 0..count) all signed by
/// `key`: valid only if `key` were each of theirs.
fn forged_proof(
    cx: &Cx<'_>,
    key: &SecretKey,
    cid: Cid,
    digest: Digest,
    count: usize,
) -> DecisionProof {
    let accepts = (0..count.min(cx.n) as u16)
        .map(|i| {
            let mut a = Accept {
                regency: cx.regency,
                cid,
                replica: ReplicaId(i),
                digest,
                signature: Signature::PENDING,
            };
            a.signature = key.sign(&accept_signed_bytes(cx.cluster_id, &a));
            a
        })
        .collect();
    DecisionProof {
        cid,
        digest,
        accepts,
    }
}

fn state_reply(me: ReplicaId, regency: Regency, last: Cid, decisions: Vec<Decided>) -> Message {
    Message::StateReply(StateReply {
        replica: me,
        regency,
        last_decided: last,
        checkpoint: None,
        decisions,
    })
}

/// A request writing under [`FORGED_KEY_PREFIX`], signed with this
/// replica's key (`sign`) or not signed.
fn forged_request(cx: &mut Cx<'_>, client: ClientId, sign: bool) -> Request {
    let seq = cx.rng.range(0, 1 << 20);
    let payload = put_payload(format!("byz/forged/{}", cx.me.0), seq);
    let mut r = Request::new(client, seq, payload, Signature::PENDING);
    if sign {
        r.signature = cx
            .signer
            .key()
            .sign(&request_signed_bytes(cx.cluster_id, &r));
    }
    r
}

fn put_payload(key: String, n: u64) -> Vec<u8> {
    kv::command::encode_batch(&[kv::Command::from(PutRequest {
        key: key.into_bytes(),
        value: format!("x{n}").into_bytes(),
        ..Default::default()
    })])
}

impl Middleware for Forge {
    fn outgoing(&mut self, cx: &mut Cx<'_>, to: ReplicaId, msg: Message, emit: &mut Vec<Emit>) {
        if cx.rng.chance_ppm(300_000) {
            let forged = Self::forgery(cx);
            cx.stats.forged += 1;
            cx.pass(to, forged, emit);
        }
        cx.pass(to, msg, emit);
    }
}

/// [`Behavior::Replay`].
#[derive(Default)]
pub struct Replay {
    seen: VecDeque<Message>,
    /// Leader-change messages seen (replayed half of the time).
    seen_sync: VecDeque<Message>,
}

impl Replay {
    const SEEN_MAX: usize = 64;
    fn remember(&mut self, msg: &Message) {
        let q = match msg {
            Message::Stop(_) | Message::StopData(_) | Message::Sync(_) | Message::StateReply(_) => {
                &mut self.seen_sync
            }
            _ => &mut self.seen,
        };
        if q.len() == Self::SEEN_MAX {
            q.pop_front();
        }
        q.push_back(msg.clone());
    }
}

impl Middleware for Replay {
    fn outgoing(&mut self, cx: &mut Cx<'_>, to: ReplicaId, msg: Message, emit: &mut Vec<Emit>) {
        self.remember(&msg);
        if cx.rng.chance_ppm(200_000) {
            let q = if !self.seen_sync.is_empty() && cx.rng.coin() {
                &self.seen_sync
            } else {
                &self.seen
            };
            let old = q[cx.rng.index(q.len())].clone();
            let to_old = cx.other_than_me();
            cx.stats.replayed += 1;
            emit.push(Emit {
                to: to_old,
                msg: old,
                extra_delay_ticks: cx.rng.range(0, 50),
            });
        }
        cx.pass(to, msg, emit);
    }

    fn incoming(
        &mut self,
        _cx: &mut Cx<'_>,
        _from: ReplicaId,
        msg: Message,
        _emit: &mut Vec<Emit>,
    ) -> Option<Message> {
        self.remember(&msg);
        Some(msg)
    }
}

/// [`Behavior::Corrupt`].
pub struct Corrupt;

impl Middleware for Corrupt {
    fn outgoing(&mut self, cx: &mut Cx<'_>, to: ReplicaId, msg: Message, emit: &mut Vec<Emit>) {
        if !cx.rng.coin() {
            return cx.pass(to, msg, emit);
        }
        if cx.rng.coin() {
            // Bytes flipped on the way out, signatures not redone.
            let mut bytes = msg.encode();
            for _ in 0..cx.rng.range(1, 3) {
                let i = cx.rng.index(bytes.len());
                bytes[i] ^= 1 << cx.rng.range(0, 7);
            }
            match Message::decode(&bytes, &Limits::default()) {
                Ok(m) => {
                    cx.stats.corrupted += 1;
                    cx.pass(to, m, emit);
                }
                Err(_) => cx.stats.undecodable += 1,
            }
            return;
        }
        // A well-formed lie, signed where the kind is signed.
        let digest = Digest(cx.rng.bytes32());
        let lie = match msg {
            Message::Write(mut w) => {
                w.digest = digest;
                Message::Write(w)
            }
            Message::Accept(mut a) => {
                a.digest = digest;
                a.signature = Signature::PENDING;
                cx.sign(Message::Accept(a))
            }
            Message::StopData(mut sd) => {
                for o in &mut sd.open {
                    o.accepted = o.accepted.map(|(g, _)| (g, digest));
                    o.written.iter_mut().for_each(|w| w.1 = digest);
                }
                sd.signature = Signature::PENDING;
                cx.sign(Message::StopData(sd))
            }
            Message::Stop(mut s) => {
                s.regency = s.regency.saturating_add(cx.rng.range(0, 3) as u32);
                Message::Stop(s)
            }
            Message::Batch(b) => Message::Batch(BatchReply {
                cid: b.cid,
                batch: cx.junk_batch("corrupt-batch"),
            }),
            Message::StateReply(mut r) => {
                if let Some(c) = &mut r.checkpoint {
                    c.digest = digest;
                }
                r.last_decided += cx.rng.range(0, 100);
                Message::StateReply(r)
            }
            Message::SnapshotChunk(mut c) => {
                if let Some(b) = c.bytes.first_mut() {
                    *b ^= 0xFF;
                }
                Message::SnapshotChunk(c)
            }
            m => m,
        };
        cx.stats.lies += 1;
        cx.pass(to, lie, emit);
    }
}

/// [`Behavior::StopDataLies`].
#[derive(Default)]
pub struct StopDataLies {
    /// Decision proofs this replica held (its own last decisions), oldest
    /// first, for stale claims.
    proofs: VecDeque<DecisionProof>,
    /// Only the misfiled-proof lie ([`Behavior::MisfiledProof`]).
    misfile_only: bool,
    /// Only the out-of-order proof lie ([`Behavior::OutOfOrderProof`]).
    ooo_only: bool,
    /// ACCEPTs received, per (regency, cid, digest), by replica.
    accepts: BTreeMap<(Regency, Cid, Digest), BTreeMap<ReplicaId, wire::Accept>>,
    /// Decision proofs assembled from them, by cid (bounded).
    assembled: BTreeMap<Cid, DecisionProof>,
}

impl StopDataLies {
    const PROOFS_MAX: usize = 16;

    fn lie(&mut self, cx: &mut Cx<'_>, mut sd: StopData) -> StopData {
        if let Some(p) = &sd.last_decided_proof {
            if self.proofs.back().is_none_or(|b| b.cid < p.cid) {
                if self.proofs.len() == Self::PROOFS_MAX {
                    self.proofs.pop_front();
                }
                self.proofs.push_back(p.clone());
            }
        }
        let ts = sd.regency.saturating_sub(1);
        let first_open = sd.last_decided + 1;
        let lie = if self.misfile_only {
            5
        } else if self.ooo_only {
            6
        } else {
            cx.rng.index(7)
        };
        match lie {
            // A value it never saw, accepted and written at the previous
            // regency: the same made-up value at every colluder.
            0 => {
                let mut cids: Vec<Cid> = sd.open.iter().map(|o| o.cid).collect();
                cids.push(first_open);
                for cid in cids {
                    let key = (sd.regency, cid);
                    let fake = *cx
                        .board
                        .fake_values
                        .entry(key)
                        .or_insert_with(|| Digest(cx.rng.bytes32()));
                    let vote = OpenVote {
                        cid,
                        accepted: Some((ts, fake)),
                        written: vec![(ts, fake)],
                        decided: None,
                    };
                    match sd.open.iter_mut().find(|o| o.cid == cid) {
                        Some(o) => *o = vote,
                        None => sd.open.push(vote),
                    }
                }
            }
            // Its votes omitted.
            1 => sd.open.clear(),
            // A stale last decision (an older proof, or none).
            2 => {
                let older: Vec<&DecisionProof> = self
                    .proofs
                    .iter()
                    .filter(|p| p.cid < sd.last_decided)
                    .collect();
                match older.is_empty() {
                    true => {
                        sd.last_decided = 0;
                        sd.last_decided_proof = None;
                    }
                    false => {
                        let p = older[cx.rng.index(older.len())].clone();
                        sd.last_decided = p.cid;
                        sd.last_decided_proof = Some(p);
                    }
                }
            }
            // Digests nobody wrote, different at each lie.
            3 => {
                if sd.open.is_empty() {
                    sd.open.push(OpenVote {
                        cid: first_open,
                        accepted: None,
                        written: vec![],
                        decided: None,
                    });
                }
                for o in &mut sd.open {
                    let d = Digest(cx.rng.bytes32());
                    o.accepted = Some((ts, Digest(cx.rng.bytes32())));
                    o.written = vec![(ts, d)];
                }
            }
            // A far last decision it cannot prove.
            4 => {
                sd.last_decided += 1000;
                sd.last_decided_proof = None;
                sd.open.clear();
            }
            // A real proof of a cid above its last decision (decided while
            // a lower cid may not be) as its last decision, hiding what it
            // knows below.
            6 => {
                if let Some((_, p)) = self.assembled.range(sd.last_decided + 1..).next_back() {
                    cx.stats.stop_lies += 1;
                    sd.last_decided = p.cid;
                    sd.last_decided_proof = Some(p.clone());
                    sd.open.retain(|o| o.cid > p.cid);
                    sd.recent.clear();
                }
            }
            // A real decision proof of its last decided cid filed under the
            // first open cid (colluders then serve that batch to FETCHes).
            _ => match sd.last_decided_proof.clone() {
                Some(p) => {
                    if let Some(b) = cx.board.batches.get(&p.digest).cloned() {
                        bounded_insert(&mut cx.board.misfiled, (first_open, p.digest), b);
                    }
                    let vote = OpenVote {
                        cid: first_open,
                        accepted: Some((ts, p.digest)),
                        written: vec![(ts, p.digest)],
                        decided: Some(p),
                    };
                    match sd.open.iter_mut().find(|o| o.cid == first_open) {
                        Some(o) => *o = vote,
                        None => sd.open.push(vote),
                    }
                }
                None => sd.open.clear(),
            },
        }
        sd.open.sort_by_key(|o| o.cid);
        sd.open.dedup_by_key(|o| o.cid);
        sd.recent.retain(|p| p.cid < sd.last_decided);
        sd.signature = Signature::PENDING;
        sd
    }

    /// Keeps a received ACCEPT; a Byzantine quorum of them for one value
    /// is a valid decision proof, whether or not lower cids are decided.
    fn collect_accept(&mut self, cx: &Cx<'_>, msg: &Message) {
        const KEYS_MAX: usize = 256;
        let Message::Accept(a) = msg else {
            return;
        };
        let key = (a.regency, a.cid, a.digest);
        if !self.accepts.contains_key(&key) && self.accepts.len() >= KEYS_MAX {
            self.accepts.pop_first();
        }
        let votes = self.accepts.entry(key).or_default();
        votes.insert(a.replica, a.clone());
        let quorum = (cx.n + cx.f) / 2 + 1;
        if votes.len() >= quorum && !self.assembled.contains_key(&a.cid) {
            let proof = DecisionProof {
                cid: a.cid,
                digest: a.digest,
                accepts: votes.values().take(quorum).cloned().collect(),
            };
            if self.assembled.len() >= Self::PROOFS_MAX {
                self.assembled.pop_first();
            }
            self.assembled.insert(a.cid, proof);
        }
    }
}

impl Middleware for StopDataLies {
    fn outgoing(&mut self, cx: &mut Cx<'_>, to: ReplicaId, msg: Message, emit: &mut Vec<Emit>) {
        cx.remember_batches(&msg);
        match msg {
            Message::StopData(sd) => {
                let lie = self.lie(cx, sd);
                cx.stats.stop_lies += 1;
                let signed = cx.sign(Message::StopData(lie));
                cx.pass(to, signed, emit);
            }
            m => cx.pass(to, m, emit),
        }
    }

    fn incoming(
        &mut self,
        cx: &mut Cx<'_>,
        _from: ReplicaId,
        msg: Message,
        emit: &mut Vec<Emit>,
    ) -> Option<Message> {
        cx.remember_batches(&msg);
        self.collect_accept(cx, &msg);
        answer_misfiled(cx, &msg, emit);
        Some(msg)
    }
}

/// [`Behavior::LeaderHandoff`].
#[derive(Default)]
pub struct LeaderHandoff {
    /// The regency it last passed on.
    passed: Option<Regency>,
}

impl LeaderHandoff {
    /// As leader of a regency not yet passed on: STOP for the regency the
    /// next colluder (or the replica after this one) leads, to everyone.
    fn pass_on(&mut self, cx: &mut Cx<'_>, emit: &mut Vec<Emit>) {
        if cx.leader != cx.me || self.passed == Some(cx.regency) {
            return;
        }
        self.passed = Some(cx.regency);
        let n = cx.n as u16;
        let next = cx
            .board
            .handoff
            .iter()
            .copied()
            .find(|r| r.0 > cx.me.0)
            .or_else(|| cx.board.handoff.first().copied().filter(|r| *r != cx.me))
            .unwrap_or(ReplicaId((cx.me.0 + 1) % n));
        let ahead = (next.0 + n - cx.me.0) % n;
        let regency = cx.regency.saturating_add(Regency::from(ahead));
        cx.stats.handoffs += 1;
        for to in 0..n {
            let stop = Message::Stop(Stop {
                regency,
                replica: cx.me,
                requests: Vec::new(),
            });
            cx.emit(ReplicaId(to), stop, emit);
        }
    }
}

impl Middleware for LeaderHandoff {
    fn outgoing(&mut self, cx: &mut Cx<'_>, to: ReplicaId, msg: Message, emit: &mut Vec<Emit>) {
        self.pass_on(cx, emit);
        if matches!(msg, Message::Propose(_)) {
            cx.stats.handoffs += 1;
            return;
        }
        cx.pass(to, msg, emit);
    }

    fn incoming(
        &mut self,
        cx: &mut Cx<'_>,
        _from: ReplicaId,
        msg: Message,
        emit: &mut Vec<Emit>,
    ) -> Option<Message> {
        self.pass_on(cx, emit);
        Some(msg)
    }
}

/// [`Behavior::RequestFlood`].
pub struct RequestFlood;

impl RequestFlood {
    /// Requests in one burst, to every other replica.
    const BURST: usize = 32;
}

impl Middleware for RequestFlood {
    fn outgoing(&mut self, cx: &mut Cx<'_>, to: ReplicaId, msg: Message, emit: &mut Vec<Emit>) {
        // A burst now and then (bounded by the traffic it rides on).
        if cx.rng.chance_ppm(100_000) {
            for _ in 0..Self::BURST {
                let r = cx.junk_request("flood");
                cx.stats.flood_requests += 1;
                cx.emit(to, Message::Request(r), emit);
            }
        }
        cx.pass(to, msg, emit);
    }
}

/// Serves the batch a colluder filed under another cid to a FETCH of it.
fn answer_misfiled(cx: &mut Cx<'_>, msg: &Message, emit: &mut Vec<Emit>) {
    if let Message::Fetch(f) = msg {
        if let Some(b) = cx.board.misfiled.get(&(f.cid, f.digest)).cloned() {
            cx.stats.stop_lies += 1;
            cx.emit(
                f.replica,
                Message::Batch(BatchReply {
                    cid: f.cid,
                    batch: b,
                }),
                emit,
            );
        }
    }
}

/// [`Behavior::FutureStops`].
pub struct FutureStops;

impl FutureStops {
    fn far(cx: &mut Cx<'_>) -> Regency {
        let jump = match cx.rng.index(4) {
            0 => cx.rng.range(2, 5),
            1 => cx.rng.range(5, 100),
            2 => cx.rng.range(100, 1 << 20),
            _ => u64::from(u32::MAX - 1) - u64::from(cx.regency),
        };
        cx.regency.saturating_add(jump as u32)
    }
}

impl Middleware for FutureStops {
    fn outgoing(&mut self, cx: &mut Cx<'_>, to: ReplicaId, msg: Message, emit: &mut Vec<Emit>) {
        if cx.rng.chance_ppm(100_000) {
            cx.stats.future_stops += 1;
            let regency = Self::far(cx);
            let extra = if cx.rng.coin() {
                // A STOP for a far regency, with junk requests in it.
                let requests = (0..cx.rng.range(0, 2))
                    .map(|_| cx.junk_request("stop"))
                    .collect();
                Message::Stop(Stop {
                    regency,
                    replica: cx.me,
                    requests,
                })
            } else {
                // A normal-case vote of a far regency.
                Message::Write(Write {
                    regency,
                    cid: cx.last_decided + 1,
                    replica: cx.me,
                    digest: Digest(cx.rng.bytes32()),
                })
            };
            cx.pass(to, extra, emit);
        }
        let msg = match msg {
            Message::Stop(mut s) if cx.rng.coin() => {
                cx.stats.future_stops += 1;
                s.regency = Self::far(cx);
                Message::Stop(s)
            }
            m => m,
        };
        cx.pass(to, msg, emit);
    }
}

/// [`Behavior::BadSync`].
#[derive(Default)]
pub struct BadSync {
    /// STOPDATAs seen, by (regency, replica) (bounded).
    pool: BTreeMap<(Regency, ReplicaId), StopData>,
}

impl BadSync {
    fn keep(&mut self, sd: &StopData) {
        bounded_insert(&mut self.pool, (sd.regency, sd.replica), sd.clone());
    }
}

impl Middleware for BadSync {
    fn outgoing(&mut self, cx: &mut Cx<'_>, to: ReplicaId, msg: Message, emit: &mut Vec<Emit>) {
        let Message::Sync(mut s) = msg else {
            return cx.pass(to, msg, emit);
        };
        s.stopdata.iter().for_each(|sd| self.keep(sd));
        cx.stats.bad_syncs += 1;
        let n_f = cx.n - cx.f;
        match cx.rng.index(6) {
            // Too few.
            0 => s.stopdata.truncate(n_f - 1),
            // One of another regency.
            1 => {
                let other = self
                    .pool
                    .values()
                    .find(|sd| sd.regency != s.regency)
                    .cloned();
                match other {
                    Some(o) => {
                        let i = cx.rng.index(s.stopdata.len());
                        s.stopdata[i] = o;
                    }
                    None => s.stopdata.truncate(n_f - 1),
                }
            }
            // One replica twice.
            2 => {
                let first = s.stopdata[0].clone();
                let last = s.stopdata.len() - 1;
                s.stopdata[last] = first;
            }
            // Another sound-looking subset for this recipient.
            3 => {
                let mut all: Vec<StopData> = self
                    .pool
                    .values()
                    .filter(|sd| sd.regency == s.regency)
                    .cloned()
                    .collect();
                cx.rng.shuffle(&mut all);
                if all.len() >= n_f {
                    all.truncate(n_f);
                    all.sort_by_key(|sd| sd.replica);
                    s.stopdata = all;
                }
            }
            // None at all.
            4 => return,
            _ => {}
        }
        cx.pass(to, Message::Sync(s), emit);
    }

    fn incoming(
        &mut self,
        _cx: &mut Cx<'_>,
        _from: ReplicaId,
        msg: Message,
        _emit: &mut Vec<Emit>,
    ) -> Option<Message> {
        match &msg {
            Message::StopData(sd) => self.keep(sd),
            Message::Sync(s) => s.stopdata.iter().for_each(|sd| self.keep(sd)),
            _ => {}
        }
        Some(msg)
    }
}

/// [`Behavior::LyingTransfer`].
pub struct LyingTransfer;

impl LyingTransfer {
    /// The made-up checkpoint at `cid`, the same at every colluder.
    fn fake_checkpoint(cx: &mut Cx<'_>, cid: Cid) -> CheckpointInfo {
        if let Some(c) = cx.board.fake_checkpoints.get(&cid) {
            return *c;
        }
        let c = CheckpointInfo {
            cid,
            digest: Digest(cx.rng.bytes32()),
            len: cx.rng.range(64, 4096),
        };
        bounded_insert(&mut cx.board.fake_checkpoints, cid, c);
        c
    }

    fn twist_reply(cx: &mut Cx<'_>, mut r: StateReply) -> StateReply {
        match cx.rng.index(5) {
            // Stale: nothing decided lately, no checkpoint.
            0 => {
                r.last_decided = r.last_decided.saturating_sub(cx.rng.range(1, 50));
                r.decisions.clear();
                r.checkpoint = None;
            }
            // Truncated.
            1 => r.decisions.truncate(r.decisions.len() / 2),
            // A decision whose proof no longer verifies.
            2 => match r
                .decisions
                .first_mut()
                .and_then(|d| d.proof.accepts.first_mut())
            {
                Some(a) => a.signature.0[7] ^= 1,
                None => r.checkpoint = Some(Self::fake_checkpoint(cx, r.last_decided)),
            },
            // A made-up newer checkpoint, claimed by every colluder.
            3 => {
                let cid = r.last_decided + cx.rng.range(0, 8);
                r.checkpoint = Some(Self::fake_checkpoint(cx, cid));
                r.last_decided = r.last_decided.max(cid);
            }
            // A decision whose batch is not the one its proof names (the
            // receiver's decoder refuses the reply).
            _ => match r.decisions.first_mut() {
                Some(d) => d.batch = cx.junk_batch("transfer"),
                None => r.last_decided += 1,
            },
        }
        r
    }

    /// Junk chunks of checkpoint `c` for `to`: the manifest chunk and a
    /// few later ones, at chunk sizes a cluster may use.
    fn inject_chunks(
        cx: &mut Cx<'_>,
        to: ReplicaId,
        c: wire::CheckpointInfo,
        emit: &mut Vec<Emit>,
    ) {
        for chunk in [1024u64, wire::transfer::CHUNK_BYTES_MAX as u64] {
            for k in 0..3u64 {
                let offset = k * chunk;
                if offset >= c.len.max(1) {
                    break;
                }
                let len = (c.len - offset).min(chunk).min(4096) as usize;
                cx.stats.chunks_injected += 1;
                let bytes = (0..len).map(|_| cx.rng.range(0, 255) as u8).collect();
                let hashes = if offset == 0 {
                    junk_manifest(cx, c.len)
                } else {
                    Vec::new()
                };
                cx.emit(
                    to,
                    Message::SnapshotChunk(SnapshotChunk {
                        replica: cx.me,
                        cid: c.cid,
                        total: c.len,
                        offset,
                        bytes,
                        hashes,
                        proof: None,
                    }),
                    emit,
                );
            }
        }
    }

    fn twist_chunk(cx: &mut Cx<'_>, mut c: SnapshotChunk) -> SnapshotChunk {
        match cx.rng.index(3) {
            0 if !c.bytes.is_empty() => {
                let i = cx.rng.index(c.bytes.len());
                c.bytes[i] ^= 1 << cx.rng.range(0, 7);
            }
            1 if c.offset + (c.bytes.len() as u64) < c.total => c.offset += 1,
            _ => c.bytes.iter_mut().for_each(|b| *b = b.wrapping_add(1)),
        }
        c
    }
}

impl Middleware for LyingTransfer {
    fn outgoing(&mut self, cx: &mut Cx<'_>, to: ReplicaId, msg: Message, emit: &mut Vec<Emit>) {
        let msg = match msg {
            Message::StateReply(r) => {
                cx.stats.transfer_lies += 1;
                if let Some(c) = r.checkpoint {
                    // Chunk injection: race junk chunks of the checkpoint
                    // it reports at the replica that asked, before that
                    // replica asks anyone for them.
                    Self::inject_chunks(cx, to, c, emit);
                }
                Message::StateReply(Self::twist_reply(cx, r))
            }
            Message::SnapshotChunk(c) if cx.rng.coin() => {
                cx.stats.transfer_lies += 1;
                Message::SnapshotChunk(Self::twist_chunk(cx, c))
            }
            m => m,
        };
        cx.pass(to, msg, emit);
    }

    fn incoming(
        &mut self,
        cx: &mut Cx<'_>,
        _from: ReplicaId,
        msg: Message,
        emit: &mut Vec<Emit>,
    ) -> Option<Message> {
        // Serve junk for the made-up checkpoint if anyone asks for it.
        if let Message::SnapshotRequest(SnapshotRequest {
            replica,
            cid,
            offset,
        }) = &msg
        {
            if let Some(c) = cx.board.fake_checkpoints.get(cid).copied() {
                if *offset < c.len {
                    let len = (c.len - offset).min(1024) as usize;
                    let bytes = (0..len).map(|_| cx.rng.range(0, 255) as u8).collect();
                    cx.stats.transfer_lies += 1;
                    let manifest = junk_manifest(cx, c.len);
                    cx.emit(
                        *replica,
                        Message::SnapshotChunk(SnapshotChunk {
                            replica: cx.me,
                            cid: *cid,
                            total: c.len,
                            offset: *offset,
                            bytes,
                            hashes: if *offset == 0 { manifest } else { Vec::new() },
                            proof: None,
                        }),
                        emit,
                    );
                }
            }
        }
        Some(msg)
    }
}

/// [`Behavior::WrongBatch`].
pub struct WrongBatch;

impl Middleware for WrongBatch {
    fn outgoing(&mut self, cx: &mut Cx<'_>, to: ReplicaId, msg: Message, emit: &mut Vec<Emit>) {
        let msg = match msg {
            Message::Batch(b) => {
                cx.stats.wrong_batches += 1;
                Message::Batch(BatchReply {
                    cid: b.cid,
                    batch: cx.junk_batch("wrong-batch"),
                })
            }
            m => m,
        };
        cx.pass(to, msg, emit);
    }

    fn incoming(
        &mut self,
        cx: &mut Cx<'_>,
        _from: ReplicaId,
        msg: Message,
        emit: &mut Vec<Emit>,
    ) -> Option<Message> {
        if let Message::Fetch(f) = &msg {
            cx.stats.wrong_batches += 1;
            let batch = if cx.rng.coin() {
                cx.junk_batch("wrong-batch")
            } else {
                // A real batch of another instance, if one is known.
                cx.board
                    .batches
                    .values()
                    .next_back()
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Batch::new(vec![])))
            };
            cx.emit(
                f.replica,
                Message::Batch(BatchReply { cid: f.cid, batch }),
                emit,
            );
        }
        cx.remember_batches(&msg);
        Some(msg)
    }
}
