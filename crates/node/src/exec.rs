//! Executing decisions on the kv store and taking checkpoints.
//!
//! Writes execute at every replica. Read-only operations (linearizable
//! reads, ordered through consensus) execute only at the replica whose
//! client asked (`own`), at their position in the order: the same result
//! every replica would compute there, without the others doing the work.

use control::checkpoint::Prepared;
use control::{ClientTable, Decision};
use kv::{KvError, Store};
use wire::Request;

/// Executes one request against `store`: its writes always, its reads only
/// when `own` (this replica's client asked). Returns one result per command
/// when `own` (none otherwise); an undecodable payload (deterministic at
/// every replica) executes nothing and returns `Err`. At most
/// `commands_max` commands are decoded from one request.
pub fn execute_request(
    store: &mut Store,
    r: &Request,
    own: bool,
    commands_max: usize,
) -> Result<Vec<Result<kv::Response, KvError>>, wire::DecodeError> {
    let commands = kv::command::decode_batch(&r.payload, commands_max)?;
    Ok(execute_commands(
        store,
        origin(r),
        &commands,
        own,
        kv::DEFAULT_RANGE_RESPONSE_BYTES_MAX,
    ))
}

/// The replica on whose behalf request `r` was ordered: its client id is a
/// replica's proxy id, which only that replica's key signs. What a lease
/// expiry vote counts as (`kv::Store::apply_from`).
pub fn origin(r: &Request) -> Option<u16> {
    r.client.replica().map(|id| id.0)
}

/// Executes decoded commands (see [`execute_request`]) ordered on behalf of
/// replica `origin` ([`origin`]); a read's response is capped at
/// `range_bytes_max` bytes (`KvError::ResponseTooLarge`).
pub fn execute_commands(
    store: &mut Store,
    origin: Option<u16>,
    commands: &[kv::Command],
    own: bool,
    range_bytes_max: usize,
) -> Vec<Result<kv::Response, KvError>> {
    commands
        .iter()
        .filter_map(|c| {
            if c.is_read_only() {
                own.then(|| store.execute_read_only_limited(c, range_bytes_max))
            } else {
                let res = store.apply_from(origin, c);
                own.then_some(res)
            }
        })
        .collect()
}

/// Executes commands that are all read-only (`kv::Command::is_read_only`)
/// with shared access to the store: an ordered read needs no write lock.
///
/// # Panics
/// If a command writes.
pub fn read_commands(
    store: &Store,
    commands: &[kv::Command],
    range_bytes_max: usize,
) -> Vec<Result<kv::Response, KvError>> {
    commands
        .iter()
        .map(|c| {
            assert!(c.is_read_only(), "read_commands with a write");
            store.execute_read_only_limited(c, range_bytes_max)
        })
        .collect()
}

/// The checkpoint a decision asks for (`d.checkpoint`, the de-duplication
/// table after it): the store's snapshot after executing `d`, the table
/// and `d`'s proof, encoded (`control::checkpoint::encode`) and hashed in
/// `chunk_bytes` chunks. Costs a pass over the whole store: run it off the
/// control thread.
pub fn take_checkpoint(
    snapshot: &[u8],
    d: &Decision,
    clients: &ClientTable,
    chunk_bytes: usize,
) -> Prepared {
    let blob = control::checkpoint::encode(d.cid, Some(&d.proof), clients, snapshot);
    control::checkpoint::prepare(blob, chunk_bytes).expect("a blob made by checkpoint::encode")
}
