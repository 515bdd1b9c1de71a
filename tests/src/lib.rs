//! Test harnesses shared by the integration tests: an in-process cluster over
//! a simulated network (`sim`), helpers that run real binaries (`proc`),
//! hosts in network namespaces (`netns`), a PD group whose
//! leadership a test scripts (`scripted_pd`), and the fault-injection harness
//! behind `atoll-chaos` (`nemesis`, `chaos`).

pub mod chaos;
pub mod etcd;
pub mod nemesis;
pub mod netns;
pub mod proc;
pub mod scripted_pd;
pub mod sim;
