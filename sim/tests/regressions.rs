//! Seeds that found bugs, each named after the bug. They replay exactly.
//!
//! Tests marked `#[ignore]` fail today because of a bug in `control` (not
//! in the simulator); each comment names the bug and the event sequence.
//! Run them with `cargo test -p sim --test regressions -- --ignored`; when
//! one passes, the bug is fixed: remove its `#[ignore]` and its cause from
//! `sim::diagnosis::OPEN`. These tests are strict: an expected (diagnosed)
//! liveness failure still fails them.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use sim::{Behavior, Options, Params, Profile, Report};
use wire::{
    Accept, DecisionProof, Digest, Keyring, Message, OpenVote, ReplicaId, Signature, Signer,
    StopData, Sync, Verifier,
};

/// Runs `seed` with the sim binary's default options (what the replay
/// command of a campaign seed uses), or `ops` operations per client.
fn run(seed: u64, profile: Profile, ops: Option<u32>) -> Report {
    sim::install_panic_hook();
    let mut opts = Options {
        profile,
        ..Options::default()
    };
    if let Some(ops) = ops {
        opts.ops_per_client_max = ops;
    }
    sim::run_seed(seed, &opts)
}

/// Runs `seed` with the sim binary's default options, its Byzantine
/// replicas pinned to `byz` (what the seed drew when the bug was found:
/// the pins keep the run when the behaviour pools change).
fn run_pinned(seed: u64, profile: Profile, byz: &[(u16, Behavior)]) -> Report {
    sim::install_panic_hook();
    let opts = Options {
        profile,
        ..Options::default()
    };
    let mut p = Params::generate(seed, &opts);
    p.byzantine = byz.iter().map(|(r, b)| (ReplicaId(*r), *b)).collect();
    // A replica made Byzantine here does not also crash.
    let byzantine = p.byzantine.clone();
    p.crashes
        .retain(|c| !byzantine.iter().any(|(r, _)| *r == c.replica));
    p.validate();
    sim::run_params(p, &opts)
}

/// Asserts the runs broke nothing at all, not even expectedly.
fn assert_clean(reports: &[Report]) {
    let bad: Vec<&Report> = reports
        .iter()
        .filter(|r| !r.violations.is_empty())
        .collect();
    assert!(bad.is_empty(), "{}", describe(&bad));
}

/// control: a replica that decides an instance from a quorum of other
/// replicas' ACCEPTs before sending its own ACCEPT (its WRITE quorum or
/// its own fsync came later) drops the instance on delivery and never
/// sends that ACCEPT. Fixed (control sends owed ACCEPTs after delivery);
/// kept as a replay.
#[test]
fn a_replica_that_decides_before_accepting_still_sends_its_accept() {
    for seed in [12, 385] {
        let r = run(seed, Profile::Default, None);
        assert!(r.passed(), "{}", describe(&[&r]));
    }
}

/// B1 (control, liveness): a decided instance whose batch arrives later in
/// a PROPOSE is never delivered. `try_decide` returns early for a decided
/// instance, and `take_proposal` keeps the batch without calling
/// `deliver_ready`. Seed 184 (default profile, n=10): r5's PROPOSE of cid
/// 91 is delayed to t119; the ACCEPT quorum arrives at t99-100, r5 decides
/// cid 91 without the batch and FETCHes it at t100 (nobody answers: B4);
/// the PROPOSE arrives at t119 and r5 stays at cid 90 forever.
#[test]

fn a_decided_instance_is_delivered_when_its_batch_arrives_by_propose() {
    assert_clean(&[run(184, Profile::Default, None)]);
}

/// B4 (control, liveness): `on_checkpoint` cuts the decision log at the
/// checkpoint, so a FETCH for a decided cid at or below the answering
/// replica's newest checkpoint finds no batch and gets no answer; the
/// fetching replica never re-sends it. Seed 21 (default profile, n=4,
/// checkpoint every 4): r2 decides cid 44 by ACCEPTs at t202 and FETCHes
/// it; r0 and r1 took checkpoint 44 at t202-203 and answer nothing; the
/// PROPOSE (delayed to t226) then hits B1. r2 stays at cid 43 with its
/// client's call outstanding. The same cut leaves decisions that only one
/// correct replica holds unreachable by state transfer (its log starts
/// after its checkpoint, and one replica's checkpoint is not trusted).
#[test]

fn a_fetch_of_a_checkpointed_cid_is_answered() {
    assert_clean(&[run(21, Profile::Default, None)]);
}

/// B2 (control, liveness of state transfer): the checkpoint blob
/// (`control::checkpoint::encode`) includes the replica's own decision
/// proof of the checkpoint cid, whose set of ACCEPTs differs between
/// replicas (each keeps the first quorum it saw), so correct replicas'
/// checkpoint digests at the same cid differ and state transfer seldom
/// finds f+1 equal ones. Seed 1304, edited by `restarted_far_behind`
/// (n=10, no fault but replica 2 down from t5 to t196): checkpoint 56 has
/// six different digests among nine replicas; f+1 = 4 never agree and r2
/// never catches up.
#[test]

fn correct_replicas_take_equal_checkpoints() {
    let opts = options(Profile::Full);
    let mut p = Params::generate(1304, &opts);
    restarted_far_behind(&mut p);
    let r = sim::run_params(p, &opts);
    assert_eq!(
        r.stats.checkpoint_splits,
        0,
        "checkpoint cids with differing digests\n  replay: {}",
        r.replay_command()
    );
    assert_clean(&[r]);
}

/// B3 (control, liveness): a state transfer that trusted a checkpoint
/// keeps asking its sources for it, but `on_snapshot_request` serves only
/// a replica's newest checkpoint and the sources have taken newer ones;
/// `transfer_tick` only rotates sources, never asks for state again. Seed
/// 19 (default profile, n=4, window 4, checkpoint every 4): r2 trusts
/// checkpoint 16 at t142, asks r0, r1, r3 for it every request timeout;
/// all are past checkpoint 20. r2 stays at cid 14.
#[test]

fn a_state_transfer_moves_on_from_a_replaced_checkpoint() {
    assert_clean(&[run(19, Profile::Default, None)]);
}

/// B5 (control, liveness/resources): the target of a state transfer is
/// raised by any single message — a STATE_REPLY's unproven
/// `last_decided`, an instance message with a cid beyond the window — and
/// the transfer ends only when `last_decided` reaches it, so one Byzantine
/// replica keeps every correct replica in state transfer forever. Seed 148
/// (default profile, n=7, r4 corrupt): all correct replicas reach cid 38
/// and exchange STATE_REQUEST/STATE_REPLY every request timeout until the
/// deadline (r4 claims last=70, 93, ...).
#[test]

fn a_byzantine_claim_cannot_keep_state_transfer_running() {
    assert_clean(&[run_pinned(148, Profile::Default, &[(4, Behavior::Corrupt)])]);
}

/// B10 (control, liveness): a replica waiting for its SYNC sends STOP for
/// the next regency once (`send_stop` refuses `regency <= stop_sent`) and
/// does not run the request-timeout path that re-broadcasts STOPs; if
/// those STOPs were lost, the replicas left in the old regency never
/// gather 2f+1 STOPs and the two groups wait for each other forever. Seed
/// 53 (full profile, n=4, r1 pinned to bad-sync): r2, r3 install regency
/// 1 at t110-113; their STOP(1)s and STOP(2)s to r0, r1 are dropped by a
/// dropping partition (t111-152); r0, r1 re-send STOP(1) every timeout
/// (ignored: r2, r3 are past it) and never install regency 1; r2, r3 wait
/// for a SYNC forever. (Seed 44 of the full profile, n=7, as drawn before
/// misfiled-proof joined the pools: r0, r1, r6 in regency 1 syncing;
/// r2-r5 hold four STOP(1)s each and need five.)
#[test]

fn lost_stops_are_sent_again() {
    assert_clean(&[run_pinned(53, Profile::Full, &[(1, Behavior::BadSync)])]);
}

/// G1 (control, liveness gap): a replica that misses a decision inside
/// its instance window (lost ACCEPTs) never catches up on a quiet
/// cluster: nothing retransmits, state transfer starts only for cids past
/// the window. Seed 73 (full profile, n=7, loss): r3 stays at cid 11.
#[test]

fn a_decision_lost_inside_the_window_is_recovered() {
    assert_clean(&[run_pinned(
        73,
        Profile::Full,
        &[(1, Behavior::WrongBatch), (6, Behavior::FutureStops)],
    )]);
}

/// G2 (control, liveness gap): a replica restarted from its durable log
/// starts no state transfer by itself. Seed 65 (full profile, n=7): r0
/// restarts at cid 7 into a quiet cluster at cid 18 and stays there.
#[test]

fn a_restarted_replica_catches_up_on_a_quiet_cluster() {
    assert_clean(&[run(65, Profile::Full, None)]);
}

/// G3 (control, liveness gap): an equivocating leader shows the B side
/// another value; the others decide theirs; the B side never reaches a
/// quorum for either, its STOPs are never joined, and with fewer than a
/// window of instances it never starts a state transfer. Seed 42 (full
/// profile, n=4, r0 equivocates): r2 stays at cid 0 with its clients'
/// calls outstanding.
#[test]

fn the_b_side_of_an_equivocating_leader_catches_up() {
    assert_clean(&[run_pinned(42, Profile::Full, &[(0, Behavior::Equivocate)])]);
}

const CLUSTER: u64 = 77;

fn signers() -> Vec<Signer> {
    (0..4)
        .map(|i| Signer::new(CLUSTER, ReplicaId(i), sim::world::replica_key(1, i)))
        .collect()
}

fn proof(s: &[Signer], cid: u64, digest: Digest) -> DecisionProof {
    let accepts = s[..3]
        .iter()
        .map(|s| {
            let a = Accept {
                regency: 0,
                cid,
                replica: s.id(),
                digest,
                signature: Signature::PENDING,
            };
            match s.sign(Message::Accept(a)).into_inner() {
                Message::Accept(a) => a,
                _ => unreachable!(),
            }
        })
        .collect();
    DecisionProof {
        cid,
        digest,
        accepts,
    }
}

fn stopdata(s: &Signer, last: DecisionProof, open: OpenVote) -> StopData {
    let sd = StopData {
        regency: 1,
        replica: s.id(),
        last_decided: last.cid,
        last_decided_proof: Some(last),
        open: vec![open],
        recent: vec![],
        signature: Signature::PENDING,
    };
    match s.sign(Message::StopData(sd)).into_inner() {
        Message::StopData(sd) => sd,
        _ => unreachable!(),
    }
}

/// B8 (control + wire, SAFETY): a STOPDATA may file a valid decision proof
/// of one cid under another cid's open vote. The verifier checks every
/// proof's signatures and shape but not that `proof.cid == vote.cid`, and
/// `sync::plan` keeps the digest of the first decision proof it finds for
/// a cid. A Byzantine replica that files the proof of its last decision
/// (cid 1, batch X) under cid 2 makes the new regency keep X at cid 2,
/// overriding the value V that a quorum accepted there and that a correct
/// replica may have decided (its batch is then served to the FETCHes by
/// the Byzantine replica: X's batch matches the digest). Correct replicas
/// that decided V at cid 2 and those that decide X at cid 2 disagree.
/// (The `stopdata-lies` behaviour makes this lie; no campaign seed has hit
/// the window where a correct replica already decided V yet.)
#[test]

fn a_decision_proof_filed_under_another_cid_is_refused() {
    let s = signers();
    let (x, v) = (Digest([0xAA; 32]), Digest([0xBB; 32]));
    let proof_x = proof(&s, 1, x);
    // Replicas 1 and 2 (and 0, now gone) accepted V at cid 2, regency 0.
    let honest = |i: usize| {
        stopdata(
            &s[i],
            proof_x.clone(),
            OpenVote {
                cid: 2,
                accepted: Some((0, v)),
                written: vec![(0, v)],
                decided: None,
            },
        )
    };
    // Replica 3 files the proof of cid 1 under cid 2.
    let liar = stopdata(
        &s[3],
        proof_x.clone(),
        OpenVote {
            cid: 2,
            accepted: None,
            written: vec![],
            decided: Some(proof_x.clone()),
        },
    );
    let set = vec![honest(1), honest(2), liar];
    let keyring = Arc::new(Keyring::new(
        CLUSTER,
        s.iter().map(|x| x.key().public()).collect(),
        HashMap::new(),
    ));
    let sync = Message::Sync(Sync {
        regency: 1,
        leader: ReplicaId(1),
        stopdata: set.clone(),
    });
    let refused = Verifier::new(keyring, 16)
        .verify(ReplicaId(1), sync)
        .is_err();
    let plan = control::plan(&set, 1, 3, 64).expect("the set is sound");
    assert!(
        refused || plan.values == vec![(2, v)],
        "the verifier accepts the SYNC and the plan keeps {:?} at cid 2 instead of V",
        plan.values
    );
}

/// B8 end to end: seed 43 of the full profile (n=7) with the two
/// Byzantine replicas making only the misfiled-proof lie, no crashes and
/// 3% loss. Correct replicas decide different batches at cid 4.
#[test]

fn a_misfiled_decision_proof_never_breaks_agreement() {
    let opts = options(Profile::Full);
    let mut p = Params::generate(43, &opts);
    misfiled_proof_liars(&mut p);
    let mut reports = vec![sim::run_params(p, &opts)];
    // Found by the campaigns, unedited: `--seed 213`, `--seed 78 --profile
    // full` (2000 seeds each, every other failure being liveness).
    reports.push(run(213, Profile::Default, None));
    reports.push(run(78, Profile::Full, None));
    // Found by the default-profile campaign, pinned.
    for (seed, liar) in [(1051, 3), (1661, 5)] {
        reports.push(run_pinned(
            seed,
            Profile::Default,
            &[(liar, Behavior::MisfiledProof)],
        ));
    }
    assert_safe(&reports);
}

/// Prints the trace of the end-to-end B8 run (`--ignored --nocapture`).
#[test]
#[ignore = "a trace dump, not a check"]
fn trace_of_the_misfiled_proof_run() {
    let opts = sim::Options {
        verbose: true,
        ..options(Profile::Full)
    };
    let mut p = Params::generate(43, &opts);
    misfiled_proof_liars(&mut p);
    sim::run_params(p, &opts);
}

/// Prints the trace of the B10 run (`--ignored --nocapture`).
#[test]
#[ignore = "a trace dump, not a check"]
fn trace_of_the_lost_stops_run() {
    let opts = Options {
        profile: Profile::Full,
        verbose: true,
        ..Options::default()
    };
    let mut p = Params::generate(53, &opts);
    p.byzantine = vec![(ReplicaId(1), Behavior::BadSync)];
    sim::run_params(p, &opts);
}

/// control (liveness): a restarted replica reported its durable proposal
/// as accepted too. Seed 356 of the full-profile soak (n=7, f=2, an
/// equivocating first leader and a silent replica, all five correct
/// replicas crash and restart): the replicas shown the other value claimed
/// ACCEPTs they never sent, no value was bound and none free, and every
/// leader change after the heal waited for a STOPDATA that never came.
/// Fixed: an ACCEPT leaves only once its record is durable, and a restart
/// reports exactly the durable ones (`Replica::recover_accept`).
#[test]
fn restarted_replicas_do_not_claim_accepts_they_never_sent() {
    assert_clean(&[run(356, Profile::Full, None)]);
}

/// control (liveness): a state transfer ended as soon as f+1 replies
/// showed nothing newer, and a later reply with a proven next decision was
/// ignored. Seed 9638 of the full-profile soak (n=4, every replica crashes
/// and restarts): three replicas restarted at cid 13, the fourth at 14, and
/// the three never learned 14. Fixed: a reply's proven decisions continue
/// the log even with no transfer in progress.
#[test]
fn a_proven_decision_shown_after_the_transfer_ended_is_delivered() {
    assert_clean(&[run(9638, Profile::Full, None)]);
}

/// sim (host): a Byzantine middleware answered a forged SNAPSHOT_REQUEST
/// naming replica 8192 and the world indexed its inbox out of bounds. Seed
/// 10897 of the full-profile soak. Fixed: emits to replicas that do not
/// exist are dropped at the host's edge.
#[test]
fn an_emit_to_a_replica_that_does_not_exist_is_dropped() {
    assert_clean(&[run(10897, Profile::Full, None)]);
}

/// control (liveness): a state transfer ended on its first f+1 replies
/// when one of them came from a replica as far behind as this one, and the
/// replies that showed a trusted checkpoint came too late. Seed 29703 of
/// the full-profile soak (n=7, every replica crashes and restarts; r1 and
/// r3 stayed at cid 2 while the others were at 8). Fixed: a transfer ends
/// only once n-f replicas (this one included) answered.
#[test]
fn a_state_transfer_does_not_end_before_n_minus_f_replicas_answered() {
    assert_clean(&[run(29703, Profile::Full, None)]);
}

/// storage/node (liveness on a quiet cluster): every replica
/// crashes; the one ahead restarts from a checkpoint taken exactly at its
/// last decision (cid 26), so its decision log is empty after the restart,
/// and the others (at 25) can get decision 26 neither from a log nor from
/// a checkpoint f+1 replicas report. With new requests a leader change
/// keeps 26 (the others' durable votes) and everyone moves on; on a quiet
/// cluster they stayed at 25. Seed 26977 of the soak. Fixed: recovery
/// returns the decisions the newest checkpoint covers that are still in the
/// log (`Recovered::covered`), and the restart refills the decision log
/// with them.
#[test]
fn a_replica_restarted_from_a_checkpoint_at_its_last_decision_can_serve_it() {
    assert_clean(&[run(26977, Profile::Full, None)]);
}

/// simulator (disk model): the fake disk cut its log at its only
/// checkpoint, where `storage` truncates nothing until it keeps two. Seed
/// 452747 of the soak (full profile, n=4, four crash-restarts, two
/// dropping partitions): r0 alone decided cid 8 (its ACCEPTs were cut off)
/// and checkpointed there; after its restart the decision was gone from
/// its log, its STATE_REPLYs offered only a checkpoint no other replica
/// could vouch for, and the others stayed at cid 7. With the disk keeping
/// the log as `storage` does, r0 serves decision 8 with its proof.
#[test]
fn a_replica_that_alone_decided_its_only_checkpoint_serves_that_decision_after_a_restart() {
    assert_clean(&[run(452747, Profile::Full, None)]);
}

/// control (liveness): the leader-throughput monitor (Aardvark) judged a
/// new regency by a window that began when the regency was entered, before
/// its SYNC: a leader whose SYNC and first instance take longer than one
/// window (21 ticks here, message delays up to 8) executed nothing in it
/// and was replaced, and so was every next one, forever (349 regencies in
/// 10,900 ticks, two writes never answered). Seed 109838 of the soak
/// (default profile, n=7, r2 silent, r5 floods requests). Fixed: a
/// regency's first window starts when its SYNC is applied, and a window
/// doubles with every regency that executed nothing (up to 64 times), as
/// the SYNC timeout does, so some correct leader gets the time it needs.
#[test]
fn a_new_leader_gets_a_full_throughput_window_after_its_sync() {
    assert_clean(&[run_pinned(
        109838,
        Profile::Default,
        &[(2, Behavior::Silent), (5, Behavior::RequestFlood)],
    )]);
}

/// control (liveness): seed 309961 of the soak (full profile, n=10, r2
/// out-of-order proofs, r3 and r8 flood requests, three crash-restarts).
/// First cause: a PROPOSE that overtook its regency's SYNC was dropped, so
/// no regency reached a WRITE quorum (114 decisions; control test
/// `a_propose_that_overtakes_the_sync_is_taken_once_the_sync_is_applied`).
/// Second cause: with that fixed the cluster decided (305 decisions) but
/// two honest requests (c5#3, c7#3) were never ordered: every leader held
/// them behind ~85 flood requests of r3 and r8 (each flooder filled its
/// per-client share of the pool, batches were taken in arrival order, 2
/// requests per instance), a leader ordered ~8 requests before the honest
/// ones timed out, and the next leader's pool had them as far back.
/// Fixed: batches are taken round-robin over clients (`control::pending`),
/// so a flooder gets one slot per round like every other client.
#[test]
fn requests_carried_in_every_stop_are_eventually_ordered() {
    assert_clean(&[run_pinned(
        309961,
        Profile::Full,
        &[
            (2, Behavior::OutOfOrderProof),
            (3, Behavior::RequestFlood),
            (8, Behavior::RequestFlood),
        ],
    )]);
}
