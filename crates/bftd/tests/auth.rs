//! Issue "Reachable the ways etcd is, and locked as etcd is", etcd auth: a
//! 4-replica cluster of real processes on loopback, locked and used with
//! etcdctl (Debian's etcd-client) as an operator locks etcd.

mod common;

use std::time::Duration;

use common::*;

/// etcdctl as `user` (`name:password`), or as nobody.
fn as_user(ep: &str, user: Option<&str>, args: &[&str]) -> (bool, String) {
    let flag;
    let mut all: Vec<&str> = Vec::new();
    if let Some(u) = user {
        flag = format!("--user={u}");
        all.push(&flag);
    }
    all.extend_from_slice(args);
    etcdctl(ep, &all, None)
}

fn ok(ep: &str, user: Option<&str>, args: &[&str]) -> String {
    let (success, out) = as_user(ep, user, args);
    assert!(success, "etcdctl {args:?} as {user:?} failed: {out}");
    out
}

fn refused(ep: &str, user: Option<&str>, args: &[&str], error: &str) {
    let (success, out) = as_user(ep, user, args);
    assert!(
        !success && out.contains(error),
        "etcdctl {args:?} as {user:?} should fail with {error:?}: {out}"
    );
}

const ROOT: Option<&str> = Some("root:rootpw");
const ALICE: Option<&str> = Some("alice:alicepw");

#[test]
fn a_user_limited_to_a_prefix_reads_and_writes_only_there_once_auth_is_enabled() {
    let mut c = Cluster::start_with("auth-etcdctl", Opts::new(4));
    let ep = c.endpoints();
    let (e0, e1, e2) = (ep[0].as_str(), ep[1].as_str(), ep[2].as_str());

    // Set up as etcd's docs do, while auth is still off.
    refused(e0, None, &["auth", "enable"], "root user does not exist");
    ok(e0, None, &["user", "add", "root:rootpw"]);
    ok(e0, None, &["role", "add", "app"]);
    ok(
        e0,
        None,
        &[
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "app/",
            "--prefix",
        ],
    );
    ok(e0, None, &["user", "add", "alice:alicepw"]);
    ok(e0, None, &["user", "grant-role", "alice", "app"]);
    ok(e0, None, &["put", "secret", "s3"]);
    // "root user does not have root role": etcdctl then adds the root role
    // and grants it to root itself, and enables again (as with etcd).
    assert!(ok(e0, None, &["auth", "enable"]).contains("Authentication Enabled"));
    assert!(ok(e1, ROOT, &["user", "get", "root"]).contains("root"));

    // Nobody: refused everywhere (auth state is replicated).
    for e in [e0, e1, e2] {
        refused(e, None, &["get", "secret"], "user name is empty");
        refused(e, None, &["put", "x", "1"], "user name is empty");
    }
    refused(
        e1,
        Some("alice:wrong"),
        &["get", "app/a"],
        "authentication failed",
    );

    // Alice: her prefix only, at any replica.
    ok(e1, ALICE, &["put", "app/a", "1"]);
    assert_eq!(
        ok(e2, ALICE, &["get", "app/a", "--print-value-only"]).trim(),
        "1"
    );
    refused(e1, ALICE, &["put", "other", "1"], "permission denied");
    refused(e2, ALICE, &["get", "secret"], "permission denied");
    refused(e2, ALICE, &["get", "", "--from-key"], "permission denied");
    refused(e1, ALICE, &["user", "list"], "permission denied");
    refused(e1, ALICE, &["role", "add", "mine"], "permission denied");
    refused(
        e1,
        ALICE,
        &["snapshot", "save", "/dev/null"],
        "permission denied",
    );
    // A txn must be allowed on every compare and op of both branches.
    let txn = "value(\"app/a\") = \"1\"\n\nput app/b 2\n\nput other 3\n\n";
    let (success, out) = etcdctl(e1, &["--user=alice:alicepw", "txn"], Some(txn));
    assert!(!success && out.contains("permission denied"), "{out}");
    // A watch outside her prefix is refused; inside it sees events.
    let (success, out) = as_user(e0, ALICE, &["watch", "secret"]);
    assert!(!success && out.contains("permission denied"), "{out}");
    let w = EtcdctlChild::spawn(e0, &["--user=alice:alicepw", "watch", "app/", "--prefix"]);
    // etcdctl prints nothing on create: write until the watch sees it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let seen = loop {
        ok(e2, ALICE, &["put", "app/w", "x"]);
        if let Some(line) = w.next_line(Duration::from_secs(2)) {
            break line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the watch saw nothing"
        );
    };
    assert_eq!(seen, "PUT", "first line of a put event");
    drop(w);

    // Root sees and manages everything.
    assert_eq!(
        ok(e2, ROOT, &["get", "secret", "--print-value-only"]).trim(),
        "s3"
    );
    let users = ok(e1, ROOT, &["user", "list"]);
    assert!(users.contains("alice") && users.contains("root"), "{users}");
    let role = ok(e1, ROOT, &["role", "get", "app"]);
    assert!(role.contains("[app/, app0)"), "{role}");
    // Alice may read her own user and her roles.
    assert!(ok(e0, ALICE, &["user", "get", "alice"]).contains("app"));

    // Auth survives a restart: a replica replays it from its log.
    c.kill(3);
    c.start_replica(3);
    c.wait_serving(3, Duration::from_secs(30));
    let e3 = c.endpoints()[3].clone();
    refused(&e3, None, &["get", "app/a"], "user name is empty");
    assert_eq!(
        ok(&e3, ALICE, &["get", "app/a", "--print-value-only"]).trim(),
        "1"
    );

    // Revoking the permission holds at once, at every replica.
    ok(
        e0,
        ROOT,
        &["role", "revoke-permission", "app", "app/", "--prefix"],
    );
    for e in [e0, e1, e2, e3.as_str()] {
        refused(e, ALICE, &["put", "app/a", "2"], "permission denied");
    }
    refused(
        e0,
        ROOT,
        &["user", "delete", "root"],
        "invalid auth management",
    );

    // Disabled again: anyone may do anything, as before.
    assert!(ok(e1, ROOT, &["auth", "disable"]).contains("Authentication Disabled"));
    ok(e2, None, &["put", "x", "1"]);
    assert_eq!(
        ok(e0, None, &["get", "secret", "--print-value-only"]).trim(),
        "s3"
    );
}

/// Auto-compaction is the replica's own command, not a client's: it must
/// keep working once auth is enabled (it ran as nobody and was refused
/// with "user name is empty" before the compactor marked it as a system
/// command).
#[test]
fn auto_compaction_keeps_compacting_while_auth_is_enabled() {
    let c = Cluster::start_configured("auth-autocompact", Opts::new(4), |cfg| {
        cfg.api.auto_compaction_mode = "revision".into();
        cfg.api.auto_compaction_retention = "5".into();
        cfg.api.auto_compaction_revision_interval_ms = 200;
    });
    let ep = c.endpoints();
    ok(&ep[0], None, &["user", "add", "root:rootpw"]);
    ok(&ep[0], None, &["auth", "enable"]);
    for i in 0..20 {
        ok(&ep[i % 4], ROOT, &["put", "k", &format!("v{i}")]);
    }
    // 20 puts after revision 1: compacted to at least 21 - 5 = 16, so
    // revision 15 is gone at every replica.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for e in &ep {
        loop {
            let (_, out) = as_user(e, ROOT, &["get", "k", "--rev=15"]);
            if out.contains("required revision has been compacted") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "revision 15 never compacted at {e}: {out}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
