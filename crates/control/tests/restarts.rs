//! Scenario tests of crash-restarts of correct replicas under a Byzantine
//! leader (the fault model bftd promises: f Byzantine replicas *plus*
//! crash-restarts of correct ones). A restart rebuilds the core from what
//! was durable only (`Net::restart`), as the hosts do.

mod common;

use std::sync::Arc;

use common::*;
use wire::{Accept, Batch, Message, Propose, ReplicaId, Signature, Stop, Write};

fn net() -> Net {
    Net::with_config(4, |c| {
        c.request_timeout_ticks = 5;
        c.sync_timeout_ticks = 20;
        c.throughput_min_pct = 0;
    })
}

/// What a Byzantine leader 0 says about cid 1 in regency 0: its PROPOSE,
/// its WRITE and its ACCEPT of `batch`.
fn leader_votes(net: &Net, batch: &Arc<Batch>) -> [Message; 3] {
    let d = batch.digest();
    [
        net.sign(
            0,
            Message::Propose(Propose {
                regency: 0,
                cid: 1,
                leader: ReplicaId(0),
                batch: batch.clone(),
                signature: Signature::PENDING,
            }),
        ),
        net.sign(
            0,
            Message::Write(Write {
                regency: 0,
                cid: 1,
                replica: ReplicaId(0),
                digest: d,
            }),
        ),
        net.sign(
            0,
            Message::Accept(Accept {
                regency: 0,
                cid: 1,
                replica: ReplicaId(0),
                digest: d,
                signature: Signature::PENDING,
            }),
        ),
    ]
}

#[test]
fn a_restarted_replica_does_not_vote_twice_in_one_regency() {
    let mut net = net();
    let a = Arc::new(Batch::new(vec![net.request(1, b"A")]));
    let b = Arc::new(Batch::new(vec![net.request(1, b"B")]));
    // Byzantine leader 0 gets A decided at replica 1 with the votes of 0,
    // 1 and 2; replica 2 never sees the ACCEPTs (it has voted, not decided).
    for m in leader_votes(&net, &a) {
        net.send(0, 1, m.clone());
        net.send(0, 2, m);
    }
    net.run_filtered(10_000, |p| {
        p.to == ReplicaId(1) || (p.to == ReplicaId(2) && !is_kind(p, "ACCEPT"))
    });
    assert_eq!(net.log(1), vec![(1, a.digest())]);
    assert!(net.decisions[2].is_empty());
    // Replica 2 crashes and restarts from its disk, still in regency 0.
    net.crash(2);
    net.restart(2);
    net.wire.clear(); // its catch-up requests change nothing here
    assert_eq!(net.replicas[2].regency(), 0);
    // The leader now pushes B for the same cid to replicas 2 and 3.
    for m in leader_votes(&net, &b) {
        net.send(0, 2, m.clone());
        net.send(0, 3, m);
    }
    net.run_filtered(10_000, |p| p.to == ReplicaId(2) || p.to == ReplicaId(3));
    // Replica 2 remembers its durable proposal A and refuses B: B has the
    // votes of 0 and 3 only and is decided nowhere.
    assert_eq!(net.replicas[2].stats().drop_equivocation, 1);
    assert!(net.decisions[3].is_empty(), "B was decided at replica 3");
    assert!(net.decisions[2].is_empty());
    net.assert_agreement();
}

fn stops_to(net: &mut Net, to: u16, regency: u32) {
    let stops: Vec<_> = (1..3)
        .map(|i| {
            net.sign(
                i,
                Message::Stop(Stop {
                    regency,
                    replica: ReplicaId(i),
                    requests: vec![],
                }),
            )
        })
        .collect();
    for (i, s) in stops.into_iter().enumerate() {
        net.send(i as u16 + 1, to, s);
    }
    while net.deliver_first(|p| p.to == ReplicaId(to)) {}
}

fn stopdata_from(net: &Net, r: u16) -> bool {
    net.wire
        .iter()
        .any(|p| is_kind(p, "STOPDATA") && p.from == ReplicaId(r))
}

#[test]
fn stopdata_leaves_only_after_the_regency_is_durable() {
    let mut net = net();
    net.auto_persist[3] = false;
    stops_to(&mut net, 3, 1);
    assert_eq!(
        net.replicas[3].regency(),
        1,
        "replica 3 installed regency 1"
    );
    assert!(
        !stopdata_from(&net, 3),
        "no STOPDATA before REGENCY is durable"
    );
    net.persist_all(3);
    assert!(stopdata_from(&net, 3));
}

#[test]
fn a_crash_before_the_regency_is_durable_comes_back_without_having_promised() {
    let mut net = net();
    net.auto_persist[3] = false;
    stops_to(&mut net, 3, 1);
    assert!(!stopdata_from(&net, 3));
    net.crash(3);
    net.restart(3);
    // It comes back in regency 0, and it never told anyone it left it.
    assert_eq!(net.replicas[3].regency(), 0);
    assert!(!stopdata_from(&net, 3));
}

#[test]
fn a_restarted_leader_does_not_propose_again_in_its_regency() {
    let mut net = net();
    // Leader 0 proposes cid 1, and crashes before its proposal is durable
    // and before the PROPOSE reached anyone: after the restart it does not
    // remember what it proposed, so it must not propose in regency 0 again.
    net.auto_persist[0] = false;
    net.submit(1, b"first");
    while net.deliver_first(|p| is_kind(p, "REQUEST")) {}
    let sent = net.hold(|p| is_kind(p, "PROPOSE"));
    assert!(!sent.is_empty(), "leader 0 proposed");
    net.crash(0);
    net.restart(0);
    net.auto_persist[0] = true;
    assert_eq!(net.replicas[0].regency(), 0);
    net.submit(2, b"second");
    net.run(10_000);
    assert!(
        !net.wire.iter().any(|p| is_kind(p, "PROPOSE"))
            && net.decisions.iter().all(|d| d.is_empty()),
        "no PROPOSE of regency 0 after the restart"
    );
    // The others time out, move to regency 1 and order both requests.
    net.run_ticks(60);
    for i in 0..4 {
        assert_eq!(net.executed(i).len(), 2, "replica {i}");
    }
    assert!(net.replicas[0].regency() >= 1);
    net.assert_agreement();
}

#[test]
fn replicas_shown_another_value_by_an_equivocating_leader_and_restarted_do_not_block_the_leader_change(
) {
    // Found by the simulator (full profile, seed 356 of the soak): a
    // restarted replica used to report its durable proposal as accepted
    // too. After an equivocating leader showed B to some replicas (B never
    // had a WRITE quorum) and A to the others, and every correct replica
    // restarted, the B side claimed ACCEPTs it never sent: no value was
    // bound and none free, and every leader change waited forever.
    let mut net = net();
    let a = Arc::new(Batch::new(vec![net.request(1, b"A")]));
    let b = Arc::new(Batch::new(vec![net.request(2, b"B")]));
    // A to replicas 1 and 2 (with the leader's WRITE: a quorum of 3, they
    // ACCEPT A); B to replica 3 (two WRITEs: it never accepts B).
    let [pa, wa, _] = leader_votes(&net, &a);
    let [pb, wb, _] = leader_votes(&net, &b);
    for to in [1, 2] {
        net.send(0, to, pa.clone());
        net.send(0, to, wa.clone());
    }
    net.send(0, 3, pb);
    net.send(0, 3, wb);
    // Only the votes among 1 and 2 get through; nothing is decided.
    net.run_filtered(10_000, |p| {
        p.from.0 != 3 && p.to.0 != 3 && p.to.0 != 0 || p.from.0 == 0
    });
    assert!(net.decisions.iter().all(|d| d.is_empty()));
    // Every correct replica crashes and restarts from its disk.
    for r in 1..4 {
        net.crash(r);
    }
    for r in 1..4 {
        net.restart(r);
    }
    net.wire.clear();
    net.down[0] = true; // the Byzantine leader goes silent
                        // The correct replicas move to regency 1 (leader 1).
    let stops: Vec<(u16, Message)> = (1..4u16)
        .map(|i| {
            (
                i,
                net.sign(
                    i,
                    Message::Stop(Stop {
                        regency: 1,
                        replica: ReplicaId(i),
                        requests: vec![],
                    }),
                ),
            )
        })
        .collect();
    for (i, s) in stops {
        net.broadcast(i, s);
    }
    net.run(100_000);
    assert!(
        net.replicas[1].stats().syncs_sent >= 1,
        "the new leader found the STOPDATAs sound and sent its SYNC"
    );
    for r in 1..4 {
        assert_eq!(
            net.log(r),
            vec![(1, a.digest())],
            "replica {r} decided A at cid 1"
        );
    }
    net.assert_agreement();
}
