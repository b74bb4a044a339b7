//! Embedded B-tree stores on bftd's MVCC write pattern (issue 10, item 1:
//! "measure the candidates on this workload and say why you chose one").
//!
//! The layout measured is the one planned for bftd's disk-backed store
//! (docs/design/state-at-scale.md): history entries keyed by revision
//! (`main` u64 big-endian ++ `sub` u32 big-endian), so every write is an
//! append at the right edge of the B-tree, as in etcd's bbolt `key` bucket;
//! the key index stays in the heap. One write transaction per decided batch,
//! committed without fsync (the WAL is what makes a decision durable), and a
//! durable commit at every checkpoint. A reader thread does random point
//! reads of committed revisions all along (the API side reading while the
//! executor writes).
//!
//! Usage: `store-candidates [redb|lmdb|lmdb-append|both] [value_bytes] [total_mib]`
//! (defaults: both, 1024, 512). Prints one line per store: fill throughput,
//! per-batch commit p50/p99/max, checkpoint (durable commit) max, reader
//! p50/p99/max and reads done, RSS after the fill, peak RSS, file size.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A durable commit after this many bytes of values (bftd's checkpoint
/// period at ~1 KiB values and 1,000 decisions of ~64 requests).
const CHECKPOINT_BYTES: u64 = 64 << 20;
/// Entries per write transaction (one decided batch).
const BATCH_BYTES: u64 = 128 << 10;
/// Distinct keys written round-robin: each key gets a few revisions.
const KEY_SPACE: u64 = 200_000;

trait Candidate: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Appends `entries` in one transaction; durable when `durable`.
    fn commit(&self, entries: &[(Vec<u8>, Vec<u8>)], durable: bool) -> Result<()>;
    /// Length of the value stored under `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<usize>>;
}

const REDB_TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("history");

struct Redb(redb::Database);

impl Candidate for Redb {
    fn name(&self) -> &'static str {
        "redb 2"
    }
    fn commit(&self, entries: &[(Vec<u8>, Vec<u8>)], durable: bool) -> Result<()> {
        let mut tx = self.0.begin_write()?;
        tx.set_durability(if durable {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        });
        {
            let mut t = tx.open_table(REDB_TABLE)?;
            for (k, v) in entries {
                t.insert(k.as_slice(), v.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }
    fn get(&self, key: &[u8]) -> Result<Option<usize>> {
        let tx = self.0.begin_read()?;
        let t = match tx.open_table(REDB_TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(t.get(key)?.map(|v| v.value().len()))
    }
}

struct Lmdb {
    env: heed::Env,
    db: heed::Database<heed::types::Bytes, heed::types::Bytes>,
    /// `MDB_APPEND`: keys come in ascending order, so pages fill up
    /// instead of splitting in half.
    append: bool,
}

impl Candidate for Lmdb {
    fn name(&self) -> &'static str {
        if self.append {
            "lmdb append"
        } else {
            "lmdb (heed 0.20)"
        }
    }
    fn commit(&self, entries: &[(Vec<u8>, Vec<u8>)], durable: bool) -> Result<()> {
        let mut w = self.env.write_txn()?;
        for (k, v) in entries {
            if self.append {
                self.db.put_with_flags(&mut w, heed::PutFlags::APPEND, k, v)?;
            } else {
                self.db.put(&mut w, k, v)?;
            }
        }
        w.commit()?;
        if durable {
            self.env.force_sync()?;
        }
        Ok(())
    }
    fn get(&self, key: &[u8]) -> Result<Option<usize>> {
        let r = self.env.read_txn()?;
        Ok(self.db.get(&r, key)?.map(|v| v.len()))
    }
}

fn open_redb(dir: &Path) -> Result<Arc<dyn Candidate>> {
    let db = redb::Database::builder()
        .set_cache_size(64 << 20)
        .create(dir.join("store.redb"))?;
    Ok(Arc::new(Redb(db)))
}

fn open_lmdb(dir: &Path, append: bool) -> Result<Arc<dyn Candidate>> {
    let mut opts = heed::EnvOpenOptions::new();
    opts.map_size(64 << 30).max_dbs(1);
    // SAFETY: NO_SYNC only skips the fsync at commit (force_sync at each
    // checkpoint makes it durable); the environment is opened once, by this
    // process, in a fresh directory.
    let env = unsafe {
        opts.flags(heed::EnvFlags::NO_SYNC);
        opts.open(dir)?
    };
    let mut w = env.write_txn()?;
    let db = env.create_database(&mut w, Some("history"))?;
    w.commit()?;
    Ok(Arc::new(Lmdb { env, db, append }))
}

fn revision_key(main: u64, sub: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(12);
    k.extend_from_slice(&main.to_be_bytes());
    k.extend_from_slice(&sub.to_be_bytes());
    k
}

/// An encoded history entry: key, then the put's metadata, then the value.
fn entry_value(rng: &mut ChaCha8Rng, key_id: u64, value_bytes: usize) -> Vec<u8> {
    let key = format!("/registry/pods/default/pod-{key_id:08}");
    let mut v = Vec::with_capacity(2 + key.len() + 24 + value_bytes);
    v.extend_from_slice(&(key.len() as u16).to_be_bytes());
    v.extend_from_slice(key.as_bytes());
    v.extend_from_slice(&[0u8; 24]);
    let start = v.len();
    v.resize(start + value_bytes, 0);
    rng.fill(&mut v[start..]);
    v
}

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn run(store: Arc<dyn Candidate>, dir: &Path, value_bytes: usize, total_bytes: u64) -> Result<()> {
    let per_batch = (BATCH_BYTES / value_bytes as u64).max(1) as usize;
    let batches = total_bytes / (per_batch as u64 * value_bytes as u64);
    let committed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, committed, done) = (store.clone(), committed.clone(), done.clone());
        std::thread::spawn(move || -> Result<(Histogram<u64>, u64)> {
            let mut rng = ChaCha8Rng::seed_from_u64(2);
            let mut h = Histogram::<u64>::new(3)?;
            let mut misses = 0;
            while !done.load(Ordering::Acquire) {
                let top = committed.load(Ordering::Acquire);
                if top == 0 {
                    std::thread::yield_now();
                    continue;
                }
                let main = rng.gen_range(1..=top);
                let t = Instant::now();
                if store.get(&revision_key(main, 0))?.is_none() {
                    misses += 1;
                }
                h.record(t.elapsed().as_micros() as u64)?;
            }
            Ok((h, misses))
        })
    };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut commit_us = Histogram::<u64>::new(3)?;
    let mut checkpoint_us_max = 0u64;
    let mut since_checkpoint = 0u64;
    let mut main = 0u64;
    let start = Instant::now();
    for _ in 0..batches {
        let entries: Vec<_> = (0..per_batch)
            .map(|_| {
                main += 1;
                let key = revision_key(main, 0);
                (key, entry_value(&mut rng, main % KEY_SPACE, value_bytes))
            })
            .collect();
        since_checkpoint += (per_batch * value_bytes) as u64;
        let durable = since_checkpoint >= CHECKPOINT_BYTES;
        let t = Instant::now();
        store.commit(&entries, durable)?;
        let us = t.elapsed().as_micros() as u64;
        if durable {
            checkpoint_us_max = checkpoint_us_max.max(us);
            since_checkpoint = 0;
        } else {
            commit_us.record(us)?;
        }
        committed.store(main, Ordering::Release);
    }
    let fill = start.elapsed();
    done.store(true, Ordering::Release);
    let (reads, misses) = reader.join().expect("reader thread")?;
    if misses > 0 {
        bail!("{}: {misses} committed revisions not found", store.name());
    }
    let mib = (batches * per_batch as u64 * value_bytes as u64) as f64 / (1 << 20) as f64;
    println!(
        "{:<17} value {:>6} B  {:>6.0} MiB in {:>6.1} s = {:>6.1} MiB/s  commit p50/p99/max {:.2}/{:.2}/{:.1} ms  \
         checkpoint max {:.1} ms  read p50/p99/max {:.3}/{:.3}/{:.1} ms ({} reads)  RSS {} MiB (anon {} MiB, file {} MiB; peak {} MiB)  data {} MiB",
        store.name(),
        value_bytes,
        mib,
        fill.as_secs_f64(),
        mib / fill.as_secs_f64(),
        ms(commit_us.value_at_quantile(0.5)),
        ms(commit_us.value_at_quantile(0.99)),
        ms(commit_us.max()),
        ms(checkpoint_us_max),
        ms(reads.value_at_quantile(0.5)),
        ms(reads.value_at_quantile(0.99)),
        ms(reads.max()),
        reads.len(),
        rss_kib("VmRSS:") / 1024,
        rss_kib("RssAnon:") / 1024,
        rss_kib("RssFile:") / 1024,
        rss_kib("VmHWM:") / 1024,
        dir_bytes(dir) >> 20,
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map(String::as_str).unwrap_or("both");
    let value_bytes: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(1024);
    let total_mib: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(512);
    let names: &[&str] = match which {
        "both" => &["redb", "lmdb"],
        "redb" => &["redb"],
        "lmdb" => &["lmdb"],
        "lmdb-append" => &["lmdb-append"],
        other => bail!("unknown store {other:?}: use redb, lmdb, lmdb-append or both"),
    };
    for name in names {
        // One store per process would keep RSS apart; run one name per
        // invocation for RSS figures (`both` is for a quick look).
        let dir = tempfile::tempdir_in(std::env::var("STORE_DIR").unwrap_or_else(|_| ".".into()))
            .context("a scratch directory (set STORE_DIR)")?;
        let store = match *name {
            "redb" => open_redb(dir.path())?,
            "lmdb" => open_lmdb(dir.path(), false)?,
            _ => open_lmdb(dir.path(), true)?,
        };
        run(store, dir.path(), value_bytes, total_mib << 20)?;
    }
    Ok(())
}
