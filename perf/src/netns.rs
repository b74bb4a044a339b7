//! A small network on one machine: each host in its own network namespace,
//! joined by a veth pair to one Linux bridge in the root namespace, where the
//! load generator runs.
//!
//! ```text
//!   root ns: bridge bftdperf0 10.77.0.254/24  (load client, firewall rules)
//!     ├─ veth bfp-<name> ── eth0 in netns bftdperf-<name>  10.77.0.x/24
//!     └─ ...
//! ```
//!
//! Everything is named with a fixed prefix, so [`remove_all`] finds and
//! deletes what an aborted run left behind, and runs from [`crate::procs`]'s
//! signal and panic paths. Only one topology can exist at a time; a lock
//! file keeps a second harness out.
//!
//! Docker hosts load br_netfilter with `FORWARD DROP`: bridged packets would
//! be dropped in the root namespace's iptables. The topology inserts an
//! ACCEPT rule for its bridge (and NOTRACK in the raw table, so a SYN flood
//! does not fill the host's conntrack table) and removes them at the end.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::procs;

pub const BRIDGE: &str = "bftdperf0";
pub const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 254);
const PREFIX_LEN: u8 = 24;
const NETNS_PREFIX: &str = "bftdperf-";
const VETH_PREFIX: &str = "bfp-";
/// Interface names are at most 15 bytes.
const IFNAME_MAX: usize = 15;
const RULE_COMMENT: &str = "bftd-perf";
const LOCK_PATH: &str = "/run/bftd-perf-netns.lock";

/// One host of the topology.
#[derive(Clone, Debug)]
pub struct NetHost {
    /// Short name: the netns is `bftdperf-<name>`, the root-side veth
    /// `bfp-<name>`.
    pub name: String,
    pub ip: Ipv4Addr,
}

impl NetHost {
    pub fn new(name: &str, ip: Ipv4Addr) -> Self {
        NetHost {
            name: name.to_string(),
            ip,
        }
    }

    pub fn netns(&self) -> String {
        format!("{NETNS_PREFIX}{}", self.name)
    }

    /// The veth end in the root namespace (bridge port). Its tx counters
    /// count what the host receives, its rx counters what the host sends.
    pub fn host_veth(&self) -> String {
        format!("{VETH_PREFIX}{}", self.name)
    }
}

/// The bridge, the namespaces and the firewall rules; removed on drop.
pub struct Topology {
    hosts: Vec<NetHost>,
    cleanup_id: u64,
    _lock: std::fs::File,
}

impl Topology {
    /// Removes leftovers of an aborted run, then creates the bridge and one
    /// namespace per host. Needs root.
    pub fn create(hosts: &[NetHost]) -> Result<Self> {
        anyhow::ensure!(!hosts.is_empty(), "a topology needs at least one host");
        for host in hosts {
            anyhow::ensure!(
                host.host_veth().len() <= IFNAME_MAX,
                "host name {} too long for an interface name",
                host.name
            );
            anyhow::ensure!(
                host.ip != BRIDGE_IP,
                "{} takes the bridge's address",
                host.name
            );
        }
        let lock = take_lock()?;
        remove_all();
        let cleanup_id = procs::register_cleanup(remove_all);
        // From here on, a failure tears down what was built (Drop).
        let topology = Topology {
            hosts: hosts.to_vec(),
            cleanup_id,
            _lock: lock,
        };
        topology.build().context("build the network namespaces")?;
        Ok(topology)
    }

    pub fn hosts(&self) -> &[NetHost] {
        &self.hosts
    }

    pub fn host(&self, name: &str) -> &NetHost {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in the topology"))
    }

    fn build(&self) -> Result<()> {
        let bridge_cidr = format!("{BRIDGE_IP}/{PREFIX_LEN}");
        ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["addr", "add", &bridge_cidr, "dev", BRIDGE])?;
        ip(&["link", "set", BRIDGE, "up"])?;
        add_firewall_rules()?;
        for host in &self.hosts {
            let netns = host.netns();
            let veth = host.host_veth();
            let cidr = format!("{}/{PREFIX_LEN}", host.ip);
            ip(&["netns", "add", &netns])?;
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ])?;
            ip(&["link", "set", &veth, "master", BRIDGE])?;
            ip(&["link", "set", &veth, "up"])?;
            ip(&["-n", &netns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &netns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        remove_all();
        procs::unregister_cleanup(self.cleanup_id);
    }
}

/// A command that runs `program` inside `netns` (`ip netns exec` execs the
/// program in place, so the child's pid is the program's).
pub fn command_in(netns: Option<&str>, program: &Path) -> Command {
    match netns {
        None => Command::new(program),
        Some(netns) => {
            let mut command = Command::new("ip");
            command.arg("netns").arg("exec").arg(netns).arg(program);
            command
        }
    }
}

/// Interface counters of a root-namespace interface.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_dropped: u64,
}

pub fn link_counters(ifname: &str) -> Result<LinkCounters> {
    let read = |counter: &str| -> Result<u64> {
        let path = format!("/sys/class/net/{ifname}/statistics/{counter}");
        let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        text.trim()
            .parse()
            .with_context(|| format!("parse {path}: {text:?}"))
    };
    Ok(LinkCounters {
        rx_packets: read("rx_packets")?,
        rx_bytes: read("rx_bytes")?,
        tx_packets: read("tx_packets")?,
        tx_bytes: read("tx_bytes")?,
        tx_dropped: read("tx_dropped")?,
    })
}

/// [`remove_all`], unless a running harness holds the topology lock.
pub fn remove_leftovers() -> Result<()> {
    let _lock = take_lock()?;
    remove_all();
    Ok(())
}

/// Deletes every namespace, veth, bridge and firewall rule of ours. Safe to
/// call when nothing exists; never fails (prints what it could not remove).
pub fn remove_all() {
    remove_firewall_rules();
    if let Ok(output) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            // "name (id: 3)" or "name"
            let name = line.split_whitespace().next().unwrap_or("");
            if name.starts_with(NETNS_PREFIX) {
                // Deleting the namespace deletes its veth pair.
                quiet_ip(&["netns", "del", name]);
            }
        }
    }
    if let Ok(output) = Command::new("ip").args(["-o", "link", "show"]).output() {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            // "12: bfp-r0@if2: <...>"
            let Some(name) = line.split(": ").nth(1) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or("");
            // A deleted namespace's veth may still be listed: it goes
            // away asynchronously.
            if (name.starts_with(VETH_PREFIX) || name == BRIDGE) && link_exists(name) {
                quiet_ip(&["link", "del", name]);
            }
        }
    }
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn take_lock() -> Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_PATH)
        .with_context(|| format!("open {LOCK_PATH}"))?;
    // SAFETY: flock on an fd we own.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    anyhow::ensure!(
        locked,
        "another bftd-perf holds {LOCK_PATH}: only one network topology at a time"
    );
    Ok(file)
}

/// (iptables binary, table, chain, rule) of each rule we add.
fn firewall_rules() -> Vec<(&'static str, &'static str, &'static str, Vec<&'static str>)> {
    let accept = vec![
        "-i",
        BRIDGE,
        "-o",
        BRIDGE,
        "-m",
        "comment",
        "--comment",
        RULE_COMMENT,
        "-j",
        "ACCEPT",
    ];
    let notrack = vec![
        "-i",
        BRIDGE,
        "-m",
        "comment",
        "--comment",
        RULE_COMMENT,
        "-j",
        "CT",
        "--notrack",
    ];
    let mut rules = Vec::new();
    for binary in ["iptables", "iptables-legacy"] {
        rules.push((binary, "filter", "FORWARD", accept.clone()));
        rules.push((binary, "raw", "PREROUTING", notrack.clone()));
    }
    rules
}

fn add_firewall_rules() -> Result<()> {
    for (binary, table, chain, rule) in firewall_rules() {
        if !binary_exists(binary) {
            continue;
        }
        let mut args = vec!["-w", "-t", table, "-I", chain, "1"];
        args.extend(rule.iter().copied());
        let output = Command::new(binary)
            .args(&args)
            .output()
            .with_context(|| format!("run {binary}"))?;
        // The FORWARD rule is what makes the bridge pass traffic; NOTRACK
        // and the legacy tables are best effort.
        if !output.status.success() {
            let message = String::from_utf8_lossy(&output.stderr);
            anyhow::ensure!(
                binary != "iptables" || table != "filter",
                "{binary} {}: {message}",
                args.join(" ")
            );
            eprintln!(
                "note: {binary} {} failed: {}",
                args.join(" "),
                message.trim()
            );
        }
    }
    Ok(())
}

fn remove_firewall_rules() {
    for (binary, table, chain, rule) in firewall_rules() {
        if !binary_exists(binary) {
            continue;
        }
        let mut args = vec!["-w", "-t", table, "-D", chain];
        args.extend(rule.iter().copied());
        // Bounded: a rule inserted at most once per run, a few runs aborted.
        for _ in 0..16 {
            let deleted = Command::new(binary)
                .args(&args)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if !deleted {
                break;
            }
        }
    }
}

fn binary_exists(name: &str) -> bool {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .any(|dir| Path::new(dir).join(name).exists())
}

fn ip(args: &[&str]) -> Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("run ip (iproute2)")?;
    anyhow::ensure!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

fn quiet_ip(args: &[&str]) {
    match Command::new("ip").args(args).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => eprintln!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => eprintln!("ip {}: {e}", args.join(" ")),
    }
}
