//! Restart from disk: the newest checkpoint, then every decision logged
//! after it (re-executed against the store), then the votes logged for
//! instances still open (reported to the next leader change). The replica
//! then asks the others whether it missed anything (state transfer).

use std::collections::HashMap;
use std::sync::Arc;

use control::{ClientTable, Replica};
use kv::Store;
use storage::{Record, Storage};
use wire::{Batch, CheckpointInfo, Digest, Limits};

use super::executor::execute_request;
use super::StartError;

/// What a replica restarts from.
pub struct Restored {
    pub storage: Storage,
    pub store: Store,
    pub core: Replica,
    /// Decisions re-executed from the log, and the checkpoint used.
    pub replayed: u64,
    pub checkpoint_cid: Option<u64>,
}

fn corrupt(what: String) -> StartError {
    StartError::Recovery(format!(
        "{what}; restore this replica from the others: stop it, move its data directory away, and start it again \
         (state transfer refills it)"
    ))
}

/// Opens the log in `dir` and rebuilds the replica's state from it.
pub fn restore(
    dir: &std::path::Path,
    durability: storage::Durability,
    cfg: control::Config,
    limits: &Limits,
    commands_max: usize,
) -> Result<Restored, StartError> {
    let (storage, rec) = Storage::open(dir, durability, storage::Limits::default())?;
    for w in &rec.warnings {
        tracing::warn!(dir = %dir.display(), "recovery: {w}");
    }
    let (mut store, mut clients, mut last, mut proof, checkpoint) = match rec.checkpoint {
        Some(c) => {
            let ckpt = control::checkpoint::decode(&c.snapshot, limits, usize::MAX)
                .map_err(|e| corrupt(format!("checkpoint {} does not decode: {e}", c.cid)))?;
            let store = Store::restore(&ckpt.app).map_err(|e| {
                corrupt(format!("checkpoint {} holds a bad kv snapshot: {e}", c.cid))
            })?;
            let info = CheckpointInfo {
                cid: ckpt.cid,
                digest: control::checkpoint::digest(&c.snapshot).expect("decoded above"),
                len: c.snapshot.len() as u64,
            };
            (
                store,
                ckpt.clients,
                ckpt.cid,
                ckpt.proof,
                Some((info, Arc::new(c.snapshot))),
            )
        }
        None => (Store::new(), ClientTable::default(), 0, None, None),
    };
    let checkpoint_cid = checkpoint.as_ref().map(|(i, _)| i.cid);
    // Batches logged as proposals, by (cid, digest): their regency, bytes.
    let mut proposals: HashMap<(u64, Digest), (u32, Arc<Batch>)> = HashMap::new();
    let mut replayed = 0;
    for r in rec.records {
        match r {
            Record::Proposal {
                regency,
                cid,
                batch,
            } => {
                let b = Batch::from_bytes(&batch, limits).map_err(|e| {
                    corrupt(format!(
                        "logged proposal for cid {cid} does not decode: {e}"
                    ))
                })?;
                proposals.insert((cid, b.digest()), (regency, Arc::new(b)));
            }
            Record::Decision {
                cid,
                digest,
                proof: p,
                ..
            } => {
                if cid <= last {
                    continue;
                }
                if cid != last + 1 {
                    return Err(corrupt(format!(
                        "logged decisions jump from cid {last} to {cid}"
                    )));
                }
                let (_, batch) = proposals
                    .get(&(cid, digest))
                    .ok_or_else(|| corrupt(format!("decision {cid} has no logged batch")))?;
                let p = wire::DecisionProof::from_bytes(&p, limits)
                    .map_err(|e| corrupt(format!("decision {cid} proof does not decode: {e}")))?;
                for req in batch.requests() {
                    if clients.mark_executed(req.client, req.seq) {
                        // Nobody waits for results after a restart.
                        let _ = execute_request(&mut store, req, false, commands_max);
                    }
                }
                last = cid;
                proof = Some(p);
                replayed += 1;
            }
            Record::Regency { .. } | Record::Checkpoint { .. } => {}
        }
    }
    let regency = proposals
        .values()
        .map(|(r, _)| *r)
        .max()
        .unwrap_or(0)
        .max(rec.regency);
    let mut core = Replica::new(cfg, regency, last, proof, clients);
    let mut open: Vec<_> = proposals
        .into_iter()
        .filter(|((cid, _), _)| *cid > last)
        .collect();
    open.sort_by_key(|((cid, _), (reg, _))| (*cid, *reg));
    for ((cid, _), (reg, batch)) in open {
        core.recover_vote(reg, cid, batch);
    }
    if let Some((info, blob)) = checkpoint {
        core.on_checkpoint(info, blob);
    }
    Ok(Restored {
        storage,
        store,
        core,
        replayed,
        checkpoint_cid,
    })
}
