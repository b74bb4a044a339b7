//! Counters of a transport: relaxed atomics written by the threads that
//! drive it (dataplane, control, connector), read by anyone through
//! [`NicStats::snapshot`] or [`NicStats::metrics`].

use std::sync::atomic::{AtomicU64, Ordering};

use wire::ReplicaId;

/// Labels of `handshake_failures`: every [`wire::link::HandshakeError`]
/// label, then the I/O outcomes `timeout` (no complete HELLO and CONFIRM
/// within the handshake timeout: also what a replayed HELLO ends as),
/// `closed` (the other side closed first), `io` (any other socket error),
/// and `other` (a label this build does not know).
pub const HANDSHAKE_FAILURE_LABELS: [&str; 13] = [
    "malformed",
    "wrong_cluster",
    "unknown_replica",
    "wrong_addressee",
    "wrong_peer",
    "not_fresh",
    "bad_signature",
    "weak_exchange",
    "bad_confirm",
    "timeout",
    "closed",
    "io",
    "other",
];

const LABELS: usize = HANDSHAKE_FAILURE_LABELS.len();

/// Labels of `rx_junk_drops`: why a kernel-bypass transport dropped a
/// received packet in its poll loop before any copy (the kernel's TCP
/// transport never counts these: the kernel drops such packets itself).
/// `runt`: shorter than its headers, or chained mbufs; `not_ipv4_or_arp`:
/// another EtherType; `not_ours`: unicast to another MAC or IPv4 address,
/// or an ARP not asking for ours; `unknown_source`: IPv4 from an address
/// that is no peer's; `not_tcp`: another IP protocol; `fragment`: an IP
/// fragment; `wrong_port`: TCP neither to the replica port nor from a
/// peer's replica port.
pub const RX_JUNK_LABELS: [&str; 7] = [
    "runt",
    "not_ipv4_or_arp",
    "not_ours",
    "unknown_source",
    "not_tcp",
    "fragment",
    "wrong_port",
];

const JUNK: usize = RX_JUNK_LABELS.len();

fn label_index(label: &str) -> usize {
    HANDSHAKE_FAILURE_LABELS
        .iter()
        .position(|l| *l == label)
        .unwrap_or(LABELS - 1)
}

/// Which side of a handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Accept,
    Dial,
}

#[derive(Default)]
pub(crate) struct PeerCounters {
    pub(crate) rx_frames: AtomicU64,
    pub(crate) rx_bytes: AtomicU64,
    pub(crate) tx_frames: AtomicU64,
    pub(crate) tx_bytes: AtomicU64,
    pub(crate) tx_drops: AtomicU64,
    pub(crate) tx_lost: AtomicU64,
    pub(crate) rx_budget_exhausted: AtomicU64,
    pub(crate) rx_lost: AtomicU64,
    pub(crate) fault_drops: AtomicU64,
    pub(crate) bad_frame_resets: AtomicU64,
}

/// Counters of one transport (all `u64`, relaxed atomics). Per-peer counters
/// are indexed by replica id, `0..n`.
pub struct NicStats {
    pub(crate) peers: Vec<PeerCounters>,
    pub(crate) oversize_frames: AtomicU64,
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_dialed: AtomicU64,
    pub(crate) connections_reset: AtomicU64,
    pub(crate) connections_replaced: AtomicU64,
    pub(crate) dial_failures: AtomicU64,
    pub(crate) handshakes_refused_busy: AtomicU64,
    pub(crate) handshakes_evicted: AtomicU64,
    pub(crate) handshake_failures_accept: [AtomicU64; LABELS],
    pub(crate) handshake_failures_dial: [AtomicU64; LABELS],
    pub(crate) rx_junk_drops: [AtomicU64; JUNK],
}

/// Plain copy of one peer's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStatsSnapshot {
    /// Frames received from the peer (before the dataplane opens them).
    pub rx_frames: u64,
    /// Bytes of those frames (without the 4-byte length prefix).
    pub rx_bytes: u64,
    /// Frames written to the peer's socket (or queue, in memory).
    pub tx_frames: u64,
    /// Bytes of those frames (without the 4-byte length prefix).
    pub tx_bytes: u64,
    /// Messages refused by `send` because the peer's write buffer (or,
    /// while its link is down, its unsealed queue) was full.
    pub tx_drops: u64,
    /// Frames sealed but lost because their connection died before they
    /// were written whole.
    pub tx_lost: u64,
    /// Polls that ended the peer's turn with frames still waiting: its
    /// per-poll budget was used up (the rest waits in its socket; TCP
    /// flow control then pushes back on the sender).
    pub rx_budget_exhausted: u64,
    /// Complete frames read from the peer but discarded because their
    /// connection closed or was replaced before they were delivered.
    pub rx_lost: u64,
    /// Messages, frames or handshakes dropped by the fault switch, both
    /// directions.
    pub fault_drops: u64,
    /// Links from the peer reset because a frame did not open (bad tag,
    /// or any other check of [`wire::link::OpenKey::open`]): the receiver
    /// asked for it with [`crate::RxPath::reset_link`]; the peer redials.
    pub bad_frame_resets: u64,
}

/// Plain copy of all counters of a transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicStatsSnapshot {
    /// Indexed by replica id, `0..n`.
    pub peers: Vec<PeerStatsSnapshot>,
    /// Length prefixes above `message_bytes_max + FRAME_OVERHEAD`; each
    /// closed its connection (checked before the length is used: nothing
    /// is allocated or read for it).
    pub oversize_frames: u64,
    pub connections_accepted: u64,
    pub connections_dialed: u64,
    /// Outbound connections that failed after their handshake (the peer
    /// closed it, or a write failed).
    pub connections_reset: u64,
    /// Inbound connections replaced by a newer one from the same peer.
    pub connections_replaced: u64,
    /// Outbound TCP connects that failed (refused, unreachable, timeout).
    pub dial_failures: u64,
    /// Authenticated inbound links dropped because the receive side was not
    /// taking new links (its channel full).
    pub handshakes_refused_busy: u64,
    /// Unauthenticated inbound connections closed to make room for a newer
    /// one: every one of the `handshakes_in_flight_max` slots was taken.
    pub handshakes_evicted: u64,
    /// Per label of [`HANDSHAKE_FAILURE_LABELS`], same order.
    pub handshake_failures_accept: [u64; LABELS],
    /// Per label of [`HANDSHAKE_FAILURE_LABELS`], same order.
    pub handshake_failures_dial: [u64; LABELS],
    /// Packets dropped in a kernel-bypass poll loop before any copy, per
    /// label of [`RX_JUNK_LABELS`], same order (always 0 for TCP).
    pub rx_junk_drops: [u64; JUNK],
}

impl NicStatsSnapshot {
    /// Failed inbound handshakes with `label` (0 for an unknown label).
    pub fn accept_failures(&self, label: &str) -> u64 {
        HANDSHAKE_FAILURE_LABELS
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.handshake_failures_accept[i])
    }
    /// Packets dropped as junk with `label` (0 for an unknown label).
    pub fn junk_drops(&self, label: &str) -> u64 {
        RX_JUNK_LABELS
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.rx_junk_drops[i])
    }
    /// Failed inbound handshakes, all labels.
    pub fn accept_failures_total(&self) -> u64 {
        self.handshake_failures_accept.iter().sum()
    }
    /// Counters of `peer` (zeros for an id outside the cluster).
    pub fn peer(&self, peer: ReplicaId) -> PeerStatsSnapshot {
        self.peers.get(peer.index()).copied().unwrap_or_default()
    }
}

/// One metric sample for an exporter: Prometheus-style `name`
/// (`nic_*_total`), label pairs, value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: u64,
}

/// Per-peer counters, each one metric.
const PER_PEER: usize = 10;
/// Counters without labels, each one metric.
const GLOBAL: usize = 8;

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl NicStats {
    /// Zeroed counters for a cluster of `n` replicas.
    pub fn new(n: usize) -> Self {
        Self {
            peers: (0..n).map(|_| PeerCounters::default()).collect(),
            oversize_frames: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            connections_dialed: AtomicU64::new(0),
            connections_reset: AtomicU64::new(0),
            connections_replaced: AtomicU64::new(0),
            dial_failures: AtomicU64::new(0),
            handshakes_refused_busy: AtomicU64::new(0),
            handshakes_evicted: AtomicU64::new(0),
            handshake_failures_accept: Default::default(),
            handshake_failures_dial: Default::default(),
            rx_junk_drops: Default::default(),
        }
    }

    /// Counters of `peer`; panics if `peer` is outside the cluster (callers
    /// check ids first).
    pub(crate) fn peer(&self, peer: ReplicaId) -> &PeerCounters {
        assert!(
            peer.index() < self.peers.len(),
            "peer {peer:?} outside the cluster"
        );
        &self.peers[peer.index()]
    }

    pub(crate) fn handshake_failed(&self, side: Side, label: &str) {
        let i = label_index(label);
        let counters = match side {
            Side::Accept => &self.handshake_failures_accept,
            Side::Dial => &self.handshake_failures_dial,
        };
        counters[i].fetch_add(1, Ordering::Relaxed);
    }

    /// A consistent-enough copy (each counter read once, relaxed).
    pub fn snapshot(&self) -> NicStatsSnapshot {
        NicStatsSnapshot {
            peers: self
                .peers
                .iter()
                .map(|p| PeerStatsSnapshot {
                    rx_frames: load(&p.rx_frames),
                    rx_bytes: load(&p.rx_bytes),
                    tx_frames: load(&p.tx_frames),
                    tx_bytes: load(&p.tx_bytes),
                    tx_drops: load(&p.tx_drops),
                    tx_lost: load(&p.tx_lost),
                    rx_budget_exhausted: load(&p.rx_budget_exhausted),
                    rx_lost: load(&p.rx_lost),
                    fault_drops: load(&p.fault_drops),
                    bad_frame_resets: load(&p.bad_frame_resets),
                })
                .collect(),
            oversize_frames: load(&self.oversize_frames),
            connections_accepted: load(&self.connections_accepted),
            connections_dialed: load(&self.connections_dialed),
            connections_reset: load(&self.connections_reset),
            connections_replaced: load(&self.connections_replaced),
            dial_failures: load(&self.dial_failures),
            handshakes_refused_busy: load(&self.handshakes_refused_busy),
            handshakes_evicted: load(&self.handshakes_evicted),
            handshake_failures_accept: std::array::from_fn(|i| {
                load(&self.handshake_failures_accept[i])
            }),
            handshake_failures_dial: std::array::from_fn(|i| {
                load(&self.handshake_failures_dial[i])
            }),
            rx_junk_drops: std::array::from_fn(|i| load(&self.rx_junk_drops[i])),
        }
    }

    /// Every counter as (name, labels, value), for a Prometheus exporter.
    /// Per-peer counters carry label `peer`; handshake failures carry `side`
    /// (`accept`/`dial`) and `reason`.
    pub fn metrics(&self) -> Vec<Metric> {
        let s = self.snapshot();
        let mut out = Vec::with_capacity(s.peers.len() * PER_PEER + GLOBAL + 2 * LABELS + JUNK);
        for (i, p) in s.peers.iter().enumerate() {
            let per_peer: [(&'static str, u64); PER_PEER] = [
                ("nic_rx_frames_total", p.rx_frames),
                ("nic_rx_bytes_total", p.rx_bytes),
                ("nic_tx_frames_total", p.tx_frames),
                ("nic_tx_bytes_total", p.tx_bytes),
                ("nic_tx_drops_total", p.tx_drops),
                ("nic_tx_lost_total", p.tx_lost),
                ("nic_rx_budget_exhausted_total", p.rx_budget_exhausted),
                ("nic_rx_lost_total", p.rx_lost),
                ("nic_fault_drops_total", p.fault_drops),
                ("nic_bad_frame_resets_total", p.bad_frame_resets),
            ];
            for (name, value) in per_peer {
                out.push(Metric {
                    name,
                    labels: vec![("peer", i.to_string())],
                    value,
                });
            }
        }
        let global: [(&'static str, u64); GLOBAL] = [
            ("nic_oversize_frames_total", s.oversize_frames),
            ("nic_connections_accepted_total", s.connections_accepted),
            ("nic_connections_dialed_total", s.connections_dialed),
            ("nic_connections_reset_total", s.connections_reset),
            ("nic_connections_replaced_total", s.connections_replaced),
            ("nic_dial_failures_total", s.dial_failures),
            (
                "nic_handshakes_refused_busy_total",
                s.handshakes_refused_busy,
            ),
            ("nic_handshakes_evicted_total", s.handshakes_evicted),
        ];
        for (name, value) in global {
            out.push(Metric {
                name,
                labels: Vec::new(),
                value,
            });
        }
        for (side, counts) in [
            ("accept", &s.handshake_failures_accept),
            ("dial", &s.handshake_failures_dial),
        ] {
            for (label, value) in HANDSHAKE_FAILURE_LABELS.iter().zip(counts.iter()) {
                out.push(Metric {
                    name: "nic_handshake_failures_total",
                    labels: vec![("side", side.to_string()), ("reason", label.to_string())],
                    value: *value,
                });
            }
        }
        for (label, value) in RX_JUNK_LABELS.iter().zip(s.rx_junk_drops.iter()) {
            out.push(Metric {
                name: "nic_rx_junk_drops_total",
                labels: vec![("reason", label.to_string())],
                value: *value,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_handshake_error_label_has_a_slot() {
        use wire::link::HandshakeError as E;
        let errors = [
            E::Malformed(wire::DecodeError::Invalid("x")),
            E::WrongCluster { got: 1, want: 2 },
            E::UnknownReplica(9),
            E::WrongAddressee { got: 1, want: 2 },
            E::WrongPeer { got: 1, want: 2 },
            E::NotFresh,
            E::BadSignature,
            E::WeakExchange,
            E::BadConfirm,
        ];
        for e in errors {
            assert_ne!(label_index(e.label()), LABELS - 1, "{}", e.label());
        }
    }

    #[test]
    fn metrics_enumerate_every_counter() {
        let s = NicStats::new(4);
        s.peer(ReplicaId(2))
            .rx_frames
            .fetch_add(3, Ordering::Relaxed);
        s.handshake_failed(Side::Accept, "bad_signature");
        let m = s.metrics();
        assert_eq!(m.len(), 4 * PER_PEER + GLOBAL + 2 * LABELS + JUNK);
        assert!(m.iter().any(|m| m.name == "nic_rx_frames_total"
            && m.labels == vec![("peer", "2".to_string())]
            && m.value == 3));
        assert_eq!(s.snapshot().accept_failures("bad_signature"), 1);
    }
}
