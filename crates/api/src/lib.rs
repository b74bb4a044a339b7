//! `api`: the client side of a replica.
//!
//! - [`grpc::EtcdApi`]: etcd v3 gRPC services (wire-compatible with etcd's
//!   protos; kube-apiserver, etcdctl and any clientv3 work unchanged).
//! - [`watch`]: the Watch service, served from the replica's executed
//!   history.
//! - [`concurrency`]: etcd's Lock and Election services, on leases,
//!   revisions and watches.
//! - [`lease`]: the Lease service and this replica's lessor (expiry votes
//!   by its clock, keep-alives renewed in groups).
//! - [`gateway`]: etcd's JSON gateway (`POST /v3/kv/range`, `/v3/watch`,
//!   ...), on the client port beside gRPC.
//! - [`http`]: `/status` (JSON), `/metrics` (Prometheus text), `/healthz`.
//! - [`health`]: the gRPC health service (`grpc.health.v1.Health`).
//! - [`snapshot`]: Maintenance.Snapshot's stream and file format.
//! - [`auth`]: the Auth service (users, roles, permissions as replicated
//!   state; simple tokens) and the auth checks of the other services.
//! - [`client_port`]: the client port's connection table, limits and TLS
//!   handshakes; [`tls`]: the TLS files and their reload (SIGHUP).
//! - [`backend::Backend`]: what the API needs from a replica.
//!
//! Runs on a small tokio runtime; it never blocks the control thread, and it
//! hands operations over through the replica's bounded queue.

pub mod auth;
pub mod backend;
pub mod client_port;
pub mod concurrency;
pub mod gateway;
pub mod grpc;
pub mod health;
pub mod http;
pub mod lease;
pub mod snapshot;
pub mod tls;
pub mod watch;

/// Server traits generated from etcd's `rpc.proto`, over kv's message types.
#[allow(clippy::all)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

pub use backend::{
    member_id, Backend, ClusterInfo, MemberInfo, MoveLeaderRefused, Progress, SubmitError,
};
pub use grpc::{ApiLimits, EtcdApi};

use std::sync::Arc;

/// Serves the etcd services of `backend` on `listener` until `shutdown`
/// resolves, with the connection and HTTP/2 limits of `limits` (see
/// [`client_port`]), and the gRPC health service (see [`health`]).
/// `table` holds the open connections (make it with
/// [`client_port::ConnTable::new`]; its stats are the port's metrics).
///
/// One listener serves gRPC (HTTP/2) and etcd's JSON gateway (HTTP/1.1 or
/// HTTP/2, see [`gateway`]), as etcd multiplexes them: requests are routed
/// by path (`/etcdserverpb.KV/Range` vs `/v3/kv/range`), and every limit
/// of the port (connection table, idle timeout, request bytes in flight,
/// HTTP/2 streams, windows, keepalive, header list size) applies to both.
/// An unknown path answers gRPC's Unimplemented to a gRPC request, 404 to
/// anything else.
pub async fn serve_grpc<B: Backend>(
    listener: tokio::net::TcpListener,
    backend: Arc<B>,
    limits: ApiLimits,
    table: Arc<client_port::ConnTable>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    serve_grpc_incoming(
        client_port::incoming(listener, table),
        backend,
        limits,
        shutdown,
    )
    .await
}

/// Like [`serve_grpc`], on the connections `incoming` yields: one
/// [`client_port::incoming`] (plaintext, or TLS with
/// [`client_port::Incoming::with_tls`]), or several merged into one
/// stream (a TLS listener and a plaintext one sharing one connection
/// table).
pub async fn serve_grpc_incoming<B, S>(
    incoming: S,
    backend: Arc<B>,
    limits: ApiLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error>
where
    B: Backend,
    S: tokio_stream::Stream<Item = std::io::Result<client_port::ClientConn>> + Send + 'static,
{
    use etcdserverpb::cluster_server::ClusterServer;
    use etcdserverpb::kv_server::KvServer;
    use etcdserverpb::lease_server::LeaseServer;
    use etcdserverpb::maintenance_server::MaintenanceServer;
    use etcdserverpb::watch_server::WatchServer;
    limits
        .validate()
        .unwrap_or_else(|e| panic!("API limits: {e}"));
    let (health_service, health_task) =
        health::start(backend.clone(), health::HEALTH_POLL_INTERVAL).await;
    let api = EtcdApi::new(backend, limits);
    let msg_max = limits.grpc_message_bytes_max();
    let lessor = tokio::spawn(lease::run_lessor(api.clone()));
    let mut routes = tonic::service::Routes::builder();
    routes
        .add_service(KvServer::new(api.clone()).max_decoding_message_size(msg_max))
        .add_service(MaintenanceServer::new(api.clone()).max_decoding_message_size(msg_max))
        .add_service(WatchServer::new(api.clone()).max_decoding_message_size(msg_max))
        .add_service(LeaseServer::new(api.clone()).max_decoding_message_size(msg_max))
        .add_service(
            concurrency::v3lockpb::lock_server::LockServer::new(api.clone())
                .max_decoding_message_size(msg_max),
        )
        .add_service(
            concurrency::v3electionpb::election_server::ElectionServer::new(api.clone())
                .max_decoding_message_size(msg_max),
        )
        .add_service(
            etcdserverpb::auth_server::AuthServer::new(api.clone())
                .max_decoding_message_size(msg_max),
        )
        .add_service(ClusterServer::new(api.clone()).max_decoding_message_size(msg_max))
        .add_service(health_service);
    let mut routes = routes.routes();
    let grpc = std::mem::take(routes.axum_router_mut());
    *routes.axum_router_mut() = grpc.merge(gateway::router(api)).fallback(gateway::fallback);
    let served = tonic::transport::Server::builder()
        // The JSON gateway's HTTP/1.1 clients (curl, etcd3gw, Patroni).
        .accept_http1(true)
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .initial_stream_window_size(limits.http2_stream_window_bytes)
        .initial_connection_window_size(limits.http2_connection_window_bytes)
        .http2_adaptive_window(Some(false))
        // Dead peers: a PING unanswered for 20 s closes the connection
        // (etcd's --grpc-keepalive-timeout); idle live ones are closed by
        // the idle timeout instead.
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .http2_max_header_list_size(HTTP2_HEADER_LIST_BYTES_MAX)
        .layer(client_port::ConnLayer)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    health_task.abort();
    lessor.abort();
    served
}

/// Interval of the server's HTTP/2 PINGs on a client connection.
pub const HTTP2_KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// How long a PING may go unanswered before the connection is closed.
pub const HTTP2_KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
/// Largest header block of a request, bytes (gRPC metadata; hyper's
/// default is 16 KiB).
pub const HTTP2_HEADER_LIST_BYTES_MAX: u32 = 16 * 1024;
