//! The executor thread: applies decisions to the key-value store in cid
//! order, answers this replica's own clients, takes checkpoints, and
//! installs checkpoints brought by state transfer.
//!
//! Writes execute at every replica. Read-only operations (linearizable
//! reads, ordered through consensus) execute only at the replica whose
//! client asked, at their position in the order: the same result every
//! replica would compute there, without the others doing the work.

use std::sync::Arc;

use control::checkpoint::Prepared;
use control::{ClientTable, Decision};
use crossbeam_channel::{Receiver, Sender};
use kv::{KvError, Store};
use node::DiskJob;
use parking_lot::RwLock;
use wire::ClientId;

use super::proxy::Waiters;
use super::status::Status;

/// Work for the executor.
pub enum ExecJob {
    /// Execute the next decision.
    Decide(Decision),
    /// Replace the store with a checkpoint's application state (state
    /// transfer); `clients` is the de-duplication table it came with.
    Install {
        cid: wire::Cid,
        app: Vec<u8>,
        clients: ClientTable,
    },
}

/// Everything the executor owns.
pub struct Executor {
    pub store: Arc<RwLock<Store>>,
    pub jobs: Receiver<ExecJob>,
    pub me: ClientId,
    pub waiters: Arc<Waiters>,
    pub status: Arc<Status>,
    /// Most commands decoded from one request.
    pub commands_per_request_max: usize,
    /// Largest read response, bytes (`[api] range_response_bytes_max`).
    pub range_response_bytes_max: usize,
    /// The kv space quota (`[protocol] quota_backend_bytes`), set on a
    /// store installed by state transfer.
    pub quota_backend_bytes: u64,
    /// Expiry votes that expire a lease (f+1), set on a store installed by
    /// state transfer (`kv::Store::set_lease_votes_needed`).
    pub lease_votes_needed: usize,
    /// Checkpoints taken, reported to the control thread.
    pub checkpoints: Sender<Prepared>,
    /// The storage thread (`None` with `durability = "memory"`).
    pub storage: Option<Sender<DiskJob>>,
    /// The checkpoint chunk size (`control::Config::snapshot_chunk_bytes`).
    pub snapshot_chunk_bytes: usize,
    pub hist: Arc<super::status::Histograms>,
    /// Wakes the control thread when it waits in the transport (inline
    /// dataplane).
    pub wake: Option<nic::RxWaker>,
    /// The store's revision after each executed batch, for watchers
    /// (`api::Backend::revisions`).
    pub revisions: tokio::sync::watch::Sender<i64>,
}

impl Executor {
    /// Runs until the control thread hangs up.
    pub fn run(self) {
        while let Ok(job) = self.jobs.recv() {
            match job {
                ExecJob::Decide(d) => {
                    let started = std::time::Instant::now();
                    self.execute(&d);
                    self.hist.execute.observe(started.elapsed());
                }
                ExecJob::Install { cid, app, clients } => self.install(cid, &app, &clients),
            }
        }
    }

    fn execute(&self, d: &Decision) {
        let mut executed = 0;
        for r in d.fresh_requests() {
            executed += 1;
            let own = r.client == self.me;
            let result = kv::command::decode_batch(&r.payload, self.commands_per_request_max).map(
                |commands| {
                    if commands.iter().all(|c| c.is_read_only()) {
                        // Ordered reads run only where their client asked,
                        // under the read lock (serving reads go on).
                        if own {
                            node::exec::read_commands(
                                &self.store.read(),
                                &commands,
                                self.range_response_bytes_max,
                            )
                        } else {
                            Vec::new()
                        }
                    } else {
                        node::exec::execute_commands(
                            &mut self.store.write(),
                            node::exec::origin(r),
                            &commands,
                            own,
                            self.range_response_bytes_max,
                        )
                    }
                },
            );
            match result {
                Ok(results) if own => {
                    let mut it = results.into_iter();
                    self.answer(r.seq, |_| it.next().expect("one result per command"));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(client = ?r.client, seq = r.seq, "undecodable request skipped: {e}");
                    if own {
                        self.answer(r.seq, |_| Err(KvError::UndecodableRequest));
                    }
                }
            }
        }
        // An own request decided but not fresh was executed before: if a
        // caller still waits for it, its first execution happened where
        // this run could not answer it (an earlier run of this replica, a
        // checkpoint it installed). Its outcome is unknown here, never a
        // silent hang.
        if d.fresh.len() < d.batch.requests().len() {
            for (i, r) in d.batch.requests().iter().enumerate() {
                if r.client == self.me && !d.fresh.contains(&(i as u32)) {
                    self.answer(r.seq, |_| Err(KvError::OutcomeUnknown));
                }
            }
        }
        let s = &self.status;
        Status::set(&s.last_applied_cid, d.cid);
        let revision = self.store.read().revision();
        Status::set(&s.revision, revision as u64);
        self.revisions
            .send_if_modified(|r| std::mem::replace(r, revision) != revision);
        s.decisions_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        s.requests_executed_total
            .fetch_add(executed, std::sync::atomic::Ordering::Relaxed);
        if let Some(clients) = &d.checkpoint {
            self.checkpoint(d, clients);
        }
    }

    /// Takes the checkpoint the decision asks for: the store after it, the
    /// de-duplication table, the decision's proof (`node::take_checkpoint`,
    /// hashed here, off the control thread).
    fn checkpoint(&self, d: &Decision, clients: &ClientTable) {
        let app = self.store.read().snapshot();
        let p = node::take_checkpoint(&app, d, clients, self.snapshot_chunk_bytes);
        if let Some(s) = &self.storage {
            let _ = s.send(DiskJob::Checkpoint {
                cid: d.cid,
                blob: p.blob.clone(),
            });
        }
        // Never block on the control thread (it may be blocked on us): a
        // dropped report only delays trimming its decision log.
        if self.checkpoints.try_send(p).is_ok() {
            if let Some(w) = &self.wake {
                w.wake();
            }
        }
    }

    fn install(&self, cid: wire::Cid, app: &[u8], clients: &ClientTable) {
        // f+1 replicas reported this checkpoint's digest: a snapshot that
        // does not decode means correct replicas wrote a bad one.
        // The new store takes over the old one's values backend (its LMDB
        // environment), under the write lock: readers wait for the install.
        let mut guard = self.store.write();
        let old = std::mem::take(&mut *guard);
        let mut store =
            Store::restore_reusing(app, old).expect("a checkpoint f+1 replicas agree on decodes");
        // The quota is configuration, not part of the snapshot.
        store.set_quota_bytes(self.quota_backend_bytes);
        store.set_lease_votes_needed(self.lease_votes_needed);
        let revision = store.revision();
        *guard = store;
        drop(guard);
        let s = &self.status;
        Status::set(&s.last_applied_cid, cid);
        Status::set(&s.revision, revision as u64);
        self.revisions.send_replace(revision);
        // Own requests the checkpoint already includes were executed
        // elsewhere: their results are unknown here.
        for replies in self
            .waiters
            .take_executed(|seq| clients.is_executed(self.me, seq))
        {
            for reply in replies {
                let _ = reply.send(Err(KvError::OutcomeUnknown));
            }
        }
        tracing::info!(cid, revision, "installed a checkpoint from state transfer");
    }

    /// Answers every waiting caller of request `seq`.
    fn answer(&self, seq: u64, mut result: impl FnMut(usize) -> Result<kv::Response, KvError>) {
        if let Some(replies) = self.waiters.take(seq) {
            for (i, reply) in replies.into_iter().enumerate() {
                let _ = reply.send(result(i)); // the caller may have given up
            }
        }
    }
}
