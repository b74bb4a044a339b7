//! Shared helpers: unique temporary directories, small limits, records.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use storage::{Durability, Limits, Record, Recovered, Storage, StorageError};
use wire::hash::digest;
use wire::Digest;

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A directory under `std::env::temp_dir()` removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh, not yet existing, directory path unique to this process.
    pub fn new(name: &str) -> Self {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("bftd-storage-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Small limits so that tests rotate segments after a few groups.
pub fn small_limits() -> Limits {
    Limits {
        record_bytes_max: 16 * 1024,
        group_bytes_max: 32 * 1024,
        segment_bytes_max: 48 * 1024,
        prealloc_bytes: 16 * 1024,
        prepare_step_bytes: 8 * 1024,
        snapshot_bytes_max: 1 << 20,
        dir_entries_max: 1000,
    }
}

/// The smallest consistent limits: a segment holds about three groups.
pub fn tiny_limits() -> Limits {
    Limits {
        record_bytes_max: 4096,
        group_bytes_max: 8192,
        segment_bytes_max: 16 * 1024,
        prealloc_bytes: 8 * 1024,
        prepare_step_bytes: 4 * 1024,
        snapshot_bytes_max: 1 << 20,
        dir_entries_max: 1000,
    }
}

/// `small_limits` without preallocation: the layout written before it
/// (every group grows the file).
pub fn no_prealloc(limits: Limits) -> Limits {
    Limits {
        prealloc_bytes: 0,
        ..limits
    }
}

pub fn open(dir: &Path) -> Result<(Storage, Recovered), StorageError> {
    Storage::open(dir, Durability::Fsync, small_limits())
}

pub fn open_ok(dir: &Path) -> (Storage, Recovered) {
    open(dir).unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
}

pub fn proposal(cid: u64, batch_bytes: usize) -> Record {
    Record::Proposal {
        regency: 0,
        cid,
        batch: (0..batch_bytes).map(|i| (i as u64 ^ cid) as u8).collect(),
    }
}

pub fn decision(cid: u64) -> Record {
    Record::Decision {
        cid,
        regency: 0,
        digest: digest(&cid.to_be_bytes()),
        proof: vec![cid as u8; 64],
    }
}

/// A snapshot for checkpoint `cid` and its digest.
pub fn snapshot(cid: u64, bytes: usize) -> (Vec<u8>, Digest) {
    let s: Vec<u8> = (0..bytes).map(|i| (i as u64 * 31 + cid) as u8).collect();
    let d = digest(&s);
    (s, d)
}

/// Appends `record`, syncing first when the group is full.
pub fn append(s: &mut Storage, record: &Record) {
    match s.append(record) {
        Err(StorageError::GroupFull { .. }) => {
            s.sync().unwrap();
            s.append(record).unwrap();
        }
        other => {
            other.unwrap();
        }
    }
}

/// Segment files in `dir`, ascending.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.starts_with("wal-") && n.ends_with(".log")
        })
        .collect();
    v.sort();
    v
}

pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// End of the last 4 KiB block of `path` holding a non-zero byte: the end
/// of a segment's last group (its `PADDING` header is never all zeros);
/// what follows is preallocated zeros.
pub fn data_end(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let last = bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1);
    last.next_multiple_of(storage::BLOCK_BYTES)
}

/// Overwrites bytes `from..to` of `path` with zeros (the file keeps its
/// length).
pub fn zero_range(path: &Path, from: u64, to: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&vec![0u8; (to - from) as usize], from)
        .unwrap();
}

/// Runs [`Storage::prepare`] until it has nothing left to do (what the
/// storage thread does when idle).
pub fn prepare_all(s: &mut Storage) {
    for _ in 0..1000 {
        if !s.prepare().unwrap() {
            return;
        }
    }
    panic!("prepare did not finish in 1000 steps");
}

/// Copies every file of `from` into a fresh `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Flips every bit of the byte at `offset` in `path`.
pub fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0xFF;
    std::fs::write(path, bytes).unwrap();
}

/// Records without REGENCY ones (which truncation may re-append).
pub fn without_regency(records: &[Record]) -> Vec<Record> {
    records
        .iter()
        .filter(|r| !matches!(r, Record::Regency { .. }))
        .cloned()
        .collect()
}
