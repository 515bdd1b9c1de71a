//! Engine write benchmark: what batching many regions' raft writes into one
//! synced write batch per poll round buys, versus one fsync per write.
//! Prints a table; run with `make bench`.

use std::time::Instant;

use atoll_engine_rocks::{RocksConfig, RocksEngine};
use atoll_engine_traits::{KvEngine, WriteBatch, WriteOptions, CF_RAFT};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Total entries written per case.
    #[arg(long, default_value_t = 20_000)]
    entries: usize,
    /// Entry payload bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
}

fn run(engine: &RocksEngine, entries: usize, per_batch: usize, value: &[u8]) -> f64 {
    let start = Instant::now();
    let mut wb = engine.write_batch();
    for i in 0..entries {
        let key = format!("bench-{per_batch}-{i:010}");
        wb.put_cf(CF_RAFT, key.as_bytes(), value).unwrap();
        if wb.count() >= per_batch {
            engine.write(&mut wb, WriteOptions::sync()).unwrap();
        }
    }
    if !wb.is_empty() {
        engine.write(&mut wb, WriteOptions::sync()).unwrap();
    }
    entries as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().unwrap();
    let engine = RocksEngine::open(dir.path(), &RocksConfig::default()).unwrap();
    let value = vec![b'x'; args.value_size];
    println!("{:>16} {:>14} {:>12}", "entries/fsync", "entries/s", "speedup");
    let mut base = 0.0;
    for per_batch in [1usize, 16, 256] {
        // Fewer entries for the slow single-write case keeps the run short.
        let n = if per_batch == 1 { args.entries / 10 } else { args.entries };
        let rate = run(&engine, n, per_batch, &value);
        if per_batch == 1 {
            base = rate;
        }
        println!("{:>16} {:>14.0} {:>11.1}x", per_batch, rate, rate / base);
    }
}
