//! The send side: per-link write buffers owned by one thread.
//!
//! `send` seals straight into the link's pre-allocated write buffer (no
//! queue, no copy of the plaintext, no allocation); `flush` writes each
//! link's pending bytes with one non-blocking `send(2)` ([`Io::Epoll`]) or
//! one io_uring send per link, all submitted together ([`Io::Uring`]).
//! While a link is down, messages wait unsealed in a bounded queue and are
//! sealed on the next link; sealed bytes of a dead link are counted lost.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use wire::link::{SealKey, FRAME_OVERHEAD};
use wire::ReplicaId;

use super::uring::UringTx;
use super::{ConnectorCmd, Io, TcpConfig, TxLinkEvent, LEN_PREFIX};
use crate::fault::FaultSwitch;
use crate::stats::{NicStats, PeerCounters};
use crate::sys::{self, send_nonblocking, EventFd};
use crate::{TxError, TxPath};

/// Sealed frames (`u32 length || frame`, whole frames only) waiting to be
/// written: `buf[head..]`. Its capacity is fixed at creation and never
/// grows, so the bytes of a send in flight never move.
pub(crate) struct OutBuf {
    buf: Vec<u8>,
    /// First byte not yet written.
    head: usize,
    /// Start of the first frame not yet written whole (`<= head`).
    frame_start: usize,
}

impl OutBuf {
    /// A buffer of `bytes_max` bytes (set-up path: allocates).
    pub(crate) fn new(bytes_max: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes_max),
            head: 0,
            frame_start: 0,
        }
    }

    /// Bytes waiting to be written.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.head..]
    }

    fn is_empty(&self) -> bool {
        self.head == self.buf.len()
    }

    /// True if a frame of a `message_len`-byte message fits; moves the
    /// unwritten bytes to the front first if needed and `may_compact` (no
    /// send in flight).
    fn fits(&mut self, message_len: usize, may_compact: bool) -> bool {
        let need = LEN_PREFIX + message_len + FRAME_OVERHEAD;
        if self.buf.len() + need <= self.buf.capacity() {
            return true;
        }
        if may_compact && self.frame_start > 0 {
            self.buf.copy_within(self.frame_start.., 0);
            self.buf.truncate(self.buf.len() - self.frame_start);
            self.head -= self.frame_start;
            self.frame_start = 0;
        }
        self.buf.len() + need <= self.buf.capacity()
    }

    /// Appends `message` sealed with `key`. The caller checked [`fits`].
    fn seal(&mut self, key: &mut SealKey, message: &[u8]) {
        let (capacity, ptr) = (self.buf.capacity(), self.buf.as_ptr());
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; LEN_PREFIX]);
        key.seal(message, &mut self.buf);
        let frame_len = self.buf.len() - at - LEN_PREFIX;
        assert_eq!(frame_len, message.len() + FRAME_OVERHEAD);
        self.buf[at..at + LEN_PREFIX].copy_from_slice(&(frame_len as u32).to_be_bytes());
        assert!(
            self.buf.capacity() == capacity && self.buf.as_ptr() == ptr,
            "a write buffer never reallocates"
        );
    }

    /// Records `n` bytes written; counts the frames now written whole.
    fn advance(&mut self, n: usize, counters: &PeerCounters) {
        self.head += n;
        assert!(self.head <= self.buf.len(), "wrote past the pending bytes");
        // Each iteration retires one whole frame of the bounded buffer.
        while self.buf.len() - self.frame_start >= LEN_PREFIX {
            let len = self.frame_len_at(self.frame_start);
            let end = self.frame_start + LEN_PREFIX + len;
            if end > self.head {
                break;
            }
            counters.tx_frames.fetch_add(1, Ordering::Relaxed);
            counters.tx_bytes.fetch_add(len as u64, Ordering::Relaxed);
            self.frame_start = end;
        }
        if self.is_empty() {
            assert_eq!(self.frame_start, self.head);
            self.buf.clear();
            self.head = 0;
            self.frame_start = 0;
        }
    }

    fn frame_len_at(&self, at: usize) -> usize {
        let prefix: [u8; LEN_PREFIX] = self.buf[at..at + LEN_PREFIX].try_into().expect("4");
        u32::from_be_bytes(prefix) as usize
    }

    /// Frames not yet written whole.
    fn frames_unwritten(&self) -> u64 {
        let mut at = self.frame_start;
        let mut count = 0;
        // Each iteration steps over one whole frame.
        while at < self.buf.len() {
            at += LEN_PREFIX + self.frame_len_at(at);
            count += 1;
        }
        assert_eq!(at, self.buf.len(), "the buffer holds whole frames");
        count
    }

    /// Drops everything unwritten, counting it lost.
    fn lose(&mut self, counters: &PeerCounters) {
        counters
            .tx_lost
            .fetch_add(self.frames_unwritten(), Ordering::Relaxed);
        self.buf.clear();
        self.head = 0;
        self.frame_start = 0;
    }
}

/// Messages waiting unsealed for a link (`u32 length || message`), bounded
/// in bytes and messages.
pub(crate) struct PlainQueue {
    buf: Vec<u8>,
    head: usize,
    messages: usize,
    messages_max: usize,
}

impl PlainQueue {
    pub(crate) fn new(bytes_max: usize, messages_max: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes_max),
            head: 0,
            messages: 0,
            messages_max,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// Appends `message`; false if full.
    pub(crate) fn push(&mut self, message: &[u8]) -> bool {
        let need = LEN_PREFIX + message.len();
        if self.messages == self.messages_max {
            return false;
        }
        if self.buf.len() + need > self.buf.capacity() && self.head > 0 {
            self.buf.copy_within(self.head.., 0);
            self.buf.truncate(self.buf.len() - self.head);
            self.head = 0;
        }
        if self.buf.len() + need > self.buf.capacity() {
            return false;
        }
        let capacity = self.buf.capacity();
        self.buf
            .extend_from_slice(&(message.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(message);
        assert_eq!(self.buf.capacity(), capacity, "the queue never reallocates");
        self.messages += 1;
        true
    }

    pub(crate) fn front(&self) -> Option<&[u8]> {
        if self.messages == 0 {
            return None;
        }
        let prefix: [u8; LEN_PREFIX] = self.buf[self.head..self.head + LEN_PREFIX]
            .try_into()
            .expect("4");
        let len = u32::from_be_bytes(prefix) as usize;
        Some(&self.buf[self.head + LEN_PREFIX..self.head + LEN_PREFIX + len])
    }

    pub(crate) fn pop(&mut self) {
        let len = self.front().expect("pop of an empty queue").len();
        self.head += LEN_PREFIX + len;
        self.messages -= 1;
        if self.messages == 0 {
            assert_eq!(self.head, self.buf.len());
            self.buf.clear();
            self.head = 0;
        }
    }
}

/// The current connection of an outbound link.
struct Conn {
    stream: TcpStream,
    seal: Box<SealKey>,
    epoch: u64,
    /// An io_uring send of `out`'s pending bytes is in flight.
    in_flight: bool,
}

struct TxLink {
    peer: ReplicaId,
    conn: Option<Conn>,
    out: OutBuf,
    plain: PlainQueue,
}

impl TxLink {
    /// Seals queued messages into the write buffer while they fit.
    fn seal_queued(&mut self) {
        let Some(conn) = &mut self.conn else { return };
        // Each iteration seals one queued message (bounded by the queue).
        while let Some(message) = self.plain.front() {
            if !self.out.fits(message.len(), !conn.in_flight) {
                return;
            }
            self.out.seal(&mut conn.seal, message);
            self.plain.pop();
        }
    }
}

/// The send side of a [`super::TcpNic`]: owned by one thread (the control
/// thread); see [`TxPath`].
pub struct TcpTx {
    me: ReplicaId,
    n: usize,
    /// Indexed by replica id; `None` for this replica and peers without an
    /// address.
    links: Vec<Option<TxLink>>,
    events: Receiver<TxLinkEvent>,
    commands: Sender<ConnectorCmd>,
    connector_wake: Arc<EventFd>,
    message_bytes_max: usize,
    tx_buffer_bytes_max: usize,
    stats: Arc<NicStats>,
    faults: FaultSwitch,
    uring: Option<UringTx>,
    /// Scratch of `reap_sends`: links whose send failed (capacity n).
    failed: Vec<ReplicaId>,
}

fn data(epoch: u64, peer: ReplicaId) -> u64 {
    assert!(epoch < 1 << 47, "epoch space");
    (epoch << 16) | peer.0 as u64
}

impl TcpTx {
    pub(crate) fn new(
        config: &TcpConfig,
        io: Io,
        stats: Arc<NicStats>,
        faults: FaultSwitch,
        events: Receiver<TxLinkEvent>,
        commands: Sender<ConnectorCmd>,
        connector_wake: Arc<EventFd>,
    ) -> io::Result<Self> {
        let n = config.keyring.n();
        let mut links: Vec<Option<TxLink>> = (0..n).map(|_| None).collect();
        for &(peer, _) in &config.peers {
            links[peer.index()] = Some(TxLink {
                peer,
                conn: None,
                out: OutBuf::new(config.tx_buffer_bytes_max),
                plain: PlainQueue::new(config.tx_buffer_bytes_max, config.tx_queue_messages_max),
            });
        }
        let uring = match io {
            Io::Uring => Some(UringTx::new(n)?),
            Io::Epoll => None,
        };
        Ok(Self {
            me: config.me,
            n,
            links,
            events,
            commands,
            connector_wake,
            message_bytes_max: config.message_bytes_max,
            tx_buffer_bytes_max: config.tx_buffer_bytes_max,
            stats,
            faults,
            uring,
            failed: Vec::with_capacity(n),
        })
    }

    /// Applies new and dead links from the connector (no lock: try_recv).
    fn take_link_events(&mut self) {
        // Bounded: the channel holds at most 4n events.
        while let Ok(event) = self.events.try_recv() {
            match event {
                TxLinkEvent::Up {
                    peer,
                    epoch,
                    stream,
                    seal,
                } => {
                    self.drop_conn(peer, false);
                    let link = self.links[peer.index()]
                        .as_mut()
                        .expect("connector dials configured peers only");
                    link.conn = Some(Conn {
                        stream,
                        seal,
                        epoch,
                        in_flight: false,
                    });
                    link.seal_queued();
                }
                TxLinkEvent::Down { peer, epoch } => {
                    let current = self.links[peer.index()]
                        .as_ref()
                        .and_then(|l| l.conn.as_ref())
                        .map(|c| c.epoch);
                    if current == Some(epoch) {
                        self.drop_conn(peer, false);
                    }
                }
            }
        }
    }

    /// Closes `peer`'s connection (if any), counting unwritten frames lost;
    /// asks the connector to redial if `redial`.
    fn drop_conn(&mut self, peer: ReplicaId, redial: bool) {
        let link = self.links[peer.index()].as_mut().expect("configured peer");
        let Some(conn) = link.conn.take() else { return };
        let counters = self.stats.peer(peer);
        if conn.in_flight {
            // The kernel still reads the buffer: park it until the send
            // completes (shutdown makes that prompt) and start a new one.
            sys::shutdown(conn.stream.as_raw_fd());
            counters
                .tx_lost
                .fetch_add(link.out.frames_unwritten(), Ordering::Relaxed);
            let old = std::mem::replace(&mut link.out, OutBuf::new(self.tx_buffer_bytes_max));
            self.uring
                .as_mut()
                .expect("sends in flight only with io_uring")
                .park(data(conn.epoch, peer), old);
        } else {
            link.out.lose(counters);
        }
        if redial {
            let _ = self.commands.try_send(ConnectorCmd::Redial {
                peer,
                epoch: conn.epoch,
            });
            self.connector_wake.notify();
        }
    }

    /// Applies the completions of io_uring sends.
    fn reap_sends(&mut self) {
        let Some(uring) = &mut self.uring else { return };
        let links = &mut self.links;
        let stats = &self.stats;
        let failed = &mut self.failed;
        failed.clear();
        uring.reap(|d, res| {
            let peer = ReplicaId((d & 0xffff) as u16);
            let link = links[peer.index()].as_mut().expect("configured peer");
            let conn = link
                .conn
                .as_mut()
                .filter(|c| data(c.epoch, peer) == d)
                .expect("a send completion belongs to a live or parked link");
            assert!(conn.in_flight);
            conn.in_flight = false;
            if res >= 0 {
                link.out.advance(res as usize, stats.peer(peer));
            } else if res != -libc::EINTR && res != -libc::EAGAIN {
                assert!(failed.len() < failed.capacity(), "one send per link");
                failed.push(peer);
            }
        });
        for k in 0..self.failed.len() {
            let peer = self.failed[k];
            self.drop_conn(peer, true);
        }
    }

    /// Writes pending bytes with one `send(2)` per link.
    fn write_plain(&mut self) {
        for i in 0..self.links.len() {
            let Some(link) = &mut self.links[i] else {
                continue;
            };
            let Some(conn) = &link.conn else { continue };
            if link.out.is_empty() {
                continue;
            }
            match send_nonblocking(conn.stream.as_raw_fd(), link.out.pending()) {
                Ok(written) => {
                    let counters = self.stats.peer(link.peer);
                    link.out.advance(written, counters);
                    link.seal_queued();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => {
                    let peer = link.peer;
                    self.drop_conn(peer, true);
                }
            }
        }
    }

    /// Queues one io_uring send per link with pending bytes and none in
    /// flight, and submits them all at once.
    fn write_uring(&mut self) {
        let uring = self.uring.as_mut().expect("io_uring send side");
        let mut queued = 0;
        for (i, slot) in self.links.iter_mut().enumerate() {
            let Some(link) = slot else { continue };
            let Some(conn) = &mut link.conn else { continue };
            if conn.in_flight || link.out.is_empty() {
                continue;
            }
            uring.push_send(
                &conn.stream,
                &link.out,
                data(conn.epoch, ReplicaId(i as u16)),
            );
            conn.in_flight = true;
            queued += 1;
        }
        if queued > 0 {
            uring.submit();
            self.reap_sends(); // sends that found room completed inline
            for link in self.links.iter_mut().flatten() {
                link.seal_queued();
            }
        }
    }
}

impl TxPath for TcpTx {
    fn me(&self) -> ReplicaId {
        self.me
    }

    fn n(&self) -> usize {
        self.n
    }

    fn send(&mut self, peer: ReplicaId, message: &[u8]) -> Result<(), TxError> {
        if peer == self.me {
            return Err(TxError::ToSelf);
        }
        if self.links.get(peer.index()).is_none_or(Option::is_none) {
            return Err(TxError::UnknownPeer(peer));
        }
        if message.len() > self.message_bytes_max {
            return Err(TxError::TooLarge {
                len: message.len(),
                max: self.message_bytes_max,
            });
        }
        if self.faults.is_blocked(peer) {
            let counters = self.stats.peer(peer);
            counters.fault_drops.fetch_add(1, Ordering::Relaxed);
            return Err(TxError::Blocked(peer));
        }
        self.take_link_events();
        let counters = self.stats.peer(peer);
        let link = self.links[peer.index()].as_mut().expect("checked above");
        link.seal_queued();
        if let Some(conn) = &mut link.conn {
            if link.plain.is_empty() && link.out.fits(message.len(), !conn.in_flight) {
                link.out.seal(&mut conn.seal, message);
                return Ok(());
            }
            if link.plain.is_empty() {
                // The link is up and its buffer full: the peer or the
                // network is slow. Shed here, before sealing.
                counters.tx_drops.fetch_add(1, Ordering::Relaxed);
                return Err(TxError::QueueFull(peer));
            }
        }
        // The link is down (or still re-sealing its queue): keep order.
        if link.plain.push(message) {
            Ok(())
        } else {
            counters.tx_drops.fetch_add(1, Ordering::Relaxed);
            Err(TxError::QueueFull(peer))
        }
    }

    fn flush(&mut self) {
        self.take_link_events();
        self.reap_sends();
        for link in self.links.iter_mut().flatten() {
            link.seal_queued();
        }
        if self.uring.is_some() {
            self.write_uring();
        } else {
            self.write_plain();
        }
    }

    fn stats(&self) -> &Arc<NicStats> {
        &self.stats
    }

    fn faults(&self) -> &FaultSwitch {
        &self.faults
    }
}

impl Drop for TcpTx {
    fn drop(&mut self) {
        let Some(uring) = &mut self.uring else { return };
        for link in self.links.iter().flatten() {
            if let Some(c) = &link.conn {
                if c.in_flight {
                    sys::shutdown(c.stream.as_raw_fd());
                }
            }
        }
        if !uring.drain(|_, _| {}) {
            // The kernel may still read these buffers: leak them.
            std::mem::forget(std::mem::take(&mut self.links));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_queue_is_bounded_and_fifo() {
        let mut q = PlainQueue::new(32, 3);
        assert!(q.push(b"abcdefgh"));
        assert!(q.push(b"ij"));
        assert!(!q.push(&[0; 20]), "bytes bound");
        assert!(q.push(b"k"));
        assert!(!q.push(b"l"), "messages bound");
        assert_eq!(q.front(), Some(&b"abcdefgh"[..]));
        q.pop();
        assert!(q.push(b"mnopqrst"), "compacts to make room");
        let mut got = Vec::new();
        while let Some(m) = q.front() {
            got.push(m.to_vec());
            q.pop();
        }
        assert_eq!(
            got,
            vec![b"ij".to_vec(), b"k".to_vec(), b"mnopqrst".to_vec()]
        );
    }
}
