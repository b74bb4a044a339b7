//! Checkpoint files: `checkpoint-<cid, 20 digits>.snap`.
//!
//! Layout (big-endian): `magic "bftdckpt" | version u32 | cid u64 |
//! digest [32] | snapshot_bytes u64 | snapshot_crc32c u32 |
//! header_crc32c u32` ([`HEADER_BYTES`] bytes), then the snapshot. A file
//! is valid when the header checksum, magic, version, the cid of its name,
//! the length, the snapshot checksum and the digest
//! (`wire::hash::digest(snapshot)`) all agree.
//!
//! Written atomically: temporary file, fsync, rename, fsync the directory.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use wire::{Cid, Digest};

use crate::segment::parse_digits_20;
use crate::{fsync_dir, io_error, Checkpoint, Limits, StorageError};

const MAGIC: [u8; 8] = *b"bftdckpt";
const FORMAT_VERSION: u32 = 1;
/// Bytes of a checkpoint file header.
pub const HEADER_BYTES: usize = 8 + 4 + 8 + 32 + 8 + 4 + 4;

/// `checkpoint-<cid>.snap` with `cid` zero-padded to 20 digits.
pub(crate) fn file_name(cid: Cid) -> String {
    format!("checkpoint-{cid:020}.snap")
}

/// The cid of a checkpoint file name, if `name` is exactly one.
pub(crate) fn parse_file_name(name: &str) -> Option<Cid> {
    parse_digits_20(name.strip_prefix("checkpoint-")?.strip_suffix(".snap")?)
}

fn encode_header(cid: Cid, digest: &Digest, snapshot: &[u8]) -> [u8; HEADER_BYTES] {
    let mut h = Vec::with_capacity(HEADER_BYTES);
    h.extend_from_slice(&MAGIC);
    h.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    h.extend_from_slice(&cid.to_be_bytes());
    h.extend_from_slice(digest.as_bytes());
    h.extend_from_slice(&(snapshot.len() as u64).to_be_bytes());
    h.extend_from_slice(&crc32c::crc32c(snapshot).to_be_bytes());
    let crc = crc32c::crc32c(&h);
    h.extend_from_slice(&crc.to_be_bytes());
    h.try_into().expect("header is HEADER_BYTES long")
}

/// Bytes of a checkpoint written between two writeback requests.
const WRITEBACK_PIECE_BYTES: usize = 1 << 20;

/// Starts writeback of `len` bytes of `file` from `offset`
/// (`sync_file_range(2)` with `SYNC_FILE_RANGE_WRITE`), and with `wait`
/// also waits until they are written. Not a durability barrier (metadata
/// and the disk cache are left to `sync_data`): only a way to keep dirty
/// pages few. A file system without it (`ENOSYS`, `EINVAL`, `ESPIPE`) is
/// not an error.
fn writeback(file: &File, offset: u64, len: usize, wait: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = if wait {
        libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER
    } else {
        libc::SYNC_FILE_RANGE_WRITE
    };
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Ok(());
    };
    // SAFETY: the descriptor is open for the life of `file`; the call only
    // reads its arguments.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOSYS | libc::EINVAL | libc::ESPIPE) => Ok(()),
        _ => Err(e),
    }
}

/// Writes checkpoint `cid` into `dir` atomically; returns its path.
pub(crate) fn write(
    dir: &Path,
    cid: Cid,
    digest: &Digest,
    snapshot: &[u8],
) -> Result<PathBuf, StorageError> {
    let path = dir.join(file_name(cid));
    let tmp = dir.join(format!("{}.tmp", file_name(cid)));
    let io = io_error(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(&encode_header(cid, digest, snapshot))
        .map_err(io)?;
    // In pieces, each handed to writeback as it is written and waited for
    // one piece later (RocksDB's `bytes_per_sync`): at most two pieces are
    // dirty at any time, so a WAL fsync that lands meanwhile (ext4 commits
    // the journal with every dirty data block it orders) never waits for a
    // whole checkpoint to reach the disk.
    let mut offset = HEADER_BYTES as u64;
    let mut previous: Option<(u64, usize)> = None;
    for piece in snapshot.chunks(WRITEBACK_PIECE_BYTES) {
        file.write_all(piece).map_err(io)?;
        writeback(&file, offset, piece.len(), false).map_err(io)?;
        if let Some((at, len)) = previous {
            writeback(&file, at, len, true).map_err(io)?;
        }
        previous = Some((offset, piece.len()));
        offset += piece.len() as u64;
    }
    file.sync_data().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io_error(&path))?;
    fsync_dir(dir)?;
    Ok(path)
}

/// Reads and validates checkpoint file `path` named for `cid`.
///
/// `Ok(Err(reason))`: the file is not a valid checkpoint. `Err(_)`: the
/// file could not be read at all (an I/O error, not bad contents).
pub(crate) fn load(
    path: &Path,
    cid: Cid,
    limits: &Limits,
) -> Result<Result<Checkpoint, String>, StorageError> {
    let io = io_error(path);
    let mut file = File::open(path).map_err(io)?;
    let file_bytes = file.metadata().map_err(io)?.len();
    if file_bytes < HEADER_BYTES as u64 {
        return Ok(Err(format!("{file_bytes} bytes, shorter than the header")));
    }
    let mut h = [0u8; HEADER_BYTES];
    file.read_exact(&mut h).map_err(io)?;
    let u32_at = |i: usize| u32::from_be_bytes(h[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_be_bytes(h[i..i + 8].try_into().expect("8 bytes"));
    if h[0..8] != MAGIC {
        return Ok(Err("wrong magic (not a bftd checkpoint)".into()));
    }
    if crc32c::crc32c(&h[..HEADER_BYTES - 4]) != u32_at(HEADER_BYTES - 4) {
        return Ok(Err("header checksum mismatch".into()));
    }
    let version = u32_at(8);
    if version != FORMAT_VERSION {
        return Ok(Err(format!(
            "format version {version}, this build reads {FORMAT_VERSION}"
        )));
    }
    let header_cid = u64_at(12);
    if header_cid != cid {
        return Ok(Err(format!(
            "header says cid {header_cid}, the file name {cid}"
        )));
    }
    let digest = Digest(h[20..52].try_into().expect("32 bytes"));
    let snapshot_bytes = u64_at(52);
    let snapshot_crc = u32_at(60);
    if snapshot_bytes > limits.snapshot_bytes_max {
        return Ok(Err(format!(
            "snapshot of {snapshot_bytes} bytes, above snapshot_bytes_max {}",
            limits.snapshot_bytes_max
        )));
    }
    if snapshot_bytes != file_bytes - HEADER_BYTES as u64 {
        return Ok(Err(format!(
            "header says {snapshot_bytes} snapshot bytes, the file holds {}",
            file_bytes - HEADER_BYTES as u64
        )));
    }
    let mut snapshot = vec![0u8; snapshot_bytes as usize];
    file.read_exact(&mut snapshot).map_err(io)?;
    if crc32c::crc32c(&snapshot) != snapshot_crc {
        return Ok(Err("snapshot checksum mismatch".into()));
    }
    if wire::hash::digest(&snapshot) != digest {
        return Ok(Err("snapshot does not match its digest".into()));
    }
    Ok(Ok(Checkpoint {
        cid,
        digest,
        snapshot,
    }))
}

/// What [`load_newest`] found.
pub(crate) struct Newest {
    pub checkpoint: Option<Checkpoint>,
    /// Cids of the newer files found invalid, newest first.
    pub invalid: Vec<Cid>,
    /// One per invalid file.
    pub warnings: Vec<String>,
}

/// Loads the newest valid checkpoint among `cids` (any order) in `dir`.
pub(crate) fn load_newest(
    dir: &Path,
    cids: &[Cid],
    limits: &Limits,
) -> Result<Newest, StorageError> {
    let mut sorted = cids.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let mut invalid = Vec::new();
    let mut warnings = Vec::new();
    for cid in sorted {
        let path = dir.join(file_name(cid));
        match load(&path, cid, limits)? {
            Ok(checkpoint) => {
                return Ok(Newest {
                    checkpoint: Some(checkpoint),
                    invalid,
                    warnings,
                })
            }
            Err(reason) => {
                warnings.push(format!(
                    "{}: invalid checkpoint ({reason}); falling back to an older one",
                    path.display()
                ));
                invalid.push(cid);
            }
        }
    }
    Ok(Newest {
        checkpoint: None,
        invalid,
        warnings,
    })
}
