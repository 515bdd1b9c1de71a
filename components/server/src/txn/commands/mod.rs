//! The transactional commands, one module each (TiKV's
//! `storage/txn/commands`): each checks its request at the boundary
//! (`txn`), then runs through the scheduler (`txn::scheduler`).

mod check_txn_status;
mod commit;
mod gc;
mod pessimistic_lock;
mod prewrite;
mod reads;
mod resolve_lock;
