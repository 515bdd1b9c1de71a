//! The writes of one transactional command, collected for ONE raft
//! proposal.

use atoll_engine_traits::{CF_DEFAULT, CF_LOCK, CF_WRITE};

use crate::{Key, Lock, TimeStamp, Write};

/// One engine write. Keys are region keys (the encoded key, plus the
/// version for `write` and `default`); the store adds the `z` prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Modify {
    Put { cf: &'static str, key: Vec<u8>, value: Vec<u8> },
    Delete { cf: &'static str, key: Vec<u8> },
}

/// Collects a command's modifications; reads never see them, so a
/// command touches each key at most once.
#[derive(Debug, Default)]
pub struct MvccTxn {
    pub modifies: Vec<Modify>,
    /// 1PC: prewrite keeps its locks here (with whether a pessimistic lock
    /// is to be removed) for `commit_one_pc` instead of writing them.
    one_pc: Option<Vec<(Key, Lock, bool)>>,
}

impl MvccTxn {
    pub fn new() -> Self {
        MvccTxn::default()
    }

    /// A txn for a 1PC prewrite: see `actions::commit_one_pc`.
    pub fn one_pc() -> Self {
        MvccTxn { modifies: vec![], one_pc: Some(vec![]) }
    }

    /// Writes a prewrite's lock, or keeps it for the 1PC commit.
    pub(crate) fn put_prewrite_lock(&mut self, key: Key, lock: Lock, had_pessimistic_lock: bool) {
        match &mut self.one_pc {
            Some(locks) => locks.push((key, lock, had_pessimistic_lock)),
            None => self.put_lock(&key, &lock),
        }
    }

    /// The locks a 1PC prewrite kept, taken out once.
    pub(crate) fn take_one_pc_locks(&mut self) -> Vec<(Key, Lock, bool)> {
        self.one_pc.take().unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.modifies.is_empty()
    }

    pub fn put_lock(&mut self, key: &Key, lock: &Lock) {
        self.modifies.push(Modify::Put {
            cf: CF_LOCK,
            key: key.as_encoded().to_vec(),
            value: lock.to_bytes(),
        });
    }

    pub fn unlock_key(&mut self, key: &Key) {
        self.modifies.push(Modify::Delete { cf: CF_LOCK, key: key.as_encoded().to_vec() });
    }

    pub fn put_value(&mut self, key: &Key, start_ts: TimeStamp, value: Vec<u8>) {
        self.modifies.push(Modify::Put { cf: CF_DEFAULT, key: key.append_ts(start_ts), value });
    }

    pub fn delete_value(&mut self, key: &Key, start_ts: TimeStamp) {
        self.modifies.push(Modify::Delete { cf: CF_DEFAULT, key: key.append_ts(start_ts) });
    }

    pub fn put_write(&mut self, key: &Key, commit_ts: TimeStamp, write: &Write) {
        self.modifies.push(Modify::Put {
            cf: CF_WRITE,
            key: key.append_ts(commit_ts),
            value: write.to_bytes(),
        });
    }

    pub fn delete_write(&mut self, key: &Key, commit_ts: TimeStamp) {
        self.modifies.push(Modify::Delete { cf: CF_WRITE, key: key.append_ts(commit_ts) });
    }

    /// Approximate bytes of the modifications (for batch limits).
    pub fn size(&self) -> usize {
        self.modifies
            .iter()
            .map(|m| match m {
                Modify::Put { key, value, .. } => key.len() + value.len(),
                Modify::Delete { key, .. } => key.len(),
            })
            .sum()
    }
}
