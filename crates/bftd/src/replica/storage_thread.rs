//! The storage thread: the replica's write-ahead log (crates/storage).
//!
//! - PROPOSAL records (the batch this replica votes for) are acknowledged
//!   after the group's fdatasync — the ACCEPT waits for that ack, so a
//!   decision implies the batch is durable at a quorum (group commit,
//!   overlapped with the WRITE phase);
//! - DECISION records (with their proofs) ride along with the next group
//!   that has a proposal, or are synced when the thread is idle for a
//!   moment (nothing waits for them);
//!   a decided batch never logged as a proposal (fetched from a peer) is
//!   logged as one first;
//! - ACCEPT records are acknowledged after their sync too (the ACCEPT
//!   waits for that ack: a restarted replica reports exactly the ACCEPTs
//!   it sent);
//! - REGENCY records are acknowledged after their sync too (the STOPDATA
//!   waits for that ack: a crash must not bring the replica back in a
//!   regency it promised to leave);
//! - checkpoints (written atomically, then the log is truncated up to the
//!   older kept checkpoint).
//!
//! Which records a job becomes is `node::LogWriter`'s (shared with the
//! simulator's disk).
//!
//! A replica that cannot write its log stops: it must not vote for what it
//! cannot keep.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use node::{Ack, DiskJob, LogWriter};
use storage::{Record, Storage};
use wire::{Cid, Digest};

/// How long the thread may sit on appended records nobody waits for
/// before it syncs them anyway.
const LAZY_SYNC_AFTER: std::time::Duration = std::time::Duration::from_millis(20);

/// Runs until `jobs` closes. Appends every job waiting (up to `group_max`),
/// syncs once, then acknowledges the proposals of the group. Checkpoint
/// files are written by a checkpointer thread of its own (a multi-MB write
/// and fsync must not stall group commits); when one is durable, its
/// record is appended and the log truncated here. When idle, preallocates
/// log space ahead (`Storage::prepare`), so commits never grow the file.
pub fn run(
    mut storage: Storage,
    jobs: Receiver<DiskJob>,
    acks: Sender<Ack>,
    group_max: usize,
    hist: Arc<super::status::Histograms>,
    wake: Option<nic::RxWaker>,
) {
    let fail = |e: storage::StorageError| -> ! {
        panic!("write-ahead log failed, stopping the replica: {e}")
    };
    let (to_checkpointer, checkpoint_jobs) = crossbeam_channel::bounded::<(Cid, Arc<Vec<u8>>)>(2);
    let (written_tx, written) = crossbeam_channel::bounded::<(Cid, Digest)>(2);
    if let Some(dir) = storage.dir().map(|d| d.to_path_buf()) {
        let limits = storage.limits().clone();
        std::thread::Builder::new()
            .name("checkpointer".into())
            .spawn(move || {
                for (cid, blob) in checkpoint_jobs {
                    let digest = wire::hash::digest(&blob);
                    storage::write_checkpoint_file(&dir, &limits, cid, digest, &blob)
                        .unwrap_or_else(|e| {
                            panic!("checkpoint {cid} could not be written, stopping: {e}")
                        });
                    if written_tx.send((cid, digest)).is_err() {
                        return;
                    }
                }
            })
            .expect("spawn the checkpointer thread");
    }
    let mut group = Vec::with_capacity(group_max);
    let mut writer = LogWriter::new(storage.regency());
    // Records appended but not yet synced that nobody waits for.
    let mut unsynced = false;
    loop {
        // Idle: prepare log space ahead, one bounded step at a time.
        while jobs.is_empty() && written.is_empty() && storage.prepare().unwrap_or_else(|e| fail(e))
        {
        }
        let wait = if unsynced {
            LAZY_SYNC_AFTER
        } else {
            Duration::from_secs(3600)
        };
        crossbeam_channel::select! {
            recv(jobs) -> j => match j {
                Ok(j) => group.push(j),
                Err(_) => return,
            },
            recv(written) -> w => {
                if let Ok((cid, digest)) = w {
                    if storage.checkpoint_cids().last().is_some_and(|&c| c >= cid) {
                        // State transfer recorded a newer checkpoint meanwhile.
                        let dir = storage.dir().expect("disk mode").to_path_buf();
                        storage::remove_checkpoint_file(&dir, cid).unwrap_or_else(|e| fail(e));
                        continue;
                    }
                    storage.checkpoint_written(cid, digest).unwrap_or_else(|e| fail(e));
                    storage.truncate_through(cid).unwrap_or_else(|e| fail(e));
                    let floor = storage.checkpoint_cids().first().copied().unwrap_or(0);
                    writer.truncated(floor);
                    unsynced = true;
                }
                continue;
            },
            default(wait) => {
                if unsynced {
                    storage.sync().unwrap_or_else(|e| fail(e));
                    unsynced = false;
                }
                continue;
            },
        }
        while group.len() < group_max {
            match jobs.try_recv() {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        let mut to_ack = Vec::new();
        for job in group.drain(..) {
            for r in writer.records(&job) {
                append(&mut storage, r);
            }
            if let Some(a) = job.ack() {
                to_ack.push(a);
            }
            match job {
                DiskJob::Checkpoint { cid, blob } => {
                    // Checkpoints are best effort: if the checkpointer is
                    // still busy with the previous one, skip this one (the
                    // log is truncated at the next).
                    if storage.checkpoint_cids().last().is_none_or(|&c| c < cid) {
                        let _ = to_checkpointer.try_send((cid, blob));
                    }
                }
                DiskJob::Installed { cid, blob } => {
                    if storage.checkpoint_cids().last().is_none_or(|&c| c < cid) {
                        storage.sync().unwrap_or_else(|e| fail(e));
                        let digest = wire::hash::digest(&blob);
                        storage
                            .write_checkpoint(cid, digest, &blob)
                            .unwrap_or_else(|e| fail(e));
                        storage.truncate_through(cid).unwrap_or_else(|e| fail(e));
                        let floor = storage.checkpoint_cids().first().copied().unwrap_or(0);
                        writer.truncated(floor);
                    }
                }
                DiskJob::Proposal { .. }
                | DiskJob::Accept { .. }
                | DiskJob::Decision { .. }
                | DiskJob::Regency(_) => {}
            }
        }
        if to_ack.is_empty() {
            // Nobody waits on this group: a decision is already durable at
            // a quorum through the proposals (and a lost DECISION record
            // only means more state transfer after a crash).
            unsynced = true;
            continue;
        }
        let started = std::time::Instant::now();
        storage.sync().unwrap_or_else(|e| fail(e));
        unsynced = false;
        hist.fsync.observe(started.elapsed());
        for a in to_ack {
            if acks.send(a).is_err() {
                return;
            }
        }
        if let Some(w) = &wake {
            w.wake();
        }
    }
}

fn append(storage: &mut Storage, r: Record) {
    match storage.append(&r) {
        Ok(_) => {}
        Err(storage::StorageError::GroupFull { .. }) => {
            storage
                .sync()
                .unwrap_or_else(|e| panic!("write-ahead log failed, stopping the replica: {e}"));
            storage
                .append(&r)
                .unwrap_or_else(|e| panic!("write-ahead log failed, stopping the replica: {e}"));
        }
        Err(e) => panic!("write-ahead log failed, stopping the replica: {e}"),
    }
}
