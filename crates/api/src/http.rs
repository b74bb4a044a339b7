//! The status and metrics endpoint of a replica (its `http_addr`):
//! `GET /status` (JSON), `GET /metrics` (Prometheus text format 0.0.4),
//! `GET /healthz` ("ok" when the replica serves, 503 and the reason when
//! it is stuck).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;

/// What the endpoint reads from the replica.
pub trait Observe: Send + Sync + 'static {
    /// The `/status` document.
    fn status_json(&self) -> serde_json::Value;
    /// The `/metrics` body, Prometheus text format.
    fn metrics_text(&self) -> String;
    /// Fault injection for tests: cut the links to these replicas (an
    /// empty list heals). Errors when the replica was not started with
    /// fault injection on.
    fn set_blocked(&self, peers: &[u16]) -> Result<(), String>;
    /// Fault injection for tests: the control thread stops for `ms`
    /// milliseconds (a wedged consensus loop, for the systemd watchdog).
    /// Errors when the replica was not started with fault injection on.
    fn stall_control(&self, _ms: u64) -> Result<(), String> {
        Err("stalling the control thread is not supported here".into())
    }
    /// `Err(reason)` when the replica does not serve as it should (stuck
    /// behind, no progress, a wedged thread): `/healthz` answers 503 with
    /// the reason.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Parses `peers=1,2` (or empty) from a query string.
fn parse_peers(query: Option<&str>) -> Result<Vec<u16>, String> {
    let q = query.unwrap_or("");
    let list = q
        .split('&')
        .find_map(|kv| kv.strip_prefix("peers="))
        .ok_or("expected ?peers=<id>,<id>,... (empty to heal)")?;
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u16>().map_err(|e| format!("peer {s:?}: {e}")))
        .collect()
}

/// Longest control-thread stall `/debug/stall_control` injects, ms.
pub const CONTROL_STALL_MAX_MS: u64 = 120_000;

/// Parses `ms=<n>` (at most [`CONTROL_STALL_MAX_MS`]) from a query string.
fn parse_stall_ms(query: Option<&str>) -> Result<u64, String> {
    let ms = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("ms="))
        .ok_or("expected ?ms=<milliseconds>")?;
    let ms: u64 = ms.parse().map_err(|e| format!("ms {ms:?}: {e}"))?;
    if ms > CONTROL_STALL_MAX_MS {
        return Err(format!("ms {ms} is above {CONTROL_STALL_MAX_MS}"));
    }
    Ok(ms)
}

/// Most connections open at once on the status port (scrapers and
/// operators; the rest of the process's descriptors stay in reserve).
pub const HTTP_CONNECTIONS_MAX: usize = 64;
/// A status-port connection is closed this long after it opened.
pub const HTTP_CONNECTION_AGE_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves the endpoint on `listener` until `shutdown` resolves, with at
/// most [`HTTP_CONNECTIONS_MAX`] connections (a new one evicts the oldest),
/// each closed after [`HTTP_CONNECTION_AGE_MAX`].
pub async fn serve<O: Observe>(
    listener: tokio::net::TcpListener,
    observe: Arc<O>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, observe, None, shutdown).await
}

/// Like [`serve`]; with `tls`, behind TLS (HTTPS, HTTP/1.1 by ALPN: load
/// it with [`crate::tls::ALPN_STATUS_PORT`]), and with client
/// certificates when its files ask for them. Each handshake runs on its
/// own task under the same connection bounds (see
/// [`crate::client_port`]).
pub async fn serve_with<O: Observe>(
    listener: tokio::net::TcpListener,
    observe: Arc<O>,
    tls: Option<Arc<crate::tls::ServerTls>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (o1, o2, o3, o4, o5) = (
        observe.clone(),
        observe.clone(),
        observe.clone(),
        observe.clone(),
        observe,
    );
    let app = Router::new()
        .route(
            "/status",
            get(move || async move { axum::Json(o1.status_json()) }),
        )
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(CONTENT_TYPE, "text/plain; version=0.0.4")],
                    o2.metrics_text(),
                )
            }),
        )
        .route(
            "/healthz",
            get(move || async move {
                match o4.health() {
                    Ok(()) => (axum::http::StatusCode::OK, "ok\n".to_string()),
                    Err(e) => (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        format!("{e}\n"),
                    ),
                }
            }),
        )
        .route(
            "/debug/blocked",
            axum::routing::put(move |uri: axum::http::Uri| async move {
                match parse_peers(uri.query()).and_then(|p| o3.set_blocked(&p)) {
                    Ok(()) => (axum::http::StatusCode::OK, "ok\n".to_string()),
                    Err(e) => (axum::http::StatusCode::BAD_REQUEST, format!("{e}\n")),
                }
            }),
        )
        .route(
            "/debug/stall_control",
            axum::routing::put(move |uri: axum::http::Uri| async move {
                match parse_stall_ms(uri.query()).and_then(|ms| o5.stall_control(ms)) {
                    Ok(()) => (axum::http::StatusCode::OK, "ok\n".to_string()),
                    Err(e) => (axum::http::StatusCode::BAD_REQUEST, format!("{e}\n")),
                }
            }),
        );
    let table = crate::client_port::ConnTable::without_metering(
        HTTP_CONNECTIONS_MAX,
        HTTP_CONNECTION_AGE_MAX,
    );
    let mut incoming = crate::client_port::incoming(listener, table);
    if let Some(tls) = tls {
        incoming = incoming.with_tls(tls);
    }
    axum::serve(incoming, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the endpoint's address, with an error naming it.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("HTTP status address {addr}: {e}")))
}
