//! Unique id allocation: ids come from a window whose upper bound is
//! persisted before any id in it is handed out, so a restart never reuses one.

use parking_lot::Mutex;

use crate::storage::{Result, Storage};

pub struct IdAllocator {
    storage: Storage,
    step: u64,
    /// (next id to hand out, persisted exclusive end)
    window: Mutex<(u64, u64)>,
}

impl IdAllocator {
    pub fn new(storage: Storage, step: u64) -> Result<Self> {
        assert!(step > 0);
        let end = storage.load_id_end()?;
        Ok(IdAllocator { storage, step, window: Mutex::new((end, end)) })
    }

    pub fn alloc(&self) -> Result<u64> {
        let mut w = self.window.lock();
        if w.0 >= w.1 {
            let end = w.1 + self.step;
            self.storage.save_id_end(end)?;
            w.1 = end;
        }
        // Id 0 means "none" everywhere in the protocol.
        if w.0 == 0 {
            w.0 = 1;
        }
        let id = w.0;
        w.0 += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3 {
            let s = Storage::open(dir.path()).unwrap();
            let a = IdAllocator::new(s, 10).unwrap();
            for _ in 0..25 {
                let id = a.alloc().unwrap();
                assert!(id > 0);
                assert!(seen.insert(id), "id {id} reused");
            }
        }
    }
}
