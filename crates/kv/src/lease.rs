//! Leases (etcd's `lease` package and its apply path), as replicated state
//! that needs no clock.
//!
//! etcd's leader keeps lease deadlines in its own clock and revokes what
//! expires. In a BFT system no single replica's clock can be trusted: a
//! Byzantine leader could expire a kept-alive lease at once. So the store
//! only records, per lease, its TTL and an *epoch* (a counter bumped by
//! every grant and renewal, deterministic at every replica); time stays
//! outside the state machine:
//!
//! - every replica runs a lessor (`api::lease`) that notes, by its own
//!   clock, when it first saw each lease epoch, and once TTL seconds have
//!   passed submits a [`LeaseExpire`] vote for that epoch;
//! - a lease expires when votes of `lease_votes_needed` distinct replicas
//!   (f+1: at least one correct replica) name its current epoch; its keys
//!   are deleted at one revision, as etcd's revoke does;
//! - keep-alives are collected by each replica and ordered as one
//!   [`LeaseRenew`] per round, which starts a new epoch (and discards the
//!   votes for the old one): one consensus command per replica and round,
//!   whatever the number of clients.
//!
//! A lease thus never expires before at least one correct replica's clock
//! says TTL seconds passed since it executed the lease's last grant or
//! renewal. A replica that restarts counts every lease's TTL again from its
//! restart (etcd's leader change does the same).
//!
//! Which keys a lease holds is derived from the keys' live puts (their
//! `lease` field) and rebuilt on restore; a snapshot holds the lease table
//! and the epoch counter only.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::KvError;
use crate::pb::bftdkv::{LeaseExpire, LeaseExpireResponse, LeaseRenew, LeaseRenewResponse};
use crate::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse,
};
use crate::store::{header, Event, Store, WriteTxn};

/// etcd's largest lease TTL, seconds (`lease.MaxLeaseTTL`).
pub const MAX_LEASE_TTL_S: i64 = 9_000_000_000;

/// Smallest TTL a lease is granted, seconds: shorter requests are raised to
/// it, as etcd raises them to its `minTTL` (1.5 election timeouts, 2 s with
/// etcd's defaults).
pub const MIN_LEASE_TTL_S: i64 = 2;

/// Most leases one [`LeaseRenew`] or [`LeaseExpire`] command names (a
/// replica's lessor sends more in several commands).
pub const LEASES_PER_COMMAND_MAX: usize = 10_000;

/// One granted lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lease {
    /// Granted TTL, seconds.
    pub ttl_s: i64,
    /// The store's lease epoch counter when the lease was last granted or
    /// renewed.
    pub epoch: u64,
    /// Replicas that voted this epoch expired.
    pub voters: BTreeSet<u16>,
    /// Keys whose live put names this lease (derived state).
    pub keys: BTreeSet<Vec<u8>>,
}

/// A lease as the API reads it (`Store::lease`, `Store::leases`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: i64,
    /// Granted TTL, seconds.
    pub ttl_s: i64,
    /// Bumped by every grant and renewal (see the module docs): a lessor
    /// counts the TTL from when it first sees an epoch.
    pub epoch: u64,
    /// The keys attached to the lease (filled only when asked for).
    pub keys: Vec<Vec<u8>>,
}

impl Store {
    /// How many leases are granted now (not revoked, not expired).
    pub fn lease_count(&self) -> usize {
        self.leases.len()
    }

    /// The leases granted now, by id, without their keys.
    pub fn leases(&self) -> Vec<LeaseInfo> {
        self.leases
            .iter()
            .map(|(id, l)| LeaseInfo {
                id: *id,
                ttl_s: l.ttl_s,
                epoch: l.epoch,
                keys: Vec::new(),
            })
            .collect()
    }

    /// Lease `id`, with its keys when `keys` (etcd's TimeToLive `keys`).
    pub fn lease(&self, id: i64, keys: bool) -> Option<LeaseInfo> {
        self.leases.get(&id).map(|l| LeaseInfo {
            id,
            ttl_s: l.ttl_s,
            epoch: l.epoch,
            keys: if keys {
                l.keys.iter().cloned().collect()
            } else {
                Vec::new()
            },
        })
    }

    /// How many distinct replicas' votes expire a lease (f+1 in a cluster
    /// of 3f+1; 1 by default, for a single store).
    pub fn lease_votes_needed(&self) -> usize {
        self.lease_votes_needed
    }

    /// Sets [`Store::lease_votes_needed`]. Configuration, not state: every
    /// replica must use the same value (bftd sets f+1) before applying
    /// commands. Panics on 0.
    pub fn set_lease_votes_needed(&mut self, votes: usize) {
        assert!(votes > 0, "a lease needs at least one expiry vote");
        self.lease_votes_needed = votes;
    }

    pub(crate) fn lease_exists(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    fn next_epoch(&mut self) -> u64 {
        self.lease_epoch += 1;
        self.lease_epoch
    }

    /// etcd's LeaseGrant: `ID` 0 picks an unused id (deterministically);
    /// the TTL is raised to [`MIN_LEASE_TTL_S`]. Does not change the
    /// revision.
    ///
    /// # Errors
    /// TTL above [`MAX_LEASE_TTL_S`] ([`KvError::LeaseTtlTooLarge`]), an ID
    /// already granted ([`KvError::LeaseExists`]). A negative ID is granted,
    /// as etcd grants it.
    pub(crate) fn apply_lease_grant(
        &mut self,
        g: &LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, KvError> {
        if g.ttl > MAX_LEASE_TTL_S {
            return Err(KvError::LeaseTtlTooLarge);
        }
        let id = match g.id {
            0 => self.unused_lease_id(),
            id if self.leases.contains_key(&id) => return Err(KvError::LeaseExists),
            id => id,
        };
        let ttl_s = g.ttl.max(MIN_LEASE_TTL_S);
        let epoch = self.next_epoch();
        self.leases.insert(
            id,
            Lease {
                ttl_s,
                epoch,
                voters: BTreeSet::new(),
                keys: BTreeSet::new(),
            },
        );
        Ok(LeaseGrantResponse {
            header: header(self.current_revision),
            id,
            ttl: ttl_s,
            error: String::new(),
        })
    }

    /// A positive id not granted now, from the epoch counter (the same at
    /// every replica).
    fn unused_lease_id(&self) -> i64 {
        let mut seed = self.lease_epoch.wrapping_add(1);
        loop {
            let d = wire::hash::digest(&seed.to_be_bytes());
            let id = (u64::from_be_bytes(d.0[..8].try_into().expect("8 bytes")) >> 1) as i64;
            if id != 0 && !self.leases.contains_key(&id) {
                return id;
            }
            seed = seed.wrapping_add(1);
        }
    }

    /// etcd's LeaseRevoke: deletes the lease's keys at one new revision
    /// (none if it holds no keys) and the lease.
    ///
    /// # Errors
    /// [`KvError::LeaseNotFound`].
    pub(crate) fn apply_lease_revoke(
        &mut self,
        r: &LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, KvError> {
        if !self.leases.contains_key(&r.id) {
            return Err(KvError::LeaseNotFound);
        }
        self.revoke(r.id);
        Ok(LeaseRevokeResponse {
            header: header(self.current_revision),
        })
    }

    /// Deletes lease `id`'s keys in one write txn, then the lease.
    fn revoke(&mut self, id: i64) {
        let keys: Vec<Vec<u8>> = self.leases[&id].keys.iter().cloned().collect();
        let mut tx = WriteTxn::new(self.current_revision);
        for k in &keys {
            self.delete_keys(&mut tx, k, &[]);
        }
        self.commit(tx);
        let gone = self.leases.remove(&id).expect("checked above");
        assert!(
            gone.keys.is_empty(),
            "revoke deleted every key of the lease"
        );
    }

    /// Renews the leases named (a replica's collected keep-alives): each one
    /// granted gets a new epoch and loses its expiry votes. Answers, per id,
    /// the granted TTL or 0 for a lease that does not exist (etcd's
    /// keep-alive answer). Does not change the revision.
    pub(crate) fn apply_lease_renew(&mut self, r: &LeaseRenew) -> LeaseRenewResponse {
        let mut ttls = Vec::with_capacity(r.ids.len());
        for id in r.ids.iter().take(LEASES_PER_COMMAND_MAX) {
            if self.leases.contains_key(id) {
                let epoch = self.next_epoch();
                let l = self.leases.get_mut(id).expect("checked");
                l.epoch = epoch;
                l.voters.clear();
                ttls.push(l.ttl_s);
            } else {
                ttls.push(0);
            }
        }
        LeaseRenewResponse {
            header: header(self.current_revision),
            ttls,
        }
    }

    /// Counts replica `voter`'s expiry votes (`None`: not a replica, counts
    /// nothing). A vote counts only for a lease's current epoch; a lease
    /// with [`Store::lease_votes_needed`] distinct voters is revoked, its
    /// keys deleted at one revision per lease.
    pub(crate) fn apply_lease_expire(
        &mut self,
        voter: Option<u16>,
        e: &LeaseExpire,
    ) -> LeaseExpireResponse {
        let mut expired = Vec::new();
        if let Some(voter) = voter {
            for le in e.leases.iter().take(LEASES_PER_COMMAND_MAX) {
                let Some(l) = self.leases.get_mut(&le.id) else {
                    continue;
                };
                if l.epoch != le.epoch {
                    continue;
                }
                l.voters.insert(voter);
                if l.voters.len() >= self.lease_votes_needed {
                    self.revoke(le.id);
                    expired.push(le.id);
                }
            }
        }
        LeaseExpireResponse {
            header: header(self.current_revision),
            expired,
        }
    }

    /// Keeps the lease key sets in step with a committed write: `key`'s
    /// live put named lease `before` (0: none or no live put) and now
    /// names `after`.
    pub(crate) fn move_lease_key(&mut self, key: &[u8], before: i64, after: i64) {
        if before == after {
            return;
        }
        if before != 0 {
            if let Some(l) = self.leases.get_mut(&before) {
                l.keys.remove(key);
            }
        }
        if after != 0 {
            let l = self
                .leases
                .get_mut(&after)
                .expect("a put names a granted lease (checked before the write)");
            l.keys.insert(key.to_vec());
        }
    }

    /// Rebuilds the lease key sets from the live keys (after a restore).
    ///
    /// # Errors
    /// A live key naming a lease that is not granted.
    pub(crate) fn rebuild_lease_keys(&mut self) -> Result<(), &'static str> {
        for l in self.leases.values_mut() {
            l.keys.clear();
        }
        for (k, h) in &self.keys {
            if let Some(Event::Put(p)) = h.entries.last().map(|e| &e.event) {
                if p.lease != 0 {
                    self.leases
                        .get_mut(&p.lease)
                        .ok_or("kv snapshot: a key names a lease that is not granted")?
                        .keys
                        .insert(k.clone());
                }
            }
        }
        Ok(())
    }
}

/// The lease table as a snapshot holds it: (id, ttl, epoch, voters).
pub(crate) type LeaseRow = (i64, i64, u64, Vec<u16>);

impl Store {
    pub(crate) fn lease_rows(&self) -> impl Iterator<Item = LeaseRow> + '_ {
        self.leases
            .iter()
            .map(|(id, l)| (*id, l.ttl_s, l.epoch, l.voters.iter().copied().collect()))
    }

    /// Installs a decoded lease table (before `rebuild_lease_keys`).
    pub(crate) fn set_lease_rows(&mut self, epoch: u64, rows: Vec<LeaseRow>) {
        self.lease_epoch = epoch;
        self.leases = rows
            .into_iter()
            .map(|(id, ttl_s, epoch, voters)| {
                (
                    id,
                    Lease {
                        ttl_s,
                        epoch,
                        voters: voters.into_iter().collect(),
                        keys: BTreeSet::new(),
                    },
                )
            })
            .collect::<BTreeMap<_, _>>();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::bftdkv::{Command, LeaseEpoch};
    use crate::pb::etcdserverpb::{
        request_op::Request, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    };
    use crate::Response;

    fn grant(s: &mut Store, id: i64, ttl: i64) -> Result<i64, KvError> {
        let c: Command = LeaseGrantRequest { ttl, id }.into();
        match s.apply(&c)? {
            Response::LeaseGrant(g) => {
                assert_eq!(g.ttl, ttl.max(MIN_LEASE_TTL_S));
                Ok(g.id)
            }
            r => panic!("{r:?}"),
        }
    }

    fn put(s: &mut Store, k: &str, lease: i64) -> Result<i64, KvError> {
        let c: Command = PutRequest {
            key: k.into(),
            value: b"v".to_vec(),
            lease,
            ..Default::default()
        }
        .into();
        s.apply(&c).map(|r| r.revision())
    }

    fn exists(s: &Store, k: &str) -> bool {
        let c: Command = RangeRequest {
            key: k.into(),
            ..Default::default()
        }
        .into();
        match s.execute_read_only(&c).unwrap() {
            Response::Range(r) => r.count == 1,
            r => panic!("{r:?}"),
        }
    }

    fn vote(s: &mut Store, voter: Option<u16>, id: i64, epoch: u64) -> Vec<i64> {
        let c: Command = LeaseExpire {
            leases: vec![LeaseEpoch { id, epoch }],
        }
        .into();
        match s.apply_from(voter, &c).unwrap() {
            Response::LeaseExpire(e) => e.expired,
            r => panic!("{r:?}"),
        }
    }

    fn keys(s: &Store, id: i64) -> Vec<String> {
        s.lease(id, true)
            .unwrap()
            .keys
            .into_iter()
            .map(|k| String::from_utf8(k).unwrap())
            .collect()
    }

    #[test]
    fn revoking_a_lease_deletes_its_keys_at_one_revision() {
        let mut s = Store::new();
        let id = grant(&mut s, 0, 10).unwrap();
        assert!(id > 0);
        put(&mut s, "a", id).unwrap();
        put(&mut s, "b", id).unwrap();
        put(&mut s, "c", 0).unwrap();
        assert_eq!(keys(&s, id), ["a", "b"]);
        let before = s.revision();
        let c: Command = LeaseRevokeRequest { id }.into();
        assert_eq!(s.apply(&c).unwrap().revision(), before + 1);
        assert!(!exists(&s, "a") && !exists(&s, "b") && exists(&s, "c"));
        assert!(s.lease(id, false).is_none());
        let page = s.watch_events(b"a", b"c", before + 1, 100).unwrap();
        assert_eq!(page.events.len(), 2, "both deletes at one revision");
        assert_eq!(s.apply(&c), Err(KvError::LeaseNotFound));
    }

    #[test]
    fn grant_errors_are_etcds() {
        let mut s = Store::new();
        assert_eq!(grant(&mut s, 7, 1), Ok(7), "raised to the minimum TTL");
        assert_eq!(grant(&mut s, 7, 5), Err(KvError::LeaseExists));
        assert_eq!(
            grant(&mut s, 8, MAX_LEASE_TTL_S + 1),
            Err(KvError::LeaseTtlTooLarge)
        );
        assert_eq!(put(&mut s, "k", 99), Err(KvError::LeaseNotFound));
        let txn: Command = TxnRequest {
            success: vec![RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: b"k".to_vec(),
                    lease: 99,
                    ..Default::default()
                })),
            }],
            ..Default::default()
        }
        .into();
        assert_eq!(s.apply(&txn), Err(KvError::LeaseNotFound));
        assert_eq!(s.revision(), 1, "nothing was written");
        assert_eq!(grant(&mut s, -7, 5), Ok(-7), "etcd grants negative ids");
        put(&mut s, "neg", -7).unwrap();
        assert_eq!(keys(&s, -7), ["neg"]);
        assert_eq!(Store::restore(&s.snapshot()).unwrap(), s);
    }

    #[test]
    fn a_key_follows_its_newest_put_and_leaves_with_its_delete() {
        let mut s = Store::new();
        grant(&mut s, 1, 10).unwrap();
        grant(&mut s, 2, 10).unwrap();
        put(&mut s, "k", 1).unwrap();
        put(&mut s, "k", 2).unwrap();
        assert!(keys(&s, 1).is_empty());
        assert_eq!(keys(&s, 2), ["k"]);
        let c: Command = DeleteRangeRequest {
            key: b"k".to_vec(),
            ..Default::default()
        }
        .into();
        s.apply(&c).unwrap();
        assert!(keys(&s, 2).is_empty());
        // A refused write (over quota) attaches nothing.
        s.set_quota_bytes(1);
        assert_eq!(put(&mut s, "q", 1), Err(KvError::NoSpace));
        assert!(keys(&s, 1).is_empty());
    }

    #[test]
    fn a_lease_expires_only_on_enough_distinct_votes_for_its_current_epoch() {
        let mut s = Store::new();
        s.set_lease_votes_needed(2);
        let id = grant(&mut s, 0, 10).unwrap();
        put(&mut s, "k", id).unwrap();
        let epoch = s.lease(id, false).unwrap().epoch;
        // One replica voting twice, and a vote from no replica, are one vote.
        assert!(vote(&mut s, Some(3), id, epoch).is_empty());
        assert!(vote(&mut s, Some(3), id, epoch).is_empty());
        assert!(vote(&mut s, None, id, epoch).is_empty());
        // A renewal starts a new epoch: old votes and stale ones are void.
        let c: Command = LeaseRenew {
            ids: vec![id, 12345],
        }
        .into();
        match s.apply(&c).unwrap() {
            Response::LeaseRenew(r) => assert_eq!(r.ttls, vec![10, 0]),
            r => panic!("{r:?}"),
        }
        let renewed = s.lease(id, false).unwrap().epoch;
        assert!(renewed > epoch);
        assert!(vote(&mut s, Some(1), id, epoch).is_empty());
        assert!(vote(&mut s, Some(3), id, renewed).is_empty());
        assert!(exists(&s, "k"));
        assert_eq!(vote(&mut s, Some(0), id, renewed), vec![id]);
        assert!(!exists(&s, "k"));
        assert!(s.lease(id, false).is_none());
    }

    #[test]
    fn leases_survive_a_snapshot_and_an_old_snapshot_still_restores() {
        let mut s = Store::new();
        s.set_lease_votes_needed(2);
        let id = grant(&mut s, 0, 30).unwrap();
        grant(&mut s, 5, 60).unwrap();
        put(&mut s, "a", id).unwrap();
        put(&mut s, "b", 5).unwrap();
        let epoch = s.lease(id, false).unwrap().epoch;
        vote(&mut s, Some(2), id, epoch);
        let mut r = Store::restore(&s.snapshot()).unwrap();
        r.set_lease_votes_needed(2);
        assert_eq!(r, s, "leases, votes and key sets restored");
        assert_eq!(r.state_digest(), s.state_digest());
        // One more vote expires it in the restored store as in the original.
        assert_eq!(vote(&mut r, Some(1), id, epoch), vec![id]);
        // A version-1 snapshot (no lease table) of a store without leases.
        let mut plain = Store::new();
        put(&mut plain, "x", 0).unwrap();
        let mut v1 = plain.snapshot();
        let lease_and_alarm_parts = 8 + 4 + 4;
        let empty_auth_part = 1 + 8 + 4 + 4;
        let one_range_part = 4 + 8;
        v1.truncate(v1.len() - lease_and_alarm_parts - empty_auth_part - one_range_part);
        v1[6] = 1;
        assert_eq!(Store::restore(&v1).unwrap(), plain);
        // A key naming a lease the table lacks is refused.
        let mut bad = s.snapshot();
        bad.truncate(
            bad.len() - (8 + 4 + 2 * (8 + 8 + 8 + 4) + 2 + 4) - empty_auth_part - one_range_part,
        );
        bad[6] = 2; // version 2: no auth part
        bad.extend_from_slice(&s.lease_epoch.to_be_bytes());
        bad.extend_from_slice(&0u32.to_be_bytes()); // no leases
        bad.extend_from_slice(&0u32.to_be_bytes()); // no alarms
        assert_eq!(
            Store::restore(&bad),
            Err(wire::DecodeError::Invalid(
                "kv snapshot: a key names a lease that is not granted"
            ))
        );
    }
}
