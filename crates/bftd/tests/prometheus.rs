//! Issue 12 item 4, "Dashboards": the Prometheus scrape config and alert
//! rules in configs/prometheus pass promtool (syntax and the rule unit
//! tests), and a real Prometheus (Debian's `prometheus` package) scrapes a
//! 4-replica test cluster, answers PromQL over bftd's metrics, evaluates
//! every Grafana dashboard query and every alert rule without error, and
//! raises BftdReplicaDown and BftdNoLeader when replicas die. Every `bftd_*`
//! name the dashboard and the rules use is checked against a live scrape.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn configs(file: &str) -> PathBuf {
    repo_root().join("configs").join(file)
}

/// `name` on PATH, or a failure that says how to get it.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: install Debian's prometheus package \
                 (`apt-get install prometheus`; scripts/test.sh installs it)"
            )
        })
}

fn promtool(args: &[&Path]) -> String {
    let out = Command::new(tool("promtool"))
        .args(args)
        .output()
        .expect("run promtool");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn promtool_accepts_the_alert_rules_and_the_scrape_config_and_the_rule_tests_pass() {
    let rules = configs("prometheus/alerts.yml");
    let text = promtool(&[Path::new("check"), Path::new("rules"), &rules]);
    assert!(text.contains("SUCCESS: 6 rules found"), "{text}");
    let text = promtool(&[
        Path::new("check"),
        Path::new("config"),
        &configs("prometheus/prometheus.yml"),
    ]);
    assert!(text.contains("is valid prometheus config file"), "{text}");
    // Each alert fires on the synthetic series it is meant for, and only then.
    let text = promtool(&[
        Path::new("test"),
        Path::new("rules"),
        &configs("prometheus/alerts_test.yml"),
    ]);
    assert!(text.contains("SUCCESS"), "{text}");
}

/// A Prometheus server run by this test, killed by PID when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port, scraping `targets` as
    /// job "bftd" every second and evaluating `rules` every second; its
    /// data and log go under `dir`.
    fn start(dir: &Path, targets: &[SocketAddr], rules: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - '{}'\n\
             scrape_configs:\n  - job_name: bftd\n    static_configs:\n      - targets: [{}]\n",
            rules.display(),
            list.join(", ")
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        promtool(&[Path::new("check"), Path::new("config"), &config_path]);
        let port = free_ports(1)[0];
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = dir.join("prometheus.log");
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start prometheus");
        Prometheus { child, addr, log }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// GET `path` of the HTTP API, parsed; `Err` while Prometheus does not
    /// answer (yet). Fails at once if the process has exited.
    fn api(&mut self, path: &str) -> Result<serde_json::Value, String> {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("prometheus exited ({status}):\n{}", self.log_tail());
        }
        let body = http_get_10(self.addr, path)?;
        serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
    }

    /// The result vector of an instant query (`Err` on a query error).
    fn query(&mut self, promql: &str) -> Result<Vec<serde_json::Value>, String> {
        let v = self.api(&format!("/api/v1/query?query={}", url_encode(promql)))?;
        if v["status"] != "success" {
            return Err(format!("query {promql:?}: {v}"));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// Polls until `check` holds for the result of `promql`, every 200 ms,
    /// for at most `timeout`.
    fn wait_for(
        &mut self,
        what: &str,
        promql: &str,
        timeout: Duration,
        mut check: impl FnMut(&[serde_json::Value]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        let mut last = Err("no answer yet".to_string());
        while Instant::now() < deadline {
            last = self.query(promql);
            if matches!(&last, Ok(r) if check(r)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "timed out waiting for {what} ({promql}); last answer: {last:?}\nprometheus log:\n{}",
            self.log_tail()
        );
    }

    /// Active alerts named `name` (pending or firing).
    fn alerts(&mut self, name: &str) -> Vec<serde_json::Value> {
        let v = self.api("/api/v1/alerts").unwrap_or_default();
        v["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == name)
            .collect()
    }

    fn wait_for_alert(
        &mut self,
        name: &str,
        timeout: Duration,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.alerts(name).iter().any(&matches) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let all = self.api("/api/v1/alerts").unwrap_or_default();
        panic!("alert {name} did not become active; alerts: {all}");
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/1.0 GET (no chunked encoding to undo), body of a 2xx or 4xx
/// answer; `Err` if nothing answers.
fn http_get_10(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let i = text.find("\r\n\r\n").ok_or(format!("not HTTP: {text}"))?;
    Ok(text[i + 4..].to_string())
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Histogram series names end in these; the family name is what is left.
fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

/// Every `bftd_…` name in `text` (a name ending in `_` is a prefix, as in
/// "bftd_nic_*").
fn bftd_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("bftd_") {
        let tail = &rest[i..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(family(&tail[..len]).to_string());
        rest = &tail[len..];
    }
    out
}

/// The metric families of a Prometheus text scrape.
fn exported(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| family(l.split(['{', ' ']).next().unwrap()).to_string())
        .collect()
}

/// Every PromQL expression of the dashboard (panels and annotations),
/// with Grafana's variables replaced by what they stand for in this test,
/// and the panel's title.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let substitute = |e: &str| {
        e.replace("$__rate_interval", "10s")
            .replace("$instance", ".*")
            .replace("$job", "bftd")
    };
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap().to_string();
            out.push((title, substitute(t["expr"].as_str().unwrap())));
        }
    }
    for a in dashboard["annotations"]["list"].as_array().unwrap() {
        if let Some(e) = a["expr"].as_str() {
            out.push(("annotation".to_string(), substitute(e)));
        }
    }
    out
}

#[test]
fn a_real_prometheus_scrapes_a_test_cluster_and_every_dashboard_query_and_alert_rule_works() {
    let started = Instant::now();
    let mut c = Cluster::start_with("prometheus", Opts::new(4));
    let dashboard_text = std::fs::read_to_string(configs("grafana/bftd.json")).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard_text).expect("the dashboard is JSON");
    let rules_path = configs("prometheus/alerts.yml").canonicalize().unwrap();
    let rules_text = std::fs::read_to_string(&rules_path).unwrap();

    // (c) The dashboard and the rules name only metrics bftd exports.
    ok_etcdctl(&c.endpoints()[0], &["put", "warm", "up"]);
    let scrape = c.http_get(0, "/metrics");
    let live = exported(&scrape);
    for (file, text) in [
        ("grafana/bftd.json", &dashboard_text),
        ("prometheus/alerts.yml", &rules_text),
    ] {
        let used = bftd_names(text);
        assert!(
            used.len() > 5,
            "{file}: too few bftd_ names found: {used:?}"
        );
        let missing: Vec<&String> = used
            .iter()
            .filter(|n| {
                if n.ends_with('_') {
                    !live.iter().any(|l| l.starts_with(n.as_str()))
                } else {
                    !live.contains(n.as_str())
                }
            })
            .collect();
        assert!(
            missing.is_empty(),
            "configs/{file} uses metrics bftd does not export: {missing:?}\nexported: {live:?}"
        );
    }

    // (b) A real Prometheus scrapes the cluster.
    let targets: Vec<SocketAddr> = c.config.replicas.iter().map(|r| r.http_addr).collect();
    let mut prom = Prometheus::start(&c.dir.join("prometheus"), &targets, &rules_path);
    prom.wait_for(
        "all 4 replicas scraped",
        "count(bftd_regency)",
        Duration::from_secs(60),
        |r| r.len() == 1 && r[0]["value"][1] == "4",
    );
    // Writes until every replica's executed-request counter has a rate.
    let endpoints = c.endpoints();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut puts = 0;
    loop {
        ok_etcdctl(&endpoints[puts % 4], &["put", &format!("k{puts}"), "v"]);
        puts += 1;
        let r = prom
            .query("min(rate(bftd_requests_executed_total{job=\"bftd\"}[5s])) > 0 and count(bftd_requests_executed_total) == 4")
            .unwrap_or_default();
        if r.len() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no rate of bftd_requests_executed_total at every replica after {puts} puts"
        );
    }
    // The quorum gauge and the regency agree with the config.
    let r = prom
        .query("max(count_values(\"regency\", bftd_regency)) >= on () max(bftd_quorum_replicas)")
        .unwrap();
    assert_eq!(r.len(), 1, "a quorum reports the same regency: {r:?}");

    // Every dashboard query evaluates, and every panel shows something.
    let mut empty_panels: BTreeSet<String> = BTreeSet::new();
    let mut shown: BTreeSet<String> = BTreeSet::new();
    for (title, expr) in dashboard_queries(&dashboard) {
        let r = prom
            .query(&expr)
            .unwrap_or_else(|e| panic!("dashboard panel {title:?}: {e}"));
        if r.is_empty() {
            empty_panels.insert(title);
        } else {
            shown.insert(title);
        }
    }
    let blank: Vec<&String> = empty_panels
        .iter()
        .filter(|t| !shown.contains(*t) && t.as_str() != "annotation")
        .collect();
    assert!(
        blank.is_empty(),
        "dashboard panels with no data at all: {blank:?}"
    );

    // Every alert rule evaluates without error, and none is active.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = prom.api("/api/v1/rules").unwrap_or_default();
        let rules: Vec<serde_json::Value> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        if let Some(bad) = rules.iter().find(|r| r["health"] == "err") {
            panic!("alert rule fails to evaluate: {bad}");
        }
        if rules.len() == 6 && rules.iter().all(|r| r["health"] == "ok") {
            break;
        }
        assert!(Instant::now() < deadline, "rules not all evaluated: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // No alert stays active on a healthy cluster (right after Prometheus
    // starts, an evaluation may see only some targets scraped: BftdNoLeader
    // goes pending for a moment, which its `for: 30s` is there to absorb).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let active: Vec<serde_json::Value> = [
            "BftdNoLeader",
            "BftdReplicaDown",
            "BftdReplicaBehind",
            "BftdNoProgress",
        ]
        .iter()
        .flat_map(|name| prom.alerts(name))
        .collect();
        if active.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alerts active on a healthy cluster: {active:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A dead replica: BftdReplicaDown for it (pending: its `for` is 1m).
    c.kill(3);
    let dead = c.config.replicas[3].http_addr.to_string();
    prom.wait_for_alert("BftdReplicaDown", Duration::from_secs(30), |a| {
        a["labels"]["instance"] == dead.as_str()
    });
    // Two dead of four: no quorum on a regency, no leader.
    assert_eq!(prom.alerts("BftdNoLeader"), Vec::<serde_json::Value>::new());
    c.kill(2);
    prom.wait_for_alert("BftdNoLeader", Duration::from_secs(30), |a| {
        a["labels"]["job"] == "bftd"
    });
    eprintln!("prometheus test took {:?}", started.elapsed());
}
