//! Issue 11, item 2, at the protocol level: "a flooded backup changes
//! nothing; quorums of 3 of 4 do not wait for the victim". The limit of a
//! flood is a backup nothing arrives from (`Behavior::Silent`): the other
//! three replicas must go on in the first regency, their clients'
//! operations taking no longer than with all four correct (where the
//! fourth replica's clients add load on top). The same silence at the
//! leader must be answered by a regency change.

use sim::{Behavior, Options, Params, Profile, Report};
use wire::ReplicaId;

/// Default-profile parameters of `seed` with every fault removed but the
/// network's ordinary delay and reordering; `None` unless n = 4.
fn quiet(seed: u64) -> Option<Params> {
    let mut p = Params::generate(seed, &Options::default());
    if p.n != 4 {
        return None;
    }
    p.byzantine.clear();
    p.crashes.clear();
    p.network.partitions.clear();
    p.network.loss_ppm = 0;
    p.network.duplicate_ppm = 0;
    p.validate();
    Some(p)
}

/// The first `k` seeds from 1 with n = 4, quieted.
fn quiet_seeds(k: usize) -> Vec<(u64, Params)> {
    let seeds: Vec<(u64, Params)> = (1..1000)
        .filter_map(|s| quiet(s).map(|p| (s, p)))
        .take(k)
        .collect();
    assert_eq!(seeds.len(), k);
    seeds
}

fn run(p: Params) -> Report {
    sim::install_panic_hook();
    let r = sim::run_params(p, &Options::default());
    assert!(r.passed(), "{:?}", r.violations);
    assert_eq!(r.stats.ops_outstanding, 0, "{}", r.summary);
    r
}

fn with_silent(mut p: Params, replica: u16) -> Params {
    p.byzantine = vec![(ReplicaId(replica), Behavior::Silent)];
    p
}

/// Fails today, at both halves of "a flooded backup changes nothing":
/// with one backup silent the three others form every quorum alone, so
/// one slow link among them stalls an instance until the slow message
/// arrives; with all four correct the fourth covers it.
///
/// - Latency: seed 11 (delay 1..2 ticks, 4.6 % delay spikes): r1's WRITE
///   of cid 1 to r2 is delayed 41 ticks; r2 lacks a WRITE quorum (r0,
///   itself, not r3), holds ACCEPTs from r0 and r1 (f+1: a correct replica
///   saw 2f+1 WRITEs) but may not ACCEPT on them, and r0 and r1 wait for
///   r2's ACCEPT: the first put returns at t45 instead of t5; median
///   operation 42 ticks against 9 (over 8 seeds: +20 % to +360 %).
/// - Leader changes: seed 13 (delay 1..5, 2.6 % spikes): the leader's
///   PROPOSE of cid 3 to r1 is delayed 53 ticks (t38 -> t91); r1 holds
///   WRITEs for its digest from r0 and r2 by t43 but neither WRITEs nor
///   fetches the batch, so no WRITE quorum forms without r3, and r2's
///   request timeout (49 ticks) starts a leader change at t97.
///
/// Compared over seeds whose fault-free run keeps the first leader (some
/// draws time out under their own load: seed 10, batches of one request
/// under a 36-tick request timeout, changes leader 5 times with no
/// fault). Candidate fixes: Mod-SMaRt's ACCEPT amplification (f+1
/// matching ACCEPTs stand for a WRITE quorum; it changes what STOPDATA
/// must prove), and fetching a batch by digest from the f+1 replicas
/// whose WRITEs name it when its PROPOSE is late. Run with `--ignored`.
#[test]
#[ignore = "a silent backup leaves no slack: one slow link among the other three stalls instances (issue 11)"]
fn a_silent_backup_changes_nothing_for_the_others() {
    let mut compared = 0;
    for (seed, p) in quiet_seeds(16) {
        let all = run(p.clone());
        if all.stats.regency_max > 0 {
            continue;
        }
        compared += 1;
        let one_silent = run(with_silent(p, 3));
        assert_eq!(
            one_silent.stats.regency_max, 0,
            "seed {seed}: a silent backup made the others change leader"
        );
        assert!(
            one_silent.stats.op_latency_ticks_p50 <= all.stats.op_latency_ticks_p50,
            "seed {seed}: median operation {} ticks with a silent backup, {} with none",
            one_silent.stats.op_latency_ticks_p50,
            all.stats.op_latency_ticks_p50
        );
    }
    assert!(
        compared >= 8,
        "only {compared} seeds keep their first leader"
    );
}

#[test]
fn a_silent_leader_is_replaced() {
    for (seed, mut p) in quiet_seeds(3) {
        // Leader faults belong to the full profile.
        p.profile = Profile::Full;
        let r = run(with_silent(p, 0));
        assert!(r.stats.regency_max >= 1, "seed {seed}: {}", r.summary);
        assert!(r.stats.ops_completed > 0, "seed {seed}");
    }
}
