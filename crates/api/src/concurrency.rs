//! etcd's Lock (`v3lock`) and Election (`v3election`) gRPC services, built
//! server-side on leases, revisions and watches exactly as etcd builds them
//! from clientv3's `concurrency` recipes (`Mutex`, `Election`): every step
//! is an ordinary ordered KV operation of this replica's API, so the
//! services add no replicated state of their own.
//!
//! - A contender's key is `<name>/<lease in hex>`, put with its lease if it
//!   does not exist yet; its creation revision is its place in line.
//! - It holds the lock (leads the election) once no key under `<name>/`
//!   with a lower creation revision is left: it waits for each such key's
//!   DELETE, newest first (etcd's `waitDeletes`), reading this replica's
//!   history as a watcher does.
//! - A waiting Lock or Campaign whose client goes away deletes its key, as
//!   etcd's server does on a canceled context.

use std::pin::Pin;

use kv::pb::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request as Op,
    response_op::Response as OpResponse,
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, TxnRequest, TxnResponse,
};
use kv::pb::mvccpb::{event::EventType, KeyValue};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::backend::Backend;
use crate::grpc::EtcdApi;

/// Messages and servers of etcd's `v3lockpb` package.
#[allow(clippy::all, missing_docs)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// Messages and servers of etcd's `v3electionpb` package.
#[allow(clippy::all, missing_docs)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

use v3electionpb::election_server::Election;
use v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use v3lockpb::lock_server::Lock;
use v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};

/// etcd's error for Proclaim by a contender that does not lead
/// (`concurrency.ErrElectionNotLeader`).
pub const ERR_ELECTION_NOT_LEADER: &str = "election: not leader";
/// etcd's error for Leader on an election nobody leads
/// (`concurrency.ErrElectionNoLeader`).
pub const ERR_ELECTION_NO_LEADER: &str = "election: no leader";
/// etcd's error for Proclaim or Resign without a leader key
/// (`v3election.ErrMissingLeaderKey`).
pub const ERR_MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";
/// etcd's error when a lock's session (lease) expired while waiting
/// (`concurrency.ErrSessionExpired`).
pub const ERR_SESSION_EXPIRED: &str = "session: session is expired";

/// Responses queued per Observe stream.
const OBSERVE_QUEUE_RESPONSES: usize = 16;

/// `key` + 1 in its last byte that can grow: the end of `key`'s prefix
/// range (etcd's `GetPrefixRangeEnd`).
fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn op(request: Op) -> RequestOp {
    RequestOp {
        request: Some(request),
    }
}

fn create_revision_is(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
    }
}

/// The first-created key under `prefix` (clientv3's `WithFirstCreate`).
fn first_created(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: SortOrder::Ascend as i32,
        sort_target: SortTarget::Create as i32,
        ..Default::default()
    }
}

fn range_of(r: &OpResponse) -> Option<&RangeResponse> {
    match r {
        OpResponse::ResponseRange(r) => Some(r),
        _ => None,
    }
}

/// A contender's key, deleted when dropped unless [`Claim::keep`] was
/// called: a Lock or Campaign whose client went away gives up its place.
struct Claim<B: Backend> {
    api: EtcdApi<B>,
    key: Option<Vec<u8>>,
}

impl<B: Backend> Claim<B> {
    fn keep(mut self) {
        self.key = None;
    }
}

impl<B: Backend> Drop for Claim<B> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let api = self.api.clone();
            tokio::spawn(async move {
                let _ = api.delete_key(key).await;
            });
        }
    }
}

/// A command these services run for a caller they already checked
/// ([`EtcdApi::check_election`], [`EtcdApi::check_key_write`]): ordered
/// as the replica's own, so auth is not checked again when applied.
fn system(c: impl Into<kv::Command>) -> kv::Command {
    let mut c = c.into();
    c.system = true;
    c
}

impl<B: Backend> EtcdApi<B> {
    /// Auth for a lock or election named `name`: read on every key under
    /// `name/` (and write too when `write`), the keys these services read
    /// and write for the caller. Passes while auth is disabled.
    fn check_election<T>(&self, req: &Request<T>, name: &[u8], write: bool) -> Result<(), Status> {
        use kv::auth::Access;
        let user = self.caller(req)?;
        let mut prefix = name.to_vec();
        prefix.push(b'/');
        let end = prefix_end(&prefix);
        let auth = self.backend().auth();
        let mut needs = vec![Access::Read];
        if write {
            needs.push(Access::Write);
        }
        needs
            .into_iter()
            .try_for_each(|a| auth.check_range(&user, a, &prefix, &end))
            .map_err(|e| crate::grpc::kv_status(&e))
    }

    /// Auth for deleting or rewriting the ownership key `key`: write on it.
    fn check_key_write<T>(&self, req: &Request<T>, key: &[u8]) -> Result<(), Status> {
        let user = self.caller(req)?;
        self.backend()
            .auth()
            .check_range(&user, kv::auth::Access::Write, key, &[])
            .map_err(|e| crate::grpc::kv_status(&e))
    }

    async fn txn(&self, t: TxnRequest) -> Result<TxnResponse, Status> {
        match self.run(system(t)).await? {
            kv::Response::Txn(r) => Ok(r),
            _ => Err(Status::internal("bftd: txn answered with another type")),
        }
    }

    async fn range(&self, r: RangeRequest) -> Result<RangeResponse, Status> {
        match self.run(system(r)).await? {
            kv::Response::Range(r) => Ok(r),
            _ => Err(Status::internal("bftd: range answered with another type")),
        }
    }

    async fn delete_key(&self, key: Vec<u8>) -> Result<ResponseHeader, Status> {
        let d = DeleteRangeRequest {
            key,
            ..Default::default()
        };
        match self.run(system(d)).await? {
            kv::Response::DeleteRange(r) => Ok(r.header.unwrap_or_default()),
            _ => Err(Status::internal("bftd: delete answered with another type")),
        }
    }

    /// Waits until this replica's history shows `key` deleted at or after
    /// revision `from`.
    async fn wait_deleted(&self, key: &[u8], mut from: i64) -> Result<(), Status> {
        let mut revisions = self.backend().revisions();
        let scan_max = self.limits().watch_scan_changes_max;
        loop {
            match self.backend().watch_events(key, &[], from, scan_max) {
                Ok(page) => {
                    if page
                        .events
                        .iter()
                        .any(|e| e.r#type == EventType::Delete as i32)
                    {
                        return Ok(());
                    }
                    from = page.next_revision;
                }
                // History below `from` is gone: look at the key itself.
                Err(_) => {
                    let r = self
                        .range(RangeRequest {
                            key: key.to_vec(),
                            ..Default::default()
                        })
                        .await?;
                    if r.kvs.is_empty() {
                        return Ok(());
                    }
                    from = r.header.map_or(0, |h| h.revision) + 1;
                }
            }
            if from > *revisions.borrow_and_update() && revisions.changed().await.is_err() {
                return Err(Status::unavailable(crate::grpc::ERR_STOPPED));
            }
        }
    }

    /// etcd's `waitDeletes`: until no key under `prefix` with a creation
    /// revision at or below `max_create_revision` is left.
    async fn wait_deletes(&self, prefix: &[u8], max_create_revision: i64) -> Result<(), Status> {
        loop {
            let r = self
                .range(RangeRequest {
                    key: prefix.to_vec(),
                    range_end: prefix_end(prefix),
                    limit: 1,
                    sort_order: SortOrder::Descend as i32,
                    sort_target: SortTarget::Create as i32,
                    max_create_revision,
                    ..Default::default()
                })
                .await?;
            let Some(last) = r.kvs.first() else {
                return Ok(());
            };
            let at = r.header.map_or(0, |h| h.revision) + 1;
            self.wait_deleted(&last.key, at).await?;
        }
    }

    /// Puts `key` with `value` and `lease` unless it exists; returns the
    /// txn response and the key's creation revision.
    async fn claim(
        &self,
        key: &[u8],
        value: &[u8],
        lease: i64,
        prefix: Option<&[u8]>,
    ) -> Result<(TxnResponse, i64), Status> {
        let put = op(Op::RequestPut(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        }));
        let get = op(Op::RequestRange(RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        }));
        let owner = prefix.map(|p| op(Op::RequestRange(first_created(p))));
        let r = self
            .txn(TxnRequest {
                compare: vec![create_revision_is(key, 0)],
                success: std::iter::once(put).chain(owner.clone()).collect(),
                failure: std::iter::once(get).chain(owner).collect(),
            })
            .await?;
        let rev = if r.succeeded {
            r.header.as_ref().map_or(0, |h| h.revision)
        } else {
            r.responses
                .first()
                .and_then(|x| x.response.as_ref())
                .and_then(range_of)
                .and_then(|g| g.kvs.first())
                .map_or(0, |kv| kv.create_revision)
        };
        Ok((r, rev))
    }

    fn header_now(&self) -> ResponseHeader {
        self.header(self.backend().store_size().0)
    }
}

#[tonic::async_trait]
impl<B: Backend> Lock for EtcdApi<B> {
    /// etcd's Lock: waits until the caller holds lock `name` and answers
    /// its ownership key `<name>/<lease hex>`.
    ///
    /// # Errors
    /// "etcdserver: requested lease not found" for an unknown lease;
    /// "session: session is expired" when the lease expired while waiting.
    async fn lock(&self, req: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        self.check_election(&req, &req.get_ref().name, true)?;
        let req = req.into_inner();
        let mut prefix = req.name.clone();
        prefix.push(b'/');
        let key = [prefix.as_slice(), format!("{:x}", req.lease).as_bytes()].concat();
        let (r, my_rev) = self.claim(&key, b"", req.lease, Some(&prefix)).await?;
        let claim = Claim {
            api: self.clone(),
            key: Some(key.clone()),
        };
        let owner = r
            .responses
            .get(1)
            .and_then(|x| x.response.as_ref())
            .and_then(range_of)
            .and_then(|g| g.kvs.first())
            .map(|kv| kv.create_revision);
        if owner.is_some_and(|o| o != my_rev) {
            self.wait_deletes(&prefix, my_rev - 1).await?;
        }
        // Still ours (the lease may have expired while we waited)?
        let mine = self
            .range(RangeRequest {
                key: key.clone(),
                ..Default::default()
            })
            .await?;
        if mine.kvs.is_empty() {
            claim.keep();
            return Err(Status::unknown(ERR_SESSION_EXPIRED));
        }
        claim.keep();
        Ok(Response::new(LockResponse {
            header: mine.header.map(|h| ResponseHeader {
                revision: h.revision,
                ..self.header_now()
            }),
            key,
        }))
    }

    /// etcd's Unlock: deletes the ownership key.
    async fn unlock(
        &self,
        req: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        self.check_key_write(&req, &req.get_ref().key)?;
        let h = self.delete_key(req.into_inner().key).await?;
        Ok(Response::new(UnlockResponse {
            header: Some(ResponseHeader {
                revision: h.revision,
                ..self.header_now()
            }),
        }))
    }
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<B: Backend> Election for EtcdApi<B> {
    /// etcd's Campaign: waits until the caller leads election `name`, with
    /// `value` proclaimed.
    async fn campaign(
        &self,
        req: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        self.check_election(&req, &req.get_ref().name, true)?;
        let req = req.into_inner();
        let mut prefix = req.name.clone();
        prefix.push(b'/');
        let key = [prefix.as_slice(), format!("{:x}", req.lease).as_bytes()].concat();
        let (r, rev) = self.claim(&key, &req.value, req.lease, None).await?;
        let claim = Claim {
            api: self.clone(),
            key: Some(key.clone()),
        };
        if !r.succeeded {
            let current = r
                .responses
                .first()
                .and_then(|x| x.response.as_ref())
                .and_then(range_of)
                .and_then(|g| g.kvs.first())
                .map(|kv| kv.value.clone());
            if current.as_deref() != Some(req.value.as_slice()) {
                self.proclaim_value(&key, rev, req.lease, &req.value)
                    .await?;
            }
        }
        self.wait_deletes(&prefix, rev - 1).await?;
        claim.keep();
        Ok(Response::new(CampaignResponse {
            header: Some(ResponseHeader {
                revision: r.header.map_or(0, |h| h.revision),
                ..self.header_now()
            }),
            leader: Some(LeaderKey {
                name: req.name,
                key,
                rev,
                lease: req.lease,
            }),
        }))
    }

    /// etcd's Proclaim: a new value, only from the current leadership.
    ///
    /// # Errors
    /// "election: not leader" when the leader key changed or is gone.
    async fn proclaim(
        &self,
        req: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        if let Some(l) = &req.get_ref().leader {
            self.check_key_write(&req, &l.key)?;
        }
        let req = req.into_inner();
        let l = req
            .leader
            .ok_or_else(|| Status::unknown(ERR_MISSING_LEADER_KEY))?;
        let h = self
            .proclaim_value(&l.key, l.rev, l.lease, &req.value)
            .await?;
        Ok(Response::new(ProclaimResponse { header: Some(h) }))
    }

    /// etcd's Leader: the first-created key of the election.
    ///
    /// # Errors
    /// "election: no leader".
    async fn leader(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        self.check_election(&req, &req.get_ref().name, false)?;
        let mut prefix = req.into_inner().name;
        prefix.push(b'/');
        let r = self.range(first_created(&prefix)).await?;
        let kv = r
            .kvs
            .into_iter()
            .next()
            .ok_or_else(|| Status::unknown(ERR_ELECTION_NO_LEADER))?;
        Ok(Response::new(LeaderResponse {
            header: r.header.map(|h| ResponseHeader {
                revision: h.revision,
                ..self.header_now()
            }),
            kv: Some(kv),
        }))
    }

    type ObserveStream = ObserveStream;

    /// etcd's Observe: the leader's key-value now and at every change
    /// (a new value, a new leader), in revision order.
    async fn observe(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        self.check_election(&req, &req.get_ref().name, false)?;
        let mut prefix = req.into_inner().name;
        prefix.push(b'/');
        let (tx, rx) = mpsc::channel(OBSERVE_QUEUE_RESPONSES);
        let api = self.clone();
        tokio::spawn(async move {
            let mut last: Option<KeyValue> = None;
            let mut revisions = api.backend().revisions();
            loop {
                // Local reads: every revision wakes the observer, and the
                // replica's executed state is what its watchers see too.
                let read = RangeRequest {
                    serializable: true,
                    ..first_created(&prefix)
                };
                let leader = match api.range(read).await {
                    Ok(r) => r.kvs.into_iter().next(),
                    Err(s) => {
                        let _ = tx.send(Err(s)).await;
                        return;
                    }
                };
                let changed = match (&leader, &last) {
                    (Some(l), Some(p)) => l.key != p.key || l.mod_revision != p.mod_revision,
                    (Some(_), None) => true,
                    _ => false,
                };
                if changed {
                    let kv = leader.clone().expect("changed implies a leader");
                    let resp = LeaderResponse {
                        header: Some(ResponseHeader {
                            revision: kv.mod_revision,
                            ..api.header_now()
                        }),
                        kv: Some(kv),
                    };
                    if tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                    last = leader;
                }
                tokio::select! {
                    () = tx.closed() => return,
                    r = revisions.changed() => if r.is_err() { return },
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    /// etcd's Resign: deletes the leader key if it is still this
    /// leadership's.
    async fn resign(
        &self,
        req: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        if let Some(l) = &req.get_ref().leader {
            self.check_key_write(&req, &l.key)?;
        }
        let l = req
            .into_inner()
            .leader
            .ok_or_else(|| Status::unknown(ERR_MISSING_LEADER_KEY))?;
        let r = self
            .txn(TxnRequest {
                compare: vec![create_revision_is(&l.key, l.rev)],
                success: vec![op(Op::RequestDeleteRange(DeleteRangeRequest {
                    key: l.key.clone(),
                    ..Default::default()
                }))],
                failure: Vec::new(),
            })
            .await?;
        Ok(Response::new(ResignResponse {
            header: Some(ResponseHeader {
                revision: r.header.map_or(0, |h| h.revision),
                ..self.header_now()
            }),
        }))
    }
}

impl<B: Backend> EtcdApi<B> {
    /// Puts `value` on leader key `key` if it still has creation revision
    /// `rev` (clientv3's `Election.Proclaim`).
    async fn proclaim_value(
        &self,
        key: &[u8],
        rev: i64,
        lease: i64,
        value: &[u8],
    ) -> Result<ResponseHeader, Status> {
        let r = self
            .txn(TxnRequest {
                compare: vec![create_revision_is(key, rev)],
                success: vec![op(Op::RequestPut(PutRequest {
                    key: key.to_vec(),
                    value: value.to_vec(),
                    lease,
                    ..Default::default()
                }))],
                failure: Vec::new(),
            })
            .await?;
        if !r.succeeded {
            return Err(Status::unknown(ERR_ELECTION_NOT_LEADER));
        }
        Ok(ResponseHeader {
            revision: r.header.map_or(0, |h| h.revision),
            ..self.header_now()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use etcd_client::{LockOptions, ProclaimOptions, ResignOptions};

    use super::prefix_end;
    use crate::grpc::tests::serve;
    use crate::ApiLimits;

    const WAIT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_lock_is_held_by_one_contender_at_a_time() {
        let s = serve(ApiLimits::default()).await;
        let mut c = s.client.clone();
        let a = c.lease_grant(60, None).await.unwrap().id();
        let b = c.lease_grant(60, None).await.unwrap().id();
        let held = c
            .lock("L", Some(LockOptions::new().with_lease(a)))
            .await
            .unwrap();
        assert_eq!(held.key(), format!("L/{a:x}").as_bytes());
        let released = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (mut c, released) = (c.clone(), released.clone());
            tokio::spawn(async move {
                let r = c
                    .lock("L", Some(LockOptions::new().with_lease(b)))
                    .await
                    .unwrap();
                assert!(released.load(Ordering::SeqCst), "acquired while held");
                r.key().to_vec()
            })
        };
        // The waiter is queued behind the holder (its key exists) ...
        let deadline = tokio::time::Instant::now() + WAIT;
        while c.get(format!("L/{b:x}"), None).await.unwrap().count() == 0 {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::task::yield_now().await;
        }
        // ... and gets the lock once it is released.
        released.store(true, Ordering::SeqCst);
        c.unlock(held.key()).await.unwrap();
        let key = tokio::time::timeout(WAIT, waiter).await.unwrap().unwrap();
        assert_eq!(key, format!("L/{b:x}").into_bytes());
        // A revoked lease releases its lock too.
        let d = c.lease_grant(60, None).await.unwrap().id();
        let next = {
            let mut c = c.clone();
            tokio::spawn(async move { c.lock("L", Some(LockOptions::new().with_lease(d))).await })
        };
        c.lease_revoke(b).await.unwrap();
        let r = tokio::time::timeout(WAIT, next)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(r.key(), format!("L/{d:x}").as_bytes());
    }

    /// The value of the next leader an Observe stream reports.
    async fn next(o: &mut etcd_client::ObserveStream) -> Vec<u8> {
        tokio::time::timeout(WAIT, o.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .kv()
            .unwrap()
            .value()
            .to_vec()
    }

    #[tokio::test]
    async fn an_election_campaigns_proclaims_observes_and_resigns_as_etcd() {
        let s = serve(ApiLimits::default()).await;
        let mut c = s.client.clone();
        let a = c.lease_grant(60, None).await.unwrap().id();
        let b = c.lease_grant(60, None).await.unwrap().id();
        let won = c.campaign("E", "p1", a).await.unwrap();
        let leader_a = won.leader().unwrap().clone();
        assert_eq!(c.leader("E").await.unwrap().kv().unwrap().value(), b"p1");
        let mut obs = c.observe("E").await.unwrap();
        assert_eq!(next(&mut obs).await, b"p1");
        let second = {
            let mut c = c.clone();
            tokio::spawn(async move { c.campaign("E", "p2", b).await })
        };
        c.proclaim(
            "p1b",
            Some(ProclaimOptions::new().with_leader(leader_a.clone())),
        )
        .await
        .unwrap();
        assert_eq!(next(&mut obs).await, b"p1b");
        c.resign(Some(ResignOptions::new().with_leader(leader_a.clone())))
            .await
            .unwrap();
        let won = tokio::time::timeout(WAIT, second)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(won.leader().unwrap().lease(), b);
        assert_eq!(next(&mut obs).await, b"p2");
        let err = c
            .proclaim("stale", Some(ProclaimOptions::new().with_leader(leader_a)))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(super::ERR_ELECTION_NOT_LEADER), "{err}");
        c.resign(Some(
            ResignOptions::new().with_leader(won.leader().unwrap().clone()),
        ))
        .await
        .unwrap();
        let err = c.leader("E").await.unwrap_err().to_string();
        assert!(err.contains(super::ERR_ELECTION_NO_LEADER), "{err}");
    }

    #[test]
    fn prefix_end_is_etcds() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
