//! Issue 11, item 2, at the protocol level: "a flooded backup changes
//! nothing; quorums of 3 of 4 do not wait for the victim". The limit of a
//! flood is a backup nothing arrives from (`Behavior::Silent`): the other
//! three replicas must go on in the first regency, their clients'
//! operations slowed only by what three-of-three quorums cost on the same
//! links. The same silence at the leader must be answered by a regency
//! change.

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

/// "No request, phase or timer of the others waits on it": over quiet
/// seeds whose fault-free run keeps its first leader (some draws time out
/// under their own load: seed 10, batches of one request under a 36-tick
/// request timeout, changes leader five times with no fault), a silent
/// backup never makes the other three change leader.
///
/// Before the fix, seed 13 did (delay 1..5, 2.6 % delay spikes): the
/// leader's PROPOSE of cid 3 to r1 was delayed 53 ticks; r1 held WRITEs
/// for its digest from r0 and r2 but could not write it, so no WRITE
/// quorum formed without r3 and r2's request timeout started a leader
/// change. Now r1 fetches the batch from the f+1 replicas whose votes name
/// it and writes it (`Replica::check_late_proposal`).
#[test]
fn a_silent_backup_never_makes_the_others_change_leader() {
    let mut compared = 0;
    for (seed, p) in quiet_seeds(24) {
        let all = run(p.clone());
        if all.stats.regency_max > 0 {
            continue;
        }
        compared += 1;
        let one_silent = run(with_silent(p, 3));
        assert_eq!(
            one_silent.stats.regency_max, 0,
            "seed {seed}: a silent backup made the others change leader: {}",
            one_silent.summary
        );
    }
    assert!(compared >= 20, "only {compared} seeds compared");
}

/// What a silent backup may cost: each quorum of three then needs both
/// other replicas instead of the faster two of three, which on the
/// simulator's uniform delays adds up to ~40 % to the median operation;
/// no more than half again is allowed. Before the fix one slow message
/// among the three stalled a whole instance until it arrived: seed 11
/// (delay 1..2, 4.6 % spikes) had r1's WRITE of cid 1 to r2 delayed 41
/// ticks, r2 held the ACCEPTs of r0 and r1 but could not ACCEPT, and the
/// median operation took 42 ticks against 9 (seed 51: 37 against 16).
/// Now f+1 ACCEPTs for the value a replica wrote make it ACCEPT (12
/// against 9). One stall is left by design: an ACCEPT delayed to a
/// replica that holds the other two waits for it (decision proofs are not
/// relayed), so seeds with fewer than 8 operations, where one such stall
/// is the median, are left out, and so are seeds whose fault-free run
/// changes leader or comes within its request timeout (their latency is
/// the timeouts').
#[test]
fn a_silent_backup_costs_at_most_half_again_in_median_latency() {
    let mut compared = 0;
    for (seed, p) in quiet_seeds(24) {
        let timeout = p.control.request_timeout_ticks;
        let all = run(p.clone());
        if all.stats.regency_max > 0
            || all.stats.op_latency_ticks_max >= timeout
            || all.stats.ops_completed < 8
        {
            continue;
        }
        compared += 1;
        let one_silent = run(with_silent(p, 3));
        assert!(
            2 * one_silent.stats.op_latency_ticks_p50 <= 3 * all.stats.op_latency_ticks_p50,
            "seed {seed}: median operation {} ticks with a silent backup, {} with none",
            one_silent.stats.op_latency_ticks_p50,
            all.stats.op_latency_ticks_p50
        );
    }
    assert!(compared >= 10, "only {compared} seeds compared");
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
