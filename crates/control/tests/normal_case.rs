//! Scenario tests of Mod-SMaRt's normal case (Sousa & Bessani 2012, Sec. 4;
//! BFT-SMaRt DSN'14, Sec. III-B), each named after the protocol rule it
//! checks.

mod common;

use std::sync::Arc;

use common::*;
use control::Output;
use wire::{Batch, Message, Propose, ReplicaId, Signature, Write};

#[test]
fn a_request_is_proposed_written_accepted_and_decided_everywhere() {
    let mut net = Net::new(4);
    let r = net.submit(1, b"put foo bar");
    net.run(1000);
    for i in 0..4 {
        assert_eq!(
            net.executed(i),
            vec![(1, r.seq, b"put foo bar".to_vec())],
            "replica {i}"
        );
        let d = &net.decisions[i][0];
        assert_eq!((d.cid, d.regency), (1, 0));
        // The decision proof is a Byzantine quorum of signed ACCEPTs.
        assert!(d.proof.accepts.len() >= 3);
        assert!(d.proof.accepts.iter().all(|a| a.digest == d.batch.digest()));
    }
    net.assert_agreement();
    assert_eq!(net.replicas[0].stats().proposals_sent, 1);
}

#[test]
fn a_replica_sends_accept_only_after_a_quorum_of_writes() {
    let mut net = Net::new(4);
    net.submit(2, b"x");
    // Deliver the REQUESTs and the PROPOSE (replica 3 makes it durable and
    // counts its own WRITE at once), then the WRITE of replica 0 only.
    while net.deliver_first(|p| is_kind(p, "REQUEST") || is_kind(p, "PROPOSE")) {}
    let writes_to_3 = |from: u16| {
        move |p: &Packet| is_kind(p, "WRITE") && p.to == ReplicaId(3) && p.from == ReplicaId(from)
    };
    assert!(net.deliver_first(writes_to_3(0)));
    assert!(!net
        .wire
        .iter()
        .any(|p| is_kind(p, "ACCEPT") && p.from == ReplicaId(3)));
    // The third matching WRITE completes the quorum 2f+1 = 3.
    assert!(net.deliver_first(writes_to_3(1)));
    assert!(net
        .wire
        .iter()
        .any(|p| is_kind(p, "ACCEPT") && p.from == ReplicaId(3)));
}

#[test]
fn nothing_is_decided_until_the_batch_is_durable_at_a_quorum() {
    let mut net = Net::new(4);
    net.auto_persist[2] = false;
    net.auto_persist[3] = false;
    net.submit(0, b"durable");
    net.run(1000);
    // Only replicas 0 and 1 have the batch on disk: they ACCEPT, 2 and 3 hold
    // their ACCEPTs until their fsync, and 2 ACCEPTs are not a quorum.
    assert!(net.decisions.iter().all(|d| d.is_empty()));
    net.persist_all(2);
    assert!(net
        .wire
        .iter()
        .any(|p| is_kind(p, "ACCEPT") && p.from == ReplicaId(2)));
    net.run(1000);
    // Now 0, 1, 2 hold it durably: everyone decides, replica 3 from their ACCEPTs.
    for i in 0..4 {
        assert_eq!(net.decisions[i].len(), 1, "replica {i}");
        assert!(net.decisions[i][0]
            .proof
            .accepts
            .iter()
            .all(|a| a.replica != ReplicaId(3)));
    }
    net.assert_agreement();
}

#[test]
fn no_decision_without_a_quorum_of_correct_replicas() {
    let mut net = Net::new(4);
    net.submit(0, b"stuck");
    // Replicas 2 and 3 are cut off: 2 of 4 cannot form a quorum of 3.
    net.run_filtered(1000, |p| p.from.0 < 2 && p.to.0 < 2);
    assert!(net.decisions.iter().all(|d| d.is_empty()));
}

#[test]
fn decisions_are_delivered_in_cid_order_when_instances_finish_out_of_order() {
    let mut net = Net::with_config(4, |c| {
        c.pipeline_depth = 4;
        c.pipeline_batch_min = 1;
    });
    for i in 0..3 {
        net.submit(0, format!("req{i}").as_bytes());
    }
    // Let the leader propose: deliver requests to everyone.
    while net.deliver_first(|p| is_kind(p, "REQUEST")) {}
    let proposes = net
        .wire
        .iter()
        .filter(|p| is_kind(p, "PROPOSE") && p.to == ReplicaId(0))
        .count();
    assert!(
        proposes >= 2,
        "the leader pipelines several instances, got {proposes}"
    );
    // Hold everything of instance 1 and finish the others first.
    let held = net.hold(|p| cid_of(p) == Some(1));
    net.run(10_000);
    assert!(
        net.decisions.iter().all(|d| d.is_empty()),
        "nothing delivered before cid 1"
    );
    net.wire.extend(held);
    net.run(10_000);
    net.assert_agreement();
    for i in 0..4 {
        assert_eq!(net.executed(i).len(), 3);
        assert_eq!(net.decisions[i].len(), proposes);
    }
}

#[test]
fn batches_respect_the_request_and_pipeline_limits() {
    let mut net = Net::with_config(4, |c| {
        c.batch_requests_max = 2;
        c.pipeline_depth = 1;
    });
    for i in 0..5 {
        net.submit(3, &[i]);
    }
    net.run(100_000);
    let sizes: Vec<usize> = net.decisions[0].iter().map(|d| d.batch.len()).collect();
    assert!(sizes.iter().all(|&s| s <= 2), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 5);
    net.assert_agreement();
}

#[test]
fn a_propose_from_a_replica_that_is_not_leader_is_ignored() {
    let mut net = Net::new(4);
    let r = net.request(1, b"usurp");
    let p = net.sign(
        1,
        Message::Propose(Propose {
            regency: 0,
            cid: 1,
            leader: ReplicaId(1),
            batch: Arc::new(Batch::new(vec![r])),
            signature: Signature::PENDING,
        }),
    );
    net.broadcast(1, p);
    net.run(1000);
    assert!(net.decisions.iter().all(|d| d.is_empty()));
    assert!(net.wire.is_empty());
    assert_eq!(net.replicas[2].stats().drop_not_leader, 1);
}

#[test]
fn an_equivocating_leader_cannot_make_correct_replicas_decide_differently() {
    let mut net = Net::new(4);
    let a = net.request(1, b"A");
    let b = net.request(2, b"B");
    let propose = |net: &Net, r| {
        net.sign(
            0,
            Message::Propose(Propose {
                regency: 0,
                cid: 1,
                leader: ReplicaId(0),
                batch: Arc::new(Batch::new(vec![r])),
                signature: Signature::PENDING,
            }),
        )
    };
    let (pa, pb) = (propose(&net, a), propose(&net, b));
    // Replicas 1 and 2 see A; replica 3 sees B first, then A.
    net.send(0, 1, pa.clone());
    net.send(0, 2, pa.clone());
    net.send(0, 3, pb);
    net.send(0, 3, pa);
    net.run_filtered(10_000, |p| p.from != ReplicaId(0)); // the leader goes silent after proposing
                                                          // Replicas 1 and 2 wrote A, replica 3 wrote B: no digest has a quorum of 3.
    assert!(net.decisions.iter().all(|d| d.is_empty()));
    assert_eq!(net.replicas[3].stats().drop_equivocation, 0);
}

#[test]
fn a_second_different_propose_for_the_same_instance_is_refused() {
    let mut net = Net::new(4);
    let a = net.request(1, b"A");
    let b = net.request(1, b"B");
    for r in [a, b] {
        let p = net.sign(
            0,
            Message::Propose(Propose {
                regency: 0,
                cid: 1,
                leader: ReplicaId(0),
                batch: Arc::new(Batch::new(vec![r])),
                signature: Signature::PENDING,
            }),
        );
        net.send(0, 3, p);
    }
    net.run_filtered(2, |_| true);
    assert_eq!(net.replicas[3].stats().drop_equivocation, 1);
    let writes: Vec<_> = net
        .wire
        .iter()
        .filter(|p| is_kind(p, "WRITE") && p.from == ReplicaId(3))
        .collect();
    assert_eq!(
        writes.len(),
        4,
        "one WRITE to each replica, for the first proposal only"
    );
}

#[test]
fn a_request_is_executed_once_even_if_proposed_twice() {
    let mut net = Net::new(4);
    let r = net.request(2, b"once");
    // A faulty leader proposes the same request in two instances.
    for cid in [1, 2] {
        let p = net.sign(
            0,
            Message::Propose(Propose {
                regency: 0,
                cid,
                leader: ReplicaId(0),
                batch: Arc::new(Batch::new(vec![r.clone()])),
                signature: Signature::PENDING,
            }),
        );
        net.broadcast(0, p);
    }
    net.run(10_000);
    for i in 0..4 {
        assert_eq!(net.decisions[i].len(), 2);
        assert_eq!(net.executed(i).len(), 1, "replica {i} executed a duplicate");
    }
    // Submitting it again after execution is ignored on entry.
    net.broadcast(2, Message::Request(r));
    net.run(1000);
    assert_eq!(net.replicas[0].stats().requests_already_executed, 1);
    assert_eq!(net.decisions[0].len(), 2);
}

#[test]
fn a_batch_that_repeats_a_request_is_refused() {
    let mut net = Net::new(4);
    let r = net.request(2, b"twice");
    let p = net.sign(
        0,
        Message::Propose(Propose {
            regency: 0,
            cid: 1,
            leader: ReplicaId(0),
            batch: Arc::new(Batch::new(vec![r.clone(), r])),
            signature: Signature::PENDING,
        }),
    );
    net.broadcast(0, p);
    net.run(1000);
    assert!(net.decisions.iter().all(|d| d.is_empty()));
    assert_eq!(net.replicas[1].stats().drop_bad_batch, 1);
}

#[test]
fn messages_outside_the_instance_window_or_regency_are_dropped() {
    let mut net = Net::with_config(4, |c| c.instance_window = 8);
    let write = |regency, cid| {
        Message::Write(Write {
            regency,
            cid,
            replica: ReplicaId(1),
            digest: wire::Digest::ZERO,
        })
    };
    net.send(1, 2, write(0, 9));
    net.send(1, 2, write(0, 0));
    net.send(1, 2, write(5, 1));
    net.send(1, 2, write(0, 8));
    net.run(10);
    let s = net.replicas[2].stats();
    assert_eq!(
        (s.drop_future_cid, s.drop_stale_cid, s.drop_wrong_regency),
        (1, 1, 1)
    );
    assert_eq!(net.replicas[2].open_instances(), 1);
}

#[test]
fn a_conflicting_second_vote_from_one_replica_is_not_counted() {
    let mut net = Net::new(4);
    for d in [[1u8; 32], [2u8; 32]] {
        let w = Message::Write(Write {
            regency: 0,
            cid: 1,
            replica: ReplicaId(1),
            digest: wire::Digest(d),
        });
        net.send(1, 2, w);
    }
    net.run(10);
    assert_eq!(net.replicas[2].stats().drop_conflicting_vote, 1);
}

#[test]
fn seven_replicas_decide_with_quorum_five_and_two_silent() {
    let mut net = Net::new(7);
    let r = net.submit(4, b"n7");
    net.run_filtered(100_000, |p| p.from.0 < 5 && p.to.0 < 5);
    for i in 0..5 {
        assert_eq!(net.executed(i), vec![(4, r.seq, b"n7".to_vec())]);
        assert!(net.decisions[i][0].proof.accepts.len() >= 5);
    }
    assert!(net.decisions[5].is_empty() && net.decisions[6].is_empty());
}

#[test]
fn the_pending_pool_is_bounded() {
    let mut net = Net::with_config(4, |c| {
        c.pending_requests_max = 8;
        c.pending_per_client_max = 2;
    });
    for origin in 0..4 {
        for i in 0..3 {
            let r = net.request(origin, &[i]);
            net.send(origin, 2, Message::Request(r));
        }
    }
    net.run_filtered(12, |_| true);
    assert_eq!(net.replicas[2].pending_len(), 8);
    assert_eq!(net.replicas[2].stats().requests_refused_client_full, 4);
}

#[test]
fn one_replica_flooding_requests_does_not_starve_the_others() {
    // Replica 3 (Byzantine) floods replica 2 with validly signed requests
    // of its own proxy, far more than the pool holds.
    let mut net = Net::with_config(4, |c| {
        c.pending_requests_max = 64;
        c.pending_per_client_max = 16;
    });
    net.down[0] = true; // no leader: nothing is ordered, the pool only fills
    for i in 0..1000u32 {
        let r = net.request(3, &i.to_be_bytes());
        net.send(3, 2, Message::Request(r));
    }
    net.run(10_000);
    assert_eq!(net.replicas[2].pending_len(), 16, "replica 3's share only");
    assert_eq!(net.replicas[2].stats().requests_refused_client_full, 984);
    // Honest replica 1's requests still get in.
    for i in 0..16u32 {
        let r = net.request(1, &i.to_be_bytes());
        net.send(1, 2, Message::Request(r));
    }
    net.run(100);
    assert_eq!(net.replicas[2].pending_len(), 32);
    assert_eq!(net.replicas[2].stats().requests_refused_full, 0);
}

#[test]
fn many_requests_from_all_origins_are_all_executed_in_one_order() {
    let mut net = Net::with_config(4, |c| {
        c.batch_requests_max = 7;
        c.pipeline_depth = 3;
    });
    for i in 0..200u32 {
        net.submit((i % 4) as u16, &i.to_be_bytes());
        if i % 13 == 0 {
            net.run(50); // interleave arrivals with progress
        }
    }
    net.run(1_000_000);
    net.assert_agreement();
    for i in 0..4 {
        assert_eq!(net.executed(i).len(), 200);
        assert_eq!(net.executed(i), net.executed(0));
    }
    assert!(net.decisions[0].len() < 200, "requests were batched");
    let _ = Output::Deliver; // the harness executes every output kind
}

#[test]
fn with_an_instance_in_flight_requests_wait_for_the_next_batch_unless_it_is_full() {
    let mut net = Net::with_config(4, |c| {
        c.pipeline_depth = 4;
        c.pipeline_batch_min = 3;
    });
    // The first request is proposed at once.
    net.submit(1, b"first");
    while net.deliver_first(|p| is_kind(p, "REQUEST")) {}
    assert_eq!(net.replicas[0].stats().proposals_sent, 1);
    // Two more arrive while it is in flight: not enough for another batch.
    net.submit(2, b"second");
    net.submit(3, b"third");
    while net.deliver_first(|p| is_kind(p, "REQUEST")) {}
    assert_eq!(net.replicas[0].stats().proposals_sent, 1);
    // A third makes the batch worth pipelining.
    net.submit(1, b"fourth");
    while net.deliver_first(|p| is_kind(p, "REQUEST")) {}
    assert_eq!(net.replicas[0].stats().proposals_sent, 2);
    net.run(100_000);
    net.assert_agreement();
    let sizes: Vec<usize> = net.decisions[0].iter().map(|d| d.batch.len()).collect();
    assert_eq!(sizes, vec![1, 3]);
}

/// Replica 3 is silent (flooded): every quorum needs 0, 1 and 2. Replica
/// 1's WRITE to replica 2 is lost, so 2 never sees a quorum of WRITEs; the
/// ACCEPTs of 0 and 1 (f+1, so from at least one correct replica that saw
/// a quorum) for the value 2 wrote let it ACCEPT too, and all three decide
/// (issue 11, item 2: one slow link among three no longer stalls them).
#[test]
fn a_replica_accepts_on_f_plus_1_accepts_for_the_value_it_wrote() {
    let mut net = Net::new(4);
    let r = net.submit(1, b"amplified");
    let lost = |p: &Packet| {
        p.from == ReplicaId(3)
            || p.to == ReplicaId(3)
            || (is_kind(p, "WRITE") && p.from == ReplicaId(1) && p.to == ReplicaId(2))
    };
    net.run_filtered(10_000, |p| !lost(p));
    for i in 0..3 {
        assert_eq!(
            net.executed(i),
            vec![(1, r.seq, b"amplified".to_vec())],
            "replica {i}"
        );
    }
    assert_eq!(net.replicas[2].stats().accepts_amplified, 1);
    assert_eq!(net.replicas[0].stats().accepts_amplified, 0);
    net.assert_agreement();
}

/// Without its own durable WRITE of the value, f+1 ACCEPTs do not make a
/// replica ACCEPT: a correct replica accepts only the one value it wrote.
#[test]
fn f_plus_1_accepts_do_not_make_a_replica_accept_a_value_it_has_not_written() {
    let mut net = Net::new(4);
    net.auto_persist[2] = false;
    net.submit(1, b"not durable");
    net.run_filtered(10_000, |p| p.from != ReplicaId(3) && p.to != ReplicaId(3));
    // 0 and 1 ACCEPTed; 2 holds their ACCEPTs but its proposal is not on
    // disk, so it neither WRITEs nor ACCEPTs, and nothing is decided.
    assert!(net
        .replicas
        .iter()
        .all(|r| r.stats().accepts_amplified == 0));
    assert!(net.decisions.iter().all(|d| d.is_empty()));
    net.persist_all(2);
    net.run_filtered(10_000, |p| p.from != ReplicaId(3) && p.to != ReplicaId(3));
    for i in 0..3 {
        assert_eq!(net.decisions[i].len(), 1, "replica {i}");
    }
}

/// Replica 3 is silent; the leader's PROPOSE to replica 1 is late (held
/// for the whole run). Replicas 0 and 2 WRITE its digest: f+1 votes, so a
/// correct replica took it as the leader's proposal. Replica 1 fetches
/// the batch from those two only, writes it, and the three decide without
/// the PROPOSE or a leader change (simulator seed 13 of
/// `a_silent_backup_changes_nothing_for_the_others`).
#[test]
fn a_late_propose_is_fetched_from_the_replicas_that_voted_for_it() {
    let mut net = Net::new(4);
    let r = net.submit(2, b"late");
    let silent = |p: &Packet| p.from == ReplicaId(3) || p.to == ReplicaId(3);
    let late = |p: &Packet| is_kind(p, "PROPOSE") && p.to == ReplicaId(1);
    let mut held = Vec::new();
    for _ in 0..10_000 {
        held.extend(net.hold(late));
        let Some(p) = net.wire.pop_front() else {
            break;
        };
        if is_kind(&p, "FETCH") && p.from == ReplicaId(1) {
            assert!(
                p.to == ReplicaId(0) || p.to == ReplicaId(2),
                "fetched only from the replicas that voted: {:?}",
                p.to
            );
        }
        if !silent(&p) {
            net.deliver(p);
        }
    }
    assert_eq!(held.len(), 1, "the PROPOSE to replica 1 stayed late");
    for i in 0..3 {
        assert_eq!(
            net.executed(i),
            vec![(2, r.seq, b"late".to_vec())],
            "replica {i}"
        );
        assert_eq!(net.replicas[i].regency(), 0);
    }
    assert_eq!(net.replicas[1].stats().proposals_fetched, 1);
    net.assert_agreement();
}

/// One vote is no evidence: a (Byzantine) WRITE for a digest nobody
/// proposed makes no replica fetch or write it.
#[test]
fn a_single_write_for_an_unknown_digest_is_not_fetched() {
    let mut net = Net::new(4);
    let w = Message::Write(Write {
        regency: 0,
        cid: 1,
        replica: ReplicaId(3),
        digest: wire::Digest([7u8; 32]),
    });
    net.send(3, 1, w);
    net.run(10);
    assert!(!net.wire.iter().any(|p| is_kind(p, "FETCH")));
    assert_eq!(net.replicas[1].stats().batches_fetched, 0);
}
