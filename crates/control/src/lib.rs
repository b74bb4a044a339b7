//! `control`: bftd's consensus core, sans-IO.
//!
//! [`Replica`] is a pure state machine over inputs — verified messages,
//! client requests, persistence acknowledgements, ticks — that returns
//! [`Output`]s: messages to send, batches to persist, decisions to execute.
//! The same code runs in a replica process (driven by the control thread)
//! and in the deterministic simulator (`sim`). It implements BFT-SMaRt's
//! Mod-SMaRt (see [`replica`] for the paper mapping).

pub mod checkpoint;
pub mod clients;
pub mod config;
mod instance;
pub mod output;
pub mod pending;
pub mod replica;
pub mod sync;
mod transfer;

pub use clients::ClientTable;
pub use config::{Config, ConfigError};
pub use output::{Decision, Output, Target};
pub use replica::{MoveLeaderError, Replica, Stats};
pub use sync::{plan, SyncPlan};
