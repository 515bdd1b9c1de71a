//! The bank workload's check. Accounts start with equal balances; each
//! transfer is one transaction that moves an amount between two accounts
//! and writes a record of itself (a key of its own). Then:
//!
//! - every snapshot read of all accounts sums to the initial total, with
//!   every account present and none negative;
//! - at the end, every acknowledged transfer's record is there (no lost
//!   commit), no aborted transfer's record is (no visible abort), no
//!   record of a transfer never tried; and the final balances are exactly
//!   the initial ones moved by the transfers whose records exist
//!   (each transaction all or nothing).

use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub from: usize,
    pub to: usize,
    pub amount: u64,
}

/// What the bank clients learnt during the run.
#[derive(Clone, Debug, Default)]
pub struct BankLog {
    pub accounts: usize,
    pub initial: u64,
    /// Transfer id -> transfer, by what the client saw.
    pub acked: BTreeMap<u64, Transfer>,
    pub unknown: BTreeMap<u64, Transfer>,
    pub aborted: BTreeMap<u64, Transfer>,
    /// Snapshot reads of every account: how many, and the bad ones.
    pub reads: u64,
    pub bad_reads: Vec<BadRead>,
    /// Snapshot reads that ended in an error (they checked nothing).
    pub failed_reads: u64,
    /// How long each acknowledged transfer took, begin to commit (ns).
    pub commit_ns: Vec<u64>,
}

/// What lock waiting and reads past locks change, from one history:
/// acknowledged transfers per second, the share of snapshot reads that
/// failed, and the 99th percentile of an acknowledged transfer's time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BankFigures {
    pub transfers_per_sec: f64,
    pub failed_read_share: f64,
    pub commit_p99_ms: u64,
}

/// A snapshot read that breaks the invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRead {
    pub ts: u64,
    /// Balance per account (`None`: missing).
    pub balances: Vec<Option<u64>>,
}

impl BankLog {
    pub fn new(accounts: usize, initial: u64) -> Self {
        BankLog { accounts, initial, ..Default::default() }
    }

    /// The figures of a run that lasted `secs`.
    pub fn figures(&self, secs: f64) -> BankFigures {
        let tried = self.reads + self.failed_reads;
        let mut ns = self.commit_ns.clone();
        ns.sort_unstable();
        // The smallest latency at or above 99% of them.
        let p99 = match ns.len() {
            0 => 0,
            n => ns[(n * 99).div_ceil(100) - 1],
        };
        BankFigures {
            transfers_per_sec: self.acked.len() as f64 / secs.max(1e-9),
            failed_read_share: if tried == 0 {
                0.0
            } else {
                self.failed_reads as f64 / tried as f64
            },
            commit_p99_ms: p99 / 1_000_000,
        }
    }

    pub fn total(&self) -> u64 {
        self.accounts as u64 * self.initial
    }

    /// Records a snapshot read of every account at `ts`; false if it
    /// breaks the invariant (kept for the report).
    pub fn read(&mut self, ts: u64, balances: Vec<Option<u64>>) -> bool {
        self.reads += 1;
        let sum: Option<u64> = balances.iter().copied().sum();
        let ok = balances.len() == self.accounts && sum == Some(self.total());
        if !ok {
            self.bad_reads.push(BadRead { ts, balances });
        }
        ok
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BankReport {
    pub reads: u64,
    pub bad_reads: Vec<BadRead>,
    /// Acknowledged transfers whose record is missing.
    pub lost: BTreeSet<u64>,
    /// Aborted transfers whose record is present.
    pub visible_aborted: BTreeSet<u64>,
    /// Records of transfers no client tried.
    pub unexpected: BTreeSet<u64>,
    /// The final balances, if they differ from what the records imply.
    pub balance_mismatch: Option<(Vec<Option<u64>>, Vec<i128>)>,
    pub unknown_applied: usize,
    pub unknown_not_applied: usize,
}

impl BankReport {
    pub fn ok(&self) -> bool {
        self.bad_reads.is_empty()
            && self.lost.is_empty()
            && self.visible_aborted.is_empty()
            && self.unexpected.is_empty()
            && self.balance_mismatch.is_none()
    }
}

/// `balances`: the final read of every account; `records`: the ids of
/// the transfer records present at the same snapshot.
pub fn check_bank(log: &BankLog, balances: &[Option<u64>], records: &BTreeSet<u64>) -> BankReport {
    let mut expected: Vec<i128> = vec![log.initial as i128; log.accounts];
    let mut unexpected = BTreeSet::new();
    for id in records {
        match log.acked.get(id).or_else(|| log.unknown.get(id)).or_else(|| log.aborted.get(id)) {
            Some(t) if t.from < log.accounts && t.to < log.accounts => {
                expected[t.from] -= t.amount as i128;
                expected[t.to] += t.amount as i128;
            }
            _ => {
                unexpected.insert(*id);
            }
        }
    }
    let matches = balances.len() == log.accounts
        && balances.iter().zip(&expected).all(|(b, e)| b.map(i128::from) == Some(*e));
    let unknown_applied = log.unknown.keys().filter(|id| records.contains(id)).count();
    BankReport {
        reads: log.reads,
        bad_reads: log.bad_reads.clone(),
        lost: log.acked.keys().filter(|id| !records.contains(id)).copied().collect(),
        visible_aborted: log.aborted.keys().filter(|id| records.contains(id)).copied().collect(),
        unexpected,
        balance_mismatch: (!matches).then(|| (balances.to_vec(), expected)),
        unknown_applied,
        unknown_not_applied: log.unknown.len() - unknown_applied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(from: usize, to: usize, amount: u64) -> Transfer {
        Transfer { from, to, amount }
    }

    fn log() -> BankLog {
        let mut l = BankLog::new(3, 10);
        l.acked.insert(1, t(0, 1, 4));
        l.unknown.insert(2, t(1, 2, 3));
        l.unknown.insert(3, t(2, 0, 1));
        l.aborted.insert(4, t(0, 2, 5));
        l
    }

    #[test]
    fn a_consistent_end_state_passes() {
        // 1 and 2 applied, 3 not: 0: 10-4, 1: 10+4-3, 2: 10+3.
        let r = check_bank(&log(), &[Some(6), Some(11), Some(13)], &[1, 2].into());
        assert!(r.ok(), "{r:?}");
        assert_eq!((r.unknown_applied, r.unknown_not_applied), (1, 1));
    }

    #[test]
    fn lost_commits_visible_aborts_and_torn_transfers_are_found() {
        let r = check_bank(&log(), &[Some(10), Some(10), Some(10)], &BTreeSet::new());
        assert_eq!(r.lost, [1].into());
        assert!(r.balance_mismatch.is_none(), "nothing applied, balances untouched");
        let r = check_bank(&log(), &[Some(1), Some(14), Some(15)], &[1, 4].into());
        assert_eq!(r.visible_aborted, [4].into());
        // Balances that do not match the records: a torn transaction.
        let r = check_bank(&log(), &[Some(6), Some(14), Some(10)], &[1, 2].into());
        assert!(r.balance_mismatch.is_some());
        let r = check_bank(&log(), &[Some(6), Some(14), Some(10)], &[1, 99].into());
        assert_eq!(r.unexpected, [99].into());
    }

    #[test]
    fn snapshot_reads_must_keep_the_total() {
        let mut l = BankLog::new(2, 5);
        assert!(l.read(1, vec![Some(3), Some(7)]));
        assert!(!l.read(2, vec![Some(3), Some(6)]));
        assert!(!l.read(3, vec![Some(10), None]));
        assert_eq!(l.reads, 3);
        assert_eq!(l.bad_reads.len(), 2);
        assert!(!check_bank(&l, &[Some(5), Some(5)], &BTreeSet::new()).ok());
    }

    #[test]
    fn figures_count_transfers_failed_reads_and_the_slow_tail() {
        let mut l = log();
        assert_eq!(l.figures(2.0).failed_read_share, 0.0, "no read tried");
        l.read(1, vec![Some(10); 3]);
        l.failed_reads = 3;
        // 1..=200 ms: the 99th percentile is the 198th.
        l.commit_ns = (1..=200).rev().map(|ms| ms * 1_000_000).collect();
        let f = l.figures(0.5);
        assert_eq!(f.transfers_per_sec, 2.0, "one acknowledged transfer in half a second");
        assert_eq!(f.failed_read_share, 0.75);
        assert_eq!(f.commit_p99_ms, 198);
    }
}
