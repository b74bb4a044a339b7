//! What is appended and synced comes back, in order, after a clean
//! shutdown.

mod common;

use common::*;
use storage::{Durability, Lsn, Record, Storage, StorageError, BLOCK_BYTES};
use wire::hash::digest;

#[test]
fn every_record_kind_round_trips_through_a_clean_shutdown() {
    let dir = TempDir::new("kinds");
    let records = vec![
        Record::Regency { regency: 3 },
        Record::Proposal {
            regency: 3,
            cid: 7,
            batch: b"batch bytes".to_vec(),
        },
        Record::Proposal {
            regency: 3,
            cid: 8,
            batch: Vec::new(),
        },
        Record::Decision {
            cid: 7,
            regency: 3,
            digest: digest(b"batch bytes"),
            proof: vec![0xAB; 300],
        },
        Record::Checkpoint {
            cid: 5,
            digest: digest(b"state"),
        },
        Record::Accept {
            regency: 3,
            cid: 7,
            digest: digest(b"batch bytes"),
        },
        Record::Decision {
            cid: 8,
            regency: 3,
            digest: digest(b""),
            proof: Vec::new(),
        },
    ];
    {
        let (mut s, rec) = open_ok(dir.path());
        assert!(rec.records.is_empty() && rec.warnings.is_empty() && rec.checkpoint.is_none());
        for (i, r) in records.iter().enumerate() {
            assert_eq!(s.append(r).unwrap(), Lsn(i as u64 + 1));
        }
        assert_eq!(s.durable_lsn(), Lsn(0));
        assert_eq!(s.sync().unwrap(), Lsn(records.len() as u64));
    }
    let (s, rec) = open_ok(dir.path());
    assert_eq!(rec.records, records);
    assert_eq!(rec.regency, 3);
    assert_eq!(rec.truncated_tail_bytes, 0);
    // The CHECKPOINT record was appended by hand, without a checkpoint
    // file: recovery says so.
    assert_eq!(rec.warnings.len(), 1, "{:?}", rec.warnings);
    assert!(rec.warnings[0].contains("no checkpoint file is valid"));
    assert_eq!(s.durable_lsn(), Lsn(records.len() as u64));
    assert_eq!(s.regency(), 3);
}

#[test]
fn groups_are_block_aligned_and_one_sync_is_one_group() {
    let dir = TempDir::new("aligned");
    let (mut s, _) = open_ok(dir.path());
    let seg = segments(dir.path()).pop().unwrap();
    let end = |s: &Storage| s.log_end().unwrap().1;
    assert_eq!(end(&s), BLOCK_BYTES);
    // Open prepared the room ahead: the file never grows below.
    let prealloc = small_limits().prealloc_bytes;
    assert_eq!(file_len(&seg), BLOCK_BYTES + prealloc);
    for cid in 1..=3 {
        s.append(&proposal(cid, 100)).unwrap();
    }
    s.sync().unwrap();
    assert_eq!(end(&s), 2 * BLOCK_BYTES);
    assert_eq!(data_end(&seg), 2 * BLOCK_BYTES);
    // Nothing pending: no write, no fsync.
    s.sync().unwrap();
    assert_eq!(end(&s), 2 * BLOCK_BYTES);
    s.append(&proposal(4, 5000)).unwrap();
    s.sync().unwrap();
    assert_eq!(end(&s), 4 * BLOCK_BYTES);
    assert_eq!(data_end(&seg), 4 * BLOCK_BYTES);
    assert_eq!(file_len(&seg), BLOCK_BYTES + prealloc);
    let stats = s.prealloc_stats();
    assert_eq!((stats.groups, stats.groups_extending), (2, 0));
}

#[test]
fn without_preallocation_each_group_grows_the_file() {
    let dir = TempDir::new("aligned-no-prealloc");
    let limits = no_prealloc(small_limits());
    let (mut s, _) = Storage::open(dir.path(), Durability::Fsync, limits).unwrap();
    let seg = segments(dir.path()).pop().unwrap();
    assert_eq!(file_len(&seg), BLOCK_BYTES);
    s.append(&proposal(1, 100)).unwrap();
    s.sync().unwrap();
    assert_eq!(file_len(&seg), 2 * BLOCK_BYTES);
    assert!(!s.prepare().unwrap(), "nothing to prepare");
    assert_eq!(file_len(&seg), 2 * BLOCK_BYTES);
    let stats = s.prealloc_stats();
    assert_eq!((stats.groups, stats.groups_extending), (1, 1));
    assert_eq!(stats.zeros_written_bytes, 0);
}

#[test]
fn many_groups_across_segments_come_back_in_order() {
    let dir = TempDir::new("rotate");
    let mut expected = Vec::new();
    {
        let (mut s, _) = open_ok(dir.path());
        for cid in 1..=60 {
            for r in [proposal(cid, 700 + cid as usize * 13), decision(cid)] {
                append(&mut s, &r);
                expected.push(r);
            }
            if cid % 4 == 0 {
                s.sync().unwrap();
            }
        }
        s.sync().unwrap();
        assert!(
            s.segment_seqs().len() >= 3,
            "segments rotate: {:?}",
            s.segment_seqs()
        );
    }
    let (mut s, rec) = open_ok(dir.path());
    assert_eq!(rec.records, expected);
    assert!(rec.warnings.is_empty(), "{:?}", rec.warnings);
    for f in segments(dir.path()) {
        assert!(file_len(&f) <= small_limits().segment_bytes_max);
    }

    // The log continues after recovery.
    s.append(&proposal(61, 10)).unwrap();
    s.append(&decision(61)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (_, rec) = open_ok(dir.path());
    assert_eq!(rec.records.len(), expected.len() + 2);
    assert_eq!(rec.records.last(), Some(&decision(61)));
}

#[test]
fn records_not_synced_are_not_recovered() {
    let dir = TempDir::new("unsynced");
    {
        let (mut s, _) = open_ok(dir.path());
        s.append(&proposal(1, 10)).unwrap();
        s.sync().unwrap();
        s.append(&proposal(2, 10)).unwrap();
    }
    let (_, rec) = open_ok(dir.path());
    assert_eq!(rec.records, vec![proposal(1, 10)]);
}

#[test]
fn a_record_above_the_limit_is_refused_on_append() {
    let dir = TempDir::new("too-large-append");
    let (mut s, _) = open_ok(dir.path());
    let max = small_limits().record_bytes_max;
    let err = s.append(&proposal(1, max)).unwrap_err();
    assert!(matches!(err, StorageError::RecordTooLarge { .. }), "{err}");
    assert_eq!(s.pending_bytes(), 0);
    assert_eq!(s.next_lsn(), Lsn(1));
}

#[test]
fn a_full_group_asks_for_a_sync_and_appends_nothing() {
    let dir = TempDir::new("group-full");
    let (mut s, _) = open_ok(dir.path());
    let mut cid = 0;
    let err = loop {
        cid += 1;
        match s.append(&proposal(cid, 10_000)) {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, StorageError::GroupFull { .. }), "{err}");
    assert!(s.pending_bytes() <= small_limits().group_bytes_max);
    let durable = s.sync().unwrap();
    assert_eq!(durable, Lsn(cid - 1));
    assert_eq!(s.append(&proposal(cid, 10_000)).unwrap(), Lsn(cid));
}

#[test]
fn checkpoints_round_trip_and_only_the_newest_two_are_kept() {
    let dir = TempDir::new("checkpoints");
    {
        let (mut s, _) = open_ok(dir.path());
        for cid in 1..=30 {
            append(&mut s, &decision(cid));
            if cid % 10 == 0 {
                let (snap, d) = snapshot(cid, 5000);
                s.write_checkpoint(cid, d, &snap).unwrap();
            }
        }
        s.sync().unwrap();
        assert_eq!(s.checkpoint_cids(), vec![20, 30]);
        let (loaded, warnings) = s.load_checkpoint().unwrap();
        assert_eq!(loaded.unwrap().cid, 30);
        assert!(warnings.is_empty());
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("checkpoint-"))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let (_, rec) = open_ok(dir.path());
    let cp = rec.checkpoint.expect("a checkpoint");
    assert_eq!(cp.cid, 30);
    assert_eq!((cp.snapshot.clone(), cp.digest), snapshot(30, 5000));
    // Only the CHECKPOINT marker of 30 is at cid 30; nothing after it.
    assert!(rec.records.is_empty(), "{:?}", rec.records);
    assert!(rec.warnings.is_empty(), "{:?}", rec.warnings);
}

#[test]
fn records_after_the_checkpoint_are_returned() {
    let dir = TempDir::new("after-checkpoint");
    {
        let (mut s, _) = open_ok(dir.path());
        for cid in 1..=12 {
            append(&mut s, &proposal(cid, 50));
            append(&mut s, &decision(cid));
            if cid == 10 {
                let (snap, d) = snapshot(cid, 100);
                s.write_checkpoint(cid, d, &snap).unwrap();
            }
        }
        s.sync().unwrap();
    }
    let (_, rec) = open_ok(dir.path());
    assert_eq!(rec.checkpoint.unwrap().cid, 10);
    assert_eq!(
        rec.records,
        vec![
            proposal(11, 50),
            decision(11),
            proposal(12, 50),
            decision(12)
        ]
    );
    // What the checkpoint covers comes back apart, for the decision log.
    let covered: Vec<Record> = (1..=10)
        .flat_map(|cid| [proposal(cid, 50), decision(cid)])
        .collect();
    assert_eq!(rec.covered, covered);
}

#[test]
fn memory_durability_keeps_nothing_on_disk() {
    let dir = TempDir::new("memory");
    let (mut s, rec) = Storage::open(dir.path(), Durability::Memory, small_limits()).unwrap();
    assert!(rec.records.is_empty() && rec.checkpoint.is_none());
    assert_eq!(s.append(&proposal(1, 10)).unwrap(), Lsn(1));
    assert_eq!(s.append(&Record::Regency { regency: 2 }).unwrap(), Lsn(2));
    assert_eq!(s.sync().unwrap(), Lsn(2));
    let (snap, d) = snapshot(1, 10);
    s.write_checkpoint(1, d, &snap).unwrap();
    assert_eq!(s.truncate_through(1).unwrap().segments_removed, 0);
    assert_eq!(s.load_checkpoint().unwrap().0, None);
    assert!(!dir.path().exists(), "memory mode creates nothing");
    let (_, rec) = Storage::open(dir.path(), Durability::Memory, small_limits()).unwrap();
    assert!(rec.records.is_empty());
}

#[test]
#[should_panic(expected = "a gap")]
fn a_decision_that_skips_a_cid_is_a_bug() {
    let dir = TempDir::new("decision-gap");
    let (mut s, _) = open_ok(dir.path());
    s.append(&decision(1)).unwrap();
    s.append(&decision(3)).unwrap();
}

#[test]
#[should_panic(expected = "REGENCY 1 appended after REGENCY 2")]
fn a_regency_going_back_is_a_bug() {
    let dir = TempDir::new("regency-back");
    let (mut s, _) = open_ok(dir.path());
    s.append(&Record::Regency { regency: 2 }).unwrap();
    s.append(&Record::Regency { regency: 1 }).unwrap();
}

#[test]
fn the_old_wal_interface_writes_proposals() {
    let dir = TempDir::new("compat");
    {
        let mut w = storage::Wal::open(dir.path()).unwrap();
        let mut payload = 9u64.to_be_bytes().to_vec();
        payload.extend_from_slice(&2u32.to_be_bytes());
        payload.extend_from_slice(b"batch");
        w.append(1, &payload);
        w.sync().unwrap();
    }
    let (_, rec) = Storage::open(dir.path(), Durability::Fsync, Default::default()).unwrap();
    assert_eq!(
        rec.records,
        vec![Record::Proposal {
            regency: 2,
            cid: 9,
            batch: b"batch".to_vec()
        }]
    );
}

#[test]
fn a_checkpoint_of_several_writeback_pieces_round_trips_byte_for_byte() {
    // 3.5 MiB: written in 1 MiB pieces, each handed to writeback and
    // waited for one piece later, the last piece short.
    let dir = TempDir::new("checkpoint-pieces");
    let (snap, d) = snapshot(10, (7 << 20) / 2);
    let limits = storage::Limits {
        snapshot_bytes_max: 4 << 20,
        ..small_limits()
    };
    let open_big = || Storage::open(dir.path(), Durability::Fsync, limits).unwrap();
    {
        let (mut s, _) = open_big();
        for cid in 1..=10 {
            append(&mut s, &decision(cid));
        }
        s.sync().unwrap();
        s.write_checkpoint(10, d, &snap).unwrap();
    }
    let (_, rec) = open_big();
    let cp = rec.checkpoint.expect("a checkpoint");
    assert_eq!(cp.cid, 10);
    assert_eq!(cp.digest, d);
    assert!(cp.snapshot == snap, "the snapshot comes back byte for byte");
}
