//! A generic batch system: many finite state machines (FSMs) share a small
//! pool of poller threads.
//!
//! Every FSM lives in a [`mailbox`](Mailbox) with an atomic state (idle or
//! notified). Sending a message to an idle mailbox schedules its FSM onto the
//! poller pool; a poller takes up to `max_batch_size` scheduled FSMs, calls the
//! [`PollHandler`] hooks `begin`, `handle_control`/`handle_normal` and `end`
//! once per round, then releases the FSMs back to their mailboxes. `end` is
//! where a user batches IO across all FSMs of the round (raftstore writes one
//! write batch with one fsync there).
//!
//! This crate knows nothing about raft, regions or storage.

mod mailbox;
mod metrics;
mod router;
mod system;

pub use mailbox::{Fsm, FsmCell, Mailbox, SendError};
pub use router::Router;
pub use system::{BatchSystem, Config, HandlerBuilder, PollHandler};
