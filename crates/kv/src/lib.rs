//! `kv`: bftd's replicated state machine — an MVCC key-value store with the
//! semantics of etcd v3.4/v3.5 — and the etcd v3 protobuf types.
//!
//! - [`pb`]: prost types generated from `proto/` (etcd's `etcdserverpb`
//!   and `mvccpb`, wire-compatible with etcd; bftd's `bftdkv` commands).
//!   The `api` crate compiles the same files for the tonic services with
//!   `extern_path(".etcdserverpb", "::kv::pb::etcdserverpb")` and
//!   `extern_path(".mvccpb", "::kv::pb::mvccpb")`.
//! - [`Store`]: revisions, per-key history, Range/Put/DeleteRange/Txn/
//!   Compaction as etcd's `server/mvcc` and `etcdserver/apply.go` do them;
//!   [`Store::validate`] is etcd's gRPC-side request checking.
//! - [`KvError`]: etcd's error strings and gRPC codes.
//! - The space quota (etcd's `--quota-backend-bytes`): [`Store::size_bytes`],
//!   [`Store::set_quota_bytes`], [`KvError::NoSpace`].
//! - [`command`]: the replicated [`Command`] and batch encoding.
//! - Snapshots, the state digest and HashKV: [`Store::snapshot`],
//!   [`Store::restore`], [`Store::state_digest`] (kept as writes execute,
//!   over the revision ranges of [`digest`]), [`Store::hash_kv`].
//! - Where values live: [`ValueBackend`] (the heap, or LMDB keyed by
//!   revision as etcd's bbolt `key` bucket), [`Store::open`],
//!   [`Store::restore_on`]; the key index stays in the heap.
//! - Watch reads: [`Store::watch_events`], the changes of a key range
//!   from a revision on (etcd's watchable store), from a revision index.
//!
//! Everything here is deterministic: the same commands in the same order
//! give byte-identical responses and digests on every replica.

mod alarm;
pub mod auth;
pub mod command;
pub mod digest;
pub mod error;
pub mod lease;
mod snapshot;
mod store;
mod validate;
mod values;
mod watch;

/// Types generated from `proto/` by prost (see `build.rs`).
///
/// The tonic services in `proto/etcdserverpb/rpc.proto` (KV, Watch, Lease,
/// Cluster, Maintenance) are not generated here. A crate serving them
/// compiles the same file with its messages mapped to these types; this
/// `build.rs` is checked to build working servers and clients:
///
/// ```text
/// let mut config = tonic_prost_build::Config::new();
/// config.protoc_executable(protoc_bin_vendored::protoc_bin_path().unwrap());
/// tonic_prost_build::configure()
///     .build_server(true)
///     .build_client(false)
///     .extern_path(".etcdserverpb", "::kv::pb::etcdserverpb")
///     .extern_path(".mvccpb", "::kv::pb::mvccpb")
///     .compile_with_config(config, &["../kv/proto/etcdserverpb/rpc.proto"], &["../kv/proto"])
///     .unwrap();
/// // then: pub mod etcdserverpb { tonic::include_proto!("etcdserverpb"); }
/// ```
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod pb {
    /// etcd's `mvccpb` package: `KeyValue`, `Event`.
    pub mod mvccpb {
        include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
        include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
    }
    /// etcd's `authpb` package: `User`, `Role`, `Permission`.
    pub mod authpb {
        include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
        include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
    }
    /// etcd's `etcdserverpb` package: requests, responses and enums of the
    /// KV, Watch, Lease, Cluster, Maintenance and Auth services.
    pub mod etcdserverpb {
        include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
        include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
    }
    /// bftd's replicated commands: `Command`, `CommandBatch`.
    pub mod bftdkv {
        include!(concat!(env!("OUT_DIR"), "/bftdkv.rs"));
    }
}

pub use command::{decode_batch, encode_batch};
pub use error::KvError;
pub use lease::LeaseInfo;
pub use pb::bftdkv::Command;
pub use snapshot::LoadError;
pub use store::{
    Response, Store, DEFAULT_MAX_TXN_OPS, DEFAULT_QUOTA_BACKEND_BYTES,
    DEFAULT_RANGE_RESPONSE_BYTES_MAX, ENTRY_OVERHEAD_BYTES,
};
pub use values::{
    lmdb_map_size_bytes, OpenError, ValueBackend, LMDB_MAP_HEADROOM_BYTES, LMDB_MAP_QUOTA_FACTOR,
};
pub use watch::{EventPage, WatchCompacted};
pub use wire::{DecodeError, Digest};
