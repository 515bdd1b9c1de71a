//! Peer operations, one concern per module, each an `impl Peer` block.

pub mod conf_change;
pub mod hibernate;
pub mod life;
pub mod log_gc;
pub mod pd;
pub mod propose;
pub mod read;
pub mod ready;
pub mod snapshot;
pub mod split;
pub mod split_check;
pub mod tick;
pub mod transfer_leader;

#[cfg(test)]
mod tests;
