//! bftd's benchmark harness as a library: the `bftd-perf` binary is a thin
//! CLI over these modules, and later benchmarks (failover, flood) reuse them.

pub mod bftd_cluster;
pub mod bftd_demo;
pub mod etcd_cluster;
pub mod failover;
pub mod flood;
pub mod flooder;
pub mod html_report;
pub mod kv_compare;
pub mod loadgen;
pub mod netns;
pub mod placement;
pub mod plot;
pub mod procs;
pub mod report;
pub mod tls_compare;
pub mod watch_bench;
