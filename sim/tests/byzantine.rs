//! One test per Byzantine behaviour and per leader or replica fault: pin
//! it on replicas and check what it must cause, and what it must never
//! cause. Safety must always hold; liveness must hold with at most f
//! faulty replicas, except where a failure is diagnosed as a still open
//! control bug (`sim::diagnosis`; one replaying test per bug in
//! `tests/regressions.rs`). Each test also needs some runs that finish
//! cleanly, so that it cannot pass on expected failures alone.

mod common;

use common::*;
use sim::params::{CrashSpec, PartitionMode, PartitionSpec};
use sim::{Behavior, Check, Params, Profile, Report};
use wire::ReplicaId;

const SEEDS: u64 = 12;

/// No loss, no crashes, holding partitions only: the runs' faults are the
/// ones the test pins.
fn calm(p: &mut Params) {
    p.crashes.clear();
    p.network.loss_ppm = 0;
    for part in &mut p.network.partitions {
        part.mode = PartitionMode::Hold;
    }
}

/// Cuts the first leader (replica 0) off during `[from, to)`: the others
/// must change leader.
fn isolate_first_leader(p: &mut Params, from: u64, to: u64) {
    p.network.partitions = vec![PartitionSpec {
        start_tick: from,
        heal_tick: to.min(p.safety_ticks),
        side: vec![ReplicaId(0)],
        symmetric: true,
        mode: PartitionMode::Hold,
    }];
}

/// Clients keep calling while the first leader is cut off for the rest of
/// the safety phase: the others change leader.
fn busy_with_leader_cut_off(p: &mut Params) {
    p.workload.ops_per_client = p.workload.ops_per_client.max(5);
    p.workload.think_ticks_max = p.workload.think_ticks_max.min(3);
    isolate_first_leader(p, 20, p.safety_ticks);
}

/// Most runs changed leader (a run whose clients all finished before the
/// cut needs no leader change).
fn assert_changed_leader(reports: &[Report]) {
    let changed = reports.iter().filter(|r| r.stats.regency_max > 0).count();
    assert!(
        changed * 4 >= reports.len() * 3,
        "only {changed} of {} runs changed leader",
        reports.len()
    );
}

/// Runs `SEEDS` seeds from `start`, edited by `edit`.
fn runs(profile: Profile, start: u64, edit: impl Fn(&mut Params)) -> Vec<Report> {
    (start..start + SEEDS)
        .map(|seed| {
            run_edited(seed, profile, |p| {
                edit(p);
                p.validate();
            })
        })
        .collect()
}

/// `b` on the `k` highest replicas (never the first two leaders unless
/// the cluster is small).
fn on_last(p: &mut Params, k: usize, b: Behavior) {
    p.byzantine = (0..k)
        .map(|i| (ReplicaId((p.n - 1 - i) as u16), b))
        .collect();
}

/// [`assert_passed`], and at least one run finished cleanly.
fn check(reports: &[Report]) {
    assert_passed(reports);
    assert!(
        clean(reports) > 0,
        "no run finished cleanly:\n{}",
        describe(&reports.iter().collect::<Vec<_>>())
    );
}

fn sum(reports: &[Report], f: impl Fn(&Report) -> u64) -> u64 {
    reports.iter().map(f).sum()
}

#[test]
fn forged_messages_are_refused_and_counted() {
    let reports = runs(Profile::Default, 0, |p| {
        p.byzantine = vec![(ReplicaId(1), Behavior::Forge)];
    });
    check(&reports);
    let forged = sum(&reports, |r| r.stats.byzantine.forged);
    let refused = |label: &str| {
        sum(&reports, |r| {
            r.stats.refused.get(label).copied().unwrap_or(0)
        })
    };
    let (sig, sender, proof) = (
        refused("bad_signature"),
        refused("wrong_sender"),
        refused("bad_proof"),
    );
    assert!(
        forged > 0 && sig > 0 && sender > 0 && proof > 0,
        "forged {forged}, bad sig {sig}, wrong sender {sender}, bad proof {proof}"
    );
    // Every forgery is refused by its receiver (duplication only adds).
    assert!(
        sig + sender + proof >= forged,
        "forged {forged}, refused {}",
        sig + sender + proof
    );
    assert!(!reports
        .iter()
        .any(|r| r.violations.iter().any(|v| v.check == Check::Forgery)));
}

#[test]
fn replayed_messages_change_nothing() {
    // Leader changes give the replayer old STOPs, STOPDATAs and SYNCs.
    let reports = runs(Profile::Default, 100, |p| {
        on_last(p, p.f(), Behavior::Replay);
        busy_with_leader_cut_off(p);
    });
    check(&reports);
    assert!(sum(&reports, |r| r.stats.byzantine.replayed) > 0);
    assert_changed_leader(&reports);
}

#[test]
fn silent_backups_up_to_f_do_not_stop_progress() {
    let reports = runs(Profile::Default, 200, |p| {
        on_last(p, p.f(), Behavior::Silent);
    });
    check(&reports);
    assert!(sum(&reports, |r| r.stats.byzantine.dropped) > 0);
}

#[test]
fn a_slow_leader_is_slow_but_live() {
    let reports = runs(Profile::Default, 300, |p| {
        p.byzantine = vec![(ReplicaId(0), Behavior::SlowLeader { delay_ticks: 25 })];
    });
    check(&reports);
    assert!(sum(&reports, |r| r.stats.byzantine.delayed) > 0);
}

#[test]
fn corrupt_messages_are_refused_and_never_break_safety() {
    let reports = runs(Profile::Default, 400, |p| {
        on_last(p, 1, Behavior::Corrupt);
    });
    check(&reports);
    let b = sum(&reports, |r| {
        r.stats.byzantine.corrupted + r.stats.byzantine.lies
    });
    assert!(b > 0);
    assert!(sum(&reports, |r| r.stats.refused.values().sum::<u64>()) > 0);
}

#[test]
fn an_equivocating_leader_never_causes_disagreement() {
    let mut reports = Vec::new();
    for n in [4, 7, 10] {
        for seed in seeds_with_n(n, 500, 4, Profile::Full) {
            // The leader equivocates; up to f-1 accomplices vote for both
            // values towards the B side.
            reports.push(run_edited(seed, Profile::Full, |p| {
                let f = p.f() as u16;
                p.byzantine = (0..f)
                    .map(|i| (ReplicaId(i * 2), Behavior::Equivocate))
                    .collect();
                calm(p);
            }));
        }
    }
    for r in &reports {
        assert!(
            r.stats.byzantine.equivocations > 0,
            "seed {}: no equivocation happened",
            r.seed
        );
    }
    check(&reports);
}

#[test]
fn stopdata_lies_never_break_safety() {
    let reports = runs(Profile::Full, 600, |p| {
        calm(p);
        on_last(p, p.f(), Behavior::StopDataLies);
        busy_with_leader_cut_off(p);
    });
    check(&reports);
    assert!(sum(&reports, |r| r.stats.byzantine.stop_lies) > 0);
    assert_changed_leader(&reports);
}

#[test]
fn far_future_stops_never_install_a_regency() {
    let reports = runs(Profile::Default, 700, |p| {
        on_last(p, p.f(), Behavior::FutureStops);
    });
    check(&reports);
    assert!(sum(&reports, |r| r.stats.byzantine.future_stops) > 0);
    for r in &reports {
        assert!(
            r.stats.regency_max < 100,
            "seed {}: f replicas pushed regency {}",
            r.seed,
            r.stats.regency_max
        );
    }
}

#[test]
fn a_new_leader_that_sends_bad_syncs_is_replaced() {
    let reports = runs(Profile::Full, 800, |p| {
        calm(p);
        p.byzantine = vec![(ReplicaId(1), Behavior::BadSync)];
        isolate_first_leader(p, 30, p.safety_ticks);
    });
    check(&reports);
    assert!(sum(&reports, |r| r.stats.byzantine.bad_syncs) > 0);
    // Regency 1 (led by the bad leader) did not last.
    let past = reports.iter().filter(|r| r.stats.regency_max >= 2).count();
    assert!(past * 2 >= reports.len(), "only {past} runs left regency 1");
}

#[test]
fn lying_state_transfer_sources_never_install_a_bad_state() {
    // n >= 7: one correct replica crashes early and restarts behind
    // (checkpoints every 4 decisions), f-1 liars serve state transfer.
    let mut reports = Vec::new();
    for seed in seeds_with_n(7, 900, 6, Profile::Full)
        .into_iter()
        .chain(seeds_with_n(10, 900, 4, Profile::Full))
    {
        reports.push(run_edited(seed, Profile::Full, |p| {
            calm(p);
            p.control.checkpoint_period = 4;
            p.workload.ops_per_client = 6;
            on_last(p, p.f() - 1, Behavior::LyingTransfer);
            p.crashes = vec![CrashSpec {
                replica: ReplicaId(2),
                crash_tick: 10,
                restart_tick: p.safety_ticks * 2 / 3,
            }];
        }));
    }
    check(&reports);
    assert!(sum(&reports, |r| r.stats.byzantine.transfer_lies) > 0);
    assert!(sum(&reports, |r| r.stats.transfers_started) > 0);
}

#[test]
fn fetch_answers_with_the_wrong_batch_are_ignored() {
    let reports = runs(Profile::Default, 1000, |p| {
        on_last(p, p.f(), Behavior::WrongBatch);
        busy_with_leader_cut_off(p);
    });
    check(&reports);
    assert!(sum(&reports, |r| r.stats.byzantine.wrong_batches) > 0);
}

#[test]
fn crash_restart_is_safe_and_live() {
    let reports = runs(Profile::Full, 1100, |p| {
        p.byzantine.clear();
        let f = p.f();
        p.crashes = (0..f as u16)
            .map(|i| CrashSpec {
                replica: ReplicaId(i + 1),
                crash_tick: 20 + 10 * i as u64,
                restart_tick: 60 + 10 * i as u64,
            })
            .collect();
    });
    check(&reports);
    assert!(sum(&reports, |r| r.stats.restarts) > 0);
}

#[test]
fn a_crashed_leader_is_replaced_and_every_request_completes() {
    let reports = runs(Profile::Full, 1200, |p| {
        calm(p);
        p.byzantine.clear();
        p.network.partitions.clear();
        p.workload.ops_per_client = p.workload.ops_per_client.max(4);
        p.crashes = vec![CrashSpec {
            replica: ReplicaId(0),
            crash_tick: 5,
            restart_tick: p.safety_ticks,
        }];
    });
    // The restarted leader itself may stay behind on the quiet cluster
    // (gap G2), an expected failure; the others must not.
    assert_passed(&reports);
    for r in &reports {
        assert!(
            r.stats.regency_max >= 1,
            "seed {}: no leader change",
            r.seed
        );
        // Only the calls at the crashed leader are abandoned; every other
        // one returned.
        assert_eq!(
            r.stats.ops_outstanding,
            0,
            "seed {}: calls never returned\n  replay: {}",
            r.seed,
            r.replay_command()
        );
    }
}

#[test]
fn a_replica_restarted_behind_the_decision_log_catches_up_by_checkpoint() {
    let opts = options(Profile::Full);
    let mut installed = 0;
    for seed in 1300..1300 + SEEDS {
        let mut p = Params::generate(seed, &opts);
        restarted_far_behind(&mut p);
        let mut world = sim::World::new(p, opts.clone());
        let report = world.play();
        assert_passed(std::slice::from_ref(&report));
        if !report.violations.is_empty() {
            continue; // an expected failure (open control bug), printed
        }
        let h = &world.hosts[2];
        let max = world.hosts.iter().map(|h| h.core.last_decided()).max();
        assert_eq!(Some(h.core.last_decided()), max, "seed {seed}");
        if h.stats.checkpoints_installed > 0 {
            installed += 1;
        }
    }
    // Every restarted replica caught up; some gaps were short enough for
    // the decision logs, the others needed a checkpoint.
    assert!(
        installed > 0,
        "no restarted replica caught up by a checkpoint"
    );
}

#[test]
fn a_proof_backed_out_of_order_last_decision_never_halts_the_cluster() {
    // Pipelining (several instances in flight), f liars claiming the
    // highest cid they hold a real proof of as their last decision, and
    // leader changes: the plan must not skip the cids below.
    let reports = runs(Profile::Full, 1400, |p| {
        calm(p);
        p.control.pipeline_depth = p.control.pipeline_depth.max(3);
        p.control.instance_window = p.control.instance_window.max(p.control.pipeline_depth);
        on_last(p, p.f(), Behavior::OutOfOrderProof);
        busy_with_leader_cut_off(p);
    });
    check(&reports);
    assert!(
        sum(&reports, |r| r.stats.byzantine.stop_lies) > 0,
        "no lie was told"
    );
    assert_changed_leader(&reports);
}

#[test]
fn a_replica_flooding_requests_does_not_starve_the_others() {
    let reports = runs(Profile::Default, 1500, |p| {
        on_last(p, p.f(), Behavior::RequestFlood);
        p.workload.ops_per_client = p.workload.ops_per_client.max(5);
    });
    check(&reports);
    assert!(sum(&reports, |r| r.stats.byzantine.flood_requests) > 0);
}

#[test]
fn replicas_voting_a_lease_expired_early_cannot_expire_it() {
    // The liars vote every lease epoch expired as soon as they see it
    // (a Byzantine leader's early expiry included); correct replicas run
    // no lessor here, so any expiry is the liars' doing alone.
    let reports = runs(Profile::Full, 1750, |p| {
        // The first leader and the f-1 highest replicas.
        on_last(p, p.f() - 1, Behavior::EarlyLeaseExpiry);
        p.byzantine.push((ReplicaId(0), Behavior::EarlyLeaseExpiry));
        let liars: Vec<ReplicaId> = p.byzantine.iter().map(|(r, _)| *r).collect();
        p.crashes.retain(|c| !liars.contains(&c.replica));
    });
    check(&reports);
    assert!(sum(&reports, |r| r.stats.byzantine.lease_votes) > 0);
    let held = reports.iter().filter(|r| r.stats.lease_holders > 0).count();
    assert!(
        held * 4 >= reports.len() * 3,
        "the lease was granted and held in only {held} of {} runs",
        reports.len()
    );
}

#[test]
fn junk_chunks_raced_during_state_transfer_never_stall_it() {
    // As `lying_state_transfer_sources_never_install_a_bad_state`, with
    // small chunks (many per checkpoint) and the liars racing junk chunks.
    let mut reports = Vec::new();
    for seed in seeds_with_n(7, 1600, 6, Profile::Full)
        .into_iter()
        .chain(seeds_with_n(10, 1600, 4, Profile::Full))
    {
        reports.push(run_edited(seed, Profile::Full, |p| {
            calm(p);
            p.control.checkpoint_period = 4;
            p.control.snapshot_chunk_bytes = 64;
            p.workload.ops_per_client = 6;
            on_last(p, p.f() - 1, Behavior::LyingTransfer);
            p.crashes = vec![CrashSpec {
                replica: ReplicaId(2),
                crash_tick: 10,
                restart_tick: p.safety_ticks * 2 / 3,
            }];
        }));
    }
    check(&reports);
    assert!(sum(&reports, |r| r.stats.byzantine.chunks_injected) > 0);
    assert!(sum(&reports, |r| r.stats.checkpoints_installed) > 0);
}

#[test]
fn f_byzantine_replicas_and_every_correct_replica_crashing_stay_safe_and_live() {
    // The fault model bftd promises: f Byzantine replicas (drawn from the
    // full pool) plus crash-restarts of correct replicas — here all of
    // them, at overlapping times, so the cluster also stops and restarts
    // from disk as a whole.
    let reports = runs(Profile::Full, 1700, |p| {
        p.network.loss_ppm = 0;
        let f = p.f();
        let byz = [
            Behavior::StopDataLies,
            Behavior::OutOfOrderProof,
            Behavior::LyingTransfer,
            Behavior::RequestFlood,
        ];
        p.byzantine = (0..f)
            .map(|i| {
                (
                    ReplicaId((p.n - 1 - i) as u16),
                    byz[(p.seed as usize + i) % byz.len()],
                )
            })
            .collect();
        let safety = p.safety_ticks;
        p.crashes = (0..(p.n - f) as u16)
            .map(|i| CrashSpec {
                replica: ReplicaId(i),
                crash_tick: 10 + 17 * i as u64 % (safety / 2),
                restart_tick: (safety / 2 + 13 * i as u64).min(safety),
            })
            .collect();
    });
    check(&reports);
    assert!(reports.iter().all(|r| r.stats.restarts as usize >= 3));
}

/// f colluding leaders, the first ones (replica 0 leads regency 0), each of
/// which stalls and at once passes the leadership to the next colluder
/// (etcd's MoveLeader misused: a new regency restarts the request
/// timeouts). The correct replicas join a leader's move only while no
/// request has waited a request timeout since it arrived
/// (`control::Replica::move_leader`), so the chain ends at a correct
/// leader and every operation completes.
#[test]
fn colluding_leaders_passing_the_leadership_on_cannot_stall_the_cluster() {
    let mut reports = Vec::new();
    for seed in seeds_with_n(4, 1000, 4, Profile::Full)
        .into_iter()
        .chain(seeds_with_n(7, 1000, 6, Profile::Full))
        .chain(seeds_with_n(10, 1000, 2, Profile::Full))
    {
        reports.push(run_edited(seed, Profile::Full, |p| {
            calm(p);
            p.workload.ops_per_client = p.workload.ops_per_client.max(4);
            p.byzantine = (0..p.f())
                .map(|i| (ReplicaId(i as u16), Behavior::LeaderHandoff))
                .collect();
        }));
    }
    check(&reports);
    assert!(sum(&reports, |r| r.stats.byzantine.handoffs) > 0);
    assert_changed_leader(&reports);
}
