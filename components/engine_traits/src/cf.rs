/// User data (raw KV values).
pub const CF_DEFAULT: &str = "default";
/// Transaction locks (reserved for transactional KV).
pub const CF_LOCK: &str = "lock";
/// Transaction commit records (reserved for transactional KV).
pub const CF_WRITE: &str = "write";
/// Raft log, raft state, apply state and region state.
pub const CF_RAFT: &str = "raft";

pub const ALL_CFS: &[&str] = &[CF_DEFAULT, CF_LOCK, CF_WRITE, CF_RAFT];
pub const DATA_CFS: &[&str] = &[CF_DEFAULT, CF_LOCK, CF_WRITE];

/// Returns the `'static` name for `cf`, or an error if it is not one of ours.
pub fn name_to_cf(cf: &str) -> crate::Result<&'static str> {
    if cf.is_empty() {
        return Ok(CF_DEFAULT);
    }
    ALL_CFS
        .iter()
        .find(|c| **c == cf)
        .copied()
        .ok_or_else(|| crate::Error::InvalidCf(cf.to_owned()))
}
