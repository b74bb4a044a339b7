//! Simulated etcd clients and their operations.
//!
//! Each client is closed-loop: one operation outstanding, a think time,
//! then the next. Operations touch one key each (Get, Put, Delete,
//! compare-and-swap Txn), so linearizability can be checked key by key.
//! Every written value is unique (`w<op id>`), which lets the checker map
//! a value read back to the write that produced it.

use std::collections::BTreeMap;

use kv::pb::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op::Request as TxnOp,
    response_op::Response as TxnResponseOp,
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use kv::{Command, KvError, Response};
use wire::ReplicaId;

use crate::params::WorkloadParams;
use crate::rng::Prng;

/// Index of an operation in the history; also the id of the value it writes.
pub type OpId = u32;

/// A value in the store: the id of the operation that wrote it.
pub type Value = u32;

/// One client operation on one key (`key` is the index in `k0..`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvOp {
    /// Range of one key (linearizable: ordered through consensus).
    Get {
        /// The key.
        key: u32,
    },
    /// Put with `prev_kv`.
    Put {
        /// The key.
        key: u32,
        /// The (unique) value written.
        value: Value,
    },
    /// DeleteRange of one key with `prev_kv`.
    Delete {
        /// The key.
        key: u32,
    },
    /// Txn: if value(key) == expect then put(key, new) else get(key).
    Cas {
        /// The key.
        key: u32,
        /// The value compared against.
        expect: Value,
        /// The (unique) value written if the compare holds.
        new: Value,
    },
}

/// What an operation returned. `revision` is the response header's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOutput {
    /// The value and its `mod_revision`, if the key exists.
    Get {
        /// The value and its `mod_revision`.
        value: Option<(Value, i64)>,
        /// Store revision.
        revision: i64,
    },
    /// The previous value (`prev_kv`).
    Put {
        /// The value before the put.
        prev: Option<Value>,
        /// Store revision (the put's own).
        revision: i64,
    },
    /// The deleted value, if one was deleted.
    Delete {
        /// The value deleted.
        prev: Option<Value>,
        /// Store revision.
        revision: i64,
    },
    /// Whether the compare held; the current value when it did not.
    Cas {
        /// The compare held and the put ran.
        ok: bool,
        /// The value read by the failure branch.
        current: Option<Value>,
        /// Store revision.
        revision: i64,
    },
    /// The store refused the command, or the response did not parse.
    Error(String),
}

impl KvOutput {
    /// `header.revision` of the response.
    pub fn revision(&self) -> Option<i64> {
        match self {
            KvOutput::Get { revision, .. }
            | KvOutput::Put { revision, .. }
            | KvOutput::Delete { revision, .. }
            | KvOutput::Cas { revision, .. } => Some(*revision),
            KvOutput::Error(_) => None,
        }
    }
}

/// `k<i>`.
pub fn key_bytes(key: u32) -> Vec<u8> {
    format!("k{key}").into_bytes()
}

/// `w<value>`.
pub fn value_bytes(v: Value) -> Vec<u8> {
    format!("w{v}").into_bytes()
}

/// Parses `w<value>`.
pub fn parse_value(bytes: &[u8]) -> Option<Value> {
    std::str::from_utf8(bytes.strip_prefix(b"w")?)
        .ok()?
        .parse()
        .ok()
}

impl KvOp {
    /// The key it touches.
    pub fn key(&self) -> u32 {
        match *self {
            KvOp::Get { key }
            | KvOp::Put { key, .. }
            | KvOp::Delete { key }
            | KvOp::Cas { key, .. } => key,
        }
    }

    /// True if the operation can change the store.
    pub fn writes(&self) -> bool {
        !matches!(self, KvOp::Get { .. })
    }

    /// The etcd command for this operation.
    pub fn command(&self) -> Command {
        match *self {
            KvOp::Get { key } => Command::from(RangeRequest {
                key: key_bytes(key),
                ..Default::default()
            }),
            KvOp::Put { key, value } => Command::from(put(key, value)),
            KvOp::Delete { key } => Command::from(DeleteRangeRequest {
                key: key_bytes(key),
                prev_kv: true,
                ..Default::default()
            }),
            KvOp::Cas { key, expect, new } => Command::from(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Value as i32,
                    key: key_bytes(key),
                    range_end: Vec::new(),
                    target_union: Some(TargetUnion::Value(value_bytes(expect))),
                }],
                success: vec![RequestOp {
                    request: Some(TxnOp::RequestPut(put(key, new))),
                }],
                failure: vec![RequestOp {
                    request: Some(TxnOp::RequestRange(RangeRequest {
                        key: key_bytes(key),
                        ..Default::default()
                    })),
                }],
            }),
        }
    }

    /// Reads the store's answer to [`KvOp::command`].
    pub fn output(&self, result: Result<Response, KvError>) -> KvOutput {
        let r = match result {
            Ok(r) => r,
            Err(e) => return KvOutput::Error(e.to_string()),
        };
        let revision = r.revision();
        let parsed = match (self, r) {
            (KvOp::Get { .. }, Response::Range(g)) => match g.kvs.as_slice() {
                [] => Some(KvOutput::Get {
                    value: None,
                    revision,
                }),
                [kv] => parse_value(&kv.value).map(|v| KvOutput::Get {
                    value: Some((v, kv.mod_revision)),
                    revision,
                }),
                _ => None,
            },
            (KvOp::Put { .. }, Response::Put(p)) => match p.prev_kv {
                None => Some(KvOutput::Put {
                    prev: None,
                    revision,
                }),
                Some(kv) => parse_value(&kv.value).map(|v| KvOutput::Put {
                    prev: Some(v),
                    revision,
                }),
            },
            (KvOp::Delete { .. }, Response::DeleteRange(d)) => {
                match (d.deleted, d.prev_kvs.as_slice()) {
                    (0, []) => Some(KvOutput::Delete {
                        prev: None,
                        revision,
                    }),
                    (1, [kv]) => parse_value(&kv.value).map(|v| KvOutput::Delete {
                        prev: Some(v),
                        revision,
                    }),
                    _ => None,
                }
            }
            (KvOp::Cas { .. }, Response::Txn(t)) => {
                let current = match (t.succeeded, t.responses.as_slice()) {
                    (true, [_]) => Some(None),
                    (false, [op]) => match &op.response {
                        Some(TxnResponseOp::ResponseRange(g)) => match g.kvs.as_slice() {
                            [] => Some(None),
                            [kv] => parse_value(&kv.value).map(Some),
                            _ => None,
                        },
                        _ => None,
                    },
                    _ => None,
                };
                current.map(|current| KvOutput::Cas {
                    ok: t.succeeded,
                    current,
                    revision,
                })
            }
            _ => None,
        };
        parsed.unwrap_or_else(|| KvOutput::Error(format!("unexpected response shape for {self:?}")))
    }
}

fn put(key: u32, value: Value) -> PutRequest {
    PutRequest {
        key: key_bytes(key),
        value: value_bytes(value),
        prev_kv: true,
        ..Default::default()
    }
}

/// One simulated etcd client, attached to one replica.
#[derive(Debug)]
pub struct Client {
    /// Index among all clients.
    pub index: usize,
    /// The replica it talks to.
    pub replica: ReplicaId,
    /// Operations still to call.
    pub ops_left: u32,
    /// Earliest tick of the next call.
    pub next_tick: u64,
    /// The outstanding operation.
    pub busy: Option<OpId>,
    rng: Prng,
    /// Values this client saw per key (for plausible CAS expectations).
    seen: BTreeMap<u32, Value>,
}

impl Client {
    /// A client calling `ops` operations at `replica`.
    pub fn new(index: usize, replica: ReplicaId, ops: u32, rng: Prng) -> Self {
        Self {
            index,
            replica,
            ops_left: ops,
            next_tick: 0,
            busy: None,
            rng,
            seen: BTreeMap::new(),
        }
    }

    /// True if the client wants to call now.
    pub fn ready(&self, now: u64) -> bool {
        self.busy.is_none() && self.ops_left > 0 && now >= self.next_tick
    }

    /// Draws the next operation; `id` becomes its id and written value.
    pub fn next_op(&mut self, w: &WorkloadParams, id: OpId) -> KvOp {
        let key = self.rng.range(0, w.keys as u64 - 1) as u32;
        let m = w.mix;
        let total = (m.get + m.put + m.delete + m.cas).max(1) as u64;
        let mut x = self.rng.range(0, total - 1) as u32;
        self.ops_left -= 1;
        self.busy = Some(id);
        for (weight, kind) in [(m.get, 0), (m.put, 1), (m.delete, 2), (m.cas, 3)] {
            if x < weight {
                return match kind {
                    0 => KvOp::Get { key },
                    1 => KvOp::Put { key, value: id },
                    2 => KvOp::Delete { key },
                    _ => KvOp::Cas {
                        key,
                        // A value seen on this key if any (often still
                        // current), else one that never existed.
                        expect: self.seen.get(&key).copied().unwrap_or(u32::MAX),
                        new: id,
                    },
                };
            }
            x -= weight;
        }
        KvOp::Get { key }
    }

    /// The outstanding operation returned at `now`.
    pub fn complete(&mut self, op: &KvOp, out: &KvOutput, now: u64, w: &WorkloadParams) {
        self.busy = None;
        self.next_tick = now + self.rng.range(0, w.think_ticks_max);
        let seen = match (op, out) {
            (
                KvOp::Get { .. },
                KvOutput::Get {
                    value: Some((v, _)),
                    ..
                },
            ) => Some(*v),
            (KvOp::Put { value, .. }, KvOutput::Put { .. }) => Some(*value),
            (KvOp::Cas { new, .. }, KvOutput::Cas { ok: true, .. }) => Some(*new),
            (
                KvOp::Cas { .. },
                KvOutput::Cas {
                    current: Some(v), ..
                },
            ) => Some(*v),
            _ => None,
        };
        if let Some(v) = seen {
            self.seen.insert(op.key(), v);
        }
    }

    /// The replica crashed with this client's operation outstanding: the
    /// call never returns (the history keeps it open forever).
    pub fn abandon(&mut self, now: u64) {
        self.busy = None;
        self.next_tick = now + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_round_trip_through_the_store() {
        let mut s = kv::Store::new();
        let put = KvOp::Put { key: 1, value: 7 };
        let out = put.output(s.apply(&put.command()));
        assert_eq!(
            out,
            KvOutput::Put {
                prev: None,
                revision: 2
            }
        );
        let get = KvOp::Get { key: 1 };
        assert_eq!(
            get.output(s.execute_read_only(&get.command())),
            KvOutput::Get {
                value: Some((7, 2)),
                revision: 2
            }
        );
        let cas = KvOp::Cas {
            key: 1,
            expect: 7,
            new: 9,
        };
        assert_eq!(
            cas.output(s.apply(&cas.command())),
            KvOutput::Cas {
                ok: true,
                current: None,
                revision: 3
            }
        );
        let cas = KvOp::Cas {
            key: 1,
            expect: 7,
            new: 10,
        };
        assert_eq!(
            cas.output(s.apply(&cas.command())),
            KvOutput::Cas {
                ok: false,
                current: Some(9),
                revision: 3
            }
        );
        let del = KvOp::Delete { key: 1 };
        assert_eq!(
            del.output(s.apply(&del.command())),
            KvOutput::Delete {
                prev: Some(9),
                revision: 4
            }
        );
        assert_eq!(
            del.output(s.apply(&del.command())),
            KvOutput::Delete {
                prev: None,
                revision: 4
            }
        );
        // A CAS on a missing key fails (etcd: a VALUE compare on no key).
        let cas = KvOp::Cas {
            key: 1,
            expect: 9,
            new: 11,
        };
        assert_eq!(
            cas.output(s.apply(&cas.command())),
            KvOutput::Cas {
                ok: false,
                current: None,
                revision: 4
            }
        );
    }
}
