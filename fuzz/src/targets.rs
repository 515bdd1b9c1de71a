//! The targets and their input generators.

use std::sync::{Arc, OnceLock};

use atoll_engine_memory::MemoryEngine;
use atoll_engine_traits::{KvEngine, WriteBatch, WriteOptions, CF_RAFT};
use atoll_proto::atollpb::{
    RaftApplyState, RaftCmdRequest, RaftLocalState, RaftMessage, RaftTruncatedState,
    RegionLocalState, Request, SnapshotData, StoreIdent,
};
use atoll_proto::kvrpcpb::*;
use atoll_proto::metapb;
use atoll_proto::tikvpb::tikv_server::Tikv;
use atoll_raftstore::{keys, Config};
use atoll_server::kv::KvService;
use atoll_server::storage::RawStorage;
use atoll_server::txn::{TsoSource, TxnStorage};
use atoll_tests::sim::Cluster;
use parking_lot::Mutex;
use prost::Message as _;
use raft::eraftpb;
use rand::Rng;

use crate::shared;

// ---------------------------------------------------------------- kv

/// Three in-process stores (memory engine) and the client-facing service
/// of the first region's leader, in API V1 and V2.
struct KvEnv {
    rt: tokio::runtime::Runtime,
    cluster: Mutex<Cluster<MemoryEngine>>,
    /// The store serving `services`.
    leader: u64,
    services: [KvService<MemoryEngine>; 2],
}

static KV_ENV: OnceLock<Arc<KvEnv>> = OnceLock::new();
static RAFT_ENV: OnceLock<Arc<KvEnv>> = OnceLock::new();

fn new_env() -> KvEnv {
    let mut c = Cluster::new(Config::for_tests(), (0..3).map(|_| MemoryEngine::new()).collect());
    c.start_all();
    c.must_put(b"k", b"v");
    let leader = c.leader_store(b"k");
    let handle = c.handle(leader).expect("leader store");
    let cfg = atoll_server::Config::default();
    let engine = c.engines[&leader].clone();
    // Timestamps for max_ts syncs: a counter is enough here.
    let ts = Arc::new(std::sync::atomic::AtomicU64::new(1 << 40));
    let tso: TsoSource = Arc::new(move || {
        let t = ts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Box::pin(async move { Ok(t) })
    });
    // Lock waits end quickly: a fuzzed request that meets a lock waits
    // (woken or not), then answers.
    let locks = atoll_server::lock_manager::LockManager::local(
        &atoll_server::config::PessimisticTxnConfig {
            wait_for_lock_timeout: atoll_util::ReadableDuration(std::time::Duration::from_millis(
                10,
            )),
            ..Default::default()
        },
    );
    let svc = |api| KvService {
        storage: RawStorage::new(handle.clone(), &cfg.server, api),
        txn: Arc::new(TxnStorage::new(
            handle.clone(),
            engine.clone(),
            &cfg.server,
            api,
            tso.clone(),
            locks.clone(),
        )),
    };
    let services = [svc(atoll_codec::api::ApiVersion::V1), svc(atoll_codec::api::ApiVersion::V2)];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    KvEnv { rt, cluster: Mutex::new(c), leader, services }
}

/// `[rpc, api, request...]`: request `rpc % 12`, decoded from the rest,
/// served by the V1 (`api` even) or V2 service.
pub fn kv(input: &[u8]) {
    let [rpc, api, body @ ..] = input else { return };
    let env = shared(&KV_ENV, new_env);
    let svc = &env.services[usize::from(api % 2)];
    env.rt.block_on(async {
        let t = tokio::time::timeout(std::time::Duration::from_secs(30), serve(svc, *rpc, body));
        // Region errors and rejections are answers; so is a timeout in a
        // cluster this busy. Only a panic is a finding.
        let _ = t.await;
    });
}

async fn serve(svc: &KvService<MemoryEngine>, rpc: u8, body: &[u8]) {
    use tonic::Request as R;
    macro_rules! call {
        ($ty:ty, $method:ident) => {{
            if let Ok(req) = <$ty>::decode(body) {
                let _ = svc.$method(R::new(req)).await;
            }
        }};
    }
    match rpc % 12 {
        0 => call!(RawGetRequest, raw_get),
        1 => call!(RawBatchGetRequest, raw_batch_get),
        2 => call!(RawPutRequest, raw_put),
        3 => call!(RawBatchPutRequest, raw_batch_put),
        4 => call!(RawDeleteRequest, raw_delete),
        5 => call!(RawBatchDeleteRequest, raw_batch_delete),
        6 => call!(RawScanRequest, raw_scan),
        7 => call!(RawDeleteRangeRequest, raw_delete_range),
        8 => call!(RawBatchScanRequest, raw_batch_scan),
        9 => call!(RawGetKeyTtlRequest, raw_get_key_ttl),
        10 => call!(RawCasRequest, raw_compare_and_swap),
        _ => call!(RawChecksumRequest, raw_checksum),
    }
}

/// A key from a small alphabet, sometimes with API V2's raw prefix, empty,
/// long, or all 0xff.
fn key<R: Rng + ?Sized>(rng: &mut R) -> Vec<u8> {
    let v2 = rng.gen_bool(0.5);
    key_for(rng, v2)
}

/// [`key`], mostly with the raw prefix if `v2`, mostly without if not.
fn key_for<R: Rng + ?Sized>(rng: &mut R, v2: bool) -> Vec<u8> {
    let mut k = match rng.gen_range(0..8) {
        0 => vec![],
        1 => vec![0xff; rng.gen_range(1..10)],
        2 => vec![0; rng.gen_range(1..10)],
        3 => (0..rng.gen_range(100..2000)).map(|_| rng.gen()).collect(),
        _ => (0..rng.gen_range(1..6)).map(|_| b"abkz\0\xff"[rng.gen_range(0..6)]).collect(),
    };
    if rng.gen_bool(if v2 { 0.9 } else { 0.1 }) {
        let mut prefixed = vec![b'r', 0, 0, rng.gen_range(0..2)];
        prefixed.append(&mut k);
        k = prefixed;
    }
    k
}

fn cf<R: Rng + ?Sized>(rng: &mut R) -> String {
    ["", "default", "write", "lock", "raft", "bogus"][rng.gen_range(0..6)].to_string()
}

/// Mostly a context the serving store accepts (its region, epoch and
/// peer, the service's API version `api`), so requests get past the
/// checks; sometimes one detail off.
fn context<R: Rng + ?Sized>(rng: &mut R, api: u8) -> Option<Context> {
    let env = shared(&KV_ENV, new_env);
    let region = env.cluster.lock().region_for_key(b"k");
    let epoch = region.region_epoch.clone().unwrap_or_default();
    let leader = region.peers.iter().find(|p| p.store_id == env.leader).cloned();
    let peer = if rng.gen_bool(0.8) {
        leader
    } else {
        region.peers.get(rng.gen_range(0..region.peers.len().max(1))).cloned()
    };
    let api_version = match (rng.gen_bool(0.9), api % 2) {
        (true, 0) => 0,
        (true, _) => 2,
        (false, _) => rng.gen_range(0..4),
    };
    Some(Context {
        region_id: if rng.gen_bool(0.95) { region.id } else { rng.gen_range(0..5) },
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: epoch.conf_ver + u64::from(rng.gen_bool(0.05)),
            version: epoch.version.saturating_sub(u64::from(rng.gen_bool(0.05))),
        }),
        peer,
        api_version,
        ..Default::default()
    })
}

// `ttl` is deprecated in kvrpcpb, and still sent by clients.
#[allow(deprecated)]
pub fn gen_kv(rng: &mut impl Rng) -> Vec<u8> {
    let rpc: u8 = rng.gen_range(0..12);
    let api: u8 = rng.gen();
    let ctx = context(rng, api);
    let v2 = api % 2 == 1;
    let n = rng.gen_range(0..6);
    let keys: Vec<Vec<u8>> = (0..n).map(|_| key_for(rng, v2)).collect();
    let value = |rng: &mut dyn rand::RngCore| -> Vec<u8> {
        (0..[0, 1, 8, 300][rng.gen_range(0..4)]).map(|_| rng.gen()).collect()
    };
    let range = |rng: &mut dyn rand::RngCore| KeyRange {
        start_key: key_for(rng, v2),
        end_key: key_for(rng, v2),
    };
    let limit = [0, 1, 10, 10_240, 10_241, u32::MAX][rng.gen_range(0..6)];
    let ttl = [0, 1, u64::MAX][rng.gen_range(0..3)];
    let body = match rpc {
        0 => RawGetRequest { context: ctx, key: key_for(rng, v2), cf: cf(rng) }.encode_to_vec(),
        1 => RawBatchGetRequest { context: ctx, keys, cf: cf(rng) }.encode_to_vec(),
        2 => RawPutRequest {
            context: ctx,
            key: key_for(rng, v2),
            value: value(rng),
            cf: cf(rng),
            ttl,
            for_cas: rng.gen(),
        }
        .encode_to_vec(),
        3 => RawBatchPutRequest {
            context: ctx,
            pairs: keys
                .into_iter()
                .map(|key| KvPair { key, value: value(rng), error: None })
                .collect(),
            cf: cf(rng),
            ttl,
            for_cas: rng.gen(),
            ttls: (0..rng.gen_range(0..3)).map(|_| rng.gen_range(0..3)).collect(),
        }
        .encode_to_vec(),
        4 => RawDeleteRequest {
            context: ctx,
            key: key_for(rng, v2),
            cf: cf(rng),
            for_cas: rng.gen(),
        }
        .encode_to_vec(),
        5 => RawBatchDeleteRequest { context: ctx, keys, cf: cf(rng), for_cas: rng.gen() }
            .encode_to_vec(),
        6 => RawScanRequest {
            context: ctx,
            start_key: key_for(rng, v2),
            end_key: key_for(rng, v2),
            limit,
            key_only: rng.gen(),
            cf: cf(rng),
            reverse: rng.gen(),
        }
        .encode_to_vec(),
        7 => RawDeleteRangeRequest {
            context: ctx,
            start_key: key_for(rng, v2),
            end_key: key_for(rng, v2),
            cf: cf(rng),
        }
        .encode_to_vec(),
        8 => RawBatchScanRequest {
            context: ctx,
            ranges: (0..n).map(|_| range(rng)).collect(),
            each_limit: limit,
            key_only: rng.gen(),
            cf: cf(rng),
            reverse: rng.gen(),
        }
        .encode_to_vec(),
        9 => {
            RawGetKeyTtlRequest { context: ctx, key: key_for(rng, v2), cf: cf(rng) }.encode_to_vec()
        }
        10 => RawCasRequest {
            context: ctx,
            key: key_for(rng, v2),
            value: value(rng),
            previous_not_exist: rng.gen(),
            previous_value: value(rng),
            cf: cf(rng),
            ttl,
        }
        .encode_to_vec(),
        _ => RawChecksumRequest {
            context: ctx,
            algorithm: if rng.gen_bool(0.9) { 0 } else { rng.gen_range(1..3) },
            ranges: (0..n).map(|_| range(rng)).collect(),
        }
        .encode_to_vec(),
    };
    let mut out = vec![rpc, api];
    out.extend(body);
    out
}

// -------------------------------------------------------------- txn

/// `[rpc, api, request...]`: transactional request `rpc % 16`, decoded
/// from the rest, served by the V1 (`api` even) or V2 service.
pub fn txn(input: &[u8]) {
    let [rpc, api, body @ ..] = input else { return };
    let env = shared(&KV_ENV, new_env);
    let svc = &env.services[usize::from(api % 2)];
    env.rt.block_on(async {
        let t =
            tokio::time::timeout(std::time::Duration::from_secs(30), serve_txn(svc, *rpc, body));
        let _ = t.await;
    });
}

async fn serve_txn(svc: &KvService<MemoryEngine>, rpc: u8, body: &[u8]) {
    use tonic::Request as R;
    macro_rules! call {
        ($ty:ty, $method:ident) => {{
            if let Ok(req) = <$ty>::decode(body) {
                let _ = svc.$method(R::new(req)).await;
            }
        }};
    }
    match rpc % 16 {
        0 => call!(GetRequest, kv_get),
        1 => call!(BatchGetRequest, kv_batch_get),
        2 => call!(ScanRequest, kv_scan),
        3 => call!(PrewriteRequest, kv_prewrite),
        4 => call!(CommitRequest, kv_commit),
        5 => call!(BatchRollbackRequest, kv_batch_rollback),
        6 => call!(CleanupRequest, kv_cleanup),
        7 => call!(CheckTxnStatusRequest, kv_check_txn_status),
        8 => call!(CheckSecondaryLocksRequest, kv_check_secondary_locks),
        9 => call!(ResolveLockRequest, kv_resolve_lock),
        10 => call!(ScanLockRequest, kv_scan_lock),
        11 => call!(TxnHeartBeatRequest, kv_txn_heart_beat),
        12 => call!(PessimisticLockRequest, kv_pessimistic_lock),
        13 => call!(PessimisticRollbackRequest, kv_pessimistic_rollback),
        14 => call!(DeleteRangeRequest, kv_delete_range),
        _ => call!(UnsafeDestroyRangeRequest, unsafe_destroy_range),
    }
}

/// A transactional key: [`key_for`]'s shapes, mostly with API V2's
/// transactional prefix if `v2`; from a few keys, so commands meet each
/// other's locks and records.
fn txn_key_for<R: Rng + ?Sized>(rng: &mut R, v2: bool) -> Vec<u8> {
    let mut k =
        if rng.gen_bool(0.7) { vec![b"abc"[rng.gen_range(0..3)]] } else { key_for(rng, false) };
    if rng.gen_bool(if v2 { 0.9 } else { 0.1 }) {
        let mut prefixed = vec![b'x', 0, 0, rng.gen_range(0..2)];
        prefixed.append(&mut k);
        k = prefixed;
    }
    k
}

/// A timestamp near the others (so they interact), or an edge value.
fn ts<R: Rng + ?Sized>(rng: &mut R) -> u64 {
    match rng.gen_range(0..10) {
        0 => 0,
        1 => u64::MAX,
        2 => rng.gen(),
        _ => (1000 << 18) + rng.gen_range(0..20),
    }
}

pub fn gen_txn(rng: &mut impl Rng) -> Vec<u8> {
    let rpc: u8 = rng.gen_range(0..16);
    let api: u8 = rng.gen();
    let ctx = context(rng, api);
    let v2 = api % 2 == 1;
    let n = rng.gen_range(0..5);
    let keys: Vec<Vec<u8>> = (0..n).map(|_| txn_key_for(rng, v2)).collect();
    let value = |rng: &mut dyn rand::RngCore| -> Vec<u8> {
        (0..[0, 1, 8, 300][rng.gen_range(0..4)]).map(|_| rng.gen()).collect()
    };
    let mutations = |rng: &mut dyn rand::RngCore, keys: &[Vec<u8>]| -> Vec<Mutation> {
        keys.iter()
            .map(|k| Mutation {
                op: rng.gen_range(0..8),
                key: k.clone(),
                value: value(rng),
                assertion: rng.gen_range(0..3),
            })
            .collect()
    };
    let primary = keys.first().cloned().unwrap_or_else(|| txn_key_for(rng, v2));
    let limit = [0, 1, 10, 10_240, 10_241, u32::MAX][rng.gen_range(0..6)];
    let body = match rpc {
        0 => {
            GetRequest { context: ctx, key: txn_key_for(rng, v2), version: ts(rng) }.encode_to_vec()
        }
        1 => BatchGetRequest { context: ctx, keys, version: ts(rng) }.encode_to_vec(),
        2 => ScanRequest {
            context: ctx,
            start_key: txn_key_for(rng, v2),
            end_key: txn_key_for(rng, v2),
            limit,
            version: ts(rng),
            key_only: rng.gen(),
            reverse: rng.gen(),
            sample_step: 0,
        }
        .encode_to_vec(),
        3 => PrewriteRequest {
            context: ctx,
            mutations: mutations(rng, &keys),
            primary_lock: primary,
            start_version: ts(rng),
            lock_ttl: [0, 3000][rng.gen_range(0..2)],
            pessimistic_actions: (0..n).map(|_| rng.gen_range(0..4)).collect(),
            txn_size: n as u64,
            for_update_ts: if rng.gen() { 0 } else { ts(rng) },
            min_commit_ts: if rng.gen() { 0 } else { ts(rng) },
            use_async_commit: rng.gen(),
            secondaries: keys.iter().skip(1).cloned().collect(),
            try_one_pc: rng.gen(),
            ..Default::default()
        }
        .encode_to_vec(),
        4 => CommitRequest { context: ctx, start_version: ts(rng), keys, commit_version: ts(rng) }
            .encode_to_vec(),
        5 => BatchRollbackRequest { context: ctx, start_version: ts(rng), keys }.encode_to_vec(),
        6 => CleanupRequest {
            context: ctx,
            key: primary,
            start_version: ts(rng),
            current_ts: ts(rng),
        }
        .encode_to_vec(),
        7 => CheckTxnStatusRequest {
            context: ctx,
            primary_key: primary,
            lock_ts: ts(rng),
            caller_start_ts: ts(rng),
            current_ts: ts(rng),
            rollback_if_not_exist: rng.gen(),
            force_sync_commit: rng.gen(),
            resolving_pessimistic_lock: rng.gen(),
            verify_is_primary: rng.gen(),
        }
        .encode_to_vec(),
        8 => CheckSecondaryLocksRequest { context: ctx, keys, start_version: ts(rng) }
            .encode_to_vec(),
        9 => ResolveLockRequest {
            context: ctx,
            start_version: ts(rng),
            commit_version: ts(rng),
            txn_infos: (0..rng.gen_range(0..3))
                .map(|_| TxnInfo { txn: ts(rng), status: ts(rng), is_txn_file: false })
                .collect(),
            keys: if rng.gen() { keys } else { vec![] },
        }
        .encode_to_vec(),
        10 => ScanLockRequest {
            context: ctx,
            max_version: ts(rng),
            start_key: txn_key_for(rng, v2),
            limit,
            end_key: txn_key_for(rng, v2),
        }
        .encode_to_vec(),
        11 => TxnHeartBeatRequest {
            context: ctx,
            primary_lock: primary,
            start_version: ts(rng),
            advise_lock_ttl: rng.gen_range(0..100_000),
        }
        .encode_to_vec(),
        12 => PessimisticLockRequest {
            context: ctx,
            mutations: mutations(rng, &keys),
            primary_lock: primary,
            start_version: ts(rng),
            lock_ttl: 3000,
            for_update_ts: ts(rng),
            return_values: rng.gen(),
            check_existence: rng.gen(),
            ..Default::default()
        }
        .encode_to_vec(),
        13 => PessimisticRollbackRequest {
            context: ctx,
            start_version: ts(rng),
            for_update_ts: ts(rng),
            keys,
        }
        .encode_to_vec(),
        14 => DeleteRangeRequest {
            context: ctx,
            start_key: txn_key_for(rng, v2),
            end_key: txn_key_for(rng, v2),
            notify_only: rng.gen(),
        }
        .encode_to_vec(),
        _ => UnsafeDestroyRangeRequest {
            context: ctx,
            start_key: txn_key_for(rng, v2),
            end_key: txn_key_for(rng, v2),
        }
        .encode_to_vec(),
    };
    let mut out = vec![rpc, api];
    out.extend(body);
    out
}

// -------------------------------------------------------------- raft

/// `[store, message...]`: a `RaftMessage` decoded from the rest, delivered
/// to store `store % 3 + 1` as if it came from the wire.
pub fn raft(input: &[u8]) {
    let [store, body @ ..] = input else { return };
    let Ok(msg) = RaftMessage::decode(body) else { return };
    // Out of scope (see `gen_raft`): a term the cluster may not have passed
    // yet, or any term for a region the store may create a peer for, or a
    // tombstone for the live region (after which a new peer of it could be
    // created).
    if msg.is_tombstone && msg.region_id == 1 {
        return;
    }
    if let Ok(inner) = <eraftpb::Message as prost011::Message>::decode(msg.message.as_slice()) {
        let stale = inner.term < atoll_raftstore::storage::RAFT_INIT_LOG_TERM;
        if !stale || (msg.region_id != 1 && inner.term != 0) {
            return;
        }
    }
    let env = shared(&RAFT_ENV, new_env);
    let handle = env.cluster.lock().handle(u64::from(store % 3) + 1);
    if let Some(h) = handle {
        h.on_raft_message(msg);
    }
    // Delivery only queues the message: give the store time to step it,
    // rather than overflowing its mailbox.
    static DELIVERED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if DELIVERED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 16 == 15 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Raft messages that decode, aimed at the store's validation: unknown and
/// known regions, members and strangers, stale and future epochs, inner
/// messages that do not decode, and messages of term 0, which raft would
/// take as its own local ones (a proposal, a heartbeat moving the commit
/// index). Raft trusts its peers: a forged leader of a term no one had yet
/// can make it append and commit anything, so terms stay below the
/// cluster's (which starts at 5), and a message that would create a peer
/// of an unknown region has term 0.
pub fn gen_raft(rng: &mut impl Rng) -> Vec<u8> {
    let peer = |rng: &mut dyn rand::RngCore| metapb::Peer {
        id: [101, 102, 103, rng.gen_range(0..1000)][rng.gen_range(0..4)],
        store_id: rng.gen_range(0..5),
        role: rng.gen_range(0..3),
        ..Default::default()
    };
    let types = [
        eraftpb::MessageType::MsgHup,
        eraftpb::MessageType::MsgBeat,
        eraftpb::MessageType::MsgPropose,
        eraftpb::MessageType::MsgAppend,
        eraftpb::MessageType::MsgAppendResponse,
        eraftpb::MessageType::MsgRequestVote,
        eraftpb::MessageType::MsgRequestVoteResponse,
        eraftpb::MessageType::MsgSnapshot,
        eraftpb::MessageType::MsgHeartbeat,
        eraftpb::MessageType::MsgHeartbeatResponse,
        eraftpb::MessageType::MsgUnreachable,
        eraftpb::MessageType::MsgSnapStatus,
        eraftpb::MessageType::MsgCheckQuorum,
        eraftpb::MessageType::MsgTransferLeader,
        eraftpb::MessageType::MsgTimeoutNow,
        eraftpb::MessageType::MsgReadIndex,
        eraftpb::MessageType::MsgReadIndexResp,
        eraftpb::MessageType::MsgRequestPreVote,
        eraftpb::MessageType::MsgRequestPreVoteResponse,
    ];
    let entries = (0..rng.gen_range(0..4))
        .map(|_| eraftpb::Entry {
            entry_type: rng.gen_range(0..3),
            term: rng.gen_range(0..2),
            index: rng.gen_range(0..20),
            data: entry_data(rng),
            ..Default::default()
        })
        .collect();
    let region_id = [1, 1, 1, rng.gen_range(0..50)][rng.gen_range(0..4)];
    let inner = eraftpb::Message {
        msg_type: types[rng.gen_range(0..types.len())] as i32,
        to: [101, 102, 103][rng.gen_range(0..3)],
        from: rng.gen_range(100..105),
        term: if region_id == 1 {
            rng.gen_range(0..atoll_raftstore::storage::RAFT_INIT_LOG_TERM)
        } else {
            0
        },
        log_term: rng.gen_range(0..3),
        index: rng.gen_range(0..30),
        commit: rng.gen_range(0..3),
        reject: rng.gen(),
        entries,
        ..Default::default()
    };
    let mut message = prost011::Message::encode_to_vec(&inner);
    if rng.gen_bool(0.1) {
        message.truncate(message.len() / 2);
    }
    let msg = RaftMessage {
        region_id,
        from_peer: rng.gen_bool(0.95).then(|| peer(rng)),
        to_peer: rng.gen_bool(0.95).then(|| peer(rng)),
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: rng.gen_range(0..3),
            version: rng.gen_range(0..3),
        }),
        message,
        // A tombstone for a live region removes its peer: legitimate, but
        // it would empty the cluster; aim those at other regions.
        is_tombstone: rng.gen_bool(0.05),
        start_key: key(rng),
        end_key: key(rng),
        hibernate: rng.gen_bool(0.1),
    };
    let mut out = vec![rng.gen()];
    if msg.is_tombstone && msg.region_id == 1 {
        return out;
    }
    out.extend(msg.encode_to_vec());
    out
}

/// A data command with random fields (never an admin command: those carry
/// ids only PD hands out), or random bytes.
fn entry_data<R: Rng + ?Sized>(rng: &mut R) -> Vec<u8> {
    if rng.gen_bool(0.3) {
        return (0..rng.gen_range(0..40)).map(|_| rng.gen()).collect();
    }
    let req = Request {
        cmd_type: rng.gen_range(0..8),
        put: rng.gen_bool(0.5).then(|| atoll_proto::atollpb::PutRequest {
            cf: cf(rng),
            key: key(rng),
            value: key(rng),
        }),
        delete: rng
            .gen_bool(0.3)
            .then(|| atoll_proto::atollpb::DeleteRequest { cf: cf(rng), key: key(rng) }),
        ..Default::default()
    };
    RaftCmdRequest { requests: vec![req], ..Default::default() }.encode_to_vec()
}

// ---------------------------------------------------------- snapshot

/// `[start_len, end_len, start.., end.., file...]`: a received snapshot
/// file whose metadata (size, checksum) match it, for a region with the
/// given bounds. Loading must fail cleanly or stage records in range.
pub fn snapshot(input: &[u8]) {
    let [sl, el, rest @ ..] = input else { return };
    let (sl, el) = (usize::from(*sl % 16), usize::from(*el % 16));
    if rest.len() < sl + el {
        return;
    }
    let (start, rest) = rest.split_at(sl);
    let (end, file) = rest.split_at(el);
    let region = metapb::Region {
        id: 1,
        start_key: start.to_vec(),
        end_key: end.to_vec(),
        ..Default::default()
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("snap");
    std::fs::write(&path, file).expect("write snapshot file");
    let meta = SnapshotData {
        region: Some(region.clone()),
        file_size: file.len() as u64,
        checksum: crc32fast::hash(file),
        key_count: 0,
    };
    let engine = MemoryEngine::new();
    let mut wb = engine.write_batch();
    if atoll_raftstore::snap::load_into(&path, &meta, &mut wb).is_ok() {
        engine.write(&mut wb, WriteOptions::default()).expect("write");
    }
}

pub fn gen_snapshot(rng: &mut impl Rng) -> Vec<u8> {
    // A real snapshot file of a few random keys, then the bounds.
    let engine = MemoryEngine::new();
    let mut wb = engine.write_batch();
    for _ in 0..rng.gen_range(0..6) {
        let cf = ["default", "write", "lock"][rng.gen_range(0..3)];
        wb.put_cf(cf, &keys::data_key(&key(rng)), &key(rng)).expect("put");
    }
    engine.write(&mut wb, WriteOptions::default()).expect("write");
    let (start, end) = (key(rng), key(rng));
    let (start, end) = (start[..start.len().min(15)].to_vec(), end[..end.len().min(15)].to_vec());
    let region = metapb::Region { id: 1, ..Default::default() };
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("snap");
    let file = match atoll_raftstore::snap::build(&engine.snapshot(), &region, &path) {
        Ok(_) => std::fs::read(&path).unwrap_or_default(),
        Err(_) => vec![],
    };
    let mut out = vec![start.len() as u8, end.len() as u8];
    out.extend(start);
    out.extend(end);
    out.extend(file);
    out
}

// ----------------------------------------------------------- records

/// `[which, record...]`: one of a region's records (region state, raft
/// state, apply state, a log entry) or the store ident replaced by the
/// rest; then what a store does at start. Errors are fine; panics are not.
pub fn records(input: &[u8]) {
    let [which, record @ ..] = input else { return };
    let engine = MemoryEngine::new();
    let region = metapb::Region {
        id: 1,
        region_epoch: Some(metapb::RegionEpoch { conf_ver: 1, version: 1 }),
        peers: vec![metapb::Peer { id: 2, store_id: 1, ..Default::default() }],
        ..Default::default()
    };
    atoll_raftstore::system::write_initial_region(&engine, &region).expect("initial region");
    let key = match which % 5 {
        0 => keys::region_state_key(1),
        1 => keys::raft_state_key(1),
        2 => keys::apply_state_key(1),
        3 => keys::raft_log_key(1, u64::from(which / 5 % 8)),
        _ => keys::STORE_IDENT_KEY.to_vec(),
    };
    let mut wb = engine.write_batch();
    wb.put_cf(CF_RAFT, &key, record).expect("put");
    engine.write(&mut wb, WriteOptions::default()).expect("write");

    let _ = atoll_raftstore::system::load_store_ident(&engine);
    let _ = atoll_raftstore::system::clear_stale_regions(&engine);
    let Ok(regions) = atoll_raftstore::system::load_regions(&engine) else { return };
    let shared = Arc::new(atoll_raftstore::store_meta::StoreShared::default());
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    for r in regions {
        // Loading the peer reads and checks its states and log.
        let _ = atoll_raftstore::peer::Peer::create(
            1,
            &Config::default(),
            engine.clone(),
            r,
            &shared,
            &logger,
        );
    }
}

pub fn gen_records(rng: &mut impl Rng) -> Vec<u8> {
    let which: u8 = rng.gen();
    let small = |rng: &mut dyn rand::RngCore| [0u64, 1, 4, 5, 6, 10, u64::MAX][rng.gen_range(0..7)];
    let record = match which % 5 {
        0 => RegionLocalState {
            state: rng.gen_range(0..4),
            region: rng.gen_bool(0.9).then(|| metapb::Region {
                id: rng.gen_range(0..3),
                start_key: key(rng),
                end_key: key(rng),
                region_epoch: rng
                    .gen_bool(0.8)
                    .then(|| metapb::RegionEpoch { conf_ver: small(rng), version: small(rng) }),
                peers: (0..rng.gen_range(0..3))
                    .map(|i| metapb::Peer {
                        id: 2 + i,
                        store_id: rng.gen_range(0..3),
                        role: rng.gen_range(0..3),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
        }
        .encode_to_vec(),
        1 => RaftLocalState {
            term: small(rng),
            vote: rng.gen_range(0..4),
            commit: small(rng),
            last_index: small(rng),
        }
        .encode_to_vec(),
        2 => RaftApplyState {
            applied_index: small(rng),
            applied_term: small(rng),
            truncated_state: rng
                .gen_bool(0.9)
                .then(|| RaftTruncatedState { index: small(rng), term: small(rng) }),
        }
        .encode_to_vec(),
        3 => prost011::Message::encode_to_vec(&eraftpb::Entry {
            term: small(rng),
            index: small(rng),
            entry_type: rng.gen_range(0..3),
            data: entry_data(rng),
            ..Default::default()
        }),
        _ => StoreIdent {
            cluster_id: small(rng),
            store_id: small(rng),
            api_version: rng.gen_range(0..4),
            data_format: rng.gen_range(0..3),
        }
        .encode_to_vec(),
    };
    let mut out = vec![which];
    out.extend(record);
    out
}
