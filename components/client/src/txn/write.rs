//! Write commands sent region by region.

use atoll_proto::kvrpcpb::{CommitRequest, Context, KeyError};
use atoll_proto::tikvpb::tikv_client::TikvClient;
use tonic::transport::Channel;

use super::{TxnClient, KEYS_PER_REQUEST};
use crate::raw::{outcome, Attempt, Call, Result};

impl TxnClient {
    /// Runs one write command per region over `items` (wire key first),
    /// at most [`KEYS_PER_REQUEST`] keys a request, regrouping what a
    /// region change left outside. `send` returns the command's key
    /// errors (empty = done).
    pub(super) async fn per_region<K, F, Fut>(
        &self,
        what: &'static str,
        items: Vec<(Vec<u8>, K)>,
        send: F,
    ) -> Result<Vec<KeyError>>
    where
        K: Clone + Send + Sync,
        F: Fn(TikvClient<Channel>, Context, Vec<(Vec<u8>, K)>) -> Fut + Sync,
        Fut: std::future::Future<Output = Result<Attempt<Vec<KeyError>>>>,
    {
        let mut errors = vec![];
        let mut pending = items;
        for _ in 0..self.inner.cfg.max_attempts {
            if pending.is_empty() {
                return Ok(errors);
            }
            let mut retry = vec![];
            for (_, group) in self.inner.group(std::mem::take(&mut pending)).await? {
                for chunk in group.chunks(KEYS_PER_REQUEST) {
                    let first = chunk[0].0.clone();
                    let (_, got) = self
                        .inner
                        .on_region(&first, Call::Write(what), |c, r, ctx| {
                            let chunk = chunk.to_vec();
                            let inside = chunk.iter().all(|(k, _)| self.inner.holds(&r, k));
                            let sent = inside.then(|| send(c, ctx, chunk));
                            async move {
                                match sent {
                                    Some(f) => Ok(match f.await? {
                                        Attempt::Done(e) => Attempt::Done(Some(e)),
                                        Attempt::Region(e) => Attempt::Region(e),
                                    }),
                                    None => Ok(Attempt::Done(None)),
                                }
                            }
                        })
                        .await?;
                    match got {
                        Some(e) => errors.extend(e),
                        None => retry.extend(chunk.iter().cloned()),
                    }
                }
            }
            pending = retry;
        }
        Err(self.exhausted("regions kept changing"))
    }
}

/// KvCommit of `keys` (all in the region `ctx` names) of transaction
/// `start_ts` at `commit_ts`; its key error, if any.
pub(super) async fn send_commit(
    mut t: TikvClient<Channel>,
    ctx: Context,
    start_ts: u64,
    keys: Vec<Vec<u8>>,
    commit_ts: u64,
) -> Result<Attempt<Vec<KeyError>>> {
    let req = CommitRequest {
        context: Some(ctx),
        start_version: start_ts,
        keys,
        commit_version: commit_ts,
    };
    let r =
        t.kv_commit(req).await.map_err(|e| crate::raw::write_rpc_error("commit", e))?.into_inner();
    outcome(r.region_error, String::new(), r.error.into_iter().collect())
}
