//! The client history: every operation's call and return, stamped with a
//! logical time (tick, then order within the tick), for the
//! linearizability checker.

use wire::ReplicaId;

use crate::workload::{KvOp, KvOutput, OpId};

/// Logical time: `seq` totally orders all calls and returns of a run;
/// `tick` is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time {
    /// Position in the run-wide order of calls and returns.
    pub seq: u64,
    /// The tick it happened in.
    pub tick: u64,
}

/// One client operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Index in the history (and the value a write writes).
    pub id: OpId,
    /// The calling client.
    pub client: usize,
    /// The replica the client talks to.
    pub replica: ReplicaId,
    /// What was asked.
    pub op: KvOp,
    /// When it was called.
    pub call: Time,
    /// When and what it returned; `None` if it never did.
    pub ret: Option<(Time, KvOutput)>,
    /// The replica crashed with the call outstanding: it will never
    /// return, and liveness does not wait for it.
    pub abandoned: bool,
}

/// All operations of a run, indexed by [`OpId`].
#[derive(Debug, Default, Clone)]
pub struct History {
    /// Every operation, by id.
    pub ops: Vec<Operation>,
    next_seq: u64,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// The id the next [`History::call`] will get.
    pub fn next_id(&self) -> OpId {
        OpId::try_from(self.ops.len()).expect("fewer than 2^32 operations")
    }

    fn stamp(&mut self, tick: u64) -> Time {
        self.next_seq += 1;
        Time {
            seq: self.next_seq,
            tick,
        }
    }

    /// Records a call; returns its id (== [`History::next_id`] before).
    pub fn call(&mut self, tick: u64, client: usize, replica: ReplicaId, op: KvOp) -> OpId {
        let id = self.next_id();
        let call = self.stamp(tick);
        self.ops.push(Operation {
            id,
            client,
            replica,
            op,
            call,
            ret: None,
            abandoned: false,
        });
        id
    }

    /// Records the return of `id`.
    pub fn ret(&mut self, tick: u64, id: OpId, out: KvOutput) {
        let t = self.stamp(tick);
        let op = &mut self.ops[id as usize];
        assert!(op.ret.is_none(), "operation {id} returned twice");
        assert!(!op.abandoned, "abandoned operation {id} returned");
        op.ret = Some((t, out));
    }

    /// Marks `id` as never going to return.
    pub fn abandon(&mut self, id: OpId) {
        let op = &mut self.ops[id as usize];
        assert!(op.ret.is_none());
        op.abandoned = true;
    }

    /// Operations still owed a return (called, not returned, not abandoned).
    pub fn outstanding(&self) -> impl Iterator<Item = &Operation> {
        self.ops.iter().filter(|o| o.ret.is_none() && !o.abandoned)
    }

    /// Number of operations that returned.
    pub fn completed(&self) -> usize {
        self.ops.iter().filter(|o| o.ret.is_some()).count()
    }
}
