//! The state digest kept as writes execute (issue 10, item 2;
//! docs/design/state-at-scale.md): checkpoints agree on the kv state
//! without a pass over the store.
//!
//! Every history entry (key, revision, event) has an [`LtHash`]: BLAKE3 in
//! XOF mode over a domain tag and the entry's canonical encoding (the one
//! snapshots use), read as [`LANES`] little-endian u16 lanes. A set of
//! entries hashes to the lane-wise sum mod 2^16 of its entries' hashes
//! (LtHash16: Lewi, Kim, Maykov, Weis, "Securing Update Propagation with
//! Homomorphic Hashing", IACR ePrint 2019/227; 1024 lanes of 16 bits give
//! about 200 bits of security against two multisets with one hash). Adding
//! or removing an entry costs one XOF of 2 KiB and 1024 additions, and the
//! sum does not depend on the order entries were added in.
//!
//! Entries are grouped in revision ranges `[start_i, start_{i+1})`
//! ([`Ranges`]): the open (last) range takes every new entry and is closed
//! once a write transaction leaves it holding [`RANGE_BYTES_TARGET`] bytes
//! or more; compaction removes the entries it drops and then merges
//! neighbouring closed ranges that fit the target together. The range
//! starts are replicated state (they travel in the kv snapshot); each range
//! is one unit of a streaming state transfer, checked against its hash.

use crate::store::Entry;

/// Lanes of an [`LtHash`] (LtHash16 with n = 1024: 2 KiB).
pub const LANES: usize = 1024;

/// Entry bytes ([`crate::store::entry_bytes`]: key, value and the fixed
/// overhead) at which the open range is closed: the size of one state
/// transfer chunk (plus at most one write transaction).
pub const RANGE_BYTES_TARGET: u64 = 4 << 20;

/// Domain separation of entry hashes from every other BLAKE3 use.
const ENTRY_DOMAIN: &[u8] = b"bftd kv entry lthash16 v1";

/// A homomorphic set hash: 1024 lanes of u16, added and subtracted lane by
/// lane mod 2^16. The hash of the empty set is all zeros.
#[derive(Clone, PartialEq, Eq)]
pub struct LtHash(Box<[u16; LANES]>);

impl Default for LtHash {
    fn default() -> Self {
        LtHash(Box::new([0; LANES]))
    }
}

impl std::fmt::Debug for LtHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LtHash({:?})", self.digest())
    }
}

impl LtHash {
    /// The hash of one element given by its canonical bytes, fed to `feed`
    /// (which may call the hasher any number of times).
    pub fn of(feed: impl FnOnce(&mut blake3::Hasher)) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(ENTRY_DOMAIN);
        feed(&mut h);
        let mut bytes = [0u8; LANES * 2];
        h.finalize_xof().fill(&mut bytes);
        let mut lanes = Box::new([0u16; LANES]);
        for (lane, b) in lanes.iter_mut().zip(bytes.chunks_exact(2)) {
            *lane = u16::from_le_bytes([b[0], b[1]]);
        }
        LtHash(lanes)
    }

    /// Adds `other`'s set to this one.
    pub fn add(&mut self, other: &LtHash) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a = a.wrapping_add(*b);
        }
    }

    /// Removes `other`'s set from this one (the inverse of [`LtHash::add`]).
    pub fn sub(&mut self, other: &LtHash) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a = a.wrapping_sub(*b);
        }
    }

    /// Whether this is the hash of the empty set.
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|l| *l == 0)
    }

    /// A 32-byte digest of the lanes (what the state digest and a transfer
    /// manifest carry).
    pub fn digest(&self) -> wire::Digest {
        let mut h = blake3::Hasher::new();
        for lane in self.0.iter() {
            h.update(&lane.to_le_bytes());
        }
        wire::Digest(*h.finalize().as_bytes())
    }
}

/// One revision range: the entries with `start <= main < next start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// First main revision of the range.
    pub start: i64,
    /// History entries in it.
    pub entries: u64,
    /// Sum of their [`crate::store::entry_bytes`].
    pub bytes: u64,
    /// Sum of their [`LtHash`]es.
    pub hash: LtHash,
}

impl Range {
    fn empty(start: i64) -> Self {
        Range {
            start,
            entries: 0,
            bytes: 0,
            hash: LtHash::default(),
        }
    }
}

/// The revision ranges of a store, ascending by start, never empty: the
/// last one is open. Invariants (asserted by [`Ranges::check`]): starts
/// ascend strictly, the first is at least 1, every closed range holds at
/// least one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranges {
    ranges: Vec<Range>,
}

impl Default for Ranges {
    fn default() -> Self {
        Ranges::new()
    }
}

impl Ranges {
    /// One open range from revision 1: a new store.
    pub fn new() -> Self {
        Ranges {
            ranges: vec![Range::empty(1)],
        }
    }

    /// Empty ranges at `starts` (as read from a snapshot). `None` if the
    /// starts are empty, not strictly ascending or below 1.
    pub fn with_starts(starts: &[i64]) -> Option<Self> {
        if starts.is_empty() || starts[0] < 1 || starts.windows(2).any(|w| w[0] >= w[1]) {
            return None;
        }
        Some(Ranges {
            ranges: starts.iter().map(|s| Range::empty(*s)).collect(),
        })
    }

    /// The ranges, ascending; the last is the open one.
    pub fn ranges(&self) -> &[Range] {
        &self.ranges
    }

    /// Index of the range holding main revision `main`; `None` below the
    /// first start.
    fn index_of(&self, main: i64) -> Option<usize> {
        self.ranges
            .partition_point(|r| r.start <= main)
            .checked_sub(1)
    }

    /// Adds entry `e` of `key` with `value` (empty for a tombstone), of
    /// `bytes` entry bytes. `false` (nothing changed) if `e` lies below the
    /// first range.
    pub(crate) fn add(&mut self, key: &[u8], e: &Entry, value: &[u8], bytes: u64) -> bool {
        let Some(i) = self.index_of(e.rev.main) else {
            return false;
        };
        let r = &mut self.ranges[i];
        r.entries += 1;
        r.bytes += bytes;
        r.hash.add(&entry_hash(key, e, value));
        true
    }

    /// Removes entry `e` of `key` (added before with the same `value` and
    /// `bytes`).
    ///
    /// # Panics
    /// If its range does not hold it (a broken store invariant).
    pub(crate) fn remove(&mut self, key: &[u8], e: &Entry, value: &[u8], bytes: u64) {
        let i = self
            .index_of(e.rev.main)
            .expect("a stored entry lies in a range");
        let r = &mut self.ranges[i];
        r.entries = r.entries.checked_sub(1).expect("the range holds the entry");
        r.bytes = r
            .bytes
            .checked_sub(bytes)
            .expect("the range counts the entry");
        r.hash.sub(&entry_hash(key, e, value));
    }

    /// Closes the open range if it holds [`RANGE_BYTES_TARGET`] bytes or
    /// more: the next one starts at `next_revision` (the next write's main
    /// revision). Call after each committed write transaction.
    pub(crate) fn close_if_full(&mut self, next_revision: i64) {
        let open = self.ranges.last().expect("ranges are never empty");
        if open.bytes >= RANGE_BYTES_TARGET && next_revision > open.start {
            self.ranges.push(Range::empty(next_revision));
        }
    }

    /// After a compaction: drops closed ranges left empty and merges each
    /// closed range into the closed range before it when both fit
    /// [`RANGE_BYTES_TARGET`] together. The open range is left as it is.
    pub(crate) fn merge_after_compaction(&mut self) {
        let open = self.ranges.pop().expect("ranges are never empty");
        let mut merged: Vec<Range> = Vec::with_capacity(self.ranges.len() + 1);
        for r in self.ranges.drain(..) {
            if r.entries == 0 {
                assert!(r.hash.is_zero(), "an empty range hashes to zero");
                continue;
            }
            match merged.last_mut() {
                Some(prev) if prev.bytes + r.bytes <= RANGE_BYTES_TARGET => {
                    prev.entries += r.entries;
                    prev.bytes += r.bytes;
                    prev.hash.add(&r.hash);
                }
                _ => merged.push(r),
            }
        }
        merged.push(open);
        self.ranges = merged;
        self.check();
    }

    /// Asserts the invariants (see [`Ranges`]).
    pub(crate) fn check(&self) {
        assert!(!self.ranges.is_empty(), "ranges are never empty");
        assert!(
            self.ranges[0].start >= 1,
            "ranges start at revision 1 or later"
        );
        assert!(
            self.ranges.windows(2).all(|w| w[0].start < w[1].start),
            "range starts ascend"
        );
        assert!(
            self.closed_ranges_hold_entries(),
            "closed ranges hold entries"
        );
    }

    /// Whether every closed range holds an entry (what [`Ranges::check`]
    /// asserts), for input read from outside.
    pub(crate) fn closed_ranges_hold_entries(&self) -> bool {
        let closed = &self.ranges[..self.ranges.len() - 1];
        closed.iter().all(|r| r.entries > 0)
    }
}

/// The [`LtHash`] of one history entry of `key` with `value` (empty for a
/// tombstone): over the key and the entry as the snapshot encodes them.
pub(crate) fn entry_hash(key: &[u8], e: &Entry, value: &[u8]) -> LtHash {
    LtHash::of(|h| crate::snapshot::feed_keyed_entry(h, key, e, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Event, PutEvent, Revision};

    fn put(main: i64, value: &[u8]) -> Entry {
        Entry {
            rev: Revision { main, sub: 0 },
            event: Event::Put(PutEvent {
                create_revision: main,
                version: 1,
                lease: 0,
                value_bytes: value.len() as u32,
            }),
        }
    }

    #[test]
    fn a_set_hash_does_not_depend_on_the_order_of_its_elements() {
        let e: Vec<LtHash> = (0..5)
            .map(|i| entry_hash(b"k", &put(i + 2, b"v"), b"v"))
            .collect();
        let mut forward = LtHash::default();
        e.iter().for_each(|h| forward.add(h));
        let mut backward = LtHash::default();
        e.iter().rev().for_each(|h| backward.add(h));
        assert_eq!(forward, backward);
        assert!(!forward.is_zero());
        for h in &e {
            forward.sub(h);
        }
        assert!(
            forward.is_zero(),
            "removing every element gives the empty set"
        );
    }

    #[test]
    fn entries_that_differ_in_any_field_hash_apart() {
        let base = entry_hash(b"k", &put(2, b"v"), b"v");
        assert_ne!(base, entry_hash(b"j", &put(2, b"v"), b"v"), "key");
        assert_ne!(base, entry_hash(b"k", &put(3, b"v"), b"v"), "revision");
        assert_ne!(base, entry_hash(b"k", &put(2, b"w"), b"w"), "value");
        let tomb = Entry {
            rev: Revision { main: 2, sub: 0 },
            event: Event::Tombstone,
        };
        assert_ne!(base, entry_hash(b"k", &tomb, b""), "kind");
        // The key and the value are length-prefixed: moving a byte from
        // one to the other changes the hash.
        assert_ne!(
            entry_hash(b"ka", &put(2, b"b"), b"b"),
            entry_hash(b"k", &put(2, b"ab"), b"ab")
        );
    }

    #[test]
    fn the_open_range_closes_at_the_target_and_compaction_merges_what_fits() {
        let mut r = Ranges::new();
        let big = RANGE_BYTES_TARGET / 2;
        r.add(b"a", &put(2, b"x"), b"x", big);
        r.close_if_full(3);
        assert_eq!(r.ranges().len(), 1, "half the target stays open");
        r.add(b"b", &put(3, b"x"), b"x", big);
        r.close_if_full(4);
        assert_eq!(r.ranges().len(), 2);
        assert_eq!(r.ranges()[1].start, 4);
        r.add(b"c", &put(4, b"x"), b"x", RANGE_BYTES_TARGET);
        r.close_if_full(5);
        assert_eq!(
            r.ranges().iter().map(|x| x.start).collect::<Vec<_>>(),
            vec![1, 4, 5]
        );
        // Compaction drops "a" and "b": the first range empties and goes.
        r.remove(b"a", &put(2, b"x"), b"x", big);
        r.remove(b"b", &put(3, b"x"), b"x", big);
        r.merge_after_compaction();
        assert_eq!(
            r.ranges().iter().map(|x| x.start).collect::<Vec<_>>(),
            vec![4, 5]
        );
        // Two small closed ranges merge into one, the open one stays.
        let mut r = Ranges::with_starts(&[1, 10, 20, 30]).unwrap();
        r.add(b"a", &put(5, b"x"), b"x", 100);
        r.add(b"b", &put(15, b"x"), b"x", 100);
        r.add(b"c", &put(25, b"x"), b"x", RANGE_BYTES_TARGET);
        let mut both = entry_hash(b"a", &put(5, b"x"), b"x");
        both.add(&entry_hash(b"b", &put(15, b"x"), b"x"));
        r.merge_after_compaction();
        assert_eq!(
            r.ranges().iter().map(|x| x.start).collect::<Vec<_>>(),
            vec![1, 20, 30]
        );
        assert_eq!(r.ranges()[0].hash, both);
        assert_eq!((r.ranges()[0].entries, r.ranges()[0].bytes), (2, 200));
    }

    #[test]
    fn range_starts_from_outside_must_ascend_from_one() {
        assert!(Ranges::with_starts(&[]).is_none());
        assert!(Ranges::with_starts(&[0]).is_none());
        assert!(Ranges::with_starts(&[3, 3]).is_none());
        assert!(Ranges::with_starts(&[5, 2]).is_none());
        assert!(Ranges::with_starts(&[2, 7]).is_some());
    }
}
