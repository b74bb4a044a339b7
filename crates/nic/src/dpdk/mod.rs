//! DPDK transport (feature `dpdk`): the replica links of [`crate::TcpNic`]
//! — one TCP connection per ordered pair of replicas (i dials j to carry
//! i→j), the same [`wire::link`] handshake, the same `u32 length || frame`
//! stream of AEAD-sealed frames — over smoltcp, a userspace TCP/IP stack,
//! on one DPDK port.
//!
//! Why TCP in userspace rather than a thinner framing over raw Ethernet:
//! the links promise order, reliability and flow control (a slow receiver
//! pushes back on its sender), and smoltcp is a small, well-kept stack
//! that gives all three with retransmission, windows and keep-alives
//! tested elsewhere; a framing of our own would have to re-derive them.
//!
//! Who does what:
//! - [`DpdkRx`] (the dataplane thread) owns the port, the smoltcp
//!   interface and every socket. Each [`crate::RxPath::poll`] takes a
//!   receive burst, drops junk before any copy ([`filter`]: counted in
//!   `rx_junk_drops`), runs the stack, the handshakes (acceptor and
//!   dialer: the set-up path the TCP transport's connector thread does),
//!   copies sealed frames from the control thread's rings into the
//!   outbound sockets, and delivers inbound frames round-robin with the
//!   per-peer budget (a peer over budget keeps its bytes in its socket,
//!   whose window then pushes back).
//! - [`DpdkTx`] (the control thread) seals each message into the link's
//!   bounded lock-free byte ring; `flush` nudges the poll loop. While a
//!   link is down messages wait unsealed in a bounded queue, as in TCP.
//!
//! Client traffic stays on the kernel's sockets (the tokio API server), so
//! replica and client traffic never share a queue: the port carries only
//! replica links.

mod filter;
pub mod netns;
pub mod port;
mod ring;

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint};
use wire::link::{
    self, AwaitingConfirm, Dialing, OpenKey, SealKey, ACCEPT_HELLO_LEN, CONFIRM_LEN,
    DIAL_HELLO_LEN, FRAME_OVERHEAD,
};
use wire::{Keyring, ReplicaId, SecretKey};

pub use port::{Eal, Mbuf, Port, PortConfig, BURST_PACKETS_MAX};

use crate::fault::FaultSwitch;
use crate::stats::{NicStats, Side};
use crate::sys::EventFd;
use crate::tcp::rxbuf::{serve_link, Close, Fill, LinkBuf};
use crate::tcp::tx::PlainQueue;
use crate::tcp::LEN_PREFIX;
use crate::{RxEvent, RxPath, RxWaker, TxError, TxPath};

/// Bytes before each frame in a link's ring: the epoch it was sealed for.
const RING_EPOCH_BYTES: usize = 8;
/// Receive buffer of an outbound socket: it only ever reads the
/// acceptor's HELLO.
const DIAL_RX_BUFFER_BYTES: usize = 4096;
/// Transmit buffer of an inbound socket: it only ever writes its HELLO.
const ACCEPT_TX_BUFFER_BYTES: usize = 4096;
/// Rounds of receive + stack + rings per poll before it looks for events
/// again (bounds the work of one poll when the port keeps delivering).
const PUMPS_PER_POLL_MAX: usize = 64;
/// First local port of outbound connections (the IANA dynamic range).
const LOCAL_PORT_MIN: u16 = 49152;

/// Configuration of a [`DpdkNic`]; [`DpdkConfig::new`] fills the limits
/// with the TCP transport's defaults.
#[derive(Clone, Debug)]
pub struct DpdkConfig {
    /// This replica.
    pub me: ReplicaId,
    /// This replica's address on the port: its IPv4 address and the
    /// replica port it accepts links on.
    pub addr: SocketAddrV4,
    /// Prefix length of the port's subnet (the peers must be on it: no
    /// routing).
    pub prefix_len: u8,
    /// Each peer's replica address.
    pub peers: Vec<(ReplicaId, SocketAddrV4)>,
    /// This replica's identity key (must match `keyring.replica(me)`).
    pub identity: SecretKey,
    /// The cluster's public keys; `keyring.n()` is n.
    pub keyring: Arc<Keyring>,
    /// Arguments of `rte_eal_init` (without a program name), e.g.
    /// `["-l", "1", "--in-memory", "--vdev=net_af_packet0,iface=eth1"]`.
    pub eal_args: Vec<String>,
    /// The port, its queue, rings and pool.
    pub port: PortConfig,
    /// Largest encoded message, bytes.
    pub message_bytes_max: usize,
    /// Bytes of each outbound link's ring of sealed frames (rounded up to a
    /// power of two); at least one maximal frame with its headers.
    pub tx_buffer_bytes_max: usize,
    /// Messages waiting unsealed for one peer while its link is down.
    pub tx_queue_messages_max: usize,
    /// Bound on connecting and on the whole handshake, ms.
    pub handshake_timeout_ms: u64,
    /// First delay before redialing a failed link, ms.
    pub reconnect_backoff_ms_min: u64,
    /// Largest delay before redialing (doubling up to it), ms.
    pub reconnect_backoff_ms_max: u64,
    /// Listening sockets, i.e. inbound handshakes at once.
    pub handshakes_in_flight_max: usize,
    /// Receive buffer of an inbound link's socket and transmit buffer of an
    /// outbound one, bytes (the TCP window).
    pub socket_buffer_bytes: usize,
    /// A link with no sign of life (keep-alives every third of it) for this
    /// long is closed, ms.
    pub link_timeout_ms: u64,
    /// When idle, the poll sleeps this long between looks at the port
    /// (woken early by the waker or the send side), µs; 0 spins (a
    /// dedicated core).
    pub poll_idle_us: u64,
}

impl DpdkConfig {
    /// A config with the TCP transport's default limits, a 256-descriptor
    /// queue pair, 256 KiB socket buffers, 3 s link timeout, 50 µs idle
    /// sleep.
    pub fn new(
        me: ReplicaId,
        addr: SocketAddrV4,
        peers: Vec<(ReplicaId, SocketAddrV4)>,
        identity: SecretKey,
        keyring: Arc<Keyring>,
        eal_args: Vec<String>,
    ) -> Self {
        let message_bytes_max = 1 << 20;
        let port = PortConfig {
            port: "0".into(),
            queue: 0,
            rx_descriptors: 256,
            tx_descriptors: 256,
            mbufs: 0,
        };
        let port = PortConfig {
            mbufs: 2 * port.mbufs_min(),
            ..port
        };
        Self {
            me,
            addr,
            prefix_len: 24,
            peers,
            identity,
            keyring,
            eal_args,
            port,
            message_bytes_max,
            tx_buffer_bytes_max: 2
                * (RING_EPOCH_BYTES + LEN_PREFIX + message_bytes_max + FRAME_OVERHEAD),
            tx_queue_messages_max: 1024,
            handshake_timeout_ms: 2000,
            reconnect_backoff_ms_min: 10,
            reconnect_backoff_ms_max: 1000,
            handshakes_in_flight_max: 8,
            socket_buffer_bytes: 256 * 1024,
            link_timeout_ms: 3000,
            poll_idle_us: 50,
        }
    }

    /// Largest frame, bytes.
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
        for (i, (peer, addr)) in self.peers.iter().enumerate() {
            if peer.index() >= n || *peer == self.me {
                return bad(format!(
                    "peer {peer} is not another replica of a cluster of {n}"
                ));
            }
            if self.peers[..i]
                .iter()
                .any(|(p, a)| p == peer || a.ip() == addr.ip())
            {
                return bad(format!("peer {peer} or its address {addr} is listed twice"));
            }
            if addr.ip() == self.addr.ip() {
                return bad(format!("peer {peer} has this replica's address {addr}"));
            }
        }
        if self.prefix_len == 0 || self.prefix_len > 32 {
            return bad(format!("prefix_len {} out of 1..=32", self.prefix_len));
        }
        if self.message_bytes_max == 0
            || self.message_bytes_max + FRAME_OVERHEAD > u32::MAX as usize
        {
            return bad(format!(
                "message_bytes_max {} out of range",
                self.message_bytes_max
            ));
        }
        if self.tx_buffer_bytes_max < RING_EPOCH_BYTES + LEN_PREFIX + self.frame_bytes_max() {
            return bad(format!(
                "tx_buffer_bytes_max {} is below one frame of {} bytes",
                self.tx_buffer_bytes_max,
                RING_EPOCH_BYTES + LEN_PREFIX + self.frame_bytes_max()
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
            || self.link_timeout_ms < 3
        {
            return bad(
                "need handshake_timeout_ms > 0, 0 < backoff min <= max, link_timeout_ms >= 3"
                    .into(),
            );
        }
        if self.socket_buffer_bytes < 4096 {
            return bad(format!(
                "socket_buffer_bytes {} below 4096",
                self.socket_buffer_bytes
            ));
        }
        if self.port.mbufs < self.port.mbufs_min() {
            return bad(format!(
                "mbufs {} below {} (both rings and two bursts)",
                self.port.mbufs,
                self.port.mbufs_min()
            ));
        }
        Ok(())
    }
}

/// How the send side and the waker reach a poll loop that may sleep.
pub struct WakeFlag {
    /// Set by [`RxWaker::wake`]: the poll returns.
    woken: AtomicBool,
    /// Set by the send side's flush: the poll pumps the rings.
    tx_pending: AtomicBool,
    /// The poll loop is (about to be) asleep on `fd`.
    sleeping: AtomicBool,
    fd: Arc<EventFd>,
}

impl WakeFlag {
    /// Makes a blocked poll return (see [`RxWaker`]).
    pub(crate) fn wake(&self) {
        self.woken.store(true, Ordering::SeqCst);
        self.kick();
    }
    fn tx_ready(&self) {
        self.tx_pending.store(true, Ordering::SeqCst);
        self.kick();
    }
    /// Writes the eventfd only if the poll loop sleeps (a flag store is
    /// all a spinning loop needs).
    fn kick(&self) {
        if self.sleeping.load(Ordering::SeqCst) {
            self.fd.notify();
        }
    }
}

/// What the receive side tells the send side.
enum TxEvent {
    /// A new outbound link to `peer`; seal its frames with `seal`.
    Up {
        peer: ReplicaId,
        epoch: u64,
        seal: Box<SealKey>,
    },
    /// The link of `epoch` is gone.
    Down { peer: ReplicaId, epoch: u64 },
}

/// A started DPDK transport: move `rx` to the dataplane thread (it owns the
/// port) and `tx` to the control thread.
pub struct DpdkNic {
    pub rx: DpdkRx,
    pub tx: DpdkTx,
}

impl DpdkNic {
    /// Starts the EAL (once per process), the port and the stack.
    /// Errors: invalid config (`InvalidInput`), a second EAL, or DPDK's
    /// (arguments, memory, port), each naming the step.
    pub fn start(config: DpdkConfig) -> io::Result<DpdkNic> {
        config.validate()?;
        let eal = Eal::init(&config.eal_args)?;
        let port = Port::start(&eal, &config.port)?;
        Self::start_on(config, port)
    }

    /// Starts on an already started port (the EAL runs).
    pub fn start_on(config: DpdkConfig, port: Port) -> io::Result<DpdkNic> {
        config.validate()?;
        let n = config.keyring.n();
        let stats = Arc::new(NicStats::new(n));
        let fd = Arc::new(EventFd::new()?);
        let wake = Arc::new(WakeFlag {
            woken: AtomicBool::new(false),
            tx_pending: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            fd: fd.clone(),
        });
        let faults = FaultSwitch::new(n, Some(fd));
        let (to_tx, tx_events) = bounded(4 * n);
        let mut producers: Vec<Option<ring::Producer>> = (0..n).map(|_| None).collect();
        let mut consumers: Vec<Option<ring::Consumer>> = (0..n).map(|_| None).collect();
        for &(peer, _) in &config.peers {
            let (p, c) = ring::ring(config.tx_buffer_bytes_max);
            producers[peer.index()] = Some(p);
            consumers[peer.index()] = Some(c);
        }
        let tx = DpdkTx {
            me: config.me,
            n,
            links: producers
                .into_iter()
                .map(|p| {
                    p.map(|out| TxLink {
                        conn: None,
                        out,
                        plain: PlainQueue::new(
                            config.tx_buffer_bytes_max,
                            config.tx_queue_messages_max,
                        ),
                    })
                })
                .collect(),
            events: tx_events,
            scratch: Vec::with_capacity(RING_EPOCH_BYTES + LEN_PREFIX + config.frame_bytes_max()),
            message_bytes_max: config.message_bytes_max,
            stats: stats.clone(),
            faults: faults.clone(),
            wake: wake.clone(),
        };
        let rx = DpdkRx::new(&config, port, stats, faults, wake, to_tx, consumers);
        Ok(DpdkNic { rx, tx })
    }
}

/// An inbound socket: listening, then handshaking (HELLO in, our HELLO
/// out, CONFIRM in).
struct Accepting {
    handle: SocketHandle,
    buf: [u8; DIAL_HELLO_LEN],
    filled: usize,
    /// Set when a connection arrives; bounds the handshake.
    deadline: Option<Instant>,
    challenged: Option<Box<AwaitingConfirm>>,
}

/// A handshaken inbound link waiting for room in a poll's events.
struct NewInbound {
    peer: ReplicaId,
    epoch: u64,
    handle: SocketHandle,
    open: Box<OpenKey>,
}

struct InLink {
    handle: SocketHandle,
    epoch: u64,
    buf: LinkBuf,
    /// Must close; its LinkDown did not fit yet.
    closing: bool,
}

#[allow(clippy::large_enum_variant)] // one per peer, set-up path
enum DialState {
    Idle {
        retry_at: Instant,
    },
    /// TCP connect, then our HELLO out and the acceptor's in.
    Hello {
        handle: SocketHandle,
        dialing: Option<Dialing>,
        hello: Vec<u8>,
        written: usize,
        reply: [u8; ACCEPT_HELLO_LEN],
        filled: usize,
        deadline: Instant,
    },
    /// Carrying frames of `epoch`.
    Up {
        handle: SocketHandle,
        epoch: u64,
    },
}

/// An outbound link: its dial state and the ring the send side fills.
struct Dial {
    peer: ReplicaId,
    addr: SocketAddrV4,
    state: DialState,
    backoff: Duration,
    out: ring::Consumer,
    /// The record being copied into the socket.
    record: Option<Record>,
}

/// A sealed frame of a ring, partly copied into its socket.
#[derive(Clone, Copy)]
struct Record {
    /// The link epoch it was sealed for.
    epoch: u64,
    /// Stream bytes (`length || frame`) not yet copied.
    left: usize,
    frame_len: usize,
}

/// The receive side of a [`DpdkNic`]: owns the port, the stack and every
/// socket; see the module docs.
pub struct DpdkRx {
    me: ReplicaId,
    stats: Arc<NicStats>,
    faults: FaultSwitch,
    generation_seen: u64,
    port: Port,
    iface: Interface,
    sockets: SocketSet<'static>,
    /// Packets that passed the filter, for the stack (one burst at most).
    staged: VecDeque<Mbuf>,
    burst: Vec<Mbuf>,
    filter: filter::Filter,
    clock: Instant,
    identity: SecretKey,
    keyring: Arc<Keyring>,
    message_bytes_max: usize,
    frame_bytes_max: usize,
    addr: SocketAddrV4,
    handshake_timeout: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    link_timeout: Duration,
    socket_buffer_bytes: usize,
    idle_sleep: Duration,
    accepting: Vec<Accepting>,
    /// Bounded by `accepting.len()`: each came from a slot.
    ready: VecDeque<NewInbound>,
    links: Vec<Option<InLink>>,
    dials: Vec<Dial>,
    to_tx: Sender<TxEvent>,
    wake: Arc<WakeFlag>,
    epoch_next: u64,
    cursor: usize,
    local_port_next: u16,
    /// Aborted sockets, removed after the stack sent their reset.
    doomed: Vec<SocketHandle>,
}

impl DpdkRx {
    fn new(
        config: &DpdkConfig,
        mut port: Port,
        stats: Arc<NicStats>,
        faults: FaultSwitch,
        wake: Arc<WakeFlag>,
        to_tx: Sender<TxEvent>,
        mut rings: Vec<Option<ring::Consumer>>,
    ) -> Self {
        let clock = Instant::now();
        let mac = port.mac();
        let mut iface_config = IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        // Initial sequence numbers must not repeat across restarts.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ ((std::process::id() as u64) << 32);
        iface_config.random_seed = seed;
        let mut staged = VecDeque::with_capacity(BURST_PACKETS_MAX);
        let mut device = port::PortDevice {
            port: &mut port,
            staged: &mut staged,
        };
        let mut iface = Interface::new(iface_config, &mut device, smoltcp::time::Instant::ZERO);
        iface.update_ip_addrs(|addrs| {
            addrs
                .push(IpCidr::new(
                    IpAddress::Ipv4(*config.addr.ip()),
                    config.prefix_len,
                ))
                .expect("one address");
        });
        let peer_addrs: Vec<SocketAddrV4> = config.peers.iter().map(|(_, a)| *a).collect();
        let backoff_min = Duration::from_millis(config.reconnect_backoff_ms_min);
        let n = config.keyring.n();
        let mut rx = DpdkRx {
            me: config.me,
            generation_seen: faults.generation(),
            stats,
            faults,
            filter: filter::Filter::new(mac, config.addr, &peer_addrs),
            port,
            iface,
            sockets: SocketSet::new(Vec::new()),
            staged,
            burst: Vec::with_capacity(BURST_PACKETS_MAX),
            clock,
            identity: config.identity.clone(),
            keyring: config.keyring.clone(),
            message_bytes_max: config.message_bytes_max,
            frame_bytes_max: config.frame_bytes_max(),
            addr: config.addr,
            handshake_timeout: Duration::from_millis(config.handshake_timeout_ms),
            backoff_min,
            backoff_max: Duration::from_millis(config.reconnect_backoff_ms_max),
            link_timeout: Duration::from_millis(config.link_timeout_ms),
            socket_buffer_bytes: config.socket_buffer_bytes,
            idle_sleep: Duration::from_micros(config.poll_idle_us),
            accepting: Vec::with_capacity(config.handshakes_in_flight_max),
            ready: VecDeque::with_capacity(config.handshakes_in_flight_max),
            links: (0..n).map(|_| None).collect(),
            dials: config
                .peers
                .iter()
                .map(|&(peer, addr)| Dial {
                    peer,
                    addr,
                    state: DialState::Idle { retry_at: clock },
                    backoff: backoff_min,
                    out: rings[peer.index()].take().expect("a ring per peer"),
                    record: None,
                })
                .collect(),
            to_tx,
            wake,
            epoch_next: 1,
            cursor: 0,
            local_port_next: LOCAL_PORT_MIN + (seed % 8192) as u16,
            doomed: Vec::new(),
        };
        for _ in 0..config.handshakes_in_flight_max {
            let handle = rx.listening_socket();
            rx.accepting.push(Accepting::new(handle));
        }
        rx
    }

    /// The port's Ethernet address.
    pub fn mac(&self) -> [u8; 6] {
        self.port.mac()
    }

    /// The port's counters (packets in and out, drops for lack of mbufs or
    /// queue room).
    pub fn port_counters(&self) -> port::PortCounters {
        self.port.counters
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.clock.elapsed().as_micros() as i64)
    }

    fn new_socket(&mut self, rx_bytes: usize, tx_bytes: usize) -> SocketHandle {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; rx_bytes]),
            tcp::SocketBuffer::new(vec![0u8; tx_bytes]),
        );
        s.set_nagle_enabled(false);
        s.set_ack_delay(None);
        s.set_timeout(Some(self.link_timeout.into()));
        s.set_keep_alive(Some((self.link_timeout / 3).into()));
        self.sockets.add(s)
    }

    fn listening_socket(&mut self) -> SocketHandle {
        let handle = self.new_socket(self.socket_buffer_bytes, ACCEPT_TX_BUFFER_BYTES);
        self.sockets
            .get_mut::<tcp::Socket>(handle)
            .listen(self.addr.port())
            .expect("a fresh socket listens on a non-zero port");
        handle
    }

    /// Resets the connection (the stack sends RST) and removes the socket
    /// after the next pass of the stack.
    fn doom(&mut self, handle: SocketHandle) {
        self.sockets.get_mut::<tcp::Socket>(handle).abort();
        self.doomed.push(handle);
    }

    fn socket(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(handle)
    }

    fn next_epoch(&mut self) -> u64 {
        let e = self.epoch_next;
        self.epoch_next += 1;
        e
    }

    /// One round: receive burst and filter, rings into sockets, the stack,
    /// handshakes and timers.
    fn pump(&mut self) {
        self.burst.clear();
        self.port.rx_burst(&mut self.burst);
        for m in self.burst.drain(..) {
            let verdict = if m.segments() == 1 {
                self.filter.check(m.data())
            } else {
                Err(filter::Junk::Runt)
            };
            match verdict {
                Ok(()) => self.staged.push_back(m),
                Err(junk) => {
                    self.stats.rx_junk_drops[junk as usize].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        for i in 0..self.dials.len() {
            self.drain_ring(i);
        }
        let now = self.now();
        let mut device = port::PortDevice {
            port: &mut self.port,
            staged: &mut self.staged,
        };
        self.iface.poll(now, &mut device, &mut self.sockets);
        self.port.flush_tx();
        for handle in self.doomed.drain(..) {
            self.sockets.remove(handle);
        }
        let wall = Instant::now();
        for i in 0..self.accepting.len() {
            self.step_accepting(i, wall);
        }
        for i in 0..self.dials.len() {
            self.step_dial(i, wall);
        }
    }

    /// Copies sealed frames of dial `i`'s ring into its socket; frames of
    /// an older epoch (their link died) are skipped and counted lost.
    fn drain_ring(&mut self, i: usize) {
        let d = &mut self.dials[i];
        let live = match d.state {
            DialState::Up { handle, epoch } => Some((handle, epoch)),
            _ => None,
        };
        let counters = self.stats.peer(d.peer);
        // Each iteration consumes ring bytes or stops; the ring is bounded.
        loop {
            let record = match d.record {
                Some(r) => r,
                None => {
                    let mut head = [0u8; RING_EPOCH_BYTES + LEN_PREFIX];
                    if !d.out.peek_into(&mut head) {
                        return;
                    }
                    let epoch = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
                    let len = u32::from_be_bytes(head[8..].try_into().expect("4 bytes")) as usize;
                    d.out.consume(RING_EPOCH_BYTES);
                    Record {
                        epoch,
                        left: LEN_PREFIX + len,
                        frame_len: len,
                    }
                }
            };
            let Some((handle, _)) = live.filter(|(_, e)| *e == record.epoch) else {
                d.out.consume(record.left);
                d.record = None;
                counters.tx_lost.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let socket = self.sockets.get_mut::<tcp::Socket>(handle);
            let chunk = d.out.peek(record.left);
            let offered = chunk.len();
            // An error means the socket no longer sends: the dial's state
            // machine sees that and ends the link.
            let sent = socket.send_slice(chunk).unwrap_or(0);
            d.out.consume(sent);
            let left = record.left - sent;
            if left == 0 {
                counters.tx_frames.fetch_add(1, Ordering::Relaxed);
                counters
                    .tx_bytes
                    .fetch_add(record.frame_len as u64, Ordering::Relaxed);
                d.record = None;
                continue;
            }
            d.record = Some(Record { left, ..record });
            if sent == 0 || sent < offered {
                return; // the socket's buffer is full
            }
            // The chunk ended where the ring wraps: go on from its start.
        }
    }

    fn step_accepting(&mut self, i: usize, now: Instant) {
        let handle = self.accepting[i].handle;
        let state = self.socket(handle).state();
        let a = &mut self.accepting[i];
        match state {
            tcp::State::Listen => return,
            tcp::State::SynReceived => {
                a.deadline.get_or_insert(now + self.handshake_timeout);
                return;
            }
            _ => {}
        }
        let deadline = *a.deadline.get_or_insert(now + self.handshake_timeout);
        // Each iteration reads or stops; two messages at most.
        loop {
            let a = &mut self.accepting[i];
            let want = if a.challenged.is_some() {
                CONFIRM_LEN
            } else {
                DIAL_HELLO_LEN
            };
            let filled = a.filled;
            let socket = self.sockets.get_mut::<tcp::Socket>(handle);
            let got = socket.recv_slice(&mut self.accepting[i].buf[filled..want]);
            let open = socket.may_recv();
            match got {
                Ok(k) if k > 0 => {
                    let a = &mut self.accepting[i];
                    a.filled += k;
                    if a.filled < want {
                        continue;
                    }
                    if a.challenged.is_some() {
                        self.finish_accept(i);
                        return;
                    }
                    if !self.challenge(i) {
                        return self.reset_accepting(i);
                    }
                }
                Ok(_) if open => break,
                _ => {
                    self.stats.handshake_failed(Side::Accept, "closed");
                    return self.reset_accepting(i);
                }
            }
        }
        if now >= deadline {
            self.stats.handshake_failed(Side::Accept, "timeout");
            self.reset_accepting(i);
        }
    }

    /// Closes slot `i`'s connection and listens afresh.
    fn reset_accepting(&mut self, i: usize) {
        let old = self.accepting[i].handle;
        self.doom(old);
        let handle = self.listening_socket();
        self.accepting[i] = Accepting::new(handle);
    }

    fn challenge(&mut self, i: usize) -> bool {
        let accepted = link::accept(
            &self.identity,
            &self.keyring,
            self.me,
            &self.accepting[i].buf,
            self.message_bytes_max,
        );
        let (reply, peer, challenged) = match accepted {
            Ok(a) => a,
            Err(e) => {
                self.stats.handshake_failed(Side::Accept, e.label());
                return false;
            }
        };
        assert_eq!(reply.len(), ACCEPT_HELLO_LEN);
        if self.faults.is_blocked(peer) {
            self.stats
                .peer(peer)
                .fault_drops
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let handle = self.accepting[i].handle;
        // A fresh socket's transmit buffer takes the whole reply.
        match self.socket(handle).send_slice(&reply) {
            Ok(k) if k == reply.len() => {}
            _ => {
                self.stats.handshake_failed(Side::Accept, "io");
                return false;
            }
        }
        let a = &mut self.accepting[i];
        a.filled = 0;
        a.challenged = Some(Box::new(challenged));
        true
    }

    fn finish_accept(&mut self, i: usize) {
        let challenged = self.accepting[i]
            .challenged
            .take()
            .expect("CONFIRM after the challenge");
        let peer = challenged.peer();
        let open = match challenged.confirm(&self.accepting[i].buf[..CONFIRM_LEN]) {
            Ok(k) => k,
            Err(e) => {
                self.stats.handshake_failed(Side::Accept, e.label());
                return self.reset_accepting(i);
            }
        };
        if self.faults.is_blocked(peer) || self.ready.len() == self.ready.capacity() {
            self.stats
                .handshakes_refused_busy
                .fetch_add(1, Ordering::Relaxed);
            return self.reset_accepting(i);
        }
        let handle = self.accepting[i].handle;
        let epoch = self.next_epoch();
        self.ready.push_back(NewInbound {
            peer,
            epoch,
            handle,
            open: Box::new(open),
        });
        self.stats
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        let fresh = self.listening_socket();
        self.accepting[i] = Accepting::new(fresh);
        // The peer may have restarted: redial it now.
        let wall = Instant::now();
        if let Some(d) = self.dials.iter_mut().find(|d| d.peer == peer) {
            if let DialState::Idle { retry_at } = &mut d.state {
                *retry_at = wall;
                d.backoff = self.backoff_min;
            }
        }
    }

    fn back_off(&mut self, i: usize, now: Instant) {
        let d = &mut self.dials[i];
        d.state = DialState::Idle {
            retry_at: now + d.backoff,
        };
        d.backoff = (d.backoff * 2).min(self.backoff_max);
    }

    /// Ends dial `i`'s connection (reset) and schedules a redial.
    fn fail_dial(&mut self, i: usize, now: Instant, label: Option<&str>) {
        let handle = match &self.dials[i].state {
            DialState::Idle { .. } => return,
            DialState::Hello { handle, .. } => *handle,
            DialState::Up { handle, epoch } => {
                let (peer, epoch, handle) = (self.dials[i].peer, *epoch, *handle);
                let _ = self.to_tx.try_send(TxEvent::Down { peer, epoch });
                self.stats.connections_reset.fetch_add(1, Ordering::Relaxed);
                self.dials[i].backoff = self.backoff_min;
                handle
            }
        };
        if let Some(label) = label {
            self.stats.handshake_failed(Side::Dial, label);
        }
        self.doom(handle);
        self.back_off(i, now);
    }

    fn next_local_port(&mut self) -> u16 {
        let p = self.local_port_next;
        self.local_port_next = if p == u16::MAX { LOCAL_PORT_MIN } else { p + 1 };
        p
    }

    fn step_dial(&mut self, i: usize, now: Instant) {
        match &self.dials[i].state {
            DialState::Idle { retry_at } => {
                if *retry_at <= now {
                    self.start_dial(i, now);
                }
            }
            DialState::Hello { deadline, .. } => {
                if *deadline <= now {
                    self.fail_dial(i, now, Some("timeout"));
                    self.stats.dial_failures.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.step_hello(i, now);
                }
            }
            DialState::Up { handle, .. } => {
                let socket = self.sockets.get::<tcp::Socket>(*handle);
                // The acceptor never writes after its HELLO: data or a
                // close means the link is over.
                if !socket.may_send() || socket.can_recv() || !socket.may_recv() {
                    self.fail_dial(i, now, None);
                }
            }
        }
    }

    fn start_dial(&mut self, i: usize, now: Instant) {
        let local_port = self.next_local_port();
        let handle = self.new_socket(DIAL_RX_BUFFER_BYTES, self.socket_buffer_bytes);
        let remote = IpEndpoint::new(
            IpAddress::Ipv4(*self.dials[i].addr.ip()),
            self.dials[i].addr.port(),
        );
        let cx = self.iface.context();
        let r = self
            .sockets
            .get_mut::<tcp::Socket>(handle)
            .connect(cx, remote, local_port);
        if r.is_err() {
            self.sockets.remove(handle);
            self.stats.dial_failures.fetch_add(1, Ordering::Relaxed);
            return self.back_off(i, now);
        }
        let peer = self.dials[i].peer;
        let (hello, dialing) = link::dial(&self.identity, self.keyring.cluster_id(), self.me, peer);
        assert_eq!(hello.len(), DIAL_HELLO_LEN);
        self.dials[i].state = DialState::Hello {
            handle,
            dialing: Some(dialing),
            hello,
            written: 0,
            reply: [0; ACCEPT_HELLO_LEN],
            filled: 0,
            deadline: now + self.handshake_timeout,
        };
    }

    fn step_hello(&mut self, i: usize, now: Instant) {
        let peer = self.dials[i].peer;
        let DialState::Hello {
            handle,
            dialing,
            hello,
            written,
            reply,
            filled,
            ..
        } = &mut self.dials[i].state
        else {
            unreachable!("step_hello in another state")
        };
        let socket = self.sockets.get_mut::<tcp::Socket>(*handle);
        match socket.state() {
            tcp::State::SynSent => return,
            tcp::State::Established => {}
            _ => {
                self.stats.dial_failures.fetch_add(1, Ordering::Relaxed);
                return self.fail_dial(i, now, None);
            }
        }
        if *written < hello.len() {
            match socket.send_slice(&hello[*written..]) {
                Ok(k) => *written += k,
                Err(_) => return self.fail_dial(i, now, Some("io")),
            }
        }
        match socket.recv_slice(&mut reply[*filled..]) {
            Ok(k) => *filled += k,
            Err(_) => return self.fail_dial(i, now, Some("closed")),
        }
        if *filled < ACCEPT_HELLO_LEN {
            return;
        }
        let dialing = dialing.take().expect("one reply per handshake");
        let (seal, confirm) = match dialing.finish(&self.keyring, &reply[..]) {
            Ok(s) => s,
            Err(e) => {
                let label = e.label();
                return self.fail_dial(i, now, Some(label));
            }
        };
        match socket.send_slice(&confirm) {
            Ok(k) if k == CONFIRM_LEN => {}
            _ => return self.fail_dial(i, now, Some("io")),
        }
        let handle = *handle;
        let epoch = self.next_epoch();
        let up = TxEvent::Up {
            peer,
            epoch,
            seal: Box::new(seal),
        };
        if self.to_tx.try_send(up).is_err() {
            self.stats.dial_failures.fetch_add(1, Ordering::Relaxed);
            self.doom(handle);
            return self.back_off(i, now);
        }
        self.stats
            .connections_dialed
            .fetch_add(1, Ordering::Relaxed);
        let d = &mut self.dials[i];
        d.backoff = self.backoff_min;
        d.state = DialState::Up { handle, epoch };
    }

    /// Applies the fault switch, pending closes and new inbound links;
    /// returns the events handled (at most `room`).
    fn admit<F: FnMut(RxEvent<'_>)>(&mut self, room: usize, handler: &mut F) -> usize {
        let mut handled = 0;
        let generation = self.faults.generation();
        if generation != self.generation_seen {
            self.generation_seen = generation;
            for i in 0..self.links.len() {
                let blocked = self.faults.is_blocked(ReplicaId(i as u16));
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
        // Bounded by the slots that fed `ready`.
        while let Some(new) = self.ready.front() {
            let need = 1 + self.links[new.peer.index()].is_some() as usize;
            if room - handled < need {
                break;
            }
            let new = self.ready.pop_front().expect("front exists");
            if self.links[new.peer.index()].is_some() {
                self.stats
                    .connections_replaced
                    .fetch_add(1, Ordering::Relaxed);
                self.close(new.peer, handler);
                handled += 1;
            }
            self.links[new.peer.index()] = Some(InLink {
                handle: new.handle,
                epoch: new.epoch,
                buf: LinkBuf::new(self.frame_bytes_max),
                closing: false,
            });
            handler(RxEvent::LinkUp {
                peer: new.peer,
                epoch: new.epoch,
                open: new.open,
            });
            handled += 1;
        }
        handled
    }

    fn close<F: FnMut(RxEvent<'_>)>(&mut self, peer: ReplicaId, handler: &mut F) {
        let link = self.links[peer.index()]
            .take()
            .expect("closing a live link");
        let lost = link.buf.frames_waiting();
        self.stats
            .peer(peer)
            .rx_lost
            .fetch_add(lost, Ordering::Relaxed);
        self.doom(link.handle);
        handler(RxEvent::LinkDown {
            peer,
            epoch: link.epoch,
        });
    }

    /// One round-robin pass over the inbound links.
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
            let i = (self.cursor + k) % m;
            let Some(link) = &mut self.links[i] else {
                continue;
            };
            if link.closing {
                continue;
            }
            let quota = per_peer_budget.min(room - handled);
            let sockets = &mut self.sockets;
            let handle = link.handle;
            let (delivered, close) = serve_link(
                &self.stats,
                &self.faults,
                ReplicaId(i as u16),
                link.epoch,
                &mut link.buf,
                quota,
                quota == per_peer_budget,
                handler,
                |buf| {
                    let socket = sockets.get_mut::<tcp::Socket>(handle);
                    if socket.can_recv() {
                        match socket.recv_slice(buf.free_tail()) {
                            Ok(0) => Fill::Empty,
                            Ok(k) => {
                                buf.filled(k);
                                Fill::Got
                            }
                            Err(_) => Fill::Closed,
                        }
                    } else if socket.may_recv() {
                        Fill::Empty
                    } else {
                        Fill::Closed
                    }
                },
            );
            handled += delivered;
            if delivered > 0 {
                served_last = Some(i);
            }
            if let Some(why) = close {
                link.closing = true;
                debug_assert!(matches!(
                    why,
                    Close::Gone | Close::Oversize | Close::Blocked
                ));
                if handled < room {
                    self.close(ReplicaId(i as u16), handler);
                    handled += 1;
                }
            }
        }
        if let Some(i) = served_last {
            self.cursor = (i + 1) % m;
        }
        handled
    }

    /// True if a link has a whole frame buffered or bytes in its socket.
    fn has_input(&self) -> bool {
        self.links.iter().flatten().any(|l| {
            l.closing || l.buf.has_frame() || self.sockets.get::<tcp::Socket>(l.handle).can_recv()
        }) || !self.ready.is_empty()
    }

    /// Sleeps up to `max` unless woken, or something is pending.
    fn idle(&mut self, max: Duration) {
        if max.is_zero() {
            return;
        }
        let w = &self.wake;
        w.sleeping.store(true, Ordering::SeqCst);
        if !w.woken.load(Ordering::SeqCst) && !w.tx_pending.load(Ordering::SeqCst) {
            crate::sys::wait_readable(w.fd.raw(), max);
        }
        w.sleeping.store(false, Ordering::SeqCst);
        w.fd.drain();
    }
}

impl Accepting {
    fn new(handle: SocketHandle) -> Self {
        Self {
            handle,
            buf: [0; DIAL_HELLO_LEN],
            filled: 0,
            deadline: None,
            challenged: None,
        }
    }
}

impl RxPath for DpdkRx {
    fn me(&self) -> ReplicaId {
        self.me
    }

    fn poll<F: FnMut(RxEvent<'_>)>(
        &mut self,
        max_events: usize,
        per_peer_budget: usize,
        timeout: Duration,
        handler: &mut F,
    ) -> usize {
        assert!(max_events > 0, "poll with max_events = 0");
        assert!(per_peer_budget > 0, "poll with per_peer_budget = 0");
        let deadline = Instant::now() + timeout;
        let mut handled = 0;
        // Bounded: PUMPS_PER_POLL_MAX rounds with work, then the deadline.
        for round in 0.. {
            self.wake.tx_pending.store(false, Ordering::SeqCst);
            self.pump();
            handled += self.admit(max_events - handled, handler);
            if handled < max_events {
                handled += self.serve(max_events - handled, per_peer_budget, handler);
            }
            let woken = self.wake.woken.swap(false, Ordering::SeqCst);
            let now = Instant::now();
            if handled > 0 || woken || now >= deadline || round >= PUMPS_PER_POLL_MAX {
                break;
            }
            if !self.has_input() && !self.wake.tx_pending.load(Ordering::SeqCst) {
                let smol = self
                    .iface
                    .poll_delay(self.now(), &self.sockets)
                    .map_or(self.idle_sleep, |d| Duration::from_micros(d.total_micros()));
                let sleep = self.idle_sleep.min(smol).min(deadline - now);
                self.idle(sleep);
            }
        }
        assert!(handled <= max_events);
        handled
    }

    fn waker(&self) -> RxWaker {
        RxWaker::flag(self.wake.clone())
    }

    fn reset_link(&mut self, peer: ReplicaId, epoch: u64) -> bool {
        let Some(Some(link)) = self.links.get_mut(peer.index()) else {
            return false;
        };
        if link.epoch != epoch || link.closing {
            return false;
        }
        link.closing = true;
        self.stats
            .peer(peer)
            .bad_frame_resets
            .fetch_add(1, Ordering::Relaxed);
        true
    }

    fn stats(&self) -> &Arc<NicStats> {
        &self.stats
    }

    fn faults(&self) -> &FaultSwitch {
        &self.faults
    }
}

/// The current outbound link of a peer, as the send side knows it.
struct TxConn {
    seal: Box<SealKey>,
    epoch: u64,
}

struct TxLink {
    conn: Option<TxConn>,
    out: ring::Producer,
    plain: PlainQueue,
}

/// The send side of a [`DpdkNic`]: owned by one thread (the control
/// thread); see [`TxPath`].
pub struct DpdkTx {
    me: ReplicaId,
    n: usize,
    /// Indexed by replica id; `None` for this replica and peers without an
    /// address.
    links: Vec<Option<TxLink>>,
    events: Receiver<TxEvent>,
    /// One record being built: `epoch || length || frame`.
    scratch: Vec<u8>,
    message_bytes_max: usize,
    stats: Arc<NicStats>,
    faults: FaultSwitch,
    wake: Arc<WakeFlag>,
}

impl TxLink {
    /// Seals `message` into the ring if it fits (checked before sealing,
    /// so a refused message never advances the link sequence).
    fn seal_into_ring(&mut self, scratch: &mut Vec<u8>, message: &[u8]) -> bool {
        let Some(conn) = &mut self.conn else {
            return false;
        };
        let need = RING_EPOCH_BYTES + LEN_PREFIX + message.len() + FRAME_OVERHEAD;
        if self.out.free() < need {
            return false;
        }
        scratch.clear();
        scratch.extend_from_slice(&conn.epoch.to_le_bytes());
        scratch.extend_from_slice(&((message.len() + FRAME_OVERHEAD) as u32).to_be_bytes());
        conn.seal.seal(message, scratch);
        assert_eq!(scratch.len(), need);
        assert!(self.out.push(&[scratch]), "checked the room before sealing");
        true
    }

    /// Seals queued messages while they fit.
    fn seal_queued(&mut self, scratch: &mut Vec<u8>) {
        // Each iteration seals one queued message (bounded by the queue).
        while let Some(message) = self.plain.front() {
            let Some(conn) = &mut self.conn else { return };
            let need = RING_EPOCH_BYTES + LEN_PREFIX + message.len() + FRAME_OVERHEAD;
            if self.out.free() < need {
                return;
            }
            scratch.clear();
            scratch.extend_from_slice(&conn.epoch.to_le_bytes());
            scratch.extend_from_slice(&((message.len() + FRAME_OVERHEAD) as u32).to_be_bytes());
            conn.seal.seal(message, scratch);
            assert!(self.out.push(&[scratch]), "checked the room before sealing");
            self.plain.pop();
        }
    }
}

impl DpdkTx {
    fn take_link_events(&mut self) {
        // Bounded: the channel holds at most 4n events.
        while let Ok(event) = self.events.try_recv() {
            match event {
                TxEvent::Up { peer, epoch, seal } => {
                    let link = self.links[peer.index()]
                        .as_mut()
                        .expect("the receive side dials configured peers only");
                    link.conn = Some(TxConn { seal, epoch });
                    link.seal_queued(&mut self.scratch);
                }
                TxEvent::Down { peer, epoch } => {
                    let link = self.links[peer.index()].as_mut().expect("configured peer");
                    if link.conn.as_ref().is_some_and(|c| c.epoch == epoch) {
                        link.conn = None;
                    }
                }
            }
        }
    }
}

impl TxPath for DpdkTx {
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
        link.seal_queued(&mut self.scratch);
        if link.conn.is_some() && link.plain.is_empty() {
            if link.seal_into_ring(&mut self.scratch, message) {
                return Ok(());
            }
            // The link is up and its ring full: shed before sealing.
            counters.tx_drops.fetch_add(1, Ordering::Relaxed);
            return Err(TxError::QueueFull(peer));
        }
        if link.plain.push(message) {
            Ok(())
        } else {
            counters.tx_drops.fetch_add(1, Ordering::Relaxed);
            Err(TxError::QueueFull(peer))
        }
    }

    fn flush(&mut self) {
        self.take_link_events();
        for link in self.links.iter_mut().flatten() {
            link.seal_queued(&mut self.scratch);
        }
        self.wake.tx_ready();
    }

    fn stats(&self) -> &Arc<NicStats> {
        &self.stats
    }

    fn faults(&self) -> &FaultSwitch {
        &self.faults
    }
}

/// An IPv4 socket address from `addr`, or an error naming `what`.
pub fn ipv4(addr: std::net::SocketAddr, what: &str) -> io::Result<SocketAddrV4> {
    match addr {
        std::net::SocketAddr::V4(a) if *a.ip() != Ipv4Addr::UNSPECIFIED => Ok(a),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} {addr}: the DPDK transport needs a specific IPv4 address"),
        )),
    }
}
