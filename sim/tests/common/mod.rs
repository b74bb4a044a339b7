#![allow(dead_code)]
//! Helpers shared by the simulator's tests.

use sim::{Options, Params, Profile, Report};

/// Operations per client in tests: small, so hundreds of seeds run in
/// seconds at the test profile's opt-level.
pub const TEST_OPS: u32 = 6;

pub fn options(profile: Profile) -> Options {
    Options {
        profile,
        ops_per_client_max: TEST_OPS,
        max_ticks: None,
        verbose: false,
    }
}

/// Runs `seed` after `edit` changed its drawn parameters.
pub fn run_edited(seed: u64, profile: Profile, edit: impl FnOnce(&mut Params)) -> Report {
    let opts = options(profile);
    let mut p = Params::generate(seed, &opts);
    edit(&mut p);
    sim::run_params(p, &opts)
}

/// Replica 2 crashes at tick 5 and restarts mid-run, far behind the others'
/// decision logs (checkpoints every 4 decisions, a narrow window): it can
/// catch up only by installing a checkpoint. No other fault.
pub fn restarted_far_behind(p: &mut Params) {
    p.byzantine.clear();
    p.network.partitions.clear();
    p.network.loss_ppm = 0;
    p.control.checkpoint_period = 4;
    p.control.instance_window = 8.max(p.control.pipeline_depth);
    p.workload.ops_per_client = 12;
    p.workload.think_ticks_max = 2;
    p.crashes = vec![sim::params::CrashSpec {
        replica: wire::ReplicaId(2),
        crash_tick: 5,
        restart_tick: p.safety_ticks / 2,
    }];
    p.validate();
}

/// The f highest replicas make the misfiled-proof lie; 3% message loss
/// (partial deliveries before leader changes), no crashes.
pub fn misfiled_proof_liars(p: &mut Params) {
    let f = p.f() as u16;
    p.byzantine = (0..f)
        .map(|i| {
            (
                wire::ReplicaId(p.n as u16 - 1 - i),
                sim::Behavior::MisfiledProof,
            )
        })
        .collect();
    p.crashes.clear();
    p.network.loss_ppm = 30_000;
    p.validate();
}

/// The first `count` seeds from `start` whose cluster has `n` replicas.
pub fn seeds_with_n(n: usize, start: u64, count: usize, profile: Profile) -> Vec<u64> {
    let opts = options(profile);
    (start..)
        .filter(|s| Params::generate(*s, &opts).n == n)
        .take(count)
        .collect()
}

/// Number of runs that broke nothing at all (not even expectedly).
pub fn clean(reports: &[Report]) -> usize {
    reports.iter().filter(|r| r.violations.is_empty()).count()
}

/// One line per violation, with the replay command.
pub fn describe(reports: &[&Report]) -> String {
    reports
        .iter()
        .map(|r| {
            let vs: Vec<String> = r.violations.iter().map(|v| format!("    {v}")).collect();
            let causes: Vec<&str> = r.causes.iter().map(|c| c.label()).collect();
            format!(
                "seed {} ({})\n{}\n  diagnosis: {}\n  replay: {}",
                r.seed,
                r.summary,
                vs.join("\n"),
                causes.join("; "),
                r.replay_command()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts that no run broke a safety property (anything but liveness).
pub fn assert_safe(reports: &[Report]) {
    let bad: Vec<&Report> = reports
        .iter()
        .filter(|r| r.violations.iter().any(|v| v.check != sim::Check::Liveness))
        .collect();
    assert!(bad.is_empty(), "safety violations:\n{}", describe(&bad));
}

/// Asserts that no run broke anything it should not have: safety always,
/// liveness unless the failure was diagnosed as an open control bug
/// (`sim::diagnosis::OPEN`; those are printed with their replay command).
pub fn assert_passed(reports: &[Report]) {
    for r in reports
        .iter()
        .filter(|r| r.passed() && !r.violations.is_empty())
    {
        let causes: Vec<&str> = r.causes.iter().map(|c| c.label()).collect();
        eprintln!(
            "expected liveness failure (open control bug: {}), seed {}\n  replay: {}",
            causes.join("; "),
            r.seed,
            r.replay_command()
        );
    }
    let bad: Vec<&Report> = reports.iter().filter(|r| !r.passed()).collect();
    assert!(
        bad.is_empty(),
        "{} of {} seeds failed:\n{}",
        bad.len(),
        reports.len(),
        describe(&bad)
    );
}
