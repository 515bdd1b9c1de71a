//! The client-facing `tikvpb.Tikv` service (raw KV). Each handler converts
//! the request, calls [`RawStorage`], and maps errors: region errors go in
//! `region_error` (the client refreshes routing and retries), anything else
//! in `error`.

use std::time::Instant;

use atoll_engine_traits::KvEngine;
use atoll_proto::errorpb;
use atoll_proto::kvrpcpb::*;
use atoll_proto::tikvpb::tikv_server::Tikv;
use atoll_raftstore::Error;
use tonic::{Request, Response, Status};

use crate::metrics::{GRPC_DURATION, GRPC_ERRORS, GRPC_REQUESTS};
use crate::storage::{Pair, RawStorage, ScanOpts};

pub struct KvService<E: KvEngine> {
    pub storage: RawStorage<E>,
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
}
