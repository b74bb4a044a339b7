//! Bounded binary encoding used by every bftd message and record.
//!
//! Integers are big-endian, variable-length fields carry a `u32` length
//! prefix, and every length is checked against an explicit maximum *before*
//! anything is allocated, so a hostile length field costs nothing. Decoders
//! never panic on bad bytes: they return [`DecodeError`].

use thiserror::Error;

/// Why a byte string is not a valid encoding. Returned by every decoder in
/// bftd for input from the network or the disk; the input changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended `need` bytes into a field with only `have` left.
    #[error("truncated: need {need} bytes, {have} left")]
    Truncated { need: usize, have: usize },
    /// A length field exceeds its configured maximum.
    #[error("{what} is {len} bytes/items, above the limit of {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// The encoding version is not one this build reads.
    #[error("unsupported encoding version {0}")]
    BadVersion(u8),
    /// The message kind tag is unknown.
    #[error("unknown {what} tag {tag}")]
    UnknownTag { what: &'static str, tag: u8 },
    /// Bytes were left over after a complete value.
    #[error("{0} trailing bytes after a complete value")]
    TrailingBytes(usize),
    /// A field holds a value outside its domain.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// Appends big-endian fields to a byte vector.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer with `capacity` bytes reserved.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
        }
    }
    /// Wraps an existing buffer, appending after its current contents.
    pub fn from_vec(buf: Vec<u8>) -> Self {
        Self { buf }
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn bool(&mut self, v: bool) {
        self.u8(v as u8);
    }
    /// Fixed-size bytes, no length prefix.
    pub fn raw(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    /// Variable-size bytes with a `u32` length prefix.
    ///
    /// Panics if `v` is longer than `u32::MAX`: callers bound sizes far below.
    pub fn bytes(&mut self, v: &[u8]) {
        let len = u32::try_from(v.len()).expect("field longer than u32::MAX");
        self.u32(len);
        self.raw(v);
    }
    /// A `u32` item count for a following sequence.
    pub fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("sequence longer than u32::MAX"));
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads big-endian fields from a byte slice, checking every length.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// Offset of the next byte to read.
    pub fn position(&self) -> usize {
        self.pos
    }
    /// The whole input this reader was made from.
    pub fn source(&self) -> &'a [u8] {
        self.buf
    }
    /// Takes the next `n` bytes.
    pub fn raw(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                need: n,
                have: self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.raw(N)?);
        Ok(out)
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.raw(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid("bool")),
        }
    }
    /// Length-prefixed bytes, at most `max` long; borrowed from the input.
    pub fn bytes(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(DecodeError::TooLarge { what, len, max });
        }
        self.raw(len)
    }
    /// A `u32` item count, at most `max`, and at most one item per
    /// `item_bytes_min` remaining bytes (so a count cannot reserve more
    /// memory than the input could fill).
    pub fn count(
        &mut self,
        what: &'static str,
        max: usize,
        item_bytes_min: usize,
    ) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(DecodeError::TooLarge { what, len: n, max });
        }
        let need = n.saturating_mul(item_bytes_min.max(1));
        if need > self.remaining() {
            return Err(DecodeError::Truncated {
                need,
                have: self.remaining(),
            });
        }
        Ok(n)
    }
    /// Errors unless every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_above_limit_is_rejected_before_allocation() {
        let mut w = Writer::default();
        w.u32(u32::MAX);
        let mut r = Reader::new(w.as_slice());
        assert_eq!(
            r.bytes("payload", 16),
            Err(DecodeError::TooLarge {
                what: "payload",
                len: u32::MAX as usize,
                max: 16
            })
        );
    }

    #[test]
    fn count_cannot_exceed_remaining_input() {
        let mut w = Writer::default();
        w.u32(1000);
        w.raw(&[0; 10]);
        let mut r = Reader::new(w.as_slice());
        assert!(matches!(
            r.count("items", 10_000, 8),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn round_trip_fields() {
        let mut w = Writer::default();
        w.u8(7);
        w.u16(0xBEEF);
        w.u32(42);
        w.u64(u64::MAX - 1);
        w.bool(true);
        w.bytes(b"hello");
        let v = w.into_vec();
        let mut r = Reader::new(&v);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u16().unwrap(), 0xBEEF);
        assert_eq!(r.u32().unwrap(), 42);
        assert_eq!(r.u64().unwrap(), u64::MAX - 1);
        assert!(r.bool().unwrap());
        assert_eq!(r.bytes("b", 5).unwrap(), b"hello");
        r.finish().unwrap();
    }

    #[test]
    fn bad_bool_is_invalid() {
        assert_eq!(Reader::new(&[2]).bool(), Err(DecodeError::Invalid("bool")));
    }
}
