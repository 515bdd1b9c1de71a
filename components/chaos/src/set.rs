//! The set workload's check: after unique inserts and a final full read,
//! every acknowledged insert is present and nothing was read that no
//! client ever tried to insert.

use std::collections::BTreeSet;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetReport {
    /// Acknowledged inserts missing from the final read.
    pub lost: BTreeSet<u64>,
    /// Values read that no client tried to insert.
    pub unexpected: BTreeSet<u64>,
    /// Inserts with an unknown outcome that are present / absent (either
    /// is allowed).
    pub unknown_present: usize,
    pub unknown_absent: usize,
}

impl SetReport {
    pub fn ok(&self) -> bool {
        self.lost.is_empty() && self.unexpected.is_empty()
    }
}

/// `acked`: inserts the client saw succeed; `unknown`: inserts whose
/// outcome it could not learn; `read`: the final read.
pub fn check_set(
    acked: &BTreeSet<u64>,
    unknown: &BTreeSet<u64>,
    read: &BTreeSet<u64>,
) -> SetReport {
    let unknown_present = unknown.intersection(read).count();
    SetReport {
        lost: acked.difference(read).copied().collect(),
        unexpected: read
            .iter()
            .filter(|v| !acked.contains(v) && !unknown.contains(v))
            .copied()
            .collect(),
        unknown_present,
        unknown_absent: unknown.len() - unknown_present,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[u64]) -> BTreeSet<u64> {
        v.iter().copied().collect()
    }

    #[test]
    fn lost_and_unexpected_values_are_found() {
        let r = check_set(&s(&[1, 2, 3]), &s(&[4, 5]), &s(&[1, 3, 4, 9]));
        assert_eq!(r.lost, s(&[2]));
        assert_eq!(r.unexpected, s(&[9]));
        assert_eq!((r.unknown_present, r.unknown_absent), (1, 1));
        assert!(!r.ok());
        assert!(check_set(&s(&[1]), &s(&[2]), &s(&[1])).ok());
    }
}
