//! `wire`: what replicas say to each other and how it is protected.
//!
//! - [`message`]: the protocol's messages (REQUEST, PROPOSE, WRITE, ACCEPT)
//!   and their versioned, size-bounded encoding.
//! - [`crypto`]: identities, signatures, and the [`Verifier`] — the only
//!   producer of [`Verified`] values for messages from other replicas.
//! - [`link`]: the authenticated key exchange and AEAD frames of
//!   replica-to-replica links.
//! - [`codec`], [`hash`]: the bounded encoder/decoder and the digest.

pub mod codec;
pub mod crypto;
pub mod hash;
pub mod ids;
pub mod link;
pub mod message;
pub mod metrics;
pub mod sync;
pub mod transfer;

pub use codec::DecodeError;
pub use crypto::{
    Keyring, PublicKey, SecretKey, Signature, Signer, Verified, Verifier, VerifyError,
};
pub use hash::Digest;
pub use ids::{Cid, ClientId, Regency, ReplicaId};
pub use message::{Accept, Batch, Limits, Message, Propose, Request, Write};
pub use sync::{BatchReply, DecisionProof, Fetch, OpenVote, Stop, StopData, Sync};
pub use transfer::{
    CheckpointInfo, Decided, SnapshotChunk, SnapshotRequest, StateReply, StateRequest,
};
