//! State transfer, the requesting side (BFT-SMaRt DSN'14 Sec. III-D).
//!
//! A replica that is behind asks every other replica for its state. Each
//! answers with its newest checkpoint (cid, digest, length) and the
//! decisions it holds from the requested cid on, each with its decision
//! proof — those are self-verifying, so one reply suffices to continue
//! the log. When the gap reaches below every reply's decisions, the replica
//! needs a checkpoint: it trusts the newest one that f+1 replicas report
//! with the same digest (at least one of them is correct), fetches it in
//! chunks from one of those replicas (the next one on a timeout or a bad
//! chunk), checking every chunk against the checkpoint's manifest
//! ([`crate::checkpoint`]) on arrival.

use std::collections::BTreeMap;

use wire::{
    CheckpointInfo, Cid, Decided, DecisionProof, Digest, ReplicaId, SnapshotChunk, StateReply,
};

/// A checkpoint being fetched: the body in chunks of `chunk_bytes`, each
/// checked against the manifest on arrival.
///
/// Only chunks from the current source at the next offset are looked at, so
/// a replica that races chunks it was not asked for changes nothing. The
/// first chunk brings the manifest, checked against the digest f+1
/// replicas reported (`info.digest`); a chunk that does not match its hash,
/// or a manifest that does not match the digest, blames the source alone:
/// the transfer moves to the next source and keeps the verified prefix.
#[derive(Debug)]
pub(crate) struct Assembly {
    pub info: CheckpointInfo,
    /// Replicas that reported this checkpoint, in the order tried.
    pub sources: Vec<ReplicaId>,
    pub source: usize,
    pub chunk_bytes: usize,
    /// The verified manifest and decision proof (from the first chunk).
    pub manifest: Option<(Vec<Digest>, Option<DecisionProof>)>,
    /// The verified prefix of the body.
    pub bytes: Vec<u8>,
}

/// What one chunk did to an assembly.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChunkOutcome {
    /// Not from the current source, for another checkpoint, or not the
    /// next offset (late, duplicated or unrequested): ignored.
    Ignored,
    /// Verified and appended; ask for the next offset.
    More,
    /// Verified and appended; the body is complete.
    Complete,
    /// The source sent a chunk or manifest that does not verify.
    Bad,
}

impl Assembly {
    pub fn new(info: CheckpointInfo, sources: Vec<ReplicaId>, chunk_bytes: usize) -> Self {
        assert!(!sources.is_empty() && chunk_bytes > 0);
        Self {
            info,
            sources,
            source: 0,
            chunk_bytes,
            manifest: None,
            bytes: Vec::new(),
        }
    }

    pub fn current_source(&self) -> ReplicaId {
        self.sources[self.source % self.sources.len()]
    }

    /// Switches to the next source (after a timeout or a bad chunk); the
    /// verified prefix stays.
    pub fn next_source(&mut self) {
        self.source += 1;
    }

    /// The offset to ask for next.
    pub fn offset(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Checks a chunk and appends it if it verifies.
    pub fn add(&mut self, c: SnapshotChunk) -> ChunkOutcome {
        if c.replica != self.current_source()
            || c.cid != self.info.cid
            || c.total != self.info.len
            || c.offset != self.offset()
        {
            return ChunkOutcome::Ignored;
        }
        if self.manifest.is_none() {
            let chunks = crate::checkpoint::chunks_of(self.info.len, self.chunk_bytes);
            let digest =
                crate::checkpoint::manifest_digest(self.info.len, self.chunk_bytes, &c.hashes);
            if c.hashes.len() as u64 != chunks
                || digest != self.info.digest
                || (self.info.cid > 0 && c.proof.is_none())
            {
                return ChunkOutcome::Bad;
            }
            self.manifest = Some((c.hashes, c.proof));
        }
        let (hashes, _) = self.manifest.as_ref().expect("set above");
        if self.offset() < self.info.len {
            let i = (self.offset() / self.chunk_bytes as u64) as usize;
            let want = (self.info.len - self.offset()).min(self.chunk_bytes as u64);
            if c.bytes.len() as u64 != want || wire::hash::digest(&c.bytes) != hashes[i] {
                return ChunkOutcome::Bad;
            }
            self.bytes.extend_from_slice(&c.bytes);
        } else if !c.bytes.is_empty() {
            return ChunkOutcome::Bad;
        }
        assert!(self.offset() <= self.info.len);
        if self.offset() == self.info.len {
            ChunkOutcome::Complete
        } else {
            ChunkOutcome::More
        }
    }

    /// The verified body, manifest and proof, once complete.
    pub fn take(&mut self) -> (Vec<u8>, Vec<Digest>, Option<DecisionProof>) {
        assert_eq!(self.offset(), self.info.len);
        let (hashes, proof) = self.manifest.take().expect("complete implies a manifest");
        (std::mem::take(&mut self.bytes), hashes, proof)
    }
}

/// A state transfer in progress.
#[derive(Debug)]
pub(crate) struct Transfer {
    /// Catch up at least to this cid.
    pub target: Cid,
    pub last_request_tick: u64,
    /// The newest reply from each replica.
    pub replies: BTreeMap<ReplicaId, StateReply>,
    pub assembly: Option<Assembly>,
}

impl Transfer {
    pub fn new(target: Cid, tick: u64) -> Self {
        Self {
            target,
            last_request_tick: tick,
            replies: BTreeMap::new(),
            assembly: None,
        }
    }

    /// The decision for `cid` from any reply, if one holds it.
    pub fn decision(&self, cid: Cid) -> Option<&Decided> {
        self.replies.values().find_map(|r| {
            let first = r.decisions.first()?.proof.cid;
            let i = cid.checked_sub(first)? as usize;
            r.decisions.get(i)
        })
    }

    /// The newest checkpoint above `above` that at least `k` replies report
    /// with the same digest and length, and who reported it.
    pub fn trusted_checkpoint(
        &self,
        above: Cid,
        k: usize,
    ) -> Option<(CheckpointInfo, Vec<ReplicaId>)> {
        let mut groups: BTreeMap<(Cid, [u8; 32], u64), Vec<ReplicaId>> = BTreeMap::new();
        for r in self.replies.values() {
            if let Some(c) = r.checkpoint.filter(|c| c.cid > above) {
                groups
                    .entry((c.cid, c.digest.0, c.len))
                    .or_default()
                    .push(r.replica);
            }
        }
        groups
            .into_iter()
            .rev()
            .find(|(_, who)| who.len() >= k)
            .map(|((cid, digest, len), who)| {
                (
                    CheckpointInfo {
                        cid,
                        digest: wire::Digest(digest),
                        len,
                    },
                    who,
                )
            })
    }

    /// The `k`-th highest last-decided cid the replies report (at least
    /// one correct replica has it when `k` is f+1); 0 with fewer replies.
    pub fn kth_highest_reported(&self, k: usize) -> Cid {
        let mut v: Vec<Cid> = self.replies.values().map(|r| r.last_decided).collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        v.get(k.saturating_sub(1)).copied().unwrap_or(0)
    }
}
