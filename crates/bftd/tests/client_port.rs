//! Issue 7 finding 8: the client port under connection and stream floods.
//! A real 4-replica cluster on loopback; the flood goes at replica 0 while
//! etcdctl keeps working against it.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bftd::config::Durability;
use common::*;

/// Raises this process's soft open-files limit to `want` (or the hard
/// limit); returns the soft limit afterwards.
fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one rlimit on our stack.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    lim.rlim_cur
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

fn pid(c: &Cluster, i: u16) -> u32 {
    c.children[i as usize].as_ref().expect("running").id()
}

/// Whether the server closed `s` (EOF or reset), without blocking.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// Before: idle connections piled up to the fd limit, the accept loop spun
/// on EMFILE and the next checkpoint write aborted the replica. Now at most
/// `client_connections_max` (4096) stay open (the oldest idle ones are
/// evicted), the replica's descriptors stay bounded, and a new client is
/// served while the flood is still connected.
#[test]
fn five_thousand_idle_client_connections_leave_the_replica_serving() {
    const FLOOD: usize = 5000;
    assert!(raise_nofile(FLOOD as u64 + 1000) >= FLOOD as u64 + 1000);
    let c = Cluster::start_with(
        "clientport-idle",
        Opts {
            durability: Durability::Memory,
            ..Opts::new(4)
        },
    );
    let ep = c.endpoints();
    let target = c.client_addr(0);
    let p0 = pid(&c, 0);
    let fds_before = open_fds(p0);
    ok_etcdctl(&ep[0], &["put", "before", "1"]);

    let started = Instant::now();
    let mut flood = Vec::with_capacity(FLOOD);
    for i in 0..FLOOD {
        let s = TcpStream::connect_timeout(&target, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        s.set_nonblocking(true).unwrap();
        flood.push(s);
    }
    eprintln!("{FLOOD} connections in {:?}", started.elapsed());

    // The oldest idle connections are evicted: wait until at least the
    // excess over the limit is closed by the server.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut closed = 0;
    while Instant::now() < deadline {
        closed = flood
            .iter_mut()
            .map(closed_by_server)
            .filter(|&c| c)
            .count();
        if closed >= FLOOD - 4096 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        closed >= FLOOD - 4096,
        "only {closed} closed by the replica"
    );
    let fds = open_fds(p0);
    assert!(
        fds <= fds_before + 4096 + 64,
        "replica holds {fds} descriptors (before the flood: {fds_before})"
    );

    // Still serving, with the flood connected: the new connections evict
    // idle ones.
    assert_eq!(ok_etcdctl(&ep[0], &["put", "during", "2"]).trim(), "OK");
    assert_eq!(ok_etcdctl(&ep[0], &["get", "during"]), "during\n2\n");
    assert_eq!(ok_etcdctl(&ep[0], &["get", "before"]), "before\n1\n");
    assert_eq!(
        http_get(c.config.replicas[0].http_addr, "/healthz").trim(),
        "ok"
    );

    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(p0) > fds_before + 64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(open_fds(p0) <= fds_before + 64, "descriptors released");
    assert_eq!(ok_etcdctl(&ep[0], &["get", "during"]), "during\n2\n");
}

/// Before: 100 streams on one connection, each declaring a 2 MB gRPC
/// message and sending 1.5 MB of it, held ~190 MB at the replica. Now each
/// message is charged its declared length against a per-connection budget
/// (16 MiB) as soon as its prefix arrives; streams over it fail with
/// ResourceExhausted, and the replica's RSS grows by far less than the
/// bytes sent.
#[test]
fn a_hundred_half_sent_streams_leave_memory_bounded() {
    const STREAMS: usize = 100;
    const DECLARED: u32 = 2_000_000;
    const SENT: usize = 1_500_000;
    let c = Cluster::start_with(
        "clientport-streams",
        Opts {
            durability: Durability::Memory,
            ..Opts::new(4)
        },
    );
    let ep = c.endpoints();
    let target = c.client_addr(0);
    let p0 = pid(&c, 0);
    ok_etcdctl(&ep[0], &["put", "before", "1"]);
    let rss_before = rss_kib(p0);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (exhausted, rss_peak) = rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(target).await.unwrap();
        let (client, conn) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .handshake::<_, bytes::Bytes>(tcp)
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut client = client.ready().await.unwrap();
        let mut responses = Vec::new();
        let mut senders = Vec::new();
        for _ in 0..STREAMS {
            let req = http::Request::post(format!("http://{target}/etcdserverpb.KV/Put"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .unwrap();
            client = client.ready().await.unwrap();
            let (resp, mut send) = client.send_request(req, false).unwrap();
            let mut data = Vec::with_capacity(5 + SENT);
            data.push(0);
            data.extend_from_slice(&DECLARED.to_be_bytes());
            // A PutRequest would start with field 1 (key); the bytes past
            // the prefix never reach prost anyway.
            data.resize(5 + SENT, 0x41);
            let _ = send.send_data(data.into(), false);
            responses.push(resp);
            senders.push(send);
        }
        // Streams over the budget are answered (grpc-status 8) at once;
        // the ones within it wait for the rest of their message.
        let mut tasks = tokio::task::JoinSet::new();
        for resp in responses {
            tasks.spawn(async move {
                let Ok(r) = resp.await else { return false };
                let in_headers = r.headers().get("grpc-status").cloned();
                let status = match in_headers {
                    Some(s) => Some(s),
                    None => {
                        let mut body = r.into_body();
                        body.trailers()
                            .await
                            .ok()
                            .flatten()
                            .and_then(|t| t.get("grpc-status").cloned())
                    }
                };
                status.is_some_and(|s| s == "8")
            });
        }
        let mut exhausted = 0;
        let mut rss_peak = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while exhausted < STREAMS - 16 && tokio::time::Instant::now() < deadline {
            rss_peak = rss_peak.max(rss_kib(p0));
            match tokio::time::timeout_at(deadline, tasks.join_next()).await {
                Ok(Some(Ok(true))) => exhausted += 1,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        for _ in 0..10 {
            rss_peak = rss_peak.max(rss_kib(p0));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(senders);
        tasks.abort_all();
        (exhausted, rss_peak)
    });
    eprintln!("{exhausted} streams over budget; RSS {rss_before} KiB before, {rss_peak} KiB peak");
    assert!(
        exhausted >= STREAMS - 16,
        "only {exhausted} of {STREAMS} streams failed with ResourceExhausted"
    );
    assert!(
        rss_peak < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_peak} KiB"
    );
    assert_eq!(ok_etcdctl(&ep[0], &["put", "after", "2"]).trim(), "OK");
    assert_eq!(ok_etcdctl(&ep[0], &["get", "after"]), "after\n2\n");
}
