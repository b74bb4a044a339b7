//! One seed, one run: the trace hash of a seed is the same every time, and
//! different seeds give different runs.

mod common;

use common::*;
use sim::Profile;

#[test]
fn a_seed_replays_to_the_same_trace_hash() {
    for profile in [Profile::Default, Profile::Full] {
        let opts = options(profile);
        for seed in [0, 1, 7, 12, 4242] {
            let a = sim::run_seed(seed, &opts);
            let b = sim::run_seed(seed, &opts);
            assert_eq!(a.trace_hash, b.trace_hash, "seed {seed} {profile:?}");
            assert_eq!(a.violations, b.violations);
            assert_eq!(a.stats.trace_events, b.stats.trace_events);
            assert!(a.stats.trace_events > 0);
        }
    }
}

#[test]
fn different_seeds_give_different_runs() {
    let opts = options(Profile::Default);
    let hashes: std::collections::BTreeSet<String> = (100..120)
        .map(|s| sim::run_seed(s, &opts).trace_hash)
        .collect();
    assert_eq!(hashes.len(), 20);
}

#[test]
fn verbose_logging_does_not_change_the_run() {
    let quiet = sim::run_seed(3, &options(Profile::Default));
    let loud = sim::run_seed(
        3,
        &sim::Options {
            verbose: true,
            ..options(Profile::Default)
        },
    );
    assert_eq!(quiet.trace_hash, loud.trace_hash);
}

#[test]
fn the_replay_command_names_the_seed_and_options() {
    let r = sim::run_seed(9, &options(Profile::Full));
    let cmd = r.replay_command();
    assert!(
        cmd.starts_with("cargo run -p sim --release -- --seed 9 --verbose"),
        "{cmd}"
    );
    assert!(cmd.contains("--profile full"), "{cmd}");
    assert!(cmd.contains(&format!("--ops {TEST_OPS}")), "{cmd}");
}
