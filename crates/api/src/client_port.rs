//! The client port's connections: a bounded table of them, an accept loop
//! that backs off on errors, an idle timeout, and a per-connection and
//! server-wide budget of request bytes in flight.
//!
//! Why (issue 7 finding 8): with no bound, idle connections piled up to
//! the process's open-files limit; the accept loop then spun on EMFILE and
//! the next checkpoint write failed for want of a file descriptor. And one
//! connection could hold ~190 MB by opening 100 streams that each declared
//! a 2 MB message and sent part of it.
//!
//! - [`incoming`] accepts connections for tonic. At most
//!   [`ApiLimits::client_connections_max`] are open; when the table is full
//!   a new connection evicts the one idle longest (no request in flight,
//!   as nginx drains idle keep-alive connections when it runs out), or is
//!   closed at once when every connection has a request in flight. Accept
//!   errors (EMFILE, ENFILE, ENOBUFS...) sleep with a doubling backoff,
//!   from [`ACCEPT_BACKOFF_MIN`] to [`ACCEPT_BACKOFF_MAX`], never spin.
//! - [`ClientConn`] closes its connection once no request has been in
//!   flight for [`ApiLimits::client_idle_timeout`] (gRPC-go's
//!   MaxConnectionIdle: idle since the last request finished or since the
//!   connection opened). A connection that never sends the HTTP/2 preface
//!   is idle from the start.
//! - [`ConnLayer`] counts requests in flight per connection (a request is
//!   in flight until its response body ends, so an open watch or
//!   keep-alive stream keeps its connection from the idle timeout) and meters
//!   request bytes: each gRPC message is charged its declared length as
//!   soon as its 5-byte prefix arrives (before tonic reserves a buffer of
//!   that length), released when the request has finished. A message that
//!   would take the connection above
//!   [`ApiLimits::request_bytes_pending_per_connection_max`], or the server
//!   above [`ApiLimits::request_bytes_pending_max`], fails its stream with
//!   ResourceExhausted ("etcdserver: too many requests") and frees what it
//!   held. A request that is not gRPC (the JSON gateway: no
//!   `application/grpc` content type) is charged its body bytes as they
//!   arrive, under the same budgets.
//!
//! - TLS ([`Incoming::with_tls`]): each admitted connection does its
//!   handshake on a task of its own, so a slow or silent handshaker never
//!   delays the accept loop or other connections. It holds its slot in the
//!   table meanwhile (it counts toward `client_connections_max`, can be
//!   evicted as idle, and closes at the idle timeout), and the handshake
//!   is abandoned after [`TLS_HANDSHAKE_TIMEOUT`]. A failed handshake (no
//!   client certificate, one from another CA, not TLS at all) closes the
//!   connection and is counted; nothing else changes.
//!
//! Memory of partial requests is thus at most, per connection, the HTTP/2
//! connection window (bytes received and not yet read by tonic) plus the
//! per-connection budget; and server-wide, the global budget plus the
//! windows.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::Stream;

use crate::grpc::{ApiLimits, ERR_TOO_MANY_REQUESTS};

/// First sleep after a failed accept.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest sleep after failed accepts (the sleep doubles per failure).
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Most connections accepted (or refused) in one poll of [`Incoming`]
/// before it yields to the runtime.
const ACCEPTS_PER_POLL_MAX: usize = 64;
/// Most connections being closed for eviction at once (admitted beyond
/// `client_connections_max` while their victims shut down).
pub const EVICTING_MAX: usize = 64;
/// Longest a TLS handshake may take before the connection is closed (the
/// idle timeout, when shorter, closes it first).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters of the client port (cumulative since start, except
/// `connections_open`).
#[derive(Debug, Default)]
pub struct ClientPortStats {
    pub connections_open: AtomicU64,
    pub connections_accepted: AtomicU64,
    /// Closed at once: the table was full and no connection was idle.
    pub connections_refused: AtomicU64,
    /// Closed to make room for a new connection.
    pub connections_evicted: AtomicU64,
    /// Closed after `client_idle_timeout` with no request in flight.
    pub connections_idle_closed: AtomicU64,
    pub accept_errors: AtomicU64,
    /// Streams failed because a request-bytes budget was full.
    pub streams_over_budget: AtomicU64,
    /// TLS handshakes completed.
    pub tls_handshakes: AtomicU64,
    /// TLS handshakes that failed (bad or missing client certificate, not
    /// TLS, closed or evicted before finishing).
    pub tls_handshakes_failed: AtomicU64,
    /// TLS handshakes abandoned after [`TLS_HANDSHAKE_TIMEOUT`].
    pub tls_handshakes_timed_out: AtomicU64,
}

/// The open connections of one port.
pub struct ConnTable {
    connections_max: usize,
    idle_timeout: Duration,
    per_connection_bytes_max: usize,
    pending_bytes_max: usize,
    epoch: Instant,
    conns: Mutex<Conns>,
    /// Request bytes charged on every connection, bytes.
    pending_bytes: AtomicUsize,
    pub stats: ClientPortStats,
}

#[derive(Default)]
struct Conns {
    next_id: u64,
    open: HashMap<u64, Arc<ConnShared>>,
    /// Of `open`, how many were told to close.
    evicting: usize,
}

/// What a connection shares with the table and with its requests.
struct ConnShared {
    id: u64,
    in_flight: AtomicUsize,
    /// Milliseconds after the table's epoch at which `in_flight` last fell
    /// to 0 (or the connection opened).
    idle_since_ms: AtomicU64,
    /// Told to close (evicted): reads and writes end.
    closing: AtomicBool,
    /// The task driving the connection, woken to close it.
    waker: Mutex<Option<Waker>>,
    /// Request bytes charged on this connection, bytes.
    pending_bytes: AtomicUsize,
    /// The subject Common Name of the verified client certificate (set
    /// once, after the TLS handshake).
    peer_common_name: std::sync::OnceLock<Box<str>>,
}

impl ConnTable {
    /// A table for the client port with `limits`. Panics when the limits
    /// fail [`ApiLimits::validate`] (a configuration bug, caught at
    /// start-up).
    pub fn new(limits: &ApiLimits) -> Arc<Self> {
        if let Err(e) = limits.validate() {
            panic!("client port limits: {e}");
        }
        Self::build(
            limits.client_connections_max,
            limits.client_idle_timeout,
            limits.request_bytes_pending_per_connection_max,
            limits.request_bytes_pending_max,
        )
    }

    /// A table with no request metering (for the HTTP status port, whose
    /// requests are small): at most `connections_max` connections, each
    /// closed `idle_timeout` after it opened unless it closed before.
    /// Panics if `connections_max` is 0.
    pub fn without_metering(connections_max: usize, idle_timeout: Duration) -> Arc<Self> {
        assert!(connections_max > 0, "connections_max must be positive");
        Self::build(connections_max, idle_timeout, usize::MAX, usize::MAX)
    }

    fn build(
        connections_max: usize,
        idle_timeout: Duration,
        per_connection_bytes_max: usize,
        pending_bytes_max: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            connections_max,
            idle_timeout,
            per_connection_bytes_max,
            pending_bytes_max,
            epoch: Instant::now(),
            conns: Mutex::new(Conns::default()),
            pending_bytes: AtomicUsize::new(0),
            stats: ClientPortStats::default(),
        })
    }

    /// Most connections open at once.
    pub fn connections_max(&self) -> usize {
        self.connections_max
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Request bytes charged on all connections now, bytes.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes.load(Ordering::Relaxed)
    }

    /// Takes `stream` into the table, evicting the connection idle longest
    /// when the table is full; `None` (the stream is dropped: closed at
    /// once) when every connection has a request in flight.
    fn admit(self: &Arc<Self>, stream: TcpStream) -> Option<RawConn> {
        let now_ms = self.now_ms();
        let shared = {
            let mut conns = self.conns.lock().expect("conn table lock");
            assert!(conns.evicting <= conns.open.len());
            let live = conns.open.len() - conns.evicting;
            if live >= self.connections_max {
                if conns.evicting >= EVICTING_MAX {
                    self.stats
                        .connections_refused
                        .fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                // Bounded by connections_max + EVICTING_MAX entries.
                let victim = conns
                    .open
                    .values()
                    .filter(|c| {
                        !c.closing.load(Ordering::Relaxed)
                            && c.in_flight.load(Ordering::Acquire) == 0
                    })
                    .min_by_key(|c| (c.idle_since_ms.load(Ordering::Relaxed), c.id))
                    .cloned();
                let Some(victim) = victim else {
                    self.stats
                        .connections_refused
                        .fetch_add(1, Ordering::Relaxed);
                    return None;
                };
                victim.closing.store(true, Ordering::Release);
                conns.evicting += 1;
                if let Some(w) = victim.waker.lock().expect("waker lock").take() {
                    w.wake();
                }
                self.stats
                    .connections_evicted
                    .fetch_add(1, Ordering::Relaxed);
            }
            let id = conns.next_id;
            conns.next_id += 1;
            let shared = Arc::new(ConnShared {
                id,
                in_flight: AtomicUsize::new(0),
                idle_since_ms: AtomicU64::new(now_ms),
                closing: AtomicBool::new(false),
                waker: Mutex::new(None),
                pending_bytes: AtomicUsize::new(0),
                peer_common_name: std::sync::OnceLock::new(),
            });
            conns.open.insert(id, shared.clone());
            assert!(conns.open.len() <= self.connections_max + EVICTING_MAX);
            shared
        };
        self.stats
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        self.stats.connections_open.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let deadline = self.epoch + Duration::from_millis(now_ms) + self.idle_timeout;
        Some(RawConn {
            stream,
            handle: ConnHandle {
                shared,
                table: self.clone(),
            },
            idle: Box::pin(tokio::time::sleep_until(deadline.into())),
        })
    }

    fn remove(&self, shared: &ConnShared) {
        let mut conns = self.conns.lock().expect("conn table lock");
        if conns.open.remove(&shared.id).is_some() {
            if shared.closing.load(Ordering::Acquire) {
                conns.evicting -= 1;
            }
            self.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Accepts connections from `listener` into `table` for tonic's
/// `serve_with_incoming*`. Never yields an error: accept errors are logged
/// (at most once per backoff) and retried after a backoff. Plaintext; see
/// [`Incoming::with_tls`].
pub fn incoming(listener: TcpListener, table: Arc<ConnTable>) -> Incoming {
    Incoming {
        listener,
        table,
        backoff: None,
        next_backoff: ACCEPT_BACKOFF_MIN,
        tls: None,
        handshakes: tokio::task::JoinSet::new(),
    }
}

/// The stream of admitted connections (see [`incoming`]).
pub struct Incoming {
    listener: TcpListener,
    table: Arc<ConnTable>,
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
    next_backoff: Duration,
    tls: Option<Arc<crate::tls::ServerTls>>,
    /// TLS handshakes under way, one task each; at most as many as the
    /// table holds connections (each holds its slot), aborted on drop.
    handshakes: tokio::task::JoinSet<Option<ClientConn>>,
}

impl Incoming {
    /// Serves TLS with `tls`'s config in force when each connection is
    /// accepted (a reload applies to the next connections). Connections are
    /// yielded once their handshake has finished; see the module docs.
    pub fn with_tls(mut self, tls: Arc<crate::tls::ServerTls>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Accepts up to [`ACCEPTS_PER_POLL_MAX`] connections: a plaintext one
    /// is returned at once, a TLS one starts its handshake. `Ready(None)`
    /// when the batch limit was reached (poll again).
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Option<ClientConn>> {
        for _ in 0..ACCEPTS_PER_POLL_MAX {
            if let Some(sleep) = self.backoff.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.backoff = None;
            }
            match self.listener.poll_accept(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    self.table
                        .stats
                        .accept_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        backoff_ms = self.next_backoff.as_millis() as u64,
                        "client port: accept failed: {e}"
                    );
                    self.backoff = Some(Box::pin(tokio::time::sleep(self.next_backoff)));
                    self.next_backoff = (self.next_backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
                Poll::Ready(Ok((stream, peer))) => {
                    self.next_backoff = ACCEPT_BACKOFF_MIN;
                    let Some(raw) = self.table.admit(stream) else {
                        tracing::debug!(%peer, "client port full: connection closed");
                        continue;
                    };
                    match &self.tls {
                        None => return Poll::Ready(Some(ClientConn::plain(raw, peer))),
                        Some(tls) => {
                            // Bounded: each running task holds a slot of
                            // the table, but finished tasks stay in the set
                            // until `poll_handshakes` collects them, so a
                            // flood that evicts handshakes can pass the
                            // table's bound here for a moment. Refuse then
                            // (it was an assert, which a client could trip).
                            if self.handshakes.len() >= self.table.connections_max + EVICTING_MAX {
                                self.table
                                    .stats
                                    .connections_refused
                                    .fetch_add(1, Ordering::Relaxed);
                                tracing::debug!(%peer, "client port: too many TLS handshakes");
                                drop(raw);
                                continue;
                            }
                            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
                            self.handshakes.spawn(handshake(
                                raw,
                                peer,
                                acceptor,
                                TLS_HANDSHAKE_TIMEOUT,
                            ));
                        }
                    }
                }
            }
        }
        Poll::Ready(None)
    }

    /// A connection whose TLS handshake finished, if any.
    fn poll_handshakes(&mut self, cx: &mut Context<'_>) -> Poll<ClientConn> {
        // Each pass takes one finished task out of the bounded set.
        loop {
            match self.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(conn)))) => return Poll::Ready(conn),
                Poll::Ready(Some(Ok(None))) => {}
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!("client port: TLS handshake task ended: {e}")
                }
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Runs the TLS handshake of `raw`; the connection when it succeeded.
async fn handshake(
    raw: RawConn,
    peer: std::net::SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    timeout: Duration,
) -> Option<ClientConn> {
    let table = raw.handle.table.clone();
    let stats = &table.stats;
    match tokio::time::timeout(timeout, acceptor.accept(raw)).await {
        Ok(Ok(tls)) => {
            stats.tls_handshakes.fetch_add(1, Ordering::Relaxed);
            let (raw, session) = tls.get_ref();
            let handle = raw.handle.clone();
            if let Some(cn) = session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| crate::tls::common_name(leaf))
            {
                let _ = handle.shared.peer_common_name.set(cn.into_boxed_str());
            }
            Some(ClientConn {
                io: ConnIo::Tls(Box::new(tls)),
                handle,
                peer,
            })
        }
        Ok(Err(e)) => {
            stats.tls_handshakes_failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "client port: TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            stats
                .tls_handshakes_timed_out
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "client port: TLS handshake timed out");
            None
        }
    }
}

impl Stream for Incoming {
    type Item = io::Result<ClientConn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let more = match this.poll_accept(cx) {
            Poll::Ready(Some(conn)) => return Poll::Ready(Some(Ok(conn))),
            Poll::Ready(None) => true,
            Poll::Pending => false,
        };
        if let Poll::Ready(conn) = this.poll_handshakes(cx) {
            return Poll::Ready(Some(Ok(conn)));
        }
        if more {
            // The accept batch ended on its limit, not on Pending.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

/// axum's listener (the HTTP status port): the same admission, backoff,
/// idle timeout and TLS.
impl axum::serve::Listener for Incoming {
    type Io = ClientConn;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (ClientConn, std::net::SocketAddr) {
        // `poll_next` only yields admitted connections, never an error or
        // the end; loop in case that changes.
        loop {
            let next = std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await;
            if let Some(Ok(conn)) = next {
                let addr = conn.peer;
                return (conn, addr);
            }
        }
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }
}

/// An admitted TCP connection: the stream plus its slot in the table
/// (freed on drop). Reads end (EOF) when the connection is evicted or has
/// been idle for the table's idle timeout — during a TLS handshake too.
struct RawConn {
    stream: TcpStream,
    handle: ConnHandle,
    /// Fires at the earliest time the connection can be idle too long.
    idle: Pin<Box<tokio::time::Sleep>>,
}

/// One admitted connection as tonic and axum see it: plaintext, or TLS
/// after a finished handshake. Its slot in the table is freed on drop.
pub struct ClientConn {
    io: ConnIo,
    handle: ConnHandle,
    peer: std::net::SocketAddr,
}

enum ConnIo {
    Plain(RawConn),
    Tls(Box<tokio_rustls::server::TlsStream<RawConn>>),
}

impl ClientConn {
    fn plain(raw: RawConn, peer: std::net::SocketAddr) -> Self {
        Self {
            handle: raw.handle.clone(),
            io: ConnIo::Plain(raw),
            peer,
        }
    }

    /// The client's address.
    pub fn peer_addr(&self) -> std::net::SocketAddr {
        self.peer
    }
}

impl RawConn {
    fn register(&self, cx: &Context<'_>) {
        let mut w = self.handle.shared.waker.lock().expect("waker lock");
        if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *w = Some(cx.waker().clone());
        }
    }

    /// Whether the connection must close now: evicted, or no request in
    /// flight for the idle timeout. Arms the idle timer otherwise.
    fn must_close(&mut self, cx: &mut Context<'_>) -> bool {
        let shared = &self.handle.shared;
        if shared.closing.load(Ordering::Acquire) {
            return true;
        }
        let table = &self.handle.table;
        // Twice at most: a fired timer is re-armed once, to a later time.
        for _ in 0..2 {
            if self.idle.as_mut().poll(cx).is_pending() {
                return false;
            }
            let now_ms = table.now_ms();
            let timeout_ms = table.idle_timeout.as_millis() as u64;
            let deadline_ms = if shared.in_flight.load(Ordering::Acquire) > 0 {
                now_ms + timeout_ms
            } else {
                shared.idle_since_ms.load(Ordering::Acquire) + timeout_ms
            };
            if deadline_ms <= now_ms {
                table
                    .stats
                    .connections_idle_closed
                    .fetch_add(1, Ordering::Relaxed);
                return true;
            }
            let at = table.epoch + Duration::from_millis(deadline_ms);
            self.idle.as_mut().reset(at.into());
        }
        false
    }
}

impl Drop for RawConn {
    fn drop(&mut self) {
        self.handle.table.remove(&self.handle.shared);
    }
}

impl AsyncRead for RawConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.handle.shared.closing.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Pending => {
                self.register(cx);
                if self.must_close(cx) {
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending
            }
            ready => ready,
        }
    }
}

impl AsyncWrite for RawConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.handle.shared.closing.load(Ordering::Acquire) {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        if r.is_pending() {
            self.register(cx);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.handle.shared.closing.load(Ordering::Acquire) {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if r.is_pending() {
            self.register(cx);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl AsyncRead for ClientConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.io {
            ConnIo::Plain(raw) => Pin::new(raw).poll_read(cx, buf),
            ConnIo::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            ConnIo::Plain(raw) => Pin::new(raw).poll_write(cx, buf),
            ConnIo::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            ConnIo::Plain(raw) => Pin::new(raw).poll_flush(cx),
            ConnIo::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            ConnIo::Plain(raw) => Pin::new(raw).poll_shutdown(cx),
            ConnIo::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            ConnIo::Plain(raw) => Pin::new(raw).poll_write_vectored(cx, bufs),
            ConnIo::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            ConnIo::Plain(raw) => raw.is_write_vectored(),
            ConnIo::Tls(tls) => tls.is_write_vectored(),
        }
    }
}

/// A connection as its requests see it (tonic puts it in each request's
/// extensions).
#[derive(Clone)]
pub struct ConnHandle {
    shared: Arc<ConnShared>,
    table: Arc<ConnTable>,
}

impl ConnHandle {
    /// The subject Common Name of the client certificate this connection
    /// presented and the server verified against its `trusted_ca_file`;
    /// `None` on a plaintext connection, without a client certificate, or
    /// when the certificate has no Common Name. etcd, with
    /// `--client-cert-auth` on and no token in the request, takes it as
    /// the user name.
    pub fn peer_common_name(&self) -> Option<&str> {
        self.shared.peer_common_name.get().map(|cn| &**cn)
    }
}

impl tonic::transport::server::Connected for ClientConn {
    type ConnectInfo = ConnHandle;

    fn connect_info(&self) -> ConnHandle {
        self.handle.clone()
    }
}

/// One request in flight on a connection (dropped when it finished).
struct InFlight(ConnHandle);

impl InFlight {
    fn begin(h: ConnHandle) -> Self {
        h.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(h)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let s = &self.0.shared;
        s.idle_since_ms
            .store(self.0.table.now_ms(), Ordering::Release);
        let before = s.in_flight.fetch_sub(1, Ordering::AcqRel);
        assert!(before > 0, "in-flight count underflow");
    }
}

/// Request bytes charged for one request (released on drop, once both the
/// request body and the response future are gone).
struct Charge {
    conn: ConnHandle,
    bytes: AtomicUsize,
}

impl Charge {
    /// Charges `bytes`; false when that takes the connection or the server
    /// above its budget (the bytes stay charged until the drop).
    fn add(&self, bytes: usize) -> bool {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let t = &self.conn.table;
        let conn = self
            .conn
            .shared
            .pending_bytes
            .fetch_add(bytes, Ordering::Relaxed)
            + bytes;
        let all = t.pending_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        conn <= t.per_connection_bytes_max && all <= t.pending_bytes_max
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let bytes = *self.bytes.get_mut();
        self.conn
            .shared
            .pending_bytes
            .fetch_sub(bytes, Ordering::Relaxed);
        self.conn
            .table
            .pending_bytes
            .fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// A request body that charges each gRPC message's declared length when
/// its 5-byte prefix (`compressed u8 | length u32`) has arrived.
struct MeteredBody {
    inner: tonic::body::Body,
    charge: Arc<Charge>,
    prefix: [u8; 5],
    prefix_filled: usize,
    /// Bytes of the current message still to come.
    message_left: usize,
    /// The body is gRPC's length-prefixed messages; else (the JSON
    /// gateway) every byte is charged as it arrives.
    grpc_framed: bool,
    failed: bool,
}

impl MeteredBody {
    /// Walks `data` through the message framing; false when a message did
    /// not fit the budget.
    fn meter(&mut self, mut data: &[u8]) -> bool {
        if !self.grpc_framed {
            return self.charge.add(data.len());
        }
        // Each pass consumes at least one byte.
        while !data.is_empty() {
            if self.message_left > 0 {
                let n = self.message_left.min(data.len());
                self.message_left -= n;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.prefix_filled).min(data.len());
            self.prefix[self.prefix_filled..self.prefix_filled + n].copy_from_slice(&data[..n]);
            self.prefix_filled += n;
            data = &data[n..];
            if self.prefix_filled == 5 {
                self.prefix_filled = 0;
                let len =
                    u32::from_be_bytes(self.prefix[1..5].try_into().expect("4 bytes")) as usize;
                self.message_left = len;
                if !self.charge.add(5 + len) {
                    return false;
                }
            }
        }
        true
    }
}

impl http_body::Body for MeteredBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            if !self.meter(data) {
                self.failed = true;
                let t = &self.charge.conn.table;
                t.stats.streams_over_budget.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    connection_bytes = self
                        .charge
                        .conn
                        .shared
                        .pending_bytes
                        .load(Ordering::Relaxed),
                    server_bytes = t.pending_bytes(),
                    "client port: request bytes over budget, stream failed"
                );
                return Poll::Ready(Some(Err(tonic::Status::resource_exhausted(
                    ERR_TOO_MANY_REQUESTS,
                ))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Tower layer (for tonic's `Server::layer`) that counts requests in
/// flight per connection and meters their bytes (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnLayer;

impl<S> tower_layer::Layer<S> for ConnLayer {
    type Service = ConnService<S>;

    fn layer(&self, inner: S) -> ConnService<S> {
        ConnService { inner }
    }
}

/// The service of [`ConnLayer`].
#[derive(Clone, Debug)]
pub struct ConnService<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S> tower_service::Service<http::Request<tonic::body::Body>> for ConnService<S>
where
    S: tower_service::Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
    >,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let Some(conn) = req.extensions().get::<ConnHandle>().cloned() else {
            // Not from `incoming` (e.g. a test server): nothing to meter.
            return Box::pin(self.inner.call(req));
        };
        let grpc_framed = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let in_flight = InFlight::begin(conn.clone());
        let charge = Arc::new(Charge {
            conn,
            bytes: AtomicUsize::new(0),
        });
        let body_charge = charge.clone();
        let req = req.map(|inner| {
            tonic::body::Body::new(MeteredBody {
                inner,
                charge: body_charge,
                prefix: [0; 5],
                prefix_filled: 0,
                message_left: 0,
                grpc_framed,
                failed: false,
            })
        });
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            drop(charge);
            // The request stays in flight until its response body ends: a
            // quiet watch (or keep-alive) stream keeps its connection from
            // the idle timeout, as an open stream does in gRPC-go.
            r.map(|resp| {
                resp.map(|inner| {
                    tonic::body::Body::new(InFlightBody {
                        inner,
                        _in_flight: in_flight,
                    })
                })
            })
        })
    }
}

/// A response body that holds its request's [`InFlight`] until it is
/// dropped (ended, or the client went away).
struct InFlightBody {
    inner: tonic::body::Body,
    _in_flight: InFlight,
}

impl http_body::Body for InFlightBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::tests::{ca, leaf, Pki};
    use crate::tls::{ServerTls, TlsFiles, ALPN_CLIENT_PORT};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::StreamExt;

    /// A CA, a server certificate for 127.0.0.1 and a client certificate
    /// (CN=root) it signed, plus a client certificate of another CA.
    struct Certs {
        pki: Pki,
        ca_pem: String,
        client: (String, String),
        foreign_client: (String, String),
    }

    fn certs(name: &str) -> (Certs, TlsFiles) {
        let pki = Pki::new(name);
        let (issuer, ca_pem) = ca("bftd test CA");
        let (cert, key) = leaf(&issuer, "replica-0", &["127.0.0.1", "localhost"]);
        let client = leaf(&issuer, "root", &[]);
        let (other, _) = ca("another CA");
        let foreign_client = leaf(&other, "root", &[]);
        let files = TlsFiles {
            cert_file: pki.write("server.pem", &cert),
            key_file: pki.write("server-key.pem", &key),
            trusted_ca_file: Some(pki.write("ca.pem", &ca_pem)),
            client_cert_auth: true,
        };
        (
            Certs {
                pki,
                ca_pem,
                client,
                foreign_client,
            },
            files,
        )
    }

    #[allow(deprecated)]
    fn connector(ca_pem: &str, client: Option<&(String, String)>) -> tokio_rustls::TlsConnector {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut cfg = match client {
            Some((cert, key)) => b
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => b.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
    }

    /// Serves `incoming`: each connection gets its peer's Common Name (or
    /// "-") and a newline, then is closed.
    fn serve_common_names(mut incoming: Incoming) {
        tokio::spawn(async move {
            while let Some(Ok(mut conn)) = incoming.next().await {
                tokio::spawn(async move {
                    let cn = conn.handle.peer_common_name().unwrap_or("-").to_string();
                    let _ = conn.write_all(format!("{cn}\n").as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
    }

    /// What a TLS client reads from the server: the line, or the error.
    async fn tls_read(
        addr: std::net::SocketAddr,
        connector: &tokio_rustls::TlsConnector,
    ) -> Result<String, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let mut out = String::new();
        tls.read_to_string(&mut out)
            .await
            .map_err(|e| e.to_string())?;
        Ok(out)
    }

    async fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn silent_handshakers_delay_no_one_and_bad_client_certificates_are_refused() {
        let (c, files) = certs("port");
        let tls = ServerTls::load(files, ALPN_CLIENT_PORT).unwrap();
        let table = ConnTable::new(&ApiLimits::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        serve_common_names(incoming(listener, table.clone()).with_tls(tls));

        // Silent peers: TCP connected, no ClientHello ever.
        let mut silent = Vec::new();
        for _ in 0..8 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        wait_for("8 connections in the table", || {
            table.stats.connections_open.load(Ordering::Relaxed) == 8
        })
        .await;
        let good = connector(&c.ca_pem, Some(&c.client));
        let started = Instant::now();
        let got = tls_read(addr, &good).await;
        assert_eq!(got.as_deref(), Ok("root\n"), "the client's CN is exposed");
        assert!(
            started.elapsed() < TLS_HANDSHAKE_TIMEOUT / 2,
            "waited behind silent handshakers: {:?}",
            started.elapsed()
        );

        let foreign = tls_read(addr, &connector(&c.ca_pem, Some(&c.foreign_client))).await;
        assert!(foreign.is_err(), "another CA's certificate: {foreign:?}");
        let none = tls_read(addr, &connector(&c.ca_pem, None)).await;
        assert!(none.is_err(), "no client certificate: {none:?}");
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = plain.read_to_end(&mut buf).await;
        assert!(!buf.ends_with(b"\n"), "plaintext gets no answer: {buf:?}");
        wait_for("3 failed handshakes", || {
            table.stats.tls_handshakes_failed.load(Ordering::Relaxed) == 3
        })
        .await;
        assert_eq!(table.stats.tls_handshakes.load(Ordering::Relaxed), 1);
        wait_for("only the silent peers left", || {
            table.stats.connections_open.load(Ordering::Relaxed) == 8
        })
        .await;
        drop(silent);
        wait_for("every slot freed", || {
            table.stats.connections_open.load(Ordering::Relaxed) == 0
        })
        .await;
        drop(c.pki);
    }

    /// A flood of connections on a full table evicts handshaking ones
    /// faster than their tasks are collected: the accept loop must refuse
    /// beyond its bound, never assert on it (an assert there would abort
    /// the replica in release builds; found by reading, the race is too
    /// narrow to force here). After the flood the port serves again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_evicted_handshakes_never_stops_the_accept_loop() {
        let (c, files) = certs("flood");
        let tls = ServerTls::load(files, ALPN_CLIENT_PORT).unwrap();
        let limits = ApiLimits {
            client_connections_max: 1,
            ..ApiLimits::default()
        };
        let table = ConnTable::new(&limits);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        serve_common_names(incoming(listener, table.clone()).with_tls(tls));
        let good = connector(&c.ca_pem, Some(&c.client));
        for _round in 0..5 {
            let mut flood = Vec::new();
            for _ in 0..300 {
                if let Ok(s) = TcpStream::connect(addr).await {
                    flood.push(s);
                }
            }
            drop(flood);
        }
        // The loop still serves: a real client gets through (the table
        // frees as the flood's connections close).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match tls_read(addr, &good).await {
                Ok(line) => {
                    assert_eq!(line, "root\n");
                    break;
                }
                Err(e) => assert!(Instant::now() < deadline, "never served again: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(c.pki);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_handshake_holds_a_slot_is_evicted_as_idle_and_times_out_idle() {
        let (c, files) = certs("slots");
        let tls = ServerTls::load(files, ALPN_CLIENT_PORT).unwrap();
        let limits = ApiLimits {
            client_connections_max: 1,
            client_idle_timeout: Duration::from_millis(300),
            ..ApiLimits::default()
        };
        let table = ConnTable::new(&limits);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        serve_common_names(incoming(listener, table.clone()).with_tls(tls));

        // A silent handshaker fills the only slot; a real client evicts it.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        wait_for("the silent peer admitted", || {
            table.stats.connections_accepted.load(Ordering::Relaxed) == 1
        })
        .await;
        let good = connector(&c.ca_pem, Some(&c.client));
        assert_eq!(tls_read(addr, &good).await.as_deref(), Ok("root\n"));
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
        assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "evicted: {n:?}");
        assert_eq!(table.stats.connections_evicted.load(Ordering::Relaxed), 1);

        // Alone, a silent handshaker is closed at the idle timeout.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
        assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "closed idle: {n:?}");
        assert!(started.elapsed() >= Duration::from_millis(250));
        wait_for("the slot freed", || {
            table.stats.connections_open.load(Ordering::Relaxed) == 0
        })
        .await;
        assert!(table.stats.connections_idle_closed.load(Ordering::Relaxed) >= 1);
    }
}
