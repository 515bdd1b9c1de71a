//! Talks to PD on behalf of raftstore: region heartbeats (and the operators
//! PD sends back), split id allocation, store heartbeats.

use std::sync::Arc;
use std::time::Duration;

use atoll_engine_traits::KvEngine;
use atoll_pd_client::PdClient;
use atoll_proto::pdpb;
use atoll_raftstore::{Error, PdSink, PdTask, PeerMsg, SplitIds, SplitRequest, StoreHandle};
use tokio::sync::mpsc;

/// PD tasks queued before new ones are dropped (heartbeats are periodic,
/// so dropping one under overload is harmless; split requests fail "busy").
pub const PD_TASK_QUEUE_MAX: usize = 4096;
const HEARTBEAT_STREAM_QUEUE_MAX: usize = 1024;

#[derive(Clone)]
pub struct PdSender {
    tx: mpsc::Sender<PdTask>,
}

impl PdSink for PdSender {
    fn schedule(&self, task: PdTask) {
        if let Err(mpsc::error::TrySendError::Full(t) | mpsc::error::TrySendError::Closed(t)) =
            self.tx.try_send(task)
        {
            if let PdTask::AskBatchSplit { cb: Some(cb), .. } = t {
                cb(Err(Error::Busy("pd worker queue is full".into())));
            }
        }
    }
}

pub fn channel() -> (PdSender, mpsc::Receiver<PdTask>) {
    let (tx, rx) = mpsc::channel(PD_TASK_QUEUE_MAX);
    (PdSender { tx }, rx)
}

/// Runs until the task channel closes.
pub async fn run<E: KvEngine>(
    pd: Arc<PdClient>,
    store: StoreHandle<E>,
    mut rx: mpsc::Receiver<PdTask>,
) {
    let mut hb: Option<(
        mpsc::Sender<pdpb::RegionHeartbeatRequest>,
        tonic::Streaming<pdpb::RegionHeartbeatResponse>,
    )> = None;
    let mut opened_before = false;
    loop {
        if hb.is_none() {
            match pd.region_heartbeat(HEARTBEAT_STREAM_QUEUE_MAX).await {
                Ok(s) => {
                    hb = Some(s);
                    if opened_before {
                        // Perhaps a new PD leader: it knows the regions
                        // but not their leaders until they report.
                        store.heartbeat_regions();
                    }
                    opened_before = true;
                }
                Err(e) => tracing::warn!("open region heartbeat stream: {e}"),
            }
        }
        let task = match hb.as_mut() {
            Some((_, responses)) => tokio::select! {
                t = rx.recv() => t,
                r = responses.message() => {
                    match r {
                        Ok(Some(resp)) => on_operator(&store, resp),
                        Ok(None) | Err(_) => {
                            // PD stopped or lost its leadership: find the
                            // leader again and reopen there.
                            tracing::info!("region heartbeat stream closed; reopening");
                            hb = None;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            pd.refresh_leader().await;
                        }
                    }
                    continue;
                }
            },
            None => match tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
                Ok(t) => t,
                Err(_) => continue,
            },
        };
        let Some(task) = task else { return };
        match task {
            PdTask::RegionHeartbeat { term, region, leader, stats } => {
                let req = pdpb::RegionHeartbeatRequest {
                    header: pd.request_header(),
                    region: Some(region),
                    leader: Some(leader),
                    pending_peers: stats.pending_peers,
                    bytes_written: stats.written_bytes,
                    keys_written: stats.written_keys,
                    approximate_size: stats.approximate_size,
                    approximate_keys: stats.approximate_keys,
                    term,
                    ..Default::default()
                };
                if let Some((tx, _)) = &hb {
                    if tx.try_send(req).is_err() {
                        hb = None;
                    }
                }
            }
            PdTask::AskBatchSplit { region, split_keys, peer: _, cb } => {
                let pd = pd.clone();
                let store = store.clone();
                tokio::spawn(async move {
                    let count = split_keys.len() as u32;
                    match pd.ask_batch_split(&region, count).await {
                        Ok(ids) => {
                            let ids = ids
                                .into_iter()
                                .map(|i| SplitIds {
                                    new_region_id: i.new_region_id,
                                    new_peer_ids: i.new_peer_ids,
                                })
                                .collect();
                            let epoch = region.region_epoch.clone().unwrap_or_default();
                            let msg = PeerMsg::ProposeSplit { epoch, split_keys, ids, cb };
                            if let Err(e) = store.send(region.id, msg) {
                                tracing::warn!(region = region.id, "deliver split ids: {e}");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(region = region.id, "ask batch split: {e}");
                            if let Some(cb) = cb {
                                cb(Err(Error::Pd(e.to_string())));
                            }
                        }
                    }
                });
            }
            PdTask::ReportBatchSplit { regions } => {
                // Inline, so the heartbeat queued right after it (the parent's
                // new shape) reaches PD only once the children are known.
                match tokio::time::timeout(Duration::from_secs(2), pd.report_batch_split(regions))
                    .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!("report batch split: {e}"),
                    Err(_) => tracing::debug!("report batch split timed out"),
                }
            }
            PdTask::StoreHeartbeat { store_id, region_count, used_size } => {
                let pd = pd.clone();
                tokio::spawn(async move {
                    let stats = pdpb::StoreStats {
                        store_id,
                        region_count,
                        used_size,
                        start_time: atoll_util::time::unix_secs() as u32,
                        ..Default::default()
                    };
                    if let Err(e) = pd.store_heartbeat(stats).await {
                        tracing::debug!("store heartbeat: {e}");
                    }
                });
            }
        }
    }
}

/// Turns an operator from PD into a message for the region's leader.
fn on_operator<E: KvEngine>(store: &StoreHandle<E>, resp: pdpb::RegionHeartbeatResponse) {
    let epoch = resp.region_epoch.clone().unwrap_or_default();
    let msg = if let Some(split) = resp.split_region {
        match SplitRequest::from_pd(split.policy, split.keys) {
            Ok(request) => PeerMsg::SplitRegion { epoch, request, cb: None },
            Err(e) => {
                tracing::warn!(region = resp.region_id, "ignoring PD split: {e}");
                return;
            }
        }
    } else if let Some(t) = resp.transfer_leader.and_then(|t| t.peer) {
        PeerMsg::TransferLeader { peer: t }
    } else if let Some(cp) = resp.change_peer {
        let Some(peer) = cp.peer else { return };
        PeerMsg::ChangePeer { epoch, change_type: cp.change_type, peer, cb: None }
    } else {
        return;
    };
    if let Err(e) = store.send(resp.region_id, msg) {
        tracing::debug!(region = resp.region_id, "deliver operator: {e}");
    }
}
