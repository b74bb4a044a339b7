//! The simulator's only source of randomness: ChaCha8 streams derived from
//! the run's seed.
//!
//! Every subsystem (parameters, network, disk, workload, each Byzantine
//! replica) draws from its own stream, forked from the seed by a label, so
//! that drawing one more number in one subsystem does not shift what every
//! other subsystem draws: a change to the workload generator leaves the
//! network's choices for the same seed as they were.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A seeded pseudo-random stream.
#[derive(Debug, Clone)]
pub struct Prng(ChaCha8Rng);

impl Prng {
    /// The root stream of a run.
    pub fn new(seed: u64) -> Self {
        Self(ChaCha8Rng::seed_from_u64(seed))
    }

    /// An independent stream for the subsystem `label` (and index `i`,
    /// e.g. a replica id), a pure function of the seed and the label.
    pub fn fork(seed: u64, label: &str, i: u64) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(&seed.to_le_bytes())
            .update(label.as_bytes())
            .update(&i.to_le_bytes());
        Self(ChaCha8Rng::from_seed(*h.finalize().as_bytes()))
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "empty range {lo}..={hi}");
        self.0.gen_range(lo..=hi)
    }

    /// Uniform index in `0..len`; `len` must be positive.
    pub fn index(&mut self, len: usize) -> usize {
        assert!(len > 0, "index into an empty set");
        self.0.gen_range(0..len)
    }

    /// True with probability `ppm` parts per million.
    pub fn chance_ppm(&mut self, ppm: u32) -> bool {
        assert!(ppm <= 1_000_000);
        ppm > 0 && self.0.gen_range(0..1_000_000u32) < ppm
    }

    /// A fair coin.
    pub fn coin(&mut self) -> bool {
        self.0.gen()
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }

    /// A raw 64-bit draw.
    pub fn u64(&mut self) -> u64 {
        self.0.gen()
    }

    /// 32 random bytes (keys, digests of forged messages).
    pub fn bytes32(&mut self) -> [u8; 32] {
        self.0.gen()
    }

    /// Shuffles `items` in place (Fisher-Yates, deterministic).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.index(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forks_are_pure_functions_of_seed_and_label() {
        let a: Vec<u64> = (0..4).map(|_| Prng::fork(7, "net", 0).u64()).collect();
        assert!(a.iter().all(|x| *x == a[0]));
        assert_ne!(
            Prng::fork(7, "net", 0).u64(),
            Prng::fork(7, "disk", 0).u64()
        );
        assert_ne!(Prng::fork(7, "net", 0).u64(), Prng::fork(7, "net", 1).u64());
        assert_ne!(Prng::fork(7, "net", 0).u64(), Prng::fork(8, "net", 0).u64());
    }
}
