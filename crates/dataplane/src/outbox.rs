//! The send side: sign this replica's messages, encode each once into a
//! reusable buffer, seal it into every destination link's write buffer, and
//! hand this replica's own copy back verified.
//!
//! Owned by the control thread (it owns the transport's [`TxPath`]): one
//! ed25519 signature per PROPOSE or ACCEPT, no thread hop, no allocation per
//! message once the encode buffer has grown to the largest message (PROPOSE
//! and REQUEST allocate their payloads where they are built, not here).
//! Nothing leaves before [`Outbox::flush`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use nic::TxPath;
use wire::codec::Writer;
use wire::{Message, ReplicaId, Request, Signer, Verified};

use crate::stats::DataplaneStats;

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// Every replica; this replica's copy is returned to the caller.
    All,
    /// One replica (if it is this one, the copy is returned).
    One(ReplicaId),
}

/// Signs and sends one replica's messages over the transport it owns.
pub struct Outbox<T: TxPath> {
    signer: Signer,
    tx: T,
    stats: Arc<DataplaneStats>,
    /// The encoding of the message being sent (reused: grows to the
    /// largest message once).
    encoded: Vec<u8>,
}

impl<T: TxPath> Outbox<T> {
    /// Messages leave through `tx`; `signer` must be of `tx.me()`.
    pub fn new(signer: Signer, tx: T, stats: Arc<DataplaneStats>) -> Self {
        assert_eq!(signer.id(), tx.me(), "signer and transport of one replica");
        Self {
            signer,
            tx,
            stats,
            encoded: Vec::new(),
        }
    }

    pub fn me(&self) -> ReplicaId {
        self.signer.id()
    }

    /// The transport (for its counters and fault switch).
    pub fn tx(&self) -> &T {
        &self.tx
    }

    /// The transport, to send raw bytes (tests).
    pub fn tx_mut(&mut self) -> &mut T {
        &mut self.tx
    }

    /// Signs `msg` (if its kind is signed), seals it for `dest`, and returns
    /// this replica's own verified copy when `dest` includes this replica.
    pub fn send(&mut self, dest: Dest, msg: Message) -> Option<Verified<Message>> {
        let signed = self.signer.sign(msg);
        self.send_signed(dest, &signed);
        match dest {
            Dest::All => Some(signed),
            Dest::One(p) if p == self.me() => Some(signed),
            Dest::One(_) => None,
        }
    }

    /// Seals an already signed message of this replica for `dest` (e.g. a
    /// request bundle signed on the API side). This replica itself is
    /// skipped: the caller holds the copy.
    pub fn send_signed(&mut self, dest: Dest, signed: &Verified<Message>) {
        let me = self.me();
        if dest == Dest::One(me) {
            return;
        }
        let mut w = Writer::from_vec(std::mem::take(&mut self.encoded));
        signed.encode_into(&mut w);
        self.encoded = w.into_vec();
        let (sent, tried) = match dest {
            Dest::All => (self.tx.send_all(&self.encoded), self.tx.n() - 1),
            Dest::One(p) => (self.tx.send(p, &self.encoded).is_ok() as usize, 1),
        };
        self.encoded.clear();
        assert!(sent <= tried);
        self.stats
            .messages_tx
            .fetch_add(sent as u64, Ordering::Relaxed);
        self.stats
            .tx_drops
            .fetch_add((tried - sent) as u64, Ordering::Relaxed);
    }

    /// Signs a request of this replica's proxy client, seals it for every
    /// replica, and returns the own copy.
    pub fn send_request(&mut self, request: Request) -> Verified<Message> {
        let signed = self.signer.sign_request(request).into_message();
        self.send_signed(Dest::All, &signed);
        signed
    }

    /// Writes what was sealed (see [`TxPath::flush`]).
    pub fn flush(&mut self) {
        self.tx.flush();
    }
}
