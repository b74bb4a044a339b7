//! etcd's Lease service over replicated lease state (`kv::lease`), and this
//! replica's lessor: its clock's view of when each lease is due.
//!
//! - Grant and Revoke are ordered commands, as any write.
//! - KeepAlive: each replica collects the keep-alives of all its clients
//!   and orders them as one `LeaseRenew` command at a time (the next one
//!   leaves when the previous one was executed: group renewal), so a
//!   keep-alive costs no consensus round of its own. The answer (TTL, or 0
//!   for a lease that does not exist) comes once the renewal executed here.
//! - Expiry: the lessor task notes, by this replica's clock, when it first
//!   saw each lease epoch (a grant or renewal executed); TTL seconds later
//!   it submits a `LeaseExpire` vote. The lease is revoked once f+1
//!   replicas voted for the same epoch, so no single replica (nor a
//!   Byzantine leader) can expire a lease early. The lessor samples the
//!   leases every `lease_check_interval`, so a vote leaves at most that
//!   late; a restarted replica counts every TTL again from its restart.
//! - TimeToLive and Leases are answered from this replica's state; the
//!   remaining TTL is this replica's clock's view.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kv::pb::bftdkv::{Command, LeaseEpoch, LeaseExpire, LeaseRenew};
use kv::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::backend::Backend;
use crate::etcdserverpb::lease_server::Lease;
use crate::grpc::{EtcdApi, ERR_STOPPED};

/// Keep-alives one stream may have waiting for a renewal; the stream stops
/// reading requests beyond it.
const KEEPALIVES_PENDING_PER_STREAM_MAX: usize = 1024;
/// Responses queued per KeepAlive stream.
const STREAM_QUEUE_RESPONSES: usize = 64;

/// When this replica's clock says a lease epoch is due.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    epoch: u64,
    at: Instant,
    /// This replica's expiry vote for `epoch` was submitted.
    voted: bool,
}

/// A keep-alive waiting for its renewal: gets the TTL (0: no such lease).
type Waiter = oneshot::Sender<Result<i64, Status>>;

/// Keep-alives waiting for the next renewal.
#[derive(Default)]
struct Renewals {
    waiting: BTreeMap<i64, Vec<Waiter>>,
    in_flight: bool,
}

/// This replica's lease clock and keep-alive collector (one per API).
#[derive(Default)]
pub struct Lessor {
    deadlines: Mutex<HashMap<i64, Deadline>>,
    renewals: Mutex<Renewals>,
}

impl Lessor {
    /// Seconds left of lease `id` at `epoch` by this replica's clock, if
    /// the lessor has seen that epoch.
    fn remaining_s(&self, id: i64, epoch: u64, now: Instant) -> Option<i64> {
        let d = self.deadlines.lock().unwrap();
        let d = d.get(&id).filter(|d| d.epoch == epoch)?;
        Some(d.at.saturating_duration_since(now).as_secs() as i64)
    }
}

/// The lessor loop of one replica: every `lease_check_interval`, notes new
/// lease epochs and votes for those this replica's clock says expired.
/// Runs until the replica stops.
pub async fn run_lessor<B: Backend>(api: EtcdApi<B>) {
    let interval = api.limits().lease_check_interval;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = Instant::now();
        let leases = api.backend().leases();
        let due: Vec<LeaseEpoch> = {
            let mut d = api.lessor().deadlines.lock().unwrap();
            let live: std::collections::HashSet<i64> = leases.iter().map(|l| l.id).collect();
            d.retain(|id, _| live.contains(id));
            for l in &leases {
                let fresh = Deadline {
                    epoch: l.epoch,
                    at: now + Duration::from_secs(l.ttl_s.max(0) as u64),
                    voted: false,
                };
                let e = d.entry(l.id).or_insert(fresh);
                if e.epoch != l.epoch {
                    *e = fresh;
                }
            }
            d.iter_mut()
                .filter(|(_, x)| !x.voted && x.at <= now)
                .take(kv::lease::LEASES_PER_COMMAND_MAX)
                .map(|(id, x)| {
                    x.voted = true;
                    LeaseEpoch {
                        id: *id,
                        epoch: x.epoch,
                    }
                })
                .collect()
        };
        if due.is_empty() {
            continue;
        }
        let ids: Vec<(i64, u64)> = due.iter().map(|l| (l.id, l.epoch)).collect();
        let vote: Command = LeaseExpire { leases: due }.into();
        if api.backend().submit(vote).is_err() {
            // Not accepted for ordering: vote again on the next tick.
            let mut d = api.lessor().deadlines.lock().unwrap();
            for (id, epoch) in ids {
                if let Some(x) = d.get_mut(&id).filter(|x| x.epoch == epoch) {
                    x.voted = false;
                }
            }
        }
    }
}

impl<B: Backend> EtcdApi<B> {
    /// Registers a keep-alive of lease `id`; the receiver yields its TTL (0
    /// when it does not exist) once a renewal naming it executed here.
    fn keep_alive(&self, id: i64) -> oneshot::Receiver<Result<i64, Status>> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut r = self.lessor().renewals.lock().unwrap();
            r.waiting.entry(id).or_default().push(tx);
            !std::mem::replace(&mut r.in_flight, true)
        };
        if start {
            let api = self.clone();
            tokio::spawn(async move { api.renew_loop().await });
        }
        rx
    }

    /// Orders the waiting keep-alives, one renewal at a time, until none
    /// waits.
    async fn renew_loop(self) {
        loop {
            let batch: Vec<(i64, Vec<Waiter>)> = {
                let mut r = self.lessor().renewals.lock().unwrap();
                if r.waiting.is_empty() {
                    r.in_flight = false;
                    return;
                }
                let mut batch = Vec::new();
                while batch.len() < kv::lease::LEASES_PER_COMMAND_MAX {
                    let Some(e) = r.waiting.pop_first() else {
                        break;
                    };
                    batch.push(e);
                }
                batch
            };
            let ids: Vec<i64> = batch.iter().map(|(id, _)| *id).collect();
            let answer = match self.run(LeaseRenew { ids }.into()).await {
                Ok(kv::Response::LeaseRenew(r)) => Ok(r.ttls),
                Ok(_) => Err(Status::internal("bftd: renewal answered with another type")),
                Err(s) => Err(s),
            };
            for (i, (_, waiters)) in batch.into_iter().enumerate() {
                let one = match &answer {
                    Ok(ttls) => Ok(ttls.get(i).copied().unwrap_or(0)),
                    Err(s) => Err(s.clone()),
                };
                for w in waiters {
                    let _ = w.send(one.clone());
                }
            }
        }
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<B: Backend> Lease for EtcdApi<B> {
    /// etcd's LeaseGrant (ordered). Errors: "etcdserver: too large lease
    /// TTL", "etcdserver: lease already exists".
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let user = self.caller(&req)?;
        match self.run_as(user, req.into_inner().into()).await? {
            kv::Response::LeaseGrant(r) => Ok(Response::new(r)),
            _ => Err(Status::internal("bftd: grant answered with another type")),
        }
    }

    /// etcd's LeaseRevoke (ordered): the lease's keys are deleted at one
    /// revision. Error: "etcdserver: requested lease not found".
    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let user = self.caller(&req)?;
        match self.run_as(user, req.into_inner().into()).await? {
            kv::Response::LeaseRevoke(r) => Ok(Response::new(r)),
            _ => Err(Status::internal("bftd: revoke answered with another type")),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    /// etcd's LeaseKeepAlive stream: one response per request, with the
    /// lease's TTL, or TTL 0 when the lease does not exist (as etcd). When
    /// the client closes its side, every keep-alive already received is
    /// still answered before the stream ends (etcd answers each one before
    /// it reads the next).
    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        self.check_user(&req)?;
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_QUEUE_RESPONSES);
        let api = self.clone();
        tokio::spawn(async move {
            // One task per keep-alive waiting for its renewal (bounded).
            let mut pending = tokio::task::JoinSet::new();
            let mut client_done = false;
            loop {
                if client_done && pending.is_empty() {
                    break;
                }
                tokio::select! {
                    () = tx.closed() => break,
                    msg = inbound.message(), if !client_done && pending.len() < KEEPALIVES_PENDING_PER_STREAM_MAX => {
                        match msg {
                            Ok(Some(LeaseKeepAliveRequest { id })) => {
                                let rx = api.keep_alive(id);
                                pending.spawn(async move { (id, rx.await) });
                            }
                            // The client closed its side: answer what it
                            // sent, then end the stream.
                            Ok(None) => client_done = true,
                            Err(_) => break,
                        }
                    }
                    Some(done) = pending.join_next(), if !pending.is_empty() => {
                        let resp = match done {
                            Ok((id, Ok(Ok(ttl)))) => Ok(LeaseKeepAliveResponse {
                                header: Some(api.header(api.backend().store_size().0)),
                                id,
                                ttl,
                            }),
                            Ok((_, Ok(Err(s)))) => Err(s),
                            Ok((_, Err(_))) | Err(_) => Err(Status::unavailable(ERR_STOPPED)),
                        };
                        let failed = resp.is_err();
                        if tx.send(resp).await.is_err() || failed {
                            break;
                        }
                    }
                }
            }
            pending.abort_all();
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    /// etcd's LeaseTimeToLive, from this replica: TTL -1 for a lease that
    /// does not exist (as etcd), else the seconds left by this replica's
    /// clock, the granted TTL and, if asked, the keys.
    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let user = self.check_user(&req)?;
        let req = req.into_inner();
        let rev = self.backend().store_size().0;
        let lease = self.backend().lease(req.id, req.keys);
        // The keys are shown only to a user who may read each (etcd 3.5's
        // checkLeaseTimeToLive).
        let auth = self.backend().auth();
        for k in lease.iter().flat_map(|l| &l.keys) {
            auth.check_range(&user, kv::auth::Access::Read, k, &[])
                .map_err(|e| crate::grpc::kv_status(&e))?;
        }
        let resp = match lease {
            None => LeaseTimeToLiveResponse {
                header: Some(self.header(rev)),
                id: req.id,
                ttl: -1,
                ..Default::default()
            },
            Some(l) => LeaseTimeToLiveResponse {
                header: Some(self.header(rev)),
                id: req.id,
                ttl: self
                    .lessor()
                    .remaining_s(l.id, l.epoch, Instant::now())
                    .unwrap_or(l.ttl_s),
                granted_ttl: l.ttl_s,
                keys: l.keys,
            },
        };
        Ok(Response::new(resp))
    }

    /// etcd's LeaseLeases: every lease granted, from this replica.
    async fn lease_leases(
        &self,
        req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.check_user(&req)?;
        let rev = self.backend().store_size().0;
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.header(rev)),
            leases: self
                .backend()
                .leases()
                .into_iter()
                .map(|l| LeaseStatus { id: l.id })
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use etcd_client::{EventType, LeaseTimeToLiveOptions, PutOptions, WatchOptions};
    use kv::pb::etcdserverpb::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};

    use crate::grpc::tests::serve;
    use crate::ApiLimits;

    const WAIT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn grant_attach_time_to_live_list_and_revoke_as_etcd() {
        let s = serve(ApiLimits::default()).await;
        let mut c = s.client.clone();
        let g = c.lease_grant(60, None).await.unwrap();
        assert_eq!(g.ttl(), 60);
        let id = g.id();
        c.put("a", "1", Some(PutOptions::new().with_lease(id)))
            .await
            .unwrap();
        c.put("b", "2", Some(PutOptions::new().with_lease(id)))
            .await
            .unwrap();
        let t = c
            .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .unwrap();
        assert_eq!(t.granted_ttl(), 60);
        assert!((55..=60).contains(&t.ttl()), "{}", t.ttl());
        assert_eq!(t.keys(), [b"a".to_vec(), b"b".to_vec()]);
        let ids: Vec<i64> = c
            .leases()
            .await
            .unwrap()
            .leases()
            .iter()
            .map(|l| l.id())
            .collect();
        assert_eq!(ids, vec![id]);
        c.lease_revoke(id).await.unwrap();
        assert_eq!(c.get("a", None).await.unwrap().count(), 0);
        assert_eq!(c.get("b", None).await.unwrap().count(), 0);
        // etcd's errors and answers for a lease that is gone.
        let err = c.lease_revoke(id).await.unwrap_err().to_string();
        assert!(
            err.contains("etcdserver: requested lease not found"),
            "{err}"
        );
        let t = c.lease_time_to_live(id, None).await.unwrap();
        assert_eq!(t.ttl(), -1);
        let err = c
            .put("c", "3", Some(PutOptions::new().with_lease(id)))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("etcdserver: requested lease not found"),
            "{err}"
        );
        c.lease_grant(5, Some(etcd_client::LeaseGrantOptions::new().with_id(77)))
            .await
            .unwrap();
        let err = c
            .lease_grant(5, Some(etcd_client::LeaseGrantOptions::new().with_id(77)))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("etcdserver: lease already exists"), "{err}");
    }

    #[tokio::test]
    async fn keep_alives_sent_before_the_client_closes_its_side_are_all_answered() {
        // etcd answers every keep-alive it read before the client closed
        // its side (python-etcd3's `Lease.refresh` sends one and closes).
        let s = serve(ApiLimits::default()).await;
        let (mut c, addr) = (s.client.clone(), s.addr);
        let id = c.lease_grant(30, None).await.unwrap().id();
        let requests: Vec<LeaseKeepAliveRequest> = [id, 4242, id]
            .into_iter()
            .map(|id| LeaseKeepAliveRequest { id })
            .collect();
        let (_channel, mut responses) = crate::grpc::tests::send_and_half_close::<
            _,
            LeaseKeepAliveResponse,
        >(
            addr, "/etcdserverpb.Lease/LeaseKeepAlive", requests
        )
        .await;
        let mut got = Vec::new();
        while let Some(r) = tokio::time::timeout(WAIT, responses.message())
            .await
            .expect("a response or the end of the stream in time")
            .unwrap()
        {
            got.push((r.id, r.ttl));
        }
        got.sort();
        let mut want = vec![(id, 30), (id, 30), (4242, 0)];
        want.sort();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn keep_alives_answer_the_ttl_or_zero_and_keep_the_lease() {
        let limits = ApiLimits {
            lease_check_interval: Duration::from_millis(50),
            ..ApiLimits::default()
        };
        let s = serve(limits).await;
        let (b, mut c) = (s.backend.clone(), s.client.clone());
        let id = c.lease_grant(2, None).await.unwrap().id();
        c.put("k", "v", Some(PutOptions::new().with_lease(id)))
            .await
            .unwrap();
        let (mut keeper, mut stream) = c.lease_keep_alive(id).await.unwrap();
        // Keep it alive for twice its TTL, a keep-alive every 300 ms
        // (clients send one every TTL/3).
        let until = tokio::time::Instant::now() + Duration::from_secs(4);
        while tokio::time::Instant::now() < until {
            keeper.keep_alive().await.unwrap();
            let r = tokio::time::timeout(WAIT, stream.message())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!((r.id(), r.ttl()), (id, 2));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert_eq!(c.get("k", None).await.unwrap().count(), 1, "kept alive");
        // An unknown lease is answered TTL 0, as etcd does (which the
        // client reports as "lease not found").
        let err = c.lease_keep_alive(4242).await.unwrap_err().to_string();
        assert!(err.contains("lease not found"), "{err}");
        // Left alone, it expires: its key is deleted, and a watcher sees it.
        let opts = WatchOptions::new().with_start_revision(b.store.lock().unwrap().revision());
        let mut w = c.watch("k", Some(opts)).await.unwrap();
        drop((keeper, stream));
        let deadline = tokio::time::Instant::now() + WAIT;
        let deleted = loop {
            let r = tokio::time::timeout_at(deadline, w.message())
                .await
                .expect("the lease expired in time")
                .unwrap()
                .unwrap();
            if let Some(e) = r
                .events()
                .iter()
                .find(|e| e.event_type() == EventType::Delete)
            {
                break e.kv().unwrap().key().to_vec();
            }
        };
        assert_eq!(deleted, b"k");
        assert!(b.store.lock().unwrap().lease(id, false).is_none());
    }
}
