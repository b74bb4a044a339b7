//! Issue 9 part 3: etcd's JSON gateway on the client port of a real
//! 4-replica cluster, over plain HTTP/1.1 as curl, etcd3gw and Patroni
//! speak it (`POST /v3/kv/put` with base64 bytes and int64 strings), and
//! etcdctl's gRPC on the same port.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bftd::config::Durability;
use common::*;
use serde_json::Value;

const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// `s` in base64 (standard alphabet, padded), as etcd's gateway wants bytes.
fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in s.as_bytes().chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to the client port");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

fn write_post(
    s: &mut TcpStream,
    addr: SocketAddr,
    path: &str,
    body: &str,
    close: bool,
    token: Option<&str>,
) {
    let conn = if close { "Connection: close\r\n" } else { "" };
    let auth = token.map_or(String::new(), |t| format!("Authorization: {t}\r\n"));
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{conn}{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
}

/// POSTs `body` to `path`; the status code and the JSON answer.
fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    post_as(addr, path, body, None)
}

/// [`post`] with etcd's `Authorization` header (a token from
/// `/v3/auth/authenticate`).
fn post_as(addr: SocketAddr, path: &str, body: &str, token: Option<&str>) -> (u16, Value) {
    let mut s = connect(addr);
    write_post(&mut s, addr, path, body, true, token);
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the answer");
    let i = out.find("\r\n\r\n").expect("an HTTP answer");
    let (head, rest) = out.split_at(i + 4);
    let code: u16 = head[9..12].parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {head}{body}"));
    (code, v)
}

fn ok(addr: SocketAddr, path: &str, body: &str) -> Value {
    let (code, v) = post(addr, path, body);
    assert_eq!(code, 200, "{path} {body}: {v}");
    v
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some(i) = s.find("\r\n") {
        let len = usize::from_str_radix(s[..i].trim(), 16).expect("chunk size");
        if len == 0 {
            break;
        }
        out.push_str(&s[i + 2..i + 2 + len]);
        s = &s[i + 2 + len + 2..];
    }
    out
}

/// A `/v3/watch` stream: the request is sent, lines are read as they come.
struct WatchStream {
    reader: BufReader<TcpStream>,
}

impl WatchStream {
    fn open(addr: SocketAddr, create: &str) -> Self {
        let mut s = connect(addr);
        write_post(&mut s, addr, "/v3/watch", create, false, None);
        let mut reader = BufReader::new(s);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        Self { reader }
    }

    /// The next `{"result":...}` object, within `IO_TIMEOUT` (chunk-size
    /// lines and headers are skipped).
    fn next_result(&mut self) -> Value {
        let deadline = Instant::now() + IO_TIMEOUT;
        while Instant::now() < deadline {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .expect("read the watch stream");
            assert!(n > 0, "the watch stream ended");
            if line.starts_with('{') {
                let v: Value = serde_json::from_str(line.trim_end()).unwrap();
                assert!(v.get("error").is_none(), "{v}");
                return v["result"].clone();
            }
        }
        panic!("no watch response within {IO_TIMEOUT:?}");
    }
}

#[test]
fn the_json_gateway_serves_kv_watch_lease_status_and_members_beside_grpc() {
    let c = Cluster::start_with(
        "gateway",
        Opts {
            durability: Durability::Memory,
            ..Opts::new(4)
        },
    );
    let a: Vec<SocketAddr> = (0..4).map(|i| c.client_addr(i)).collect();
    let (foo, bar, baz) = (b64("foo"), b64("bar"), b64("baz"));

    // A watcher on replica 1 before anything is written.
    let mut watch = WatchStream::open(
        a[1],
        &format!(r#"{{"create_request":{{"key":"{foo}","prev_kv":true}}}}"#),
    );
    assert_eq!(watch.next_result()["created"], true);

    // put on replica 0, range from replica 2 (and under /v3beta).
    let put = ok(
        a[0],
        "/v3/kv/put",
        &format!(r#"{{"key":"{foo}","value":"{bar}"}}"#),
    );
    let rev: i64 = put["header"]["revision"].as_str().unwrap().parse().unwrap();
    let range = ok(a[2], "/v3beta/kv/range", &format!(r#"{{"key":"{foo}"}}"#));
    assert_eq!(range["kvs"][0]["value"], bar, "{range}");
    assert_eq!(range["kvs"][0]["mod_revision"], rev.to_string());
    assert_eq!(range["count"], "1");

    // The watcher sees the put.
    let ev = watch.next_result();
    assert_eq!(ev["events"][0]["kv"]["key"], foo, "{ev}");
    assert_eq!(ev["events"][0]["kv"]["value"], bar, "{ev}");
    // The client goes away: the replica ends the watch stream.
    assert_eq!(c.metric(1, "bftd_watch_streams "), 1);
    drop(watch);
    let deadline = Instant::now() + IO_TIMEOUT;
    while c.metric(1, "bftd_watch_streams ") != 0 {
        assert!(
            Instant::now() < deadline,
            "the watch stream outlived its client"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // txn on replica 3: compare the value, put on success.
    let txn = ok(
        a[3],
        "/v3/kv/txn",
        &format!(
            r#"{{"compare":[{{"key":"{foo}","result":"EQUAL","target":"VALUE","value":"{bar}"}}],
                "success":[{{"request_put":{{"key":"{foo}","value":"{baz}"}}}}],
                "failure":[{{"request_range":{{"key":"{foo}"}}}}]}}"#
        ),
    );
    assert_eq!(txn["succeeded"], true, "{txn}");
    assert!(txn["responses"][0]["response_put"].is_object(), "{txn}");

    // gRPC on the same port: etcdctl reads the txn's value and writes.
    let ep = a[0].to_string();
    let got = ok_etcdctl(&ep, &["get", "foo", "--print-value-only"]);
    assert_eq!(got.trim(), "baz");
    ok_etcdctl(&ep, &["put", "zoo", "z"]);
    let range = ok(
        a[0],
        "/v3/kv/range",
        &format!(r#"{{"key":"{}"}}"#, b64("zoo")),
    );
    assert_eq!(range["kvs"][0]["value"], b64("z"));

    // deleterange with prev_kv.
    let del = ok(
        a[1],
        "/v3/kv/deleterange",
        &format!(r#"{{"key":"{foo}","prev_kv":true}}"#),
    );
    assert_eq!(del["deleted"], "1");
    assert_eq!(del["prev_kvs"][0]["value"], baz);
    let range = ok(a[1], "/v3/kv/range", &format!(r#"{{"key":"{foo}"}}"#));
    assert!(range.get("kvs").is_none(), "{range}");

    // Errors as etcd's gateway answers them; bad input changes nothing.
    let (code, e) = post(
        a[0],
        "/v3/kv/range",
        r#"{"key":"Zm9v","revision":"1000000"}"#,
    );
    assert_eq!(code, 400);
    assert_eq!(
        e["error"],
        "etcdserver: mvcc: required revision is a future revision"
    );
    assert_eq!(e["code"], 11);
    let before = c.wait_converged(Duration::from_secs(10)).0;
    let (code, e) = post(
        a[0],
        "/v3/kv/put",
        r#"{"key":"Zm9v","value":"not base64!"}"#,
    );
    assert_eq!((code, e["code"].as_i64()), (400, Some(3)), "{e}");
    let (code, _) = post(a[0], "/v3/kv/put", r#"{"key":"#);
    assert_eq!(code, 400);
    assert_eq!(c.wait_converged(Duration::from_secs(10)).0, before);

    // Leases: grant, a key on it, timetolive, revoke. TimeToLive and
    // Leases answer from the replica's own state (as etcd's members do),
    // so they are asked of the replica that made the change.
    let grant = ok(a[2], "/v3/lease/grant", r#"{"TTL":"60"}"#);
    let id = grant["ID"]
        .as_str()
        .expect("lease ID as a string")
        .to_string();
    assert_eq!(grant["TTL"], "60");
    ok(
        a[2],
        "/v3/kv/put",
        &format!(
            r#"{{"key":"{}","value":"{bar}","lease":"{id}"}}"#,
            b64("leased")
        ),
    );
    let ttl = ok(
        a[2],
        "/v3/lease/timetolive",
        &format!(r#"{{"ID":"{id}","keys":true}}"#),
    );
    assert_eq!(ttl["grantedTTL"], "60", "{ttl}");
    let left: i64 = ttl["TTL"].as_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&left), "{ttl}");
    assert_eq!(ttl["keys"][0], b64("leased"));
    let leases = ok(a[2], "/v3/lease/leases", "{}");
    assert_eq!(leases["leases"][0]["ID"], id);
    ok(a[2], "/v3/kv/lease/revoke", &format!(r#"{{"ID":"{id}"}}"#));
    let ttl = ok(
        a[2],
        "/v3/kv/lease/timetolive",
        &format!(r#"{{"ID":"{id}"}}"#),
    );
    assert_eq!(ttl["TTL"], "-1", "{ttl}");
    let range = ok(
        a[0],
        "/v3/kv/range",
        &format!(r#"{{"key":"{}"}}"#, b64("leased")),
    );
    assert!(range.get("kvs").is_none(), "{range}");
    let (code, e) = post(a[2], "/v3/lease/revoke", &format!(r#"{{"ID":"{id}"}}"#));
    assert_eq!((code, e["code"].as_i64()), (404, Some(5)), "{e}");

    // Status and members.
    let st = ok(a[1], "/v3/maintenance/status", "{}");
    assert_eq!(st["version"], "3.5.13");
    assert!(st["leader"].as_str().is_some_and(|l| l != "0"), "{st}");
    assert!(st["dbSize"].as_str().is_some(), "{st}");
    let members = ok(a[0], "/v3/cluster/member/list", "{}");
    let members = members["members"].as_array().unwrap();
    assert_eq!(members.len(), 4);
    assert!(members
        .iter()
        .all(|m| m["ID"].is_string() && m["clientURLs"].is_array()));

    // Auth through the gateway, as etcd's docs drive it with curl: the
    // token goes in the Authorization header.
    let (code, e) = post(
        a[0],
        "/v3/auth/authenticate",
        r#"{"name":"root","password":"x"}"#,
    );
    assert_eq!(
        (code, e["code"].as_i64()),
        (412, Some(9)),
        "auth is off: {e}"
    );
    ok(
        a[0],
        "/v3/auth/user/add",
        r#"{"name":"root","password":"rootpw"}"#,
    );
    ok(a[0], "/v3/auth/role/add", r#"{"name":"root"}"#);
    ok(
        a[0],
        "/v3/auth/user/grant",
        r#"{"user":"root","role":"root"}"#,
    );
    ok(a[0], "/v3/auth/enable", "{}");
    let (code, e) = post(a[1], "/v3/kv/put", r#"{"key":"YQ==","value":"MQ=="}"#);
    assert_eq!(
        (code, e["error"].as_str()),
        (400, Some("etcdserver: user name is empty")),
        "{e}"
    );
    let (code, e) = post(
        a[1],
        "/v3/auth/authenticate",
        r#"{"name":"root","password":"wrong"}"#,
    );
    assert_eq!(code, 400, "{e}");
    let token = ok(
        a[1],
        "/v3/auth/authenticate",
        r#"{"name":"root","password":"rootpw"}"#,
    )["token"]
        .as_str()
        .expect("a token")
        .to_string();
    let (code, e) = post_as(
        a[1],
        "/v3/kv/put",
        r#"{"key":"YQ==","value":"MQ=="}"#,
        Some(&token),
    );
    assert_eq!(code, 200, "{e}");
    // A token is known only to the replica that issued it.
    let (code, e) = post_as(
        a[2],
        "/v3/kv/put",
        r#"{"key":"YQ==","value":"MQ=="}"#,
        Some(&token),
    );
    assert_eq!(
        (code, e["error"].as_str()),
        (401, Some("etcdserver: invalid auth token")),
        "{e}"
    );
    let (code, e) = post_as(a[1], "/v3/auth/disable", "{}", Some(&token));
    assert_eq!(code, 200, "{e}");
    // etcdctl still works on every replica.
    let all = c.endpoints().join(",");
    let health = ok_etcdctl(&all, &["endpoint", "health"]);
    assert_eq!(health.matches("is healthy").count(), 4, "{health}");
}
