//! Signatures and the verifier: valid messages pass, forged ones are refused
//! with the right reason, one bad signature in a batch is singled out.

mod common;

use std::sync::Arc;

use common::*;
use wire::{
    Accept, Batch, ClientId, Digest, Message, Propose, ReplicaId, Request, Signature, Verifier,
    VerifyError, Write,
};

fn propose(leader: u16, reqs: Vec<Request>) -> Message {
    Message::Propose(Propose {
        regency: 0,
        cid: 1,
        leader: ReplicaId(leader),
        batch: Arc::new(Batch::new(reqs)),
        signature: Signature::PENDING,
    })
}

fn accept(r: u16) -> Message {
    Message::Accept(Accept {
        regency: 0,
        cid: 1,
        replica: ReplicaId(r),
        digest: Digest([3; 32]),
        signature: Signature::PENDING,
    })
}

fn signed_request(origin: u16, seq: u64) -> Request {
    let r = Request::new(
        ClientId(origin as u64),
        seq,
        b"payload".to_vec(),
        Signature::PENDING,
    );
    signer(origin).sign_request(r).into_inner()
}

#[test]
fn signed_messages_verify() {
    let mut v = Verifier::new(keyring(4), 16);
    let p = signer(0)
        .sign(propose(0, vec![signed_request(1, 1), signed_request(2, 1)]))
        .into_inner();
    let a = signer(2).sign(accept(2)).into_inner();
    let out = v.verify_batch(vec![(ReplicaId(0), p.clone()), (ReplicaId(2), a.clone())]);
    assert_eq!(out[0].as_ref().unwrap().get(), &p);
    assert_eq!(out[1].as_ref().unwrap().get(), &a);
}

/// A request relayed by another replica than its origin (replica 3 relays
/// requests of clients 1 and 2).
fn relayed(r: Request) -> (ReplicaId, Message) {
    (ReplicaId(3), Message::Request(r))
}

#[test]
fn one_bad_signature_in_a_batch_is_singled_out() {
    let mut v = Verifier::new(keyring(4), 0);
    let good1 = signed_request(1, 1);
    let good2 = signed_request(2, 1);
    let mut bad = signed_request(1, 2);
    bad.signature = signed_request(1, 3).signature; // a valid signature of another request
    let out = v.verify_batch(vec![relayed(good1), relayed(bad), relayed(good2)]);
    assert!(out[0].is_ok());
    assert_eq!(
        out[1].as_ref().unwrap_err(),
        &VerifyError::BadSignature("request")
    );
    assert!(out[2].is_ok());
}

#[test]
fn an_unsigned_request_is_refused_even_on_its_origin_link() {
    // Otherwise a Byzantine origin could get a request proposed that third
    // parties cannot verify (found by the simulator, seed 11).
    let mut v = Verifier::new(keyring(4), 16);
    let unsigned = Request::new(ClientId(1), 7, b"op".to_vec(), Signature::PENDING);
    assert_eq!(
        v.verify(ReplicaId(1), Message::Request(unsigned))
            .unwrap_err(),
        VerifyError::BadSignature("request")
    );
}

#[test]
fn a_badly_signed_accept_is_refused_on_receipt() {
    // ACCEPTs end up in decision proofs, so a bad one must never get in
    // (found by the simulator, seed 12).
    let mut v = Verifier::new(keyring(4), 0);
    let mut a = signer(2).sign(accept(2)).into_inner();
    if let Message::Accept(x) = &mut a {
        x.signature = Signature([7; 64]);
    }
    assert_eq!(
        v.verify(ReplicaId(2), a).unwrap_err(),
        VerifyError::BadSignature("ACCEPT")
    );
}

#[test]
fn votes_must_come_from_the_replica_they_name() {
    let mut v = Verifier::new(keyring(4), 0);
    let mut a = signer(1).sign(accept(1)).into_inner();
    if let Message::Accept(x) = &mut a {
        x.replica = ReplicaId(2);
    }
    assert_eq!(
        v.verify(ReplicaId(1), a).unwrap_err(),
        VerifyError::WrongSender("ACCEPT")
    );
    let p = signer(1).sign(propose(1, vec![])).into_inner();
    assert_eq!(
        v.verify(ReplicaId(2), p).unwrap_err(),
        VerifyError::WrongSender("PROPOSE")
    );
}

fn accept_of(i: u16) -> wire::Accept {
    match signer(i).sign(accept(i)).into_inner() {
        Message::Accept(a) => a,
        _ => unreachable!(),
    }
}

fn proof(cid: u64, digest: Digest, accepts: Vec<wire::Accept>) -> wire::DecisionProof {
    wire::DecisionProof {
        cid,
        digest,
        accepts,
    }
}

#[test]
fn a_decision_proof_needs_a_quorum_of_valid_matching_signatures() {
    use wire::crypto::verify_decision_proof as check;
    let ring = keyring(4);
    let d = Digest([3; 32]);
    let accepts: Vec<_> = (0..3).map(accept_of).collect();
    assert_eq!(check(&ring, &proof(1, d, accepts.clone())), Ok(()));
    // Too few, a duplicate voter, another digest, a forged signature.
    assert_eq!(
        check(&ring, &proof(1, d, accepts[..2].to_vec())),
        Err(VerifyError::BadProof)
    );
    let dup = vec![accepts[0], accepts[0], accepts[1]];
    assert_eq!(check(&ring, &proof(1, d, dup)), Err(VerifyError::BadProof));
    assert_eq!(
        check(&ring, &proof(1, Digest([4; 32]), accepts.clone())),
        Err(VerifyError::BadProof)
    );
    let mut forged = accepts.clone();
    forged[2].signature = forged[1].signature;
    assert_eq!(
        check(&ring, &proof(1, d, forged)),
        Err(VerifyError::BadSignature("ACCEPT"))
    );
    // Signatures are bound to the cluster.
    let other = wire::Signer::new(CLUSTER + 1, ReplicaId(3), secret(3));
    let mut foreign = accepts.clone();
    if let Message::Accept(a) = other.sign(accept(3)).into_inner() {
        foreign[2] = a;
    }
    assert_eq!(
        check(&ring, &proof(1, d, foreign)),
        Err(VerifyError::BadSignature("ACCEPT"))
    );
}

fn stopdata(i: u16, decided: Option<wire::DecisionProof>) -> Message {
    Message::StopData(wire::StopData {
        regency: 1,
        replica: ReplicaId(i),
        last_decided: 0,
        last_decided_proof: None,
        open: vec![wire::OpenVote {
            cid: 1,
            accepted: Some((0, Digest([3; 32]))),
            written: vec![(0, Digest([3; 32]))],
            decided,
        }],
        recent: vec![],
        signature: Signature::PENDING,
    })
}

#[test]
fn stopdata_and_sync_are_checked_with_their_proofs() {
    let mut v = Verifier::new(keyring(4), 0);
    let good_proof = proof(1, Digest([3; 32]), (0..3).map(accept_of).collect());
    let sd = signer(2)
        .sign(stopdata(2, Some(good_proof.clone())))
        .into_inner();
    assert!(v.verify(ReplicaId(2), sd.clone()).is_ok());
    // Tampering with a signed STOPDATA breaks its signature.
    let mut tampered = sd.clone();
    if let Message::StopData(x) = &mut tampered {
        x.last_decided = 5;
    }
    assert_eq!(
        v.verify(ReplicaId(2), tampered.clone()).unwrap_err(),
        VerifyError::BadSignature("STOPDATA")
    );
    // A STOPDATA with a short proof is refused even when signed.
    let short = proof(1, Digest([3; 32]), (0..2).map(accept_of).collect());
    let bad = signer(2).sign(stopdata(2, Some(short))).into_inner();
    assert_eq!(
        v.verify(ReplicaId(2), bad).unwrap_err(),
        VerifyError::BadProof
    );
    // SYNC carries other replicas' STOPDATAs: each is checked by its own signature.
    let Message::StopData(sd1) = signer(1).sign(stopdata(1, None)).into_inner() else {
        unreachable!()
    };
    let Message::StopData(sd2) = sd else {
        unreachable!()
    };
    let sync = |sds| {
        Message::Sync(wire::Sync {
            regency: 1,
            leader: ReplicaId(1),
            stopdata: sds,
        })
    };
    assert!(v
        .verify(ReplicaId(1), sync(vec![sd1.clone(), sd2.clone()]))
        .is_ok());
    let Message::StopData(t) = tampered else {
        unreachable!()
    };
    assert_eq!(
        v.verify(ReplicaId(1), sync(vec![sd1.clone(), t]))
            .unwrap_err(),
        VerifyError::BadSignature("STOPDATA")
    );
    assert_eq!(
        v.verify(ReplicaId(2), sync(vec![sd1])).unwrap_err(),
        VerifyError::WrongSender("SYNC")
    );
}

#[test]
fn propose_signatures_verify_as_evidence() {
    let ring = keyring(4);
    let Message::Propose(mut p) = signer(0)
        .sign(propose(0, vec![signed_request(1, 1)]))
        .into_inner()
    else {
        unreachable!()
    };
    assert_eq!(wire::crypto::verify_propose_signature(&ring, &p), Ok(()));
    p.cid += 1;
    assert_eq!(
        wire::crypto::verify_propose_signature(&ring, &p),
        Err(VerifyError::BadSignature("PROPOSE"))
    );
}

#[test]
fn forged_request_inside_propose_fails_the_propose() {
    let mut v = Verifier::new(keyring(4), 16);
    let forged = Request::new(
        ClientId(1),
        9,
        b"evil".to_vec(),
        signer(0).key().sign(b"whatever"),
    );
    let p = signer(0)
        .sign(propose(0, vec![signed_request(2, 1), forged]))
        .into_inner();
    assert_eq!(
        v.verify(ReplicaId(0), p).unwrap_err(),
        VerifyError::BadSignature("request")
    );
}

#[test]
fn a_cached_request_is_not_verified_twice_but_its_signature_is_still_bound() {
    let mut v = Verifier::new(keyring(4), 16);
    let r = signed_request(1, 1);
    v.verify(ReplicaId(3), Message::Request(r.clone())).unwrap();
    // The same request again is not re-checked...
    let p = signer(0).sign(propose(0, vec![r.clone()])).into_inner();
    assert!(v.verify(ReplicaId(0), p).is_ok());
    // ...but the same content with other signature bytes is: a decided
    // batch must carry signatures a third party accepts.
    let mut same = r.clone();
    same.signature = Signature([9; 64]);
    let p = signer(0).sign(propose(0, vec![same])).into_inner();
    assert_eq!(
        v.verify(ReplicaId(0), p).unwrap_err(),
        VerifyError::BadSignature("request")
    );
    // Different content under the cached request's signature is checked and refused.
    let other = Request::new(ClientId(1), 1, b"changed".to_vec(), r.signature);
    let p = signer(0).sign(propose(0, vec![other])).into_inner();
    assert_eq!(
        v.verify(ReplicaId(0), p).unwrap_err(),
        VerifyError::BadSignature("request")
    );
}

#[test]
fn unknown_clients_and_replicas_are_refused() {
    let mut v = Verifier::new(keyring(4), 0);
    let r = Request::new(ClientId(1 << 20), 1, vec![], Signature::PENDING);
    assert_eq!(
        v.verify(ReplicaId(1), Message::Request(r)).unwrap_err(),
        VerifyError::UnknownClient
    );
    let w = Message::Write(Write {
        regency: 0,
        cid: 1,
        replica: ReplicaId(9),
        digest: Digest::ZERO,
    });
    assert_eq!(
        v.verify(ReplicaId(9), w).unwrap_err(),
        VerifyError::UnknownReplica
    );
}

#[test]
#[should_panic(expected = "signing another leader's PROPOSE")]
fn signer_refuses_to_sign_for_another_leader() {
    signer(1).sign(propose(0, vec![]));
}

#[test]
fn key_hex_round_trips_and_bad_keys_are_refused() {
    let k = secret(3);
    assert_eq!(
        wire::SecretKey::from_hex(&k.to_hex()).unwrap().public(),
        k.public()
    );
    assert_eq!(
        wire::PublicKey::from_hex(&k.public().to_hex()).unwrap(),
        k.public()
    );
    assert!(wire::PublicKey::from_hex("abcd").is_err());
    // The identity point is small-order.
    let mut ident = [0u8; 32];
    ident[0] = 1;
    assert_eq!(
        wire::PublicKey::from_bytes(&ident),
        Err(wire::crypto::KeyError::Weak)
    );
}

#[test]
fn the_same_request_twice_in_a_batch_is_checked_once_and_both_copies_share_the_verdict() {
    let mut v = Verifier::new(keyring(4), 0);
    let good = signed_request(1, 1);
    let p = signer(0).sign(propose(0, vec![good.clone()])).into_inner();
    let out = v.verify_batch(vec![
        (ReplicaId(1), Message::Request(good.clone())),
        (ReplicaId(0), p),
    ]);
    assert!(out.iter().all(|r| r.is_ok()));
    let mut bad = signed_request(2, 1);
    bad.signature = Signature([3; 64]);
    let p = signer(0).sign(propose(0, vec![bad.clone()])).into_inner();
    let out = v.verify_batch(vec![
        (ReplicaId(2), Message::Request(bad)),
        (ReplicaId(0), p),
    ]);
    assert_eq!(
        out[0].as_ref().unwrap_err(),
        &VerifyError::BadSignature("request")
    );
    assert_eq!(
        out[1].as_ref().unwrap_err(),
        &VerifyError::BadSignature("request")
    );
}

/// An ACCEPT of replica `r` (seed of `common::secret(r)`) signed with a
/// nonce point R that carries a small torsion component: valid under the
/// cofactored equation, invalid under the strict cofactorless one. Only the
/// key holder can make one (a Byzantine replica signing its own votes).
fn accept_with_torsioned_nonce(r: u16) -> Message {
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::scalar::Scalar;
    use sha2::{Digest as _, Sha512};
    let mut seed = [7u8; 32];
    seed[..2].copy_from_slice(&r.to_be_bytes());
    let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
    let (a_scalar, a_point) = (sk.to_scalar(), sk.verifying_key());
    let unsigned = Accept {
        regency: 0,
        cid: 1,
        replica: ReplicaId(r),
        digest: Digest([3; 32]),
        signature: Signature::PENDING,
    };
    let msg = wire::crypto::accept_signed_bytes(CLUSTER, &unsigned);
    for nonce in 1u64..64 {
        let rs = Scalar::from(nonce * 7919);
        let big_r = (ED25519_BASEPOINT_POINT * rs + EIGHT_TORSION[1]).compress();
        let k = Scalar::from_hash(
            Sha512::new()
                .chain_update(big_r.as_bytes())
                .chain_update(a_point.as_bytes())
                .chain_update(&msg[..]),
        );
        let s = rs + k * a_scalar;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(big_r.as_bytes());
        sig[32..].copy_from_slice(s.as_bytes());
        let dsig = ed25519_dalek::Signature::from_bytes(&sig);
        if a_point.verify_strict(&msg[..], &dsig).is_err() {
            return Message::Accept(Accept {
                signature: Signature(sig),
                ..unsigned
            });
        }
    }
    unreachable!("7 in 8 nonces give a strict failure");
}

#[test]
fn a_signature_valid_only_under_the_cofactored_equation_gets_one_verdict_in_and_out_of_batches() {
    let odd = accept_with_torsioned_nonce(2);
    let good = signer(1).sign(accept(1)).into_inner();
    let mut bad = signer(3).sign(accept(3)).into_inner();
    if let Message::Accept(a) = &mut bad {
        a.signature.0[40] ^= 1;
    }
    let mut v = Verifier::new(keyring(4), 0);
    // Alone.
    let alone = v.verify(ReplicaId(2), odd.clone()).is_ok();
    // In a batch that passes as a whole.
    let all_good = v.verify_batch(vec![
        (ReplicaId(2), odd.clone()),
        (ReplicaId(1), good.clone()),
    ]);
    // In a batch that fails and falls back to one check per signature.
    let mixed = v.verify_batch(vec![(ReplicaId(2), odd.clone()), (ReplicaId(3), bad)]);
    assert!(mixed[1].is_err(), "the bad signature is singled out");
    let verdicts = [alone, all_good[0].is_ok(), mixed[0].is_ok()];
    assert!(
        verdicts.iter().all(|&x| x == verdicts[0]),
        "one signature, different verdicts: {verdicts:?}"
    );
    // The rule is the cofactored one (the batch equation).
    assert!(verdicts[0]);
}
