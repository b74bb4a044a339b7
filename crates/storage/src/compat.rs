//! [`Wal`]: the old append-only interface, kept so that
//! `bftd/src/replica/storage_thread.rs` builds until it moves to
//! [`Storage`]. Remove it then.

use std::path::Path;

use wire::codec::Reader;

use crate::{Durability, Limits, Record, Storage, StorageError};

/// Record kind the old interface wrote for a proposed batch.
const OLD_KIND_PROPOSAL: u8 = 1;

/// The old interface over [`Storage`]: `append(1, cid u64 | regency u32 |
/// batch)` becomes a [`Record::Proposal`]. What is recovered at open is
/// dropped, as before.
pub struct Wal {
    storage: Storage,
    /// The first append error, reported by the next `sync`.
    error: Option<StorageError>,
}

impl Wal {
    /// Opens [`Storage`] in `dir` with `Durability::Fsync` and default
    /// limits. Errors: see [`Storage::open`].
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let (storage, _recovered) = Storage::open(dir, Durability::Fsync, Limits::default())?;
        Ok(Wal {
            storage,
            error: None,
        })
    }

    /// Buffers one proposal. Panics on any other kind or a payload that is
    /// not `cid u64 | regency u32 | batch` (a bug in the caller).
    pub fn append(&mut self, kind: u8, payload: &[u8]) {
        assert_eq!(kind, OLD_KIND_PROPOSAL, "Wal only takes proposals");
        let mut r = Reader::new(payload);
        let cid = r.u64().expect("proposal payload starts with a cid");
        let regency = r.u32().expect("proposal payload has a regency");
        let batch = r.raw(r.remaining()).expect("rest is the batch").to_vec();
        let record = Record::Proposal {
            regency,
            cid,
            batch,
        };
        let result = match self.storage.append(&record) {
            Err(StorageError::GroupFull { .. }) => self
                .storage
                .sync()
                .and_then(|_| self.storage.append(&record)),
            other => other,
        };
        if let Err(e) = result {
            self.error.get_or_insert(e);
        }
    }

    /// Writes and fsyncs every buffered proposal.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.storage.sync().map(|_| ())
    }
}
