//! Link handshake and frames: the agreed key opens the peer's frames, and a
//! frame that is replayed, reordered, truncated, tampered with or sent by
//! the wrong party is dropped without moving the link state.

mod common;

use common::*;
use wire::link::{self, FrameError, HandshakeError};
use wire::ReplicaId;

const MAX: usize = 1 << 16;

fn pair() -> (link::SealKey, link::OpenKey) {
    let ring = keyring(4);
    let (hello, dialing) = link::dial(&secret(1), CLUSTER, ReplicaId(1), ReplicaId(2));
    let (reply, peer, pending) =
        link::accept(&secret(2), &ring, ReplicaId(2), &hello, MAX).unwrap();
    assert_eq!(peer, ReplicaId(1));
    let (seal, confirm) = dialing.finish(&ring, &reply).unwrap();
    (seal, pending.confirm(&confirm).unwrap())
}

fn frame(seal: &mut link::SealKey, msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    seal.seal(msg, &mut out);
    assert_eq!(out.len(), msg.len() + link::FRAME_OVERHEAD);
    out
}

#[test]
fn frames_open_in_order() {
    let (mut seal, mut open) = pair();
    for i in 0..5u8 {
        let mut f = frame(&mut seal, &[i; 33]);
        assert_eq!(open.open(&mut f).unwrap(), &[i; 33]);
    }
}

#[test]
fn replayed_and_reordered_frames_are_dropped() {
    let (mut seal, mut open) = pair();
    let f0 = frame(&mut seal, b"zero");
    let f1 = frame(&mut seal, b"one");
    assert_eq!(
        open.open(&mut f1.clone()),
        Err(FrameError::BadSequence { got: 1, want: 0 })
    );
    open.open(&mut f0.clone()).unwrap();
    assert_eq!(
        open.open(&mut f0.clone()),
        Err(FrameError::BadSequence { got: 0, want: 1 })
    );
    assert_eq!(open.open(&mut f1.clone()).unwrap(), b"one");
}

#[test]
fn tampered_frames_fail_the_tag_and_leave_the_link_usable() {
    let (mut seal, mut open) = pair();
    let good = frame(&mut seal, b"payload bytes");
    for i in [12, 20, good.len() - 1] {
        let mut bad = good.clone();
        bad[i] ^= 1;
        assert_eq!(open.open(&mut bad), Err(FrameError::BadTag));
    }
    let mut bad = good.clone();
    bad[3] ^= 1; // sender field
    assert!(matches!(
        open.open(&mut bad),
        Err(FrameError::WrongSender { .. })
    ));
    assert_eq!(open.open(&mut good.clone()).unwrap(), b"payload bytes");
}

#[test]
fn size_checks_come_first() {
    let (_, mut open) = pair();
    assert_eq!(open.open(&mut [0u8; 5]), Err(FrameError::TooShort(5)));
    let mut huge = vec![0u8; MAX + link::FRAME_OVERHEAD + 1];
    assert!(matches!(
        open.open(&mut huge),
        Err(FrameError::TooLong { .. })
    ));
}

#[test]
fn handshake_refuses_wrong_cluster_addressee_and_impostor() {
    let ring = keyring(4);
    let (hello, _) = link::dial(&secret(1), CLUSTER + 1, ReplicaId(1), ReplicaId(2));
    assert!(matches!(
        link::accept(&secret(2), &ring, ReplicaId(2), &hello, MAX),
        Err(HandshakeError::WrongCluster { .. })
    ));
    let (hello, _) = link::dial(&secret(1), CLUSTER, ReplicaId(1), ReplicaId(3));
    assert!(matches!(
        link::accept(&secret(2), &ring, ReplicaId(2), &hello, MAX),
        Err(HandshakeError::WrongAddressee { got: 3, want: 2 })
    ));
    // Replica 3's key claiming to be replica 1.
    let (hello, _) = link::dial(&secret(3), CLUSTER, ReplicaId(1), ReplicaId(2));
    assert_eq!(
        link::accept(&secret(2), &ring, ReplicaId(2), &hello, MAX).err(),
        Some(HandshakeError::BadSignature)
    );
    assert!(matches!(
        link::accept(&secret(2), &ring, ReplicaId(2), b"GET / HTTP/1.1\r\n", MAX),
        Err(HandshakeError::Malformed(_))
    ));
}

#[test]
fn dialer_refuses_a_reply_not_bound_to_its_hello() {
    let ring = keyring(4);
    let (hello_a, _dial_a) = link::dial(&secret(1), CLUSTER, ReplicaId(1), ReplicaId(2));
    let (_hello_b, dial_b) = link::dial(&secret(1), CLUSTER, ReplicaId(1), ReplicaId(2));
    let (reply_a, _, _) = link::accept(&secret(2), &ring, ReplicaId(2), &hello_a, MAX).unwrap();
    assert_eq!(
        dial_b.finish(&ring, &reply_a).err(),
        Some(HandshakeError::NotFresh)
    );
}

/// A HELLO captured on the wire and replayed (with the CONFIRM captured
/// after it) meets a fresh challenge: the old CONFIRM does not answer it, so
/// the acceptor never hands out a key for the replay.
#[test]
fn a_replayed_hello_gets_no_key_without_the_confirm() {
    let ring = keyring(4);
    let (hello, dialing) = link::dial(&secret(1), CLUSTER, ReplicaId(1), ReplicaId(2));
    let (reply, _, pending) = link::accept(&secret(2), &ring, ReplicaId(2), &hello, MAX).unwrap();
    let (_, confirm) = dialing.finish(&ring, &reply).unwrap();
    pending.confirm(&confirm).unwrap();
    // The replay: same HELLO, same CONFIRM, a new acceptor challenge.
    let (reply2, peer, replayed) =
        link::accept(&secret(2), &ring, ReplicaId(2), &hello, MAX).unwrap();
    assert_eq!(peer, ReplicaId(1), "the HELLO itself still verifies");
    assert_ne!(reply, reply2, "each answer carries a fresh challenge");
    assert_eq!(
        replayed.confirm(&confirm).err(),
        Some(HandshakeError::BadConfirm)
    );
    let (_, _, replayed) = link::accept(&secret(2), &ring, ReplicaId(2), &hello, MAX).unwrap();
    assert!(matches!(
        replayed.confirm(&confirm[..16]),
        Err(HandshakeError::Malformed(_))
    ));
}

#[test]
fn keys_of_different_connections_differ() {
    let (mut s1, _) = pair();
    let (_, mut o2) = pair();
    let mut f = frame(&mut s1, b"hello");
    assert_eq!(o2.open(&mut f), Err(FrameError::BadTag));
}
