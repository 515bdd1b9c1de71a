//! PD membership and leadership.
//!
//! One PD alone (no `--etcd`) is always the leader of a group of one, its
//! state in an embedded RocksDB. With `--etcd`, every member campaigns for
//! the leader key with an etcd lease; the winner loads the cluster's state
//! from etcd into a fresh [`PdCore`] (whose TSO starts above the saved
//! upper bound) and serves while its lease holds; the others answer
//! `GetMembers` with the leader and refuse everything else as "not
//! leader", which sends clients to the leader.
//!
//! A leader serves only until its lease deadline as it measured it (the
//! time it *sent* the last renewal plus the TTL): etcd expires the key no
//! sooner, so two members never hand out timestamps at the same time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_proto::pdpb;
use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::Config;
use crate::core::PdCore;
use crate::etcd::{Etcd, EtcdKv};
use crate::storage::{Storage, StorageError};

/// The leader key's lease: a dead leader's successor serves within about
/// this long (plus one follower poll).
pub const LEADER_LEASE: Duration = Duration::from_secs(3);
/// How often followers look at the leader key.
const FOLLOWER_POLL: Duration = Duration::from_millis(200);
/// How often the leader reads the member list (members that join while
/// it leads).
const LEADER_MEMBERS_REFRESH: Duration = Duration::from_secs(1);
/// Pause after a failed campaign round (etcd unreachable, ...).
const RETRY_PAUSE: Duration = Duration::from_millis(500);

const LEADER_KEY: &[u8] = b"leader";
const MEMBERS_PREFIX: &[u8] = b"members/";

/// A member as recorded in etcd (under `members/<id>`, and as the leader
/// key's value with a nonce for the campaign).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct MemberRecord {
    name: String,
    member_id: u64,
    client_url: String,
    /// Random per campaign: a restarted member never mistakes its former
    /// self's leader key for its own.
    #[serde(default)]
    nonce: u64,
}

impl MemberRecord {
    fn to_pb(&self) -> pdpb::Member {
        pdpb::Member {
            name: self.name.clone(),
            member_id: self.member_id,
            peer_urls: vec![self.client_url.clone()],
            client_urls: vec![self.client_url.clone()],
            ..Default::default()
        }
    }
}

/// Why a member cannot serve a request itself.
#[derive(Debug, thiserror::Error)]
#[error("not leader (leader: {})", leader.as_deref().unwrap_or("none yet"))]
pub struct NotLeader {
    /// The leader's client URL, if one is known.
    pub leader: Option<String>,
}

#[derive(Default)]
struct State {
    /// The leader as last seen (this member while it leads).
    leader: Option<pdpb::Member>,
    /// This member's core while it leads.
    core: Option<Arc<PdCore>>,
    /// The leader's lease runs out at this instant (`None`: no lease, the
    /// embedded single member).
    lease_until: Option<Instant>,
    cluster_id: u64,
    members: Vec<pdpb::Member>,
}

pub struct Member {
    me: MemberRecord,
    state: RwLock<State>,
}

/// The core if this member leads and its lease holds.
fn serving(s: &State) -> Option<&Arc<PdCore>> {
    match (&s.core, s.lease_until) {
        (Some(core), None) => Some(core),
        (Some(core), Some(until)) if Instant::now() < until => Some(core),
        _ => None,
    }
}

/// A stable member id from the member's name (names are unique in a PD
/// group; 0 means "none" in the protocol).
fn member_id(name: &str) -> u64 {
    // FNV-1a
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

impl Member {
    fn new(cfg: &Config) -> Member {
        Member {
            me: MemberRecord {
                name: cfg.name.clone(),
                member_id: member_id(&cfg.name),
                client_url: format!("{}://{}", cfg.security.scheme(), cfg.advertise()),
                nonce: 0,
            },
            state: RwLock::new(State::default()),
        }
    }

    /// A member that leads for good over `core` (one PD, no etcd).
    pub fn single(cfg: &Config, core: Arc<PdCore>) -> Arc<Member> {
        let m = Member::new(cfg);
        let me = m.me.to_pb();
        *m.state.write() = State {
            leader: Some(me.clone()),
            cluster_id: core.cluster_id(),
            core: Some(core),
            lease_until: None,
            members: vec![me],
        };
        Arc::new(m)
    }

    /// A member of a group over etcd; [`campaign`] makes it lead or follow.
    pub fn in_group(cfg: &Config) -> Arc<Member> {
        Arc::new(Member::new(cfg))
    }

    pub fn id(&self) -> u64 {
        self.me.member_id
    }

    pub fn name(&self) -> &str {
        &self.me.name
    }

    /// The core, if this member leads and its lease holds.
    pub fn leader_core(&self) -> Result<Arc<PdCore>, NotLeader> {
        let s = self.state.read();
        match serving(&s) {
            Some(core) => Ok(core.clone()),
            None => Err(NotLeader {
                leader: s
                    .leader
                    .as_ref()
                    .filter(|l| l.member_id != self.me.member_id)
                    .and_then(|l| l.client_urls.first().cloned()),
            }),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.leader_core().is_ok()
    }

    /// The cluster id (0 while no leader ever created the cluster).
    pub fn cluster_id(&self) -> u64 {
        self.state.read().cluster_id
    }

    /// Every member and the current leader, as `GetMembers` answers.
    pub fn members(&self) -> (Vec<pdpb::Member>, Option<pdpb::Member>) {
        // One read of the state: parking_lot's lock is fair, so reading it
        // again while holding it deadlocks once a writer waits between.
        let s = self.state.read();
        let leader = if serving(&s).is_some() {
            Some(self.me.to_pb())
        } else {
            s.leader.clone().filter(|l| l.member_id != self.me.member_id)
        };
        let mut members = s.members.clone();
        if !members.iter().any(|m| m.member_id == self.me.member_id) {
            members.push(self.me.to_pb());
        }
        (members, leader)
    }

    /// The `/status` document.
    pub fn status_json(&self) -> serde_json::Value {
        let (_, leader) = self.members();
        let mut doc = match self.leader_core() {
            Ok(core) => core.status_json(),
            Err(_) => serde_json::json!({ "role": "pd", "cluster_id": self.cluster_id() }),
        };
        doc["member"] = self.me.name.clone().into();
        doc["is_leader"] = self.is_leader().into();
        doc["leader"] = leader.map_or(serde_json::Value::Null, |l| l.name.into());
        doc
    }

    fn step_down(&self) -> Option<Arc<PdCore>> {
        let mut s = self.state.write();
        s.leader = None;
        s.lease_until = Some(Instant::now());
        let core = s.core.take();
        drop(s);
        if let Some(core) = &core {
            core.close();
        }
        core
    }

    /// Stops serving as leader (on shutdown); returns the core for a final sync.
    pub fn resign(&self) -> Option<Arc<PdCore>> {
        self.step_down()
    }
}

/// Campaigns for leadership over `etcd` until `stop` turns true: leads
/// while it can, follows otherwise. Returns after stepping down.
pub async fn campaign(
    member: Arc<Member>,
    cfg: Config,
    etcd: Arc<Etcd>,
    mut stop: watch::Receiver<bool>,
) {
    let leader_key = etcd.key(LEADER_KEY);
    let record = serde_json::to_vec(&member.me).expect("member record serializes");
    let member_key = {
        let mut k = MEMBERS_PREFIX.to_vec();
        k.extend_from_slice(member.me.member_id.to_string().as_bytes());
        etcd.key(&k)
    };
    let mut registered = false;
    while !*stop.borrow() {
        let round = async {
            // Register once per start: the address may have changed since
            // the last one.
            if !registered {
                etcd.run(|mut c| {
                    let (k, v) = (member_key.clone(), record.clone());
                    async move { c.put(k, v, None).await }
                })
                .await?;
                registered = true;
            }
            refresh_members(&member, &etcd).await?;
            let resp = etcd
                .run(|mut c| {
                    let k = leader_key.clone();
                    async move { c.get(k, None).await }
                })
                .await?;
            match resp.kvs().first() {
                Some(kv) => {
                    follow(&member, &etcd, kv.value()).await;
                    Ok::<bool, etcd_client::Error>(false)
                }
                None => Ok(true),
            }
        };
        let lead_now = tokio::select! {
            r = round => r,
            _ = stop.changed() => break,
        };
        match lead_now {
            Ok(false) => {
                tokio::select! {
                    _ = tokio::time::sleep(FOLLOWER_POLL) => {}
                    _ = stop.changed() => break,
                }
            }
            Ok(true) => {
                if let Err(e) = lead(&member, &cfg, &etcd, &leader_key, &mut stop).await {
                    tracing::warn!("pd leadership: {e}");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
            Err(e) => {
                tracing::warn!("pd campaign: {e}");
                member.state.write().leader = None;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

async fn refresh_members(member: &Member, etcd: &Etcd) -> Result<(), etcd_client::Error> {
    let prefix = etcd.key(MEMBERS_PREFIX);
    let resp = etcd
        .run(|mut c| {
            let p = prefix.clone();
            async move { c.get(p, Some(GetOptions::new().with_prefix())).await }
        })
        .await?;
    let mut members: Vec<pdpb::Member> = resp
        .kvs()
        .iter()
        .filter_map(|kv| serde_json::from_slice::<MemberRecord>(kv.value()).ok())
        .map(|r| r.to_pb())
        .collect();
    members.sort_by_key(|m| m.member_id);
    member.state.write().members = members;
    Ok(())
}

/// Records `value` (the leader key's) as the leader, and the cluster id.
async fn follow(member: &Member, etcd: &Arc<Etcd>, value: &[u8]) {
    let leader = serde_json::from_slice::<MemberRecord>(value).ok().map(|r| r.to_pb());
    let know_cluster = member.state.read().cluster_id != 0;
    member.state.write().leader = leader;
    if !know_cluster {
        // The cluster id is in the meta record the first leader wrote.
        let storage = Storage::new(Arc::new(EtcdKv::new(etcd.clone(), vec![], vec![])));
        if let Ok(Ok(Some(meta))) = tokio::task::spawn_blocking(move || storage.load_meta()).await {
            member.state.write().cluster_id = meta.cluster_id;
        }
    }
}

/// Takes the leader key if it is free, then leads until the lease is
/// lost or `stop`.
async fn lead(
    member: &Arc<Member>,
    cfg: &Config,
    etcd: &Arc<Etcd>,
    leader_key: &[u8],
    stop: &mut watch::Receiver<bool>,
) -> Result<(), StorageError> {
    let ttl = LEADER_LEASE.as_secs() as i64;
    let granted_at = Instant::now();
    let lease = etcd
        .run(|mut c| async move { c.lease_grant(ttl, None).await })
        .await
        .map_err(etcd_err)?
        .id();
    let mut me = member.me.clone();
    me.nonce = rand::random();
    let campaign = serde_json::to_vec(&me).expect("member record serializes");
    let txn = Txn::new()
        .when([Compare::create_revision(leader_key.to_vec(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            leader_key.to_vec(),
            campaign.clone(),
            Some(PutOptions::new().with_lease(lease)),
        )]);
    let won = etcd
        .run(|mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
        .map_err(etcd_err)?
        .succeeded();
    if !won {
        let _ = etcd.run(|mut c| async move { c.lease_revoke(lease).await }).await;
        return Ok(());
    }
    // Renewals run from now on, also while the state loads.
    let (lost_tx, mut lost) = tokio::sync::oneshot::channel::<()>();
    let lease_until = Arc::new(parking_lot::Mutex::new(granted_at + LEADER_LEASE));
    let renewing =
        tokio::spawn(renew(member.clone(), etcd.clone(), lease, lease_until.clone(), lost_tx));
    tracing::info!(member = %member.me.name, "elected PD leader; loading the cluster from etcd");
    let storage =
        Storage::new(Arc::new(EtcdKv::new(etcd.clone(), leader_key.to_vec(), campaign.clone())));
    let core_cfg = cfg.clone();
    let opened = tokio::task::spawn_blocking(move || PdCore::open_with(core_cfg, storage));
    let mut stopping = false;
    let opened = tokio::select! {
        r = opened => Some(r),
        _ = &mut lost => None,
        _ = stop.changed() => { stopping = true; None }
    };
    match opened {
        Some(Ok(Ok(core))) => {
            {
                let mut s = member.state.write();
                s.cluster_id = core.cluster_id();
                s.leader = Some(member.me.to_pb());
                s.core = Some(core.clone());
                s.lease_until = Some(*lease_until.lock());
            }
            crate::metrics::PD_IS_LEADER.set(1);
            tracing::info!(
                member = %member.me.name,
                cluster_id = core.cluster_id(),
                "serving as PD leader"
            );
            // Members that start after this one took the lead register
            // in etcd; GetMembers must list them too.
            let mut refresh = tokio::time::interval(LEADER_MEMBERS_REFRESH);
            loop {
                tokio::select! {
                    _ = &mut lost => break,
                    _ = stop.changed() => { stopping = true; break }
                    _ = refresh.tick() => {
                        // Bounded: stepping down must not wait on etcd.
                        let read = refresh_members(member, etcd);
                        match tokio::time::timeout(LEADER_MEMBERS_REFRESH, read).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::debug!("pd leader: member list: {e}"),
                            Err(_) => tracing::debug!("pd leader: member list: timed out"),
                        }
                    }
                }
            }
        }
        Some(Ok(Err(e))) => tracing::warn!("loading the cluster as PD leader: {e}"),
        Some(Err(e)) => tracing::warn!("loading the cluster as PD leader: {e}"),
        None => {}
    }
    renewing.abort();
    member.step_down();
    crate::metrics::PD_IS_LEADER.set(0);
    let revoke = etcd.run(|mut c| async move { c.lease_revoke(lease).await });
    let _ = tokio::time::timeout(Duration::from_secs(1), revoke).await;
    if !stopping {
        // Whatever became of the revoke, nobody else leads before the
        // lease runs out: campaign again only after it.
        let until = *lease_until.lock();
        tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
    }
    tracing::info!(member = %member.me.name, "no longer PD leader");
    Ok(())
}

/// Renews the leader lease every third of its TTL; each renewal moves the
/// deadline to (time the renewal was sent) + TTL. A renewal that fails is
/// tried again on the next etcd endpoint while the deadline allows;
/// `lost` is signalled when it no longer does.
async fn renew(
    member: Arc<Member>,
    etcd: Arc<Etcd>,
    lease: i64,
    lease_until: Arc<parking_lot::Mutex<Instant>>,
    lost: tokio::sync::oneshot::Sender<()>,
) {
    let mut keep: Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)> = None;
    let mut pause = LEADER_LEASE / 3;
    loop {
        tokio::time::sleep(pause).await;
        if Instant::now() + LEADER_LEASE / 6 >= *lease_until.lock() {
            tracing::warn!("PD leader lease about to run out unrenewed; stepping down");
            let _ = lost.send(());
            return;
        }
        let sent_at = Instant::now();
        let renewed = async {
            if keep.is_none() {
                keep = Some(etcd.client().lease_keep_alive(lease).await?);
            }
            let (keeper, renewals) = keep.as_mut().expect("just set");
            keeper.keep_alive().await?;
            renewals.message().await
        };
        match tokio::time::timeout(LEADER_LEASE / 6, renewed).await {
            Ok(Ok(Some(r))) if r.ttl() > 0 => {
                let until = sent_at + Duration::from_secs(r.ttl() as u64);
                *lease_until.lock() = until;
                let mut s = member.state.write();
                if s.core.is_some() {
                    s.lease_until = Some(until);
                }
                pause = LEADER_LEASE / 3;
            }
            Ok(Ok(Some(_))) => {
                tracing::warn!("PD leader lease expired in etcd; stepping down");
                let _ = lost.send(());
                return;
            }
            other => {
                // This endpoint failed: the next renewal goes to another.
                let e = match other {
                    Ok(Err(e)) => e,
                    _ => etcd_client::Error::LeaseKeepAliveError("no answer".into()),
                };
                etcd.fail_over(&e);
                keep = None;
                pause = Duration::from_millis(50);
            }
        }
    }
}

fn etcd_err(e: etcd_client::Error) -> StorageError {
    StorageError::Etcd(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `members()` (every GetMembers) beside state writes (the follower
    /// poll, lease renewals): reading the state twice under one fair read
    /// lock deadlocked as soon as a writer queued in between.
    #[test]
    fn members_never_deadlocks_beside_state_writes() {
        let member = Member::in_group(&Config::default());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let mut threads = vec![];
        for reader in [true, false] {
            let (member, stop, done) = (member.clone(), stop.clone(), done_tx.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if reader {
                        let _ = member.members();
                    } else {
                        member.state.write().cluster_id += 1;
                    }
                }
                let _ = done.send(());
            }));
        }
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for _ in 0..2 {
            done_rx.recv_timeout(Duration::from_secs(10)).expect("members() deadlocked");
        }
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn member_ids_are_stable_and_never_zero() {
        assert_eq!(member_id("pd1"), member_id("pd1"));
        assert_ne!(member_id("pd1"), member_id("pd2"));
        assert_ne!(member_id(""), 0);
    }
}
