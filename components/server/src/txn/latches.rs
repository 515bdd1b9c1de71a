//! Per-key latches: a transactional command holds the latches of its keys
//! from its snapshot until its write is applied (or certainly dropped), so
//! no two commands on one key interleave their reads and writes.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};

/// Slots keys hash to; two keys in one slot merely wait for each other.
pub const LATCH_SLOTS: usize = 4096;

pub struct Latches {
    slots: Vec<Arc<Mutex<()>>>,
}

/// Held latches; dropping it releases them.
pub struct LatchGuard {
    _held: Vec<OwnedMutexGuard<()>>,
}

impl Default for Latches {
    fn default() -> Self {
        Latches { slots: (0..LATCH_SLOTS).map(|_| Arc::new(Mutex::new(()))).collect() }
    }
}

impl Latches {
    fn slot(key: &[u8]) -> usize {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() % LATCH_SLOTS as u64) as usize
    }

    /// Waits for the latches of `keys`. Slots are taken in ascending
    /// order, so two commands can never wait for each other.
    pub async fn acquire<'a>(&self, keys: impl IntoIterator<Item = &'a [u8]>) -> LatchGuard {
        let mut slots: Vec<usize> = keys.into_iter().map(Self::slot).collect();
        slots.sort_unstable();
        slots.dedup();
        let mut held = Vec::with_capacity(slots.len());
        for s in slots {
            held.push(self.slots[s].clone().lock_owned().await);
        }
        LatchGuard { _held: held }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_key_is_held_by_one_command_at_a_time() {
        let l = Arc::new(Latches::default());
        let g = l.acquire([b"a".as_slice(), b"b"]).await;
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.acquire([b"b".as_slice(), b"a"]).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "b is held");
        // Other keys go through (unless they share a slot).
        let other = (0..100u32).map(|i| i.to_be_bytes()).find(|k| {
            Latches::slot(k) != Latches::slot(b"a") && Latches::slot(k) != Latches::slot(b"b")
        });
        let other = other.expect("a key in another slot");
        drop(l.acquire([other.as_slice()]).await);
        drop(g);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
        // The same key twice in one command is one latch.
        drop(l.acquire([b"c".as_slice(), b"c"]).await);
    }
}
