//! etcd's Auth service and the auth checks of every other service.
//!
//! - Users, roles and permissions are replicated state (`kv::auth`):
//!   every change is an ordered command, checked (admin only once auth is
//!   enabled) by every replica when applied.
//! - Passwords are hashed here with bcrypt before a change is ordered
//!   (etcd 3.5's `hashedPassword`), at `[api] bcrypt_cost`; the store and
//!   the log hold only hashes.
//! - `Authenticate` checks the password against this replica's copy of the
//!   user and issues a *simple token* (etcd's `--auth-token=simple`: random,
//!   valid [`TOKEN_TTL`] after its last use) that only this replica knows.
//!   Another replica answers it "etcdserver: invalid auth token",
//!   Unauthenticated, on which etcd clients authenticate again, as they do
//!   when an etcd member restarts. No token crosses replicas, so none can
//!   be replayed against an honest replica by a Byzantine one.
//! - The caller of a request: its `token` metadata (etcd's
//!   `rpctypes.TokenFieldNameGRPC`), else the Common Name of its verified
//!   TLS client certificate (etcd's `--client-cert-auth`), else nobody. While
//!   auth is disabled nothing is checked.
//! - KV and Lease commands carry the caller as `Command.user`: checked here
//!   against this replica's auth state before ordering (a quick answer)
//!   and again by every replica when applied (`kv::auth`), so a permission
//!   revoked meanwhile holds. Watch needs read permission on its range;
//!   Maintenance's Snapshot, Hash, HashKV, Defragment and alarm changes
//!   need the root role, as in etcd's `authMaintenanceServer`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::etcdserverpb::auth_server::Auth;
use kv::auth::ROOT_ROLE;
use kv::pb::authpb;
use kv::pb::etcdserverpb::*;
use kv::{Command, KvError};
use rand::Rng;
use tonic::{Request, Response, Status};

use crate::backend::Backend;
use crate::grpc::{kv_status, EtcdApi};

/// How long a token stays valid after its last use (etcd's simple token
/// TTL, 5 minutes).
pub const TOKEN_TTL: Duration = Duration::from_secs(300);
/// Most live tokens a replica keeps; beyond it the one closest to expiry
/// is dropped (its client authenticates again).
pub const TOKENS_MAX: usize = 65_536;
/// Most bcrypt computations (Authenticate, UserAdd, UserChangePassword)
/// running at once; more wait. Each costs ~50 ms of CPU at cost 10.
pub const BCRYPT_CONCURRENCY_MAX: usize = 2;
/// etcd's default bcrypt cost (`--bcrypt-cost`).
pub const DEFAULT_BCRYPT_COST: u32 = 10;
/// gRPC metadata key of the token (etcd's `token`).
pub const TOKEN_METADATA_KEY: &str = "token";

/// The simple tokens this replica issued: token -> (user, expiry).
pub struct Tokens {
    inner: Mutex<HashMap<String, (String, Instant)>>,
    seq: std::sync::atomic::AtomicU64,
    ttl: Duration,
}

impl Default for Tokens {
    fn default() -> Self {
        Self::with_ttl(TOKEN_TTL)
    }
}

impl Tokens {
    /// A table whose tokens expire `ttl` after their last use.
    pub fn with_ttl(ttl: Duration) -> Self {
        Self {
            inner: Mutex::new(HashMap::new()),
            seq: Default::default(),
            ttl,
        }
    }

    /// A new token for `user`: 16 random alphanumerics, a dot and a
    /// sequence number (etcd's simple-token shape).
    pub fn issue(&self, user: &str) -> String {
        let now = Instant::now();
        let random: String = rand::rngs::OsRng
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(16)
            .map(char::from)
            .collect();
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = format!("{random}.{seq}");
        let mut m = self.inner.lock().expect("token table lock");
        if m.len() >= TOKENS_MAX {
            m.retain(|_, (_, exp)| *exp > now);
        }
        if m.len() >= TOKENS_MAX {
            let oldest = m
                .iter()
                .min_by_key(|(_, (_, exp))| *exp)
                .map(|(t, _)| t.clone())
                .expect("table is full");
            m.remove(&oldest);
        }
        m.insert(token.clone(), (user.to_owned(), now + self.ttl));
        token
    }

    /// The user of a live token, extending its life; `None` for a token
    /// this replica did not issue or one expired.
    pub fn user_of(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let mut m = self.inner.lock().expect("token table lock");
        match m.get_mut(token) {
            Some((user, exp)) if *exp > now => {
                *exp = now + self.ttl;
                Some(user.clone())
            }
            Some(_) => {
                m.remove(token);
                None
            }
            None => None,
        }
    }

    /// Live tokens (for metrics and tests).
    pub fn len(&self) -> usize {
        self.inner.lock().expect("token table lock").len()
    }

    /// Whether no token is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bounds the bcrypt work running at once.
pub(crate) static BCRYPT_SLOTS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(BCRYPT_CONCURRENCY_MAX);

async fn bcrypt_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Status> {
    let _slot = BCRYPT_SLOTS
        .acquire()
        .await
        .map_err(|_| Status::unavailable("bftd: stopping"))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Status::internal("bftd: password hashing failed"))
}

impl<B: Backend> EtcdApi<B> {
    /// The user a request runs as: "" while auth is disabled or when the
    /// request names nobody; else the user of its `token` metadata, or the
    /// Common Name of its verified client certificate.
    ///
    /// # Errors
    /// Unauthenticated "etcdserver: invalid auth token" for a token this
    /// replica does not know (expired, or issued by another replica).
    pub fn caller<T>(&self, req: &Request<T>) -> Result<String, Status> {
        if !self.backend().auth().enabled() {
            return Ok(String::new());
        }
        if let Some(token) = req.metadata().get(TOKEN_METADATA_KEY) {
            let token = token.to_str().unwrap_or_default();
            return self
                .tokens()
                .user_of(token)
                .ok_or_else(|| kv_status(&KvError::InvalidAuthToken));
        }
        Ok(req
            .extensions()
            .get::<crate::client_port::ConnHandle>()
            .and_then(|c| c.peer_common_name())
            .unwrap_or_default()
            .to_owned())
    }

    /// Runs `command` as `user`: checked against this replica's auth state
    /// now, and by every replica when applied.
    pub(crate) async fn run_as(
        &self,
        user: String,
        mut command: Command,
    ) -> Result<kv::Response, Status> {
        command.user = user;
        self.backend()
            .check_auth(&command)
            .map_err(|e| kv_status(&e))?;
        self.run(command).await
    }

    /// Fails unless the caller holds the root role (etcd's
    /// `IsAdminPermitted`); passes while auth is disabled.
    pub(crate) fn check_admin<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let user = self.caller(req)?;
        self.backend()
            .auth()
            .check_admin(&user)
            .map_err(|e| kv_status(&e))
    }

    /// Fails unless the caller is a known user; passes while auth is
    /// disabled.
    pub(crate) fn check_user<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let user = self.caller(req)?;
        let auth = self.backend().auth();
        if auth.enabled() {
            if user.is_empty() {
                return Err(kv_status(&KvError::UserEmpty));
            }
            if auth.user(&user).is_none() {
                return Err(kv_status(&KvError::PermissionDenied));
            }
        }
        Ok(user)
    }

    /// Orders the auth change `req` carries, as its caller.
    async fn change_for<T: Into<Command>>(
        &self,
        req: Request<T>,
    ) -> Result<Option<ResponseHeader>, Status> {
        let user = self.caller(&req)?;
        self.change(user, req.into_inner().into()).await.map(Some)
    }

    async fn change(&self, req_user: String, command: Command) -> Result<ResponseHeader, Status> {
        match self.run_as(req_user, command).await? {
            kv::Response::Auth(r) => Ok(r.header.unwrap_or_default()),
            _ => Err(Status::internal(
                "bftd: state machine answered with another response type",
            )),
        }
    }

    fn local_header(&self) -> Option<ResponseHeader> {
        let (rev, _) = self.backend().store_size();
        Some(self.header(rev))
    }

    async fn hash_password(&self, password: String) -> Result<String, Status> {
        let cost = self.limits().bcrypt_cost;
        bcrypt_blocking(move || bcrypt::hash(password, cost))
            .await?
            .map_err(|e| Status::internal(format!("bftd: password hashing failed: {e}")))
    }
}

#[tonic::async_trait]
impl<B: Backend> Auth for EtcdApi<B> {
    async fn auth_enable(
        &self,
        req: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        let header = self.change_for(req).await?;
        Ok(Response::new(AuthEnableResponse { header }))
    }

    async fn auth_disable(
        &self,
        req: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let header = self.change_for(req).await?;
        Ok(Response::new(AuthDisableResponse { header }))
    }

    async fn auth_status(
        &self,
        _req: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        let auth = self.backend().auth();
        Ok(Response::new(AuthStatusResponse {
            header: self.local_header(),
            enabled: auth.enabled(),
            auth_revision: auth.revision(),
        }))
    }

    /// etcd's Authenticate: the password checked against this replica's
    /// copy of the user (bcrypt), then a token only this replica accepts.
    async fn authenticate(
        &self,
        req: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let r = req.into_inner();
        let auth = self.backend().auth();
        if !auth.enabled() {
            return Err(kv_status(&KvError::AuthNotEnabled));
        }
        let hash = match auth.user(&r.name) {
            Some(u) if !u.no_password => u.password_hash.clone(),
            _ => return Err(kv_status(&KvError::AuthFailed)),
        };
        let password = r.password;
        let ok = bcrypt_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false)).await?;
        if !ok {
            return Err(kv_status(&KvError::AuthFailed));
        }
        Ok(Response::new(AuthenticateResponse {
            header: self.local_header(),
            token: self.tokens().issue(&r.name),
        }))
    }

    async fn user_add(
        &self,
        req: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        let user = self.caller(&req)?;
        self.backend()
            .auth()
            .check_admin(&user)
            .map_err(|e| kv_status(&e))?;
        let mut r = req.into_inner();
        let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
        if r.name.is_empty() {
            return Err(kv_status(&KvError::UserEmpty));
        }
        if !no_password && r.hashed_password.is_empty() {
            r.hashed_password = self.hash_password(std::mem::take(&mut r.password)).await?;
        }
        r.password.clear();
        let header = self.change(user, r.into()).await?;
        Ok(Response::new(AuthUserAddResponse {
            header: Some(header),
        }))
    }

    async fn user_get(
        &self,
        req: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let user = self.caller(&req)?;
        let auth = self.backend().auth();
        let name = req.into_inner().name;
        if name != user {
            auth.check_admin(&user).map_err(|e| kv_status(&e))?;
        }
        let u = auth
            .user(&name)
            .ok_or_else(|| kv_status(&KvError::UserNotFound))?;
        Ok(Response::new(AuthUserGetResponse {
            header: self.local_header(),
            roles: u.roles.iter().cloned().collect(),
        }))
    }

    async fn user_list(
        &self,
        req: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        self.check_admin(&req)?;
        Ok(Response::new(AuthUserListResponse {
            header: self.local_header(),
            users: self.backend().auth().user_names(),
        }))
    }

    async fn user_delete(
        &self,
        req: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let header = self.change_for(req).await?;
        Ok(Response::new(AuthUserDeleteResponse { header }))
    }

    async fn user_change_password(
        &self,
        req: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let user = self.caller(&req)?;
        self.backend()
            .auth()
            .check_admin(&user)
            .map_err(|e| kv_status(&e))?;
        let mut r = req.into_inner();
        if r.hashed_password.is_empty() {
            r.hashed_password = self.hash_password(std::mem::take(&mut r.password)).await?;
        }
        r.password.clear();
        let header = self.change(user, r.into()).await?;
        Ok(Response::new(AuthUserChangePasswordResponse {
            header: Some(header),
        }))
    }

    async fn user_grant_role(
        &self,
        req: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let header = self.change_for(req).await?;
        Ok(Response::new(AuthUserGrantRoleResponse { header }))
    }

    async fn user_revoke_role(
        &self,
        req: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let header = self.change_for(req).await?;
        Ok(Response::new(AuthUserRevokeRoleResponse { header }))
    }

    async fn role_add(
        &self,
        req: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        let header = self.change_for(req).await?;
        Ok(Response::new(AuthRoleAddResponse { header }))
    }

    async fn role_get(
        &self,
        req: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let user = self.caller(&req)?;
        let auth = self.backend().auth();
        let role = req.into_inner().role;
        let has_role = auth.user(&user).is_some_and(|u| u.roles.contains(&role));
        if !has_role {
            auth.check_admin(&user).map_err(|e| kv_status(&e))?;
        }
        // The root role holds every permission and lists none (etcd).
        let perms = match auth.role(&role) {
            Some(p) => p,
            None if role == ROOT_ROLE => &[],
            None => return Err(kv_status(&KvError::RoleNotFound)),
        };
        Ok(Response::new(AuthRoleGetResponse {
            header: self.local_header(),
            perm: perms
                .iter()
                .map(|p| authpb::Permission {
                    perm_type: p.kind as i32,
                    key: p.key.clone(),
                    range_end: p.range_end.clone(),
                })
                .collect(),
        }))
    }

    async fn role_list(
        &self,
        req: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        self.check_admin(&req)?;
        Ok(Response::new(AuthRoleListResponse {
            header: self.local_header(),
            roles: self.backend().auth().role_names(),
        }))
    }

    async fn role_delete(
        &self,
        req: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let header = self.change_for(req).await?;
        Ok(Response::new(AuthRoleDeleteResponse { header }))
    }

    async fn role_grant_permission(
        &self,
        req: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let header = self.change_for(req).await?;
        Ok(Response::new(AuthRoleGrantPermissionResponse { header }))
    }

    async fn role_revoke_permission(
        &self,
        req: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let header = self.change_for(req).await?;
        Ok(Response::new(AuthRoleRevokePermissionResponse { header }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_known_until_it_expires_and_use_extends_it() {
        let t = Tokens::with_ttl(Duration::from_secs(60));
        let a = t.issue("alice");
        let b = t.issue("alice");
        assert_ne!(a, b, "every token is new");
        assert_eq!(a.split('.').next().unwrap().len(), 16);
        assert_eq!(t.user_of(&a).as_deref(), Some("alice"));
        assert_eq!(t.user_of("forged.1"), None);
        let short = Tokens::with_ttl(Duration::ZERO);
        let c = short.issue("bob");
        assert_eq!(short.user_of(&c), None, "expired");
        assert!(short.is_empty(), "an expired token is dropped when seen");
    }
}
