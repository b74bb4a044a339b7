//! THE match over the core's outputs, for every host.

use std::collections::VecDeque;
use std::sync::Arc;

use control::{ClientTable, Decision, Output, Replica, Target};
use wire::{CheckpointInfo, Message, Regency, ReplicaId, Verified};

use crate::log::DiskJob;

/// Most own-copy rounds while carrying out one input's outputs. Each round
/// produces finitely many outputs (the core answers its own PROPOSE with
/// one WRITE, WRITEs with at most one ACCEPT per instance, ...); more means
/// the core loops, a broken invariant.
pub const CARRY_OUT_ROUNDS_MAX: usize = 100_000;

/// The outside world of one replica: network, disk, executor. Every method
/// sees the core as it is at that output (read-only).
pub trait Host {
    /// Why the host cannot go on (a thread downstream is gone).
    type Error;

    /// Signs `msg` as this replica and sends it to `to`. Returns this
    /// replica's own signed copy when `to` includes it (fed back to the
    /// core).
    fn send(
        &mut self,
        core: &Replica,
        to: Target,
        msg: Message,
    ) -> Result<Option<Verified<Message>>, Self::Error>;

    /// Starts a durable write. Returns true if it is durable already (an
    /// in-memory host): its acknowledgement ([`DiskJob::ack`]) is applied at
    /// once. Otherwise the host hands the [`crate::Ack`] back through
    /// [`crate::Ack::apply`] once the write is durable.
    fn write(&mut self, core: &Replica, job: DiskJob) -> Result<bool, Self::Error>;

    /// Executes a decision (after its DECISION record was handed to
    /// [`Host::write`]).
    fn deliver(&mut self, core: &Replica, d: Decision) -> Result<(), Self::Error>;

    /// Replaces the application state by a checkpoint's (`app`, as of
    /// `info.cid`) that state transfer brought; `clients` is the core's
    /// de-duplication table after it.
    fn install(
        &mut self,
        core: &Replica,
        info: CheckpointInfo,
        app: Vec<u8>,
        clients: ClientTable,
    ) -> Result<(), Self::Error>;

    /// A regency is in force (for logs, metrics, checkers).
    fn regency(
        &mut self,
        core: &Replica,
        regency: Regency,
        leader: ReplicaId,
    ) -> Result<(), Self::Error>;
}

/// Carries out `out` and everything it leads to, feeding own copies of
/// sent messages straight back to the core (`own` and `work` are the
/// caller's reusable buffers, left empty).
///
/// Order per output: PERSIST, PERSIST_ACCEPT and REGENCY go to the disk
/// and are applied to
/// the core only when durable; a DELIVER is logged then executed; an
/// installed checkpoint is stored then installed.
pub fn carry_out<H: Host>(
    core: &mut Replica,
    host: &mut H,
    out: &mut Vec<Output>,
    work: &mut Vec<Output>,
    own: &mut VecDeque<Verified<Message>>,
) -> Result<(), H::Error> {
    for _round in 0..CARRY_OUT_ROUNDS_MAX {
        std::mem::swap(out, work);
        for o in work.drain(..) {
            match o {
                Output::Send { to, msg } => {
                    if let Some(copy) = host.send(core, to, msg)? {
                        own.push_back(copy);
                    }
                }
                Output::Persist {
                    cid,
                    regency,
                    batch,
                } => {
                    let job = DiskJob::Proposal {
                        cid,
                        regency,
                        batch,
                    };
                    let ack = job.ack().expect("a proposal is acknowledged");
                    if host.write(core, job)? {
                        ack.apply(core, out);
                    }
                }
                Output::PersistAccept {
                    regency,
                    cid,
                    digest,
                } => {
                    let job = DiskJob::Accept {
                        regency,
                        cid,
                        digest,
                    };
                    let ack = job.ack().expect("an accept is acknowledged");
                    if host.write(core, job)? {
                        ack.apply(core, out);
                    }
                }
                Output::Deliver(d) => {
                    host.write(
                        core,
                        DiskJob::Decision {
                            batch: d.batch.clone(),
                            proof: d.proof.clone(),
                        },
                    )?;
                    host.deliver(core, d)?;
                }
                Output::Regency { regency, leader } => {
                    host.regency(core, regency, leader)?;
                    let job = DiskJob::Regency(regency);
                    let ack = job.ack().expect("a regency is acknowledged");
                    if host.write(core, job)? {
                        ack.apply(core, out);
                    }
                }
                Output::InstallCheckpoint { info, blob, app } => {
                    host.write(
                        core,
                        DiskJob::Installed {
                            cid: info.cid,
                            blob: Arc::clone(&blob),
                        },
                    )?;
                    host.install(core, info, app, core.clients().clone())?;
                }
            }
        }
        match own.pop_front() {
            Some(m) => core.on_message(m, out),
            None if out.is_empty() => return Ok(()),
            None => {}
        }
    }
    panic!(
        "{:?}: outputs did not settle after {CARRY_OUT_ROUNDS_MAX} rounds",
        core.id()
    );
}
