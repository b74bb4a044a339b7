//! The connector thread: the set-up path of every link, nothing else.
//!
//! One `poll(2)` loop over non-blocking sockets, so no peer and no stranger
//! can hold it up: a HELLO trickled byte by byte costs one slot (of
//! `handshakes_in_flight_max`) until the handshake timeout, and dials to a
//! dead peer wait in the same loop. When every slot is taken, a new
//! connection evicts the oldest unauthenticated one (counted in
//! `handshakes_evicted`): idle strangers cannot keep a restarting peer out,
//! they can at most make it retry. It
//! - accepts and runs the acceptor's handshake (HELLO in, HELLO with a fresh
//!   challenge out, CONFIRM in: see [`wire::link`]), then hands the link to
//!   the receive side (bounded channel + eventfd wake-up). Only a confirmed
//!   handshake reaches the receive side, so only it can replace a live link:
//!   a replayed HELLO cannot answer the challenge and times out;
//! - dials every peer, runs the dialer's handshake (HELLO out, HELLO in,
//!   CONFIRM out), then hands the link to the send side (bounded channel,
//!   polled by `send`/`flush`);
//! - watches each outbound socket: the acceptor never writes after its
//!   HELLO, so readability means the peer closed it: tells the send side
//!   and redials;
//! - redials on request of the send side (a write failed), and at once when
//!   the peer connects to us (it restarted), else with exponential backoff.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use socket2::{Domain, Protocol, Socket, Type};
use wire::link::{self, AwaitingConfirm, Dialing, ACCEPT_HELLO_LEN, CONFIRM_LEN, DIAL_HELLO_LEN};
use wire::{Keyring, ReplicaId, SecretKey};

use super::{ConnectorCmd, Io, NewInbound, TcpConfig, TxLinkEvent};
use crate::fault::FaultSwitch;
use crate::stats::{NicStats, Side};
use crate::sys::EventFd;
use crate::timeout_ms;

/// Connections accepted per wake-up, at most.
const ACCEPTS_PER_WAKE_MAX: usize = 64;
/// Pause of the listener after an accept error (EMFILE and friends).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);
/// Longest sleep of the loop when nothing is due.
const IDLE_WAIT: Duration = Duration::from_secs(1);

fn io_label(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timeout",
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => "closed",
        _ => "io",
    }
}

/// The running connector thread of a [`super::TcpNic`]. Dropping it stops
/// and joins the thread (links already handed over stay up).
pub struct Connector {
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    wake: Arc<EventFd>,
    local_addr: SocketAddr,
    io: Io,
}

impl Connector {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        config: &TcpConfig,
        listener: TcpListener,
        stats: Arc<NicStats>,
        faults: FaultSwitch,
        to_rx: Sender<NewInbound>,
        rx_wake: Arc<EventFd>,
        to_tx: Sender<TxLinkEvent>,
        commands: Receiver<ConnectorCmd>,
        wake: Arc<EventFd>,
        io: Io,
    ) -> io::Result<Connector> {
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let now = Instant::now();
        let backoff_min = Duration::from_millis(config.reconnect_backoff_ms_min);
        let worker = Worker {
            me: config.me,
            identity: config.identity.clone(),
            keyring: config.keyring.clone(),
            message_bytes_max: config.message_bytes_max,
            handshake_timeout: Duration::from_millis(config.handshake_timeout_ms),
            backoff_min,
            backoff_max: Duration::from_millis(config.reconnect_backoff_ms_max),
            handshakes_max: config.handshakes_in_flight_max,
            stats,
            faults,
            listener,
            listener_paused_until: None,
            wake: wake.clone(),
            commands,
            stop: stop.clone(),
            to_rx,
            rx_wake,
            to_tx,
            accepting: Vec::with_capacity(config.handshakes_in_flight_max),
            dials: config
                .peers
                .iter()
                .map(|&(peer, addr)| Dial {
                    peer,
                    addr,
                    state: DialState::Idle { retry_at: now },
                    backoff: backoff_min,
                })
                .collect(),
            epoch_next: 1,
        };
        let thread = thread::Builder::new()
            .name(format!("nic-connect-r{}", config.me.0))
            .spawn(move || worker.run())?;
        Ok(Connector {
            thread: Some(thread),
            stop,
            wake,
            local_addr,
            io,
        })
    }

    /// The address the replica port listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The kernel interface of the transport (after any fallback).
    pub fn io(&self) -> Io {
        self.io
    }

    /// Stops and joins the thread; closes the listener and every handshake
    /// in progress. Idempotent; also run by `Drop`.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// An inbound connection not yet authenticated: reading the dialer's HELLO,
/// then (reply written) its CONFIRM. `deadline` bounds both.
struct Accepting {
    stream: TcpStream,
    /// The HELLO, then the CONFIRM (shorter), read into the front.
    buf: [u8; DIAL_HELLO_LEN],
    filled: usize,
    deadline: Instant,
    /// Set once the HELLO verified and our reply (the challenge) is written.
    challenged: Option<Box<AwaitingConfirm>>,
}

impl Accepting {
    /// Bytes of the message being read: the HELLO, then the CONFIRM.
    fn want(&self) -> usize {
        if self.challenged.is_some() {
            CONFIRM_LEN
        } else {
            DIAL_HELLO_LEN
        }
    }
}

const _: () = assert!(CONFIRM_LEN <= DIAL_HELLO_LEN);

#[allow(clippy::large_enum_variant)] // one per peer, set-up path
enum DialState {
    /// Waiting to dial at `retry_at`.
    Idle { retry_at: Instant },
    /// Non-blocking connect in progress.
    Connecting {
        stream: TcpStream,
        deadline: Instant,
    },
    /// Writing our HELLO, reading the acceptor's.
    Hello {
        stream: TcpStream,
        dialing: Option<Dialing>,
        hello: Vec<u8>,
        written: usize,
        reply: [u8; ACCEPT_HELLO_LEN],
        filled: usize,
        deadline: Instant,
    },
    /// Handed to the send side; `watch` is a second handle on its socket.
    Up { watch: TcpStream, epoch: u64 },
}

struct Dial {
    peer: ReplicaId,
    addr: SocketAddr,
    state: DialState,
    /// Delay before the next attempt after a failure.
    backoff: Duration,
}

/// What a `pollfd` entry stands for.
#[derive(Clone, Copy)]
enum Slot {
    Wake,
    Listener,
    Accepting(usize),
    Dial(usize),
}

struct Worker {
    me: ReplicaId,
    identity: SecretKey,
    keyring: Arc<Keyring>,
    message_bytes_max: usize,
    handshake_timeout: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    handshakes_max: usize,
    stats: Arc<NicStats>,
    faults: FaultSwitch,
    listener: TcpListener,
    listener_paused_until: Option<Instant>,
    wake: Arc<EventFd>,
    commands: Receiver<ConnectorCmd>,
    stop: Arc<AtomicBool>,
    to_rx: Sender<NewInbound>,
    rx_wake: Arc<EventFd>,
    to_tx: Sender<TxLinkEvent>,
    accepting: Vec<Accepting>,
    dials: Vec<Dial>,
    epoch_next: u64,
}

impl Worker {
    /// Runs until stopped; each iteration is one `poll(2)`.
    fn run(mut self) {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut slots: Vec<Slot> = Vec::new();
        let mut finished: Vec<usize> = Vec::new();
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            self.timers(now);
            let wait = self.next_due(now).saturating_duration_since(now);
            self.fill_pollfds(&mut fds, &mut slots);
            // SAFETY: poll reads and writes `fds.len()` entries we own.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as _, timeout_ms(wait)) };
            if r <= 0 {
                continue; // timeout, or EINTR
            }
            finished.clear();
            for (fd, slot) in fds.iter().zip(&slots) {
                if fd.revents == 0 {
                    continue;
                }
                match *slot {
                    Slot::Wake => self.on_wake(),
                    Slot::Listener => self.on_listener(),
                    Slot::Accepting(i) => {
                        if self.step_accepting(i) {
                            finished.push(i);
                        }
                    }
                    Slot::Dial(i) => self.step_dial(i, fd.revents),
                }
            }
            // `finished` is in increasing order: remove from the back.
            for &i in finished.iter().rev() {
                self.accepting.swap_remove(i);
            }
        }
    }

    fn fill_pollfds(&self, fds: &mut Vec<libc::pollfd>, slots: &mut Vec<Slot>) {
        fds.clear();
        slots.clear();
        let mut add = |fd: i32, events: i16, slot: Slot| {
            fds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            });
            slots.push(slot);
        };
        add(self.wake.raw(), libc::POLLIN, Slot::Wake);
        if self.listener_paused_until.is_none() {
            add(self.listener.as_raw_fd(), libc::POLLIN, Slot::Listener);
        }
        for (i, a) in self.accepting.iter().enumerate() {
            add(a.stream.as_raw_fd(), libc::POLLIN, Slot::Accepting(i));
        }
        for (i, d) in self.dials.iter().enumerate() {
            match &d.state {
                DialState::Idle { .. } => {}
                DialState::Connecting { stream, .. } => {
                    add(stream.as_raw_fd(), libc::POLLOUT, Slot::Dial(i))
                }
                DialState::Hello {
                    stream,
                    hello,
                    written,
                    ..
                } => {
                    let out = if *written < hello.len() {
                        libc::POLLOUT
                    } else {
                        0
                    };
                    add(stream.as_raw_fd(), libc::POLLIN | out, Slot::Dial(i))
                }
                DialState::Up { watch, .. } => add(
                    watch.as_raw_fd(),
                    libc::POLLIN | libc::POLLRDHUP,
                    Slot::Dial(i),
                ),
            }
        }
    }

    /// The earliest deadline or retry time (at most [`IDLE_WAIT`] ahead).
    fn next_due(&self, now: Instant) -> Instant {
        let mut due = now + IDLE_WAIT;
        if let Some(t) = self.listener_paused_until {
            due = due.min(t);
        }
        for a in &self.accepting {
            due = due.min(a.deadline);
        }
        for d in &self.dials {
            match &d.state {
                DialState::Idle { retry_at } => due = due.min(*retry_at),
                DialState::Connecting { deadline, .. } | DialState::Hello { deadline, .. } => {
                    due = due.min(*deadline)
                }
                DialState::Up { .. } => {}
            }
        }
        due
    }

    /// Expires handshakes and starts the dials that are due.
    fn timers(&mut self, now: Instant) {
        if self.listener_paused_until.is_some_and(|t| t <= now) {
            self.listener_paused_until = None;
        }
        // Count before closing: whoever sees the close sees the count.
        for _ in self.accepting.iter().filter(|a| a.deadline <= now) {
            self.stats.handshake_failed(Side::Accept, "timeout");
        }
        self.accepting.retain(|a| a.deadline > now);
        for i in 0..self.dials.len() {
            match &self.dials[i].state {
                DialState::Idle { retry_at } if *retry_at <= now => self.start_dial(i, now),
                DialState::Connecting { deadline, .. } if *deadline <= now => {
                    self.stats.dial_failures.fetch_add(1, Ordering::Relaxed);
                    self.back_off(i, now);
                }
                DialState::Hello { deadline, .. } if *deadline <= now => {
                    self.stats.handshake_failed(Side::Dial, "timeout");
                    self.back_off(i, now);
                }
                _ => {}
            }
        }
    }

    fn on_wake(&mut self) {
        self.wake.drain();
        // Bounded by the channel's capacity.
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                ConnectorCmd::Redial { peer, epoch } => {
                    let Some(d) = self.dials.iter_mut().find(|d| d.peer == peer) else {
                        continue;
                    };
                    if matches!(d.state, DialState::Up { epoch: e, .. } if e == epoch) {
                        self.stats.connections_reset.fetch_add(1, Ordering::Relaxed);
                        d.state = DialState::Idle {
                            retry_at: Instant::now(),
                        };
                    }
                }
            }
        }
    }

    fn on_listener(&mut self) {
        for _ in 0..ACCEPTS_PER_WAKE_MAX {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    // EMFILE and friends: pause instead of spinning.
                    self.listener_paused_until = Some(Instant::now() + ACCEPT_ERROR_PAUSE);
                    return;
                }
            };
            if let Err(e) = stream
                .set_nonblocking(true)
                .and_then(|_| stream.set_nodelay(true))
            {
                self.stats.handshake_failed(Side::Accept, io_label(&e));
                continue;
            }
            let new = Accepting {
                stream,
                buf: [0; DIAL_HELLO_LEN],
                filled: 0,
                deadline: Instant::now() + self.handshake_timeout,
                challenged: None,
            };
            if self.accepting.len() < self.handshakes_max {
                self.accepting.push(new);
                continue;
            }
            // Every slot is taken: the oldest unauthenticated connection
            // makes room (dropping it closes it). Replaced in place, so the
            // indices of this round's `Slot::Accepting` stay valid (the
            // listener is served before them; the newcomer just gets a
            // read that finds nothing).
            let oldest = (0..self.accepting.len())
                .min_by_key(|&k| self.accepting[k].deadline)
                .expect("handshakes_max >= 1");
            self.stats
                .handshakes_evicted
                .fetch_add(1, Ordering::Relaxed);
            self.accepting[oldest] = new;
        }
    }

    /// Reads the HELLO, then the CONFIRM, of `accepting[i]`; true when it
    /// is finished (handed over, or failed and counted). Reads exactly the
    /// bytes of the handshake: frames may follow the CONFIRM at once.
    fn step_accepting(&mut self, i: usize) -> bool {
        // Each iteration reads at least one byte or returns; two messages.
        loop {
            let a = &mut self.accepting[i];
            let want = a.want();
            match a.stream.read(&mut a.buf[a.filled..want]) {
                Ok(0) => {
                    self.stats.handshake_failed(Side::Accept, "closed");
                    return true;
                }
                Ok(k) => {
                    a.filled += k;
                    if a.filled < want {
                        continue;
                    }
                    if a.challenged.is_some() {
                        self.finish_accept(i);
                        return true;
                    }
                    if !self.challenge(i) {
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.stats.handshake_failed(Side::Accept, io_label(&e));
                    return true;
                }
            }
        }
    }

    /// Checks the HELLO of `accepting[i]` and writes our reply with its
    /// fresh challenge; true if the connection now waits for the CONFIRM,
    /// false if it failed (counted).
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
        assert!(peer != self.me && peer.index() < self.keyring.n());
        if self.faults.is_blocked(peer) {
            // Refused before the reply: the dialer sees a failed handshake
            // and backs off instead of redialing at once.
            self.stats
                .peer(peer)
                .fault_drops
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        // A fresh socket's send buffer takes the whole reply at once.
        match (&self.accepting[i].stream).write(&reply) {
            Ok(k) if k == reply.len() => {}
            Ok(_) => {
                self.stats.handshake_failed(Side::Accept, "io");
                return false;
            }
            Err(e) => {
                self.stats.handshake_failed(Side::Accept, io_label(&e));
                return false;
            }
        }
        let a = &mut self.accepting[i];
        a.filled = 0;
        a.challenged = Some(Box::new(challenged));
        true
    }

    /// Checks the CONFIRM of `accepting[i]` and hands the now authenticated
    /// link to the receive side (replacing any live link of that peer).
    fn finish_accept(&mut self, i: usize) {
        let a = &mut self.accepting[i];
        let challenged = a.challenged.take().expect("CONFIRM after the challenge");
        let peer = challenged.peer();
        let open = match challenged.confirm(&a.buf[..CONFIRM_LEN]) {
            Ok(k) => k,
            Err(e) => {
                self.stats.handshake_failed(Side::Accept, e.label());
                return;
            }
        };
        if self.faults.is_blocked(peer) {
            self.stats
                .peer(peer)
                .fault_drops
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let stream = match a.stream.try_clone() {
            Ok(s) => s,
            Err(e) => {
                self.stats.handshake_failed(Side::Accept, io_label(&e));
                return;
            }
        };
        let epoch = self.next_epoch();
        let new = NewInbound {
            peer,
            epoch,
            stream,
            open: Box::new(open),
        };
        match self.to_rx.try_send(new) {
            Ok(()) => {
                self.stats
                    .connections_accepted
                    .fetch_add(1, Ordering::Relaxed);
                self.rx_wake.notify();
            }
            Err(_) => {
                self.stats
                    .handshakes_refused_busy
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        // The peer may have restarted: redial it now rather than after the
        // backoff.
        let now = Instant::now();
        if let Some(d) = self.dials.iter_mut().find(|d| d.peer == peer) {
            if let DialState::Idle { retry_at } = &mut d.state {
                *retry_at = now;
                d.backoff = self.backoff_min;
            }
        }
    }

    fn next_epoch(&mut self) -> u64 {
        let e = self.epoch_next;
        self.epoch_next += 1;
        e
    }

    fn back_off(&mut self, i: usize, now: Instant) {
        let d = &mut self.dials[i];
        d.state = DialState::Idle {
            retry_at: now + d.backoff,
        };
        d.backoff = (d.backoff * 2).min(self.backoff_max);
    }

    fn start_dial(&mut self, i: usize, now: Instant) {
        let addr = self.dials[i].addr;
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .and_then(|s| {
                s.set_nonblocking(true)?;
                s.set_tcp_nodelay(true)?;
                Ok(s)
            });
        let socket = match socket {
            Ok(s) => s,
            Err(_) => {
                self.stats.dial_failures.fetch_add(1, Ordering::Relaxed);
                return self.back_off(i, now);
            }
        };
        let deadline = now + self.handshake_timeout;
        match socket.connect(&addr.into()) {
            Ok(()) => self.start_hello(i, TcpStream::from(socket), deadline),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                self.dials[i].state = DialState::Connecting {
                    stream: TcpStream::from(socket),
                    deadline,
                };
            }
            Err(_) => {
                self.stats.dial_failures.fetch_add(1, Ordering::Relaxed);
                self.back_off(i, now);
            }
        }
    }

    fn start_hello(&mut self, i: usize, stream: TcpStream, deadline: Instant) {
        let cluster = self.keyring.cluster_id();
        let (hello, dialing) = link::dial(&self.identity, cluster, self.me, self.dials[i].peer);
        assert_eq!(hello.len(), DIAL_HELLO_LEN);
        self.dials[i].state = DialState::Hello {
            stream,
            dialing: Some(dialing),
            hello,
            written: 0,
            reply: [0; ACCEPT_HELLO_LEN],
            filled: 0,
            deadline,
        };
        self.step_dial(i, libc::POLLOUT);
    }

    fn step_dial(&mut self, i: usize, revents: i16) {
        let now = Instant::now();
        let error = revents & (libc::POLLERR | libc::POLLHUP) != 0;
        match &mut self.dials[i].state {
            DialState::Idle { .. } => {}
            DialState::Connecting { stream, deadline } => {
                let deadline = *deadline;
                match stream.take_error() {
                    Ok(None) if !error => {
                        let DialState::Connecting { stream, .. } = std::mem::replace(
                            &mut self.dials[i].state,
                            DialState::Idle { retry_at: now },
                        ) else {
                            unreachable!("matched above")
                        };
                        self.start_hello(i, stream, deadline);
                    }
                    _ => {
                        self.stats.dial_failures.fetch_add(1, Ordering::Relaxed);
                        self.back_off(i, now);
                    }
                }
            }
            DialState::Hello { .. } => self.step_hello(i, now),
            DialState::Up { epoch, .. } => {
                // The acceptor never writes: readable means closed.
                let epoch = *epoch;
                let peer = self.dials[i].peer;
                let _ = self.to_tx.try_send(TxLinkEvent::Down { peer, epoch });
                self.stats.connections_reset.fetch_add(1, Ordering::Relaxed);
                self.dials[i].backoff = self.backoff_min;
                self.dials[i].state = DialState::Idle { retry_at: now };
            }
        }
    }

    /// Writes what is left of our HELLO and reads the reply.
    fn step_hello(&mut self, i: usize, now: Instant) {
        let peer = self.dials[i].peer;
        let DialState::Hello {
            stream,
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
        // Each iteration writes at least one byte or stops.
        while *written < hello.len() {
            match stream.write(&hello[*written..]) {
                Ok(k) => *written += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.stats.handshake_failed(Side::Dial, io_label(&e));
                    return self.back_off(i, now);
                }
            }
        }
        // Each iteration reads at least one byte or stops.
        while *filled < ACCEPT_HELLO_LEN {
            match stream.read(&mut reply[*filled..]) {
                Ok(0) => {
                    self.stats.handshake_failed(Side::Dial, "closed");
                    return self.back_off(i, now);
                }
                Ok(k) => *filled += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.stats.handshake_failed(Side::Dial, io_label(&e));
                    return self.back_off(i, now);
                }
            }
        }
        let dialing = dialing.take().expect("one reply per handshake");
        let (seal, confirm) = match dialing.finish(&self.keyring, &reply[..]) {
            Ok(s) => s,
            Err(e) => {
                self.stats.handshake_failed(Side::Dial, e.label());
                return self.back_off(i, now);
            }
        };
        // The acceptor has read our HELLO, so our send buffer is (nearly)
        // empty and takes the CONFIRM at once.
        match stream.write(&confirm) {
            Ok(k) if k == CONFIRM_LEN => {}
            Ok(_) => {
                self.stats.handshake_failed(Side::Dial, "io");
                return self.back_off(i, now);
            }
            Err(e) => {
                self.stats.handshake_failed(Side::Dial, io_label(&e));
                return self.back_off(i, now);
            }
        }
        let watch = match stream.try_clone() {
            Ok(w) => w,
            Err(e) => {
                self.stats.handshake_failed(Side::Dial, io_label(&e));
                return self.back_off(i, now);
            }
        };
        let DialState::Hello { stream, .. } =
            std::mem::replace(&mut self.dials[i].state, DialState::Idle { retry_at: now })
        else {
            unreachable!("matched above")
        };
        let epoch = self.next_epoch();
        let up = TxLinkEvent::Up {
            peer,
            epoch,
            stream,
            seal: Box::new(seal),
        };
        if self.to_tx.try_send(up).is_err() {
            // The send side is gone or far behind: try again later.
            self.stats.dial_failures.fetch_add(1, Ordering::Relaxed);
            return self.back_off(i, now);
        }
        self.stats
            .connections_dialed
            .fetch_add(1, Ordering::Relaxed);
        let d = &mut self.dials[i];
        d.backoff = self.backoff_min;
        d.state = DialState::Up { watch, epoch };
    }
}
