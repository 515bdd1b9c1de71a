//! Lock heartbeats: while a transaction holds locks, its primary's TTL is
//! kept [`LOCK_TTL_MS`] ahead of the transaction's age (TxnHeartBeat), so a
//! reader rolls it back only once its owner stopped beating: the
//! transaction ended, or its process went away.

use atoll_proto::kvrpcpb::TxnHeartBeatRequest;
use tokio::task::JoinHandle;

use super::{physical_ms, TxnClient, HEARTBEAT_INTERVAL, LOCK_TTL_MS, MAX_TXN_TTL_MS};
use crate::raw::{outcome, Call, Result};

/// A running heartbeat; dropping it stops the beats.
pub(super) struct Heartbeat {
    task: JoinHandle<()>,
}

impl Heartbeat {
    /// Beats every [`HEARTBEAT_INTERVAL`] for the transaction `start_ts`
    /// whose primary lock is on the wire key `primary`. A beat that fails
    /// (no lock yet, a region moving, a store down) is simply the next
    /// beat's job.
    pub(super) fn start(client: TxnClient, primary: Vec<u8>, start_ts: u64) -> Heartbeat {
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT_INTERVAL).await;
                match client.beat(&primary, start_ts).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => tracing::debug!(start_ts, "lock heartbeat: {e}"),
                }
            }
        });
        Heartbeat { task }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TxnClient {
    /// One heartbeat: asks for a TTL of the transaction's age plus
    /// [`LOCK_TTL_MS`]. False once the transaction is older than
    /// [`MAX_TXN_TTL_MS`] (no more beats).
    async fn beat(&self, primary: &[u8], start_ts: u64) -> Result<bool> {
        let age = physical_ms(self.current_ts().await?).saturating_sub(physical_ms(start_ts));
        if age >= MAX_TXN_TTL_MS {
            return Ok(false);
        }
        let advise_lock_ttl = age + LOCK_TTL_MS;
        self.inner
            .on_region(primary, Call::Write("txn_heart_beat"), |mut c, _, ctx| {
                let req = TxnHeartBeatRequest {
                    context: Some(ctx),
                    primary_lock: primary.to_vec(),
                    start_version: start_ts,
                    advise_lock_ttl,
                };
                async move {
                    let r = c.kv_txn_heart_beat(req).await?.into_inner();
                    outcome(r.region_error, String::new(), ())
                }
            })
            .await?;
        Ok(true)
    }
}
