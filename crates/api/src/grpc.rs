//! etcd v3 gRPC services over a [`Backend`]: KV (Range, Put, DeleteRange,
//! Txn, Compact), Maintenance (Status, Hash, HashKV, Alarm: stored alarms
//! and NOSPACE derived from the store's space quota; Defragment; Snapshot,
//! in [`crate::snapshot`]) and Cluster (MemberList). Watch, Lease, Lock and
//! Election are in [`crate::watch`], [`crate::lease`] and
//! [`crate::concurrency`]. Package `etcdserverpb`, etcd's field numbers;
//! services and methods not served here answer UNIMPLEMENTED (tonic's
//! router does so for unknown paths).
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

/// The etcd API version bftd implements (reported by Status). 3.5.13 is the
/// first release whose `WatchProgressRequest` answers kube-apiserver relies
/// on (a revision covering every event already sent on the stream, which
/// `crate::watch` gives); kube-apiserver enables its consistent reads from
/// the watch cache from it on.
pub const ETCD_API_VERSION: &str = "3.5.13";

/// etcd's error for a request above the size limit.
pub const ERR_REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";
/// etcd's error when the proposal queue is full.
pub const ERR_TOO_MANY_REQUESTS: &str = "etcdserver: too many requests";
/// etcd's error when a request is not applied in time.
pub const ERR_TIMEOUT: &str = "etcdserver: request timed out";
/// etcd's error when the server is shutting down.
pub const ERR_STOPPED: &str = "etcdserver: server stopped";
/// etcd's error for a MoveLeader sent to a member that is not the leader.
pub const ERR_NOT_LEADER: &str = "etcdserver: not leader";
/// etcd's error for a MoveLeader to a member that cannot lead.
pub const ERR_BAD_LEADER_TRANSFEREE: &str = "etcdserver: bad leader transferee";
/// etcd's error when a MoveLeader does not finish in time.
pub const ERR_TIMEOUT_LEADER_TRANSFER: &str =
    "etcdserver: request timed out, leader transfer took too long";
/// How long a MoveLeader waits for the transferee to lead: a regency
/// change takes a STOP round and a SYNC round.
pub const MOVE_LEADER_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// How often a watcher that asked for `progress_notify` and got no
    /// event meanwhile is sent an empty progress response (default 10 min,
    /// etcd's `--experimental-watch-progress-notify-interval`).
    pub watch_progress_notify_interval: Duration,
    /// Most watchers on one Watch stream (default 65536; etcd: no limit).
    /// A create beyond it is answered created and canceled, with the
    /// reason.
    pub watches_per_stream_max: usize,
    /// Most history changes one watch read scans before the stream serves
    /// its other watchers (default 10000): bounds the time one far-behind
    /// watcher holds the store's read lock. A revision is never split.
    pub watch_scan_changes_max: usize,
    /// How often this replica's lessor looks for leases its clock says
    /// expired (default 500 ms): an expiry vote leaves at most this late.
    pub lease_check_interval: Duration,
    /// bcrypt cost of the password hashes UserAdd and UserChangePassword
    /// store (default 10, etcd's `--bcrypt-cost`; 4 to 31).
    pub bcrypt_cost: u32,
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
            watch_progress_notify_interval: Duration::from_secs(600),
            watches_per_stream_max: 65_536,
            watch_scan_changes_max: 10_000,
            lease_check_interval: Duration::from_millis(500),
            bcrypt_cost: crate::auth::DEFAULT_BCRYPT_COST,
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
        if !(4..=31).contains(&self.bcrypt_cost) {
            return Err(format!(
                "bcrypt_cost {} is outside 4..=31",
                self.bcrypt_cost
            ));
        }
        if self.lease_check_interval.is_zero() {
            return Err("lease_check_interval must be positive".into());
        }
        if self.watch_progress_notify_interval.is_zero() {
            return Err("watch_progress_notify_interval must be positive".into());
        }
        if self.watches_per_stream_max == 0 || self.watch_scan_changes_max == 0 {
            return Err(
                "watches_per_stream_max and watch_scan_changes_max must be at least 1".into(),
            );
        }
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
    lessor: Arc<crate::lease::Lessor>,
    tokens: Arc<crate::auth::Tokens>,
}

impl<B: Backend> Clone for EtcdApi<B> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            limits: self.limits,
            lessor: self.lessor.clone(),
            tokens: self.tokens.clone(),
        }
    }
}

/// The gRPC status etcd returns for a state machine error.
pub fn kv_status(e: &KvError) -> Status {
    Status::new(tonic::Code::from_i32(e.grpc_code()), e.to_string())
}

impl<B: Backend> EtcdApi<B> {
    pub fn new(backend: Arc<B>, limits: ApiLimits) -> Self {
        Self {
            backend,
            limits,
            lessor: Arc::default(),
            tokens: Arc::default(),
        }
    }

    /// The auth tokens this replica issued.
    pub fn tokens(&self) -> &crate::auth::Tokens {
        &self.tokens
    }

    pub(crate) fn lessor(&self) -> &crate::lease::Lessor {
        &self.lessor
    }

    pub(crate) fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    pub(crate) fn limits(&self) -> &ApiLimits {
        &self.limits
    }

    /// The response header etcd sends: cluster, member, `revision`, and
    /// the regency as `raft_term`.
    pub(crate) fn header(&self, revision: i64) -> ResponseHeader {
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
    pub(crate) async fn run(&self, command: Command) -> Result<kv::Response, Status> {
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
        let user = self.caller(&req)?;
        match self.run_as(user, req.into_inner().into()).await? {
            kv::Response::Range(r) => Ok(Response::new(r)),
            _ => Err(mismatch()),
        }
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let user = self.caller(&req)?;
        match self.run_as(user, req.into_inner().into()).await? {
            kv::Response::Put(r) => Ok(Response::new(r)),
            _ => Err(mismatch()),
        }
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let user = self.caller(&req)?;
        match self.run_as(user, req.into_inner().into()).await? {
            kv::Response::DeleteRange(r) => Ok(Response::new(r)),
            _ => Err(mismatch()),
        }
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let user = self.caller(&req)?;
        match self.run_as(user, req.into_inner().into()).await? {
            kv::Response::Txn(r) => Ok(Response::new(r)),
            _ => Err(mismatch()),
        }
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let user = self.caller(&req)?;
        match self.run_as(user, req.into_inner().into()).await? {
            kv::Response::Compaction(r) => Ok(Response::new(r)),
            _ => Err(mismatch()),
        }
    }
}

impl<B: Backend> EtcdApi<B> {
    /// The alarms raised now: the stored ones (activated through
    /// consensus), and NOSPACE for every member while the store's size is
    /// at or above its quota (every replica applies the same commands with
    /// the same quota, so every member is in that state at this revision).
    /// Ascending by (member, type), no duplicates. Returns the store
    /// revision too.
    fn alarms(&self) -> (i64, Vec<AlarmMember>) {
        let (rev, size) = self.backend.store_size();
        let full = u64::try_from(size).unwrap_or(0) >= self.backend.quota_bytes();
        let mut alarms: std::collections::BTreeSet<(u64, i32)> = self
            .backend
            .alarms()
            .into_iter()
            .map(|a| (a.member_id, a.alarm))
            .collect();
        if full {
            for m in &self.backend.cluster().members {
                alarms.insert((m.id, AlarmType::Nospace as i32));
            }
        }
        let alarms = alarms
            .into_iter()
            .map(|(member_id, alarm)| AlarmMember { member_id, alarm })
            .collect();
        (rev, alarms)
    }
}

#[tonic::async_trait]
impl<B: Backend> Maintenance for EtcdApi<B> {
    /// etcd's Maintenance.Alarm.
    ///
    /// ACTIVATE and DEACTIVATE are ordered (replicated state,
    /// `kv::Store` alarms) and answer the alarm they changed, as etcd's
    /// apply does; a stored NOSPACE refuses writes until disarmed. GET is
    /// answered locally, filtered by `alarm` (NONE: all types).
    ///
    /// The space alarm is also derived: while the replicated store's size
    /// (`kv::Store::size_bytes`) is at or above its quota, GET lists
    /// NOSPACE for every member, and writes are refused by the store
    /// itself (deterministically, at every replica). Compaction brings the
    /// size down and clears it; disarming it changes nothing.
    async fn alarm(&self, req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let user = self.caller(&req)?;
        let req = req.into_inner();
        if req.action != alarm_request::AlarmAction::Get as i32 {
            return match self.run_as(user, req.into()).await? {
                kv::Response::Alarm(r) => Ok(Response::new(r)),
                _ => Err(mismatch()),
            };
        }
        let (rev, mut alarms) = self.alarms();
        alarms.retain(|a| req.alarm == AlarmType::None as i32 || req.alarm == a.alarm);
        Ok(Response::new(AlarmResponse {
            header: Some(self.header(rev)),
            alarms,
        }))
    }

    /// etcd's Maintenance.Status. `db_size` and `db_size_in_use` are the
    /// store's size as its space quota counts it (`kv::Store::size_bytes`);
    /// `errors` lists the raised alarms as etcd does.
    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let (rev, size) = self.backend.store_size();
        let (_, alarms) = self.alarms();
        // As etcd: each raised alarm in `errors`, in the Go text form of
        // the AlarmMember ("memberID:<id> alarm:NOSPACE ").
        let errors = alarms
            .iter()
            .map(|a| format!("memberID:{} alarm:NOSPACE ", a.member_id))
            .collect();
        let p = self.backend.progress();
        Ok(Response::new(StatusResponse {
            header: Some(self.header(rev)),
            version: ETCD_API_VERSION.to_string(),
            db_size: size,
            leader: p.leader_member_id,
            raft_index: p.last_decided_cid,
            raft_term: p.regency,
            raft_applied_index: p.last_applied_cid,
            errors,
            db_size_in_use: size,
            is_learner: false,
            ..Default::default()
        }))
    }

    /// etcd's Maintenance.Defragment. etcd rewrites its bbolt file to give
    /// the pages freed by compaction back to the file system. bftd's store
    /// is in memory and compaction frees its space at once; checkpoints
    /// are written whole, so nothing on disk is fragmented. It answers at
    /// once with a header, as etcd answers a finished defragmentation.
    async fn defragment(
        &self,
        req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        self.check_admin(&req)?;
        let (rev, _) = self.backend.store_size();
        Ok(Response::new(DefragmentResponse {
            header: Some(self.header(rev)),
        }))
    }

    /// etcd's Maintenance.MoveLeader (root only once auth is enabled): sent
    /// to the leader, hands the leadership to `target_id` and answers once
    /// this replica sees the transferee lead, as etcd does. The leader asks
    /// for the regency the transferee leads and the other replicas join it
    /// (`control::Replica::move_leader`). Errors as etcd's: "not leader"
    /// (FAILED_PRECONDITION) at a replica that does not lead, "bad leader
    /// transferee" (FAILED_PRECONDITION) for an id that is not a member,
    /// "leader transfer took too long" (UNAVAILABLE) after
    /// [`MOVE_LEADER_TIMEOUT`]. A move to the current leader succeeds at
    /// once.
    async fn move_leader(
        &self,
        req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        self.check_admin(&req)?;
        let target = req.into_inner().target_id;
        let me = self.backend.cluster().member_id;
        if self.backend.progress().leader_member_id != me {
            return Err(Status::failed_precondition(ERR_NOT_LEADER));
        }
        // A target that is not a member is the backend's to refuse.
        if target != me {
            self.backend.move_leader(target).map_err(|e| match e {
                crate::MoveLeaderRefused::NotLeader => Status::failed_precondition(ERR_NOT_LEADER),
                crate::MoveLeaderRefused::BadTransferee => {
                    Status::failed_precondition(ERR_BAD_LEADER_TRANSFEREE)
                }
            })?;
            let deadline = tokio::time::Instant::now() + MOVE_LEADER_TIMEOUT;
            let mut poll = tokio::time::interval(Duration::from_millis(10));
            // Bounded by the deadline: the leader shows in the replica's
            // status, which has no change notification.
            while self.backend.progress().leader_member_id != target {
                if tokio::time::Instant::now() >= deadline {
                    return Err(Status::unavailable(ERR_TIMEOUT_LEADER_TRANSFER));
                }
                poll.tick().await;
            }
        }
        let (rev, _) = self.backend.store_size();
        Ok(Response::new(MoveLeaderResponse {
            header: Some(self.header(rev)),
        }))
    }

    type SnapshotStream = crate::snapshot::SnapshotStream;

    /// etcd's Maintenance.Snapshot: the local store at one revision as a
    /// bftd snapshot file, in chunks of at most 32 KiB with
    /// `remaining_bytes`, then its sha256 (see [`crate::snapshot`]). The
    /// first message's header carries the snapshot's revision. At most
    /// `SNAPSHOTS_IN_FLIGHT_MAX` at once ("too many requests" beyond).
    async fn snapshot(
        &self,
        req: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.check_admin(&req)?;
        let slot = crate::snapshot::SNAPSHOT_SLOTS
            .take()
            .ok_or_else(|| Status::resource_exhausted(ERR_TOO_MANY_REQUESTS))?;
        let (rev, payload) = self.backend.snapshot();
        tracing::info!(
            revision = rev,
            bytes = payload.len(),
            "sending a snapshot to a client"
        );
        Ok(Response::new(crate::snapshot::stream(
            payload,
            self.header(rev),
            slot,
        )))
    }

    async fn hash(&self, req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        self.check_admin(&req)?;
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
        self.check_admin(&req)?;
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backend::{ClusterInfo, MemberInfo, Progress};
    use std::sync::Mutex;

    /// Opens a bidirectional-streaming etcd RPC by its gRPC path (e.g.
    /// "/etcdserverpb.Watch/Watch") on `addr`, sends `requests` and closes
    /// the client's side of the stream, as a client that sends its requests
    /// up front and half-closes does. Returns the channel (keep it while
    /// reading) and the response stream.
    pub(crate) async fn send_and_half_close<Req, Resp>(
        addr: std::net::SocketAddr,
        path: &'static str,
        requests: Vec<Req>,
    ) -> (tonic::transport::Channel, tonic::Streaming<Resp>)
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let responses = grpc
            .streaming(
                tonic::Request::new(tokio_stream::iter(requests)),
                http::uri::PathAndQuery::from_static(path),
                codec,
            )
            .await
            .unwrap()
            .into_inner();
        (channel, responses)
    }

    /// A backend over one local store: submitted commands apply at once.
    pub(crate) struct OneStore {
        pub(crate) store: Mutex<kv::Store>,
        cluster: ClusterInfo,
        revisions: tokio::sync::watch::Sender<i64>,
        /// What `has_leader` answers (true unless a test turns it off).
        pub(crate) leader: std::sync::atomic::AtomicBool,
    }

    impl Backend for OneStore {
        fn submit(
            &self,
            command: Command,
        ) -> Result<tokio::sync::oneshot::Receiver<Result<kv::Response, KvError>>, SubmitError>
        {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let mut store = self.store.lock().unwrap();
            // The one replica (id 0) of a one-store cluster.
            let _ = tx.send(store.apply_from(Some(0), &command));
            self.revisions.send_replace(store.revision());
            Ok(rx)
        }
        fn watch_events(
            &self,
            key: &[u8],
            range_end: &[u8],
            from_revision: i64,
            scan_max: usize,
        ) -> Result<kv::EventPage, kv::WatchCompacted> {
            self.store
                .lock()
                .unwrap()
                .watch_events(key, range_end, from_revision, scan_max)
        }
        fn revisions(&self) -> tokio::sync::watch::Receiver<i64> {
            self.revisions.subscribe()
        }
        fn leases(&self) -> Vec<kv::LeaseInfo> {
            self.store.lock().unwrap().leases()
        }
        fn alarms(&self) -> Vec<AlarmMember> {
            self.store.lock().unwrap().alarms()
        }
        fn auth(&self) -> Arc<kv::auth::AuthStore> {
            self.store.lock().unwrap().auth()
        }
        fn check_auth(&self, command: &Command) -> Result<(), KvError> {
            self.store.lock().unwrap().check_auth(command)
        }
        fn lease(&self, id: i64, keys: bool) -> Option<kv::LeaseInfo> {
            self.store.lock().unwrap().lease(id, keys)
        }
        fn validate(&self, command: &Command) -> Result<(), KvError> {
            self.store.lock().unwrap().validate(command)
        }
        fn read_local(&self, command: &Command) -> Result<kv::Response, KvError> {
            self.store.lock().unwrap().execute_read_only(command)
        }
        fn hash_kv(&self, revision: i64) -> Result<(u32, i64), KvError> {
            self.store.lock().unwrap().hash_kv(revision)
        }
        fn hash(&self) -> u32 {
            self.store.lock().unwrap().hash()
        }
        fn store_size(&self) -> (i64, i64) {
            let s = self.store.lock().unwrap();
            (s.revision(), s.size_bytes() as i64)
        }
        fn quota_bytes(&self) -> u64 {
            self.store.lock().unwrap().quota_bytes()
        }
        fn snapshot(&self) -> (i64, Vec<u8>) {
            let s = self.store.lock().unwrap();
            (s.revision(), s.snapshot())
        }
        fn has_leader(&self) -> bool {
            self.leader.load(std::sync::atomic::Ordering::Relaxed)
        }
        fn progress(&self) -> Progress {
            Progress::default()
        }
        fn cluster(&self) -> &ClusterInfo {
            &self.cluster
        }
    }

    fn api(quota_bytes: u64) -> EtcdApi<OneStore> {
        EtcdApi::new(Arc::new(one_store(quota_bytes)), ApiLimits::default())
    }

    /// A [`OneStore`] served on a loopback port, and an etcd-client
    /// connected to it; the server stops when `_stop` is dropped.
    pub(crate) struct Served {
        pub(crate) backend: Arc<OneStore>,
        pub(crate) client: etcd_client::Client,
        pub(crate) addr: std::net::SocketAddr,
        _stop: tokio::sync::oneshot::Sender<()>,
    }

    /// Serves a fresh [`OneStore`] (no quota) with `limits`.
    pub(crate) async fn serve(limits: ApiLimits) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = Arc::new(one_store(u64::MAX));
        let table = crate::client_port::ConnTable::new(&limits);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(crate::serve_grpc(
            listener,
            backend.clone(),
            limits,
            table,
            async move {
                let _ = stopped.await;
            },
        ));
        let client = etcd_client::Client::connect([addr.to_string()], None)
            .await
            .unwrap();
        Served {
            backend,
            client,
            addr,
            _stop: stop,
        }
    }

    /// A [`OneStore`] with an empty store and this space quota.
    pub(crate) fn one_store(quota_bytes: u64) -> OneStore {
        let mut store = kv::Store::new();
        store.set_quota_bytes(quota_bytes);
        let member = |id| MemberInfo {
            id,
            name: format!("m{id}"),
            peer_urls: vec![],
            client_urls: vec![],
        };
        OneStore {
            revisions: tokio::sync::watch::Sender::new(store.revision()),
            store: Mutex::new(store),
            leader: std::sync::atomic::AtomicBool::new(true),
            cluster: ClusterInfo {
                cluster_id: 7,
                member_id: 11,
                members: vec![member(11), member(12)],
            },
        }
    }

    async fn alarms(
        api: &EtcdApi<OneStore>,
        action: i32,
        alarm: i32,
        member_id: u64,
    ) -> Vec<(u64, i32)> {
        let r = Maintenance::alarm(
            api,
            Request::new(AlarmRequest {
                action,
                member_id,
                alarm,
            }),
        )
        .await
        .unwrap()
        .into_inner();
        r.alarms.iter().map(|a| (a.member_id, a.alarm)).collect()
    }

    fn put(k: &str, value_bytes: usize) -> PutRequest {
        PutRequest {
            key: k.into(),
            value: vec![b'x'; value_bytes],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn alarm_lists_nospace_for_every_member_while_the_store_is_at_its_quota() {
        use alarm_request::AlarmAction;
        let get = AlarmAction::Get as i32;
        let none = AlarmType::None as i32;
        let nospace = AlarmType::Nospace as i32;
        let entry = 2 + 1000 + kv::ENTRY_OVERHEAD_BYTES;
        let api = api(2 * entry);
        assert_eq!(alarms(&api, get, none, 0).await, vec![]);
        Kv::put(&api, Request::new(put("k1", 1000))).await.unwrap();
        Kv::put(&api, Request::new(put("k2", 1000))).await.unwrap();
        // At the quota: NOSPACE for both members, and writes are refused
        // with etcd's status.
        assert_eq!(
            alarms(&api, get, none, 0).await,
            vec![(11, nospace), (12, nospace)]
        );
        let e = Kv::put(&api, Request::new(put("k3", 0))).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert_eq!(e.message(), "etcdserver: mvcc: database space exceeded");
        // Status reports the tracked size and the alarms.
        let st = Maintenance::status(&api, Request::new(StatusRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(st.db_size, (2 * entry) as i64);
        assert_eq!(st.errors.len(), 2);
        assert!(st.errors[0].contains("alarm:NOSPACE"), "{:?}", st.errors);
        // Filters by type; disarming the derived alarm changes nothing.
        assert_eq!(
            alarms(&api, get, AlarmType::Corrupt as i32, 0).await,
            vec![]
        );
        let disarm = AlarmAction::Deactivate as i32;
        assert_eq!(alarms(&api, disarm, nospace, 12).await, vec![]);
        assert_eq!(alarms(&api, get, none, 0).await.len(), 2);
        // A stored alarm is listed beside it, and disarmed.
        let activate = AlarmAction::Activate as i32;
        let corrupt = AlarmType::Corrupt as i32;
        assert_eq!(
            alarms(&api, activate, corrupt, 11).await,
            vec![(11, corrupt)]
        );
        assert_eq!(
            alarms(&api, get, none, 0).await,
            vec![(11, nospace), (11, corrupt), (12, nospace)]
        );
        assert_eq!(alarms(&api, disarm, corrupt, 11).await, vec![(11, corrupt)]);
        // Delete and compact: the alarm clears, writes work again.
        Kv::delete_range(
            &api,
            Request::new(DeleteRangeRequest {
                key: "k".into(),
                range_end: "l".into(),
                prev_kv: false,
            }),
        )
        .await
        .unwrap();
        let (rev, _) = api.backend.store_size();
        Kv::compact(
            &api,
            Request::new(CompactionRequest {
                revision: rev,
                physical: false,
            }),
        )
        .await
        .unwrap();
        assert_eq!(alarms(&api, get, none, 0).await, vec![]);
        Kv::put(&api, Request::new(put("k3", 1000))).await.unwrap();
    }
}
