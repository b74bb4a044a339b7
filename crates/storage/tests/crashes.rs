//! A crash in the middle of a write loses only what was never
//! acknowledged, and recovery says what it cut.

mod common;

use std::fs::OpenOptions;
use std::path::Path;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use storage::{Durability, Limits, Lsn, Record, Storage, BLOCK_BYTES};

const GROUP_FRAME_BYTES: u64 = 26;
/// A `PADDING` frame's header; its payload is zeros.
const PADDING_HEADER_BYTES: u64 = 10;

/// The log a crash test starts from.
struct LastGroup {
    records: Vec<Record>,
    /// The newest segment's file name.
    seg_name: std::ffi::OsString,
    /// Offset of the last group in it, and of the end of its proposal
    /// frame and of the group.
    group_at: u64,
    record_end: u64,
    group_end: u64,
}

/// Writes `n` synced groups of one proposal each, then the last group (one
/// proposal of `last_bytes`), with `limits`, calling `prepare` after each
/// sync as an idle storage thread does.
fn log_with_last_group(dir: &Path, limits: Limits, n: u64, last_bytes: usize) -> LastGroup {
    let (mut s, _) = Storage::open(dir, Durability::Fsync, limits).unwrap();
    let mut records = Vec::new();
    for cid in 1..=n {
        let r = proposal(cid, 200);
        s.append(&r).unwrap();
        s.sync().unwrap();
        prepare_all(&mut s);
        records.push(r);
    }
    let (seq, group_at) = s.log_end().unwrap();
    let last = proposal(n + 1, last_bytes);
    let record_end = group_at + GROUP_FRAME_BYTES + last.frame_bytes() as u64;
    s.append(&last).unwrap();
    s.sync().unwrap();
    let (seq_after, group_end) = s.log_end().unwrap();
    assert_eq!(seq_after, seq, "no rotation in this log");
    if limits.prealloc_bytes > 0 {
        assert_eq!(s.prealloc_stats().groups_extending, 0);
    }
    records.push(last);
    LastGroup {
        records,
        seg_name: format!("wal-{seq:020}.log").into(),
        group_at,
        record_end,
        group_end,
    }
}

/// Whether `bytes[from..to]` holds a non-zero byte.
fn nonzero(bytes: &[u8], from: u64, to: u64) -> bool {
    bytes[from as usize..to as usize].iter().any(|&b| b != 0)
}

fn cut(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn zero_from(path: &Path, offset: u64) {
    let len = file_len(path);
    zero_range(path, offset, len);
}

/// Opens a crashed copy, checks what came back, then checks that a second
/// recovery has nothing left to repair and the log takes new records
/// (inside the preallocated space: the file does not grow).
fn check_recovery(dir: &Path, expected: &[Record], truncated_bytes: u64, torn: bool) {
    let (mut s, rec) = open_ok(dir);
    assert_eq!(rec.records, expected);
    assert_eq!(rec.truncated_tail_bytes, truncated_bytes);
    assert_eq!(
        !rec.warnings.is_empty(),
        torn,
        "warnings: {:?}",
        rec.warnings
    );
    if torn {
        assert!(rec.warnings[0].contains("torn write"), "{:?}", rec.warnings);
    }
    let newest = segments(dir).pop().unwrap();
    let len_before = file_len(&newest);
    let next = proposal(1000, 10);
    s.append(&next).unwrap();
    s.sync().unwrap();
    assert_eq!(s.prealloc_stats().groups_extending, 0, "written into zeros");
    assert_eq!(file_len(&newest), len_before, "the file did not grow");
    drop(s);
    let (_, again) = open_ok(dir);
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
    assert_eq!(again.truncated_tail_bytes, 0);
    assert_eq!(&again.records[..expected.len()], expected);
    assert_eq!(again.records[expected.len()..], [next]);
}

/// The old layout (no preallocation): the write that extends the file is
/// cut short at every byte.
#[test]
fn a_crash_at_every_byte_of_the_last_group_keeps_every_complete_record() {
    let template = TempDir::new("crash-every-byte-template");
    let log = log_with_last_group(template.path(), no_prealloc(small_limits()), 3, 300);
    assert_eq!(
        file_len(&template.path().join(&log.seg_name)),
        log.group_end
    );
    let group = std::fs::read(template.path().join(&log.seg_name)).unwrap();
    let work = TempDir::new("crash-every-byte");
    for offset in log.group_at..log.group_end {
        copy_dir(template.path(), work.path());
        cut(&work.path().join(&log.seg_name), offset);
        let kept = if offset >= log.record_end { 4 } else { 3 };
        // Cut back to the last complete frame: the group start, the end of
        // the GROUP frame, or the end of the proposal.
        let good_end = if offset >= log.record_end {
            log.record_end
        } else if offset >= log.group_at + GROUP_FRAME_BYTES {
            log.group_at + GROUP_FRAME_BYTES
        } else {
            log.group_at
        };
        // Torn bytes that are all zeros (the GROUP frame's length starts
        // with zero bytes) cannot be told from the end of the log, and
        // need not be: nothing in them was readable.
        let torn = good_end > log.group_at || nonzero(&group, log.group_at, offset);
        let truncated = if torn { offset - good_end } else { 0 };
        check_recovery(work.path(), &log.records[..kept], truncated, torn);
    }
}

/// The preallocated layout: the file keeps its length and whatever of the
/// last group did not land reads as the zeros written ahead, from every
/// byte of the group on.
#[test]
fn a_crash_at_every_byte_of_the_last_group_inside_a_preallocated_segment() {
    let template = TempDir::new("crash-prealloc-template");
    let log = log_with_last_group(template.path(), small_limits(), 3, 300);
    let seg_len = file_len(&template.path().join(&log.seg_name));
    assert!(seg_len > log.group_end, "zeros follow the last group");
    let group = std::fs::read(template.path().join(&log.seg_name)).unwrap();
    let work = TempDir::new("crash-prealloc");
    for offset in log.group_at..log.group_end {
        copy_dir(template.path(), work.path());
        let seg = work.path().join(&log.seg_name);
        zero_range(&seg, offset, log.group_end);
        let padding_whole = offset >= log.record_end + PADDING_HEADER_BYTES;
        let kept = if offset >= log.record_end { 4 } else { 3 };
        let (good_end, torn) = if padding_whole {
            // Only padding zeros were lost: nothing is missing.
            (log.group_end, false)
        } else if offset >= log.record_end {
            (log.record_end, true)
        } else if offset >= log.group_at + GROUP_FRAME_BYTES {
            (log.group_at + GROUP_FRAME_BYTES, true)
        } else {
            // Only zeros of the group landed: the end of the log, not torn.
            (log.group_at, nonzero(&group, log.group_at, offset))
        };
        // The torn bytes were in the group's only block.
        let truncated = if torn { log.group_end - good_end } else { 0 };
        check_recovery(work.path(), &log.records[..kept], truncated, torn);
        assert!(file_len(&seg) >= seg_len, "the preallocation is kept");
    }
}

#[test]
fn a_crash_that_leaves_zeros_in_the_last_group_keeps_every_complete_record() {
    // Some file systems extend the file before the data lands: the tail
    // reads as zeros.
    let template = TempDir::new("crash-zeros-template");
    let log = log_with_last_group(template.path(), no_prealloc(small_limits()), 2, 1000);
    let work = TempDir::new("crash-zeros");
    for offset in (log.group_at..log.group_end).step_by(7) {
        copy_dir(template.path(), work.path());
        zero_from(&work.path().join(&log.seg_name), offset);
        let (kept, good_end) = if offset >= log.record_end {
            (3, log.record_end)
        } else if offset >= log.group_at + GROUP_FRAME_BYTES {
            (2, log.group_at + GROUP_FRAME_BYTES)
        } else {
            (2, log.group_at)
        };
        let (mut s, rec) = open_ok(work.path());
        assert_eq!(rec.records, log.records[..kept], "offset {offset}");
        // Zeros over the padding payload change nothing (it is zeros), and
        // a group of zeros only is the end of the log.
        if rec.truncated_tail_bytes > 0 || (offset < log.record_end && offset > log.group_at) {
            assert_eq!(rec.truncated_tail_bytes, log.group_end - good_end);
        }
        assert_eq!(rec.warnings.is_empty(), rec.truncated_tail_bytes == 0);
        s.append(&proposal(99, 1)).unwrap();
        s.sync().unwrap();
    }
}

/// A torn group whose first block did not land but later ones did: zeros
/// then bytes. Not the end of the log: a torn tail, cut and reported.
#[test]
fn a_torn_group_that_starts_with_zeros_is_a_torn_tail() {
    let dir = TempDir::new("crash-zeros-first");
    let log = log_with_last_group(dir.path(), small_limits(), 2, 9000);
    assert_eq!(log.group_end - log.group_at, 3 * BLOCK_BYTES);
    let seg = dir.path().join(&log.seg_name);
    let len = file_len(&seg);
    zero_range(&seg, log.group_at, log.group_at + BLOCK_BYTES);
    check_recovery(
        dir.path(),
        &log.records[..2],
        log.group_end - log.group_at,
        true,
    );
    assert!(file_len(&seg) >= len);
}

/// Zeros after the last group are the end of the log: no warning, nothing
/// cut, the file keeps its length, and appends after recovery continue
/// inside the preallocated space. Also for older segments, whose zero tail
/// is what was left when the log rolled over.
#[test]
fn zeros_after_the_end_of_the_log_are_not_reported() {
    let dir = TempDir::new("zeros-not-torn");
    let mut records = Vec::new();
    {
        let (mut s, _) = open_ok(dir.path());
        for cid in 1..=30 {
            let r = proposal(cid, 6000);
            s.append(&r).unwrap();
            s.sync().unwrap();
            prepare_all(&mut s);
            records.push(r);
        }
        let stats = s.prealloc_stats();
        assert_eq!(stats.groups_extending, 0);
        assert_eq!(stats.rollovers_unprepared, 0);
        assert!(stats.rollovers_prepared >= 2, "{stats:?}");
    }
    let segs = segments(dir.path());
    let with_zero_tail = segs
        .iter()
        .filter(|seg| file_len(seg) > data_end(seg))
        .count();
    assert!(with_zero_tail >= 2, "older segments end in zeros too");
    let lens: Vec<u64> = segs.iter().map(|p| file_len(p)).collect();
    let (mut s, rec) = open_ok(dir.path());
    assert_eq!(rec.records, records);
    assert!(rec.warnings.is_empty(), "{:?}", rec.warnings);
    assert_eq!(rec.truncated_tail_bytes, 0);
    assert_eq!(segs.iter().map(|p| file_len(p)).collect::<Vec<_>>(), lens);
    s.append(&proposal(31, 10)).unwrap();
    s.sync().unwrap();
    assert_eq!(s.prealloc_stats().groups_extending, 0);
}

#[test]
fn a_crash_inside_a_group_of_many_records_keeps_the_complete_ones() {
    let dir = TempDir::new("crash-mid-group");
    let records: Vec<Record> = (1..=5).map(|cid| proposal(cid, 500)).collect();
    {
        let (mut s, _) = open_ok(dir.path());
        for r in &records {
            s.append(r).unwrap();
        }
        s.sync().unwrap();
    }
    let seg = segments(dir.path()).pop().unwrap();
    let third_at = BLOCK_BYTES + GROUP_FRAME_BYTES + 2 * records[0].frame_bytes() as u64;
    cut(&seg, third_at + 100);
    check_recovery(dir.path(), &records[..2], 100, true);
}

#[test]
fn a_crash_between_checkpoint_temp_write_and_rename_uses_the_previous_checkpoint() {
    let dir = TempDir::new("crash-checkpoint");
    {
        let (mut s, _) = open_ok(dir.path());
        for cid in 1..=20 {
            append(&mut s, &decision(cid));
            if cid == 10 || cid == 20 {
                let (snap, d) = snapshot(cid, 3000);
                s.write_checkpoint(cid, d, &snap).unwrap();
            }
        }
        s.sync().unwrap();
    }
    // Make it look as if checkpoint 20 never got past its temporary file,
    // half written.
    let done = dir.path().join(format!("checkpoint-{:020}.snap", 20));
    let tmp = dir.path().join(format!("checkpoint-{:020}.snap.tmp", 20));
    std::fs::rename(&done, &tmp).unwrap();
    cut(&tmp, 1000);
    let (_, rec) = open_ok(dir.path());
    assert_eq!(rec.checkpoint.as_ref().unwrap().cid, 10);
    assert_eq!(rec.checkpoint.unwrap().snapshot, snapshot(10, 3000).0);
    assert!(!tmp.exists(), "the temporary file is removed");
    assert!(
        rec.warnings.iter().any(|w| w.contains("unfinished")),
        "{:?}",
        rec.warnings
    );
    let decisions: Vec<Record> = (11..=20).map(decision).collect();
    let got: Vec<Record> = rec
        .records
        .into_iter()
        .filter(|r| matches!(r, Record::Decision { .. }))
        .collect();
    assert_eq!(got, decisions);
}

#[test]
fn a_crash_while_creating_a_segment_leaves_a_temp_file_that_is_removed() {
    let dir = TempDir::new("crash-segment-create");
    {
        let (mut s, _) = open_ok(dir.path());
        s.append(&proposal(1, 10)).unwrap();
        s.sync().unwrap();
    }
    let tmp = dir.path().join(format!("wal-{:020}.log.tmp", 1));
    std::fs::write(&tmp, b"half a header").unwrap();
    let (_, rec) = open_ok(dir.path());
    assert_eq!(rec.records, vec![proposal(1, 10)]);
    assert!(!tmp.exists());
    assert_eq!(rec.warnings.len(), 1, "{:?}", rec.warnings);
}

/// Appends one synced group of one proposal (`cid`).
fn group(s: &mut Storage, records: &mut Vec<Record>, cid: u64, bytes: usize) {
    let r = proposal(cid, bytes);
    s.append(&r).unwrap();
    s.sync().unwrap();
    records.push(r);
}

/// The spare (next segment prepared ahead) in `dir`, if there is one: the
/// segment file after the last one the storage uses.
fn spare(s: &Storage, dir: &Path) -> Option<std::path::PathBuf> {
    let last = *s.segment_seqs().last().unwrap();
    let path = dir.join(format!("wal-{:020}.log", last + 1));
    path.exists().then_some(path)
}

/// Writes groups, preparing when idle, until the next segment is prepared.
fn until_spare(s: &mut Storage, dir: &Path, records: &mut Vec<Record>) -> std::path::PathBuf {
    for _ in 0..100 {
        if let Some(path) = spare(s, dir) {
            return path;
        }
        let cid = records.len() as u64 + 1;
        group(s, records, cid, 3000);
        prepare_all(s);
    }
    panic!("no spare after 100 groups");
}

#[test]
fn a_rollover_writes_into_the_prepared_segment() {
    let dir = TempDir::new("rollover-prepared");
    let mut records = Vec::new();
    let (mut s, _) = open_ok(dir.path());
    let spare_path = until_spare(&mut s, dir.path(), &mut records);
    let limits = small_limits();
    assert_eq!(file_len(&spare_path), BLOCK_BYTES + limits.prealloc_bytes);
    assert_eq!(
        data_end(&spare_path),
        0,
        "a spare is zeros, header block too"
    );
    let active_seq = *s.segment_seqs().last().unwrap();
    for _ in 0..20 {
        if s.segment_seqs().last() != Some(&active_seq) {
            break;
        }
        let cid = records.len() as u64 + 1;
        group(&mut s, &mut records, cid, 3000);
        prepare_all(&mut s);
    }
    assert_eq!(
        s.segment_seqs().last(),
        Some(&(active_seq + 1)),
        "rolled over"
    );
    let stats = s.prealloc_stats();
    assert_eq!(stats.rollovers_prepared, 1);
    assert_eq!(stats.rollovers_unprepared, 0);
    assert_eq!(stats.groups_extending, 0);
    assert!(file_len(&spare_path) >= BLOCK_BYTES + limits.prealloc_bytes);
    drop(s);
    let (_, rec) = open_ok(dir.path());
    assert_eq!(rec.records, records);
    assert!(rec.warnings.is_empty(), "{:?}", rec.warnings);
}

#[test]
fn without_prepare_groups_grow_the_file_and_rollovers_create_the_segment() {
    let dir = TempDir::new("rollover-unprepared");
    let mut records = Vec::new();
    {
        let (mut s, _) = open_ok(dir.path());
        for cid in 1..=40 {
            group(&mut s, &mut records, cid, 3000);
        }
        let stats = s.prealloc_stats();
        assert!(stats.rollovers_unprepared >= 2, "{stats:?}");
        assert!(stats.groups_extending > 0, "{stats:?}");
        assert_eq!(stats.groups, 40);
    }
    let (_, rec) = open_ok(dir.path());
    assert_eq!(rec.records, records);
    assert!(rec.warnings.is_empty(), "{:?}", rec.warnings);
}

/// A crash while the next segment is zero-filled under its temporary name:
/// the file is removed, with a warning, and prepared again.
#[test]
fn a_crash_while_preparing_the_next_segment_loses_nothing() {
    let dir = TempDir::new("crash-preparing");
    let mut records = Vec::new();
    let tmp = {
        let (mut s, _) = open_ok(dir.path());
        let mut found = None;
        'groups: for cid in 1..=100 {
            group(&mut s, &mut records, cid, 3000);
            for _ in 0..100 {
                let last = *s.segment_seqs().last().unwrap();
                let tmp = dir.path().join(format!("wal-{:020}.log.tmp", last + 1));
                if tmp.exists() {
                    found = Some(tmp);
                    break 'groups;
                }
                if !s.prepare().unwrap() {
                    break;
                }
            }
        }
        found.expect("a spare was being prepared")
    };
    assert!(file_len(&tmp) < BLOCK_BYTES + small_limits().prealloc_bytes);
    let (mut s, rec) = open_ok(dir.path());
    assert_eq!(rec.records, records);
    assert_eq!(rec.warnings.len(), 1, "{:?}", rec.warnings);
    assert!(rec.warnings[0].contains("unfinished"), "{:?}", rec.warnings);
    assert!(!tmp.exists());
    assert!(spare(&s, dir.path()).is_some(), "open prepared it again");
    for _ in 0..20 {
        let cid = records.len() as u64 + 1;
        group(&mut s, &mut records, cid, 3000);
        prepare_all(&mut s);
    }
    assert!(s.prealloc_stats().rollovers_prepared >= 1);
    assert_eq!(s.prealloc_stats().rollovers_unprepared, 0);
    drop(s);
    let (_, rec) = open_ok(dir.path());
    assert_eq!(rec.records, records);
    assert!(rec.warnings.is_empty(), "{:?}", rec.warnings);
}

/// A crash during a rollover into the prepared segment: while its header
/// was written (the header block torn, nothing after it), or after the
/// header but before the first group landed.
#[test]
fn a_crash_during_a_rollover_into_the_prepared_segment_loses_nothing_synced() {
    let template = TempDir::new("crash-rollover-template");
    let mut records = Vec::new();
    let spare_name = {
        let (mut s, _) = open_ok(template.path());
        until_spare(&mut s, template.path(), &mut records)
            .file_name()
            .unwrap()
            .to_owned()
    };
    // The header write torn: a few bytes of it landed.
    let torn = TempDir::new("crash-rollover-header");
    copy_dir(template.path(), torn.path());
    {
        use std::os::unix::fs::FileExt;
        let f = OpenOptions::new()
            .write(true)
            .open(torn.path().join(&spare_name))
            .unwrap();
        f.write_all_at(b"bftd-wal\0\0\0\x01\0\0", 0).unwrap();
    }
    let (mut s, rec) = open_ok(torn.path());
    assert_eq!(rec.records, records);
    assert_eq!(rec.warnings.len(), 1, "{:?}", rec.warnings);
    assert!(
        rec.warnings[0].contains("unfinished segment header"),
        "{:?}",
        rec.warnings
    );
    assert_eq!(
        data_end(&torn.path().join(&spare_name)),
        0,
        "a clean spare again"
    );
    let mut more = records.clone();
    for _ in 0..20 {
        let cid = more.len() as u64 + 1;
        group(&mut s, &mut more, cid, 3000);
        prepare_all(&mut s);
    }
    assert!(
        s.prealloc_stats().rollovers_prepared >= 1,
        "the spare is used"
    );
    drop(s);
    let (_, rec) = open_ok(torn.path());
    assert_eq!(rec.records, more);
    assert!(rec.warnings.is_empty(), "{:?}", rec.warnings);

    // The header landed, the first group did not: an empty segment.
    let empty = TempDir::new("crash-rollover-group");
    copy_dir(template.path(), empty.path());
    let mut synced = records.clone();
    {
        let (mut s, _) = open_ok(empty.path());
        let seq = *s.segment_seqs().last().unwrap();
        for _ in 0..20 {
            let cid = synced.len() as u64 + 1;
            group(&mut s, &mut synced, cid, 3000);
            if s.segment_seqs().last() != Some(&seq) {
                break;
            }
        }
        assert_eq!(s.prealloc_stats().rollovers_prepared, 1);
        let (_, end) = s.log_end().unwrap();
        zero_range(&empty.path().join(&spare_name), BLOCK_BYTES, end);
    }
    synced.pop();
    check_recovery(empty.path(), &synced, 0, false);
}

/// Recover, append (preparing when idle), recover again, several times:
/// every round continues inside the preallocated space.
#[test]
fn recovery_then_append_then_recovery_stays_inside_the_preallocation() {
    let dir = TempDir::new("recover-append-recover");
    let mut records: Vec<Record> = Vec::new();
    for round in 0..8u64 {
        let (mut s, rec) = open_ok(dir.path());
        assert_eq!(rec.records, records, "round {round}");
        assert!(rec.warnings.is_empty(), "{:?}", rec.warnings);
        assert_eq!(rec.truncated_tail_bytes, 0);
        for i in 0..5 {
            let cid = records.len() as u64 + 1;
            group(
                &mut s,
                &mut records,
                cid,
                500 + 1700 * ((round + i) as usize % 5),
            );
            prepare_all(&mut s);
        }
        let stats = s.prealloc_stats();
        assert_eq!(stats.groups_extending, 0, "round {round}: {stats:?}");
        assert_eq!(stats.rollovers_unprepared, 0, "round {round}: {stats:?}");
    }
}

#[derive(Debug, Clone)]
enum Op {
    Proposal(usize),
    Decision,
    Regency,
    Sync,
    Checkpoint,
    Truncate,
    /// One `prepare` step (the storage thread idle).
    Prepare,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..3500).prop_map(Op::Proposal),
        4 => Just(Op::Decision),
        1 => Just(Op::Regency),
        3 => Just(Op::Sync),
        2 => Just(Op::Checkpoint),
        2 => Just(Op::Truncate),
        4 => Just(Op::Prepare),
    ]
}

/// What the test appended, in order, with lsns.
#[derive(Default)]
struct Model {
    appended: Vec<(Lsn, Record)>,
    regency: u32,
    decided: u64,
    checkpoint: Option<u64>,
}

impl Model {
    fn append(&mut self, s: &mut Storage, r: Record) {
        append(s, &r);
        self.appended.push((Lsn(s.next_lsn().0 - 1), r));
    }

    fn run(&mut self, s: &mut Storage, op: &Op) {
        match op {
            Op::Proposal(bytes) => {
                let mut r = proposal(self.decided + 1, *bytes);
                if let Record::Proposal { regency, .. } = &mut r {
                    *regency = self.regency;
                }
                self.append(s, r);
            }
            Op::Decision => {
                self.decided += 1;
                self.append(s, decision(self.decided));
            }
            Op::Regency => {
                self.regency += 1;
                self.append(
                    s,
                    Record::Regency {
                        regency: self.regency,
                    },
                );
            }
            Op::Sync => {
                s.sync().unwrap();
            }
            Op::Checkpoint => {
                if self.decided > 0 && self.checkpoint < Some(self.decided) {
                    let cid = self.decided;
                    let (snap, d) = snapshot(cid, 2000);
                    let lsn = s.next_lsn();
                    s.write_checkpoint(cid, d, &snap).unwrap();
                    self.appended
                        .push((lsn, Record::Checkpoint { cid, digest: d }));
                    self.checkpoint = Some(cid);
                }
            }
            Op::Truncate => {
                if let Some(cid) = self.checkpoint {
                    s.truncate_through(cid).unwrap();
                }
            }
            Op::Prepare => {
                s.prepare().unwrap();
            }
        }
    }
}

proptest! {
    #![proptest_config(Config {
        cases: 64,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0xB7D_5707),
        ..Config::default()
    })]

    /// Random appends, syncs, prepare steps, checkpoints and truncations,
    /// then a crash during the last sync's write: the bytes it wrote from
    /// a random offset on are lost, either cut off (a write that grew the
    /// file) or left as the zeros written ahead (preallocated), or, when
    /// it rolled over, the new segment's header is lost too. Recovery
    /// returns a prefix of what was appended that holds everything synced
    /// before.
    #[test]
    fn random_histories_recover_a_prefix_holding_everything_synced(
        ops in proptest::collection::vec(op(), 1..80),
        cut_fraction in 0.0f64..1.0,
        crash in 0u8..3,
    ) {
        let dir = TempDir::new("crash-prop");
        let mut model = Model::default();
        let open_tiny = || Storage::open(dir.path(), Durability::Fsync, tiny_limits()).unwrap();
        let (mut s, _) = open_tiny();
        for op in &ops {
            model.run(&mut s, op);
        }
        let durable_before = s.durable_lsn();
        let (seq_before, end_before) = s.log_end().unwrap();
        s.sync().unwrap();
        let (seq_after, end_after) = s.log_end().unwrap();
        drop(s);
        let seg_after = dir.path().join(format!("wal-{seq_after:020}.log"));
        let from = if seq_after == seq_before { end_before } else { BLOCK_BYTES };
        if end_after > from {
            let at = from + ((end_after - from) as f64 * cut_fraction) as u64;
            match crash {
                0 => cut(&seg_after, at),
                1 => zero_range(&seg_after, at, end_after),
                _ if seq_after != seq_before => zero_range(&seg_after, 0, end_after),
                _ => zero_range(&seg_after, at, end_after),
            }
        }

        let (mut s, rec) = open_tiny();
        prop_assert_eq!(rec.checkpoint.as_ref().map(|c| c.cid), model.checkpoint);
        let base = model.checkpoint;
        let expected: Vec<(Lsn, Record)> = model
            .appended
            .iter()
            .filter(|(_, r)| !matches!(r, Record::Regency { .. }) && r.cid() > base)
            .cloned()
            .collect();
        let got = without_regency(&rec.records);
        prop_assert!(got.len() <= expected.len());
        for (g, (_, e)) in got.iter().zip(&expected) {
            prop_assert_eq!(g, e);
        }
        let synced = expected.iter().filter(|(lsn, _)| *lsn <= durable_before).count();
        prop_assert!(got.len() >= synced, "{} recovered, {} synced", got.len(), synced);
        let regency_synced = model
            .appended
            .iter()
            .filter_map(|(lsn, r)| match r {
                Record::Regency { regency } if *lsn <= durable_before => Some(*regency),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        prop_assert!(rec.regency >= regency_synced && rec.regency <= model.regency);
        // The recovered log takes more records.
        s.append(&Record::Regency { regency: model.regency }).unwrap();
        s.sync().unwrap();
    }
}
