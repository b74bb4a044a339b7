//! Batch and state digests.
//!
//! One function, [`digest`], names the hash bftd uses for batch digests,
//! request identities and state digests (DESIGN.md, "Wire and crypto").
//! BLAKE3 was chosen over SHA-256 (with the CPU's SHA extensions) by the
//! measurement in `perf/benches/hash.rs`; swapping it is a one-line change
//! here plus a protocol version bump.

use std::fmt;

/// A 32-byte cryptographic digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub const ZERO: Digest = Digest([0; 32]);
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// Lower-case hex of all 32 bytes.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &hex::encode(&self.0[..6]))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Digest of one byte string.
pub fn digest(bytes: &[u8]) -> Digest {
    Digest(*blake3::hash(bytes).as_bytes())
}

/// Incremental digest over several parts, equal to [`digest`] of their
/// concatenation.
#[derive(Default, Clone)]
pub struct Hasher(blake3::Hasher);

impl Hasher {
    pub fn new() -> Self {
        Self(blake3::Hasher::new())
    }
    pub fn update(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update(bytes);
        self
    }
    pub fn finalize(&self) -> Digest {
        Digest(*self.0.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_equals_one_shot() {
        let mut h = Hasher::new();
        h.update(b"hello ").update(b"world");
        assert_eq!(h.finalize(), digest(b"hello world"));
        assert_ne!(digest(b"a"), digest(b"b"));
    }
}
