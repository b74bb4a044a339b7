//! Docker helpers of the container tests: every command under coreutils'
//! `timeout`, so a hung daemon fails the test instead of stalling it.

use std::process::Command;

/// Longest a single docker command may take before it counts as hung.
pub const DOCKER_COMMAND_TIMEOUT_S: u32 = 180;

/// Runs `program args` under coreutils' `timeout`; stdout on success, the
/// command and its output otherwise.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("timeout")
        .args([
            "--kill-after=5",
            &DOCKER_COMMAND_TIMEOUT_S.to_string(),
            program,
        ])
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{program} {} ({}): {stdout}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub fn docker(args: &[&str]) -> Result<String, String> {
    run("docker", args)
}

pub fn ok_docker(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Why this machine cannot run a container test, if it cannot: `docker
/// info` fails, or not root (the key files, mode 0600, are handed to the
/// image's user).
pub fn docker_unavailable(image_uid: u32) -> Option<String> {
    if let Err(e) = docker(&["info", "--format", "{{.ServerVersion}}"]) {
        return Some(format!("docker info failed: {e}"));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some(format!(
            "not root: the key files (mode 0600) must be chowned to the image's uid {image_uid}"
        ));
    }
    None
}

/// A container's log, its stdout and stderr (the replica logs to stderr),
/// the last `tail` lines of each or all of it; the error text if docker
/// fails.
pub fn docker_logs(name: &str, tail: Option<usize>) -> String {
    let tail = tail.map_or("all".to_string(), |t| t.to_string());
    let out = Command::new("timeout")
        .args(["--kill-after=5", &DOCKER_COMMAND_TIMEOUT_S.to_string()])
        .args(["docker", "logs", "--tail", &tail, name])
        .output();
    match out {
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("docker logs {name}: {e}"),
    }
}
