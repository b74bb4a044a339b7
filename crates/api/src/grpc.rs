//! etcd v3 gRPC services over a [`Backend`]: KV (Range, Put, DeleteRange,
//! Txn, Compact), Maintenance (Status, Hash, HashKV, Alarm) and Cluster
//! (MemberList). Package `etcdserverpb`, etcd's field numbers; services and
//! methods not served here answer UNIMPLEMENTED (tonic's router does so for
//! unknown paths).
//!
//! Errors carry etcd's strings and codes, which clientv3 maps back to its
//! typed errors (e.g. "etcdserver: mvcc: required revision has been
//! compacted", OutOfRange).

use std::sync::Arc;
use std::time::Duration;

use kv::pb::bftdkv::Command;
use kv::pb::etcdserverpb::*;
use kv::KvError;
use tonic::{Request, Response, Status};

use crate::backend::{Backend, SubmitError};
use crate::etcdserverpb::cluster_server::Cluster;
use crate::etcdserverpb::kv_server::Kv;
use crate::etcdserverpb::maintenance_server::Maintenance;

/// The etcd API version bftd implements (reported by Status).
pub const ETCD_API_VERSION: &str = "3.5.0";

/// etcd's error for a request above the size limit.
pub const ERR_REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";
/// etcd's error when the proposal queue is full.
pub const ERR_TOO_MANY_REQUESTS: &str = "etcdserver: too many requests";
/// etcd's error when a request is not applied in time.
pub const ERR_TIMEOUT: &str = "etcdserver: request timed out";
/// etcd's error when the server is shutting down.
pub const ERR_STOPPED: &str = "etcdserver: server stopped";

/// Limits of the API. Every field has a default (see [`ApiLimits::default`]);
/// [`ApiLimits::validate`] says which combinations are refused.
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    /// Largest encoded operation, bytes (etcd's --max-request-bytes).
    pub request_bytes_max: usize,
    /// How long an operation may wait for consensus before the client gets
    /// "request timed out" (etcd: about 7 s with default settings).
    pub request_timeout: Duration,
    /// Most client connections open at once (default 4096). When full, a
    /// new connection evicts the one idle longest, or is closed at once
    /// when all have requests in flight. Keep it well below the process's
    /// open-files limit: the replica's own files need descriptors too.
    pub client_connections_max: usize,
    /// A client connection with no request in flight for this long is
    /// closed (default 5 min; gRPC-go's MaxConnectionIdle). Clients
    /// reconnect on their next request.
    pub client_idle_timeout: Duration,
    /// Most concurrent HTTP/2 streams per client connection (default 128;
    /// etcd: unlimited). gRPC clients queue streams beyond it.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 initial window of a stream, bytes (default 1 MiB): what a
    /// client may send on one stream before the server reads it.
    pub http2_stream_window_bytes: u32,
    /// HTTP/2 initial window of a connection, bytes (default 2 MiB): what
    /// a client may send on all its streams before the server reads it.
    pub http2_connection_window_bytes: u32,
    /// Bytes of requests in flight on one connection, counted from each
    /// gRPC message's declared length (default 16 MiB). A message above it
    /// fails its stream with ResourceExhausted. At least one largest
    /// message (`request_bytes_max` plus gRPC overhead).
    pub request_bytes_pending_per_connection_max: usize,
    /// Bytes of requests in flight on all connections (default 256 MiB).
    pub request_bytes_pending_max: usize,
    /// Largest Range or Txn response, bytes (default 64 MiB, as
    /// `kv::DEFAULT_RANGE_RESPONSE_BYTES_MAX`). Above it the client gets
    /// ResourceExhausted and pages with `limit`. etcd's only cap is gRPC's
    /// send limit (math.MaxInt32).
    pub range_response_bytes_max: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            request_bytes_max: 1536 * 1024,
            request_timeout: Duration::from_secs(7),
            client_connections_max: 4096,
            client_idle_timeout: Duration::from_secs(300),
            http2_max_concurrent_streams: 128,
            http2_stream_window_bytes: 1024 * 1024,
            http2_connection_window_bytes: 2 * 1024 * 1024,
            request_bytes_pending_per_connection_max: 16 * 1024 * 1024,
            request_bytes_pending_max: 256 * 1024 * 1024,
            range_response_bytes_max: kv::DEFAULT_RANGE_RESPONSE_BYTES_MAX,
        }
    }
}

impl ApiLimits {
    /// Largest gRPC message a client may send, bytes: etcd accepts
    /// `--max-request-bytes` plus 512 KiB of gRPC overhead.
    pub fn grpc_message_bytes_max(&self) -> usize {
        self.request_bytes_max + 512 * 1024
    }

    /// Checks the limits fit together; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let message = self.grpc_message_bytes_max() + 5;
        if self.client_connections_max == 0 {
            return Err("client_connections_max must be at least 1".into());
        }
        if self.client_idle_timeout.is_zero() {
            return Err("client_idle_timeout must be positive".into());
        }
        if self.http2_max_concurrent_streams == 0 {
            return Err("http2_max_concurrent_streams must be at least 1".into());
        }
        if self.http2_stream_window_bytes < 65_535 || self.http2_connection_window_bytes < 65_535 {
            return Err("HTTP/2 windows must be at least 65535 bytes (RFC 9113)".into());
        }
        if self.request_bytes_pending_per_connection_max < message {
            return Err(format!(
                "request_bytes_pending_per_connection_max {} is below one largest request \
                 ({message} bytes: request_bytes_max + 512 KiB + 5)",
                self.request_bytes_pending_per_connection_max
            ));
        }
        if self.request_bytes_pending_max < self.request_bytes_pending_per_connection_max {
            return Err("request_bytes_pending_max is below the per-connection budget".into());
        }
        if self.range_response_bytes_max == 0 {
            return Err("range_response_bytes_max must be positive".into());
        }
        Ok(())
    }
}

/// The etcd services of one replica.
pub struct EtcdApi<B: Backend> {
    backend: Arc<B>,
    limits: ApiLimits,
}

impl<B: Backend> Clone for EtcdApi<B> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            limits: self.limits,
        }
    }
}

/// The gRPC status etcd returns for a state machine error.
pub fn kv_status(e: &KvError) -> Status {
    Status::new(tonic::Code::from_i32(e.grpc_code()), e.to_string())
}

impl<B: Backend> EtcdApi<B> {
    pub fn new(backend: Arc<B>, limits: ApiLimits) -> Self {
        Self { backend, limits }
    }

    fn header(&self, revision: i64) -> ResponseHeader {
        let c = self.backend.cluster();
        ResponseHeader {
            cluster_id: c.cluster_id,
            member_id: c.member_id,
            revision,
            raft_term: self.backend.progress().regency,
        }
    }

    /// Validates, orders (or, for serializable reads, serves locally) and
    /// waits for one command.
    async fn run(&self, command: Command) -> Result<kv::Response, Status> {
        let started = std::time::Instant::now();
        let r = self.run_inner(command).await;
        self.backend.observe_request(started.elapsed());
        r
    }

    async fn run_inner(&self, command: Command) -> Result<kv::Response, Status> {
        self.backend.validate(&command).map_err(|e| kv_status(&e))?;
        let mut resp = if command.is_serializable() {
            self.backend
                .read_local(&command)
                .map_err(|e| kv_status(&e))?
        } else {
            if prost::Message::encoded_len(&command) > self.limits.request_bytes_max {
                return Err(Status::invalid_argument(ERR_REQUEST_TOO_LARGE));
            }
            let rx = self.backend.submit(command).map_err(|e| match e {
                SubmitError::Overloaded => Status::resource_exhausted(ERR_TOO_MANY_REQUESTS),
                SubmitError::Stopped => Status::unavailable(ERR_STOPPED),
            })?;
            match tokio::time::timeout(self.limits.request_timeout, rx).await {
                Err(_) => return Err(Status::unavailable(ERR_TIMEOUT)),
                Ok(Err(_)) => return Err(Status::unavailable(ERR_STOPPED)),
                Ok(Ok(r)) => r.map_err(|e| kv_status(&e))?,
            }
        };
        // Reads are capped as they are built (kv); a write txn's ranges
        // only here, after it was applied at every replica: like etcd,
        // whose send of an oversized response fails.
        let read_bytes = match &resp {
            kv::Response::Range(r) => prost::Message::encoded_len(r),
            kv::Response::Txn(t) => prost::Message::encoded_len(t),
            _ => 0,
        };
        if read_bytes > self.limits.range_response_bytes_max {
            return Err(kv_status(&KvError::ResponseTooLarge));
        }
        let rev = resp.revision();
        *resp.header_mut() = self.header(rev);
        Ok(resp)
    }
}

fn mismatch() -> Status {
    Status::internal("bftd: state machine answered with another response type")
}

#[tonic::async_trait]
impl<B: Backend> Kv for EtcdApi<B> {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        match self.run(req.into_inner().into()).await? {
            kv::Response::Range(r) => Ok(Response::new(r)),
            _ => Err(mismatch()),
        }
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        match self.run(req.into_inner().into()).await? {
            kv::Response::Put(r) => Ok(Response::new(r)),
            _ => Err(mismatch()),
        }
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        match self.run(req.into_inner().into()).await? {
            kv::Response::DeleteRange(r) => Ok(Response::new(r)),
            _ => Err(mismatch()),
        }
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        match self.run(req.into_inner().into()).await? {
            kv::Response::Txn(r) => Ok(Response::new(r)),
            _ => Err(mismatch()),
        }
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        match self.run(req.into_inner().into()).await? {
            kv::Response::Compaction(r) => Ok(Response::new(r)),
            _ => Err(mismatch()),
        }
    }
}

#[tonic::async_trait]
impl<B: Backend> Maintenance for EtcdApi<B> {
    async fn alarm(&self, _req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let (rev, _) = self.backend.store_size();
        Ok(Response::new(AlarmResponse {
            header: Some(self.header(rev)),
            alarms: vec![],
        }))
    }

    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let (rev, size) = self.backend.store_size();
        let p = self.backend.progress();
        Ok(Response::new(StatusResponse {
            header: Some(self.header(rev)),
            version: ETCD_API_VERSION.to_string(),
            db_size: size,
            leader: p.leader_member_id,
            raft_index: p.last_decided_cid,
            raft_term: p.regency,
            raft_applied_index: p.last_applied_cid,
            errors: vec![],
            db_size_in_use: size,
            is_learner: false,
            ..Default::default()
        }))
    }

    async fn hash(&self, _req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let (rev, _) = self.backend.store_size();
        Ok(Response::new(HashResponse {
            header: Some(self.header(rev)),
            hash: self.backend.hash(),
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let (hash, compact_revision) = self
            .backend
            .hash_kv(req.into_inner().revision)
            .map_err(|e| kv_status(&e))?;
        let (rev, _) = self.backend.store_size();
        Ok(Response::new(HashKvResponse {
            header: Some(self.header(rev)),
            hash,
            compact_revision,
            ..Default::default()
        }))
    }
}

#[tonic::async_trait]
impl<B: Backend> Cluster for EtcdApi<B> {
    async fn member_list(
        &self,
        _req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let (rev, _) = self.backend.store_size();
        let members = self
            .backend
            .cluster()
            .members
            .iter()
            .map(|m| Member {
                id: m.id,
                name: m.name.clone(),
                peer_ur_ls: m.peer_urls.clone(),
                client_ur_ls: m.client_urls.clone(),
                is_learner: false,
            })
            .collect();
        Ok(Response::new(MemberListResponse {
            header: Some(self.header(rev)),
            members,
        }))
    }
}
