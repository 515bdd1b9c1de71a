//! Property test of the key-space model: for random raw keys and random
//! split points, in API V1 and API V2, PD's routing (`Cluster`), the
//! store's key-in-region check and a scan of each region's engine range all
//! agree on which region owns every key. Seeded; a failure prints its seed.

use std::collections::BTreeSet;

use atoll_codec::api::{keyspace_prefix, ApiVersion, RAW_KEY_PREFIX};
use atoll_engine_memory::MemoryEngine;
use atoll_engine_traits::{Iterable, KvEngine, WriteBatch, WriteOptions, CF_DEFAULT};
use atoll_pd::cluster::{Cluster, RegionInfo};
use atoll_proto::metapb;
use atoll_raftstore::keys;
use atoll_server::storage::{data_range_in, region_key_in};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Bytes that make boundary cases likely: zeros (trailing zeros, the
/// memcomparable pad), 0xff (the marker), and a few ordinary letters.
const ALPHABET: &[u8] = &[0x00, 0x00, 0x01, b'a', b'b', b'm', b'r', 0xfe, 0xff];

fn random_key(rng: &mut StdRng, api: ApiVersion, pool: &[Vec<u8>]) -> Vec<u8> {
    // Half the time, derive from an existing key: equal, extended by zeros,
    // or sharing a prefix (e.g. its first 8 bytes).
    if !pool.is_empty() && rng.gen_bool(0.5) {
        let base = &pool[rng.gen_range(0..pool.len())];
        let mut k = base.clone();
        match rng.gen_range(0..3) {
            0 => {}
            1 => k.extend(std::iter::repeat_n(0u8, rng.gen_range(1..3))),
            _ => {
                k.truncate(rng.gen_range(0..=k.len()));
                k.push(ALPHABET[rng.gen_range(0..ALPHABET.len())]);
            }
        }
        return k;
    }
    let mut k = match api {
        ApiVersion::V1 => vec![],
        ApiVersion::V2 => keyspace_prefix(RAW_KEY_PREFIX, 0).to_vec(),
    };
    let len = rng.gen_range(1..18);
    k.extend((0..len).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())]));
    k
}

fn region(id: u64, start: &[u8], end: &[u8]) -> metapb::Region {
    metapb::Region {
        id,
        start_key: start.to_vec(),
        end_key: end.to_vec(),
        region_epoch: Some(metapb::RegionEpoch { conf_ver: 1, version: 1 }),
        peers: vec![metapb::Peer { id: id + 1000, store_id: 1, ..Default::default() }],
        ..Default::default()
    }
}

fn one_case(seed: u64, api: ApiVersion) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut keys: Vec<Vec<u8>> = vec![];
    for _ in 0..rng.gen_range(20..80) {
        let k = random_key(&mut rng, api, &keys);
        keys.push(k);
    }
    // Split points: some are keys, some are not; in region key space.
    let mut splits: BTreeSet<Vec<u8>> = BTreeSet::new();
    for _ in 0..rng.gen_range(1..12) {
        let raw = if rng.gen_bool(0.5) {
            keys[rng.gen_range(0..keys.len())].clone()
        } else {
            random_key(&mut rng, api, &keys)
        };
        splits.insert(api.raw_region_key(&raw));
    }
    let bounds: Vec<Vec<u8>> =
        std::iter::once(vec![]).chain(splits).chain(std::iter::once(vec![])).collect();
    let regions: Vec<metapb::Region> =
        bounds.windows(2).enumerate().map(|(i, w)| region(i as u64 + 1, &w[0], &w[1])).collect();

    let mut pd = Cluster::default();
    pd.api_version = Some(api);
    for r in &regions {
        pd.put_region(RegionInfo::new(r.clone(), None)).expect("fresh regions");
    }
    // The store's engine holds every key, as the request boundary writes it.
    let engine = MemoryEngine::new();
    let mut wb = engine.write_batch();
    for k in &keys {
        wb.put_cf(CF_DEFAULT, &keys::data_key(&api.raw_region_key(k)), b"v").unwrap();
    }
    engine.write(&mut wb, WriteOptions::default()).unwrap();

    let ctx = format!("seed {seed}, {api}");
    for k in &keys {
        let routed = pd
            .region_by_key(&api.raw_region_key(k))
            .unwrap_or_else(|| panic!("{ctx}: PD routes no region for {k:?}"));
        let holders: Vec<u64> =
            regions.iter().filter(|r| region_key_in(api, r, k).is_some()).map(|r| r.id).collect();
        assert_eq!(
            holders,
            vec![routed.region.id],
            "{ctx}: key {k:?}: PD and the store's check disagree"
        );
    }
    // Scanning each region's whole range finds exactly the keys PD routes there.
    let snap = engine.snapshot();
    let mut seen = BTreeSet::new();
    for r in &regions {
        let mut found = BTreeSet::new();
        if let Some((start, end)) = data_range_in(api, r, b"", b"") {
            snap.scan_cf(CF_DEFAULT, &start, &end, false, &mut |k, _| {
                found.insert(api.raw_user_key(keys::origin_key(k)).unwrap());
                Ok(true)
            })
            .unwrap();
        }
        let want: BTreeSet<Vec<u8>> = keys
            .iter()
            .filter(|k| pd.region_by_key(&api.raw_region_key(k)).unwrap().region.id == r.id)
            .cloned()
            .collect();
        assert_eq!(
            found, want,
            "{ctx}: scan of region {} ({:?}..{:?})",
            r.id, r.start_key, r.end_key
        );
        seen.extend(found);
    }
    assert_eq!(seen, keys.iter().cloned().collect(), "{ctx}: every key in exactly one region scan");
    // A random user range, clipped region by region, covers exactly its keys.
    let (mut lo, mut hi) = (random_key(&mut rng, api, &keys), random_key(&mut rng, api, &keys));
    if lo > hi {
        std::mem::swap(&mut lo, &mut hi);
    }
    let mut got = vec![];
    for r in &regions {
        if let Some((start, end)) = data_range_in(api, r, &lo, &hi) {
            snap.scan_cf(CF_DEFAULT, &start, &end, false, &mut |k, _| {
                got.push(api.raw_user_key(keys::origin_key(k)).unwrap());
                Ok(true)
            })
            .unwrap();
        }
    }
    let want: Vec<Vec<u8>> = keys
        .iter()
        .filter(|k| **k >= lo && **k < hi)
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(got, want, "{ctx}: range [{lo:?}, {hi:?})");
}

#[test]
fn routing_region_checks_and_scans_agree() {
    for seed in 0..300 {
        one_case(seed, ApiVersion::V1);
        one_case(seed, ApiVersion::V2);
    }
}
