//! Segment files: naming, the header block, creation, and the recovery scan.
//!
//! A segment `wal-<seq, 20 digits>.log` is a 4 KiB header block followed
//! by groups. A group is what one [`crate::Storage::sync`] writes with one
//! `write` and one `fdatasync`: a `GROUP` frame, the records, and a
//! `PADDING` frame ending at the next 4 KiB boundary. Groups never share a
//! block, so a torn write of the newest group cannot touch a block that
//! holds acknowledged records, and recovery tells a torn tail from
//! corruption by looking for a later group at block boundaries only.
//!
//! Preallocation: a segment file usually extends past its last group with
//! zeros written ahead of time ([`crate::Storage::prepare`]), so that a
//! group overwrites allocated blocks and its `fdatasync` needs no journal
//! commit for the file size. Zeros from a block boundary outside a group
//! to the end of the file are the normal end of a segment. The next
//! segment is prepared the same way: a file of zeros, header block
//! included (a *spare*), which gets its header at rollover.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::record::{self, kind, FrameHeader, Record, FRAME_HEADER_BYTES, RECORD_VERSION};
use crate::record::{GROUP_FRAME_BYTES, GROUP_PAYLOAD_BYTES};
use crate::{fsync_dir, io_error, Limits, StorageError};

/// Alignment of groups and size of the header block, bytes.
pub const BLOCK_BYTES: u64 = 4096;

const SEGMENT_MAGIC: [u8; 8] = *b"bftd-wal";
const SEGMENT_FORMAT_VERSION: u32 = 1;
/// `magic 8 | version u32 | seq u64 | first_lsn u64 | nonce u64 | crc32c u32`.
const SEGMENT_HEADER_BYTES: usize = 8 + 4 + 8 + 8 + 8 + 4;

/// Bytes of the read buffer used by the recovery scan.
const SCAN_BUFFER_BYTES: usize = 256 * 1024;

/// `wal-<seq>.log` with `seq` zero-padded to 20 digits (sorts by name).
pub(crate) fn file_name(seq: u64) -> String {
    format!("wal-{seq:020}.log")
}

/// The `seq` of a segment file name, if `name` is exactly one.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    parse_digits_20(digits)
}

/// Exactly 20 ASCII digits, as written by `{:020}`.
pub(crate) fn parse_digits_20(digits: &str) -> Option<u64> {
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What the header block of a segment says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub seq: u64,
    /// Lsn of the first record of the first group (the log's next lsn when
    /// the segment was created).
    pub first_lsn: u64,
    /// Random per segment; every `GROUP` frame repeats it, so a group
    /// marker cannot be forged by batch bytes or copied from elsewhere.
    pub nonce: u64,
}

impl SegmentHeader {
    fn encode(&self) -> Vec<u8> {
        let mut block = Vec::with_capacity(BLOCK_BYTES as usize);
        block.extend_from_slice(&SEGMENT_MAGIC);
        block.extend_from_slice(&SEGMENT_FORMAT_VERSION.to_be_bytes());
        block.extend_from_slice(&self.seq.to_be_bytes());
        block.extend_from_slice(&self.first_lsn.to_be_bytes());
        block.extend_from_slice(&self.nonce.to_be_bytes());
        let crc = crc32c::crc32c(&block);
        block.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(block.len(), SEGMENT_HEADER_BYTES);
        block.resize(BLOCK_BYTES as usize, 0);
        block
    }

    fn decode(bytes: &[u8; SEGMENT_HEADER_BYTES]) -> Result<Self, String> {
        let u32_at = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_be_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err("segment header has the wrong magic (not a bftd log segment)".into());
        }
        let crc = u32_at(SEGMENT_HEADER_BYTES - 4);
        if crc32c::crc32c(&bytes[..SEGMENT_HEADER_BYTES - 4]) != crc {
            return Err("segment header checksum mismatch".into());
        }
        let version = u32_at(8);
        if version != SEGMENT_FORMAT_VERSION {
            return Err(format!(
                "segment format version {version}, this build reads {SEGMENT_FORMAT_VERSION} \
                 (written by a newer bftd?)"
            ));
        }
        Ok(SegmentHeader {
            seq: u64_at(12),
            first_lsn: u64_at(20),
            nonce: u64_at(28),
        })
    }
}

/// Whether a header block starts with our magic and its checksum holds
/// (whatever its version): such a segment is never taken for a spare.
fn header_is_ours(bytes: &[u8; SEGMENT_HEADER_BYTES]) -> bool {
    let crc = u32::from_be_bytes(
        bytes[SEGMENT_HEADER_BYTES - 4..]
            .try_into()
            .expect("4 bytes"),
    );
    bytes[0..8] == SEGMENT_MAGIC && crc32c::crc32c(&bytes[..SEGMENT_HEADER_BYTES - 4]) == crc
}

/// Creates segment `header.seq` in `dir` atomically: the header block is
/// written and fsynced under a temporary name, renamed, and the directory
/// fsynced. Returns the file opened for reading and writing.
pub(crate) fn create(dir: &Path, header: SegmentHeader) -> Result<File, StorageError> {
    let path = dir.join(file_name(header.seq));
    let tmp = tmp_path(dir, header.seq);
    let io = io_error(&tmp);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(&header.encode()).map_err(io)?;
    file.sync_data().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io_error(&path))?;
    fsync_dir(dir)?;
    Ok(file)
}

/// `wal-<seq>.log.tmp`: where a segment is written before it gets its
/// name (a fallback rollover, or a spare being zero-filled).
pub(crate) fn tmp_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{}.tmp", file_name(seq)))
}

/// Creates (truncating) `wal-<seq>.log.tmp` for a spare to be zero-filled.
pub(crate) fn create_spare_tmp(dir: &Path, seq: u64) -> Result<File, StorageError> {
    let tmp = tmp_path(dir, seq);
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_error(&tmp))
}

/// Gives a zero-filled, fdatasynced spare its segment name and fsyncs the
/// directory. Until its header is written it is still a spare: recovery
/// recognises the all-zero header block.
pub(crate) fn name_spare(dir: &Path, seq: u64) -> Result<(), StorageError> {
    let path = dir.join(file_name(seq));
    std::fs::rename(tmp_path(dir, seq), &path).map_err(io_error(&path))?;
    fsync_dir(dir)
}

/// Turns spare `file` into segment `header.seq`: writes the header block
/// over its zeros and fdatasyncs (the file's size does not change, so no
/// journal commit). The header is durable before any group is written to
/// the file, so a spare with a torn header never holds a group.
pub(crate) fn write_header(
    file: &File,
    path: &Path,
    header: SegmentHeader,
) -> Result<(), StorageError> {
    let io = io_error(path);
    file.write_all_at(&header.encode(), 0).map_err(io)?;
    file.sync_data().map_err(io)
}

/// Writes `bytes` zeros at `offset` of `file`, in pieces of `zeros.len()`
/// bytes (`zeros` must hold only zeros); does not sync.
pub(crate) fn write_zeros(
    file: &File,
    path: &Path,
    offset: u64,
    bytes: u64,
    zeros: &[u8],
) -> Result<(), StorageError> {
    assert!(!zeros.is_empty() || bytes == 0);
    let pieces_max = bytes / (zeros.len().max(1) as u64) + 1;
    let mut written = 0u64;
    for _ in 0..pieces_max {
        if written == bytes {
            break;
        }
        let piece = (bytes - written).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..piece], offset + written)
            .map_err(io_error(path))?;
        written += piece as u64;
    }
    assert_eq!(written, bytes, "pieces_max bounds the zero fill");
    Ok(())
}

/// What [`probe_spare`] found: the newest segment file is a spare, not
/// part of the log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpareProbe {
    /// Length of the file, bytes (all zeros after the header block).
    pub file_bytes: u64,
    /// The header block is neither zeros nor a valid header: a crash while
    /// the header was written at rollover (before any group was).
    pub torn_header: bool,
}

/// Whether the newest segment file `path` is a spare: its header block is
/// not ours (all zeros, or torn) and every byte after it is zero. A
/// segment that ever held a group has a durable header and a non-zero
/// body, so neither a lost header nor a lost body of a real segment can
/// pass for a spare. `None`: scan it as a segment. Reads the whole file
/// when the header is not ours (a spare is `prealloc_bytes` long).
pub(crate) fn probe_spare(
    path: &Path,
    limits: &Limits,
) -> Result<Option<SpareProbe>, StorageError> {
    let io = io_error(path);
    let file = File::open(path).map_err(io)?;
    let file_bytes = file.metadata().map_err(io)?.len();
    if file_bytes < BLOCK_BYTES || file_bytes > limits.segment_file_bytes_max() {
        return Ok(None);
    }
    let mut raw = [0u8; SEGMENT_HEADER_BYTES];
    file.read_exact_at(&mut raw, 0).map_err(io)?;
    if header_is_ours(&raw) {
        return Ok(None);
    }
    let mut buf = vec![0u8; SCAN_BUFFER_BYTES];
    let mut at = 0u64;
    let mut torn_header = false;
    let chunks_max = file_bytes / SCAN_BUFFER_BYTES as u64 + 1;
    for _ in 0..chunks_max {
        if at == file_bytes {
            break;
        }
        let n = (file_bytes - at).min(SCAN_BUFFER_BYTES as u64) as usize;
        file.read_exact_at(&mut buf[..n], at).map_err(io)?;
        let body_from = BLOCK_BYTES.saturating_sub(at).min(n as u64) as usize;
        if buf[body_from..n].iter().any(|&b| b != 0) {
            return Ok(None);
        }
        torn_header |= buf[..body_from].iter().any(|&b| b != 0);
        at += n as u64;
    }
    assert_eq!(at, file_bytes, "chunks_max covers the file");
    Ok(Some(SpareProbe {
        file_bytes,
        torn_header,
    }))
}

/// Opens an existing segment for appending at a known offset.
pub(crate) fn open_for_append(path: &Path) -> Result<File, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_error(path))
}

/// A torn write found at the tail of the newest segment.
#[derive(Debug, Clone)]
pub(crate) struct TornTail {
    /// File offset of the first byte not kept, bytes.
    pub offset_bytes: u64,
    /// Bytes discarded from `offset_bytes`: up to the end of the last block
    /// holding a non-zero byte (at least to the end of the block the bad
    /// frame starts in, inside a group), never past the end of the file.
    pub bytes: u64,
    pub reason: String,
}

/// The outcome of scanning one segment.
#[derive(Debug)]
pub(crate) struct Scan {
    pub header: SegmentHeader,
    /// Offset after the last complete frame kept, bytes.
    pub end_bytes: u64,
    /// Length of the file, bytes: `end_bytes` and after it zeros (or the
    /// torn tail, when `torn` is set).
    pub file_bytes: u64,
    /// `end_bytes` falls inside a group (the newest group lacks its
    /// `PADDING`); the caller seals it before appending.
    pub open_group: bool,
    /// Lsn the next record gets.
    pub next_lsn: u64,
    /// Newest segment only: the torn tail cut off (not yet cut on disk).
    pub torn: Option<TornTail>,
}

/// A segment is corrupt at `offset`.
pub(crate) fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        segment: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// Reads segment `path` (expected sequence number `seq`, first lsn
/// `expected_first_lsn` when the previous segment is known) and calls
/// `visit(lsn, record, offset_bytes)` for each record in log order.
///
/// Only the `newest` segment may end in a torn write (reported in
/// [`Scan::torn`], nothing is changed on disk here); anything else that
/// is not a valid record is [`StorageError::Corrupt`].
pub(crate) fn scan(
    path: &Path,
    seq: u64,
    newest: bool,
    expected_first_lsn: Option<u64>,
    limits: &Limits,
    visit: &mut dyn FnMut(u64, Record, u64) -> Result<(), StorageError>,
) -> Result<Scan, StorageError> {
    let io = io_error(path);
    let file = File::open(path).map_err(io)?;
    let file_bytes = file.metadata().map_err(io)?.len();
    if file_bytes > limits.segment_file_bytes_max() {
        return Err(corrupt(
            path,
            0,
            format!(
                "segment is {file_bytes} bytes, above the {} this configuration writes \
                 (were storage limits lowered?)",
                limits.segment_file_bytes_max()
            ),
        ));
    }
    if file_bytes < BLOCK_BYTES {
        return Err(corrupt(
            path,
            0,
            format!("segment is {file_bytes} bytes, shorter than its header block"),
        ));
    }
    let mut raw = [0u8; SEGMENT_HEADER_BYTES];
    file.read_exact_at(&mut raw, 0).map_err(io)?;
    let header = SegmentHeader::decode(&raw).map_err(|reason| corrupt(path, 0, reason))?;
    if header.seq != seq {
        return Err(corrupt(
            path,
            0,
            format!("header says segment {}, the file name {seq}", header.seq),
        ));
    }
    if let Some(expected) = expected_first_lsn {
        if header.first_lsn != expected {
            return Err(corrupt(
                path,
                0,
                format!(
                    "segment starts at lsn {}, the previous segment ends before lsn {expected}: \
                     records are missing",
                    header.first_lsn
                ),
            ));
        }
    }
    let mut scanner = Scanner {
        path,
        file_bytes,
        newest,
        limits,
        header,
        reader: BufReader::with_capacity(SCAN_BUFFER_BYTES, file),
        payload: Vec::new(),
        pos: BLOCK_BYTES,
        in_group: false,
        next_lsn: header.first_lsn,
    };
    scanner
        .reader
        .seek(SeekFrom::Start(BLOCK_BYTES))
        .map_err(io)?;
    scanner.run(visit)
}

struct Scanner<'a> {
    path: &'a Path,
    file_bytes: u64,
    newest: bool,
    limits: &'a Limits,
    header: SegmentHeader,
    reader: BufReader<File>,
    payload: Vec<u8>,
    pos: u64,
    in_group: bool,
    next_lsn: u64,
}

/// Why the frame at the scan position is not a valid frame.
struct Bad {
    reason: String,
    /// Not explainable by a torn write (e.g. a length above the limit).
    hard: bool,
    /// Set for a checksum mismatch: every byte the frame declares is in
    /// the file (header and payload), this many in all.
    present_frame_bytes: Option<u64>,
}

impl Scanner<'_> {
    fn run(
        mut self,
        visit: &mut dyn FnMut(u64, Record, u64) -> Result<(), StorageError>,
    ) -> Result<Scan, StorageError> {
        // Every frame is at least FRAME_HEADER_BYTES long.
        let frames_max = self.file_bytes / FRAME_HEADER_BYTES as u64 + 1;
        for _ in 0..frames_max {
            if self.pos == self.file_bytes {
                break;
            }
            assert!(self.pos < self.file_bytes);
            let header = match self.read_frame()? {
                Ok(header) => header,
                Err(bad) => return self.bad_frame(bad),
            };
            let frame_bytes = FRAME_HEADER_BYTES as u64 + u64::from(header.payload_bytes);
            self.frame(header, visit)?;
            self.pos += frame_bytes;
        }
        assert_eq!(
            self.pos, self.file_bytes,
            "the scan loop ends at the end of the file"
        );
        let mut torn = None;
        if self.in_group {
            if !self.newest {
                return Err(self.corrupt("segment ends inside a group"));
            }
            torn = Some(TornTail {
                offset_bytes: self.pos,
                bytes: 0,
                reason: "the newest group ends without its closing frame".into(),
            });
        }
        Ok(self.finish(torn))
    }

    fn finish(self, torn: Option<TornTail>) -> Scan {
        Scan {
            header: self.header,
            end_bytes: self.pos,
            file_bytes: self.file_bytes,
            open_group: self.in_group,
            next_lsn: self.next_lsn,
            torn,
        }
    }

    fn corrupt(&self, reason: impl Into<String>) -> StorageError {
        corrupt(self.path, self.pos, reason)
    }

    /// Reads the frame at `pos` into `self.payload`; `Ok(Err(_))` when the
    /// bytes there are not a complete, checksummed frame.
    fn read_frame(&mut self) -> Result<Result<FrameHeader, Bad>, StorageError> {
        let io = io_error(self.path);
        let left_bytes = self.file_bytes - self.pos;
        if left_bytes < FRAME_HEADER_BYTES as u64 {
            return Ok(Err(Bad {
                reason: format!("short frame header: {left_bytes} bytes left"),
                hard: false,
                present_frame_bytes: None,
            }));
        }
        let mut raw = [0u8; FRAME_HEADER_BYTES];
        self.reader.read_exact(&mut raw).map_err(io)?;
        let header = FrameHeader::parse(&raw);
        let payload_bytes = u64::from(header.payload_bytes);
        if payload_bytes > self.limits.record_bytes_max as u64 {
            return Ok(Err(Bad {
                reason: format!(
                    "frame of {payload_bytes} bytes, above record_bytes_max {} \
                     (was the log written with larger limits?)",
                    self.limits.record_bytes_max
                ),
                hard: true,
                present_frame_bytes: None,
            }));
        }
        let present_bytes = left_bytes - FRAME_HEADER_BYTES as u64;
        if payload_bytes > present_bytes {
            return Ok(Err(Bad {
                reason: format!(
                    "short payload: {payload_bytes} bytes declared, {present_bytes} present"
                ),
                hard: false,
                present_frame_bytes: None,
            }));
        }
        self.payload.resize(payload_bytes as usize, 0);
        self.reader.read_exact(&mut self.payload).map_err(io)?;
        if !header.checks(&self.payload) {
            return Ok(Err(Bad {
                reason: "checksum mismatch".into(),
                hard: false,
                present_frame_bytes: Some(FRAME_HEADER_BYTES as u64 + payload_bytes),
            }));
        }
        Ok(Ok(header))
    }

    /// Interprets one checksummed frame. A valid checksum means these are
    /// the bytes that were written, so every error here is corruption
    /// (or a bug), never a torn write.
    fn frame(
        &mut self,
        header: FrameHeader,
        visit: &mut dyn FnMut(u64, Record, u64) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        if header.version != RECORD_VERSION {
            return Err(self.corrupt(format!(
                "record version {}, this build reads {RECORD_VERSION} (written by a newer bftd?)",
                header.version
            )));
        }
        let end = self.pos + FRAME_HEADER_BYTES as u64 + u64::from(header.payload_bytes);
        match header.kind {
            kind::GROUP => {
                if self.in_group {
                    return Err(self.corrupt("group frame inside a group"));
                }
                if !self.pos.is_multiple_of(BLOCK_BYTES) {
                    return Err(self.corrupt("group does not start at a block boundary"));
                }
                let (first_lsn, nonce) = record::decode_group(&self.payload)
                    .map_err(|e| self.corrupt(format!("group frame: {e}")))?;
                if nonce != self.header.nonce {
                    return Err(self.corrupt("group frame belongs to another segment"));
                }
                if first_lsn != self.next_lsn {
                    return Err(self.corrupt(format!(
                        "group starts at lsn {first_lsn}, expected {}: records are missing",
                        self.next_lsn
                    )));
                }
                self.in_group = true;
            }
            kind::PADDING => {
                if !self.in_group {
                    return Err(self.corrupt("padding frame outside a group"));
                }
                if self.payload.iter().any(|&b| b != 0) {
                    return Err(self.corrupt("padding frame holds non-zero bytes"));
                }
                if !end.is_multiple_of(BLOCK_BYTES) {
                    return Err(self.corrupt("group does not end at a block boundary"));
                }
                self.in_group = false;
            }
            kind => {
                if !self.in_group {
                    return Err(self.corrupt("record outside a group"));
                }
                let record = Record::decode(kind, &self.payload, self.limits.record_bytes_max)
                    .map_err(|e| self.corrupt(format!("record does not decode: {e}")))?;
                visit(self.next_lsn, record, self.pos)?;
                self.next_lsn += 1;
            }
        }
        Ok(())
    }

    /// A frame that is not valid at `pos`. Zeros from a block boundary
    /// outside a group to the end of the file are the end of the segment
    /// (preallocated space). Otherwise a torn write if it is in the newest
    /// segment and no complete group follows it, corruption elsewhere.
    fn bad_frame(self, bad: Bad) -> Result<Scan, StorageError> {
        if bad.hard {
            return Err(self.corrupt(bad.reason));
        }
        let tail = self.tail()?;
        if !self.in_group && tail.nonzero_end.is_none() {
            assert!(
                self.pos.is_multiple_of(BLOCK_BYTES),
                "outside a group the scan is at a block boundary"
            );
            return Ok(self.finish(None));
        }
        if !self.newest {
            return Err(self.corrupt(format!(
                "{} in a segment that was complete and synced",
                bad.reason
            )));
        }
        if let Some(later) = tail.later_group {
            return Err(self.corrupt(format!(
                "{}, followed by a complete group at offset {later} (not a torn write)",
                bad.reason
            )));
        }
        if let Some(frame_bytes) = bad.present_frame_bytes {
            if let Some(group_end) = self.complete_group_after(frame_bytes)? {
                return Err(self.corrupt(format!(
                    "{} in the newest group, whose every byte up to its closing frame at \
                     offset {group_end} is present: the group was written whole and went bad \
                     afterwards (not a torn write; it may have been acknowledged)",
                    bad.reason
                )));
            }
        }
        let group_block_end = if self.in_group {
            self.pos.next_multiple_of(BLOCK_BYTES)
        } else {
            self.pos
        };
        let torn_end = tail
            .nonzero_end
            .unwrap_or(self.pos)
            .max(group_block_end)
            .min(self.file_bytes);
        let torn = TornTail {
            offset_bytes: self.pos,
            bytes: torn_end.saturating_sub(self.pos),
            reason: bad.reason,
        };
        Ok(self.finish(Some(torn)))
    }

    /// Whether the bad frame at `pos` (`frame_bytes` long, all present in
    /// the file, checksum failing) sits in a group that was written whole:
    /// returns the end of the group, bytes, when the frames after it all
    /// check up to a valid `PADDING` frame ending at a block boundary, and
    /// the bad frame holds no all-zero 512-byte sector.
    ///
    /// Why this tells a bit flip from a torn write: a torn write leaves
    /// some sectors of the group unwritten, and those read as the zeros
    /// written ahead (preallocation) or past the old end of the file. A
    /// missing sector that reached into a neighbouring frame would break
    /// that frame's checksum, so with every other frame of the group
    /// intact a missing sector must lie wholly inside the bad frame. None
    /// there (no zero sector) means every byte landed and then changed.
    /// When the bad frame does hold a zero sector, or its length field is
    /// what flipped (the walk then finds no valid frames), recovery cannot
    /// tell and keeps treating it as a torn tail.
    ///
    /// Bounded: at most one frame per `FRAME_HEADER_BYTES` of the file,
    /// each at most `record_bytes_max`.
    fn complete_group_after(&self, frame_bytes: u64) -> Result<Option<u64>, StorageError> {
        const SECTOR_BYTES: u64 = 512;
        let file = self.reader.get_ref();
        let io = io_error(self.path);
        let frame_end = self.pos + frame_bytes;
        assert!(frame_end <= self.file_bytes, "the bad frame is present");
        let mut sector = vec![0u8; SECTOR_BYTES as usize];
        let mut at = self.pos.next_multiple_of(SECTOR_BYTES);
        let sectors_max = frame_bytes / SECTOR_BYTES + 1;
        for _ in 0..sectors_max {
            if at + SECTOR_BYTES > frame_end {
                break;
            }
            file.read_exact_at(&mut sector, at).map_err(&io)?;
            if sector.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            at += SECTOR_BYTES;
        }
        let mut at = frame_end;
        let mut payload = Vec::new();
        let frames_max = (self.file_bytes - frame_end) / FRAME_HEADER_BYTES as u64 + 1;
        for _ in 0..frames_max {
            if self.file_bytes - at < FRAME_HEADER_BYTES as u64 {
                return Ok(None);
            }
            let mut raw = [0u8; FRAME_HEADER_BYTES];
            file.read_exact_at(&mut raw, at).map_err(&io)?;
            let header = FrameHeader::parse(&raw);
            let payload_bytes = u64::from(header.payload_bytes);
            let end = at + FRAME_HEADER_BYTES as u64 + payload_bytes;
            if payload_bytes > self.limits.record_bytes_max as u64 || end > self.file_bytes {
                return Ok(None);
            }
            payload.resize(payload_bytes as usize, 0);
            file.read_exact_at(&mut payload, at + FRAME_HEADER_BYTES as u64)
                .map_err(&io)?;
            if !header.checks(&payload) || header.version != RECORD_VERSION {
                return Ok(None);
            }
            match header.kind {
                kind::GROUP => return Ok(None),
                kind::PADDING => {
                    let closes = end.is_multiple_of(BLOCK_BYTES) && payload.iter().all(|&b| b == 0);
                    return Ok(closes.then_some(end));
                }
                _ => at = end,
            }
        }
        Ok(None)
    }

    /// Reads from `pos` to the end of the file once: where the last
    /// non-zero byte is, and whether a valid `GROUP` frame of this segment
    /// sits at a block boundary after `pos`. A group is only written after
    /// the previous one was fsynced, so one existing means the bad frame
    /// was durable data that went bad, not a torn write. Bounded by the
    /// file's length (at most `segment_file_bytes_max`).
    fn tail(&self) -> Result<Tail, StorageError> {
        let file = self.reader.get_ref();
        let mut buf = vec![0u8; SCAN_BUFFER_BYTES];
        let mut tail = Tail {
            later_group: None,
            nonzero_end: None,
        };
        let mut at = self.pos - self.pos % BLOCK_BYTES;
        let chunks_max = self.file_bytes / SCAN_BUFFER_BYTES as u64 + 2;
        for _ in 0..chunks_max {
            if at >= self.file_bytes || tail.later_group.is_some() {
                break;
            }
            let n = (self.file_bytes - at).min(SCAN_BUFFER_BYTES as u64) as usize;
            file.read_exact_at(&mut buf[..n], at)
                .map_err(io_error(self.path))?;
            for (i, block) in buf[..n].chunks(BLOCK_BYTES as usize).enumerate() {
                let block_at = at + (i as u64) * BLOCK_BYTES;
                let from = self.pos.saturating_sub(block_at).min(block.len() as u64) as usize;
                if block[from..].iter().any(|&b| b != 0) {
                    tail.nonzero_end = Some(block_at + block.len() as u64);
                }
                if block_at > self.pos && self.is_group_frame(block) {
                    tail.later_group = Some(block_at);
                    break;
                }
            }
            at += n as u64;
        }
        assert!(
            at >= self.file_bytes || tail.later_group.is_some(),
            "chunks_max covers the file"
        );
        Ok(tail)
    }

    /// Whether `block` starts with a valid `GROUP` frame of this segment.
    fn is_group_frame(&self, block: &[u8]) -> bool {
        if block.len() < GROUP_FRAME_BYTES {
            return false;
        }
        let header = FrameHeader::parse(
            block[..FRAME_HEADER_BYTES]
                .try_into()
                .expect("header bytes"),
        );
        let payload = &block[FRAME_HEADER_BYTES..GROUP_FRAME_BYTES];
        header.kind == kind::GROUP
            && header.version == RECORD_VERSION
            && header.payload_bytes as usize == GROUP_PAYLOAD_BYTES
            && header.checks(payload)
            && matches!(record::decode_group(payload), Ok((_, nonce)) if nonce == self.header.nonce)
    }
}

/// What lies after a bad frame (see `Scanner::tail`).
struct Tail {
    /// Offset of a valid `GROUP` frame of this segment after the bad frame.
    later_group: Option<u64>,
    /// End of the last block holding a non-zero byte at or after the bad
    /// frame, capped at the end of the file; `None`: only zeros.
    nonzero_end: Option<u64>,
}

/// Repairs the torn tail of the newest segment without giving up its
/// preallocated space: closes the open group at `offset_bytes` with a
/// `PADDING` frame when `open_group`, overwrites the rest of the torn
/// bytes (up to `torn_end_bytes`) with zeros, and fdatasyncs. Returns the
/// new end of the log, bytes (a block boundary).
pub(crate) fn repair_tail(
    path: &Path,
    offset_bytes: u64,
    open_group: bool,
    torn_end_bytes: u64,
) -> Result<u64, StorageError> {
    let io = io_error(path);
    let file = open_for_append(path)?;
    let mut end = offset_bytes;
    if open_group {
        let mut padding = Vec::with_capacity(2 * BLOCK_BYTES as usize);
        record::encode_padding(&mut padding, offset_bytes, BLOCK_BYTES);
        file.write_all_at(&padding, offset_bytes).map_err(io)?;
        end += padding.len() as u64;
    }
    if torn_end_bytes > end {
        let zeros = vec![0u8; SCAN_BUFFER_BYTES];
        write_zeros(&file, path, end, torn_end_bytes - end, &zeros)?;
    }
    file.sync_data().map_err(io)?;
    Ok(end)
}

/// Overwrites the header block of spare `path` (torn at a rollover) with
/// zeros and fdatasyncs: it is a clean spare again.
pub(crate) fn clear_spare_header(path: &Path) -> Result<(), StorageError> {
    let io = io_error(path);
    let file = open_for_append(path)?;
    file.write_all_at(&[0u8; BLOCK_BYTES as usize], 0)
        .map_err(io)?;
    file.sync_data().map_err(io)
}
