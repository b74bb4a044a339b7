//! The receive pipeline: frames from the transport, cheapest checks first.
//!
//! 1. the transport reads the sockets itself and serves peers round-robin
//!    with a per-peer budget ([`nic::RxPath::poll`]);
//! 2. each frame, borrowed from the link's read buffer, is matched to its
//!    link's current epoch and opened in place (size, version, sender,
//!    sequence, AEAD tag — [`wire::link::OpenKey::open`]); a frame that
//!    fails resets its link ([`nic::RxPath::reset_link`]): its key does not
//!    advance past a bad frame, so the link could never deliver again;
//! 3. the message is decoded within the cluster's [`Limits`], and PROPOSE
//!    batches are hashed while decoding;
//! 4. signatures of everything received in this round are verified in one
//!    ed25519 batch (bounded by `verify_batch_max`, and never waiting for
//!    more input: the latency cap is one poll);
//! 5. verified messages go to the control thread's bounded queue.
//!
//! Junk dies at the first failed check, before any signature work. WRITE and
//! ACCEPT cross steps 1–3 without a heap allocation (REQUEST and PROPOSE
//! allocate their payloads once, in decode); see `tests/alloc.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use nic::{RxEvent, RxPath};
use wire::link::OpenKey;
use wire::{Limits, Message, ReplicaId, Verified, Verifier};

use crate::stats::DataplaneStats;

/// Bounds of the receive loop.
#[derive(Debug, Clone, Copy)]
pub struct RxConfig {
    /// Most events taken from the transport per round.
    pub events_per_round_max: usize,
    /// Most frames taken from one peer per round.
    pub rx_budget_per_peer: usize,
    /// Most messages in one verification batch.
    pub verify_batch_max: usize,
    /// How long one poll waits when nothing arrives.
    pub poll_timeout: Duration,
    /// After a round that handled traffic, keep polling without sleeping
    /// for up to this long before blocking (a thread wake-up costs tens of
    /// microseconds; the next message of a consensus round is usually that
    /// close). Zero turns spinning off.
    pub spin: Duration,
}

impl Default for RxConfig {
    fn default() -> Self {
        Self {
            events_per_round_max: 256,
            rx_budget_per_peer: 32,
            verify_batch_max: 64,
            poll_timeout: Duration::from_millis(50),
            spin: Duration::ZERO,
        }
    }
}

/// The control thread hung up: the replica is shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnected;

/// The receive stage of one replica: owns the transport's receive side and
/// the verifier; runs on the dataplane thread.
pub struct Receiver<R: RxPath> {
    rx: R,
    cfg: RxConfig,
    stage: Stage,
}

/// Everything but the transport, so the poll callback can borrow it.
struct Stage {
    /// The current link of each peer: its epoch and key.
    links: Vec<Option<(u64, Box<OpenKey>)>>,
    verifier: Verifier,
    limits: Limits,
    verify_batch_max: usize,
    to_control: Sender<Verified<Message>>,
    stats: Arc<DataplaneStats>,
    /// Decoded, not yet verified (at most `verify_batch_max`).
    pending: Vec<(ReplicaId, Message)>,
    disconnected: bool,
    /// Where link ups and downs are reported (peer, up), if anywhere.
    link_events: Option<Sender<(ReplicaId, bool)>>,
    /// Links (peer, epoch) whose frame did not open, to reset after the
    /// poll (at most one per peer).
    resets: Vec<(ReplicaId, u64)>,
}

impl<R: RxPath> Receiver<R> {
    /// `n` replicas; verified messages go to `to_control`.
    pub fn new(
        rx: R,
        n: usize,
        verifier: Verifier,
        limits: Limits,
        cfg: RxConfig,
        to_control: Sender<Verified<Message>>,
        stats: Arc<DataplaneStats>,
    ) -> Self {
        assert!(
            cfg.events_per_round_max > 0 && cfg.rx_budget_per_peer > 0 && cfg.verify_batch_max > 0
        );
        Self {
            rx,
            stage: Stage {
                links: (0..n).map(|_| None).collect(),
                verifier,
                limits,
                verify_batch_max: cfg.verify_batch_max,
                to_control,
                stats,
                pending: Vec::with_capacity(cfg.verify_batch_max),
                disconnected: false,
                link_events: None,
                resets: Vec::with_capacity(n),
            },
            cfg,
        }
    }

    /// Reports every link up and down, `(peer, up)`, to `events` (the
    /// control thread uses them to suspect a crashed leader). A full queue
    /// drops the event: the next one carries the newer state.
    pub fn with_link_events(mut self, events: Sender<(ReplicaId, bool)>) -> Self {
        self.stage.link_events = Some(events);
        self
    }

    pub fn transport(&self) -> &R {
        &self.rx
    }

    /// One round: poll (reading the sockets), open, decode, verify,
    /// forward. Returns the number of transport events handled.
    pub fn round(&mut self) -> Result<usize, Disconnected> {
        self.round_with_timeout(self.cfg.poll_timeout)
    }

    /// One round that blocks at most `timeout` when nothing is ready (used
    /// by a control thread that runs the dataplane inline).
    pub fn round_with_timeout(&mut self, timeout: Duration) -> Result<usize, Disconnected> {
        let stage = &mut self.stage;
        let got = self.rx.poll(
            self.cfg.events_per_round_max,
            self.cfg.rx_budget_per_peer,
            timeout,
            &mut |ev| stage.on_event(ev),
        );
        self.stage.verify_pending();
        // Bounded: at most one entry per peer.
        for (peer, epoch) in self.stage.resets.drain(..) {
            self.rx.reset_link(peer, epoch);
        }
        if self.stage.disconnected {
            return Err(Disconnected);
        }
        Ok(got)
    }

    /// Runs rounds until the control thread hangs up.
    pub fn run(mut self) {
        let mut active_until: Option<std::time::Instant> = None;
        loop {
            // Spin (non-blocking polls) for a short while after traffic;
            // block otherwise. Bounded: the spell ends at `active_until`.
            let now = std::time::Instant::now();
            let timeout = match active_until {
                Some(t) if now < t => Duration::ZERO,
                _ => self.cfg.poll_timeout,
            };
            match self.round_with_timeout(timeout) {
                Err(Disconnected) => return,
                Ok(0) if timeout.is_zero() => std::hint::spin_loop(),
                Ok(0) => active_until = None,
                Ok(_) => {
                    if !self.cfg.spin.is_zero() {
                        active_until = Some(std::time::Instant::now() + self.cfg.spin);
                    }
                }
            }
        }
    }
}

impl Stage {
    fn report_link(&self, peer: ReplicaId, up: bool) {
        if let Some(tx) = &self.link_events {
            let _ = tx.try_send((peer, up));
        }
    }

    fn on_event(&mut self, ev: RxEvent<'_>) {
        match ev {
            RxEvent::LinkUp { peer, epoch, open } => {
                if let Some(slot) = self.links.get_mut(peer.index()) {
                    *slot = Some((epoch, open));
                    self.report_link(peer, true);
                }
            }
            RxEvent::LinkDown { peer, epoch } => {
                if let Some(slot) = self.links.get_mut(peer.index()) {
                    if slot.as_ref().is_some_and(|(e, _)| *e == epoch) {
                        *slot = None;
                        self.report_link(peer, false);
                    }
                }
            }
            RxEvent::Frame { peer, epoch, frame } => {
                self.stats.frames_rx.fetch_add(1, Ordering::Relaxed);
                let Some(Some((current, key))) = self.links.get_mut(peer.index()) else {
                    self.stats.no_link();
                    return;
                };
                if *current != epoch {
                    self.stats.stale_epoch();
                    return;
                }
                let plain = match key.open(frame) {
                    Ok(p) => p,
                    Err(e) => {
                        // The key stays at the bad frame's sequence: no
                        // later frame of this link opens. Forget the link
                        // and have the transport reset it; the peer
                        // handshakes afresh.
                        self.stats.frame_drop(&e);
                        // A newer link of the peer replaced the listed
                        // one already: reset the newer one instead.
                        match self.resets.iter_mut().find(|(p, _)| *p == peer) {
                            Some(listed) => listed.1 = epoch,
                            None => self.resets.push((peer, epoch)),
                        }
                        assert!(self.resets.len() <= self.links.len());
                        self.links[peer.index()] = None;
                        self.report_link(peer, false);
                        return;
                    }
                };
                self.stats
                    .frames_authenticated
                    .fetch_add(1, Ordering::Relaxed);
                match Message::decode(plain, &self.limits) {
                    Ok(m) => self.pending.push((peer, m)),
                    Err(e) => self.stats.decode_drop(&e),
                }
                if self.pending.len() >= self.verify_batch_max {
                    self.verify_pending();
                }
            }
        }
    }

    /// Verifies what is pending in one batch and forwards the good ones.
    fn verify_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        assert!(self.pending.len() <= self.verify_batch_max);
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(self.verify_batch_max));
        self.stats.verify_batches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .verify_batch_messages
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let verified = self.verifier.verify_batch(batch);
        self.stats.verify_seconds.observe(started.elapsed());
        for r in verified {
            match r {
                Ok(v) => {
                    self.stats.messages_verified.fetch_add(1, Ordering::Relaxed);
                    // Blocking: the transport is not read meanwhile, so
                    // backpressure reaches the peers' sockets (TCP flow
                    // control) and their bounded write buffers.
                    if !self.disconnected && self.to_control.send(v).is_err() {
                        self.disconnected = true;
                    }
                }
                Err(e) => self.stats.verify_drop(&e),
            }
        }
    }
}
