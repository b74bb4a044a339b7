//! Scenario tests of checkpoints and state transfer (BFT-SMaRt DSN'14
//! Sec. III-D): a replica that fell behind catches up from proven
//! decisions, or from a checkpoint f+1 replicas agree on.

mod common;

use common::*;
use wire::ReplicaId;

fn net(n: usize, checkpoint_period: u64, window: usize) -> Net {
    Net::with_config(n, |c| {
        c.request_timeout_ticks = 5;
        c.sync_timeout_ticks = 20;
        c.throughput_min_pct = 0;
        c.checkpoint_period = checkpoint_period;
        c.instance_window = window;
        c.pipeline_depth = 2;
        c.batch_requests_max = 1;
    })
}

/// Replica `r` misses everything while `k` requests are ordered.
fn order_without(net: &mut Net, r: u16, k: u32) {
    net.down[r as usize] = true;
    for i in 0..k {
        net.submit(
            (i % 3) as u16 + if (i % 3) as u16 >= r { 1 } else { 0 },
            &i.to_be_bytes(),
        );
        net.run_ticks(1);
    }
    net.down[r as usize] = false;
}

#[test]
fn a_replica_behind_by_more_than_the_window_catches_up_from_proven_decisions() {
    // Checkpoints are rare: the gap is covered by the others' decision logs.
    let mut net = net(4, 1000, 8);
    order_without(&mut net, 3, 30);
    assert_eq!(net.replicas[3].last_decided(), 0);
    // New traffic shows replica 3 it is behind; it asks for state.
    net.submit(1, b"wake up");
    net.run_ticks(30);
    assert!(net.replicas[3].stats().transfers_started >= 1);
    assert!(net.replicas[3].stats().transfer_decisions >= 8);
    assert!(net.installed[3].is_empty(), "no checkpoint was needed");
    assert_eq!(net.executed(3), net.executed(0));
    assert_eq!(net.executed(3).len(), 31);
    net.assert_agreement();
}

#[test]
fn a_replica_behind_the_decision_logs_installs_a_checkpoint_f_plus_1_agree_on() {
    // Checkpoints every 4 decisions: the others' logs no longer reach back.
    let mut net = net(4, 4, 8);
    order_without(&mut net, 2, 40);
    net.submit(1, b"wake up");
    net.run_ticks(40);
    assert!(!net.installed[2].is_empty(), "a checkpoint was installed");
    assert_eq!(
        net.replicas[2].stats().transfer_checkpoints as usize,
        net.installed[2].len()
    );
    assert_eq!(net.executed(2), net.executed(0));
    assert_eq!(
        net.replicas[2].last_decided(),
        net.replicas[0].last_decided()
    );
    net.assert_agreement();
    // And it takes part afterwards.
    let r = net.submit(2, b"after catching up");
    net.run_ticks(10);
    assert_eq!(
        net.executed(2).last(),
        Some(&(2, r.seq, b"after catching up".to_vec()))
    );
}

#[test]
fn a_chunk_that_does_not_match_the_manifest_blames_its_source() {
    let mut net = net(4, 4, 8);
    order_without(&mut net, 2, 40);
    net.submit(1, b"wake up");
    // Corrupt every snapshot chunk replica 0 sends: the chunk does not
    // match its hash in the manifest and replica 2 tries the next source.
    let mut corrupted = 0;
    for _ in 0..60 {
        net.tick();
        for _ in 0..100_000 {
            let Some(mut p) = net.wire.pop_front() else {
                break;
            };
            if let wire::Message::SnapshotChunk(c) = &mut p.msg {
                if p.from == ReplicaId(0) && !c.bytes.is_empty() {
                    c.bytes[0] ^= 0xFF;
                    corrupted += 1;
                }
            }
            net.deliver(p);
        }
    }
    let s = net.replicas[2].stats();
    assert!(
        corrupted > 0,
        "replica 0 was asked for the checkpoint first"
    );
    assert!(s.transfer_bad_chunks >= 1, "a corrupted chunk was caught");
    assert!(!net.installed[2].is_empty());
    assert_eq!(net.executed(2), net.executed(1));
    net.assert_agreement();
}

fn chunked(n: usize) -> Net {
    Net::with_config(n, |c| {
        c.request_timeout_ticks = 5;
        c.sync_timeout_ticks = 20;
        c.throughput_min_pct = 0;
        c.checkpoint_period = 4;
        c.instance_window = 8;
        c.pipeline_depth = 2;
        c.batch_requests_max = 1;
        c.snapshot_chunk_bytes = 64; // many chunks per checkpoint
    })
}

/// Runs `ticks` ticks; every packet passes through `tamper` first, which
/// may change it, drop it (false), or queue more packets.
fn run_tampered(
    net: &mut Net,
    ticks: usize,
    mut tamper: impl FnMut(&mut Net, &mut Packet) -> bool,
) {
    for _ in 0..ticks {
        net.tick();
        for _ in 0..100_000 {
            let Some(mut p) = net.wire.pop_front() else {
                break;
            };
            if tamper(net, &mut p) {
                net.deliver(p);
            }
        }
    }
}

fn caught_up(net: &Net, r: usize) {
    assert!(!net.installed[r].is_empty(), "a checkpoint was installed");
    assert_eq!(net.executed(r), net.executed(0));
    assert_eq!(
        net.replicas[r].last_decided(),
        net.replicas[0].last_decided()
    );
    net.assert_agreement();
}

#[test]
fn garbage_chunks_raced_by_a_replica_that_was_not_asked_do_not_stall_the_transfer() {
    let mut net = chunked(4);
    order_without(&mut net, 2, 40);
    net.submit(1, b"wake up");
    // Byzantine replica 3 answers every SNAPSHOT_REQUEST of replica 2
    // before the asked source does: with garbage signed as itself, and
    // with garbage claiming to come from the asked source.
    let mut raced = 0;
    run_tampered(&mut net, 60, |net, p| {
        if let wire::Message::SnapshotRequest(r) = &p.msg {
            if p.from == ReplicaId(2) && p.to != ReplicaId(3) {
                for claimed in [3, p.to.0] {
                    let junk = wire::Message::SnapshotChunk(wire::SnapshotChunk {
                        replica: ReplicaId(claimed),
                        cid: r.cid,
                        total: 1 << 20,
                        offset: r.offset,
                        bytes: vec![0xAB; 64],
                        hashes: vec![],
                        proof: None,
                    });
                    // Chunks carry no signature (links are authenticated):
                    // the verifier ties them to the link's peer.
                    net.send(3, 2, junk);
                }
                raced += 1;
            }
        }
        true
    });
    assert!(raced > 1, "the transfer asked for several chunks");
    let s = net.replicas[2].stats();
    assert!(
        s.transfer_ignored_chunks >= 1,
        "garbage signed by 3 was ignored"
    );
    assert_eq!(s.transfer_bad_chunks, 0, "no asked source was blamed");
    caught_up(&net, 2);
}

#[test]
fn a_bad_chunk_moves_to_the_next_source_and_keeps_the_verified_prefix() {
    let mut net = chunked(4);
    order_without(&mut net, 2, 40);
    net.submit(1, b"wake up");
    let mut resumed_at = Vec::new();
    run_tampered(&mut net, 60, |_, p| {
        match &mut p.msg {
            // Replica 0 serves the first two chunks right, then garbage.
            wire::Message::SnapshotChunk(c) if p.from == ReplicaId(0) && c.offset >= 128 => {
                c.bytes[0] ^= 0xFF;
            }
            wire::Message::SnapshotRequest(r) if p.from == ReplicaId(2) && p.to != ReplicaId(0) => {
                resumed_at.push(r.offset);
            }
            _ => {}
        }
        true
    });
    let s = net.replicas[2].stats();
    assert_eq!(s.transfer_bad_chunks, 1, "replica 0 was blamed once");
    assert_eq!(
        resumed_at.first(),
        Some(&128),
        "the next source was asked for the first unverified chunk"
    );
    caught_up(&net, 2);
}

#[test]
fn a_checkpoint_served_without_its_decision_proof_is_not_installed() {
    let mut net = chunked(4);
    order_without(&mut net, 2, 40);
    net.submit(1, b"wake up");
    let mut stripped = 0;
    run_tampered(&mut net, 60, |_, p| {
        if let wire::Message::SnapshotChunk(c) = &mut p.msg {
            if p.from == ReplicaId(0) && c.proof.is_some() {
                c.proof = None;
                stripped += 1;
            }
        }
        true
    });
    assert!(stripped >= 1);
    let r = &net.replicas[2];
    assert!(r.stats().transfer_bad_chunks >= 1);
    caught_up(&net, 2);
    // The installed checkpoint's proof came from another source and was
    // checked by the verifier: the replica can show it in a STOPDATA.
    let proof = r
        .last_decided_proof()
        .expect("a proof of the last decision");
    assert_eq!(proof.cid, r.last_decided());
}

#[test]
fn a_forged_proof_in_a_snapshot_chunk_is_refused_by_the_verifier() {
    let mut net = chunked(4);
    order_without(&mut net, 2, 40);
    net.submit(1, b"wake up");
    let mut forged = 0;
    run_tampered(&mut net, 60, |_, p| {
        if let wire::Message::SnapshotChunk(c) = &mut p.msg {
            if p.from == ReplicaId(0) {
                if let Some(proof) = &mut c.proof {
                    proof.accepts[0].signature.0[0] ^= 1;
                    forged += 1;
                }
            }
        }
        true
    });
    assert!(forged >= 1);
    caught_up(&net, 2);
    assert_eq!(
        net.replicas[2].stats().transfer_bad_chunks,
        0,
        "dropped before the core saw it"
    );
}
