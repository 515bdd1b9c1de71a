//! Region snapshots as files.
//!
//! A snapshot is the data of one region (every data column family, within
//! the region's range) as of an applied index. The leader writes it to a
//! `gen_*` file; the transport streams the file in chunks to the target
//! store, which stores it as `rcv_*` and only then hands the raft message
//! (whose `data` is a [`SnapshotData`] with size and checksum) to the peer.
//!
//! File format: a sequence of records `cf: u8 | key_len: u32 LE | key |
//! value_len: u32 LE | value`; `cf` indexes [`DATA_CFS`]. The CRC32 of the
//! whole file and its length travel in [`SnapshotData`].

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use atoll_engine_traits::{Iterable, WriteBatch, DATA_CFS};
use atoll_proto::atollpb::SnapshotData;
use atoll_proto::metapb;

use crate::error::{Error, Result};
use crate::keys;

/// Largest snapshot file a store accepts (a region is split long before).
pub const SNAP_FILE_MAX: u64 = 4 << 30;
/// Bytes per chunk when streaming a snapshot file.
pub const SNAP_CHUNK_SIZE: usize = 1 << 20;

/// Identifies one snapshot: region and the (term, index) it was taken at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SnapKey {
    pub region_id: u64,
    pub term: u64,
    pub index: u64,
}

impl SnapKey {
    fn file_name(&self, prefix: &str) -> String {
        format!("{prefix}_{}_{}_{}.snap", self.region_id, self.term, self.index)
    }
}

/// Owns the snapshot directory of a store.
#[derive(Clone, Debug)]
pub struct SnapManager {
    dir: PathBuf,
}

impl SnapManager {
    /// Creates the directory; snapshot files are transient, so leftovers of
    /// an earlier run are removed.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        }
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        Ok(SnapManager { dir })
    }

    pub fn gen_path(&self, key: &SnapKey) -> PathBuf {
        self.dir.join(key.file_name("gen"))
    }

    pub fn recv_path(&self, key: &SnapKey) -> PathBuf {
        self.dir.join(key.file_name("rcv"))
    }

    /// Where a file being received is written until it is complete.
    pub fn recv_tmp_path(&self, key: &SnapKey) -> PathBuf {
        self.dir.join(key.file_name("rcv.tmp"))
    }

    /// Deletes older generated snapshots of a region (a new one replaces them).
    pub fn remove_gen_older_than(&self, key: &SnapKey) {
        let prefix = format!("gen_{}_", key.region_id);
        let Ok(dir) = fs::read_dir(&self.dir) else { return };
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && name != key.file_name("gen") {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Snapshot(format!("{}: {e}", path.display()))
}

/// The engine range `[start, end)` holding a region's data.
pub fn region_data_range(region: &metapb::Region) -> (Vec<u8>, Vec<u8>) {
    (keys::data_key(&region.start_key), keys::data_end_key(&region.end_key))
}

/// Writes `region`'s data as seen by `snap` into `path`.
pub fn build<S: Iterable>(snap: &S, region: &metapb::Region, path: &Path) -> Result<SnapshotData> {
    let (start, end) = region_data_range(region);
    let tmp = path.with_extension("tmp");
    let file = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut crc = crc32fast::Hasher::new();
    let (mut size, mut count) = (0u64, 0u64);
    let mut io_error: Option<std::io::Error> = None;
    for (i, cf) in DATA_CFS.iter().enumerate() {
        snap.scan_cf(cf, &start, &end, false, &mut |k, v| {
            let mut rec = Vec::with_capacity(9 + k.len() + v.len());
            rec.push(i as u8);
            rec.extend_from_slice(&(k.len() as u32).to_le_bytes());
            rec.extend_from_slice(k);
            rec.extend_from_slice(&(v.len() as u32).to_le_bytes());
            rec.extend_from_slice(v);
            if let Err(e) = w.write_all(&rec) {
                io_error = Some(e);
                return Ok(false);
            }
            crc.update(&rec);
            size += rec.len() as u64;
            count += 1;
            Ok(true)
        })?;
        if let Some(e) = io_error.take() {
            return Err(io_err(&tmp, e));
        }
    }
    w.flush().map_err(|e| io_err(&tmp, e))?;
    drop(w);
    if size > SNAP_FILE_MAX {
        let _ = fs::remove_file(&tmp);
        return Err(Error::Snapshot(format!(
            "region {} snapshot is {size} bytes, over the limit",
            region.id
        )));
    }
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    Ok(SnapshotData {
        region: Some(region.clone()),
        file_size: size,
        checksum: crc.finalize(),
        key_count: count,
    })
}

/// Verifies a received file against its metadata and stages its records
/// into `wb`. Every key must lie inside the region's data range.
pub fn load_into<W: WriteBatch>(path: &Path, meta: &SnapshotData, wb: &mut W) -> Result<()> {
    let region =
        meta.region.as_ref().ok_or_else(|| Error::Snapshot("snapshot without a region".into()))?;
    let len = fs::metadata(path).map_err(|e| io_err(path, e))?.len();
    if len != meta.file_size || len > SNAP_FILE_MAX {
        return Err(Error::Snapshot(format!(
            "{}: {len} bytes, expected {}",
            path.display(),
            meta.file_size
        )));
    }
    let mut buf = Vec::with_capacity(len as usize);
    File::open(path).and_then(|mut f| f.read_to_end(&mut buf)).map_err(|e| io_err(path, e))?;
    if crc32fast::hash(&buf) != meta.checksum {
        return Err(Error::Snapshot(format!("{}: checksum mismatch", path.display())));
    }
    let (start, end) = region_data_range(region);
    let mut pos = 0usize;
    let mut count = 0u64;
    let corrupt = |what: &str| Error::Snapshot(format!("{}: {what}", path.display()));
    let take = |pos: &mut usize, n: usize| -> Result<&[u8]> {
        let s = buf.get(*pos..*pos + n).ok_or_else(|| corrupt("truncated record"))?;
        *pos += n;
        Ok(s)
    };
    while pos < buf.len() {
        let cf = *DATA_CFS
            .get(take(&mut pos, 1)?[0] as usize)
            .ok_or_else(|| corrupt("unknown column family"))?;
        let klen = u32::from_le_bytes(take(&mut pos, 4)?.try_into().expect("4 bytes")) as usize;
        let key = take(&mut pos, klen)?;
        let vlen = u32::from_le_bytes(take(&mut pos, 4)?.try_into().expect("4 bytes")) as usize;
        let value = take(&mut pos, vlen)?;
        if key < start.as_slice() || key >= end.as_slice() {
            return Err(corrupt("key outside the region"));
        }
        wb.put_cf(cf, key, value)?;
        count += 1;
    }
    if count != meta.key_count {
        return Err(corrupt("key count mismatch"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use atoll_engine_memory::MemoryEngine;
    use atoll_engine_traits::{KvEngine, Peekable, WriteOptions, CF_DEFAULT, CF_WRITE};

    use super::*;

    fn region(start: &[u8], end: &[u8]) -> metapb::Region {
        metapb::Region {
            id: 7,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_only_the_region_range() {
        let src = MemoryEngine::new();
        for k in [b"a", b"c", b"d", b"m"] {
            src.put_cf(CF_DEFAULT, &keys::data_key(k), b"v").unwrap();
        }
        src.put_cf(CF_WRITE, &keys::data_key(b"c"), b"w").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mgr = SnapManager::new(dir.path().join("snap")).unwrap();
        let key = SnapKey { region_id: 7, term: 6, index: 10 };
        let r = region(b"b", b"m");
        let meta = build(&src.snapshot(), &r, &mgr.gen_path(&key)).unwrap();
        assert_eq!(meta.key_count, 3);

        let dst = MemoryEngine::new();
        let mut wb = dst.write_batch();
        load_into(&mgr.gen_path(&key), &meta, &mut wb).unwrap();
        dst.write(&mut wb, WriteOptions::default()).unwrap();
        assert!(dst.get_value_cf(CF_DEFAULT, &keys::data_key(b"a")).unwrap().is_none());
        assert_eq!(dst.get_value_cf(CF_DEFAULT, &keys::data_key(b"d")).unwrap().unwrap(), b"v");
        assert_eq!(dst.get_value_cf(CF_WRITE, &keys::data_key(b"c")).unwrap().unwrap(), b"w");
        assert!(dst.get_value_cf(CF_DEFAULT, &keys::data_key(b"m")).unwrap().is_none());
    }

    #[test]
    fn corruption_is_detected() {
        let src = MemoryEngine::new();
        src.put_cf(CF_DEFAULT, &keys::data_key(b"k"), b"value").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mgr = SnapManager::new(dir.path()).unwrap();
        let key = SnapKey { region_id: 7, term: 1, index: 1 };
        let path = mgr.gen_path(&key);
        let meta = build(&src.snapshot(), &region(b"", b""), &path).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let mut wb = src.write_batch();
        assert!(load_into(&path, &meta, &mut wb).unwrap_err().to_string().contains("checksum"));
        // A snapshot claiming a narrower region than its keys is rejected too.
        let mut narrow = meta.clone();
        fs::write(&path, {
            bytes[last] ^= 1;
            &bytes
        })
        .unwrap();
        narrow.region = Some(region(b"x", b""));
        assert!(load_into(&path, &narrow, &mut wb).unwrap_err().to_string().contains("outside"));
    }
}
