//! Reading the store's history as watch events (etcd's `watchableStore`
//! reads of `server/mvcc`): every change of a key range from a revision
//! on, in revision order, each with the key-value before it.
//!
//! The store keeps a revision index ([`Store`]'s `changes`): for every
//! retained history entry, its revision and key. A read walks the index
//! from the asked revision, so its cost is the number of changes it scans
//! (bounded by the caller), not the size of the store. The index is derived
//! state: rebuilt from the histories by `Store::restore`, never part of a
//! snapshot or digest.

use std::collections::BTreeMap;

use crate::pb::mvccpb::{event::EventType, Event as PbEvent};
use crate::store::{key_bounds, key_value, Event, Revision, Store};

/// One page of events read by [`Store::watch_events`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventPage {
    /// The changes of the key range with revisions in
    /// `[from_revision, next_revision)`, ordered by (main, sub) revision.
    /// Every event carries its `prev_kv` (the key-value just before the
    /// change, if the key existed and its history still holds it); a
    /// watcher that did not ask for it drops it.
    pub events: Vec<PbEvent>,
    /// Where the next read starts: one past the last revision scanned.
    /// Pages end at a revision boundary: all changes of one revision (one
    /// write transaction) are in the same page.
    pub next_revision: i64,
}

/// The revisions asked for are no longer in the history: the watcher gets
/// etcd's `compact_revision` and is canceled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchCompacted {
    /// The store's compaction revision.
    pub compact_revision: i64,
}

impl Store {
    /// The changes of `[key, range_end)` (etcd's range conventions: empty
    /// `range_end` = the key alone, `[0]` = every key from `key` on) with
    /// revisions from `from_revision` through the current revision.
    ///
    /// Scans at most `scan_max` index entries (changes of any key), but
    /// never stops inside a revision; `next_revision` says where to go on.
    /// A page may be empty with `next_revision` advanced (no change in the
    /// range among those scanned). With `from_revision` above the current
    /// revision the page is empty and `next_revision == from_revision`.
    ///
    /// # Errors
    /// [`WatchCompacted`] when `from_revision` is below the compaction
    /// revision (etcd: `minRev < compactRev`).
    pub fn watch_events(
        &self,
        key: &[u8],
        range_end: &[u8],
        from_revision: i64,
        scan_max: usize,
    ) -> Result<EventPage, WatchCompacted> {
        let from_revision = from_revision.max(1);
        if from_revision < self.compact_revision {
            return Err(WatchCompacted {
                compact_revision: self.compact_revision,
            });
        }
        let bounds = key_bounds(key, range_end);
        let in_range = |k: &[u8]| {
            use std::ops::Bound;
            let above = match bounds.0 {
                Bound::Included(b) => k >= b,
                Bound::Excluded(b) => k > b,
                Bound::Unbounded => true,
            };
            let below = match bounds.1 {
                Bound::Included(b) => k <= b,
                Bound::Excluded(b) => k < b,
                Bound::Unbounded => true,
            };
            above && below
        };
        let mut events = Vec::new();
        let mut next_revision = from_revision;
        let mut stopped = false;
        let start = Revision {
            main: from_revision,
            sub: 0,
        };
        for (scanned, (rev, k)) in self.changes.range(start..).enumerate() {
            if scanned >= scan_max.max(1) && rev.main != next_revision - 1 {
                stopped = true;
                break;
            }
            next_revision = rev.main + 1;
            if !in_range(k) {
                continue;
            }
            if let Some(e) = self.event_at(k, *rev) {
                events.push(e);
            }
        }
        if !stopped {
            // Everything up to the current revision was scanned.
            next_revision = next_revision.max(self.current_revision + 1);
        }
        Ok(EventPage {
            events,
            next_revision,
        })
    }

    /// The watch event of `key`'s history entry at `rev`, with the entry
    /// before it as `prev_kv`; `None` if compaction dropped it.
    fn event_at(&self, key: &[u8], rev: Revision) -> Option<PbEvent> {
        let history = self.keys.get(key)?;
        let i = history.entries.binary_search_by(|e| e.rev.cmp(&rev)).ok()?;
        let values = self.values.reader();
        let prev_kv = i.checked_sub(1).and_then(|p| {
            let before = &history.entries[p];
            match &before.event {
                Event::Put(put) => {
                    Some(key_value(key, before.rev.main, put, values.get(before.rev)))
                }
                Event::Tombstone => None,
            }
        });
        Some(match &history.entries[i].event {
            Event::Put(put) => PbEvent {
                r#type: EventType::Put as i32,
                kv: Some(key_value(key, rev.main, put, values.get(rev))),
                prev_kv,
            },
            Event::Tombstone => PbEvent {
                r#type: EventType::Delete as i32,
                // etcd's delete event: the key at the deletion revision.
                kv: Some(crate::pb::mvccpb::KeyValue {
                    key: key.to_vec(),
                    mod_revision: rev.main,
                    ..Default::default()
                }),
                prev_kv,
            },
        })
    }

    /// Rebuilds the revision index from the histories (after a restore).
    pub(crate) fn rebuild_changes(&mut self) {
        let mut changes = BTreeMap::new();
        for (k, h) in &self.keys {
            for e in &h.entries {
                if e.rev.main >= self.compact_revision {
                    changes.insert(e.rev, k.clone());
                }
            }
        }
        self.changes = changes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::bftdkv::Command;
    use crate::pb::etcdserverpb::{
        request_op::Request, CompactionRequest, DeleteRangeRequest, PutRequest, RequestOp,
        TxnRequest,
    };

    fn put(s: &mut Store, k: &str, v: &str) {
        let c: Command = PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        }
        .into();
        s.apply(&c).unwrap();
    }

    fn del(s: &mut Store, k: &str, end: &str) {
        let c: Command = DeleteRangeRequest {
            key: k.into(),
            range_end: end.into(),
            ..Default::default()
        }
        .into();
        s.apply(&c).unwrap();
    }

    /// (type, key, mod_revision, value, prev value) of each event.
    fn summary(p: &EventPage) -> Vec<(i32, String, i64, String, Option<String>)> {
        p.events
            .iter()
            .map(|e| {
                let kv = e.kv.as_ref().unwrap();
                (
                    e.r#type,
                    String::from_utf8(kv.key.clone()).unwrap(),
                    kv.mod_revision,
                    String::from_utf8(kv.value.clone()).unwrap(),
                    e.prev_kv
                        .as_ref()
                        .map(|p| String::from_utf8(p.value.clone()).unwrap()),
                )
            })
            .collect()
    }

    const PUT: i32 = EventType::Put as i32;
    const DELETE: i32 = EventType::Delete as i32;

    #[test]
    fn events_of_a_prefix_come_in_revision_order_with_prev_kv() {
        let mut s = Store::new();
        put(&mut s, "a/1", "x"); // rev 2
        put(&mut s, "b", "y"); // rev 3
        put(&mut s, "a/1", "z"); // rev 4
        del(&mut s, "a/", "a0"); // rev 5
        let p = s.watch_events(b"a/", b"a0", 1, 100).unwrap();
        assert_eq!(
            summary(&p),
            vec![
                (PUT, "a/1".into(), 2, "x".into(), None),
                (PUT, "a/1".into(), 4, "z".into(), Some("x".into())),
                (DELETE, "a/1".into(), 5, "".into(), Some("z".into())),
            ]
        );
        assert_eq!(p.next_revision, 6);
        // From the middle, one key, and nothing new yet.
        let p = s.watch_events(b"b", b"", 3, 100).unwrap();
        assert_eq!(summary(&p), vec![(PUT, "b".into(), 3, "y".into(), None)]);
        let p = s.watch_events(b"b", b"", 6, 100).unwrap();
        assert!(p.events.is_empty());
        assert_eq!(p.next_revision, 6);
        // A future revision waits there.
        assert_eq!(s.watch_events(b"b", b"", 9, 100).unwrap().next_revision, 9);
    }

    #[test]
    fn a_page_never_splits_a_revision() {
        let mut s = Store::new();
        let ops = (0..5)
            .map(|i| RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: format!("k{i}").into(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })),
            })
            .collect();
        let txn: Command = TxnRequest {
            success: ops,
            ..Default::default()
        }
        .into();
        s.apply(&txn).unwrap(); // rev 2, five changes
        put(&mut s, "k9", "v"); // rev 3
        let p = s.watch_events(b"k", b"l", 1, 2).unwrap();
        assert_eq!(p.events.len(), 5, "all of revision 2");
        assert_eq!(p.next_revision, 3);
        let p = s.watch_events(b"k", b"l", p.next_revision, 2).unwrap();
        assert_eq!(p.events.len(), 1);
        assert_eq!(p.next_revision, 4);
    }

    #[test]
    fn reads_below_the_compaction_revision_are_refused_and_the_index_shrinks() {
        let mut s = Store::new();
        for i in 0..10 {
            put(&mut s, "k", &i.to_string()); // revs 2..=11
        }
        del(&mut s, "k", ""); // rev 12
        put(&mut s, "j", "a"); // rev 13
        let c: Command = CompactionRequest {
            revision: 12,
            physical: false,
        }
        .into();
        s.apply(&c).unwrap();
        assert_eq!(
            s.watch_events(b"k", b"", 11, 100),
            Err(WatchCompacted {
                compact_revision: 12
            })
        );
        // The tombstone at the compaction revision is gone with the key.
        let p = s.watch_events(b"", &[0], 12, 100).unwrap();
        assert_eq!(summary(&p), vec![(PUT, "j".into(), 13, "a".into(), None)]);
        assert_eq!(s.changes.len(), 1);
        // The index is derived state: a restored store has the same.
        let r = Store::restore(&s.snapshot()).unwrap();
        assert_eq!(r.changes, s.changes);
        assert_eq!(r, s);
    }

    #[test]
    fn a_failed_write_leaves_no_event() {
        let mut s = Store::new();
        s.set_quota_bytes(1);
        let c: Command = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        }
        .into();
        assert!(s.apply(&c).is_err());
        assert!(s.changes.is_empty());
        assert!(s.watch_events(b"k", b"", 1, 10).unwrap().events.is_empty());
    }
}
