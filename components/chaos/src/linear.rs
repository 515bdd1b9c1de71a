//! Linearizability of register histories with compare-and-swap: Wing &
//! Gong's search with Lowe's memoization (the algorithm of Knossos and
//! porcupine), one key at a time (a history of independent registers is
//! linearizable iff each key's is).
//!
//! An operation with an unknown outcome returns "at infinity": it may be
//! placed anywhere after its invocation, including after everything else
//! (which is the same as never), and any answer fits it.

use std::collections::{BTreeMap, HashSet};

use crate::history::{Event, History, Op, Outcome};

/// The search steps one key may take before the checker gives up on it.
pub const SEARCH_STEPS_MAX: u64 = 50_000_000;

/// Why a key's history is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anomaly {
    pub key: u64,
    /// Operations of the key that were checked.
    pub ops: usize,
    /// The most operations any order managed to linearize.
    pub linearized: usize,
    /// The completed operation no order could place before it returned,
    /// at that deepest point.
    pub stuck_at: Event,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    NotLinearizable(Anomaly),
    /// The search for this key took more than [`SEARCH_STEPS_MAX`] steps.
    Inconclusive {
        key: u64,
        ops: usize,
    },
    /// An event is impossible on its face (answered before invoked, or an
    /// answer of the wrong kind for its operation).
    Malformed {
        key: u64,
        event: Event,
    },
}

/// Checks every key; the first key that fails decides the verdict.
pub fn check_history(h: &History) -> Verdict {
    for (key, events) in h.by_key() {
        let v = check_key(key, &events);
        if v != Verdict::Linearizable {
            return v;
        }
    }
    Verdict::Linearizable
}

/// The register's value after `op` answered `outcome` in state `s`, or
/// `None` if that answer is impossible in `s`.
fn step(s: Option<u64>, op: Op, outcome: Outcome) -> Option<Option<u64>> {
    let unknown = outcome == Outcome::Unknown;
    match op {
        Op::Get => (outcome == Outcome::Read(s)).then_some(s),
        Op::Put(v) => Some(Some(v)),
        Op::Cas { expected, new } => {
            let swaps = s == expected;
            (unknown || outcome == Outcome::Swapped(swaps)).then_some(if swaps {
                Some(new)
            } else {
                s
            })
        }
    }
}

fn well_formed(e: &Event) -> bool {
    let kind_fits = matches!(
        (e.op, e.outcome),
        (_, Outcome::Unknown)
            | (Op::Get, Outcome::Read(_))
            | (Op::Put(_), Outcome::Written)
            | (Op::Cas { .. }, Outcome::Swapped(_))
    );
    kind_fits && (e.outcome == Outcome::Unknown || e.completed >= e.invoked)
}

/// One node of the search list: an operation's call or its return.
#[derive(Clone, Copy)]
struct Node {
    op: usize,
    call: bool,
    /// For a call, the index of its return node.
    ret: usize,
    prev: usize,
    next: usize,
}

/// Checks one key's events (any order).
pub fn check_key(key: u64, events: &[Event]) -> Verdict {
    // Failed operations had no effect, unknown reads show nothing.
    let mut ops: Vec<&Event> = vec![];
    for e in events {
        if e.outcome == Outcome::Failed {
            continue;
        }
        if !well_formed(e) {
            return Verdict::Malformed { key, event: e.clone() };
        }
        if e.outcome == Outcome::Unknown && e.op == Op::Get {
            continue;
        }
        ops.push(e);
    }
    let n = ops.len();
    // Calls before returns at equal times: such operations overlap.
    let mut points: Vec<(u64, bool, usize)> = vec![];
    for (i, e) in ops.iter().enumerate() {
        let end = if e.outcome == Outcome::Unknown { u64::MAX } else { e.completed };
        points.push((e.invoked, false, i));
        points.push((end, true, i));
    }
    points.sort();
    // Node 0 is the list head; nodes 1..=2n follow time order.
    let mut nodes = vec![Node { op: usize::MAX, call: false, ret: 0, prev: 0, next: 1 }];
    let mut ret_of = vec![0; n];
    for (idx, (_, is_return, op)) in points.iter().enumerate() {
        let id = idx + 1;
        nodes.push(Node { op: *op, call: !is_return, ret: 0, prev: id - 1, next: id + 1 });
        if *is_return {
            ret_of[*op] = id;
        }
    }
    let last = nodes.len() - 1;
    nodes[last].next = 0; // 0 = end of list
    if n == 0 {
        return Verdict::Linearizable;
    }
    for node in nodes.iter_mut().skip(1) {
        if node.call {
            node.ret = ret_of[node.op];
        }
    }

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut count = 0usize;
    let mut state: Option<u64> = None;
    let mut seen: HashSet<(Vec<u64>, Option<u64>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<u64>)> = vec![];
    let (mut deepest, mut stuck) = (0usize, 0usize);
    let mut steps = 0u64;
    let mut entry = nodes[0].next;
    while nodes[0].next != 0 {
        steps += 1;
        if steps > SEARCH_STEPS_MAX {
            return Verdict::Inconclusive { key, ops: n };
        }
        let node = nodes[entry];
        if node.call {
            let e = ops[node.op];
            if let Some(next_state) = step(state, e.op, e.outcome) {
                let mut next_lin = linearized.clone();
                next_lin[node.op / 64] |= 1 << (node.op % 64);
                if seen.insert((next_lin.clone(), next_state)) {
                    stack.push((entry, state));
                    state = next_state;
                    linearized = next_lin;
                    count += 1;
                    lift(&mut nodes, entry);
                    entry = nodes[0].next;
                    continue;
                }
            }
            entry = node.next;
        } else {
            // A return whose call is not linearized yet: undo the last choice.
            if count >= deepest {
                (deepest, stuck) = (count, node.op);
            }
            let Some((call, prev_state)) = stack.pop() else {
                return Verdict::NotLinearizable(Anomaly {
                    key,
                    ops: n,
                    linearized: deepest,
                    stuck_at: ops[stuck].clone(),
                });
            };
            let op = nodes[call].op;
            linearized[op / 64] &= !(1 << (op % 64));
            count -= 1;
            state = prev_state;
            unlift(&mut nodes, call);
            entry = nodes[call].next;
        }
    }
    Verdict::Linearizable
}

/// Takes a call and its return out of the list.
fn lift(nodes: &mut [Node], call: usize) {
    for id in [call, nodes[call].ret] {
        let Node { prev, next, .. } = nodes[id];
        nodes[prev].next = next;
        if next != 0 {
            nodes[next].prev = prev;
        }
    }
}

/// Puts back what `lift` took out (in reverse order).
fn unlift(nodes: &mut [Node], call: usize) {
    for id in [nodes[call].ret, call] {
        let Node { prev, next, .. } = nodes[id];
        nodes[prev].next = id;
        if next != 0 {
            nodes[next].prev = id;
        }
    }
}

/// Linearizability of each key, for a summary.
pub fn check_keys(h: &History) -> BTreeMap<u64, Verdict> {
    h.by_key().into_iter().map(|(k, events)| (k, check_key(k, &events))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(client: u64, op: Op, outcome: Outcome, invoked: u64, completed: u64) -> Event {
        Event { client, key: 1, op, outcome, invoked, completed }
    }

    fn check(events: Vec<Event>) -> Verdict {
        check_key(1, &events)
    }

    #[test]
    fn sequential_history() {
        let h = vec![
            ev(1, Op::Get, Outcome::Read(None), 0, 1),
            ev(1, Op::Put(5), Outcome::Written, 2, 3),
            ev(1, Op::Get, Outcome::Read(Some(5)), 4, 5),
            ev(1, Op::Cas { expected: Some(5), new: 6 }, Outcome::Swapped(true), 6, 7),
            ev(1, Op::Cas { expected: Some(5), new: 7 }, Outcome::Swapped(false), 8, 9),
            ev(1, Op::Get, Outcome::Read(Some(6)), 10, 11),
        ];
        assert_eq!(check(h), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_after_an_acknowledged_write_is_rejected() {
        let h = vec![
            ev(1, Op::Put(1), Outcome::Written, 0, 1),
            ev(1, Op::Put(2), Outcome::Written, 2, 3),
            ev(2, Op::Get, Outcome::Read(Some(1)), 4, 5),
        ];
        let Verdict::NotLinearizable(a) = check(h) else { panic!("stale read accepted") };
        assert_eq!(a.stuck_at.op, Op::Get);
    }

    #[test]
    fn a_cas_that_succeeds_twice_is_rejected() {
        let cas = Op::Cas { expected: None, new: 1 };
        let cas2 = Op::Cas { expected: None, new: 2 };
        let h = vec![
            ev(1, cas, Outcome::Swapped(true), 0, 10),
            ev(2, cas2, Outcome::Swapped(true), 1, 11),
        ];
        assert!(matches!(check(h), Verdict::NotLinearizable(_)));
    }

    #[test]
    fn concurrent_operations_may_take_either_order() {
        let h = vec![
            ev(1, Op::Put(1), Outcome::Written, 0, 10),
            ev(2, Op::Put(2), Outcome::Written, 1, 9),
            ev(3, Op::Get, Outcome::Read(Some(1)), 11, 12),
        ];
        assert_eq!(check(h), Verdict::Linearizable, "put 2 then put 1");
    }

    #[test]
    fn unknown_writes_may_apply_late_or_never() {
        // The unknown put is seen long after it was invoked...
        let late = vec![
            ev(1, Op::Put(1), Outcome::Unknown, 0, 0),
            ev(2, Op::Get, Outcome::Read(None), 5, 6),
            ev(2, Op::Get, Outcome::Read(Some(1)), 7, 8),
        ];
        assert_eq!(check(late), Verdict::Linearizable);
        // ...or never.
        let never = vec![
            ev(1, Op::Put(1), Outcome::Unknown, 0, 0),
            ev(2, Op::Get, Outcome::Read(None), 5, 6),
        ];
        assert_eq!(check(never), Verdict::Linearizable);
        // But not before it was invoked.
        let early = vec![
            ev(2, Op::Get, Outcome::Read(Some(1)), 0, 1),
            ev(1, Op::Put(1), Outcome::Unknown, 2, 2),
        ];
        assert!(matches!(check(early), Verdict::NotLinearizable(_)));
        // An unknown CAS takes the branch the state dictates.
        let cas = vec![
            ev(1, Op::Put(1), Outcome::Written, 0, 1),
            ev(2, Op::Cas { expected: Some(1), new: 2 }, Outcome::Unknown, 2, 0),
            ev(3, Op::Get, Outcome::Read(Some(2)), 5, 6),
        ];
        assert_eq!(check(cas), Verdict::Linearizable);
    }

    #[test]
    fn a_resent_put_that_lands_twice_is_rejected() {
        // Client 1's put of 1 is acknowledged, client 2 overwrites it, and
        // then 1 shows up again: only a duplicate application explains it.
        let h = vec![
            ev(1, Op::Put(1), Outcome::Written, 0, 1),
            ev(2, Op::Put(2), Outcome::Written, 2, 3),
            ev(3, Op::Get, Outcome::Read(Some(2)), 4, 5),
            ev(3, Op::Get, Outcome::Read(Some(1)), 6, 7),
        ];
        assert!(matches!(check(h), Verdict::NotLinearizable(_)));
    }

    #[test]
    fn failed_operations_have_no_effect() {
        let h = vec![
            ev(1, Op::Put(1), Outcome::Failed, 0, 1),
            ev(2, Op::Get, Outcome::Read(None), 2, 3),
        ];
        assert_eq!(check(h), Verdict::Linearizable);
        let h = vec![
            ev(1, Op::Put(1), Outcome::Failed, 0, 1),
            ev(2, Op::Get, Outcome::Read(Some(1)), 2, 3),
        ];
        assert!(matches!(check(h), Verdict::NotLinearizable(_)));
    }

    #[test]
    fn malformed_events_are_reported() {
        let h = vec![ev(1, Op::Get, Outcome::Written, 0, 1)];
        assert!(matches!(check(h), Verdict::Malformed { .. }));
        let h = vec![ev(1, Op::Get, Outcome::Read(None), 5, 1)];
        assert!(matches!(check(h), Verdict::Malformed { .. }));
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut h = History::default();
        h.push(Event { key: 1, ..ev(1, Op::Put(1), Outcome::Written, 0, 1) });
        h.push(Event { key: 2, ..ev(1, Op::Get, Outcome::Read(None), 2, 3) });
        assert_eq!(check_history(&h), Verdict::Linearizable);
        h.push(Event { key: 2, ..ev(1, Op::Get, Outcome::Read(Some(1)), 4, 5) });
        assert!(matches!(check_history(&h), Verdict::NotLinearizable(Anomaly { key: 2, .. })));
        assert_eq!(check_keys(&h).len(), 2);
    }

    /// Many concurrent clients on one register with a real sequential
    /// execution underneath: always linearizable, and checked quickly
    /// thanks to memoization.
    #[test]
    fn generated_linearizable_histories_pass() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut rnd = move |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        for _ in 0..20 {
            // Each op takes effect at a distinct instant inside its interval.
            let mut value: Option<u64> = None;
            let mut events = vec![];
            let mut t = 0;
            for i in 0..300u64 {
                t += 10;
                let invoked = t - rnd(10);
                let completed = t + rnd(30);
                let (op, outcome) = match rnd(4) {
                    0 => (Op::Get, Outcome::Read(value)),
                    1 => {
                        value = Some(i);
                        (Op::Put(i), Outcome::Written)
                    }
                    _ => {
                        let expected = if rnd(2) == 0 { value } else { Some(rnd(300)) };
                        let swaps = expected == value;
                        if swaps {
                            value = Some(i);
                        }
                        (Op::Cas { expected, new: i }, Outcome::Swapped(swaps))
                    }
                };
                let outcome =
                    if op != Op::Get && rnd(20) == 0 { Outcome::Unknown } else { outcome };
                events.push(ev(i % 8, op, outcome, invoked, completed));
            }
            assert_eq!(check(events.clone()), Verdict::Linearizable);
            // The same history with one read of a value never written is not.
            if let Some(i) = events.iter().rposition(|e| e.op == Op::Get) {
                events[i].outcome = Outcome::Read(Some(1_000_000));
                assert!(matches!(check(events), Verdict::NotLinearizable(_)));
            }
        }
    }
}
