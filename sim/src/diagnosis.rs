//! Diagnosis of liveness failures: which known `control` bug or gap a
//! failure matches, judged from what the hosts saw their cores do (the
//! messages they sent last, their phase, whether they restarted).
//!
//! Each [`Cause`] names the bug or gap it points to (the labels B1..B10
//! and G1..G3 are those of the simulator's bug report, one replaying test
//! each in `tests/regressions.rs`). A liveness failure whose causes are
//! all known is reported as expected (see [`crate::Report::is_expected`]);
//! one the diagnosis cannot explain ([`Cause::Unknown`]) never is. When a
//! bug is fixed in control, remove its cause from [`OPEN`] so failures of
//! that shape count again.

use std::collections::BTreeMap;

use wire::{Cid, Message};

/// Why a correct replica (or the cluster) did not finish in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    /// The replica decided its next instance by a quorum of ACCEPTs
    /// without the batch, FETCHed it, and never delivered it: nobody
    /// answers a FETCH for a cid at or below their newest checkpoint (the
    /// decision log is cut there) and the FETCH is never re-sent (B4); a
    /// batch that arrives later in a PROPOSE is kept but the decided
    /// instance is not delivered (B1).
    FetchedBatchNeverDelivered,
    /// State transfer is fetching a checkpoint that never completes: its
    /// sources took newer checkpoints and serve only their newest (B3),
    /// or no f+1 replicas report equal checkpoint digests (B2: the blob
    /// includes each replica's own decision proof).
    CheckpointFetchStalled,
    /// State transfer asks and asks without progress: the decisions it
    /// needs were cut from every log at a checkpoint (B4), and no
    /// checkpoint is trusted (B2).
    TransferStalled,
    /// The replica installed a regency and waits for its SYNC forever:
    /// its STOP for the next regency was lost and is never re-sent while
    /// syncing, so the replicas left in the old regency never gather a
    /// quorum (B10).
    StuckWaitingForSync,
    /// A restarted replica starts no state transfer by itself (G2).
    RestartedIdle,
    /// The replica missed a decision inside its instance window (lost
    /// messages, a PROPOSE dropped while syncing, the other value of an
    /// equivocating leader) and nothing triggers a state transfer (G1,
    /// G3).
    LagInsideWindow,
    /// Everyone caught up, but state transfers go on forever: one
    /// Byzantine reply or message set the transfer's target (B5).
    EndlessTransfer,
    /// None of the above.
    Unknown,
}

/// Causes that point at bugs or gaps still open in control.
pub const OPEN: &[Cause] = &[];

impl Cause {
    /// Short label with the bug/gap ids.
    pub fn label(&self) -> &'static str {
        match self {
            Cause::FetchedBatchNeverDelivered => "B1/B4 fetched batch never delivered",
            Cause::CheckpointFetchStalled => "B3/B2 checkpoint fetch stalled",
            Cause::TransferStalled => "B4/B2 state transfer stalled",
            Cause::StuckWaitingForSync => "B10 stuck waiting for SYNC",
            Cause::RestartedIdle => "G2 restarted replica idle",
            Cause::LagInsideWindow => "G1/G3 lag inside the window",
            Cause::EndlessTransfer => "B5 endless state transfer",
            Cause::Unknown => "unknown",
        }
    }

    /// True if the cause is a known, still open control bug or gap.
    pub fn is_open(&self) -> bool {
        OPEN.contains(self)
    }
}

/// Most FETCHed cids a host remembers.
const FETCHES_KEPT: usize = 64;

/// What a host's core asked the network for lately (for the diagnosis).
#[derive(Debug, Default, Clone)]
pub struct Watch {
    /// FETCHed cids, with the tick of the last FETCH.
    pub fetches: BTreeMap<Cid, u64>,
    /// Tick of the last STATE_REQUEST.
    pub state_request_tick: Option<u64>,
    /// Tick of the last SNAPSHOT_REQUEST.
    pub snapshot_request_tick: Option<u64>,
}

impl Watch {
    /// The core sends `msg` at `now`.
    pub fn on_send(&mut self, now: u64, msg: &Message) {
        match msg {
            Message::Fetch(f) => {
                if self.fetches.len() >= FETCHES_KEPT {
                    self.fetches.pop_first();
                }
                self.fetches.insert(f.cid, now);
            }
            Message::StateRequest(_) => self.state_request_tick = Some(now),
            Message::SnapshotRequest(_) => self.snapshot_request_tick = Some(now),
            _ => {}
        }
    }

    /// True if `tick` is within `recent` ticks of `now`.
    pub fn recent(tick: Option<u64>, now: u64, recent: u64) -> bool {
        tick.is_some_and(|t| t + recent >= now)
    }
}
