//! Restart from what `storage` recovered: the newest checkpoint, then every
//! decision logged after it (re-executed against the store), then the votes
//! logged for instances still open, given back to the core
//! (`Replica::recover_vote`): a restarted replica never votes twice in a
//! regency. The core is told it restarted (`Replica::mark_restarted`) and,
//! once running, asks the others what it missed (`Replica::catch_up`).
//!
//! The same function restarts a `bftd` process (after `Storage::open`) and
//! a simulated replica (whose disk keeps the same records).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use control::{ClientTable, Replica};
use kv::Store;
use storage::{Record, Recovered};
use wire::{Batch, Decided, Digest, Limits};

use crate::exec::execute_request;

/// What a replica restarts from.
#[derive(Debug)]
pub struct Restored {
    pub store: Store,
    pub core: Replica,
    /// Decisions re-executed from the log.
    pub replayed: u64,
    /// The checkpoint restarted from, if any.
    pub checkpoint_cid: Option<u64>,
    /// Votes of open instances given back to the core.
    pub votes: u64,
    /// True when the log held anything (a restart, not a first start).
    pub restarted: bool,
}

/// Expiry votes that expire a lease in a cluster of `cfg`: f+1, so that at
/// least one correct replica's clock agrees (`kv::lease`).
pub fn lease_votes_needed(cfg: &control::Config) -> usize {
    cfg.f() + 1
}

/// Why the recovered log cannot be used. The message says what is wrong;
/// [`RestoreError::advice`] what the operator does about it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct RestoreError(pub String);

impl RestoreError {
    /// What to do: restore the replica from the others.
    pub fn advice() -> &'static str {
        "restore this replica from the others: stop it, move its data directory away, and \
         start it again (state transfer refills it)"
    }
}

fn corrupt(what: String) -> RestoreError {
    RestoreError(what)
}

/// The newest run of consecutive decisions among `covered` (records at or
/// below the checkpoint at `checkpoint_cid`, see `Recovered::covered`)
/// that ends at the checkpoint, at most `log_max` of them: what the
/// replica had in its decision log when it wrote the checkpoint. Empty
/// when the log does not reach the checkpoint's cid (a checkpoint
/// installed by state transfer) or a decision's batch was truncated away.
///
/// # Errors
/// A proposal or proof that does not decode, or a proof naming another
/// instance.
fn covered_decisions(
    covered: Vec<Record>,
    checkpoint_cid: u64,
    log_max: usize,
    limits: &Limits,
) -> Result<VecDeque<Decided>, RestoreError> {
    let mut batches: HashMap<(u64, Digest), Arc<Batch>> = HashMap::new();
    let mut run: VecDeque<Decided> = VecDeque::new();
    for r in covered {
        match r {
            Record::Proposal { cid, batch, .. } => {
                let b = Batch::from_bytes(&batch, limits).map_err(|e| {
                    corrupt(format!(
                        "logged proposal for cid {cid} does not decode: {e}"
                    ))
                })?;
                batches.entry((cid, b.digest())).or_insert(Arc::new(b));
            }
            Record::Decision {
                cid,
                digest,
                proof: p,
                ..
            } => {
                let p = wire::DecisionProof::from_bytes(&p, limits)
                    .map_err(|e| corrupt(format!("decision {cid} proof does not decode: {e}")))?;
                if p.cid != cid || p.digest != digest {
                    return Err(corrupt(format!(
                        "decision {cid} proof names another instance or batch"
                    )));
                }
                let follows = run.back().is_some_and(|d| d.proof.cid + 1 == cid);
                let Some(batch) = batches.get(&(cid, digest)) else {
                    run.clear();
                    continue;
                };
                if !follows {
                    run.clear();
                }
                if run.len() == log_max {
                    run.pop_front();
                }
                run.push_back(Decided {
                    batch: batch.clone(),
                    proof: p,
                });
                batches.retain(|(c, _), _| *c > cid);
            }
            _ => {}
        }
    }
    if run.back().is_none_or(|d| d.proof.cid != checkpoint_cid) {
        run.clear();
    }
    Ok(run)
}

/// Rebuilds the replica's state from `rec`, with the kv store's default
/// space quota (`kv::DEFAULT_QUOTA_BACKEND_BYTES`); see
/// [`restore_with_quota`].
///
/// # Errors
/// As [`restore_with_quota`].
pub fn restore(
    cfg: control::Config,
    rec: Recovered,
    limits: &Limits,
    commands_max: usize,
) -> Result<Restored, RestoreError> {
    restore_with_quota(
        cfg,
        rec,
        limits,
        commands_max,
        kv::DEFAULT_QUOTA_BACKEND_BYTES,
    )
}

/// Rebuilds the replica's state from `rec`. `limits` bound what is decoded
/// from the log (as from the network); `commands_max` is the executor's
/// bound on commands per request; `quota_backend_bytes` is the cluster's
/// kv space quota (`kv::Store::set_quota_bytes`, 0 = default), set on the
/// store before any logged decision is re-executed: whether a write was
/// refused for space depends on it, so the replay must use the value the
/// cluster ran with.
///
/// # Errors
/// A checkpoint, proposal or proof that does not decode, or decisions that
/// jump or name a batch the log does not hold (above the checkpoint).
pub fn restore_with_quota(
    cfg: control::Config,
    rec: Recovered,
    limits: &Limits,
    commands_max: usize,
    quota_backend_bytes: u64,
) -> Result<Restored, RestoreError> {
    restore_from(
        cfg,
        rec,
        limits,
        commands_max,
        quota_backend_bytes,
        None,
        Store::new(),
    )
}

/// [`restore_with_quota`] for a cluster that started from `initial_store`
/// instead of an empty store (a seeded cluster, `bftd init
/// --from-snapshot`): when `rec` holds no checkpoint, the logged decisions
/// are re-executed on `initial_store`. Every replica of the cluster must
/// pass an identical store (or none): it is the state before decision 1.
/// With a checkpoint it is not used (the checkpoint holds the whole state).
///
/// `empty` is an empty store on the value backend the replica runs with
/// (`kv::Store::open`: the heap, or a fresh LMDB directory): the
/// checkpoint, or the initial store, is loaded into it
/// (`kv::Store::restore_reusing`), and the logged decisions run on it.
///
/// # Errors
/// As [`restore_with_quota`].
pub fn restore_from(
    cfg: control::Config,
    rec: Recovered,
    limits: &Limits,
    commands_max: usize,
    quota_backend_bytes: u64,
    initial_store: Option<Store>,
    empty: Store,
) -> Result<Restored, RestoreError> {
    assert_eq!(empty.revision(), 1, "restore starts from an empty store");
    let restarted = rec.checkpoint.is_some() || !rec.records.is_empty() || rec.regency > 0;
    let chunk_bytes = cfg.snapshot_chunk_bytes;
    let (mut store, mut clients, mut last, mut proof, checkpoint) = match rec.checkpoint {
        Some(c) => {
            let ckpt = control::checkpoint::decode(&c.snapshot, limits, usize::MAX)
                .map_err(|e| corrupt(format!("checkpoint {} does not decode: {e}", c.cid)))?;
            let store = Store::restore_reusing(&ckpt.app, empty).map_err(|e| {
                corrupt(format!("checkpoint {} holds a bad kv snapshot: {e}", c.cid))
            })?;
            let prepared = control::checkpoint::prepare(c.snapshot, chunk_bytes)
                .map_err(|e| corrupt(format!("checkpoint {} does not decode: {e}", c.cid)))?;
            (store, ckpt.clients, ckpt.cid, ckpt.proof, Some(prepared))
        }
        None => (
            match initial_store {
                Some(initial) if empty.value_backend() == kv::ValueBackend::Heap => initial,
                // A store that decoded from a checked file encodes and
                // decodes again.
                Some(initial) => Store::restore_reusing(&initial.snapshot(), empty)
                    .map_err(|e| corrupt(format!("the initial store does not restore: {e}")))?,
                None => empty,
            },
            ClientTable::default(),
            0,
            None,
            None,
        ),
    };
    store.set_quota_bytes(quota_backend_bytes);
    // A lease expires on the votes of f+1 replicas: at least one correct.
    store.set_lease_votes_needed(lease_votes_needed(&cfg));
    let checkpoint_cid = checkpoint.as_ref().map(|p| p.info.cid);
    // Batches logged as proposals, by (cid, digest): their regency, bytes.
    let mut proposals: HashMap<(u64, Digest), (u32, Arc<Batch>)> = HashMap::new();
    let mut replayed = 0;
    // ACCEPT records: (regency, cid, digest).
    let mut accepts: Vec<(u32, u64, Digest)> = Vec::new();
    // The newest decisions, for the core's decision log: those the
    // checkpoint covers, then the replayed ones.
    let log_max = cfg.decision_log_max();
    let mut replayed_log = covered_decisions(rec.covered, last, log_max, limits)?;
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
                let e = proposals
                    .entry((cid, b.digest()))
                    .or_insert((regency, Arc::new(b)));
                e.0 = e.0.max(regency);
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
                if p.cid != cid || p.digest != digest {
                    return Err(corrupt(format!(
                        "decision {cid} proof names another instance or batch"
                    )));
                }
                for req in batch.requests() {
                    if clients.mark_executed(req.client, req.seq) {
                        // Nobody waits for results after a restart.
                        let _ = execute_request(&mut store, req, false, commands_max);
                    }
                }
                if replayed_log.len() == log_max {
                    replayed_log.pop_front();
                }
                replayed_log.push_back(Decided {
                    batch: batch.clone(),
                    proof: p.clone(),
                });
                last = cid;
                proof = Some(p);
                replayed += 1;
            }
            Record::Accept {
                regency,
                cid,
                digest,
            } => accepts.push((regency, cid, digest)),
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
    core.recover_decisions(replayed_log);
    let mut open: Vec<_> = proposals
        .into_iter()
        .filter(|((cid, _), _)| *cid > last)
        .collect();
    open.sort_by_key(|((cid, d), (reg, _))| (*cid, *reg, d.0));
    // A correct replica logs one proposal per cid and regency; two would
    // make it vote twice.
    for w in open.windows(2) {
        let ((c0, d0), (r0, _)) = &w[0];
        let ((c1, d1), (r1, _)) = &w[1];
        if c0 == c1 && r0 == r1 && d0 != d1 {
            return Err(corrupt(format!(
                "the log holds two different proposals for cid {c0} in regency {r0}"
            )));
        }
    }
    let mut votes = 0;
    for ((cid, _), (reg, batch)) in open {
        votes += core.recover_vote(reg, cid, batch) as u64;
    }
    accepts.sort();
    for (regency, cid, digest) in accepts {
        if cid > last {
            core.recover_accept(regency, cid, digest);
        }
    }
    if let Some(p) = checkpoint {
        core.on_checkpoint(p);
    }
    if restarted {
        core.mark_restarted();
    }
    Ok(Restored {
        store,
        core,
        replayed,
        checkpoint_cid,
        votes,
        restarted,
    })
}
