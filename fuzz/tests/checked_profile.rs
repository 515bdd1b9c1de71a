//! The `fuzz-checked` profile is what it says: make test replays the txn
//! and kv inputs in it with `ATOLL_FUZZ_CHECKED=1`, and there arithmetic
//! overflow must panic and debug assertions run; in the release profile
//! (no variable) neither. A separate binary: the overflow's panic must not
//! reach the panic watch of the regressions test.

#[test]
fn overflow_traps_exactly_in_the_checked_profile() {
    let traps =
        std::panic::catch_unwind(|| std::hint::black_box(u64::MAX) + std::hint::black_box(1u64))
            .is_err();
    let checked = std::env::var_os("ATOLL_FUZZ_CHECKED").is_some();
    assert_eq!(
        (traps, cfg!(debug_assertions)),
        (checked, checked),
        "(overflow traps, debug assertions) in a run with ATOLL_FUZZ_CHECKED {}",
        if checked { "set" } else { "unset" }
    );
}
