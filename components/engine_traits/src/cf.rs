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

/// Like [`name_to_cf`], but only for column families that hold user data:
/// requests from clients must never touch `raft`.
pub fn data_cf(cf: &str) -> crate::Result<&'static str> {
    let cf = name_to_cf(cf)?;
    if DATA_CFS.contains(&cf) {
        Ok(cf)
    } else {
        Err(crate::Error::InvalidCf(cf.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cf_names() {
        assert_eq!(name_to_cf("").unwrap(), CF_DEFAULT);
        assert_eq!(name_to_cf("raft").unwrap(), CF_RAFT);
        assert!(name_to_cf("nope").is_err());
        assert_eq!(data_cf("write").unwrap(), CF_WRITE);
        assert_eq!(data_cf("").unwrap(), CF_DEFAULT);
        assert!(data_cf("raft").is_err(), "clients may not address the raft cf");
    }
}
