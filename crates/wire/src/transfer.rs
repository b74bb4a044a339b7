//! State transfer messages (BFT-SMaRt DSN'14 Sec. III-D): a replica that is
//! behind asks every replica for its state; decisions travel with their
//! proofs (self-verifying), and a checkpoint is trusted once f+1 replicas
//! report the same digest for it, then fetched in chunks and checked
//! against that digest.

use std::sync::Arc;

use crate::codec::{DecodeError, Reader, Writer};
use crate::hash::Digest;
use crate::ids::{Cid, Regency, ReplicaId};
use crate::message::{Batch, Limits};
use crate::sync::DecisionProof;

/// Largest snapshot chunk, bytes.
pub const CHUNK_BYTES_MAX: usize = 1 << 20;

/// Most chunk digests a checkpoint's manifest lists (a 64 GiB snapshot in
/// 1 MiB chunks).
pub const CHUNKS_MAX: usize = 1 << 16;

/// STATE_REQUEST: `replica` has delivered up to `from_cid - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateRequest {
    pub replica: ReplicaId,
    pub from_cid: Cid,
}

/// A checkpoint as reported by a replica: taken after delivering `cid`,
/// `len` bytes, digest `digest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointInfo {
    pub cid: Cid,
    pub digest: Digest,
    pub len: u64,
}

/// One decided instance with its proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub batch: Arc<Batch>,
    pub proof: DecisionProof,
}

/// STATE_REPLY from `replica`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateReply {
    pub replica: ReplicaId,
    pub regency: Regency,
    /// Highest instance `replica` delivered.
    pub last_decided: Cid,
    /// Its newest checkpoint.
    pub checkpoint: Option<CheckpointInfo>,
    /// Decisions it holds from the requested cid on, ascending and
    /// consecutive (bounded by the message size).
    pub decisions: Vec<Decided>,
}

/// SNAPSHOT_REQUEST: `replica` wants bytes `offset..` of checkpoint `cid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotRequest {
    pub replica: ReplicaId,
    pub cid: Cid,
    pub offset: u64,
}

/// SNAPSHOT_CHUNK from `replica`: bytes `offset..offset+bytes.len()` of the
/// body of checkpoint `cid` (`total` bytes in all).
///
/// The chunk at offset 0 also carries the checkpoint's manifest — the digest
/// of every chunk, whose hash is the checkpoint digest f+1 replicas agreed on
/// (`control::checkpoint`) — and the decision proof of `cid` (checked by the
/// verifier like every proof), so each later chunk is checked on arrival and
/// a bad one blames its sender alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub replica: ReplicaId,
    pub cid: Cid,
    pub total: u64,
    pub offset: u64,
    pub bytes: Vec<u8>,
    /// The manifest (offset 0 only; empty otherwise). At most
    /// [`CHUNKS_MAX`].
    pub hashes: Vec<Digest>,
    /// The decision proof of `cid` (offset 0 only; none for cid 0).
    pub proof: Option<DecisionProof>,
}

impl StateReply {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u16(self.replica.0);
        w.u32(self.regency);
        w.u64(self.last_decided);
        match &self.checkpoint {
            None => w.bool(false),
            Some(c) => {
                w.bool(true);
                w.u64(c.cid);
                w.raw(&c.digest.0);
                w.u64(c.len);
            }
        }
        w.count(self.decisions.len());
        for d in &self.decisions {
            d.batch.encode(w);
            d.proof.encode(w);
        }
    }
    pub(crate) fn decode(r: &mut Reader<'_>, limits: &Limits) -> Result<Self, DecodeError> {
        let replica = ReplicaId(r.u16()?);
        let regency = r.u32()?;
        let last_decided = r.u64()?;
        let checkpoint = if r.bool()? {
            Some(CheckpointInfo {
                cid: r.u64()?,
                digest: Digest(r.array()?),
                len: r.u64()?,
            })
        } else {
            None
        };
        let n = r.count(
            "STATE_REPLY decisions",
            limits.state_reply_decisions_max,
            48,
        )?;
        let mut decisions: Vec<Decided> = Vec::with_capacity(n);
        for _ in 0..n {
            let batch = Arc::new(Batch::decode(r, limits)?);
            let proof = DecisionProof::decode(r, limits)?;
            if proof.digest != batch.digest() {
                return Err(DecodeError::Invalid(
                    "STATE_REPLY batch does not match its proof",
                ));
            }
            if decisions
                .last()
                .is_some_and(|p| p.proof.cid + 1 != proof.cid)
            {
                return Err(DecodeError::Invalid(
                    "STATE_REPLY decisions not consecutive",
                ));
            }
            decisions.push(Decided { batch, proof });
        }
        Ok(Self {
            replica,
            regency,
            last_decided,
            checkpoint,
            decisions,
        })
    }
}

impl SnapshotChunk {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u16(self.replica.0);
        w.u64(self.cid);
        w.u64(self.total);
        w.u64(self.offset);
        w.bytes(&self.bytes);
        w.count(self.hashes.len());
        for h in &self.hashes {
            w.raw(&h.0);
        }
        match &self.proof {
            None => w.bool(false),
            Some(p) => {
                w.bool(true);
                p.encode(w);
            }
        }
    }
    pub(crate) fn decode(r: &mut Reader<'_>, limits: &Limits) -> Result<Self, DecodeError> {
        let replica = ReplicaId(r.u16()?);
        let cid = r.u64()?;
        let total = r.u64()?;
        let offset = r.u64()?;
        let bytes = r.bytes("snapshot chunk", CHUNK_BYTES_MAX)?.to_vec();
        if offset
            .checked_add(bytes.len() as u64)
            .is_none_or(|end| end > total)
        {
            return Err(DecodeError::Invalid("snapshot chunk beyond its total"));
        }
        let n = r.count("snapshot manifest", CHUNKS_MAX, 32)?;
        let hashes: Vec<Digest> = (0..n)
            .map(|_| Ok(Digest(r.array()?)))
            .collect::<Result<_, DecodeError>>()?;
        let proof = if r.bool()? {
            Some(DecisionProof::decode(r, limits)?)
        } else {
            None
        };
        if offset != 0 && (!hashes.is_empty() || proof.is_some()) {
            return Err(DecodeError::Invalid("manifest outside the first chunk"));
        }
        if proof.as_ref().is_some_and(|p| p.cid != cid) {
            return Err(DecodeError::Invalid("snapshot proof for another cid"));
        }
        Ok(Self {
            replica,
            cid,
            total,
            offset,
            bytes,
            hashes,
            proof,
        })
    }
}
