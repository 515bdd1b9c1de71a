//! Talks to PD on behalf of raftstore: region heartbeats (and the operators
//! PD sends back), split id allocation, store heartbeats.
//!
//! [`PdWorker`] handles one [`PdTask`] per method. The region heartbeat
//! stream lives in [`HeartbeatStream`]: when PD closes or refuses it (a
//! leader change), it finds the leader again and reopens with a short,
//! capped backoff, logging each class of failure, and once open it has
//! every region this store leads report at once, since a new PD leader
//! knows the regions but not their leaders. Calls that run beside the
//! loop (split ids, store heartbeats) are limited by
//! [`PD_CALLS_IN_FLIGHT_MAX`]. Depends on raftstore only through
//! [`StoreLink`], so tests drive it against a scripted PD.

use std::sync::Arc;
use std::time::Duration;

use atoll_engine_traits::KvEngine;
use atoll_pd_client::{HeartbeatChannel, PdClient, PdError};
use atoll_proto::pdpb;
use atoll_raftstore::{
    stale_peer_tombstone, Error, PdSink, PdTask, PeerMsg, RegionStats, SplitIds, SplitRequest,
    StoreHandle, WriteCallback,
};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use crate::metrics::{PD_HEARTBEAT_STREAM_EVENTS, PD_WORKER_DROPPED};

/// PD tasks queued before new ones are dropped (heartbeats are periodic,
/// so dropping one under overload is harmless; split requests fail "busy").
pub const PD_TASK_QUEUE_MAX: usize = 4096;
/// Calls to PD running beside the worker loop (split ids, store
/// heartbeats); past it a split request fails "busy" and a store
/// heartbeat is skipped (the next one comes within seconds).
pub const PD_CALLS_IN_FLIGHT_MAX: usize = 64;
const HEARTBEAT_STREAM_QUEUE_MAX: usize = 1024;
/// How long PD may take to accept the heartbeat stream.
const STREAM_OPEN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the worker waits for a leader search: the one another caller
/// may be running (which it then shares) and its own, each bounded by
/// the client.
const LEADER_SEARCH_WAIT: Duration =
    Duration::from_millis(2 * atoll_pd_client::LEADER_SEARCH_TIMEOUT.as_millis() as u64 + 500);
/// The first pause before reopening the stream; it doubles per failed
/// attempt up to [`STREAM_RETRY_MAX`]. With the cap at 500 ms, a store
/// reaches a new PD leader within about 1 s of it serving (one pause, one
/// leader search, one open), whatever happened before.
const STREAM_RETRY_MIN: Duration = Duration::from_millis(50);
const STREAM_RETRY_MAX: Duration = Duration::from_millis(500);
/// A stream open this long counts as healthy: its end starts the backoff
/// afresh. One that ends sooner (a PD that accepts and then drops it)
/// keeps backing off.
const STREAM_HEALTHY: Duration = Duration::from_secs(1);
/// A failure of the same class as the one before is logged again only
/// every this many attempts (the first of each class always is).
const STREAM_LOG_EVERY: u32 = 20;
const REPORT_SPLIT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct PdSender {
    tx: mpsc::Sender<PdTask>,
}

impl PdSink for PdSender {
    fn schedule(&self, task: PdTask) {
        if let Err(mpsc::error::TrySendError::Full(t) | mpsc::error::TrySendError::Closed(t)) =
            self.tx.try_send(task)
        {
            PD_WORKER_DROPPED.with_label_values(&["queue_full"]).inc();
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

/// What the PD worker needs of the store: a trait, so that tests can run
/// the worker against a scripted PD without a raftstore.
pub trait StoreLink: Clone + Send + Sync + 'static {
    type Engine: KvEngine;
    /// Every region this store leads reports to PD soon.
    fn heartbeat_regions(&self);
    fn send(&self, region_id: u64, msg: PeerMsg<Self::Engine>) -> atoll_raftstore::Result<()>;
}

impl<E: KvEngine> StoreLink for StoreHandle<E> {
    type Engine = E;

    fn heartbeat_regions(&self) {
        StoreHandle::heartbeat_regions(self);
    }

    fn send(&self, region_id: u64, msg: PeerMsg<E>) -> atoll_raftstore::Result<()> {
        StoreHandle::send(self, region_id, msg)
    }
}

/// Why the heartbeat stream is not open, as logged and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// PD answered "not leader" (a follower, or a deposed leader).
    NotLeader,
    /// No PD member could be reached, or none names a reachable leader.
    Unreachable,
    /// PD did not accept the stream in time.
    Timeout,
    /// The open stream ended (PD stopped or lost its leadership).
    Closed,
    /// Our side could not queue a request (PD stopped reading).
    Full,
    Other,
}

impl Failure {
    fn of(e: &PdError) -> Failure {
        match e {
            PdError::Unreachable { .. } => Failure::Unreachable,
            PdError::Rpc(s) if s.message().contains("not leader") => Failure::NotLeader,
            PdError::Rpc(s) if s.code() == tonic::Code::DeadlineExceeded => Failure::Timeout,
            PdError::Rpc(s) if s.code() == tonic::Code::Unavailable => Failure::Unreachable,
            _ => Failure::Other,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Failure::NotLeader => "not_leader",
            Failure::Unreachable => "unreachable",
            Failure::Timeout => "timeout",
            Failure::Closed => "closed",
            Failure::Full => "full",
            Failure::Other => "other",
        }
    }
}

/// The region heartbeat stream to the PD leader, and when to try opening
/// it again while it is closed.
struct HeartbeatStream {
    open: Option<HeartbeatChannel>,
    /// When it opened.
    opened_at: Instant,
    /// Failed attempts since the stream was last healthy.
    attempts: u32,
    retry_at: Instant,
    last_failure: Option<Failure>,
}

impl HeartbeatStream {
    fn new() -> HeartbeatStream {
        HeartbeatStream {
            open: None,
            opened_at: Instant::now(),
            attempts: 0,
            retry_at: Instant::now(),
            last_failure: None,
        }
    }

    fn opened(&mut self, s: HeartbeatChannel) {
        self.open = Some(s);
        self.opened_at = Instant::now();
    }

    /// Whether the PD client has reached another leader since the stream
    /// opened (a call beside the stream failed and found it).
    fn at_old_leader(&self, pd: &PdClient) -> bool {
        self.open.as_ref().is_some_and(|s| s.leader_changes != pd.leader_changes())
    }

    /// The stream is at a leader the PD client has left: drop it and open
    /// one at the client's leader now (with no leader search of its own
    /// unless earlier attempts failed).
    fn leader_moved(&mut self) {
        self.close();
        self.retry_at = Instant::now();
        PD_HEARTBEAT_STREAM_EVENTS.with_label_values(&["leader_moved"]).inc();
        tracing::info!("PD client reached another PD leader; moving the region heartbeat stream");
    }

    /// The next operator (`Ok(Some)`) or the end of the stream; pending
    /// forever while closed.
    async fn next(&mut self) -> Result<Option<pdpb::RegionHeartbeatResponse>, tonic::Status> {
        match self.open.as_mut() {
            Some(s) => s.responses.message().await,
            None => std::future::pending().await,
        }
    }

    /// Drops the stream; one that was healthy starts the backoff afresh.
    fn close(&mut self) {
        if self.open.take().is_some() && self.opened_at.elapsed() >= STREAM_HEALTHY {
            self.attempts = 0;
            self.last_failure = None;
        }
    }

    /// Records a failure and schedules the next attempt; logs the first
    /// failure of each class and every [`STREAM_LOG_EVERY`]th after.
    fn failed(&mut self, why: Failure, detail: &str) {
        self.close();
        self.attempts += 1;
        PD_HEARTBEAT_STREAM_EVENTS.with_label_values(&[why.label()]).inc();
        let pause =
            STREAM_RETRY_MIN.saturating_mul(1 << (self.attempts - 1).min(8)).min(STREAM_RETRY_MAX);
        self.retry_at = Instant::now() + pause;
        if self.last_failure != Some(why) || self.attempts.is_multiple_of(STREAM_LOG_EVERY) {
            tracing::warn!(
                attempt = self.attempts,
                "region heartbeat stream {}: {detail}; retrying in {pause:?}",
                why.label()
            );
        }
        self.last_failure = Some(why);
    }
}

/// The store's PD worker: one method per [`PdTask`].
pub struct PdWorker<S: StoreLink> {
    pd: Arc<PdClient>,
    store: S,
    stream: HeartbeatStream,
    in_flight: Arc<Semaphore>,
    /// When this store process started (unix seconds), for store heartbeats.
    start_time: u32,
}

impl<S: StoreLink> PdWorker<S> {
    pub fn new(pd: Arc<PdClient>, store: S, start_time: u32) -> PdWorker<S> {
        PdWorker {
            pd,
            store,
            stream: HeartbeatStream::new(),
            in_flight: Arc::new(Semaphore::new(PD_CALLS_IN_FLIGHT_MAX)),
            start_time,
        }
    }

    /// Runs until the task channel closes.
    pub async fn run(mut self, mut rx: mpsc::Receiver<PdTask>) {
        loop {
            if self.stream.at_old_leader(&self.pd) {
                self.stream.leader_moved();
            }
            if self.stream.open.is_none() && Instant::now() >= self.stream.retry_at {
                self.open_stream().await;
            }
            let retry_at = self.stream.retry_at;
            let closed = self.stream.open.is_none();
            tokio::select! {
                task = rx.recv() => match task {
                    Some(task) => self.handle(task).await,
                    None => return,
                },
                r = self.stream.next() => match r {
                    Ok(Some(resp)) => on_operator(&self.store, resp),
                    Ok(None) => self.stream.failed(Failure::Closed, "PD ended it"),
                    Err(e) => self.stream.failed(Failure::Closed, &e.to_string()),
                },
                _ = tokio::time::sleep_until(retry_at), if closed => {}
            }
        }
    }

    async fn handle(&mut self, task: PdTask) {
        match task {
            PdTask::RegionHeartbeat { term, region, leader, stats } => {
                self.region_heartbeat(term, region, leader, stats)
            }
            PdTask::AskBatchSplit { region, split_keys, peer: _, cb } => {
                self.ask_batch_split(region, split_keys, cb)
            }
            PdTask::ReportBatchSplit { regions } => report_batch_split(&self.pd, regions).await,
            PdTask::StoreHeartbeat { store_id, region_count, used_size } => {
                self.store_heartbeat(store_id, region_count, used_size)
            }
            PdTask::ValidatePeer { region, peer } => self.validate_peer(region, peer),
        }
    }

    /// Opens the heartbeat stream at the leader, after finding the leader
    /// again if the last attempt failed; on success every region this
    /// store leads reports (a new leader knows no region's leader).
    async fn open_stream(&mut self) {
        if self.stream.attempts > 0 {
            match tokio::time::timeout(LEADER_SEARCH_WAIT, self.pd.refresh_leader()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return self.stream.failed(Failure::of(&e), &e.to_string()),
                Err(_) => {
                    return self.stream.failed(Failure::Timeout, "the PD leader search timed out")
                }
            }
        }
        match self.pd.region_heartbeat(HEARTBEAT_STREAM_QUEUE_MAX, STREAM_OPEN_TIMEOUT).await {
            Ok(s) => {
                PD_HEARTBEAT_STREAM_EVENTS.with_label_values(&["opened"]).inc();
                tracing::info!(
                    pd = %self.pd.leader_url(),
                    after_failed_attempts = self.stream.attempts,
                    "region heartbeat stream open"
                );
                self.stream.opened(s);
                self.store.heartbeat_regions();
            }
            Err(e) => self.stream.failed(Failure::of(&e), &e.to_string()),
        }
    }

    fn region_heartbeat(
        &mut self,
        term: u64,
        region: atoll_proto::metapb::Region,
        leader: atoll_proto::metapb::Peer,
        stats: RegionStats,
    ) {
        let Some(HeartbeatChannel { requests: tx, .. }) = &self.stream.open else {
            // Every leader reports again once the stream is open.
            PD_WORKER_DROPPED.with_label_values(&["no_stream"]).inc();
            return;
        };
        let req = pdpb::RegionHeartbeatRequest {
            header: self.pd.request_header(),
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
        if tx.try_send(req).is_err() {
            self.stream.failed(Failure::Full, "PD is not reading it");
        }
    }

    /// A permit for a call beside the loop, if fewer than
    /// [`PD_CALLS_IN_FLIGHT_MAX`] run.
    fn permit(&self, what: &'static str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let p = self.in_flight.clone().try_acquire_owned().ok();
        if p.is_none() {
            PD_WORKER_DROPPED.with_label_values(&[what]).inc();
        }
        p
    }

    fn ask_batch_split(
        &self,
        region: atoll_proto::metapb::Region,
        split_keys: Vec<Vec<u8>>,
        cb: Option<WriteCallback>,
    ) {
        let Some(permit) = self.permit("split_busy") else {
            if let Some(cb) = cb {
                cb(Err(Error::Busy("too many PD calls in flight".into())));
            }
            return;
        };
        let (pd, store) = (self.pd.clone(), self.store.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match pd.ask_batch_split(&region, split_keys.len() as u32).await {
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

    /// Asks PD for `region`; if PD's (newer) region no longer lists `peer`,
    /// the peer gets the tombstone that destroys it.
    fn validate_peer(&self, region: atoll_proto::metapb::Region, peer: atoll_proto::metapb::Peer) {
        let Some(permit) = self.permit("validate_busy") else { return };
        let (pd, store) = (self.pd.clone(), self.store.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match pd.get_region_by_id(region.id).await {
                Ok(Some(info)) => {
                    let Some(msg) = stale_peer_tombstone(&region, &peer, &info.region) else {
                        return;
                    };
                    tracing::info!(
                        region = region.id,
                        peer = peer.id,
                        "PD shows this peer removed from its region; destroying it"
                    );
                    if let Err(e) = store.send(region.id, PeerMsg::Raft(Box::new(msg))) {
                        tracing::debug!(region = region.id, "deliver stale-peer tombstone: {e}");
                    }
                }
                // PD does not know the region (yet): the next overlap asks again.
                Ok(None) => {}
                Err(e) => tracing::debug!(region = region.id, "validate peer: {e}"),
            }
        });
    }

    fn store_heartbeat(&self, store_id: u64, region_count: u32, used_size: u64) {
        let Some(permit) = self.permit("store_heartbeat_busy") else { return };
        let pd = self.pd.clone();
        let stats = pdpb::StoreStats {
            store_id,
            region_count,
            used_size,
            start_time: self.start_time,
            ..Default::default()
        };
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = pd.store_heartbeat(stats).await {
                tracing::debug!("store heartbeat: {e}");
            }
        });
    }
}

/// Inline in the worker loop, so the heartbeat queued right after it (the
/// parent's new shape) reaches PD only once the children are known.
async fn report_batch_split(pd: &PdClient, regions: Vec<atoll_proto::metapb::Region>) {
    match tokio::time::timeout(REPORT_SPLIT_TIMEOUT, pd.report_batch_split(regions)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("report batch split: {e}"),
        Err(_) => tracing::debug!("report batch split timed out"),
    }
}

/// Turns an operator from PD into a message for the region's leader.
fn on_operator<S: StoreLink>(store: &S, resp: pdpb::RegionHeartbeatResponse) {
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
