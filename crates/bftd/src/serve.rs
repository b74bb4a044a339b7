//! Runs one replica process: the replica's threads plus its API runtime
//! (etcd gRPC on `client_addr`, and `client_plain_addr` if set;
//! status/metrics on `http_addr`) until SIGINT or SIGTERM. With
//! `[client_tls]` on, SIGHUP reads the certificate, key and CA files again
//! (see [`reload_tls`]).

use std::sync::Arc;
use std::time::Duration;

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
    let auto_compaction = config.auto_compaction()?;
    let running = replica::start(config.clone(), id)?;
    let backend = Arc::new(ReplicaBackend {
        hist: running.hist.clone(),
        store: running.store.clone(),
        proxy: running.proxy.clone(),
        status: running.status.clone(),
        cluster: running.cluster.clone(),
        cluster_id: config.cluster_id,
        me: id,
        range_response_bytes_max: config.api.range_response_bytes_max,
        revisions: running.revisions.subscribe(),
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
        client_port: Default::default(),
        shape: replica::ClusterShape::of(&config),
    });
    let fd_limit = raise_open_files_limit();
    let a = &config.api;
    let mut limits = api::ApiLimits {
        request_bytes_max: config.protocol.request_bytes_max,
        client_connections_max: a.client_connections_max,
        client_idle_timeout: Duration::from_millis(a.client_idle_timeout_ms),
        http2_max_concurrent_streams: a.http2_max_concurrent_streams,
        http2_stream_window_bytes: a.http2_stream_window_bytes,
        http2_connection_window_bytes: a.http2_connection_window_bytes,
        request_bytes_pending_per_connection_max: a.request_bytes_pending_per_connection_max,
        request_bytes_pending_max: a.request_bytes_pending_max,
        range_response_bytes_max: a.range_response_bytes_max,
        watch_progress_notify_interval: Duration::from_millis(a.watch_progress_notify_interval_ms),
        watches_per_stream_max: a.watches_per_stream_max,
        watch_scan_changes_max: a.watch_scan_changes_max,
        lease_check_interval: Duration::from_millis(a.lease_check_interval_ms),
        bcrypt_cost: a.bcrypt_cost,
        ..api::ApiLimits::default()
    };
    limits.client_connections_max =
        client_connections_cap(limits.client_connections_max, fd_limit)?;
    limits.validate().map_err(|e| format!("API limits: {e}"))?;
    tracing::info!(
        replica = id,
        open_files_max = fd_limit,
        client_connections_max = limits.client_connections_max,
        fds_reserved = FDS_RESERVED,
        "client port limits"
    );
    let client_table = api::client_port::ConnTable::new(&limits);
    assert!(
        observer.client_port.set(client_table.clone()).is_ok(),
        "the client port is set once"
    );
    let (client_tls, http_tls) = load_tls(&config, id)?;
    let status = running.status.clone();
    let _notifier = crate::systemd::spawn_notifier(status.clone())?;
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
        let http = tokio::spawn(api::http::serve_with(
            http_listener,
            observer,
            http_tls.clone(),
            stopped(stop_rx.clone()),
        ));
        let grpc_listener = tokio::net::TcpListener::bind(entry.client_addr)
            .await
            .map_err(|e| format!("client address {}: {e}", entry.client_addr))?;
        let mut incoming = api::client_port::incoming(grpc_listener, client_table.clone());
        if let Some(tls) = &client_tls {
            incoming = incoming.with_tls(tls.clone());
        }
        // A plaintext listener beside TLS shares the connection table.
        let plain = match entry.client_plain_addr {
            Some(a) => Some(api::client_port::incoming(
                tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(|e| format!("client_plain_addr {a}: {e}"))?,
                client_table,
            )),
            None => None,
        };
        let compactor = auto_compaction.map(|ac| {
            tracing::info!(replica = id, config = ?ac, "auto compaction on");
            tokio::spawn(crate::compactor::run(backend.clone(), ac))
        });
        let grpc = match plain {
            Some(plain) => tokio::spawn(api::serve_grpc_incoming(
                tokio_stream::StreamExt::merge(incoming, plain),
                backend,
                limits,
                stopped(stop_rx),
            )),
            None => tokio::spawn(api::serve_grpc_incoming(
                incoming,
                backend,
                limits,
                stopped(stop_rx),
            )),
        };
        tracing::info!(
            replica = id,
            client = %format!("{}://{}", config.client_scheme(), entry.client_addr),
            client_plain = ?entry.client_plain_addr,
            replica_addr = %entry.replica_addr,
            http = %entry.http_addr,
            http_tls = http_tls.is_some(),
            client_cert_auth = client_tls.as_ref().is_some_and(|t| t.files().requires_client_cert()),
            "replica serving"
        );
        // The WAL is recovered (`replica::start`) and every listener is
        // bound: tell systemd (Type=notify) the replica serves.
        crate::systemd::ready(&status);
        wait_for_signal(|| reload_tls(id, &[&client_tls, &http_tls])).await;
        tracing::info!(replica = id, "stopping");
        crate::systemd::stopping();
        let _ = stop_tx.send(true);
        if let Some(c) = compactor {
            c.abort();
        }
        let _ = grpc.await;
        let _ = http.await;
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    // The replica's threads hold no state that must be flushed: every
    // acknowledged batch is already durable. Exit without joining them.
    Ok(())
}

/// File descriptors kept for the replica itself, beyond client and status
/// connections: log segments and their spares, checkpoint files being
/// written and read, replica links (a few per peer), the status port's
/// connections ([`api::http::HTTP_CONNECTIONS_MAX`]), epoll/eventfd/timer
/// descriptors and stdio. Generous on purpose: running out makes a WAL or
/// checkpoint write fail, which stops the replica.
pub const FDS_RESERVED: u64 = 1024;

/// Fewest client connections a replica will run with.
pub const CLIENT_CONNECTIONS_MIN: usize = 16;

/// Raises the soft RLIMIT_NOFILE to the hard limit (an unprivileged
/// process may) and returns the soft limit in force afterwards. When the
/// limit cannot be read, assumes Linux's usual default of 1024.
pub fn raise_open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `lim`, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        tracing::warn!(
            "getrlimit(RLIMIT_NOFILE): {}; assuming 1024",
            std::io::Error::last_os_error()
        );
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit from `raised`.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::info!(
                from = lim.rlim_cur,
                to = lim.rlim_max,
                "raised the open-files limit (RLIMIT_NOFILE) to its hard limit"
            );
            lim.rlim_cur = lim.rlim_max;
        } else {
            tracing::warn!(
                "setrlimit(RLIMIT_NOFILE, {}): {}; keeping {}",
                lim.rlim_max,
                std::io::Error::last_os_error(),
                lim.rlim_cur
            );
        }
    }
    lim.rlim_cur
}

/// `configured` client connections, lowered so that they and
/// [`FDS_RESERVED`] fit in `fd_limit` descriptors (each connection takes
/// one, plus a few evicted ones closing at the same time). Errors when
/// fewer than [`CLIENT_CONNECTIONS_MIN`] would be left.
pub fn client_connections_cap(configured: usize, fd_limit: u64) -> Result<usize, String> {
    // Connections being evicted are open beside the limit for a moment.
    let evicting_max = api::client_port::EVICTING_MAX as u64;
    let room = fd_limit.saturating_sub(FDS_RESERVED + evicting_max);
    let cap = configured.min(usize::try_from(room).unwrap_or(usize::MAX));
    if cap < CLIENT_CONNECTIONS_MIN {
        return Err(format!(
            "the open-files limit is {fd_limit}: too low for {CLIENT_CONNECTIONS_MIN} client \
             connections beside the {FDS_RESERVED} descriptors kept for the replica; raise it \
             (ulimit -n, LimitNOFILE=)"
        ));
    }
    if cap < configured {
        tracing::warn!(
            configured,
            cap,
            fd_limit,
            "client_connections_max lowered to fit the open-files limit"
        );
    }
    Ok(cap)
}

/// The client port's and (with `http_tls`) the status port's TLS configs
/// of replica `id`, read from `[client_tls]`'s files; `None` when off.
///
/// # Errors
/// A file that is missing or wrong, named with what to do (see
/// [`api::tls::TlsError`]).
#[allow(clippy::type_complexity)]
pub fn load_tls(
    config: &ClusterConfig,
    id: u16,
) -> Result<
    (
        Option<Arc<api::tls::ServerTls>>,
        Option<Arc<api::tls::ServerTls>>,
    ),
    String,
> {
    let Some(files) = config.client_tls_files(id) else {
        return Ok((None, None));
    };
    let load = |alpn| {
        api::tls::ServerTls::load(files.clone(), alpn)
            .map_err(|e| format!("[client_tls] of replica {id}: {e}"))
    };
    let client = load(api::tls::ALPN_CLIENT_PORT)?;
    let http = if config.client_tls.http_tls {
        Some(load(api::tls::ALPN_STATUS_PORT)?)
    } else {
        None
    };
    tracing::info!(
        replica = id,
        cert_file = %files.cert_file.display(),
        serial = %client.serial_hex(),
        "client TLS certificate loaded"
    );
    Ok((Some(client), http))
}

/// SIGHUP: reads each TLS config's files again. New connections get the
/// new certificate, key and CA; open connections keep their sessions. A
/// reload that fails is logged and the config in force stays.
pub fn reload_tls(id: u16, configs: &[&Option<Arc<api::tls::ServerTls>>]) {
    let mut any = false;
    for tls in configs.iter().filter_map(|t| t.as_ref()) {
        any = true;
        match tls.reload() {
            Ok(()) => tracing::info!(
                replica = id,
                serial = %tls.serial_hex(),
                "SIGHUP: TLS certificates reloaded"
            ),
            Err(e) => tracing::error!(
                replica = id,
                "SIGHUP: TLS reload failed, the certificates in force stay: {e}"
            ),
        }
    }
    if !any {
        tracing::info!(
            replica = id,
            "SIGHUP: nothing to reload ([client_tls] is off)"
        );
    }
}

/// Waits for SIGTERM or SIGINT; calls `on_hangup` at each SIGHUP
/// meanwhile.
async fn wait_for_signal(on_hangup: impl Fn()) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => on_hangup(),
        }
    }
}
