//! systemd integration for `Type=notify` units (sd_notify(3), through the
//! `sd-notify` crate): `READY=1` once the replica serves (its WAL is
//! recovered and the client port listens), `STATUS=` with its regency,
//! leader and last decided cid, `WATCHDOG=1` fed only while the control
//! thread (the consensus loop) keeps beating, and `STOPPING=1`.
//!
//! Without `NOTIFY_SOCKET` in the environment (not started by systemd)
//! every call does nothing.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::replica::status::{now_ms, Status};

/// How often `STATUS=` is refreshed when no watchdog is asked for.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// Whether the service manager listens (`NOTIFY_SOCKET` is set).
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("sd_notify to the service manager failed: {e}");
    }
}

/// `READY=1` with a first `STATUS=`.
pub fn ready(status: &Status) {
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&status_line(status)),
    ]);
}

/// `STOPPING=1`.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The `STATUS=` text: "regency R, leader L, cid C, revision V".
pub fn status_line(s: &Status) -> String {
    format!(
        "regency {}, leader {}, cid {}, revision {}",
        Status::get(&s.regency),
        Status::get(&s.leader),
        Status::get(&s.last_decided_cid),
        Status::get(&s.revision),
    )
}

/// Whether the control thread beat within `limit` before `now_ms`.
pub fn control_alive(s: &Status, now_ms: u64, limit: Duration) -> bool {
    s.control_silent_ms(now_ms) <= limit.as_millis() as u64
}

/// Starts the thread that refreshes `STATUS=` and, when systemd asks for
/// a watchdog (`WatchdogSec=`, seen as `WATCHDOG_USEC`), sends
/// `WATCHDOG=1` every quarter of its interval while the control thread
/// beat within half of it. A wedged consensus loop stops the pings, and
/// systemd kills and restarts the replica (`Restart=`). Returns `None`
/// when not started by systemd. The thread runs for the life of the
/// process, one wake-up per period.
pub fn spawn_notifier(status: Arc<Status>) -> std::io::Result<Option<std::thread::JoinHandle<()>>> {
    if !enabled() {
        return Ok(None);
    }
    let watchdog = sd_notify::watchdog_enabled();
    let period = watchdog.map_or(STATUS_INTERVAL, |w| (w / 4).max(Duration::from_millis(10)));
    if let Some(w) = watchdog {
        tracing::info!(watchdog_ms = w.as_millis() as u64, "systemd watchdog on");
    }
    let handle = std::thread::Builder::new()
        .name("sd-notify".into())
        .spawn(move || {
            let mut silent = false;
            loop {
                std::thread::sleep(period);
                let line = status_line(&status);
                match watchdog {
                    Some(w) if control_alive(&status, now_ms(), w / 2) => {
                        if silent {
                            tracing::info!("control thread beats again: feeding the watchdog");
                            silent = false;
                        }
                        notify(&[NotifyState::Watchdog, NotifyState::Status(&line)]);
                    }
                    Some(_) => {
                        if !silent {
                            tracing::error!(
                                "control thread silent: no longer feeding the systemd watchdog"
                            );
                            silent = true;
                        }
                        notify(&[NotifyState::Status("control thread silent")]);
                    }
                    None => notify(&[NotifyState::Status(&line)]),
                }
            }
        })?;
    Ok(Some(handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_thread_counts_as_alive_only_within_the_limit() {
        let s = Status::default();
        Status::set(&s.control_heartbeat_ms, 10_000);
        let limit = Duration::from_millis(500);
        assert!(control_alive(&s, 10_000, limit));
        assert!(control_alive(&s, 10_500, limit));
        assert!(!control_alive(&s, 10_501, limit));
        // A clock that went back counts as alive (no false restart).
        assert!(control_alive(&s, 9_000, limit));
    }

    #[test]
    fn the_status_line_names_regency_leader_cid_and_revision() {
        let s = Status::default();
        Status::set(&s.regency, 3);
        Status::set(&s.leader, 3);
        Status::set(&s.last_decided_cid, 42);
        Status::set(&s.revision, 7);
        assert_eq!(status_line(&s), "regency 3, leader 3, cid 42, revision 7");
    }
}
