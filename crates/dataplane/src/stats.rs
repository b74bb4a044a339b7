//! Counters of the dataplane, one per stage and drop reason. Plain relaxed
//! atomics: read by the metrics exporter, written by one thread each.

use std::sync::atomic::{AtomicU64, Ordering};

use wire::link::FrameError;
use wire::{DecodeError, VerifyError};

/// Labels of frame drop reasons, in [`DataplaneStats::frame_drops`] order.
pub const FRAME_DROP_LABELS: [&str; 8] = [
    "too_short",
    "too_long",
    "bad_version",
    "wrong_sender",
    "bad_sequence",
    "bad_tag",
    "no_link",
    "stale_epoch",
];

/// Labels of verification failures, in [`DataplaneStats::verify_drops`] order.
pub const VERIFY_DROP_LABELS: [&str; 5] = [
    "bad_signature",
    "wrong_sender",
    "unknown_client",
    "unknown_replica",
    "bad_proof",
];

/// Counters of one replica's dataplane.
#[derive(Debug, Default)]
pub struct DataplaneStats {
    /// Frames taken from the transport.
    pub frames_rx: AtomicU64,
    /// Frames that opened (tag verified).
    pub frames_authenticated: AtomicU64,
    /// Messages verified and handed to the control thread.
    pub messages_verified: AtomicU64,
    /// Frames dropped before decoding, by [`FRAME_DROP_LABELS`].
    pub frame_drops: [AtomicU64; 8],
    /// Authenticated frames whose message did not decode.
    pub decode_drops: AtomicU64,
    /// Decoded messages refused by the verifier, by [`VERIFY_DROP_LABELS`].
    pub verify_drops: [AtomicU64; 5],
    /// ed25519 verification batches run, and messages in them.
    pub verify_batches: AtomicU64,
    pub verify_batch_messages: AtomicU64,
    /// Messages signed and sent by this replica (each destination counts).
    pub messages_tx: AtomicU64,
    /// Messages the transport refused to queue.
    pub tx_drops: AtomicU64,
    /// Time to verify one batch of received messages.
    pub verify_seconds: wire::metrics::LatencyHistogram,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl DataplaneStats {
    pub(crate) fn frame_drop(&self, e: &FrameError) {
        let i = FRAME_DROP_LABELS
            .iter()
            .position(|l| *l == e.label())
            .expect("label listed");
        bump(&self.frame_drops[i]);
    }
    pub(crate) fn no_link(&self) {
        bump(&self.frame_drops[6]);
    }
    pub(crate) fn stale_epoch(&self) {
        bump(&self.frame_drops[7]);
    }
    pub(crate) fn decode_drop(&self, _e: &DecodeError) {
        bump(&self.decode_drops);
    }
    pub(crate) fn verify_drop(&self, e: &VerifyError) {
        let i = VERIFY_DROP_LABELS
            .iter()
            .position(|l| *l == e.label())
            .expect("label listed");
        bump(&self.verify_drops[i]);
    }
    /// Frame drops with `label` (see [`FRAME_DROP_LABELS`]).
    pub fn frame_drops(&self, label: &str) -> u64 {
        FRAME_DROP_LABELS
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.frame_drops[i].load(Ordering::Relaxed))
    }
    /// Verification drops with `label` (see [`VERIFY_DROP_LABELS`]).
    pub fn verify_drops(&self, label: &str) -> u64 {
        VERIFY_DROP_LABELS
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.verify_drops[i].load(Ordering::Relaxed))
    }
    /// Every counter as (name, reason label, value), for the metrics
    /// exporter. Names carry no `_total` suffix; the encoder adds it.
    pub fn metrics(&self) -> Vec<(&'static str, &'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut v = vec![
            ("dataplane_frames_rx", "", get(&self.frames_rx)),
            (
                "dataplane_frames_authenticated",
                "",
                get(&self.frames_authenticated),
            ),
            (
                "dataplane_messages_verified",
                "",
                get(&self.messages_verified),
            ),
            ("dataplane_decode_drops", "", get(&self.decode_drops)),
            ("dataplane_verify_batches", "", get(&self.verify_batches)),
            (
                "dataplane_verify_batch_messages",
                "",
                get(&self.verify_batch_messages),
            ),
            ("dataplane_messages_tx", "", get(&self.messages_tx)),
            ("dataplane_tx_drops", "", get(&self.tx_drops)),
        ];
        for (l, c) in FRAME_DROP_LABELS.iter().zip(&self.frame_drops) {
            v.push(("dataplane_frame_drops", l, get(c)));
        }
        for (l, c) in VERIFY_DROP_LABELS.iter().zip(&self.verify_drops) {
            v.push(("dataplane_verify_drops", l, get(c)));
        }
        v
    }
}
