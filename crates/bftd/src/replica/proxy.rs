//! The proxy: this replica acting as the BFT client of its local etcd
//! clients. It bundles the operations waiting at this replica into one
//! request, signs it with the replica's key under the replica's client id,
//! and hands it to the control thread (which sends it to every replica, as
//! BFT-SMaRt clients do, and to its own core); it keeps the callers' reply
//! channels until the executor answers them.
//!
//! No thread of its own: flat combining. A submission pushes its operation
//! to the bounded queue, then tries to become the combiner (`try_lock`,
//! never waits). The combiner drains the queue into bundles while the
//! de-duplication window has room, signs each and hands it over; after
//! releasing it re-checks the queue, so an operation pushed while it held
//! the lock is never stranded. When the window is full, the executor's
//! answer (which frees a slot) combines instead.
//!
//! At most `requests_in_flight_max` requests are outstanding (at most
//! [`control::clients::WINDOW`], the de-duplication window). With 1, as a
//! BFT-SMaRt client, the operations that arrive while a request is being
//! ordered go together in the next one: under load bundles grow and the
//! cluster runs fewer consensus instances per operation (measured on the
//! 4-replica demo with 32 clients: 0.30 instances per operation and ~4700
//! ops/s, against 0.35–0.5 and 2800–4200 ops/s with 2 to 64 in flight);
//! alone, an operation still goes at once. The queue of operations is
//! bounded and a full queue is refused at entry with etcd's "too many
//! requests".
//!
//! Outstanding requests are sent again ([`Proxy::overdue`], from the
//! control thread's tick) when they wait longer than the retry interval: a
//! request lost on a link that was down, or refused by a replica whose
//! pool was full, is not lost for good (BFT-SMaRt clients retransmit on
//! their timeout too). Copies are harmless: the de-duplication table
//! executes a (client, seq) once.

use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use kv::pb::bftdkv::Command;
use kv::{KvError, Response};
use node::proxy::Outstanding;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use wire::{ClientId, Request, Signature, Signer, Verified};

/// The reply channel of one operation.
pub type Reply = oneshot::Sender<Result<Response, KvError>>;

/// One operation submitted by the API.
pub struct Submission {
    pub command: Command,
    pub reply: Reply,
}

/// What the executor sees of the proxy: it takes the reply channels of a
/// request it answers.
pub type Waiters = Proxy;

/// The API's handle for submitting operations.
#[derive(Clone)]
pub struct ProxyHandle {
    proxy: Arc<Proxy>,
}

/// Why a submission was refused at entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The operation queue is full.
    Overloaded,
    /// The replica is shutting down.
    Stopped,
}

impl ProxyHandle {
    /// Queues an operation and bundles what is queued if no one else is
    /// doing it; never blocks.
    pub fn submit(&self, command: Command, reply: Reply) -> Result<(), Refused> {
        self.proxy.submit(command, reply)
    }
}

/// The combiner's state (behind `try_lock`).
struct Combiner {
    signer: Signer,
    /// Sequence number of the next request (above any earlier run's).
    next_seq: u64,
    /// The bundle being built (capacity `bundle_ops_max`).
    bundle: Vec<Submission>,
    bundle_ops_max: usize,
}

/// The proxy's shared state (see the module docs).
pub struct Proxy {
    queue_tx: Sender<Submission>,
    queue: Receiver<Submission>,
    combiner: Mutex<Combiner>,
    /// Outstanding requests, by seq (`node::proxy`, shared with the
    /// simulator's proxy); time in ms since `epoch`.
    by_seq: Mutex<Outstanding<Vec<Reply>>>,
    epoch: Instant,
    /// Requests handed to control and not yet answered (`<= window`).
    outstanding: AtomicUsize,
    /// Requests outstanding at most.
    window: usize,
    /// Signed requests to the control thread; capacity `window`, so it is
    /// never full (each holds an outstanding slot).
    to_control: Sender<Verified<Request>>,
    /// Wakes the control thread when it waits in the transport (inline
    /// dataplane).
    wake: Option<nic::RxWaker>,
    stopped: AtomicBool,
}

impl Proxy {
    /// A proxy signing with `signer` from sequence `first_seq`, with a
    /// queue of `queue_ops_max` operations, bundles of at most
    /// `bundle_ops_max` and at most `requests_in_flight_max` requests
    /// outstanding; returns the API's handle, the shared proxy (for the
    /// executor) and the control thread's end of the request channel.
    pub fn start(
        signer: Signer,
        first_seq: u64,
        queue_ops_max: usize,
        bundle_ops_max: usize,
        requests_in_flight_max: usize,
        wake: Option<nic::RxWaker>,
    ) -> (ProxyHandle, Arc<Proxy>, Receiver<Verified<Request>>) {
        assert!(queue_ops_max > 0 && bundle_ops_max > 0);
        assert!(
            (1..=control::clients::WINDOW as usize).contains(&requests_in_flight_max),
            "requests in flight within the de-duplication window"
        );
        let window = requests_in_flight_max;
        let (queue_tx, queue) = crossbeam_channel::bounded(queue_ops_max);
        let (to_control, from_proxy) = crossbeam_channel::bounded(window);
        let proxy = Arc::new(Proxy {
            queue_tx,
            queue,
            combiner: Mutex::new(Combiner {
                signer,
                next_seq: first_seq,
                bundle: Vec::with_capacity(bundle_ops_max),
                bundle_ops_max,
            }),
            by_seq: Mutex::new(Outstanding::new(window)),
            epoch: Instant::now(),
            outstanding: AtomicUsize::new(0),
            window,
            to_control,
            wake,
            stopped: AtomicBool::new(false),
        });
        (
            ProxyHandle {
                proxy: proxy.clone(),
            },
            proxy,
            from_proxy,
        )
    }

    fn submit(&self, command: Command, reply: Reply) -> Result<(), Refused> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(Refused::Stopped);
        }
        self.queue_tx
            .try_send(Submission { command, reply })
            .map_err(|e| match e {
                TrySendError::Full(_) => Refused::Overloaded,
                TrySendError::Disconnected(_) => Refused::Stopped,
            })?;
        // Pairs with the fence after the combiner's unlock: either we get
        // the lock, or its holder sees our operation when it re-checks.
        fence(Ordering::SeqCst);
        self.combine();
        Ok(())
    }

    /// Requests sent for ordering and not yet answered (at most the
    /// window).
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::SeqCst)
    }

    /// Takes the reply channels of request `seq` (called by the executor
    /// when it answers it), frees its window slot, and bundles what waited
    /// for the slot.
    pub fn take(&self, seq: u64) -> Option<Vec<Reply>> {
        let replies = self.by_seq.lock().take(seq)?;
        let before = self.outstanding.fetch_sub(1, Ordering::SeqCst);
        assert!(before > 0, "an answered request held a slot");
        fence(Ordering::SeqCst);
        self.combine();
        Some(replies)
    }

    /// Takes the reply channels of every outstanding request for which
    /// `executed(seq)` holds (state transfer installed a checkpoint that
    /// already includes them), freeing their slots.
    pub fn take_executed(&self, executed: impl Fn(u64) -> bool) -> Vec<Vec<Reply>> {
        let taken: Vec<Vec<Reply>> = self
            .by_seq
            .lock()
            .take_executed(executed)
            .into_iter()
            .map(|(_, replies)| replies)
            .collect();
        for _ in &taken {
            let before = self.outstanding.fetch_sub(1, Ordering::SeqCst);
            assert!(before > 0, "an answered request held a slot");
        }
        fence(Ordering::SeqCst);
        self.combine();
        taken
    }

    /// The outstanding requests last sent `after` or longer before `now`,
    /// oldest seq first (at most the window), marked as sent again at
    /// `now`: the control thread sends them to every replica again.
    pub fn overdue(&self, now: Instant, after: Duration) -> Vec<Verified<Request>> {
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        self.by_seq.lock().overdue(now_ms, after.as_millis() as u64)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Bundles queued operations if no one else is. Bounded: each pass
    /// sends at least one bundle or returns, and the queue is bounded.
    fn combine(&self) {
        loop {
            {
                let Some(mut c) = self.combiner.try_lock() else {
                    return; // the holder re-checks after releasing
                };
                self.drain(&mut c);
            }
            fence(Ordering::SeqCst);
            if self.queue.is_empty()
                || self.outstanding.load(Ordering::SeqCst) >= self.window
                || self.stopped.load(Ordering::SeqCst)
            {
                return;
            }
        }
    }

    /// Sends bundles while operations wait and the window has room.
    fn drain(&self, c: &mut Combiner) {
        // Each iteration sends one bundle (bounded by the queue) or stops.
        while self.outstanding.load(Ordering::SeqCst) < self.window
            && !self.stopped.load(Ordering::SeqCst)
        {
            while c.bundle.len() < c.bundle_ops_max {
                match self.queue.try_recv() {
                    Ok(s) => c.bundle.push(s),
                    Err(_) => break,
                }
            }
            if c.bundle.is_empty() {
                return;
            }
            self.send_bundle(c);
        }
    }

    fn send_bundle(&self, c: &mut Combiner) {
        let seq = c.next_seq;
        c.next_seq += 1;
        let commands: Vec<Command> = c.bundle.iter().map(|s| s.command.clone()).collect();
        let replies: Vec<Reply> = c.bundle.drain(..).map(|s| s.reply).collect();
        let payload = kv::command::encode_batch(&commands);
        let client = ClientId::of_replica(c.signer.id());
        let signed = c
            .signer
            .sign_request(Request::new(client, seq, payload, Signature::PENDING));
        let now = self.now_ms();
        self.by_seq.lock().insert(seq, replies, signed.clone(), now);
        let before = self.outstanding.fetch_add(1, Ordering::SeqCst);
        assert!(
            before < self.window,
            "outstanding requests within the window"
        );
        match self.to_control.try_send(signed) {
            Ok(()) => {
                if let Some(w) = &self.wake {
                    w.wake();
                }
            }
            Err(TrySendError::Full(_)) => {
                unreachable!("the channel holds at most `window` outstanding requests")
            }
            Err(TrySendError::Disconnected(_)) => {
                // The control thread stopped: so does the replica. The
                // callers see their reply channels close.
                self.stopped.store(true, Ordering::SeqCst);
                self.by_seq.lock().take(seq);
                self.outstanding.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}
