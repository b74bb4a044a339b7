//! The synchronization decision: which values a new regency must keep.
//!
//! Every replica runs [`plan`] on the same set of signed STOPDATAs (the
//! SYNC's contents), so all correct replicas reach the same plan without
//! trusting the new leader's choice — Cachin's conditional collect, as
//! BFT-SMaRt's `LCManager` implements it (`sound`, `binds`, `unbound`),
//! generalized from one open instance to the instances of a pipeline.
//!
//! For each open cid, with S the STOPDATAs, each giving an `accepted`
//! `(ts, v)` (or none) and a `written` set:
//! - `binds(ts, v)`: at least a Byzantine quorum of S has accepted nothing,
//!   or accepted at a regency below `ts`, or accepted exactly `(ts, v)`
//!   (*quorumhighest*), and more than f of S wrote `v` at a regency of
//!   `ts` or later (*certifiedvalue*, as BFT-SMaRt's `LCManager` counts
//!   it): `v` may have been decided and must be kept;
//! - `unbound`: at least a Byzantine quorum of S accepted nothing: nothing
//!   can have been decided, the leader chooses;
//! - a decision proof in S settles the cid outright;
//! - otherwise S is not yet *sound*: the leader waits for more STOPDATAs.
//!
//! **Where the plan starts.** With several instances in flight (a pipeline),
//! a proof of cid X says nothing of X-1: X can be decided while X-1 never
//! was. So the plan does not start after the highest proven last decision
//! (one Byzantine replica could claim a real proof of X and leave X-1
//! undecided for ever) but after `base`, the (f+1)-th highest proven
//! last-decided cid in S: at least one correct replica delivered every cid
//! up to it. Above `base`, any proof in S (a last decision, an open
//! instance's, or a replica's `recent` proofs of what it delivered) keeps
//! its value; a replica that delivered a cid but shows no proof for it is
//! left out of that cid's counts (it cannot be counted as having accepted
//! nothing). The plan ends at the highest cid whose value must be kept;
//! free cids below that get the empty batch, a no-op.

use std::collections::{BTreeMap, BTreeSet};

use wire::{Cid, Digest, OpenVote, Regency, StopData};

/// The values the new regency keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPlan {
    /// Highest cid known delivered by a correct replica: the (f+1)-th
    /// highest proven last decision in S.
    pub base: Cid,
    /// `(cid, digest)` for cids `base+1 ..= base+len`, in order. The digest
    /// of an empty batch marks a no-op.
    pub values: Vec<(Cid, Digest)>,
}

/// The outcome for one cid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    Keep(Digest),
    Free,
    NotSound,
}

/// What one STOPDATA says about one cid.
#[derive(Debug, Clone, Copy)]
enum Vote<'a> {
    /// The replica delivered this cid and shows no proof of it: its vote
    /// is not counted either way.
    Unknown,
    /// Its vote on the open cid (`None`: it accepted and wrote nothing).
    Open(Option<&'a OpenVote>),
}

/// A replica's last decision counts only with its proof (cid 0 needs none).
fn proven_last(s: &StopData) -> Cid {
    match &s.last_decided_proof {
        Some(p) if p.cid == s.last_decided => s.last_decided,
        _ => 0,
    }
}

/// Computes the plan from `stopdata` (distinct replicas, one regency,
/// signatures and proofs already verified), for a cluster with `f` faults
/// and Byzantine quorum `quorum`; considers at most `window` cids above the
/// base. `None` if S is not sound (wait for more STOPDATAs).
pub fn plan(stopdata: &[StopData], f: usize, quorum: usize, window: usize) -> Option<SyncPlan> {
    let mut lasts: Vec<Cid> = stopdata.iter().map(proven_last).collect();
    lasts.sort_unstable_by(|a, b| b.cmp(a));
    let base = lasts.get(f).copied().unwrap_or(0);
    // Every proof in S, by cid. Two valid proofs of different values for
    // one cid cannot exist while at most f replicas are faulty; the first
    // in S order is taken, deterministically.
    let mut proofs: BTreeMap<Cid, Digest> = BTreeMap::new();
    for s in stopdata {
        let all = s.last_decided_proof.iter().chain(s.recent.iter()).chain(
            s.open
                .iter()
                .filter_map(|o| o.decided.as_ref().filter(|p| p.cid == o.cid)),
        );
        for p in all {
            proofs.entry(p.cid).or_insert(p.digest);
        }
    }
    let top = stopdata
        .iter()
        .flat_map(|s| s.open.iter().map(|o| o.cid))
        .chain(proofs.keys().copied())
        .filter(|&c| c > base)
        .max()
        .unwrap_or(base)
        .min(base + window as u64);
    let mut choices = Vec::new();
    for cid in base + 1..=top {
        if let Some(&d) = proofs.get(&cid) {
            choices.push((cid, Choice::Keep(d)));
            continue;
        }
        let votes: Vec<Vote<'_>> = stopdata
            .iter()
            .map(|s| match s.open.iter().find(|o| o.cid == cid) {
                Some(o) => Vote::Open(Some(o)),
                None if s.last_decided >= cid => Vote::Unknown,
                None => Vote::Open(None),
            })
            .collect();
        match choose(&votes, f, quorum) {
            Choice::NotSound => return None,
            c => choices.push((cid, c)),
        }
    }
    let last_kept = choices
        .iter()
        .rposition(|(_, c)| matches!(c, Choice::Keep(_)));
    let empty = wire::Batch::new(Vec::new()).digest();
    let values = match last_kept {
        None => Vec::new(),
        Some(i) => choices[..=i]
            .iter()
            .map(|(cid, c)| match c {
                Choice::Keep(d) => (*cid, *d),
                _ => (*cid, empty),
            })
            .collect(),
    };
    Some(SyncPlan { base, values })
}

fn choose(votes: &[Vote<'_>], f: usize, quorum: usize) -> Choice {
    // Only the replicas whose vote is known count, towards any threshold.
    let known: Vec<Option<&OpenVote>> = votes
        .iter()
        .filter_map(|v| match v {
            Vote::Open(o) => Some(*o),
            Vote::Unknown => None,
        })
        .collect();
    let accepted = |v: &Option<&OpenVote>| v.and_then(|v| v.accepted);
    let candidates: BTreeSet<(Regency, Digest)> = known.iter().filter_map(accepted).collect();
    // Highest regency first: if several bind, the newest is kept.
    for &(ts, d) in candidates.iter().rev() {
        let quorum_highest = known
            .iter()
            .filter(|v| match accepted(v) {
                None => true,
                Some((t, x)) => t < ts || (t == ts && x == d),
            })
            .count()
            >= quorum;
        let certified = known
            .iter()
            .filter(|v| v.is_some_and(|v| v.written.iter().any(|&(t, x)| t >= ts && x == d)))
            .count()
            > f;
        if quorum_highest && certified {
            return Choice::Keep(d);
        }
    }
    if known.iter().filter(|v| accepted(v).is_none()).count() >= quorum {
        Choice::Free
    } else {
        Choice::NotSound
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::{DecisionProof, ReplicaId, Signature};

    const F: usize = 1;
    const Q: usize = 3;

    fn d(x: u8) -> Digest {
        Digest([x; 32])
    }

    fn sd(r: u16, last: Cid, open: Vec<OpenVote>) -> StopData {
        StopData {
            regency: 1,
            replica: ReplicaId(r),
            last_decided: last,
            last_decided_proof: (last > 0).then(|| DecisionProof {
                cid: last,
                digest: d(99),
                accepts: vec![],
            }),
            open,
            recent: vec![],
            signature: Signature::PENDING,
        }
    }

    fn proof(cid: Cid, digest: Digest) -> DecisionProof {
        DecisionProof {
            cid,
            digest,
            accepts: vec![],
        }
    }

    fn vote(
        cid: Cid,
        accepted: Option<(Regency, Digest)>,
        written: Vec<(Regency, Digest)>,
    ) -> OpenVote {
        OpenVote {
            cid,
            accepted,
            written,
            decided: None,
        }
    }

    #[test]
    fn the_plan_starts_after_the_f_plus_1_th_highest_proven_decision() {
        // 7 is proven by one replica only; 6 by two (one of them correct).
        let s = vec![sd(0, 5, vec![]), sd(1, 7, vec![]), sd(2, 6, vec![])];
        assert_eq!(
            plan(&s, F, Q, 64),
            Some(SyncPlan {
                base: 6,
                values: vec![(7, d(99))]
            })
        );
    }

    #[test]
    fn a_proven_last_decided_that_skips_an_undecided_cid_does_not_halt_the_cluster() {
        // Pipelining: cid 7 was decided, cid 6 never was. A Byzantine
        // replica reports 7 as its last decision, with the real proof. The
        // plan must still give cid 6 a value (here the no-op), or delivery
        // in cid order stops for good.
        let liar = sd(3, 7, vec![]);
        let s = vec![
            sd(0, 5, vec![vote(6, None, vec![])]),
            sd(1, 5, vec![vote(6, None, vec![])]),
            sd(2, 5, vec![]),
            liar,
        ];
        let empty = wire::Batch::new(vec![]).digest();
        assert_eq!(
            plan(&s, F, Q, 64),
            Some(SyncPlan {
                base: 5,
                values: vec![(6, empty), (7, d(99))]
            })
        );
    }

    #[test]
    fn a_replica_ahead_shows_the_proofs_of_its_recent_decisions() {
        let mut ahead = sd(0, 10, vec![]);
        ahead.recent = (7..10).map(|c| proof(c, d(c as u8))).collect();
        let s = vec![ahead, sd(1, 6, vec![]), sd(2, 6, vec![])];
        assert_eq!(
            plan(&s, F, Q, 64).unwrap().values,
            vec![(7, d(7)), (8, d(8)), (9, d(9)), (10, d(99))]
        );
    }

    #[test]
    fn a_replica_ahead_without_proofs_is_not_counted_as_having_accepted_nothing() {
        // Replica 0 delivered cid 6 (it is at 10) but shows no proof of it.
        // Counting it as "accepted nothing" would make cid 6 look free with
        // the two others, and a new value could be decided there.
        let s = vec![
            sd(0, 10, vec![]),
            sd(1, 5, vec![vote(6, None, vec![])]),
            sd(2, 5, vec![vote(6, None, vec![])]),
        ];
        assert_eq!(plan(&s, F, Q, 64), None, "not sound: wait for more");
    }

    #[test]
    fn certified_value_counts_writes_at_or_after_the_timestamp() {
        // v accepted at regency 1 by replica 0; replicas 1 and 2 wrote v at
        // regency 2 (a later SYNC kept it) and accepted nothing since. As in
        // BFT-SMaRt's certifiedValue, writes at ts or later certify (1, v).
        let s = vec![
            sd(0, 0, vec![vote(1, Some((1, d(1))), vec![(1, d(1))])]),
            sd(1, 0, vec![vote(1, None, vec![(2, d(1))])]),
            sd(2, 0, vec![vote(1, None, vec![(2, d(1))])]),
        ];
        assert_eq!(plan(&s, F, Q, 64).unwrap().values, vec![(1, d(1))]);
    }

    #[test]
    fn an_unproven_last_decided_claim_is_ignored() {
        let mut liar = sd(3, 0, vec![]);
        liar.last_decided = 1000;
        let s = vec![sd(0, 5, vec![]), sd(1, 5, vec![]), liar];
        assert_eq!(plan(&s, F, Q, 64).unwrap().base, 5);
        // Even f+1 of them never move the base: the claims leave their
        // votes on cids 1..=5 unknown, so the leader waits for more
        // STOPDATAs rather than start anywhere near 1000.
        let mut liar2 = sd(2, 0, vec![]);
        liar2.last_decided = 1000;
        let s = vec![sd(0, 5, vec![]), liar2, s[2].clone()];
        assert_eq!(plan(&s, F, Q, 64), None);
    }

    #[test]
    fn a_value_accepted_by_a_quorum_is_kept() {
        // v was accepted at regency 0 by replicas 0,1,2 (so possibly decided).
        let v = |r| sd(r, 0, vec![vote(1, Some((0, d(1))), vec![(0, d(1))])]);
        let s = vec![v(0), v(1), v(2)];
        assert_eq!(plan(&s, F, Q, 64).unwrap().values, vec![(1, d(1))]);
    }

    #[test]
    fn a_value_written_by_more_than_f_and_accepted_by_one_is_kept() {
        // One replica accepted v; two others wrote it but accepted nothing.
        let s = vec![
            sd(0, 0, vec![vote(1, Some((0, d(1))), vec![(0, d(1))])]),
            sd(1, 0, vec![vote(1, None, vec![(0, d(1))])]),
            sd(2, 0, vec![vote(1, None, vec![])]),
        ];
        assert_eq!(plan(&s, F, Q, 64).unwrap().values, vec![(1, d(1))]);
    }

    #[test]
    fn a_value_only_one_replica_claims_is_not_certified() {
        // A Byzantine replica claims to have accepted v; nobody else wrote it.
        let s = vec![
            sd(0, 0, vec![vote(1, Some((0, d(7))), vec![(0, d(7))])]),
            sd(1, 0, vec![vote(1, None, vec![])]),
            sd(2, 0, vec![vote(1, None, vec![])]),
            sd(3, 0, vec![vote(1, None, vec![])]),
        ];
        // Not bound (certified needs > f writers); unbound (3 accepted nothing).
        assert_eq!(plan(&s, F, Q, 64).unwrap().values, vec![]);
    }

    #[test]
    fn the_newest_accepted_value_wins_over_an_older_one() {
        // v accepted at regency 0 by one replica; w written and accepted at
        // regency 1 by the others (the regency-1 sync chose w).
        let s = vec![
            sd(0, 0, vec![vote(1, Some((0, d(1))), vec![(0, d(1))])]),
            sd(
                1,
                0,
                vec![vote(1, Some((1, d(2))), vec![(0, d(1)), (1, d(2))])],
            ),
            sd(2, 0, vec![vote(1, Some((1, d(2))), vec![(1, d(2))])]),
        ];
        assert_eq!(plan(&s, F, Q, 64).unwrap().values, vec![(1, d(2))]);
    }

    #[test]
    fn an_unsound_set_waits_for_more_stopdata() {
        // Two replicas accepted different values at the same regency
        // (equivocating leader); with three STOPDATAs neither binds and only
        // one accepted nothing.
        let s = vec![
            sd(0, 0, vec![vote(1, Some((0, d(1))), vec![(0, d(1))])]),
            sd(1, 0, vec![vote(1, Some((0, d(2))), vec![(0, d(2))])]),
            sd(2, 0, vec![vote(1, None, vec![])]),
        ];
        assert_eq!(plan(&s, F, Q, 64), None);
    }

    #[test]
    fn a_decision_proof_settles_a_cid_and_gaps_become_no_ops() {
        let mut decided = vote(3, Some((0, d(3))), vec![(0, d(3))]);
        decided.decided = Some(DecisionProof {
            cid: 3,
            digest: d(3),
            accepts: vec![],
        });
        let s = vec![
            sd(0, 0, vec![vote(1, None, vec![]), decided]),
            sd(1, 0, vec![]),
            sd(2, 0, vec![]),
        ];
        let empty = wire::Batch::new(vec![]).digest();
        assert_eq!(
            plan(&s, F, Q, 64).unwrap().values,
            vec![(1, empty), (2, empty), (3, d(3))]
        );
    }

    #[test]
    fn the_window_bounds_the_plan() {
        let s = vec![
            sd(0, 0, vec![vote(100, Some((0, d(1))), vec![(0, d(1))])]),
            sd(1, 0, vec![]),
            sd(2, 0, vec![]),
        ];
        assert_eq!(plan(&s, F, Q, 10).unwrap().values, vec![]);
    }
}
