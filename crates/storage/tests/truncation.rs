//! Truncation after a checkpoint removes old segments without losing what
//! recovery needs: the records after the checkpoints kept, and the newest
//! regency.

mod common;

use common::*;
use storage::Record;

/// Decisions 1..=`cids` with 2000-byte proposals, one group per cid, a
/// checkpoint every `period` cids followed by `truncate_through`.
fn history(dir: &std::path::Path, cids: u64, period: u64) -> Vec<storage::Truncated> {
    let (mut s, _) = open_ok(dir);
    let mut truncations = Vec::new();
    for cid in 1..=cids {
        append(&mut s, &proposal(cid, 2000));
        append(&mut s, &decision(cid));
        s.sync().unwrap();
        if cid % period == 0 {
            let (snap, d) = snapshot(cid, 500);
            s.write_checkpoint(cid, d, &snap).unwrap();
            truncations.push(s.truncate_through(cid).unwrap());
        }
    }
    s.sync().unwrap();
    truncations
}

#[test]
fn truncation_after_checkpoints_removes_old_segments_and_recovery_returns_the_right_records() {
    let dir = TempDir::new("truncate");
    let truncations = history(dir.path(), 95, 20);
    // Nothing while only one checkpoint is kept; then through the older
    // of the two.
    assert_eq!(truncations[0].segments_removed, 0);
    assert_eq!(truncations[1].through_cid, Some(20));
    assert!(
        truncations
            .iter()
            .map(|t| t.segments_removed)
            .sum::<usize>()
            > 3
    );
    let (s, rec) = open_ok(dir.path());
    assert!(s.segment_seqs()[0] > 0);
    assert_eq!(s.checkpoint_cids(), vec![60, 80]);
    assert_eq!(rec.checkpoint.unwrap().cid, 80);
    let mut expected = Vec::new();
    for cid in 81..=95 {
        expected.push(proposal(cid, 2000));
        expected.push(decision(cid));
    }
    assert_eq!(rec.records, expected);
    assert!(rec.warnings.is_empty(), "{:?}", rec.warnings);
}

#[test]
fn truncation_keeps_the_log_back_to_the_older_checkpoint_so_a_corrupt_newest_can_fall_back() {
    let dir = TempDir::new("truncate-fallback");
    history(dir.path(), 70, 20);
    flip_byte(&dir.path().join(format!("checkpoint-{:020}.snap", 60)), 100);
    let (_, rec) = open_ok(dir.path());
    assert_eq!(rec.checkpoint.unwrap().cid, 40);
    let decisions: Vec<Record> = rec
        .records
        .into_iter()
        .filter(|r| matches!(r, Record::Decision { .. }))
        .collect();
    assert_eq!(decisions, (41..=70).map(decision).collect::<Vec<_>>());
    assert!(!rec.warnings.is_empty());
}

#[test]
fn the_newest_regency_survives_truncation() {
    let dir = TempDir::new("truncate-regency");
    {
        let (mut s, _) = open_ok(dir.path());
        s.append(&Record::Regency { regency: 4 }).unwrap();
        s.sync().unwrap();
        for cid in 1..=60 {
            append(&mut s, &proposal(cid, 3000));
            append(&mut s, &decision(cid));
            s.sync().unwrap();
            if cid % 20 == 0 {
                let (snap, d) = snapshot(cid, 10);
                s.write_checkpoint(cid, d, &snap).unwrap();
                s.truncate_through(cid).unwrap();
            }
        }
        assert!(
            s.segment_seqs()[0] > 0,
            "the segment with REGENCY 4 is gone"
        );
    }
    let (_, rec) = open_ok(dir.path());
    assert_eq!(rec.regency, 4);
    assert!(rec.records.contains(&Record::Regency { regency: 4 }));
}

#[test]
#[should_panic(expected = "above the newest checkpoint")]
fn truncating_past_the_newest_checkpoint_is_a_bug() {
    let dir = TempDir::new("truncate-past");
    let (mut s, _) = open_ok(dir.path());
    s.append(&decision(1)).unwrap();
    let (snap, d) = snapshot(1, 10);
    s.write_checkpoint(1, d, &snap).unwrap();
    let _ = s.truncate_through(2);
}
