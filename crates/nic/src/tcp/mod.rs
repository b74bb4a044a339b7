//! TCP transport: one connection per ordered pair of replicas, no threads on
//! the message path.
//!
//! Replica i dials j to carry i→j traffic only; j accepts and only reads.
//! On a connection: the dialer's HELLO ([`DIAL_HELLO_LEN`] bytes), the
//! acceptor's HELLO ([`wire::link::ACCEPT_HELLO_LEN`] bytes), then frames as
//! `u32 big-endian length || frame`.
//!
//! Who does what:
//! - [`TcpRx`] (the dataplane thread): owns every inbound socket, reads and
//!   parses frames in place in a per-link buffer of one maximal frame
//!   ([`epoll`] or [`uring`]).
//! - [`TcpTx`] (the control thread): owns every outbound socket, seals into
//!   per-link write buffers and writes them on `flush`.
//! - [`Connector`] (its own thread, set-up path only): accepts and
//!   handshakes inbound connections, dials and handshakes outbound ones,
//!   redials with bounded exponential backoff, and watches outbound sockets
//!   for the peer closing them. It hands new links over through bounded
//!   channels (and wakes the receive side with an eventfd).
//!
//! Load shedding: a peer that sends faster than its per-poll budget is read
//! no further that round; its bytes wait in its socket and TCP flow control
//! pushes back to the sender, whose bounded write buffer refuses messages
//! *before sealing* (`TxError::QueueFull`).

mod connector;
mod epoll;
pub(crate) mod rxbuf;
pub(crate) mod tx;
mod uring;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::bounded;
use wire::link::{OpenKey, SealKey, FRAME_OVERHEAD};
use wire::{Keyring, ReplicaId, SecretKey};

pub use connector::Connector;
pub use tx::TcpTx;

use crate::fault::FaultSwitch;
use crate::stats::NicStats;
use crate::sys::EventFd;
use crate::{RxEvent, RxPath};

#[cfg(doc)]
use wire::link::DIAL_HELLO_LEN;

/// Bytes of the length prefix before each frame.
pub(crate) const LEN_PREFIX: usize = 4;

/// Which kernel interface moves the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// RX: level-triggered epoll and one `recv(2)` per readable link per
    /// poll. TX: one non-blocking `send(2)` per link with pending bytes.
    Epoll,
    /// RX: one io_uring recv in flight per link into its buffer, submitted
    /// and reaped with one `io_uring_enter` per poll. TX: one io_uring send
    /// per link, all submitted with one `io_uring_enter` per flush. Falls
    /// back to [`Io::Epoll`] (with a log line) where the kernel or a
    /// seccomp profile refuses io_uring.
    Uring,
}

impl Default for Io {
    /// The faster on the 2-vCPU reference machine for consensus-shaped
    /// traffic (`crates/nic/benches/alltoall.rs`, 4 replicas, 1 KiB
    /// broadcast + 64 B all-to-all answers: round p50 77–116 µs and
    /// 8.4–11.5 k rounds/s against 91–130 µs and 7.4–10 k for epoll, 5 runs;
    /// ping-pong is a tie within 1.5 µs, see `benches/pingpong.rs`).
    fn default() -> Self {
        Io::Uring
    }
}

impl std::str::FromStr for Io {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "epoll" => Ok(Io::Epoll),
            "uring" | "io_uring" => Ok(Io::Uring),
            _ => Err(format!("unknown io {s:?}: expected \"epoll\" or \"uring\"")),
        }
    }
}

/// Configuration of a [`TcpNic`]. [`TcpConfig::new`] fills the limits with
/// defaults; [`TcpNic::start`] checks them.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// This replica.
    pub me: ReplicaId,
    /// Address the replica port listens on.
    pub listen: SocketAddr,
    /// Where to dial each peer. A replica of the keyring without an entry
    /// here can still connect to us; we never send to it.
    pub peers: Vec<(ReplicaId, SocketAddr)>,
    /// This replica's identity key (must match `keyring.replica(me)`).
    pub identity: SecretKey,
    /// The cluster's public keys; `keyring.n()` is n.
    pub keyring: Arc<Keyring>,
    /// Largest encoded message, bytes. Frames are at most this plus
    /// [`FRAME_OVERHEAD`]; each inbound link's read buffer holds one such
    /// frame and its length prefix.
    pub message_bytes_max: usize,
    /// Sealed bytes waiting to be written to one peer, at most (and the
    /// same bound for messages waiting unsealed while its link is down).
    /// At least one maximal frame with its prefix.
    pub tx_buffer_bytes_max: usize,
    /// Messages waiting unsealed for one peer while its link is down.
    pub tx_queue_messages_max: usize,
    /// Bound on connecting and on reading or writing a HELLO, ms.
    pub handshake_timeout_ms: u64,
    /// First delay before redialing a failed link, ms.
    pub reconnect_backoff_ms_min: u64,
    /// Largest delay before redialing (the delay doubles up to it), ms.
    pub reconnect_backoff_ms_max: u64,
    /// Inbound handshakes running at once; more connections are closed.
    pub handshakes_in_flight_max: usize,
}

impl TcpConfig {
    /// A config with default limits: 1 MiB messages, write buffers of two
    /// maximal frames, 1024 queued messages, 2 s handshake timeout,
    /// 10 ms → 1 s backoff, 16 handshakes in flight.
    pub fn new(
        me: ReplicaId,
        listen: SocketAddr,
        peers: Vec<(ReplicaId, SocketAddr)>,
        identity: SecretKey,
        keyring: Arc<Keyring>,
    ) -> Self {
        let message_bytes_max = 1 << 20;
        Self {
            me,
            listen,
            peers,
            identity,
            keyring,
            message_bytes_max,
            tx_buffer_bytes_max: 2 * (LEN_PREFIX + message_bytes_max + FRAME_OVERHEAD),
            tx_queue_messages_max: 1024,
            handshake_timeout_ms: 2000,
            reconnect_backoff_ms_min: 10,
            reconnect_backoff_ms_max: 1000,
            handshakes_in_flight_max: 16,
        }
    }

    /// Largest frame, bytes (without its length prefix).
    pub fn frame_bytes_max(&self) -> usize {
        self.message_bytes_max + FRAME_OVERHEAD
    }

    /// Checks the config; errors are `InvalidInput` naming the field.
    pub fn validate(&self) -> io::Result<()> {
        let bad = |what: String| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        let n = self.keyring.n();
        if self.me.index() >= n {
            return bad(format!("replica {} is not in a cluster of {n}", self.me));
        }
        if self.keyring.replica(self.me) != Some(&self.identity.public()) {
            return bad(format!(
                "identity key is not replica {}'s key in the keyring",
                self.me
            ));
        }
        for (i, (peer, _)) in self.peers.iter().enumerate() {
            if peer.index() >= n || *peer == self.me {
                return bad(format!(
                    "peer {peer} is not another replica of a cluster of {n}"
                ));
            }
            if self.peers[..i].iter().any(|(p, _)| p == peer) {
                return bad(format!("peer {peer} is listed twice"));
            }
        }
        if self.message_bytes_max == 0
            || self.message_bytes_max + FRAME_OVERHEAD > u32::MAX as usize
        {
            return bad(format!(
                "message_bytes_max {} out of range",
                self.message_bytes_max
            ));
        }
        if self.tx_buffer_bytes_max < LEN_PREFIX + self.frame_bytes_max() {
            return bad(format!(
                "tx_buffer_bytes_max {} is below one frame of {} bytes",
                self.tx_buffer_bytes_max,
                LEN_PREFIX + self.frame_bytes_max()
            ));
        }
        if self.tx_queue_messages_max == 0 || self.handshakes_in_flight_max == 0 {
            return bad(
                "tx_queue_messages_max and handshakes_in_flight_max must be at least 1".into(),
            );
        }
        if self.handshake_timeout_ms == 0
            || self.reconnect_backoff_ms_min == 0
            || self.reconnect_backoff_ms_min > self.reconnect_backoff_ms_max
        {
            return bad("need handshake_timeout_ms > 0 and 0 < backoff min <= max".into());
        }
        Ok(())
    }
}

/// An inbound link, handshaken and non-blocking, from the connector to the
/// receive side.
pub(crate) struct NewInbound {
    pub(crate) peer: ReplicaId,
    pub(crate) epoch: u64,
    pub(crate) stream: TcpStream,
    pub(crate) open: Box<OpenKey>,
}

/// What the connector tells the send side.
pub(crate) enum TxLinkEvent {
    /// A new outbound link to `peer`; replaces any older one.
    Up {
        peer: ReplicaId,
        epoch: u64,
        stream: TcpStream,
        seal: Box<SealKey>,
    },
    /// The peer closed the link of `epoch`.
    Down { peer: ReplicaId, epoch: u64 },
}

/// What the send side asks of the connector.
pub(crate) enum ConnectorCmd {
    /// Writing to the link of `epoch` failed: close it and redial.
    Redial { peer: ReplicaId, epoch: u64 },
}

/// The receive side of a [`TcpNic`] (one of the two backends).
#[allow(clippy::large_enum_variant)] // one per replica, never moved after start-up
pub enum TcpRx {
    Epoll(epoll::EpollRx),
    Uring(uring::UringRx),
}

impl RxPath for TcpRx {
    fn me(&self) -> ReplicaId {
        match self {
            TcpRx::Epoll(r) => r.core.me,
            TcpRx::Uring(r) => r.core.me,
        }
    }
    fn waker(&self) -> crate::RxWaker {
        match self {
            TcpRx::Epoll(r) => crate::RxWaker::fd(r.wake_fd()),
            TcpRx::Uring(r) => crate::RxWaker::fd(r.wake_fd()),
        }
    }
    fn poll<F: FnMut(RxEvent<'_>)>(
        &mut self,
        max_events: usize,
        per_peer_budget: usize,
        timeout: Duration,
        handler: &mut F,
    ) -> usize {
        match self {
            TcpRx::Epoll(r) => r.poll(max_events, per_peer_budget, timeout, handler),
            TcpRx::Uring(r) => r.poll(max_events, per_peer_budget, timeout, handler),
        }
    }
    fn reset_link(&mut self, peer: ReplicaId, epoch: u64) -> bool {
        match self {
            TcpRx::Epoll(r) => r.reset_link(peer, epoch),
            TcpRx::Uring(r) => r.reset_link(peer, epoch),
        }
    }
    fn stats(&self) -> &Arc<NicStats> {
        match self {
            TcpRx::Epoll(r) => &r.core.stats,
            TcpRx::Uring(r) => &r.core.stats,
        }
    }
    fn faults(&self) -> &FaultSwitch {
        match self {
            TcpRx::Epoll(r) => &r.core.faults,
            TcpRx::Uring(r) => &r.core.faults,
        }
    }
}

/// A started TCP transport: move `rx` to the dataplane thread and `tx` to
/// the control thread; keep `connector` alive (dropping it stops the
/// connector thread; dropping `rx` and `tx` closes every link).
pub struct TcpNic {
    /// Declared first: dropping a `TcpNic` stops accepting before its
    /// links close.
    pub connector: Connector,
    pub rx: TcpRx,
    pub tx: TcpTx,
}

impl TcpNic {
    /// Binds `config.listen` and starts the connector. Errors: invalid
    /// config (`InvalidInput`), or the bind error naming the address.
    pub fn start(config: TcpConfig, io: Io) -> io::Result<TcpNic> {
        config.validate()?;
        let listener = TcpListener::bind(config.listen).map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::AddrInUse {
                " is in use (another replica or process listens there)"
            } else {
                " cannot be bound"
            };
            io::Error::new(
                e.kind(),
                format!("replica port {}{hint}: {e}", config.listen),
            )
        })?;
        Self::start_with_listener(config, listener, io)
    }

    /// Starts on an already bound `listener` (its address wins over
    /// `config.listen`); lets tests bind port 0 before telling the peers.
    pub fn start_with_listener(
        config: TcpConfig,
        listener: TcpListener,
        io: Io,
    ) -> io::Result<TcpNic> {
        config.validate()?;
        let n = config.keyring.n();
        let stats = Arc::new(NicStats::new(n));
        let rx_wake = Arc::new(EventFd::new()?);
        let faults = FaultSwitch::new(n, Some(rx_wake.clone()));
        // Every link of a peer is handed over at most once per handshake;
        // these bounds only need to cover what arrives between two polls.
        let (to_rx, from_connector) = bounded(2 * n + config.handshakes_in_flight_max);
        let (to_tx, tx_events) = bounded(4 * n);
        let (commands_tx, commands) = bounded(4 * n);
        let connector_wake = Arc::new(EventFd::new()?);
        let io = match io {
            Io::Uring => match uring::probe() {
                Ok(()) => Io::Uring,
                Err(e) => {
                    tracing::warn!("io_uring is not available ({e}); using epoll");
                    Io::Epoll
                }
            },
            Io::Epoll => Io::Epoll,
        };
        let core = RxCore {
            me: config.me,
            n,
            frame_bytes_max: config.frame_bytes_max(),
            stats: stats.clone(),
            faults: faults.clone(),
            inbound: from_connector,
            deferred: None,
            cursor: 0,
            generation_seen: faults.generation(),
        };
        let rx = match io {
            Io::Epoll => TcpRx::Epoll(epoll::EpollRx::new(core, rx_wake.clone())?),
            Io::Uring => TcpRx::Uring(uring::UringRx::new(core, rx_wake.clone())?),
        };
        let tx = TcpTx::new(
            &config,
            io,
            stats.clone(),
            faults.clone(),
            tx_events,
            commands_tx,
            connector_wake.clone(),
        )?;
        let connector = Connector::start(
            &config,
            listener,
            stats,
            faults,
            to_rx,
            rx_wake,
            to_tx,
            commands,
            connector_wake,
            io,
        )?;
        Ok(TcpNic { connector, rx, tx })
    }

    /// The backend in use (after any fallback).
    pub fn io(&self) -> Io {
        self.connector.io()
    }

    /// The address the replica port listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.connector.local_addr()
    }
}

/// State both receive backends share: the links' bookkeeping minus the
/// kernel interface.
pub(crate) struct RxCore {
    pub(crate) me: ReplicaId,
    pub(crate) n: usize,
    pub(crate) frame_bytes_max: usize,
    pub(crate) stats: Arc<NicStats>,
    pub(crate) faults: FaultSwitch,
    /// New links from the connector.
    pub(crate) inbound: crossbeam_channel::Receiver<NewInbound>,
    /// A new link taken from `inbound` that did not fit in the last poll's
    /// event budget.
    pub(crate) deferred: Option<NewInbound>,
    /// Index of the peer served first by the next poll.
    pub(crate) cursor: usize,
    /// The fault switch generation already applied.
    pub(crate) generation_seen: u64,
}

impl RxCore {
    /// Takes the next new link if `room` events are left for it (a
    /// replacement needs two: LinkDown of the old, LinkUp of the new).
    pub(crate) fn next_inbound(
        &mut self,
        room: usize,
        has_link: impl Fn(ReplicaId) -> bool,
    ) -> Option<NewInbound> {
        let link = match self.deferred.take() {
            Some(l) => l,
            None => self.inbound.try_recv().ok()?,
        };
        let need = 1 + has_link(link.peer) as usize;
        if room < need {
            self.deferred = Some(link);
            return None;
        }
        Some(link)
    }
}
