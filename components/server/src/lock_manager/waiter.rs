//! Pessimistic lock requests waiting for a lock to go (TiKV's waiter
//! manager, src/server/lock_manager/waiter_manager.rs).
//!
//! A request that meets another transaction's lock registers here, under
//! the key's latch, then waits; every write that deletes a lock wakes the
//! waiters of that key once raftstore has answered it. Registering under
//! the latch is what makes a wake impossible to miss: the write that
//! releases the lock needs the same latch, so it either finished before
//! the request's snapshot (which then shows no lock) or runs after the
//! registration (and wakes it). A woken request runs again; one that
//! times out answers the lock it meets then.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::metrics::LOCK_WAITERS;

/// A waiter: its id and how to wake it.
type Waiter = (u64, oneshot::Sender<()>);

pub struct WaiterManager {
    /// Encoded key → its waiters.
    waiters: Mutex<HashMap<Vec<u8>, Vec<Waiter>>>,
    len: AtomicUsize,
    next_id: AtomicU64,
    max: usize,
}

/// One registered wait; dropping it unregisters.
pub struct Wait<'a> {
    mgr: &'a WaiterManager,
    key: Vec<u8>,
    id: u64,
    woken: oneshot::Receiver<()>,
}

impl WaiterManager {
    /// At most `max` waiters at once; more requests do not wait.
    pub fn new(max: usize) -> WaiterManager {
        WaiterManager {
            waiters: Mutex::new(HashMap::new()),
            len: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            max,
        }
    }

    /// Registers a wait on the lock of `key` (encoded); `None` when
    /// `max` requests wait already.
    pub fn register(&self, key: &[u8]) -> Option<Wait<'_>> {
        let mut waiters = self.waiters.lock();
        if self.len.load(Ordering::Relaxed) >= self.max {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        waiters.entry(key.to_vec()).or_default().push((id, tx));
        self.len.fetch_add(1, Ordering::Relaxed);
        LOCK_WAITERS.inc();
        Some(Wait { mgr: self, key: key.to_vec(), id, woken: rx })
    }

    /// Wakes every waiter of these keys (encoded); returns how many.
    pub fn wake<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) -> usize {
        if self.is_empty() {
            return 0;
        }
        let mut waiters = self.waiters.lock();
        let mut woken = 0;
        for k in keys {
            for (_, tx) in waiters.remove(k).unwrap_or_default() {
                woken += 1;
                let _ = tx.send(());
            }
        }
        self.len.fetch_sub(woken, Ordering::Relaxed);
        LOCK_WAITERS.sub(woken as i64);
        woken
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn unregister(&self, key: &[u8], id: u64) {
        let mut waiters = self.waiters.lock();
        let Some(list) = waiters.get_mut(key) else { return };
        let before = list.len();
        list.retain(|(i, _)| *i != id);
        let removed = before - list.len();
        if list.is_empty() {
            waiters.remove(key);
        }
        self.len.fetch_sub(removed, Ordering::Relaxed);
        LOCK_WAITERS.sub(removed as i64);
    }
}

impl Wait<'_> {
    /// Waits until woken (true) or `deadline` (false).
    pub async fn until(&mut self, deadline: Instant) -> bool {
        let deadline = tokio::time::Instant::from_std(deadline);
        matches!(tokio::time::timeout_at(deadline, &mut self.woken).await, Ok(Ok(())))
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        self.mgr.unregister(&self.key, self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_release_wakes_the_waiters_of_its_key_only() {
        let m = WaiterManager::new(10);
        let mut a1 = m.register(b"a").unwrap();
        let mut a2 = m.register(b"a").unwrap();
        let mut b = m.register(b"b").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m.wake([b"a".as_slice(), b"c"]), 2);
        let soon = Instant::now() + Duration::from_millis(50);
        assert!(a1.until(soon).await);
        assert!(a2.until(soon).await);
        assert!(!b.until(soon).await, "b's lock was not released");
        drop((a1, a2));
        assert_eq!(m.len(), 1);
        drop(b);
        assert!(m.is_empty());
        assert!(m.waiters.lock().is_empty());
    }

    #[tokio::test]
    async fn a_full_table_refuses_more_waiters() {
        let m = WaiterManager::new(2);
        let _a = m.register(b"a").unwrap();
        let b = m.register(b"b").unwrap();
        assert!(m.register(b"c").is_none());
        drop(b);
        assert!(m.register(b"c").is_some());
    }

    #[tokio::test]
    async fn a_wake_before_the_wait_starts_is_kept() {
        let m = WaiterManager::new(2);
        let mut a = m.register(b"a").unwrap();
        m.wake([b"a".as_slice()]);
        assert!(a.until(Instant::now()).await);
        drop(a);
        assert!(m.is_empty());
    }
}
