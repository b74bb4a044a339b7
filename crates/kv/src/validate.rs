//! Static request checks, as etcd's gRPC layer does them before a request
//! is proposed (`server/etcdserver/api/v3rpc/key.go`: `checkRangeRequest`,
//! `checkPutRequest`, `checkDeleteRequest`, `checkTxnRequest`,
//! `checkIntervals`). They depend only on the request, never on the state,
//! so every replica reaches the same verdict.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use crate::error::KvError;
use crate::pb::bftdkv::{command::Op, Command};
use crate::pb::etcdserverpb::{
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

/// Checks `cmd` the way etcd's gRPC handlers check the matching request.
/// `max_txn_ops` is etcd's `--max-txn-ops` (default 128).
pub(crate) fn check_command(cmd: &Command, max_txn_ops: usize) -> Result<(), KvError> {
    match &cmd.op {
        None => Err(KvError::EmptyCommand),
        Some(Op::Range(r)) => check_range(r),
        Some(Op::Put(p)) => check_put(p),
        Some(Op::DeleteRange(d)) => check_delete(d),
        Some(Op::Txn(t)) => check_txn_all(t, max_txn_ops),
        Some(Op::Compaction(_))
        | Some(Op::LeaseGrant(_))
        | Some(Op::LeaseRevoke(_))
        | Some(Op::LeaseRenew(_))
        | Some(Op::LeaseExpire(_))
        | Some(Op::Alarm(_))
        | Some(Op::AuthEnable(_))
        | Some(Op::AuthDisable(_))
        | Some(Op::UserAdd(_))
        | Some(Op::UserDelete(_))
        | Some(Op::UserChangePassword(_))
        | Some(Op::UserGrantRole(_))
        | Some(Op::UserRevokeRole(_))
        | Some(Op::RoleAdd(_))
        | Some(Op::RoleDelete(_))
        | Some(Op::RoleGrantPermission(_))
        | Some(Op::RoleRevokePermission(_)) => Ok(()),
    }
}

/// etcd's `kvServer.Txn` checks: op counts and keys first, then forbidden
/// put/delete overlaps in each branch.
pub(crate) fn check_txn_all(t: &TxnRequest, max_txn_ops: usize) -> Result<(), KvError> {
    let max = i64::try_from(max_txn_ops).unwrap_or(i64::MAX);
    check_txn(t, max)?;
    check_intervals(&t.success)?;
    check_intervals(&t.failure)?;
    Ok(())
}

pub(crate) fn check_range(r: &RangeRequest) -> Result<(), KvError> {
    if r.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if SortOrder::try_from(r.sort_order).is_err() || SortTarget::try_from(r.sort_target).is_err() {
        return Err(KvError::InvalidSortOption);
    }
    Ok(())
}

fn check_put(p: &PutRequest) -> Result<(), KvError> {
    if p.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(KvError::ValueProvided);
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(KvError::LeaseProvided);
    }
    Ok(())
}

fn check_delete(d: &DeleteRangeRequest) -> Result<(), KvError> {
    if d.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    Ok(())
}

/// etcd's `checkTxnRequest`: a level may hold at most `max_txn_ops`
/// compares, success ops and failure ops each; a nested txn gets what its
/// parent level left (`max_txn_ops - opc`), which also bounds the nesting
/// depth (every nesting level costs at least one op).
fn check_txn(t: &TxnRequest, max_txn_ops: i64) -> Result<(), KvError> {
    let opc = t.compare.len().max(t.success.len()).max(t.failure.len());
    let opc = i64::try_from(opc).unwrap_or(i64::MAX);
    if opc > max_txn_ops {
        return Err(KvError::TooManyOps);
    }
    if t.compare.iter().any(|c| c.key.is_empty()) {
        return Err(KvError::EmptyKey);
    }
    for op in t.success.iter().chain(&t.failure) {
        check_request_op(op, max_txn_ops - opc)?;
    }
    Ok(())
}

fn check_request_op(op: &RequestOp, max_txn_ops: i64) -> Result<(), KvError> {
    match &op.request {
        Some(Request::RequestRange(r)) => check_range(r),
        Some(Request::RequestPut(p)) => check_put(p),
        Some(Request::RequestDeleteRange(d)) => check_delete(d),
        Some(Request::RequestTxn(t)) => check_txn(t, max_txn_ops),
        // etcd: "empty op / nil entry" -> ErrGRPCKeyNotFound.
        None => Err(KvError::KeyNotFound),
    }
}

/// The keys deleted by one branch, as a union of disjoint half-open
/// intervals `[begin, end)` (map begin -> end, `begin < end`).
///
/// etcd keeps the raw intervals in an interval tree and asks whether any
/// contains a put key; a union of them answers the same. A delete of one key
/// is `[key, key + "\0")`. A delete whose `range_end` is `"\0"` (all keys
/// from `key` on) becomes etcd's interval `[key, "\0")`, which is empty, so,
/// as in etcd, it never conflicts with a put.
#[derive(Default)]
struct DeleteSet(BTreeMap<Vec<u8>, Vec<u8>>);

impl DeleteSet {
    fn insert(&mut self, begin: &[u8], end: &[u8]) {
        if end <= begin {
            return;
        }
        let mut begin = begin.to_vec();
        let mut end = end.to_vec();
        // Merge with the interval starting at or before `begin`.
        let before = self
            .0
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(begin.as_slice())))
            .next_back()
            .map(|(b, e)| (b.clone(), e.clone()));
        if let Some((b, e)) = before {
            if e >= begin {
                self.0.remove(&b);
                begin = b;
                end = end.max(e);
            }
        }
        // Merge with every interval starting inside [begin, end].
        loop {
            let next = self
                .0
                .range::<[u8], _>((Bound::Included(begin.as_slice()), Bound::Unbounded))
                .next()
                .map(|(b, e)| (b.clone(), e.clone()));
            match next {
                Some((b, e)) if b <= end => {
                    self.0.remove(&b);
                    end = end.max(e);
                }
                _ => break,
            }
        }
        self.0.insert(begin, end);
    }

    fn insert_point(&mut self, key: &[u8]) {
        let mut end = key.to_vec();
        end.push(0);
        self.insert(key, &end);
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.0
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .is_some_and(|(_, e)| e.as_slice() > key)
    }

    fn union(&mut self, other: &DeleteSet) {
        for (b, e) in &other.0 {
            self.insert(b, e);
        }
    }
}

/// etcd's `checkIntervals`: within one list of ops (and the txns nested in
/// it), no key may be put twice and no put key may fall in a deleted range.
/// The success and failure branches of one nested txn may put the same key
/// (only one of them runs). Returns the branch's put keys and deleted
/// ranges for the level above. Like etcd, a put in an earlier nested txn and
/// a delete in a later nested txn of the same level are not compared.
fn check_intervals(reqs: &[RequestOp]) -> Result<(BTreeSet<Vec<u8>>, DeleteSet), KvError> {
    let mut dels = DeleteSet::default();
    for op in reqs {
        if let Some(Request::RequestDeleteRange(d)) = &op.request {
            if d.range_end.is_empty() {
                dels.insert_point(&d.key);
            } else {
                dels.insert(&d.key, &d.range_end);
            }
        }
    }

    let mut puts: BTreeSet<Vec<u8>> = BTreeSet::new();
    for op in reqs {
        let Some(Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || dels.contains(k) {
                return Err(KvError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            if puts.contains(k) && !puts_then.contains(k) {
                return Err(KvError::DuplicateKey);
            }
            if dels.contains(k) {
                return Err(KvError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.union(&dels_then);
        dels.union(&dels_else);
    }

    for op in reqs {
        let Some(Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || dels.contains(&p.key) {
            return Err(KvError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_set_merges_and_answers_membership() {
        let mut s = DeleteSet::default();
        s.insert(b"b", b"d");
        s.insert(b"f", b"h");
        s.insert(b"c", b"g"); // bridges both
        assert_eq!(s.0.len(), 1);
        assert!(s.contains(b"b"));
        assert!(s.contains(b"gz"));
        assert!(!s.contains(b"h"));
        assert!(!s.contains(b"a"));
        s.insert_point(b"x");
        assert!(s.contains(b"x"));
        assert!(!s.contains(b"x\0"));
        assert!(!s.contains(b"w"));
        s.insert(b"q", b"\0"); // etcd's empty interval
        assert!(!s.contains(b"q"));
        assert!(!s.contains(b"r"));
    }
}
