//! The batch system's promise: raft writes of many regions in one poll round
//! share one synced write. Counted with an engine wrapper.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use atoll_engine_memory::MemoryEngine;
use atoll_engine_traits::*;
use atoll_proto::atollpb::{CmdType, PutRequest, RaftCmdRequest, Request};
use atoll_raftstore::Config;
use atoll_tests::sim::{header, Cluster};

/// Delegates to the memory engine and counts synced writes.
#[derive(Clone)]
struct CountingEngine {
    inner: MemoryEngine,
    syncs: Arc<AtomicU64>,
}

impl Peekable for CountingEngine {
    fn get_value_cf(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get_value_cf(cf, key)
    }
}

impl Iterable for CountingEngine {
    type Iterator = <MemoryEngine as Iterable>::Iterator;
    fn iterator_cf(&self, cf: &str, lower: &[u8], upper: &[u8]) -> Result<Self::Iterator> {
        self.inner.iterator_cf(cf, lower, upper)
    }
}

impl KvEngine for CountingEngine {
    type Snapshot = <MemoryEngine as KvEngine>::Snapshot;
    type WriteBatch = <MemoryEngine as KvEngine>::WriteBatch;
    fn write_batch(&self) -> Self::WriteBatch {
        self.inner.write_batch()
    }
    fn write_batch_with_cap(&self, cap: usize) -> Self::WriteBatch {
        self.inner.write_batch_with_cap(cap)
    }
    fn write(&self, wb: &mut Self::WriteBatch, opts: WriteOptions) -> Result<()> {
        if opts.sync {
            self.syncs.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.write(wb, opts)
    }
    fn snapshot(&self) -> Self::Snapshot {
        self.inner.snapshot()
    }
    fn sync(&self) -> Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        self.inner.sync()
    }
    fn approximate_size_cf(&self, cf: &str, start: &[u8], end: &[u8]) -> Result<u64> {
        self.inner.approximate_size_cf(cf, start, end)
    }
}

#[test]
fn one_fsync_covers_many_regions_per_poll_round() {
    let syncs = Arc::new(AtomicU64::new(0));
    let engine = CountingEngine { inner: MemoryEngine::new(), syncs: syncs.clone() };
    let mut c = Cluster::new(Config::for_tests(), vec![engine]);
    c.start_all();
    // 16 regions: split at k01..k15.
    for i in 1..16 {
        let k = format!("k{i:02}").into_bytes();
        c.split(&k, &k).unwrap();
    }
    let regions: Vec<_> =
        (0..16).map(|i| c.region_for_key(format!("k{i:02}-x").as_bytes())).collect();
    // Every region has a leader before the burst.
    for i in 0..16 {
        c.must_put(format!("k{i:02}-warm").as_bytes(), b"v");
    }
    let h = c.handle(1).unwrap();

    // A burst: 20 writes into each of the 16 regions, all queued before any completes.
    const PER_REGION: usize = 20;
    let before = syncs.load(Ordering::SeqCst);
    let (tx, rx) = mpsc::channel();
    for n in 0..PER_REGION {
        for (i, r) in regions.iter().enumerate() {
            let req = RaftCmdRequest {
                header: Some(header(r)),
                requests: vec![Request {
                    cmd_type: CmdType::Put as i32,
                    put: Some(PutRequest {
                        cf: String::new(),
                        key: format!("k{i:02}-{n}").into_bytes(),
                        value: b"v".to_vec(),
                    }),
                    ..Default::default()
                }],
                admin_request: None,
            };
            let tx = tx.clone();
            h.write(
                req,
                Box::new(move |res| {
                    let _ = tx.send(res.is_ok());
                }),
            );
        }
    }
    let total = PER_REGION * regions.len();
    for _ in 0..total {
        assert!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), "a write failed");
    }
    let used = syncs.load(Ordering::SeqCst) - before;
    println!("{total} writes in 16 regions used {used} synced writes");
    assert!(used > 0);
    assert!(
        used * 4 <= total as u64,
        "{used} fsyncs for {total} writes: raft writes were not batched"
    );
}
