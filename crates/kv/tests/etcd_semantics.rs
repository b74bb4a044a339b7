//! Scenario tests of the store against etcd v3.4/v3.5 behaviour, named
//! after the behaviour they check. Error strings are etcd's, verbatim.

use kv::pb::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    response_op, CompactionRequest, Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
};
use kv::pb::mvccpb::KeyValue;
use kv::{Command, KvError, Response, Store};

// ---- helpers -------------------------------------------------------------

fn put_req(k: &str, v: &str) -> PutRequest {
    PutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    }
}

fn put(s: &mut Store, k: &str, v: &str) -> PutResponse {
    match s.apply(&put_req(k, v).into()).expect("put") {
        Response::Put(r) => r,
        other => panic!("not a put response: {other:?}"),
    }
}

fn try_put(s: &mut Store, p: PutRequest) -> Result<PutResponse, KvError> {
    s.apply(&p.into()).map(|r| match r {
        Response::Put(r) => r,
        other => panic!("not a put response: {other:?}"),
    })
}

fn del_req(k: &str, end: &str) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: k.into(),
        range_end: end.into(),
        prev_kv: false,
    }
}

fn del(s: &mut Store, k: &str, end: &str) -> DeleteRangeResponse {
    match s.apply(&del_req(k, end).into()).expect("delete") {
        Response::DeleteRange(r) => r,
        other => panic!("not a delete response: {other:?}"),
    }
}

fn range_req(k: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: k.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

fn get(s: &Store, r: RangeRequest) -> Result<RangeResponse, KvError> {
    s.range(&r)
}

fn keys(r: &RangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

fn values(r: &RangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.value.clone()).unwrap())
        .collect()
}

fn one(s: &Store, k: &str) -> Option<KeyValue> {
    let r = get(s, range_req(k, "")).unwrap();
    assert!(r.kvs.len() <= 1);
    r.kvs.into_iter().next()
}

fn op_put(k: &str, v: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(put_req(k, v))),
    }
}
fn op_del(k: &str, end: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestDeleteRange(del_req(k, end))),
    }
}
fn op_range(k: &str, end: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(range_req(k, end))),
    }
}
fn op_txn(t: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestTxn(t)),
    }
}

fn cmp(k: &str, target: CompareTarget, result: CompareResult, u: TargetUnion) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: k.into(),
        range_end: Vec::new(),
        target_union: Some(u),
    }
}

fn txn(s: &mut Store, t: TxnRequest) -> Result<TxnResponse, KvError> {
    s.apply(&t.into()).map(|r| match r {
        Response::Txn(r) => r,
        other => panic!("not a txn response: {other:?}"),
    })
}

fn rev(h: &Option<kv::pb::etcdserverpb::ResponseHeader>) -> i64 {
    h.as_ref().expect("header").revision
}

fn range_resp(op: &kv::pb::etcdserverpb::ResponseOp) -> &RangeResponse {
    match &op.response {
        Some(response_op::Response::ResponseRange(r)) => r,
        other => panic!("not a range: {other:?}"),
    }
}
fn put_resp(op: &kv::pb::etcdserverpb::ResponseOp) -> &PutResponse {
    match &op.response {
        Some(response_op::Response::ResponsePut(r)) => r,
        other => panic!("not a put: {other:?}"),
    }
}
fn del_resp(op: &kv::pb::etcdserverpb::ResponseOp) -> &DeleteRangeResponse {
    match &op.response {
        Some(response_op::Response::ResponseDeleteRange(r)) => r,
        other => panic!("not a delete: {other:?}"),
    }
}
fn txn_resp(op: &kv::pb::etcdserverpb::ResponseOp) -> &TxnResponse {
    match &op.response {
        Some(response_op::Response::ResponseTxn(r)) => r,
        other => panic!("not a txn: {other:?}"),
    }
}

/// Applies a command that must fail, and checks it changed nothing.
fn assert_refused(s: &mut Store, cmd: Command, want: KvError) {
    let before = s.snapshot();
    assert_eq!(s.apply(&cmd), Err(want));
    assert_eq!(s.snapshot(), before, "a refused command changed the store");
}

// ---- revisions and puts ------------------------------------------------------

#[test]
fn empty_store_is_at_revision_1_and_never_compacted() {
    let s = Store::new();
    assert_eq!(s.revision(), 1);
    assert_eq!(s.compact_revision(), -1);
    assert_eq!(s.key_count(), 0);
    let r = get(&s, range_req("a", "\0")).unwrap();
    assert_eq!(rev(&r.header), 1);
    assert!(r.kvs.is_empty());
    assert_eq!(r.count, 0);
}

#[test]
fn put_creates_key_at_next_revision_with_version_1() {
    let mut s = Store::new();
    let r = put(&mut s, "foo", "bar");
    assert_eq!(rev(&r.header), 2);
    assert_eq!(s.revision(), 2);
    assert_eq!(r.prev_kv, None);
    assert_eq!(
        one(&s, "foo").unwrap(),
        KeyValue {
            key: b"foo".to_vec(),
            create_revision: 2,
            mod_revision: 2,
            version: 1,
            value: b"bar".to_vec(),
            lease: 0
        }
    );
    assert_eq!(s.key_count(), 1);
}

#[test]
fn put_twice_bumps_version_keeps_create_revision() {
    let mut s = Store::new();
    put(&mut s, "foo", "a");
    put(&mut s, "other", "x");
    let r = put(&mut s, "foo", "b");
    assert_eq!(rev(&r.header), 4);
    let kv = one(&s, "foo").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 4, 2));
    assert_eq!(kv.value, b"b");
    assert_eq!(s.key_count(), 2);
}

#[test]
fn put_after_delete_recreates_key_with_version_1() {
    let mut s = Store::new();
    put(&mut s, "foo", "a");
    put(&mut s, "foo", "b");
    del(&mut s, "foo", "");
    assert_eq!(one(&s, "foo"), None);
    put(&mut s, "foo", "c");
    let kv = one(&s, "foo").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
}

#[test]
fn put_prev_kv_returns_the_pair_before_the_put() {
    let mut s = Store::new();
    let first = try_put(
        &mut s,
        PutRequest {
            prev_kv: true,
            ..put_req("k", "v1")
        },
    )
    .unwrap();
    assert_eq!(first.prev_kv, None);
    let second = try_put(
        &mut s,
        PutRequest {
            prev_kv: true,
            ..put_req("k", "v2")
        },
    )
    .unwrap();
    let prev = second.prev_kv.unwrap();
    assert_eq!(
        (prev.value.as_slice(), prev.version, prev.mod_revision),
        (&b"v1"[..], 1, 2)
    );
}

#[test]
fn put_ignore_value_keeps_the_current_value() {
    let mut s = Store::new();
    put(&mut s, "k", "kept");
    let r = try_put(
        &mut s,
        PutRequest {
            key: b"k".to_vec(),
            ignore_value: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(rev(&r.header), 3);
    let kv = one(&s, "k").unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.version, kv.mod_revision),
        (&b"kept"[..], 2, 3)
    );
}

#[test]
fn put_ignore_value_on_missing_key_fails_with_key_not_found() {
    let mut s = Store::new();
    let cmd = PutRequest {
        key: b"nope".to_vec(),
        ignore_value: true,
        ..Default::default()
    };
    assert_refused(&mut s, cmd.into(), KvError::KeyNotFound);
    assert_eq!(
        KvError::KeyNotFound.to_string(),
        "etcdserver: key not found"
    );
    let cmd = PutRequest {
        key: b"nope".to_vec(),
        ignore_lease: true,
        ..Default::default()
    };
    assert_refused(&mut s, cmd.into(), KvError::KeyNotFound);
    assert_eq!(s.revision(), 1);
}

#[test]
fn put_ignore_value_with_a_value_fails_with_value_provided() {
    let mut s = Store::new();
    put(&mut s, "k", "v");
    let cmd = PutRequest {
        ignore_value: true,
        ..put_req("k", "x")
    };
    assert_refused(&mut s, cmd.clone().into(), KvError::ValueProvided);
    assert_eq!(s.validate(&cmd.into()), Err(KvError::ValueProvided));
    assert_eq!(
        KvError::ValueProvided.to_string(),
        "etcdserver: value is provided"
    );
}

#[test]
fn put_ignore_lease_with_a_lease_fails_with_lease_provided() {
    let mut s = Store::new();
    let cmd = PutRequest {
        ignore_lease: true,
        lease: 7,
        ..put_req("k", "v")
    };
    assert_refused(&mut s, cmd.into(), KvError::LeaseProvided);
    assert_eq!(
        KvError::LeaseProvided.to_string(),
        "etcdserver: lease is provided"
    );
}

#[test]
fn put_with_a_lease_fails_with_lease_not_found() {
    let mut s = Store::new();
    let cmd = PutRequest {
        lease: 42,
        ..put_req("k", "v")
    };
    assert_refused(&mut s, cmd.into(), KvError::LeaseNotFound);
    assert_eq!(
        KvError::LeaseNotFound.to_string(),
        "etcdserver: requested lease not found"
    );
    assert_eq!(KvError::LeaseNotFound.grpc_code(), 5);
}

#[test]
fn empty_key_fails_with_key_is_not_provided() {
    let mut s = Store::new();
    assert_refused(&mut s, put_req("", "v").into(), KvError::EmptyKey);
    assert_refused(&mut s, del_req("", "").into(), KvError::EmptyKey);
    assert_refused(&mut s, range_req("", "\0").into(), KvError::EmptyKey);
    assert_eq!(get(&s, range_req("", "")), Err(KvError::EmptyKey));
    let t = TxnRequest {
        compare: vec![Compare::default()],
        ..Default::default()
    };
    assert_refused(&mut s, t.into(), KvError::EmptyKey);
    assert_eq!(
        KvError::EmptyKey.to_string(),
        "etcdserver: key is not provided"
    );
    assert_eq!(KvError::EmptyKey.grpc_code(), 3);
}

#[test]
fn command_without_op_is_refused() {
    let mut s = Store::new();
    assert_refused(&mut s, Command::default(), KvError::EmptyCommand);
}

// ---- ranges --------------------------------------------------------------

fn abc_store() -> Store {
    let mut s = Store::new();
    for (k, v) in [
        ("a", "1"),
        ("ab", "2"),
        ("abc", "3"),
        ("b", "4"),
        ("c", "5"),
    ] {
        put(&mut s, k, v);
    }
    s
}

#[test]
fn range_selects_single_key_prefix_from_key_and_all() {
    let s = abc_store();
    assert_eq!(keys(&get(&s, range_req("ab", "")).unwrap()), ["ab"]);
    // etcdctl --prefix "a": range_end = "b".
    assert_eq!(
        keys(&get(&s, range_req("a", "b")).unwrap()),
        ["a", "ab", "abc"]
    );
    // --from-key: range_end "\0".
    assert_eq!(
        keys(&get(&s, range_req("ab", "\0")).unwrap()),
        ["ab", "abc", "b", "c"]
    );
    // key "\0" and range_end "\0": everything.
    assert_eq!(
        keys(&get(&s, range_req("\0", "\0")).unwrap()),
        ["a", "ab", "abc", "b", "c"]
    );
    // range_end <= key selects nothing.
    assert!(get(&s, range_req("b", "a")).unwrap().kvs.is_empty());
    assert!(get(&s, range_req("b", "b")).unwrap().kvs.is_empty());
    assert!(get(&s, range_req("zz", "")).unwrap().kvs.is_empty());
}

#[test]
fn range_limit_sets_more_and_count_is_the_total() {
    let s = abc_store();
    let r = get(
        &s,
        RangeRequest {
            limit: 2,
            ..range_req("a", "\0")
        },
    )
    .unwrap();
    assert_eq!(keys(&r), ["a", "ab"]);
    assert!(r.more);
    assert_eq!(r.count, 5);
    let r = get(
        &s,
        RangeRequest {
            limit: 5,
            ..range_req("a", "\0")
        },
    )
    .unwrap();
    assert_eq!(r.kvs.len(), 5);
    assert!(!r.more);
    let r = get(
        &s,
        RangeRequest {
            limit: -3,
            ..range_req("a", "\0")
        },
    )
    .unwrap();
    assert_eq!(r.kvs.len(), 5, "a negative limit is no limit");
    let r = get(
        &s,
        RangeRequest {
            limit: i64::MAX,
            ..range_req("a", "\0")
        },
    )
    .unwrap();
    assert_eq!((r.kvs.len(), r.more), (5, false));
}

#[test]
fn range_at_past_revision_returns_values_as_they_were() {
    let mut s = Store::new();
    put(&mut s, "k", "v1"); // 2
    put(&mut s, "k", "v2"); // 3
    del(&mut s, "k", ""); // 4
    put(&mut s, "j", "x"); // 5
    let at = |r: i64| {
        get(
            &s,
            RangeRequest {
                revision: r,
                ..range_req("\0", "\0")
            },
        )
        .unwrap()
    };
    assert!(at(1).kvs.is_empty());
    assert_eq!(values(&at(2)), ["v1"]);
    let kv3 = &at(3).kvs[0];
    assert_eq!(
        (kv3.version, kv3.create_revision, kv3.mod_revision),
        (2, 2, 3)
    );
    assert!(at(4).kvs.is_empty());
    assert_eq!(keys(&at(5)), ["j"]);
    // The header carries the current revision, not the one read.
    assert_eq!(rev(&at(2).header), 5);
    assert_eq!(at(0).kvs, at(5).kvs);
    assert_eq!(
        at(-7).kvs,
        at(5).kvs,
        "a negative revision reads the newest"
    );
}

#[test]
fn range_at_future_revision_fails_with_etcd_error() {
    let mut s = Store::new();
    put(&mut s, "k", "v");
    let r = get(
        &s,
        RangeRequest {
            revision: 3,
            ..range_req("k", "")
        },
    );
    assert_eq!(r, Err(KvError::FutureRevision));
    assert_eq!(
        KvError::FutureRevision.to_string(),
        "etcdserver: mvcc: required revision is a future revision"
    );
    assert_eq!(KvError::FutureRevision.grpc_code(), 11);
}

#[test]
fn range_at_compacted_revision_fails_with_etcd_error() {
    let mut s = Store::new();
    for i in 0..5 {
        put(&mut s, "k", &format!("v{i}")); // revisions 2..=6
    }
    s.compact(4).unwrap();
    let at = |r: i64| {
        get(
            &s,
            RangeRequest {
                revision: r,
                ..range_req("k", "")
            },
        )
    };
    assert_eq!(at(3), Err(KvError::Compacted));
    assert_eq!(
        KvError::Compacted.to_string(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    assert_eq!(KvError::Compacted.grpc_code(), 11);
    // At the compaction revision itself reads still work.
    assert_eq!(values(&at(4).unwrap()), ["v2"]);
    assert_eq!(values(&at(5).unwrap()), ["v3"]);
}

#[test]
fn range_sorts_by_each_target_in_both_orders() {
    let mut s = Store::new();
    put(&mut s, "c", "1"); // create 2
    put(&mut s, "a", "3"); // create 3
    put(&mut s, "b", "2"); // create 4
    put(&mut s, "c", "0"); // c: version 2, mod 5
    let sorted = |order: SortOrder, target: SortTarget| {
        keys(
            &get(
                &s,
                RangeRequest {
                    sort_order: order as i32,
                    sort_target: target as i32,
                    ..range_req("\0", "\0")
                },
            )
            .unwrap(),
        )
    };
    use SortOrder::*;
    use SortTarget::*;
    assert_eq!(sorted(None, Key), ["a", "b", "c"]);
    assert_eq!(sorted(Descend, Key), ["c", "b", "a"]);
    assert_eq!(sorted(Ascend, Create), ["c", "a", "b"]);
    assert_eq!(sorted(Descend, Create), ["b", "a", "c"]);
    assert_eq!(sorted(Descend, Mod), ["c", "b", "a"]);
    assert_eq!(sorted(Ascend, Value), ["c", "b", "a"]);
    // Ties keep key order, both ways.
    assert_eq!(sorted(Ascend, Version), ["a", "b", "c"]);
    assert_eq!(sorted(Descend, Version), ["c", "a", "b"]);
    // A non-KEY target with order NONE sorts ascending.
    assert_eq!(sorted(None, Value), ["c", "b", "a"]);
}

#[test]
fn range_sort_with_limit_sorts_everything_before_cutting() {
    let mut s = Store::new();
    put(&mut s, "a", "3");
    put(&mut s, "b", "2");
    put(&mut s, "c", "1");
    let r = get(
        &s,
        RangeRequest {
            limit: 1,
            sort_order: SortOrder::Ascend as i32,
            sort_target: SortTarget::Value as i32,
            ..range_req("\0", "\0")
        },
    )
    .unwrap();
    assert_eq!(
        (keys(&r), r.more, r.count),
        (vec!["c".to_string()], true, 3)
    );
    // etcd quirk: a non-KEY target with order NONE fetches only limit+1
    // keys (in key order) before sorting them.
    let r = get(
        &s,
        RangeRequest {
            limit: 1,
            sort_target: SortTarget::Value as i32,
            ..range_req("\0", "\0")
        },
    )
    .unwrap();
    assert_eq!((keys(&r), r.more), (vec!["b".to_string()], true));
}

#[test]
fn range_rejects_unknown_sort_options() {
    let s = abc_store();
    for (order, target) in [(3, 0), (0, 5), (-1, 0)] {
        let r = get(
            &s,
            RangeRequest {
                sort_order: order,
                sort_target: target,
                ..range_req("a", "")
            },
        );
        assert_eq!(r, Err(KvError::InvalidSortOption));
    }
    assert_eq!(
        KvError::InvalidSortOption.to_string(),
        "etcdserver: invalid sort option"
    );
}

#[test]
fn range_keys_only_drops_values_and_count_only_drops_kvs() {
    let s = abc_store();
    let r = get(
        &s,
        RangeRequest {
            keys_only: true,
            ..range_req("a", "b")
        },
    )
    .unwrap();
    assert_eq!(keys(&r), ["a", "ab", "abc"]);
    assert!(r
        .kvs
        .iter()
        .all(|kv| kv.value.is_empty() && kv.version == 1));
    let r = get(
        &s,
        RangeRequest {
            count_only: true,
            limit: 1,
            ..range_req("a", "b")
        },
    )
    .unwrap();
    assert!(r.kvs.is_empty());
    assert_eq!((r.count, r.more), (3, false));
    assert_eq!(rev(&r.header), 6);
}

#[test]
fn range_filters_by_mod_and_create_revision_but_count_ignores_filters() {
    let mut s = Store::new();
    put(&mut s, "a", "1"); // 2
    put(&mut s, "b", "1"); // 3
    put(&mut s, "c", "1"); // 4
    put(&mut s, "a", "2"); // 5: a create 2 mod 5
    let f = |min_mod, max_mod, min_create, max_create| {
        let r = get(
            &s,
            RangeRequest {
                min_mod_revision: min_mod,
                max_mod_revision: max_mod,
                min_create_revision: min_create,
                max_create_revision: max_create,
                ..range_req("\0", "\0")
            },
        )
        .unwrap();
        assert_eq!(r.count, 3);
        keys(&r)
    };
    assert_eq!(f(4, 0, 0, 0), ["a", "c"]);
    assert_eq!(f(0, 3, 0, 0), ["b"]);
    assert_eq!(f(0, 0, 3, 0), ["b", "c"]);
    assert_eq!(f(0, 0, 0, 2), ["a"]);
    assert_eq!(f(3, 4, 0, 0), ["b", "c"]);
}

// ---- deletes ------------------------------------------------------------

#[test]
fn delete_bumps_revision_once_and_reports_deleted_count() {
    let mut s = abc_store(); // revision 6
    let r = del(&mut s, "a", "b");
    assert_eq!(r.deleted, 3);
    assert_eq!(rev(&r.header), 7);
    assert_eq!(s.revision(), 7);
    assert_eq!(s.key_count(), 2);
    assert_eq!(keys(&get(&s, range_req("\0", "\0")).unwrap()), ["b", "c"]);
}

#[test]
fn delete_of_missing_key_does_not_bump_revision() {
    let mut s = abc_store();
    let r = del(&mut s, "zzz", "");
    assert_eq!(r.deleted, 0);
    assert_eq!(rev(&r.header), 6);
    assert_eq!(s.revision(), 6);
    let r = del(&mut s, "x", "y");
    assert_eq!((r.deleted, rev(&r.header)), (0, 6));
}

#[test]
fn delete_prev_kv_returns_deleted_pairs() {
    let mut s = abc_store();
    let r = match s
        .apply(
            &DeleteRangeRequest {
                prev_kv: true,
                ..del_req("ab", "\0")
            }
            .into(),
        )
        .unwrap()
    {
        Response::DeleteRange(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(r.deleted, 4);
    let prev: Vec<_> = r.prev_kvs.iter().map(|kv| kv.value.clone()).collect();
    assert_eq!(
        prev,
        [b"2".to_vec(), b"3".to_vec(), b"4".to_vec(), b"5".to_vec()]
    );
}

// ---- transactions ------------------------------------------------------

#[test]
fn txn_writes_share_one_revision() {
    let mut s = Store::new();
    put(&mut s, "x", "0"); // 2
    let r = txn(
        &mut s,
        TxnRequest {
            success: vec![op_put("a", "1"), op_put("b", "2"), op_del("x", "")],
            ..Default::default()
        },
    )
    .unwrap();
    assert!(r.succeeded);
    assert_eq!(rev(&r.header), 3);
    assert_eq!(s.revision(), 3);
    for k in ["a", "b"] {
        let kv = one(&s, k).unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision), (3, 3));
    }
    assert_eq!(one(&s, "x"), None);
    assert_eq!(rev(&put_resp(&r.responses[0]).header), 3);
    assert_eq!(del_resp(&r.responses[2]).deleted, 1);
    assert_eq!(rev(&del_resp(&r.responses[2]).header), 3);
}

#[test]
fn txn_ops_see_earlier_writes() {
    let mut s = Store::new();
    put(&mut s, "a", "old"); // 2
    let r = txn(
        &mut s,
        TxnRequest {
            success: vec![
                op_range("a", ""),
                op_put("a", "new"),
                op_range("a", ""),
                op_put("b", "x"),
                op_range("\0", "\0"),
            ],
            ..Default::default()
        },
    )
    .unwrap();
    let before = range_resp(&r.responses[0]);
    assert_eq!(
        (values(before), rev(&before.header)),
        (vec!["old".to_string()], 2)
    );
    let after = range_resp(&r.responses[2]);
    assert_eq!(
        (values(after), rev(&after.header)),
        (vec!["new".to_string()], 3)
    );
    assert_eq!(after.kvs[0].version, 2);
    assert_eq!(keys(range_resp(&r.responses[4])), ["a", "b"]);
    assert_eq!(rev(&r.header), 3);
}

#[test]
fn txn_delete_header_is_the_old_revision_until_something_changed() {
    let mut s = Store::new();
    put(&mut s, "a", "1"); // 2
    let r = txn(
        &mut s,
        TxnRequest {
            success: vec![
                op_del("nothing", ""),
                op_put("a", "2"),
                op_del("nothing", ""),
            ],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(rev(&del_resp(&r.responses[0]).header), 2);
    assert_eq!(rev(&del_resp(&r.responses[2]).header), 3);
}

#[test]
fn txn_compares_missing_key_as_zero_but_value_compare_fails() {
    let mut s = Store::new();
    let run = |s: &mut Store, c: Compare| {
        txn(
            s,
            TxnRequest {
                compare: vec![c],
                ..Default::default()
            },
        )
        .unwrap()
        .succeeded
    };
    use CompareResult::*;
    use CompareTarget::*;
    assert!(run(
        &mut s,
        cmp("m", Version, Equal, TargetUnion::Version(0))
    ));
    assert!(run(
        &mut s,
        cmp("m", Create, Equal, TargetUnion::CreateRevision(0))
    ));
    assert!(run(
        &mut s,
        cmp("m", Mod, Less, TargetUnion::ModRevision(1))
    ));
    assert!(run(&mut s, cmp("m", Lease, Equal, TargetUnion::Lease(0))));
    assert!(!run(
        &mut s,
        cmp("m", Value, Equal, TargetUnion::Value(vec![]))
    ));
    assert!(!run(
        &mut s,
        cmp("m", Value, NotEqual, TargetUnion::Value(b"x".to_vec()))
    ));
    put(&mut s, "m", "v");
    assert!(run(
        &mut s,
        cmp("m", Value, Equal, TargetUnion::Value(b"v".to_vec()))
    ));
    assert!(run(
        &mut s,
        cmp("m", Value, Greater, TargetUnion::Value(b"a".to_vec()))
    ));
    assert!(run(
        &mut s,
        cmp("m", Version, Greater, TargetUnion::Version(0))
    ));
    assert!(run(
        &mut s,
        cmp("m", Mod, Equal, TargetUnion::ModRevision(2))
    ));
    // A target_union of the wrong kind compares against 0.
    assert!(run(
        &mut s,
        cmp("m", Version, Greater, TargetUnion::ModRevision(100))
    ));
}

#[test]
fn txn_compare_with_range_end_requires_every_key() {
    let mut s = abc_store(); // a ab abc b c, all version 1
    put(&mut s, "ab", "again"); // ab version 2
    let all = |s: &mut Store, end: &str, result: CompareResult, v: i64| {
        let c = Compare {
            range_end: end.into(),
            ..cmp("a", CompareTarget::Version, result, TargetUnion::Version(v))
        };
        txn(
            s,
            TxnRequest {
                compare: vec![c],
                ..Default::default()
            },
        )
        .unwrap()
        .succeeded
    };
    assert!(!all(&mut s, "b", CompareResult::Equal, 1));
    assert!(all(&mut s, "b", CompareResult::Greater, 0));
    assert!(all(&mut s, "ab", CompareResult::Equal, 1)); // only "a"
    assert!(all(&mut s, "\0", CompareResult::Less, 3));
}

#[test]
fn txn_runs_failure_branch_when_a_compare_fails() {
    let mut s = Store::new();
    put(&mut s, "k", "v");
    let r = txn(
        &mut s,
        TxnRequest {
            compare: vec![
                cmp(
                    "k",
                    CompareTarget::Version,
                    CompareResult::Equal,
                    TargetUnion::Version(1),
                ),
                cmp(
                    "k",
                    CompareTarget::Value,
                    CompareResult::Equal,
                    TargetUnion::Value(b"no".to_vec()),
                ),
            ],
            success: vec![op_put("s", "1")],
            failure: vec![op_put("f", "1"), op_range("k", "")],
        },
    )
    .unwrap();
    assert!(!r.succeeded);
    assert_eq!(r.responses.len(), 2);
    assert!(one(&s, "s").is_none());
    assert!(one(&s, "f").is_some());
}

#[test]
fn txn_with_only_reads_does_not_bump_revision() {
    let mut s = abc_store();
    let r = txn(
        &mut s,
        TxnRequest {
            success: vec![
                op_range("a", "b"),
                op_txn(TxnRequest {
                    success: vec![op_range("c", "")],
                    ..Default::default()
                }),
            ],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(rev(&r.header), 6);
    assert_eq!(s.revision(), 6);
    // A write txn whose ops change nothing does not bump either.
    let r = txn(
        &mut s,
        TxnRequest {
            success: vec![op_del("nope", "")],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!((rev(&r.header), s.revision()), (6, 6));
}

#[test]
fn txn_with_too_many_ops_fails() {
    let mut s = Store::new();
    let ops: Vec<_> = (0..129).map(|i| op_put(&format!("k{i}"), "v")).collect();
    let t = TxnRequest {
        success: ops[..128].to_vec(),
        ..Default::default()
    };
    assert!(txn(&mut s, t).is_ok());
    let t = TxnRequest {
        failure: ops.clone(),
        ..Default::default()
    };
    assert_refused(&mut s, t.into(), KvError::TooManyOps);
    let compares = vec![
        cmp(
            "k",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(0)
        );
        129
    ];
    let t = TxnRequest {
        compare: compares,
        ..Default::default()
    };
    assert_refused(&mut s, t.into(), KvError::TooManyOps);
    assert_eq!(
        KvError::TooManyOps.to_string(),
        "etcdserver: too many operations in txn request"
    );
    // The limit is configurable, and nested txns get what the level above left.
    let mut small = Store::with_max_txn_ops(3);
    let nested = TxnRequest {
        success: vec![op_put("a", "1"), op_put("b", "1")],
        ..Default::default()
    };
    let t = TxnRequest {
        success: vec![op_txn(nested.clone()), op_range("x", "")],
        ..Default::default()
    };
    assert_eq!(small.apply(&t.into()), Err(KvError::TooManyOps));
    let t = TxnRequest {
        success: vec![op_txn(nested)],
        ..Default::default()
    };
    assert!(small.apply(&t.into()).is_ok());
}

#[test]
fn txn_with_duplicate_put_keys_fails() {
    let mut s = Store::new();
    let dup = |success: Vec<RequestOp>| TxnRequest {
        success,
        ..Default::default()
    };
    for t in [
        dup(vec![op_put("a", "1"), op_put("a", "2")]),
        dup(vec![op_put("ab", "1"), op_del("a", "b")]),
        dup(vec![op_del("a", ""), op_put("a", "1")]),
        dup(vec![op_put("a", "1"), op_txn(dup(vec![op_put("a", "2")]))]),
        dup(vec![
            op_del("a", "c"),
            op_txn(TxnRequest {
                failure: vec![op_put("b", "2")],
                ..Default::default()
            }),
        ]),
        dup(vec![
            op_txn(dup(vec![op_del("a", "")])),
            op_txn(dup(vec![op_put("a", "1")])),
        ]),
        dup(vec![op_txn(dup(vec![op_del("a", "")])), op_put("a", "1")]),
    ] {
        assert_refused(&mut s, t.into(), KvError::DuplicateKey);
    }
    assert_eq!(
        KvError::DuplicateKey.to_string(),
        "etcdserver: duplicate key given in txn request"
    );
}

#[test]
fn txn_overlaps_etcd_allows() {
    let mut s = Store::new();
    put(&mut s, "a", "0");
    let ok = |s: &mut Store, t: TxnRequest| {
        let cmd: Command = t.into();
        assert_eq!(s.validate(&cmd), Ok(()));
        s.apply(&cmd).unwrap();
    };
    // Deleting the same key twice.
    ok(
        &mut s,
        TxnRequest {
            success: vec![op_del("a", ""), op_del("a", "b")],
            ..Default::default()
        },
    );
    // The two branches of one nested txn may put the same key.
    ok(
        &mut s,
        TxnRequest {
            success: vec![op_txn(TxnRequest {
                success: vec![op_put("a", "1")],
                failure: vec![op_put("a", "2")],
                ..Default::default()
            })],
            ..Default::default()
        },
    );
    // etcd compares a nested put only with deletes seen before it: a put
    // in one nested txn and a delete in a later one pass.
    let before = s.revision();
    ok(
        &mut s,
        TxnRequest {
            success: vec![
                op_txn(TxnRequest {
                    success: vec![op_put("z", "1")],
                    ..Default::default()
                }),
                op_txn(TxnRequest {
                    success: vec![op_del("z", "")],
                    ..Default::default()
                }),
            ],
            ..Default::default()
        },
    );
    assert_eq!(s.revision(), before + 1);
    assert_eq!(one(&s, "z"), None);
    // A delete to "\0" (all keys >= key) is etcd's empty interval: no conflict.
    ok(
        &mut s,
        TxnRequest {
            success: vec![op_del("a", "\0"), op_put("b", "new")],
            ..Default::default()
        },
    );
    assert_eq!(one(&s, "b").unwrap().version, 1);
}

#[test]
fn txn_nested_compares_see_the_state_before_the_txn() {
    let mut s = Store::new();
    let r = txn(
        &mut s,
        TxnRequest {
            success: vec![
                op_put("flag", "set"),
                op_txn(TxnRequest {
                    compare: vec![cmp(
                        "flag",
                        CompareTarget::Version,
                        CompareResult::Equal,
                        TargetUnion::Version(0),
                    )],
                    success: vec![op_put("saw_old", "1")],
                    failure: vec![op_put("saw_new", "1")],
                }),
            ],
            ..Default::default()
        },
    )
    .unwrap();
    let nested = txn_resp(&r.responses[1]);
    assert!(nested.succeeded);
    assert!(one(&s, "saw_old").is_some());
    assert!(one(&s, "saw_new").is_none());
    // A nested txn's header is empty, as in etcd; the outer one has the revision.
    assert_eq!(rev(&nested.header), 0);
    assert_eq!(rev(&r.header), 2);
    assert_eq!(rev(&put_resp(&nested.responses[0]).header), 2);
}

#[test]
fn txn_with_empty_request_op_fails_with_key_not_found() {
    let mut s = Store::new();
    let t = TxnRequest {
        success: vec![op_put("a", "1"), RequestOp { request: None }],
        ..Default::default()
    };
    assert_refused(&mut s, t.into(), KvError::KeyNotFound);
}

#[test]
fn txn_state_errors_on_taken_path_refuse_the_whole_txn() {
    let mut s = Store::new();
    put(&mut s, "a", "1"); // 2
    let t = TxnRequest {
        success: vec![
            op_put("b", "1"),
            RequestOp {
                request: Some(Request::RequestRange(RangeRequest {
                    revision: 3,
                    ..range_req("a", "")
                })),
            },
        ],
        ..Default::default()
    };
    assert_refused(&mut s, t.into(), KvError::FutureRevision);
    let t = TxnRequest {
        success: vec![
            op_put("b", "1"),
            RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: b"missing".to_vec(),
                    ignore_value: true,
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    };
    assert_refused(&mut s, t.into(), KvError::KeyNotFound);
    let t = TxnRequest {
        success: vec![op_txn(TxnRequest {
            success: vec![RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    lease: 9,
                    ..put_req("b", "1")
                })),
            }],
            ..Default::default()
        })],
        ..Default::default()
    };
    assert_refused(&mut s, t.into(), KvError::LeaseNotFound);
    // Errors on the branch not taken do not matter.
    let t = TxnRequest {
        failure: vec![RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                revision: 99,
                ..range_req("a", "")
            })),
        }],
        success: vec![op_put("b", "1")],
        ..Default::default()
    };
    assert!(txn(&mut s, t).unwrap().succeeded);
}

#[test]
fn txn_ignore_value_put_after_delete_in_same_txn_is_undone() {
    // etcd's validation lets this through (a delete to "\0" conflicts with
    // nothing) and etcd then panics applying it; bftd refuses it
    // deterministically and leaves the store untouched.
    let mut s = Store::new();
    put(&mut s, "a", "1");
    put(&mut s, "b", "1");
    let t = TxnRequest {
        success: vec![
            op_put("c", "new"),
            op_del("a", "\0"),
            RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: b"b".to_vec(),
                    ignore_value: true,
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    };
    assert_refused(&mut s, t.into(), KvError::KeyNotFound);
    assert_eq!(s.key_count(), 2);
    assert_eq!(s.revision(), 3);
}

// ---- compaction ----------------------------------------------------------

#[test]
fn compaction_keeps_reads_at_and_after_the_compaction_revision() {
    let mut s = Store::new();
    put(&mut s, "k", "v1"); // 2
    put(&mut s, "gone", "x"); // 3
    put(&mut s, "k", "v2"); // 4
    del(&mut s, "gone", ""); // 5
    put(&mut s, "k", "v3"); // 6
    let full_before: Vec<_> = (1..=6)
        .map(|r| {
            get(
                &s,
                RangeRequest {
                    revision: r,
                    ..range_req("\0", "\0")
                },
            )
            .unwrap()
        })
        .collect();
    let resp = s.compact(5).unwrap();
    assert_eq!(rev(&resp.header), 6);
    assert_eq!(s.revision(), 6, "compaction does not bump the revision");
    assert_eq!(s.compact_revision(), 5);
    for r in 5..=6 {
        let now = get(
            &s,
            RangeRequest {
                revision: r,
                ..range_req("\0", "\0")
            },
        )
        .unwrap();
        assert_eq!(now, full_before[(r - 1) as usize]);
    }
    for r in 1..5 {
        assert_eq!(
            get(
                &s,
                RangeRequest {
                    revision: r,
                    ..range_req("\0", "\0")
                },
            ),
            Err(KvError::Compacted)
        );
    }
}

#[test]
fn compaction_at_or_below_compact_revision_fails_and_future_fails() {
    let mut s = Store::new();
    put(&mut s, "k", "v"); // 2
    put(&mut s, "k", "v"); // 3
    assert_eq!(s.compact(4), Err(KvError::FutureRevision));
    s.compact(2).unwrap();
    assert_eq!(s.compact(2), Err(KvError::Compacted));
    assert_eq!(s.compact(1), Err(KvError::Compacted));
    let cmd: Command = CompactionRequest {
        revision: 2,
        physical: true,
    }
    .into();
    assert_refused(&mut s, cmd, KvError::Compacted);
    s.compact(3).unwrap();
    assert_eq!(s.compact_revision(), 3);
}

#[test]
fn compaction_of_a_fresh_store_at_revision_0_succeeds_like_etcd() {
    // etcd starts with compactMainRev = -1, so Compact(0) passes its checks.
    let mut s = Store::new();
    assert!(s.compact(0).is_ok());
    assert_eq!(s.compact_revision(), 0);
    assert_eq!(s.compact(0), Err(KvError::Compacted));
}

#[test]
fn compaction_drops_history_and_deleted_keys() {
    let mut s = Store::new();
    for i in 0..10 {
        put(&mut s, "k", &i.to_string());
    }
    put(&mut s, "d", "x");
    del(&mut s, "d", "");
    let before = s.snapshot().len();
    s.compact(s.revision()).unwrap();
    let after = s.snapshot().len();
    assert!(after < before);
    let restored = Store::restore(&s.snapshot()).unwrap();
    assert_eq!(restored.key_count(), 1);
    assert_eq!(one(&s, "k").unwrap().version, 10);
    // A put after compaction continues the version count.
    put(&mut s, "k", "10");
    assert_eq!(one(&s, "k").unwrap().version, 11);
}

// ---- read-only execution, validation, hashes -------------------------------

#[test]
fn execute_read_only_matches_apply_and_refuses_writes() {
    let mut s = abc_store();
    let t: Command = TxnRequest {
        compare: vec![cmp(
            "a",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(1),
        )],
        success: vec![op_range("a", "b")],
        failure: vec![op_range("c", "")],
    }
    .into();
    let local = s.execute_read_only(&t).unwrap();
    assert_eq!(
        Store::restore(&s.snapshot()).unwrap().apply(&t).unwrap(),
        local
    );
    let r: Command = range_req("a", "\0").into();
    assert_eq!(
        s.execute_read_only(&r).unwrap(),
        Store::restore(&s.snapshot()).unwrap().apply(&r).unwrap()
    );
    assert_eq!(
        s.execute_read_only(&put_req("a", "1").into()),
        Err(KvError::NotReadOnly)
    );
    let before = s.revision();
    s.apply(&t).unwrap();
    assert_eq!(s.revision(), before);
}

#[test]
fn hash_kv_at_a_revision_ignores_later_writes() {
    let mut s = Store::new();
    put(&mut s, "a", "1"); // 2
    put(&mut s, "b", "1"); // 3
    let (h3, compact) = s.hash_kv(3).unwrap();
    assert_eq!(compact, -1);
    assert_eq!(s.hash_kv(0).unwrap().0, h3);
    put(&mut s, "a", "2"); // 4
    assert_eq!(s.hash_kv(3).unwrap().0, h3);
    assert_ne!(s.hash_kv(4).unwrap().0, h3);
    assert_ne!(s.hash_kv(2).unwrap().0, h3);
    assert_eq!(s.hash_kv(5), Err(KvError::FutureRevision));
    s.compact(3).unwrap();
    assert_eq!(s.hash_kv(2), Err(KvError::Compacted));
    assert_eq!(s.hash_kv(3).unwrap().1, 3);
}

#[test]
fn state_digest_survives_a_snapshot_and_follows_every_write() {
    let mut s = abc_store();
    let before = s.state_digest();
    del(&mut s, "ab", "");
    assert_ne!(s.state_digest(), before, "a delete changes the digest");
    let before = s.state_digest();
    s.compact(4).unwrap();
    assert_ne!(s.state_digest(), before, "a compaction changes the digest");
    let restored = Store::restore(&s.snapshot()).unwrap();
    assert_eq!(restored.state_digest(), s.state_digest());
    assert_eq!(restored.revision(), s.revision());
    assert_eq!(restored.compact_revision(), s.compact_revision());
    assert_eq!(restored.key_count(), s.key_count());
    assert_ne!(Store::new().state_digest(), s.state_digest());
    assert_ne!(Store::new().hash(), s.hash());
}

#[test]
fn restore_rejects_bad_magic_version_trailing_bytes_and_truncation() {
    let s = abc_store();
    let good = s.snapshot();
    let mut bad_magic = good.clone();
    bad_magic[0] ^= 1;
    assert!(Store::restore(&bad_magic).is_err());
    let mut bad_version = good.clone();
    bad_version[6] = 5;
    assert_eq!(
        Store::restore(&bad_version),
        Err(kv::DecodeError::BadVersion(5))
    );
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(
        Store::restore(&trailing),
        Err(kv::DecodeError::TrailingBytes(1))
    );
    for cut in 0..good.len() {
        assert!(
            Store::restore(&good[..cut]).is_err(),
            "prefix of {cut} bytes decoded"
        );
    }
}

// ---- response cap (issue 7 finding 9) ------------------------------------

fn range_all() -> RangeRequest {
    RangeRequest {
        key: b"k".to_vec(),
        range_end: b"l".to_vec(),
        ..Default::default()
    }
}

/// A Range with `limit = 0` over more bytes than the cap used to build a
/// response of any size; now it fails with ResourceExhausted, pages under
/// the cap still work, and `count_only` / `keys_only` reads of the same
/// keys fit.
#[test]
fn a_range_with_no_limit_above_the_response_cap_is_resource_exhausted() {
    let mut s = Store::new();
    let value = "v".repeat(1000);
    for i in 0..100 {
        put(&mut s, &format!("k{i:03}"), &value);
    }
    let cap = 50 * 1024;
    let read = |r: RangeRequest| s.execute_read_only_limited(&Command::from(r), cap);
    assert_eq!(read(range_all()), Err(KvError::ResponseTooLarge));
    assert_eq!(KvError::ResponseTooLarge.grpc_code(), 8);
    match read(RangeRequest {
        limit: 40,
        ..range_all()
    }) {
        Ok(Response::Range(r)) => assert!(r.more && r.kvs.len() == 40 && r.count == 100),
        other => panic!("{other:?}"),
    }
    match read(RangeRequest {
        keys_only: true,
        ..range_all()
    }) {
        Ok(Response::Range(r)) => assert_eq!(r.kvs.len(), 100),
        other => panic!("{other:?}"),
    }
    // A sorted page with a small limit fits: only the page is built.
    match read(RangeRequest {
        limit: 3,
        sort_order: SortOrder::Descend as i32,
        sort_target: SortTarget::Mod as i32,
        ..range_all()
    }) {
        Ok(Response::Range(r)) => assert_eq!(r.kvs[0].key, b"k099"),
        other => panic!("{other:?}"),
    }
    // The ranges of a read-only txn share one cap.
    let half = RangeRequest {
        limit: 30,
        ..range_all()
    };
    let txn = |ranges: usize| {
        Command::from(TxnRequest {
            success: (0..ranges)
                .map(|_| RequestOp {
                    request: Some(Request::RequestRange(half.clone())),
                })
                .collect(),
            ..Default::default()
        })
    };
    assert!(s.execute_read_only_limited(&txn(1), cap).is_ok());
    assert_eq!(
        s.execute_read_only_limited(&txn(2), cap),
        Err(KvError::ResponseTooLarge)
    );
    // Nothing changed.
    assert_eq!(s.revision(), 101);
}

// ---- space quota (etcd --quota-backend-bytes) ------------------------------

/// Bytes one put of a 2-byte key and a 1000-byte value adds to the size.
const ENTRY_1K: u64 = 2 + 1000 + kv::ENTRY_OVERHEAD_BYTES;

fn put_1k(k: &str) -> Command {
    PutRequest {
        key: k.into(),
        value: vec![b'x'; 1000],
        ..Default::default()
    }
    .into()
}

/// A store whose quota holds exactly four 1 KB puts, filled with three.
fn store_with_room_for_one_more() -> Store {
    let mut s = Store::new();
    s.set_quota_bytes(4 * ENTRY_1K);
    for k in ["k1", "k2", "k3"] {
        s.apply(&put_1k(k)).expect("below the quota");
    }
    assert_eq!(s.size_bytes(), 3 * ENTRY_1K);
    assert!(!s.space_alarm());
    s
}

#[test]
fn writes_beyond_the_space_quota_are_refused_with_nospace_and_change_nothing() {
    let mut s = store_with_room_for_one_more();
    // A txn of two puts does not fit as a whole: none of it is applied.
    assert_refused(
        &mut s,
        TxnRequest {
            success: vec![op_put("k4", &"x".repeat(1000)), op_put("k5", "")],
            ..Default::default()
        }
        .into(),
        KvError::NoSpace,
    );
    assert_eq!(one(&s, "k4"), None);
    // One that lands exactly on the quota is accepted; the alarm is up.
    s.apply(&put_1k("k4")).expect("exactly at the quota");
    assert_eq!(s.size_bytes(), s.quota_bytes());
    assert!(s.space_alarm());
    assert_eq!(s.revision(), 5);
    // Now every write that adds an entry is refused, however small: new
    // keys, overwrites (they add history), txns with puts or deletes.
    assert_refused(&mut s, put_req("s", "").into(), KvError::NoSpace);
    assert_refused(&mut s, put_1k("k1"), KvError::NoSpace);
    assert_refused(
        &mut s,
        TxnRequest {
            success: vec![op_del("k1", "")],
            ..Default::default()
        }
        .into(),
        KvError::NoSpace,
    );
    // etcd's message and code, verbatim.
    let e = s.apply(&put_1k("k9")).unwrap_err();
    assert_eq!(e.to_string(), "etcdserver: mvcc: database space exceeded");
    assert_eq!(e.grpc_code(), kv::error::grpc_code::RESOURCE_EXHAUSTED);
    // Reads still work.
    assert_eq!(keys(&get(&s, range_req("k", "l")).unwrap()).len(), 4);
    assert!(txn(
        &mut s,
        TxnRequest {
            success: vec![op_range("k1", "")],
            ..Default::default()
        }
    )
    .is_ok());
    assert_eq!(s.revision(), 5);
    // 0 means etcd's default of 2 GiB.
    s.set_quota_bytes(0);
    assert_eq!(s.quota_bytes(), 2 * 1024 * 1024 * 1024);
    assert!(s.apply(&put_1k("k9")).is_ok());
}

#[test]
fn deletes_and_compaction_are_allowed_over_the_quota_and_free_space() {
    let mut s = store_with_room_for_one_more();
    s.apply(&put_1k("k4")).unwrap();
    assert!(s.space_alarm());
    // A DeleteRange is never refused, though its tombstone takes the
    // size above the quota.
    assert_eq!(del(&mut s, "k1", "k3").deleted, 2);
    assert_eq!(
        s.size_bytes(),
        4 * ENTRY_1K + 2 * (2 + kv::ENTRY_OVERHEAD_BYTES)
    );
    assert!(s.size_bytes() > s.quota_bytes());
    assert_refused(&mut s, put_req("s", "").into(), KvError::NoSpace);
    // Compaction drops the deleted keys' history: two puts, two tombstones.
    let rev = s.revision();
    s.apply(
        &CompactionRequest {
            revision: rev,
            physical: false,
        }
        .into(),
    )
    .expect("compaction is never refused");
    assert_eq!(s.size_bytes(), 2 * ENTRY_1K);
    assert!(!s.space_alarm());
    // Writes are accepted again, up to the quota.
    s.apply(&put_1k("k5")).unwrap();
    s.apply(&put_1k("k6")).unwrap();
    assert!(s.space_alarm());
    assert_refused(&mut s, put_1k("k7"), KvError::NoSpace);
    // Compaction also frees the older versions of overwritten keys.
    let mut t = store_with_room_for_one_more();
    t.set_quota_bytes(10 * ENTRY_1K);
    for _ in 0..7 {
        t.apply(&put_1k("k1")).unwrap();
    }
    assert!(t.space_alarm());
    let rev = t.revision();
    t.compact(rev).unwrap();
    assert_eq!(t.size_bytes(), 3 * ENTRY_1K);
}

#[test]
fn the_tracked_size_survives_snapshot_and_restore() {
    let mut s = store_with_room_for_one_more();
    s.set_quota_bytes(20 * ENTRY_1K);
    put(&mut s, "k1", "short");
    del(&mut s, "k2", "");
    s.apply(&put_1k("k4")).unwrap();
    s.compact(s.revision() - 1).unwrap();
    put(&mut s, "k3", "");
    let size = s.size_bytes();
    // Counted from scratch: k1 "short" (older versions compacted), k2
    // gone, k3 twice (1000 bytes and empty), k4 once.
    let want =
        (2 + 5 + kv::ENTRY_OVERHEAD_BYTES) + ENTRY_1K + (2 + kv::ENTRY_OVERHEAD_BYTES) + ENTRY_1K;
    assert_eq!(size, want);
    let mut r = Store::restore(&s.snapshot()).unwrap();
    assert_eq!(r.size_bytes(), size);
    // The quota is configuration: a restored store has the default until
    // it is set again, and then refuses exactly what the original does.
    assert_eq!(r.quota_bytes(), kv::DEFAULT_QUOTA_BACKEND_BYTES);
    s.set_quota_bytes(size + ENTRY_1K);
    r.set_quota_bytes(size + ENTRY_1K);
    assert_eq!(s, r);
    for k in ["k5", "k6"] {
        assert_eq!(s.apply(&put_1k(k)), r.apply(&put_1k(k)));
    }
    assert_eq!(r.apply(&put_1k("k7")), Err(KvError::NoSpace));
    assert_eq!(s.snapshot(), r.snapshot());
}
