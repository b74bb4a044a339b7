//! Restart from disk: opens the write-ahead log and rebuilds the replica
//! with `node::restore` (the same restart path the simulator runs): the
//! newest checkpoint, the decisions logged after it re-executed, the votes
//! logged for instances still open given back to the core. The replica
//! then asks the others whether it missed anything (state transfer).

use kv::Store;
use storage::Storage;
use wire::Limits;

use control::Replica;

use super::StartError;

/// What a replica restarts from.
pub struct Restored {
    pub storage: Storage,
    pub store: Store,
    pub core: Replica,
    /// Decisions re-executed from the log, and the checkpoint used.
    pub replayed: u64,
    pub checkpoint_cid: Option<u64>,
    /// Votes of open instances recovered from the log.
    pub votes: u64,
}

/// Opens the log in `dir` and rebuilds the replica's state from it; the
/// store gets the space quota `quota_backend_bytes` (`[protocol]`) before
/// the logged decisions are re-executed. Without a checkpoint in the log,
/// the decisions are re-executed on the store `initial_store` returns (a
/// seeded cluster, see [`crate::seed`]; `None`: an empty store); with one,
/// `initial_store` is not called. The store keeps its values on
/// `kv_backend` (an LMDB directory is wiped and rebuilt: a cache).
#[allow(clippy::too_many_arguments)]
pub fn restore(
    dir: &std::path::Path,
    durability: storage::Durability,
    cfg: control::Config,
    limits: &Limits,
    commands_max: usize,
    quota_backend_bytes: u64,
    kv_backend: &kv::ValueBackend,
    initial_store: impl FnOnce() -> Result<Option<Store>, String>,
) -> Result<Restored, StartError> {
    let (storage, rec) = Storage::open(dir, durability, storage::Limits::default())?;
    let empty = Store::open(kv_backend, kv::DEFAULT_MAX_TXN_OPS).map_err(StartError::KvStore)?;
    for w in &rec.warnings {
        tracing::warn!(dir = %dir.display(), "recovery: {w}");
    }
    let initial = match rec.checkpoint {
        Some(_) => None,
        None => initial_store().map_err(StartError::InitialSnapshot)?,
    };
    if let Some(s) = &initial {
        tracing::info!(
            revision = s.revision(),
            "starting from the initial snapshot"
        );
    }
    let r = node::restore_from(
        cfg,
        rec,
        limits,
        commands_max,
        quota_backend_bytes,
        initial,
        empty,
    )
    .map_err(|e| StartError::Recovery(format!("{e}; {}", node::RestoreError::advice())))?;
    Ok(Restored {
        storage,
        store: r.store,
        core: r.core,
        replayed: r.replayed,
        checkpoint_cid: r.checkpoint_cid,
        votes: r.votes,
    })
}
