//! `api`: the client side of a replica.
//!
//! - [`grpc::EtcdApi`]: etcd v3 gRPC services (wire-compatible with etcd's
//!   protos; kube-apiserver, etcdctl and any clientv3 work unchanged).
//! - [`http`]: `/status` (JSON), `/metrics` (Prometheus text), `/healthz`.
//! - [`backend::Backend`]: what the API needs from a replica.
//!
//! Runs on a small tokio runtime; it never blocks the control thread, and it
//! hands operations over through the replica's bounded queue.

pub mod backend;
pub mod grpc;
pub mod http;

/// Server traits generated from etcd's `rpc.proto`, over kv's message types.
#[allow(clippy::all)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

pub use backend::{member_id, Backend, ClusterInfo, MemberInfo, Progress, SubmitError};
pub use grpc::{ApiLimits, EtcdApi};

use std::sync::Arc;

/// Serves the etcd services of `backend` on `listener` until `shutdown`
/// resolves.
pub async fn serve_grpc<B: Backend>(
    listener: tokio::net::TcpListener,
    backend: Arc<B>,
    limits: ApiLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    use etcdserverpb::cluster_server::ClusterServer;
    use etcdserverpb::kv_server::KvServer;
    use etcdserverpb::maintenance_server::MaintenanceServer;
    let api = EtcdApi::new(backend, limits);
    // etcd accepts requests up to max-request-bytes plus gRPC overhead.
    let msg_max = limits.request_bytes_max + 512 * 1024;
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(KvServer::new(api.clone()).max_decoding_message_size(msg_max))
        .add_service(MaintenanceServer::new(api.clone()))
        .add_service(ClusterServer::new(api))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
}
