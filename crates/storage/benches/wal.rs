//! Group-commit latency with and without preallocation (one writer, and
//! four at once as four replicas sharing a disk), checkpoint cost and
//! recovery time on this machine's disk. `cargo bench -p storage --bench wal`; prints a table,
//! asserts nothing. Uses a directory under `std::env::temp_dir()` (set
//! TMPDIR to measure another disk).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use storage::{Durability, Limits, PreallocStats, Record, Storage};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(label: &str, mut samples: Vec<Duration>, bytes_each: usize) {
    samples.sort();
    let p50 = percentile(&samples, 0.50);
    let p99 = percentile(&samples, 0.99);
    let max = *samples.last().expect("samples");
    let total: Duration = samples.iter().sum();
    let mb_per_s = (bytes_each * samples.len()) as f64 / total.as_secs_f64() / 1e6;
    println!(
        "{label:<44} n={:<5} p50={:>8.1?} p99={:>8.1?} max={:>8.1?} {mb_per_s:>7.1} MB/s",
        samples.len(),
        p50,
        p99,
        max
    );
}

/// The floor: one 4 KiB pwrite and one fdatasync on a plain file, timed
/// apart (what io_uring could save is part of the first).
fn raw_floor(dir: &Path, iterations: usize) {
    let path = dir.join("raw.bin");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("raw file");
    let block = vec![7u8; 4096];
    let mut writes = Vec::with_capacity(iterations);
    let mut syncs = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let t = Instant::now();
        file.write_all_at(&block, (i * 4096) as u64)
            .expect("pwrite");
        writes.push(t.elapsed());
        let t = Instant::now();
        file.sync_data().expect("fdatasync");
        syncs.push(t.elapsed());
    }
    report("raw pwrite 4 KiB (syscall + page cache)", writes, 4096);
    report("raw fdatasync after it", syncs, 4096);
    std::fs::remove_file(path).expect("remove raw file");
}

/// The floor with preallocation: the same 4 KiB pwrite + fdatasync into
/// a file whose blocks were written (zeros) and synced beforehand.
fn raw_overwrite_floor(dir: &Path, iterations: usize) {
    let path = dir.join("raw-prealloc.bin");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("raw file");
    file.write_all_at(&vec![0u8; iterations * 4096], 0)
        .expect("zero fill");
    file.sync_all().expect("fsync");
    let block = vec![7u8; 4096];
    let mut syncs = Vec::with_capacity(iterations);
    for i in 0..iterations {
        file.write_all_at(&block, (i * 4096) as u64)
            .expect("pwrite");
        let t = Instant::now();
        file.sync_data().expect("fdatasync");
        syncs.push(t.elapsed());
    }
    report("raw fdatasync after pwrite into zeros", syncs, 4096);
    std::fs::remove_file(path).expect("remove raw file");
}

/// How the log is preallocated in one column of the table.
#[derive(Clone, Copy)]
struct Variant {
    name: &'static str,
    limits: Limits,
}

fn variants() -> [Variant; 3] {
    let default = Limits::default();
    [
        Variant {
            name: "off",
            limits: Limits {
                prealloc_bytes: 0,
                ..default
            },
        },
        Variant {
            name: "(b) 1 MiB margin",
            limits: default,
        },
        Variant {
            name: "(a) whole 16 MiB seg",
            limits: Limits {
                record_bytes_max: 2 << 20,
                group_bytes_max: 4 << 20,
                segment_bytes_max: 16 << 20,
                prealloc_bytes: 16 << 20,
                ..default
            },
        },
    ]
}

/// What one writer measured.
#[derive(Default)]
struct Run {
    /// append+sync of one group.
    commits: Vec<Duration>,
    /// One `prepare` call that did work (untimed in `commits`).
    prepare_steps: Vec<Duration>,
    stats: PreallocStats,
    open: Duration,
}

/// One writer: `iterations` times `append` `records` proposals of
/// `batch_bytes` each and `sync` (timed), then `prepare` until it has
/// nothing left, as an idle storage thread does (timed apart).
fn writer(
    dir: &Path,
    limits: Limits,
    records: usize,
    batch_bytes: usize,
    iterations: usize,
    start: &Barrier,
) -> Run {
    let _ = std::fs::remove_dir_all(dir);
    let t = Instant::now();
    let (mut s, _) = Storage::open(dir, Durability::Fsync, limits).expect("open");
    let mut run = Run {
        open: t.elapsed(),
        commits: Vec::with_capacity(iterations),
        ..Run::default()
    };
    let batch = vec![0xA5u8; batch_bytes];
    let mut cid = 0;
    start.wait();
    for _ in 0..iterations {
        let t = Instant::now();
        for _ in 0..records {
            cid += 1;
            s.append(&Record::Proposal {
                regency: 0,
                cid,
                batch: batch.clone(),
            })
            .expect("append");
        }
        s.sync().expect("sync");
        run.commits.push(t.elapsed());
        for _ in 0..1000 {
            let t = Instant::now();
            if !s.prepare().expect("prepare") {
                break;
            }
            run.prepare_steps.push(t.elapsed());
        }
    }
    run.stats = s.prealloc_stats();
    drop(s);
    std::fs::remove_dir_all(dir).expect("clean up");
    run
}

/// `writers` writers in as many threads, separate directories, started
/// together; their samples merged.
fn group_commit(
    root: &Path,
    limits: Limits,
    writers: usize,
    records: usize,
    batch_bytes: usize,
    iterations: usize,
) -> Run {
    let start = Barrier::new(writers);
    let runs: Vec<Run> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let dir = root.join(format!("w{w}"));
                let start = &start;
                scope.spawn(move || writer(&dir, limits, records, batch_bytes, iterations, start))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer"))
            .collect()
    });
    let mut all = Run::default();
    for run in runs {
        all.commits.extend(run.commits);
        all.prepare_steps.extend(run.prepare_steps);
        all.open = all.open.max(run.open);
        let (a, b) = (&mut all.stats, run.stats);
        a.groups += b.groups;
        a.groups_extending += b.groups_extending;
        a.rollovers_prepared += b.rollovers_prepared;
        a.rollovers_unprepared += b.rollovers_unprepared;
        a.prepare_steps += b.prepare_steps;
        a.zeros_written_bytes += b.zeros_written_bytes;
    }
    all.commits.sort();
    all.prepare_steps.sort();
    all
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The before/after table: append+sync p50/p99 per group size and number
/// of writers, one column per preallocation variant; then what the
/// preallocating variants did off the commit path.
fn group_commit_table(root: &Path) {
    let shapes = [
        ("1 KiB (1 x 1 KiB)", 1, 1024, 2000),
        ("64 KiB (64 x 1 KiB)", 64, 1024, 1000),
    ];
    let variants = variants();
    println!();
    println!("append+sync latency, p50 / p99 in µs, over all commits of all writers");
    println!("(prealloc: Limits::prealloc_bytes; prepare() runs untimed between commits)");
    print!("{:<22}{:>8}", "group", "writers");
    for v in &variants {
        print!("{:>24}", v.name);
    }
    println!();
    let mut details = Vec::new();
    for (label, records, batch_bytes, iterations) in shapes {
        for writers in [1, 4] {
            print!("{label:<22}{writers:>8}");
            for v in &variants {
                let run = group_commit(root, v.limits, writers, records, batch_bytes, iterations);
                print!(
                    "{:>24}",
                    format!(
                        "{:.0} / {:.0}",
                        us(percentile(&run.commits, 0.50)),
                        us(percentile(&run.commits, 0.99))
                    )
                );
                details.push((label, writers, v.name, run));
            }
            println!();
        }
    }
    println!();
    println!(
        "{:<22}{:>8} {:<22}{:>8}{:>10}{:>10}{:>10}{:>9}  prepare step p50/p99/max µs",
        "group", "writers", "prealloc", "groups", "extending", "roll prep", "roll unpr", "zero MB"
    );
    for (label, writers, name, run) in details {
        let st = run.stats;
        let steps = if run.prepare_steps.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{:.0} / {:.0} / {:.0} (n={})",
                us(percentile(&run.prepare_steps, 0.50)),
                us(percentile(&run.prepare_steps, 0.99)),
                us(*run.prepare_steps.last().expect("steps")),
                run.prepare_steps.len()
            )
        };
        println!(
            "{label:<22}{writers:>8} {name:<22}{:>8}{:>10}{:>10}{:>10}{:>9.1}  {steps}  (open {:.1?})",
            st.groups,
            st.groups_extending,
            st.rollovers_prepared,
            st.rollovers_unprepared,
            st.zeros_written_bytes as f64 / 1e6,
            run.open
        );
    }
    println!();
}

fn checkpoint(dir: &Path, snapshot_bytes: usize, iterations: usize) {
    let _ = std::fs::remove_dir_all(dir);
    let (mut s, _) = Storage::open(dir, Durability::Fsync, Limits::default()).expect("open");
    let snapshot: Vec<u8> = (0..snapshot_bytes).map(|i| (i * 31 % 251) as u8).collect();
    let t = Instant::now();
    let digest = wire::hash::digest(&snapshot);
    let hash_time = t.elapsed();
    let mut samples = Vec::with_capacity(iterations);
    for cid in 1..=iterations as u64 {
        let t = Instant::now();
        s.write_checkpoint(cid, digest, &snapshot)
            .expect("checkpoint");
        samples.push(t.elapsed());
    }
    report(
        &format!("write_checkpoint {} MB", snapshot_bytes / 1_000_000),
        samples,
        snapshot_bytes,
    );
    println!(
        "{:<44} {hash_time:.1?} (included above: the digest is re-checked)",
        "  of which wire::hash::digest"
    );
    let t = Instant::now();
    let (loaded, _) = s.load_checkpoint().expect("load");
    assert_eq!(loaded.expect("a checkpoint").snapshot.len(), snapshot_bytes);
    println!(
        "{:<44} {:.1?}",
        "load_checkpoint (page cache warm)",
        t.elapsed()
    );
}

fn recovery(dir: &Path, log_bytes: usize) {
    let _ = std::fs::remove_dir_all(dir);
    let batch = vec![0x5Au8; 1000];
    {
        let (mut s, _) = Storage::open(dir, Durability::Fsync, Limits::default()).expect("open");
        for cid in 1..=(log_bytes / 1026) as u64 {
            let r = Record::Proposal {
                regency: 0,
                cid,
                batch: batch.clone(),
            };
            s.append(&r).expect("append");
            if cid % 64 == 0 {
                s.sync().expect("sync");
            }
        }
        s.sync().expect("sync");
    }
    let t = Instant::now();
    let (_, rec) = Storage::open(dir, Durability::Fsync, Limits::default()).expect("recover");
    let elapsed = t.elapsed();
    println!(
        "{:<44} {elapsed:.1?} for {} records ({:.0} MB/s, page cache warm)",
        format!("recovery of a {} MiB log", log_bytes >> 20),
        rec.records.len(),
        log_bytes as f64 / elapsed.as_secs_f64() / 1e6
    );
}

fn main() {
    let root = std::env::temp_dir().join(format!("bftd-storage-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("bench dir");
    println!("storage bench in {}", root.display());
    raw_floor(&root, 2000);
    raw_overwrite_floor(&root, 2000);
    group_commit_table(&root);
    checkpoint(&root.join("ckpt"), 10_000_000, 10);
    recovery(&root.join("recover"), 64 << 20);
    std::fs::remove_dir_all(&root).expect("clean up");
}
