//! A loopback etcd cluster made of `/usr/bin/etcd` processes.
//!
//! Member i (0-based) listens for clients on `base_port + 2i` and for peers on
//! `base_port + 2i + 1`, keeps its data in `<data_root>/<name>` and logs to
//! `<log_dir>/<name>.log` (appended to, so a restarted member keeps its
//! history). Members are [`ChildGuard`]s: they are stopped when the
//! cluster is dropped, on every path. Besides the benchmarks, failover tests
//! can stop, kill and restart single members.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use etcd_client::{Client, ConnectOptions};

use crate::loadgen;
use crate::netns::{self, NetHost};
use crate::procs::{ChildGuard, STOP_GRACE};

#[derive(Clone, Debug)]
pub struct EtcdClusterConfig {
    pub etcd_bin: PathBuf,
    pub members: usize,
    pub base_port: u16,
    /// Parent of the members' data dirs; must exist.
    pub data_root: PathBuf,
    /// Where the members' logs go; must exist.
    pub log_dir: PathBuf,
    pub cluster_token: String,
    /// Empty: loopback (ports as above). Otherwise member i runs in the
    /// network namespace of `hosts[i]` and listens on its IP, on `base_port`
    /// (clients) and `base_port + 1` (peers).
    pub hosts: Vec<NetHost>,
    /// Mutual TLS beside plaintext (loopback only): member i also serves
    /// clients over TLS on `base_port + 2 * members + i`.
    pub tls: Option<EtcdTls>,
}

/// etcd's `--cert-file`, `--key-file`, `--trusted-ca-file`; with them,
/// `--client-cert-auth` is on.
#[derive(Clone, Debug)]
pub struct EtcdTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub trusted_ca_file: PathBuf,
}

pub struct EtcdMember {
    pub name: String,
    /// host:port, as the load generator takes it.
    pub client_endpoint: String,
    /// host:port of the TLS client listener, with `tls`.
    pub tls_endpoint: Option<String>,
    pub peer_url: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    pub netns: Option<String>,
    process: Option<ChildGuard>,
}

pub struct EtcdCluster {
    config: EtcdClusterConfig,
    initial_cluster: String,
    members: Vec<EtcdMember>,
}

impl EtcdCluster {
    /// Spawns every member with `--initial-cluster-state new`. Call
    /// [`EtcdCluster::wait_ready`] before sending load. Must be called from
    /// the main thread (see `procs`).
    pub fn start(config: EtcdClusterConfig) -> Result<Self> {
        anyhow::ensure!(
            config.members >= 1,
            "an etcd cluster needs at least one member"
        );
        anyhow::ensure!(
            config.etcd_bin.is_file(),
            "etcd binary {} not found (Debian: apt-get install etcd-server)",
            config.etcd_bin.display()
        );
        let port_top = u32::from(config.base_port) + 2 * config.members as u32;
        anyhow::ensure!(
            port_top <= u32::from(u16::MAX),
            "etcd base port {} too high",
            config.base_port
        );
        anyhow::ensure!(
            config.tls.is_none() || config.hosts.is_empty(),
            "etcd TLS listeners are for loopback clusters"
        );
        anyhow::ensure!(
            config.hosts.is_empty() || config.hosts.len() == config.members,
            "{} hosts for {} etcd members",
            config.hosts.len(),
            config.members
        );
        let members: Vec<EtcdMember> = (0..config.members)
            .map(|i| member_layout(&config, i))
            .collect();
        for member in members.iter().filter(|m| m.netns.is_none()) {
            ensure_port_free(&member.client_endpoint)?;
            ensure_port_free(member.peer_url.trim_start_matches("http://"))?;
            if let Some(e) = &member.tls_endpoint {
                ensure_port_free(e)?;
            }
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            config,
            initial_cluster,
            members,
        };
        for index in 0..cluster.members.len() {
            cluster.spawn_member(index, "new")?;
        }
        Ok(cluster)
    }

    /// Waits (bounded) until a put succeeds through every member.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let endpoints = self.client_endpoints();
        let logs = self.log_paths_joined();
        let members = &mut self.members;
        let check_alive = || {
            for member in members.iter_mut() {
                if let Some(process) = member.process.as_mut() {
                    process.ensure_running()?;
                }
            }
            Ok(())
        };
        loadgen::wait_until_put_succeeds(&endpoints, timeout, check_alive)
            .await
            .with_context(|| format!("etcd cluster not ready (logs {logs})"))
    }

    pub fn members(&self) -> &[EtcdMember] {
        &self.members
    }

    /// host:port of every member, in member order.
    pub fn client_endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| m.client_endpoint.clone())
            .collect()
    }

    /// `https://host:port` of each member's TLS listener (empty without
    /// `tls`).
    pub fn tls_endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter_map(|m| m.tls_endpoint.as_ref())
            .map(|e| format!("https://{e}"))
            .collect()
    }

    pub fn pid(&self, index: usize) -> Option<u32> {
        self.members[index].process.as_ref().map(ChildGuard::pid)
    }

    pub fn is_running(&self, index: usize) -> bool {
        self.members[index].process.is_some()
    }

    /// Fails (with the log tail) if a member that should run has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        for member in &mut self.members {
            if let Some(process) = member.process.as_mut() {
                process.ensure_running()?;
            }
        }
        Ok(())
    }

    /// host:port of one member's peer (raft) listener.
    pub fn peer_addr(&self, index: usize) -> String {
        self.members[index]
            .peer_url
            .trim_start_matches("http://")
            .to_string()
    }

    /// The index of the member that is leader, by the Maintenance Status
    /// API (the member whose id equals the leader id it reports). Asks the
    /// running members in turn; each attempt is bounded by `timeout`.
    pub async fn leader_index(&self, timeout: Duration) -> Result<usize> {
        let mut last_error = anyhow::anyhow!("no etcd member is running");
        for (index, member) in self.members.iter().enumerate() {
            if member.process.is_none() {
                continue;
            }
            match member_status(&member.client_endpoint, timeout).await {
                Ok((member_id, leader_id)) if member_id == leader_id => return Ok(index),
                Ok(_) => {}
                Err(e) => last_error = e,
            }
        }
        Err(last_error.context("no etcd member reports itself as leader"))
    }

    /// Stops one member gracefully (SIGTERM, bounded wait, SIGKILL).
    pub fn stop_member(&mut self, index: usize) {
        if let Some(mut process) = self.members[index].process.take() {
            process.stop(STOP_GRACE);
        }
    }

    /// Crashes one member (SIGKILL).
    pub fn kill_member(&mut self, index: usize) {
        if let Some(mut process) = self.members[index].process.take() {
            process.kill();
        }
    }

    /// Restarts a stopped member on its existing data dir.
    pub fn restart_member(&mut self, index: usize) -> Result<()> {
        anyhow::ensure!(
            self.members[index].process.is_none(),
            "member {index} is running"
        );
        self.spawn_member(index, "existing")
    }

    /// Stops every member, one after the other, and removes their data
    /// dirs. Logs stay. One at a time because a SIGTERMed leader first hands
    /// leadership to a live follower: stopped all at once, the leader waits
    /// out a failed transfer (~7 s) before exiting.
    pub fn stop(mut self) -> Result<()> {
        for member in &mut self.members {
            if let Some(mut process) = member.process.take() {
                process.stop(STOP_GRACE);
            }
        }
        for member in &self.members {
            if member.data_dir.exists() {
                std::fs::remove_dir_all(&member.data_dir)
                    .with_context(|| format!("remove {}", member.data_dir.display()))?;
            }
        }
        Ok(())
    }

    fn spawn_member(&mut self, index: usize, cluster_state: &str) -> Result<()> {
        let member = &self.members[index];
        let mut client_url = format!("http://{}", member.client_endpoint);
        if let Some(e) = &member.tls_endpoint {
            client_url = format!("{client_url},https://{e}");
        }
        let mut command = netns::command_in(member.netns.as_deref(), &self.config.etcd_bin);
        if let Some(tls) = &self.config.tls {
            command
                .arg("--cert-file")
                .arg(&tls.cert_file)
                .arg("--key-file")
                .arg(&tls.key_file)
                .arg("--trusted-ca-file")
                .arg(&tls.trusted_ca_file)
                .arg("--client-cert-auth");
        }
        command
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&member.data_dir)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&member.peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&member.peer_url)
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-state")
            .arg(cluster_state)
            .arg("--initial-cluster-token")
            .arg(&self.config.cluster_token)
            .arg("--logger")
            .arg("zap")
            .arg("--log-outputs")
            .arg("stderr");
        // etcd also reads its flags from ETCD_* variables; the command line
        // above must be the whole configuration.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(name);
            }
        }
        let process = ChildGuard::spawn(&member.name, command, &member.log_path)?;
        self.members[index].process = Some(process);
        Ok(())
    }

    fn log_paths_joined(&self) -> String {
        self.members
            .iter()
            .map(|m| m.log_path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn member_layout(config: &EtcdClusterConfig, index: usize) -> EtcdMember {
    let name = format!("etcd-{}", index + 1);
    let (ip, client_port, netns) = match config.hosts.get(index) {
        Some(host) => (host.ip.to_string(), config.base_port, Some(host.netns())),
        None => (
            "127.0.0.1".to_string(),
            config.base_port + 2 * index as u16,
            None,
        ),
    };
    let tls_port = config.base_port + 2 * config.members as u16 + index as u16;
    EtcdMember {
        client_endpoint: format!("{ip}:{client_port}"),
        tls_endpoint: config.tls.as_ref().map(|_| format!("{ip}:{tls_port}")),
        peer_url: format!("http://{ip}:{}", client_port + 1),
        data_dir: config.data_root.join(&name),
        log_path: config.log_dir.join(format!("{name}.log")),
        name,
        netns,
        process: None,
    }
}

/// (member id, leader id) from one member's Maintenance Status.
async fn member_status(endpoint: &str, timeout: Duration) -> Result<(u64, u64)> {
    member_raft_status(endpoint, timeout)
        .await
        .map(|(member, leader, _)| (member, leader))
}

/// (member id, leader id, raft term) from one member's Maintenance Status.
pub async fn member_raft_status(endpoint: &str, timeout: Duration) -> Result<(u64, u64, u64)> {
    let options = ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_timeout(timeout);
    let attempt = async {
        let mut client = Client::connect([endpoint], Some(options)).await?;
        client.status().await
    };
    let status = tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| anyhow::anyhow!("status of {endpoint}: timeout after {timeout:?}"))?
        .with_context(|| format!("status of {endpoint}"))?;
    let member_id = status
        .header()
        .map(|h| h.member_id())
        .with_context(|| format!("status of {endpoint} has no header"))?;
    Ok((member_id, status.leader(), status.raft_term()))
}

/// Fails with a clear message if something already listens on `addr`
/// (typically a server left over from an earlier, killed run).
pub fn ensure_port_free(addr: &str) -> Result<()> {
    TcpListener::bind(addr)
        .map(drop)
        .with_context(|| format!("port {addr} is in use (a server left over from an earlier run?)"))
}
