//! Many seeds of the default profile (a reliable network: delay,
//! reordering, duplication, holding partitions, slow disks, up to f
//! Byzantine replicas that are not the first leader) and of the full
//! profile (also loss, dropping partitions, crash/restart, Byzantine
//! leaders). Safety must hold in every run; liveness too, except where a
//! failure is diagnosed as a still open control bug (`sim::diagnosis`),
//! which is printed with its replay command.

mod common;

use common::*;
use sim::Profile;

/// Seeds of the default profile run by this test.
const DEFAULT_SEEDS: u64 = 200;
/// Seeds of the full profile run by this test.
const FULL_SEEDS: u64 = 150;

#[test]
fn default_profile_seeds_are_safe_and_live() {
    sim::install_panic_hook();
    let opts = options(Profile::Default);
    let reports: Vec<_> = (0..DEFAULT_SEEDS)
        .map(|s| sim::run_seed(s, &opts))
        .collect();
    assert!(reports.iter().map(|r| r.stats.decisions).sum::<u64>() > DEFAULT_SEEDS);
    assert!(reports.iter().any(|r| r.stats.regency_max > 0));
    assert!(reports.iter().any(|r| r.stats.checkpoints_taken > 0));
    assert_passed(&reports);
    // Most runs must finish cleanly, not only expectedly.
    assert!(clean(&reports) * 10 >= reports.len() * 8);
}

#[test]
fn full_profile_seeds_are_safe_and_live() {
    sim::install_panic_hook();
    let opts = options(Profile::Full);
    // Another range than the default test's, for variety.
    let reports: Vec<_> = (10_000..10_000 + FULL_SEEDS)
        .map(|s| sim::run_seed(s, &opts))
        .collect();
    assert!(reports.iter().any(|r| r.stats.restarts > 0));
    // Restarted replicas catch up by state transfer. Installing a whole
    // checkpoint is rare at these run lengths (decision logs keep
    // 2 * checkpoint_period + instance_window decisions); it is covered by
    // `byzantine::a_replica_restarted_behind_the_decision_log_catches_up_by_checkpoint`.
    assert!(reports.iter().any(|r| r.stats.transfer_decisions > 0));
    assert_passed(&reports);
    assert!(clean(&reports) * 10 >= reports.len() * 6);
}
