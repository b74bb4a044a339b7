//! A bounded single-producer single-consumer byte ring: the control
//! thread seals frames into it, the dataplane thread copies them into the
//! link's TCP socket. Lock-free (two atomic positions on their own cache
//! lines), allocated once, never grows.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Keeps the two positions on separate cache lines.
#[repr(align(64))]
struct Padded(AtomicUsize);

struct Shared {
    buf: Box<[UnsafeCell<u8>]>,
    /// Capacity, a power of two.
    mask: usize,
    /// Bytes ever read (consumer position), wrapping.
    head: Padded,
    /// Bytes ever written (producer position), wrapping.
    tail: Padded,
}

// SAFETY: the producer writes only bytes in [tail, head + capacity) and
// publishes them with a Release store of `tail`; the consumer reads only
// bytes in [head, tail) after an Acquire load of `tail`, and frees them
// with a Release store of `head` that the producer loads with Acquire
// before reusing them. No byte is accessed by both sides at once.
unsafe impl Sync for Shared {}
// SAFETY: see above; the buffer is plain bytes.
unsafe impl Send for Shared {}

impl Shared {
    fn base(&self) -> *mut u8 {
        UnsafeCell::raw_get(self.buf.as_ptr())
    }
}

/// Creates a ring of `bytes` (rounded up to a power of two, at least 64).
pub(crate) fn ring(bytes: usize) -> (Producer, Consumer) {
    let cap = bytes.max(64).next_power_of_two();
    let shared = Arc::new(Shared {
        buf: (0..cap).map(|_| UnsafeCell::new(0)).collect(),
        mask: cap - 1,
        head: Padded(AtomicUsize::new(0)),
        tail: Padded(AtomicUsize::new(0)),
    });
    (
        Producer {
            shared: shared.clone(),
        },
        Consumer { shared },
    )
}

/// The writing end (one thread).
pub(crate) struct Producer {
    shared: Arc<Shared>,
}

/// The reading end (one thread).
pub(crate) struct Consumer {
    shared: Arc<Shared>,
}

impl Producer {
    /// Bytes that can be written now (only grows until the next push).
    pub(crate) fn free(&self) -> usize {
        let s = &self.shared;
        let head = s.head.0.load(Ordering::Acquire);
        let tail = s.tail.0.load(Ordering::Relaxed);
        s.mask + 1 - tail.wrapping_sub(head)
    }

    /// Appends the concatenation of `parts` as one unit, or nothing (false)
    /// if it does not fit.
    pub(crate) fn push(&mut self, parts: &[&[u8]]) -> bool {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > self.free() {
            return false;
        }
        let s = &self.shared;
        let mut at = s.tail.0.load(Ordering::Relaxed);
        for part in parts {
            let mut rest = *part;
            // At most two iterations: up to the end of the buffer, then
            // from its start.
            while !rest.is_empty() {
                let i = at & s.mask;
                let k = rest.len().min(s.mask + 1 - i);
                // SAFETY: [i, i + k) is inside the buffer and within the
                // free space checked above, which the consumer does not
                // read until `tail` is published below.
                unsafe { std::ptr::copy_nonoverlapping(rest.as_ptr(), s.base().add(i), k) };
                rest = &rest[k..];
                at = at.wrapping_add(k);
            }
        }
        s.tail.0.store(at, Ordering::Release);
        true
    }
}

impl Consumer {
    /// Bytes waiting to be read.
    pub(crate) fn len(&self) -> usize {
        let s = &self.shared;
        let tail = s.tail.0.load(Ordering::Acquire);
        tail.wrapping_sub(s.head.0.load(Ordering::Relaxed))
    }

    /// The first waiting bytes, at most `max`, contiguous (the rest may
    /// follow from the buffer's start: call again after [`Self::consume`]).
    pub(crate) fn peek(&self, max: usize) -> &[u8] {
        let s = &self.shared;
        let head = s.head.0.load(Ordering::Relaxed);
        let i = head & s.mask;
        let k = self.len().min(max).min(s.mask + 1 - i);
        // SAFETY: [i, i + k) holds bytes the producer published (Acquire
        // in `len`) and will not touch until `head` moves past them.
        unsafe { std::slice::from_raw_parts(s.base().add(i), k) }
    }

    /// Copies the first `out.len()` waiting bytes into `out` without
    /// consuming them; false if fewer are waiting.
    pub(crate) fn peek_into(&self, out: &mut [u8]) -> bool {
        if self.len() < out.len() {
            return false;
        }
        let s = &self.shared;
        let head = s.head.0.load(Ordering::Relaxed);
        for (k, b) in out.iter_mut().enumerate() {
            let i = head.wrapping_add(k) & s.mask;
            // SAFETY: inside the published bytes (checked above).
            *b = unsafe { *s.base().add(i) };
        }
        true
    }

    /// Frees the first `n` waiting bytes.
    pub(crate) fn consume(&mut self, n: usize) {
        assert!(n <= self.len(), "consumed past the written bytes");
        let s = &self.shared;
        let head = s.head.0.load(Ordering::Relaxed);
        s.head.0.store(head.wrapping_add(n), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_and_refuses_what_does_not_fit() {
        let (mut p, mut c) = ring(64);
        assert!(p.push(&[&[1; 40]]));
        assert!(!p.push(&[&[2; 30]]), "24 bytes free");
        c.consume(40);
        assert!(p.push(&[&[3; 10], &[4; 20]]), "wraps around the end");
        assert_eq!(c.len(), 30);
        let first = c.peek(100).to_vec();
        assert_eq!(first.len(), 24, "up to the end of the buffer");
        let mut all = [0u8; 30];
        assert!(c.peek_into(&mut all));
        assert_eq!(&all[..10], &[3; 10]);
        assert_eq!(&all[10..], &[4; 20]);
        c.consume(24);
        assert_eq!(c.peek(100), &[4; 6]);
    }

    #[test]
    fn bytes_cross_threads_in_order() {
        let (mut p, mut c) = ring(256);
        let n: u32 = 20_000;
        let t = std::thread::spawn(move || {
            let mut i = 0u32;
            while i < n {
                if p.push(&[&i.to_le_bytes()]) {
                    i += 1;
                } else {
                    std::thread::yield_now();
                }
            }
        });
        let mut want = 0u32;
        let mut word = [0u8; 4];
        while want < n {
            if c.peek_into(&mut word) {
                assert_eq!(u32::from_le_bytes(word), want);
                c.consume(4);
                want += 1;
            } else {
                std::thread::yield_now();
            }
        }
        t.join().unwrap();
    }
}
