//! The checkpoint blob: everything a replica needs to resume after
//! delivering `cid` — the decision proof of `cid`, the de-duplication table,
//! and the application snapshot (the kv store's own encoding, opaque here).
//! Replicas compare checkpoints by [`digest`], which covers the
//! deterministic part only — cid, client table, application state — and
//! not the proof (each replica holds its own quorum of ACCEPTs, so proofs
//! differ between correct replicas).
//!
//! Layout (wire::codec): magic "BFTDCKPT", version u8, cid u64, client
//! table, app bytes (u64 length + bytes) — the digested body — then the
//! proof (optional) as a trailer.

use wire::codec::{DecodeError, Reader, Writer};
use wire::{Cid, DecisionProof, Limits};

use crate::clients::ClientTable;

const MAGIC: &[u8; 8] = b"BFTDCKPT";
const VERSION: u8 = 1;

/// A decoded checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub cid: Cid,
    /// Proof that `cid` was decided (`None` only for cid 0).
    pub proof: Option<DecisionProof>,
    pub clients: ClientTable,
    /// The application (kv) snapshot.
    pub app: Vec<u8>,
}

/// Encodes a checkpoint blob.
pub fn encode(
    cid: Cid,
    proof: Option<&DecisionProof>,
    clients: &ClientTable,
    app: &[u8],
) -> Vec<u8> {
    let mut w = Writer::with_capacity(app.len() + 1024);
    w.raw(MAGIC);
    w.u8(VERSION);
    w.u64(cid);
    clients.encode(&mut w);
    w.u64(app.len() as u64);
    w.raw(app);
    let body = w.len() as u64;
    w.bool(proof.is_some());
    if let Some(p) = proof {
        encode_proof(&mut w, p);
    }
    w.u64(body);
    w.into_vec()
}

/// The digest replicas compare: of the body (everything but the proof
/// trailer). `None` if the blob is too short to hold its trailer length.
pub fn digest(blob: &[u8]) -> Option<wire::Digest> {
    let body = blob_body_len(blob)?;
    Some(wire::hash::digest(&blob[..body]))
}

fn blob_body_len(blob: &[u8]) -> Option<usize> {
    let tail: [u8; 8] = blob.get(blob.len().checked_sub(8)?..)?.try_into().ok()?;
    let body = usize::try_from(u64::from_be_bytes(tail)).ok()?;
    (body <= blob.len() - 8).then_some(body)
}

fn encode_proof(w: &mut Writer, p: &DecisionProof) {
    w.u64(p.cid);
    w.raw(&p.digest.0);
    w.count(p.accepts.len());
    for a in &p.accepts {
        w.u32(a.regency);
        w.u64(a.cid);
        w.u16(a.replica.0);
        w.raw(&a.digest.0);
        w.raw(&a.signature.0);
    }
}

fn decode_proof(r: &mut Reader<'_>, replicas_max: usize) -> Result<DecisionProof, DecodeError> {
    let cid = r.u64()?;
    let digest = wire::Digest(r.array()?);
    let n = r.count("checkpoint proof", replicas_max, 110)?;
    let mut accepts = Vec::with_capacity(n);
    for _ in 0..n {
        accepts.push(wire::Accept {
            regency: r.u32()?,
            cid: r.u64()?,
            replica: wire::ReplicaId(r.u16()?),
            digest: wire::Digest(r.array()?),
            signature: wire::Signature(r.array()?),
        });
    }
    Ok(DecisionProof {
        cid,
        digest,
        accepts,
    })
}

/// Decodes a checkpoint blob (from disk or from state transfer, after its
/// digest was checked). Errors on any malformed byte; never panics.
pub fn decode(
    bytes: &[u8],
    limits: &Limits,
    clients_max: usize,
) -> Result<Checkpoint, DecodeError> {
    let body = blob_body_len(bytes).ok_or(DecodeError::Invalid("checkpoint trailer"))?;
    let mut r = Reader::new(&bytes[..body]);
    if r.raw(8)? != MAGIC {
        return Err(DecodeError::Invalid("checkpoint magic"));
    }
    let v = r.u8()?;
    if v != VERSION {
        return Err(DecodeError::BadVersion(v));
    }
    let cid = r.u64()?;
    let clients = ClientTable::decode(&mut r, clients_max)?;
    let len = r.u64()?;
    let app = r
        .raw(usize::try_from(len).map_err(|_| DecodeError::Invalid("app length"))?)?
        .to_vec();
    r.finish()?;
    let mut t = Reader::new(&bytes[body..bytes.len() - 8]);
    let proof = if t.bool()? {
        Some(decode_proof(&mut t, limits.replicas_max)?)
    } else {
        None
    };
    t.finish()?;
    if proof.as_ref().is_some_and(|p| p.cid != cid) {
        return Err(DecodeError::Invalid("checkpoint proof is for another cid"));
    }
    Ok(Checkpoint {
        cid,
        proof,
        clients,
        app,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let mut clients = ClientTable::default();
        clients.mark_executed(wire::ClientId(3), 9);
        let proof = DecisionProof {
            cid: 7,
            digest: wire::Digest([1; 32]),
            accepts: vec![],
        };
        let blob = encode(7, Some(&proof), &clients, b"app state");
        let c = decode(&blob, &Limits::default(), 16).unwrap();
        assert_eq!(
            (c.cid, c.proof, c.clients, c.app),
            (7, Some(proof), clients, b"app state".to_vec())
        );
        for cut in 0..blob.len() {
            assert!(decode(&blob[..cut], &Limits::default(), 16).is_err());
        }
        let mut bad = blob.clone();
        bad[8] = 9;
        assert_eq!(
            decode(&bad, &Limits::default(), 16),
            Err(DecodeError::BadVersion(9))
        );
    }
}
