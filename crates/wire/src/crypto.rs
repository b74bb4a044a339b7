//! Identities, signatures, and the verifier that alone makes [`Verified`].
//!
//! Signatures (ed25519) go where a message must convince a third party
//! (DESIGN.md, "Wire and crypto"): REQUEST (by its client), PROPOSE (by the
//! leader) and ACCEPT (by each replica; a quorum of them is a decision
//! proof). What is signed is a fixed-size string: a 16-byte domain tag, the
//! cluster id, and the message's identifying fields with the digest of any
//! large part, so one signature can never be replayed as another kind, in
//! another cluster, or for another instance.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use thiserror::Error;

use crate::hash::Digest;
use crate::ids::{Cid, ClientId, Regency, ReplicaId};
use crate::message::{Accept, Message, Propose, Request};
use crate::sync::{DecisionProof, StopData};

/// An ed25519 signature, 64 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    pub const LEN: usize = 64;
    /// Placeholder in a message whose signature a [`Signer`] fills in.
    pub const PENDING: Signature = Signature([0; 64]);
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sig:{}", hex::encode(&self.0[..4]))
    }
}

/// A replica's or client's ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pk:{}", hex::encode(&self.0.as_bytes()[..6]))
    }
}

/// Why a key string was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("a key must be 64 hex digits (32 bytes): {0}")]
    BadHex(String),
    #[error("not a valid ed25519 public key")]
    BadPoint,
    #[error("weak (small-order) ed25519 public key refused")]
    Weak,
}

fn parse_hex32(s: &str) -> Result<[u8; 32], KeyError> {
    let bytes = hex::decode(s.trim()).map_err(|e| KeyError::BadHex(e.to_string()))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| KeyError::BadHex(format!("{} bytes", b.len())))
}

impl PublicKey {
    /// Parses 64 hex digits; refuses invalid and small-order keys.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        Self::from_bytes(&parse_hex32(s)?)
    }
    pub fn from_bytes(b: &[u8; 32]) -> Result<Self, KeyError> {
        let k = VerifyingKey::from_bytes(b).map_err(|_| KeyError::BadPoint)?;
        if k.is_weak() {
            return Err(KeyError::Weak);
        }
        Ok(Self(k))
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }
    /// Verification of `sig` over `msg` by [`verify_one`], the rule every
    /// replica applies.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> bool {
        verify_one(&self.0, msg, &ed25519_dalek::Signature::from_bytes(&sig.0))
    }
}

/// THE ed25519 rule of bftd, for one signature: [`verify_cofactored`] of
/// a batch of one.
pub fn verify_one(key: &VerifyingKey, msg: &[u8], sig: &ed25519_dalek::Signature) -> bool {
    verify_cofactored(&[(key, msg, sig)])
}

/// THE ed25519 rule of bftd: the *cofactored* equation
/// `[8](sB - R - kA) = 0`, with `s` canonical, R a valid point encoding and
/// `k = SHA-512(R || A || M)` (RFC 8032 Sec. 5.1.7 allows either equation;
/// ZIP-215 picks this one). For a batch, the random linear combination of
/// the equations with 128-bit coefficients (one for a single signature):
/// true only if every signature is valid, up to probability 2^-128.
///
/// Why one rule: ed25519-dalek's strict check and its batch check both use
/// the cofactorless equation, but the batch's random coefficients cancel a
/// small torsion component of R or A one time in eight, so a signature
/// crafted that way by its signer (a Byzantine replica) passes in some
/// batches and fails in others or alone: two correct replicas would
/// disagree on one message or proof depending on what else was in its
/// batch. The cofactored equation ignores torsion, so its verdict does not
/// depend on the batch. Small-order public keys are refused when a keyring
/// is built ([`PublicKey::from_bytes`]).
pub fn verify_cofactored(items: &[(&VerifyingKey, &[u8], &ed25519_dalek::Signature)]) -> bool {
    use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
    use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
    use curve25519_dalek::scalar::Scalar;
    use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
    use rand::Rng;
    use sha2::Digest as _;
    if items.is_empty() {
        return true;
    }
    let mut rng = rand::thread_rng();
    let mut b_coefficient = Scalar::ZERO;
    let mut scalars = Vec::with_capacity(2 * items.len() + 1);
    let mut points = Vec::with_capacity(2 * items.len() + 1);
    scalars.push(Scalar::ZERO); // the basepoint's, set below
    points.push(ED25519_BASEPOINT_POINT);
    for (key, msg, sig) in items {
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(*sig.s_bytes())) else {
            return false;
        };
        let Some(r) = CompressedEdwardsY(*sig.r_bytes()).decompress() else {
            return false;
        };
        let k = Scalar::from_hash(
            sha2::Sha512::new()
                .chain_update(sig.r_bytes())
                .chain_update(key.as_bytes())
                .chain_update(msg),
        );
        let z = if items.len() == 1 {
            Scalar::ONE
        } else {
            Scalar::from(rng.gen::<u128>() | 1)
        };
        b_coefficient += z * s;
        scalars.push(z);
        points.push(r);
        scalars.push(z * k);
        points.push(key.to_edwards());
    }
    scalars[0] = -b_coefficient;
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
}

/// A secret identity key (ed25519 seed, 32 bytes).
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({:?})", self.public())
    }
}

impl SecretKey {
    /// A fresh key from the OS random source.
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut rand::rngs::OsRng))
    }
    /// The key for a 32-byte seed (deterministic; used by tests and the
    /// simulator).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }
    /// Parses the 64-hex-digit seed written by [`SecretKey::to_hex`].
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        Ok(Self::from_seed(parse_hex32(s)?))
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.0.sign(msg).to_bytes())
    }
}

/// The public keys of a cluster: one per replica (index = replica id) and
/// any BFT clients. Loaded from the cluster config.
#[derive(Debug, Clone)]
pub struct Keyring {
    cluster_id: u64,
    replicas: Vec<PublicKey>,
    clients: HashMap<ClientId, PublicKey>,
}

impl Keyring {
    /// Panics if there are no replicas or more than `u16::MAX`, or a client
    /// id collides with the replica range: the config loader checks these.
    pub fn new(
        cluster_id: u64,
        replicas: Vec<PublicKey>,
        clients: HashMap<ClientId, PublicKey>,
    ) -> Self {
        assert!(!replicas.is_empty() && replicas.len() <= u16::MAX as usize);
        assert!(clients.keys().all(|c| c.replica().is_none()));
        Self {
            cluster_id,
            replicas,
            clients,
        }
    }
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }
    /// Number of replicas, n.
    pub fn n(&self) -> usize {
        self.replicas.len()
    }
    /// Byzantine quorum ceil((n+f+1)/2), f = floor((n-1)/3).
    pub fn quorum(&self) -> usize {
        let n = self.n();
        (n + (n - 1) / 3 + 1).div_ceil(2)
    }
    pub fn replica(&self, r: ReplicaId) -> Option<&PublicKey> {
        self.replicas.get(r.index())
    }
    /// The key that signs `client`'s requests.
    pub fn client(&self, client: ClientId) -> Option<&PublicKey> {
        match client.replica() {
            Some(r) => self.replica(r),
            None => self.clients.get(&client),
        }
    }
}

const DOMAIN_REQUEST: &[u8; 16] = b"bftd/request/v1\0";
const DOMAIN_PROPOSE: &[u8; 16] = b"bftd/propose/v1\0";
const DOMAIN_ACCEPT: &[u8; 16] = b"bftd/accept/v1\0\0";
const DOMAIN_STOPDATA: &[u8; 16] = b"bftd/stopdata/v1";

/// Length of every signed string of consensus messages, bytes.
const SIGNED_LEN: usize = 16 + 8 + 4 + 8 + 2 + 32;

type SignedBytes = [u8; SIGNED_LEN];

fn signed_bytes(
    domain: &[u8; 16],
    cluster: u64,
    regency: Regency,
    cid: Cid,
    who: u16,
    d: &Digest,
) -> SignedBytes {
    let mut b = [0u8; SIGNED_LEN];
    b[..16].copy_from_slice(domain);
    b[16..24].copy_from_slice(&cluster.to_be_bytes());
    b[24..28].copy_from_slice(&regency.to_be_bytes());
    b[28..36].copy_from_slice(&cid.to_be_bytes());
    b[36..38].copy_from_slice(&who.to_be_bytes());
    b[38..70].copy_from_slice(&d.0);
    b
}

/// What a request's signature covers: domain, cluster, request digest.
pub fn request_signed_bytes(cluster: u64, r: &Request) -> SignedBytes {
    signed_bytes(DOMAIN_REQUEST, cluster, 0, 0, 0, &r.digest())
}

/// What a PROPOSE signature covers: domain, cluster, regency, cid, leader,
/// batch digest.
pub fn propose_signed_bytes(cluster: u64, p: &Propose) -> SignedBytes {
    signed_bytes(
        DOMAIN_PROPOSE,
        cluster,
        p.regency,
        p.cid,
        p.leader.0,
        &p.batch.digest(),
    )
}

/// What an ACCEPT signature covers: domain, cluster, regency, cid, replica,
/// batch digest.
pub fn accept_signed_bytes(cluster: u64, a: &Accept) -> SignedBytes {
    signed_bytes(
        DOMAIN_ACCEPT,
        cluster,
        a.regency,
        a.cid,
        a.replica.0,
        &a.digest,
    )
}

/// What a STOPDATA signature covers: domain, cluster, regency, replica,
/// digest of the body.
pub fn stopdata_signed_bytes(cluster: u64, s: &StopData) -> SignedBytes {
    signed_bytes(
        DOMAIN_STOPDATA,
        cluster,
        s.regency,
        0,
        s.replica.0,
        &crate::hash::digest(&s.body()),
    )
}

/// A value this replica may act on: made by this replica's [`Signer`], or
/// received and checked by its [`Verifier`]. Nothing else can construct one,
/// so the control core accepts only these (DESIGN.md: "Only the dataplane
/// makes a `Verified<T>`").
///
/// What "checked" means, per kind (the link's AEAD tag already proves who
/// sent each frame):
/// - the sender named inside the message is the link's peer (WRITE, ACCEPT,
///   STOP, STOPDATA, FETCH, PROPOSE's leader, SYNC's leader);
/// - every request's signature is valid (checked once per replica: a
///   request seen before with the same signature is not checked again);
/// - ACCEPT and STOPDATA signatures, and every decision proof inside a
///   message, are valid: they leave this replica later as proofs;
/// - a PROPOSE's signature is *carried*, not checked: the link proves the
///   leader sent it, and it only matters as evidence shown to a third
///   party, who checks it ([`verify_propose_signature`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<T>(T);

impl<T> Verified<T> {
    pub fn get(&self) -> &T {
        &self.0
    }
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl Verified<Message> {
    /// The verified request inside a REQUEST message.
    pub fn into_request(self) -> Result<Verified<Request>, Self> {
        match self.0 {
            Message::Request(r) => Ok(Verified(r)),
            m => Err(Verified(m)),
        }
    }
}

impl Verified<Message> {
    /// The verified requests a STOP carries (none for other kinds).
    pub fn stop_requests(&self) -> Vec<Verified<Request>> {
        match &self.0 {
            Message::Stop(s) => s.requests.iter().cloned().map(Verified).collect(),
            _ => Vec::new(),
        }
    }
}

impl Verified<Request> {
    /// The verified request as a REQUEST message.
    pub fn into_message(self) -> Verified<Message> {
        Verified(Message::Request(self.0))
    }
}

impl Verified<Propose> {
    /// The requests of a verified PROPOSE, each verified with it.
    pub fn requests(&self) -> impl Iterator<Item = Verified<Request>> + '_ {
        self.0.batch.requests().iter().cloned().map(Verified)
    }
}

/// Signs this replica's own messages. Owned by the dataplane's transmit
/// stage; its outputs count as verified.
#[derive(Debug, Clone)]
pub struct Signer {
    cluster_id: u64,
    id: ReplicaId,
    key: SecretKey,
}

impl Signer {
    pub fn new(cluster_id: u64, id: ReplicaId, key: SecretKey) -> Self {
        Self {
            cluster_id,
            id,
            key,
        }
    }
    pub fn id(&self) -> ReplicaId {
        self.id
    }
    pub fn key(&self) -> &SecretKey {
        &self.key
    }
    /// Fills in the signature of a message this replica sends.
    ///
    /// Panics if the message claims another sender (a PROPOSE of another
    /// leader, an ACCEPT of another replica, a request of another client):
    /// the control core never produces one.
    pub fn sign(&self, msg: Message) -> Verified<Message> {
        let c = self.cluster_id;
        Verified(match msg {
            // This replica's own proxy requests are signed here; requests of
            // other clients it forwards carry their clients' signatures.
            Message::Request(r)
                if r.client == ClientId::of_replica(self.id)
                    && r.signature == Signature::PENDING =>
            {
                Message::Request(self.sign_request(r).0)
            }
            m @ Message::Request(_) => m,
            Message::Propose(mut p) => {
                assert_eq!(p.leader, self.id, "signing another leader's PROPOSE");
                p.signature = self.key.sign(&propose_signed_bytes(c, &p));
                Message::Propose(p)
            }
            Message::Accept(mut a) => {
                assert_eq!(a.replica, self.id, "signing another replica's ACCEPT");
                a.signature = self.key.sign(&accept_signed_bytes(c, &a));
                Message::Accept(a)
            }
            Message::StopData(mut sd) => {
                assert_eq!(sd.replica, self.id, "signing another replica's STOPDATA");
                sd.signature = self.key.sign(&stopdata_signed_bytes(c, &sd));
                Message::StopData(sd)
            }
            m => {
                let sender = match &m {
                    Message::Write(w) => Some(w.replica),
                    Message::Stop(x) => Some(x.replica),
                    Message::Sync(x) => Some(x.leader),
                    Message::Fetch(x) => Some(x.replica),
                    Message::StateRequest(x) => Some(x.replica),
                    Message::StateReply(x) => Some(x.replica),
                    Message::SnapshotRequest(x) => Some(x.replica),
                    Message::SnapshotChunk(x) => Some(x.replica),
                    _ => None,
                };
                assert!(
                    sender.is_none_or(|r| r == self.id),
                    "sending another replica's {}",
                    m.kind()
                );
                m
            }
        })
    }
    /// Signs a request of this replica's proxy client id.
    pub fn sign_request(&self, mut r: Request) -> Verified<Request> {
        assert_eq!(
            r.client,
            ClientId::of_replica(self.id),
            "signing another client's request"
        );
        r.signature = self.key.sign(&request_signed_bytes(self.cluster_id, &r));
        Verified(r)
    }
}

/// Why a message was refused by the verifier. Each is a drop reason with a
/// counter of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum VerifyError {
    #[error("bad {0} signature")]
    BadSignature(&'static str),
    #[error("{0} claims a sender other than the link it came on")]
    WrongSender(&'static str),
    #[error("request from unknown client")]
    UnknownClient,
    #[error("unknown replica")]
    UnknownReplica,
    #[error("proof does not hold a quorum of matching votes")]
    BadProof,
}

impl VerifyError {
    /// Stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            VerifyError::BadSignature(_) => "bad_signature",
            VerifyError::WrongSender(_) => "wrong_sender",
            VerifyError::UnknownClient => "unknown_client",
            VerifyError::UnknownReplica => "unknown_replica",
            VerifyError::BadProof => "bad_proof",
        }
    }
}

/// Queues the signature checks of a decision proof after checking its
/// shape: at least a quorum of ACCEPTs from distinct known replicas, all for
/// the proof's `(cid, digest)` and one regency.
fn proof_jobs(
    keyring: &Keyring,
    item: usize,
    p: &DecisionProof,
    jobs: &mut Vec<Job>,
) -> Result<(), VerifyError> {
    let mut seen = HashSet::new();
    let regency = p.accepts.first().map(|a| a.regency);
    for a in &p.accepts {
        if a.cid != p.cid
            || a.digest != p.digest
            || Some(a.regency) != regency
            || !seen.insert(a.replica)
        {
            return Err(VerifyError::BadProof);
        }
        let key = keyring
            .replica(a.replica)
            .ok_or(VerifyError::UnknownReplica)?
            .0;
        jobs.push(Job {
            item,
            bytes: accept_signed_bytes(keyring.cluster_id(), a),
            sig: ed25519_dalek::Signature::from_bytes(&a.signature.0),
            key,
            what: "ACCEPT",
            alias_of: None,
        });
    }
    if seen.len() < keyring.quorum() {
        return Err(VerifyError::BadProof);
    }
    Ok(())
}

/// Checks a decision proof received from another replica (see
/// [`proof_jobs`] for the shape), with one ed25519 batch over its
/// signatures. Errors name the first problem.
pub fn verify_decision_proof(keyring: &Keyring, proof: &DecisionProof) -> Result<(), VerifyError> {
    let mut jobs = Vec::with_capacity(proof.accepts.len());
    proof_jobs(keyring, 0, proof, &mut jobs)?;
    if Verifier::check_jobs(&jobs).into_iter().any(|bad| bad) {
        return Err(VerifyError::BadSignature("ACCEPT"));
    }
    Ok(())
}

/// Checks the leader's signature on a PROPOSE received as evidence (for
/// example inside a leader change message).
pub fn verify_propose_signature(keyring: &Keyring, p: &Propose) -> Result<(), VerifyError> {
    let key = keyring
        .replica(p.leader)
        .ok_or(VerifyError::UnknownReplica)?;
    if key.verify(&propose_signed_bytes(keyring.cluster_id(), p), &p.signature) {
        Ok(())
    } else {
        Err(VerifyError::BadSignature("PROPOSE"))
    }
}

/// A bounded set of request digests whose signatures this replica already
/// verified, so a request that arrives alone and again inside a PROPOSE is
/// verified once. Oldest entries are evicted first.
#[derive(Debug)]
struct VerifiedRequests {
    set: HashMap<Digest, Signature>,
    order: VecDeque<Digest>,
    capacity: usize,
}

impl VerifiedRequests {
    fn new(capacity: usize) -> Self {
        Self {
            set: HashMap::with_capacity(capacity),
            order: VecDeque::with_capacity(capacity),
            capacity,
        }
    }
    /// True if a request with digest `d` and signature `sig` was verified.
    fn contains(&self, d: &Digest, sig: &Signature) -> bool {
        self.set.get(d) == Some(sig)
    }
    fn insert(&mut self, d: Digest, sig: Signature) {
        if self.capacity == 0 || self.set.insert(d, sig).is_some() {
            return;
        }
        if self.order.len() == self.capacity {
            let old = self.order.pop_front().expect("full queue has a front");
            self.set.remove(&old);
        }
        self.order.push_back(d);
        assert!(self.order.len() <= self.capacity);
    }
}

#[derive(Clone)]
struct Job {
    item: usize,
    bytes: SignedBytes,
    sig: ed25519_dalek::Signature,
    key: VerifyingKey,
    what: &'static str,
    /// Same signature as an earlier job of the batch: not checked again,
    /// it takes that job's result.
    alias_of: Option<usize>,
}

/// Checks senders and signatures of received messages, in batches. Owned by
/// the dataplane; the only producer of [`Verified`] values for messages
/// from other replicas.
pub struct Verifier {
    keyring: Arc<Keyring>,
    cache: VerifiedRequests,
}

impl Verifier {
    /// `request_cache_capacity`: how many verified request digests to
    /// remember (0 disables the cache).
    pub fn new(keyring: Arc<Keyring>, request_cache_capacity: usize) -> Self {
        Self {
            keyring,
            cache: VerifiedRequests::new(request_cache_capacity),
        }
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Verifies one message received on the link from `sender`.
    pub fn verify(
        &mut self,
        sender: ReplicaId,
        msg: Message,
    ) -> Result<Verified<Message>, VerifyError> {
        self.verify_batch(vec![(sender, msg)])
            .pop()
            .expect("one result per input")
    }

    /// Verifies messages received from the given senders, with one ed25519
    /// batch verification over all their signatures; on a batch failure it
    /// falls back to checking each signature alone. Returns one result per
    /// input, in order.
    pub fn verify_batch(
        &mut self,
        items: Vec<(ReplicaId, Message)>,
    ) -> Vec<Result<Verified<Message>, VerifyError>> {
        let cluster = self.keyring.cluster_id();
        let mut status: Vec<Result<(), VerifyError>> = Vec::with_capacity(items.len());
        let mut jobs: Vec<Job> = Vec::new();
        for (i, (sender, msg)) in items.iter().enumerate() {
            status.push(self.collect_jobs(cluster, i, *sender, msg, &mut jobs));
        }
        let failed = Self::check_jobs(&jobs);
        for (job, bad) in jobs.iter().zip(failed) {
            if bad && status[job.item].is_ok() {
                status[job.item] = Err(VerifyError::BadSignature(job.what));
            }
        }
        items
            .into_iter()
            .zip(status)
            .map(|((_, msg), st)| {
                st?;
                self.remember(&msg);
                Ok(Verified(msg))
            })
            .collect()
    }

    fn remember(&mut self, msg: &Message) {
        match msg {
            Message::Request(r) => self.cache.insert(r.digest(), r.signature),
            Message::Propose(p) => {
                for r in p.batch.requests() {
                    self.cache.insert(r.digest(), r.signature);
                }
            }
            Message::Stop(x) => {
                for r in &x.requests {
                    self.cache.insert(r.digest(), r.signature);
                }
            }
            _ => {}
        }
    }

    fn replica_key(&self, r: ReplicaId) -> Result<VerifyingKey, VerifyError> {
        self.keyring
            .replica(r)
            .map(|k| k.0)
            .ok_or(VerifyError::UnknownReplica)
    }

    /// Queues the signature check of `r` unless this exact request (digest
    /// and signature) was verified before.
    fn request_job(
        &self,
        cluster: u64,
        item: usize,
        r: &Request,
        jobs: &mut Vec<Job>,
    ) -> Result<(), VerifyError> {
        if self.cache.contains(&r.digest(), &r.signature) {
            return Ok(());
        }
        // The same request twice in one batch (a REQUEST and the PROPOSE
        // carrying it): one check, shared by both items.
        let bytes = request_signed_bytes(cluster, r);
        if let Some(j) = jobs.iter().position(|j| {
            j.alias_of.is_none() && j.bytes == bytes && j.sig.to_bytes() == r.signature.0
        }) {
            let alias = Job {
                item,
                alias_of: Some(j),
                ..jobs[j].clone()
            };
            jobs.push(alias);
            return Ok(());
        }
        let key = self
            .keyring
            .client(r.client)
            .ok_or(VerifyError::UnknownClient)?
            .0;
        jobs.push(Job {
            item,
            bytes: request_signed_bytes(cluster, r),
            sig: ed25519_dalek::Signature::from_bytes(&r.signature.0),
            key,
            what: "request",
            alias_of: None,
        });
        Ok(())
    }

    fn collect_jobs(
        &self,
        cluster: u64,
        item: usize,
        sender: ReplicaId,
        msg: &Message,
        jobs: &mut Vec<Job>,
    ) -> Result<(), VerifyError> {
        self.replica_key(sender)?;
        match msg {
            Message::Request(r) => self.request_job(cluster, item, r, jobs),
            Message::Propose(p) => {
                if p.leader != sender {
                    return Err(VerifyError::WrongSender("PROPOSE"));
                }
                for r in p.batch.requests() {
                    self.request_job(cluster, item, r, jobs)?;
                }
                Ok(())
            }
            Message::Write(w) => {
                if w.replica != sender {
                    return Err(VerifyError::WrongSender("WRITE"));
                }
                Ok(())
            }
            Message::Accept(a) => {
                if a.replica != sender {
                    return Err(VerifyError::WrongSender("ACCEPT"));
                }
                jobs.push(Job {
                    item,
                    bytes: accept_signed_bytes(cluster, a),
                    sig: ed25519_dalek::Signature::from_bytes(&a.signature.0),
                    key: self.replica_key(a.replica)?,
                    what: "ACCEPT",
                    alias_of: None,
                });
                Ok(())
            }
            Message::Stop(x) => {
                if x.replica != sender {
                    return Err(VerifyError::WrongSender("STOP"));
                }
                for r in &x.requests {
                    self.request_job(cluster, item, r, jobs)?;
                }
                Ok(())
            }
            Message::StopData(sd) => {
                if sd.replica != sender {
                    return Err(VerifyError::WrongSender("STOPDATA"));
                }
                self.stopdata_jobs(cluster, item, sd, jobs)
            }
            Message::Sync(x) => {
                if x.leader != sender {
                    return Err(VerifyError::WrongSender("SYNC"));
                }
                for sd in &x.stopdata {
                    self.stopdata_jobs(cluster, item, sd, jobs)?;
                }
                Ok(())
            }
            Message::Fetch(x) => {
                if x.replica != sender {
                    return Err(VerifyError::WrongSender("FETCH"));
                }
                Ok(())
            }
            Message::Batch(_) => Ok(()),
            Message::SnapshotChunk(x) => {
                if x.replica != sender {
                    return Err(VerifyError::WrongSender("SNAPSHOT_CHUNK"));
                }
                match &x.proof {
                    Some(p) => proof_jobs(&self.keyring, item, p, jobs),
                    None => Ok(()),
                }
            }
            Message::StateRequest(x) => {
                if x.replica != sender {
                    return Err(VerifyError::WrongSender("STATE_REQUEST"));
                }
                Ok(())
            }
            Message::SnapshotRequest(x) => {
                if x.replica != sender {
                    return Err(VerifyError::WrongSender("SNAPSHOT_REQUEST"));
                }
                Ok(())
            }
            Message::StateReply(x) => {
                if x.replica != sender {
                    return Err(VerifyError::WrongSender("STATE_REPLY"));
                }
                // Decisions are trusted for their proofs (their batches
                // match the proofs' digests: checked when decoding).
                for d in &x.decisions {
                    proof_jobs(&self.keyring, item, &d.proof, jobs)?;
                }
                Ok(())
            }
        }
    }

    /// Queues the checks of a STOPDATA: its signature and every decision
    /// proof in it.
    fn stopdata_jobs(
        &self,
        cluster: u64,
        item: usize,
        sd: &StopData,
        jobs: &mut Vec<Job>,
    ) -> Result<(), VerifyError> {
        jobs.push(Job {
            item,
            bytes: stopdata_signed_bytes(cluster, sd),
            sig: ed25519_dalek::Signature::from_bytes(&sd.signature.0),
            key: self.replica_key(sd.replica)?,
            what: "STOPDATA",
            alias_of: None,
        });
        let proofs = sd
            .last_decided_proof
            .iter()
            .chain(sd.open.iter().filter_map(|o| o.decided.as_ref()))
            .chain(sd.recent.iter());
        for p in proofs {
            proof_jobs(&self.keyring, item, p, jobs)?;
        }
        Ok(())
    }

    /// One flag per job: true if its signature is bad.
    fn check_jobs(jobs: &[Job]) -> Vec<bool> {
        let real: Vec<&Job> = jobs.iter().filter(|j| j.alias_of.is_none()).collect();
        let mut bad_real = None;
        if real.len() >= 2 {
            let items: Vec<(&VerifyingKey, &[u8], &ed25519_dalek::Signature)> = real
                .iter()
                .map(|j| (&j.key, &j.bytes[..], &j.sig))
                .collect();
            if verify_cofactored(&items) {
                bad_real = Some(vec![false; jobs.len()]);
            }
        }
        let mut bad = bad_real.unwrap_or_else(|| {
            jobs.iter()
                .map(|j| j.alias_of.is_none() && !verify_one(&j.key, &j.bytes, &j.sig))
                .collect()
        });
        for (i, j) in jobs.iter().enumerate() {
            if let Some(o) = j.alias_of {
                bad[i] = bad[o];
            }
        }
        bad
    }
}
