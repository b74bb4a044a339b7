//! [`recover`]: from a data directory to a [`Recovered`] and an open log.
//!
//! Everything is checked before anything is changed on disk: only when
//! the whole log and a checkpoint are accepted are temporary files
//! removed, invalid checkpoints renamed and a torn tail cut.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};

use wire::{Cid, Regency};

use crate::segment::{self, corrupt, Scan, SegmentHeader, BLOCK_BYTES};
use crate::StorageError;
use crate::{checkpoint, fsync_dir, io_error, Limits, Record, Recovered, SegmentInfo};

/// A fresh random `u64` (segment nonces). Not for cryptography: the nonce
/// only has to be unguessable by clients whose bytes land in batches.
pub(crate) fn random_nonce() -> u64 {
    let mut h = RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.finish()
}

/// What [`recover`] hands to [`crate::Storage::open`].
pub(crate) struct Found {
    pub recovered: Recovered,
    pub segments: VecDeque<SegmentInfo>,
    pub active: File,
    pub active_nonce: u64,
    pub next_lsn: u64,
    pub decided_cid_max: Option<Cid>,
    /// Kept checkpoint files, ascending.
    pub checkpoints: Vec<Cid>,
    pub regency_seq: Option<u64>,
    /// The segment after the newest, zero-filled ahead of a rollover.
    pub spare: Option<FoundSpare>,
}

/// A spare segment file found by recovery (see `segment::probe_spare`).
pub(crate) struct FoundSpare {
    pub seq: u64,
    pub file: File,
    pub file_bytes: u64,
}

/// The names found in the data directory.
#[derive(Default)]
struct Listing {
    /// Ascending.
    segments: Vec<u64>,
    checkpoints: Vec<Cid>,
    /// Our temporary files: a crash while creating a segment or checkpoint.
    temporaries: Vec<PathBuf>,
    warnings: Vec<String>,
}

fn list(dir: &Path, limits: &Limits) -> Result<Listing, StorageError> {
    let io = io_error(dir);
    let mut listing = Listing::default();
    for (n, entry) in std::fs::read_dir(dir).map_err(io)?.enumerate() {
        if n >= limits.dir_entries_max {
            return Err(StorageError::TooManyFiles {
                dir: dir.to_path_buf(),
                max: limits.dir_entries_max,
            });
        }
        let entry = entry.map_err(io)?;
        let is_file = entry.file_type().map_err(io)?.is_file();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            listing.warnings.push(format!(
                "{}: ignoring a file that is not ours",
                entry.path().display()
            ));
            continue;
        };
        if name.starts_with(crate::HOST_FILE_PREFIX) {
            continue;
        }
        let ours_tmp = name.strip_suffix(".tmp").is_some_and(|base| {
            segment::parse_file_name(base).is_some() || checkpoint::parse_file_name(base).is_some()
        });
        match (
            segment::parse_file_name(name),
            checkpoint::parse_file_name(name),
        ) {
            (Some(seq), _) if is_file => listing.segments.push(seq),
            (_, Some(cid)) if is_file => listing.checkpoints.push(cid),
            _ if ours_tmp && is_file => listing.temporaries.push(entry.path()),
            _ if name.starts_with("checkpoint-") && name.ends_with(".snap.corrupt") => {
                listing.warnings.push(format!(
                    "{}: ignoring a checkpoint found invalid by an earlier recovery \
                     (remove it once inspected)",
                    entry.path().display()
                ))
            }
            _ => listing.warnings.push(format!(
                "{}: ignoring a file that is not ours",
                entry.path().display()
            )),
        }
    }
    listing.segments.sort_unstable();
    listing.checkpoints.sort_unstable();
    Ok(listing)
}

/// Creates `dir` if needed (and makes its entry durable).
fn create_dir(dir: &Path) -> Result<(), StorageError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => fsync_dir(parent),
        _ => Ok(()),
    }
}

/// Per-record bookkeeping while scanning the log.
struct Collector {
    base_cid: Option<Cid>,
    records: Vec<Record>,
    /// PROPOSAL and DECISION records at or below `base_cid`.
    covered: Vec<Record>,
    regency: Regency,
    regency_seq: Option<u64>,
    /// Highest DECISION cid returned so far (or the checkpoint's cid).
    returned_decision_max: Option<Cid>,
    decided_cid_max: Option<Cid>,
    marker_cid_max: Option<Cid>,
    segment: SegmentInfo,
}

impl Collector {
    fn visit(&mut self, record: Record, path: &Path, offset: u64) -> Result<(), StorageError> {
        if let Some(cid) = record.cid() {
            self.segment.cid_max = self.segment.cid_max.max(Some(cid));
        }
        let after_base = record.cid().is_some_and(|c| Some(c) > self.base_cid);
        match record {
            Record::Regency { regency } => {
                self.regency = regency;
                self.regency_seq = Some(self.segment.seq);
                self.segment.has_regency = true;
                self.records.push(record);
            }
            Record::Decision { cid, .. } => {
                self.decided_cid_max = self.decided_cid_max.max(Some(cid));
                if after_base {
                    if let Some(max) = self.returned_decision_max {
                        if cid > max + 1 {
                            return Err(corrupt(
                                path,
                                offset,
                                format!(
                                    "DECISION for cid {cid} follows cid {max}: decisions {}..={} \
                                     are missing",
                                    max + 1,
                                    cid - 1
                                ),
                            ));
                        }
                    }
                    self.returned_decision_max = self.returned_decision_max.max(Some(cid));
                    self.records.push(record);
                } else {
                    self.covered.push(record);
                }
            }
            Record::Checkpoint { cid, .. } => {
                self.marker_cid_max = self.marker_cid_max.max(Some(cid));
                if after_base {
                    self.records.push(record);
                }
            }
            Record::Proposal { .. } => {
                if after_base {
                    self.records.push(record);
                } else if self.base_cid.is_some() {
                    self.covered.push(record);
                }
            }
            Record::Accept { .. } => {
                if after_base {
                    self.records.push(record);
                }
            }
        }
        Ok(())
    }
}

/// Recovers the log and checkpoints in `dir` (see the crate docs).
pub(crate) fn recover(dir: &Path, limits: &Limits) -> Result<Found, StorageError> {
    create_dir(dir)?;
    let listing = list(dir, limits)?;
    let mut warnings = listing.warnings;
    let checkpoint::Newest {
        checkpoint,
        invalid: invalid_checkpoints,
        warnings: checkpoint_warnings,
    } = checkpoint::load_newest(dir, &listing.checkpoints, limits)?;
    warnings.extend(checkpoint_warnings);
    let base_cid = checkpoint.as_ref().map(|c| c.cid);

    if listing.segments.is_empty() && !listing.checkpoints.is_empty() {
        return Err(corrupt(
            &dir.join(segment::file_name(0)),
            0,
            "checkpoint files exist but no log segment does (the log was removed)",
        ));
    }
    for pair in listing.segments.windows(2) {
        if pair[1] != pair[0] + 1 {
            return Err(corrupt(
                &dir.join(segment::file_name(pair[0] + 1)),
                0,
                format!(
                    "segment {} is missing between {} and {}",
                    pair[0] + 1,
                    pair[0],
                    pair[1]
                ),
            ));
        }
    }
    if let Some(&first) = listing.segments.first() {
        if first > 0 && checkpoint.is_none() {
            return Err(corrupt(
                &dir.join(segment::file_name(first)),
                0,
                format!(
                    "the log was truncated (it starts at segment {first}) but no valid \
                     checkpoint exists"
                ),
            ));
        }
    }

    let mut collector = Collector {
        base_cid,
        records: Vec::new(),
        covered: Vec::new(),
        regency: 0,
        regency_seq: None,
        returned_decision_max: base_cid,
        decided_cid_max: base_cid,
        marker_cid_max: None,
        segment: SegmentInfo {
            seq: 0,
            end_bytes: 0,
            file_bytes: 0,
            cid_max: None,
            has_regency: false,
        },
    };
    // The newest file may be a spare: zero-filled ahead of a rollover, not
    // yet part of the log (never the only segment: the active one precedes
    // it).
    let mut log_seqs = &listing.segments[..];
    let mut spare_probe = None;
    if let [.., _, spare_seq] = listing.segments[..] {
        let path = dir.join(segment::file_name(spare_seq));
        if let Some(probe) = segment::probe_spare(&path, limits)? {
            spare_probe = Some((spare_seq, probe));
            log_seqs = &listing.segments[..listing.segments.len() - 1];
        }
    }
    let mut segments = VecDeque::with_capacity(log_seqs.len() + 1);
    let mut expected_first_lsn = None;
    let mut newest_scan: Option<Scan> = None;
    for (i, &seq) in log_seqs.iter().enumerate() {
        let path = dir.join(segment::file_name(seq));
        let newest = i + 1 == log_seqs.len();
        if seq == 0 {
            expected_first_lsn = Some(1);
        }
        collector.segment = SegmentInfo {
            seq,
            end_bytes: 0,
            file_bytes: 0,
            cid_max: None,
            has_regency: false,
        };
        let scan = segment::scan(
            &path,
            seq,
            newest,
            expected_first_lsn,
            limits,
            &mut |_lsn, record, offset| collector.visit(record, &path, offset),
        )?;
        expected_first_lsn = Some(scan.next_lsn);
        let mut info = collector.segment.clone();
        info.end_bytes = scan.end_bytes;
        info.file_bytes = scan.file_bytes;
        segments.push_back(info);
        if newest {
            newest_scan = Some(scan);
        }
    }

    // Accepted: now repair.
    for tmp in &listing.temporaries {
        std::fs::remove_file(tmp).map_err(io_error(tmp))?;
        warnings.push(format!(
            "{}: removed an unfinished file (a crash while it was written)",
            tmp.display()
        ));
    }
    for &cid in &invalid_checkpoints {
        let from = dir.join(checkpoint::file_name(cid));
        let to = dir.join(format!("{}.corrupt", checkpoint::file_name(cid)));
        std::fs::rename(&from, &to).map_err(io_error(&from))?;
        warnings.push(format!(
            "{}: renamed to {} (kept for inspection; not used again)",
            from.display(),
            to.display()
        ));
    }
    if let (Some(marker), Some(used)) = (collector.marker_cid_max, base_cid) {
        if marker > used {
            warnings.push(format!(
                "the log records a checkpoint at cid {marker} but its file is missing or \
                 invalid; recovered from the checkpoint at cid {used}"
            ));
        }
    }
    if base_cid.is_none() && collector.marker_cid_max.is_some() {
        warnings.push(
            "the log records checkpoints but no checkpoint file is valid; recovering from \
             the start of the log"
                .to_string(),
        );
    }
    let mut truncated_tail_bytes = 0;
    let (active, active_nonce, next_lsn) = match newest_scan {
        Some(scan) => {
            let info = segments.back_mut().expect("a newest segment was scanned");
            let path = dir.join(segment::file_name(info.seq));
            if let Some(torn) = &scan.torn {
                info.end_bytes = segment::repair_tail(
                    &path,
                    torn.offset_bytes,
                    scan.open_group,
                    torn.offset_bytes + torn.bytes,
                )?;
                info.file_bytes = info.file_bytes.max(info.end_bytes);
                truncated_tail_bytes = torn.bytes;
                warnings.push(format!(
                    "{}: torn write at offset {} ({}); cut {} bytes (a crash during a write; \
                     nothing cut was acknowledged as durable)",
                    path.display(),
                    torn.offset_bytes,
                    torn.reason,
                    torn.bytes
                ));
            }
            assert_eq!(
                info.end_bytes % BLOCK_BYTES,
                0,
                "the log ends at a group boundary"
            );
            (
                segment::open_for_append(&path)?,
                scan.header.nonce,
                scan.next_lsn,
            )
        }
        None => {
            let header = SegmentHeader {
                seq: 0,
                first_lsn: 1,
                nonce: random_nonce(),
            };
            let file = segment::create(dir, header)?;
            segments.push_back(SegmentInfo {
                seq: 0,
                end_bytes: BLOCK_BYTES,
                file_bytes: BLOCK_BYTES,
                cid_max: None,
                has_regency: false,
            });
            (file, header.nonce, 1)
        }
    };
    let mut spare = None;
    if let Some((seq, probe)) = spare_probe {
        let path = dir.join(segment::file_name(seq));
        if probe.torn_header {
            segment::clear_spare_header(&path)?;
            warnings.push(format!(
                "{}: unfinished segment header (a crash while starting this segment; no \
                 record was written to it); kept as the next segment, zero-filled",
                path.display()
            ));
        }
        spare = Some(FoundSpare {
            seq,
            file: segment::open_for_append(&path)?,
            file_bytes: probe.file_bytes,
        });
    }
    if !listing.temporaries.is_empty() || !invalid_checkpoints.is_empty() {
        fsync_dir(dir)?;
    }
    let checkpoints = listing
        .checkpoints
        .iter()
        .copied()
        .filter(|c| !invalid_checkpoints.contains(c))
        .collect();
    Ok(Found {
        recovered: Recovered {
            checkpoint,
            records: collector.records,
            covered: collector.covered,
            regency: collector.regency,
            truncated_tail_bytes,
            warnings,
        },
        segments,
        active,
        active_nonce,
        next_lsn,
        decided_cid_max: collector.decided_cid_max,
        checkpoints,
        regency_seq: collector.regency_seq,
        spare,
    })
}
