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
fn a_checkpoint_whose_bytes_do_not_match_the_trusted_digest_is_refused() {
    let mut net = net(4, 4, 8);
    order_without(&mut net, 2, 40);
    net.submit(1, b"wake up");
    // Corrupt every snapshot chunk replica 0 sends: the digest check fails
    // and replica 2 tries the next source.
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
    assert!(
        s.transfer_bad_checkpoints >= 1,
        "a corrupted checkpoint was caught"
    );
    assert!(!net.installed[2].is_empty());
    assert_eq!(net.executed(2), net.executed(1));
    net.assert_agreement();
}
