//! Where the flood benchmark's processes run, and the evidence that they
//! stayed there (issue 11, item 1).
//!
//! With [`Placement::Split`] one machine plays separate hosts: the flooded
//! replica (all its threads) and the flooder share [`VICTIM_CPU`]; the other
//! replicas or members, the load generator (this harness) and everything
//! else it starts use [`REST_CPU`]. For veth, a packet's receive path (the
//! bridge, defragmentation, the socket) runs in softirq context on the CPU
//! that sent it, so the flood's kernel cost lands on the victim's CPU.
//!
//! Mechanism: CPU affinity (sched_setaffinity), which every thread inherits
//! from the thread that creates it. The harness pins all of its own threads
//! to [`REST_CPU`] first, so every server it spawns starts there; the
//! flooder is pinned between fork and exec; the victim of a step is moved
//! (every thread of it, repeated until no unpinned thread is left) when the
//! step starts and moved back when it ends. Affinity needs no teardown: it
//! dies with the processes.
//!
//! Evidence: [`Snapshot`] reads `/proc/softirqs` (NET_RX, NET_TX per CPU),
//! `/proc/stat` (busy and softirq time per CPU) and the CPU time of the
//! processes of interest; [`Snapshot::delta`] turns two snapshots into what a
//! step cost where. [`threads_off_cpu`] counts the victim's threads allowed
//! anywhere else than on its CPU.

use std::collections::BTreeSet;

use anyhow::{Context, Result};

/// The flooded replica's (or member's) and the flooder's CPU.
pub const VICTIM_CPU: usize = 1;
/// Everyone else's CPU: other replicas or members, the load generator.
pub const REST_CPU: usize = 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Placement {
    /// Victim + flooder on CPU 1, the rest on CPU 0.
    Split,
    /// No pinning: the scheduler places everything (the first run's setup).
    None,
}

impl Placement {
    pub fn name(self) -> &'static str {
        match self {
            Placement::Split => "split",
            Placement::None => "none",
        }
    }
}

fn cpu_set(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain bits; all-zero is the empty set. CPU_SET
    // writes inside the set (cpu < CPU_SETSIZE is checked by the caller).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        set
    }
}

/// The CPUs this process may run on now.
pub fn allowed_cpus() -> Result<BTreeSet<usize>> {
    // SAFETY: sched_getaffinity writes at most size_of::<cpu_set_t>() bytes
    // into `set`, which we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let rc = libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        anyhow::ensure!(
            rc == 0,
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        );
        Ok((0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect())
    }
}

/// Fails unless this process may use both CPUs of the split.
pub fn check_split_possible() -> Result<()> {
    let cpus = allowed_cpus()?;
    anyhow::ensure!(
        cpus.contains(&VICTIM_CPU) && cpus.contains(&REST_CPU),
        "--placement split needs CPUs {REST_CPU} and {VICTIM_CPU}; this process may use {cpus:?} \
         (use --placement none)"
    );
    Ok(())
}

fn set_thread_affinity(tid: i32, cpu: usize) -> std::io::Result<()> {
    let set = cpu_set(cpu);
    // SAFETY: sched_setaffinity reads `set`, which lives across the call.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn thread_ids(pid: u32) -> Result<Vec<i32>> {
    let dir = format!("/proc/{pid}/task");
    let mut tids = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("list {dir}"))? {
        if let Some(tid) = entry?.file_name().to_str().and_then(|s| s.parse().ok()) {
            tids.push(tid);
        }
    }
    Ok(tids)
}

/// Pins every thread of `pid` to `cpu`. A thread created while we walk the
/// list inherits its creator's old mask, so the walk repeats until a pass
/// finds every thread already pinned (bounded). Threads created afterwards
/// inherit the pinned mask.
pub fn pin_process(pid: u32, cpu: usize) -> Result<()> {
    for _ in 0..10 {
        let mut moved = 0;
        for tid in thread_ids(pid)? {
            if thread_allowed_cpus(pid, tid).as_deref() == Some(&[cpu][..]) {
                continue;
            }
            match set_thread_affinity(tid, cpu) {
                Ok(()) => moved += 1,
                // The thread exited between the listing and the call.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("pin thread {tid} of {pid} to CPU {cpu}"))
                }
            }
        }
        if moved == 0 {
            return Ok(());
        }
    }
    anyhow::bail!("process {pid} keeps starting threads; could not pin it to CPU {cpu}")
}

/// Pins the calling process (every thread of this harness) to `cpu`; what
/// it spawns afterwards starts there.
pub fn pin_self(cpu: usize) -> Result<()> {
    pin_process(std::process::id(), cpu)
}

/// Makes the child pin itself to `cpu` between fork and exec, so not one
/// instruction of it runs elsewhere.
pub fn pin_before_exec(command: &mut std::process::Command, cpu: usize) {
    use std::os::unix::process::CommandExt;
    let set = cpu_set(cpu);
    // SAFETY: sched_setaffinity is a plain system call (async-signal-safe);
    // `set` is moved into the closure, nothing is allocated after fork.
    unsafe {
        command.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// `Cpus_allowed_list` of one thread, expanded ("0-1" → [0, 1]).
fn thread_allowed_cpus(pid: u32, tid: i32) -> Option<Vec<usize>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    let list = text
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    parse_cpu_list(list)
}

fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.trim().parse::<usize>().ok()?..=b.trim().parse().ok()?),
            None => cpus.push(part.trim().parse().ok()?),
        }
    }
    Some(cpus)
}

/// (threads of `pid`, how many of them may run anywhere but `cpu` alone).
pub fn threads_off_cpu(pid: u32, cpu: usize) -> Option<(usize, usize)> {
    let tids = thread_ids(pid).ok()?;
    let off = tids
        .iter()
        .filter(|&&tid| {
            // A thread that exited meanwhile does not count.
            thread_allowed_cpus(pid, tid).is_some_and(|cpus| cpus != [cpu])
        })
        .count();
    Some((tids.len(), off))
}

/// Clock ticks per second of /proc's CPU times.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// utime + stime of a whole process (all its threads, the exited ones too)
/// in seconds, from `/proc/<pid>/stat`.
pub fn process_cpu_s(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (utime, stime, _) = parse_stat(&text)?;
    Some((utime + stime) as f64 / clock_ticks())
}

/// (utime, stime, pgrp) from a `/proc/<pid>/stat` line. The command name
/// may hold spaces and parentheses: fields are counted after the last ')'.
fn parse_stat(text: &str) -> Option<(u64, u64, i64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): pgrp is field 5, utime 14, stime 15.
    let pgrp = fields.get(2)?.parse().ok()?;
    let utime = fields.get(11)?.parse().ok()?;
    let stime = fields.get(12)?.parse().ok()?;
    Some((utime, stime, pgrp))
}

/// utime + stime of every live process in process group `pgid` (a flooder
/// and what it forked: `timeout` and hping3), in seconds.
pub fn group_cpu_s(pgid: u32) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut ticks = 0;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((utime, stime, pgrp)) = parse_stat(&text) {
            if pgrp == i64::from(pgid) {
                ticks += utime + stime;
            }
        }
    }
    ticks as f64 / clock_ticks()
}

/// Per-CPU counters of the whole machine.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CpuCounters {
    /// NET_RX softirqs raised, per CPU (/proc/softirqs).
    pub net_rx: Vec<u64>,
    pub net_tx: Vec<u64>,
    /// Time in softirq, seconds, per CPU (/proc/stat).
    pub softirq_s: Vec<f64>,
    /// Time not idle (user, nice, system, irq, softirq, steal), seconds.
    pub busy_s: Vec<f64>,
}

impl CpuCounters {
    pub fn read() -> Result<Self> {
        let softirqs = std::fs::read_to_string("/proc/softirqs").context("read /proc/softirqs")?;
        let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
        let (net_rx, net_tx) = parse_softirqs(&softirqs).context("parse /proc/softirqs")?;
        let (busy_s, softirq_s) = parse_proc_stat(&stat, clock_ticks());
        Ok(CpuCounters {
            net_rx,
            net_tx,
            softirq_s,
            busy_s,
        })
    }

    fn delta(&self, before: &CpuCounters) -> CpuCounters {
        let sub = |a: &[u64], b: &[u64]| -> Vec<u64> {
            a.iter()
                .zip(b.iter().chain(std::iter::repeat(&0)))
                .map(|(x, y)| x.saturating_sub(*y))
                .collect()
        };
        let subf = |a: &[f64], b: &[f64]| -> Vec<f64> {
            a.iter()
                .zip(b.iter().chain(std::iter::repeat(&0.0)))
                .map(|(x, y)| (x - y).max(0.0))
                .collect()
        };
        CpuCounters {
            net_rx: sub(&self.net_rx, &before.net_rx),
            net_tx: sub(&self.net_tx, &before.net_tx),
            softirq_s: subf(&self.softirq_s, &before.softirq_s),
            busy_s: subf(&self.busy_s, &before.busy_s),
        }
    }
}

/// (NET_RX, NET_TX) per CPU.
fn parse_softirqs(text: &str) -> Option<(Vec<u64>, Vec<u64>)> {
    let row = |name: &str| -> Option<Vec<u64>> {
        let line = text.lines().find(|l| l.trim_start().starts_with(name))?;
        line.trim_start()
            .strip_prefix(name)?
            .split_whitespace()
            .map(|v| v.parse().ok())
            .collect()
    };
    Some((row("NET_RX:")?, row("NET_TX:")?))
}

/// (busy seconds, softirq seconds) per CPU from the `cpuN` lines.
fn parse_proc_stat(text: &str, ticks: f64) -> (Vec<f64>, Vec<f64>) {
    let mut busy = Vec::new();
    let mut softirq = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        // "cpu " is the total; "cpuN" a CPU.
        if !rest.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let values: Vec<u64> = rest
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is
        // already inside user).
        let at = |i: usize| values.get(i).copied().unwrap_or(0);
        busy.push((at(0) + at(1) + at(2) + at(5) + at(6) + at(7)) as f64 / ticks);
        softirq.push(at(6) as f64 / ticks);
    }
    (busy, softirq)
}

/// The processes one step accounts for.
#[derive(Clone, Debug)]
pub struct Roles {
    pub victim: Option<u32>,
    pub others: Vec<u32>,
    /// Process group of the flooder (None: no flood).
    pub flooder_pgid: Option<u32>,
}

/// Everything read at one instant.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub cpus: CpuCounters,
    pub victim_cpu_s: f64,
    pub others_cpu_s: f64,
    pub flooder_cpu_s: f64,
    /// This harness: the load generator and its status polling.
    pub loadgen_cpu_s: f64,
}

impl Snapshot {
    pub fn take(roles: &Roles) -> Result<Self> {
        Ok(Snapshot {
            cpus: CpuCounters::read()?,
            victim_cpu_s: roles.victim.and_then(process_cpu_s).unwrap_or(0.0),
            others_cpu_s: roles.others.iter().filter_map(|&p| process_cpu_s(p)).sum(),
            flooder_cpu_s: roles.flooder_pgid.map_or(0.0, group_cpu_s),
            loadgen_cpu_s: process_cpu_s(std::process::id()).unwrap_or(0.0),
        })
    }

    /// What happened between `before` and `self`.
    pub fn delta(&self, before: &Snapshot) -> Snapshot {
        Snapshot {
            cpus: self.cpus.delta(&before.cpus),
            victim_cpu_s: (self.victim_cpu_s - before.victim_cpu_s).max(0.0),
            others_cpu_s: (self.others_cpu_s - before.others_cpu_s).max(0.0),
            flooder_cpu_s: (self.flooder_cpu_s - before.flooder_cpu_s).max(0.0),
            loadgen_cpu_s: (self.loadgen_cpu_s - before.loadgen_cpu_s).max(0.0),
        }
    }
}

/// "a/b" of per-CPU values, CPU 0 first.
pub fn per_cpu<T: std::fmt::Display>(values: &[T]) -> String {
    values
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("/")
}

pub fn per_cpu_s(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.2}"))
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let line = "4242 (a (b) c) S 1 4240 4240 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 9 0 \
                    100 0 0";
        assert_eq!(parse_stat(line), Some((1234, 567, 4240)));
    }

    #[test]
    fn softirqs_rows_are_per_cpu() {
        let text = "                    CPU0       CPU1       \n\
                    \x20         HI:          0          0\n\
                    \x20     NET_TX:         13          6\n\
                    \x20     NET_RX:     148063      23634\n";
        assert_eq!(
            parse_softirqs(text),
            Some((vec![148063, 23634], vec![13, 6]))
        );
    }

    #[test]
    fn proc_stat_busy_leaves_idle_and_iowait_out() {
        let text = "cpu  10 10 10 10 10 10 10 10 0 0\n\
                    cpu0 1 2 3 100 50 4 5 6 0 0\n\
                    cpu1 0 0 0 100 0 0 7 0 0 0\n";
        let (busy, softirq) = parse_proc_stat(text, 1.0);
        assert_eq!(busy, vec![21.0, 7.0]);
        assert_eq!(softirq, vec![5.0, 7.0]);
    }

    #[test]
    fn cpu_lists_expand_ranges() {
        assert_eq!(parse_cpu_list("0-1"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("1"), Some(vec![1]));
        assert_eq!(parse_cpu_list("0,2-3"), Some(vec![0, 2, 3]));
    }

    #[test]
    fn deltas_subtract_per_cpu() {
        let before = CpuCounters {
            net_rx: vec![10, 20],
            net_tx: vec![1, 2],
            softirq_s: vec![1.0, 1.0],
            busy_s: vec![2.0, 2.0],
        };
        let after = CpuCounters {
            net_rx: vec![15, 120],
            net_tx: vec![1, 5],
            softirq_s: vec![1.5, 3.0],
            busy_s: vec![3.0, 4.0],
        };
        let d = after.delta(&before);
        assert_eq!(d.net_rx, vec![5, 100]);
        assert_eq!(d.net_tx, vec![0, 3]);
        assert_eq!(d.softirq_s, vec![0.5, 2.0]);
    }
}
