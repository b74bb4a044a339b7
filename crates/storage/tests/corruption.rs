//! Bytes that went bad on disk stop recovery with an error naming the file
//! and offset (or, for a checkpoint, fall back with a warning): never a
//! panic, never records that were not written.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use storage::{Durability, Limits, Record, Storage, StorageError, BLOCK_BYTES};

const GROUP_FRAME_BYTES: u64 = 26;

/// `groups` synced groups of one 200-byte proposal each, cids from 1.
fn one_record_groups(dir: &Path, groups: u64) -> Vec<Record> {
    let (mut s, _) = open_ok(dir);
    (1..=groups)
        .map(|cid| {
            let r = proposal(cid, 200);
            s.append(&r).unwrap();
            s.sync().unwrap();
            r
        })
        .collect()
}

/// Offset of the record frame of group `g` (from 0) in a segment of
/// one-record groups.
fn record_at(g: u64) -> u64 {
    BLOCK_BYTES * (1 + g) + GROUP_FRAME_BYTES
}

fn expect_corrupt(dir: &Path) -> (PathBuf, u64, String) {
    match open(dir) {
        Err(e @ StorageError::Corrupt { .. }) => {
            let message = e.to_string();
            assert!(message.contains("remove its data directory"), "{message}");
            let StorageError::Corrupt {
                segment,
                offset,
                reason,
            } = e
            else {
                unreachable!()
            };
            (segment, offset, reason)
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok((_, rec)) => panic!("expected Corrupt, recovered {:?}", rec.records),
    }
}

/// Rewrites the frame at `offset` with `edit(header_and_payload)` and a
/// fresh checksum, as a buggy or newer writer would have.
fn rewrite_frame(path: &Path, offset: u64, edit: impl FnOnce(&mut [u8])) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = offset as usize;
    let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let frame = &mut bytes[at..at + 10 + len];
    edit(frame);
    let crc = crc32c::crc32c(&frame[0..4]);
    let crc = crc32c::crc32c_append(crc, &frame[8..10]);
    let crc = crc32c::crc32c_append(crc, &frame[10..]);
    frame[4..8].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_flipped_payload_byte_in_the_middle_of_the_log_is_corrupt_naming_segment_and_offset() {
    let dir = TempDir::new("flip-middle");
    one_record_groups(dir.path(), 5);
    let seg = segments(dir.path()).pop().unwrap();
    flip_byte(&seg, record_at(1) + 100);
    let (segment, offset, reason) = expect_corrupt(dir.path());
    assert_eq!(segment, seg);
    assert_eq!(offset, record_at(1));
    assert!(reason.contains("checksum mismatch"), "{reason}");
    assert!(reason.contains("followed by a complete group"), "{reason}");
}

/// Issue 7 finding 9: a flipped byte in the newest group was cut as a
/// "torn write" that lost nothing acknowledged, though the group was
/// written whole (and may have been acknowledged). With every other frame
/// of the group intact up to its closing PADDING, it is corruption.
#[test]
fn a_bit_flip_in_the_last_wal_group_is_corruption_not_a_torn_write() {
    // A one-block group: the record frame, then the group marker.
    for (name, flip_at, bad_frame_at) in [
        ("flip-last-record", record_at(2) + 100, record_at(2)),
        ("flip-last-marker", record_at(2) - 5, 3 * BLOCK_BYTES),
    ] {
        let dir = TempDir::new(name);
        one_record_groups(dir.path(), 3);
        let seg = segments(dir.path()).pop().unwrap();
        let before = std::fs::read(&seg).unwrap();
        flip_byte(&seg, flip_at);
        let (segment, offset, reason) = expect_corrupt(dir.path());
        assert_eq!((segment, offset), (seg.clone(), bad_frame_at), "{name}");
        assert!(reason.contains("checksum mismatch"), "{reason}");
        assert!(reason.contains("not a torn write"), "{reason}");
        let mut after = std::fs::read(&seg).unwrap();
        after[flip_at as usize] ^= 0xFF;
        assert!(after == before, "{name}: nothing was cut or zeroed on disk");
    }
    // A group of several blocks: a flip in its second block.
    let dir = TempDir::new("flip-last-big");
    {
        let (mut s, _) = open_ok(dir.path());
        for cid in 1..=2 {
            s.append(&proposal(cid, 200)).unwrap();
            s.sync().unwrap();
        }
        s.append(&proposal(3, 9000)).unwrap();
        s.sync().unwrap();
    }
    let seg = segments(dir.path()).pop().unwrap();
    flip_byte(&seg, 3 * BLOCK_BYTES + BLOCK_BYTES + 77);
    let (_, offset, reason) = expect_corrupt(dir.path());
    assert_eq!(offset, record_at(2));
    assert!(reason.contains("not a torn write"), "{reason}");
}

#[test]
fn a_flipped_length_field_in_the_middle_of_the_log_is_corrupt() {
    let dir = TempDir::new("flip-length");
    one_record_groups(dir.path(), 5);
    let seg = segments(dir.path()).pop().unwrap();
    // The low byte of the length: the framing after it is lost, the group
    // markers at block boundaries are not.
    flip_byte(&seg, record_at(2) + 3);
    let (segment, offset, _) = expect_corrupt(dir.path());
    assert_eq!((segment, offset), (seg, record_at(2)));
}

#[test]
fn a_flipped_group_marker_in_the_middle_of_the_log_is_corrupt() {
    let dir = TempDir::new("flip-group");
    one_record_groups(dir.path(), 4);
    let seg = segments(dir.path()).pop().unwrap();
    flip_byte(&seg, 2 * BLOCK_BYTES + 12);
    let (_, offset, _) = expect_corrupt(dir.path());
    assert_eq!(offset, 2 * BLOCK_BYTES);
}

#[test]
fn a_flipped_byte_in_an_older_segment_is_corrupt_even_in_its_last_group() {
    let dir = TempDir::new("flip-older");
    {
        let (mut s, _) = open_ok(dir.path());
        for cid in 1..=40 {
            s.append(&proposal(cid, 3000)).unwrap();
            s.sync().unwrap();
        }
    }
    let segs = segments(dir.path());
    assert!(segs.len() >= 3);
    let older = &segs[segs.len() - 2];
    // A 3000-byte proposal and its framing fill one block.
    let last_group = data_end(older) - BLOCK_BYTES;
    flip_byte(older, last_group + GROUP_FRAME_BYTES + 500);
    let (segment, offset, reason) = expect_corrupt(dir.path());
    assert_eq!(&segment, older);
    assert_eq!(offset, last_group + GROUP_FRAME_BYTES);
    assert!(reason.contains("complete and synced"), "{reason}");
}

#[test]
fn a_flipped_byte_in_a_segment_header_is_corrupt() {
    let dir = TempDir::new("flip-header");
    one_record_groups(dir.path(), 2);
    let seg = segments(dir.path()).pop().unwrap();
    flip_byte(&seg, 14);
    let (segment, offset, reason) = expect_corrupt(dir.path());
    assert_eq!((segment, offset), (seg, 0));
    assert!(reason.contains("header"), "{reason}");
}

#[test]
fn a_flipped_byte_in_the_newest_checkpoint_falls_back_to_the_older_with_a_warning() {
    let dir = TempDir::new("flip-checkpoint");
    {
        let (mut s, _) = open_ok(dir.path());
        for cid in 1..=20 {
            append(&mut s, &decision(cid));
            if cid % 10 == 0 {
                let (snap, d) = snapshot(cid, 4000);
                s.write_checkpoint(cid, d, &snap).unwrap();
            }
        }
        s.sync().unwrap();
    }
    let newest = dir.path().join(format!("checkpoint-{:020}.snap", 20));
    flip_byte(&newest, 2000);
    let (s, rec) = open_ok(dir.path());
    let cp = rec.checkpoint.expect("the older checkpoint");
    assert_eq!(cp.cid, 10);
    assert_eq!(cp.snapshot, snapshot(10, 4000).0);
    let warnings = rec.warnings.join("\n");
    assert!(
        warnings.contains("snapshot checksum mismatch"),
        "{warnings}"
    );
    assert!(
        warnings.contains("cid 20 but its file is missing or invalid"),
        "{warnings}"
    );
    assert!(!newest.exists());
    assert!(dir
        .path()
        .join(format!("checkpoint-{:020}.snap.corrupt", 20))
        .exists());
    let decisions: Vec<Record> = rec
        .records
        .into_iter()
        .filter(|r| matches!(r, Record::Decision { .. }))
        .collect();
    assert_eq!(decisions, (11..=20).map(decision).collect::<Vec<_>>());
    assert_eq!(s.checkpoint_cids(), vec![10]);
}

#[test]
fn a_checkpoint_whose_digest_does_not_match_falls_back() {
    let dir = TempDir::new("checkpoint-digest");
    {
        let (mut s, _) = open_ok(dir.path());
        for cid in 1..=2 {
            s.append(&decision(cid)).unwrap();
            let (snap, d) = snapshot(cid, 100);
            s.write_checkpoint(cid, d, &snap).unwrap();
        }
        s.sync().unwrap();
    }
    // Rewrite the digest field and fix the header checksum: only the
    // digest check can catch it.
    let path = dir.path().join(format!("checkpoint-{:020}.snap", 2));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 1;
    let crc = crc32c::crc32c(&bytes[..64]);
    bytes[64..68].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(&path, bytes).unwrap();
    let (_, rec) = open_ok(dir.path());
    assert_eq!(rec.checkpoint.unwrap().cid, 1);
    assert!(
        rec.warnings[0].contains("does not match its digest"),
        "{:?}",
        rec.warnings
    );
}

#[test]
fn no_valid_checkpoint_for_a_truncated_log_is_corrupt() {
    let dir = TempDir::new("no-checkpoint-left");
    {
        let (mut s, _) = open_ok(dir.path());
        for cid in 1..=60 {
            append(&mut s, &proposal(cid, 2000));
            append(&mut s, &decision(cid));
            s.sync().unwrap();
            if cid % 20 == 0 {
                let (snap, d) = snapshot(cid, 100);
                s.write_checkpoint(cid, d, &snap).unwrap();
                s.truncate_through(cid).unwrap();
            }
        }
        assert!(s.segment_seqs()[0] > 0, "the log was truncated");
    }
    for cid in [40, 60] {
        flip_byte(&dir.path().join(format!("checkpoint-{cid:020}.snap")), 80);
    }
    let (segment, offset, reason) = expect_corrupt(dir.path());
    assert_eq!(offset, 0);
    assert!(segment.starts_with(dir.path()));
    assert!(reason.contains("no valid checkpoint"), "{reason}");
}

#[test]
fn garbage_files_in_the_directory_are_ignored_with_a_warning() {
    let dir = TempDir::new("garbage-files");
    let records = one_record_groups(dir.path(), 3);
    std::fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    std::fs::write(dir.path().join("wal-abc.log"), b"not ours").unwrap();
    std::fs::write(dir.path().join("checkpoint-7.snap"), b"short name").unwrap();
    std::fs::write(dir.path().join("wal.log"), b"the old single-file log").unwrap();
    std::fs::create_dir(dir.path().join(format!("wal-{:020}.log", 9))).unwrap();
    // The host's own files and directories pass without a warning.
    std::fs::write(dir.path().join("host-proxy_first_seq"), b"17\n").unwrap();
    std::fs::create_dir(dir.path().join("host-kv.lmdb")).unwrap();
    std::fs::write(dir.path().join("host-kv.lmdb/data.mdb"), b"x").unwrap();
    let (_, rec) = open_ok(dir.path());
    assert_eq!(rec.records, records);
    assert_eq!(rec.warnings.len(), 5, "{:?}", rec.warnings);
    assert!(rec.warnings.iter().all(|w| w.contains("ignoring")));
}

#[test]
fn garbage_in_a_file_named_like_a_segment_is_corrupt() {
    let dir = TempDir::new("garbage-segment");
    one_record_groups(dir.path(), 2);
    std::fs::write(
        dir.path().join(format!("wal-{:020}.log", 1)),
        vec![0x5A; 10_000],
    )
    .unwrap();
    let (segment, offset, reason) = expect_corrupt(dir.path());
    assert_eq!(segment, dir.path().join(format!("wal-{:020}.log", 1)));
    assert_eq!(offset, 0);
    assert!(reason.contains("magic"), "{reason}");
}

#[test]
fn a_missing_segment_in_the_middle_is_corrupt() {
    let dir = TempDir::new("missing-segment");
    {
        let (mut s, _) = open_ok(dir.path());
        for cid in 1..=30 {
            s.append(&proposal(cid, 3000)).unwrap();
            s.sync().unwrap();
        }
    }
    let segs = segments(dir.path());
    assert!(segs.len() >= 3);
    std::fs::remove_file(&segs[1]).unwrap();
    let (segment, _, reason) = expect_corrupt(dir.path());
    assert_eq!(segment, segs[1]);
    assert!(reason.contains("missing"), "{reason}");
}

#[test]
fn a_record_above_the_maximum_size_is_corrupt_before_anything_is_allocated() {
    let dir = TempDir::new("too-large");
    one_record_groups(dir.path(), 2);
    let seg = segments(dir.path()).pop().unwrap();
    // A frame header at the tail claiming 4 GiB: were it allocated, the
    // test would abort.
    let mut bytes = std::fs::read(&seg).unwrap();
    let end = data_end(&seg) as usize;
    let at = end as u64 + GROUP_FRAME_BYTES;
    let mut group = bytes[4096..4096 + GROUP_FRAME_BYTES as usize].to_vec();
    group[10..18].copy_from_slice(&3u64.to_be_bytes()); // first lsn 3
    group.extend_from_slice(&(u32::MAX - 1).to_be_bytes());
    group.extend_from_slice(&[0, 0, 0, 0, 1, 1]);
    bytes.truncate(end);
    bytes.extend_from_slice(&group);
    std::fs::write(&seg, bytes).unwrap();
    rewrite_frame(&seg, at - GROUP_FRAME_BYTES, |_| {});
    let (segment, offset, reason) = expect_corrupt(dir.path());
    assert_eq!((segment, offset), (seg, at));
    assert!(reason.contains("above record_bytes_max"), "{reason}");

    // A log written with larger limits than it is read with.
    let big = TempDir::new("too-large-limits");
    {
        let (mut s, _) = open_ok(big.path());
        s.append(&proposal(1, 10_000)).unwrap();
        s.sync().unwrap();
    }
    let smaller = Limits {
        record_bytes_max: 8192,
        group_bytes_max: 16384,
        segment_bytes_max: 48 * 1024,
        ..small_limits()
    };
    match Storage::open(big.path(), Durability::Fsync, smaller) {
        Err(StorageError::Corrupt { reason, .. }) => {
            assert!(reason.contains("above record_bytes_max"), "{reason}")
        }
        other => panic!(
            "expected Corrupt, got {:?}",
            other.map(|(_, r)| r.records.len())
        ),
    }
}

#[test]
fn an_unknown_record_kind_is_corrupt() {
    let dir = TempDir::new("unknown-kind");
    one_record_groups(dir.path(), 3);
    let seg = segments(dir.path()).pop().unwrap();
    // Even in the last group: a valid checksum is not a torn write.
    rewrite_frame(&seg, record_at(2), |f| f[9] = 99);
    let (_, offset, reason) = expect_corrupt(dir.path());
    assert_eq!(offset, record_at(2));
    assert!(reason.contains("unknown record kind tag 99"), "{reason}");
}

#[test]
fn an_unknown_record_version_is_corrupt() {
    let dir = TempDir::new("unknown-version");
    one_record_groups(dir.path(), 3);
    let seg = segments(dir.path()).pop().unwrap();
    rewrite_frame(&seg, record_at(2), |f| f[8] = 2);
    let (_, offset, reason) = expect_corrupt(dir.path());
    assert_eq!(offset, record_at(2));
    assert!(reason.contains("record version 2"), "{reason}");
}

#[test]
fn a_gap_in_the_decisions_on_disk_is_corrupt() {
    let dir = TempDir::new("decision-gap");
    {
        let (mut s, _) = open_ok(dir.path());
        for cid in 1..=4 {
            s.append(&decision(cid)).unwrap();
            s.sync().unwrap();
        }
    }
    let seg = segments(dir.path()).pop().unwrap();
    // DECISION 3 becomes DECISION 9: 4..=8 look missing.
    rewrite_frame(&seg, record_at(2), |f| {
        f[10..18].copy_from_slice(&9u64.to_be_bytes())
    });
    let (_, offset, reason) = expect_corrupt(dir.path());
    assert_eq!(offset, record_at(2));
    assert!(reason.contains("decisions 3..=8 are missing"), "{reason}");
}

#[test]
fn checkpoint_files_without_any_segment_are_corrupt() {
    let dir = TempDir::new("no-segments");
    {
        let (mut s, _) = open_ok(dir.path());
        s.append(&decision(1)).unwrap();
        let (snap, d) = snapshot(1, 10);
        s.write_checkpoint(1, d, &snap).unwrap();
    }
    for seg in segments(dir.path()) {
        std::fs::remove_file(seg).unwrap();
    }
    let (_, _, reason) = expect_corrupt(dir.path());
    assert!(reason.contains("no log segment"), "{reason}");
}

/// Older segments end in the zeros that were written ahead; a non-zero
/// byte there is not a torn write (the segment was complete and synced).
#[test]
fn a_flipped_byte_in_the_zeros_after_an_older_segment_is_corrupt() {
    let dir = TempDir::new("flip-older-zeros");
    {
        let (mut s, _) = open_ok(dir.path());
        for cid in 1..=30 {
            s.append(&proposal(cid, 6000)).unwrap();
            s.sync().unwrap();
            prepare_all(&mut s);
        }
    }
    let segs = segments(dir.path());
    let older = segs
        .iter()
        .rev()
        .skip(2)
        .find(|p| file_len(p) > data_end(p))
        .expect("an older segment with zeros after its last group");
    let end = data_end(older);
    flip_byte(older, file_len(older) - 1);
    let (segment, offset, reason) = expect_corrupt(dir.path());
    assert_eq!((&segment, offset), (older, end));
    assert!(reason.contains("complete and synced"), "{reason}");
}

/// Garbage in the zeros after the end of the newest segment cannot be
/// told from a torn write of a group that has not landed: it is cut
/// (zeroed) and reported, nothing synced is lost.
#[test]
fn garbage_after_the_end_of_the_newest_segment_is_a_reported_torn_tail() {
    let dir = TempDir::new("garbage-newest-zeros");
    let records = one_record_groups(dir.path(), 3);
    prepare_all(&mut open_ok(dir.path()).0);
    let seg = segments(dir.path()).pop().unwrap();
    let (end, len) = (data_end(&seg), file_len(&seg));
    assert!(len > end + 2 * BLOCK_BYTES);
    flip_byte(&seg, end + BLOCK_BYTES + 7);
    let (_, rec) = open_ok(dir.path());
    assert_eq!(rec.records, records);
    assert_eq!(rec.truncated_tail_bytes, 2 * BLOCK_BYTES);
    assert!(rec.warnings[0].contains("torn write"), "{:?}", rec.warnings);
    assert_eq!(data_end(&seg), end, "zeroed, not truncated");
    assert!(file_len(&seg) >= len);
}

/// A segment whose header block was lost (zeros) but that holds groups is
/// not a spare prepared ahead: as the newest segment or in the middle,
/// it is corrupt.
#[test]
fn a_segment_with_a_zeroed_header_and_groups_is_corrupt_not_a_spare() {
    for newest in [true, false] {
        let dir = TempDir::new("zeroed-header");
        {
            let (mut s, _) = open_ok(dir.path());
            for cid in 1..=30 {
                s.append(&proposal(cid, 3000)).unwrap();
                s.sync().unwrap();
            }
            assert!(s.segment_seqs().len() >= 3);
        }
        let segs = segments(dir.path());
        let victim = if newest { segs.last() } else { segs.get(1) }.unwrap();
        zero_range(victim, 0, BLOCK_BYTES);
        let (segment, offset, reason) = expect_corrupt(dir.path());
        assert_eq!((&segment, offset), (victim, 0));
        assert!(reason.contains("magic"), "{reason}");
    }
}

/// A prepared spare with a non-zero byte after its header block was not
/// written by us: corrupt.
#[test]
fn a_spare_that_is_not_all_zeros_is_corrupt() {
    let dir = TempDir::new("dirty-spare");
    {
        let (mut s, _) = open_ok(dir.path());
        for cid in 1..=30 {
            s.append(&proposal(cid, 3000)).unwrap();
            s.sync().unwrap();
            prepare_all(&mut s);
            if segments(dir.path()).len() > s.segment_seqs().len() {
                break;
            }
        }
        assert_eq!(segments(dir.path()).len(), s.segment_seqs().len() + 1);
    }
    let spare = segments(dir.path()).pop().unwrap();
    flip_byte(&spare, BLOCK_BYTES + 100);
    let (segment, offset, reason) = expect_corrupt(dir.path());
    assert_eq!((&segment, offset), (&spare, 0));
    assert!(reason.contains("magic"), "{reason}");
}

/// A log of at least two segments, written once, copied by each case.
fn template() -> (TempDir, Vec<Record>) {
    let dir = TempDir::new("random-corruption-template");
    let mut records = Vec::new();
    {
        let (mut s, _) = open_ok(dir.path());
        for cid in 1..=24 {
            for r in [proposal(cid, 900), decision(cid)] {
                append(&mut s, &r);
                records.push(r);
            }
            if cid % 2 == 0 {
                s.sync().unwrap();
            }
        }
    }
    assert!(segments(dir.path()).len() >= 2);
    (dir, records)
}

/// Overwrite a few random bytes anywhere in any segment: recovery either
/// errors with Corrupt (naming that segment) or returns a prefix of what
/// was written.
#[test]
fn random_corruption_never_panics_and_never_invents_records() {
    let (template, written) = template();
    let mut runner = TestRunner::new(Config {
        cases: 200,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0xC0_22_07),
        ..Config::default()
    });
    let damage = (
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        proptest::collection::vec(any::<u8>(), 1..16),
    );
    runner
        .run(&damage, |(segment_pick, offset_pick, garbage)| {
            let dir = TempDir::new("random-corruption");
            copy_dir(template.path(), dir.path());
            let segs = segments(dir.path());
            let seg = segment_pick.get(&segs);
            let mut bytes = std::fs::read(seg).unwrap();
            let at = offset_pick.index(bytes.len());
            let end = (at + garbage.len()).min(bytes.len());
            bytes[at..end].copy_from_slice(&garbage[..end - at]);
            std::fs::write(seg, bytes).unwrap();
            match open(dir.path()) {
                Ok((_, rec)) => {
                    prop_assert!(rec.records.len() <= written.len());
                    prop_assert_eq!(&rec.records[..], &written[..rec.records.len()]);
                }
                Err(StorageError::Corrupt { segment, .. }) => prop_assert_eq!(&segment, seg),
                Err(e) => prop_assert!(false, "unexpected error {}", e),
            }
            Ok(())
        })
        .unwrap();
}
