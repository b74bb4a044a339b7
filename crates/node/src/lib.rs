//! The replica host around the consensus core, sans-IO.
//!
//! Everything between `control::Replica` and the outside world that must
//! behave the same in the `bftd` process and in the simulator lives here,
//! once (TigerBeetle's replica is generic over its network, storage and
//! time in the same way; ../shared/STYLE.md):
//!
//! - [`carry_out`]: THE match over `control::Output` — own copies fed back,
//!   proposals and regencies acknowledged only once durable, decisions
//!   logged then executed, installed checkpoints stored — over a [`Host`]
//!   that is the network, the disk and the executor;
//! - [`log`]: how those outputs become `storage::Record`s (a decided batch
//!   never logged as a proposal is logged as one first), and the
//!   acknowledgements the disk owes the core;
//! - [`exec`]: executing a decided request on the kv store, and taking a
//!   checkpoint after a decision;
//! - [`proxy`]: the proxy's book of outstanding requests (sent again when
//!   overdue);
//! - [`restore`]: restarting from what `storage` recovered: the newest
//!   checkpoint, the decisions after it re-executed, the votes of open
//!   instances given back to the core, the core told it restarted.
//!
//! The simulator's disk stores the same `storage::Record`s and restarts
//! through the same [`restore`], so a simulated restart runs the
//! production restart path.

pub mod carry;
pub mod exec;
pub mod log;
pub mod proxy;
pub mod restore;

pub use carry::{carry_out, Host};
pub use exec::{execute_request, take_checkpoint};
pub use log::{Ack, DiskJob, LogWriter};
pub use restore::{
    lease_votes_needed, restore, restore_from, restore_with_quota, RestoreError, Restored,
};
