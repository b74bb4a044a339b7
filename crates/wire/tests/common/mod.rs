#![allow(dead_code)]
//! Shared fixtures for wire tests: a deterministic cluster keyring.

use std::collections::HashMap;
use std::sync::Arc;

use wire::{Keyring, ReplicaId, SecretKey, Signer};

pub const CLUSTER: u64 = 0xB1FD;

pub fn secret(i: u16) -> SecretKey {
    let mut seed = [7u8; 32];
    seed[..2].copy_from_slice(&i.to_be_bytes());
    SecretKey::from_seed(seed)
}

pub fn keyring(n: u16) -> Arc<Keyring> {
    Arc::new(Keyring::new(
        CLUSTER,
        (0..n).map(|i| secret(i).public()).collect(),
        HashMap::new(),
    ))
}

pub fn signer(i: u16) -> Signer {
    Signer::new(CLUSTER, ReplicaId(i), secret(i))
}
