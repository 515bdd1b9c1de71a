//! What clients did to registers, and what they were told.
//!
//! A value is a `u64` chosen unique per write by the harness; `None` means
//! the key has no value. An operation whose outcome the client could not
//! learn (a timeout, a lost connection, an `undetermined` error) is
//! [`Outcome::Unknown`]: it may have taken effect at any time after its
//! invocation, or never.

use std::collections::BTreeMap;

/// A register operation as invoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Get,
    Put(u64),
    /// Compare-and-swap: set `new` if the current value is `expected`.
    Cas {
        expected: Option<u64>,
        new: u64,
    },
}

/// What the client was told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A read's value.
    Read(Option<u64>),
    /// A put was acknowledged.
    Written,
    /// A compare-and-swap answered whether it swapped.
    Swapped(bool),
    /// A definite failure: the operation did not and will not take effect
    /// (e.g. a region error for a request that was never proposed).
    Failed,
    /// No answer: it may or may not take effect.
    Unknown,
}

/// One operation with its real-time interval (any monotonic unit; the
/// harness uses nanoseconds since the run started).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub client: u64,
    pub key: u64,
    pub op: Op,
    pub outcome: Outcome,
    pub invoked: u64,
    /// When the answer arrived; ignored for `Unknown` (never, as far as
    /// the order of operations is concerned).
    pub completed: u64,
}

/// A whole run's events.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub events: Vec<Event>,
}

impl History {
    pub fn push(&mut self, e: Event) {
        self.events.push(e);
    }

    /// Events per key, in invocation order (registers are independent:
    /// linearizability is checked key by key).
    pub fn by_key(&self) -> BTreeMap<u64, Vec<Event>> {
        let mut out: BTreeMap<u64, Vec<Event>> = BTreeMap::new();
        for e in &self.events {
            out.entry(e.key).or_default().push(e.clone());
        }
        for events in out.values_mut() {
            events.sort_by_key(|e| e.invoked);
        }
        out
    }
}
