//! etcd's auth store (`server/auth/store.go`) as replicated state: users,
//! roles, key-range permissions and the enabled flag change only through
//! ordered commands, so every replica holds the same auth state and checks
//! a command's permissions the same way when it applies it.
//!
//! - [`AuthStore`]: the state, kept in the [`Store`] behind an `Arc` (it
//!   changes rarely; the API reads it without copying).
//! - [`AuthStore::check_command`]: etcd's `authApplierV3` checks of one
//!   command for its `user` (the API runs it before ordering, the store
//!   again when applying: a permission revoked meanwhile holds).
//! - [`AuthStore::check_range`], [`AuthStore::check_admin`]: the checks the
//!   API runs for what is not ordered (Watch, maintenance, lease reads).
//! - The store applies the changes (`Store::apply_auth`): etcd's
//!   `AuthEnable` ... `RoleRevokePermission` with its errors, each change
//!   bumping [`AuthStore::revision`].
//!
//! Passwords are stored as the bcrypt hashes the API computed before
//! ordering (etcd 3.5 does the same: `hashedPassword`); the store never
//! sees a password.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::error::KvError;
use crate::pb::bftdkv::{command::Op, AuthResponse, Command};
use crate::pb::etcdserverpb::{request_op::Request, RequestOp, TxnRequest};
use crate::store::{header, Store};

/// The user whose `root` role makes it admin; must exist, with that role,
/// before auth can be enabled (etcd's `rootUser`).
pub const ROOT_USER: &str = "root";
/// The role that grants every permission (etcd's `rootRole`).
pub const ROOT_ROLE: &str = "root";

/// What a permission allows (etcd's `authpb.Permission_Type`, same values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PermKind {
    Read = 0,
    Write = 1,
    ReadWrite = 2,
}

impl PermKind {
    /// From `authpb.Permission.permType`; `None` outside the enum.
    pub fn from_i32(v: i32) -> Option<Self> {
        match v {
            0 => Some(Self::Read),
            1 => Some(Self::Write),
            2 => Some(Self::ReadWrite),
            _ => None,
        }
    }

    fn allows(self, access: Access) -> bool {
        matches!(
            (self, access),
            (Self::ReadWrite, _) | (Self::Read, Access::Read) | (Self::Write, Access::Write)
        )
    }
}

/// What a request needs on a key range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// One key-range permission of a role: the key alone (`range_end` empty),
/// `[key, range_end)`, or every key from `key` on (`range_end` `"\0"`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permission {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub kind: PermKind,
}

/// One user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// bcrypt hash of the password; empty for a `no_password` user.
    pub password_hash: String,
    /// Granted roles, ascending (a granted `root` role need not exist as a
    /// role, as in etcd).
    pub roles: BTreeSet<String>,
    /// Added with `no_password`: authenticates only by TLS common name.
    pub no_password: bool,
}

/// The auth state of a store (etcd's auth buckets).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthStore {
    pub(crate) enabled: bool,
    /// Bumped by every change (etcd's auth revision); 0 before any.
    pub(crate) revision: u64,
    pub(crate) users: BTreeMap<String, User>,
    /// Role name -> its permissions, ascending by (key, range_end), one
    /// per (key, range_end).
    pub(crate) roles: BTreeMap<String, Vec<Permission>>,
}

/// End of a normalized key interval.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum End {
    Key(Vec<u8>),
    Infinite,
}

/// `(key, range_end)` as etcd reads it: a single key (empty `range_end`,
/// or one not above `key`), `[key, range_end)`, or `[key, ∞)` for
/// `range_end == "\0"`. Returns `[start, end)`.
fn interval(key: &[u8], range_end: &[u8]) -> (Vec<u8>, End) {
    if range_end == [0] {
        return (key.to_vec(), End::Infinite);
    }
    if range_end.is_empty() || range_end <= key {
        let mut next = key.to_vec();
        next.push(0);
        return (key.to_vec(), End::Key(next));
    }
    (key.to_vec(), End::Key(range_end.to_vec()))
}

/// Whether the union of `grants` covers `[start, end)`.
fn covered(mut grants: Vec<(Vec<u8>, End)>, start: Vec<u8>, end: End) -> bool {
    grants.sort();
    let mut at = End::Key(start);
    for (s, e) in grants {
        if at >= end {
            return true;
        }
        if End::Key(s) > at {
            // Grants are sorted by start: nothing later starts at or
            // before `at` either.
            return false;
        }
        if e > at {
            at = e;
        }
    }
    at >= end
}

impl AuthStore {
    /// Whether auth is enabled: requests then need a user with the
    /// permissions they use.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The auth revision: bumped by every change (etcd's `authRevision`).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// User `name`, if it exists.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// Every user name, ascending.
    pub fn user_names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    /// Role `name`'s permissions, if the role exists.
    pub fn role(&self, name: &str) -> Option<&[Permission]> {
        self.roles.get(name).map(Vec::as_slice)
    }

    /// Every role name, ascending.
    pub fn role_names(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    /// etcd's `IsAdminPermitted`: passes while auth is disabled; else
    /// `user` must exist and hold the `root` role.
    ///
    /// # Errors
    /// [`KvError::UserEmpty`] without a user, [`KvError::PermissionDenied`]
    /// otherwise.
    pub fn check_admin(&self, user: &str) -> Result<(), KvError> {
        if !self.enabled {
            return Ok(());
        }
        match self.known_user(user)? {
            u if u.roles.contains(ROOT_ROLE) => Ok(()),
            _ => Err(KvError::PermissionDenied),
        }
    }

    /// etcd's `IsRangePermitted` (`Access::Read`) and
    /// `IsPutPermitted`/`IsDeleteRangePermitted` (`Access::Write`): passes
    /// while auth is disabled, for a root user, or when the union of the
    /// user's roles' permissions of that kind covers the whole range
    /// (`key`/`range_end` as in a RangeRequest).
    ///
    /// # Errors
    /// [`KvError::UserEmpty`] without a user, [`KvError::PermissionDenied`]
    /// for an unknown user or a range not covered.
    pub fn check_range(
        &self,
        user: &str,
        access: Access,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), KvError> {
        if !self.enabled {
            return Ok(());
        }
        let u = self.known_user(user)?;
        if u.roles.contains(ROOT_ROLE) {
            return Ok(());
        }
        let grants: Vec<(Vec<u8>, End)> = u
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flatten()
            .filter(|p| p.kind.allows(access))
            .map(|p| interval(&p.key, &p.range_end))
            .collect();
        let (start, end) = interval(key, range_end);
        if covered(grants, start, end) {
            Ok(())
        } else {
            Err(KvError::PermissionDenied)
        }
    }

    fn known_user(&self, user: &str) -> Result<&User, KvError> {
        if user.is_empty() {
            return Err(KvError::UserEmpty);
        }
        self.users.get(user).ok_or(KvError::PermissionDenied)
    }

    /// The checks etcd's `authApplierV3` makes before applying `cmd` for
    /// `cmd.user`; `lease_keys(id)` lists the keys attached to lease `id`
    /// (a Put with a lease, and a LeaseRevoke, need write permission on
    /// all of them: the user could otherwise delete keys it cannot write).
    ///
    /// Passes while auth is disabled, for `system` commands (a replica's
    /// own, such as the compactor's) and for lease renewals and expiry
    /// votes (made only by replicas). Range: read; Put: write on the key
    /// (and read with `prev_kv`); DeleteRange: write (and read with
    /// `prev_kv`); Txn: read on every compare, and every op of both
    /// branches, nested txns included (etcd 3.4 skips nested ones);
    /// LeaseRevoke: write on the lease's keys; auth changes and
    /// Alarm: admin; Compaction and LeaseGrant: any known user.
    ///
    /// # Errors
    /// As [`AuthStore::check_range`] and [`AuthStore::check_admin`].
    pub fn check_command(
        &self,
        cmd: &Command,
        lease_keys: &dyn Fn(i64) -> Vec<Vec<u8>>,
    ) -> Result<(), KvError> {
        if !self.enabled || cmd.system {
            return Ok(());
        }
        let user = cmd.user.as_str();
        match cmd.op.as_ref() {
            None | Some(Op::LeaseRenew(_)) | Some(Op::LeaseExpire(_)) => Ok(()),
            Some(Op::Range(r)) => self.check_range(user, Access::Read, &r.key, &r.range_end),
            Some(Op::Put(p)) => self.check_put(user, p, lease_keys),
            Some(Op::DeleteRange(d)) => self.check_delete(user, d),
            Some(Op::Txn(t)) => self.check_txn(user, t, lease_keys),
            Some(Op::Compaction(_)) | Some(Op::LeaseGrant(_)) => self.known_user(user).map(|_| ()),
            Some(Op::LeaseRevoke(r)) => lease_keys(r.id)
                .iter()
                .try_for_each(|k| self.check_range(user, Access::Write, k, &[])),
            Some(Op::Alarm(_))
            | Some(Op::AuthEnable(_))
            | Some(Op::AuthDisable(_))
            | Some(Op::UserAdd(_))
            | Some(Op::UserDelete(_))
            | Some(Op::UserChangePassword(_))
            | Some(Op::UserGrantRole(_))
            | Some(Op::UserRevokeRole(_))
            | Some(Op::RoleAdd(_))
            | Some(Op::RoleDelete(_))
            | Some(Op::RoleGrantPermission(_))
            | Some(Op::RoleRevokePermission(_)) => self.check_admin(user),
        }
    }

    fn check_put(
        &self,
        user: &str,
        p: &crate::pb::etcdserverpb::PutRequest,
        lease_keys: &dyn Fn(i64) -> Vec<Vec<u8>>,
    ) -> Result<(), KvError> {
        self.check_range(user, Access::Write, &p.key, &[])?;
        if p.lease != 0 {
            for k in lease_keys(p.lease) {
                self.check_range(user, Access::Write, &k, &[])?;
            }
        }
        if p.prev_kv {
            self.check_range(user, Access::Read, &p.key, &[])?;
        }
        Ok(())
    }

    /// DeleteRange: write on the range, and read with `prev_kv`.
    fn check_delete(
        &self,
        user: &str,
        d: &crate::pb::etcdserverpb::DeleteRangeRequest,
    ) -> Result<(), KvError> {
        self.check_range(user, Access::Write, &d.key, &d.range_end)?;
        if d.prev_kv {
            self.check_range(user, Access::Read, &d.key, &d.range_end)?;
        }
        Ok(())
    }

    fn check_txn(
        &self,
        user: &str,
        t: &TxnRequest,
        lease_keys: &dyn Fn(i64) -> Vec<Vec<u8>>,
    ) -> Result<(), KvError> {
        for c in &t.compare {
            self.check_range(user, Access::Read, &c.key, &c.range_end)?;
        }
        t.success
            .iter()
            .chain(&t.failure)
            .try_for_each(|op: &RequestOp| match &op.request {
                None => Ok(()),
                Some(Request::RequestRange(r)) => {
                    self.check_range(user, Access::Read, &r.key, &r.range_end)
                }
                Some(Request::RequestPut(p)) => self.check_put(user, p, lease_keys),
                Some(Request::RequestDeleteRange(d)) => self.check_delete(user, d),
                Some(Request::RequestTxn(nested)) => self.check_txn(user, nested, lease_keys),
            })
    }
}

impl Store {
    /// The auth state (cheap to clone: shared until the next change).
    pub fn auth(&self) -> Arc<AuthStore> {
        self.auth.clone()
    }

    /// [`AuthStore::check_command`] against this store's auth state and
    /// leases.
    pub fn check_auth(&self, cmd: &Command) -> Result<(), KvError> {
        self.auth.check_command(cmd, &|id| {
            self.lease(id, true).map(|l| l.keys).unwrap_or_default()
        })
    }

    /// Applies one auth change (etcd's `authStore` methods of the same
    /// names). Does not change the store revision; every change that
    /// succeeds bumps the auth revision. A refused change changes nothing.
    ///
    /// # Errors
    /// etcd's: enabling without a root user ([`KvError::RootUserNotExist`])
    /// or with a root user lacking the root role
    /// ([`KvError::RootRoleNotExist`]); an empty name
    /// ([`KvError::UserEmpty`], [`KvError::RoleEmpty`]); adding what exists
    /// ([`KvError::UserAlreadyExist`], [`KvError::RoleAlreadyExist`]);
    /// naming what does not ([`KvError::UserNotFound`],
    /// [`KvError::RoleNotFound`], [`KvError::RoleNotGranted`],
    /// [`KvError::PermissionNotGranted`]); deleting the root user or role,
    /// or revoking root's root role, while auth is enabled
    /// ([`KvError::InvalidAuthMgmt`]); a permission type outside the enum
    /// ([`KvError::InvalidAuthMgmt`]).
    pub(crate) fn apply_auth(&mut self, op: &Op) -> Result<AuthResponse, KvError> {
        let mut next = (*self.auth).clone();
        let changed = next.change(op)?;
        if changed {
            next.revision += 1;
            self.auth = Arc::new(next);
        }
        Ok(AuthResponse {
            header: header(self.current_revision),
        })
    }
}

impl AuthStore {
    /// One change on a copy; `Ok(false)` when it changes nothing (enabling
    /// what is enabled), which does not bump the revision.
    fn change(&mut self, op: &Op) -> Result<bool, KvError> {
        match op {
            Op::AuthEnable(_) => {
                if self.enabled {
                    return Ok(false);
                }
                let root = self.users.get(ROOT_USER).ok_or(KvError::RootUserNotExist)?;
                if !root.roles.contains(ROOT_ROLE) {
                    return Err(KvError::RootRoleNotExist);
                }
                self.enabled = true;
            }
            Op::AuthDisable(_) => {
                if !self.enabled {
                    return Ok(false);
                }
                self.enabled = false;
            }
            Op::UserAdd(r) => {
                if r.name.is_empty() {
                    return Err(KvError::UserEmpty);
                }
                if self.users.contains_key(&r.name) {
                    return Err(KvError::UserAlreadyExist);
                }
                let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
                self.users.insert(
                    r.name.clone(),
                    User {
                        password_hash: if no_password {
                            String::new()
                        } else {
                            r.hashed_password.clone()
                        },
                        roles: BTreeSet::new(),
                        no_password,
                    },
                );
            }
            Op::UserDelete(r) => {
                if self.enabled && r.name == ROOT_USER {
                    return Err(KvError::InvalidAuthMgmt);
                }
                self.users.remove(&r.name).ok_or(KvError::UserNotFound)?;
            }
            Op::UserChangePassword(r) => {
                let u = self.users.get_mut(&r.name).ok_or(KvError::UserNotFound)?;
                u.password_hash = r.hashed_password.clone();
                u.no_password = false;
            }
            Op::UserGrantRole(r) => {
                if r.role != ROOT_ROLE && !self.roles.contains_key(&r.role) {
                    if !self.users.contains_key(&r.user) {
                        return Err(KvError::UserNotFound);
                    }
                    return Err(KvError::RoleNotFound);
                }
                let u = self.users.get_mut(&r.user).ok_or(KvError::UserNotFound)?;
                if !u.roles.insert(r.role.clone()) {
                    return Ok(false);
                }
            }
            Op::UserRevokeRole(r) => {
                if self.enabled && r.name == ROOT_USER && r.role == ROOT_ROLE {
                    return Err(KvError::InvalidAuthMgmt);
                }
                let u = self.users.get_mut(&r.name).ok_or(KvError::UserNotFound)?;
                if !u.roles.remove(&r.role) {
                    return Err(KvError::RoleNotGranted);
                }
            }
            Op::RoleAdd(r) => {
                if r.name.is_empty() {
                    return Err(KvError::RoleEmpty);
                }
                if self.roles.contains_key(&r.name) {
                    return Err(KvError::RoleAlreadyExist);
                }
                self.roles.insert(r.name.clone(), Vec::new());
            }
            Op::RoleDelete(r) => {
                if self.enabled && r.role == ROOT_ROLE {
                    return Err(KvError::InvalidAuthMgmt);
                }
                self.roles.remove(&r.role).ok_or(KvError::RoleNotFound)?;
                // etcd revokes a deleted role from every user.
                for u in self.users.values_mut() {
                    u.roles.remove(&r.role);
                }
            }
            Op::RoleGrantPermission(r) => {
                let perm = r.perm.as_ref().ok_or(KvError::InvalidAuthMgmt)?;
                let kind = PermKind::from_i32(perm.perm_type).ok_or(KvError::InvalidAuthMgmt)?;
                let perms = self.roles.get_mut(&r.name).ok_or(KvError::RoleNotFound)?;
                let new = Permission {
                    key: perm.key.clone(),
                    range_end: perm.range_end.clone(),
                    kind,
                };
                match perms
                    .binary_search_by(|p| (&p.key, &p.range_end).cmp(&(&new.key, &new.range_end)))
                {
                    Ok(i) => perms[i].kind = kind,
                    Err(i) => perms.insert(i, new),
                }
            }
            Op::RoleRevokePermission(r) => {
                let perms = self.roles.get_mut(&r.role).ok_or(KvError::RoleNotFound)?;
                let i = perms
                    .iter()
                    .position(|p| p.key == r.key && p.range_end == r.range_end)
                    .ok_or(KvError::PermissionNotGranted)?;
                perms.remove(i);
            }
            _ => unreachable!("apply_auth is only called with auth changes"),
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::authpb;
    use crate::pb::etcdserverpb::*;

    fn perm(kind: PermKind, key: &str, end: &str) -> Permission {
        Permission {
            key: key.into(),
            range_end: end.into(),
            kind,
        }
    }

    fn store_with(perms: Vec<Permission>) -> AuthStore {
        let mut a = AuthStore {
            enabled: true,
            ..Default::default()
        };
        a.roles.insert("r".into(), perms);
        a.users.insert(
            "u".into(),
            User {
                password_hash: String::new(),
                roles: ["r".to_string()].into(),
                no_password: false,
            },
        );
        a
    }

    #[test]
    fn a_range_is_permitted_only_when_the_union_of_grants_covers_it() {
        let a = store_with(vec![
            perm(PermKind::Read, "a", "c"),
            perm(PermKind::ReadWrite, "c", "e"),
            perm(PermKind::Write, "x", ""),
        ]);
        let ok = |acc, k: &str, e: &str| a.check_range("u", acc, k.as_bytes(), e.as_bytes());
        assert_eq!(ok(Access::Read, "a", "e"), Ok(()), "two adjacent grants");
        assert_eq!(ok(Access::Read, "b", ""), Ok(()));
        assert_eq!(ok(Access::Read, "a", "f"), Err(KvError::PermissionDenied));
        assert_eq!(ok(Access::Write, "a", ""), Err(KvError::PermissionDenied));
        assert_eq!(ok(Access::Write, "d", ""), Ok(()));
        assert_eq!(ok(Access::Write, "x", ""), Ok(()));
        assert_eq!(ok(Access::Write, "x", "y"), Err(KvError::PermissionDenied));
        assert_eq!(ok(Access::Read, "c", "\0"), Err(KvError::PermissionDenied));
        assert_eq!(ok(Access::Read, "", ""), Err(KvError::PermissionDenied));
        assert_eq!(
            a.check_range("", Access::Read, b"a", b""),
            Err(KvError::UserEmpty)
        );
        assert_eq!(
            a.check_range("v", Access::Read, b"a", b""),
            Err(KvError::PermissionDenied)
        );
        let from_key = store_with(vec![perm(PermKind::Read, "m", "\0")]);
        assert_eq!(from_key.check_range("u", Access::Read, b"z", b"\0"), Ok(()));
        assert_eq!(
            from_key.check_range("u", Access::Read, b"a", b"\0"),
            Err(KvError::PermissionDenied)
        );
    }

    #[test]
    fn a_txn_needs_every_compare_and_every_op_of_both_branches_nested_ones_too() {
        let a = store_with(vec![perm(PermKind::ReadWrite, "a", "b")]);
        let none = |_| Vec::new();
        let put = |k: &str| RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: k.into(),
                ..Default::default()
            })),
        };
        let txn = |failure: Vec<RequestOp>| Command {
            op: Some(Op::Txn(TxnRequest {
                compare: vec![Compare {
                    key: b"a1".to_vec(),
                    ..Default::default()
                }],
                success: vec![put("a2")],
                failure,
            })),
            user: "u".into(),
            system: false,
        };
        assert_eq!(a.check_command(&txn(vec![]), &none), Ok(()));
        let nested = RequestOp {
            request: Some(Request::RequestTxn(TxnRequest {
                success: vec![put("z")],
                ..Default::default()
            })),
        };
        assert_eq!(
            a.check_command(&txn(vec![nested]), &none),
            Err(KvError::PermissionDenied)
        );
        let mut system = txn(vec![put("z")]);
        system.system = true;
        assert_eq!(a.check_command(&system, &none), Ok(()));
    }

    #[test]
    fn a_put_with_a_lease_needs_write_on_every_key_of_that_lease() {
        let a = store_with(vec![perm(PermKind::Write, "a", "b")]);
        let put = Command {
            op: Some(Op::Put(PutRequest {
                key: b"a1".to_vec(),
                lease: 7,
                ..Default::default()
            })),
            user: "u".into(),
            system: false,
        };
        assert_eq!(a.check_command(&put, &|_| vec![b"a2".to_vec()]), Ok(()));
        assert_eq!(
            a.check_command(&put, &|_| vec![b"z".to_vec()]),
            Err(KvError::PermissionDenied)
        );
    }

    #[test]
    fn changes_follow_etcds_rules_and_bump_the_revision() {
        let mut a = AuthStore::default();
        let ch = |a: &mut AuthStore, op: Op| a.change(&op);
        assert_eq!(
            ch(&mut a, Op::AuthEnable(AuthEnableRequest {})),
            Err(KvError::RootUserNotExist)
        );
        let add = |n: &str| {
            Op::UserAdd(AuthUserAddRequest {
                name: n.into(),
                hashed_password: "h".into(),
                ..Default::default()
            })
        };
        assert_eq!(ch(&mut a, add("root")), Ok(true));
        assert_eq!(ch(&mut a, add("root")), Err(KvError::UserAlreadyExist));
        assert_eq!(ch(&mut a, add("")), Err(KvError::UserEmpty));
        assert_eq!(
            ch(&mut a, Op::AuthEnable(AuthEnableRequest {})),
            Err(KvError::RootRoleNotExist)
        );
        let grant = |u: &str, r: &str| {
            Op::UserGrantRole(AuthUserGrantRoleRequest {
                user: u.into(),
                role: r.into(),
            })
        };
        assert_eq!(
            ch(&mut a, grant("root", "nope")),
            Err(KvError::RoleNotFound)
        );
        assert_eq!(ch(&mut a, grant("root", "root")), Ok(true));
        assert_eq!(ch(&mut a, Op::AuthEnable(AuthEnableRequest {})), Ok(true));
        assert_eq!(ch(&mut a, Op::AuthEnable(AuthEnableRequest {})), Ok(false));
        assert_eq!(
            ch(
                &mut a,
                Op::UserDelete(AuthUserDeleteRequest {
                    name: "root".into()
                })
            ),
            Err(KvError::InvalidAuthMgmt)
        );
        assert_eq!(
            ch(
                &mut a,
                Op::UserRevokeRole(AuthUserRevokeRoleRequest {
                    name: "root".into(),
                    role: "root".into()
                })
            ),
            Err(KvError::InvalidAuthMgmt)
        );
        assert_eq!(
            ch(&mut a, Op::RoleAdd(AuthRoleAddRequest { name: "r".into() })),
            Ok(true)
        );
        let grant_perm = |k: &str, t: i32| {
            Op::RoleGrantPermission(AuthRoleGrantPermissionRequest {
                name: "r".into(),
                perm: Some(authpb::Permission {
                    perm_type: t,
                    key: k.into(),
                    range_end: vec![],
                }),
            })
        };
        assert_eq!(ch(&mut a, grant_perm("k", 0)), Ok(true));
        assert_eq!(ch(&mut a, grant_perm("k", 2)), Ok(true), "replaces");
        assert_eq!(
            ch(&mut a, grant_perm("k", 9)),
            Err(KvError::InvalidAuthMgmt)
        );
        assert_eq!(a.roles["r"], vec![perm(PermKind::ReadWrite, "k", "")]);
        assert_eq!(ch(&mut a, add("u")), Ok(true));
        assert_eq!(ch(&mut a, grant("u", "r")), Ok(true));
        assert_eq!(
            ch(
                &mut a,
                Op::RoleDelete(AuthRoleDeleteRequest { role: "r".into() })
            ),
            Ok(true)
        );
        assert!(a.users["u"].roles.is_empty(), "a deleted role is revoked");
        assert_eq!(
            ch(
                &mut a,
                Op::RoleRevokePermission(AuthRoleRevokePermissionRequest {
                    role: "r".into(),
                    ..Default::default()
                })
            ),
            Err(KvError::RoleNotFound)
        );

        let mut s = Store::new();
        let before = s.auth().revision();
        s.apply_auth(&add("root")).unwrap();
        assert_eq!(s.auth().revision(), before + 1);
        assert_eq!(s.apply_auth(&add("root")), Err(KvError::UserAlreadyExist));
        assert_eq!(
            s.auth().revision(),
            before + 1,
            "a refused change bumps nothing"
        );
    }
}

#[cfg(test)]
mod snapshot_tests {
    use crate::pb::authpb;
    use crate::pb::etcdserverpb::*;
    use crate::{Command, Store};

    fn run(s: &mut Store, user: &str, cmd: impl Into<Command>) -> Result<(), crate::KvError> {
        let mut c: Command = cmd.into();
        c.user = user.into();
        s.apply(&c).map(|_| ())
    }

    /// Auth state is replicated state: in snapshots and the digest, and
    /// checked when a command is applied (for its `user`), so a permission
    /// revoked while a write was being ordered holds at every replica.
    #[test]
    fn auth_state_survives_a_snapshot_and_is_checked_when_applied() {
        let mut s = Store::new();
        let empty = s.state_digest();
        for c in [
            Command::from(AuthUserAddRequest {
                name: "root".into(),
                hashed_password: "$2b$04$x".into(),
                ..Default::default()
            }),
            AuthUserGrantRoleRequest {
                user: "root".into(),
                role: "root".into(),
            }
            .into(),
            AuthRoleAddRequest { name: "r".into() }.into(),
            AuthRoleGrantPermissionRequest {
                name: "r".into(),
                perm: Some(authpb::Permission {
                    perm_type: 2,
                    key: b"a/".to_vec(),
                    range_end: b"a0".to_vec(),
                }),
            }
            .into(),
            AuthUserAddRequest {
                name: "u".into(),
                options: Some(authpb::UserAddOptions { no_password: true }),
                ..Default::default()
            }
            .into(),
            AuthUserGrantRoleRequest {
                user: "u".into(),
                role: "r".into(),
            }
            .into(),
            AuthEnableRequest {}.into(),
        ] {
            s.apply(&c).unwrap();
        }
        assert_ne!(s.state_digest(), empty, "auth is in the digest");
        let r = Store::restore(&s.snapshot()).unwrap();
        assert_eq!(r, s);
        assert_eq!(r.state_digest(), s.state_digest());
        assert!(r.auth().enabled());
        assert!(r.auth().user("u").unwrap().no_password);

        let put = |k: &str| PutRequest {
            key: k.into(),
            value: b"v".to_vec(),
            ..Default::default()
        };
        assert_eq!(run(&mut s, "u", put("a/1")), Ok(()));
        assert_eq!(
            run(&mut s, "u", put("b")),
            Err(crate::KvError::PermissionDenied)
        );
        assert_eq!(run(&mut s, "", put("a/2")), Err(crate::KvError::UserEmpty));
        assert_eq!(
            run(&mut s, "u", AuthRoleAddRequest { name: "x".into() }),
            Err(crate::KvError::PermissionDenied),
            "auth changes are for root"
        );
        let rev = s.revision();
        run(
            &mut s,
            "root",
            AuthRoleRevokePermissionRequest {
                role: "r".into(),
                key: b"a/".to_vec(),
                range_end: b"a0".to_vec(),
            },
        )
        .unwrap();
        assert_eq!(
            run(&mut s, "u", put("a/1")),
            Err(crate::KvError::PermissionDenied),
            "a revoked permission holds for a write ordered before the revoke"
        );
        assert_eq!(s.revision(), rev, "refused writes change nothing");
        let mut system: Command = put("b").into();
        system.system = true;
        assert!(s.apply(&system).is_ok(), "a replica's own command passes");

        // A snapshot with a corrupted kind byte is refused, not installed.
        let mut bad = r.snapshot();
        let kind = bad.len() - 1 - (4 + 8 * r.digest_ranges().len());
        assert_eq!(bad[kind], 2, "the last permission's kind: both");
        bad[kind] = 7;
        assert!(Store::restore(&bad).is_err());
    }
}
