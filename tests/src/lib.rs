//! Test harnesses shared by the integration tests: an in-process cluster over
//! a simulated network (`sim`), and helpers that run real binaries (`proc`).

pub mod proc;
pub mod sim;
