//! Finding the PD leader. Every candidate is asked for the members at
//! once, each probe bounded by [`PROBE_TIMEOUT`], so a paused or
//! blackholed member costs one probe's time, not the whole search; the
//! first leader reached wins. A leader named by a follower must name
//! itself when asked before it becomes the connection.

use std::time::Duration;

use atoll_proto::keyspacepb::keyspace_client::KeyspaceClient;
use atoll_proto::pdpb::{self, pd_client::PdClient as Grpc};
use futures::stream::{FuturesUnordered, StreamExt};
use tonic::transport::{Channel, ClientTlsConfig};

use crate::{PdError, Result};

pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
pub(crate) const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// One member's answer to GetMembers, connecting included.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);
/// The longest one leader search takes: a probe of the candidate, then a
/// probe of the leader it names.
pub const LEADER_SEARCH_TIMEOUT: Duration = Duration::from_millis(2 * 1000);
/// HTTP/2 pings on every PD channel: a leader that stops answering
/// (paused, cut off) without closing the connection is found dead within
/// interval + timeout, and the heartbeat stream on it ends, instead of
/// looking open forever.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

pub(crate) struct Conn {
    pub(crate) pd: Grpc<Channel>,
    pub(crate) keyspace: KeyspaceClient<Channel>,
    pub(crate) cluster_id: u64,
    pub(crate) leader_url: String,
    /// Every member's client URL as the leader listed them: where to look
    /// when no configured endpoint answers.
    pub(crate) member_urls: Vec<String>,
}

/// `ep` as a URL (`host:port` → `http(s)://host:port`).
pub(crate) fn url(ep: &str, tls: Option<&ClientTlsConfig>) -> String {
    if ep.starts_with("http://") || ep.starts_with("https://") {
        ep.to_owned()
    } else {
        format!("{}://{ep}", if tls.is_some() { "https" } else { "http" })
    }
}

async fn channel(ep: &str, tls: Option<&ClientTlsConfig>) -> std::result::Result<Channel, String> {
    atoll_util::tls::endpoint(ep, tls)?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(RPC_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect()
        .await
        .map_err(|e| e.to_string())
}

/// Asks `ep` for the PD members, within [`PROBE_TIMEOUT`]: its channel
/// and the answer.
async fn members_of(
    ep: &str,
    tls: Option<&ClientTlsConfig>,
) -> std::result::Result<(Channel, pdpb::GetMembersResponse), String> {
    let ask = async {
        let ch = channel(ep, tls).await?;
        let members = Grpc::new(ch.clone())
            .get_members(pdpb::GetMembersRequest::default())
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        Ok((ch, members))
    };
    tokio::time::timeout(PROBE_TIMEOUT, ask)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {PROBE_TIMEOUT:?}")))
}

fn leader_url(members: &pdpb::GetMembersResponse) -> Option<&String> {
    members.leader.as_ref().and_then(|m| m.client_urls.first())
}

/// The leader as `ep` sees it, reached and confirmed: a follower that
/// names a leader it cannot reach (a dead leader whose lease has not run
/// out yet), or one that names itself no longer, never becomes the
/// connection: every request would be refused "not leader".
async fn probe(ep: &str, tls: Option<&ClientTlsConfig>) -> std::result::Result<Conn, String> {
    let (ch, members) = members_of(ep, tls).await.map_err(|e| format!("{ep}: {e}"))?;
    let named = leader_url(&members).ok_or_else(|| format!("{ep}: no PD leader yet"))?.clone();
    let (ch, members) = if named == url(ep, tls) {
        (ch, members)
    } else {
        let (lch, lm) = members_of(&named, tls)
            .await
            .map_err(|e| format!("{ep} names leader {named}, unreachable: {e}"))?;
        match leader_url(&lm) {
            Some(l) if *l == named => (lch, lm),
            other => return Err(format!("{ep} names leader {named}, which names {other:?}")),
        }
    };
    Ok(Conn {
        pd: Grpc::new(ch.clone()),
        keyspace: KeyspaceClient::new(ch),
        cluster_id: members.header.as_ref().map(|h| h.cluster_id).unwrap_or_default(),
        leader_url: named,
        member_urls: members.members.iter().flat_map(|m| m.client_urls.clone()).collect(),
    })
}

/// Probes every candidate at once and connects to the first confirmed
/// leader; takes at most [`LEADER_SEARCH_TIMEOUT`].
pub(crate) async fn connect_leader(
    candidates: &[String],
    tls: Option<&ClientTlsConfig>,
) -> Result<Conn> {
    let mut probes: FuturesUnordered<_> = candidates.iter().map(|ep| probe(ep, tls)).collect();
    let mut failures = vec![];
    while let Some(r) = probes.next().await {
        match r {
            Ok(conn) => return Ok(conn),
            Err(e) => failures.push(e),
        }
    }
    let msg = if failures.is_empty() { "no endpoints given".into() } else { failures.join("; ") };
    Err(PdError::Unreachable { endpoints: candidates.to_vec(), msg })
}
