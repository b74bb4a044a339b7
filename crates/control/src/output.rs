//! What the consensus core asks of its host.

use std::sync::Arc;

use wire::{Batch, CheckpointInfo, Cid, DecisionProof, Message, Regency, ReplicaId, Request};

use crate::clients::ClientTable;

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every replica, this one included: the host signs the message and
    /// hands this replica's copy back to it as a verified input (as
    /// BFT-SMaRt replicas send to themselves).
    All,
    /// One other replica.
    One(ReplicaId),
}

/// An instance whose value is decided, delivered strictly in cid order.
#[derive(Debug, Clone)]
pub struct Decision {
    pub cid: Cid,
    /// Regency in which the decision was reached.
    pub regency: Regency,
    pub batch: Arc<Batch>,
    /// Indices into `batch.requests()` of the requests to execute: those not
    /// executed before (de-duplicated by client id and sequence number).
    pub fresh: Vec<u32>,
    /// The decision proof: a Byzantine quorum of signed ACCEPTs for
    /// `batch.digest()` in one regency.
    pub proof: DecisionProof,
    /// Every `checkpoint_period` decisions: the de-duplication table after
    /// this one. The host executes the batch, then takes a checkpoint
    /// ([`crate::checkpoint::encode`]) and reports it with
    /// [`crate::Replica::on_checkpoint`].
    pub checkpoint: Option<ClientTable>,
}

impl Decision {
    /// The requests to execute, in order.
    pub fn fresh_requests(&self) -> impl Iterator<Item = &Request> + '_ {
        self.fresh
            .iter()
            .map(|&i| &self.batch.requests()[i as usize])
    }
}

/// One effect requested by the core. The host carries them out in order.
#[derive(Debug, Clone)]
pub enum Output {
    /// Send `msg` (signing it first if its kind is signed).
    Send { to: Target, msg: Message },
    /// Make the proposed batch of `cid` durable, then call
    /// [`crate::Replica::on_persisted`] with its digest. With
    /// `durability = "memory"` the host may answer at once.
    Persist {
        cid: Cid,
        regency: Regency,
        batch: Arc<Batch>,
    },
    /// Make this replica's ACCEPT of `digest` for `cid` in `regency`
    /// durable, then call [`crate::Replica::on_accept_persisted`]: the
    /// ACCEPT leaves only then, so a restarted replica reports exactly the
    /// ACCEPTs it sent (neither forgets one, which could make a decided
    /// value look free, nor claims one it never sent, which could block a
    /// leader change after an equivocating leader).
    PersistAccept {
        regency: Regency,
        cid: Cid,
        digest: wire::Digest,
    },
    /// Execute a decision (strictly the next cid after the previous one).
    Deliver(Decision),
    /// A new regency is in force (installed by 2f+1 STOPs, or adopted from
    /// f+1 replicas already in it). The host persists it and logs it.
    Regency { regency: Regency, leader: ReplicaId },
    /// State transfer brought a checkpoint newer than this replica's state:
    /// replace the application state with `app` (as of `info.cid`) and
    /// store `blob` as the newest checkpoint. Comes before the Delivers of
    /// later instances.
    InstallCheckpoint {
        info: CheckpointInfo,
        blob: std::sync::Arc<Vec<u8>>,
        app: Vec<u8>,
    },
}
