//! The `bftd` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use bftd::config::{self, ClusterConfig, Durability};
use clap::{Parser, Subcommand};

/// bftd: a Byzantine-fault-tolerant, etcd-compatible key-value store for
/// Kubernetes masters. Writes are ordered by BFT-SMaRt's Mod-SMaRt protocol
/// among n = 3f+1 replicas; any etcd v3 client talks to its local replica.
#[derive(Parser)]
#[command(name = "bftd", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate an ed25519 identity key: writes the secret key file (mode
    /// 0600) and prints the public key for the cluster config.
    Keygen {
        /// Where to write the secret key.
        #[arg(long, default_value = "bftd.key")]
        out: PathBuf,
    },
    /// Write a cluster config and keys for a loopback cluster.
    Init {
        /// Number of replicas, n = 3f+1 (4 tolerates 1 fault, 7 tolerates 2).
        #[arg(long, default_value_t = 4)]
        replicas: usize,
        /// Directory for bftd.toml and keys/ (created).
        #[arg(long)]
        dir: PathBuf,
        /// Client ports are base..base+n; replica ports base+10000+i; HTTP base+20000+i.
        #[arg(long, default_value_t = 2379)]
        base_port: u16,
        #[arg(long, value_enum, default_value_t = Durability::Fsync)]
        durability: Durability,
        /// Start the new cluster from the store in this file (`etcdctl
        /// snapshot save` from a bftd cluster): copied into --dir and
        /// pinned in the config by its sha256. A damaged or foreign file
        /// is refused.
        #[arg(long, value_name = "FILE")]
        from_snapshot: Option<PathBuf>,
        /// Mutual TLS on the client ports: writes a test CA, a certificate
        /// per replica and a client certificate (CN=root) under DIR/tls,
        /// sets [client_tls], and prints etcdctl's flags.
        #[arg(long)]
        tls: bool,
    },
    /// Run one replica (for systemd and containers) until SIGINT/SIGTERM.
    Run {
        /// The cluster config (see `bftd init`).
        #[arg(long, env = "BFTD_CONFIG")]
        config: PathBuf,
        /// This replica's id in the config.
        #[arg(long, env = "BFTD_ID")]
        id: u16,
        /// For tests only: lets `PUT /debug/blocked?peers=1,2` on the HTTP
        /// status address cut this replica's links to those replicas, and
        /// `PUT /debug/stall_control?ms=N` stop its consensus thread for N
        /// ms (at most 120000).
        #[arg(long)]
        fault_injection: bool,
    },
    /// Probe a replica's /healthz with one plain HTTP/1.1 GET (for container
    /// HEALTHCHECKs and scripts without curl): exit 0 when it answers 200,
    /// otherwise print the reason (the replica's 503 text, a refused
    /// connection, a timeout) and exit 1.
    Health {
        /// The URL to probe, http://HOST[:PORT][/PATH] (port 80 and /healthz
        /// when left out). When given, --config and --id (and their
        /// environment variables) are ignored.
        #[arg(long)]
        url: Option<String>,
        /// The cluster config: probes http://<http_addr>/healthz of replica
        /// --id (127.0.0.1 when http_addr is 0.0.0.0).
        #[arg(long, env = "BFTD_CONFIG")]
        config: Option<PathBuf>,
        /// The replica's id in --config.
        #[arg(long, env = "BFTD_ID")]
        id: Option<u16>,
        /// Give up after this long (connect, send and answer together).
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
        timeout_ms: u64,
    },
    /// Run a local cluster on 127.0.0.1, one process per replica, until
    /// SIGINT/SIGTERM.
    Demo {
        #[arg(long, default_value_t = 4)]
        replicas: usize,
        /// Client endpoints are 127.0.0.1:base..base+n.
        #[arg(long, default_value_t = 2379)]
        base_port: u16,
        /// Keep config, keys, data and logs here (default: a temporary
        /// directory removed at exit).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Durability::Fsync)]
        durability: Durability,
        /// Mutual TLS on the client ports (a test CA and certificates, as
        /// `bftd init --tls`); plaintext without it.
        #[arg(long)]
        tls: bool,
    },
}

/// Turns mutual TLS on in the cluster at `config` when `tls`; prints
/// etcdctl's flags.
fn init_tls(config: &std::path::Path, tls: bool, base_port: u16) -> Result<(), String> {
    if !tls {
        println!("client ports are plaintext; `bftd init --tls` writes a cluster with mutual TLS");
        return Ok(());
    }
    let files = bftd::certs::init_tls(config)?;
    println!(
        "mutual TLS on: certificates under {}\ntry: etcdctl --endpoints=https://127.0.0.1:{base_port} {} put foo bar",
        files.cacert.parent().unwrap_or(std::path::Path::new(".")).display(),
        files.flags()
    );
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<(), String> = match cli.command {
        Cmd::Keygen { out } => {
            let key = wire::SecretKey::generate();
            config::write_secret(&out, &key)
                .map_err(|e| {
                    format!(
                        "{}: {e} (refusing to overwrite an existing key)",
                        out.display()
                    )
                })
                .map(|()| {
                    println!("public_key = \"{}\"", key.public().to_hex());
                    eprintln!("secret key written to {}", out.display());
                })
        }
        Cmd::Init {
            replicas,
            dir,
            base_port,
            durability,
            from_snapshot: None,
            tls,
        } => config::init_loopback(&dir, replicas, base_port, durability)
            .map_err(|e| e.to_string())
            .and_then(|p| {
                println!(
                    "wrote {} and {} keys under {}",
                    p.display(),
                    replicas,
                    dir.join("keys").display()
                );
                init_tls(&p, tls, base_port)
            }),
        Cmd::Init {
            replicas,
            dir,
            base_port,
            durability,
            from_snapshot: Some(file),
            tls,
        } => bftd::seed::init_loopback_from_snapshot(&dir, replicas, base_port, durability, &file)
            .and_then(|(p, rev)| {
                println!(
                    "wrote {} and {} keys under {}; the cluster starts from {} (revision {rev})",
                    p.display(),
                    replicas,
                    dir.join("keys").display(),
                    dir.join(bftd::seed::INITIAL_SNAPSHOT_FILE).display()
                );
                init_tls(&p, tls, base_port)
            }),
        Cmd::Run {
            config,
            id,
            fault_injection,
        } => {
            init_tracing();
            ClusterConfig::load(&config)
                .map_err(|e| e.to_string())
                .and_then(|c| bftd::serve::run(c, id, fault_injection).map_err(|e| e.to_string()))
        }
        Cmd::Health {
            url,
            config,
            id,
            timeout_ms,
        } => bftd::health::run(
            url.as_deref(),
            config.as_deref(),
            id,
            std::time::Duration::from_millis(timeout_ms),
        )
        .map(|body| println!("{}", body.trim())),
        Cmd::Demo {
            replicas,
            base_port,
            data_dir,
            durability,
            tls,
        } => bftd::demo::run(bftd::demo::DemoOptions {
            replicas,
            base_port,
            data_dir,
            durability,
            tls,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bftd: {e}");
            ExitCode::FAILURE
        }
    }
}
