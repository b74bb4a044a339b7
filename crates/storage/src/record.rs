//! Typed log records and their checksummed frames.
//!
//! A frame is `len: u32 | crc32c: u32 | version: u8 | kind: u8 | payload`
//! (big-endian, [`FRAME_HEADER_BYTES`] of header). `len` counts payload
//! bytes only and is checked against [`crate::Limits::record_bytes_max`]
//! before the payload is read. The crc32c covers `len | version | kind |
//! payload`, so a flipped length is caught as well as a flipped payload
//! byte. Payloads use `wire::codec` (big-endian fields, `u32`-prefixed
//! byte strings); every decoder rejects trailing bytes, so each record has
//! exactly one encoding.
//!
//! Two kinds are framing only and never reach callers: `GROUP` opens the
//! bytes of one [`crate::Storage::sync`] (first lsn + the segment nonce)
//! and `PADDING` (zeros) closes it at the next 4 KiB boundary.

use wire::codec::{DecodeError, Reader, Writer};
use wire::{Cid, Digest, Regency};

/// Bytes of a frame header: `len u32 | crc32c u32 | version u8 | kind u8`.
pub const FRAME_HEADER_BYTES: usize = 10;

/// The frame version this build writes and reads.
pub const RECORD_VERSION: u8 = 1;

/// Frame kinds (one byte).
pub(crate) mod kind {
    pub const PROPOSAL: u8 = 1;
    pub const DECISION: u8 = 2;
    pub const REGENCY: u8 = 3;
    pub const CHECKPOINT: u8 = 4;
    pub const ACCEPT: u8 = 5;
    /// Framing: first frame of a group.
    pub const GROUP: u8 = 0x40;
    /// Framing: last frame of a group, zeros up to a block boundary.
    pub const PADDING: u8 = 0x41;
}

/// Payload bytes of a `GROUP` frame: `first_lsn u64 | segment nonce u64`.
pub(crate) const GROUP_PAYLOAD_BYTES: usize = 16;
/// Bytes of a whole `GROUP` frame.
pub(crate) const GROUP_FRAME_BYTES: usize = FRAME_HEADER_BYTES + GROUP_PAYLOAD_BYTES;

/// One entry of the write-ahead log (what must survive a crash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A batch this replica accepted from the leader of `regency` for
    /// consensus instance `cid` and will vote for (made durable before
    /// the replica sends its ACCEPT). `batch`: the encoded batch, opaque.
    Proposal {
        regency: Regency,
        cid: Cid,
        batch: Vec<u8>,
    },
    /// Instance `cid` was decided in `regency` on the batch with `digest`;
    /// `proof`: the signed ACCEPTs, opaque.
    Decision {
        cid: Cid,
        regency: Regency,
        digest: Digest,
        proof: Vec<u8>,
    },
    /// The replica accepted the batch with `digest` for `cid` in
    /// `regency` (Mod-SMaRt's ACCEPT; made durable before the ACCEPT is
    /// sent, so a restarted replica reports exactly the ACCEPTs it sent).
    Accept {
        regency: Regency,
        cid: Cid,
        digest: Digest,
    },
    /// The replica installed `regency` (durable before it acts in it).
    Regency { regency: Regency },
    /// A checkpoint of the state after executing `cid` is durable on disk
    /// (appended by [`crate::Storage::write_checkpoint`]).
    Checkpoint { cid: Cid, digest: Digest },
}

impl Record {
    /// The frame kind byte.
    pub(crate) fn kind(&self) -> u8 {
        match self {
            Record::Proposal { .. } => kind::PROPOSAL,
            Record::Decision { .. } => kind::DECISION,
            Record::Regency { .. } => kind::REGENCY,
            Record::Checkpoint { .. } => kind::CHECKPOINT,
            Record::Accept { .. } => kind::ACCEPT,
        }
    }

    /// The consensus instance this record belongs to; `None` for
    /// `Regency` records.
    pub fn cid(&self) -> Option<Cid> {
        match self {
            Record::Proposal { cid, .. }
            | Record::Decision { cid, .. }
            | Record::Checkpoint { cid, .. }
            | Record::Accept { cid, .. } => Some(*cid),
            Record::Regency { .. } => None,
        }
    }

    /// Bytes of the encoded payload (without the frame header).
    pub fn payload_bytes(&self) -> usize {
        match self {
            Record::Proposal { batch, .. } => 4 + 8 + 4 + batch.len(),
            Record::Decision { proof, .. } => 8 + 4 + 32 + 4 + proof.len(),
            Record::Regency { .. } => 4,
            Record::Checkpoint { .. } => 8 + 32,
            Record::Accept { .. } => 4 + 8 + 32,
        }
    }

    /// Bytes of the whole frame.
    pub fn frame_bytes(&self) -> usize {
        FRAME_HEADER_BYTES + self.payload_bytes()
    }

    fn encode_payload(&self, w: &mut Writer) {
        match self {
            Record::Proposal {
                regency,
                cid,
                batch,
            } => {
                w.u32(*regency);
                w.u64(*cid);
                w.bytes(batch);
            }
            Record::Decision {
                cid,
                regency,
                digest,
                proof,
            } => {
                w.u64(*cid);
                w.u32(*regency);
                w.raw(digest.as_bytes());
                w.bytes(proof);
            }
            Record::Regency { regency } => w.u32(*regency),
            Record::Checkpoint { cid, digest } => {
                w.u64(*cid);
                w.raw(digest.as_bytes());
            }
            Record::Accept {
                regency,
                cid,
                digest,
            } => {
                w.u32(*regency);
                w.u64(*cid);
                w.raw(digest.as_bytes());
            }
        }
    }

    /// Appends the whole frame of this record to `out`.
    ///
    /// Panics if the payload exceeds `u32::MAX` bytes (callers check
    /// [`crate::Limits::record_bytes_max`] first).
    pub fn encode_frame(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let payload_bytes = self.payload_bytes();
        out.reserve(FRAME_HEADER_BYTES + payload_bytes);
        out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
        let mut w = Writer::from_vec(std::mem::take(out));
        self.encode_payload(&mut w);
        *out = w.into_vec();
        assert_eq!(out.len() - start, FRAME_HEADER_BYTES + payload_bytes);
        seal_frame(&mut out[start..], self.kind());
    }

    /// Decodes the payload of a frame of `kind`. Byte strings inside are
    /// bounded by `record_bytes_max` (the payload itself already is).
    pub(crate) fn decode(
        kind: u8,
        payload: &[u8],
        record_bytes_max: usize,
    ) -> Result<Record, DecodeError> {
        let mut r = Reader::new(payload);
        let record = match kind {
            kind::PROPOSAL => Record::Proposal {
                regency: r.u32()?,
                cid: r.u64()?,
                batch: r.bytes("proposal batch", record_bytes_max)?.to_vec(),
            },
            kind::DECISION => Record::Decision {
                cid: r.u64()?,
                regency: r.u32()?,
                digest: Digest(r.array()?),
                proof: r.bytes("decision proof", record_bytes_max)?.to_vec(),
            },
            kind::REGENCY => Record::Regency { regency: r.u32()? },
            kind::CHECKPOINT => Record::Checkpoint {
                cid: r.u64()?,
                digest: Digest(r.array()?),
            },
            kind::ACCEPT => Record::Accept {
                regency: r.u32()?,
                cid: r.u64()?,
                digest: Digest(r.array()?),
            },
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "record kind",
                    tag,
                })
            }
        };
        r.finish()?;
        Ok(record)
    }
}

/// Fills in `len`, `crc32c`, `version` and `kind` of the frame in `frame`
/// (header placeholder followed by the payload).
pub(crate) fn seal_frame(frame: &mut [u8], kind: u8) {
    assert!(frame.len() >= FRAME_HEADER_BYTES);
    let len = u32::try_from(frame.len() - FRAME_HEADER_BYTES).expect("record below 4 GiB");
    frame[0..4].copy_from_slice(&len.to_be_bytes());
    frame[8] = RECORD_VERSION;
    frame[9] = kind;
    let crc = frame_crc(
        &frame[0..4],
        RECORD_VERSION,
        kind,
        &frame[FRAME_HEADER_BYTES..],
    );
    frame[4..8].copy_from_slice(&crc.to_be_bytes());
}

fn frame_crc(len_be: &[u8], version: u8, kind: u8, payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(len_be);
    let crc = crc32c::crc32c_append(crc, &[version, kind]);
    crc32c::crc32c_append(crc, payload)
}

/// A parsed frame header (not yet checked against its payload).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameHeader {
    pub payload_bytes: u32,
    pub crc: u32,
    pub version: u8,
    pub kind: u8,
}

impl FrameHeader {
    pub fn parse(bytes: &[u8; FRAME_HEADER_BYTES]) -> Self {
        FrameHeader {
            payload_bytes: u32::from_be_bytes(bytes[0..4].try_into().expect("4 bytes")),
            crc: u32::from_be_bytes(bytes[4..8].try_into().expect("4 bytes")),
            version: bytes[8],
            kind: bytes[9],
        }
    }

    /// Whether `payload` is the payload this header was sealed over.
    pub fn checks(&self, payload: &[u8]) -> bool {
        payload.len() == self.payload_bytes as usize
            && frame_crc(
                &self.payload_bytes.to_be_bytes(),
                self.version,
                self.kind,
                payload,
            ) == self.crc
    }
}

/// Appends a `GROUP` frame.
pub(crate) fn encode_group(out: &mut Vec<u8>, first_lsn: u64, nonce: u64) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    out.extend_from_slice(&first_lsn.to_be_bytes());
    out.extend_from_slice(&nonce.to_be_bytes());
    seal_frame(&mut out[start..], kind::GROUP);
}

/// Decodes a `GROUP` payload into `(first_lsn, nonce)`.
pub(crate) fn decode_group(payload: &[u8]) -> Result<(u64, u64), DecodeError> {
    let mut r = Reader::new(payload);
    let first_lsn = r.u64()?;
    let nonce = r.u64()?;
    r.finish()?;
    Ok((first_lsn, nonce))
}

/// Appends a `PADDING` frame so that `out` ends at a multiple of
/// `block_bytes` counted from `base_offset` (the file offset of `out[0]`).
pub(crate) fn encode_padding(out: &mut Vec<u8>, base_offset: u64, block_bytes: u64) {
    let end = base_offset + out.len() as u64;
    let mut pad_bytes = (block_bytes - end % block_bytes) % block_bytes;
    if pad_bytes < FRAME_HEADER_BYTES as u64 {
        pad_bytes += block_bytes;
    }
    let start = out.len();
    out.resize(start + pad_bytes as usize, 0);
    seal_frame(&mut out[start..], kind::PADDING);
    assert_eq!((base_offset + out.len() as u64) % block_bytes, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_length_checksum_version_kind_payload() {
        let record = Record::Regency {
            regency: 0x0102_0304,
        };
        let mut frame = Vec::new();
        record.encode_frame(&mut frame);
        assert_eq!(frame.len(), record.frame_bytes());
        assert_eq!(&frame[0..4], &4u32.to_be_bytes());
        assert_eq!(frame[8], RECORD_VERSION);
        assert_eq!(frame[9], kind::REGENCY);
        assert_eq!(&frame[10..], &[1, 2, 3, 4]);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&frame[0..4]), &frame[8..]);
        assert_eq!(&frame[4..8], &crc.to_be_bytes());
        let header = FrameHeader::parse(frame[..FRAME_HEADER_BYTES].try_into().unwrap());
        assert!(header.checks(&frame[FRAME_HEADER_BYTES..]));
        assert_eq!(
            Record::decode(header.kind, &frame[FRAME_HEADER_BYTES..], 1 << 20),
            Ok(record)
        );
    }

    #[test]
    fn zeros_are_not_a_frame() {
        // A zero-filled tail (a crash on a file system that extended the
        // file first) must fail the checksum.
        let header = FrameHeader::parse(&[0; FRAME_HEADER_BYTES]);
        assert!(!header.checks(&[]));
    }

    #[test]
    fn trailing_bytes_and_oversized_fields_do_not_decode() {
        let record = Record::Proposal {
            regency: 1,
            cid: 2,
            batch: vec![9; 100],
        };
        let mut frame = Vec::new();
        record.encode_frame(&mut frame);
        let mut payload = frame[FRAME_HEADER_BYTES..].to_vec();
        assert!(Record::decode(kind::PROPOSAL, &payload, 99).is_err());
        payload.push(0);
        assert_eq!(
            Record::decode(kind::PROPOSAL, &payload, 1 << 20),
            Err(DecodeError::TrailingBytes(1))
        );
    }

    #[test]
    fn padding_closes_a_group_at_the_next_block_boundary() {
        for used in [0usize, 1, 4085, 4086, 4087, 4095, 4096, 5000] {
            let mut out = vec![0xEE; used];
            encode_padding(&mut out, 4096, 4096);
            assert_eq!(out.len() % 4096, 0, "used {used}");
            assert!(out.len() - used >= FRAME_HEADER_BYTES);
            assert!(out.len() - used < 4096 + FRAME_HEADER_BYTES);
        }
    }
}
