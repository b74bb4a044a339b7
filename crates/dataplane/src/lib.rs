//! `dataplane`: the pinned-core message path of a replica.
//!
//! - [`rx::Receiver`]: frames in, [`wire::Verified`] messages out — open,
//!   decode (hashing batches), batch-verify signatures, with a counter for
//!   every drop reason ([`stats::DataplaneStats`]).
//! - [`outbox::Outbox`]: sign, encode once, seal into every link's write
//!   buffer, return this replica's own copy; `flush` writes.
//!
//! Only this crate (through [`wire::Verifier`] and [`wire::Signer`]) turns
//! bytes into values the control core accepts.

pub mod outbox;
pub mod rx;
pub mod stats;

pub use outbox::{Dest, Outbox};
pub use rx::{Receiver, RxConfig};
pub use stats::DataplaneStats;
