//! Peer operations, one concern per module, each an `impl Peer` block.

pub mod log_gc;
pub mod propose;
pub mod read;
pub mod ready;
pub mod split;
