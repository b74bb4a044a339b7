//! The state digest kept as writes execute (`kv::digest`), at sizes where
//! revision ranges close and compaction merges them: it equals a digest
//! counted afresh from the entries, follows every change, and is the same
//! on replicas that executed the same commands, whatever the snapshot
//! round trips in between.

use kv::digest::RANGE_BYTES_TARGET;
use kv::pb::etcdserverpb::{DeleteRangeRequest, PutRequest};
use kv::{Command, Store};

/// 64 KiB values: 64 puts fill a range.
const VALUE_BYTES: usize = 64 << 10;

fn put(key: usize, round: usize) -> Command {
    PutRequest {
        key: format!("/registry/pods/p{key:03}").into_bytes(),
        value: vec![(key * 31 + round) as u8; VALUE_BYTES],
        ..Default::default()
    }
    .into()
}

fn delete(key: usize) -> Command {
    DeleteRangeRequest {
        key: format!("/registry/pods/p{key:03}").into_bytes(),
        ..Default::default()
    }
    .into()
}

/// 20 keys written in 12 rounds (240 puts, ~15 MiB of entries: 4 closed
/// ranges), every 7th key deleted in round 5.
fn commands() -> Vec<Command> {
    let mut out = Vec::new();
    for round in 0..12 {
        for key in 0..20 {
            out.push(put(key, round));
        }
        if round == 5 {
            out.extend((0..20).step_by(7).map(delete));
        }
    }
    out
}

fn starts(s: &Store) -> Vec<i64> {
    s.digest_ranges().iter().map(|r| r.start).collect()
}

#[test]
fn ranges_close_at_the_target_and_the_kept_digest_equals_a_recount() {
    let mut s = Store::new();
    for c in commands() {
        s.apply(&c).unwrap();
    }
    let ranges = s.digest_ranges();
    assert!(ranges.len() >= 4, "{} ranges", ranges.len());
    for r in &ranges[..ranges.len() - 1] {
        assert!(r.bytes >= RANGE_BYTES_TARGET, "a closed range is full");
        assert!(r.bytes < RANGE_BYTES_TARGET + VALUE_BYTES as u64 + 1024);
    }
    let entries: u64 = ranges.iter().map(|r| r.entries).sum();
    assert_eq!(entries, 240 + 3, "every put and tombstone is counted once");
    let restored = Store::restore(&s.snapshot()).unwrap();
    assert_eq!(restored.digest_ranges(), s.digest_ranges());
    assert_eq!(restored.state_digest(), s.state_digest());
}

#[test]
fn compaction_removes_what_it_drops_and_merges_ranges_that_fit_together() {
    let mut s = Store::new();
    for c in commands() {
        s.apply(&c).unwrap();
    }
    let before = starts(&s);
    let digest = s.state_digest();
    // Compact at the current revision: each key keeps its newest put.
    s.compact(s.revision()).unwrap();
    assert_ne!(s.state_digest(), digest);
    let after = starts(&s);
    assert!(after.len() < before.len(), "{before:?} -> {after:?}");
    assert_eq!(after.last(), before.last(), "the open range stays");
    let entries: u64 = s.digest_ranges().iter().map(|r| r.entries).sum();
    assert_eq!(entries, 20, "one put per key is left");
    let restored = Store::restore(&s.snapshot()).unwrap();
    assert_eq!(restored.digest_ranges(), s.digest_ranges());
    assert_eq!(restored.state_digest(), s.state_digest());
}

#[test]
fn replicas_agree_on_the_digest_through_snapshots_and_compactions() {
    let cmds = commands();
    let mut a = Store::new();
    let mut b = Store::new();
    for (i, c) in cmds.iter().enumerate() {
        a.apply(c).unwrap();
        b.apply(c).unwrap();
        if i % 50 == 49 {
            // b restarts from its snapshot; a compacts half its history
            // at the same point, and b does it after its restart.
            b = Store::restore(&b.snapshot()).unwrap();
            let half = a.revision() / 2 + 1;
            if half > a.compact_revision() {
                a.compact(half).unwrap();
                b.compact(half).unwrap();
            }
        }
        assert_eq!(a.state_digest(), b.state_digest(), "after command {i}");
    }
    assert_eq!(a.snapshot(), b.snapshot());
    // One changed byte in one value gives another digest.
    let mut c = Store::new();
    for (i, cmd) in cmds.iter().enumerate() {
        let mut cmd = cmd.clone();
        if i == 100 {
            cmd = put(7, 99);
        }
        c.apply(&cmd).unwrap();
    }
    let mut plain = Store::new();
    for cmd in &cmds {
        plain.apply(cmd).unwrap();
    }
    assert_ne!(c.state_digest(), plain.state_digest());
}

#[test]
fn an_old_snapshot_without_ranges_is_cut_as_execution_would_cut_it() {
    let mut s = Store::new();
    for c in commands() {
        s.apply(&c).unwrap();
    }
    // The same snapshot in format 3: no range starts at the end.
    let mut v3 = s.snapshot();
    let ranges_part = 4 + 8 * s.digest_ranges().len();
    v3.truncate(v3.len() - ranges_part);
    v3[6] = 3;
    let restored = Store::restore(&v3).unwrap();
    assert_eq!(starts(&restored), starts(&s), "never compacted: same cuts");
    assert_eq!(restored.state_digest(), s.state_digest());
}

#[test]
fn a_snapshot_with_bad_range_starts_is_refused() {
    let mut s = Store::new();
    for c in commands().into_iter().take(100) {
        s.apply(&c).unwrap();
    }
    let good = s.snapshot();
    let n = s.digest_ranges().len();
    assert!(n >= 2);
    let first_start = good.len() - 8 * n;
    // A first range above the first entry leaves entries outside ranges.
    let mut above = good.clone();
    above[first_start..first_start + 8].copy_from_slice(&3i64.to_be_bytes());
    assert!(Store::restore(&above).is_err());
    // Starts out of order.
    let mut swapped = good.clone();
    let second = first_start + 8;
    swapped[second..second + 8].copy_from_slice(&1i64.to_be_bytes());
    assert!(Store::restore(&swapped).is_err());
    // An open range beyond the next revision.
    let mut beyond = good.clone();
    let last = good.len() - 8;
    beyond[last..].copy_from_slice(&(s.revision() + 2).to_be_bytes());
    assert!(Store::restore(&beyond).is_err());
}
