//! The client-facing `tikvpb.Tikv` service. Each handler converts the
//! request, calls [`RawStorage`] (raw KV) or [`TxnStorage`] (transactions),
//! and maps errors: region errors go in `region_error` (the client
//! refreshes routing and retries), anything else in `error`.

use std::collections::HashMap;
use std::time::Instant;

use atoll_engine_traits::KvEngine;
use atoll_proto::errorpb;
use atoll_proto::kvrpcpb::*;
use atoll_proto::tikvpb::tikv_server::Tikv;
use atoll_raftstore::Error;
use atoll_txn::actions::{
    CheckTxnStatusArgs, PessimisticAction, PessimisticLockProps, PrewriteProps,
};
use tonic::{Request, Response, Status};

use crate::metrics::{GRPC_DURATION, GRPC_ERRORS, GRPC_REQUESTS};
use crate::storage::{Pair, RawStorage, ScanOpts};
use crate::txn::{convert, PessimisticLockArgs, PrewriteArgs, RawMutation, TxnStorage};

pub struct KvService<E: KvEngine> {
    pub storage: RawStorage<E>,
    pub txn: std::sync::Arc<TxnStorage<E>>,
}

/// Splits an error into (region error, message).
fn split_err(kind: &str, e: Error) -> (Option<errorpb::Error>, String) {
    match e.to_region_error() {
        Some(re) => {
            GRPC_ERRORS.with_label_values(&[kind, "region"]).inc();
            (Some(re), String::new())
        }
        None => {
            GRPC_ERRORS.with_label_values(&[kind, "other"]).inc();
            (None, e.to_string())
        }
    }
}

fn kv_pairs(pairs: Vec<Pair>) -> Vec<KvPair> {
    pairs.into_iter().map(|(key, value)| KvPair { error: None, key, value }).collect()
}

struct Timer(&'static str, Instant);

impl Timer {
    fn start(kind: &'static str) -> Self {
        GRPC_REQUESTS.with_label_values(&[kind]).inc();
        Timer(kind, Instant::now())
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        GRPC_DURATION.with_label_values(&[self.0]).observe(self.1.elapsed().as_secs_f64());
    }
}

/// For responses without an `error` field: non-region errors become a gRPC status.
fn region_only(kind: &str, e: Error) -> Result<Option<errorpb::Error>, Status> {
    match split_err(kind, e) {
        (Some(re), _) => Ok(Some(re)),
        (None, msg) => Err(Status::invalid_argument(msg)),
    }
}

#[tonic::async_trait]
impl<E: KvEngine> Tikv for KvService<E> {
    async fn raw_get(
        &self,
        req: Request<RawGetRequest>,
    ) -> Result<Response<RawGetResponse>, Status> {
        let _t = Timer::start("raw_get");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let mut resp = RawGetResponse::default();
        match self.storage.get(&ctx, &r.cf, &r.key).await {
            Ok(Some(v)) => resp.value = v,
            Ok(None) => resp.not_found = true,
            Err(e) => (resp.region_error, resp.error) = split_err("raw_get", e),
        }
        Ok(Response::new(resp))
    }

    async fn raw_batch_get(
        &self,
        req: Request<RawBatchGetRequest>,
    ) -> Result<Response<RawBatchGetResponse>, Status> {
        let _t = Timer::start("raw_batch_get");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let mut resp = RawBatchGetResponse::default();
        match self.storage.batch_get(&ctx, &r.cf, &r.keys).await {
            Ok(pairs) => resp.pairs = kv_pairs(pairs),
            Err(e) => resp.region_error = region_only("raw_batch_get", e)?,
        }
        Ok(Response::new(resp))
    }

    async fn raw_put(
        &self,
        req: Request<RawPutRequest>,
    ) -> Result<Response<RawPutResponse>, Status> {
        let _t = Timer::start("raw_put");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let mut resp = RawPutResponse::default();
        if let Err(e) = self.storage.put(&ctx, &r.cf, r.key, r.value, r.ttl).await {
            (resp.region_error, resp.error) = split_err("raw_put", e);
        }
        Ok(Response::new(resp))
    }

    async fn raw_batch_put(
        &self,
        req: Request<RawBatchPutRequest>,
    ) -> Result<Response<RawBatchPutResponse>, Status> {
        let _t = Timer::start("raw_batch_put");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        #[allow(deprecated)]
        let ttls = if r.ttls.is_empty() && r.ttl > 0 { vec![r.ttl] } else { r.ttls };
        let pairs = r.pairs.into_iter().map(|p| (p.key, p.value)).collect();
        let mut resp = RawBatchPutResponse::default();
        if let Err(e) = self.storage.batch_put(&ctx, &r.cf, pairs, &ttls).await {
            (resp.region_error, resp.error) = split_err("raw_batch_put", e);
        }
        Ok(Response::new(resp))
    }

    async fn raw_delete(
        &self,
        req: Request<RawDeleteRequest>,
    ) -> Result<Response<RawDeleteResponse>, Status> {
        let _t = Timer::start("raw_delete");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let mut resp = RawDeleteResponse::default();
        if let Err(e) = self.storage.delete(&ctx, &r.cf, r.key).await {
            (resp.region_error, resp.error) = split_err("raw_delete", e);
        }
        Ok(Response::new(resp))
    }

    async fn raw_batch_delete(
        &self,
        req: Request<RawBatchDeleteRequest>,
    ) -> Result<Response<RawBatchDeleteResponse>, Status> {
        let _t = Timer::start("raw_batch_delete");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let mut resp = RawBatchDeleteResponse::default();
        if let Err(e) = self.storage.batch_delete(&ctx, &r.cf, r.keys).await {
            (resp.region_error, resp.error) = split_err("raw_batch_delete", e);
        }
        Ok(Response::new(resp))
    }

    async fn raw_scan(
        &self,
        req: Request<RawScanRequest>,
    ) -> Result<Response<RawScanResponse>, Status> {
        let _t = Timer::start("raw_scan");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let mut resp = RawScanResponse::default();
        let opts =
            ScanOpts { limit: r.limit, key_only: r.key_only, reverse: r.reverse, batch: false };
        match self.storage.scan(&ctx, &r.cf, &[(r.start_key, r.end_key)], opts).await {
            Ok(pairs) => resp.kvs = kv_pairs(pairs),
            Err(e) => resp.region_error = region_only("raw_scan", e)?,
        }
        Ok(Response::new(resp))
    }

    async fn raw_delete_range(
        &self,
        req: Request<RawDeleteRangeRequest>,
    ) -> Result<Response<RawDeleteRangeResponse>, Status> {
        let _t = Timer::start("raw_delete_range");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let mut resp = RawDeleteRangeResponse::default();
        if let Err(e) = self.storage.delete_range(&ctx, &r.cf, r.start_key, r.end_key).await {
            (resp.region_error, resp.error) = split_err("raw_delete_range", e);
        }
        Ok(Response::new(resp))
    }

    async fn raw_batch_scan(
        &self,
        req: Request<RawBatchScanRequest>,
    ) -> Result<Response<RawBatchScanResponse>, Status> {
        let _t = Timer::start("raw_batch_scan");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let ranges: Vec<(Vec<u8>, Vec<u8>)> =
            r.ranges.into_iter().map(|k| (k.start_key, k.end_key)).collect();
        let mut resp = RawBatchScanResponse::default();
        let opts =
            ScanOpts { limit: r.each_limit, key_only: r.key_only, reverse: r.reverse, batch: true };
        match self.storage.scan(&ctx, &r.cf, &ranges, opts).await {
            Ok(pairs) => resp.kvs = kv_pairs(pairs),
            Err(e) => resp.region_error = region_only("raw_batch_scan", e)?,
        }
        Ok(Response::new(resp))
    }

    async fn raw_get_key_ttl(
        &self,
        req: Request<RawGetKeyTtlRequest>,
    ) -> Result<Response<RawGetKeyTtlResponse>, Status> {
        let _t = Timer::start("raw_get_key_ttl");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let mut resp = RawGetKeyTtlResponse::default();
        match self.storage.get_ttl(&ctx, &r.cf, &r.key).await {
            Ok(Some(ttl)) => resp.ttl = ttl,
            Ok(None) => resp.not_found = true,
            Err(e) => (resp.region_error, resp.error) = split_err("raw_get_key_ttl", e),
        }
        Ok(Response::new(resp))
    }

    async fn raw_compare_and_swap(
        &self,
        req: Request<RawCasRequest>,
    ) -> Result<Response<RawCasResponse>, Status> {
        let _t = Timer::start("raw_compare_and_swap");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let previous = (!r.previous_not_exist).then_some(r.previous_value);
        let mut resp = RawCasResponse::default();
        match self.storage.compare_and_swap(&ctx, &r.cf, r.key, previous, r.value, r.ttl).await {
            Ok((succeed, prev)) => {
                resp.succeed = succeed;
                resp.previous_not_exist = prev.is_none();
                resp.previous_value = prev.unwrap_or_default();
            }
            Err(e) => (resp.region_error, resp.error) = split_err("raw_compare_and_swap", e),
        }
        Ok(Response::new(resp))
    }

    async fn raw_checksum(
        &self,
        req: Request<RawChecksumRequest>,
    ) -> Result<Response<RawChecksumResponse>, Status> {
        let _t = Timer::start("raw_checksum");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let mut resp = RawChecksumResponse::default();
        if r.algorithm != ChecksumAlgorithm::Crc64Xor as i32 {
            resp.error = format!("unknown checksum algorithm {}", r.algorithm);
            return Ok(Response::new(resp));
        }
        let ranges: Vec<(Vec<u8>, Vec<u8>)> =
            r.ranges.into_iter().map(|k| (k.start_key, k.end_key)).collect();
        match self.storage.checksum(&ctx, &ranges).await {
            Ok(sum) => {
                resp.checksum = sum.crc64_xor;
                resp.total_kvs = sum.total_kvs;
                resp.total_bytes = sum.total_bytes;
            }
            Err(e) => (resp.region_error, resp.error) = split_err("raw_checksum", e),
        }
        Ok(Response::new(resp))
    }

    // ---- transactional KV ----

    async fn kv_get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let _t = Timer::start("kv_get");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let mut resp = GetResponse::default();
        match self.txn.get(&ctx, &r.key, r.version).await {
            Ok(Some(v)) => resp.value = v,
            Ok(None) => resp.not_found = true,
            Err(e) => (resp.region_error, resp.error) = convert::split("kv_get", e),
        }
        Ok(Response::new(resp))
    }

    async fn kv_batch_get(
        &self,
        req: Request<BatchGetRequest>,
    ) -> Result<Response<BatchGetResponse>, Status> {
        let _t = Timer::start("kv_batch_get");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let mut resp = BatchGetResponse::default();
        match self.txn.batch_get(&ctx, &r.keys, r.version).await {
            Ok(results) => resp.pairs = convert::pairs(results),
            Err(e) => (resp.region_error, resp.error) = convert::split("kv_batch_get", e),
        }
        Ok(Response::new(resp))
    }

    async fn kv_scan(&self, req: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let _t = Timer::start("kv_scan");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let mut resp = ScanResponse::default();
        let scan = self.txn.scan(
            &ctx,
            &r.start_key,
            &r.end_key,
            r.limit,
            r.key_only,
            r.reverse,
            r.version,
        );
        match scan.await {
            Ok(results) => resp.pairs = convert::pairs(results),
            Err(e) => (resp.region_error, resp.error) = convert::split("kv_scan", e),
        }
        Ok(Response::new(resp))
    }

    async fn kv_prewrite(
        &self,
        req: Request<PrewriteRequest>,
    ) -> Result<Response<PrewriteResponse>, Status> {
        let _t = Timer::start("kv_prewrite");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let mut resp = PrewriteResponse::default();
        let mut mutations = Vec::with_capacity(r.mutations.len());
        for (i, m) in r.mutations.into_iter().enumerate() {
            let op = atoll_txn::Op::from_i32(m.op)
                .ok_or_else(|| Status::invalid_argument(format!("unknown mutation op {}", m.op)))?;
            let action = match r.pessimistic_actions.get(i).copied().unwrap_or(0) {
                0 => PessimisticAction::SkipPessimisticCheck,
                1 => PessimisticAction::DoPessimisticCheck,
                2 => PessimisticAction::DoConstraintCheck,
                a => {
                    return Err(Status::invalid_argument(format!("unknown pessimistic action {a}")))
                }
            };
            mutations.push(RawMutation { op, key: m.key, value: m.value, action });
        }
        let args = PrewriteArgs {
            props: PrewriteProps {
                start_ts: r.start_version,
                primary: r.primary_lock,
                lock_ttl: r.lock_ttl,
                txn_size: r.txn_size,
                for_update_ts: r.for_update_ts,
                min_commit_ts: r.min_commit_ts,
                use_async_commit: r.use_async_commit,
            },
            mutations,
            secondaries: r.secondaries,
            try_one_pc: r.try_one_pc,
        };
        match self.txn.prewrite(&ctx, args).await {
            Ok(out) => {
                resp.errors = convert::key_errors("kv_prewrite", &out.errors);
                resp.min_commit_ts = out.min_commit_ts;
                resp.one_pc_commit_ts = out.one_pc_commit_ts;
            }
            Err(e) => {
                let (re, ke) = convert::split("kv_prewrite", e);
                resp.region_error = re;
                resp.errors = ke.into_iter().collect();
            }
        }
        Ok(Response::new(resp))
    }

    async fn kv_pessimistic_lock(
        &self,
        req: Request<PessimisticLockRequest>,
    ) -> Result<Response<PessimisticLockResponse>, Status> {
        let _t = Timer::start("kv_pessimistic_lock");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let mut resp = PessimisticLockResponse::default();
        let want_values = r.return_values || r.check_existence;
        let args = PessimisticLockArgs {
            props: PessimisticLockProps {
                start_ts: r.start_version,
                primary: r.primary_lock,
                lock_ttl: r.lock_ttl,
                for_update_ts: r.for_update_ts,
                min_commit_ts: r.min_commit_ts,
                need_value: want_values,
            },
            wait_timeout: r.wait_timeout,
            keys: r
                .mutations
                .into_iter()
                .map(|m| (m.key, m.assertion == Assertion::NotExist as i32))
                .collect(),
        };
        match self.txn.pessimistic_lock(&ctx, args).await {
            Ok(Ok(values)) if want_values => {
                resp.not_founds = values.iter().map(Option::is_none).collect();
                resp.values = values.into_iter().map(Option::unwrap_or_default).collect();
            }
            Ok(Ok(_)) => {}
            Ok(Err(errors)) => resp.errors = convert::key_errors("kv_pessimistic_lock", &errors),
            Err(e) => {
                let (re, ke) = convert::split("kv_pessimistic_lock", e);
                resp.region_error = re;
                resp.errors = ke.into_iter().collect();
            }
        }
        Ok(Response::new(resp))
    }

    async fn kv_pessimistic_rollback(
        &self,
        req: Request<PessimisticRollbackRequest>,
    ) -> Result<Response<PessimisticRollbackResponse>, Status> {
        let _t = Timer::start("kv_pessimistic_rollback");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let mut resp = PessimisticRollbackResponse::default();
        let res = self.txn.pessimistic_rollback(&ctx, &r.keys, r.start_version, r.for_update_ts);
        if let Err(e) = res.await {
            let (re, ke) = convert::split("kv_pessimistic_rollback", e);
            resp.region_error = re;
            resp.errors = ke.into_iter().collect();
        }
        Ok(Response::new(resp))
    }

    async fn kv_txn_heart_beat(
        &self,
        req: Request<TxnHeartBeatRequest>,
    ) -> Result<Response<TxnHeartBeatResponse>, Status> {
        let _t = Timer::start("kv_txn_heart_beat");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let mut resp = TxnHeartBeatResponse::default();
        let res =
            self.txn.txn_heart_beat(&ctx, &r.primary_lock, r.start_version, r.advise_lock_ttl);
        match res.await {
            Ok(ttl) => resp.lock_ttl = ttl,
            Err(e) => (resp.region_error, resp.error) = convert::split("kv_txn_heart_beat", e),
        }
        Ok(Response::new(resp))
    }

    async fn kv_check_txn_status(
        &self,
        req: Request<CheckTxnStatusRequest>,
    ) -> Result<Response<CheckTxnStatusResponse>, Status> {
        let _t = Timer::start("kv_check_txn_status");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let mut resp = CheckTxnStatusResponse::default();
        let args = CheckTxnStatusArgs {
            lock_ts: r.lock_ts,
            caller_start_ts: r.caller_start_ts,
            current_ts: r.current_ts,
            rollback_if_not_exist: r.rollback_if_not_exist,
            force_sync_commit: r.force_sync_commit,
            resolving_pessimistic_lock: r.resolving_pessimistic_lock,
            verify_is_primary: r.verify_is_primary,
        };
        match self.txn.check_txn_status(&ctx, &r.primary_key, args).await {
            Ok(status) => {
                let (ttl, commit_version, action, info) =
                    convert::txn_status(&r.primary_key, status);
                resp.lock_ttl = ttl;
                resp.commit_version = commit_version;
                resp.action = action as i32;
                resp.lock_info = info;
            }
            Err(e) => (resp.region_error, resp.error) = convert::split("kv_check_txn_status", e),
        }
        Ok(Response::new(resp))
    }

    async fn kv_check_secondary_locks(
        &self,
        req: Request<CheckSecondaryLocksRequest>,
    ) -> Result<Response<CheckSecondaryLocksResponse>, Status> {
        let _t = Timer::start("kv_check_secondary_locks");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let mut resp = CheckSecondaryLocksResponse::default();
        match self.txn.check_secondary_locks(&ctx, &r.keys, r.start_version).await {
            Ok(s) => (resp.locks, resp.commit_ts) = convert::secondary_locks(s),
            Err(e) => {
                (resp.region_error, resp.error) = convert::split("kv_check_secondary_locks", e)
            }
        }
        Ok(Response::new(resp))
    }

    async fn kv_commit(
        &self,
        req: Request<CommitRequest>,
    ) -> Result<Response<CommitResponse>, Status> {
        let _t = Timer::start("kv_commit");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let mut resp = CommitResponse::default();
        match self.txn.commit(&ctx, &r.keys, r.start_version, r.commit_version).await {
            Ok(()) => resp.commit_version = r.commit_version,
            Err(e) => (resp.region_error, resp.error) = convert::split("kv_commit", e),
        }
        Ok(Response::new(resp))
    }

    async fn kv_cleanup(
        &self,
        req: Request<CleanupRequest>,
    ) -> Result<Response<CleanupResponse>, Status> {
        let _t = Timer::start("kv_cleanup");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let mut resp = CleanupResponse::default();
        match self.txn.cleanup(&ctx, &r.key, r.start_version, r.current_ts).await {
            Ok(()) => {}
            Err(crate::txn::Error::Mvcc(atoll_txn::Error::Committed { commit_ts, .. })) => {
                resp.commit_version = commit_ts
            }
            Err(e) => (resp.region_error, resp.error) = convert::split("kv_cleanup", e),
        }
        Ok(Response::new(resp))
    }

    async fn kv_batch_rollback(
        &self,
        req: Request<BatchRollbackRequest>,
    ) -> Result<Response<BatchRollbackResponse>, Status> {
        let _t = Timer::start("kv_batch_rollback");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let mut resp = BatchRollbackResponse::default();
        if let Err(e) = self.txn.batch_rollback(&ctx, &r.keys, r.start_version).await {
            (resp.region_error, resp.error) = convert::split("kv_batch_rollback", e);
        }
        Ok(Response::new(resp))
    }

    async fn kv_scan_lock(
        &self,
        req: Request<ScanLockRequest>,
    ) -> Result<Response<ScanLockResponse>, Status> {
        let _t = Timer::start("kv_scan_lock");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let mut resp = ScanLockResponse::default();
        let scan = self.txn.scan_lock(&ctx, r.max_version, &r.start_key, &r.end_key, r.limit);
        match scan.await {
            Ok(locks) => resp.locks = locks.iter().map(convert::lock_info).collect(),
            Err(e) => (resp.region_error, resp.error) = convert::split("kv_scan_lock", e),
        }
        Ok(Response::new(resp))
    }

    async fn kv_resolve_lock(
        &self,
        req: Request<ResolveLockRequest>,
    ) -> Result<Response<ResolveLockResponse>, Status> {
        let _t = Timer::start("kv_resolve_lock");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let mut resp = ResolveLockResponse::default();
        let txns: HashMap<u64, u64> = if r.txn_infos.is_empty() {
            HashMap::from([(r.start_version, r.commit_version)])
        } else {
            r.txn_infos.iter().map(|t| (t.txn, t.status)).collect()
        };
        if let Err(e) = self.txn.resolve_lock(&ctx, txns, &r.keys).await {
            (resp.region_error, resp.error) = convert::split("kv_resolve_lock", e);
        }
        Ok(Response::new(resp))
    }

    async fn kv_delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let _t = Timer::start("kv_delete_range");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let mut resp = DeleteRangeResponse::default();
        if !r.notify_only {
            if let Err(e) = self.txn.delete_range(&ctx, &r.start_key, &r.end_key).await {
                (resp.region_error, resp.error) = convert::split_string("kv_delete_range", e);
            }
        }
        Ok(Response::new(resp))
    }

    async fn unsafe_destroy_range(
        &self,
        req: Request<UnsafeDestroyRangeRequest>,
    ) -> Result<Response<UnsafeDestroyRangeResponse>, Status> {
        let _t = Timer::start("unsafe_destroy_range");
        let r = req.into_inner();
        let ctx = r.context.unwrap_or_default();
        let mut resp = UnsafeDestroyRangeResponse::default();
        if let Err(e) = self.txn.unsafe_destroy_range(&ctx, &r.start_key, &r.end_key) {
            // No region error here: the client fails on any.
            resp.error = e.to_string();
        }
        Ok(Response::new(resp))
    }
}
