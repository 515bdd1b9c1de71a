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
pub mod txn_client;

/// Says loudly that `test` (or a part of it) did not run and why:
/// `SKIPPED: ...` on the process's stderr, past the test harness's
/// capture, which `make test` counts in its summary line. In CI (`CI`
/// set), where everything must run, it fails the test instead.
pub fn skip(test: &str, why: &str) {
    use std::io::Write;
    assert!(std::env::var_os("CI").is_none(), "{test} cannot run in CI: {why}");
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {why}");
}

/// A file of this repository by its path from the root. The root comes
/// from the running test's `CARGO_MANIFEST_DIR` (set by `cargo test`):
/// the compile-time one names whichever checkout last built the shared
/// target directory, which may be gone.
pub fn repo_file(rel: &str) -> std::path::PathBuf {
    let tests_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    tests_dir.join("..").join(rel)
}
