//! `nic`: replica-to-replica transports behind two traits.
//!
//! The transport has no threads on the message path. The caller's threads do
//! every socket read and write:
//! - [`RxPath::poll`] runs on the dataplane thread: it reads the inbound
//!   links itself and hands each frame to a callback **still sealed**,
//!   borrowed from the link's pre-allocated read buffer (no copy, no
//!   allocation). The dataplane opens it with the [`OpenKey`] it got in the
//!   link's [`RxEvent::LinkUp`].
//! - [`TxPath`] is owned by one thread (the control thread): `send` seals a
//!   message straight into the link's pre-allocated write buffer, `flush`
//!   writes every link's pending bytes (one `send(2)` per link, or one
//!   io_uring submit for all links).
//!
//! Sealing happens at `send` time and only when the frame fits, so a sealed
//! frame is never dropped on purpose (that would desynchronise the link
//! sequence); frames lost with a dead socket are counted (`tx_lost`).
//!
//! Implementations:
//! - [`TcpNic`]: one TCP connection per *ordered* pair of replicas (i dials j
//!   to carry i→j traffic only), RX on epoll ([`Io::Epoll`]) or io_uring
//!   ([`Io::Uring`]); a connector thread does set-up only (accept, dial,
//!   handshake, redial with bounded backoff).
//! - [`MemNetwork`]: in-memory, same handshake and frames, for tests.
//! - `dpdk::DpdkNic` (feature `dpdk`): the same links, handshake and frames
//!   over a userspace TCP/IP stack (smoltcp) on one DPDK port, driven by
//!   the dataplane thread's poll.
//!
//! Events of one peer arrive in order and form
//! `(LinkUp(e) Frame(e)* LinkDown(e))*` with increasing epochs `e`.

#[cfg(feature = "dpdk")]
pub mod dpdk;
mod fault;
mod mem;
mod stats;
mod sys;
mod tcp;

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
pub use wire::link::OpenKey;
use wire::ReplicaId;

pub use fault::FaultSwitch;
pub use mem::{MemConfig, MemNetwork, MemNode, MemRx, MemTx};
pub use stats::{
    Metric, NicStats, NicStatsSnapshot, PeerStatsSnapshot, HANDSHAKE_FAILURE_LABELS, RX_JUNK_LABELS,
};
pub use tcp::{Connector, Io, TcpConfig, TcpNic, TcpRx, TcpTx};

/// What a transport delivers, per peer in order.
pub enum RxEvent<'a> {
    /// A connection from `peer` completed its handshake. `open` opens the
    /// frames of this `epoch` (sequence 0 first). Epochs are unique per
    /// transport and increase. (Boxed: the key schedule is large and this
    /// event is rare: set-up path.)
    LinkUp {
        peer: ReplicaId,
        epoch: u64,
        open: Box<OpenKey>,
    },
    /// One sealed frame (`header || ciphertext || tag`, at most
    /// `message_bytes_max + wire::link::FRAME_OVERHEAD` bytes) from `peer` on
    /// the connection of `epoch`, borrowed from the link's read buffer until
    /// the callback returns (open it in place). Not yet authenticated: open
    /// it with that epoch's [`OpenKey`] and drop it if the epoch is not the
    /// current one.
    Frame {
        peer: ReplicaId,
        epoch: u64,
        frame: &'a mut [u8],
    },
    /// The connection of `epoch` from `peer` is gone; no more frames of it.
    LinkDown { peer: ReplicaId, epoch: u64 },
}

impl RxEvent<'_> {
    /// The replica this event is about.
    pub fn peer(&self) -> ReplicaId {
        match self {
            RxEvent::LinkUp { peer, .. }
            | RxEvent::Frame { peer, .. }
            | RxEvent::LinkDown { peer, .. } => *peer,
        }
    }
    /// The connection epoch this event belongs to.
    pub fn epoch(&self) -> u64 {
        match self {
            RxEvent::LinkUp { epoch, .. }
            | RxEvent::Frame { epoch, .. }
            | RxEvent::LinkDown { epoch, .. } => *epoch,
        }
    }
}

impl std::fmt::Debug for RxEvent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RxEvent::LinkUp { peer, epoch, .. } => write!(f, "LinkUp({peer:?}, e{epoch})"),
            RxEvent::Frame { peer, epoch, frame } => {
                write!(f, "Frame({peer:?}, e{epoch}, {} bytes)", frame.len())
            }
            RxEvent::LinkDown { peer, epoch } => write!(f, "LinkDown({peer:?}, e{epoch})"),
        }
    }
}

/// Why [`TxPath::send`] dropped a message. Nothing was sealed or sent;
/// `QueueFull` and `Blocked` have counters in [`NicStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TxError {
    #[error("transmit buffer to replica {0} is full")]
    QueueFull(ReplicaId),
    #[error("replica {0} is not a configured peer")]
    UnknownPeer(ReplicaId),
    #[error("a replica does not send to itself")]
    ToSelf,
    #[error("message of {len} bytes is above the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("replica {0} is blocked by the fault switch")]
    Blocked(ReplicaId),
    #[error("transport is shut down")]
    Closed,
}

/// Wakes a thread blocked in its transport's [`RxPath::poll`]: the poll
/// returns (possibly with no event) soon after [`RxWaker::wake`]. Cheap
/// (one eventfd write) and never blocks; a wake before the poll is not
/// lost.
#[derive(Clone)]
pub struct RxWaker(WakeHow);

#[derive(Clone)]
enum WakeHow {
    Fd(Arc<crate::sys::EventFd>),
    Chan(crossbeam_channel::Sender<()>),
    #[cfg(feature = "dpdk")]
    Flag(Arc<dpdk::WakeFlag>),
}

impl RxWaker {
    pub fn wake(&self) {
        match &self.0 {
            WakeHow::Fd(fd) => fd.notify(),
            WakeHow::Chan(tx) => {
                let _ = tx.try_send(()); // a pending wake is as good as two
            }
            #[cfg(feature = "dpdk")]
            WakeHow::Flag(flag) => flag.wake(),
        }
    }
    pub(crate) fn fd(fd: Arc<crate::sys::EventFd>) -> Self {
        RxWaker(WakeHow::Fd(fd))
    }
    pub(crate) fn chan(tx: crossbeam_channel::Sender<()>) -> Self {
        RxWaker(WakeHow::Chan(tx))
    }
    #[cfg(feature = "dpdk")]
    pub(crate) fn flag(flag: Arc<dpdk::WakeFlag>) -> Self {
        RxWaker(WakeHow::Flag(flag))
    }
}

/// The receiving side of a transport, owned by the dataplane thread. A
/// kernel-bypass (DPDK) port implements this and [`TxPath`].
pub trait RxPath: Send + 'static {
    /// This replica.
    fn me(&self) -> ReplicaId;

    /// Reads what arrived and calls `handler` once per event, at most
    /// `max_events` times and at most `per_peer_budget` frames per peer,
    /// serving peers round-robin starting after the peer served last. A
    /// peer that used up its budget keeps its unread bytes in its socket
    /// (TCP pushes back on the sender); nothing sealed is dropped. Blocks up
    /// to `timeout` only when nothing is ready. Returns the number of events
    /// handled. Panics if `max_events` or `per_peer_budget` is 0.
    ///
    /// No allocation and no lock on the frame path.
    fn poll<F: FnMut(RxEvent<'_>)>(
        &mut self,
        max_events: usize,
        per_peer_budget: usize,
        timeout: Duration,
        handler: &mut F,
    ) -> usize;

    /// A handle that makes a blocked [`RxPath::poll`] return early (for a
    /// thread that waits on the transport and on other inputs at once).
    fn waker(&self) -> RxWaker;

    /// Resets the link of `epoch` from `peer` because one of its frames did
    /// not open (bad tag, or any other [`OpenKey::open`] error: the key does
    /// not advance past a bad frame, so no later frame of the link can open
    /// either). The connection is closed; the next poll delivers its
    /// `LinkDown` (frames still buffered are dropped, counted in `rx_lost`)
    /// and the peer redials and handshakes afresh. Counted in
    /// `bad_frame_resets`. Returns false, changing nothing, if `epoch` is
    /// not `peer`'s current link (already gone or replaced) or `peer` is
    /// outside the cluster. Call it outside `poll` (after it returns).
    fn reset_link(&mut self, peer: ReplicaId, epoch: u64) -> bool;

    /// Counters of this transport (shared with its [`TxPath`] and the
    /// metrics exporter).
    fn stats(&self) -> &Arc<NicStats>;

    /// The fault switch shared by both sides of this transport.
    fn faults(&self) -> &FaultSwitch;

    /// See [`FaultSwitch::set_blocked`].
    fn set_blocked(&self, peers: &[ReplicaId]) {
        self.faults().set_blocked(peers)
    }
}

/// The sending side of a transport, owned by one thread (not `Sync`).
pub trait TxPath: Send + 'static {
    /// This replica.
    fn me(&self) -> ReplicaId;

    /// Replicas in the cluster; peers are `0..n` except [`TxPath::me`].
    fn n(&self) -> usize;

    /// Seals `message` (an encoded message, at most `message_bytes_max`
    /// bytes) into `peer`'s write buffer; [`TxPath::flush`] writes it. Never
    /// blocks, never allocates. While the link is down the message waits
    /// unsealed in a bounded queue and is sealed on the next link. Errors
    /// when the message is dropped: buffer full, unknown peer, self, too
    /// large, blocked.
    fn send(&mut self, peer: ReplicaId, message: &[u8]) -> Result<(), TxError>;

    /// [`TxPath::send`] to every peer; returns how many peers took it.
    fn send_all(&mut self, message: &[u8]) -> usize {
        let me = self.me();
        let mut queued = 0;
        for peer in (0..self.n() as u16).map(ReplicaId).filter(|p| *p != me) {
            if self.send(peer, message).is_ok() {
                queued += 1;
            }
        }
        queued
    }

    /// Writes every link's pending bytes without blocking; what the socket
    /// does not take stays for the next flush. Call it after each round of
    /// sends and on every tick.
    fn flush(&mut self);

    /// Counters of this transport.
    fn stats(&self) -> &Arc<NicStats>;

    /// The fault switch shared by both sides of this transport.
    fn faults(&self) -> &FaultSwitch;

    /// See [`FaultSwitch::set_blocked`].
    fn set_blocked(&self, peers: &[ReplicaId]) {
        self.faults().set_blocked(peers)
    }
}

/// Rounds `timeout` up to whole milliseconds for `epoll_wait`/`poll`
/// (`i32::MAX` at most).
pub(crate) fn timeout_ms(timeout: Duration) -> i32 {
    let ms = timeout.as_nanos().div_ceil(1_000_000);
    ms.min(i32::MAX as u128) as i32
}
