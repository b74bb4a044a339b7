//! Cost of `Store::apply` per put with values in the heap and in LMDB (one
//! LMDB write transaction per command, no fsync), and of a full snapshot:
//! perf/results/2026-12-07/lmdb-values.md.
//!
//! `cargo run --release -p kv --example values_bench -- [PUTS] [LMDB_DIR]`
//! (defaults: 200000 puts of 1 KiB over 1000 keys, /tmp/kv-values-bench,
//! wiped first).

use std::time::Instant;

use kv::pb::etcdserverpb::PutRequest;

fn run(name: &str, mut store: kv::Store, puts: u32) {
    let keys = 1000;
    let started = Instant::now();
    let mut latencies_ns = Vec::with_capacity(puts as usize);
    for i in 0..puts {
        let put = PutRequest {
            key: format!("k{:06}", i % keys).into_bytes(),
            value: vec![(i % 251) as u8; 1024],
            ..Default::default()
        };
        let t = Instant::now();
        store.apply(&put.into()).expect("a put within the quota");
        latencies_ns.push(t.elapsed().as_nanos() as u64);
    }
    let elapsed = started.elapsed();
    latencies_ns.sort_unstable();
    let us = |q: f64| latencies_ns[((latencies_ns.len() - 1) as f64 * q) as usize] as f64 / 1e3;
    let t = Instant::now();
    let snapshot = store.snapshot();
    println!(
        "{name}: {puts} puts of 1 KiB, {:.0} puts/s; apply p50 {:.1} us, p99 {:.1} us, max {:.0} us; \
         snapshot of {} MiB in {:.0} ms",
        f64::from(puts) / elapsed.as_secs_f64(),
        us(0.5),
        us(0.99),
        us(1.0),
        snapshot.len() >> 20,
        t.elapsed().as_secs_f64() * 1e3
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let puts: u32 = args
        .next()
        .map_or(200_000, |a| a.parse().expect("PUTS is a number"));
    let dir = args.next().unwrap_or_else(|| "/tmp/kv-values-bench".into());
    run("heap", kv::Store::new(), puts);
    let backend = kv::ValueBackend::lmdb_for_quota(&dir, 0);
    let store =
        kv::Store::open(&backend, kv::DEFAULT_MAX_TXN_OPS).expect("the LMDB directory opens");
    run("lmdb", store, puts);
}
