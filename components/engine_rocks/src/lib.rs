//! The RocksDB implementation of `engine_traits`.
//!
//! One RocksDB instance holds every column family (`default`, `lock`,
//! `write`, `raft`), so a single write batch can cover raft state and data
//! and a single WAL fsync makes it durable. Nothing outside this crate names
//! RocksDB types.

use std::path::Path;
use std::sync::Arc;

use atoll_engine_traits::{
    EngineIterator, Error, Iterable, KvEngine, Peekable, Result, Snapshot, WriteBatch,
    WriteOptions, ALL_CFS, CF_DEFAULT,
};
use rocksdb::{ColumnFamily, DBRawIteratorWithThreadMode, Options, ReadOptions, DB};

fn engine_err(e: rocksdb::Error) -> Error {
    Error::Engine(e.into_string())
}

/// Tuning knobs for [`RocksEngine::open`].
#[derive(Clone, Debug)]
pub struct RocksConfig {
    pub max_background_jobs: i32,
    pub write_buffer_size: usize,
    pub max_open_files: i32,
}

impl Default for RocksConfig {
    fn default() -> Self {
        RocksConfig { max_background_jobs: 2, write_buffer_size: 64 << 20, max_open_files: 4096 }
    }
}

/// A shared handle to an open database.
#[derive(Clone)]
pub struct RocksEngine {
    db: Arc<DB>,
}

impl RocksEngine {
    /// Opens (creating if needed) the database at `path` with all column families.
    pub fn open(path: impl AsRef<Path>, cfg: &RocksConfig) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(cfg.max_background_jobs);
        opts.set_write_buffer_size(cfg.write_buffer_size);
        opts.set_max_open_files(cfg.max_open_files);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let db = DB::open_cf(&opts, path, ALL_CFS.iter().copied()).map_err(engine_err)?;
        Ok(RocksEngine { db: Arc::new(db) })
    }

    fn cf(&self, cf: &str) -> Result<&ColumnFamily> {
        cf_handle(&self.db, cf)
    }
}

fn cf_handle<'a>(db: &'a DB, cf: &str) -> Result<&'a ColumnFamily> {
    let cf = if cf.is_empty() { CF_DEFAULT } else { cf };
    db.cf_handle(cf).ok_or_else(|| Error::InvalidCf(cf.to_owned()))
}

fn bounded_read_opts(lower: &[u8], upper: &[u8]) -> ReadOptions {
    let mut ro = ReadOptions::default();
    ro.set_iterate_lower_bound(lower.to_vec());
    if !upper.is_empty() {
        ro.set_iterate_upper_bound(upper.to_vec());
    }
    ro.set_total_order_seek(true);
    ro
}

impl Peekable for RocksEngine {
    fn get_value_cf(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(cf)?, key).map_err(engine_err)
    }
}

impl Iterable for RocksEngine {
    type Iterator = RocksIterator;
    fn iterator_cf(&self, cf: &str, lower: &[u8], upper: &[u8]) -> Result<RocksIterator> {
        let handle = self.cf(cf)?;
        let it = self.db.raw_iterator_cf_opt(handle, bounded_read_opts(lower, upper));
        // SAFETY: the iterator borrows `db`; we keep an `Arc<DB>` in the same
        // struct, declared after the iterator so it is dropped after it.
        let it = unsafe { std::mem::transmute::<RawIter<'_>, RawIter<'static>>(it) };
        Ok(RocksIterator { it, _snap: None, _db: self.db.clone() })
    }
}

type RawIter<'a> = DBRawIteratorWithThreadMode<'a, DB>;

/// A RocksDB write batch together with the database it resolves column families against.
pub struct RocksWriteBatch {
    wb: rocksdb::WriteBatch,
    db: Arc<DB>,
}

// SAFETY: a RocksDB WriteBatch is a plain heap buffer with no thread affinity.
unsafe impl Send for RocksWriteBatch {}

impl WriteBatch for RocksWriteBatch {
    fn put_cf(&mut self, cf: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let handle = cf_handle(&self.db, cf)?;
        self.wb.put_cf(handle, key, value);
        Ok(())
    }
    fn delete_cf(&mut self, cf: &str, key: &[u8]) -> Result<()> {
        let handle = cf_handle(&self.db, cf)?;
        self.wb.delete_cf(handle, key);
        Ok(())
    }
    fn delete_range_cf(&mut self, cf: &str, start: &[u8], end: &[u8]) -> Result<()> {
        let handle = cf_handle(&self.db, cf)?;
        if start < end {
            self.wb.delete_range_cf(handle, start, end);
        }
        Ok(())
    }
    fn count(&self) -> usize {
        self.wb.len()
    }
    fn data_size(&self) -> usize {
        self.wb.size_in_bytes()
    }
    fn clear(&mut self) {
        self.wb.clear();
    }
}

impl KvEngine for RocksEngine {
    type Snapshot = RocksSnapshot;
    type WriteBatch = RocksWriteBatch;

    fn write_batch(&self) -> RocksWriteBatch {
        RocksWriteBatch { wb: rocksdb::WriteBatch::default(), db: self.db.clone() }
    }
    fn write_batch_with_cap(&self, cap: usize) -> RocksWriteBatch {
        RocksWriteBatch { wb: rocksdb::WriteBatch::with_capacity_bytes(cap), db: self.db.clone() }
    }
    fn write(&self, wb: &mut RocksWriteBatch, opts: WriteOptions) -> Result<()> {
        assert!(Arc::ptr_eq(&wb.db, &self.db), "write batch from another engine");
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(opts.sync);
        let batch = std::mem::take(&mut wb.wb);
        self.db.write_opt(batch, &wo).map_err(engine_err)
    }
    fn snapshot(&self) -> RocksSnapshot {
        let snap = self.db.snapshot();
        // SAFETY: the snapshot borrows `db`; `RocksSnapshot` owns an `Arc<DB>`
        // declared after the snapshot, so the database outlives it.
        let snap = unsafe {
            std::mem::transmute::<rocksdb::Snapshot<'_>, rocksdb::Snapshot<'static>>(snap)
        };
        RocksSnapshot { snap: Arc::new(snap), db: self.db.clone() }
    }
    fn sync(&self) -> Result<()> {
        self.db.flush_wal(true).map_err(engine_err)
    }
    fn approximate_size_cf(&self, cf: &str, start: &[u8], end: &[u8]) -> Result<u64> {
        let handle = self.cf(cf)?;
        let end = if end.is_empty() { &[0xffu8; 16][..] } else { end };
        let on_disk = self.db.get_approximate_sizes_cf(handle, &[rocksdb::Range::new(start, end)]);
        // Data still in the memtable is not counted by RocksDB; estimate it.
        let mem = self
            .db
            .property_int_value_cf(handle, "rocksdb.cur-size-all-mem-tables")
            .map_err(engine_err)?
            .unwrap_or(0);
        Ok(on_disk.first().copied().unwrap_or(0) + mem)
    }
}

/// A consistent point-in-time view of the database.
pub struct RocksSnapshot {
    snap: Arc<rocksdb::Snapshot<'static>>,
    db: Arc<DB>,
}

impl Peekable for RocksSnapshot {
    fn get_value_cf(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.snap.get_cf(cf_handle(&self.db, cf)?, key).map_err(engine_err)
    }
}

impl Iterable for RocksSnapshot {
    type Iterator = RocksIterator;
    fn iterator_cf(&self, cf: &str, lower: &[u8], upper: &[u8]) -> Result<RocksIterator> {
        let handle = cf_handle(&self.db, cf)?;
        let mut ro = bounded_read_opts(lower, upper);
        ro.set_snapshot(&self.snap);
        let it = self.db.raw_iterator_cf_opt(handle, ro);
        // SAFETY: see `RocksEngine::iterator_cf`; the iterator also keeps the
        // snapshot alive through `_snap`.
        let it = unsafe { std::mem::transmute::<RawIter<'_>, RawIter<'static>>(it) };
        Ok(RocksIterator { it, _snap: Some(self.snap.clone()), _db: self.db.clone() })
    }
}

impl Snapshot for RocksSnapshot {}

/// A bounded RocksDB cursor. Field order matters: the iterator is dropped
/// before the snapshot and database it borrows.
pub struct RocksIterator {
    it: RawIter<'static>,
    _snap: Option<Arc<rocksdb::Snapshot<'static>>>,
    _db: Arc<DB>,
}

impl RocksIterator {
    fn status(&self) -> Result<bool> {
        self.it.status().map_err(engine_err)?;
        Ok(self.it.valid())
    }
}

impl EngineIterator for RocksIterator {
    fn seek_to_first(&mut self) -> Result<bool> {
        self.it.seek_to_first();
        self.status()
    }
    fn seek_to_last(&mut self) -> Result<bool> {
        self.it.seek_to_last();
        self.status()
    }
    fn seek(&mut self, key: &[u8]) -> Result<bool> {
        self.it.seek(key);
        self.status()
    }
    fn seek_for_prev(&mut self, key: &[u8]) -> Result<bool> {
        self.it.seek_for_prev(key);
        self.status()
    }
    fn next(&mut self) -> Result<bool> {
        self.it.next();
        self.status()
    }
    fn prev(&mut self) -> Result<bool> {
        self.it.prev();
        self.status()
    }
    fn valid(&self) -> bool {
        self.it.valid()
    }
    fn key(&self) -> &[u8] {
        self.it.key().expect("key on invalid iterator")
    }
    fn value(&self) -> &[u8] {
        self.it.value().expect("value on invalid iterator")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_engine_suite() {
        let mut dirs = vec![];
        atoll_engine_traits::suite::run_all(|| {
            let dir = tempfile::tempdir().unwrap();
            let e = RocksEngine::open(dir.path(), &RocksConfig::default()).unwrap();
            dirs.push(dir);
            e
        });
    }

    #[test]
    fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let e = RocksEngine::open(dir.path(), &RocksConfig::default()).unwrap();
            let mut wb = e.write_batch();
            wb.put_cf(atoll_engine_traits::CF_RAFT, b"k", b"v").unwrap();
            e.write(&mut wb, WriteOptions::sync()).unwrap();
        }
        let e = RocksEngine::open(dir.path(), &RocksConfig::default()).unwrap();
        assert_eq!(
            e.get_value_cf(atoll_engine_traits::CF_RAFT, b"k").unwrap(),
            Some(b"v".to_vec())
        );
    }
}
