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
//!   (*quorumhighest*), and more than f of S wrote `(ts, v)`
//!   (*certifiedvalue*): `v` may have been decided and must be kept;
//! - `unbound`: at least a Byzantine quorum of S accepted nothing: nothing
//!   can have been decided, the leader chooses;
//! - a decision proof in S settles the cid outright;
//! - otherwise S is not yet *sound*: the leader waits for more STOPDATAs.
//!
//! The plan starts after `base`, the highest last-decided cid proven in S
//! (every correct replica holds the proof of its last decision), and ends
//! at the highest cid whose value must be kept; free cids below that get
//! the empty batch, a no-op.

use std::collections::BTreeSet;

use wire::{Cid, Digest, OpenVote, Regency, StopData};

/// The values the new regency keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPlan {
    /// Highest cid known decided from S (with a proof).
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

/// Computes the plan from `stopdata` (distinct replicas, one regency,
/// signatures and proofs already verified), for a cluster with `f` faults
/// and Byzantine quorum `quorum`; considers at most `window` cids above the
/// base. `None` if S is not sound (wait for more STOPDATAs).
pub fn plan(stopdata: &[StopData], f: usize, quorum: usize, window: usize) -> Option<SyncPlan> {
    let base = stopdata
        .iter()
        .filter(|s| {
            s.last_decided_proof
                .as_ref()
                .is_some_and(|p| p.cid == s.last_decided)
        })
        .map(|s| s.last_decided)
        .max()
        .unwrap_or(0);
    let top = stopdata
        .iter()
        .flat_map(|s| s.open.iter().map(|o| o.cid))
        .filter(|&c| c > base)
        .max()
        .unwrap_or(base)
        .min(base + window as u64);
    let mut choices = Vec::new();
    for cid in base + 1..=top {
        let votes: Vec<Option<&OpenVote>> = stopdata
            .iter()
            .map(|s| s.open.iter().find(|o| o.cid == cid))
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

fn choose(votes: &[Option<&OpenVote>], f: usize, quorum: usize) -> Choice {
    // (The decoder refuses a proof filed under another cid; checked again
    // here because a misfiled proof would decide the wrong value.)
    if let Some(p) = votes
        .iter()
        .flatten()
        .find_map(|v| v.decided.as_ref().filter(|p| p.cid == v.cid))
    {
        return Choice::Keep(p.digest);
    }
    let accepted = |v: &Option<&OpenVote>| v.and_then(|v| v.accepted);
    let candidates: BTreeSet<(Regency, Digest)> = votes.iter().filter_map(accepted).collect();
    // Highest regency first: if several bind, the newest is kept.
    for &(ts, d) in candidates.iter().rev() {
        let quorum_highest = votes
            .iter()
            .filter(|v| match accepted(v) {
                None => true,
                Some((t, x)) => t < ts || (t == ts && x == d),
            })
            .count()
            >= quorum;
        let certified = votes
            .iter()
            .filter(|v| v.is_some_and(|v| v.written.contains(&(ts, d))))
            .count()
            > f;
        if quorum_highest && certified {
            return Choice::Keep(d);
        }
    }
    if votes.iter().filter(|v| accepted(v).is_none()).count() >= quorum {
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
            signature: Signature::PENDING,
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
    fn nothing_open_means_an_empty_plan_after_the_highest_proven_decision() {
        let s = vec![sd(0, 5, vec![]), sd(1, 7, vec![]), sd(2, 6, vec![])];
        assert_eq!(
            plan(&s, F, Q, 64),
            Some(SyncPlan {
                base: 7,
                values: vec![]
            })
        );
    }

    #[test]
    fn an_unproven_last_decided_claim_is_ignored() {
        let mut liar = sd(3, 0, vec![]);
        liar.last_decided = 1000;
        let s = vec![sd(0, 5, vec![]), sd(1, 5, vec![]), liar];
        assert_eq!(plan(&s, F, Q, 64).unwrap().base, 5);
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
