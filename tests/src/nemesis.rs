//! The fault schedule of `atoll-chaos`: which fault, when, for how long,
//! derived from a seed alone so that a failing run can be replayed. Whom a
//! fault hits is decided from the seed too, except "the store holding the
//! most leaders", which is looked up from PD when the fault starts; the
//! harness logs what each fault hit.

use std::fmt;
use std::time::Duration;

use rand::{Rng, SeedableRng};

/// Fault families, as `--nemesis` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Kill,
    Pause,
    Partition,
    Pd,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Kill, Kind::Pause, Kind::Partition, Kind::Pd];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Pause => "pause",
            Kind::Partition => "partition",
            Kind::Pd => "pd",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// A store chosen by the schedule, or the one PD says leads the most
/// regions when the fault starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Store(usize),
    MostLeaders,
}

/// Store indices are 0-based; PD is not part of a partition unless named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, restarted at heal.
    Kill(Target),
    /// SIGSTOP, SIGCONT at heal (held longer than an election timeout).
    Pause(Target),
    /// The stores in `minority` (with PD on the majority's side) cannot
    /// talk to the others.
    Halves { minority: Vec<usize> },
    /// One store (the leaders' one, usually) cut from every other store
    /// and PD; clients still reach it.
    Isolate(Target),
    /// Two halves that only `middle` talks to both of (not transitive).
    Bridge { left: Vec<usize>, middle: usize, right: Vec<usize> },
    /// Packets from `from` to `to` dropped, the other way delivered.
    OneWay { from: usize, to: usize },
    /// PD SIGKILLed, restarted at heal.
    KillPd,
}

impl Fault {
    pub fn kind(&self) -> Kind {
        match self {
            Fault::Kill(_) => Kind::Kill,
            Fault::Pause(_) => Kind::Pause,
            Fault::Halves { .. }
            | Fault::Isolate(_)
            | Fault::Bridge { .. }
            | Fault::OneWay { .. } => Kind::Partition,
            Fault::KillPd => Kind::Pd,
        }
    }

    /// A short label for summaries, e.g. `partition/bridge`.
    pub fn label(&self) -> &'static str {
        match self {
            Fault::Kill(Target::Store(_)) => "kill",
            Fault::Kill(Target::MostLeaders) => "kill/leaders",
            Fault::Pause(Target::Store(_)) => "pause",
            Fault::Pause(Target::MostLeaders) => "pause/leaders",
            Fault::Halves { .. } => "partition/halves",
            Fault::Isolate(_) => "partition/isolate",
            Fault::Bridge { .. } => "partition/bridge",
            Fault::OneWay { .. } => "partition/one-way",
            Fault::KillPd => "pd/kill",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Store(i) => write!(f, "store {i}"),
            Target::MostLeaders => write!(f, "the store with most leaders"),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(t) => write!(f, "kill -9 {t}"),
            Fault::Pause(t) => write!(f, "pause {t}"),
            Fault::Halves { minority } => write!(f, "partition stores {minority:?} from the rest"),
            Fault::Isolate(t) => write!(f, "isolate {t} from stores and PD"),
            Fault::Bridge { left, middle, right } => {
                write!(f, "bridge {left:?} <-> {middle} <-> {right:?}")
            }
            Fault::OneWay { from, to } => write!(f, "drop packets from store {from} to store {to}"),
            Fault::KillPd => write!(f, "kill -9 PD"),
        }
    }
}

/// One fault: starts `at` after the run started, healed `hold` later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub at: Duration,
    pub hold: Duration,
    pub fault: Fault,
}

/// The faults of one run of `duration` over `stores` stores, from `seed`:
/// a quiet gap of 1-3 s, a fault held 1-4 s, healed, and so on. Ends with
/// everything healed at least 2 s before `duration`.
pub fn schedule(seed: u64, kinds: &[Kind], stores: usize, duration: Duration) -> Vec<Step> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7300);
    let mut out = vec![];
    if kinds.is_empty() || stores == 0 {
        return out;
    }
    let mut t = Duration::ZERO;
    loop {
        t += Duration::from_millis(rng.gen_range(1000..3000));
        let hold = Duration::from_millis(rng.gen_range(1000..4000));
        if t + hold + Duration::from_secs(2) > duration {
            return out;
        }
        let kind = kinds[rng.gen_range(0..kinds.len())];
        let fault = pick(&mut rng, kind, stores);
        out.push(Step { at: t, hold, fault });
        t += hold;
    }
}

fn pick(rng: &mut impl Rng, kind: Kind, stores: usize) -> Fault {
    let target = |rng: &mut dyn rand::RngCore| {
        if rng.gen_bool(0.4) {
            Target::MostLeaders
        } else {
            Target::Store(rng.gen_range(0..stores))
        }
    };
    match kind {
        Kind::Kill => Fault::Kill(target(rng)),
        Kind::Pause => Fault::Pause(target(rng)),
        Kind::Pd => Fault::KillPd,
        Kind::Partition if stores < 2 => Fault::KillPd,
        Kind::Partition => {
            let mut order: Vec<usize> = (0..stores).collect();
            rand::seq::SliceRandom::shuffle(order.as_mut_slice(), rng);
            match rng.gen_range(0..4) {
                0 => {
                    let mut minority = order[..(stores - 1) / 2].to_vec();
                    if minority.is_empty() {
                        minority.push(order[0]);
                    }
                    minority.sort_unstable();
                    Fault::Halves { minority }
                }
                1 => Fault::Isolate(target(rng)),
                2 if stores >= 3 => {
                    let middle = order[0];
                    let rest = &order[1..];
                    let mut left = rest[..rest.len() / 2].to_vec();
                    let mut right = rest[rest.len() / 2..].to_vec();
                    left.sort_unstable();
                    right.sort_unstable();
                    Fault::Bridge { left, middle, right }
                }
                _ => Fault::OneWay { from: order[0], to: order[1] },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_decides_the_schedule() {
        let d = Duration::from_secs(60);
        let a = schedule(7, &Kind::ALL, 5, d);
        assert_eq!(a, schedule(7, &Kind::ALL, 5, d));
        assert_ne!(a, schedule(8, &Kind::ALL, 5, d));
        assert!(a.len() >= 8, "{a:?}");
        for w in a.windows(2) {
            assert!(w[0].at + w[0].hold < w[1].at, "faults do not overlap");
        }
        let last = a.last().unwrap();
        assert!(last.at + last.hold + Duration::from_secs(2) <= d);
        // Every family shows up in a minute of all of them.
        for k in Kind::ALL {
            assert!(a.iter().any(|s| s.fault.kind() == k), "{k:?} missing from {a:?}");
        }
        // Only the families asked for.
        let only = schedule(7, &[Kind::Pause], 5, d);
        assert!(only.iter().all(|s| s.fault.kind() == Kind::Pause));
    }

    #[test]
    fn partitions_name_real_stores() {
        for seed in 0..200 {
            for s in schedule(seed, &[Kind::Partition], 5, Duration::from_secs(30)) {
                match s.fault {
                    Fault::Halves { minority } => {
                        assert!(!minority.is_empty() && minority.len() < 3, "{minority:?}")
                    }
                    Fault::Bridge { left, middle, right } => {
                        assert_eq!(left.len() + right.len() + 1, 5);
                        assert!(!left.contains(&middle) && !right.contains(&middle));
                    }
                    Fault::OneWay { from, to } => assert!(from != to && from < 5 && to < 5),
                    Fault::Isolate(_) => {}
                    other => panic!("not a partition: {other:?}"),
                }
            }
        }
    }
}
