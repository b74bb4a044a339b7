//! Receive side on epoll: level-triggered readiness, then one `recv(2)` per
//! link that needs bytes, straight into the link's buffer.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use wire::ReplicaId;

use super::rxbuf::{serve_link, Close, Fill, LinkBuf};
use super::{NewInbound, RxCore};
use crate::sys::{recv_nonblocking, EventFd};
use crate::{timeout_ms, RxEvent};

/// The epoll token of the wake eventfd (peers use their index).
const WAKE_TOKEN: u64 = u64::MAX;

struct Link {
    stream: TcpStream,
    epoch: u64,
    buf: LinkBuf,
    /// epoll said readable and no read has returned short since.
    readable: bool,
    /// Must close; its LinkDown did not fit in the last poll.
    closing: bool,
}

/// The epoll receive side (see [`super::TcpRx`]).
pub struct EpollRx {
    pub(crate) core: RxCore,
    epoll: OwnedFd,
    wake: Arc<EventFd>,
    /// Indexed by replica id.
    links: Vec<Option<Link>>,
    /// epoll_wait's output, one slot per peer plus the wake fd.
    events: Vec<libc::epoll_event>,
}

impl EpollRx {
    pub(crate) fn new(core: RxCore, wake: Arc<EventFd>) -> io::Result<Self> {
        // SAFETY: plain syscall; the fd is checked and then owned.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let n = core.n;
        let rx = Self {
            core,
            epoll,
            wake,
            links: (0..n).map(|_| None).collect(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; n + 1],
        };
        rx.ctl(libc::EPOLL_CTL_ADD, rx.wake.raw(), WAKE_TOKEN)?;
        Ok(rx)
    }

    fn ctl(&self, op: i32, fd: i32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: token,
        };
        // SAFETY: epoll_ctl reads one event struct we own.
        let r = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
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
        let ready = self
            .links
            .iter()
            .flatten()
            .any(|l| l.readable || l.closing || l.buf.has_frame());
        let wait = if ready || handled > 0 {
            Duration::ZERO
        } else {
            timeout
        };
        if self.wait(wait) {
            handled += self.admit(max_events - handled, handler);
        }
        if handled < max_events {
            handled += self.serve(max_events - handled, per_peer_budget, handler);
        }
        assert!(handled <= max_events);
        handled
    }

    /// One epoll_wait; marks links readable. True if the wake fd fired.
    fn wait(&mut self, timeout: Duration) -> bool {
        // SAFETY: the kernel writes at most `events.len()` entries into our
        // vector.
        let got = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                timeout_ms(timeout),
            )
        };
        let mut woke = false;
        // got < 0: EINTR (or a bug): nothing ready this time.
        for ev in &self.events[..got.max(0) as usize] {
            let token = ev.u64;
            if token == WAKE_TOKEN {
                self.wake.drain();
                woke = true;
            } else if let Some(Some(link)) = self.links.get_mut(token as usize) {
                link.readable = true;
            }
        }
        woke
    }

    /// Applies the connector's new links, the fault switch and pending
    /// closes; returns the events handled (at most `room`).
    fn admit<F: FnMut(RxEvent<'_>)>(&mut self, room: usize, handler: &mut F) -> usize {
        let mut handled = 0;
        let generation = self.core.faults.generation();
        if generation != self.core.generation_seen {
            self.core.generation_seen = generation;
            for i in 0..self.links.len() {
                let peer = ReplicaId(i as u16);
                if let Some(l) = &mut self.links[i] {
                    l.closing |= self.core.faults.is_blocked(peer);
                }
            }
        }
        for i in 0..self.links.len() {
            if handled < room && self.links[i].as_ref().is_some_and(|l| l.closing) {
                self.close(ReplicaId(i as u16), handler);
                handled += 1;
            }
        }
        // At most n links per poll: each one is a handshake of a peer.
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
        if let Err(e) = self.ctl(libc::EPOLL_CTL_ADD, stream.as_raw_fd(), peer.index() as u64) {
            tracing::warn!(%peer, "epoll cannot watch a new link: {e}");
            return handled; // dropping `stream` closes it; the peer redials
        }
        self.links[peer.index()] = Some(Link {
            stream,
            epoch,
            buf: LinkBuf::new(self.core.frame_bytes_max),
            readable: true,
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
        let _ = self.ctl(libc::EPOLL_CTL_DEL, link.stream.as_raw_fd(), 0);
        drop(link.stream);
        handler(RxEvent::LinkDown {
            peer,
            epoch: link.epoch,
        });
    }

    /// One round-robin pass over the links.
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
            let fd = link.stream.as_raw_fd();
            let readable = &mut link.readable;
            let (delivered, close) = serve_link(
                &self.core.stats,
                &self.core.faults,
                ReplicaId(i as u16),
                link.epoch,
                &mut link.buf,
                quota,
                quota == per_peer_budget,
                handler,
                |buf| {
                    if !*readable {
                        return Fill::Empty;
                    }
                    let tail = buf.free_tail();
                    let want = tail.len();
                    match recv_nonblocking(fd, tail) {
                        Ok(0) => Fill::Closed,
                        Ok(got) => {
                            buf.filled(got);
                            // A short read drained the socket; epoll
                            // reports it again when more arrives.
                            *readable = got == want;
                            Fill::Got
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            *readable = false;
                            Fill::Empty
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => Fill::Got,
                        Err(_) => Fill::Closed,
                    }
                },
            );
            handled += delivered;
            if delivered > 0 {
                served_last = Some(i);
            }
            if let Some(why) = close {
                link.closing = true;
                if why == Close::Gone {
                    link.readable = false;
                }
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
