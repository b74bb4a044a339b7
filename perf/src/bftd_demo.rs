//! The bftd demo cluster: `bftd demo` runs n replicas on one machine.
//!
//! Contract with the `bftd` binary: `bftd demo --replicas n --base-port p
//! --data-dir d --durability fsync|memory` serves the etcd v3 API on
//! 127.0.0.1:p .. 127.0.0.1:p+n-1, prints its endpoints and runs until
//! SIGINT/SIGTERM.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::etcd_cluster::ensure_port_free;
use crate::loadgen;
use crate::procs::{ChildGuard, STOP_GRACE};

#[derive(Clone, Debug)]
pub struct BftdDemoConfig {
    pub bftd_bin: PathBuf,
    pub replicas: u16,
    pub base_port: u16,
    /// Handed to `--data-dir`; created if missing.
    pub data_dir: PathBuf,
    pub durability: String,
    pub log_path: PathBuf,
}

pub struct BftdDemo {
    endpoints: Vec<String>,
    process: Option<ChildGuard>,
}

impl BftdDemo {
    /// Checks that the binary exists, with the command that builds it.
    pub fn check_binary(bftd_bin: &std::path::Path) -> Result<()> {
        anyhow::ensure!(
            bftd_bin.is_file(),
            "bftd binary not found at {}: build it with `cargo build --release -p bftd` \
             (or pass --bftd-bin PATH), or run only the etcd half with `--only etcd`",
            bftd_bin.display()
        );
        Ok(())
    }

    /// Spawns the demo cluster. Must be called from the main thread (see
    /// `procs`).
    pub fn start(config: &BftdDemoConfig) -> Result<Self> {
        Self::check_binary(&config.bftd_bin)?;
        anyhow::ensure!(
            config.replicas >= 4,
            "bftd needs at least 4 replicas (n = 3f+1, f >= 1)"
        );
        let port_top = u32::from(config.base_port) + u32::from(config.replicas);
        anyhow::ensure!(
            port_top <= u32::from(u16::MAX),
            "bftd base port {} too high",
            config.base_port
        );
        let endpoints: Vec<String> = (0..config.replicas)
            .map(|i| format!("127.0.0.1:{}", config.base_port + i))
            .collect();
        for endpoint in &endpoints {
            ensure_port_free(endpoint)?;
        }
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("create {}", config.data_dir.display()))?;
        let mut command = Command::new(&config.bftd_bin);
        command
            .arg("demo")
            .arg("--replicas")
            .arg(config.replicas.to_string())
            .arg("--base-port")
            .arg(config.base_port.to_string())
            .arg("--data-dir")
            .arg(&config.data_dir)
            .arg("--durability")
            .arg(&config.durability);
        let process = ChildGuard::spawn("bftd-demo", command, &config.log_path)?;
        Ok(BftdDemo {
            endpoints,
            process: Some(process),
        })
    }

    /// Waits (bounded) until a put succeeds through every replica.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let process = self.process.as_mut().context("bftd demo already stopped")?;
        let log = process.log_path().display().to_string();
        loadgen::wait_until_put_succeeds(&self.endpoints, timeout, || process.ensure_running())
            .await
            .with_context(|| format!("bftd demo cluster not ready (log {log})"))
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ChildGuard::pid)
    }

    /// SIGTERM, bounded wait, then SIGKILL.
    pub fn stop(mut self) {
        if let Some(mut process) = self.process.take() {
            if let Some(status) = process.stop(STOP_GRACE) {
                let terminated = status.signal() == Some(libc::SIGTERM);
                if !status.success() && !terminated {
                    eprintln!(
                        "bftd demo exited with {status}; see {}",
                        process.log_path().display()
                    );
                }
            }
        }
    }
}
