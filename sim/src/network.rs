//! The fake network: every message between replicas is a [`Packet`] with a
//! delivery tick drawn from the seeded stream. Random delays reorder;
//! duplication, loss and partitions (symmetric or one-way, holding or
//! dropping, each with a start and a heal tick) are the faults. Nothing is
//! delivered in the tick it was sent.

use std::collections::BTreeMap;

use wire::{Message, ReplicaId};

use crate::params::{NetworkParams, PartitionMode};
use crate::rng::Prng;
use crate::trace::{message_words, Trace};

/// A message on the wire.
#[derive(Debug, Clone)]
pub struct Packet {
    /// Sender (the link it arrives on).
    pub from: ReplicaId,
    /// Receiver.
    pub to: ReplicaId,
    /// The message, not yet verified.
    pub msg: Message,
    /// When it was sent.
    pub sent_tick: u64,
}

/// Counters of the network.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NetStats {
    /// Messages put on the wire.
    pub sent: u64,
    /// Messages handed to a receiver.
    pub delivered: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Messages lost (loss faults).
    pub lost: u64,
    /// Messages dropped by a dropping partition.
    pub partition_dropped: u64,
    /// Messages held until a holding partition healed.
    pub partition_held: u64,
}

/// Packets in flight, ordered by `(delivery tick, send order)`.
pub struct Network {
    params: NetworkParams,
    rng: Prng,
    in_flight: BTreeMap<(u64, u64), Packet>,
    next_order: u64,
    /// Safety phase: loss, duplication, spikes and partitions apply.
    faults_active: bool,
    /// Counters.
    pub stats: NetStats,
}

impl Network {
    /// An empty network with these faults.
    pub fn new(params: NetworkParams, rng: Prng) -> Self {
        assert!(params.delay_min_ticks >= 1);
        Self {
            params,
            rng,
            in_flight: BTreeMap::new(),
            next_order: 0,
            faults_active: true,
            stats: NetStats::default(),
        }
    }

    /// Ends the safety phase: no more loss, duplication, delay spikes or
    /// partitions (all scheduled ones have healed by now).
    pub fn heal(&mut self, now: u64) {
        self.faults_active = false;
        assert!(self.params.partitions.iter().all(|p| p.heal_tick <= now));
    }

    fn delay(&mut self) -> u64 {
        let p = &self.params;
        let (lo, hi, spike_ppm, spike_max) = (
            p.delay_min_ticks,
            p.delay_max_ticks,
            p.spike_ppm,
            p.spike_max_ticks,
        );
        let mut d = self.rng.range(lo, hi);
        if self.faults_active && self.rng.chance_ppm(spike_ppm) {
            d += self.rng.range(1, spike_max);
        }
        d
    }

    fn schedule(&mut self, due: u64, p: Packet, trace: &mut Trace) {
        let (k, a, b) = message_words(&p.msg);
        trace.event(
            p.sent_tick,
            b's',
            &[p.from.0 as u64, p.to.0 as u64, k, a, b, due],
            || {
                format!(
                    "send {:?}->{:?} {} due t{due}",
                    p.from,
                    p.to,
                    crate::trace::describe(&p.msg)
                )
            },
        );
        self.in_flight.insert((due, self.next_order), p);
        self.next_order += 1;
    }

    /// Puts `msg` on the wire from `from` to `to` (never to itself).
    pub fn send(
        &mut self,
        now: u64,
        from: ReplicaId,
        to: ReplicaId,
        msg: Message,
        extra_delay_ticks: u64,
        trace: &mut Trace,
    ) {
        assert_ne!(from, to, "a replica's own copy never crosses the network");
        self.stats.sent += 1;
        if self.faults_active && self.rng.chance_ppm(self.params.loss_ppm) {
            self.stats.lost += 1;
            trace.event(now, b'l', &[from.0 as u64, to.0 as u64], || {
                format!("lost {from:?}->{to:?} {}", crate::trace::describe(&msg))
            });
            return;
        }
        if self.faults_active && self.rng.chance_ppm(self.params.duplicate_ppm) {
            self.stats.duplicated += 1;
            let due = now + self.delay() + extra_delay_ticks;
            let copy = Packet {
                from,
                to,
                msg: msg.clone(),
                sent_tick: now,
            };
            self.schedule(due, copy, trace);
        }
        let due = now + self.delay() + extra_delay_ticks;
        let p = Packet {
            from,
            to,
            msg,
            sent_tick: now,
        };
        self.schedule(due, p, trace);
    }

    /// The partition cutting `from -> to` at `now`, if any: its heal tick
    /// and whether it drops.
    fn cut(&self, from: ReplicaId, to: ReplicaId, now: u64) -> Option<(u64, bool)> {
        if !self.faults_active {
            return None;
        }
        let mut found: Option<(u64, bool)> = None;
        for p in self
            .params
            .partitions
            .iter()
            .filter(|p| p.cuts(from, to, now))
        {
            let drop = p.mode == PartitionMode::Drop;
            let (heal, d) = found.unwrap_or((0, false));
            found = Some((heal.max(p.heal_tick), d || drop));
        }
        found
    }

    /// Removes and returns the packets due at or before `now`, in delivery
    /// order. Packets across a partition are dropped or held until it heals.
    pub fn take_due(&mut self, now: u64, trace: &mut Trace) -> Vec<Packet> {
        let mut out = Vec::new();
        let mut held = Vec::new();
        while let Some(entry) = self.in_flight.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let p = entry.remove();
            match self.cut(p.from, p.to, now) {
                None => {
                    self.stats.delivered += 1;
                    out.push(p);
                }
                Some((_, true)) => {
                    self.stats.partition_dropped += 1;
                    trace.event(now, b'x', &[p.from.0 as u64, p.to.0 as u64], || {
                        format!(
                            "partition drops {:?}->{:?} {}",
                            p.from,
                            p.to,
                            crate::trace::describe(&p.msg)
                        )
                    });
                }
                Some((heal, false)) => held.push((heal, p)),
            }
        }
        for (heal, p) in held {
            self.stats.partition_held += 1;
            let due = heal + self.delay();
            self.schedule(due, p, trace);
        }
        out
    }

    /// Packets in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// True if some packet in flight goes between two replicas for which
    /// `both` holds.
    pub fn any_between(&self, both: impl Fn(ReplicaId) -> bool) -> bool {
        self.in_flight.values().any(|p| both(p.from) && both(p.to))
    }
}
