//! Encoding: every message round-trips, and no byte string makes a decoder
//! panic or allocate beyond the limits.

use std::sync::Arc;

use proptest::prelude::*;
use wire::{
    Accept, Batch, ClientId, Digest, Limits, Message, Propose, ReplicaId, Request, Signature, Write,
};

fn arb_sig() -> impl Strategy<Value = Signature> {
    prop::array::uniform32(any::<u8>()).prop_map(|h| {
        let mut s = [0u8; 64];
        s[..32].copy_from_slice(&h);
        s[32..].copy_from_slice(&h);
        Signature(s)
    })
}

fn arb_request() -> impl Strategy<Value = Request> {
    (
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..64),
        arb_sig(),
    )
        .prop_map(|(c, s, p, sig)| Request::new(ClientId(c), s, p, sig))
}

fn arb_message() -> impl Strategy<Value = Message> {
    let digest = prop::array::uniform32(any::<u8>()).prop_map(Digest);
    let accept = (
        any::<u32>(),
        any::<u64>(),
        any::<u16>(),
        digest.clone(),
        arb_sig(),
    )
        .prop_map(|(regency, cid, r, digest, signature)| Accept {
            regency,
            cid,
            replica: ReplicaId(r),
            digest,
            signature,
        });
    let proof = (
        any::<u64>(),
        digest.clone(),
        prop::collection::vec(accept, 0..4),
    )
        .prop_map(|(cid, digest, accepts)| wire::DecisionProof {
            cid,
            digest,
            accepts,
        })
        .boxed();
    let open = (
        any::<u64>(),
        prop::option::of((any::<u32>(), digest.clone())),
        prop::collection::vec((any::<u32>(), digest.clone()), 0..3),
        prop::option::of(proof.clone()),
    )
        .prop_map(|(cid, accepted, written, decided)| wire::OpenVote {
            cid,
            accepted,
            written,
            decided,
        });
    let stopdata = (
        any::<u32>(),
        any::<u16>(),
        0u64..1000,
        prop::option::of(proof),
        prop::collection::vec(open, 0..4),
        arb_sig(),
    )
        .prop_map(
            |(regency, r, last_decided, mut last_decided_proof, mut open, signature)| {
                // Open instances are strictly ascending above last_decided, and
                // every proof is filed under its own cid (decoders refuse others).
                for (i, o) in open.iter_mut().enumerate() {
                    o.cid = last_decided + 1 + i as u64 * 3;
                    if let Some(p) = &mut o.decided {
                        p.cid = o.cid;
                    }
                }
                if let Some(p) = &mut last_decided_proof {
                    p.cid = last_decided;
                }
                // Recent proofs: ascending, below last_decided.
                let recent = match &last_decided_proof {
                    Some(p) if last_decided >= 2 => {
                        let below = |c| wire::DecisionProof {
                            cid: c,
                            ..p.clone()
                        };
                        vec![below(last_decided - 2), below(last_decided - 1)]
                    }
                    _ => vec![],
                };
                wire::StopData {
                    regency,
                    replica: ReplicaId(r),
                    last_decided,
                    last_decided_proof,
                    open,
                    recent,
                    signature,
                }
            },
        )
        .boxed();
    prop_oneof![
        (
            any::<u32>(),
            any::<u16>(),
            prop::collection::vec(arb_request(), 0..3)
        )
            .prop_map(|(regency, r, requests)| {
                Message::Stop(wire::Stop {
                    regency,
                    replica: ReplicaId(r),
                    requests,
                })
            }),
        stopdata.clone().prop_map(Message::StopData),
        (
            any::<u32>(),
            any::<u16>(),
            prop::collection::vec(stopdata, 0..3)
        )
            .prop_map(|(regency, l, stopdata)| {
                Message::Sync(wire::Sync {
                    regency,
                    leader: ReplicaId(l),
                    stopdata,
                })
            }),
        (any::<u64>(), digest.clone(), any::<u16>()).prop_map(|(cid, digest, r)| Message::Fetch(
            wire::Fetch {
                cid,
                digest,
                replica: ReplicaId(r)
            }
        )),
        (any::<u64>(), prop::collection::vec(arb_request(), 0..3)).prop_map(|(cid, reqs)| {
            Message::Batch(wire::BatchReply {
                cid,
                batch: Arc::new(Batch::new(reqs)),
            })
        }),
        arb_request().prop_map(Message::Request),
        (
            any::<u32>(),
            any::<u64>(),
            any::<u16>(),
            prop::collection::vec(arb_request(), 0..5),
            arb_sig()
        )
            .prop_map(
                |(regency, cid, l, reqs, signature)| Message::Propose(Propose {
                    regency,
                    cid,
                    leader: ReplicaId(l),
                    batch: Arc::new(Batch::new(reqs)),
                    signature
                })
            ),
        (any::<u32>(), any::<u64>(), any::<u16>(), digest.clone()).prop_map(
            |(regency, cid, r, digest)| {
                Message::Write(Write {
                    regency,
                    cid,
                    replica: ReplicaId(r),
                    digest,
                })
            }
        ),
        (any::<u32>(), any::<u64>(), any::<u16>(), digest, arb_sig()).prop_map(
            |(regency, cid, r, digest, signature)| {
                Message::Accept(Accept {
                    regency,
                    cid,
                    replica: ReplicaId(r),
                    digest,
                    signature,
                })
            }
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_message_round_trips(m in arb_message()) {
        let bytes = m.encode();
        let back = Message::decode(&bytes, &Limits::default()).unwrap();
        prop_assert_eq!(&back, &m);
        // Re-encoding is canonical, so digests of received batches match.
        prop_assert_eq!(back.encode(), bytes);
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::decode(&bytes, &Limits::default());
    }

    #[test]
    fn truncation_and_extension_are_errors(m in arb_message(), cut in any::<prop::sample::Index>()) {
        let bytes = m.encode();
        let at = cut.index(bytes.len());
        prop_assert!(Message::decode(&bytes[..at], &Limits::default()).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(Message::decode(&longer, &Limits::default()).is_err());
    }

    #[test]
    fn flipped_bytes_never_panic(m in arb_message(), at in any::<prop::sample::Index>(), x in 1u8..=255) {
        let mut bytes = m.encode();
        let i = at.index(bytes.len());
        bytes[i] ^= x;
        let _ = Message::decode(&bytes, &Limits::default());
    }
}

#[test]
fn limits_are_enforced() {
    let limits = Limits {
        request_bytes_max: 8,
        batch_requests_max: 2,
        message_bytes_max: 1 << 20,
        ..Limits::default()
    };
    let big = Message::Request(Request::new(ClientId(1), 1, vec![0; 9], Signature::PENDING));
    assert!(matches!(
        Message::decode(&big.encode(), &limits),
        Err(wire::DecodeError::TooLarge {
            what: "request payload",
            ..
        })
    ));
    let reqs = (0..3)
        .map(|i| Request::new(ClientId(1), i, vec![], Signature::PENDING))
        .collect();
    let p = Message::Propose(Propose {
        regency: 0,
        cid: 1,
        leader: ReplicaId(0),
        batch: Arc::new(Batch::new(reqs)),
        signature: Signature::PENDING,
    });
    assert!(matches!(
        Message::decode(&p.encode(), &limits),
        Err(wire::DecodeError::TooLarge { what: "batch", .. })
    ));
    let tiny = Limits {
        message_bytes_max: 10,
        ..Limits::default()
    };
    assert!(matches!(
        Message::decode(&p.encode(), &tiny),
        Err(wire::DecodeError::TooLarge {
            what: "message",
            ..
        })
    ));
}

#[test]
fn unknown_version_and_tag_are_refused() {
    let w = Message::Write(Write {
        regency: 0,
        cid: 1,
        replica: ReplicaId(0),
        digest: Digest::ZERO,
    });
    let mut b = w.encode();
    b[0] = 9;
    assert_eq!(
        Message::decode(&b, &Limits::default()),
        Err(wire::DecodeError::BadVersion(9))
    );
    b[0] = wire::message::VERSION;
    b[1] = 200;
    assert!(matches!(
        Message::decode(&b, &Limits::default()),
        Err(wire::DecodeError::UnknownTag { tag: 200, .. })
    ));
}

#[test]
fn batch_digest_is_digest_of_encoding() {
    let reqs: Vec<_> = (0..3)
        .map(|i| Request::new(ClientId(1), i, vec![i as u8; 5], Signature::PENDING))
        .collect();
    let b = Batch::new(reqs.clone());
    let mut w = wire::codec::Writer::default();
    b.encode(&mut w);
    assert_eq!(b.digest(), wire::hash::digest(w.as_slice()));
    assert_eq!(b.encoded_len(), w.len());
    assert_ne!(b.digest(), Batch::new(reqs[..2].to_vec()).digest());
}

#[test]
fn a_decision_proof_filed_under_another_cid_is_refused() {
    let proof = |cid| wire::DecisionProof {
        cid,
        digest: Digest([1; 32]),
        accepts: vec![],
    };
    let sd = |open_cid, proof_cid, last, last_proof: Option<u64>| {
        Message::StopData(wire::StopData {
            regency: 1,
            replica: ReplicaId(0),
            last_decided: last,
            last_decided_proof: last_proof.map(proof),
            open: vec![wire::OpenVote {
                cid: open_cid,
                accepted: None,
                written: vec![],
                decided: Some(proof(proof_cid)),
            }],
            recent: vec![],
            signature: Signature::PENDING,
        })
    };
    let ok = sd(4, 4, 3, Some(3));
    assert_eq!(
        Message::decode(&ok.encode(), &Limits::default()).unwrap(),
        ok
    );
    for bad in [sd(4, 3, 2, Some(2)), sd(4, 4, 3, Some(2))] {
        assert!(matches!(
            Message::decode(&bad.encode(), &Limits::default()),
            Err(wire::DecodeError::Invalid(_))
        ));
    }
}

#[test]
fn a_snapshot_chunk_round_trips_and_carries_its_manifest_only_at_offset_zero() {
    let proof = wire::DecisionProof {
        cid: 7,
        digest: Digest([1; 32]),
        accepts: vec![],
    };
    let chunk = |offset, hashes: Vec<Digest>, proof: Option<wire::DecisionProof>| {
        Message::SnapshotChunk(wire::SnapshotChunk {
            replica: ReplicaId(2),
            cid: 7,
            total: 100,
            offset,
            bytes: vec![5; 10],
            hashes,
            proof,
        })
    };
    let first = chunk(0, vec![Digest([3; 32]); 2], Some(proof.clone()));
    assert_eq!(
        Message::decode(&first.encode(), &Limits::default()).unwrap(),
        first
    );
    let later = chunk(10, vec![], None);
    assert_eq!(
        Message::decode(&later.encode(), &Limits::default()).unwrap(),
        later
    );
    for bad in [
        chunk(10, vec![Digest([3; 32])], None),
        chunk(10, vec![], Some(proof.clone())),
        chunk(0, vec![], Some(wire::DecisionProof { cid: 8, ..proof })),
    ] {
        assert!(Message::decode(&bad.encode(), &Limits::default()).is_err());
    }
}
