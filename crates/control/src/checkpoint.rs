//! The checkpoint blob: everything a replica needs to resume after
//! delivering `cid` — the decision proof of `cid`, the de-duplication table,
//! and the application snapshot (the kv store's own encoding, opaque here).
//! Replicas compare checkpoints by [`digest`], which covers the
//! deterministic part only — cid, client table, application state (the
//! *body*) — and not the proof (each replica holds its own quorum of
//! ACCEPTs, so proofs differ between correct replicas).
//!
//! The digest is a hash over the body's *manifest*: the hash of every
//! `chunk_bytes` slice of the body, in order. State transfer ships the
//! manifest first and checks each chunk against it on arrival, so one
//! Byzantine source can neither slip a bad chunk in nor make the receiver
//! throw away what it already verified (DSN'14 Sec. III-D fetches the state
//! from one replica and checks the hash from f+1; chunking the hash keeps
//! that check per chunk). The proof trailer travels beside the body and is
//! checked by the verifier like every decision proof.
//!
//! Layout (wire::codec): magic "BFTDCKPT", version u8, cid u64, client
//! table, app bytes (u64 length + bytes) — the digested body — then the
//! proof (optional) as a trailer, then the body length (u64).

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

/// The digest replicas compare, of a whole blob: over the manifest of its
/// body (everything but the proof trailer) cut in `chunk_bytes` slices.
/// `None` if the blob is too short to hold its trailer length.
pub fn digest(blob: &[u8], chunk_bytes: usize) -> Option<wire::Digest> {
    let body = blob_body_len(blob)?;
    let hashes = chunk_hashes(&blob[..body], chunk_bytes);
    Some(manifest_digest(body as u64, chunk_bytes, &hashes))
}

/// The hash of every `chunk_bytes` slice of `body`, in order (the last one
/// may be shorter; none for an empty body).
///
/// # Panics
/// If `chunk_bytes` is 0 (a config invariant).
pub fn chunk_hashes(body: &[u8], chunk_bytes: usize) -> Vec<wire::Digest> {
    assert!(chunk_bytes > 0);
    body.chunks(chunk_bytes).map(wire::hash::digest).collect()
}

/// The checkpoint digest from a manifest: the hash of the body length, the
/// chunk size and every chunk hash. A manifest of the wrong length for
/// `body_len` cannot match a digest made by [`digest`].
pub fn manifest_digest(body_len: u64, chunk_bytes: usize, hashes: &[wire::Digest]) -> wire::Digest {
    let mut w = Writer::with_capacity(16 + 32 * hashes.len());
    w.raw(b"BFTDMANI");
    w.u64(body_len);
    w.u64(chunk_bytes as u64);
    for h in hashes {
        w.raw(&h.0);
    }
    wire::hash::digest(&w.into_vec())
}

/// Number of chunks of a body of `body_len` bytes.
pub fn chunks_of(body_len: u64, chunk_bytes: usize) -> u64 {
    body_len.div_ceil(chunk_bytes as u64)
}

/// A checkpoint ready to serve: its info (with `len` the *body* length, what
/// state transfer ships), the stored blob, the manifest and the proof read
/// from the blob's trailer. Made by the host with [`prepare`] (hashing the
/// whole body, off the control thread) and handed to
/// [`crate::Replica::on_checkpoint`].
#[derive(Debug, Clone)]
pub struct Prepared {
    pub info: wire::CheckpointInfo,
    pub blob: std::sync::Arc<Vec<u8>>,
    pub hashes: std::sync::Arc<Vec<wire::Digest>>,
    pub proof: Option<DecisionProof>,
}

impl Prepared {
    /// The body (what the digest covers and state transfer ships).
    pub fn body(&self) -> &[u8] {
        &self.blob[..self.info.len as usize]
    }
}

/// The body length of a blob and a reader past its magic and version.
fn open_body(blob: &[u8]) -> Result<(usize, Reader<'_>), DecodeError> {
    let body = blob_body_len(blob).ok_or(DecodeError::Invalid("checkpoint trailer"))?;
    let mut r = Reader::new(&blob[..body]);
    if r.raw(8)? != MAGIC {
        return Err(DecodeError::Invalid("checkpoint magic"));
    }
    let v = r.u8()?;
    if v != VERSION {
        return Err(DecodeError::BadVersion(v));
    }
    Ok((body, r))
}

/// Checks a blob (made by [`encode`], or read back from disk) and computes
/// its manifest and digest. Errors on a malformed blob; never panics.
pub fn prepare(blob: Vec<u8>, chunk_bytes: usize) -> Result<Prepared, DecodeError> {
    let (body, mut r) = open_body(&blob)?;
    let cid = r.u64()?;
    let proof = decode_trailer(&blob[body..blob.len() - 8], Limits::default().replicas_max)?;
    if proof.as_ref().is_some_and(|p| p.cid != cid) {
        return Err(DecodeError::Invalid("checkpoint proof is for another cid"));
    }
    let hashes = chunk_hashes(&blob[..body], chunk_bytes);
    let info = wire::CheckpointInfo {
        cid,
        digest: manifest_digest(body as u64, chunk_bytes, &hashes),
        len: body as u64,
    };
    Ok(Prepared {
        info,
        blob: std::sync::Arc::new(blob),
        hashes: std::sync::Arc::new(hashes),
        proof,
    })
}

/// A blob from a body fetched by state transfer and the (verified) proof
/// that came with it: the body followed by the proof trailer.
pub fn with_proof(mut body: Vec<u8>, proof: Option<&DecisionProof>) -> Vec<u8> {
    let len = body.len() as u64;
    let mut w = Writer::with_capacity(64 + proof.map_or(0, |p| 110 * p.accepts.len()));
    w.bool(proof.is_some());
    if let Some(p) = proof {
        encode_proof(&mut w, p);
    }
    w.u64(len);
    body.extend_from_slice(&w.into_vec());
    body
}

fn decode_trailer(t: &[u8], replicas_max: usize) -> Result<Option<DecisionProof>, DecodeError> {
    let mut t = Reader::new(t);
    let proof = if t.bool()? {
        Some(decode_proof(&mut t, replicas_max)?)
    } else {
        None
    };
    t.finish()?;
    Ok(proof)
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
    let (body, mut r) = open_body(bytes)?;
    let cid = r.u64()?;
    let clients = ClientTable::decode(&mut r, clients_max)?;
    let len = r.u64()?;
    let app = r
        .raw(usize::try_from(len).map_err(|_| DecodeError::Invalid("app length"))?)?
        .to_vec();
    r.finish()?;
    let proof = decode_trailer(&bytes[body..bytes.len() - 8], limits.replicas_max)?;
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

    #[test]
    fn the_digest_covers_every_chunk_of_the_body_but_not_the_proof() {
        let clients = ClientTable::default();
        let app: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let proof = DecisionProof {
            cid: 5,
            digest: wire::Digest([1; 32]),
            accepts: vec![],
        };
        let with = encode(5, Some(&proof), &clients, &app);
        let without = encode(5, None, &clients, &app);
        let p = prepare(with.clone(), 1000).unwrap();
        assert_eq!(p.proof, Some(proof.clone()));
        assert_eq!(p.hashes.len() as u64, chunks_of(p.info.len, 1000));
        assert_eq!(Some(p.info.digest), digest(&without, 1000));
        assert_eq!(
            p.info.digest,
            manifest_digest(p.info.len, 1000, &chunk_hashes(p.body(), 1000))
        );
        // Rebuilding the blob from the body and the proof gives it back.
        assert_eq!(with_proof(p.body().to_vec(), Some(&proof)), with);
        // Any flipped body byte changes one chunk hash and the digest.
        let mut bad = with.clone();
        bad[p.info.len as usize - 1] ^= 1;
        assert_ne!(digest(&bad, 1000), Some(p.info.digest));
        // Another chunk size is another digest.
        assert_ne!(digest(&with, 999), Some(p.info.digest));
        for cut in 0..with.len() {
            assert!(prepare(with[..cut].to_vec(), 1000).is_err());
        }
    }
}
