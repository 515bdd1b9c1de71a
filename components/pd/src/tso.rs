//! The timestamp oracle: `physical_ms << 18 | logical`, strictly increasing
//! across restarts because the physical part never passes a persisted limit
//! that a restarted PD starts above.

use parking_lot::Mutex;

use crate::storage::{Result, Storage};

pub const LOGICAL_BITS: u32 = 18;
const MAX_LOGICAL: i64 = 1 << LOGICAL_BITS;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ts {
    pub physical: i64,
    pub logical: i64,
}

impl Ts {
    pub fn compose(&self) -> u64 {
        ((self.physical as u64) << LOGICAL_BITS) | self.logical as u64
    }
}

struct State {
    physical: i64,
    logical: i64,
    /// Persisted: no timestamp's physical part reaches this.
    limit: i64,
}

pub struct Tso {
    storage: Storage,
    save_interval_ms: i64,
    state: Mutex<State>,
    clock: Box<dyn Fn() -> i64 + Send + Sync>,
}

#[derive(Debug, thiserror::Error)]
pub enum TsoError {
    #[error("tso: {0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("tso: count must be between 1 and {MAX_LOGICAL}, got {0}")]
    InvalidCount(u32),
}

impl Tso {
    pub fn new(storage: Storage, save_interval_ms: u64) -> Result<Self> {
        Self::with_clock(
            storage,
            save_interval_ms,
            Box::new(|| atoll_util::time::unix_millis() as i64),
        )
    }

    pub fn with_clock(
        storage: Storage,
        save_interval_ms: u64,
        clock: Box<dyn Fn() -> i64 + Send + Sync>,
    ) -> Result<Self> {
        let prev_limit = storage.load_tso_limit()? as i64;
        // Start above anything a previous incarnation could have handed out.
        let physical = std::cmp::max(clock(), prev_limit + 1);
        let limit = physical + save_interval_ms as i64;
        storage.save_tso_limit(limit as u64)?;
        Ok(Tso {
            storage,
            save_interval_ms: save_interval_ms as i64,
            state: Mutex::new(State { physical, logical: 0, limit }),
            clock,
        })
    }

    /// Reserves `count` timestamps and returns the last one.
    pub fn alloc(&self, count: u32) -> std::result::Result<Ts, TsoError> {
        if count == 0 || count as i64 >= MAX_LOGICAL {
            return Err(TsoError::InvalidCount(count));
        }
        let mut s = self.state.lock();
        let now = (self.clock)();
        if now > s.physical {
            s.physical = now;
            s.logical = 0;
        }
        if s.logical + count as i64 >= MAX_LOGICAL {
            s.physical += 1;
            s.logical = 0;
        }
        if s.physical >= s.limit {
            let limit = s.physical + self.save_interval_ms;
            self.storage.save_tso_limit(limit as u64)?;
            s.limit = limit;
        }
        s.logical += count as i64;
        Ok(Ts { physical: s.physical, logical: s.logical })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    use super::*;

    #[test]
    fn monotonic_with_a_frozen_clock_and_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(AtomicI64::new(1_000));
        let mut last = 0u64;
        for _ in 0..3 {
            let c = clock.clone();
            let tso = Tso::with_clock(
                Storage::open(dir.path()).unwrap(),
                100,
                Box::new(move || c.load(Ordering::SeqCst)),
            )
            .unwrap();
            for i in 0..2000u32 {
                let ts = tso.alloc(1 + i % 200).unwrap().compose();
                assert!(ts > last, "{ts} <= {last}");
                last = ts;
            }
        }
    }

    #[test]
    fn rejects_bad_counts() {
        let dir = tempfile::tempdir().unwrap();
        let tso = Tso::new(Storage::open(dir.path()).unwrap(), 1000).unwrap();
        assert!(tso.alloc(0).is_err());
        assert!(tso.alloc(1 << 18).is_err());
    }

    #[test]
    fn a_batch_reserves_every_timestamp_up_to_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let tso =
            Tso::with_clock(Storage::open(dir.path()).unwrap(), 1000, Box::new(|| 5)).unwrap();
        let a = tso.alloc(10).unwrap();
        let b = tso.alloc(1).unwrap();
        assert_eq!(b.compose(), a.compose() + 1, "the 10 before `a` belong to the first caller");
    }
}
