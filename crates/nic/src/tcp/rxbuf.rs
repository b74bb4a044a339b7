//! The read buffer of one inbound link and the in-place frame parser both
//! receive backends share.
//!
//! Layout of the stream: `u32 big-endian length || frame`, repeated. The
//! buffer holds one maximal frame with its prefix (allocated once, at link
//! set-up); frames are handed out as slices of it. A length above the
//! maximum is refused before it is used for anything.

use std::sync::atomic::Ordering;

use wire::ReplicaId;

use super::LEN_PREFIX;
use crate::fault::FaultSwitch;
use crate::stats::NicStats;
use crate::RxEvent;

/// Reads one link may do in one turn, at most (each fills the buffer's free
/// tail; frames larger than one read need several).
const READS_PER_TURN_MAX: usize = 4;

/// What the buffer holds next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// A whole frame at `buf[at..at + len]`.
    Frame { at: usize, len: usize },
    /// Not a whole frame yet.
    NeedMore,
    /// A length prefix above the maximum frame size.
    Oversize,
}

/// The read buffer of one link: bytes `start..end` are received, not yet
/// delivered.
pub(crate) struct LinkBuf {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    frame_bytes_max: usize,
}

impl LinkBuf {
    /// A buffer for frames of at most `frame_bytes_max` bytes (set-up path:
    /// allocates `LEN_PREFIX + frame_bytes_max` bytes, at least 64 KiB).
    pub(crate) fn new(frame_bytes_max: usize) -> Self {
        let size = (LEN_PREFIX + frame_bytes_max).max(64 * 1024);
        Self {
            buf: vec![0u8; size].into_boxed_slice(),
            start: 0,
            end: 0,
            frame_bytes_max,
        }
    }

    /// Parses the next frame without consuming it.
    pub(crate) fn next(&self) -> Next {
        let avail = self.end - self.start;
        if avail < LEN_PREFIX {
            return Next::NeedMore;
        }
        let prefix: [u8; LEN_PREFIX] = self.buf[self.start..self.start + LEN_PREFIX]
            .try_into()
            .expect("4 bytes");
        let len = u32::from_be_bytes(prefix) as usize;
        if len > self.frame_bytes_max {
            return Next::Oversize;
        }
        if avail < LEN_PREFIX + len {
            return Next::NeedMore;
        }
        Next::Frame {
            at: self.start + LEN_PREFIX,
            len,
        }
    }

    /// True if a whole frame is waiting.
    pub(crate) fn has_frame(&self) -> bool {
        matches!(self.next(), Next::Frame { .. })
    }

    /// Complete frames waiting (for `rx_lost` when the link closes).
    pub(crate) fn frames_waiting(&self) -> u64 {
        let mut count = 0;
        let mut at = self.start;
        // Each iteration consumes one whole frame of the bounded buffer.
        while self.end - at >= LEN_PREFIX {
            let prefix: [u8; LEN_PREFIX] = self.buf[at..at + LEN_PREFIX].try_into().expect("4");
            let len = u32::from_be_bytes(prefix) as usize;
            if len > self.frame_bytes_max || self.end - at < LEN_PREFIX + len {
                break;
            }
            at += LEN_PREFIX + len;
            count += 1;
        }
        count
    }

    /// Marks the frame at `at..at + len` delivered.
    fn consume(&mut self, at: usize, len: usize) {
        assert!(at == self.start + LEN_PREFIX && at + len <= self.end);
        self.start = at + len;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Moves the undelivered bytes to the front and returns the free tail
    /// to read into (never empty while no whole frame is waiting: the
    /// buffer holds a maximal frame). Only call while no read into the
    /// buffer is in flight.
    pub(crate) fn free_tail(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        assert!(
            self.end < self.buf.len() || self.has_frame(),
            "full buffer without a frame"
        );
        &mut self.buf[self.end..]
    }

    /// Records `n` bytes read into the free tail.
    pub(crate) fn filled(&mut self, n: usize) {
        assert!(self.end + n <= self.buf.len(), "read past the buffer");
        self.end += n;
    }
}

/// What one attempt to get more bytes for a link gave.
pub(crate) enum Fill {
    /// Bytes were added to the buffer.
    Got,
    /// Nothing more for now.
    Empty,
    /// End of stream or a socket error: close the link.
    Closed,
}

/// Why a link must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Close {
    /// End of stream or socket error.
    Gone,
    /// An oversize length prefix.
    Oversize,
    /// The peer is blocked by the fault switch.
    Blocked,
}

/// Serves one link's turn: delivers up to `quota` frames, calling `fill`
/// for more bytes when no whole frame is buffered (at most
/// [`READS_PER_TURN_MAX`] times). Returns the frames delivered and, if the
/// link must close, why. No allocation.
#[allow(clippy::too_many_arguments)]
pub(crate) fn serve_link<F: FnMut(RxEvent<'_>)>(
    stats: &NicStats,
    faults: &FaultSwitch,
    peer: ReplicaId,
    epoch: u64,
    buf: &mut LinkBuf,
    quota: usize,
    budget_limited: bool,
    handler: &mut F,
    mut fill: impl FnMut(&mut LinkBuf) -> Fill,
) -> (usize, Option<Close>) {
    assert!(quota > 0);
    let counters = stats.peer(peer);
    let mut delivered = 0;
    let mut reads = 0;
    // Each iteration delivers a frame or reads; both are bounded.
    loop {
        match buf.next() {
            Next::Frame { at, len } => {
                if faults.is_blocked(peer) {
                    counters.fault_drops.fetch_add(1, Ordering::Relaxed);
                    return (delivered, Some(Close::Blocked));
                }
                counters.rx_frames.fetch_add(1, Ordering::Relaxed);
                counters.rx_bytes.fetch_add(len as u64, Ordering::Relaxed);
                handler(RxEvent::Frame {
                    peer,
                    epoch,
                    frame: &mut buf.buf[at..at + len],
                });
                buf.consume(at, len);
                delivered += 1;
                if delivered == quota {
                    if budget_limited {
                        counters.rx_budget_exhausted.fetch_add(1, Ordering::Relaxed);
                    }
                    return (delivered, None);
                }
            }
            Next::Oversize => {
                stats.oversize_frames.fetch_add(1, Ordering::Relaxed);
                return (delivered, Some(Close::Oversize));
            }
            Next::NeedMore => {
                if reads == READS_PER_TURN_MAX {
                    return (delivered, None);
                }
                reads += 1;
                match fill(buf) {
                    Fill::Got => {}
                    Fill::Empty => return (delivered, None),
                    Fill::Closed => return (delivered, Some(Close::Gone)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_in_place_and_refuses_oversize_before_use() {
        let mut b = LinkBuf::new(100);
        let tail = b.free_tail();
        tail[..4].copy_from_slice(&3u32.to_be_bytes());
        tail[4..7].copy_from_slice(b"abc");
        tail[7..11].copy_from_slice(&101u32.to_be_bytes());
        b.filled(11);
        assert_eq!(b.next(), Next::Frame { at: 4, len: 3 });
        assert_eq!(b.frames_waiting(), 1);
        b.consume(4, 3);
        assert_eq!(b.next(), Next::Oversize);
        let mut c = LinkBuf::new(100);
        c.free_tail()[..2].copy_from_slice(&[0, 0]);
        c.filled(2);
        assert_eq!(c.next(), Next::NeedMore);
    }

    #[test]
    fn compacts_a_partial_frame_to_the_front() {
        let mut b = LinkBuf::new(70_000);
        let size = b.buf.len();
        let tail = b.free_tail();
        tail[..4].copy_from_slice(&1u32.to_be_bytes());
        tail[4] = 9;
        tail[5..9].copy_from_slice(&60_000u32.to_be_bytes());
        b.filled(9 + 100);
        let Next::Frame { at, len } = b.next() else {
            panic!()
        };
        b.consume(at, len);
        assert_eq!(b.next(), Next::NeedMore);
        assert_eq!(b.free_tail().len(), size - 104);
        assert_eq!(b.start, 0);
    }
}
