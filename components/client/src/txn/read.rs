//! Snapshot reads: get, batch get and scan at a timestamp, settling the
//! locks in the way.

use atoll_proto::kvrpcpb::{BatchGetRequest, GetRequest, KeyError, KvPair, ScanRequest};

use super::{classify, KeyOutcome, TxnClient};
use crate::raw::{outcome, Attempt, Call, Error, Result};

impl TxnClient {
    pub(super) async fn get_wire(&self, key: &[u8], ts: u64) -> Result<Option<Vec<u8>>> {
        for attempt in 0..self.inner.cfg.max_attempts {
            let (_, r) = self
                .inner
                .on_region(key, Call::Read, |mut c, _, ctx| async move {
                    let req = GetRequest { context: Some(ctx), key: key.to_vec(), version: ts };
                    let r = c.kv_get(req).await?.into_inner();
                    outcome(r.region_error, String::new(), (r.error, r.not_found, r.value))
                })
                .await?;
            match r {
                (None, true, _) => return Ok(None),
                (None, false, v) => return Ok(Some(v)),
                (Some(e), ..) => self.on_read_error(e, ts, attempt).await?,
            }
        }
        Err(self.exhausted("locks kept blocking the read"))
    }

    /// A read met a key error: resolve the lock in the way (or wait for
    /// it), anything else is final.
    pub(super) async fn on_read_error(&self, e: KeyError, ts: u64, attempt: usize) -> Result<()> {
        match classify(e) {
            KeyOutcome::Locked(lock) => {
                if !self.resolve_lock(&lock, ts).await? {
                    self.inner.backoff(attempt).await;
                }
                Ok(())
            }
            KeyOutcome::Undetermined(m) | KeyOutcome::Refused(m) => Err(Error::Server(m)),
        }
    }

    pub(super) fn exhausted(&self, last: &str) -> Error {
        Error::Exhausted { attempts: self.inner.cfg.max_attempts, last: last.into() }
    }

    /// Wire keys' values at `ts` (absent keys left out).
    pub(super) async fn batch_get_wire(&self, keys: Vec<Vec<u8>>, ts: u64) -> Result<Vec<KvPair>> {
        let mut out = vec![];
        let mut pending: Vec<(Vec<u8>, ())> = keys.into_iter().map(|k| (k, ())).collect();
        for attempt in 0..self.inner.cfg.max_attempts {
            if pending.is_empty() {
                return Ok(out);
            }
            let mut retry = vec![];
            for (first, group) in self.inner.group(std::mem::take(&mut pending)).await? {
                let keys: Vec<Vec<u8>> = group.iter().map(|(k, _)| k.clone()).collect();
                let (_, got) = self
                    .inner
                    .on_region(&first, Call::Read, |mut c, r, ctx| {
                        let keys = keys.clone();
                        async move {
                            if !keys.iter().all(|k| self.inner.holds(&r, k)) {
                                return Ok(Attempt::Done(None));
                            }
                            let req = BatchGetRequest { context: Some(ctx), keys, version: ts };
                            let r = c.kv_batch_get(req).await?.into_inner();
                            outcome(r.region_error, String::new(), Some((r.error, r.pairs)))
                        }
                    })
                    .await?;
                let Some((error, pairs)) = got else {
                    retry.extend(group);
                    continue;
                };
                if let Some(e) = error {
                    self.on_read_error(e, ts, attempt).await?;
                    retry.extend(group);
                    continue;
                }
                for p in pairs {
                    match p.error {
                        Some(e) => {
                            self.on_read_error(e, ts, attempt).await?;
                            retry.push((p.key, ()));
                        }
                        None => out.push(p),
                    }
                }
            }
            pending = retry;
        }
        Err(self.exhausted("locks or region changes kept the batch get from finishing"))
    }

    /// Wire pairs in `[start, end)` at `ts`, region by region.
    pub(super) async fn scan_wire(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: u32,
        ts: u64,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = vec![];
        let mut cur = Some(start);
        let mut attempt = 0;
        while let Some(from) = cur.take().filter(|_| (out.len() as u32) < limit) {
            let want = limit - out.len() as u32;
            let (r, (error, pairs)) = self
                .inner
                .on_region(&from, Call::Read, |mut c, _, ctx| {
                    let req = ScanRequest {
                        context: Some(ctx),
                        start_key: from.clone(),
                        end_key: end.clone(),
                        limit: want,
                        version: ts,
                        ..Default::default()
                    };
                    async move {
                        let r = c.kv_scan(req).await?.into_inner();
                        outcome(r.region_error, String::new(), (r.error, r.pairs))
                    }
                })
                .await?;
            let mut locked = error.into_iter().collect::<Vec<_>>();
            locked.extend(pairs.iter().filter_map(|p| p.error.clone()));
            if !locked.is_empty() {
                // Resolve what is in the way, then read this region again.
                attempt += 1;
                if attempt >= self.inner.cfg.max_attempts {
                    return Err(self.exhausted("locks kept blocking the scan"));
                }
                for e in locked {
                    self.on_read_error(e, ts, attempt).await?;
                }
                cur = Some(from);
                continue;
            }
            out.extend(pairs.into_iter().map(|p| (p.key, p.value)));
            cur = self.inner.next_region_start(&r, &end);
        }
        Ok(out)
    }
}
