//! Authenticated replica-to-replica links.
//!
//! **Key agreement.** Link keys are agreed from the ed25519 identities in the
//! cluster config, one key per connection and direction, with a signed
//! ephemeral X25519 exchange and key confirmation (SIGMA-style, three
//! messages):
//! 1. dialer → acceptor: HELLO(cluster, from, to, eph_d) signed by the
//!    dialer's identity ([`DIAL_HELLO_LEN`] bytes);
//! 2. acceptor → dialer: HELLO(cluster, from, to, eph_a, eph_d) signed by
//!    the acceptor's identity ([`ACCEPT_HELLO_LEN`] bytes). `eph_a` is the
//!    acceptor's fresh challenge; echoing `eph_d` binds the dialer's;
//! 3. dialer → acceptor: CONFIRM = HMAC-SHA256(confirm key, "bftd/confirm/v2"
//!    || HELLO 1 || HELLO 2) ([`CONFIRM_LEN`] bytes).
//!
//! Both derive `HKDF-SHA256(salt = cluster id, ikm = X25519(eph_d, eph_a),
//! info = "bftd/link/v2" || from || to || eph_d || eph_a)`, 64 bytes: an
//! AES-256-GCM key for the dialer-to-acceptor direction, then the confirm
//! key. The acceptor hands out the frame key ([`OpenKey`]) only once the
//! CONFIRM verifies ([`AwaitingConfirm::confirm`]): a HELLO captured once and
//! replayed gets a fresh `eph_a` it cannot answer without the ephemeral
//! secret, so it never yields a link, and never replaces a live one.
//!
//! **Frames.** After the handshake every message travels as
//! `header(12) || ciphertext || tag(16)`, header = version(1) kind(1)
//! sender(2) link_seq(8), authenticated as AEAD associated data; the nonce is
//! the link sequence number, so no (key, nonce) pair repeats. The receiver
//! checks, cheapest first: size, version, sender, sequence (exactly the next
//! one: links run over an ordered stream), then the tag. A frame that fails
//! any check leaves the key unchanged, so the link's later frames cannot
//! open either: the receiver resets the connection and the dialer
//! handshakes afresh.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};

type GcmNonce = Nonce<aes_gcm::aead::consts::U12>;
use hkdf::hmac::{Hmac, Mac};
use hkdf::Hkdf;
use sha2::Sha256;
use thiserror::Error;
use x25519_dalek::{EphemeralSecret, PublicKey as XPublicKey};

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{Keyring, SecretKey, Signature};
use crate::ids::ReplicaId;

const MAGIC: &[u8; 4] = b"BFTD";
/// Version 2 added the CONFIRM message (a version-1 peer fails the
/// handshake as malformed).
const HELLO_VERSION: u8 = 2;
const DOMAIN_HELLO_DIAL: &[u8; 16] = b"bftd/hello-d/v1\0";
const DOMAIN_HELLO_ACCEPT: &[u8; 16] = b"bftd/hello-a/v1\0";
const DOMAIN_CONFIRM: &[u8; 15] = b"bftd/confirm/v2";

/// Bytes of the dialer's HELLO.
pub const DIAL_HELLO_LEN: usize = 4 + 1 + 8 + 2 + 2 + 32 + 64;
/// Bytes of the acceptor's HELLO.
pub const ACCEPT_HELLO_LEN: usize = 4 + 1 + 8 + 2 + 2 + 32 + 32 + 64;
/// Bytes of the dialer's CONFIRM (an HMAC-SHA256 tag).
pub const CONFIRM_LEN: usize = 32;
/// Bytes of a frame header.
pub const FRAME_HEADER_LEN: usize = 12;
/// Bytes of the AEAD tag at the end of a frame.
pub const FRAME_TAG_LEN: usize = 16;
/// Frame overhead over the message it carries, bytes.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_LEN + FRAME_TAG_LEN;
const FRAME_VERSION: u8 = 1;
const FRAME_KIND_MESSAGE: u8 = 1;

/// Why a handshake failed. The connection is closed and nothing else changes.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("malformed HELLO: {0}")]
    Malformed(#[from] DecodeError),
    #[error("HELLO for cluster {got:#x}, this cluster is {want:#x}")]
    WrongCluster { got: u64, want: u64 },
    #[error("HELLO from replica {0}, which is not in the cluster config")]
    UnknownReplica(u16),
    #[error("HELLO addressed to replica {got}, this is replica {want}")]
    WrongAddressee { got: u16, want: u16 },
    #[error("HELLO from replica {got}, expected replica {want}")]
    WrongPeer { got: u16, want: u16 },
    #[error("HELLO does not echo this side's ephemeral key")]
    NotFresh,
    #[error("HELLO signature does not verify")]
    BadSignature,
    #[error("key exchange produced a non-contributory secret")]
    WeakExchange,
    #[error("CONFIRM does not prove the link key")]
    BadConfirm,
}

impl HandshakeError {
    /// Stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            HandshakeError::Malformed(_) => "malformed",
            HandshakeError::WrongCluster { .. } => "wrong_cluster",
            HandshakeError::UnknownReplica(_) => "unknown_replica",
            HandshakeError::WrongAddressee { .. } => "wrong_addressee",
            HandshakeError::WrongPeer { .. } => "wrong_peer",
            HandshakeError::NotFresh => "not_fresh",
            HandshakeError::BadSignature => "bad_signature",
            HandshakeError::WeakExchange => "weak_exchange",
            HandshakeError::BadConfirm => "bad_confirm",
        }
    }
}

struct Hello {
    cluster: u64,
    from: u16,
    to: u16,
    eph: [u8; 32],
    echo: Option<[u8; 32]>,
    signature: Signature,
}

impl Hello {
    fn body(&self) -> Writer {
        let mut w = Writer::with_capacity(ACCEPT_HELLO_LEN);
        w.raw(MAGIC);
        w.u8(HELLO_VERSION);
        w.u64(self.cluster);
        w.u16(self.from);
        w.u16(self.to);
        w.raw(&self.eph);
        if let Some(e) = &self.echo {
            w.raw(e);
        }
        w
    }
    fn signed_bytes(&self) -> Vec<u8> {
        let domain = if self.echo.is_some() {
            DOMAIN_HELLO_ACCEPT
        } else {
            DOMAIN_HELLO_DIAL
        };
        let mut v = domain.to_vec();
        v.extend_from_slice(self.body().as_slice());
        v
    }
    fn encode(&self) -> Vec<u8> {
        let mut w = self.body();
        w.raw(&self.signature.0);
        w.into_vec()
    }
    fn decode(bytes: &[u8], with_echo: bool) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.raw(4)? != MAGIC {
            return Err(DecodeError::Invalid("HELLO magic"));
        }
        let v = r.u8()?;
        if v != HELLO_VERSION {
            return Err(DecodeError::BadVersion(v));
        }
        let h = Hello {
            cluster: r.u64()?,
            from: r.u16()?,
            to: r.u16()?,
            eph: r.array()?,
            echo: if with_echo { Some(r.array()?) } else { None },
            signature: Signature(r.array()?),
        };
        r.finish()?;
        Ok(h)
    }
    fn check(
        &self,
        keyring: &Keyring,
        want_from: Option<u16>,
        me: u16,
    ) -> Result<(), HandshakeError> {
        if self.cluster != keyring.cluster_id() {
            return Err(HandshakeError::WrongCluster {
                got: self.cluster,
                want: keyring.cluster_id(),
            });
        }
        if self.to != me {
            return Err(HandshakeError::WrongAddressee {
                got: self.to,
                want: me,
            });
        }
        if let Some(want) = want_from {
            if self.from != want {
                return Err(HandshakeError::WrongPeer {
                    got: self.from,
                    want,
                });
            }
        }
        if self.from == me {
            return Err(HandshakeError::UnknownReplica(self.from));
        }
        let key = keyring
            .replica(ReplicaId(self.from))
            .ok_or(HandshakeError::UnknownReplica(self.from))?;
        if !key.verify(&self.signed_bytes(), &self.signature) {
            return Err(HandshakeError::BadSignature);
        }
        Ok(())
    }
}

type HmacSha256 = Hmac<Sha256>;

/// The keys of one connection: the frame cipher, and the MAC state that
/// computes the CONFIRM over the transcript `dial_hello || accept_hello`.
#[allow(clippy::too_many_arguments)] // the transcript, named
fn derive(
    cluster: u64,
    from: u16,
    to: u16,
    eph_d: &[u8; 32],
    eph_a: &[u8; 32],
    shared: &[u8; 32],
    dial_hello: &[u8],
    accept_hello: &[u8],
) -> (Aes256Gcm, HmacSha256) {
    let hk = Hkdf::<Sha256>::new(Some(&cluster.to_be_bytes()), shared);
    let mut info = Vec::with_capacity(12 + 4 + 64);
    info.extend_from_slice(b"bftd/link/v2");
    info.extend_from_slice(&from.to_be_bytes());
    info.extend_from_slice(&to.to_be_bytes());
    info.extend_from_slice(eph_d);
    info.extend_from_slice(eph_a);
    let mut okm = [0u8; 64];
    hk.expand(&info, &mut okm)
        .expect("64 bytes is a valid HKDF-SHA256 length");
    let (frame_key, confirm_key) = okm.split_at(32);
    let cipher = Aes256Gcm::new_from_slice(frame_key).expect("32-byte AES-256 key");
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(confirm_key).expect("HMAC takes any key length");
    mac.update(DOMAIN_CONFIRM);
    mac.update(dial_hello);
    mac.update(accept_hello);
    (cipher, mac)
}

/// The dialer's side of a handshake in progress.
pub struct Dialing {
    secret: EphemeralSecret,
    eph: [u8; 32],
    /// Our HELLO, for the CONFIRM's transcript.
    hello: Vec<u8>,
    cluster: u64,
    from: u16,
    to: u16,
}

/// Starts a handshake from `from` to `to`: returns the HELLO to send first
/// ([`DIAL_HELLO_LEN`] bytes) and the state that reads the answer.
pub fn dial(
    identity: &SecretKey,
    cluster: u64,
    from: ReplicaId,
    to: ReplicaId,
) -> (Vec<u8>, Dialing) {
    let secret = EphemeralSecret::random_from_rng(rand::rngs::OsRng);
    let eph = XPublicKey::from(&secret).to_bytes();
    let mut hello = Hello {
        cluster,
        from: from.0,
        to: to.0,
        eph,
        echo: None,
        signature: Signature::PENDING,
    };
    hello.signature = identity.sign(&hello.signed_bytes());
    let bytes = hello.encode();
    assert_eq!(bytes.len(), DIAL_HELLO_LEN);
    let dialing = Dialing {
        secret,
        eph,
        hello: bytes.clone(),
        cluster,
        from: from.0,
        to: to.0,
    };
    (bytes, dialing)
}

impl Dialing {
    /// Checks the acceptor's HELLO ([`ACCEPT_HELLO_LEN`] bytes); returns the
    /// key that seals this direction and the CONFIRM ([`CONFIRM_LEN`]
    /// bytes) to send before the first frame.
    pub fn finish(
        self,
        keyring: &Keyring,
        reply: &[u8],
    ) -> Result<(SealKey, [u8; CONFIRM_LEN]), HandshakeError> {
        let h = Hello::decode(reply, true)?;
        h.check(keyring, Some(self.to), self.from)?;
        if h.echo != Some(self.eph) {
            return Err(HandshakeError::NotFresh);
        }
        let shared = self.secret.diffie_hellman(&XPublicKey::from(h.eph));
        if !shared.was_contributory() {
            return Err(HandshakeError::WeakExchange);
        }
        let (cipher, mac) = derive(
            self.cluster,
            self.from,
            self.to,
            &self.eph,
            &h.eph,
            shared.as_bytes(),
            &self.hello,
            reply,
        );
        let confirm: [u8; CONFIRM_LEN] = mac.finalize().into_bytes().into();
        Ok((
            SealKey {
                cipher,
                sender: self.from,
                next_seq: 0,
            },
            confirm,
        ))
    }
}

/// The acceptor's side of a handshake whose reply is sent: it holds the
/// frame key back until the dialer's CONFIRM proves it holds the same key
/// (only [`AwaitingConfirm::confirm`] makes the [`OpenKey`]).
pub struct AwaitingConfirm {
    open: OpenKey,
    /// The MAC state over the transcript; finalised against the CONFIRM.
    mac: HmacSha256,
}

impl AwaitingConfirm {
    /// The replica the (not yet confirmed) HELLO came from.
    pub fn peer(&self) -> ReplicaId {
        ReplicaId(self.open.peer)
    }

    /// Checks the dialer's CONFIRM ([`CONFIRM_LEN`] bytes, compared in
    /// constant time) and returns the key that opens its frames. Errors:
    /// `Malformed` for a wrong length, `BadConfirm` for a wrong tag.
    pub fn confirm(self, confirm: &[u8]) -> Result<OpenKey, HandshakeError> {
        if confirm.len() != CONFIRM_LEN {
            return Err(HandshakeError::Malformed(DecodeError::Invalid(
                "CONFIRM length",
            )));
        }
        self.mac
            .verify_slice(confirm)
            .map_err(|_| HandshakeError::BadConfirm)?;
        Ok(self.open)
    }
}

/// Answers a dialer's HELLO on replica `me` with a fresh challenge: returns
/// the reply to send, the peer it claims to be, and the state that checks
/// its CONFIRM. Nothing is authenticated yet: a replayed HELLO gets this
/// far.
pub fn accept(
    identity: &SecretKey,
    keyring: &Keyring,
    me: ReplicaId,
    hello: &[u8],
    message_bytes_max: usize,
) -> Result<(Vec<u8>, ReplicaId, AwaitingConfirm), HandshakeError> {
    let h = Hello::decode(hello, false)?;
    h.check(keyring, None, me.0)?;
    let secret = EphemeralSecret::random_from_rng(rand::rngs::OsRng);
    let eph = XPublicKey::from(&secret).to_bytes();
    let shared = secret.diffie_hellman(&XPublicKey::from(h.eph));
    if !shared.was_contributory() {
        return Err(HandshakeError::WeakExchange);
    }
    let mut reply = Hello {
        cluster: keyring.cluster_id(),
        from: me.0,
        to: h.from,
        eph,
        echo: Some(h.eph),
        signature: Signature::PENDING,
    };
    reply.signature = identity.sign(&reply.signed_bytes());
    let bytes = reply.encode();
    assert_eq!(bytes.len(), ACCEPT_HELLO_LEN);
    let (cipher, mac) = derive(
        keyring.cluster_id(),
        h.from,
        me.0,
        &h.eph,
        &eph,
        shared.as_bytes(),
        hello,
        &bytes,
    );
    Ok((
        bytes,
        ReplicaId(h.from),
        AwaitingConfirm {
            open: OpenKey {
                cipher,
                peer: h.from,
                next_seq: 0,
                frame_bytes_max: message_bytes_max + FRAME_OVERHEAD,
            },
            mac,
        },
    ))
}

fn nonce(seq: u64) -> GcmNonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&seq.to_be_bytes());
    n.into()
}

/// Seals frames on one outgoing link.
pub struct SealKey {
    cipher: Aes256Gcm,
    sender: u16,
    next_seq: u64,
}

impl SealKey {
    /// Appends one frame carrying `message` to `out`
    /// (`message.len() + FRAME_OVERHEAD` bytes).
    pub fn seal(&mut self, message: &[u8], out: &mut Vec<u8>) {
        let seq = self.next_seq;
        self.next_seq = seq.checked_add(1).expect("link sequence exhausted");
        let start = out.len();
        out.push(FRAME_VERSION);
        out.push(FRAME_KIND_MESSAGE);
        out.extend_from_slice(&self.sender.to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(message);
        let (header, body) = out[start..].split_at_mut(FRAME_HEADER_LEN);
        let tag = self
            .cipher
            .encrypt_in_place_detached(&nonce(seq), header, body)
            .expect("AES-GCM encryption of a bounded frame cannot fail");
        out.extend_from_slice(&tag);
    }
}

/// Why a frame was dropped by [`OpenKey::open`]. Each has a drop counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is shorter than header and tag")]
    TooShort(usize),
    #[error("frame of {len} bytes is above the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("frame version or kind {0:#x} unknown")]
    BadVersion(u16),
    #[error("frame claims sender {got} on the link from {want}")]
    WrongSender { got: u16, want: u16 },
    #[error("frame sequence {got}, expected {want}")]
    BadSequence { got: u64, want: u64 },
    #[error("frame authentication tag does not verify")]
    BadTag,
}

impl FrameError {
    /// Stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            FrameError::TooShort(_) => "too_short",
            FrameError::TooLong { .. } => "too_long",
            FrameError::BadVersion(_) => "bad_version",
            FrameError::WrongSender { .. } => "wrong_sender",
            FrameError::BadSequence { .. } => "bad_sequence",
            FrameError::BadTag => "bad_tag",
        }
    }
}

/// Opens frames on one incoming link.
pub struct OpenKey {
    cipher: Aes256Gcm,
    peer: u16,
    next_seq: u64,
    frame_bytes_max: usize,
}

impl OpenKey {
    /// The replica at the other end of the link.
    pub fn peer(&self) -> ReplicaId {
        ReplicaId(self.peer)
    }
    /// Checks and decrypts one frame in place; returns the message bytes.
    /// On error nothing changes (the expected sequence does not advance).
    pub fn open<'a>(&mut self, frame: &'a mut [u8]) -> Result<&'a [u8], FrameError> {
        let len = frame.len();
        if len < FRAME_OVERHEAD {
            return Err(FrameError::TooShort(len));
        }
        if len > self.frame_bytes_max {
            return Err(FrameError::TooLong {
                len,
                max: self.frame_bytes_max,
            });
        }
        if frame[0] != FRAME_VERSION || frame[1] != FRAME_KIND_MESSAGE {
            return Err(FrameError::BadVersion(u16::from_be_bytes([
                frame[0], frame[1],
            ])));
        }
        let sender = u16::from_be_bytes([frame[2], frame[3]]);
        if sender != self.peer {
            return Err(FrameError::WrongSender {
                got: sender,
                want: self.peer,
            });
        }
        let seq = u64::from_be_bytes(frame[4..12].try_into().expect("8 bytes"));
        if seq != self.next_seq {
            return Err(FrameError::BadSequence {
                got: seq,
                want: self.next_seq,
            });
        }
        let (rest, tag) = frame.split_at_mut(len - FRAME_TAG_LEN);
        let tag = Tag::clone_from_slice(tag);
        let (header, body) = rest.split_at_mut(FRAME_HEADER_LEN);
        self.cipher
            .decrypt_in_place_detached(&nonce(seq), header, body, &tag)
            .map_err(|_| FrameError::BadTag)?;
        self.next_seq += 1;
        Ok(body)
    }
}
