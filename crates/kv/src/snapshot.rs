//! The canonical encoding of a [`Store`]'s logical state: snapshots for
//! checkpoints and state transfer, the state digest, and the HashKV hash.
//!
//! Snapshot format, version 4 (big-endian, lengths and counts `u32`):
//!
//! ```text
//! magic "bftdkv" | version u8 = 4
//! current_revision i64 | compact_revision i64 | key count u32
//! per key, ascending:  key bytes | entry count u32 | entries
//! per entry, ascending (main, sub):
//!   main i64 | sub i64 | kind u8 (0 put, 1 tombstone)
//!   put only: create_revision i64 | version i64 | lease i64 | value bytes
//! lease_epoch u64 | lease count u32
//! per lease, ascending id (never 0): id i64 | ttl_s i64 | epoch u64
//!   | voter count u32 | voters u16, ascending
//! alarm count u32 | per alarm, ascending: member_id u64 | alarm u32
//! auth enabled u8 | auth revision u64 | user count u32
//! per user, ascending name: name bytes | password hash bytes
//!   | no_password u8 | role count u32 | role names bytes, ascending
//! role count u32 | per role, ascending name: name bytes
//!   | permission count u32 | per permission, ascending (key, range_end):
//!   key bytes | range_end bytes | kind u8 (0 read, 1 write, 2 both)
//! digest range count u32 | per range, ascending: start i64
//! ```
//!
//! Version 3 (written before digest ranges) is the same without the range
//! starts: they are cut afresh from the entries in revision order, as the
//! store cuts them while executing ([`crate::digest`]). Version 2 (before
//! auth) also lacks the auth part, and version 1 (before leases and
//! alarms) also the lease and alarm parts; all still restore, with what
//! they lack empty.
//!
//! The encoding is a function of the replicated state alone (no
//! capacities, no configuration: neither the txn-ops limit nor the space
//! quota), so equal states give equal bytes. [`Store::state_digest`] is not
//! a hash of these bytes: it is kept as writes execute
//! ([`crate::digest`]) and costs no pass over the store.

use std::collections::BTreeMap;

use wire::codec::Reader as WireReader;
use wire::hash::{Digest, Hasher};
use wire::DecodeError;

use crate::error::KvError;
use crate::store::{
    entry_bytes, Entry, Event, History, PutEvent, Revision, Store, DEFAULT_MAX_TXN_OPS,
};
use crate::values::{OpenError, Reader, ValueBackend, Values};

const MAGIC: &[u8; 6] = b"bftdkv";
const VERSION: u8 = 4;
/// Snapshots written before digest ranges existed.
const VERSION_NO_RANGES: u8 = 3;
/// Snapshots written before auth existed.
const VERSION_NO_AUTH: u8 = 2;
/// Snapshots written before leases existed.
const VERSION_NO_LEASES: u8 = 1;
const KIND_PUT: u8 = 0;
const KIND_TOMBSTONE: u8 = 1;
/// Revisions above this are refused on restore, so `+ 1` never overflows.
const REVISION_MAX: i64 = 1 << 62;
/// Smallest encoded entry: main, sub, kind.
const ENTRY_BYTES_MIN: usize = 8 + 8 + 1;
/// Smallest encoded key: key length, one key byte, entry count, one entry.
const KEY_BYTES_MIN: usize = 4 + 1 + 4 + ENTRY_BYTES_MIN;
/// Domain separation of the HashKV hash from other BLAKE3 uses.
const HASH_KV_DOMAIN: &[u8] = b"bftd kv hashkv v1";
/// Domain separation of the state digest from other BLAKE3 uses.
const STATE_DOMAIN: &[u8] = b"bftd kv state v4";

/// Where encoded bytes go: a buffer (snapshot) or a hasher (digests).
trait Sink {
    fn put(&mut self, bytes: &[u8]);
    fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }
    fn u32(&mut self, v: u32) {
        self.put(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.put(&v.to_be_bytes());
    }
    fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("fewer than 2^32 items"));
    }
    fn bytes(&mut self, v: &[u8]) {
        self.count(v.len());
        self.put(v);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for Hasher {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// Feeds a BLAKE3 hasher in XOF mode (entry hashes, `crate::digest`).
struct Xof<'a>(&'a mut blake3::Hasher);

impl Sink for Xof<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Feeds `h` the canonical encoding of entry `e` of `key` with `value`
/// (ignored for a tombstone): the key (length-prefixed) and the entry as a
/// snapshot encodes it.
pub(crate) fn feed_keyed_entry(h: &mut blake3::Hasher, key: &[u8], e: &Entry, value: &[u8]) {
    let mut out = Xof(h);
    out.bytes(key);
    encode_entry(&mut out, e, value);
}

/// The value of entry `e` as `values` holds it (empty for a tombstone).
fn value_of<'a>(values: &'a Reader<'_>, e: &Entry) -> &'a [u8] {
    match e.event {
        Event::Put(_) => values.get(e.rev),
        Event::Tombstone => &[],
    }
}

fn encode_entry(out: &mut impl Sink, e: &Entry, value: &[u8]) {
    out.i64(e.rev.main);
    out.i64(e.rev.sub);
    match &e.event {
        Event::Put(p) => {
            out.u8(KIND_PUT);
            out.i64(p.create_revision);
            out.i64(p.version);
            out.i64(p.lease);
            assert_eq!(
                value.len(),
                p.value_bytes as usize,
                "the value has its indexed length"
            );
            out.bytes(value);
        }
        Event::Tombstone => out.u8(KIND_TOMBSTONE),
    }
}

fn encode_store(store: &Store, out: &mut impl Sink) {
    out.put(MAGIC);
    out.u8(VERSION);
    out.i64(store.current_revision);
    out.i64(store.compact_revision);
    out.count(store.keys.len());
    let values = store.values.reader();
    for (key, history) in &store.keys {
        out.bytes(key);
        out.count(history.entries.len());
        for e in &history.entries {
            encode_entry(out, e, value_of(&values, e));
        }
    }
    encode_small_state(store, out);
    out.count(store.ranges.ranges().len());
    for r in store.ranges.ranges() {
        out.i64(r.start);
    }
}

/// Leases, alarms and auth: the parts of the state kept whole in the heap
/// (a snapshot encodes them between the keys and the range starts; the
/// state digest hashes them at every call).
fn encode_small_state(store: &Store, out: &mut impl Sink) {
    out.i64(store.lease_epoch as i64);
    out.count(store.leases.len());
    for (id, ttl_s, epoch, voters) in store.lease_rows() {
        out.i64(id);
        out.i64(ttl_s);
        out.i64(epoch as i64);
        out.count(voters.len());
        for v in voters {
            out.put(&v.to_be_bytes());
        }
    }
    out.count(store.alarms.len());
    for &(member_id, alarm) in &store.alarms {
        out.i64(member_id as i64);
        out.u32(alarm as u32);
    }
    let auth = &*store.auth;
    out.u8(u8::from(auth.enabled));
    out.i64(auth.revision as i64);
    out.count(auth.users.len());
    for (name, u) in &auth.users {
        out.bytes(name.as_bytes());
        out.bytes(u.password_hash.as_bytes());
        out.u8(u8::from(u.no_password));
        out.count(u.roles.len());
        for r in &u.roles {
            out.bytes(r.as_bytes());
        }
    }
    out.count(auth.roles.len());
    for (name, perms) in &auth.roles {
        out.bytes(name.as_bytes());
        out.count(perms.len());
        for p in perms {
            out.bytes(&p.key);
            out.bytes(&p.range_end);
            out.u8(p.kind as u8);
        }
    }
}

/// Decodes the auth part of a version-3 snapshot, checking what the store
/// keeps true: names UTF-8 and ascending, permissions ascending with a
/// known kind, and auth enabled only with a root user holding the root
/// role.
fn decode_auth(r: &mut WireReader<'_>) -> Result<crate::auth::AuthStore, DecodeError> {
    use crate::auth::{AuthStore, PermKind, Permission, User, ROOT_ROLE, ROOT_USER};
    let bad = DecodeError::Invalid("kv snapshot: auth");
    let text = |r: &mut WireReader<'_>, what| -> Result<String, DecodeError> {
        String::from_utf8(r.bytes(what, usize::MAX)?.to_vec())
            .map_err(|_| DecodeError::Invalid("kv snapshot: auth name not UTF-8"))
    };
    let mut a = AuthStore {
        enabled: match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(bad),
        },
        revision: r.u64()?,
        ..Default::default()
    };
    let n = r.count("users", usize::MAX, 4 + 4 + 1 + 4)?;
    for _ in 0..n {
        let name = text(r, "user name")?;
        let password_hash = text(r, "password hash")?;
        let no_password = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(bad),
        };
        let k = r.count("user roles", usize::MAX, 4)?;
        let mut roles = std::collections::BTreeSet::new();
        for _ in 0..k {
            let role = text(r, "role name")?;
            if roles.last().is_some_and(|l: &String| *l >= role) {
                return Err(bad);
            }
            roles.insert(role);
        }
        if a.users.last_key_value().is_some_and(|(l, _)| *l >= name) {
            return Err(bad);
        }
        a.users.insert(
            name,
            User {
                password_hash,
                roles,
                no_password,
            },
        );
    }
    let n = r.count("roles", usize::MAX, 4 + 4)?;
    for _ in 0..n {
        let name = text(r, "role name")?;
        let k = r.count("permissions", usize::MAX, 4 + 4 + 1)?;
        let mut perms: Vec<Permission> = Vec::with_capacity(k);
        for _ in 0..k {
            let key = r.bytes("permission key", usize::MAX)?.to_vec();
            let range_end = r.bytes("permission range end", usize::MAX)?.to_vec();
            let kind = PermKind::from_i32(i32::from(r.u8()?)).ok_or(bad.clone())?;
            if perms
                .last()
                .is_some_and(|l| (&l.key, &l.range_end) >= (&key, &range_end))
            {
                return Err(bad);
            }
            perms.push(Permission {
                key,
                range_end,
                kind,
            });
        }
        if a.roles.last_key_value().is_some_and(|(l, _)| *l >= name) {
            return Err(bad);
        }
        a.roles.insert(name, perms);
    }
    if a.enabled
        && !a
            .users
            .get(ROOT_USER)
            .is_some_and(|u| u.roles.contains(ROOT_ROLE))
    {
        return Err(bad);
    }
    Ok(a)
}

/// The value of every put of a decoded snapshot, by revision, borrowed
/// from the snapshot's bytes.
type PutValues<'a> = Vec<(Revision, &'a [u8])>;

/// Why a snapshot could not be restored on a value backend
/// ([`Store::restore_on`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The snapshot does not decode or breaks a store invariant.
    #[error("{0}")]
    Decode(DecodeError),
    /// The value backend cannot be opened.
    #[error("{0}")]
    Open(OpenError),
}

/// Decodes the alarm part of a version-2 snapshot.
fn decode_alarms(
    r: &mut WireReader<'_>,
) -> Result<std::collections::BTreeSet<(u64, i32)>, DecodeError> {
    let n = r.count("alarms", usize::MAX, 8 + 4)?;
    let mut alarms = std::collections::BTreeSet::new();
    let mut last = None;
    for _ in 0..n {
        let a = (r.u64()?, r.u32()? as i32);
        if last.is_some_and(|l| l >= a) {
            return Err(DecodeError::Invalid("kv snapshot: alarms not ascending"));
        }
        last = Some(a);
        alarms.insert(a);
    }
    Ok(alarms)
}

/// Decodes the lease part of a version-2 snapshot (see the module docs).
fn decode_leases(
    r: &mut WireReader<'_>,
) -> Result<(u64, Vec<crate::lease::LeaseRow>), DecodeError> {
    use crate::lease::{MAX_LEASE_TTL_S, MIN_LEASE_TTL_S};
    let bad = DecodeError::Invalid("kv snapshot: lease table");
    let epoch_max = r.u64()?;
    let n = r.count("leases", usize::MAX, 8 + 8 + 8 + 4)?;
    let mut rows = Vec::with_capacity(n);
    let mut last_id: Option<i64> = None;
    for _ in 0..n {
        let id = i64_field(r)?;
        let ttl_s = i64_field(r)?;
        let epoch = r.u64()?;
        if id == 0
            || last_id.is_some_and(|l| id <= l)
            || !(MIN_LEASE_TTL_S..=MAX_LEASE_TTL_S).contains(&ttl_s)
            || epoch > epoch_max
        {
            return Err(bad);
        }
        last_id = Some(id);
        let k = r.count("lease voters", usize::MAX, 2)?;
        let mut voters = Vec::with_capacity(k);
        for _ in 0..k {
            let v = r.u16()?;
            if voters.last().is_some_and(|l| *l >= v) {
                return Err(bad);
            }
            voters.push(v);
        }
        rows.push((id, ttl_s, epoch, voters));
    }
    Ok((epoch_max, rows))
}

fn i64_field(r: &mut WireReader<'_>) -> Result<i64, DecodeError> {
    Ok(r.u64()? as i64)
}

/// One entry and, for a put, its value (borrowed from the snapshot).
fn decode_entry<'a>(r: &mut WireReader<'a>) -> Result<(Entry, Option<&'a [u8]>), DecodeError> {
    let main = i64_field(r)?;
    let sub = i64_field(r)?;
    let mut value = None;
    let event = match r.u8()? {
        KIND_PUT => {
            let create_revision = i64_field(r)?;
            let version = i64_field(r)?;
            let lease = i64_field(r)?;
            let v = r.bytes("value", usize::MAX)?;
            let value_bytes = u32::try_from(v.len())
                .map_err(|_| DecodeError::Invalid("kv snapshot: value of 4 GiB or more"))?;
            value = Some(v);
            Event::Put(PutEvent {
                create_revision,
                version,
                lease,
                value_bytes,
            })
        }
        KIND_TOMBSTONE => Event::Tombstone,
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "kv event",
                tag,
            })
        }
    };
    Ok((
        Entry {
            rev: Revision { main, sub },
            event,
        },
        value,
    ))
}

/// Checks the invariants [`Store`] keeps for one key's history (see
/// [`History`]), so a restored store behaves as one built by commands.
fn check_history(entries: &[Entry], current: i64, compact: i64) -> Result<(), DecodeError> {
    let Some(first) = entries.first() else {
        return Err(DecodeError::Invalid("kv snapshot: key without history"));
    };
    let mut prev: Option<&Entry> = None;
    for e in entries {
        let Revision { main, sub } = e.rev;
        if main < 2 || main > current || sub < 0 {
            return Err(DecodeError::Invalid("kv snapshot: revision out of range"));
        }
        if let Some(p) = prev {
            if p.rev >= e.rev {
                return Err(DecodeError::Invalid("kv snapshot: revisions not ascending"));
            }
            if main <= compact {
                return Err(DecodeError::Invalid(
                    "kv snapshot: history below compaction",
                ));
            }
        }
        match (&e.event, prev.map(|p| &p.event)) {
            (Event::Tombstone, None) => {
                return Err(DecodeError::Invalid(
                    "kv snapshot: history starts with a delete",
                ))
            }
            (Event::Tombstone, Some(Event::Tombstone)) => {
                return Err(DecodeError::Invalid("kv snapshot: delete of a deleted key"))
            }
            (Event::Tombstone, Some(Event::Put(_))) => {}
            (Event::Put(put), before) => {
                let fresh = PutEvent {
                    create_revision: main,
                    version: 1,
                    ..put.clone()
                };
                let ok = match before {
                    Some(Event::Put(b)) => {
                        put.create_revision == b.create_revision && put.version == b.version + 1
                    }
                    Some(Event::Tombstone) => *put == fresh,
                    // The oldest retained put: a creation, or the survivor
                    // of a compaction.
                    None => {
                        *put == fresh
                            || (main <= compact
                                && (1..=main).contains(&put.create_revision)
                                && (1..=main).contains(&put.version))
                    }
                };
                if !ok {
                    return Err(DecodeError::Invalid(
                        "kv snapshot: inconsistent key version",
                    ));
                }
            }
        }
        prev = Some(e);
    }
    debug_assert!(matches!(first.event, Event::Put(_)));
    Ok(())
}

impl Store {
    /// The canonical encoding of the whole logical state (current and
    /// compaction revisions, every key's retained history), for checkpoints
    /// and state transfer. Equal states give equal bytes. The txn-ops limit
    /// is configuration and is not included.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        encode_store(self, &mut out);
        out
    }

    /// A store from [`Store::snapshot`] bytes, with the default txn-ops
    /// limit and the default space quota. See
    /// [`Store::restore_with_max_txn_ops`].
    pub fn restore(bytes: &[u8]) -> Result<Store, DecodeError> {
        Self::restore_with_max_txn_ops(bytes, DEFAULT_MAX_TXN_OPS)
    }

    /// A store from [`Store::snapshot`] bytes. Checks the format (magic,
    /// version, lengths against the input, no trailing bytes) and the
    /// store's invariants (ascending keys and revisions, consistent
    /// versions, nothing below the compaction revision but one surviving
    /// put per key); any violation is an error, never a panic.
    /// `restore(s.snapshot())` has the same [`Store::state_digest`] and
    /// [`Store::size_bytes`] as `s` (the size is counted again from the
    /// entries; the snapshot does not hold it). The space quota is
    /// configuration, not state: the store gets the default
    /// ([`crate::DEFAULT_QUOTA_BACKEND_BYTES`]); set the cluster's
    /// with [`Store::set_quota_bytes`] before applying commands.
    /// Panics if `max_txn_ops` is 0.
    pub fn restore_with_max_txn_ops(
        bytes: &[u8],
        max_txn_ops: usize,
    ) -> Result<Store, DecodeError> {
        let (mut store, values) = Self::decode(bytes, max_txn_ops)?;
        store.values.load(&values);
        Ok(store)
    }

    /// [`Store::restore_with_max_txn_ops`] with the values on `backend`.
    /// The snapshot is checked whole before an LMDB directory is touched;
    /// then the directory is wiped and created afresh and the values are
    /// written in revision order.
    ///
    /// # Errors
    /// [`LoadError::Decode`] as [`Store::restore_with_max_txn_ops`];
    /// [`LoadError::Open`] when the LMDB directory cannot be opened.
    pub fn restore_on(
        bytes: &[u8],
        max_txn_ops: usize,
        backend: &ValueBackend,
    ) -> Result<Store, LoadError> {
        let (mut store, values) = Self::decode(bytes, max_txn_ops).map_err(LoadError::Decode)?;
        store.values = Values::open(backend).map_err(LoadError::Open)?;
        store.values.load(&values);
        Ok(store)
    }

    /// A store from [`Store::snapshot`] bytes (checked as
    /// [`Store::restore_with_max_txn_ops`]) that keeps its values where
    /// `old` keeps them: `old`'s values are dropped and its backend (an
    /// open LMDB environment) is reused, so the directory need not be
    /// opened again. The txn-ops limit is `old`'s; the space quota and the
    /// lease votes needed are configuration: set them again. State
    /// transfer installs a checkpoint this way.
    ///
    /// # Errors
    /// As [`Store::restore_with_max_txn_ops`]; `old` is dropped then.
    pub fn restore_reusing(bytes: &[u8], old: Store) -> Result<Store, DecodeError> {
        let (mut store, values) = Self::decode(bytes, old.max_txn_ops)?;
        let mut reused = old.values;
        reused.clear();
        reused.load(&values);
        store.values = reused;
        Ok(store)
    }

    /// This store with its values moved to `backend` (a new LMDB directory
    /// is wiped and created afresh); the same store if they are there.
    ///
    /// # Errors
    /// The LMDB directory cannot be opened.
    pub fn into_backend(mut self, backend: &ValueBackend) -> Result<Store, OpenError> {
        if self.values.backend() == *backend {
            return Ok(self);
        }
        let all = self.values.all();
        self.values = Values::open(backend)?;
        let refs: Vec<(Revision, &[u8])> = all.iter().map(|(r, v)| (*r, v.as_slice())).collect();
        self.values.load(&refs);
        Ok(self)
    }

    /// Decodes and checks a snapshot: the store with no values yet (heap
    /// values, empty) and the values of its puts, ascending by revision,
    /// borrowed from `bytes`.
    fn decode(bytes: &[u8], max_txn_ops: usize) -> Result<(Store, PutValues<'_>), DecodeError> {
        let mut store = Store::with_max_txn_ops(max_txn_ops);
        let mut r = WireReader::new(bytes);
        if r.raw(MAGIC.len())? != MAGIC {
            return Err(DecodeError::Invalid("kv snapshot magic"));
        }
        let version = r.u8()?;
        if ![
            VERSION,
            VERSION_NO_RANGES,
            VERSION_NO_AUTH,
            VERSION_NO_LEASES,
        ]
        .contains(&version)
        {
            return Err(DecodeError::BadVersion(version));
        }
        let current = i64_field(&mut r)?;
        let compact = i64_field(&mut r)?;
        if !(1..=REVISION_MAX).contains(&current) || compact < -1 || compact > current {
            return Err(DecodeError::Invalid("kv snapshot revisions"));
        }
        let key_count = r.count("keys", usize::MAX, KEY_BYTES_MIN)?;
        let mut keys: BTreeMap<Vec<u8>, History> = BTreeMap::new();
        let mut live_keys = 0usize;
        let mut size_bytes = 0u64;
        let mut last_key: Option<&[u8]> = None;
        // The value of every put, in key order, then entry order.
        let mut values: Vec<(Revision, &[u8])> = Vec::new();
        for _ in 0..key_count {
            let key = r.bytes("key", usize::MAX)?;
            if key.is_empty() || last_key.is_some_and(|last| last >= key) {
                return Err(DecodeError::Invalid("kv snapshot: keys not ascending"));
            }
            last_key = Some(key);
            let n = r.count("entries", usize::MAX, ENTRY_BYTES_MIN)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let (e, value) = decode_entry(&mut r)?;
                if let Some(v) = value {
                    values.push((e.rev, v));
                }
                entries.push(e);
            }
            check_history(&entries, current, compact)?;
            size_bytes += entries
                .iter()
                .map(|e| entry_bytes(key, &e.event))
                .sum::<u64>();
            if matches!(
                entries.last(),
                Some(Entry {
                    event: Event::Put(_),
                    ..
                })
            ) {
                live_keys += 1;
            }
            keys.insert(key.to_vec(), History { entries });
        }
        if version >= VERSION_NO_AUTH {
            let (epoch, rows) = decode_leases(&mut r)?;
            store.set_lease_rows(epoch, rows);
            store.alarms = decode_alarms(&mut r)?;
        }
        if version >= VERSION_NO_RANGES {
            store.auth = std::sync::Arc::new(decode_auth(&mut r)?);
        }
        let starts = if version >= VERSION {
            let n = r.count("digest ranges", usize::MAX, 8)?;
            let mut starts = Vec::with_capacity(n);
            for _ in 0..n {
                starts.push(i64_field(&mut r)?);
            }
            starts
        } else {
            cut_ranges(&keys)
        };
        r.finish()?;
        store.ranges = ranges_of(&keys, &values, &starts, current)?;
        store.keys = keys;
        store.current_revision = current;
        store.compact_revision = compact;
        store.live_keys = live_keys;
        store.size_bytes = size_bytes;
        store.rebuild_changes();
        store.rebuild_lease_keys().map_err(DecodeError::Invalid)?;
        values.sort_unstable_by_key(|(rev, _)| *rev);
        if values.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(DecodeError::Invalid(
                "kv snapshot: two puts at one revision",
            ));
        }
        Ok((store, values))
    }

    /// The digest of the replicated state, kept as writes execute: BLAKE3
    /// over a domain tag, the current and compaction revisions, every
    /// digest range (start, entries, bytes, digest of its LtHash; see
    /// [`crate::digest`]) and the leases, alarms and auth as a snapshot
    /// encodes them. Costs O(ranges + leases + users + roles), not a pass
    /// over the keys. Replicas with the same state have the same digest,
    /// and `restore(snapshot())` has the digest of the store it came from.
    pub fn state_digest(&self) -> Digest {
        let mut h = Hasher::new();
        h.put(STATE_DOMAIN);
        h.i64(self.current_revision);
        h.i64(self.compact_revision);
        h.count(self.ranges.ranges().len());
        for r in self.ranges.ranges() {
            h.i64(r.start);
            h.i64(r.entries as i64);
            h.i64(r.bytes as i64);
            h.put(r.hash.digest().as_bytes());
        }
        encode_small_state(self, &mut h);
        h.finalize()
    }

    /// The digest ranges (see [`crate::digest`]), ascending; the last one is
    /// open.
    pub fn digest_ranges(&self) -> &[crate::digest::Range] {
        self.ranges.ranges()
    }

    /// etcd Maintenance.Hash: a 32-bit hash of the whole state, the first
    /// four bytes (big-endian) of [`Store::state_digest`].
    pub fn hash(&self) -> u32 {
        let d = self.state_digest();
        u32::from_be_bytes([d.0[0], d.0[1], d.0[2], d.0[3]])
    }

    /// etcd Maintenance.HashKV: a 32-bit hash of all retained key history
    /// up to `revision` (0 = current), with the compaction revision it was
    /// taken at (-1 if never compacted).
    ///
    /// The hash is the first four bytes (big-endian) of BLAKE3 over a
    /// domain tag and, for each key in order, the key and its retained
    /// entries with main revision `<= revision`, encoded as in the
    /// snapshot. It is comparable between bftd replicas, not with etcd's
    /// CRC-32C. As in etcd: `revision` in `(0, compact_revision)` fails with
    /// [`KvError::Compacted`], above the current revision with
    /// [`KvError::FutureRevision`].
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64), KvError> {
        if revision > 0 && revision < self.compact_revision {
            return Err(KvError::Compacted);
        }
        if revision > 0 && revision > self.current_revision {
            return Err(KvError::FutureRevision);
        }
        let at = if revision == 0 {
            self.current_revision
        } else {
            revision
        };
        let mut h = Hasher::new();
        h.put(HASH_KV_DOMAIN);
        let values = self.values.reader();
        for (key, history) in &self.keys {
            let n = history.entries.partition_point(|e| e.rev.main <= at);
            if n == 0 {
                continue;
            }
            h.bytes(key);
            h.count(n);
            for e in &history.entries[..n] {
                encode_entry(&mut h, e, value_of(&values, e));
            }
        }
        let d = h.finalize();
        Ok((
            u32::from_be_bytes([d.0[0], d.0[1], d.0[2], d.0[3]]),
            self.compact_revision,
        ))
    }
}

/// Range starts for a snapshot written before ranges existed: the entries
/// in revision order, cut after each revision that leaves the current
/// range at [`crate::digest::RANGE_BYTES_TARGET`] bytes or more, as
/// `Ranges::close_if_full` cuts while executing.
fn cut_ranges(keys: &BTreeMap<Vec<u8>, History>) -> Vec<i64> {
    let mut by_revision: Vec<(i64, u64)> = keys
        .iter()
        .flat_map(|(k, h)| {
            h.entries
                .iter()
                .map(move |e| (e.rev.main, entry_bytes(k, &e.event)))
        })
        .collect();
    by_revision.sort_unstable();
    let mut starts = vec![1];
    let mut bytes = 0u64;
    for (i, (main, b)) in by_revision.iter().enumerate() {
        bytes += b;
        let revision_ends = by_revision.get(i + 1).is_none_or(|(next, _)| next != main);
        if revision_ends && bytes >= crate::digest::RANGE_BYTES_TARGET {
            starts.push(main + 1);
            bytes = 0;
        }
    }
    starts
}

/// The digest ranges at `starts` over every entry of `keys`. Errors when
/// the starts are out of order, an entry lies below the first range, a
/// closed range is empty, or the open range starts past the next revision.
/// `values`: the value of every put of `keys`, in key order, then entry
/// order.
fn ranges_of(
    keys: &BTreeMap<Vec<u8>, History>,
    values: &[(Revision, &[u8])],
    starts: &[i64],
    current_revision: i64,
) -> Result<crate::digest::Ranges, DecodeError> {
    let bad = DecodeError::Invalid("kv snapshot: digest ranges");
    let mut ranges = crate::digest::Ranges::with_starts(starts).ok_or(bad.clone())?;
    if starts.last().is_some_and(|s| *s > current_revision + 1) {
        return Err(bad);
    }
    let mut values = values.iter();
    for (key, history) in keys {
        for e in &history.entries {
            let value: &[u8] = match e.event {
                Event::Put(_) => {
                    let (rev, v) = values.next().expect("one value per put");
                    assert_eq!(*rev, e.rev, "values come in entry order");
                    v
                }
                Event::Tombstone => &[],
            };
            if !ranges.add(key, e, value, entry_bytes(key, &e.event)) {
                return Err(bad);
            }
        }
    }
    if !ranges.closed_ranges_hold_entries() {
        return Err(bad);
    }
    Ok(ranges)
}
