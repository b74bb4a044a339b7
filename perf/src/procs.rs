//! Child processes that cannot outlive the harness.
//!
//! Every server the harness starts (etcd members, the bftd demo cluster) is a
//! [`ChildGuard`]. Four layers make sure none is left behind:
//! 1. `Drop` stops the child: SIGTERM, a bounded wait, then SIGKILL.
//! 2. The release profile uses `panic = "abort"`, so `Drop` does not run on a
//!    panic; [`install_panic_hook`] SIGKILLs every live child first.
//! 3. SIGINT/SIGTERM to the harness: `main` calls [`kill_all`] and exits.
//! 4. SIGKILL to the harness: each child asked the kernel (PR_SET_PDEATHSIG)
//!    to SIGKILL it when the thread that spawned it dies. Spawn children from
//!    the main thread only (a tokio worker thread may exit early).
//!
//! Each child leads its own process group and signals go to the group, so
//! helpers a server forks are stopped with it.
//!
//! Teardowns that are not processes or directories (network namespaces,
//! cgroups, firewall rules) register a function with [`register_cleanup`];
//! [`kill_all`] runs them too.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How long a child gets to exit after SIGTERM before it is SIGKILLed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long we wait for a SIGKILLed child to be reaped before giving up.
const KILL_WAIT: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Process groups of children that have not been reaped yet.
static LIVE_PGIDS: Mutex<Vec<i32>> = Mutex::new(Vec::new());
/// Scratch directories to remove if the harness is interrupted.
static SCRATCH_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Other teardowns (network namespaces, cgroups, firewall rules), by id.
static CLEANUPS: Mutex<Vec<Cleanup>> = Mutex::new(Vec::new());
/// (id, teardown) of a registered cleanup.
type Cleanup = (u64, fn());
static NEXT_CLEANUP_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A running child process, stopped when dropped.
pub struct ChildGuard {
    name: String,
    log_path: PathBuf,
    child: Child,
    /// Set once the child has been reaped; after that its pid is not ours.
    exit_status: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `command` with stdin closed and stdout+stderr appended to
    /// `log_path`.
    pub fn spawn(name: &str, mut command: Command, log_path: &Path) -> Result<Self> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(log_path)
            .with_context(|| format!("open log file {}", log_path.display()))?;
        let log_err = log.try_clone().context("clone log file handle")?;
        let parent_pid = std::process::id() as libc::pid_t;
        command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent died between fork and prctl: nobody will stop us.
                if libc::getppid() != parent_pid {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let program = command.get_program().to_string_lossy().into_owned();
        let child = command
            .spawn()
            .with_context(|| format!("spawn {name} ({program})"))?;
        let pgid = child.id() as i32;
        assert!(pgid > 0, "child pid must be positive");
        lock(&LIVE_PGIDS).push(pgid);
        Ok(ChildGuard {
            name: name.to_string(),
            log_path: log_path.to_path_buf(),
            child,
            exit_status: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Returns the exit status if the child has exited (reaping it).
    pub fn exit_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.exit_status.is_none() {
            let status = self
                .child
                .try_wait()
                .with_context(|| format!("wait for {}", self.name))?;
            if let Some(status) = status {
                self.mark_reaped(status);
            }
        }
        Ok(self.exit_status)
    }

    /// Fails with the tail of the log if the child has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.exit_status()? {
            None => Ok(()),
            Some(status) => anyhow::bail!(
                "{} (pid {}) exited early with {status}; log {}:\n{}",
                self.name,
                self.pid(),
                self.log_path.display(),
                log_tail(&self.log_path, 15)
            ),
        }
    }

    /// Sends `signal` to the child's process group unless it was reaped.
    pub fn signal(&self, signal: libc::c_int) {
        if self.exit_status.is_none() {
            signal_group(self.child.id() as i32, signal);
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL and wait (bounded).
    /// Returns the exit status, or None if the child could not be reaped.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.exit_status.is_some() {
            return self.exit_status;
        }
        self.signal(libc::SIGTERM);
        if self.wait_until(Instant::now() + grace) {
            return self.exit_status;
        }
        eprintln!(
            "{} (pid {}) ignored SIGTERM for {:?}; sending SIGKILL",
            self.name,
            self.pid(),
            grace
        );
        self.signal(libc::SIGKILL);
        if !self.wait_until(Instant::now() + KILL_WAIT) {
            eprintln!(
                "{} (pid {}) not reaped {:?} after SIGKILL",
                self.name,
                self.pid(),
                KILL_WAIT
            );
        }
        self.exit_status
    }

    /// SIGKILL (a crash, for failover tests) and wait (bounded).
    pub fn kill(&mut self) -> Option<ExitStatus> {
        self.signal(libc::SIGKILL);
        if !self.wait_until(Instant::now() + KILL_WAIT) {
            eprintln!(
                "{} (pid {}) not reaped {:?} after SIGKILL",
                self.name,
                self.pid(),
                KILL_WAIT
            );
        }
        self.exit_status
    }

    /// Polls until the child exits or `deadline` passes; true if it exited.
    fn wait_until(&mut self, deadline: Instant) -> bool {
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.mark_reaped(status);
                    return true;
                }
                Ok(None) => {}
                Err(e) => {
                    eprintln!("wait for {}: {e}", self.name);
                    return false;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn mark_reaped(&mut self, status: ExitStatus) {
        let pgid = self.child.id() as i32;
        // Anything the child forked into its group dies with it.
        signal_group(pgid, libc::SIGKILL);
        lock(&LIVE_PGIDS).retain(|&p| p != pgid);
        self.exit_status = Some(status);
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(STOP_GRACE);
    }
}

/// A directory removed (recursively) when dropped or when the harness is
/// interrupted.
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `path` (which must not exist yet).
    pub fn create(path: PathBuf) -> Result<Self> {
        anyhow::ensure!(
            !path.exists(),
            "scratch dir {} already exists",
            path.display()
        );
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        lock(&SCRATCH_DIRS).push(path.clone());
        Ok(ScratchDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("remove {}: {e}", self.path.display());
        }
        lock(&SCRATCH_DIRS).retain(|p| p != &self.path);
    }
}

/// SIGKILLs every live child and removes every scratch dir. Used on paths
/// where `Drop` will not run (panic = "abort", signals). Never blocks on a
/// lock, so it is safe to call from a panic hook.
pub fn kill_all() {
    if let Ok(pgids) = LIVE_PGIDS.try_lock() {
        for &pgid in pgids.iter() {
            signal_group(pgid, libc::SIGKILL);
        }
    }
    // Give the kernel a moment to close files before the dirs go.
    thread::sleep(Duration::from_millis(100));
    if let Ok(dirs) = SCRATCH_DIRS.try_lock() {
        for dir in dirs.iter() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    if let Ok(cleanups) = CLEANUPS.try_lock() {
        for (_, cleanup) in cleanups.iter().rev() {
            cleanup();
        }
    }
}

/// Registers a teardown that [`kill_all`] runs (after the children are
/// dead) when `Drop` cannot: on a panic or a signal. The owner calls
/// [`unregister_cleanup`] once it has torn down normally.
pub fn register_cleanup(cleanup: fn()) -> u64 {
    let id = NEXT_CLEANUP_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    lock(&CLEANUPS).push((id, cleanup));
    id
}

pub fn unregister_cleanup(id: u64) {
    lock(&CLEANUPS).retain(|(i, _)| *i != id);
}

/// Kills every child before the default panic hook runs (and aborts).
pub fn install_panic_hook() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        kill_all();
        default_hook(info);
    }));
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// True if a process with this pid exists (it may not be ours).
pub fn is_alive(pid: i32) -> bool {
    assert!(pid > 0, "pid must be positive");
    // SAFETY: signal 0 only checks existence and permission.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn signal_group(pgid: i32, signal: libc::c_int) {
    assert!(pgid > 1, "refusing to signal process group {pgid}");
    // SAFETY: kill(2) has no memory-safety preconditions. ESRCH (group gone)
    // is expected and ignored.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
