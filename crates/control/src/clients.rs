//! Request de-duplication: which `(client, seq)` pairs were already
//! executed. Part of the replicated state (it decides what executes, so it
//! must be identical everywhere and travel with checkpoints).
//!
//! Each client may have up to [`WINDOW`] requests outstanding. Per client the
//! table keeps `low` (every seq below it counts as executed) and a bitmap of
//! executed seqs in `[low, low + WINDOW)`. A request more than `WINDOW` ahead
//! slides the window forward; seqs left behind count as executed, so a
//! client that exceeds its window loses requests, never duplicates them.

use std::collections::BTreeMap;

use wire::codec::{DecodeError, Reader, Writer};
use wire::ClientId;

/// Outstanding requests allowed per client, and the width of the bitmap.
pub const WINDOW: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Slot {
    low: u64,
    executed: u64,
}

/// Executed `(client, seq)` pairs, per client.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientTable {
    clients: BTreeMap<ClientId, Slot>,
}

impl ClientTable {
    /// True if `(client, seq)` was executed (or fell behind the window).
    pub fn is_executed(&self, client: ClientId, seq: u64) -> bool {
        let Some(s) = self.clients.get(&client) else {
            return false;
        };
        if seq < s.low {
            return true;
        }
        let off = seq - s.low;
        off < WINDOW && s.executed & (1 << off) != 0
    }

    /// Marks `(client, seq)` executed. Returns false (and changes nothing)
    /// if it already was: the caller must then not execute it.
    pub fn mark_executed(&mut self, client: ClientId, seq: u64) -> bool {
        if self.is_executed(client, seq) {
            return false;
        }
        let s = self.clients.entry(client).or_default();
        if seq - s.low >= WINDOW {
            let new_low = seq - (WINDOW - 1);
            let shift = new_low - s.low;
            s.executed = if shift >= WINDOW {
                0
            } else {
                s.executed >> shift
            };
            s.low = new_low;
        }
        s.executed |= 1 << (seq - s.low);
        while s.executed & 1 == 1 {
            s.executed >>= 1;
            s.low += 1;
        }
        assert!(
            self.is_executed(client, seq),
            "marked seq must read as executed"
        );
        true
    }

    /// Lowest seq of `client` not yet known executed.
    pub fn low(&self, client: ClientId) -> u64 {
        self.clients.get(&client).map_or(0, |s| s.low)
    }

    /// Number of clients with entries.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Canonical encoding (for checkpoints and the state digest).
    pub fn encode(&self, w: &mut Writer) {
        w.count(self.clients.len());
        for (c, s) in &self.clients {
            w.u64(c.0);
            w.u64(s.low);
            w.u64(s.executed);
        }
    }

    /// Decodes [`ClientTable::encode`]; at most `clients_max` entries.
    pub fn decode(r: &mut Reader<'_>, clients_max: usize) -> Result<Self, DecodeError> {
        let n = r.count("client table", clients_max, 24)?;
        let mut clients = BTreeMap::new();
        let mut last = None;
        for _ in 0..n {
            let c = ClientId(r.u64()?);
            if last.is_some_and(|l| l >= c) {
                return Err(DecodeError::Invalid("client table order"));
            }
            last = Some(c);
            let slot = Slot {
                low: r.u64()?,
                executed: r.u64()?,
            };
            if slot.executed & 1 == 1 {
                return Err(DecodeError::Invalid("client table bitmap"));
            }
            clients.insert(c, slot);
        }
        Ok(Self { clients })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const C: ClientId = ClientId(7);

    #[test]
    fn each_seq_executes_once_in_any_order() {
        let mut t = ClientTable::default();
        for seq in [3, 1, 0, 2, 5] {
            assert!(t.mark_executed(C, seq));
            assert!(!t.mark_executed(C, seq));
        }
        assert_eq!(t.low(C), 4);
        assert!(!t.is_executed(C, 4));
        assert!(t.is_executed(C, 5));
    }

    #[test]
    fn a_jump_past_the_window_slides_it_and_retires_the_gap() {
        let mut t = ClientTable::default();
        assert!(t.mark_executed(C, 0));
        assert!(t.mark_executed(C, 1000));
        assert!(t.is_executed(C, 1000 - WINDOW)); // fell behind: never executes
        assert!(!t.is_executed(C, 999));
        assert!(t.mark_executed(C, 999));
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let mut t = ClientTable::default();
        t.mark_executed(C, 4);
        t.mark_executed(ClientId(1), 0);
        let mut w = Writer::default();
        t.encode(&mut w);
        let back = ClientTable::decode(&mut Reader::new(w.as_slice()), 16).unwrap();
        assert_eq!(back, t);
        assert!(ClientTable::decode(&mut Reader::new(&[0, 0, 0, 9]), 16).is_err());
    }

    proptest! {
        /// Against a set-based model: a seq executes at most once, and at
        /// least once if the client never runs more than WINDOW ahead.
        #[test]
        fn matches_set_model(seqs in prop::collection::vec(0u64..200, 1..400)) {
            let mut t = ClientTable::default();
            let mut done = std::collections::BTreeSet::new();
            for s in seqs {
                let max_done = done.iter().next_back().copied();
                let within = max_done.is_none_or(|m| s + WINDOW > m);
                let first = t.mark_executed(C, s);
                if first { prop_assert!(done.insert(s), "seq {} executed twice", s); }
                else if within { prop_assert!(done.contains(&s) || s < t.low(C)); }
            }
        }
    }
}
