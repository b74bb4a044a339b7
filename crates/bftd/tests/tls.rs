//! Issue 9 part 1: TLS on the client port as etcd configures it. A real
//! 4-replica cluster with mutual TLS (`[client_tls]`, certificates from
//! `bftd::certs`), driven by etcdctl 3.4 with `--cacert --cert --key`:
//! the commands of the etcdctl, watch and lease tests work; a client
//! without a certificate, with one from another CA, or in plaintext is
//! refused; a plaintext listener beside TLS serves; SIGHUP puts new
//! certificates in force for new connections without restarting the
//! replica, and a bad reload keeps the old ones.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bftd::certs::{replica_sans, write_pem, Ca};
use bftd::config::{ClientTls, ClusterConfig, Durability};
use common::*;

/// etcdctl's TLS flags for a client certificate.
#[derive(Clone)]
struct Creds(Vec<String>);

impl Creds {
    fn new(cacert: &Path, cert: Option<(&Path, &Path)>) -> Self {
        let mut v = vec![format!("--cacert={}", cacert.display())];
        if let Some((cert, key)) = cert {
            v.push(format!("--cert={}", cert.display()));
            v.push(format!("--key={}", key.display()));
        }
        Creds(v)
    }

    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        self.0
            .iter()
            .map(String::as_str)
            .chain(args.iter().copied())
            .collect()
    }
}

fn https(eps: &[String]) -> Vec<String> {
    eps.iter().map(|e| format!("https://{e}")).collect()
}

fn ctl(ep: &str, creds: &Creds, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    etcdctl(ep, &creds.args(args), stdin)
}

fn ok_ctl(ep: &str, creds: &Creds, args: &[&str]) -> String {
    let (ok, out) = ctl(ep, creds, args, None);
    assert!(ok, "etcdctl {args:?} over TLS failed: {out}");
    out
}

/// Writes a CA, per-replica server certificates and client certificates
/// into `<dir>/tls` and turns mutual TLS on in `cfg`; returns the CA's
/// directory layout.
fn mutual_tls(cfg: &mut ClusterConfig, http_tls: bool) {
    let dir = cfg.base_dir.join("tls");
    let ca = Ca::generate("bftd test CA").unwrap();
    write_pem(&dir.join("ca.pem"), &ca.cert_pem, false).unwrap();
    for i in 0..cfg.n() as u16 {
        let s = ca
            .server(&format!("bftd-{i}"), &replica_sans(cfg, i))
            .unwrap();
        write_pem(&dir.join(format!("replica-{i}.pem")), &s.cert_pem, false).unwrap();
        write_pem(&dir.join(format!("replica-{i}-key.pem")), &s.key_pem, true).unwrap();
    }
    let c = ca.client("root").unwrap();
    write_pem(&dir.join("client.pem"), &c.cert_pem, false).unwrap();
    write_pem(&dir.join("client-key.pem"), &c.key_pem, true).unwrap();
    let a = ca.client("alice").unwrap();
    write_pem(&dir.join("alice.pem"), &a.cert_pem, false).unwrap();
    write_pem(&dir.join("alice-key.pem"), &a.key_pem, true).unwrap();
    // A client certificate with the same name from another CA.
    let other = Ca::generate("another CA").unwrap();
    let f = other.client("root").unwrap();
    write_pem(&dir.join("foreign.pem"), &f.cert_pem, false).unwrap();
    write_pem(&dir.join("foreign-key.pem"), &f.key_pem, true).unwrap();
    cfg.client_tls = ClientTls {
        cert_file: "tls/replica-{id}.pem".into(),
        key_file: "tls/replica-{id}-key.pem".into(),
        trusted_ca_file: "tls/ca.pem".into(),
        client_cert_auth: true,
        http_tls,
    };
}

fn tls_dir(c: &Cluster) -> PathBuf {
    c.dir.join("tls")
}

fn good(c: &Cluster) -> Creds {
    let d = tls_dir(c);
    Creds::new(
        &d.join("ca.pem"),
        Some((&d.join("client.pem"), &d.join("client-key.pem"))),
    )
}

fn opts() -> Opts {
    Opts {
        durability: Durability::Memory,
        ..Opts::new(4)
    }
}

#[test]
fn etcdctl_over_mutual_tls_serves_every_command_and_refuses_untrusted_clients() {
    let plain_port = free_ports(1)[0];
    let c = Cluster::start_configured("tls", opts(), |cfg| {
        mutual_tls(cfg, false);
        cfg.replicas[3].client_plain_addr = Some(([127, 0, 0, 1], plain_port).into());
    });
    let ep = https(&c.endpoints());
    let all = ep.join(",");
    let creds = good(&c);

    // KV, txn, compaction.
    assert_eq!(ok_ctl(&ep[0], &creds, &["put", "foo", "bar"]).trim(), "OK");
    assert_eq!(ok_ctl(&ep[3], &creds, &["get", "foo"]), "foo\nbar\n");
    // The JSON gateway shares the port, and its TLS (curl: HTTP/1.1 by ALPN).
    let d = tls_dir(&c);
    let (ca, cert, key) = (
        d.join("ca.pem"),
        d.join("client.pem"),
        d.join("client-key.pem"),
    );
    let (ok, out) = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "-X",
        "POST",
        &format!("{}/v3/kv/range", ep[2]),
        "-d",
        r#"{"key":"Zm9v"}"#,
    ]);
    assert!(
        ok && out.contains(r#""value":"YmFy""#),
        "gateway over TLS: {out}"
    );
    let (ok, out) = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "-X",
        "POST",
        &format!("{}/v3/kv/range", ep[2]),
        "-d",
        r#"{"key":"Zm9v"}"#,
    ]);
    assert!(!ok, "the gateway without a client certificate: {out}");
    ok_ctl(&ep[2], &creds, &["put", "foo2", "baz"]);
    assert_eq!(
        ok_ctl(&ep[1], &creds, &["get", "--prefix", "foo"]),
        "foo\nbar\nfoo2\nbaz\n"
    );
    let (ok, out) = ctl(
        &ep[1],
        &creds,
        &["txn"],
        Some("value(\"foo\") = \"bar\"\n\nput foo qux\n\nput foo nope\n\n"),
    );
    assert!(ok && out.starts_with("SUCCESS"), "{out}");
    assert_eq!(
        ok_ctl(&ep[0], &creds, &["get", "foo", "--print-value-only"]).trim(),
        "qux"
    );
    assert_eq!(
        ok_ctl(&ep[3], &creds, &["del", "foo2", "--prev-kv"]),
        "1\nfoo2\nbaz\n"
    );
    ok_ctl(&ep[0], &creds, &["compact", "2"]);
    let (ok, out) = ctl(&ep[0], &creds, &["get", "foo", "--rev=1"], None);
    assert!(
        !ok && out.contains("required revision has been compacted"),
        "{out}"
    );

    // Watch: an event put through another replica.
    let mut argv = creds.args(&["watch", "w"]);
    let watch = EtcdctlChild::spawn(&ep[2], &argv);
    let deadline = Instant::now() + Duration::from_secs(20);
    // The watcher is created asynchronously: put until it sees one.
    let mut seen = Vec::new();
    for i in 0..100 {
        ok_ctl(&ep[1], &creds, &["put", "w", &format!("v{i}")]);
        if let Some(l) = watch.next_line(Duration::from_millis(200)) {
            seen.push(l);
            break;
        }
        assert!(Instant::now() < deadline, "no watch event over TLS");
    }
    assert_eq!(seen, vec!["PUT".to_string()]);
    drop(watch);

    // Leases and a lock.
    let out = ok_ctl(&ep[0], &creds, &["lease", "grant", "60"]);
    let id = out.split_whitespace().nth(1).expect(&out).to_string();
    ok_ctl(
        &ep[1],
        &creds,
        &["put", &format!("--lease={id}"), "held", "v"],
    );
    let ttl = ok_ctl(&ep[2], &creds, &["lease", "timetolive", "--keys", &id]);
    assert!(ttl.contains("held"), "{ttl}");
    assert!(ok_ctl(&ep[3], &creds, &["lease", "list"]).contains(&id));
    ok_ctl(&ep[1], &creds, &["lease", "keep-alive", "--once", &id]);
    ok_ctl(&ep[0], &creds, &["lease", "revoke", &id]);
    assert_eq!(ok_ctl(&ep[0], &creds, &["get", "held"]), "");
    argv = creds.args(&["lock", "L", "echo", "in the lock"]);
    let (ok, out) = etcdctl(&ep[2], &argv, None);
    assert!(ok && out.contains("in the lock"), "{out}");

    // Admin commands.
    let status = ok_ctl(&all, &creds, &["endpoint", "status", "-w", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status.as_array().unwrap().len(), 4);
    let health = ok_ctl(&all, &creds, &["endpoint", "health"]);
    assert_eq!(health.matches("is healthy").count(), 4, "{health}");
    let members = ok_ctl(&ep[2], &creds, &["member", "list"]);
    for e in &ep {
        assert!(members.contains(e.as_str()), "https client URLs: {members}");
    }
    assert!(members.contains(&format!("http://127.0.0.1:{plain_port}")));
    // Alarms (the etcdctl tests' last commands): none raised, disarm is a
    // no-op.
    assert_eq!(ok_ctl(&ep[1], &creds, &["alarm", "list"]), "");
    assert_eq!(ok_ctl(&ep[1], &creds, &["alarm", "disarm"]), "");
    c.wait_converged(Duration::from_secs(10));
    let hashes = ok_ctl(&all, &creds, &["endpoint", "hashkv"]);
    let hashes: Vec<&str> = hashes
        .lines()
        .map(|l| l.rsplit(", ").next().unwrap())
        .collect();
    assert_eq!(hashes.len(), 4);
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");

    // Refused: no client certificate, another CA's, plaintext. Nothing
    // they sent is applied.
    let d = tls_dir(&c);
    let no_cert = Creds::new(&d.join("ca.pem"), None);
    let foreign = Creds::new(
        &d.join("ca.pem"),
        Some((&d.join("foreign.pem"), &d.join("foreign-key.pem"))),
    );
    let fast = ["--dial-timeout=2s", "--command-timeout=3s"];
    for (name, creds) in [("no certificate", &no_cert), ("another CA", &foreign)] {
        let args: Vec<&str> = fast
            .iter()
            .copied()
            .chain(["put", "refused", name])
            .collect();
        let (ok, out) = ctl(&ep[0], creds, &args, None);
        assert!(!ok, "{name}: a client with {name} was served: {out}");
    }
    let plain: Vec<String> = c.endpoints();
    let args: Vec<&str> = fast
        .iter()
        .copied()
        .chain(["put", "refused", "plain"])
        .collect();
    let (ok, out) = etcdctl(&plain[1], &args, None);
    assert!(!ok, "plaintext on the TLS port was served: {out}");
    assert_eq!(ok_ctl(&ep[0], &creds, &["get", "refused"]), "");
    // Both refusals at replica 0 are on its dashboard.
    assert!(c.metric(0, "bftd_client_tls_handshakes_failed_total") >= 2);
    assert!(c.metric(0, "bftd_client_tls_handshakes_total") >= 1);
    assert!(c.metric(0, "bftd_client_connections_accepted_total") >= 3);

    // The plaintext listener beside TLS serves the same store.
    let plain_ep = format!("127.0.0.1:{plain_port}");
    assert_eq!(
        ok_etcdctl(&plain_ep, &["get", "foo", "--print-value-only"]).trim(),
        "qux"
    );
    assert_eq!(ok_etcdctl(&plain_ep, &["put", "p", "1"]).trim(), "OK");
    assert_eq!(
        ok_ctl(&ep[0], &creds, &["get", "p", "--print-value-only"]).trim(),
        "1"
    );
}

fn pid(c: &Cluster, i: u16) -> u32 {
    c.children[i as usize].as_ref().expect("running").id()
}

fn sighup(c: &Cluster, i: u16) {
    // SAFETY: signalling a child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(pid(c, i) as i32, libc::SIGHUP) }, 0);
}

fn log_lines_with(c: &Cluster, i: u16, needle: &str) -> usize {
    std::fs::read_to_string(c.log_path(i))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Polls `cond` every 100 ms until it holds; panics after `timeout`.
fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn sighup_reloads_certificates_for_new_connections_without_restarting_the_replica() {
    let mut c = Cluster::start_configured("tls-hup", opts(), |cfg| mutual_tls(cfg, true));
    let ep = https(&c.endpoints());
    let d = tls_dir(&c);
    // The old clients keep trusting the first CA only (ca.pem is replaced
    // below).
    std::fs::copy(d.join("ca.pem"), d.join("ca-old.pem")).unwrap();
    let old = Creds::new(
        &d.join("ca-old.pem"),
        Some((&d.join("client.pem"), &d.join("client-key.pem"))),
    );
    ok_ctl(&ep[0], &old, &["put", "k", "before"]);

    // The status port is behind the same mutual TLS.
    let http = c.config.replicas[0].http_addr;
    let url = format!("https://{http}/status");
    let ca = d.join("ca.pem");
    let (cert, key) = (d.join("client.pem"), d.join("client-key.pem"));
    let (ca, cert, key) = (
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
    );
    let (ok, out) = curl(&["--cacert", ca, "--cert", cert, "--key", key, &url]);
    assert!(ok && out.contains("\"revision\""), "status over TLS: {out}");
    let (ok, out) = curl(&["--cacert", ca, &url]);
    assert!(!ok, "status without a client certificate: {out}");
    let (ok, out) = curl(&[&format!("http://{http}/status")]);
    assert!(
        !ok || !out.contains("\"revision\""),
        "plaintext status: {out}"
    );

    // A watch opened before the reload, with the old certificates.
    let argv = old.args(&["watch", "k"]);
    let watch = EtcdctlChild::spawn(&ep[0], &argv);
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0..100 {
        ok_ctl(&ep[1], &old, &["put", "k", &format!("warm{i}")]);
        if watch.next_line(Duration::from_millis(200)).is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no watch event before the reload"
        );
    }
    while watch.next_line(Duration::from_millis(200)).is_some() {}

    // A new CA: replica 0 gets a certificate from it and trusts only it.
    let pid_before = pid(&c, 0);
    let ca2 = Ca::generate("bftd test CA 2").unwrap();
    let s = ca2.server("bftd-0", &replica_sans(&c.config, 0)).unwrap();
    let new_dir = c.dir.join("tls2");
    write_pem(&new_dir.join("ca.pem"), &ca2.cert_pem, false).unwrap();
    let cl = ca2.client("root").unwrap();
    write_pem(&new_dir.join("client.pem"), &cl.cert_pem, false).unwrap();
    write_pem(&new_dir.join("client-key.pem"), &cl.key_pem, true).unwrap();
    let new = Creds::new(
        &new_dir.join("ca.pem"),
        Some((&new_dir.join("client.pem"), &new_dir.join("client-key.pem"))),
    );
    // The CA file is shared: replicas 1..3 read it only at their next SIGHUP.
    write_pem(&d.join("ca.pem"), &ca2.cert_pem, false).unwrap();
    write_pem(&d.join("replica-0.pem"), &s.cert_pem, false).unwrap();
    write_pem(&d.join("replica-0-key.pem"), &s.key_pem, true).unwrap();
    let (ok, _) = ctl(&ep[0], &new, &["--dial-timeout=2s", "get", "k"], None);
    assert!(!ok, "the new CA's client is refused before SIGHUP");
    sighup(&c, 0);
    wait_until("the reload logged", Duration::from_secs(10), || {
        log_lines_with(&c, 0, "TLS certificates reloaded") >= 2
    });
    // New connections: the client trusting only the new CA connects; one
    // trusting only the old CA does not.
    assert_eq!(
        ok_ctl(&ep[0], &new, &["get", "k", "--print-value-only"]).trim(),
        ok_ctl(&ep[1], &old, &["get", "k", "--print-value-only"]).trim()
    );
    let (ok, out) = ctl(
        &ep[0],
        &old,
        &["--dial-timeout=2s", "--command-timeout=3s", "get", "k"],
        None,
    );
    assert!(!ok, "the old CA's client after the reload: {out}");
    // Replicas that got no SIGHUP keep their certificates.
    ok_ctl(&ep[2], &old, &["get", "k"]);
    // The watch opened before the reload still gets events.
    ok_ctl(&ep[1], &old, &["put", "k", "after"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    while lines.len() < 3 && Instant::now() < deadline {
        if let Some(l) = watch.next_line(Duration::from_millis(200)) {
            lines.push(l);
        }
    }
    assert_eq!(lines, vec!["PUT", "k", "after"], "the open watch survived");
    // The status port reloaded too.
    let (ca2p, c2, k2) = (
        new_dir.join("ca.pem"),
        new_dir.join("client.pem"),
        new_dir.join("client-key.pem"),
    );
    let (ok, out) = curl(&[
        "--cacert",
        ca2p.to_str().unwrap(),
        "--cert",
        c2.to_str().unwrap(),
        "--key",
        k2.to_str().unwrap(),
        &url,
    ]);
    assert!(
        ok && out.contains("\"revision\""),
        "status with the new CA: {out}"
    );

    // A bad reload changes nothing.
    write_pem(&d.join("replica-0.pem"), "not a certificate", false).unwrap();
    sighup(&c, 0);
    wait_until("the failed reload logged", Duration::from_secs(10), || {
        log_lines_with(&c, 0, "TLS reload failed") >= 1
    });
    ok_ctl(&ep[0], &new, &["put", "k", "still"]);

    // The same process served throughout.
    assert_eq!(pid(&c, 0), pid_before);
    let child = c.children[0].as_mut().unwrap();
    assert!(child.try_wait().unwrap().is_none(), "replica 0 is running");
    assert_eq!(
        log_lines_with(&c, 0, "replica serving"),
        1,
        "never restarted"
    );
}

/// etcd's `--client-cert-auth` with auth enabled: a request without a
/// token runs as the Common Name of its verified client certificate.
#[test]
fn the_common_name_of_a_client_certificate_is_the_user_once_auth_is_enabled() {
    let plain_port = free_ports(1)[0];
    let c = Cluster::start_configured("tls-cn", opts(), |cfg| {
        mutual_tls(cfg, false);
        cfg.replicas[1].client_plain_addr = Some(([127, 0, 0, 1], plain_port).into());
    });
    let ep = https(&c.endpoints());
    let root = good(&c);
    let d = tls_dir(&c);
    let alice = Creds::new(
        &d.join("ca.pem"),
        Some((&d.join("alice.pem"), &d.join("alice-key.pem"))),
    );
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["role", "add", "app"],
        &[
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "app/",
            "--prefix",
        ],
        &["user", "add", "alice:alicepw"],
        &["user", "grant-role", "alice", "app"],
        &["auth", "enable"],
    ] {
        ok_ctl(&ep[0], &root, args);
    }
    // CN=root: admin without a password.
    ok_ctl(&ep[2], &root, &["put", "secret", "s"]);
    assert!(ok_ctl(&ep[3], &root, &["user", "list"]).contains("alice"));
    // CN=alice: her prefix only.
    ok_ctl(&ep[1], &alice, &["put", "app/x", "1"]);
    let (success, out) = ctl(&ep[2], &alice, &["put", "secret", "t"], None);
    assert!(!success && out.contains("permission denied"), "{out}");
    // No certificate (the plaintext listener): nobody.
    let plain = format!("127.0.0.1:{plain_port}");
    let (success, out) = etcdctl(&plain, &["get", "app/x"], None);
    assert!(!success && out.contains("user name is empty"), "{out}");
    // A token still wins over the certificate's name (etcd checks the token
    // first): root's certificate with alice's password is alice.
    let (success, out) = ctl(
        &ep[0],
        &root,
        &["--user=alice:alicepw", "get", "secret"],
        None,
    );
    assert!(!success && out.contains("permission denied"), "{out}");
}
