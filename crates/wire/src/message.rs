//! Replica-to-replica messages and their versioned encoding.
//!
//! Every message starts with the encoding version ([`VERSION`]) and a kind
//! tag. Sizes are bounded by [`Limits`]; decoding checks each bound before it
//! allocates and rejects trailing bytes, so the encoding of a decoded value
//! is byte-for-byte the input (the batch digest relies on this).
//!
//! Normal case (Mod-SMaRt, Sousa & Bessani 2012, Sec. 4; BFT-SMaRt DSN'14
//! Sec. III-B): the leader of the regency sends a signed PROPOSE of a batch
//! for consensus instance `cid`; every replica answers WRITE with the batch
//! digest; after a Byzantine quorum of WRITEs it sends a signed ACCEPT; a
//! quorum of ACCEPTs decides. Client requests travel as signed REQUESTs.

use std::sync::Arc;

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::Signature;
use crate::hash::{digest, Digest, Hasher};
use crate::ids::{Cid, ClientId, Regency, ReplicaId};
use crate::sync::{BatchReply, Fetch, Stop, StopData, Sync};
use crate::transfer::{SnapshotChunk, SnapshotRequest, StateReply, StateRequest};

/// Version of the message encoding this build writes and reads.
pub const VERSION: u8 = 2;

/// Size bounds enforced while decoding. Derived from the cluster config;
/// every replica of a cluster must use the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request payload, bytes (etcd's default `--max-request-bytes`
    /// is 1.5 MiB).
    pub request_bytes_max: usize,
    /// Most requests in one batch (one PROPOSE).
    pub batch_requests_max: usize,
    /// Largest encoded message, bytes. Must hold a full batch.
    pub message_bytes_max: usize,
    /// Most open instances one STOPDATA reports, and most recent decision
    /// proofs it carries (`control::Config::stopdata_entries_max`).
    pub instances_max: usize,
    /// Most decisions in one STATE_REPLY
    /// (`control::Config::state_reply_decisions_max`; sender and decoder
    /// must use the same bound).
    pub state_reply_decisions_max: usize,
    /// Most replicas in a cluster (bounds proofs and SYNC).
    pub replicas_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_bytes_max: 1536 * 1024,
            batch_requests_max: 1024,
            message_bytes_max: 8 * 1024 * 1024,
            instances_max: 1024,
            state_reply_decisions_max: 4096,
            replicas_max: 1024,
        }
    }
}

/// A client request: an opaque payload for the state machine, identified by
/// `(client, seq)` for de-duplication and signed by the client's key.
///
/// The request digest `H(client || seq || payload)` is its identity; the
/// signature covers the digest (see [`crate::crypto`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    pub client: ClientId,
    pub seq: u64,
    pub payload: Vec<u8>,
    pub signature: Signature,
    digest: Digest,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("client", &self.client)
            .field("seq", &self.seq)
            .field("payload_bytes", &self.payload.len())
            .field("digest", &self.digest)
            .finish()
    }
}

impl Request {
    /// Builds a request; `signature` may be [`Signature::PENDING`] until a
    /// signer fills it in.
    pub fn new(client: ClientId, seq: u64, payload: Vec<u8>, signature: Signature) -> Self {
        let digest = Self::compute_digest(client, seq, &payload);
        Self {
            client,
            seq,
            payload,
            signature,
            digest,
        }
    }
    /// `H(client || seq || payload)`.
    pub fn digest(&self) -> Digest {
        self.digest
    }
    fn compute_digest(client: ClientId, seq: u64, payload: &[u8]) -> Digest {
        let mut h = Hasher::new();
        h.update(&client.0.to_be_bytes())
            .update(&seq.to_be_bytes())
            .update(payload);
        h.finalize()
    }
    /// Encoded size, bytes.
    pub fn encoded_len(&self) -> usize {
        8 + 8 + 4 + self.payload.len() + Signature::LEN
    }
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u64(self.client.0);
        w.u64(self.seq);
        w.bytes(&self.payload);
        w.raw(&self.signature.0);
    }
    pub(crate) fn decode(r: &mut Reader<'_>, limits: &Limits) -> Result<Self, DecodeError> {
        let client = ClientId(r.u64()?);
        let seq = r.u64()?;
        let payload = r
            .bytes("request payload", limits.request_bytes_max)?
            .to_vec();
        let signature = Signature(r.array()?);
        Ok(Self::new(client, seq, payload, signature))
    }
    /// Smallest possible encoding, bytes (for count checks).
    pub(crate) const ENCODED_MIN: usize = 8 + 8 + 4 + Signature::LEN;
}

/// The value a consensus instance decides: an ordered list of requests.
/// Its digest is the digest of its encoding.
#[derive(Clone, PartialEq, Eq)]
pub struct Batch {
    requests: Vec<Request>,
    digest: Digest,
    encoded_len: usize,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Batch({} requests, {} bytes, {:?})",
            self.requests.len(),
            self.encoded_len,
            self.digest
        )
    }
}

impl Batch {
    /// Builds a batch and computes its digest (encodes once).
    pub fn new(requests: Vec<Request>) -> Self {
        let mut w =
            Writer::with_capacity(4 + requests.iter().map(|r| r.encoded_len()).sum::<usize>());
        Self::encode_requests(&requests, &mut w);
        Self {
            digest: digest(w.as_slice()),
            encoded_len: w.len(),
            requests,
        }
    }
    pub fn requests(&self) -> &[Request] {
        &self.requests
    }
    pub fn len(&self) -> usize {
        self.requests.len()
    }
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }
    pub fn digest(&self) -> Digest {
        self.digest
    }
    /// Encoded size, bytes.
    pub fn encoded_len(&self) -> usize {
        self.encoded_len
    }
    fn encode_requests(requests: &[Request], w: &mut Writer) {
        w.count(requests.len());
        for r in requests {
            r.encode(w);
        }
    }
    /// Appends the encoding to `w`.
    pub fn encode(&self, w: &mut Writer) {
        Self::encode_requests(&self.requests, w);
    }
    /// The encoding alone (for log records).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.encoded_len);
        self.encode(&mut w);
        w.into_vec()
    }

    /// Decodes [`Batch::to_bytes`] exactly; errors on any malformed byte.
    pub fn from_bytes(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let b = Self::decode(&mut r, limits)?;
        r.finish()?;
        Ok(b)
    }

    /// Decodes a batch, hashing exactly the bytes it was read from.
    pub fn decode(r: &mut Reader<'_>, limits: &Limits) -> Result<Self, DecodeError> {
        let start = r.position();
        let n = r.count("batch", limits.batch_requests_max, Request::ENCODED_MIN)?;
        let mut requests = Vec::with_capacity(n);
        for _ in 0..n {
            requests.push(Request::decode(r, limits)?);
        }
        let bytes = &r.source()[start..r.position()];
        Ok(Self {
            digest: digest(bytes),
            encoded_len: bytes.len(),
            requests,
        })
    }
}

/// PROPOSE(regency, cid, batch), signed by the leader of `regency`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Propose {
    pub regency: Regency,
    pub cid: Cid,
    pub leader: ReplicaId,
    pub batch: Arc<Batch>,
    pub signature: Signature,
}

/// WRITE(regency, cid, digest): `replica` saw a valid PROPOSE with this
/// batch digest. Authenticated by the link only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Write {
    pub regency: Regency,
    pub cid: Cid,
    pub replica: ReplicaId,
    pub digest: Digest,
}

/// ACCEPT(regency, cid, digest), signed by `replica`: it saw a Byzantine
/// quorum of matching WRITEs (and has the batch on disk when
/// `durability = "fsync"`). A quorum of ACCEPTs is the decision proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accept {
    pub regency: Regency,
    pub cid: Cid,
    pub replica: ReplicaId,
    pub digest: Digest,
    pub signature: Signature,
}

/// Every message a replica sends to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Client requests, sent by their origin to every replica (BFT-SMaRt
    /// clients send to all replicas).
    Request(Request),
    Propose(Propose),
    Write(Write),
    Accept(Accept),
    Stop(Stop),
    StopData(StopData),
    Sync(Sync),
    Fetch(Fetch),
    Batch(BatchReply),
    StateRequest(StateRequest),
    StateReply(StateReply),
    SnapshotRequest(SnapshotRequest),
    SnapshotChunk(SnapshotChunk),
}

mod tag {
    pub const REQUEST: u8 = 1;
    pub const PROPOSE: u8 = 2;
    pub const WRITE: u8 = 3;
    pub const ACCEPT: u8 = 4;
    pub const STOP: u8 = 5;
    pub const STOPDATA: u8 = 6;
    pub const SYNC: u8 = 7;
    pub const FETCH: u8 = 8;
    pub const BATCH: u8 = 9;
    pub const STATE_REQUEST: u8 = 10;
    pub const STATE_REPLY: u8 = 11;
    pub const SNAPSHOT_REQUEST: u8 = 12;
    pub const SNAPSHOT_CHUNK: u8 = 13;
}

impl Message {
    /// Short name of the kind, for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Request(_) => "REQUEST",
            Message::Propose(_) => "PROPOSE",
            Message::Write(_) => "WRITE",
            Message::Accept(_) => "ACCEPT",
            Message::Stop(_) => "STOP",
            Message::StopData(_) => "STOPDATA",
            Message::Sync(_) => "SYNC",
            Message::Fetch(_) => "FETCH",
            Message::Batch(_) => "BATCH",
            Message::StateRequest(_) => "STATE_REQUEST",
            Message::StateReply(_) => "STATE_REPLY",
            Message::SnapshotRequest(_) => "SNAPSHOT_REQUEST",
            Message::SnapshotChunk(_) => "SNAPSHOT_CHUNK",
        }
    }

    /// Appends the versioned encoding to `w`.
    pub fn encode_into(&self, w: &mut Writer) {
        w.u8(VERSION);
        match self {
            Message::Request(r) => {
                w.u8(tag::REQUEST);
                r.encode(w);
            }
            Message::Propose(p) => {
                w.u8(tag::PROPOSE);
                w.u32(p.regency);
                w.u64(p.cid);
                w.u16(p.leader.0);
                p.batch.encode(w);
                w.raw(&p.signature.0);
            }
            Message::Write(m) => {
                w.u8(tag::WRITE);
                w.u32(m.regency);
                w.u64(m.cid);
                w.u16(m.replica.0);
                w.raw(&m.digest.0);
            }
            Message::Accept(m) => {
                w.u8(tag::ACCEPT);
                crate::sync::encode_accept_body(w, m);
            }
            Message::Stop(m) => {
                w.u8(tag::STOP);
                m.encode(w);
            }
            Message::StopData(m) => {
                w.u8(tag::STOPDATA);
                m.encode(w);
            }
            Message::Sync(m) => {
                w.u8(tag::SYNC);
                m.encode(w);
            }
            Message::Fetch(m) => {
                w.u8(tag::FETCH);
                w.u64(m.cid);
                w.raw(&m.digest.0);
                w.u16(m.replica.0);
            }
            Message::Batch(m) => {
                w.u8(tag::BATCH);
                w.u64(m.cid);
                m.batch.encode(w);
            }
            Message::StateRequest(m) => {
                w.u8(tag::STATE_REQUEST);
                w.u16(m.replica.0);
                w.u64(m.from_cid);
            }
            Message::StateReply(m) => {
                w.u8(tag::STATE_REPLY);
                m.encode(w);
            }
            Message::SnapshotRequest(m) => {
                w.u8(tag::SNAPSHOT_REQUEST);
                w.u16(m.replica.0);
                w.u64(m.cid);
                w.u64(m.offset);
            }
            Message::SnapshotChunk(m) => {
                w.u8(tag::SNAPSHOT_CHUNK);
                m.encode(w);
            }
        }
    }

    /// The versioned encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.encoded_len_hint());
        self.encode_into(&mut w);
        w.into_vec()
    }

    /// Capacity hint for the encoding, bytes (exact for the normal-case
    /// kinds).
    pub fn encoded_len_hint(&self) -> usize {
        2 + match self {
            Message::Request(r) => r.encoded_len(),
            Message::Propose(p) => 14 + p.batch.encoded_len() + Signature::LEN,
            Message::Write(_) => 14 + 32,
            Message::Accept(_) => 14 + 32 + Signature::LEN,
            Message::Stop(m) => 10 + m.requests.iter().map(|r| r.encoded_len()).sum::<usize>(),
            Message::StopData(_) | Message::Sync(_) => 1024,
            Message::Fetch(_) => 42,
            Message::Batch(m) => 8 + m.batch.encoded_len(),
            Message::StateRequest(_) => 10,
            Message::SnapshotRequest(_) => 18,
            Message::StateReply(m) => {
                64 + m
                    .decisions
                    .iter()
                    .map(|d| d.batch.encoded_len() + 512)
                    .sum::<usize>()
            }
            Message::SnapshotChunk(m) => 512 + m.bytes.len() + 32 * m.hashes.len(),
        }
    }

    /// Decodes one message, which must fill `bytes` exactly.
    ///
    /// Errors: any [`DecodeError`]; nothing is allocated beyond what the
    /// input's own length allows.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        if bytes.len() > limits.message_bytes_max {
            return Err(DecodeError::TooLarge {
                what: "message",
                len: bytes.len(),
                max: limits.message_bytes_max,
            });
        }
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::BadVersion(version));
        }
        let msg = match r.u8()? {
            tag::REQUEST => Message::Request(Request::decode(&mut r, limits)?),
            tag::PROPOSE => {
                let regency = r.u32()?;
                let cid = r.u64()?;
                let leader = ReplicaId(r.u16()?);
                let batch = Arc::new(Batch::decode(&mut r, limits)?);
                let signature = Signature(r.array()?);
                Message::Propose(Propose {
                    regency,
                    cid,
                    leader,
                    batch,
                    signature,
                })
            }
            tag::WRITE => Message::Write(Write {
                regency: r.u32()?,
                cid: r.u64()?,
                replica: ReplicaId(r.u16()?),
                digest: Digest(r.array()?),
            }),
            tag::ACCEPT => Message::Accept(crate::sync::decode_accept_body(&mut r)?),
            tag::STOP => Message::Stop(Stop::decode(&mut r, limits)?),
            tag::STOPDATA => Message::StopData(StopData::decode(&mut r, limits)?),
            tag::SYNC => Message::Sync(Sync::decode(&mut r, limits)?),
            tag::FETCH => Message::Fetch(Fetch {
                cid: r.u64()?,
                digest: Digest(r.array()?),
                replica: ReplicaId(r.u16()?),
            }),
            tag::BATCH => Message::Batch(BatchReply {
                cid: r.u64()?,
                batch: Arc::new(Batch::decode(&mut r, limits)?),
            }),
            tag::STATE_REQUEST => Message::StateRequest(StateRequest {
                replica: ReplicaId(r.u16()?),
                from_cid: r.u64()?,
            }),
            tag::STATE_REPLY => Message::StateReply(StateReply::decode(&mut r, limits)?),
            tag::SNAPSHOT_REQUEST => Message::SnapshotRequest(SnapshotRequest {
                replica: ReplicaId(r.u16()?),
                cid: r.u64()?,
                offset: r.u64()?,
            }),
            tag::SNAPSHOT_CHUNK => Message::SnapshotChunk(SnapshotChunk::decode(&mut r, limits)?),
            t => {
                return Err(DecodeError::UnknownTag {
                    what: "message",
                    tag: t,
                })
            }
        };
        r.finish()?;
        Ok(msg)
    }
}
