//! A new cluster seeded from a snapshot, as etcd's `snapshot restore`
//! starts a new cluster from a saved one.
//!
//! `etcdctl snapshot save` against a bftd replica writes a bftd snapshot
//! file (see [`api::snapshot`]: the kv store at one revision, padded, with
//! etcd's trailing sha256). `bftd init --from-snapshot FILE` checks it,
//! copies it next to the new config as [`INITIAL_SNAPSHOT_FILE`] and pins
//! it in `[storage]`: `initial_snapshot` (the path) and
//! `initial_snapshot_sha256` (its checksum). A replica that starts without
//! a checkpoint (first start, or a restart before the first checkpoint)
//! rebuilds its state from that store instead of an empty one, so every
//! replica starts from the identical store: same keys, values, revisions
//! and compaction revision, and writes continue at the next revision.
//! Once a checkpoint exists, it holds the whole state and the file is no
//! longer read.
//!
//! A file that is truncated, damaged, not a bftd snapshot, or whose
//! checksum is not the one the config pins is refused with the reason;
//! nothing is written.

use std::path::{Path, PathBuf};

use crate::config::{self, ClusterConfig, Durability};

/// Name of the copied snapshot file next to a config made by `bftd init
/// --from-snapshot`.
pub const INITIAL_SNAPSHOT_FILE: &str = "initial-snapshot.db";

/// A checked snapshot file.
pub struct Seed {
    /// The store it holds.
    pub store: kv::Store,
    /// Its sha256 (the file's last 32 bytes), lowercase hex.
    pub sha256_hex: String,
}

/// Reads `path` and checks it is a whole bftd snapshot: size, trailing
/// sha256, header, and the kv snapshot inside.
///
/// # Errors
/// The path and what is wrong with the file.
pub fn read(path: &Path) -> Result<Seed, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (payload, sum) =
        api::snapshot::decode_file(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let store = kv::Store::restore(payload).map_err(|e| {
        format!(
            "{}: the checksum matches but the store inside does not decode ({e}): the file \
             was written by an incompatible bftd",
            path.display()
        )
    })?;
    Ok(Seed {
        store,
        sha256_hex: hex::encode(sum),
    })
}

/// The store a replica of `config` starts from when it has no checkpoint:
/// that of `[storage] initial_snapshot` once its checksum is the one the
/// config pins; `None` when the config names no snapshot.
///
/// # Errors
/// The file cannot be read, fails [`read`], or has another checksum.
pub fn initial_store(config: &ClusterConfig) -> Result<Option<kv::Store>, String> {
    let Some(path) = config.initial_snapshot_path() else {
        return Ok(None);
    };
    let seed = read(&path)?;
    let want = config.storage.initial_snapshot_sha256.to_ascii_lowercase();
    if seed.sha256_hex != want {
        return Err(format!(
            "{}: sha256 {} is not the initial_snapshot_sha256 {want} of the config: every \
             replica must start from the same snapshot",
            path.display(),
            seed.sha256_hex
        ));
    }
    Ok(Some(seed.store))
}

/// `bftd init --from-snapshot`: a loopback cluster config in `dir` (as
/// [`config::init_loopback`]) whose replicas start from the store in
/// `snapshot`, copied to `dir/`[`INITIAL_SNAPSHOT_FILE`]. Returns the
/// config's path and the seeded store's revision.
///
/// # Errors
/// A bad snapshot (nothing is written), or what `init_loopback` refuses.
pub fn init_loopback_from_snapshot(
    dir: &Path,
    n: usize,
    base_port: u16,
    durability: Durability,
    snapshot: &Path,
) -> Result<(PathBuf, i64), String> {
    let seed = read(snapshot)?;
    let copy = dir.join(INITIAL_SNAPSHOT_FILE);
    if dir.join("bftd.toml").exists() || copy.exists() {
        return Err(format!(
            "{} already holds a cluster config or {INITIAL_SNAPSHOT_FILE}: pick a new --dir",
            dir.display()
        ));
    }
    let path = config::init_loopback(dir, n, base_port, durability).map_err(|e| e.to_string())?;
    let write = |to: &Path| -> std::io::Result<()> {
        std::fs::copy(snapshot, to)?;
        std::fs::File::open(to)?.sync_all()
    };
    write(&copy)
        .map_err(|e| format!("copying {} to {}: {e}", snapshot.display(), copy.display()))?;
    let mut cfg = ClusterConfig::load(&path).map_err(|e| e.to_string())?;
    cfg.storage.initial_snapshot = INITIAL_SNAPSHOT_FILE.into();
    cfg.storage.initial_snapshot_sha256 = seed.sha256_hex;
    cfg.validate().map_err(|e| e.to_string())?;
    std::fs::write(&path, cfg.to_toml()).map_err(|e| format!("{}: {e}", path.display()))?;
    // The config as written names a file that checks out.
    let loaded = ClusterConfig::load(&path).map_err(|e| e.to_string())?;
    let store = initial_store(&loaded)?.expect("initial_snapshot was just set");
    Ok((path, store.revision()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bftd-seed-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn snapshot_file(dir: &Path) -> (PathBuf, kv::Store) {
        let mut s = kv::Store::new();
        for (k, v) in [("a", "1"), ("b", "2"), ("a", "3")] {
            let put = kv::pb::etcdserverpb::PutRequest {
                key: k.into(),
                value: v.into(),
                ..Default::default()
            };
            s.apply(&put.into()).unwrap();
        }
        let path = dir.join("saved.db");
        let bytes = api::snapshot::SnapshotData::new(s.snapshot()).to_file_bytes();
        std::fs::write(&path, bytes).unwrap();
        (path, s)
    }

    #[test]
    fn init_from_a_snapshot_pins_it_and_every_replica_gets_the_same_store() {
        let d = tmp("init");
        let (file, store) = snapshot_file(&d);
        let dir = d.join("cluster");
        let (path, rev) =
            init_loopback_from_snapshot(&dir, 4, 31000, Durability::Memory, &file).unwrap();
        assert_eq!(rev, 4);
        let cfg = ClusterConfig::load(&path).unwrap();
        assert_eq!(cfg.storage.initial_snapshot, INITIAL_SNAPSHOT_FILE);
        let seeded = initial_store(&cfg).unwrap().unwrap();
        assert_eq!(seeded.state_digest(), store.state_digest());
        // Again into the same directory: refused.
        let err =
            init_loopback_from_snapshot(&dir, 4, 31000, Durability::Memory, &file).unwrap_err();
        assert!(err.contains("pick a new --dir"), "{err}");
        // The pinned file replaced by another snapshot: the replica refuses.
        let other = kv::Store::new();
        let bytes = api::snapshot::SnapshotData::new(other.snapshot()).to_file_bytes();
        std::fs::write(dir.join(INITIAL_SNAPSHOT_FILE), bytes).unwrap();
        let err = initial_store(&cfg).err().unwrap();
        assert!(err.contains("is not the initial_snapshot_sha256"), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_damaged_or_foreign_snapshot_is_refused_and_nothing_is_written() {
        let d = tmp("bad");
        let (file, _) = snapshot_file(&d);
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[30] ^= 0xff;
        std::fs::write(&file, &bytes).unwrap();
        let dir = d.join("cluster");
        let err =
            init_loopback_from_snapshot(&dir, 4, 31000, Durability::Memory, &file).unwrap_err();
        assert!(err.contains("checksum mismatch"), "{err}");
        assert!(!dir.exists(), "nothing written");
        std::fs::write(&file, b"not a snapshot").unwrap();
        let err = read(&file).err().unwrap();
        assert!(err.contains("not the size of a snapshot file"), "{err}");
        let err = read(&d.join("missing.db")).err().unwrap();
        assert!(err.contains("missing.db"), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
