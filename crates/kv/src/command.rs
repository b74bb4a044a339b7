//! bftd's replicated commands ([`Command`], one etcd request each) and the
//! encoding of a batch of them (what one consensus instance decides).

use wire::DecodeError;

use crate::pb::bftdkv::{command::Op, Command};
use crate::pb::etcdserverpb::{
    request_op::Request, CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest,
    TxnRequest,
};
use prost::Message;

/// Field number of `CommandBatch.commands`.
const BATCH_COMMANDS_FIELD: u64 = 1;
/// Protobuf wire type of a length-delimited field.
const WIRE_TYPE_LEN: u64 = 2;

impl Command {
    /// Whether the command only reads: a Range, or a Txn whose success and
    /// failure branches hold only Ranges and read-only nested Txns. Such a
    /// command never changes the store, whichever branch runs. An empty
    /// command is not read-only (it is rejected when applied).
    pub fn is_read_only(&self) -> bool {
        match &self.op {
            Some(Op::Range(_)) => true,
            Some(Op::Txn(t)) => txn_is_read_only(t),
            _ => false,
        }
    }

    /// Whether the command is a read that asked for serializable
    /// (member-local) semantics: a Range with `serializable`, or a
    /// read-only Txn all of whose Ranges (nested ones included) have
    /// `serializable` (etcd's `isTxnSerializable`, extended to nesting).
    pub fn is_serializable(&self) -> bool {
        match &self.op {
            Some(Op::Range(r)) => r.serializable,
            Some(Op::Txn(t)) => txn_is_serializable(t),
            _ => false,
        }
    }
}

pub(crate) fn txn_is_read_only(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(&t.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(_)) => true,
            Some(Request::RequestTxn(nested)) => txn_is_read_only(nested),
            _ => false,
        })
}

fn txn_is_serializable(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(&t.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(r)) => r.serializable,
            Some(Request::RequestTxn(nested)) => txn_is_serializable(nested),
            _ => false,
        })
}

impl From<RangeRequest> for Command {
    fn from(r: RangeRequest) -> Self {
        Command {
            op: Some(Op::Range(r)),
            ..Default::default()
        }
    }
}
impl From<PutRequest> for Command {
    fn from(r: PutRequest) -> Self {
        Command {
            op: Some(Op::Put(r)),
            ..Default::default()
        }
    }
}
impl From<DeleteRangeRequest> for Command {
    fn from(r: DeleteRangeRequest) -> Self {
        Command {
            op: Some(Op::DeleteRange(r)),
            ..Default::default()
        }
    }
}
impl From<TxnRequest> for Command {
    fn from(r: TxnRequest) -> Self {
        Command {
            op: Some(Op::Txn(r)),
            ..Default::default()
        }
    }
}
impl From<CompactionRequest> for Command {
    fn from(r: CompactionRequest) -> Self {
        Command {
            op: Some(Op::Compaction(r)),
            ..Default::default()
        }
    }
}

impl From<crate::pb::etcdserverpb::LeaseGrantRequest> for Command {
    fn from(r: crate::pb::etcdserverpb::LeaseGrantRequest) -> Self {
        Command {
            op: Some(Op::LeaseGrant(r)),
            ..Default::default()
        }
    }
}
impl From<crate::pb::etcdserverpb::LeaseRevokeRequest> for Command {
    fn from(r: crate::pb::etcdserverpb::LeaseRevokeRequest) -> Self {
        Command {
            op: Some(Op::LeaseRevoke(r)),
            ..Default::default()
        }
    }
}
impl From<crate::pb::bftdkv::LeaseRenew> for Command {
    fn from(r: crate::pb::bftdkv::LeaseRenew) -> Self {
        Command {
            op: Some(Op::LeaseRenew(r)),
            ..Default::default()
        }
    }
}
impl From<crate::pb::bftdkv::LeaseExpire> for Command {
    fn from(r: crate::pb::bftdkv::LeaseExpire) -> Self {
        Command {
            op: Some(Op::LeaseExpire(r)),
            ..Default::default()
        }
    }
}

impl From<crate::pb::etcdserverpb::AlarmRequest> for Command {
    fn from(r: crate::pb::etcdserverpb::AlarmRequest) -> Self {
        Command {
            op: Some(Op::Alarm(r)),
            ..Default::default()
        }
    }
}

macro_rules! auth_command {
    ($($req:ident => $op:ident),* $(,)?) => {$(
        impl From<crate::pb::etcdserverpb::$req> for Command {
            fn from(r: crate::pb::etcdserverpb::$req) -> Self {
                Command {
                    op: Some(Op::$op(r)),
                    ..Default::default()
                }
            }
        }
    )*};
}

auth_command! {
    AuthEnableRequest => AuthEnable,
    AuthDisableRequest => AuthDisable,
    AuthUserAddRequest => UserAdd,
    AuthUserDeleteRequest => UserDelete,
    AuthUserChangePasswordRequest => UserChangePassword,
    AuthUserGrantRoleRequest => UserGrantRole,
    AuthUserRevokeRoleRequest => UserRevokeRole,
    AuthRoleAddRequest => RoleAdd,
    AuthRoleDeleteRequest => RoleDelete,
    AuthRoleGrantPermissionRequest => RoleGrantPermission,
    AuthRoleRevokePermissionRequest => RoleRevokePermission,
}

/// Encodes commands as a protobuf `bftdkv.CommandBatch` (the same bytes as
/// `CommandBatch { commands }.encode_to_vec()`, without copying the
/// commands). Deterministic: equal commands give equal bytes.
pub fn encode_batch(commands: &[Command]) -> Vec<u8> {
    let len: usize = commands
        .iter()
        .map(|c| {
            let n = c.encoded_len();
            1 + prost::length_delimiter_len(n) + n
        })
        .sum();
    let mut buf = Vec::with_capacity(len);
    for c in commands {
        buf.push(((BATCH_COMMANDS_FIELD << 3) | WIRE_TYPE_LEN) as u8);
        c.encode_length_delimited(&mut buf)
            .expect("a Vec grows as needed");
    }
    debug_assert_eq!(buf.len(), len);
    buf
}

/// Decodes a `bftdkv.CommandBatch` of at most `max_commands` commands.
///
/// Counts commands before decoding each one, so a batch claiming more than
/// `max_commands` costs nothing beyond the scan. Errors (never panics):
/// [`DecodeError::TooLarge`] past `max_commands`, [`DecodeError::Truncated`]
/// for a cut field, [`DecodeError::Invalid`] for a field other than
/// `commands` or a malformed command. Unknown fields inside a command are
/// skipped, as protobuf does.
pub fn decode_batch(bytes: &[u8], max_commands: usize) -> Result<Vec<Command>, DecodeError> {
    let mut rest = bytes;
    let mut commands = Vec::new();
    while !rest.is_empty() {
        let key = read_varint(&mut rest)?;
        if key != ((BATCH_COMMANDS_FIELD << 3) | WIRE_TYPE_LEN) {
            return Err(DecodeError::Invalid("command batch field"));
        }
        let len = read_varint(&mut rest)?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Invalid("command length"))?;
        if len > rest.len() {
            return Err(DecodeError::Truncated {
                need: len,
                have: rest.len(),
            });
        }
        if commands.len() == max_commands {
            return Err(DecodeError::TooLarge {
                what: "commands in batch",
                len: commands.len() + 1,
                max: max_commands,
            });
        }
        let (body, tail) = rest.split_at(len);
        let command = Command::decode(body).map_err(|_| DecodeError::Invalid("command"))?;
        commands.push(command);
        rest = tail;
    }
    Ok(commands)
}

/// A protobuf base-128 varint of at most 10 bytes.
fn read_varint(rest: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let Some((&byte, tail)) = rest.split_first() else {
            return Err(DecodeError::Truncated { need: 1, have: 0 });
        };
        *rest = tail;
        if i == 9 && byte > 1 {
            return Err(DecodeError::Invalid("varint overflow"));
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::Invalid("varint too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::bftdkv::CommandBatch;

    #[test]
    fn encode_batch_equals_prost_message_encoding() {
        let commands = vec![
            Command::from(PutRequest {
                key: b"k".to_vec(),
                value: vec![7; 300],
                ..Default::default()
            }),
            Command::from(RangeRequest {
                key: b"a".to_vec(),
                range_end: vec![0],
                ..Default::default()
            }),
            Command::default(),
        ];
        let ours = encode_batch(&commands);
        let prost = CommandBatch {
            commands: commands.clone(),
        }
        .encode_to_vec();
        assert_eq!(ours, prost);
        assert_eq!(decode_batch(&ours, 3).unwrap(), commands);
        assert_eq!(
            CommandBatch::decode(ours.as_slice()).unwrap().commands,
            commands
        );
    }

    #[test]
    fn decode_batch_rejects_more_than_max_commands() {
        let commands = vec![Command::default(); 4];
        let bytes = encode_batch(&commands);
        assert_eq!(
            decode_batch(&bytes, 3),
            Err(DecodeError::TooLarge {
                what: "commands in batch",
                len: 4,
                max: 3
            })
        );
        assert_eq!(decode_batch(&bytes, 4).unwrap().len(), 4);
    }

    #[test]
    fn decode_batch_rejects_truncation_and_foreign_fields() {
        let bytes = encode_batch(&[Command::from(PutRequest {
            key: b"key".to_vec(),
            ..Default::default()
        })]);
        assert!(matches!(
            decode_batch(&bytes[..bytes.len() - 1], 10),
            Err(DecodeError::Truncated { .. })
        ));
        // Field 2, varint.
        assert_eq!(
            decode_batch(&[0x10, 0x01], 10),
            Err(DecodeError::Invalid("command batch field"))
        );
        assert_eq!(
            decode_batch(
                &[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
                10
            ),
            Err(DecodeError::Invalid("varint overflow"))
        );
        assert_eq!(decode_batch(&[], 10).unwrap(), vec![]);
    }

    #[test]
    fn read_only_means_only_ranges_recursively() {
        use crate::pb::etcdserverpb::RequestOp;
        let range = RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key: b"a".to_vec(),
                serializable: true,
                ..Default::default()
            })),
        };
        let put = RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: b"a".to_vec(),
                ..Default::default()
            })),
        };
        let nested_ro = RequestOp {
            request: Some(Request::RequestTxn(TxnRequest {
                success: vec![range.clone()],
                ..Default::default()
            })),
        };
        let nested_rw = RequestOp {
            request: Some(Request::RequestTxn(TxnRequest {
                failure: vec![put.clone()],
                ..Default::default()
            })),
        };
        let txn = |success: Vec<RequestOp>, failure: Vec<RequestOp>| {
            Command::from(TxnRequest {
                compare: vec![],
                success,
                failure,
            })
        };
        assert!(Command::from(RangeRequest::default()).is_read_only());
        assert!(txn(vec![range.clone(), nested_ro.clone()], vec![range.clone()]).is_read_only());
        assert!(txn(vec![range.clone(), nested_ro.clone()], vec![]).is_serializable());
        assert!(!txn(vec![range.clone()], vec![put.clone()]).is_read_only());
        assert!(!txn(vec![nested_rw], vec![]).is_read_only());
        assert!(!Command::from(PutRequest::default()).is_read_only());
        assert!(!Command::from(CompactionRequest::default()).is_read_only());
        assert!(!Command::default().is_read_only());
        assert!(!Command::from(RangeRequest::default()).is_serializable());
    }
}
