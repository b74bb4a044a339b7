//! Property tests: the store against a simple reference model (one full
//! copy of the key space per revision), determinism across replicas,
//! snapshot round trips, and hostile bytes / commands that must never
//! panic.

use std::collections::BTreeMap;

use kv::pb::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    response_op, CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest,
    DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use kv::pb::mvccpb::KeyValue;
use kv::{decode_batch, encode_batch, Command, KvError, Response, Store};
use proptest::prelude::*;

const KEYS: [&[u8]; 5] = [b"a", b"b", b"ba", b"c", b"d"];

fn key(i: usize) -> Vec<u8> {
    KEYS[i % KEYS.len()].to_vec()
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

// ---- the reference model ---------------------------------------------

#[derive(Clone, Debug, PartialEq)]
struct MKv {
    value: Vec<u8>,
    create: i64,
    modified: i64,
    version: i64,
}

type State = BTreeMap<Vec<u8>, MKv>;

/// `states[r - 1]` is the whole key space at revision `r`.
struct Model {
    states: Vec<State>,
    compact: i64,
}

fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        k == key
    } else if end == [0] {
        k >= key
    } else {
        k >= key && k < end
    }
}

fn to_kv(k: &[u8], m: &MKv) -> KeyValue {
    KeyValue {
        key: k.to_vec(),
        create_revision: m.create,
        mod_revision: m.modified,
        version: m.version,
        value: m.value.clone(),
        lease: 0,
    }
}

impl Model {
    fn new() -> Self {
        Self {
            states: vec![State::new()],
            compact: -1,
        }
    }
    fn rev(&self) -> i64 {
        self.states.len() as i64
    }
    fn current(&self) -> &State {
        self.states.last().unwrap()
    }

    fn range_in(state: &State, r: &RangeRequest, header_rev: i64) -> RangeResponse {
        let mut kvs: Vec<KeyValue> = state
            .iter()
            .filter(|(k, _)| in_range(k, &r.key, &r.range_end))
            .map(|(k, m)| to_kv(k, m))
            .collect();
        let count = kvs.len() as i64;
        if r.count_only {
            return RangeResponse {
                header: header(header_rev),
                kvs: vec![],
                more: false,
                count,
            };
        }
        let target = SortTarget::try_from(r.sort_target).unwrap();
        let field = |kv: &KeyValue| -> (Vec<u8>, i64) {
            match target {
                SortTarget::Key => (kv.key.clone(), 0),
                SortTarget::Value => (kv.value.clone(), 0),
                SortTarget::Version => (vec![], kv.version),
                SortTarget::Create => (vec![], kv.create_revision),
                SortTarget::Mod => (vec![], kv.mod_revision),
            }
        };
        match SortOrder::try_from(r.sort_order).unwrap() {
            SortOrder::None => {}
            SortOrder::Ascend => kvs.sort_by_key(|kv| field(kv)),
            SortOrder::Descend => kvs.sort_by_key(|kv| std::cmp::Reverse(field(kv))),
        }
        let mut more = false;
        if r.limit > 0 && kvs.len() > r.limit as usize {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        if r.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        RangeResponse {
            header: header(header_rev),
            kvs,
            more,
            count,
        }
    }

    fn range(&self, r: &RangeRequest) -> Result<RangeResponse, KvError> {
        if r.revision > self.rev() {
            return Err(KvError::FutureRevision);
        }
        let at = if r.revision <= 0 {
            self.rev()
        } else {
            r.revision
        };
        if at < self.compact {
            return Err(KvError::Compacted);
        }
        Ok(Self::range_in(
            &self.states[(at - 1) as usize],
            r,
            self.rev(),
        ))
    }

    fn put_into(state: &mut State, p: &PutRequest, rev: i64) -> Result<Option<KeyValue>, KvError> {
        let prev = state.get(&p.key).cloned();
        if p.ignore_value && prev.is_none() {
            return Err(KvError::KeyNotFound);
        }
        let value = if p.ignore_value {
            prev.as_ref().unwrap().value.clone()
        } else {
            p.value.clone()
        };
        let (create, version) = match &prev {
            Some(m) => (m.create, m.version + 1),
            None => (rev, 1),
        };
        state.insert(
            p.key.clone(),
            MKv {
                value,
                create,
                modified: rev,
                version,
            },
        );
        Ok(if p.prev_kv {
            prev.map(|m| to_kv(&p.key, &m))
        } else {
            None
        })
    }

    fn delete_from(state: &mut State, d: &DeleteRangeRequest) -> (i64, Vec<KeyValue>) {
        let doomed: Vec<_> = state
            .iter()
            .filter(|(k, _)| in_range(k, &d.key, &d.range_end))
            .map(|(k, m)| to_kv(k, m))
            .collect();
        for kv in &doomed {
            state.remove(&kv.key);
        }
        let prev = if d.prev_kv { doomed.clone() } else { vec![] };
        (doomed.len() as i64, prev)
    }

    fn compare(state: &State, c: &Compare) -> bool {
        let Some(m) = state.get(&c.key) else {
            return match CompareTarget::try_from(c.target).unwrap() {
                CompareTarget::Value => false,
                _ => Self::holds(c, 0i64.cmp(&Self::operand(c))),
            };
        };
        let ord = match CompareTarget::try_from(c.target).unwrap() {
            CompareTarget::Value => match &c.target_union {
                Some(TargetUnion::Value(v)) => m.value.cmp(v),
                _ => unreachable!(),
            },
            CompareTarget::Version => m.version.cmp(&Self::operand(c)),
            CompareTarget::Create => m.create.cmp(&Self::operand(c)),
            CompareTarget::Mod => m.modified.cmp(&Self::operand(c)),
            CompareTarget::Lease => 0i64.cmp(&Self::operand(c)),
        };
        Self::holds(c, ord)
    }
    fn operand(c: &Compare) -> i64 {
        match c.target_union {
            Some(TargetUnion::Version(v))
            | Some(TargetUnion::CreateRevision(v))
            | Some(TargetUnion::ModRevision(v))
            | Some(TargetUnion::Lease(v)) => v,
            _ => 0,
        }
    }
    fn holds(c: &Compare, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match CompareResult::try_from(c.result).unwrap() {
            CompareResult::Equal => ord == Equal,
            CompareResult::NotEqual => ord != Equal,
            CompareResult::Greater => ord == Greater,
            CompareResult::Less => ord == Less,
        }
    }

    fn apply(&mut self, cmd: &Command) -> Result<Response, KvError> {
        use kv::pb::bftdkv::command::Op;
        let cur = self.rev();
        match cmd.op.as_ref().unwrap() {
            Op::Range(r) => self.range(r).map(Response::Range),
            Op::Put(p) => {
                let mut next = self.current().clone();
                let prev_kv = Self::put_into(&mut next, p, cur + 1)?;
                self.states.push(next);
                Ok(Response::Put(PutResponse {
                    header: header(cur + 1),
                    prev_kv,
                }))
            }
            Op::DeleteRange(d) => {
                let mut next = self.current().clone();
                let (deleted, prev_kvs) = Self::delete_from(&mut next, d);
                if deleted > 0 {
                    self.states.push(next);
                }
                Ok(Response::DeleteRange(DeleteRangeResponse {
                    header: header(self.rev()),
                    deleted,
                    prev_kvs,
                }))
            }
            Op::Compaction(c) => {
                if c.revision <= self.compact {
                    return Err(KvError::Compacted);
                }
                if c.revision > cur {
                    return Err(KvError::FutureRevision);
                }
                self.compact = c.revision;
                Ok(Response::Compaction(CompactionResponse {
                    header: header(cur),
                }))
            }
            Op::Txn(t) => self.txn(t).map(Response::Txn),
            // The model covers the KV operations; leases, alarms and auth
            // are tested in `kv`, and the generator never makes them.
            _ => unreachable!("the model generates only KV commands"),
        }
    }

    /// Flat txns only (what the generator makes): single-key puts and
    /// deletes, ranges at the txn's own view.
    fn txn(&mut self, t: &TxnRequest) -> Result<TxnResponse, KvError> {
        for branch in [&t.success, &t.failure] {
            let mut puts = Vec::new();
            let mut dels = Vec::new();
            for op in branch {
                match &op.request {
                    Some(Request::RequestPut(p)) => puts.push(p.key.clone()),
                    Some(Request::RequestDeleteRange(d)) => dels.push(d.key.clone()),
                    _ => {}
                }
            }
            for (i, k) in puts.iter().enumerate() {
                if puts[..i].contains(k) || dels.contains(k) {
                    return Err(KvError::DuplicateKey);
                }
            }
        }
        let cur = self.rev();
        let before = self.current().clone();
        let succeeded = t.compare.iter().all(|c| Self::compare(&before, c));
        let ops = if succeeded { &t.success } else { &t.failure };
        for op in ops {
            if let Some(Request::RequestPut(p)) = &op.request {
                if p.ignore_value && !before.contains_key(&p.key) {
                    return Err(KvError::KeyNotFound);
                }
            }
        }
        let mut work = before.clone();
        let mut changed = false;
        let mut responses = Vec::new();
        for op in ops {
            let response =
                match op.request.as_ref().unwrap() {
                    Request::RequestRange(r) => response_op::Response::ResponseRange(
                        Self::range_in(&work, r, cur + i64::from(changed)),
                    ),
                    Request::RequestPut(p) => {
                        let prev_kv = Self::put_into(&mut work, p, cur + 1)?;
                        changed = true;
                        response_op::Response::ResponsePut(PutResponse {
                            header: header(cur + 1),
                            prev_kv,
                        })
                    }
                    Request::RequestDeleteRange(d) => {
                        let (deleted, prev_kvs) = Self::delete_from(&mut work, d);
                        changed |= deleted > 0;
                        response_op::Response::ResponseDeleteRange(DeleteRangeResponse {
                            header: header(cur + i64::from(changed)),
                            deleted,
                            prev_kvs,
                        })
                    }
                    Request::RequestTxn(_) => unreachable!("the model has no nested txns"),
                };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        if changed {
            self.states.push(work);
        }
        Ok(TxnResponse {
            header: header(self.rev()),
            succeeded,
            responses,
        })
    }
}

// ---- generators --------------------------------------------------------

fn arb_range_end() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(vec![]),
        1 => Just(vec![0]),
        2 => (0..KEYS.len()).prop_map(key),
    ]
}

fn arb_put() -> impl Strategy<Value = PutRequest> {
    (
        0..KEYS.len(),
        0u8..4,
        any::<bool>(),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(k, v, prev_kv, ignore_value)| PutRequest {
            key: key(k),
            value: if ignore_value { vec![] } else { vec![b'v', v] },
            prev_kv,
            ignore_value,
            ..Default::default()
        })
}

fn arb_sort() -> impl Strategy<Value = (i32, i32)> {
    prop_oneof![
        3 => Just((0, 0)),
        2 => (1..=2i32, 0..=4i32),
    ]
}

fn arb_range(max_back: i64) -> impl Strategy<Value = RangeRequest> {
    (
        0..KEYS.len(),
        arb_range_end(),
        -1..max_back,
        0i64..4,
        any::<bool>(),
        prop::bool::weighted(0.2),
        arb_sort(),
    )
        .prop_map(
            |(k, range_end, back, limit, keys_only, count_only, (order, target))| {
                RangeRequest {
                    key: key(k),
                    range_end,
                    // Encoded as "back from the current revision" later.
                    revision: back,
                    limit,
                    keys_only,
                    count_only,
                    sort_order: order,
                    sort_target: target,
                    ..Default::default()
                }
            },
        )
}

fn arb_txn_op() -> impl Strategy<Value = RequestOp> {
    prop_oneof![
        arb_put().prop_map(|p| RequestOp {
            request: Some(Request::RequestPut(p))
        }),
        (0..KEYS.len(), any::<bool>()).prop_map(|(k, prev_kv)| RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: key(k),
                range_end: vec![],
                prev_kv,
            }))
        }),
        (0..KEYS.len(), arb_range_end(), 0i64..3).prop_map(|(k, range_end, limit)| RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key: key(k),
                range_end,
                limit,
                ..Default::default()
            }))
        }),
    ]
}

fn arb_compare() -> impl Strategy<Value = Compare> {
    (0..KEYS.len(), 0..4i32, 0..4i32, 0i64..6, 0u8..4).prop_map(|(k, target, result, n, v)| {
        let target_union = match CompareTarget::try_from(target).unwrap() {
            CompareTarget::Version => TargetUnion::Version(n % 3),
            CompareTarget::Create => TargetUnion::CreateRevision(n),
            CompareTarget::Mod => TargetUnion::ModRevision(n),
            _ => TargetUnion::Value(vec![b'v', v]),
        };
        Compare {
            result,
            target,
            key: key(k),
            range_end: vec![],
            target_union: Some(target_union),
        }
    })
}

/// One step; ranges and compactions carry "revisions back from current",
/// resolved against the store when the step runs.
#[derive(Clone, Debug)]
enum Step {
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Range(RangeRequest),
    Txn(TxnRequest),
    Compact(i64),
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => arb_put().prop_map(Step::Put),
        2 => (0..KEYS.len(), arb_range_end(), any::<bool>()).prop_map(|(k, range_end, prev_kv)| {
            Step::Delete(DeleteRangeRequest { key: key(k), range_end, prev_kv })
        }),
        4 => arb_range(8).prop_map(Step::Range),
        3 => (
            prop::collection::vec(arb_compare(), 0..3),
            prop::collection::vec(arb_txn_op(), 0..4),
            prop::collection::vec(arb_txn_op(), 0..4),
        )
            .prop_map(|(compare, success, failure)| Step::Txn(TxnRequest { compare, success, failure })),
        1 => (-1i64..6).prop_map(Step::Compact),
    ]
}

fn to_command(step: &Step, current: i64) -> Command {
    match step.clone() {
        Step::Put(p) => p.into(),
        Step::Delete(d) => d.into(),
        Step::Range(mut r) => {
            // -1 -> revision 0 (current); otherwise `back` revisions ago,
            // sometimes below 1 or above current.
            r.revision = if r.revision < 0 {
                0
            } else {
                current + 1 - r.revision
            };
            r.into()
        }
        Step::Txn(t) => t.into(),
        Step::Compact(back) => CompactionRequest {
            revision: current - back,
            physical: false,
        }
        .into(),
    }
}

// ---- arbitrary (hostile) commands --------------------------------------

fn arb_bytes_key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (0..KEYS.len()).prop_map(key),
        1 => Just(vec![]),
        1 => Just(vec![0]),
        1 => prop::collection::vec(any::<u8>(), 0..3),
    ]
}

fn arb_any_range() -> impl Strategy<Value = RangeRequest> {
    (
        arb_bytes_key(),
        arb_bytes_key(),
        -3i64..4,
        -2i64..12,
        -1i32..4,
        -1i32..6,
        any::<[bool; 3]>(),
        prop::collection::vec(-1i64..8, 4),
    )
        .prop_map(
            |(key, range_end, limit, revision, sort_order, sort_target, b, f)| RangeRequest {
                key,
                range_end,
                limit,
                revision,
                sort_order,
                sort_target,
                serializable: b[0],
                keys_only: b[1],
                count_only: b[2],
                min_mod_revision: f[0],
                max_mod_revision: f[1],
                min_create_revision: f[2],
                max_create_revision: f[3],
            },
        )
}

fn arb_any_put() -> impl Strategy<Value = PutRequest> {
    (
        arb_bytes_key(),
        prop::collection::vec(any::<u8>(), 0..3),
        prop_oneof![8 => Just(0i64), 1 => -2i64..3],
        any::<[bool; 3]>(),
    )
        .prop_map(|(key, value, lease, b)| PutRequest {
            key,
            value,
            lease,
            prev_kv: b[0],
            ignore_value: b[1],
            ignore_lease: b[2],
        })
}

fn arb_any_delete() -> impl Strategy<Value = DeleteRangeRequest> {
    (arb_bytes_key(), arb_bytes_key(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| {
        DeleteRangeRequest {
            key,
            range_end,
            prev_kv,
        }
    })
}

fn arb_any_compare() -> impl Strategy<Value = Compare> {
    (
        arb_bytes_key(),
        arb_bytes_key(),
        -1i32..6,
        -1i32..5,
        0..6u8,
        -1i64..8,
    )
        .prop_map(|(key, range_end, target, result, u, n)| Compare {
            result,
            target,
            key,
            range_end,
            target_union: match u {
                0 => Some(TargetUnion::Version(n)),
                1 => Some(TargetUnion::CreateRevision(n)),
                2 => Some(TargetUnion::ModRevision(n)),
                3 => Some(TargetUnion::Value(vec![b'v', n as u8])),
                4 => Some(TargetUnion::Lease(n)),
                _ => None,
            },
        })
}

fn arb_any_op() -> impl Strategy<Value = RequestOp> {
    let leaf = prop_oneof![
        arb_any_range().prop_map(|r| Some(Request::RequestRange(r))),
        arb_any_put().prop_map(|p| Some(Request::RequestPut(p))),
        arb_any_delete().prop_map(|d| Some(Request::RequestDeleteRange(d))),
        Just(None),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        (
            prop::collection::vec(arb_any_compare(), 0..3),
            prop::collection::vec(
                inner.clone().prop_map(|request| RequestOp { request }),
                0..4,
            ),
            prop::collection::vec(inner.prop_map(|request| RequestOp { request }), 0..4),
        )
            .prop_map(|(compare, success, failure)| {
                Some(Request::RequestTxn(TxnRequest {
                    compare,
                    success,
                    failure,
                }))
            })
    })
    .prop_map(|request| RequestOp { request })
}

fn arb_any_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        2 => arb_any_range().prop_map(Command::from),
        3 => arb_any_put().prop_map(Command::from),
        2 => arb_any_delete().prop_map(Command::from),
        4 => arb_any_op().prop_map(|op| match op.request {
            Some(Request::RequestTxn(t)) => Command::from(t),
            _ => Command::from(TxnRequest { success: vec![op], ..Default::default() }),
        }),
        1 => (-2i64..12).prop_map(|revision| Command::from(CompactionRequest { revision, physical: false })),
        1 => Just(Command::default()),
    ]
}

fn seeded_store() -> Store {
    let mut s = Store::new();
    for (i, k) in KEYS.iter().enumerate() {
        s.apply(
            &PutRequest {
                key: k.to_vec(),
                value: vec![b'v', i as u8],
                ..Default::default()
            }
            .into(),
        )
        .unwrap();
    }
    s
}

// ---- properties ----------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The store answers every step exactly as the model does, including
    /// reads at past and compacted revisions.
    #[test]
    fn store_matches_reference_model(steps in prop::collection::vec(arb_step(), 1..40)) {
        let mut store = Store::new();
        let mut model = Model::new();
        for step in &steps {
            let cmd = to_command(step, store.revision());
            let before = store.snapshot();
            let got = store.apply(&cmd);
            let want = model.apply(&cmd);
            prop_assert_eq!(&got, &want, "command {:?}", cmd);
            if got.is_err() {
                prop_assert_eq!(store.snapshot(), before);
            }
            prop_assert_eq!(store.revision(), model.rev());
            prop_assert_eq!(store.compact_revision(), model.compact);
            prop_assert_eq!(store.key_count(), model.current().len());
        }
        // Every revision still readable agrees with the model.
        for r in 1..=store.revision() {
            let req = RangeRequest { key: vec![0], range_end: vec![0], revision: r, ..Default::default() };
            prop_assert_eq!(store.range(&req), model.range(&req));
        }
    }

    /// Two replicas fed the same commands agree byte for byte, and a replica
    /// restored from a snapshot midway continues identically.
    #[test]
    fn replicas_with_same_commands_have_same_digest_and_snapshot(
        commands in prop::collection::vec(arb_any_command(), 1..30),
        cut in 0usize..30,
    ) {
        let mut a = seeded_store();
        let mut b = seeded_store();
        let mut c: Option<Store> = None;
        for (i, cmd) in commands.iter().enumerate() {
            if i == cut.min(commands.len() - 1) {
                let restored = Store::restore(&a.snapshot()).unwrap();
                prop_assert_eq!(restored.state_digest(), a.state_digest());
                c = Some(restored);
            }
            let ra = a.apply(cmd);
            prop_assert_eq!(&ra, &b.apply(cmd));
            if let Some(c) = c.as_mut() {
                prop_assert_eq!(&ra, &c.apply(cmd));
            }
        }
        prop_assert_eq!(a.state_digest(), b.state_digest());
        prop_assert_eq!(a.snapshot(), b.snapshot());
        let c = c.unwrap();
        prop_assert_eq!(c.snapshot(), a.snapshot());
        prop_assert_eq!(a.hash_kv(0), c.hash_kv(0));
    }

    /// Hostile commands (empty keys, bad enums, leases, nested txns with
    /// overlaps and bad revisions) never panic; a refused command changes
    /// nothing; an accepted one raises the revision by at most one; the
    /// state always survives a snapshot round trip.
    #[test]
    fn hostile_commands_never_panic_and_refusals_change_nothing(
        commands in prop::collection::vec(arb_any_command(), 1..30),
    ) {
        let mut s = seeded_store();
        for cmd in &commands {
            let before = s.snapshot();
            let rev = s.revision();
            let validated = s.validate(cmd);
            let applied = s.apply(cmd);
            if let Err(e) = validated {
                prop_assert_eq!(&applied, &Err(e));
            }
            match applied {
                Err(_) => prop_assert_eq!(s.snapshot(), before),
                Ok(resp) => {
                    prop_assert!(s.revision() == rev || s.revision() == rev + 1);
                    prop_assert!(resp.revision() <= s.revision());
                    if cmd.is_read_only() {
                        prop_assert_eq!(s.revision(), rev);
                        let mut after = Store::restore(&before).unwrap();
                        prop_assert_eq!(after.execute_read_only(cmd), Ok(resp.clone()));
                        prop_assert_eq!(after.apply(cmd), Ok(resp));
                    }
                }
            }
        }
        let restored = Store::restore(&s.snapshot()).unwrap();
        prop_assert_eq!(restored.snapshot(), s.snapshot());
        prop_assert_eq!(restored.key_count(), s.key_count());
        prop_assert_eq!(restored.size_bytes(), s.size_bytes());
        // The digest kept as the commands executed equals one counted
        // afresh from the entries.
        prop_assert_eq!(restored.digest_ranges(), s.digest_ranges());
        prop_assert_eq!(restored.state_digest(), s.state_digest());
    }

    /// Under a quota a few writes above the seeded size, the same hostile
    /// commands give the same results (NoSpace included) on two replicas
    /// and on one restored midway with the quota set again; the tracked
    /// size always equals the size counted from a snapshot; no accepted
    /// Put or Txn leaves the size above the quota; a refusal changes
    /// nothing.
    #[test]
    fn the_space_quota_refuses_the_same_writes_everywhere_and_the_size_matches_a_recount(
        commands in prop::collection::vec(arb_any_command(), 1..40),
        headroom in 0u64..2_000,
        cut in 0usize..40,
    ) {
        let mut a = seeded_store();
        let quota = a.size_bytes() + headroom;
        a.set_quota_bytes(quota);
        let mut b = Store::restore(&a.snapshot()).unwrap();
        b.set_quota_bytes(quota);
        let mut c: Option<Store> = None;
        for (i, cmd) in commands.iter().enumerate() {
            if i == cut.min(commands.len() - 1) {
                let mut restored = Store::restore(&a.snapshot()).unwrap();
                restored.set_quota_bytes(quota);
                c = Some(restored);
            }
            let size = a.size_bytes();
            let before = a.snapshot();
            let ra = a.apply(cmd);
            prop_assert_eq!(&ra, &b.apply(cmd));
            if let Some(c) = c.as_mut() {
                prop_assert_eq!(&ra, &c.apply(cmd));
                prop_assert_eq!(c.size_bytes(), a.size_bytes());
            }
            let recount = Store::restore(&a.snapshot()).unwrap().size_bytes();
            prop_assert_eq!(a.size_bytes(), recount);
            match &ra {
                Err(KvError::NoSpace) => {
                    prop_assert_eq!(a.snapshot(), before);
                    prop_assert_eq!(a.size_bytes(), size);
                }
                Ok(Response::Put(_)) | Ok(Response::Txn(_)) if !cmd.is_read_only() => {
                    prop_assert!(a.size_bytes() <= quota);
                }
                _ => {}
            }
        }
        prop_assert_eq!(a.snapshot(), b.snapshot());
    }

    /// Batches round-trip through encode/decode.
    #[test]
    fn command_batches_round_trip(commands in prop::collection::vec(arb_any_command(), 0..20)) {
        let bytes = encode_batch(&commands);
        prop_assert_eq!(decode_batch(&bytes, commands.len()).unwrap(), commands.clone());
        if !commands.is_empty() {
            prop_assert!(decode_batch(&bytes, commands.len() - 1).is_err());
        }
    }

    /// Garbage never panics a decoder.
    #[test]
    fn garbage_bytes_never_panic_decoders(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Store::restore(&bytes);
        if let Ok(commands) = decode_batch(&bytes, 64) {
            let mut s = seeded_store();
            for cmd in &commands {
                let _ = s.apply(cmd);
            }
        }
    }

    /// A corrupted snapshot is refused or decodes to a store that encodes
    /// back to exactly the same bytes (the encoding is canonical).
    #[test]
    fn corrupted_snapshots_are_refused_or_canonical(
        steps in prop::collection::vec(arb_step(), 1..15),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut s = Store::new();
        for step in &steps {
            let cmd = to_command(step, s.revision());
            let _ = s.apply(&cmd);
        }
        let mut bytes = s.snapshot();
        for (at, x) in &flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        if let Ok(restored) = Store::restore(&bytes) {
            prop_assert_eq!(restored.snapshot(), bytes);
            let mut restored = restored;
            let _ = restored.apply(&PutRequest { key: b"a".to_vec(), ..Default::default() }.into());
            let _ = restored.compact(restored.revision());
        }
    }

    /// Corrupted batches are refused or decode to commands that apply
    /// without panicking.
    #[test]
    fn corrupted_batches_never_panic(
        commands in prop::collection::vec(arb_any_command(), 1..8),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = encode_batch(&commands);
        for (at, x) in &flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        if let Ok(decoded) = decode_batch(&bytes, 16) {
            let mut s = seeded_store();
            for cmd in &decoded {
                let before = s.snapshot();
                if s.apply(cmd).is_err() {
                    prop_assert_eq!(s.snapshot(), before);
                }
            }
        }
    }
}

// ---- value backends ------------------------------------------------------

/// Commands for the backend comparison: everything `arb_any_command`
/// makes, plus lease grants, revokes and puts under leases (revoking
/// deletes the lease's keys), and values from empty to past an LMDB page.
fn arb_backend_command() -> impl Strategy<Value = Command> {
    use kv::pb::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest};
    prop_oneof![
        10 => arb_any_command(),
        2 => (1i64..4, 5i64..100).prop_map(|(id, ttl)| Command::from(LeaseGrantRequest { id, ttl })),
        1 => (1i64..4).prop_map(|id| Command::from(LeaseRevokeRequest { id })),
        3 => (0usize..KEYS.len(), 0i64..4, 0usize..6000, any::<u8>()).prop_map(|(k, lease, n, b)| {
            Command::from(PutRequest {
                key: key(k),
                value: vec![b; n],
                lease,
                prev_kv: n % 2 == 0,
                ..Default::default()
            })
        }),
    ]
}

/// Everything a client or a replica can observe of a store.
#[derive(Debug, PartialEq)]
struct Observed {
    snapshot: Vec<u8>,
    digest: kv::Digest,
    hash_kv: Result<(u32, i64), KvError>,
    /// Watch events from revision 1 and a Range of every key, as text.
    reads: String,
    revision: i64,
    size_bytes: u64,
}

fn observe(s: &Store) -> Observed {
    let all = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..Default::default()
    };
    let watch = format!("{:?}", s.watch_events(&[0], &[0], 1, usize::MAX));
    let range = format!("{:?}", s.range(&all));
    Observed {
        snapshot: s.snapshot(),
        digest: s.state_digest(),
        hash_kv: s.hash_kv(0),
        reads: watch + &range,
        revision: s.revision(),
        size_bytes: s.size_bytes(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// The same commands on a store with heap values and one with LMDB
    /// values give the same responses, state digests, snapshots, HashKV,
    /// watch events and reads; a store restored from a snapshot onto LMDB
    /// midway, and the LMDB store restored over itself
    /// (`restore_reusing`), continue identically; both compare equal as
    /// stores.
    #[test]
    fn heap_and_lmdb_values_give_the_same_store(
        commands in prop::collection::vec(arb_backend_command(), 1..60),
        cut in 0usize..60,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let mut heap = seeded_store();
        // Seeded in the heap, then moved onto LMDB.
        let mut lmdb = seeded_store().into_backend(&kv::ValueBackend::Lmdb {
            dir: tmp.path().join("a"),
            map_size_bytes: 64 << 20,
        }).unwrap();
        let on_lmdb = matches!(lmdb.value_backend(), kv::ValueBackend::Lmdb { .. });
        prop_assert!(on_lmdb);
        let mut restored: Option<Store> = None;
        for (i, cmd) in commands.iter().enumerate() {
            if i == cut.min(commands.len() - 1) {
                let backend = kv::ValueBackend::Lmdb { dir: tmp.path().join("c"), map_size_bytes: 64 << 20 };
                let r = Store::restore_on(&heap.snapshot(), kv::DEFAULT_MAX_TXN_OPS, &backend).unwrap();
                prop_assert_eq!(observe(&r), observe(&heap));
                restored = Some(r);
                // State transfer's way: the LMDB store takes a snapshot
                // over, in its own environment.
                let bytes = lmdb.snapshot();
                lmdb = Store::restore_reusing(&bytes, lmdb).unwrap();
                prop_assert_eq!(observe(&lmdb), observe(&heap));
            }
            let want = heap.apply(cmd);
            prop_assert_eq!(&lmdb.apply(cmd), &want, "command {:?}", cmd);
            if let Some(r) = restored.as_mut() {
                prop_assert_eq!(&r.apply(cmd), &want);
            }
            if cmd.is_read_only() {
                prop_assert_eq!(&lmdb.execute_read_only(cmd), &heap.execute_read_only(cmd));
            }
            prop_assert_eq!(lmdb.state_digest(), heap.state_digest());
        }
        prop_assert_eq!(observe(&lmdb), observe(&heap));
        let restored = restored.unwrap();
        prop_assert_eq!(observe(&restored), observe(&heap));
        prop_assert!(lmdb == heap, "equal stores whatever the backend");
        // Every revision still readable agrees.
        for r in heap.compact_revision().max(1)..=heap.revision() {
            let req = RangeRequest { key: vec![0], range_end: vec![0], revision: r, ..Default::default() };
            prop_assert_eq!(lmdb.range(&req), heap.range(&req));
        }
    }
}
