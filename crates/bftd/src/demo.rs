//! `bftd demo`: a local cluster of replicas on 127.0.0.1, one child process
//! per replica (`bftd run`), until SIGINT/SIGTERM.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{init_loopback, ClusterConfig, Durability, PinCores};

/// Options of `bftd demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub replicas: usize,
    pub base_port: u16,
    /// Where configs, keys, data and logs go; `None` = a fresh temporary
    /// directory removed at exit.
    pub data_dir: Option<PathBuf>,
    pub durability: Durability,
    /// Mutual TLS on the client ports (see [`crate::certs`]).
    pub tls: bool,
}

struct Children(Vec<(u16, Child)>);

impl Children {
    fn stop(&mut self) {
        for (_, c) in &self.0 {
            // SAFETY: sending a signal to a child we spawned and still own.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (id, c) in &mut self.0 {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        eprintln!("replica {id} did not stop in 5 s: killing it");
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
        self.0.clear();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_listening(
    addr: SocketAddr,
    children: &mut Children,
    deadline: Instant,
) -> Result<(), String> {
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        for (id, c) in &mut children.0 {
            if let Ok(Some(st)) = c.try_wait() {
                return Err(format!(
                    "replica {id} exited during start-up ({st}); see its log"
                ));
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{addr} did not start listening within 30 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn prepare(dir: &Path, opts: &DemoOptions) -> Result<ClusterConfig, String> {
    let path = dir.join("bftd.toml");
    if !path.exists() {
        init_loopback(dir, opts.replicas, opts.base_port, opts.durability)
            .map_err(|e| e.to_string())?;
        // Several replicas share this machine's cores: no pinning.
        let mut c = ClusterConfig::load(&path).map_err(|e| e.to_string())?;
        c.dataplane.pin_cores = PinCores::Off;
        std::fs::write(&path, c.to_toml()).map_err(|e| format!("{}: {e}", path.display()))?;
        if opts.tls {
            crate::certs::init_tls(&path)?;
        }
    }
    let c = ClusterConfig::load(&path).map_err(|e| e.to_string())?;
    if c.client_tls.is_on() != opts.tls {
        return Err(format!(
            "{} was written {}: {}, or remove the directory",
            path.display(),
            if c.client_tls.is_on() {
                "with TLS"
            } else {
                "without TLS"
            },
            if c.client_tls.is_on() {
                "pass --tls"
            } else {
                "drop --tls"
            },
        ));
    }
    if c.n() != opts.replicas || c.replicas[0].client_addr.port() != opts.base_port {
        return Err(format!(
            "{} holds a {}-replica cluster on port {}: remove the directory or pass another --data-dir",
            path.display(),
            c.n(),
            c.replicas[0].client_addr.port()
        ));
    }
    Ok(c)
}

/// Runs the demo until SIGINT/SIGTERM, or until a majority of replicas died.
pub fn run(opts: DemoOptions) -> Result<(), String> {
    let (dir, temporary) = match &opts.data_dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("bftd-demo-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = run_in(&dir, &opts);
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn run_in(dir: &Path, opts: &DemoOptions) -> Result<(), String> {
    let cfg = prepare(dir, opts)?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the bftd binary: {e}"))?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let f = (cfg.n() - 1) / 3;
    println!(
        "bftd demo: {} replicas (tolerates f = {f} Byzantine), durability {:?}, data in {}",
        cfg.n(),
        cfg.storage.durability,
        dir.display()
    );
    let mut children = Children(Vec::new());
    for r in &cfg.replicas {
        let log = std::fs::File::create(logs.join(format!("replica-{}.log", r.id)))
            .map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&exe);
        cmd.arg("run")
            .arg("--config")
            .arg(dir.join("bftd.toml"))
            .arg("--id")
            .arg(r.id.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        // The children die with the demo, even if it is SIGKILLed.
        // SAFETY: prctl is async-signal-safe; called between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start replica {}: {e}", r.id))?;
        children.0.push((r.id, child));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for r in &cfg.replicas {
        wait_listening(r.client_addr, &mut children, deadline)?;
        println!(
            "  replica {}: client {}  status http://{}/status  log {}",
            r.id,
            r.client_addr,
            r.http_addr,
            logs.join(format!("replica-{}.log", r.id)).display()
        );
    }
    let endpoints: Vec<String> = cfg
        .replicas
        .iter()
        .map(|r| r.client_addr.to_string())
        .collect();
    println!("endpoints: {}", endpoints.join(","));
    if cfg.client_tls.is_on() {
        let tls = dir.join(crate::certs::TLS_DIR);
        let files = crate::certs::EtcdctlTls {
            cacert: tls.join("ca.pem"),
            cert: tls.join(format!("client-{}.pem", crate::certs::CLIENT_CN)),
            key: tls.join(format!("client-{}-key.pem", crate::certs::CLIENT_CN)),
        };
        println!(
            "mutual TLS on; try: etcdctl --endpoints=https://{} {} put foo bar",
            endpoints[0],
            files.flags()
        );
    } else {
        println!("try: etcdctl --endpoints={} put foo bar", endpoints[0]);
        println!(
            "TLS: `bftd demo --tls` serves mutual TLS (test certificates under <data dir>/tls)"
        );
    }
    println!("ready; Ctrl-C stops the cluster");
    wait_for_stop(&mut children, f);
    println!("stopping");
    children.stop();
    Ok(())
}

/// Blocks until SIGINT/SIGTERM, reporting replicas that exit meanwhile.
fn wait_for_stop(children: &mut Children, f: usize) {
    static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    extern "C" fn on_signal(_: libc::c_int) {
        STOP.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as usize);
        libc::signal(libc::SIGTERM, on_signal as *const () as usize);
    }
    let mut dead = std::collections::BTreeSet::new();
    while !STOP.load(std::sync::atomic::Ordering::SeqCst) {
        for (id, c) in &mut children.0 {
            if !dead.contains(id) {
                if let Ok(Some(st)) = c.try_wait() {
                    dead.insert(*id);
                    eprintln!(
                        "replica {id} exited ({st}); {} of at most {f} tolerated faults used",
                        dead.len()
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
