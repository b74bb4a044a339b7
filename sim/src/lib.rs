//! # sim — bftd's deterministic simulator (VOPR-style)
//!
//! Real `control::Replica` consensus cores and real `kv::Store`s, signing
//! and verifying with real ed25519, run over a fake network, clock and disk.
//! ONE `u64` seed draws everything — cluster size (n = 4, 7, 10), consensus
//! parameters (batching, pipeline, instance window, request/SYNC timeouts,
//! leader throughput monitoring, checkpoint period, state-reply size),
//! delays, reordering, duplication, loss, partitions (symmetric/one-way,
//! holding/dropping, scheduled start and heal), disk latency, crash/restart,
//! which replicas are Byzantine and how, and the client workload — so a
//! failing seed replays exactly.
//!
//! A run has two phases (as TigerBeetle's VOPR): a **safety phase** with
//! faults, then a **liveness phase** where the network heals and crashed
//! replicas restart (Byzantine replicas keep misbehaving) and every client
//! operation must complete, and every correct replica catch up, within a
//! bound computed from the drawn timeouts
//! ([`params::ControlParams::liveness_ticks_bound`]: enough for f+1 leader
//! changes with backed-off SYNC timeouts, then rounds of state transfer).
//!
//! What the host does for the core (as bftd's control thread, executor and
//! storage thread do): signs and sends its messages, feeds its own copies
//! back, makes proposals durable before acknowledging them, executes
//! decisions on the kv store, takes a checkpoint every `checkpoint_period`
//! decisions (the blob of `control::checkpoint::encode`, reported with
//! `Replica::on_checkpoint`), replaces the store when state transfer
//! installs a checkpoint, and logs decisions, regencies and checkpoints to
//! a write-ahead log with `storage`'s contract ([`disk`]). A crashed
//! replica restarts from its newest durable checkpoint plus the durable
//! decisions after it, re-executed, with the proof of its last decision.
//!
//! Checkers:
//! - agreement: every correct replica delivers cids 1, 2, 3, ... (skipping
//!   only what a checkpoint it installed by state transfer covers) and the
//!   same batch (and the same fresh requests) for each; decision proofs are
//!   quorums of valid ACCEPTs ([`checkers`]);
//! - state: equal kv state digests at equal cids — after a delivery, a
//!   checkpoint installation or a restart — and equal executed-request
//!   tables ([`checkers`], [`World::run`]);
//! - regencies only grow, and regency r is led by replica r mod n;
//! - linearizability of the etcd client histories, key by key, plus etcd
//!   revision order across keys ([`linearizability`]);
//! - no forged request ever executes;
//! - liveness after the heal; a failure is diagnosed ([`diagnosis`]) and
//!   reported as expected only if it matches a known, still open bug or
//!   gap of `control` (each with a replaying test in
//!   `tests/regressions.rs`).
//!
//! ## Replaying a seed
//!
//! Every failure prints its seed and the command that replays it:
//!
//! ```text
//! cargo run -p sim --release -- --seed 1234 --verbose
//! ```
//!
//! `--verbose` prints every send, receive, refusal, persist, delivery,
//! checkpoint, regency, installation, crash/restart and client call/return
//! with its tick. A single-seed run executes the seed twice and asserts the
//! two trace hashes are equal (the run is a pure function of the seed).
//! Bulk runs: `cargo run -p sim --release -- --seeds 1000 --start 5000`;
//! `--profile full` adds loss, dropping partitions, crash/restart and
//! Byzantine leaders; `--strict` counts expected (diagnosed) liveness
//! failures too; `--show-expected` prints them.
//!
//! ## Where things plug in
//! - Byzantine behaviours: [`byzantine`] (one `Middleware` per replica).
//! - New consensus outputs: the single `match` in [`host::Host::carry_out`].
//! - New message kinds: [`trace::message_words`] / [`trace::describe`]
//!   (exhaustive matches), then behaviours that should twist them.
//! - Crash recovery: [`disk::Durable`] and `Host::restart`.
//! - A fixed control bug: remove its cause from [`diagnosis::OPEN`] and the
//!   `#[ignore]` of its test in `tests/regressions.rs`.

#![warn(missing_docs)]

pub mod byzantine;
pub mod checkers;
pub mod diagnosis;
pub mod disk;
pub mod history;
pub mod host;
pub mod linearizability;
pub mod network;
pub mod params;
pub mod rng;
pub mod trace;
pub mod workload;
pub mod world;

use std::cell::RefCell;

pub use byzantine::Behavior;
pub use checkers::{Check, Violation};
pub use params::{Options, Params, Profile};
pub use world::{replay_command, Report, World};

thread_local! {
    /// The seed running on this thread, for the panic hook.
    static CURRENT: RefCell<Option<(u64, Options)>> = const { RefCell::new(None) };
}

/// Runs one seed.
pub fn run_seed(seed: u64, opts: &Options) -> Report {
    run_params(Params::generate(seed, opts), opts)
}

/// Runs a (possibly edited) set of parameters.
pub fn run_params(params: Params, opts: &Options) -> Report {
    let seed = params.seed;
    CURRENT.with(|c| *c.borrow_mut() = Some((seed, opts.clone())));
    let report = World::new(params, opts.clone()).run();
    CURRENT.with(|c| *c.borrow_mut() = None);
    report
}

/// Makes a panic inside a run (once per process) (an assertion of the consensus core, the
/// store or the simulator) print the seed and the replay command first.
/// Works with `panic = "abort"` (the release profile).
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(install_panic_hook_once);
}

fn install_panic_hook_once() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        CURRENT.with(|c| {
            if let Some((seed, opts)) = c.borrow().as_ref() {
                eprintln!(
                    "sim: seed {seed} PANICKED\n  replay: {}",
                    replay_command(*seed, opts)
                );
            }
        });
        previous(info);
    }));
}
