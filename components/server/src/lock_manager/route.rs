//! Where the deadlock detector is: on the store PD names leader of the
//! first region (the one holding the empty key), as in TiKV. The answer is
//! cached for [`LEADER_CACHE`]; while stores disagree (a leader change),
//! two detectors may each see part of the waits, which can only miss a
//! deadlock (its waits then end by their timeouts), never invent one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_pd_client::PdClient;
use atoll_proto::atollpb::deadlock_detector_client::DeadlockDetectorClient;
use atoll_proto::atollpb::{DetectRequest, DetectType};
use atoll_txn::WaitFor;
use parking_lot::Mutex;
use tonic::transport::Channel;

use super::{wait_for, wait_for_entry};

/// How long the detector's store is trusted without asking PD again.
const LEADER_CACHE: Duration = Duration::from_secs(1);
/// A detect or clean-up call to another store.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Route {
    pd: Arc<PdClient>,
    store_id: u64,
    /// The detector's store, and when PD said so.
    leader: Mutex<Option<(u64, Instant)>>,
    clients: Mutex<HashMap<u64, DeadlockDetectorClient<Channel>>>,
}

impl Route {
    pub fn new(pd: Arc<PdClient>, store_id: u64) -> Route {
        Route { pd, store_id, leader: Mutex::new(None), clients: Mutex::new(HashMap::new()) }
    }

    pub async fn detector_is_here(&self) -> Result<bool, String> {
        Ok(self.leader().await? == self.store_id)
    }

    pub async fn detect(&self, w: &WaitFor) -> Result<Option<Vec<WaitFor>>, String> {
        let r = self.call(DetectType::Detect, w).await?;
        Ok(r.deadlock.then(|| r.wait_chain.iter().map(wait_for).collect()))
    }

    pub async fn clean_up_wait_for(&self, w: &WaitFor) -> Result<(), String> {
        self.call(DetectType::CleanUpWaitFor, w).await.map(drop)
    }

    async fn call(
        &self,
        tp: DetectType,
        w: &WaitFor,
    ) -> Result<atoll_proto::atollpb::DetectResponse, String> {
        let store = self.leader().await?;
        let mut client = self.client(store).await?;
        let req = DetectRequest { tp: tp as i32, entry: Some(wait_for_entry(w)) };
        match tokio::time::timeout(CALL_TIMEOUT, client.detect(req)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(e)) => {
                self.forget(store);
                Err(format!("detector on store {store}: {}", e.message()))
            }
            Err(_) => {
                self.forget(store);
                Err(format!("detector on store {store}: no answer within {CALL_TIMEOUT:?}"))
            }
        }
    }

    /// The store leading the first region, by PD.
    async fn leader(&self) -> Result<u64, String> {
        if let Some((store, at)) = *self.leader.lock() {
            if at.elapsed() < LEADER_CACHE {
                return Ok(store);
            }
        }
        let info = self.pd.get_region(b"").await.map_err(|e| format!("PD: {e}"))?;
        let store = info
            .and_then(|i| i.leader)
            .map(|p| p.store_id)
            .filter(|s| *s != 0)
            .ok_or_else(|| "PD knows no leader of the first region".to_string())?;
        *self.leader.lock() = Some((store, Instant::now()));
        Ok(store)
    }

    async fn client(&self, store: u64) -> Result<DeadlockDetectorClient<Channel>, String> {
        if let Some(c) = self.clients.lock().get(&store) {
            return Ok(c.clone());
        }
        let s = self.pd.get_store(store).await.map_err(|e| format!("PD: {e}"))?;
        if s.address.is_empty() {
            return Err(format!("store {store} has no address"));
        }
        // Lazy: the connection is made (and remade) by the first calls.
        let ch = atoll_util::tls::endpoint(&s.address, self.pd.tls())?
            .connect_timeout(CALL_TIMEOUT)
            .connect_lazy();
        let c = DeadlockDetectorClient::new(ch);
        self.clients.lock().insert(store, c.clone());
        Ok(c)
    }

    /// A failed call: ask PD again next time, and reconnect.
    fn forget(&self, store: u64) {
        *self.leader.lock() = None;
        self.clients.lock().remove(&store);
    }
}
