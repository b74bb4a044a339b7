//! Where a [`crate::Store`] keeps the values of its history entries
//! (issue 10, item 1, first stage; docs/design/state-at-scale.md).
//!
//! The key index stays in the heap (etcd's `treeIndex`): per key its
//! history of revisions with create_revision, version, lease and the
//! value's length. The value bytes live in a [`Values`], keyed by the
//! entry's revision `(main, sub)`:
//!
//! - [`ValueBackend::Heap`]: a `BTreeMap` in the heap (what the store did
//!   before; `Store::new`, the unit tests and the simulator).
//! - [`ValueBackend::Lmdb`]: one LMDB table (through `heed`), keyed as
//!   etcd's bbolt `key` bucket is (`mvcc/backend`, `revision.go`): main
//!   revision u64 big-endian, then sub revision u32 big-endian, so keys sort
//!   by revision and every write appends at the right edge of the B-tree
//!   (`MDB_APPEND`). One write transaction per applied command that writes,
//!   committed without fsync (`MDB_NOSYNC`); readers read from a read
//!   transaction. In this stage the environment is a cache: the store is
//!   rebuilt from the checkpoint and the write-ahead log at every start,
//!   so the directory is wiped and created afresh on open.
//!
//! Both backends hold the same values for the same command sequence; the
//! store's responses, digests and snapshots do not depend on the backend.
//!
//! Values of the write transaction in progress are staged in the heap
//! until the store commits it ([`Values::flush`]) or rolls it back
//! ([`Values::discard_staged`]); reads see staged values first.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use heed::types::Bytes;

use crate::store::{Revision, DEFAULT_QUOTA_BACKEND_BYTES};

/// Address space an LMDB map gets beyond what the quota asks for
/// ([`lmdb_map_size_bytes`]): 1 GiB.
pub const LMDB_MAP_HEADROOM_BYTES: u64 = 1 << 30;

/// How many times the space quota an LMDB map reserves
/// ([`lmdb_map_size_bytes`]).
pub const LMDB_MAP_QUOTA_FACTOR: u64 = 4;

/// Name of the LMDB table of values.
const VALUES_TABLE: &str = "values";

/// Bytes of an LMDB key: main revision u64 BE, sub revision u32 BE.
const KEY_BYTES: usize = 12;

/// The files LMDB keeps in an environment directory: the only ones a
/// wipe on open may remove.
const LMDB_FILES: [&str; 2] = ["data.mdb", "lock.mdb"];

/// Largest map an LMDB environment grows to when a commit finds it full
/// (see [`Values::flush`]): 1 TiB of address space.
const LMDB_MAP_BYTES_MAX: u64 = 1 << 40;

/// The LMDB map size for a store whose space quota is
/// `quota_backend_bytes` (0 = [`DEFAULT_QUOTA_BACKEND_BYTES`], as
/// `Store::set_quota_bytes` reads it): [`LMDB_MAP_QUOTA_FACTOR`] times the
/// quota plus [`LMDB_MAP_HEADROOM_BYTES`], in bytes.
///
/// Why that much: the quota counts key + value + 256 bytes per entry
/// (`Store::size_bytes`), LMDB stores per value 12 key bytes, an 8-byte
/// node header and a 2-byte slot beside the value, so a full quota needs
/// less than the quota on pages filled by `MDB_APPEND`; after compaction
/// deletes entries, leaf pages may stay as little as a quarter full
/// (LMDB merges a page below 25%), values above half a page take whole
/// overflow pages (at most twice their bytes), and pages freed while a
/// reader holds an older snapshot are reused only after it ends. Four
/// times the quota covers those; the map is address space, not disk: the
/// file grows as pages are used. The quota refuses writes with NOSPACE,
/// on every replica alike, before the map can fill; should it fill anyway,
/// the map grows (see [`Values::flush`]).
pub fn lmdb_map_size_bytes(quota_backend_bytes: u64) -> u64 {
    let quota = if quota_backend_bytes == 0 {
        DEFAULT_QUOTA_BACKEND_BYTES
    } else {
        quota_backend_bytes
    };
    quota
        .saturating_mul(LMDB_MAP_QUOTA_FACTOR)
        .saturating_add(LMDB_MAP_HEADROOM_BYTES)
}

/// Where a [`crate::Store`] keeps the values of its history entries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ValueBackend {
    /// In the heap, beside the key index.
    #[default]
    Heap,
    /// In an LMDB environment in directory `dir` whose map is
    /// `map_size_bytes` of address space (see [`lmdb_map_size_bytes`]).
    /// The directory is wiped and created afresh when a store opens it.
    Lmdb {
        /// The environment's directory (bftd: `<data_dir>/kv.lmdb`).
        dir: PathBuf,
        /// The map size, bytes.
        map_size_bytes: u64,
    },
}

impl ValueBackend {
    /// LMDB in `dir` with the map [`lmdb_map_size_bytes`] derives from the
    /// space quota `quota_backend_bytes` (0 = the default quota).
    pub fn lmdb_for_quota(dir: impl Into<PathBuf>, quota_backend_bytes: u64) -> Self {
        ValueBackend::Lmdb {
            dir: dir.into(),
            map_size_bytes: lmdb_map_size_bytes(quota_backend_bytes),
        }
    }
}

/// A value store that could not be opened: the path and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot open kv store at {path}: {why}; the directory is a cache rebuilt from the \
     checkpoint and the log at every start (it may be deleted): check that its parent is \
     writable and that no other process uses it"
)]
pub struct OpenError {
    /// The directory.
    pub path: PathBuf,
    /// What failed.
    pub why: String,
}

/// The LMDB key of revision `rev`: main u64 BE, sub u32 BE.
fn lmdb_key(rev: Revision) -> [u8; KEY_BYTES] {
    let main = u64::try_from(rev.main).expect("revisions are positive");
    let sub = u32::try_from(rev.sub).expect("fewer than 2^32 changes per revision");
    let mut k = [0u8; KEY_BYTES];
    k[..8].copy_from_slice(&main.to_be_bytes());
    k[8..].copy_from_slice(&sub.to_be_bytes());
    k
}

/// The revision of LMDB key `k`, `None` if it is not [`KEY_BYTES`] long.
fn revision_of(k: &[u8]) -> Option<Revision> {
    let main = u64::from_be_bytes(k.get(..8)?.try_into().ok()?);
    let sub = u32::from_be_bytes(k.get(8..KEY_BYTES)?.try_into().ok()?);
    (k.len() == KEY_BYTES).then_some(Revision {
        main: i64::try_from(main).ok()?,
        sub: i64::from(sub),
    })
}

struct Lmdb {
    env: heed::Env,
    table: heed::Database<Bytes, Bytes>,
    dir: PathBuf,
    /// The current map size, bytes (grows when a commit finds it full).
    map_size_bytes: u64,
}

enum Kind {
    Heap(BTreeMap<Revision, Vec<u8>>),
    Lmdb(Lmdb),
}

/// The values of a store's history entries, by revision, in the heap or
/// in LMDB (see the module docs).
pub(crate) struct Values {
    kind: Kind,
    /// Values of the write transaction in progress, ascending.
    staged: BTreeMap<Revision, Vec<u8>>,
    /// Values stored (staged ones not counted).
    stored: u64,
}

impl Default for Values {
    fn default() -> Self {
        Values::heap()
    }
}

impl std::fmt::Debug for Values {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Heap(_) => "heap".to_string(),
            Kind::Lmdb(l) => format!("lmdb {}", l.dir.display()),
        };
        f.debug_struct("Values")
            .field("kind", &kind)
            .field("stored", &self.stored)
            .field("staged", &self.staged.len())
            .finish()
    }
}

/// Equal when they hold the same values at the same revisions, whatever
/// their backends (a pass over both: for tests).
impl PartialEq for Values {
    fn eq(&self, other: &Self) -> bool {
        self.staged == other.staged && self.stored == other.stored && self.all() == other.all()
    }
}

impl Eq for Values {}

impl Values {
    /// Values in the heap.
    pub(crate) fn heap() -> Self {
        Values {
            kind: Kind::Heap(BTreeMap::new()),
            staged: BTreeMap::new(),
            stored: 0,
        }
    }

    /// Empty values on `backend`; an LMDB directory is wiped and created
    /// afresh.
    ///
    /// # Errors
    /// The directory holds files LMDB did not write (it is not wiped), or
    /// it cannot be wiped, created or opened as an LMDB environment.
    pub(crate) fn open(backend: &ValueBackend) -> Result<Self, OpenError> {
        match backend {
            ValueBackend::Heap => Ok(Values::heap()),
            ValueBackend::Lmdb {
                dir,
                map_size_bytes,
            } => Ok(Values {
                kind: Kind::Lmdb(open_lmdb(dir, *map_size_bytes)?),
                staged: BTreeMap::new(),
                stored: 0,
            }),
        }
    }

    /// Which backend this is (for the heap, [`ValueBackend::Heap`]).
    pub(crate) fn backend(&self) -> ValueBackend {
        match &self.kind {
            Kind::Heap(_) => ValueBackend::Heap,
            Kind::Lmdb(l) => ValueBackend::Lmdb {
                dir: l.dir.clone(),
                map_size_bytes: l.map_size_bytes,
            },
        }
    }

    /// Values stored, staged ones not counted.
    #[cfg(test)]
    pub(crate) fn stored(&self) -> u64 {
        self.stored
    }

    /// Stages `value` at `rev` for the write transaction in progress.
    pub(crate) fn stage(&mut self, rev: Revision, value: Vec<u8>) {
        let fresh = self.staged.insert(rev, value).is_none();
        assert!(fresh, "one value per revision");
    }

    /// Drops the staged values (the store rolled its write back).
    pub(crate) fn discard_staged(&mut self) {
        self.staged.clear();
    }

    /// Stores the staged values: in LMDB, one write transaction that
    /// appends them in revision order and commits without fsync.
    ///
    /// A full map grows (doubling, up to 1 TiB) and the commit is retried:
    /// the quota keeps a store below its map ([`lmdb_map_size_bytes`]), so
    /// this is a safety net, and the write must not fail on one replica
    /// alone. Panics on any other LMDB failure: the store has executed a
    /// decided command and cannot silently diverge from the others.
    pub(crate) fn flush(&mut self) {
        if self.staged.is_empty() {
            return;
        }
        let staged = std::mem::take(&mut self.staged);
        let n = staged.len() as u64;
        match &mut self.kind {
            Kind::Heap(m) => {
                if let (Some((last, _)), Some((first, _))) =
                    (m.last_key_value(), staged.first_key_value())
                {
                    assert!(last < first, "values are stored in revision order");
                }
                m.extend(staged);
            }
            Kind::Lmdb(l) => l.write("append values", |txn, table| {
                for (rev, value) in &staged {
                    table.put_with_flags(txn, heed::PutFlags::APPEND, &lmdb_key(*rev), value)?;
                }
                Ok(())
            }),
        }
        self.stored += n;
    }

    /// Deletes the values at `revs` (compaction dropped their entries), in
    /// one write transaction for LMDB. Panics if one is not stored, or on
    /// an LMDB failure (as [`Values::flush`]).
    pub(crate) fn remove(&mut self, revs: &[Revision]) {
        assert!(self.staged.is_empty(), "no write in progress");
        if revs.is_empty() {
            return;
        }
        match &mut self.kind {
            Kind::Heap(m) => {
                for rev in revs {
                    assert!(m.remove(rev).is_some(), "a dropped put has a stored value");
                }
            }
            Kind::Lmdb(l) => l.write("delete compacted values", |txn, table| {
                for rev in revs {
                    let found = table.delete(txn, &lmdb_key(*rev))?;
                    assert!(found, "a dropped put has a stored value at {rev:?}");
                }
                Ok(())
            }),
        }
        self.stored -= revs.len() as u64;
    }

    /// Drops every value (a restored store takes over this one's backend).
    pub(crate) fn clear(&mut self) {
        self.staged.clear();
        match &mut self.kind {
            Kind::Heap(m) => m.clear(),
            Kind::Lmdb(l) => l.write("clear values", |txn, table| table.clear(txn)),
        }
        self.stored = 0;
    }

    /// Stores `values` (ascending by revision) into an empty store: for
    /// LMDB, appended in write transactions of about
    /// [`LOAD_TXN_BYTES_TARGET`] each.
    pub(crate) fn load(&mut self, values: &[(Revision, &[u8])]) {
        assert!(
            self.stored == 0 && self.staged.is_empty(),
            "loads go into an empty store"
        );
        assert!(
            values.windows(2).all(|w| w[0].0 < w[1].0),
            "values load in revision order"
        );
        match &mut self.kind {
            Kind::Heap(m) => m.extend(values.iter().map(|(r, v)| (*r, v.to_vec()))),
            Kind::Lmdb(l) => {
                let mut rest = values;
                while !rest.is_empty() {
                    let mut bytes = 0usize;
                    let n = rest
                        .iter()
                        .position(|(_, v)| {
                            bytes += v.len();
                            bytes >= LOAD_TXN_BYTES_TARGET
                        })
                        .map_or(rest.len(), |i| i + 1);
                    let (chunk, tail) = rest.split_at(n);
                    l.write("load values", |txn, table| {
                        for (rev, value) in chunk {
                            table.put_with_flags(
                                txn,
                                heed::PutFlags::APPEND,
                                &lmdb_key(*rev),
                                value,
                            )?;
                        }
                        Ok(())
                    });
                    rest = tail;
                }
            }
        }
        self.stored = values.len() as u64;
    }

    /// A reader of the stored and staged values; an LMDB read transaction
    /// is opened at the first value read and ends with the reader.
    pub(crate) fn reader(&self) -> Reader<'_> {
        Reader {
            values: self,
            txn: OnceCell::new(),
        }
    }

    /// Every stored and staged value, ascending (a pass over the store).
    pub(crate) fn all(&self) -> Vec<(Revision, Vec<u8>)> {
        let mut out: Vec<(Revision, Vec<u8>)> = match &self.kind {
            Kind::Heap(m) => m.iter().map(|(r, v)| (*r, v.clone())).collect(),
            Kind::Lmdb(l) => {
                let txn = l.env.read_txn().unwrap_or_else(|e| l.broken("read txn", e));
                let iter = l
                    .table
                    .iter(&txn)
                    .unwrap_or_else(|e| l.broken("iterate", e));
                iter.map(|kv| {
                    let (k, v) = kv.unwrap_or_else(|e| l.broken("iterate", e));
                    let rev = revision_of(k).unwrap_or_else(|| {
                        panic!(
                            "kv store {}: a key of {} bytes in the values table",
                            l.dir.display(),
                            k.len()
                        )
                    });
                    (rev, v.to_vec())
                })
                .collect()
            }
        };
        out.extend(self.staged.iter().map(|(r, v)| (*r, v.clone())));
        out
    }
}

/// Closes the environment when the store goes: heed keeps every open
/// environment in a registry (one per path) until told it is closing, and
/// closes it when its last handle (the `env` field, dropped right after
/// this) goes, so the directory can be opened again at once.
impl Drop for Lmdb {
    fn drop(&mut self) {
        drop(self.env.clone().prepare_for_closing());
    }
}

impl Lmdb {
    /// Panics on an LMDB failure: a broken invariant of a replica.
    fn broken(&self, what: &str, e: heed::Error) -> ! {
        panic!(
            "kv store {}: LMDB failed to {what}: {e}; the replica stops rather than diverge \
             from the others (the directory is rebuilt from the checkpoint and the log at the \
             next start)",
            self.dir.display()
        )
    }

    /// Runs `work` in one write transaction and commits it; on a full map,
    /// grows the map and runs it again.
    fn write(
        &mut self,
        what: &str,
        work: impl Fn(&mut heed::RwTxn<'_>, &heed::Database<Bytes, Bytes>) -> heed::Result<()>,
    ) {
        loop {
            let result = self.env.write_txn().and_then(|mut txn| {
                work(&mut txn, &self.table)?;
                txn.commit()
            });
            match result {
                Ok(()) => return,
                Err(heed::Error::Mdb(heed::MdbError::MapFull)) => self.grow(what),
                Err(e) => self.broken(what, e),
            }
        }
    }

    /// Doubles the map (a commit found it full).
    fn grow(&mut self, what: &str) {
        let grown = self.map_size_bytes.saturating_mul(2);
        if grown > LMDB_MAP_BYTES_MAX {
            panic!(
                "kv store {}: the LMDB map is full at {} bytes while trying to {what}; the space \
                 quota should have refused writes long before",
                self.dir.display(),
                self.map_size_bytes
            );
        }
        let size = usize::try_from(grown).expect("a 64-bit address space");
        // SAFETY: LMDB allows a new map size when no transaction of this
        // process is open on the environment: the write transaction failed
        // and is gone, and readers exist only while the store is borrowed
        // (`Reader` borrows `Values`), which `&mut self` excludes.
        let resized = unsafe { self.env.resize(size) };
        resized.unwrap_or_else(|e| self.broken("grow the map", e));
        note_map_grown(&self.dir, grown);
        self.map_size_bytes = grown;
    }
}

/// The map grew: said on stderr (kv has no logging dependency), once per
/// doubling.
fn note_map_grown(dir: &Path, map_size_bytes: u64) {
    eprintln!(
        "kv store {}: LMDB map full, grown to {map_size_bytes} bytes",
        dir.display()
    );
}

/// Opens a fresh LMDB environment in `dir` (wiped first) with one table.
fn open_lmdb(dir: &Path, map_size_bytes: u64) -> Result<Lmdb, OpenError> {
    let err = |why: String| OpenError {
        path: dir.to_path_buf(),
        why,
    };
    // heed hands out the environment already open for a path instead of
    // a new one: wiping its files under it would corrupt a live store.
    if let Ok(canonical) = std::fs::canonicalize(dir) {
        if heed::env_closing_event(&canonical).is_some() {
            return Err(err(
                "a store of this process has it open (drop that store first)".to_string(),
            ));
        }
    }
    wipe(dir).map_err(err)?;
    std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create the directory: {e}")))?;
    // LMDB wants a multiple of the OS page size: round up to 1 MiB.
    let map_size_bytes = map_size_bytes.max(1).div_ceil(MAP_ALIGN_BYTES) * MAP_ALIGN_BYTES;
    let map_size = usize::try_from(map_size_bytes).map_err(|_| {
        err(format!(
            "map size {map_size_bytes} bytes does not fit the address space"
        ))
    })?;
    let mut options = heed::EnvOpenOptions::new();
    options
        .map_size(map_size)
        .max_dbs(1)
        .max_readers(MAX_READERS);
    // SAFETY: `MDB_NOSYNC` gives up durability, not memory safety; the
    // directory is a cache rebuilt at every start. The environment is
    // opened once per directory: a store owns its directory, and heed
    // refuses a second open of one path in a process.
    let env = unsafe {
        options.flags(heed::EnvFlags::NO_SYNC);
        options.open(dir)
    }
    .map_err(|e| err(format!("LMDB: {e}")))?;
    let mut txn = env.write_txn().map_err(|e| err(format!("LMDB: {e}")))?;
    let table = env
        .create_database::<Bytes, Bytes>(&mut txn, Some(VALUES_TABLE))
        .map_err(|e| err(format!("LMDB: {e}")))?;
    txn.commit().map_err(|e| err(format!("LMDB: {e}")))?;
    Ok(Lmdb {
        env,
        table,
        dir: dir.to_path_buf(),
        map_size_bytes,
    })
}

/// Bytes of values per write transaction when a store is loaded from a
/// snapshot ([`Values::load`]): 64 MiB, so a large restore does not build
/// one huge transaction.
const LOAD_TXN_BYTES_TARGET: usize = 64 << 20;

/// LMDB map sizes are rounded up to a multiple of this, bytes (1 MiB: a
/// multiple of every OS page size).
const MAP_ALIGN_BYTES: u64 = 1 << 20;

/// Readers an LMDB environment admits at once: every API thread that
/// holds the store's read lock reads through one read transaction.
const MAX_READERS: u32 = 1024;

/// Removes the LMDB environment in `dir`, if any. Refuses a directory that
/// holds anything else.
fn wipe(dir: &Path) -> Result<(), String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read the directory: {e}")),
    };
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read the directory: {e}"))?;
        let name = entry.file_name();
        if !LMDB_FILES.iter().any(|f| name == *f) {
            return Err(format!(
                "it holds {name:?}, which is not an LMDB file: refusing to wipe it"
            ));
        }
    }
    for f in LMDB_FILES {
        match std::fs::remove_file(dir.join(f)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {f}: {e}")),
        }
    }
    Ok(())
}

/// Reads values by revision (see [`Values::reader`]).
pub(crate) struct Reader<'a> {
    values: &'a Values,
    txn: OnceCell<heed::RoTxn<'a>>,
}

impl Reader<'_> {
    /// The value at `rev`. Panics if there is none (the index names only
    /// stored puts) or on an LMDB failure.
    pub(crate) fn get(&self, rev: Revision) -> &[u8] {
        if let Some(v) = self.values.staged.get(&rev) {
            return v;
        }
        match &self.values.kind {
            Kind::Heap(m) => m
                .get(&rev)
                .unwrap_or_else(|| panic!("no stored value at {rev:?}")),
            Kind::Lmdb(l) => {
                let txn = self.txn.get_or_init(|| {
                    l.env
                        .read_txn()
                        .unwrap_or_else(|e| l.broken("begin a read", e))
                });
                l.table
                    .get(txn, &lmdb_key(rev))
                    .unwrap_or_else(|e| l.broken("read a value", e))
                    .unwrap_or_else(|| {
                        panic!("kv store {}: no stored value at {rev:?}", l.dir.display())
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb::{CompactionRequest, PutRequest};
    use crate::{KvError, Store, DEFAULT_MAX_TXN_OPS};

    fn put(s: &mut Store, key: &[u8], value: Vec<u8>) -> Result<crate::Response, KvError> {
        s.apply(
            &PutRequest {
                key: key.to_vec(),
                value,
                ..Default::default()
            }
            .into(),
        )
    }

    fn lmdb(dir: &Path, map_size_bytes: u64) -> ValueBackend {
        ValueBackend::Lmdb {
            dir: dir.to_path_buf(),
            map_size_bytes,
        }
    }

    #[test]
    fn the_map_reserves_four_quotas_and_a_gibibyte() {
        assert_eq!(lmdb_map_size_bytes(1 << 20), (4 << 20) + (1 << 30));
        assert_eq!(
            lmdb_map_size_bytes(0),
            4 * DEFAULT_QUOTA_BACKEND_BYTES + (1 << 30),
            "0 is the default quota"
        );
    }

    #[test]
    fn opening_wipes_an_old_environment_and_starts_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("kv.lmdb");
        let backend = lmdb(&dir, 64 << 20);
        let mut s = Store::open(&backend, DEFAULT_MAX_TXN_OPS).unwrap();
        put(&mut s, b"a", vec![1; 100]).unwrap();
        assert_eq!(s.values.stored(), 1);
        drop(s);
        assert!(dir.join("data.mdb").exists());
        let s = Store::open(&backend, DEFAULT_MAX_TXN_OPS).unwrap();
        assert_eq!(s.values.stored(), 0);
        assert_eq!(s.values.all(), Vec::new(), "the old values are gone");
    }

    #[test]
    fn a_directory_with_other_files_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("precious"), b"x").unwrap();
        let e = Store::open(&lmdb(tmp.path(), 64 << 20), DEFAULT_MAX_TXN_OPS).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot open kv store at {}: ",
                tmp.path().display()
            )),
            "{text}"
        );
        assert!(text.contains("\"precious\""), "{text}");
        assert!(tmp.path().join("precious").exists());
    }

    #[test]
    fn a_path_that_cannot_be_a_directory_is_an_open_error() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let e =
            Store::open(&lmdb(&file.join("kv.lmdb"), 64 << 20), DEFAULT_MAX_TXN_OPS).unwrap_err();
        assert!(e.to_string().starts_with("cannot open kv store at "), "{e}");
    }

    #[test]
    fn a_directory_a_live_store_uses_is_not_opened_again() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = lmdb(&tmp.path().join("kv.lmdb"), 64 << 20);
        let mut first = Store::open(&backend, DEFAULT_MAX_TXN_OPS).unwrap();
        put(&mut first, b"a", b"v".to_vec()).unwrap();
        let e = Store::open(&backend, DEFAULT_MAX_TXN_OPS).unwrap_err();
        assert!(e.why.contains("has it open"), "{e}");
        // The first store is untouched.
        assert_eq!(first.values.all().len(), 1);
        drop(first);
        Store::open(&backend, DEFAULT_MAX_TXN_OPS).unwrap();
    }

    #[test]
    fn compaction_deletes_the_dropped_values_from_lmdb() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Store::open(&lmdb(&tmp.path().join("kv"), 64 << 20), 128).unwrap();
        for i in 0..10u8 {
            put(&mut s, b"a", vec![i; 3000]).unwrap();
            put(&mut s, &[b'k', i], vec![i; 10]).unwrap();
        }
        assert_eq!(s.values.stored(), 20);
        let rev = s.revision();
        s.apply(
            &CompactionRequest {
                revision: rev,
                physical: false,
            }
            .into(),
        )
        .unwrap();
        // "a" keeps its newest put, each "k<i>" its only one.
        assert_eq!(s.values.stored(), 11);
        let stored: Vec<Revision> = s.values.all().into_iter().map(|(r, _)| r).collect();
        assert_eq!(stored.len(), 11);
        assert_eq!(stored.last().unwrap().main, rev);
    }

    #[test]
    fn a_full_map_grows_and_the_write_goes_through() {
        let tmp = tempfile::tempdir().unwrap();
        // A map far below what the quota admits: only the growth keeps
        // the writes going.
        let mut s = Store::open(&lmdb(&tmp.path().join("kv"), 1 << 20), 128).unwrap();
        for i in 0..64u32 {
            put(&mut s, &i.to_be_bytes(), vec![7; 64 << 10]).unwrap();
        }
        let ValueBackend::Lmdb { map_size_bytes, .. } = s.value_backend() else {
            panic!("on LMDB");
        };
        assert!(map_size_bytes >= 4 << 20, "grown to {map_size_bytes}");
        assert_eq!(s.values.stored(), 64);
        let back = Store::restore(&s.snapshot()).unwrap();
        assert_eq!(back.state_digest(), s.state_digest());
    }

    #[test]
    fn the_quota_refuses_writes_with_nospace_before_the_map_fills() {
        let tmp = tempfile::tempdir().unwrap();
        let quota = 1 << 20;
        let mut s = Store::open(
            &ValueBackend::lmdb_for_quota(tmp.path().join("kv"), quota),
            128,
        )
        .unwrap();
        s.set_quota_bytes(quota);
        let mut refused = 0;
        for i in 0..200u32 {
            match put(&mut s, &i.to_be_bytes(), vec![1; 16 << 10]) {
                Ok(_) => assert_eq!(refused, 0, "nothing passes once the quota is reached"),
                Err(KvError::NoSpace) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(refused > 100, "the quota refused {refused} writes");
        assert!(s.size_bytes() <= quota);
        let ValueBackend::Lmdb { map_size_bytes, .. } = s.value_backend() else {
            panic!("on LMDB");
        };
        assert_eq!(
            map_size_bytes,
            lmdb_map_size_bytes(quota),
            "the map never filled"
        );
    }

    #[test]
    fn lmdb_keys_sort_by_revision() {
        let revs = [(2, 0), (2, 1), (2, 256), (3, 0), (256, 0), (1 << 40, 7)];
        let keys: Vec<[u8; KEY_BYTES]> = revs
            .iter()
            .map(|&(main, sub)| lmdb_key(Revision { main, sub }))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        for (k, &(main, sub)) in keys.iter().zip(&revs) {
            assert_eq!(revision_of(k), Some(Revision { main, sub }));
        }
        assert_eq!(revision_of(&keys[0][..11]), None);
    }
}
