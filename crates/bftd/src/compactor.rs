//! Auto-compaction, as etcd's `--auto-compaction-mode` and
//! `--auto-compaction-retention` (etcd's `v3compactor`), so a store that
//! nobody compacts does not grow forever.
//!
//! - **revision**: every `auto_compaction_revision_interval_ms` (etcd: 5
//!   minutes) compact to (current revision - retention), unless that is
//!   not positive or was the last compaction.
//! - **periodic**: keep `retention` (a duration) of history. The revision
//!   is sampled every retention/10 (at most every 6 minutes: the interval
//!   is capped at 1 h / 10); the first compaction comes one retention after
//!   start, then one every retention (at most every hour), each to the
//!   revision sampled one retention ago (the oldest of the last
//!   retention/interval + 1 samples).
//!
//! Every replica runs the loop and samples (so a new leader has the
//! history), but only the replica that is the current leader, with a
//! working regency, submits: an ordinary Compaction command through
//! [`api::Backend::submit`], the path clients use, so every replica
//! compacts at the same point of the command order. A compaction that
//! fails with "required revision has been compacted" (another leader's
//! compaction got there first, or an operator's) counts as done, as etcd
//! counts it. Retention "0" turns it off (etcd's default).
//!
//! The policies ([`Periodic`], [`Revision`]) are pure: time and revisions
//! come in, the revision to compact comes out; [`run`] drives them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv::pb::etcdserverpb::CompactionRequest;
use kv::KvError;

/// etcd's divisor of the periodic retention: samples per retention.
pub const PERIODIC_SAMPLES_PER_RETENTION: u32 = 10;
/// Longest interval between periodic compactions (etcd: 1 h; samples
/// every tenth of it).
pub const PERIODIC_COMPACT_INTERVAL_MAX: Duration = Duration::from_secs(3600);
/// Shortest periodic retention accepted.
pub const PERIODIC_RETENTION_MIN: Duration = Duration::from_millis(100);
/// How long one submitted compaction may take before it counts as failed
/// (and is tried again at the next interval).
pub const COMPACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// A configured auto-compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep this much history (etcd's periodic mode).
    Periodic { retention: Duration },
    /// Keep this many revisions, checking every `interval` (etcd's
    /// revision mode; etcd checks every 5 minutes).
    Revision { retention: i64, interval: Duration },
}

/// Parses etcd's `--auto-compaction-mode` (`periodic` or `revision`) and
/// `--auto-compaction-retention`: for periodic a Go duration ("30m",
/// "1h30m", "90s", "1.5h") or a bare integer of hours; for revision an
/// integer. "0" (or "") turns it off: `None`. `revision_interval` is the
/// revision mode's check interval.
///
/// # Errors
/// An unknown mode, a retention that does not parse, or a periodic
/// retention below [`PERIODIC_RETENTION_MIN`]; the message names the key.
pub fn parse(
    mode: &str,
    retention: &str,
    revision_interval: Duration,
) -> Result<Option<AutoCompaction>, String> {
    let retention = retention.trim();
    let bad = |why: &str| {
        Err(format!(
            "[api] auto_compaction_retention = {retention:?}: {why}"
        ))
    };
    match mode {
        "periodic" => {
            let d =
                match retention.parse::<u64>() {
                    Ok(hours) => Duration::from_secs(hours.saturating_mul(3600)),
                    Err(_) if retention.is_empty() => Duration::ZERO,
                    Err(_) => match parse_go_duration(retention) {
                        Some(d) => d,
                        None => return bad(
                            "for periodic mode, a duration such as \"30m\", \"1h30m\", \"90s\" \
                             or a number of hours",
                        ),
                    },
                };
            if d.is_zero() {
                return Ok(None);
            }
            if d < PERIODIC_RETENTION_MIN {
                return bad("a periodic retention is at least 100ms");
            }
            Ok(Some(AutoCompaction::Periodic { retention: d }))
        }
        "revision" => {
            let n = match retention {
                "" => 0,
                r => match r.parse::<i64>() {
                    Ok(n) if n >= 0 => n,
                    _ => return bad("for revision mode, a number of revisions (0 = off)"),
                },
            };
            if n == 0 {
                return Ok(None);
            }
            if revision_interval.is_zero() {
                return Err("[api] auto_compaction_revision_interval_ms must be positive".into());
            }
            Ok(Some(AutoCompaction::Revision {
                retention: n,
                interval: revision_interval,
            }))
        }
        m => Err(format!(
            "[api] auto_compaction_mode = {m:?}: use \"periodic\" or \"revision\""
        )),
    }
}

/// A Go duration ("1h30m", "90s", "1.5h", "500ms"; units ns, us, µs, ms,
/// s, m, h), as etcd's flag parses it; `None` if malformed.
fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * seconds;
    }
    // Longer than a century is a typo, not a retention.
    (total.is_finite() && total <= 3.2e9).then(|| Duration::from_secs_f64(total))
}

/// etcd's periodic policy (`v3compactor.Periodic`), as a state machine:
/// [`Periodic::record`] a revision sample every [`Periodic::interval`],
/// and after each interval ask [`Periodic::due`] for the revision to
/// compact; report the outcome with [`Periodic::done`].
#[derive(Debug)]
pub struct Periodic {
    period: Duration,
    interval: Duration,
    compact_interval: Duration,
    samples_max: usize,
    /// The last `samples_max` samples; the front is one period old.
    revs: VecDeque<i64>,
    last_success: Instant,
    /// `period` until the first compaction, then `compact_interval`.
    base: Duration,
}

impl Periodic {
    /// A policy keeping `period` of history, started at `now`.
    pub fn new(period: Duration, now: Instant) -> Self {
        assert!(!period.is_zero());
        let compact_interval = period.min(PERIODIC_COMPACT_INTERVAL_MAX);
        let interval = compact_interval / PERIODIC_SAMPLES_PER_RETENTION;
        let samples_max = (period.as_nanos() / interval.as_nanos()) as usize + 1;
        Self {
            period,
            interval,
            compact_interval,
            samples_max,
            revs: VecDeque::with_capacity(samples_max + 1),
            last_success: now,
            base: period,
        }
    }

    /// Time between samples (and between checks).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Records the store's revision now.
    pub fn record(&mut self, revision: i64) {
        self.revs.push_back(revision);
        if self.revs.len() > self.samples_max {
            self.revs.pop_front();
        }
        assert!(self.revs.len() <= self.samples_max);
    }

    /// The revision to compact to at `now`, if a compaction is due (the
    /// sample one period old); `None` before one period (then one compact
    /// interval) has passed since the last success.
    pub fn due(&mut self, now: Instant) -> Option<i64> {
        if now.saturating_duration_since(self.last_success) < self.base {
            return None;
        }
        if self.base == self.period {
            self.base = self.compact_interval;
        }
        self.revs.front().copied()
    }

    /// The outcome of the compaction [`Periodic::due`] asked for:
    /// `compacted` (or already compacted) restarts the wait.
    pub fn done(&mut self, now: Instant, compacted: bool) {
        if compacted {
            self.last_success = now;
        }
    }
}

/// etcd's revision policy (`v3compactor.Revision`): after each interval,
/// [`Revision::due`] gives the revision to compact.
#[derive(Debug)]
pub struct Revision {
    retention: i64,
    prev: i64,
}

impl Revision {
    /// A policy keeping the last `retention` revisions.
    pub fn new(retention: i64) -> Self {
        assert!(retention > 0);
        Self { retention, prev: 0 }
    }

    /// The revision to compact to when the store is at `current`: current
    /// - retention, unless not positive or already compacted to.
    pub fn due(&self, current: i64) -> Option<i64> {
        let rev = current - self.retention;
        (rev > 0 && rev != self.prev).then_some(rev)
    }

    /// The outcome of compacting to `rev`.
    pub fn done(&mut self, rev: i64, compacted: bool) {
        if compacted {
            self.prev = rev;
        }
    }
}

/// Whether this replica is the leader now, with a working regency: the
/// one that submits compactions.
fn is_leader<B: api::Backend>(backend: &B) -> bool {
    backend.has_leader() && backend.progress().leader_member_id == backend.cluster().member_id
}

/// Submits a Compaction to `revision` and waits for its result at this
/// replica. True when compacted, or when the store was already compacted
/// to or past it ("required revision has been compacted": harmless, as in
/// etcd).
async fn compact<B: api::Backend>(backend: &B, revision: i64) -> bool {
    let mut cmd: kv::Command = CompactionRequest {
        revision,
        physical: false,
    }
    .into();
    // The replica's own command: auth does not apply (etcd's compactor
    // runs as root).
    cmd.system = true;
    let rx = match backend.submit(cmd) {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!(revision, error = ?e, "auto compaction not submitted");
            return false;
        }
    };
    match tokio::time::timeout(COMPACTION_TIMEOUT, rx).await {
        Ok(Ok(Ok(_))) | Ok(Ok(Err(KvError::Compacted))) => true,
        Ok(Ok(Err(e))) => {
            tracing::warn!(revision, error = %e, "auto compaction failed");
            false
        }
        Ok(Err(_)) => false, // the replica is stopping
        Err(_) => {
            tracing::warn!(revision, "auto compaction timed out");
            false
        }
    }
}

/// Runs `config`'s auto-compaction against `backend` forever (abort the
/// task to stop it).
pub async fn run<B: api::Backend>(backend: Arc<B>, config: AutoCompaction) {
    match config {
        AutoCompaction::Revision {
            retention,
            interval,
        } => {
            let mut policy = Revision::new(retention);
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if !is_leader(backend.as_ref()) {
                    continue;
                }
                let Some(rev) = policy.due(backend.store_size().0) else {
                    continue;
                };
                tracing::info!(
                    revision = rev,
                    retention,
                    "starting auto revision compaction"
                );
                let ok = compact(backend.as_ref(), rev).await;
                policy.done(rev, ok);
                if ok {
                    tracing::info!(revision = rev, "completed auto revision compaction");
                }
            }
        }
        AutoCompaction::Periodic { retention } => {
            let mut policy = Periodic::new(retention, Instant::now());
            // Compacted to by this replica: an idle store's window stays on
            // one revision, and compacting to it again changes nothing.
            let mut compacted = 0;
            let interval = policy.interval();
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                policy.record(backend.store_size().0);
                tick.tick().await;
                if !is_leader(backend.as_ref()) {
                    continue;
                }
                let Some(rev) = policy.due(Instant::now()) else {
                    continue;
                };
                if rev <= compacted {
                    policy.done(Instant::now(), true);
                    continue;
                }
                tracing::info!(
                    revision = rev,
                    ?retention,
                    "starting auto periodic compaction"
                );
                let ok = compact(backend.as_ref(), rev).await;
                policy.done(Instant::now(), ok);
                if ok {
                    compacted = rev;
                    tracing::info!(revision = rev, "completed auto periodic compaction");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn retention_parses_as_etcd_parses_it() {
        let p = |m, r| parse(m, r, 300 * S);
        assert_eq!(p("periodic", "0"), Ok(None));
        assert_eq!(p("periodic", ""), Ok(None));
        assert_eq!(p("revision", "0"), Ok(None));
        assert_eq!(
            p("periodic", "1"),
            Ok(Some(AutoCompaction::Periodic {
                retention: 3600 * S
            }))
        );
        assert_eq!(
            p("periodic", "1h30m"),
            Ok(Some(AutoCompaction::Periodic {
                retention: 5400 * S
            }))
        );
        assert_eq!(
            p("periodic", "1.5s"),
            Ok(Some(AutoCompaction::Periodic {
                retention: Duration::from_millis(1500)
            }))
        );
        assert_eq!(
            p("revision", "1000"),
            Ok(Some(AutoCompaction::Revision {
                retention: 1000,
                interval: 300 * S
            }))
        );
        for (m, r, says) in [
            ("revision", "5m", "number of revisions"),
            ("revision", "-3", "number of revisions"),
            ("periodic", "5x", "duration"),
            ("periodic", "1ms", "at least 100ms"),
            ("hourly", "1", "use \"periodic\" or \"revision\""),
        ] {
            let err = p(m, r).unwrap_err();
            assert!(err.contains(says), "{m} {r}: {err}");
        }
    }

    #[test]
    fn revision_mode_keeps_the_last_retention_revisions_and_skips_repeats() {
        let mut r = Revision::new(10);
        assert_eq!(r.due(5), None, "not positive");
        assert_eq!(r.due(10), None);
        assert_eq!(r.due(25), Some(15));
        r.done(15, false);
        assert_eq!(r.due(25), Some(15), "a failure is tried again");
        r.done(15, true);
        assert_eq!(r.due(25), None, "nothing new");
        assert_eq!(r.due(26), Some(16));
    }

    #[test]
    fn periodic_mode_compacts_to_the_revision_of_one_retention_ago() {
        // Retention 10 s: a sample every second, the first compaction after
        // 10 s, then every 10 s, each to the oldest of the last 11 samples
        // (taken 10 s before the latest one, as etcd's window).
        let t0 = Instant::now();
        let mut p = Periodic::new(10 * S, t0);
        assert_eq!(p.interval(), S);
        let mut compactions = Vec::new();
        // The store gains 100 revisions a second; sample, tick, check.
        for sec in 0..35u64 {
            p.record(1 + 100 * sec as i64);
            let now = t0 + (sec as u32 + 1) * S;
            if let Some(rev) = p.due(now) {
                compactions.push((sec + 1, rev));
                p.done(now, true);
            }
        }
        assert_eq!(compactions, vec![(10, 1), (20, 901), (30, 1901)]);
        // A failed compaction is retried at the next interval.
        let mut p = Periodic::new(10 * S, t0);
        for sec in 0..10u64 {
            p.record(sec as i64);
        }
        assert_eq!(p.due(t0 + 10 * S), Some(0));
        p.done(t0 + 10 * S, false);
        p.record(10);
        assert_eq!(p.due(t0 + 11 * S), Some(0));
    }

    #[test]
    fn a_long_periodic_retention_samples_every_six_minutes_and_compacts_hourly() {
        let t0 = Instant::now();
        let mut p = Periodic::new(24 * 3600 * S, t0);
        assert_eq!(p.interval(), 360 * S);
        // 241 samples cover a day; no compaction before it has passed.
        for i in 0..300 {
            p.record(i);
        }
        assert_eq!(p.revs.len(), 241);
        assert_eq!(p.due(t0 + 23 * 3600 * S), None);
        assert_eq!(p.due(t0 + 24 * 3600 * S), Some(59));
        p.done(t0 + 24 * 3600 * S, true);
        assert_eq!(p.due(t0 + 24 * 3600 * S + 1800 * S), None);
        assert!(p.due(t0 + 25 * 3600 * S).is_some(), "then hourly");
    }
}
