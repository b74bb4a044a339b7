//! Maintenance.Snapshot: the replica's store streamed as etcd streams a
//! snapshot, and the file `etcdctl snapshot save` makes of it.
//!
//! etcd sends its bbolt file in chunks of [`SNAPSHOT_CHUNK_BYTES`], each
//! with `remaining_bytes` (blob bytes still to come after it), then one
//! last message whose blob is the sha256 of everything sent before.
//! `etcdctl snapshot save` writes the blobs to the file as they come and
//! accepts it only when its size is a multiple of 512 plus 32 (bbolt files
//! are page-aligned; the 32 are the checksum). bftd streams the same way;
//! its data is a bftd snapshot file (format version 1, big-endian):
//!
//! ```text
//! magic "BFTDSNAP" | version u32 = 1 | reserved u32 = 0 | payload length u64
//! payload: the kv store's snapshot (`kv::Store::snapshot`)
//! zero padding to a multiple of 512 bytes (header + payload + padding)
//! sha256 of all the bytes above (32 bytes; etcd's trailing checksum)
//! ```
//!
//! [`decode_file`] checks such a file (checksum, header, padding) and
//! returns the payload; `bftd init --from-snapshot` seeds a new cluster
//! from it. etcd's own snapshot files (bbolt databases) are refused by the
//! magic.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};

use kv::pb::etcdserverpb::{ResponseHeader, SnapshotResponse};
use sha2::{Digest, Sha256};
use tokio_stream::Stream;

/// Blob bytes per streamed message (etcd's `snapshotSendBufferSize`).
pub const SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;
/// The data before the checksum is a multiple of this (etcd's check in
/// `snapshot save`: file size % 512 == 32).
pub const FILE_ALIGN_BYTES: usize = 512;
/// Length of the trailing sha256.
pub const CHECKSUM_BYTES: usize = 32;
/// Length of the file header.
pub const HEADER_BYTES: usize = 24;
const MAGIC: &[u8; 8] = b"BFTDSNAP";
const VERSION: u32 = 1;

/// Why a snapshot file was refused. Each message says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotFileError {
    #[error(
        "{0} bytes is not the size of a snapshot file (a multiple of 512 bytes plus a 32-byte \
         sha256): the file is truncated or not a snapshot"
    )]
    Size(usize),
    #[error("sha256 checksum mismatch: the file is damaged")]
    Checksum,
    #[error(
        "not a bftd snapshot (no BFTDSNAP header); etcd's own snapshot files are bbolt \
         databases, which bftd does not read: save the snapshot from a bftd cluster"
    )]
    Magic,
    #[error("snapshot format version {0}: this bftd reads version {VERSION}")]
    Version(u32),
    #[error("bad snapshot header: {0}")]
    Header(String),
}

/// The data of a snapshot file (everything but the checksum), assembled
/// on the fly from the header, the kv snapshot and the padding, so the
/// payload is never copied whole a second time.
#[derive(Debug, Clone)]
pub struct SnapshotData {
    header: [u8; HEADER_BYTES],
    payload: Vec<u8>,
    len: usize,
}

impl SnapshotData {
    /// The file data around `payload` (a `kv::Store::snapshot`).
    pub fn new(payload: Vec<u8>) -> Self {
        let mut header = [0u8; HEADER_BYTES];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&VERSION.to_be_bytes());
        header[16..24].copy_from_slice(&(payload.len() as u64).to_be_bytes());
        let len = (HEADER_BYTES + payload.len()).next_multiple_of(FILE_ALIGN_BYTES);
        Self {
            header,
            payload,
            len,
        }
    }

    /// Bytes of data (a multiple of [`FILE_ALIGN_BYTES`]), checksum not
    /// counted.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: the header alone is data.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Copies data from offset `pos` into `out` (as much as fits and
    /// exists); returns the number of bytes copied.
    pub fn read_at(&self, pos: usize, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len.saturating_sub(pos));
        let mut done = 0;
        // Three parts in order: header, payload, zero padding.
        let parts: [(usize, &[u8]); 2] = [(0, &self.header), (HEADER_BYTES, &self.payload)];
        for (part_start, part) in parts {
            let start = pos + done;
            if done == n || start >= part_start + part.len() {
                continue;
            }
            let from = start - part_start;
            let k = (part.len() - from).min(n - done);
            out[done..done + k].copy_from_slice(&part[from..from + k]);
            done += k;
        }
        out[done..n].fill(0);
        n
    }

    /// The whole file: data then its sha256.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.len];
        self.read_at(0, &mut out);
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }
}

/// Checks a snapshot file (size, checksum, header, padding) and returns
/// its payload (a `kv::Store::snapshot`, still to be decoded) and its
/// sha256 checksum (the file's last 32 bytes).
///
/// # Errors
/// [`SnapshotFileError`] says which check failed.
pub fn decode_file(file: &[u8]) -> Result<(&[u8], [u8; CHECKSUM_BYTES]), SnapshotFileError> {
    let n = file.len();
    if n % FILE_ALIGN_BYTES != CHECKSUM_BYTES || n < FILE_ALIGN_BYTES + CHECKSUM_BYTES {
        return Err(SnapshotFileError::Size(n));
    }
    let (data, sum) = file.split_at(n - CHECKSUM_BYTES);
    if Sha256::digest(data).as_slice() != sum {
        return Err(SnapshotFileError::Checksum);
    }
    if &data[..8] != MAGIC {
        return Err(SnapshotFileError::Magic);
    }
    let word = |at: usize| u32::from_be_bytes(data[at..at + 4].try_into().expect("4 bytes"));
    let version = word(8);
    if version != VERSION {
        return Err(SnapshotFileError::Version(version));
    }
    if word(12) != 0 {
        return Err(SnapshotFileError::Header(
            "reserved field is not zero".into(),
        ));
    }
    let len = u64::from_be_bytes(data[16..24].try_into().expect("8 bytes"));
    let room = (data.len() - HEADER_BYTES) as u64;
    if len > room || room - len >= FILE_ALIGN_BYTES as u64 {
        return Err(SnapshotFileError::Header(format!(
            "payload length {len} does not fit the file's {room} bytes after the header"
        )));
    }
    let (payload, padding) = data[HEADER_BYTES..].split_at(len as usize);
    if padding.iter().any(|&b| b != 0) {
        return Err(SnapshotFileError::Header("padding is not zero".into()));
    }
    let mut checksum = [0u8; CHECKSUM_BYTES];
    checksum.copy_from_slice(sum);
    Ok((payload, checksum))
}

/// Most Snapshot streams this process sends at once (etcd: no limit).
/// Each holds a copy of the store until its client has it all; one more
/// fails with ResourceExhausted ("etcdserver: too many requests").
pub const SNAPSHOTS_IN_FLIGHT_MAX: usize = 2;

/// A count of snapshot streams in flight, with a bound.
#[derive(Debug)]
pub struct SnapshotSlots {
    in_flight: AtomicUsize,
    max: usize,
}

/// The process's slots: [`SNAPSHOTS_IN_FLIGHT_MAX`].
pub static SNAPSHOT_SLOTS: SnapshotSlots = SnapshotSlots::new(SNAPSHOTS_IN_FLIGHT_MAX);

impl SnapshotSlots {
    /// Slots for at most `max` streams.
    pub const fn new(max: usize) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            max,
        }
    }

    /// A slot, held until the returned guard is dropped; `None` when all
    /// `max` are taken.
    pub fn take(&'static self) -> Option<SnapshotSlot> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| SnapshotSlot(self))
    }
}

/// One taken slot of [`SnapshotSlots`]; dropping it frees the slot.
#[derive(Debug)]
pub struct SnapshotSlot(&'static SnapshotSlots);

impl Drop for SnapshotSlot {
    fn drop(&mut self) {
        let before = self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        assert!(before > 0);
    }
}

/// The messages of one Snapshot stream, made as they are sent: chunks of
/// at most [`SNAPSHOT_CHUNK_BYTES`] (the first carries `header`), then the
/// sha256 with `remaining_bytes` 0. Holds the snapshot, never more than
/// one chunk besides.
struct Chunks {
    data: SnapshotData,
    header: Option<ResponseHeader>,
    sent: usize,
    hasher: Option<Sha256>,
    /// Freed when the stream ends or its client goes away.
    _slot: SnapshotSlot,
}

impl Iterator for Chunks {
    type Item = SnapshotResponse;

    fn next(&mut self) -> Option<SnapshotResponse> {
        let header = self.header.take();
        if self.sent < self.data.len() {
            let mut blob = vec![0u8; SNAPSHOT_CHUNK_BYTES.min(self.data.len() - self.sent)];
            let n = self.data.read_at(self.sent, &mut blob);
            assert_eq!(n, blob.len());
            self.sent += n;
            self.hasher.as_mut().expect("hashing").update(&blob);
            return Some(SnapshotResponse {
                header,
                remaining_bytes: (self.data.len() - self.sent) as u64,
                blob,
            });
        }
        let sum = self.hasher.take()?.finalize();
        Some(SnapshotResponse {
            header,
            remaining_bytes: 0,
            blob: sum.to_vec(),
        })
    }
}

/// A Snapshot stream's messages.
pub type SnapshotStream =
    Pin<Box<dyn Stream<Item = Result<SnapshotResponse, tonic::Status>> + Send>>;

/// The Snapshot stream of a store whose `kv::Store::snapshot` is
/// `payload`, taken at the revision in `header`; it holds `slot` until it
/// is dropped.
pub fn stream(payload: Vec<u8>, header: ResponseHeader, slot: SnapshotSlot) -> SnapshotStream {
    let chunks = Chunks {
        data: SnapshotData::new(payload),
        header: Some(header),
        sent: 0,
        hasher: Some(Sha256::new()),
        _slot: slot,
    };
    Box::pin(tokio_stream::iter(chunks.map(Ok)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(keys: usize) -> kv::Store {
        let mut s = kv::Store::new();
        for i in 0..keys {
            let put = kv::pb::etcdserverpb::PutRequest {
                key: format!("k{i:05}").into(),
                value: vec![b'v'; 100],
                ..Default::default()
            };
            s.apply(&put.into()).unwrap();
        }
        s
    }

    #[test]
    fn a_file_holds_the_store_and_has_the_size_etcdctl_accepts() {
        for keys in [0, 1, 3, 500] {
            let s = store_with(keys);
            let data = SnapshotData::new(s.snapshot());
            let file = data.to_file_bytes();
            assert_eq!(file.len() % FILE_ALIGN_BYTES, CHECKSUM_BYTES);
            let payload = s.snapshot();
            assert_eq!(&file[..8], MAGIC);
            assert_eq!(
                &file[HEADER_BYTES..HEADER_BYTES + payload.len()],
                &payload[..]
            );
            // Reads at any offset agree with the whole.
            for pos in [0, 5, 23, 24, 25, file.len() - 40] {
                let mut buf = vec![9u8; 37];
                let n = data.read_at(pos, &mut buf);
                assert_eq!(buf[..n], file[pos..pos + n]);
            }
            let (payload, sum) = decode_file(&file).unwrap();
            assert_eq!(sum.as_slice(), &file[file.len() - 32..]);
            let back = kv::Store::restore(payload).unwrap();
            assert_eq!(back.state_digest(), s.state_digest());
            assert_eq!(back.revision(), keys as i64 + 1);
        }
    }

    #[test]
    fn damaged_truncated_and_foreign_files_are_refused_with_the_reason() {
        let file = SnapshotData::new(store_with(3).snapshot()).to_file_bytes();
        assert_eq!(
            decode_file(&file[..file.len() - 1]),
            Err(SnapshotFileError::Size(file.len() - 1))
        );
        assert_eq!(decode_file(&[]), Err(SnapshotFileError::Size(0)));
        let mut bad = file.clone();
        bad[100] ^= 1;
        assert_eq!(decode_file(&bad), Err(SnapshotFileError::Checksum));
        // A well-formed file of another kind (as etcd's, with a valid
        // checksum): refused by the magic.
        let mut foreign = vec![0u8; 1024];
        foreign[..6].copy_from_slice(b"bolt\0\0");
        let sum = Sha256::digest(&foreign);
        foreign.extend_from_slice(&sum);
        let err = decode_file(&foreign).unwrap_err();
        assert_eq!(err, SnapshotFileError::Magic);
        assert!(err.to_string().contains("bbolt"), "{err}");
        // A header whose length points past the data, with a fixed-up sum.
        let mut long = file.clone();
        let n = long.len() - 32;
        long[16..24].copy_from_slice(&(n as u64).to_be_bytes());
        let sum = Sha256::digest(&long[..n]);
        long[n..].copy_from_slice(&sum);
        assert!(matches!(
            decode_file(&long),
            Err(SnapshotFileError::Header(_))
        ));
    }

    /// Maintenance.Snapshot and Defragment over loopback, with a third-party
    /// client (etcd-client), as `etcdctl snapshot save` and `defrag` use them.
    #[tokio::test]
    async fn a_client_saves_a_snapshot_that_restores_the_served_store_and_defragment_succeeds() {
        use std::sync::Arc;
        let backend = Arc::new(crate::grpc::tests::one_store(u64::MAX));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = crate::ApiLimits::default();
        let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(crate::serve_grpc(
            listener,
            backend.clone(),
            limits,
            crate::client_port::ConnTable::new(&limits),
            async move {
                let _ = stopped.await;
            },
        ));
        let mut c = etcd_client::Client::connect([addr.to_string()], None)
            .await
            .unwrap();
        // ~200 KiB of values, some history and a compaction.
        for i in 0..200 {
            c.put(format!("k{i:03}"), vec![b'x'; 1000], None)
                .await
                .unwrap();
        }
        c.put("k000", "new", None).await.unwrap();
        c.delete("k001", None).await.unwrap();
        c.compact(100, None).await.unwrap();
        let d = c.defragment().await.unwrap();
        assert_eq!(d.header().unwrap().revision(), 203);

        let mut s = c.snapshot().await.unwrap();
        let mut file = Vec::new();
        let mut msgs = 0;
        let mut first_rev = None;
        while let Some(m) = s.message().await.unwrap() {
            if msgs == 0 {
                first_rev = m.header().map(|h| h.revision());
            }
            msgs += 1;
            assert!(m.blob().len() <= SNAPSHOT_CHUNK_BYTES);
            file.extend_from_slice(m.blob());
        }
        assert!(msgs > 7, "{msgs} messages");
        assert_eq!(first_rev, Some(203));
        // What etcdctl checks before it keeps the file.
        assert_eq!(file.len() % 512, 32);
        let (payload, _) = decode_file(&file).unwrap();
        let restored = kv::Store::restore(payload).unwrap();
        let served = backend.store.lock().unwrap();
        assert_eq!(restored.state_digest(), served.state_digest());
        assert_eq!(restored.revision(), 203);
        assert_eq!(restored.compact_revision(), 100);
    }

    #[tokio::test]
    async fn the_stream_sends_bounded_chunks_with_remaining_bytes_then_the_sha256() {
        use tokio_stream::StreamExt;
        let payload = store_with(1000).snapshot();
        let data = SnapshotData::new(payload.clone());
        let slots = Box::leak(Box::new(SnapshotSlots::new(1)));
        let mut s = stream(payload, ResponseHeader::default(), slots.take().unwrap());
        assert!(slots.take().is_none(), "one stream holds the only slot");
        let mut got = Vec::new();
        let mut msgs = Vec::new();
        while let Some(m) = s.next().await {
            msgs.push(m.unwrap());
        }
        assert!(msgs.len() >= 4, "{}", msgs.len());
        assert!(msgs[0].header.is_some());
        let (last, chunks) = msgs.split_last().unwrap();
        for m in chunks {
            assert!(!m.blob.is_empty() && m.blob.len() <= SNAPSHOT_CHUNK_BYTES);
            got.extend_from_slice(&m.blob);
            assert_eq!(m.remaining_bytes as usize, data.len() - got.len());
        }
        assert_eq!(last.remaining_bytes, 0);
        assert_eq!(last.blob, Sha256::digest(&got).to_vec());
        got.extend_from_slice(&last.blob);
        assert_eq!(got, data.to_file_bytes());
        drop(s);
        assert!(slots.take().is_some(), "a finished stream frees its slot");
    }
}
