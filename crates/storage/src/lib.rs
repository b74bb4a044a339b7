//! `storage`: what a replica must not forget across a crash.
//!
//! [`Storage`] is a segmented write-ahead log of typed [`Record`]s
//! (PROPOSAL, DECISION, REGENCY, CHECKPOINT) plus checkpoint files holding
//! opaque state snapshots. [`Storage::open`] recovers: the newest valid
//! checkpoint and every record after it ([`Recovered`]).
//!
//! # On disk (one directory)
//! - `wal-<seq>.log`: segments, at most [`Limits::segment_bytes_max`]
//!   each (a single group may overshoot). A 4 KiB header block (magic,
//!   format version, seq, first lsn, a random nonce, crc32c), then groups.
//! - A group is what one [`Storage::sync`] writes: one `pwrite`, one
//!   `fdatasync`. It starts at a 4 KiB boundary with a `GROUP` frame
//!   (first lsn, segment nonce), holds the records, and ends with a
//!   `PADDING` frame at the next 4 KiB boundary (see [`record`] for the
//!   frame layout: length, crc32c, version, kind, payload).
//! - Preallocation: after the last group, the active segment holds
//!   [`Limits::prealloc_bytes`] of zeros written ahead by
//!   [`Storage::prepare`], so a group overwrites blocks the file already
//!   has and its `fdatasync` needs no journal commit for the file size
//!   (measured below). When the active segment is zero-filled to
//!   `segment_bytes_max`, the next one is prepared: `wal-<seq>.log.tmp`
//!   filled with zeros (header block included), fdatasynced, renamed to
//!   `wal-<seq>.log` (a *spare*: its header block is all zeros). A rollover
//!   writes the header into the spare and fdatasyncs it, then the group.
//!   Without a spare (or with `prealloc_bytes` 0) a rollover creates the
//!   segment and a group past the zeros grows the file, as before
//!   preallocation; [`PreallocStats`] counts both.
//! - `checkpoint-<cid>.snap`: see [`checkpoint`]. The newest two are kept.
//!
//! # Recovery rules
//! - Zeros from a block boundary outside a group to the end of a segment
//!   file are the end of that segment (the preallocated space): nothing
//!   is reported or cut. An older segment ending early this way is caught
//!   by the lsn check of the next segment's header.
//! - A bad frame (short header, short payload, checksum mismatch) in the
//!   newest segment with no complete group after it, and a non-zero byte
//!   at or after it (or inside a group), is a torn write: the open group
//!   is closed with padding, the torn bytes are overwritten with zeros
//!   (the file keeps its length and its preallocation), fsynced, and
//!   reported ([`Recovered::truncated_tail_bytes`], a warning). So a torn
//!   group followed by zeros is still a torn tail. Groups never share a
//!   4 KiB block, so a torn write cannot damage earlier, acknowledged
//!   groups.
//! - Except: a checksum mismatch in the newest group whose bytes are all
//!   present (the frames after it check up to the group's closing
//!   `PADDING`, and the bad frame holds no all-zero 512-byte sector, which
//!   is what an unwritten sector reads as) is corruption, not a torn
//!   write: the group was written whole and may have been acknowledged.
//! - The newest segment file is a spare, not part of the log, when its
//!   header block is not a valid header and every byte after the block
//!   is zero (a segment that ever held a group has a durable header: it
//!   is written and fdatasynced before the first group). A spare whose
//!   header block is not all zeros (a crash while the header was
//!   written) is zeroed again, with a warning.
//! - Anything else is [`StorageError::Corrupt`]: a bad frame followed by
//!   a complete group, a bad frame in a complete newest group, a bad
//!   frame in an older segment, an unknown record
//!   kind or version, a length above [`Limits::record_bytes_max`], a
//!   missing segment or group (lsn gap), a gap in the DECISION cids after
//!   the checkpoint, a non-zero byte after the end of an older segment,
//!   a header block that is not a valid header in front of groups. Never
//!   a panic, never silently skipped.
//! - Logs written before preallocation (each file ends at its last group)
//!   recover the same way.
//! - A corrupt checkpoint is renamed `*.snap.corrupt` and the previous one
//!   used, with a warning. To keep that fallback usable the log always
//!   reaches back to the older of the two kept checkpoints
//!   ([`Storage::truncate_through`]).
//! - Files and directories named `host-*` belong to the program around
//!   the log (for bftd, its proxy's first sequence number and its kv
//!   store's LMDB directory) and are passed over silently
//!   ([`HOST_FILE_PREFIX`]).
//! - Files whose names are not ours are ignored with a warning; our
//!   `*.tmp` files (a crash while creating a segment or a checkpoint) are
//!   removed with a warning.
//!
//! # Threads
//! `Storage` is single-threaded by design: the replica's storage thread
//! owns it, calls [`Storage::append`] for every job waiting, then
//! [`Storage::sync`] once, and acknowledges everything up to the
//! [`Lsn`] it returns (group commit). When it has nothing to do it calls
//! [`Storage::prepare`] (bounded work per call) until that returns
//! `false`; `sync` never preallocates.
//!
//! # memmap2 / io_uring
//! Not used, by measurement (`benches/wal.rs`, ext4 on this machine): a
//! 4 KiB `pwrite` takes ~5 µs p50, the `fdatasync` after it ~150 µs, so
//! io_uring could save at most the ~5 µs syscall of a group. Recovery reads
//! a 64 MiB log in ~55 ms with a buffered reader and must copy records into
//! owned buffers anyway, so mmap would save one memcpy at start-up only.
//! What did help: `fdatasync` after overwriting blocks written ahead
//! (zeros) needs no journal commit; see `benches/wal.rs` for append+sync
//! with and without preallocation, one writer and four. `fallocate` is
//! not enough: its unwritten extents still cost a metadata update when
//! first written.

/// Files and directories in the log's directory whose names start with
/// this belong to the program using the log, not to it: recovery passes
/// over them without a warning (other unknown files are ignored with one).
pub const HOST_FILE_PREFIX: &str = "host-";

pub mod checkpoint;
mod compat;
pub mod record;
mod recovery;
mod segment;

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use thiserror::Error;
use wire::{Cid, Digest, Regency};

pub use compat::Wal;
pub use record::Record;
pub use segment::BLOCK_BYTES;

use record::{FRAME_HEADER_BYTES, GROUP_FRAME_BYTES};

/// What every [`StorageError::Corrupt`] tells the operator.
pub const RESTORE_ADVICE: &str = "restore the replica from another replica: stop it, remove its \
     data directory and restart it so that state transfer refills it";

/// Storage failures. A replica that cannot write its log stops.
#[derive(Debug, Error)]
pub enum StorageError {
    /// The operating system refused an operation on `path`.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// On-disk state that is not a crash's torn tail: recovery stops.
    #[error(
        "{segment}: corrupt at offset {offset}: {reason}. The log cannot be trusted; \
         {RESTORE_ADVICE}",
        segment = segment.display()
    )]
    Corrupt {
        segment: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A record's payload exceeds [`Limits::record_bytes_max`].
    #[error("record of {bytes} bytes above record_bytes_max {max}")]
    RecordTooLarge { bytes: usize, max: usize },
    /// The open group cannot take this record: call [`Storage::sync`] and
    /// append it again. Nothing was appended.
    #[error(
        "group of {pending_bytes} bytes cannot take {record_bytes} more (group_bytes_max {max})"
    )]
    GroupFull {
        pending_bytes: usize,
        record_bytes: usize,
        max: usize,
    },
    /// A snapshot exceeds [`Limits::snapshot_bytes_max`] (it could not be
    /// loaded back).
    #[error("snapshot of {bytes} bytes above snapshot_bytes_max {max}")]
    SnapshotTooLarge { bytes: u64, max: u64 },
    /// The data directory holds more entries than [`Limits::dir_entries_max`].
    #[error("{dir}: more than {max} directory entries", dir = dir.display())]
    TooManyFiles { dir: PathBuf, max: usize },
    /// The limits contradict each other.
    #[error("invalid storage limits: {0}")]
    InvalidLimits(String),
    /// An earlier write or fsync failed; what is on disk is unknown (an
    /// fsync error may have dropped dirty pages), so nothing more is done.
    #[error("an earlier write or fsync failed; the log is no longer written")]
    Poisoned,
}

/// Builds the `map_err` closure for I/O on `path`.
pub(crate) fn io_error(path: &Path) -> impl Fn(io::Error) -> StorageError + Copy + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// fsyncs directory `dir` (makes creations, renames and removals durable).
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// How records become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every [`Storage::sync`] writes and `fdatasync`s (bftd's default).
    Fsync,
    /// Nothing is written, not even without fsync: appends only count,
    /// `sync` returns at once, checkpoints are dropped, recovery returns
    /// nothing. A restarted replica catches up by state transfer
    /// (BFT-SMaRt's default). Chosen over "write without fsync" because
    /// that would survive a process crash but not a power loss, a
    /// half-promise no one can rely on.
    Memory,
}

/// Bounds on what is written and what recovery will read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest record payload, bytes; must hold a full batch
    /// (`wire::Limits::message_bytes_max`) plus its framing, and a
    /// decision proof. Checked before anything is allocated on read.
    pub record_bytes_max: usize,
    /// Largest group (records between two syncs) including framing,
    /// bytes; bounds the append buffer, allocated once at open.
    pub group_bytes_max: usize,
    /// A new segment is started when the next group would pass this,
    /// bytes.
    pub segment_bytes_max: u64,
    /// Zero-filled bytes kept written (not merely allocated) ahead of the
    /// end of the log by [`Storage::prepare`], so that a group overwrites
    /// blocks the file already has and its `fdatasync` needs no journal
    /// commit for the file size. Also the size of the next segment
    /// prepared ahead of a rollover. A multiple of [`BLOCK_BYTES`]; 0
    /// turns preallocation off (every group grows the file). This is most
    /// of what a new replica writes at start-up.
    pub prealloc_bytes: u64,
    /// Most zero bytes one [`Storage::prepare`] call writes (then one
    /// `fdatasync`): bounds how long a commit arriving during it waits.
    /// A multiple of [`BLOCK_BYTES`], above 0 when `prealloc_bytes` is.
    pub prepare_step_bytes: u64,
    /// Largest checkpoint snapshot, bytes.
    pub snapshot_bytes_max: u64,
    /// Most directory entries recovery looks at.
    pub dir_entries_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            record_bytes_max: 16 << 20,
            group_bytes_max: 32 << 20,
            segment_bytes_max: 64 << 20,
            prealloc_bytes: 1 << 20,
            prepare_step_bytes: 256 << 10,
            snapshot_bytes_max: 8 << 30,
            dir_entries_max: 100_000,
        }
    }
}

impl Limits {
    /// Checks the limits against each other.
    pub fn validate(&self) -> Result<(), StorageError> {
        let bad = |m: String| Err(StorageError::InvalidLimits(m));
        if self.record_bytes_max < BLOCK_BYTES as usize {
            return bad(format!("record_bytes_max below {BLOCK_BYTES}"));
        }
        if self.record_bytes_max > (u32::MAX as usize) / 2 {
            return bad("record_bytes_max above 2 GiB".into());
        }
        if self.group_bytes_max < GROUP_FRAME_BYTES + FRAME_HEADER_BYTES + self.record_bytes_max {
            return bad("group_bytes_max cannot hold one record of record_bytes_max".into());
        }
        if (self.group_bytes_max as u64) + 2 * BLOCK_BYTES > self.segment_bytes_max {
            return bad("segment_bytes_max cannot hold one group of group_bytes_max".into());
        }
        if self.dir_entries_max == 0 {
            return bad("dir_entries_max is 0".into());
        }
        if !self.prealloc_bytes.is_multiple_of(BLOCK_BYTES)
            || !self.prepare_step_bytes.is_multiple_of(BLOCK_BYTES)
        {
            return bad(format!(
                "prealloc_bytes and prepare_step_bytes must be multiples of {BLOCK_BYTES}"
            ));
        }
        if self.prealloc_bytes > 0 && self.prepare_step_bytes == 0 {
            return bad("prepare_step_bytes is 0 while prealloc_bytes is not".into());
        }
        Ok(())
    }

    /// Where zero-filling the active segment stops: `segment_bytes_max`
    /// rounded down to a block (no group ends past it).
    fn segment_prealloc_end_bytes(&self) -> u64 {
        self.segment_bytes_max - self.segment_bytes_max % BLOCK_BYTES
    }

    /// Length of a prepared next segment: the header block and
    /// `prealloc_bytes` of room, within the segment, bytes.
    fn spare_file_bytes(&self) -> u64 {
        (BLOCK_BYTES + self.prealloc_bytes).min(self.segment_prealloc_end_bytes())
    }

    /// Most `prepare` calls that can do work in a row (the active segment's
    /// margin, then the spare: creation, fill, naming).
    fn prepare_steps_max(&self) -> u64 {
        match self.prepare_step_bytes {
            0 => 0,
            step => 2 * (self.spare_file_bytes() / step + 1) + 2,
        }
    }

    /// Largest segment file this configuration writes, bytes.
    pub fn segment_file_bytes_max(&self) -> u64 {
        self.segment_bytes_max + 2 * BLOCK_BYTES
    }
}

/// Log sequence number: the position of a record in the log, from 1.
/// `Lsn(0)` means "no record".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

/// A checkpoint: the state after executing consensus instance `cid`.
#[derive(Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub cid: Cid,
    /// `wire::hash::digest(snapshot)`.
    pub digest: Digest,
    /// Opaque: the kv store snapshot and the de-duplication table.
    pub snapshot: Vec<u8>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("cid", &self.cid)
            .field("digest", &self.digest)
            .field("snapshot_bytes", &self.snapshot.len())
            .finish()
    }
}

/// What [`Storage::open`] found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The newest valid checkpoint.
    pub checkpoint: Option<Checkpoint>,
    /// In log order: every PROPOSAL, DECISION and CHECKPOINT record with a
    /// cid above the checkpoint's, and every REGENCY record still in the
    /// log. DECISION cids above the checkpoint have no gaps.
    pub records: Vec<Record>,
    /// In log order: the PROPOSAL and DECISION records at or below the
    /// checkpoint's cid still in the log (which reaches back to the older
    /// kept checkpoint, see [`Storage::truncate_through`]). Not replayed:
    /// the checkpoint covers them. They refill the replica's decision log,
    /// so that it can still hand the decisions up to its checkpoint to
    /// replicas one or a few cids behind (which cannot install a checkpoint
    /// only this replica holds). May have gaps (a checkpoint installed by
    /// state transfer); empty without a checkpoint.
    pub covered: Vec<Record>,
    /// The newest REGENCY record's regency, or 0.
    pub regency: Regency,
    /// Bytes of a torn write discarded from the newest segment: from the
    /// last good frame to the end of the last 4 KiB block holding a
    /// non-zero byte (within the file). Torn bytes that are all zeros are
    /// indistinguishable from preallocated space and count as nothing.
    pub truncated_tail_bytes: u64,
    /// Everything recovery repaired, skipped or fell back from, one line
    /// each, naming the file.
    pub warnings: Vec<String>,
}

/// What [`Storage::truncate_through`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Truncated {
    /// The cid segments were removed through (after clamping), if any.
    pub through_cid: Option<Cid>,
    pub segments_removed: usize,
    /// Length of the files removed, preallocated zeros included, bytes.
    pub bytes_removed: u64,
}

/// What preallocation did since [`Storage::open`] (for metrics: the
/// `*_unprepared` and `groups_extending` counts are the slow path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PreallocStats {
    /// Groups written (one per [`Storage::sync`] that had records).
    pub groups: u64,
    /// Groups that grew the segment file because the zero-filled space
    /// ahead ran out: their `fdatasync` paid a journal commit. Call
    /// [`Storage::prepare`] more often, or raise `prealloc_bytes`.
    pub groups_extending: u64,
    /// Rollovers into a segment prepared ahead (one header write and one
    /// `fdatasync` on the commit path).
    pub rollovers_prepared: u64,
    /// Rollovers that had to create the segment on the commit path
    /// (create, fsync, rename, directory fsync).
    pub rollovers_unprepared: u64,
    /// [`Storage::prepare`] calls that did work (at most
    /// `prepare_step_bytes` written and one fsync each).
    pub prepare_steps: u64,
    /// Zero bytes written ahead by [`Storage::prepare`], bytes.
    pub zeros_written_bytes: u64,
}

/// What is known about one segment on disk.
#[derive(Debug, Clone)]
pub(crate) struct SegmentInfo {
    pub seq: u64,
    /// End of the last group, bytes.
    pub end_bytes: u64,
    /// Length of the file, bytes; zeros from `end_bytes` to here.
    pub file_bytes: u64,
    /// Highest cid of a record in the segment.
    pub cid_max: Option<Cid>,
    pub has_regency: bool,
}

/// The on-disk half of [`Storage`].
struct Disk {
    dir: PathBuf,
    /// Oldest first; the last one is the active segment. Never empty.
    segments: VecDeque<SegmentInfo>,
    active: File,
    active_nonce: u64,
    /// The open group: a `GROUP` frame placeholder, then record frames.
    /// Capacity `group_bytes_max + 2 * BLOCK_BYTES`, allocated at open.
    pending: Vec<u8>,
    pending_cid_max: Option<Cid>,
    pending_has_regency: bool,
    /// Kept checkpoint files, ascending cid.
    checkpoints: Vec<Cid>,
    /// Seq of the segment holding the newest durable REGENCY record.
    regency_seq: Option<u64>,
    /// The next segment, being zero-filled or ready for a rollover.
    spare: Option<Spare>,
    /// Zeros, `min(prepare_step_bytes, prealloc_bytes)` bytes, allocated at
    /// open: what `prepare` writes.
    zeros: Vec<u8>,
    stats: PreallocStats,
    poisoned: bool,
}

/// The segment after the active one, zero-filled ahead of a rollover by
/// [`Storage::prepare`].
struct Spare {
    seq: u64,
    file: File,
    /// Zeros written from offset 0 (the header block included), bytes.
    file_bytes: u64,
    /// Still `wal-<seq>.log.tmp`: being filled, not yet usable.
    filling: bool,
}

/// The write-ahead log and checkpoints of one replica.
pub struct Storage {
    limits: Limits,
    disk: Option<Disk>,
    /// Lsn the next appended record gets.
    next_lsn: u64,
    durable_lsn: u64,
    /// Newest regency appended (durable or not).
    regency: Regency,
    /// Highest cid covered by a DECISION record or a checkpoint.
    decided_cid_max: Option<Cid>,
    checkpoint_cid_max: Option<Cid>,
}

/// Writes the file of checkpoint `cid` into `dir` (a log's directory, see
/// [`Storage::dir`]) atomically — temp file, fsync, rename, directory fsync
/// — without touching the log, so a thread other than the log's owner can
/// do this slow part; the owner then calls [`Storage::checkpoint_written`].
/// Errors: `SnapshotTooLarge`, `Io`. Panics if `digest` is not
/// `wire::hash::digest(snapshot)`.
pub fn write_checkpoint_file(
    dir: &Path,
    limits: &Limits,
    cid: Cid,
    digest: Digest,
    snapshot: &[u8],
) -> Result<(), StorageError> {
    if snapshot.len() as u64 > limits.snapshot_bytes_max {
        return Err(StorageError::SnapshotTooLarge {
            bytes: snapshot.len() as u64,
            max: limits.snapshot_bytes_max,
        });
    }
    assert!(
        wire::hash::digest(snapshot) == digest,
        "checkpoint {cid}: digest is not the snapshot's"
    );
    checkpoint::write(dir, cid, &digest, snapshot).map(|_| ())
}

/// Removes the file of checkpoint `cid` from `dir` if present (a file
/// [`write_checkpoint_file`] made that will not be recorded, because a
/// newer checkpoint was recorded first). Errors: `Io`.
pub fn remove_checkpoint_file(dir: &Path, cid: Cid) -> Result<(), StorageError> {
    let path = dir.join(checkpoint::file_name(cid));
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(&path)(e)),
    }
}

impl Storage {
    /// Opens (creating) the log in `dir` and recovers what it holds; see
    /// the crate docs for the rules. `Durability::Memory` touches nothing
    /// on disk and recovers nothing.
    ///
    /// Errors: `Corrupt` when the log cannot be trusted (the message says
    /// what to do), `Io`, `TooManyFiles`, `InvalidLimits`.
    pub fn open(
        dir: &Path,
        durability: Durability,
        limits: Limits,
    ) -> Result<(Storage, Recovered), StorageError> {
        limits.validate()?;
        let mut storage = Storage {
            limits,
            disk: None,
            next_lsn: 1,
            durable_lsn: 0,
            regency: 0,
            decided_cid_max: None,
            checkpoint_cid_max: None,
        };
        if durability == Durability::Memory {
            return Ok((storage, Recovered::default()));
        }
        let found = recovery::recover(dir, &limits)?;
        storage.next_lsn = found.next_lsn;
        storage.durable_lsn = found.next_lsn - 1;
        storage.regency = found.recovered.regency;
        storage.decided_cid_max = found.decided_cid_max;
        storage.checkpoint_cid_max = found.checkpoints.last().copied();
        let pending = Vec::with_capacity(limits.group_bytes_max + 2 * BLOCK_BYTES as usize);
        let spare = found.spare.map(|s| Spare {
            seq: s.seq,
            file: s.file,
            file_bytes: s.file_bytes,
            filling: false,
        });
        storage.disk = Some(Disk {
            dir: dir.to_path_buf(),
            segments: found.segments,
            active: found.active,
            active_nonce: found.active_nonce,
            pending,
            pending_cid_max: None,
            pending_has_regency: false,
            checkpoints: found.checkpoints,
            regency_seq: found.regency_seq,
            spare,
            zeros: vec![0; limits.prepare_step_bytes.min(limits.prealloc_bytes) as usize],
            stats: PreallocStats::default(),
            poisoned: false,
        });
        // Start with the room ahead in place: open is not on the commit
        // path. Bounded; writes about prealloc_bytes on a new log.
        for _ in 0..limits.prepare_steps_max() {
            if !storage.prepare()? {
                break;
            }
        }
        Ok((storage, found.recovered))
    }

    /// Buffers `record` in the open group; durable after the next
    /// [`Storage::sync`]. Returns its lsn.
    ///
    /// Errors (nothing appended): `RecordTooLarge`; `GroupFull` (sync,
    /// then append again); `Poisoned`.
    ///
    /// Panics when the caller breaks the log's order: a REGENCY below the
    /// newest one, or a DECISION that leaves a gap after the highest cid
    /// decided or checkpointed (recovery would refuse such a log).
    pub fn append(&mut self, record: &Record) -> Result<Lsn, StorageError> {
        let payload_bytes = record.payload_bytes();
        if payload_bytes > self.limits.record_bytes_max {
            return Err(StorageError::RecordTooLarge {
                bytes: payload_bytes,
                max: self.limits.record_bytes_max,
            });
        }
        if let Some(disk) = &self.disk {
            if disk.poisoned {
                return Err(StorageError::Poisoned);
            }
            let pending_bytes = disk.pending.len().max(GROUP_FRAME_BYTES);
            if pending_bytes + record.frame_bytes() > self.limits.group_bytes_max {
                return Err(StorageError::GroupFull {
                    pending_bytes,
                    record_bytes: record.frame_bytes(),
                    max: self.limits.group_bytes_max,
                });
            }
        }
        self.check_order(record);
        if let Some(disk) = &mut self.disk {
            if disk.pending.is_empty() {
                disk.pending.resize(GROUP_FRAME_BYTES, 0);
            }
            record.encode_frame(&mut disk.pending);
            if let Some(cid) = record.cid() {
                disk.pending_cid_max = disk.pending_cid_max.max(Some(cid));
            }
            disk.pending_has_regency |= matches!(record, Record::Regency { .. });
        }
        let lsn = Lsn(self.next_lsn);
        self.next_lsn += 1;
        Ok(lsn)
    }

    /// Asserts the order rules of [`Storage::append`] and records the
    /// regency and decided cid.
    fn check_order(&mut self, record: &Record) {
        match *record {
            Record::Regency { regency } => {
                assert!(
                    regency >= self.regency,
                    "REGENCY {regency} appended after REGENCY {}",
                    self.regency
                );
                self.regency = regency;
            }
            Record::Decision { cid, .. } => {
                if let Some(max) = self.decided_cid_max {
                    assert!(
                        cid <= max.saturating_add(1),
                        "DECISION for cid {cid} appended after cid {max}: a gap"
                    );
                }
                self.decided_cid_max = self.decided_cid_max.max(Some(cid));
            }
            Record::Proposal { .. } | Record::Checkpoint { .. } | Record::Accept { .. } => {}
        }
    }

    /// Writes the open group with one write and one `fdatasync` (starting
    /// a new segment first if the group would pass `segment_bytes_max`).
    /// Returns the highest durable lsn: every record appended before this
    /// call is durable. Returns at once when nothing is pending.
    ///
    /// Errors: `Io` (the storage is then `Poisoned`: a failed fsync may
    /// have dropped pages, so nothing more is written), `Poisoned`.
    pub fn sync(&mut self) -> Result<Lsn, StorageError> {
        let Some(disk) = &mut self.disk else {
            self.durable_lsn = self.next_lsn - 1;
            return Ok(Lsn(self.durable_lsn));
        };
        if disk.poisoned {
            return Err(StorageError::Poisoned);
        }
        if disk.pending.is_empty() {
            return Ok(Lsn(self.durable_lsn));
        }
        let first_lsn = self.durable_lsn + 1;
        match disk.write_group(first_lsn, self.next_lsn, &self.limits) {
            Ok(()) => {
                self.durable_lsn = self.next_lsn - 1;
                Ok(Lsn(self.durable_lsn))
            }
            Err(e) => {
                disk.poisoned = true;
                Err(e)
            }
        }
    }

    /// Does one bounded step of preparation, for the caller to run when it
    /// is idle (nothing to append): keeps `Limits::prealloc_bytes` of
    /// zeros written ahead of the end of the log in the active segment,
    /// and when that segment is nearly full, prepares the next one
    /// (`wal-<seq>.log.tmp` zero-filled, fdatasynced, renamed). Each call
    /// writes at most `Limits::prepare_step_bytes` and fsyncs once, or
    /// renames and fsyncs the directory. Returns `Ok(true)` when it did
    /// work (call again while still idle), `Ok(false)` when everything is
    /// prepared (then it made no system call). [`Storage::sync`] never does
    /// this work: without it, groups grow the file (counted in
    /// [`PreallocStats`]). Nothing in memory mode or with
    /// `prealloc_bytes` 0.
    ///
    /// Errors: `Io` (the storage is then `Poisoned`, as for `sync`: the
    /// disk is failing or full, and the log would be next), `Poisoned`.
    pub fn prepare(&mut self) -> Result<bool, StorageError> {
        let Some(disk) = &mut self.disk else {
            return Ok(false);
        };
        if disk.poisoned {
            return Err(StorageError::Poisoned);
        }
        match disk.prepare_step(&self.limits) {
            Ok(did_work) => {
                disk.stats.prepare_steps += u64::from(did_work);
                Ok(did_work)
            }
            Err(e) => {
                disk.poisoned = true;
                Err(e)
            }
        }
    }

    /// What preallocation did since open (all zero in memory mode).
    pub fn prealloc_stats(&self) -> PreallocStats {
        self.disk
            .as_ref()
            .map_or_else(PreallocStats::default, |d| d.stats)
    }

    /// Where the next group will be written: the active segment's seq and
    /// the end of its last group, bytes. `None` in memory mode.
    pub fn log_end(&self) -> Option<(u64, u64)> {
        let disk = self.disk.as_ref()?;
        let active = disk.segments.back().expect("active segment");
        Some((active.seq, active.end_bytes))
    }

    /// Writes checkpoint `cid` (the state after executing `cid`, with
    /// `digest = wire::hash::digest(snapshot)`) atomically, appends a
    /// CHECKPOINT record to the open group, and deletes all but the newest
    /// two checkpoint files. When this returns the checkpoint is durable.
    ///
    /// Errors: `SnapshotTooLarge`, `Io` (the previous checkpoints are
    /// untouched), `Poisoned`. Panics if `digest` is not the snapshot's
    /// digest or `cid` is below the newest checkpoint.
    pub fn write_checkpoint(
        &mut self,
        cid: Cid,
        digest: Digest,
        snapshot: &[u8],
    ) -> Result<(), StorageError> {
        if let Some(disk) = &self.disk {
            if disk.poisoned {
                return Err(StorageError::Poisoned);
            }
            write_checkpoint_file(&disk.dir, &self.limits, cid, digest, snapshot)?;
        }
        self.checkpoint_written(cid, digest)
    }

    /// The directory of the log (`None` in memory mode): where
    /// [`write_checkpoint_file`] writes.
    pub fn dir(&self) -> Option<&Path> {
        self.disk.as_ref().map(|d| d.dir.as_path())
    }

    /// Records checkpoint `cid`, whose file [`write_checkpoint_file`]
    /// already made durable (possibly on another thread): appends the
    /// CHECKPOINT record to the open group and deletes all but the newest
    /// two checkpoint files. Errors: `Io`, `Poisoned`. Panics if `cid` is
    /// below the newest checkpoint.
    pub fn checkpoint_written(&mut self, cid: Cid, digest: Digest) -> Result<(), StorageError> {
        if let Some(newest) = self.checkpoint_cid_max {
            assert!(
                cid >= newest,
                "checkpoint {cid} written after checkpoint {newest}"
            );
        }
        if self.disk.as_ref().is_some_and(|d| d.poisoned) {
            return Err(StorageError::Poisoned);
        }
        self.checkpoint_cid_max = Some(cid);
        self.decided_cid_max = self.decided_cid_max.max(Some(cid));
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        let dir = disk.dir.clone();
        let marker = Record::Checkpoint { cid, digest };
        match self.append(&marker) {
            Err(StorageError::GroupFull { .. }) => {
                self.sync()?;
                self.append(&marker)?;
            }
            other => {
                other?;
            }
        }
        let disk = self.disk.as_mut().expect("disk mode");
        disk.checkpoints.retain(|&c| c != cid);
        disk.checkpoints.push(cid);
        let excess = disk.checkpoints.len().saturating_sub(2);
        for old in disk.checkpoints.drain(..excess) {
            let path = dir.join(checkpoint::file_name(old));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&path)(e)),
            }
        }
        Ok(())
    }

    /// Loads the newest valid checkpoint file (e.g. to serve state
    /// transfer). Returns it and one warning per newer, invalid file
    /// skipped. Nothing is renamed or deleted. `None` in memory mode.
    pub fn load_checkpoint(&self) -> Result<(Option<Checkpoint>, Vec<String>), StorageError> {
        let Some(disk) = &self.disk else {
            return Ok((None, Vec::new()));
        };
        let newest = checkpoint::load_newest(&disk.dir, &disk.checkpoints, &self.limits)?;
        Ok((newest.checkpoint, newest.warnings))
    }

    /// Deletes whole segments whose records all have cids <= `cid`, oldest
    /// first, never the active one. `cid` must be at most the newest
    /// checkpoint's cid.
    ///
    /// Clamped so that the log still reaches back to the older of the two
    /// kept checkpoints (to `min(cid, older checkpoint cid)`; nothing while
    /// only one checkpoint is kept): a corrupt newest checkpoint can then
    /// be recovered from the older one plus the log. If a removed segment
    /// holds the newest REGENCY record, that record is appended again and
    /// synced first. Each removal is followed by a directory fsync, so a
    /// crash leaves a contiguous run of segments.
    ///
    /// Errors: `Io`, `Poisoned`. Panics if `cid` is above the newest
    /// checkpoint.
    pub fn truncate_through(&mut self, cid: Cid) -> Result<Truncated, StorageError> {
        let Some(disk) = &self.disk else {
            return Ok(Truncated::default());
        };
        if disk.poisoned {
            return Err(StorageError::Poisoned);
        }
        assert!(
            self.checkpoint_cid_max.is_some_and(|c| cid <= c),
            "truncate_through({cid}) above the newest checkpoint {:?}",
            self.checkpoint_cid_max
        );
        let n = disk.checkpoints.len();
        if n < 2 {
            return Ok(Truncated::default());
        }
        let through = cid.min(disk.checkpoints[n - 2]);
        let removable = disk
            .segments
            .iter()
            .take(disk.segments.len() - 1)
            .take_while(|s| s.cid_max.is_none_or(|m| m <= through))
            .count();
        if removable == 0 {
            return Ok(Truncated {
                through_cid: Some(through),
                ..Truncated::default()
            });
        }
        let regency_removed = disk
            .regency_seq
            .is_some_and(|seq| disk.segments.iter().take(removable).any(|s| s.seq == seq));
        if regency_removed {
            let regency = Record::Regency {
                regency: self.regency,
            };
            match self.append(&regency) {
                Err(StorageError::GroupFull { .. }) => {
                    self.sync()?;
                    self.append(&regency)?;
                }
                other => {
                    other?;
                }
            }
            self.sync()?;
        }
        let disk = self.disk.as_mut().expect("disk mode");
        assert!(
            !regency_removed
                || disk
                    .regency_seq
                    .is_some_and(|seq| seq > disk.segments[removable - 1].seq),
            "the newest REGENCY record survives truncation"
        );
        let mut truncated = Truncated {
            through_cid: Some(through),
            ..Truncated::default()
        };
        for _ in 0..removable {
            let segment = disk.segments.front().expect("removable < len").clone();
            let path = disk.dir.join(segment::file_name(segment.seq));
            std::fs::remove_file(&path).map_err(io_error(&path))?;
            fsync_dir(&disk.dir)?;
            disk.segments.pop_front();
            truncated.segments_removed += 1;
            truncated.bytes_removed += segment.file_bytes;
        }
        assert!(
            !disk.segments.is_empty(),
            "the active segment is never removed"
        );
        Ok(truncated)
    }

    /// Highest durable lsn (`Lsn(0)`: none).
    pub fn durable_lsn(&self) -> Lsn {
        Lsn(self.durable_lsn)
    }

    /// Lsn the next appended record will get.
    pub fn next_lsn(&self) -> Lsn {
        Lsn(self.next_lsn)
    }

    /// Bytes waiting in the open group (0 in memory mode).
    pub fn pending_bytes(&self) -> usize {
        self.disk.as_ref().map_or(0, |d| d.pending.len())
    }

    /// Newest regency appended.
    pub fn regency(&self) -> Regency {
        self.regency
    }

    /// Cids of the checkpoint files kept, ascending (empty in memory mode).
    pub fn checkpoint_cids(&self) -> Vec<Cid> {
        self.disk
            .as_ref()
            .map_or_else(Vec::new, |d| d.checkpoints.clone())
    }

    /// Sequence numbers of the segment files, oldest first (empty in
    /// memory mode).
    pub fn segment_seqs(&self) -> Vec<u64> {
        self.disk
            .as_ref()
            .map_or_else(Vec::new, |d| d.segments.iter().map(|s| s.seq).collect())
    }

    /// The limits this storage was opened with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// The storage thread owns a `Storage`: it must move there.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Storage>();
    send::<Wal>();
};

impl Disk {
    /// Closes the open group (records `first_lsn..next_lsn`), writes it
    /// and fdatasyncs.
    fn write_group(
        &mut self,
        first_lsn: u64,
        next_lsn: u64,
        limits: &Limits,
    ) -> Result<(), StorageError> {
        assert!(first_lsn < next_lsn, "a group holds at least one record");
        assert!(self.pending.len() <= limits.group_bytes_max);
        let active_end = self.segments.back().expect("active segment").end_bytes;
        assert_eq!(
            active_end % BLOCK_BYTES,
            0,
            "groups start at block boundaries"
        );
        let padded_bytes = self.pending.len() as u64 + FRAME_HEADER_BYTES as u64 + BLOCK_BYTES;
        if active_end > BLOCK_BYTES && active_end + padded_bytes > limits.segment_bytes_max {
            self.rotate(first_lsn)?;
        }
        let active_end = self.segments.back().expect("active segment").end_bytes;
        let mut group = Vec::with_capacity(GROUP_FRAME_BYTES);
        record::encode_group(&mut group, first_lsn, self.active_nonce);
        self.pending[..GROUP_FRAME_BYTES].copy_from_slice(&group);
        record::encode_padding(&mut self.pending, active_end, BLOCK_BYTES);
        let seq = self.segments.back().expect("active segment").seq;
        let path = self.dir.join(segment::file_name(seq));
        let group_end = active_end + self.pending.len() as u64;
        self.stats.groups += 1;
        if group_end > self.segments.back().expect("active segment").file_bytes {
            self.stats.groups_extending += 1;
        }
        self.active
            .write_all_at(&self.pending, active_end)
            .map_err(io_error(&path))?;
        self.active.sync_data().map_err(io_error(&path))?;
        let active = self.segments.back_mut().expect("active segment");
        active.end_bytes = group_end;
        active.file_bytes = active.file_bytes.max(group_end);
        active.cid_max = active.cid_max.max(self.pending_cid_max);
        if self.pending_has_regency {
            active.has_regency = true;
            self.regency_seq = Some(seq);
        }
        self.pending.clear();
        self.pending_cid_max = None;
        self.pending_has_regency = false;
        Ok(())
    }

    /// Starts segment `seq + 1` whose first record will be `first_lsn`:
    /// writes the header into the prepared spare, or (the fallback)
    /// creates the segment.
    fn rotate(&mut self, first_lsn: u64) -> Result<(), StorageError> {
        let seq = self.segments.back().expect("active segment").seq + 1;
        let nonce = recovery::random_nonce();
        let header = segment::SegmentHeader {
            seq,
            first_lsn,
            nonce,
        };
        let file_bytes = match self.spare.take() {
            Some(spare) if !spare.filling => {
                assert_eq!(spare.seq, seq, "the spare is the next segment");
                assert!(spare.file_bytes >= BLOCK_BYTES);
                let path = self.dir.join(segment::file_name(seq));
                segment::write_header(&spare.file, &path, header)?;
                self.active = spare.file;
                self.stats.rollovers_prepared += 1;
                spare.file_bytes
            }
            unfinished => {
                // A spare still being filled is dropped: `create` reuses
                // its temporary name.
                drop(unfinished);
                self.active = segment::create(&self.dir, header)?;
                self.stats.rollovers_unprepared += 1;
                BLOCK_BYTES
            }
        };
        self.active_nonce = nonce;
        self.segments.push_back(SegmentInfo {
            seq,
            end_bytes: BLOCK_BYTES,
            file_bytes,
            cid_max: None,
            has_regency: false,
        });
        Ok(())
    }

    /// One step of [`Storage::prepare`]: zeros ahead in the active
    /// segment first, then the spare. Returns whether it did work.
    fn prepare_step(&mut self, limits: &Limits) -> Result<bool, StorageError> {
        if limits.prealloc_bytes == 0 {
            return Ok(false);
        }
        let step_bytes = limits.prepare_step_bytes;
        let prealloc_end = limits.segment_prealloc_end_bytes();
        let active = self.segments.back_mut().expect("active segment");
        let target = (active.end_bytes + limits.prealloc_bytes).min(prealloc_end);
        if active.file_bytes < target {
            let deficit = target - active.file_bytes;
            // Only whole steps (or the segment's last bytes): few, large
            // writes.
            if deficit < step_bytes.min(prealloc_end - active.file_bytes) {
                return Ok(false);
            }
            let bytes = deficit.min(step_bytes);
            let path = self.dir.join(segment::file_name(active.seq));
            segment::write_zeros(&self.active, &path, active.file_bytes, bytes, &self.zeros)?;
            self.active.sync_data().map_err(io_error(&path))?;
            active.file_bytes += bytes;
            self.stats.zeros_written_bytes += bytes;
            return Ok(true);
        }
        if target < prealloc_end {
            return Ok(false);
        }
        // The active segment is zero-filled to its end: prepare the next.
        let seq = active.seq + 1;
        let spare_bytes = limits.spare_file_bytes();
        let spare = match &mut self.spare {
            Some(spare) => spare,
            None => {
                let file = segment::create_spare_tmp(&self.dir, seq)?;
                self.spare.insert(Spare {
                    seq,
                    file,
                    file_bytes: 0,
                    filling: true,
                })
            }
        };
        assert_eq!(spare.seq, seq, "the spare is the next segment");
        if !spare.filling {
            return Ok(false);
        }
        let tmp = segment::tmp_path(&self.dir, seq);
        if spare.file_bytes < spare_bytes {
            let bytes = (spare_bytes - spare.file_bytes).min(step_bytes);
            segment::write_zeros(&spare.file, &tmp, spare.file_bytes, bytes, &self.zeros)?;
            spare.file.sync_data().map_err(io_error(&tmp))?;
            spare.file_bytes += bytes;
            self.stats.zeros_written_bytes += bytes;
            return Ok(true);
        }
        segment::name_spare(&self.dir, seq)?;
        spare.filling = false;
        Ok(true)
    }
}
