//! Runs one replica process: the replica's threads plus its API runtime
//! (etcd gRPC on `client_addr`, status/metrics on `http_addr`) until
//! SIGINT or SIGTERM.

use std::sync::Arc;

use crate::config::ClusterConfig;
use crate::replica::{self, Observer, ReplicaBackend};

/// Starts replica `id` and serves it until SIGINT/SIGTERM. Errors name
/// what to fix (a busy port, a missing key file, a bad config).
pub fn run(
    config: ClusterConfig,
    id: u16,
    fault_injection: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let config = Arc::new(config);
    let entry = config.replica(id)?.clone();
    let running = replica::start(config.clone(), id)?;
    let backend = Arc::new(ReplicaBackend {
        hist: running.hist.clone(),
        store: running.store.clone(),
        proxy: running.proxy.clone(),
        status: running.status.clone(),
        cluster: running.cluster.clone(),
        cluster_id: config.cluster_id,
    });
    let observer = Arc::new(Observer {
        id,
        status: running.status.clone(),
        store: running.store.clone(),
        dataplane: running.dataplane_stats.clone(),
        control: running.control_stats.clone(),
        nic: running.nic.clone(),
        faults: fault_injection.then(|| running.faults.clone()),
        hist: running.hist.clone(),
    });
    let limits = api::ApiLimits {
        request_bytes_max: config.protocol.request_bytes_max,
        ..api::ApiLimits::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(format!("api-r{id}"))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let http_listener = api::http::bind(entry.http_addr).await?;
        let http = tokio::spawn(api::http::serve(
            http_listener,
            observer,
            stopped(stop_rx.clone()),
        ));
        let grpc_listener = tokio::net::TcpListener::bind(entry.client_addr)
            .await
            .map_err(|e| format!("client address {}: {e}", entry.client_addr))?;
        let grpc = tokio::spawn(api::serve_grpc(
            grpc_listener,
            backend,
            limits,
            stopped(stop_rx),
        ));
        tracing::info!(
            replica = id,
            client = %entry.client_addr,
            replica_addr = %entry.replica_addr,
            http = %entry.http_addr,
            "replica serving"
        );
        wait_for_signal().await;
        tracing::info!(replica = id, "stopping");
        let _ = stop_tx.send(true);
        let _ = grpc.await;
        let _ = http.await;
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    // The replica's threads hold no state that must be flushed: every
    // acknowledged batch is already durable. Exit without joining them.
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
