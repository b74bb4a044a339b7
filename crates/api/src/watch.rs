//! etcd's Watch service (`etcdserver/api/v3rpc/watch.go` and the
//! watchable store of `server/mvcc`), served from the replica's executed
//! state: one task per Watch stream, many watchers per stream.
//!
//! Every watcher keeps the revision it has been sent everything below
//! (`next_revision`). When the store moves on (the executor publishes each
//! new revision, [`Backend::revisions`]) the stream task reads the changes
//! of each watcher's range from its `next_revision` through the history
//! (`kv::Store::watch_events`, a bounded scan per read) and sends them.
//! There is no per-watcher event buffer: a watcher whose client reads
//! slowly simply falls behind in revision and catches up from history
//! later (etcd's unsynced watchers); if compaction passes it, it is
//! canceled with `compact_revision`, as etcd does. Memory per stream is
//! the watcher table (bounded by [`ApiLimits::watches_per_stream_max`])
//! and a bounded queue of responses.
//!
//! The guarantees etcd documents follow from reading the replicated
//! history in revision order: events are ordered by revision, never sent
//! twice (`next_revision` only grows), atomic per revision (a page never
//! splits a revision), reliable (nothing between two sent revisions is
//! skipped) and resumable (`start_revision`). Every replica executes the
//! same commands, so watches on different replicas see identical events.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use kv::pb::etcdserverpb::{
    watch_create_request::FilterType, watch_request::RequestUnion, WatchCreateRequest,
    WatchRequest, WatchResponse,
};
use kv::pb::mvccpb::{event::EventType, Event};
use kv::WatchCompacted;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::backend::Backend;
use crate::etcdserverpb::watch_server::Watch;
use crate::grpc::EtcdApi;

/// etcd's error when a watch ID is already used on the stream.
pub const ERR_DUPLICATE_WATCH_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// etcd's error for a watch whose `range_end` is not above its key.
pub const ERR_EMPTY_WATCHER_RANGE: &str = "mvcc: watcher range is empty";
/// etcd's error for a stream that requires a leader when there is none.
pub const ERR_NO_LEADER: &str = "etcdserver: no leader";
/// gRPC metadata key (and value) with which a client asks that its watch
/// stream fail while the member has no leader (clientv3's
/// `WithRequireLeader`).
pub const METADATA_REQUIRE_LEADER: (&str, &str) = ("hasleader", "true");

/// How often a stream opened with `hasleader=true` checks that the replica
/// still has a working regency.
const LEADER_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Responses queued per stream before the task waits for the client.
const STREAM_QUEUE_RESPONSES: usize = 64;

/// The watch ID etcd gives responses that belong to no watcher (progress
/// responses to a `WatchProgressRequest`).
const NO_WATCH_ID: i64 = -1;

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

/// Watch counters of this process (its one client port), for metrics.
#[derive(Debug, Default)]
pub struct WatchStats {
    /// Watch streams open now.
    pub streams: AtomicU64,
    /// Watchers open now, over all streams.
    pub watchers: AtomicU64,
    /// Events sent, over all watchers.
    pub events_sent: AtomicU64,
    /// Watchers canceled because compaction passed them.
    pub compacted: AtomicU64,
}

/// The process's watch counters.
pub static STATS: WatchStats = WatchStats {
    streams: AtomicU64::new(0),
    watchers: AtomicU64::new(0),
    events_sent: AtomicU64::new(0),
    compacted: AtomicU64::new(0),
};

fn bump(c: &AtomicU64, by: i64) {
    if by >= 0 {
        c.fetch_add(by as u64, Ordering::Relaxed);
    } else {
        c.fetch_sub(by.unsigned_abs(), Ordering::Relaxed);
    }
}

#[tonic::async_trait]
impl<B: Backend> Watch for EtcdApi<B> {
    type WatchStream = WatchStream;

    /// etcd's Watch: a bidirectional stream of create, cancel and progress
    /// requests in, created/canceled/event/progress responses out.
    ///
    /// # Errors
    /// Unavailable "etcdserver: no leader" when the client requires a
    /// leader (`hasleader=true` metadata) and this replica has no working
    /// regency ([`Backend::has_leader`]), at the start or later.
    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let require_leader = req
            .metadata()
            .get(METADATA_REQUIRE_LEADER.0)
            .is_some_and(|v| v.as_bytes() == METADATA_REQUIRE_LEADER.1.as_bytes());
        if require_leader && !self.backend().has_leader() {
            return Err(Status::unavailable(ERR_NO_LEADER));
        }
        let user = self.caller(&req)?;
        let (tx, rx) = mpsc::channel(STREAM_QUEUE_RESPONSES);
        let session = Session {
            user,
            api: self.clone(),
            watchers: BTreeMap::new(),
            next_id: 0,
            cursor: None,
            require_leader,
        };
        tokio::spawn(session.run(req.into_inner(), tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// One watcher of a stream.
#[derive(Debug)]
struct Watcher {
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// Everything below this revision was sent (or filtered out).
    next_revision: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    fragment: bool,
    progress_notify: bool,
    /// Something was sent since the last progress tick.
    sent_since_tick: bool,
}

/// The state of one Watch stream.
struct Session<B: Backend> {
    /// The caller, resolved when the stream opened (as etcd does): every
    /// create needs read permission on its range.
    user: String,
    api: EtcdApi<B>,
    watchers: BTreeMap<i64, Watcher>,
    /// Lowest ID a server-assigned watch may get (etcd: `nextID`).
    next_id: i64,
    /// The watcher served last (round robin).
    cursor: Option<i64>,
    require_leader: bool,
}

type Out = mpsc::Sender<Result<WatchResponse, Status>>;

impl<B: Backend> Session<B> {
    fn limits(&self) -> &crate::ApiLimits {
        self.api.limits()
    }

    /// The stream loop: requests, new revisions, progress ticks, and
    /// sending what watchers have pending while the client keeps up.
    async fn run(mut self, inbound: Streaming<WatchRequest>, tx: Out) {
        bump(&STATS.streams, 1);
        self.serve(inbound, tx).await;
        bump(&STATS.streams, -1);
        bump(&STATS.watchers, -(self.watchers.len() as i64));
    }

    async fn serve(&mut self, mut inbound: Streaming<WatchRequest>, tx: Out) {
        let mut revisions = self.api.backend().revisions();
        let mut known = *revisions.borrow_and_update();
        let interval = self.limits().watch_progress_notify_interval;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leader_check = tokio::time::interval(LEADER_CHECK_INTERVAL);
        leader_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // etcd keeps sending events after the client closed its sending
        // side; the stream ends when the client goes away.
        let mut reading = true;
        loop {
            let pending = self.watchers.values().any(|w| w.next_revision <= known);
            tokio::select! {
                biased;
                () = tx.closed() => break,
                msg = inbound.message(), if reading => match msg {
                    Ok(Some(req)) => {
                        if self.handle(req, &tx).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => reading = false,
                    // The stream broke.
                    Err(_) => break,
                },
                permit = tx.reserve(), if pending => {
                    let Ok(permit) = permit else { break };
                    if self.serve_one(permit, known, &tx).await.is_err() {
                        break;
                    }
                }
                changed = revisions.changed() => {
                    if changed.is_err() {
                        // The replica stopped.
                        let _ = tx.send(Err(Status::unavailable(crate::grpc::ERR_STOPPED))).await;
                        break;
                    }
                    known = *revisions.borrow_and_update();
                }
                _ = ticker.tick() => self.progress_tick(known, &tx),
                _ = leader_check.tick(), if self.require_leader => {
                    if !self.api.backend().has_leader() {
                        let _ = tx.send(Err(Status::unavailable(ERR_NO_LEADER))).await;
                        break;
                    }
                }
            }
        }
    }

    fn response(&self, revision: i64, watch_id: i64) -> WatchResponse {
        WatchResponse {
            header: Some(self.api.header(revision)),
            watch_id,
            ..Default::default()
        }
    }

    /// The store's revision now (etcd: the watch stream's `Rev()`).
    fn revision_now(&self) -> i64 {
        self.api.backend().store_size().0
    }

    async fn handle(&mut self, req: WatchRequest, tx: &Out) -> Result<(), ()> {
        let resp = match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c),
            Some(RequestUnion::CancelRequest(c)) => {
                // As etcd: an unknown ID is ignored.
                if self.watchers.remove(&c.watch_id).is_none() {
                    return Ok(());
                }
                bump(&STATS.watchers, -1);
                WatchResponse {
                    canceled: true,
                    ..self.response(self.revision_now(), c.watch_id)
                }
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // A revision that covers every event already sent on this
                // stream: no watcher will later get an event at or below
                // it.
                let synced = self
                    .watchers
                    .values()
                    .map(|w| w.next_revision - 1)
                    .min()
                    .unwrap_or(i64::MAX);
                let rev = self.revision_now().min(synced);
                self.response(rev, NO_WATCH_ID)
            }
            None => return Ok(()),
        };
        tx.send(Ok(resp)).await.map_err(|_| ())
    }

    /// etcd's create: the `created` response, canceled at once with the
    /// reason when the watch cannot be made.
    fn create(&mut self, c: WatchCreateRequest) -> WatchResponse {
        let now = self.revision_now();
        let refuse = |reason: String| WatchResponse {
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..self.response(now, NO_WATCH_ID)
        };
        // etcd: an empty key is the smallest key, "\0".
        let key = if c.key.is_empty() { vec![0] } else { c.key };
        let range_end = c.range_end;
        if !range_end.is_empty() && range_end != [0] && key >= range_end {
            return refuse(ERR_EMPTY_WATCHER_RANGE.into());
        }
        if let Err(e) = self.api.backend().auth().check_range(
            &self.user,
            kv::auth::Access::Read,
            &key,
            &range_end,
        ) {
            // etcd: created and canceled with the error as the reason.
            return refuse(e.to_string());
        }
        if self.watchers.len() >= self.limits().watches_per_stream_max {
            return refuse(format!(
                "bftd: too many watches on this stream (watches_per_stream_max {}); cancel some \
                 or open another stream",
                self.limits().watches_per_stream_max
            ));
        }
        let id = if c.watch_id == 0 {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        } else if self.watchers.contains_key(&c.watch_id) {
            return refuse(ERR_DUPLICATE_WATCH_ID.into());
        } else {
            c.watch_id
        };
        let has = |f: FilterType| c.filters.contains(&(f as i32));
        let next_revision = if c.start_revision == 0 {
            now + 1
        } else {
            c.start_revision.max(1)
        };
        self.watchers.insert(
            id,
            Watcher {
                key,
                range_end,
                next_revision,
                prev_kv: c.prev_kv,
                no_put: has(FilterType::Noput),
                no_delete: has(FilterType::Nodelete),
                fragment: c.fragment,
                progress_notify: c.progress_notify,
                sent_since_tick: false,
            },
        );
        bump(&STATS.watchers, 1);
        WatchResponse {
            created: true,
            ..self.response(now, id)
        }
    }

    /// Reads and sends one page for the next watcher (round robin) with
    /// events pending below `known`.
    async fn serve_one(
        &mut self,
        permit: mpsc::Permit<'_, Result<WatchResponse, Status>>,
        known: i64,
        tx: &Out,
    ) -> Result<(), ()> {
        let after = self.cursor.unwrap_or(i64::MIN);
        let next = self
            .watchers
            .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            .chain(self.watchers.range(..=after))
            .find(|(_, w)| w.next_revision <= known)
            .map(|(id, _)| *id);
        let Some(id) = next else {
            return Ok(());
        };
        self.cursor = Some(id);
        let scan_max = self.limits().watch_scan_changes_max;
        let w = self.watchers.get(&id).expect("found above");
        let read = self
            .api
            .backend()
            .watch_events(&w.key, &w.range_end, w.next_revision, scan_max);
        let page = match read {
            Err(WatchCompacted { compact_revision }) => {
                // etcd: the watcher gets the compaction revision and is
                // canceled.
                self.watchers.remove(&id);
                bump(&STATS.watchers, -1);
                bump(&STATS.compacted, 1);
                permit.send(Ok(WatchResponse {
                    compact_revision,
                    canceled: true,
                    ..self.response(self.revision_now(), id)
                }));
                return Ok(());
            }
            Ok(page) => page,
        };
        let w = self.watchers.get_mut(&id).expect("found above");
        assert!(
            page.next_revision > w.next_revision,
            "a watch read below the known revision makes progress"
        );
        w.next_revision = page.next_revision;
        let events: Vec<Event> = page
            .events
            .into_iter()
            .filter(|e| {
                let put = e.r#type == EventType::Put as i32;
                !(put && w.no_put || !put && w.no_delete)
            })
            .map(|mut e| {
                if !w.prev_kv {
                    e.prev_kv = None;
                }
                e
            })
            .collect();
        if events.is_empty() {
            return Ok(());
        }
        w.sent_since_tick = true;
        bump(&STATS.events_sent, events.len() as i64);
        let fragment = w.fragment;
        let resp = WatchResponse {
            events,
            ..self.response(page.next_revision - 1, id)
        };
        let limit = self.limits().request_bytes_max;
        if !fragment || resp.events.len() < 2 || prost::Message::encoded_len(&resp) <= limit {
            permit.send(Ok(resp));
            return Ok(());
        }
        // etcd's sendFragments: pieces of at most `limit` bytes of events
        // (at least one event each), all but the last marked `fragment`.
        let mut parts: Vec<WatchResponse> = Vec::new();
        let mut part = WatchResponse {
            events: Vec::new(),
            ..resp.clone()
        };
        let mut bytes = 0;
        for e in resp.events {
            let n = prost::Message::encoded_len(&e);
            if !part.events.is_empty() && bytes + n > limit {
                parts.push(std::mem::replace(
                    &mut part,
                    WatchResponse {
                        events: Vec::new(),
                        ..self.response(page.next_revision - 1, id)
                    },
                ));
                bytes = 0;
            }
            bytes += n;
            part.events.push(e);
        }
        parts.push(part);
        let last = parts.len() - 1;
        let mut parts = parts.into_iter().enumerate().map(|(i, mut p)| {
            p.fragment = i != last;
            p
        });
        permit.send(Ok(parts.next().expect("at least one part")));
        for p in parts {
            tx.send(Ok(p)).await.map_err(|_| ())?;
        }
        Ok(())
    }

    /// etcd's periodic progress notification: every watcher that asked for
    /// it, is synced and was sent nothing since the last tick gets an empty
    /// response at the current revision. Skipped for a client whose queue
    /// is full (it has responses to read).
    fn progress_tick(&mut self, known: i64, tx: &Out) {
        let now = self.revision_now();
        let due: Vec<i64> = self
            .watchers
            .iter_mut()
            .filter_map(|(id, w)| {
                let quiet = !std::mem::take(&mut w.sent_since_tick);
                (w.progress_notify && quiet && w.next_revision > known).then_some(*id)
            })
            .collect();
        for id in due {
            let w = &self.watchers[&id];
            let rev = now.min(w.next_revision - 1);
            if tx.try_send(Ok(self.response(rev, id))).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use etcd_client::{EventType as Ev, PutOptions, WatchFilterType, WatchOptions};

    use super::*;
    use crate::grpc::tests::serve;
    use crate::ApiLimits;

    /// How long a test waits for one response before failing.
    const WAIT: Duration = Duration::from_secs(10);

    async fn next(s: &mut etcd_client::WatchStream) -> etcd_client::WatchResponse {
        tokio::time::timeout(WAIT, s.message())
            .await
            .expect("a watch response in time")
            .expect("the stream works")
            .expect("the stream is open")
    }

    /// (PUT/DELETE, key, mod_revision, value, prev value) of each event.
    fn events(r: &etcd_client::WatchResponse) -> Vec<(Ev, String, i64, String, Option<String>)> {
        r.events()
            .iter()
            .map(|e| {
                let kv = e.kv().unwrap();
                (
                    e.event_type(),
                    kv.key_str().unwrap().to_string(),
                    kv.mod_revision(),
                    kv.value_str().unwrap().to_string(),
                    e.prev_kv().map(|p| p.value_str().unwrap().to_string()),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn a_prefix_watch_sees_puts_and_deletes_in_order_with_prev_kv() {
        let mut s = serve(ApiLimits::default()).await;
        let opts = WatchOptions::new().with_prefix().with_prev_key();
        let mut w = s.client.watch("a/", Some(opts)).await.unwrap();
        let created = next(&mut w).await;
        assert!(created.created() && !created.canceled());
        s.client.put("a/1", "x", None).await.unwrap(); // rev 2
        s.client.put("b", "y", None).await.unwrap(); // rev 3
        s.client.put("a/1", "z", None).await.unwrap(); // rev 4
        s.client.delete("a/1", None).await.unwrap(); // rev 5
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let r = next(&mut w).await;
            assert_eq!(r.watch_id(), created.watch_id());
            seen.extend(events(&r));
        }
        assert_eq!(
            seen,
            vec![
                (Ev::Put, "a/1".into(), 2, "x".into(), None),
                (Ev::Put, "a/1".into(), 4, "z".into(), Some("x".into())),
                (Ev::Delete, "a/1".into(), 5, "".into(), Some("z".into())),
            ]
        );
    }

    #[tokio::test]
    async fn watchers_go_on_after_the_client_closes_its_side() {
        // etcd keeps a stream's watchers until the client cancels the call,
        // also once the client sent its requests and closed its side.
        let mut s = serve(ApiLimits::default()).await;
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })),
        };
        let (_channel, mut responses) =
            crate::grpc::tests::send_and_half_close::<_, WatchResponse>(
                s.addr,
                "/etcdserverpb.Watch/Watch",
                vec![create],
            )
            .await;
        let mut next_raw = async || {
            tokio::time::timeout(WAIT, responses.message())
                .await
                .expect("a watch response in time")
                .unwrap()
                .expect("the stream is still open")
        };
        assert!(next_raw().await.created);
        s.client.put("k", "v", None).await.unwrap(); // rev 2
        let r = next_raw().await;
        let kv = r.events[0].kv.as_ref().unwrap();
        assert_eq!((&kv.key[..], kv.mod_revision), (&b"k"[..], 2));
    }

    #[tokio::test]
    async fn watch_ids_are_assigned_per_stream_and_a_duplicate_is_refused() {
        let mut s = serve(ApiLimits::default()).await;
        let mut w = s.client.watch("k0", None).await.unwrap();
        assert_eq!(next(&mut w).await.watch_id(), 0);
        w.watch("k1", None).await.unwrap();
        assert_eq!(next(&mut w).await.watch_id(), 1);
        w.watch("k7", Some(WatchOptions::new().with_watch_id(7)))
            .await
            .unwrap();
        assert_eq!(next(&mut w).await.watch_id(), 7);
        w.watch("k7", Some(WatchOptions::new().with_watch_id(7)))
            .await
            .unwrap();
        let dup = next(&mut w).await;
        assert!(dup.created() && dup.canceled());
        assert_eq!(dup.cancel_reason(), ERR_DUPLICATE_WATCH_ID);
        // An empty range is refused as etcd refuses it.
        w.watch("z", Some(WatchOptions::new().with_range("a")))
            .await
            .unwrap();
        let empty = next(&mut w).await;
        assert!(empty.canceled());
        assert_eq!(empty.cancel_reason(), ERR_EMPTY_WATCHER_RANGE);
        // A canceled watcher gets nothing more; the others go on.
        w.cancel(1).await.unwrap();
        let canceled = next(&mut w).await;
        assert!(canceled.canceled() && canceled.watch_id() == 1);
        s.client.put("k1", "v", None).await.unwrap();
        s.client.put("k7", "v", None).await.unwrap();
        let r = next(&mut w).await;
        assert_eq!(r.watch_id(), 7);
        assert_eq!(events(&r)[0].1, "k7");
    }

    #[tokio::test]
    async fn a_watch_from_a_past_revision_replays_history_then_follows() {
        let mut s = serve(ApiLimits::default()).await;
        s.client.put("k", "1", None).await.unwrap(); // rev 2
        s.client.put("k", "2", None).await.unwrap(); // rev 3
        let opts = WatchOptions::new().with_start_revision(3);
        let mut w = s.client.watch("k", Some(opts)).await.unwrap();
        assert!(next(&mut w).await.created());
        assert_eq!(events(&next(&mut w).await)[0].3, "2");
        s.client.put("k", "3", None).await.unwrap(); // rev 4
        let r = next(&mut w).await;
        assert_eq!(events(&r), vec![(Ev::Put, "k".into(), 4, "3".into(), None)]);
        assert_eq!(r.header().unwrap().revision(), 4);
    }

    #[tokio::test]
    async fn a_start_revision_below_the_compaction_is_canceled_with_compact_revision() {
        let mut s = serve(ApiLimits::default()).await;
        for v in 0..5 {
            s.client.put("k", v.to_string(), None).await.unwrap(); // revs 2..=6
        }
        s.client.compact(5, None).await.unwrap();
        let opts = WatchOptions::new().with_start_revision(4);
        let mut w = s.client.watch("k", Some(opts)).await.unwrap();
        assert!(next(&mut w).await.created());
        let r = next(&mut w).await;
        assert!(r.canceled());
        assert_eq!(r.compact_revision(), 5);
        // At the compaction revision itself, history is still there.
        let opts = WatchOptions::new().with_start_revision(5);
        w.watch("k", Some(opts)).await.unwrap();
        assert!(next(&mut w).await.created());
        let got: Vec<i64> = events(&next(&mut w).await).iter().map(|e| e.2).collect();
        assert_eq!(got, vec![5, 6]);
    }

    #[tokio::test]
    async fn filters_drop_puts_or_deletes() {
        let mut s = serve(ApiLimits::default()).await;
        let no_put = WatchOptions::new().with_filters([WatchFilterType::NoPut]);
        let mut w = s.client.watch("k", Some(no_put)).await.unwrap();
        assert!(next(&mut w).await.created());
        s.client.put("k", "v", None).await.unwrap();
        s.client.delete("k", None).await.unwrap();
        let r = next(&mut w).await;
        assert_eq!(
            events(&r),
            vec![(Ev::Delete, "k".into(), 3, "".into(), None)]
        );
    }

    #[tokio::test]
    async fn a_progress_request_covers_every_event_already_sent() {
        let mut s = serve(ApiLimits::default()).await;
        let mut w = s.client.watch("k", None).await.unwrap();
        assert!(next(&mut w).await.created());
        s.client.put("k", "v", None).await.unwrap(); // rev 2
        s.client.put("other", "v", None).await.unwrap(); // rev 3
        assert_eq!(events(&next(&mut w).await).len(), 1);
        w.request_progress().await.unwrap();
        let p = next(&mut w).await;
        assert_eq!(p.watch_id(), NO_WATCH_ID);
        assert!(p.events().is_empty() && !p.created() && !p.canceled());
        // The watcher has seen everything through revision 3.
        assert_eq!(p.header().unwrap().revision(), 3);
        assert_eq!(s.backend.store.lock().unwrap().revision(), 3);
    }

    #[tokio::test]
    async fn an_idle_watcher_that_asked_gets_progress_notifications() {
        let limits = ApiLimits {
            watch_progress_notify_interval: Duration::from_millis(50),
            ..ApiLimits::default()
        };
        let mut s = serve(limits).await;
        s.client.put("k", "v", None).await.unwrap(); // rev 2
        let opts = WatchOptions::new().with_progress_notify();
        let mut w = s.client.watch("k", Some(opts)).await.unwrap();
        let created = next(&mut w).await;
        let p = next(&mut w).await;
        assert_eq!(p.watch_id(), created.watch_id());
        assert!(p.events().is_empty() && !p.canceled());
        assert_eq!(p.header().unwrap().revision(), 2);
    }

    #[tokio::test]
    async fn a_large_response_is_sent_in_fragments_to_a_watcher_that_asked() {
        let limits = ApiLimits {
            request_bytes_max: 4096,
            ..ApiLimits::default()
        };
        let mut s = serve(limits).await;
        for i in 0..6 {
            s.client
                .put(format!("k{i}"), vec![b'x'; 1500], None)
                .await
                .unwrap();
        }
        // One page of six revisions, about 9 KiB.
        let opts = WatchOptions::new()
            .with_prefix()
            .with_fragment()
            .with_start_revision(1);
        let mut w = s.client.watch("k", Some(opts)).await.unwrap();
        assert!(next(&mut w).await.created());
        let mut got = Vec::new();
        let mut parts = 0;
        loop {
            let r = next(&mut w).await;
            parts += 1;
            got.extend(events(&r).into_iter().map(|e| e.1));
            assert!(prost::Message::encoded_len(&r.0) <= 4096 + 64);
            let fragment = r.0.fragment;
            assert!(fragment || got.len() == 6, "only the last part is unmarked");
            if !fragment {
                break;
            }
        }
        assert!(parts >= 3, "9 KiB in parts of at most 4 KiB: {parts}");
        assert_eq!(got, (0..6).map(|i| format!("k{i}")).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_watcher_far_behind_catches_up_from_history_exactly_once_and_in_order() {
        let limits = ApiLimits {
            watch_scan_changes_max: 7,
            ..ApiLimits::default()
        };
        let mut s = serve(limits).await;
        let n = 300;
        for i in 0..n {
            let key = if i % 3 == 0 { "other" } else { "k" };
            s.client.put(key, i.to_string(), None).await.unwrap();
        }
        let opts = WatchOptions::new().with_start_revision(1);
        let mut w = s.client.watch("k", Some(opts)).await.unwrap();
        assert!(next(&mut w).await.created());
        let want: Vec<String> = (0..n)
            .filter(|i| i % 3 != 0)
            .map(|i| i.to_string())
            .collect();
        let mut got = Vec::new();
        let mut last_rev = 0;
        while got.len() < want.len() {
            for e in events(&next(&mut w).await) {
                assert!(e.2 > last_rev, "revisions ascend, none twice");
                last_rev = e.2;
                got.push(e.3);
            }
        }
        assert_eq!(got, want);
        // Live events follow the replayed ones.
        s.client
            .put("k", "live", Some(PutOptions::new()))
            .await
            .unwrap();
        assert_eq!(events(&next(&mut w).await)[0].3, "live");
    }

    #[tokio::test]
    async fn a_create_beyond_the_stream_limit_is_refused_with_the_reason() {
        let limits = ApiLimits {
            watches_per_stream_max: 2,
            ..ApiLimits::default()
        };
        let mut s = serve(limits).await;
        let mut w = s.client.watch("a", None).await.unwrap();
        assert!(!next(&mut w).await.canceled());
        w.watch("b", None).await.unwrap();
        assert!(!next(&mut w).await.canceled());
        w.watch("c", None).await.unwrap();
        let r = next(&mut w).await;
        assert!(r.created() && r.canceled());
        assert!(r.cancel_reason().contains("watches_per_stream_max 2"));
    }
}
