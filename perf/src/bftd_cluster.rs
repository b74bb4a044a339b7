//! A bftd cluster of separate `bftd run` processes, one per replica, so a
//! benchmark can crash (SIGKILL) or flood one replica.
//!
//! Contract with the `bftd` binary:
//! - `bftd init --replicas n --dir D --base-port P --durability d` writes
//!   `D/bftd.toml` (a `ClusterConfig`) and `D/keys/`. On loopback, replica i
//!   serves clients on P+i, consensus (TCP) on P+10000+i, HTTP on P+20000+i.
//! - We keep the keys, set `[dataplane] pin_cores = "off"` (several replicas
//!   share this machine's cores) and, in network namespaces, rewrite the
//!   addresses of each `[[replica]]` to the host's IP (same ports).
//! - `bftd run --config D/bftd.toml --id i` runs replica i until SIGTERM.
//! - `GET http://<http_addr>/status` returns JSON with `replica`, `regency`,
//!   `leader`, `last_decided_cid`, `revision`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::etcd_cluster::ensure_port_free;
use crate::loadgen;
use crate::netns::{self, NetHost};
use crate::procs::{ChildGuard, STOP_GRACE};

/// Largest /status response we read.
const STATUS_BYTES_MAX: u64 = 64 * 1024;
const CLIENT_PORT_OFFSET: u16 = 0;
const REPLICA_PORT_OFFSET: u16 = 10_000;
const HTTP_PORT_OFFSET: u16 = 20_000;
/// With `tls`: the plaintext client listener beside TLS.
const PLAIN_PORT_OFFSET: u16 = 5_000;

#[derive(Clone, Debug)]
pub struct BftdClusterConfig {
    pub bftd_bin: PathBuf,
    pub replicas: u16,
    pub base_port: u16,
    pub durability: String,
    /// Config, keys and data go here (created; should be a scratch dir).
    pub dir: PathBuf,
    /// Replica logs: `<log_dir>/<log_prefix>-<i>.log`.
    pub log_dir: PathBuf,
    pub log_prefix: String,
    /// Empty: loopback. Otherwise one host (network namespace) per replica.
    pub hosts: Vec<NetHost>,
    /// `bftd init --tls` (mutual TLS on the client ports, certificates in
    /// `<dir>/tls`) plus a plaintext listener beside it at
    /// `base_port + 5000 + i` (loopback only).
    pub tls: bool,
}

pub struct BftdReplica {
    pub id: u16,
    /// host:port of the etcd API, plaintext (with `tls`, the plaintext
    /// listener beside TLS).
    pub client_endpoint: String,
    /// With `tls`: `https://host:port` of the TLS client port.
    pub tls_endpoint: Option<String>,
    /// host:port of the consensus (replica-to-replica) listener.
    pub replica_addr: String,
    pub http_addr: String,
    pub log_path: PathBuf,
    pub netns: Option<String>,
    process: Option<ChildGuard>,
}

/// What the harness reads from `/status`.
#[derive(Clone, Debug, Deserialize)]
pub struct ReplicaStatus {
    pub replica: u64,
    pub regency: u64,
    pub leader: u64,
    pub last_decided_cid: u64,
    #[serde(default)]
    pub revision: u64,
}

pub struct BftdCluster {
    config_path: PathBuf,
    bftd_bin: PathBuf,
    replicas: Vec<BftdReplica>,
}

impl BftdCluster {
    /// Writes the config and spawns every replica. Call
    /// [`BftdCluster::wait_ready`] before sending load. Must be called from
    /// the main thread (see `procs`).
    pub fn start(config: &BftdClusterConfig) -> Result<Self> {
        crate::bftd_demo::BftdDemo::check_binary(&config.bftd_bin)?;
        anyhow::ensure!(
            config.replicas >= 4,
            "bftd needs at least 4 replicas (n = 3f+1, f >= 1)"
        );
        anyhow::ensure!(
            !config.tls || config.hosts.is_empty(),
            "the TLS cluster runs on loopback"
        );
        anyhow::ensure!(
            config.hosts.is_empty() || config.hosts.len() == usize::from(config.replicas),
            "{} hosts for {} replicas",
            config.hosts.len(),
            config.replicas
        );
        let port_top =
            u32::from(config.base_port) + u32::from(HTTP_PORT_OFFSET) + u32::from(config.replicas);
        anyhow::ensure!(
            port_top <= u32::from(u16::MAX),
            "bftd base port {} too high",
            config.base_port
        );
        std::fs::create_dir_all(&config.dir)
            .with_context(|| format!("create {}", config.dir.display()))?;
        let config_path = init_config(config)?;
        let mut replicas = Vec::with_capacity(usize::from(config.replicas));
        for id in 0..config.replicas {
            let host = config.hosts.get(usize::from(id));
            let addr = |offset: u16| -> String {
                let port = config.base_port + offset + id;
                match host {
                    Some(h) => format!("{}:{port}", h.ip),
                    None => format!("127.0.0.1:{port}"),
                }
            };
            let (client_endpoint, tls_endpoint) = if config.tls {
                (
                    addr(PLAIN_PORT_OFFSET),
                    Some(format!("https://{}", addr(CLIENT_PORT_OFFSET))),
                )
            } else {
                (addr(CLIENT_PORT_OFFSET), None)
            };
            let replica = BftdReplica {
                id,
                client_endpoint,
                tls_endpoint,
                replica_addr: addr(REPLICA_PORT_OFFSET),
                http_addr: addr(HTTP_PORT_OFFSET),
                log_path: config
                    .log_dir
                    .join(format!("{}-{id}.log", config.log_prefix)),
                netns: host.map(NetHost::netns),
                process: None,
            };
            if host.is_none() {
                for a in [
                    &replica.client_endpoint,
                    &replica.replica_addr,
                    &replica.http_addr,
                ] {
                    ensure_port_free(a)?;
                }
            }
            replicas.push(replica);
        }
        let mut cluster = BftdCluster {
            config_path,
            bftd_bin: config.bftd_bin.clone(),
            replicas,
        };
        for index in 0..cluster.replicas.len() {
            cluster.spawn_replica(index)?;
        }
        Ok(cluster)
    }

    /// Waits (bounded) until a put succeeds through every replica.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let endpoints = self.client_endpoints();
        let replicas = &mut self.replicas;
        let check_alive = || {
            for replica in replicas.iter_mut() {
                if let Some(process) = replica.process.as_mut() {
                    process.ensure_running()?;
                }
            }
            Ok(())
        };
        loadgen::wait_until_put_succeeds(&endpoints, timeout, check_alive)
            .await
            .context("bftd cluster not ready")
    }

    pub fn replicas(&self) -> &[BftdReplica] {
        &self.replicas
    }

    pub fn client_endpoints(&self) -> Vec<String> {
        self.replicas
            .iter()
            .map(|r| r.client_endpoint.clone())
            .collect()
    }

    /// `https://host:port` of every TLS client port (empty without `tls`).
    pub fn tls_endpoints(&self) -> Vec<String> {
        self.replicas
            .iter()
            .filter_map(|r| r.tls_endpoint.clone())
            .collect()
    }

    pub fn pid(&self, index: usize) -> Option<u32> {
        self.replicas[index].process.as_ref().map(ChildGuard::pid)
    }

    pub fn is_running(&self, index: usize) -> bool {
        self.replicas[index].process.is_some()
    }

    /// Fails (with the log tail) if a replica that should run has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        for replica in &mut self.replicas {
            if let Some(process) = replica.process.as_mut() {
                process.ensure_running()?;
            }
        }
        Ok(())
    }

    /// Crashes one replica (SIGKILL, then reap).
    pub fn kill_replica(&mut self, index: usize) {
        if let Some(mut process) = self.replicas[index].process.take() {
            process.kill();
        }
    }

    /// `/status` of one replica (bounded by `timeout`).
    pub async fn status(&self, index: usize, timeout: Duration) -> Result<ReplicaStatus> {
        fetch_status(&self.replicas[index].http_addr, timeout)
            .await
            .with_context(|| format!("status of replica {index}"))
    }

    /// The leader as most running replicas see it (ties: the lower id),
    /// with the highest regency reported.
    pub async fn leader(&self, timeout: Duration) -> Result<(usize, u64)> {
        let mut votes = vec![0usize; self.replicas.len()];
        let mut regency = 0;
        let mut last_error = None;
        for index in 0..self.replicas.len() {
            if !self.is_running(index) {
                continue;
            }
            match self.status(index, timeout).await {
                Ok(status) => {
                    let leader = status.leader as usize;
                    anyhow::ensure!(
                        leader < votes.len(),
                        "replica {index} reports leader {leader} of {}",
                        votes.len()
                    );
                    votes[leader] += 1;
                    regency = regency.max(status.regency);
                }
                Err(e) => last_error = Some(e),
            }
        }
        let (leader, count) = votes
            .iter()
            .enumerate()
            .max_by_key(|&(i, &c)| (c, std::cmp::Reverse(i)))
            .map(|(i, &c)| (i, c))
            .unwrap_or((0, 0));
        match (count, last_error) {
            (0, Some(e)) => Err(e.context("no replica answered /status")),
            (0, None) => anyhow::bail!("no replica is running"),
            _ => Ok((leader, regency)),
        }
    }

    /// Stops every replica (SIGTERM, bounded wait, SIGKILL). Data stays in
    /// the config dir (the caller's scratch dir removes it).
    pub fn stop(mut self) {
        for replica in &mut self.replicas {
            if let Some(mut process) = replica.process.take() {
                process.stop(STOP_GRACE);
            }
        }
    }

    fn spawn_replica(&mut self, index: usize) -> Result<()> {
        let replica = &self.replicas[index];
        let mut command = netns::command_in(replica.netns.as_deref(), &self.bftd_bin);
        command
            .arg("run")
            .arg("--config")
            .arg(&self.config_path)
            .arg("--id")
            .arg(replica.id.to_string());
        let name = format!("bftd-{}", replica.id);
        let process = ChildGuard::spawn(&name, command, &replica.log_path)?;
        self.replicas[index].process = Some(process);
        Ok(())
    }
}

/// Runs `bftd init`, then edits the config: no core pinning, and the hosts'
/// addresses when the replicas live in network namespaces.
fn init_config(config: &BftdClusterConfig) -> Result<PathBuf> {
    let output = Command::new(&config.bftd_bin)
        .arg("init")
        .arg("--replicas")
        .arg(config.replicas.to_string())
        .arg("--dir")
        .arg(&config.dir)
        .arg("--base-port")
        .arg(config.base_port.to_string())
        .arg("--durability")
        .arg(&config.durability)
        .args(config.tls.then_some("--tls"))
        .output()
        .with_context(|| format!("run {} init", config.bftd_bin.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "bftd init failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let path = config.dir.join("bftd.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let mut edited = edit_config(&text, config.base_port, &config.hosts)
        .with_context(|| format!("edit {}", path.display()))?;
    if config.tls {
        edited = add_plain_listeners(&edited, config.base_port)
            .with_context(|| format!("edit {}", path.display()))?;
    }
    std::fs::write(&path, edited).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

fn edit_config(text: &str, base_port: u16, hosts: &[NetHost]) -> Result<String> {
    let mut doc: toml::Table = toml::from_str(text).context("parse")?;
    let dataplane = doc
        .get_mut("dataplane")
        .and_then(toml::Value::as_table_mut)
        .context("no [dataplane] table")?;
    dataplane.insert("pin_cores".into(), toml::Value::String("off".into()));
    if !hosts.is_empty() {
        let replicas = doc
            .get_mut("replica")
            .and_then(toml::Value::as_array_mut)
            .context("no [[replica]] tables")?;
        anyhow::ensure!(
            replicas.len() == hosts.len(),
            "{} [[replica]] tables for {} hosts",
            replicas.len(),
            hosts.len()
        );
        for (id, (table, host)) in replicas.iter_mut().zip(hosts).enumerate() {
            let table = table.as_table_mut().context("[[replica]] is not a table")?;
            let id = id as u16;
            for (field, offset) in [
                ("client_addr", CLIENT_PORT_OFFSET),
                ("replica_addr", REPLICA_PORT_OFFSET),
                ("http_addr", HTTP_PORT_OFFSET),
            ] {
                let addr = format!("{}:{}", host.ip, base_port + offset + id);
                table.insert(field.into(), toml::Value::String(addr));
            }
        }
    }
    toml::to_string_pretty(&doc).context("serialize")
}

/// Gives each `[[replica]]` a plaintext `client_plain_addr` at
/// `127.0.0.1:base + 5000 + id` beside its TLS `client_addr`.
fn add_plain_listeners(text: &str, base_port: u16) -> Result<String> {
    let mut doc: toml::Table = toml::from_str(text).context("parse")?;
    let replicas = doc
        .get_mut("replica")
        .and_then(toml::Value::as_array_mut)
        .context("no [[replica]] tables")?;
    for (id, table) in replicas.iter_mut().enumerate() {
        let table = table.as_table_mut().context("[[replica]] is not a table")?;
        let addr = format!("127.0.0.1:{}", base_port + PLAIN_PORT_OFFSET + id as u16);
        table.insert("client_plain_addr".into(), toml::Value::String(addr));
    }
    toml::to_string_pretty(&doc).context("serialize")
}

/// `/status` of the replica whose HTTP listener is `http_addr` (bounded by
/// `timeout`).
pub async fn fetch_status(http_addr: &str, timeout: Duration) -> Result<ReplicaStatus> {
    let body = tokio::time::timeout(timeout, http_get(http_addr, "/status"))
        .await
        .map_err(|_| {
            anyhow::anyhow!("GET http://{http_addr}/status: timeout after {timeout:?}")
        })??;
    serde_json::from_str(&body).with_context(|| format!("parse /status: {body}"))
}

/// A minimal HTTP/1.1 GET (`Connection: close`); returns the body of a 200.
async fn http_get(addr: &str, path: &str) -> Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    (&mut stream)
        .take(STATUS_BYTES_MAX)
        .read_to_end(&mut response)
        .await?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("malformed HTTP response from {addr}"))?;
    let status_line = head.lines().next().unwrap_or("");
    anyhow::ensure!(
        status_line.split_whitespace().nth(1) == Some("200"),
        "GET http://{addr}{path}: {status_line}"
    );
    anyhow::ensure!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "GET http://{addr}{path}: chunked responses are not supported"
    );
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const CONFIG: &str = r#"
cluster_id = 1
[protocol]
tick_ms = 10
[dataplane]
pin_cores = "auto"
[[replica]]
id = 0
public_key = "aa"
replica_addr = "127.0.0.1:12379"
client_addr = "127.0.0.1:2379"
http_addr = "127.0.0.1:22379"
[[replica]]
id = 1
public_key = "bb"
replica_addr = "127.0.0.1:12380"
client_addr = "127.0.0.1:2380"
http_addr = "127.0.0.1:22380"
"#;

    #[test]
    fn namespaced_config_keeps_keys_and_moves_addresses() {
        let hosts = [
            NetHost::new("r0", Ipv4Addr::new(10, 77, 0, 1)),
            NetHost::new("r1", Ipv4Addr::new(10, 77, 0, 2)),
        ];
        let edited: toml::Table =
            toml::from_str(&edit_config(CONFIG, 2379, &hosts).unwrap()).unwrap();
        assert_eq!(edited["dataplane"]["pin_cores"].as_str(), Some("off"));
        let second = &edited["replica"].as_array().unwrap()[1];
        assert_eq!(second["public_key"].as_str(), Some("bb"));
        assert_eq!(second["client_addr"].as_str(), Some("10.77.0.2:2380"));
        assert_eq!(second["replica_addr"].as_str(), Some("10.77.0.2:12380"));
        assert_eq!(second["http_addr"].as_str(), Some("10.77.0.2:22380"));
        assert_eq!(edited["protocol"]["tick_ms"].as_integer(), Some(10));
    }
}
