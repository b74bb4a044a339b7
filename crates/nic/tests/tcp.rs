//! TcpNic on 127.0.0.1, on both backends (epoll and io_uring): exchange,
//! restart, garbage, oversize, fairness, full buffers, the fault switch.
#![allow(clippy::needless_range_loop)] // replicas are indices

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use nic::{Io, RxPath, TcpNic, TxError, TxPath};
use rand::RngCore;
use wire::link::{self, ACCEPT_HELLO_LEN, CONFIRM_LEN};
use wire::SecretKey;

/// Runs each test body once per backend.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod epoll {
            $( #[test] fn $name() { super::$name(nic::Io::Epoll) } )*
        }
        mod uring {
            $( #[test] fn $name() { super::$name(nic::Io::Uring) } )*
        }
    };
}

both_backends!(
    four_replicas_exchange_every_pair_in_order,
    restarted_replica_reconnects_with_new_epoch,
    garbage_connections_are_closed_and_counted,
    udp_garbage_at_the_replica_port_changes_nothing,
    oversize_length_prefix_closes_the_link_without_allocating,
    a_flooding_peer_gets_only_its_budget_per_poll,
    full_transmit_buffer_refuses_without_blocking,
    slow_receiver_fills_the_buffer_then_gets_everything_sealed,
    fault_switch_partitions_and_heals,
    large_messages_cross_in_pieces,
    a_wake_returns_a_blocked_poll,
    a_replayed_hello_does_not_replace_the_live_link,
    idle_unauthenticated_sockets_do_not_keep_a_restarting_peer_out,
    an_idle_unauthenticated_socket_is_closed_at_the_handshake_deadline,
    a_frame_with_a_bad_tag_resets_the_link,
    a_reset_link_is_redialed_by_its_peer,
);

/// A HELLO (and the CONFIRM after it) captured from a past handshake of
/// replica 1 and replayed at replica 0: the replay meets a fresh challenge it
/// cannot answer, so it is closed, never authenticated, and the live link
/// from 1 stays up and keeps delivering.
fn a_replayed_hello_does_not_replace_the_live_link(io: Io) {
    let (c, mut nodes) = Cluster::start(4, io, |_| {});
    exchange_all_pairs(&mut nodes, 5);
    let live = nodes[0].inbox.current_epoch(r(1)).unwrap();
    let stats = nodes[0].rx.stats().clone();
    let failures = |label: &str| stats.snapshot().accept_failures(label);
    // What an eavesdropper saw of one real handshake 1 -> 0 (replica 0's
    // key answers it here, as replica 0 did then).
    let (hello, dialing) = link::dial(&c.ids[1], CLUSTER_ID, r(1), r(0));
    let (reply, _, _) = link::accept(&c.ids[0], &c.ring, r(0), &hello, 1 << 20).unwrap();
    let (_, confirm) = dialing.finish(&c.ring, &reply).unwrap();
    assert_eq!(confirm.len(), CONFIRM_LEN);

    // Replay of HELLO and CONFIRM together.
    let mut s = TcpStream::connect(c.addrs[0]).unwrap();
    s.write_all(&hello).unwrap();
    s.write_all(&confirm).unwrap();
    let mut challenge = [0u8; ACCEPT_HELLO_LEN];
    s.read_exact(&mut challenge).unwrap();
    assert_ne!(
        &challenge[..],
        &reply[..],
        "a fresh challenge, not the old reply"
    );
    assert_closed_by_peer(&mut s);
    assert_eq!(failures("bad_confirm"), 1);

    // Replay of the HELLO alone: it waits for a CONFIRM that never comes
    // and is closed at the handshake deadline.
    let mut s = TcpStream::connect(c.addrs[0]).unwrap();
    s.write_all(&hello).unwrap();
    assert_closed_by_peer(&mut s);
    assert_eq!(failures("timeout"), 1);

    // The live link was never touched and still carries traffic.
    exchange_all_pairs(&mut nodes, 5);
    let ib = &nodes[0].inbox;
    assert_eq!(ib.current_epoch(r(1)), Some(live));
    assert!(ib.downs.is_empty(), "{:?}", ib.downs);
    assert_eq!(ib.ups.len(), 3);
    assert_eq!(ib.from(r(1)).len(), 10);
    let snap = stats.snapshot();
    assert_eq!(snap.connections_replaced, 0);
    assert_eq!(snap.connections_accepted, 3, "a replay never authenticates");
}

/// Far more idle connections than pre-auth slots (16) on replica 0's port,
/// with a handshake deadline longer than the test: a restarting replica 3
/// still gets its link up, because newcomers evict the oldest
/// unauthenticated socket instead of being refused.
fn idle_unauthenticated_sockets_do_not_keep_a_restarting_peer_out(io: Io) {
    let (c, mut nodes) = Cluster::start(4, io, |c| c.handshake_timeout_ms = 120_000);
    wait_links_up(&mut nodes);
    let old = nodes[0].inbox.current_epoch(r(3)).unwrap();
    drop(nodes.pop().unwrap()); // replica 3 stops
    wait(&mut nodes, 0, "LinkDown of 3", |ib| {
        ib.downs.contains(&(r(3), old))
    });

    let stats = nodes[0].rx.stats().clone();
    let idle: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(c.addrs[0]).unwrap())
        .collect();
    // All 64 were accepted: 16 hold the slots, 48 were evicted.
    let deadline = Instant::now() + WAIT;
    while stats.snapshot().handshakes_evicted < 64 - 16 {
        assert!(Instant::now() < deadline, "{:?}", stats.snapshot());
        std::thread::yield_now();
    }

    let started = Instant::now();
    let listener = TcpListener::bind(c.addrs[3]).unwrap();
    let mut cfg = c.config(3);
    cfg.handshake_timeout_ms = 120_000;
    nodes.push(c.node(cfg, listener));
    wait(&mut nodes, 0, "LinkUp of the restarted 3", |ib| {
        ib.current_epoch(r(3)).is_some_and(|e| e > old)
    });
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "rescued by the deadline"
    );
    exchange_all_pairs(&mut nodes, 5);
    let snap = stats.snapshot();
    assert!(
        snap.handshakes_evicted > 64 - 16,
        "the peer evicted one too: {snap:?}"
    );
    assert_eq!(
        snap.accept_failures_total(),
        0,
        "evictions are not failures"
    );
    drop(idle);
}

/// An unauthenticated socket that sends nothing is closed at the handshake
/// deadline and frees its slot.
fn an_idle_unauthenticated_socket_is_closed_at_the_handshake_deadline(io: Io) {
    let (c, mut nodes) = Cluster::start(2, io, |c| c.handshake_timeout_ms = 300);
    wait_links_up(&mut nodes);
    let stats = nodes[0].rx.stats().clone();
    let started = Instant::now();
    let mut s = TcpStream::connect(c.addrs[0]).unwrap();
    assert_closed_by_peer(&mut s);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250), "closed early: {took:?}");
    assert!(took < Duration::from_secs(5), "closed late: {took:?}");
    assert_eq!(stats.snapshot().accept_failures("timeout"), 1);
    assert_eq!(stats.snapshot().handshakes_evicted, 0);
}

/// A frame whose tag does not verify (as the receiver finds when it opens
/// it) resets its link: LinkDown, the socket closed, `bad_frame_resets`
/// counted; the sender's later frames are not left stuck behind it, and a
/// fresh handshake delivers again.
fn a_frame_with_a_bad_tag_resets_the_link(io: Io) {
    // Replicas 0..3 run; the test speaks for replica 3 with its real key.
    let (c, listeners) = Cluster::bind(4, 3, io);
    let mut nodes: Vec<TcpNode> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| c.node(c.config(i), l))
        .collect();
    let (mut s, mut seal) = c.connect_as(3, 0);
    send_frame(&mut s, &mut seal, b"good", false);
    wait(&mut nodes, 0, "first frame from 3", |ib| {
        ib.from(r(3)).len() == 1
    });
    let epoch = nodes[0].inbox.current_epoch(r(3)).unwrap();
    send_frame(&mut s, &mut seal, b"tampered", true);
    send_frame(&mut s, &mut seal, b"after the bad one", false);
    wait(&mut nodes, 0, "LinkDown after the bad tag", |ib| {
        ib.downs.contains(&(r(3), epoch))
    });
    assert_closed_by_peer(&mut s);
    let snap = nodes[0].rx.stats().snapshot();
    assert_eq!(snap.peer(r(3)).bad_frame_resets, 1);
    assert_eq!(nodes[0].inbox.from(r(3)), vec![&b"good"[..]]);

    // The peer handshakes afresh and its frames open again.
    let (mut s, mut seal) = c.connect_as(3, 0);
    send_frame(&mut s, &mut seal, b"after the reset", false);
    wait(&mut nodes, 0, "frame on the new link", |ib| {
        ib.from(r(3)).len() == 2
    });
    assert!(nodes[0].inbox.current_epoch(r(3)).unwrap() > epoch);
    assert_eq!(nodes[0].inbox.from(r(3))[1], b"after the reset");
    // Resetting a link that is gone changes nothing.
    assert!(!nodes[0].rx.reset_link(r(3), epoch));
    assert!(!nodes[0].rx.reset_link(r(9), epoch));
    assert_eq!(
        nodes[0].rx.stats().snapshot().peer(r(3)).bad_frame_resets,
        1
    );
}

/// A link the receiver resets (what it does on a bad tag) is redialed by
/// the real peer at once, with a new handshake and epoch; messages sent
/// after the reset arrive.
fn a_reset_link_is_redialed_by_its_peer(io: Io) {
    let (_c, mut nodes) = Cluster::start(2, io, |_| {});
    exchange_all_pairs(&mut nodes, 3);
    let old = nodes[0].inbox.current_epoch(r(1)).unwrap();
    assert!(nodes[0].rx.reset_link(r(1), old));
    assert!(!nodes[0].rx.reset_link(r(1), old), "already resetting");
    wait(&mut nodes, 0, "new link from 1", |ib| {
        ib.downs.contains(&(r(1), old)) && ib.current_epoch(r(1)).is_some_and(|e| e > old)
    });
    flush_until(&mut nodes, "1 saw its link reset", |nodes| {
        nodes[1].tx.stats().snapshot().connections_reset >= 1
    });
    exchange_all_pairs(&mut nodes, 3);
    assert_eq!(
        nodes[0].rx.stats().snapshot().peer(r(1)).bad_frame_resets,
        1
    );
}

/// A waker makes a poll blocked with a long timeout return at once, even
/// when the wake came first (the control thread waits in the poll when the
/// dataplane runs inline).
fn a_wake_returns_a_blocked_poll(io: Io) {
    let (_c, mut nodes) = Cluster::start(4, io, |_| {});
    let mut rx = nodes.remove(0).rx;
    // Drain the link set-up events first.
    while rx.poll(64, 16, Duration::from_millis(100), &mut |_| {}) > 0 {}
    let waker = rx.waker();
    let started = Instant::now();
    let t = std::thread::spawn(move || {
        rx.poll(16, 4, Duration::from_secs(20), &mut |_| {});
        rx
    });
    waker.wake();
    let mut rx = t.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the wake was lost"
    );
    rx.waker().wake();
    let started = Instant::now();
    rx.poll(16, 4, Duration::from_secs(20), &mut |_| {});
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "an early wake was lost"
    );
}

/// Reads until the other side closes; panics if it stays open.
fn assert_closed_by_peer(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 512];
    for _ in 0..64 {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue, // e.g. a HELLO reply; keep reading
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                panic!("connection left open")
            }
            // A thread that owns an io_uring may see EINTR on blocking calls.
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return, // reset
        }
    }
    panic!("peer kept sending");
}

/// Flushes `node`'s sender until `done`, polling nobody; bounded by WAIT.
fn flush_until(nodes: &mut [TcpNode], what: &str, done: impl Fn(&[TcpNode]) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done(nodes) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        for n in nodes.iter_mut() {
            n.tx.flush();
        }
        std::thread::yield_now();
    }
}

fn four_replicas_exchange_every_pair_in_order(io: Io) {
    let (_c, mut nodes) = Cluster::start(4, io, |_| {});
    exchange_all_pairs(&mut nodes, 200);
    for (j, node) in nodes.iter().enumerate() {
        let s = node.rx.stats().snapshot();
        for i in (0..4).filter(|&i| i != j) {
            assert_eq!(s.peer(r(i)).rx_frames, 200);
            assert_eq!(s.peer(r(i)).tx_drops, 0);
            assert!(s.peer(r(i)).rx_bytes > 200 * 12);
        }
        assert_eq!(s.connections_dialed, 3);
        assert_eq!(s.connections_accepted, 3);
        assert_eq!(s.accept_failures_total(), 0);
        assert_eq!(node.inbox.unopened, 0);
        assert!(node.inbox.downs.is_empty());
    }
    // A broadcast seals one frame per link.
    let m = message(0, 9, 0, 64);
    assert_eq!(nodes[0].tx.send_all(&m), 3);
    for j in 1..4 {
        wait(&mut nodes, j, "broadcast", |ib| ib.from(r(0)).len() == 201);
        assert_eq!(nodes[j].inbox.from(r(0))[200], &m[..]);
    }
    let s = nodes[0].tx.stats().snapshot();
    for i in 1..4 {
        assert_eq!(s.peer(r(i)).tx_frames, 201, "counted once written");
        assert_eq!(s.peer(r(i)).tx_lost, 0);
    }
}

fn restarted_replica_reconnects_with_new_epoch(io: Io) {
    let (c, mut nodes) = Cluster::start(4, io, |_| {});
    exchange_all_pairs(&mut nodes, 20);
    let old: Vec<u64> = (0..3)
        .map(|j| nodes[j].inbox.current_epoch(r(3)).unwrap())
        .collect();

    drop(nodes.pop().unwrap()); // replica 3 stops: every socket closes
    for (j, &e) in old.iter().enumerate() {
        wait(&mut nodes, j, "LinkDown of the old epoch", |ib| {
            ib.downs.contains(&(r(3), e))
        });
    }
    // Each connector saw its link to 3 close (and told its send side).
    flush_until(&mut nodes, "links to 3 seen down", |nodes| {
        nodes
            .iter()
            .all(|n| n.tx.stats().snapshot().connections_reset >= 1)
    });
    // Messages to 3 while it is down wait unsealed and go on the new link.
    for j in 0..3 {
        nodes[j].tx.send(r(3), b"while you were out").unwrap();
    }

    let listener = TcpListener::bind(c.addrs[3]).unwrap();
    nodes.push(c.node(c.config(3), listener));
    wait(&mut nodes, 3, "messages queued while down", |ib| {
        (0..3).all(|i| ib.from(r(i)).len() == 1)
    });
    exchange_all_pairs(&mut nodes, 20);
    for j in 0..3 {
        let new = nodes[j].inbox.current_epoch(r(3)).unwrap();
        assert!(new > old[j], "new epoch {new} after {}", old[j]);
        assert_eq!(nodes[j].inbox.from(r(3)).len(), 40);
        assert_eq!(nodes[j].inbox.unopened, 0);
        assert!(nodes[j].tx.stats().snapshot().connections_reset >= 1);
    }
    assert_eq!(nodes[3].inbox.ups.len(), 3);
    assert_eq!(nodes[3].inbox.from(r(0))[0], b"while you were out");
}

fn garbage_connections_are_closed_and_counted(io: Io) {
    let (c, mut nodes) = Cluster::start(4, io, |_| {});
    wait_links_up(&mut nodes);
    let addr = c.addrs[0];
    let stats = nodes[0].rx.stats().clone();
    let failures = |label: &str| stats.snapshot().accept_failures(label);

    // Random bytes, longer than a HELLO.
    let mut junk = vec![0u8; 300];
    rand::thread_rng().fill_bytes(&mut junk);
    junk[0] = b'X';
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&junk).unwrap();
    assert_closed_by_peer(&mut s);
    assert_eq!(failures("malformed"), 1);

    // An HTTP request.
    let mut s = TcpStream::connect(addr).unwrap();
    let http = format!("GET /v3/kv/range HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate, br\r\nContent-Length: 0\r\n\r\n");
    assert!(http.len() > wire::link::DIAL_HELLO_LEN);
    s.write_all(http.as_bytes()).unwrap();
    assert_closed_by_peer(&mut s);
    assert_eq!(failures("malformed"), 2);

    // A short request that never completes a HELLO: the handshake timeout.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_closed_by_peer(&mut s);
    assert_eq!(failures("timeout"), 1, "{:?}", stats.snapshot());

    // A HELLO trickled a byte at a time: the timeout bounds the whole
    // HELLO, not each read, so the slot is freed on time.
    let mut s = TcpStream::connect(addr).unwrap();
    let start = Instant::now();
    let (hello, _) = link::dial(&c.ids[1], CLUSTER_ID, r(1), r(0));
    for b in hello.iter() {
        if s.write_all(&[*b]).is_err() || start.elapsed() > Duration::from_secs(3) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20)); // pacing, not sync
        if failures("timeout") == 2 {
            break;
        }
    }
    assert_closed_by_peer(&mut s);
    assert_eq!(failures("timeout"), 2);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    // A few bytes, then the client hangs up.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"BFTD").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_closed_by_peer(&mut s);
    assert_eq!(failures("closed"), 1);

    // A well-formed HELLO claiming to be replica 1, signed by another key.
    let mut s = TcpStream::connect(addr).unwrap();
    let (hello, _) = link::dial(&SecretKey::from_seed([99; 32]), CLUSTER_ID, r(1), r(0));
    s.write_all(&hello).unwrap();
    assert_closed_by_peer(&mut s);
    assert_eq!(failures("bad_signature"), 1);

    // Replica 1's real key, but for another cluster.
    let mut s = TcpStream::connect(addr).unwrap();
    let (hello, _) = link::dial(&c.ids[1], CLUSTER_ID + 1, r(1), r(0));
    s.write_all(&hello).unwrap();
    assert_closed_by_peer(&mut s);
    assert_eq!(failures("wrong_cluster"), 1);

    // Nothing reached the receive side, and real traffic still flows.
    exchange_all_pairs(&mut nodes, 10);
    assert_eq!(nodes[0].inbox.ups.len(), 3);
    assert!(nodes[0].inbox.downs.is_empty());
    assert_eq!(nodes[0].inbox.unopened, 0);
    assert_eq!(stats.snapshot().accept_failures_total(), 7);
    assert_eq!(stats.snapshot().connections_replaced, 0);
    assert_eq!(stats.snapshot().connections_accepted, 3);
}

fn udp_garbage_at_the_replica_port_changes_nothing(io: Io) {
    let (c, mut nodes) = Cluster::start(4, io, |_| {});
    wait_links_up(&mut nodes);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut junk = [0u8; 1200];
    for _ in 0..200 {
        rand::thread_rng().fill_bytes(&mut junk);
        let _ = udp.send_to(&junk, c.addrs[0]); // ICMP unreachable is fine
    }
    exchange_all_pairs(&mut nodes, 10);
    let s = nodes[0].rx.stats().snapshot();
    assert_eq!(s.accept_failures_total(), 0);
    assert_eq!(s.connections_accepted, 3);
    assert_eq!(nodes[0].inbox.events, 3 + 30);
}

fn oversize_length_prefix_closes_the_link_without_allocating(io: Io) {
    // Replicas 0 and 1 run; the test speaks for replica 3 with its real key.
    let (c, listeners) = Cluster::bind(4, 2, io);
    let mut nodes: Vec<TcpNode> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let mut cfg = c.config(i);
            cfg.message_bytes_max = 4096;
            cfg.tx_buffer_bytes_max = 16 * 1024;
            c.node(cfg, l)
        })
        .collect();

    let (mut s, mut seal) = c.connect_as(3, 0);
    // One good frame first.
    send_frame(&mut s, &mut seal, b"hello from 3", false);
    wait(&mut nodes, 0, "frame from 3", |ib| ib.from(r(3)).len() == 1);
    assert_eq!(nodes[0].inbox.from(r(3))[0], b"hello from 3");
    // Then a length prefix just above the limit (the buffer holds exactly
    // one maximal frame; the length is checked before it is used).
    let limit = 4096 + wire::link::FRAME_OVERHEAD;
    s.write_all(&(limit as u32 + 1).to_be_bytes()).unwrap();
    let epoch = nodes[0].inbox.current_epoch(r(3)).unwrap();
    wait(&mut nodes, 0, "LinkDown of 3", |ib| {
        ib.downs.contains(&(r(3), epoch))
    });
    assert_closed_by_peer(&mut s);
    assert_eq!(nodes[0].rx.stats().snapshot().oversize_frames, 1);

    // And one of 4 GiB.
    let (mut s, _) = c.connect_as(3, 0);
    s.write_all(&u32::MAX.to_be_bytes()).unwrap();
    s.write_all(&[0u8; 1000]).unwrap();
    wait(&mut nodes, 0, "second LinkDown of 3", |ib| {
        ib.downs.len() == 2
    });
    assert_closed_by_peer(&mut s);
    assert_eq!(nodes[0].rx.stats().snapshot().oversize_frames, 2);
    assert_eq!(nodes[0].inbox.from(r(3)).len(), 1);

    exchange_all_pairs(&mut nodes, 10);
}

fn a_flooding_peer_gets_only_its_budget_per_poll(io: Io) {
    let (_c, mut nodes) = Cluster::start(4, io, |c| c.message_bytes_max = 4096);
    wait_links_up(&mut nodes);
    for k in 0..300 {
        nodes[1].tx.send(r(0), &message(1, 0, k, 100)).unwrap();
    }
    for i in 2..4 {
        for k in 0..3 {
            nodes[i].tx.send(r(0), &message(i, 0, k, 100)).unwrap();
        }
    }
    // Every frame is in replica 0's sockets before it polls.
    flush_until(&mut nodes, "all frames written", |nodes| {
        let written = |i: usize| nodes[i].tx.stats().snapshot().peer(r(0)).tx_frames;
        written(1) == 300 && written(2) == 3 && written(3) == 3
    });
    let budget = 5;
    let deadline = Instant::now() + WAIT;
    let mut from1_when_others_done = None;
    while nodes[0].inbox.messages.len() < 306 {
        assert!(Instant::now() < deadline, "frames did not all arrive");
        let before: Vec<usize> = (0..4).map(|p| nodes[0].inbox.from(r(p)).len()).collect();
        let node = &mut nodes[0];
        node.inbox
            .poll(&mut node.rx, budget, Duration::from_millis(5));
        for p in 1..4 {
            let got = nodes[0].inbox.from(r(p)).len() - before[p];
            assert!(got <= budget, "peer {p} got {got} frames in one poll");
        }
        let ib = &nodes[0].inbox;
        if from1_when_others_done.is_none() && ib.from(r(2)).len() == 3 && ib.from(r(3)).len() == 3
        {
            from1_when_others_done = Some(ib.from(r(1)).len());
        }
    }
    // The flood did not delay the others by more than a few polls.
    let from1 = from1_when_others_done.expect("others served");
    assert!(
        from1 <= 5 * budget,
        "others waited for {from1} frames of the flood"
    );
    assert!(
        nodes[0]
            .rx
            .stats()
            .snapshot()
            .peer(r(1))
            .rx_budget_exhausted
            >= 1
    );
    assert_eq!(nodes[0].inbox.unopened, 0);
}

fn full_transmit_buffer_refuses_without_blocking(io: Io) {
    // Peer 1 never answers: its link never comes up, messages wait
    // unsealed in a bounded queue.
    let (c, listeners) = Cluster::bind(2, 1, io);
    let mut cfg = c.config(0);
    cfg.tx_queue_messages_max = 4;
    let nic = TcpNic::start_with_listener(cfg, listeners.into_iter().next().unwrap(), io).unwrap();
    let mut tx = nic.tx;
    let m = message(0, 1, 0, 64);
    for _ in 0..4 {
        tx.send(r(1), &m).unwrap();
    }
    let start = Instant::now();
    for _ in 0..1000 {
        assert_eq!(tx.send(r(1), &m), Err(TxError::QueueFull(r(1))));
        tx.flush();
    }
    assert!(start.elapsed() < Duration::from_secs(1), "send blocked");
    assert_eq!(tx.stats().snapshot().peer(r(1)).tx_drops, 1000);
    assert_eq!(tx.send(r(0), &m), Err(TxError::ToSelf));
    assert_eq!(tx.send(r(7), &m), Err(TxError::UnknownPeer(r(7))));
    let big = vec![0u8; (1 << 20) + 1];
    assert!(matches!(tx.send(r(1), &big), Err(TxError::TooLarge { .. })));
    drop(nic.rx);
}

fn slow_receiver_fills_the_buffer_then_gets_everything_sealed(io: Io) {
    let (_c, mut nodes) = Cluster::start(2, io, |c| {
        c.message_bytes_max = 4096;
        c.tx_buffer_bytes_max = 2 * (4 + 4096 + wire::link::FRAME_OVERHEAD);
    });
    wait_links_up(&mut nodes);
    // Replica 1 does not poll: its socket, then ours, then the write buffer
    // fill up; send refuses at once and nothing sealed is lost.
    let mut accepted = 0;
    let start = Instant::now();
    for k in 0..100_000 {
        let m = message(0, 1, k, 4000);
        match nodes[0].tx.send(r(1), &m) {
            Ok(()) => accepted += 1,
            Err(TxError::QueueFull(_)) => break,
            Err(e) => panic!("{e}"),
        }
        nodes[0].tx.flush();
        assert_eq!(k, accepted - 1, "refused only once full");
    }
    assert!(accepted < 100_000, "the buffers never filled");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(nodes[0].tx.stats().snapshot().peer(r(1)).tx_drops, 1);
    wait(&mut nodes, 1, "every accepted message", |ib| {
        ib.from(r(0)).len() == accepted
    });
    for (k, got) in nodes[1].inbox.from(r(0)).iter().enumerate() {
        assert_eq!(*got, &message(0, 1, k, 4000)[..], "#{k}");
    }
    assert_eq!(nodes[0].tx.stats().snapshot().peer(r(1)).tx_lost, 0);
}

fn fault_switch_partitions_and_heals(io: Io) {
    let (_c, mut nodes) = Cluster::start(4, io, |_| {});
    exchange_all_pairs(&mut nodes, 5);
    let e10 = nodes[1].inbox.current_epoch(r(0)).unwrap();
    let e01 = nodes[0].inbox.current_epoch(r(1)).unwrap();
    nodes[0].tx.set_blocked(&[r(1)]);
    nodes[1].rx.set_blocked(&[r(0)]); // one switch for both sides
    assert_eq!(
        nodes[0].tx.send(r(1), &message(0, 1, 0, 20)),
        Err(TxError::Blocked(r(1)))
    );
    assert_eq!(
        nodes[1].tx.send(r(0), &message(1, 0, 0, 20)),
        Err(TxError::Blocked(r(0)))
    );
    wait(&mut nodes, 1, "LinkDown from 0", |ib| {
        ib.downs.contains(&(r(0), e10))
    });
    wait(&mut nodes, 0, "LinkDown from 1", |ib| {
        ib.downs.contains(&(r(1), e01))
    });
    // Both connectors saw their outbound link closed by the other side (a
    // message sealed before that is written into a half-closed socket and
    // lost, as with any TCP peer that goes away).
    flush_until(&mut nodes, "links 0 <-> 1 seen down", |nodes| {
        (0..2).all(|i| nodes[i].tx.stats().snapshot().connections_reset >= 1)
    });
    // The rest of the cluster is unaffected.
    nodes[0].tx.send(r(2), &message(0, 2, 5, 20)).unwrap();
    wait(&mut nodes, 2, "0 -> 2 during the partition", |ib| {
        ib.from(r(0)).len() == 6
    });
    assert!(nodes[0].tx.stats().snapshot().peer(r(1)).fault_drops >= 1);

    nodes[0].tx.set_blocked(&[]);
    nodes[1].tx.set_blocked(&[]);
    exchange_all_pairs(&mut nodes, 5);
    assert!(nodes[1].inbox.current_epoch(r(0)).unwrap() > e10);
    assert!(nodes[0].inbox.current_epoch(r(1)).unwrap() > e01);
}

fn large_messages_cross_in_pieces(io: Io) {
    // Frames larger than a socket buffer: several reads per frame, several
    // flushes per write buffer.
    let (_c, mut nodes) = Cluster::start(2, io, |c| {
        c.message_bytes_max = 4 << 20;
        c.tx_buffer_bytes_max = 2 * (4 + c.frame_bytes_max());
    });
    let big: Vec<Vec<u8>> = (0..6)
        .map(|k| message(0, 1, k, (3 << 20) + k * 977))
        .collect();
    for m in &big {
        // The buffer holds two maximal frames: flush until each fits.
        let deadline = Instant::now() + WAIT;
        // Each iteration flushes and polls the receiver a little.
        while nodes[0].tx.send(r(1), m).is_err() {
            assert!(Instant::now() < deadline);
            nodes[0].tx.flush();
            let node = &mut nodes[1];
            node.inbox.poll(&mut node.rx, 64, Duration::from_millis(1));
        }
    }
    wait(&mut nodes, 1, "big messages", |ib| ib.from(r(0)).len() == 6);
    for (k, got) in nodes[1].inbox.from(r(0)).iter().enumerate() {
        assert_eq!(*got, &big[k][..], "#{k}");
    }
    assert_eq!(nodes[0].tx.stats().snapshot().peer(r(1)).tx_lost, 0);
}

#[test]
fn io_uring_is_used_where_the_kernel_offers_it() {
    let (c, listeners) = Cluster::bind(2, 1, Io::Uring);
    let nic = TcpNic::start_with_listener(
        c.config(0),
        listeners.into_iter().next().unwrap(),
        Io::Uring,
    )
    .unwrap();
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim() != "0")
        .unwrap_or(false);
    if !disabled {
        assert_eq!(nic.io(), Io::Uring);
    }
    assert_eq!("epoll".parse::<Io>(), Ok(Io::Epoll));
    assert_eq!("uring".parse::<Io>(), Ok(Io::Uring));
    assert!("dpdk".parse::<Io>().is_err());
}

#[test]
fn bind_error_names_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let (c, _) = Cluster::bind(4, 0, Io::Epoll);
    let mut cfg = c.config(0);
    cfg.listen = taken.local_addr().unwrap();
    let err = TcpNic::start(cfg, Io::Epoll).err().expect("port in use");
    let text = err.to_string();
    assert!(
        text.contains(&taken.local_addr().unwrap().to_string()),
        "{text}"
    );
    assert!(text.contains("in use"), "{text}");

    let mut cfg = c.config(0);
    cfg.identity = c.ids[1].clone();
    let err = TcpNic::start(cfg, Io::Epoll).err().expect("wrong identity");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);

    let mut cfg = c.config(0);
    cfg.tx_buffer_bytes_max = 100;
    let err = TcpNic::start(cfg, Io::Epoll)
        .err()
        .expect("buffer below a frame");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}
