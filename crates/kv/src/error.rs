//! [`KvError`]: the errors the store returns, spelled exactly as etcd spells
//! them on the wire, with etcd's gRPC status code.

use thiserror::Error;

/// gRPC status codes used by [`KvError::grpc_code`] (values of
/// `google.rpc.Code`; `kv` does not depend on tonic).
pub mod grpc_code {
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const UNAUTHENTICATED: i32 = 16;
    pub const NOT_FOUND: i32 = 5;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const OUT_OF_RANGE: i32 = 11;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
}

/// Why the store refused a command. A refused command changes nothing.
///
/// `Display` is exactly the message etcd v3.5 sends in its gRPC status
/// (`api/v3rpc/rpctypes/error.go`), so clients that match on strings (the Go
/// client's `rpctypes.Error`, kube-apiserver) behave as with etcd;
/// [`KvError::grpc_code`] is the status code etcd pairs with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum KvError {
    /// A Range/Put/DeleteRange or a Compare has an empty key
    /// (etcd `ErrGRPCEmptyKey`, InvalidArgument).
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// Put with `ignore_value`/`ignore_lease` on a key that does not exist,
    /// or an empty `RequestOp` inside a txn (etcd `ErrGRPCKeyNotFound`,
    /// InvalidArgument).
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// Put with `ignore_value` and a non-empty value
    /// (etcd `ErrGRPCValueProvided`, InvalidArgument).
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// Put with `ignore_lease` and a non-zero lease
    /// (etcd `ErrGRPCLeaseProvided`, InvalidArgument).
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A txn level has more compares, success ops or failure ops than the
    /// configured maximum (etcd `ErrGRPCTooManyOps`, InvalidArgument).
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A txn puts a key twice, or puts a key it also deletes, in one
    /// executable path (etcd `ErrGRPCDuplicateKey`, InvalidArgument).
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A Range has a `sort_order` or `sort_target` outside the enum
    /// (etcd `ErrGRPCInvalidSortOption`, InvalidArgument).
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    /// The revision asked for is below the compaction revision
    /// (etcd `ErrGRPCCompacted`, OutOfRange).
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// The revision asked for is above the current revision
    /// (etcd `ErrGRPCFutureRev`, OutOfRange).
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// A Put or LeaseRevoke names a lease that is not granted
    /// (etcd `ErrGRPCLeaseNotFound`, NotFound).
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// LeaseGrant with an ID already granted (etcd `ErrGRPCLeaseExist`,
    /// FailedPrecondition).
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// LeaseGrant with a TTL above etcd's maximum
    /// (etcd `ErrGRPCLeaseTTLTooLarge`, OutOfRange).
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// A [`crate::Command`] with no operation set. bftd-specific: etcd has
    /// no such request. InvalidArgument.
    #[error("bftd: command has no operation")]
    EmptyCommand,
    /// [`crate::Store::execute_read_only`] was given a command that writes.
    /// bftd-specific, InvalidArgument.
    #[error("bftd: command is not read-only")]
    NotReadOnly,
    /// A request's payload did not decode into commands. bftd-specific,
    /// Internal: a correct replica never sends one.
    #[error("bftd: request payload did not decode")]
    UndecodableRequest,
    /// The operation was ordered, but this replica caught up by installing
    /// a checkpoint that already included it, so its result is unknown here
    /// (etcd's `ErrTimeout` string: clients treat the outcome as unknown).
    #[error("etcdserver: request timed out")]
    OutcomeUnknown,
    /// A read's key-values encode to more than the replica's response cap
    /// ([`crate::Store::execute_read_only_limited`]). bftd-specific (etcd
    /// fails the send instead: "grpc: trying to send message larger than
    /// max", ResourceExhausted); ResourceExhausted. Page with `limit`.
    #[error(
        "bftd: range response too large (above range_response_bytes_max); page it with a limit"
    )]
    ResponseTooLarge,
    /// A Put, or a Txn that writes, would leave the store's size
    /// ([`crate::Store::size_bytes`]) above its space quota
    /// ([`crate::Store::quota_bytes`]); the write is refused and changes
    /// nothing (etcd `ErrGRPCNoSpace`, ResourceExhausted). DeleteRange and
    /// Compaction are never refused: compaction frees the space.
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// Authenticate while auth is disabled (etcd `ErrGRPCAuthNotEnabled`,
    /// FailedPrecondition).
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    /// Authenticate with an unknown user or a wrong password (etcd
    /// `ErrGRPCAuthFailed`, InvalidArgument).
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// A request without a user while auth is enabled, or UserAdd with an
    /// empty name (etcd `ErrGRPCUserEmpty`, InvalidArgument).
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// etcd `ErrGRPCUserAlreadyExist`, FailedPrecondition.
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    /// etcd `ErrGRPCUserNotFound`, FailedPrecondition.
    #[error("etcdserver: user name not found")]
    UserNotFound,
    /// etcd `ErrGRPCRoleAlreadyExist`, FailedPrecondition.
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    /// etcd `ErrGRPCRoleNotFound`, FailedPrecondition.
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    /// etcd `ErrGRPCRoleEmpty`, InvalidArgument.
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// UserRevokeRole of a role the user does not have (etcd
    /// `ErrGRPCRoleNotGranted`, FailedPrecondition).
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    /// RoleRevokePermission of a permission the role does not have (etcd
    /// `ErrGRPCPermissionNotGranted`, FailedPrecondition).
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    /// The user lacks the permission the request needs (etcd
    /// `ErrGRPCPermissionDenied`, PermissionDenied).
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// AuthEnable without a root user (etcd `ErrGRPCRootUserNotExist`,
    /// FailedPrecondition).
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    /// AuthEnable while the root user lacks the root role (etcd
    /// `ErrGRPCRootRoleNotExist`, FailedPrecondition).
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    /// A token this replica did not issue, or one expired (etcd
    /// `ErrGRPCInvalidAuthToken`, Unauthenticated: clients authenticate
    /// again).
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    /// Deleting the root user or role, or revoking root's root role, while
    /// auth is enabled; or a malformed permission (etcd
    /// `ErrGRPCInvalidAuthMgmt`, FailedPrecondition).
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
}

impl KvError {
    /// The gRPC status code etcd v3.5 returns with this error
    /// (`google.rpc.Code` numbering: 3 InvalidArgument, 5 NotFound,
    /// 7 PermissionDenied, 8 ResourceExhausted, 9 FailedPrecondition, 16 Unauthenticated, 11 OutOfRange, 13 Internal, 14 Unavailable).
    pub fn grpc_code(&self) -> i32 {
        match self {
            KvError::Compacted | KvError::FutureRevision | KvError::LeaseTtlTooLarge => {
                grpc_code::OUT_OF_RANGE
            }
            KvError::LeaseExists
            | KvError::AuthNotEnabled
            | KvError::UserAlreadyExist
            | KvError::UserNotFound
            | KvError::RoleAlreadyExist
            | KvError::RoleNotFound
            | KvError::RoleNotGranted
            | KvError::PermissionNotGranted
            | KvError::RootUserNotExist
            | KvError::RootRoleNotExist
            | KvError::InvalidAuthMgmt => grpc_code::FAILED_PRECONDITION,
            KvError::PermissionDenied => grpc_code::PERMISSION_DENIED,
            KvError::InvalidAuthToken => grpc_code::UNAUTHENTICATED,
            KvError::AuthFailed | KvError::UserEmpty | KvError::RoleEmpty => {
                grpc_code::INVALID_ARGUMENT
            }
            KvError::LeaseNotFound => grpc_code::NOT_FOUND,
            KvError::EmptyKey
            | KvError::KeyNotFound
            | KvError::ValueProvided
            | KvError::LeaseProvided
            | KvError::TooManyOps
            | KvError::DuplicateKey
            | KvError::InvalidSortOption
            | KvError::EmptyCommand
            | KvError::NotReadOnly => grpc_code::INVALID_ARGUMENT,
            KvError::UndecodableRequest => grpc_code::INTERNAL,
            KvError::OutcomeUnknown => grpc_code::UNAVAILABLE,
            KvError::ResponseTooLarge | KvError::NoSpace => grpc_code::RESOURCE_EXHAUSTED,
        }
    }
}
