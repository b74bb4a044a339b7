//! `bftd health`: one plain HTTP/1.1 GET of a replica's `/healthz` (see
//! `api::http`), for probes that have nothing else to run it with — the
//! HEALTHCHECK of the `FROM scratch` container image has no shell and no
//! curl. Healthy is a 200 answer; anything else (503 with the replica's
//! reason, a refused connection, a timeout, a garbled answer) is an error
//! naming what happened.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::ClusterConfig;

/// Most response bytes read; `/healthz` answers a line.
const RESPONSE_BYTES_MAX: u64 = 64 * 1024;

/// Path probed when a URL names none, and with `--config`.
pub const HEALTHZ_PATH: &str = "/healthz";

/// Where to send the GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header (the URL's authority, or the address).
    pub host: String,
    pub path: String,
}

/// Parses `http://HOST[:PORT][/PATH]` (port 80 and `/healthz` when left
/// out). HOST is an IP address or a name the resolver knows.
pub fn parse_url(url: &str) -> Result<Target, String> {
    if url.starts_with("https://") {
        return Err(format!(
            "{url}: https is not supported; `bftd health` speaks plain HTTP (the status \
             port is plaintext unless [client_tls] http_tls = true)"
        ));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: expected http://HOST:PORT/PATH"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, HEALTHZ_PATH),
    };
    if authority.is_empty() {
        return Err(format!("{url}: no host"));
    }
    // A port is present when a ':' follows the host (after "]" for IPv6).
    let host_end = authority.rfind(']').unwrap_or(0);
    let with_port = if authority[host_end..].contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("{url}: cannot resolve {with_port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: {with_port} resolves to no address"))?;
    Ok(Target {
        addr,
        host: authority.to_string(),
        path: path.to_string(),
    })
}

/// `/healthz` at the `http_addr` of replica `id` in `config` (loopback
/// when that address is the unspecified one, 0.0.0.0 or ::).
pub fn target_from_config(config: &ClusterConfig, id: u16) -> Result<Target, String> {
    if config.client_tls.http_tls {
        return Err(
            "the status port is behind TLS ([client_tls] http_tls = true); `bftd health` \
             speaks plain HTTP: probe a plaintext endpoint with --url, or use a TLS client"
                .into(),
        );
    }
    let mut addr = config.replica(id).map_err(|e| e.to_string())?.http_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Ok(Target {
        addr,
        host: addr.to_string(),
        path: HEALTHZ_PATH.to_string(),
    })
}

/// The probe `bftd health` runs: `url` if given, else replica `id` of the
/// config file. `Ok` carries the body of the 200 answer.
pub fn run(
    url: Option<&str>,
    config: Option<&Path>,
    id: Option<u16>,
    timeout: Duration,
) -> Result<String, String> {
    let target =
        match (url, config, id) {
            (Some(url), _, _) => parse_url(url)?,
            (None, Some(config), Some(id)) => {
                let c = ClusterConfig::load(config).map_err(|e| e.to_string())?;
                target_from_config(&c, id)?
            }
            _ => return Err(
                "nothing to probe: give --url, or --config and --id (or BFTD_CONFIG and BFTD_ID)"
                    .into(),
            ),
        };
    check(&target, timeout)
}

/// One GET of `target` within `timeout`: `Ok(body)` on 200, otherwise the
/// reason.
pub fn check(target: &Target, timeout: Duration) -> Result<String, String> {
    assert!(!timeout.is_zero(), "a probe needs time");
    let deadline = Instant::now() + timeout;
    let at = format!("http://{}{}", target.host, target.path);
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("{at}: no answer within {} ms", timeout.as_millis()))
    };
    let mut s = TcpStream::connect_timeout(&target.addr, left()?)
        .map_err(|e| format!("{at}: connect to {}: {e}", target.addr))?;
    s.set_write_timeout(Some(left()?))
        .and_then(|()| {
            write!(
                s,
                "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: bftd-health\r\nConnection: close\r\n\r\n",
                target.path, target.host
            )
        })
        .map_err(|e| format!("{at}: send: {e}"))?;
    let mut raw = Vec::new();
    let mut limited = (&mut s).take(RESPONSE_BYTES_MAX);
    let mut buf = [0u8; 4096];
    loop {
        limited
            .get_ref()
            .set_read_timeout(Some(left()?))
            .map_err(|e| format!("{at}: {e}"))?;
        match limited.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => raw.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!(
                    "{at}: no complete answer within {} ms",
                    timeout.as_millis()
                ))
            }
            Err(e) => return Err(format!("{at}: receive: {e}")),
        }
    }
    let (code, body) = parse_response(&raw).map_err(|e| format!("{at}: {e}"))?;
    if code == 200 {
        Ok(body)
    } else {
        Err(format!("{at}: HTTP {code}: {}", body.trim()))
    }
}

/// The status code and body of an HTTP/1.x response read to its end.
fn parse_response(raw: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP response ({} bytes, no header end)", raw.len()))?;
    let status = head.lines().next().unwrap_or("");
    let mut words = status.split_whitespace();
    let code = match (words.next(), words.next()) {
        (Some(v), Some(c)) if v.starts_with("HTTP/1.") => c
            .parse::<u16>()
            .map_err(|_| format!("bad status line {status:?}"))?,
        _ => return Err(format!("bad status line {status:?}")),
    };
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok((code, body))
}

/// The payload of a chunked body.
fn dechunk(mut s: &str) -> Result<String, String> {
    let mut out = String::new();
    // Each round consumes one chunk; a body of at most RESPONSE_BYTES_MAX
    // bytes has fewer chunks than bytes.
    for _ in 0..=RESPONSE_BYTES_MAX {
        let (size, rest) = s.split_once("\r\n").ok_or("truncated chunked body")?;
        let size = size.split(';').next().unwrap_or("").trim();
        let len =
            usize::from_str_radix(size, 16).map_err(|_| format!("bad chunk size {size:?}"))?;
        if len == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..len).ok_or("truncated chunk")?;
        out.push_str(chunk);
        s = rest
            .get(len..)
            .and_then(|r| r.strip_prefix("\r\n"))
            .ok_or("truncated chunk")?;
    }
    Err("too many chunks".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves `answer` to one connection after reading its request.
    fn serve_once(answer: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                let k = c.read(&mut b).unwrap();
                assert!(k > 0, "request ended early");
                req.extend_from_slice(&b[..k]);
            }
            let req = String::from_utf8(req).unwrap();
            assert!(req.starts_with("GET /healthz HTTP/1.1\r\n"), "{req}");
            c.write_all(answer.as_bytes()).unwrap();
        });
        addr
    }

    fn target(addr: SocketAddr) -> Target {
        Target {
            addr,
            host: addr.to_string(),
            path: HEALTHZ_PATH.into(),
        }
    }

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn urls_default_to_port_80_and_healthz_and_refuse_https() {
        let t = parse_url("http://127.0.0.1:2381").unwrap();
        assert_eq!(t.addr, "127.0.0.1:2381".parse().unwrap());
        assert_eq!(t.path, "/healthz");
        let t = parse_url("http://10.0.0.1/status").unwrap();
        assert_eq!(t.addr, "10.0.0.1:80".parse().unwrap());
        assert_eq!(t.path, "/status");
        let t = parse_url("http://[::1]:22379/healthz").unwrap();
        assert_eq!(t.addr, "[::1]:22379".parse().unwrap());
        assert_eq!(t.host, "[::1]:22379");
        assert!(parse_url("https://127.0.0.1:1/healthz")
            .unwrap_err()
            .contains("https is not supported"));
        assert!(parse_url("127.0.0.1:1")
            .unwrap_err()
            .contains("expected http://"));
        assert!(parse_url("http:///healthz")
            .unwrap_err()
            .contains("no host"));
    }

    #[test]
    fn a_200_is_healthy_and_its_body_is_returned() {
        let a = serve_once("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n");
        assert_eq!(check(&target(a), T).unwrap(), "ok\n");
    }

    #[test]
    fn a_chunked_200_is_decoded() {
        let a = serve_once(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nok\n\r\n0\r\n\r\n",
        );
        assert_eq!(check(&target(a), T).unwrap(), "ok\n");
    }

    #[test]
    fn a_503_is_unhealthy_with_the_replicas_reason() {
        let a = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\nno leader for 5 s\n");
        let e = check(&target(a), T).unwrap_err();
        assert!(e.contains("HTTP 503: no leader for 5 s"), "{e}");
    }

    #[test]
    fn garbage_and_refused_connections_are_errors_that_say_so() {
        let a = serve_once("SSH-2.0-OpenSSH\r\n\r\n");
        let e = check(&target(a), T).unwrap_err();
        assert!(e.contains("bad status line"), "{e}");
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = check(&target(closed), T).unwrap_err();
        assert!(e.contains("connect to"), "{e}");
    }

    #[test]
    fn a_silent_server_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let e = check(&target(l.local_addr().unwrap()), Duration::from_millis(200)).unwrap_err();
        assert!(e.contains("within 200 ms"), "{e}");
        drop(l);
    }

    #[test]
    fn a_config_target_is_its_http_addr_and_refuses_a_tls_status_port() {
        let mut c = ClusterConfig::default_template();
        for i in 0..4u16 {
            let key = wire::SecretKey::generate();
            c.replicas
                .push(crate::config::loopback_entry(i, 2379, &key.public()));
        }
        let t = target_from_config(&c, 2).unwrap();
        assert_eq!(t.addr, "127.0.0.1:22381".parse().unwrap());
        c.replicas[2].http_addr = "0.0.0.0:2381".parse().unwrap();
        assert_eq!(
            target_from_config(&c, 2).unwrap().addr,
            "127.0.0.1:2381".parse().unwrap()
        );
        assert!(target_from_config(&c, 9).is_err());
        c.client_tls.http_tls = true;
        assert!(target_from_config(&c, 2)
            .unwrap_err()
            .contains("behind TLS"));
    }
}
