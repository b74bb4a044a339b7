//! Linearizability of client histories against a sequential key-value
//! model, checked key by key (P-compositionality: a history is
//! linearizable iff each key's sub-history is, since every operation
//! touches one key).
//!
//! Per key: Wing & Gong's search with Lowe's memoization, as in porcupine
//! (`checkSingle`): walk the calls and returns in time order, try to
//! linearize each pending call, backtrack at a return whose call is not yet
//! linearized, and never revisit a (linearized set, state) pair. The
//! search is bounded by [`STEPS_MAX`]; a key that exceeds it is reported
//! as inconclusive, not as a violation.
//!
//! An operation that never returned may take effect at any point after its
//! call, or never, which is the same as taking effect after everything
//! else: its return time is infinity and any output is accepted.
//!
//! Beyond values, [`check_revisions`] checks etcd's revisions across keys:
//! effective writes get distinct revisions, in real-time order; every
//! response's revision covers the writes that finished before its call;
//! a value read back carries the `mod_revision` its write returned.

use std::collections::{BTreeMap, HashSet};

use crate::checkers::{Check, Violation};
use crate::history::{History, Operation};
use crate::workload::{KvOp, KvOutput, Value};

/// Most search steps per key before giving up (inconclusive).
pub const STEPS_MAX: u64 = 2_000_000;

/// The model's state of one key: its value, if it exists.
type State = Option<Value>;

/// The sequential specification: the state after `op` returned `out` in
/// `state`, or `None` if that cannot happen. `out == None`: the operation
/// never returned; any output goes.
pub fn step(state: State, op: &KvOp, out: Option<&KvOutput>) -> Option<State> {
    match (op, out) {
        (KvOp::Get { .. }, None) => Some(state),
        (KvOp::Get { .. }, Some(KvOutput::Get { value, .. })) => {
            (value.map(|(v, _)| v) == state).then_some(state)
        }
        (KvOp::Put { value, .. }, None) => Some(Some(*value)),
        (KvOp::Put { value, .. }, Some(KvOutput::Put { prev, .. })) => {
            (*prev == state).then_some(Some(*value))
        }
        (KvOp::Delete { .. }, None) => Some(None),
        (KvOp::Delete { .. }, Some(KvOutput::Delete { prev, .. })) => {
            (*prev == state).then_some(None)
        }
        (KvOp::Cas { expect, new, .. }, None) => Some(if state == Some(*expect) {
            Some(*new)
        } else {
            state
        }),
        (KvOp::Cas { expect, new, .. }, Some(KvOutput::Cas { ok, current, .. })) => {
            if *ok {
                (state == Some(*expect)).then_some(Some(*new))
            } else {
                (state != Some(*expect) && *current == state).then_some(state)
            }
        }
        _ => None,
    }
}

/// The verdict on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A linearization exists.
    Linearizable,
    /// None exists: a violation.
    NotLinearizable,
    /// The search hit its bound.
    Inconclusive,
}

const NIL: usize = usize::MAX;

/// Checks one key's operations (all on the same key).
pub fn check_key(ops: &[&Operation]) -> Verdict {
    // Events: (time, is_return, op index). A missing return is at infinity.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
    for (i, o) in ops.iter().enumerate() {
        events.push((o.call.seq, false, i));
        let t = o.ret.as_ref().map_or(u64::MAX, |(t, _)| t.seq);
        events.push((t, true, i));
    }
    events.sort();
    // Doubly linked list over nodes 1..=len; node 0 is the head.
    let len = events.len();
    let mut next: Vec<usize> = (1..=len + 1)
        .map(|i| if i <= len { i } else { NIL })
        .collect();
    let mut prev: Vec<usize> = (0..=len).map(|i| i.wrapping_sub(1)).collect();
    next[len] = NIL;
    prev[0] = NIL;
    let mut ret_node = vec![0usize; ops.len()];
    for (k, e) in events.iter().enumerate() {
        if e.1 {
            ret_node[e.2] = k + 1;
        }
    }
    let node_event = |node: usize| events[node - 1];

    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut state: State = None;
    let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut entry = next[0];
    let mut steps = 0u64;

    while next[0] != NIL {
        steps += 1;
        if steps > STEPS_MAX {
            return Verdict::Inconclusive;
        }
        if entry == NIL {
            // Only reachable if every remaining entry was tried: backtrack.
            let Some((call, s)) = stack.pop() else {
                return Verdict::NotLinearizable;
            };
            let (_, _, i) = node_event(call);
            linearized[i / 64] &= !(1 << (i % 64));
            state = s;
            unlift(&mut next, &mut prev, call, ret_node[i]);
            entry = next[call];
            continue;
        }
        let (_, is_return, i) = node_event(entry);
        if !is_return {
            let out = ops[i].ret.as_ref().map(|(_, o)| o);
            if let Some(new_state) = step(state, &ops[i].op, out) {
                let mut lin = linearized.clone();
                lin[i / 64] |= 1 << (i % 64);
                if cache.insert((lin.clone(), new_state)) {
                    stack.push((entry, state));
                    state = new_state;
                    linearized = lin;
                    lift(&mut next, &mut prev, entry, ret_node[i]);
                    entry = next[0];
                    continue;
                }
            }
            entry = next[entry];
        } else {
            // A return of an operation not yet linearized: undo the last choice.
            let Some((call, s)) = stack.pop() else {
                return Verdict::NotLinearizable;
            };
            let (_, _, j) = node_event(call);
            linearized[j / 64] &= !(1 << (j % 64));
            state = s;
            unlift(&mut next, &mut prev, call, ret_node[j]);
            entry = next[call];
        }
    }
    Verdict::Linearizable
}

fn lift(next: &mut [usize], prev: &mut [usize], call: usize, ret: usize) {
    next[prev[call]] = next[call];
    if next[call] != NIL {
        prev[next[call]] = prev[call];
    }
    next[prev[ret]] = next[ret];
    if next[ret] != NIL {
        prev[next[ret]] = prev[ret];
    }
}

fn unlift(next: &mut [usize], prev: &mut [usize], call: usize, ret: usize) {
    next[prev[ret]] = ret;
    if next[ret] != NIL {
        prev[next[ret]] = ret;
    }
    next[prev[call]] = call;
    if next[call] != NIL {
        prev[next[call]] = call;
    }
}

/// What the history checks found.
#[derive(Debug, Default)]
pub struct Findings {
    /// Non-linearizable keys, revision anomalies, failed operations.
    pub violations: Vec<Violation>,
    /// Keys whose search hit [`STEPS_MAX`].
    pub inconclusive_keys: u32,
}

/// Checks every key of `history`, and the revisions across keys.
/// Operations that returned an error are reported (our clients never send
/// an invalid command) and left out; reads that never returned are left
/// out (they changed nothing).
pub fn check_history(history: &History, tick: u64) -> Findings {
    let mut f = Findings::default();
    let mut by_key: BTreeMap<u32, Vec<&Operation>> = BTreeMap::new();
    for o in &history.ops {
        match &o.ret {
            Some((_, KvOutput::Error(e))) => f.violations.push(Violation {
                check: Check::KvError,
                tick,
                detail: format!("op #{} {:?} at {:?} failed: {e}", o.id, o.op, o.replica),
            }),
            None if !o.op.writes() => {}
            _ => by_key.entry(o.op.key()).or_default().push(o),
        }
    }
    for (key, ops) in &by_key {
        match check_key(ops) {
            Verdict::Linearizable => {}
            Verdict::Inconclusive => f.inconclusive_keys += 1,
            Verdict::NotLinearizable => f.violations.push(Violation {
                check: Check::Linearizability,
                tick,
                detail: format!("key k{key}: history not linearizable:\n{}", render(ops)),
            }),
        }
    }
    f.violations.extend(check_revisions(history, tick));
    f
}

/// Renders one key's operations, one per line, for a violation report.
fn render(ops: &[&Operation]) -> String {
    ops.iter()
        .map(|o| {
            let ret = match &o.ret {
                Some((t, out)) => format!("ret t{}#{} {:?}", t.tick, t.seq, out),
                None => "never returned".to_string(),
            };
            format!(
                "    #{:<4} c{:<2} {:?} call t{}#{} {:?} -> {}",
                o.id, o.client, o.replica, o.call.tick, o.call.seq, o.op, ret
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Revision checks across keys (see the module doc).
pub fn check_revisions(history: &History, tick: u64) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut bad = |detail: String| {
        out.push(Violation {
            check: Check::Revisions,
            tick,
            detail,
        })
    };
    // Effective writes that returned: (ret seq, call seq, revision, op id).
    let mut writes: Vec<(u64, u64, i64, u32)> = Vec::new();
    let mut revision_of_value: BTreeMap<Value, i64> = BTreeMap::new();
    for o in &history.ops {
        let Some((t, r)) = &o.ret else { continue };
        let effective = match (&o.op, r) {
            (KvOp::Put { value, .. }, KvOutput::Put { revision, .. }) => Some((*value, *revision)),
            (
                KvOp::Delete { .. },
                KvOutput::Delete {
                    prev: Some(_),
                    revision,
                },
            ) => Some((u32::MAX, *revision)),
            (
                KvOp::Cas { new, .. },
                KvOutput::Cas {
                    ok: true, revision, ..
                },
            ) => Some((*new, *revision)),
            _ => None,
        };
        if let Some((value, revision)) = effective {
            writes.push((t.seq, o.call.seq, revision, o.id));
            if value != u32::MAX {
                revision_of_value.insert(value, revision);
            }
        }
    }
    let mut seen: BTreeMap<i64, u32> = BTreeMap::new();
    for w in &writes {
        if let Some(other) = seen.insert(w.2, w.3) {
            bad(format!(
                "writes #{other} and #{} both at revision {}",
                w.3, w.2
            ));
        }
    }
    // Prefix maxima of write revisions by return time.
    writes.sort();
    let mut prefix_max: Vec<(u64, i64, u32)> = Vec::with_capacity(writes.len());
    let mut best = (i64::MIN, 0u32);
    for w in &writes {
        if w.2 > best.0 {
            best = (w.2, w.3);
        }
        prefix_max.push((w.0, best.0, best.1));
    }
    let max_before = |call: u64| -> Option<(i64, u32)> {
        let k = prefix_max.partition_point(|p| p.0 < call);
        k.checked_sub(1).map(|i| (prefix_max[i].1, prefix_max[i].2))
    };
    for o in &history.ops {
        let Some((_, r)) = &o.ret else { continue };
        let Some(revision) = r.revision() else {
            continue;
        };
        if let Some((before, w)) = max_before(o.call.seq) {
            let is_write = writes.iter().any(|x| x.3 == o.id);
            if (is_write && revision <= before) || revision < before {
                bad(format!(
                    "op #{} {:?} returned revision {revision}, but write #{w} finished before its call at revision {before}",
                    o.id, o.op
                ));
            }
        }
        if let KvOutput::Get {
            value: Some((v, mod_revision)),
            ..
        } = r
        {
            if let Some(expected) = revision_of_value.get(v) {
                if expected != mod_revision {
                    bad(format!(
                        "op #{} read w{v} with mod_revision {mod_revision}, but its write returned revision {expected}",
                        o.id
                    ));
                }
            }
        }
    }
    out
}
