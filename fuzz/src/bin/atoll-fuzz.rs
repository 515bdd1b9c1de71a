//! `atoll-fuzz`: runs fuzz targets for a bounded time. Inputs are
//! generated messages that decode, their mutations, and random bytes.
//! A panic (in any thread) saves the inputs that led to it under
//! `fuzz/regressions/<target>/` and ends the run with exit code 1; `make
//! test` replays every saved input.
//!
//! Usage: `atoll-fuzz [--target kv,txn,raft,snapshot,records] [--seconds N]
//! [--seed N] [--out DIR]`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

struct Args {
    targets: Vec<String>,
    seconds: u64,
    seed: u64,
    out: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        targets: atoll_fuzz::TARGETS.iter().map(|t| t.to_string()).collect(),
        seconds: 60,
        seed: 1,
        out: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/regressions")),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v:?}: {e}"));
        match flag.as_str() {
            "--target" => {
                a.targets = value.split(',').map(str::to_string).collect();
                if let Some(bad) =
                    a.targets.iter().find(|t| !atoll_fuzz::TARGETS.contains(&t.as_str()))
                {
                    return Err(format!(
                        "unknown target {bad:?} ({})",
                        atoll_fuzz::TARGETS.join(", ")
                    ));
                }
            }
            "--seconds" => a.seconds = num(&value)?,
            "--seed" => a.seed = num(&value)?,
            "--out" => a.out = PathBuf::from(value),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

/// Inputs kept for a panic seen late (a store thread): the last few.
const RECENT: usize = 16;

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("atoll-fuzz: {e}");
            std::process::exit(2);
        }
    };
    atoll_fuzz::watch_panics();
    let mut found = 0;
    for target in &args.targets {
        let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let mut recent: Vec<Vec<u8>> = vec![];
        let mut runs = 0u64;
        while Instant::now() < deadline {
            let input = match rng.gen_range(0..10) {
                0 => (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect(),
                1..=4 => atoll_fuzz::generate(target, &mut rng),
                _ => {
                    let mut v = atoll_fuzz::generate(target, &mut rng);
                    atoll_fuzz::mutate(&mut v, &mut rng);
                    v
                }
            };
            recent.push(input.clone());
            if recent.len() > RECENT {
                recent.remove(0);
            }
            let res = std::panic::catch_unwind(|| atoll_fuzz::run(target, &input));
            runs += 1;
            if let Some(msg) = atoll_fuzz::take_panic() {
                // Caught here (this input), or from a store thread (one of
                // the recent ones): keep them all, in order.
                let dir = args.out.join(target);
                let _ = std::fs::create_dir_all(&dir);
                let keep = if res.is_err() { vec![input.clone()] } else { recent.clone() };
                let name = format!("crash-{}-{}", args.seed, runs);
                for (i, inp) in keep.iter().enumerate() {
                    let _ = std::fs::write(dir.join(format!("{name}-{i:02}")), inp);
                }
                println!("{target}: panic after {runs} inputs: {msg}\n  saved {} input(s) as {}/{name}-*", keep.len(), dir.display());
                found += 1;
                break;
            }
        }
        println!("{target}: {runs} inputs in {}s", args.seconds);
    }
    std::process::exit(if found == 0 { 0 } else { 1 });
}
