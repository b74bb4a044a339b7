//! The attacker of the flood benchmark: garbage UDP datagrams from our own
//! rate-controlled sender (`bftd-perf flood-send`), TCP SYNs from hping3.
//!
//! Every flooder runs in the attacker's network namespace and in a cgroup
//! whose CPU quota confines it (cgroup v1, `cpu.cfs_quota_us`), so what the
//! benchmark sees is the victim's cost rather than the attacker competing
//! for the same two cores. The process joins the cgroup between fork and
//! exec, so not one instruction of it runs unconfined.

use std::ffi::CString;
use std::net::{SocketAddrV4, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::netns;
use crate::procs::{self, ChildGuard};

const CGROUP_CPU_ROOT: &str = "/sys/fs/cgroup/cpu";
const CGROUP_NAME: &str = "bftd-perf-flooder";
const CFS_PERIOD_US: u64 = 100_000;
/// Most datagrams sent back to back before the pacer looks at the clock.
const BURST_MAX: u64 = 256;
/// Largest UDP payload over IPv4: 65535 - 20 (IP) - 8 (UDP).
pub const UDP_PAYLOAD_BYTES_MAX: usize = 65_507;

/// What is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FloodKind {
    /// UDP datagrams of 65,495 bytes (the KmMR paper's `hping3 -d 65495`).
    #[value(name = "udp-65495")]
    UdpBig,
    /// UDP datagrams of 64 bytes (packet-rate bound).
    #[value(name = "udp-64")]
    UdpSmall,
    /// TCP SYNs (hping3 -S).
    #[value(name = "tcp-syn")]
    Syn,
}

impl FloodKind {
    pub const ALL: [FloodKind; 3] = [FloodKind::UdpBig, FloodKind::UdpSmall, FloodKind::Syn];

    pub fn name(self) -> &'static str {
        match self {
            FloodKind::UdpBig => "udp-65495",
            FloodKind::UdpSmall => "udp-64",
            FloodKind::Syn => "tcp-syn",
        }
    }

    /// UDP payload size; None for SYNs.
    pub fn udp_payload_bytes(self) -> Option<usize> {
        match self {
            FloodKind::UdpBig => Some(65_495),
            FloodKind::UdpSmall => Some(64),
            FloodKind::Syn => None,
        }
    }

    /// IP packets on the wire per datagram at `mtu` (fragments).
    pub fn packets_per_datagram(self, mtu: usize) -> u64 {
        match self.udp_payload_bytes() {
            None => 1,
            Some(payload) => {
                let fragment_payload = (mtu - 20) / 8 * 8;
                (payload + 8).div_ceil(fragment_payload) as u64
            }
        }
    }
}

/// A cgroup (v1, cpu controller) limiting its members to `cpu_pct` percent
/// of one core. Removed on drop, on signals and on panics.
pub struct FlooderCgroup {
    path: PathBuf,
    cleanup_id: u64,
}

impl FlooderCgroup {
    pub fn create(cpu_pct: u32) -> Result<Self> {
        anyhow::ensure!(
            (1..=200).contains(&cpu_pct),
            "flooder CPU must be 1..=200 % of a core, got {cpu_pct}"
        );
        let root = Path::new(CGROUP_CPU_ROOT);
        anyhow::ensure!(
            root.join("cpu.cfs_quota_us").exists(),
            "{CGROUP_CPU_ROOT} is not a cgroup v1 cpu controller"
        );
        remove_cgroup();
        let path = root.join(CGROUP_NAME);
        std::fs::create_dir(&path).with_context(|| format!("create cgroup {}", path.display()))?;
        let cleanup_id = procs::register_cleanup(remove_cgroup);
        let cgroup = FlooderCgroup { path, cleanup_id };
        let quota_us = CFS_PERIOD_US * u64::from(cpu_pct) / 100;
        cgroup.write("cpu.cfs_period_us", &CFS_PERIOD_US.to_string())?;
        cgroup.write("cpu.cfs_quota_us", &quota_us.to_string())?;
        Ok(cgroup)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Throttled periods and time so far (`cpu.stat`), to show the quota
    /// was what limited the flooder.
    pub fn throttled(&self) -> (u64, u64) {
        let text = std::fs::read_to_string(self.path.join("cpu.stat")).unwrap_or_default();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or(0)
        };
        (field("nr_throttled "), field("throttled_time "))
    }

    fn write(&self, file: &str, value: &str) -> Result<()> {
        let path = self.path.join(file);
        std::fs::write(&path, value).with_context(|| format!("write {value} to {}", path.display()))
    }
}

impl Drop for FlooderCgroup {
    fn drop(&mut self) {
        remove_cgroup();
        procs::unregister_cleanup(self.cleanup_id);
    }
}

/// Removes our cgroup; its members must be dead (rmdir fails otherwise).
pub fn remove_cgroup() {
    let path = Path::new(CGROUP_CPU_ROOT).join(CGROUP_NAME);
    if !path.exists() {
        return;
    }
    // A SIGKILLed member may take a moment to leave.
    for _ in 0..50 {
        if std::fs::remove_dir(&path).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("cannot remove cgroup {} (members left?)", path.display());
}

/// One flood: where, what, how fast.
#[derive(Clone, Debug)]
pub struct FloodSpec {
    pub kind: FloodKind,
    pub target: SocketAddrV4,
    /// Datagrams (or SYNs) per second; 0 = as fast as possible.
    pub pps: u64,
    /// The flooder exits by itself after this long (the harness also kills
    /// it at the end of the step).
    pub duration: Duration,
}

/// Spawns a flooder in `netns`, confined to `cgroup` and, if `cpu` is
/// given, pinned to that CPU from before exec (see [`crate::placement`]).
/// `self_exe` is this harness' binary (it provides `flood-send`).
pub fn spawn(
    spec: &FloodSpec,
    netns: &str,
    cgroup: &FlooderCgroup,
    cpu: Option<usize>,
    self_exe: &Path,
    log_path: &Path,
) -> Result<ChildGuard> {
    let mut command = match spec.kind.udp_payload_bytes() {
        Some(payload) => {
            let mut c = netns::command_in(Some(netns), self_exe);
            c.arg("flood-send")
                .arg("--target")
                .arg(spec.target.to_string())
                .arg("--payload-bytes")
                .arg(payload.to_string())
                .arg("--pps")
                .arg(spec.pps.to_string())
                .arg("--duration-s")
                .arg(format!("{:.3}", spec.duration.as_secs_f64()));
            c
        }
        None => {
            // hping3 has no duration flag; the harness kills it, and
            // `timeout` bounds it should the harness be SIGKILLed between
            // fork and PDEATHSIG.
            let mut c = netns::command_in(Some(netns), Path::new("timeout"));
            c.arg(format!("{}", spec.duration.as_secs() + 1))
                .arg("hping3")
                .arg("-q")
                .arg("-S")
                .arg("-p")
                .arg(spec.target.port().to_string());
            match 1_000_000u64.checked_div(spec.pps) {
                None => {
                    c.arg("--flood");
                }
                // -i u<µs> between packets; hping3 only approximates it,
                // the harness measures the rate on the wire.
                Some(interval_us) => {
                    c.arg("-i").arg(format!("u{}", interval_us.max(1)));
                }
            }
            c.arg(spec.target.ip().to_string());
            c
        }
    };
    join_cgroup_before_exec(&mut command, cgroup.path())?;
    if let Some(cpu) = cpu {
        crate::placement::pin_before_exec(&mut command, cpu);
    }
    ChildGuard::spawn(&format!("flooder-{}", spec.kind.name()), command, log_path)
}

/// Makes the child write its pid into the cgroup's `cgroup.procs` between
/// fork and exec.
fn join_cgroup_before_exec(command: &mut Command, cgroup: &Path) -> Result<()> {
    let procs_path = CString::new(cgroup.join("cgroup.procs").as_os_str().as_encoded_bytes())
        .context("cgroup path contains NUL")?;
    // SAFETY: only async-signal-safe calls (getpid, open, write, close)
    // between fork and exec; no allocation.
    unsafe {
        command.pre_exec(move || {
            let mut digits = [0u8; 20];
            let mut pid = libc::getpid() as u64;
            let mut at = digits.len();
            loop {
                at -= 1;
                digits[at] = b'0' + (pid % 10) as u8;
                pid /= 10;
                if pid == 0 {
                    break;
                }
            }
            let fd = libc::open(procs_path.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let len = digits.len() - at;
            let written = libc::write(fd, digits[at..].as_ptr().cast(), len);
            libc::close(fd);
            if written != len as isize {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// `bftd-perf flood-send`: sends UDP datagrams of `payload_bytes` garbage
/// to `target` at `pps` per second (0 = as fast as possible) for
/// `duration`, then prints what it sent. Send errors (a full queue, an ICMP
/// error) are counted, not fatal: a flooder does not care.
pub fn send_udp(
    target: SocketAddrV4,
    payload_bytes: usize,
    pps: u64,
    duration: Duration,
) -> Result<()> {
    anyhow::ensure!(
        (1..=UDP_PAYLOAD_BYTES_MAX).contains(&payload_bytes),
        "payload must be 1..={UDP_PAYLOAD_BYTES_MAX} bytes"
    );
    anyhow::ensure!(
        duration <= Duration::from_secs(3600),
        "duration above an hour"
    );
    // Unconnected: a connected socket would fail its next send with
    // ECONNREFUSED after each ICMP port unreachable.
    let socket = UdpSocket::bind("0.0.0.0:0").context("bind UDP socket")?;
    let payload: Vec<u8> = (0..payload_bytes).map(|i| (i * 131 + 7) as u8).collect();
    let start = Instant::now();
    let deadline = start + duration;
    let mut sent: u64 = 0;
    let mut errors: u64 = 0;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let burst = if pps == 0 {
            BURST_MAX
        } else {
            let due = (now.duration_since(start).as_secs_f64() * pps as f64) as u64;
            if due <= sent {
                // Ahead of schedule: sleep until the next datagram is due.
                let next_s = (sent + 1) as f64 / pps as f64;
                let wait = Duration::from_secs_f64(next_s)
                    .saturating_sub(now.duration_since(start))
                    .min(Duration::from_millis(1));
                std::thread::sleep(wait);
                continue;
            }
            (due - sent).min(BURST_MAX)
        };
        for _ in 0..burst {
            match socket.send_to(&payload, target) {
                Ok(_) => sent += 1,
                Err(_) => errors += 1,
            }
        }
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    println!(
        "flood-send: {sent} datagrams of {payload_bytes} B to {target} in {elapsed_s:.2} s \
         ({:.0}/s, target {pps}/s), {errors} send errors",
        sent as f64 / elapsed_s.max(1e-9)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_datagrams_leave_as_45_fragments_at_mtu_1500() {
        // 65,495 + 8 (UDP header) over 1,480-byte fragment payloads.
        assert_eq!(FloodKind::UdpBig.packets_per_datagram(1500), 45);
        assert_eq!(FloodKind::UdpSmall.packets_per_datagram(1500), 1);
        assert_eq!(FloodKind::Syn.packets_per_datagram(1500), 1);
    }
}
