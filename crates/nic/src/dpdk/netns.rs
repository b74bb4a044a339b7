//! Test and benchmark support: a small switched network of Linux network
//! namespaces to run DPDK's `net_af_packet` (or kernel TCP) endpoints on
//! without a NIC. Needs root and `ip` (iproute2).
//!
//! Layout: a hub namespace holding a bridge `br0`, and one namespace per
//! endpoint `i` holding interface [`NetLab::IFACE`] (`vd`), one end of a
//! veth pair whose other end is on the bridge. Endpoint `i`'s address is
//! [`NetLab::ip`]`(i)` (`10.99.0.<i+1>/24`): assigned to `vd` only with
//! [`NetLab::create`]'s `kernel_ips` (for kernel TCP); a DPDK endpoint
//! takes `vd` over and answers for that address itself.
//! Dropping the lab deletes every namespace (and so every interface).

use std::io;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// A hub namespace with a bridge, and one namespace per endpoint.
pub struct NetLab {
    hub: String,
    endpoints: Vec<String>,
}

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run `ip` (iproute2): {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

impl NetLab {
    /// The endpoint interface's name inside each endpoint namespace.
    pub const IFACE: &'static str = "vd";

    /// True if this process may create namespaces (runs as root).
    pub fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and touches no memory.
        unsafe { libc::geteuid() == 0 }
    }

    /// Creates the namespaces `bftd-<tag>-<pid>-hub` and
    /// `bftd-<tag>-<pid>-<i>` for `i` in `0..endpoints`. With `kernel_ips`
    /// each `vd` gets its address (for kernel sockets). Errors name the
    /// `ip` command that failed; what was made is removed again.
    pub fn create(tag: &str, endpoints: usize, kernel_ips: bool) -> io::Result<NetLab> {
        let base = format!("bftd-{tag}-{}", std::process::id());
        let mut lab = NetLab {
            hub: format!("{base}-hub"),
            endpoints: Vec::new(),
        };
        ip(&["netns", "add", &lab.hub])?;
        ip(&["-n", &lab.hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &lab.hub, "link", "set", "br0", "up"])?;
        for i in 0..endpoints {
            let ns = format!("{base}-{i}");
            ip(&["netns", "add", &ns])?;
            lab.endpoints.push(ns.clone());
            let hub_end = format!("vb{i}");
            ip(&[
                "-n",
                &lab.hub,
                "link",
                "add",
                &hub_end,
                "type",
                "veth",
                "peer",
                "name",
                Self::IFACE,
                "netns",
                &ns,
            ])?;
            ip(&["-n", &lab.hub, "link", "set", &hub_end, "master", "br0"])?;
            ip(&["-n", &lab.hub, "link", "set", &hub_end, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "link", "set", Self::IFACE, "up"])?;
            if kernel_ips {
                let cidr = format!("{}/24", Self::ip(i));
                ip(&["-n", &ns, "addr", "add", &cidr, "dev", Self::IFACE])?;
            }
        }
        Ok(lab)
    }

    /// Endpoint `i`'s IPv4 address: `10.99.0.<i+1>`.
    pub fn ip(i: usize) -> Ipv4Addr {
        assert!(i < 250, "endpoint {i} outside the /24");
        Ipv4Addr::new(10, 99, 0, i as u8 + 1)
    }

    /// The namespace of endpoint `i`.
    pub fn namespace(&self, i: usize) -> &str {
        &self.endpoints[i]
    }

    /// `program` to be run inside endpoint `i`'s namespace
    /// (`ip netns exec`, which execs it: the child's PID is the program's).
    pub fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.endpoints[i]]).arg(program);
        c
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for ns in self.endpoints.iter().chain(std::iter::once(&self.hub)) {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}
