//! MemNetwork: same handshake and frames as TCP, in memory.

mod common;

use std::time::Duration;

use common::*;
use nic::{MemConfig, MemNetwork, MemRx, MemTx, RxPath, TxError, TxPath};

fn nodes(config: MemConfig) -> Vec<Node<MemRx, MemTx>> {
    MemNetwork::with_config(config)
        .into_iter()
        .map(Node::from)
        .collect()
}

#[test]
fn four_replicas_exchange_every_pair_in_order() {
    let mut ns = nodes(MemConfig::new(4));
    exchange_all_pairs(&mut ns, 200);
    for (j, node) in ns.iter().enumerate() {
        assert_eq!(node.inbox.ups.len(), 3);
        assert_eq!(node.inbox.unopened, 0);
        let s = node.rx.stats().snapshot();
        for i in (0..4).filter(|&i| i != j) {
            assert_eq!(s.peer(r(i)).rx_frames, 200);
            assert_eq!(s.peer(r(i)).tx_frames, 200);
        }
    }
}

#[test]
fn fairness_full_queue_and_fault_switch() {
    let mut config = MemConfig::new(4);
    config.rx_queue_frames_max = 51;
    let mut ns = nodes(config);
    // Queue 1 -> 0 holds the LinkUp and 50 frames; the 51st is refused.
    for k in 0..50 {
        ns[1].tx.send(r(0), &message(1, 0, k, 40)).unwrap();
    }
    assert_eq!(
        ns[1].tx.send(r(0), &message(1, 0, 50, 40)),
        Err(TxError::QueueFull(r(0)))
    );
    assert_eq!(ns[1].tx.stats().snapshot().peer(r(0)).tx_drops, 1);
    ns[2].tx.send(r(0), &message(2, 0, 0, 40)).unwrap();

    let mut per_peer = [0usize; 4];
    let node = &mut ns[0];
    let inbox = &mut node.inbox;
    let got = node.rx.poll(100, 4, Duration::ZERO, &mut |e| {
        per_peer[e.peer().index()] += 1;
        inbox.handle(e);
    });
    assert_eq!((got, per_peer[1], per_peer[2], per_peer[3]), (7, 4, 2, 1));

    // Nothing was lost to the refused send: the link still opens in order.
    wait(&mut ns, 0, "the 50 frames", |ib| ib.from(r(1)).len() == 50);
    ns[1].tx.send(r(0), &message(1, 0, 50, 40)).unwrap();
    wait(&mut ns, 0, "frame 50", |ib| ib.from(r(1)).len() == 51);
    assert_eq!(ns[0].inbox.from(r(1))[50], &message(1, 0, 50, 40)[..]);
    assert_eq!(ns[0].inbox.unopened, 0);

    // Blocked in either direction: dropped before sealing, link stays good.
    ns[0].rx.set_blocked(&[r(1)]);
    assert_eq!(
        ns[1].tx.send(r(0), &message(1, 0, 51, 40)),
        Err(TxError::Blocked(r(0)))
    );
    assert_eq!(
        ns[0].tx.send(r(1), &message(0, 1, 0, 40)),
        Err(TxError::Blocked(r(1)))
    );
    ns[0].tx.set_blocked(&[]);
    ns[1].tx.send(r(0), &message(1, 0, 52, 40)).unwrap();
    wait(&mut ns, 0, "frame after heal", |ib| {
        ib.from(r(1)).len() == 52
    });
    assert_eq!(ns[0].inbox.unopened, 0);
    assert_eq!(ns[1].tx.send(r(1), b"x"), Err(TxError::ToSelf));
}

/// A waker makes a poll blocked with a long timeout return at once, even
/// when the wake came first.
fn a_wake_returns_a_blocked_poll<R: RxPath>(mut rx: R) {
    let waker = rx.waker();
    let started = std::time::Instant::now();
    let t = std::thread::spawn(move || {
        rx.poll(16, 4, Duration::from_secs(20), &mut |_| {});
        rx
    });
    waker.wake();
    let mut rx = t.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the wake was lost"
    );
    // A wake before the poll starts is not lost either.
    rx.waker().wake();
    let started = std::time::Instant::now();
    rx.poll(16, 4, Duration::from_secs(20), &mut |_| {});
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "an early wake was lost"
    );
}

#[test]
fn a_wake_returns_a_blocked_poll_in_memory() {
    let mut ns = MemNetwork::new(4);
    a_wake_returns_a_blocked_poll(ns.remove(0).rx);
}
