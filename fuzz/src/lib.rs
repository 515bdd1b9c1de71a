//! Fuzz targets for what reaches a store from outside: client requests
//! (`kv` raw, `txn` transactional), raft messages from other stores (`raft`), received snapshot
//! files (`snapshot`) and the records it reads back from disk (`records`).
//!
//! Each target takes bytes and must return, whatever they are: an error is
//! fine, a panic (in the caller's thread or any store thread) is a finding.
//! [`generate`] makes inputs that decode (valid messages with random
//! fields), so that the search reaches past the decoders; the runner
//! (`atoll-fuzz`, `make fuzz`) mixes those, their mutations and raw random
//! bytes. Stable toolchains have no libFuzzer, hence this small driver.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once, OnceLock};

use parking_lot::Mutex;
use rand::Rng;

pub mod targets;

/// Every target, by name.
pub const TARGETS: [&str; 5] = ["kv", "txn", "raft", "snapshot", "records"];

/// Runs target `name` on `input`.
pub fn run(name: &str, input: &[u8]) {
    match name {
        "kv" => targets::kv(input),
        "txn" => targets::txn(input),
        "raft" => targets::raft(input),
        "snapshot" => targets::snapshot(input),
        "records" => targets::records(input),
        other => panic!("unknown fuzz target {other:?}"),
    }
}

/// An input for target `name` that decodes, with random contents.
pub fn generate(name: &str, rng: &mut impl Rng) -> Vec<u8> {
    match name {
        "kv" => targets::gen_kv(rng),
        "txn" => targets::gen_txn(rng),
        "raft" => targets::gen_raft(rng),
        "snapshot" => targets::gen_snapshot(rng),
        "records" => targets::gen_records(rng),
        other => panic!("unknown fuzz target {other:?}"),
    }
}

/// Flips, inserts, deletes or overwrites a few bytes.
pub fn mutate(input: &mut Vec<u8>, rng: &mut impl Rng) {
    for _ in 0..rng.gen_range(1..=4) {
        let len = input.len();
        match rng.gen_range(0..4) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] ^= 1 << rng.gen_range(0..8);
            }
            1 => {
                let i = rng.gen_range(0..=len);
                input.insert(i, rng.gen());
            }
            2 if len > 0 => {
                input.remove(rng.gen_range(0..len));
            }
            _ if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] = [0, 0xff, 0x7f, 0x80, 1][rng.gen_range(0..5)];
            }
            _ => input.push(rng.gen()),
        }
    }
}

static PANICKED: AtomicBool = AtomicBool::new(false);
static PANIC_MESSAGE: Mutex<String> = Mutex::new(String::new());

/// Records panics of every thread (store threads included), keeping the
/// default report. Called once by whoever runs targets.
pub fn watch_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            *PANIC_MESSAGE.lock() = info.to_string();
            default(info);
        }));
    });
}

/// The message of a panic since the last call, if any.
pub fn take_panic() -> Option<String> {
    PANICKED.swap(false, Ordering::SeqCst).then(|| std::mem::take(&mut *PANIC_MESSAGE.lock()))
}

/// A shared value built once per process.
fn shared<T: Send + Sync + 'static>(
    cell: &'static OnceLock<Arc<T>>,
    f: impl FnOnce() -> T,
) -> Arc<T> {
    cell.get_or_init(|| Arc::new(f())).clone()
}
