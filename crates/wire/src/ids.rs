//! Identifiers of the protocol: replicas, clients, regencies, consensus instances.

use std::fmt;

/// A replica's index in the cluster config, `0..n`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ReplicaId(pub u16);

impl ReplicaId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Debug for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}
impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The identity a request is signed by. Ids below [`ClientId::REPLICA_LIMIT`]
/// are the replicas themselves acting as proxies for their local etcd
/// clients (request key = the replica's key); higher ids are BFT clients with
/// keys of their own in the cluster config.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ClientId(pub u64);

impl ClientId {
    /// Client ids `0..REPLICA_LIMIT` belong to replicas.
    pub const REPLICA_LIMIT: u64 = 1 << 16;
    /// The proxy client id of replica `r`.
    pub fn of_replica(r: ReplicaId) -> Self {
        ClientId(r.0 as u64)
    }
    /// The replica this client id belongs to, if it is a replica's proxy id.
    pub fn replica(self) -> Option<ReplicaId> {
        (self.0 < Self::REPLICA_LIMIT).then_some(ReplicaId(self.0 as u16))
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// Consensus instance number (BFT-SMaRt's `cid`). Instance 0 is never
/// decided; the first decision is cid 1.
pub type Cid = u64;

/// Regency (BFT-SMaRt): the number of the current leader change epoch. The
/// leader of regency `r` is replica `r mod n`.
pub type Regency = u32;
