//! The storage engine interface of Atoll.
//!
//! Everything above the engine (raftstore, server) talks to storage only
//! through these traits: point reads, ordered iteration, snapshots, and atomic
//! write batches with optional fsync. This crate must not depend on RocksDB
//! (or any engine): `engine_rocks` and `engine_memory` implement it, and both
//! pass the shared test suite in [`suite`].

mod cf;
mod error;
pub mod suite;

pub use cf::*;
pub use error::{Error, Result};

/// Read access to a consistent view of the engine.
pub trait Peekable {
    /// Returns the value stored under `key` in column family `cf`.
    fn get_value_cf(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;

    fn get_value(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get_value_cf(CF_DEFAULT, key)
    }
}

/// Called with each `(key, value)` of a scan; returns whether to go on.
pub type ScanVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool> + 'a;

/// Ordered iteration over a key range `[lower, upper)` of one column family.
pub trait Iterable {
    type Iterator: EngineIterator;

    /// An iterator bounded to `[lower, upper)`; an empty `upper` means unbounded.
    fn iterator_cf(&self, cf: &str, lower: &[u8], upper: &[u8]) -> Result<Self::Iterator>;

    /// Visits `[start, end)` in order (or reverse order), calling `f` for every
    /// pair until it returns `false`.
    fn scan_cf(
        &self,
        cf: &str,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        f: &mut ScanVisitor<'_>,
    ) -> Result<()> {
        let mut it = self.iterator_cf(cf, start, end)?;
        let mut valid = if reverse { it.seek_to_last()? } else { it.seek_to_first()? };
        while valid {
            if !f(it.key(), it.value())? {
                break;
            }
            valid = if reverse { it.prev()? } else { it.next()? };
        }
        Ok(())
    }
}

/// A cursor over one column family, bounded when created.
///
/// Positioning methods return whether the cursor is on a valid entry;
/// `key`/`value` may only be called while it is.
pub trait EngineIterator: Send {
    fn seek_to_first(&mut self) -> Result<bool>;
    fn seek_to_last(&mut self) -> Result<bool>;
    /// Positions at the first key `>= key`.
    fn seek(&mut self, key: &[u8]) -> Result<bool>;
    /// Positions at the last key `<= key`.
    fn seek_for_prev(&mut self, key: &[u8]) -> Result<bool>;
    fn next(&mut self) -> Result<bool>;
    fn prev(&mut self) -> Result<bool>;
    fn valid(&self) -> bool;
    fn key(&self) -> &[u8];
    fn value(&self) -> &[u8];
}

/// A batch of mutations applied atomically by [`KvEngine::write`].
pub trait WriteBatch: Send {
    fn put_cf(&mut self, cf: &str, key: &[u8], value: &[u8]) -> Result<()>;
    fn delete_cf(&mut self, cf: &str, key: &[u8]) -> Result<()>;
    /// Deletes every key in `[start, end)`.
    fn delete_range_cf(&mut self, cf: &str, start: &[u8], end: &[u8]) -> Result<()>;
    /// Number of mutations in the batch.
    fn count(&self) -> usize;
    /// Approximate encoded size in bytes.
    fn data_size(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.count() == 0
    }
    fn clear(&mut self);

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.put_cf(CF_DEFAULT, key, value)
    }
}

/// Options for [`KvEngine::write`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// fsync the write-ahead log before returning.
    pub sync: bool,
}

impl WriteOptions {
    pub fn sync() -> Self {
        WriteOptions { sync: true }
    }
}

/// A point-in-time view: later writes are invisible to it.
pub trait Snapshot: Peekable + Iterable + Send + Sync + 'static {}

/// A storage engine holding the column families of [`ALL_CFS`].
pub trait KvEngine: Peekable + Iterable + Clone + Send + Sync + 'static {
    type Snapshot: Snapshot;
    type WriteBatch: WriteBatch;

    fn write_batch(&self) -> Self::WriteBatch;
    fn write_batch_with_cap(&self, cap: usize) -> Self::WriteBatch;
    /// Applies `wb` atomically and leaves it empty for reuse. With
    /// `opts.sync` the call returns only after the batch (and everything
    /// written before it) is durable.
    fn write(&self, wb: &mut Self::WriteBatch, opts: WriteOptions) -> Result<()>;
    fn snapshot(&self) -> Self::Snapshot;
    /// Makes all earlier writes durable.
    fn sync(&self) -> Result<()>;
    /// Approximate bytes used by data in `cf` within `[start, end)`.
    fn approximate_size_cf(&self, cf: &str, start: &[u8], end: &[u8]) -> Result<u64>;

    fn put_cf(&self, cf: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let mut wb = self.write_batch();
        wb.put_cf(cf, key, value)?;
        self.write(&mut wb, WriteOptions::default())
    }
    fn delete_cf(&self, cf: &str, key: &[u8]) -> Result<()> {
        let mut wb = self.write_batch();
        wb.delete_cf(cf, key)?;
        self.write(&mut wb, WriteOptions::default())
    }
}
