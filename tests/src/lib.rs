//! Test harnesses shared by the integration tests: an in-process cluster over
//! a simulated network (`sim`), helpers that run real binaries (`proc`),
//! hosts in network namespaces (`netns`), and the fault-injection harness
//! behind `atoll-chaos` (`nemesis`, `chaos`).

pub mod chaos;
pub mod etcd;
pub mod nemesis;
pub mod netns;
pub mod proc;
pub mod sim;
