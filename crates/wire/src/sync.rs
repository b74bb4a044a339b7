//! Messages of the synchronization phase (leader change) and of batch
//! fetching.
//!
//! Mod-SMaRt's synchronization phase (Sousa & Bessani 2012, Sec. 5;
//! BFT-SMaRt DSN'14 Sec. III-C), after Cachin's "Yet another visit to
//! Paxos" (conditional collect):
//! - STOP(r): "install regency r" — sent after a request timeout, or on
//!   joining f+1 others; carries the timed-out requests so every replica
//!   learns them. 2f+1 STOPs install r.
//! - STOPDATA(r): sent to the leader of r, signed: this replica's last
//!   decided instance (with its proof) and, for every open instance, the
//!   value it accepted (with the regency), the values it wrote, and a
//!   decision proof if it holds one.
//! - SYNC(r): the new leader's collection of n-f signed STOPDATAs. Every
//!   replica computes the same values to keep from it.
//! - FETCH / BATCH: a replica that lacks the batch of a digest it must
//!   write asks for it; the digest authenticates the answer.

use std::sync::Arc;

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::Signature;
use crate::hash::Digest;
use crate::ids::{Cid, Regency, ReplicaId};
use crate::message::{Accept, Batch, Limits, Request};

/// Most values one STOPDATA reports as written for one instance.
pub const WRITTEN_MAX: usize = 8;

/// STOP(regency): `replica` asks to install `regency`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub regency: Regency,
    pub replica: ReplicaId,
    /// Requests that timed out at `replica` (so the new leader orders them).
    pub requests: Vec<Request>,
}

/// A decision proof: a Byzantine quorum of signed ACCEPTs for one
/// `(cid, digest)` in one regency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionProof {
    pub cid: Cid,
    pub digest: Digest,
    pub accepts: Vec<Accept>,
}

/// What a replica reports about one open (undelivered) instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenVote {
    pub cid: Cid,
    /// The value it last accepted (sent ACCEPT for), and in which regency:
    /// Cachin's `(valts, val)`.
    pub accepted: Option<(Regency, Digest)>,
    /// Values it wrote (sent WRITE for) with their regencies, newest last:
    /// Cachin's `writeset`. At most [`WRITTEN_MAX`].
    pub written: Vec<(Regency, Digest)>,
    /// A decision proof, if it saw a quorum of ACCEPTs for this instance.
    pub decided: Option<DecisionProof>,
}

/// STOPDATA(regency), signed by `replica`, sent to the leader of `regency`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopData {
    pub regency: Regency,
    pub replica: ReplicaId,
    /// Highest instance delivered by `replica`.
    pub last_decided: Cid,
    /// The proof of `last_decided` (none when it is 0 or only known from a
    /// checkpoint).
    pub last_decided_proof: Option<DecisionProof>,
    /// Open instances above `last_decided`, ascending by cid.
    pub open: Vec<OpenVote>,
    /// Decision proofs of instances delivered just below `last_decided`
    /// (ascending, each cid below `last_decided`): with pipelining a proof
    /// of `last_decided` says nothing of the cids below it, so a replica
    /// ahead of the others shows what it delivered there (see
    /// `control::sync::plan`). At most `Limits::instances_max`.
    pub recent: Vec<DecisionProof>,
    pub signature: Signature,
}

/// SYNC(regency): the collected STOPDATAs, sent by the leader of `regency`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sync {
    pub regency: Regency,
    pub leader: ReplicaId,
    pub stopdata: Vec<StopData>,
}

/// FETCH: `replica` asks for the batch of `(cid, digest)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetch {
    pub cid: Cid,
    pub digest: Digest,
    pub replica: ReplicaId,
}

/// BATCH: an answer to a FETCH. The receiver checks the digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchReply {
    pub cid: Cid,
    pub batch: Arc<Batch>,
}

pub(crate) fn encode_accept_body(w: &mut Writer, a: &Accept) {
    w.u32(a.regency);
    w.u64(a.cid);
    w.u16(a.replica.0);
    w.raw(&a.digest.0);
    w.raw(&a.signature.0);
}

pub(crate) fn decode_accept_body(r: &mut Reader<'_>) -> Result<Accept, DecodeError> {
    Ok(Accept {
        regency: r.u32()?,
        cid: r.u64()?,
        replica: ReplicaId(r.u16()?),
        digest: Digest(r.array()?),
        signature: Signature(r.array()?),
    })
}

const ACCEPT_LEN: usize = 4 + 8 + 2 + 32 + 64;

impl DecisionProof {
    /// The encoding of the proof alone (for log records).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(44 + self.accepts.len() * ACCEPT_LEN);
        self.encode(&mut w);
        w.into_vec()
    }
    /// Decodes [`DecisionProof::to_bytes`]; errors on any malformed byte.
    pub fn from_bytes(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let p = Self::decode(&mut r, limits)?;
        r.finish()?;
        Ok(p)
    }
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u64(self.cid);
        w.raw(&self.digest.0);
        w.count(self.accepts.len());
        for a in &self.accepts {
            encode_accept_body(w, a);
        }
    }
    pub(crate) fn decode(r: &mut Reader<'_>, limits: &Limits) -> Result<Self, DecodeError> {
        let cid = r.u64()?;
        let digest = Digest(r.array()?);
        let n = r.count("proof", limits.replicas_max, ACCEPT_LEN)?;
        let accepts = (0..n)
            .map(|_| decode_accept_body(r))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            cid,
            digest,
            accepts,
        })
    }
}

fn encode_opt_proof(w: &mut Writer, p: &Option<DecisionProof>) {
    match p {
        None => w.bool(false),
        Some(p) => {
            w.bool(true);
            p.encode(w);
        }
    }
}

fn decode_opt_proof(
    r: &mut Reader<'_>,
    limits: &Limits,
) -> Result<Option<DecisionProof>, DecodeError> {
    Ok(if r.bool()? {
        Some(DecisionProof::decode(r, limits)?)
    } else {
        None
    })
}

impl OpenVote {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.cid);
        match &self.accepted {
            None => w.bool(false),
            Some((reg, d)) => {
                w.bool(true);
                w.u32(*reg);
                w.raw(&d.0);
            }
        }
        w.count(self.written.len());
        for (reg, d) in &self.written {
            w.u32(*reg);
            w.raw(&d.0);
        }
        encode_opt_proof(w, &self.decided);
    }
    fn decode(r: &mut Reader<'_>, limits: &Limits) -> Result<Self, DecodeError> {
        let cid = r.u64()?;
        let accepted = if r.bool()? {
            Some((r.u32()?, Digest(r.array()?)))
        } else {
            None
        };
        let n = r.count("written values", WRITTEN_MAX, 36)?;
        let written = (0..n)
            .map(|_| Ok((r.u32()?, Digest(r.array()?))))
            .collect::<Result<_, DecodeError>>()?;
        let decided = decode_opt_proof(r, limits)?;
        if decided.as_ref().is_some_and(|p| p.cid != cid) {
            return Err(DecodeError::Invalid(
                "decision proof filed under another cid",
            ));
        }
        Ok(Self {
            cid,
            accepted,
            written,
            decided,
        })
    }
}

impl StopData {
    /// The encoding of every field but the signature (what is signed, via
    /// its digest).
    pub fn body(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64 + self.open.len() * 64);
        self.encode_body(&mut w);
        w.into_vec()
    }
    fn encode_body(&self, w: &mut Writer) {
        w.u32(self.regency);
        w.u16(self.replica.0);
        w.u64(self.last_decided);
        encode_opt_proof(w, &self.last_decided_proof);
        w.count(self.open.len());
        for o in &self.open {
            o.encode(w);
        }
        w.count(self.recent.len());
        for p in &self.recent {
            p.encode(w);
        }
    }
    pub(crate) fn encode(&self, w: &mut Writer) {
        self.encode_body(w);
        w.raw(&self.signature.0);
    }
    pub(crate) fn decode(r: &mut Reader<'_>, limits: &Limits) -> Result<Self, DecodeError> {
        let regency = r.u32()?;
        let replica = ReplicaId(r.u16()?);
        let last_decided = r.u64()?;
        let last_decided_proof = decode_opt_proof(r, limits)?;
        if last_decided_proof
            .as_ref()
            .is_some_and(|p| p.cid != last_decided)
        {
            return Err(DecodeError::Invalid("last decision proof for another cid"));
        }
        let n = r.count("open instances", limits.instances_max, 10)?;
        let mut open: Vec<OpenVote> = Vec::with_capacity(n);
        for _ in 0..n {
            let o = OpenVote::decode(r, limits)?;
            if open.last().is_some_and(|p| p.cid >= o.cid) || o.cid <= last_decided {
                return Err(DecodeError::Invalid("STOPDATA open instances order"));
            }
            open.push(o);
        }
        let n = r.count("recent decisions", limits.instances_max, 44)?;
        let mut recent: Vec<DecisionProof> = Vec::with_capacity(n);
        for _ in 0..n {
            let p = DecisionProof::decode(r, limits)?;
            if recent.last().is_some_and(|q| q.cid >= p.cid) || p.cid >= last_decided {
                return Err(DecodeError::Invalid("STOPDATA recent decisions order"));
            }
            recent.push(p);
        }
        let signature = Signature(r.array()?);
        Ok(Self {
            regency,
            replica,
            last_decided,
            last_decided_proof,
            open,
            recent,
            signature,
        })
    }
}

impl Stop {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u32(self.regency);
        w.u16(self.replica.0);
        w.count(self.requests.len());
        for r in &self.requests {
            r.encode(w);
        }
    }
    pub(crate) fn decode(r: &mut Reader<'_>, limits: &Limits) -> Result<Self, DecodeError> {
        let regency = r.u32()?;
        let replica = ReplicaId(r.u16()?);
        let n = r.count(
            "STOP requests",
            limits.batch_requests_max,
            Request::ENCODED_MIN,
        )?;
        let requests = (0..n)
            .map(|_| Request::decode(r, limits))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            regency,
            replica,
            requests,
        })
    }
}

impl Sync {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u32(self.regency);
        w.u16(self.leader.0);
        w.count(self.stopdata.len());
        for s in &self.stopdata {
            s.encode(w);
        }
    }
    pub(crate) fn decode(r: &mut Reader<'_>, limits: &Limits) -> Result<Self, DecodeError> {
        let regency = r.u32()?;
        let leader = ReplicaId(r.u16()?);
        let n = r.count("SYNC stopdata", limits.replicas_max, 80)?;
        let stopdata = (0..n)
            .map(|_| StopData::decode(r, limits))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            regency,
            leader,
            stopdata,
        })
    }
}
