//! The io_uring backend: a receive ring owned by the dataplane thread (one
//! recv in flight per link, into the link's buffer) and a send ring owned
//! by the control thread (one send in flight per link). Each poll and each
//! flush is one `io_uring_enter`: it submits every new operation, reaps what
//! completed, and (poll only, when nothing is ready) waits.
//!
//! Buffer ownership (as in monoio's lifecycle): a buffer with an operation
//! in flight is never moved, reused or freed. A link that closes with an
//! operation in flight has its socket shut down (which completes the
//! operation) and its buffer parked until the completion arrives; dropping
//! a ring side waits for every completion first.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{opcode, types, IoUring};
use wire::ReplicaId;

use super::rxbuf::{serve_link, Fill, LinkBuf};
use super::tx::OutBuf;
use super::{NewInbound, RxCore};
use crate::sys::{self, EventFd};
use crate::RxEvent;

/// user_data of the wake eventfd's read.
const WAKE_DATA: u64 = u64::MAX;
/// How long dropping a ring side waits for its operations, at most.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// user_data of a link's operation: its epoch and peer.
fn data(epoch: u64, peer: ReplicaId) -> u64 {
    assert!(epoch < 1 << 47, "epoch space");
    (epoch << 16) | peer.0 as u64
}

fn data_peer(d: u64) -> ReplicaId {
    ReplicaId((d & 0xffff) as u16)
}

fn data_epoch(d: u64) -> u64 {
    d >> 16
}

/// Checks that io_uring works here: setup, a NOP round trip, and the
/// extended enter arguments (timeouts) this backend relies on.
pub(crate) fn probe() -> io::Result<()> {
    let mut ring = IoUring::new(4)?;
    if !ring.params().is_feature_ext_arg() {
        return Err(io::Error::other("kernel lacks IORING_FEAT_EXT_ARG"));
    }
    let nop = opcode::Nop::new().build().user_data(7);
    // SAFETY: a NOP references no memory.
    unsafe { ring.submission().push(&nop) }.map_err(|_| io::Error::other("SQ full"))?;
    ring.submit_and_wait(1)?;
    let cqe = ring
        .completion()
        .next()
        .ok_or_else(|| io::Error::other("no completion"))?;
    if cqe.user_data() != 7 || cqe.result() < 0 {
        return Err(io::Error::other("NOP failed"));
    }
    Ok(())
}

/// A ring of `entries` entries that does not interrupt its thread to post
/// completions (`IORING_SETUP_COOP_TASKRUN`, Linux 5.19; without it, every
/// completion interrupts the owner, and its blocking calls with a timeout
/// fail with EINTR); plain on older kernels.
fn ring(entries: u32) -> io::Result<IoUring> {
    IoUring::builder()
        .setup_coop_taskrun()
        .build(entries)
        .or_else(|_| IoUring::new(entries))
}

/// Pushes `sqe`, submitting first if the submission queue is full.
/// # Safety
/// Whatever memory `sqe` references must stay valid until its completion.
unsafe fn push(ring: &mut IoUring, sqe: &io_uring::squeue::Entry) {
    // Each iteration submits or pushes; the ring holds at least one entry.
    for _ in 0..2 {
        if unsafe { ring.submission().push(sqe) }.is_ok() {
            return;
        }
        let _ = ring.submit();
    }
    panic!("io_uring submission queue stays full: ring sized too small");
}

struct Link {
    stream: TcpStream,
    epoch: u64,
    buf: LinkBuf,
    /// A recv into `buf`'s free tail is in flight.
    in_flight: bool,
    /// The last recv ended the stream (0 bytes or an error).
    gone: bool,
    /// Must close; its LinkDown did not fit in the last poll.
    closing: bool,
}

/// The io_uring receive side (see [`super::TcpRx`]).
pub struct UringRx {
    pub(crate) core: RxCore,
    ring: IoUring,
    wake: Arc<EventFd>,
    /// The wake eventfd's counter lands here (kernel-written while the read
    /// is in flight: boxed so it never moves).
    wake_buf: Box<[u8; 8]>,
    wake_in_flight: bool,
    /// The wake read completed; new links may wait in the channel.
    woke: bool,
    /// Indexed by replica id.
    links: Vec<Option<Link>>,
    /// Closed links whose recv is still in flight (bounded: see `park`).
    parked: Vec<Link>,
}

impl UringRx {
    pub(crate) fn new(core: RxCore, wake: Arc<EventFd>) -> io::Result<Self> {
        let n = core.n;
        // One recv per link, one per parked link, the wake read.
        let entries = (4 * n + 4).next_power_of_two() as u32;
        let ring = ring(entries)?;
        Ok(Self {
            core,
            ring,
            wake,
            wake_buf: Box::new([0; 8]),
            wake_in_flight: false,
            woke: false,
            links: (0..n).map(|_| None).collect(),
            parked: Vec::with_capacity(2 * n),
        })
    }

    pub(crate) fn wake_fd(&self) -> Arc<EventFd> {
        self.wake.clone()
    }

    /// See [`crate::RxPath::reset_link`]: marks the link closing; the next
    /// poll closes it and delivers its `LinkDown`.
    pub(crate) fn reset_link(&mut self, peer: ReplicaId, epoch: u64) -> bool {
        let Some(Some(link)) = self.links.get_mut(peer.index()) else {
            return false;
        };
        if link.epoch != epoch || link.closing {
            return false;
        }
        link.closing = true;
        self.core
            .stats
            .peer(peer)
            .bad_frame_resets
            .fetch_add(1, Ordering::Relaxed);
        true
    }

    /// See [`crate::RxPath::poll`].
    pub(crate) fn poll<F: FnMut(RxEvent<'_>)>(
        &mut self,
        max_events: usize,
        per_peer_budget: usize,
        timeout: Duration,
        handler: &mut F,
    ) -> usize {
        assert!(max_events > 0, "poll with max_events = 0");
        assert!(per_peer_budget > 0, "poll with per_peer_budget = 0");
        let mut handled = self.admit(max_events, handler);
        self.arm();
        let ready = handled > 0
            || self.woke
            || self
                .links
                .iter()
                .flatten()
                .any(|l| l.gone || l.closing || l.buf.has_frame());
        self.enter(if ready { Duration::ZERO } else { timeout });
        self.reap();
        if self.woke && handled < max_events {
            self.woke = false;
            handled += self.admit(max_events - handled, handler);
        }
        if handled < max_events {
            handled += self.serve(max_events - handled, per_peer_budget, handler);
        }
        // Re-arm now; the next poll's enter submits (data already there
        // completes inside that same enter).
        self.arm();
        assert!(handled <= max_events);
        handled
    }

    /// Queues a recv for every link that needs bytes and has none in
    /// flight, and the wake read.
    fn arm(&mut self) {
        if !self.wake_in_flight {
            let sqe = opcode::Read::new(types::Fd(self.wake.raw()), self.wake_buf.as_mut_ptr(), 8)
                .build()
                .user_data(WAKE_DATA);
            // SAFETY: `wake_buf` is boxed and lives until the read completes
            // (Drop waits for it).
            unsafe { push(&mut self.ring, &sqe) };
            self.wake_in_flight = true;
        }
        for (i, slot) in self.links.iter_mut().enumerate() {
            let Some(link) = slot else { continue };
            if link.in_flight || link.gone || link.closing || link.buf.has_frame() {
                continue;
            }
            let tail = link.buf.free_tail();
            let len = tail.len().min(u32::MAX as usize) as u32;
            let sqe = opcode::Recv::new(types::Fd(link.stream.as_raw_fd()), tail.as_mut_ptr(), len)
                .build()
                .user_data(data(link.epoch, ReplicaId(i as u16)));
            // SAFETY: the buffer is owned by the link, which is parked (not
            // freed) if it closes before the completion.
            unsafe { push(&mut self.ring, &sqe) };
            link.in_flight = true;
        }
    }

    /// One io_uring_enter: submits, and waits up to `timeout` for one
    /// completion unless `timeout` is zero.
    fn enter(&mut self, timeout: Duration) {
        let r = if timeout.is_zero() {
            self.ring.submit()
        } else {
            let ts = types::Timespec::new()
                .sec(timeout.as_secs())
                .nsec(timeout.subsec_nanos());
            let args = types::SubmitArgs::new().timespec(&ts);
            self.ring.submitter().submit_with_args(1, &args)
        };
        match r {
            Ok(_) => {}
            // ETIME: the wait timed out; EINTR: a signal; EBUSY: completions
            // to reap first. All fine: reap and carry on.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => panic!("io_uring_enter failed on the receive ring: {e}"),
        }
    }

    /// Applies completions to the links; notes a wake in `woke`.
    fn reap(&mut self) {
        // Bounded by the completion queue's size.
        for cqe in self.ring.completion() {
            let d = cqe.user_data();
            let res = cqe.result();
            if d == WAKE_DATA {
                self.wake_in_flight = false;
                self.woke = true;
                continue;
            }
            let (peer, epoch) = (data_peer(d), data_epoch(d));
            if let Some(i) = self.parked.iter().position(|l| l.epoch == epoch) {
                let link = self.parked.swap_remove(i);
                assert!(link.in_flight);
                continue; // dropping it frees the buffer and closes the fd
            }
            let link = self.links[peer.index()]
                .as_mut()
                .filter(|l| l.epoch == epoch)
                .expect("a completion belongs to a live or parked link");
            assert!(link.in_flight);
            link.in_flight = false;
            if res > 0 {
                link.buf.filled(res as usize);
            } else if res != -libc::EINTR && res != -libc::EAGAIN {
                link.gone = true; // 0: end of stream; < 0: socket error
            }
        }
    }

    /// Applies the connector's new links, the fault switch and pending
    /// closes; returns the events handled (at most `room`).
    fn admit<F: FnMut(RxEvent<'_>)>(&mut self, room: usize, handler: &mut F) -> usize {
        let mut handled = 0;
        let generation = self.core.faults.generation();
        if generation != self.core.generation_seen {
            self.core.generation_seen = generation;
            for i in 0..self.links.len() {
                let blocked = self.core.faults.is_blocked(ReplicaId(i as u16));
                if let Some(l) = &mut self.links[i] {
                    l.closing |= blocked;
                }
            }
        }
        for i in 0..self.links.len() {
            if handled < room && self.links[i].as_ref().is_some_and(|l| l.closing) {
                self.close(ReplicaId(i as u16), handler);
                handled += 1;
            }
        }
        for _ in 0..self.core.n {
            let links = &self.links;
            let Some(new) = self
                .core
                .next_inbound(room - handled, |p| links[p.index()].is_some())
            else {
                break;
            };
            handled += self.install(new, handler);
        }
        handled
    }

    fn install<F: FnMut(RxEvent<'_>)>(&mut self, new: NewInbound, handler: &mut F) -> usize {
        let NewInbound {
            peer,
            epoch,
            stream,
            open,
        } = new;
        assert!(peer.index() < self.links.len() && peer != self.core.me);
        let mut handled = 0;
        if self.links[peer.index()].is_some() {
            self.core
                .stats
                .connections_replaced
                .fetch_add(1, Ordering::Relaxed);
            self.close(peer, handler);
            handled += 1;
        }
        self.links[peer.index()] = Some(Link {
            stream,
            epoch,
            buf: LinkBuf::new(self.core.frame_bytes_max),
            in_flight: false,
            gone: false,
            closing: false,
        });
        handler(RxEvent::LinkUp { peer, epoch, open });
        handled + 1
    }

    fn close<F: FnMut(RxEvent<'_>)>(&mut self, peer: ReplicaId, handler: &mut F) {
        let link = self.links[peer.index()]
            .take()
            .expect("closing a live link");
        let lost = link.buf.frames_waiting();
        self.core
            .stats
            .peer(peer)
            .rx_lost
            .fetch_add(lost, Ordering::Relaxed);
        let epoch = link.epoch;
        self.park(link);
        handler(RxEvent::LinkDown { peer, epoch });
    }

    /// Closes a link's socket; keeps its buffer until its recv completes.
    fn park(&mut self, link: Link) {
        if !link.in_flight {
            return; // dropped: nothing references the buffer
        }
        sys::shutdown(link.stream.as_raw_fd()); // completes the recv
        self.parked.push(link);
        // A peer cannot reconnect faster than its recvs complete for long;
        // if it does, wait for them rather than grow the list.
        let bound = 2 * self.core.n;
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.parked.len() > bound {
            assert!(Instant::now() < deadline, "parked recvs do not complete");
            let _ = self.ring.submit_and_wait(1);
            self.reap();
        }
    }

    /// One round-robin pass over the links' buffers.
    fn serve<F: FnMut(RxEvent<'_>)>(
        &mut self,
        room: usize,
        per_peer_budget: usize,
        handler: &mut F,
    ) -> usize {
        let m = self.links.len();
        let mut handled = 0;
        let mut served_last = None;
        for k in 0..m {
            if handled == room {
                break;
            }
            let i = (self.core.cursor + k) % m;
            let Some(link) = &mut self.links[i] else {
                continue;
            };
            if link.closing {
                continue;
            }
            let quota = per_peer_budget.min(room - handled);
            let gone = link.gone;
            let (delivered, close) = serve_link(
                &self.core.stats,
                &self.core.faults,
                ReplicaId(i as u16),
                link.epoch,
                &mut link.buf,
                quota,
                quota == per_peer_budget,
                handler,
                // Bytes come from completions; whatever is buffered is all.
                |_| if gone { Fill::Closed } else { Fill::Empty },
            );
            handled += delivered;
            if delivered > 0 {
                served_last = Some(i);
            }
            if close.is_some() {
                link.closing = true;
                if handled < room {
                    self.close(ReplicaId(i as u16), handler);
                    handled += 1;
                }
            }
        }
        if let Some(i) = served_last {
            self.core.cursor = (i + 1) % m;
        }
        handled
    }
}

impl Drop for UringRx {
    fn drop(&mut self) {
        for link in self.links.iter().flatten() {
            sys::shutdown(link.stream.as_raw_fd());
        }
        for link in &self.parked {
            sys::shutdown(link.stream.as_raw_fd());
        }
        self.wake.notify();
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        // Each iteration waits for at least one of a bounded set of
        // completions, or gives up at the deadline.
        loop {
            let busy = self.wake_in_flight
                || !self.parked.is_empty()
                || self.links.iter().flatten().any(|l| l.in_flight);
            if !busy {
                return;
            }
            if Instant::now() >= deadline {
                // The kernel may still write into these buffers: leak them
                // rather than free memory under it.
                tracing::error!("io_uring receive ring did not drain; leaking its buffers");
                std::mem::forget(std::mem::take(&mut self.links));
                std::mem::forget(std::mem::take(&mut self.parked));
                std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new([0; 8])));
                return;
            }
            let ts = types::Timespec::new().nsec(10_000_000);
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            self.reap();
        }
    }
}

/// The send ring of [`super::TcpTx`].
pub(crate) struct UringTx {
    ring: IoUring,
    /// Buffers of dead links whose send is still in flight, by user_data.
    parked: Vec<(u64, OutBuf)>,
    parked_max: usize,
    /// Sends in flight on live links.
    in_flight: usize,
}

impl UringTx {
    pub(crate) fn new(n: usize) -> io::Result<Self> {
        let entries = (4 * n + 4).next_power_of_two() as u32;
        Ok(Self {
            ring: ring(entries)?,
            parked: Vec::with_capacity(2 * n),
            parked_max: 2 * n,
            in_flight: 0,
        })
    }

    /// Queues a send of `out`'s pending bytes on `stream`.
    pub(crate) fn push_send(&mut self, stream: &TcpStream, out: &OutBuf, user_data: u64) {
        let pending = out.pending();
        assert!(!pending.is_empty());
        let len = pending.len().min(u32::MAX as usize) as u32;
        let sqe = opcode::Send::new(types::Fd(stream.as_raw_fd()), pending.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data);
        // SAFETY: `out` is neither moved, compacted nor freed while the send
        // is in flight: the link keeps it, or `park` does.
        unsafe { push(&mut self.ring, &sqe) };
        self.in_flight += 1;
    }

    /// Submits every queued send (one io_uring_enter; sends with room in
    /// their socket complete inside it).
    pub(crate) fn submit(&mut self) {
        match self.ring.submit() {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
            Err(e) => panic!("io_uring_enter failed on the send ring: {e}"),
        }
    }

    /// Calls `done(user_data, result)` for each completed send of a live
    /// link; completions of parked buffers free them.
    pub(crate) fn reap(&mut self, mut done: impl FnMut(u64, i32)) {
        // Bounded by the completion queue's size.
        for cqe in self.ring.completion() {
            let d = cqe.user_data();
            if let Some(i) = self.parked.iter().position(|(p, _)| *p == d) {
                self.parked.swap_remove(i);
                continue;
            }
            assert!(self.in_flight > 0);
            self.in_flight -= 1;
            done(d, cqe.result());
        }
    }

    /// A link died with a send in flight (`user_data`): its socket is shut
    /// down; keeps `out` until the send completes.
    pub(crate) fn park(&mut self, user_data: u64, out: OutBuf) {
        assert!(self.in_flight > 0);
        self.in_flight -= 1;
        self.parked.push((user_data, out));
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        // Each iteration waits for a completion of a bounded set.
        while self.parked.len() > self.parked_max {
            assert!(Instant::now() < deadline, "parked sends do not complete");
            let _ = self.ring.submit_and_wait(1);
            self.reap(|_, _| {});
        }
    }

    /// Waits for every send in flight (dropping the send side).
    pub(crate) fn drain(&mut self, mut done: impl FnMut(u64, i32)) -> bool {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.in_flight > 0 || !self.parked.is_empty() {
            if Instant::now() >= deadline {
                tracing::error!("io_uring send ring did not drain; leaking its buffers");
                std::mem::forget(std::mem::take(&mut self.parked));
                return false;
            }
            let ts = types::Timespec::new().nsec(10_000_000);
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            self.reap(&mut done);
        }
        true
    }
}
