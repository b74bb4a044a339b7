//! The control thread: drives the consensus core with verified messages,
//! this replica's own signed requests, persistence acknowledgements and
//! ticks, and carries out its outputs — signing and sealing messages into
//! the links' write buffers (own copies are fed straight back), handing
//! batches to the storage thread, and decisions to the executor. It is the
//! only writer of every outbound socket: it flushes at the end of each
//! round and on every tick (so a stalled link is retried at least once a
//! tick).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::checkpoint::Prepared;
use control::{ClientTable, Decision, Output, Replica, Target};
use crossbeam_channel::{select, Receiver, Sender, TryRecvError};
use dataplane::{Dest, Outbox};
use nic::{RxPath, TxPath};
use node::{Ack, DiskJob};
use wire::{CheckpointInfo, Cid, Message, Regency, ReplicaId, Request, Verified};

use super::executor::ExecJob;
use super::status::Status;

/// Inputs handled in one round, at most, before the round's flush: they
/// share one write per link.
pub const ROUND_INPUTS_MAX: usize = 64;

/// Everything the control thread owns.
pub struct ControlLoop<T: TxPath, R: RxPath> {
    /// The receive pipeline, when the dataplane runs inline on this thread
    /// (no dedicated cores: one thread wake per message hop instead of
    /// two); `None` when a pinned dataplane thread feeds `inbox`.
    pub inline: Option<dataplane::Receiver<R>>,
    pub core: Replica,
    /// The network, disk and executor as `node::carry_out` sees them.
    pub io: Io<T>,
    /// Verified messages from the dataplane.
    pub inbox: Receiver<Verified<Message>>,
    /// This replica's own requests, signed on the API side: broadcast, then
    /// fed to the core as its own copy.
    pub from_proxy: Receiver<Verified<Request>>,
    /// The proxy, whose overdue requests are sent again every tick.
    pub proxy: Arc<super::proxy::Proxy>,
    /// How long an own request waits before it is sent again.
    pub proxy_retry: Duration,
    /// Durable writes acknowledged by the storage thread.
    pub persisted: Receiver<Ack>,
    /// Checkpoints the executor took.
    pub checkpoints: Receiver<Prepared>,
    /// Links going up and down, from the dataplane.
    pub links: Receiver<(ReplicaId, bool)>,
    pub tick: Duration,
    pub status: Arc<Status>,
    /// A copy of the core's counters, refreshed every tick.
    pub stats: Arc<parking_lot::Mutex<control::Stats>>,
}

/// The control thread's outside world: links, storage thread, executor.
pub struct Io<T: TxPath> {
    /// Owns the send side of every link.
    pub outbox: Outbox<T>,
    /// The storage thread, or `None` with `durability = "memory"`.
    pub storage: Option<Sender<DiskJob>>,
    pub to_executor: Sender<ExecJob>,
    pub hist: Arc<super::status::Histograms>,
    /// Per open instance: when this replica proposed or accepted its
    /// proposal, and when it sent its ACCEPT (for the phase histograms).
    pub timing: std::collections::BTreeMap<Cid, (Instant, Option<Instant>)>,
    /// Bound of `timing` (instances beyond the window never stay open).
    pub timing_max: usize,
}

/// A thread up- or downstream is gone: the replica is stopping.
pub struct Gone;

impl<T: TxPath> node::Host for Io<T> {
    type Error = Gone;

    fn send(
        &mut self,
        _: &Replica,
        to: Target,
        msg: Message,
    ) -> Result<Option<Verified<Message>>, Gone> {
        self.time_phase(&msg);
        let dest = match to {
            Target::All => Dest::All,
            Target::One(r) => Dest::One(r),
        };
        Ok(self.outbox.send(dest, msg))
    }

    fn write(&mut self, _: &Replica, job: DiskJob) -> Result<bool, Gone> {
        match &self.storage {
            Some(st) => st.send(job).map(|_| false).map_err(|_| Gone),
            None => Ok(true), // durability = "memory": nothing to wait for
        }
    }

    fn deliver(&mut self, _: &Replica, d: Decision) -> Result<(), Gone> {
        if let Some((proposed, accepted)) = self.timing.remove(&d.cid) {
            let now = Instant::now();
            self.hist.consensus_instance.observe(now - proposed);
            if let Some(a) = accepted {
                self.hist.accept_phase.observe(now - a);
            }
        }
        self.timing.retain(|&c, _| c > d.cid);
        self.to_executor.send(ExecJob::Decide(d)).map_err(|_| Gone)
    }

    fn install(
        &mut self,
        _: &Replica,
        info: CheckpointInfo,
        app: Vec<u8>,
        clients: ClientTable,
    ) -> Result<(), Gone> {
        tracing::info!(cid = info.cid, "state transfer: installing checkpoint");
        self.to_executor
            .send(ExecJob::Install {
                cid: info.cid,
                app,
                clients,
            })
            .map_err(|_| Gone)
    }

    fn regency(&mut self, _: &Replica, regency: Regency, leader: ReplicaId) -> Result<(), Gone> {
        tracing::info!(regency, leader = leader.0, "regency installed");
        Ok(())
    }
}

/// One input of the control thread.
enum Input {
    Message(Verified<Message>),
    Request(Verified<Request>),
    Persisted(Ack),
    Checkpoint(Prepared),
    Link(ReplicaId, bool),
    /// Nothing came before the deadline.
    Idle,
    /// A thread upstream is gone: the replica is stopping.
    Closed,
}

/// Reusable buffers of the loop (no allocation per round once grown).
#[derive(Default)]
struct Scratch {
    out: Vec<Output>,
    work: Vec<Output>,
    own: VecDeque<Verified<Message>>,
}

impl<T: TxPath, R: RxPath> ControlLoop<T, R> {
    /// Runs until the dataplane hangs up or a thread downstream is gone.
    pub fn run(mut self) {
        let mut s = Scratch::default();
        // After a restart (or at first start), ask whether anything was
        // decided without this replica.
        self.core.catch_up(&mut s.out);
        if self.carry_out(&mut s).is_err() {
            return;
        }
        let mut next_tick = Instant::now() + self.tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let mut input = self.wait_input(wait);
            // One round: the first input (waited for), then whatever else
            // is ready, at most ROUND_INPUTS_MAX; then one flush for all.
            let mut handled = 0;
            loop {
                if self.handle(input, &mut s).is_err() {
                    return;
                }
                handled += 1;
                if handled == ROUND_INPUTS_MAX {
                    break;
                }
                input = self.try_input();
                if matches!(input, Input::Idle) {
                    break;
                }
            }
            if Instant::now() >= next_tick {
                for r in self.proxy.overdue(Instant::now(), self.proxy_retry) {
                    if self.handle(Input::Request(r), &mut s).is_err() {
                        return;
                    }
                }
                self.injected_stall();
                self.core.on_tick(&mut s.out);
                self.take_move_leader(&mut s.out);
                self.stats.lock().clone_from(self.core.stats());
                next_tick += self.tick;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + self.tick; // don't burst after a stall
                }
                if self.carry_out(&mut s).is_err() {
                    return;
                }
            }
            self.io.outbox.flush();
            self.publish();
        }
    }

    /// Waits up to `wait` for one input.
    fn wait_input(&mut self, wait: Duration) -> Input {
        if self.inline.is_some() {
            return self.wait_input_inline(wait);
        }
        select! {
            recv(self.inbox) -> m => m.map_or(Input::Closed, Input::Message),
            recv(self.from_proxy) -> r => match r {
                Ok(r) => Input::Request(r),
                Err(_) => {
                    // The API side is gone; keep serving the others.
                    self.from_proxy = crossbeam_channel::never();
                    Input::Idle
                }
            },
            recv(self.persisted) -> p => p.map_or(Input::Closed, Input::Persisted),
            recv(self.checkpoints) -> c => c.map_or(Input::Closed, Input::Checkpoint),
            recv(self.links) -> l => l.map_or(Input::Closed, |(p, up)| Input::Link(p, up)),
            default(wait) => Input::Idle,
        }
    }

    /// Inline dataplane: inputs already queued first; otherwise one receive
    /// round that blocks in the transport until frames arrive, another
    /// thread wakes it (proxy, storage, executor), or the deadline.
    fn wait_input_inline(&mut self, wait: Duration) -> Input {
        match self.try_input() {
            Input::Idle => {}
            ready => return ready,
        }
        let rx = self.inline.as_mut().expect("inline dataplane");
        if rx.round_with_timeout(wait).is_err() {
            return Input::Closed;
        }
        self.try_input()
    }

    /// One ready input, without waiting: messages first.
    fn try_input(&mut self) -> Input {
        match self.inbox.try_recv() {
            Ok(m) => return Input::Message(m),
            Err(TryRecvError::Disconnected) => return Input::Closed,
            Err(TryRecvError::Empty) => {}
        }
        if let Ok(r) = self.from_proxy.try_recv() {
            return Input::Request(r);
        }
        if let Ok((p, up)) = self.links.try_recv() {
            return Input::Link(p, up);
        }
        if let Ok(p) = self.checkpoints.try_recv() {
            return Input::Checkpoint(p);
        }
        match self.persisted.try_recv() {
            Ok(a) => Input::Persisted(a),
            Err(TryRecvError::Disconnected) => Input::Closed,
            Err(TryRecvError::Empty) => Input::Idle,
        }
    }

    /// Feeds one input to the core and carries out what it asks. Err if a
    /// thread up- or downstream is gone.
    fn handle(&mut self, input: Input, s: &mut Scratch) -> Result<(), ()> {
        match input {
            Input::Message(m) => self.core.on_message(m, &mut s.out),
            Input::Request(r) => {
                // BFT-SMaRt clients send to every replica; this replica's
                // copy goes straight to its core. A leader's own requests
                // travel in its PROPOSE instead (if the regency changes
                // first, the request timeout forwards it to the new leader).
                let own = r.into_message();
                if !self.core.is_leader() || self.core.is_syncing() {
                    self.io.outbox.send_signed(Dest::All, &own);
                }
                self.core.on_message(own, &mut s.out);
            }
            Input::Persisted(ack) => ack.apply(&mut self.core, &mut s.out),
            Input::Checkpoint(p) => self.core.on_checkpoint(p),
            Input::Link(peer, up) => self.core.on_link(peer, up),
            Input::Idle => {}
            Input::Closed => return Err(()),
        }
        self.carry_out(s)
    }

    /// Carries out outputs until none are left (`node::carry_out`, shared
    /// with the simulator). Err if a downstream thread is gone.
    fn carry_out(&mut self, s: &mut Scratch) -> Result<(), ()> {
        node::carry_out(
            &mut self.core,
            &mut self.io,
            &mut s.out,
            &mut s.work,
            &mut s.own,
        )
        .map_err(|Gone| ())
    }

    /// Fault injection (`/debug/stall_control`, only with
    /// `--fault-injection`): sleeps until the stall asked for is over, as a
    /// wedged consensus loop would (bounded by
    /// `api::http::CONTROL_STALL_MAX_MS`).
    fn injected_stall(&self) {
        let until = Status::get(&self.status.stall_control_until_ms);
        if until == 0 {
            return;
        }
        let now = super::status::now_ms();
        if until > now {
            std::thread::sleep(Duration::from_millis(until - now));
        }
        Status::set(&self.status.stall_control_until_ms, 0);
    }

    /// Starts the leader move the API asked for, if any
    /// (`Status::move_leader_to`, Maintenance.MoveLeader).
    fn take_move_leader(&mut self, out: &mut Vec<Output>) {
        let to = self
            .status
            .move_leader_to
            .swap(0, std::sync::atomic::Ordering::Relaxed);
        if to == 0 {
            return;
        }
        let to = ReplicaId((to - 1) as u16);
        match self.core.move_leader(to, out) {
            Ok(regency) => tracing::info!(to = to.0, regency, "moving the leadership"),
            Err(e) => tracing::warn!(to = to.0, "leader move refused: {e}"),
        }
    }

    fn publish(&self) {
        let s = &self.status;
        let now = super::status::now_ms();
        Status::set(&s.regency, self.core.regency() as u64);
        Status::set(&s.leader, self.core.leader().0 as u64);
        if Status::get(&s.last_decided_cid) != self.core.last_decided() {
            Status::set(&s.last_progress_ms, now);
        }
        Status::set(&s.last_decided_cid, self.core.last_decided());
        Status::set(&s.pending_requests, self.core.pending_len() as u64);
        Status::set(&s.proxy_outstanding, self.proxy.outstanding() as u64);
        Status::set(&s.transferring, self.core.is_transferring() as u64);
        Status::set(&s.control_heartbeat_ms, now);
    }
}

impl<T: TxPath> Io<T> {
    /// Notes the phase transitions of an instance from the messages this
    /// replica sends: PROPOSE (leader) or WRITE (backup) starts it, ACCEPT
    /// ends the WRITE phase.
    fn time_phase(&mut self, msg: &Message) {
        let now = Instant::now();
        match msg {
            Message::Propose(p) => {
                self.timing.entry(p.cid).or_insert((now, None));
            }
            Message::Write(w) => {
                self.timing.entry(w.cid).or_insert((now, None));
            }
            Message::Accept(a) => {
                if let Some((proposed, accepted @ None)) = self.timing.get_mut(&a.cid) {
                    *accepted = Some(now);
                    self.hist.write_phase.observe(now - *proposed);
                }
            }
            _ => {}
        }
        while self.timing.len() > self.timing_max {
            self.timing.pop_first();
        }
    }
}
