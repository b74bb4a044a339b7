//! `bftd`: the replica binary's library — config, CLI commands, and the
//! wiring of the layers into a replica process.

pub mod certs;
pub mod compactor;
pub mod config;
pub mod demo;
pub mod health;
pub mod metrics;
pub mod replica;
pub mod seed;
pub mod serve;
pub mod systemd;
