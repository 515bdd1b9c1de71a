//! Proposing writes and admin commands as leader.

use std::time::Instant;

use atoll_engine_traits::KvEngine;
use atoll_proto::atollpb::{AdminRequest, CmdType, RaftCmdRequest, RaftRequestHeader, Request};
use prost::Message as _;

use crate::apply::Proposal;
use crate::error::{Error, Result};
use crate::fsm::PollContext;
use crate::metrics::PROPOSALS;
use crate::msg::WriteCallback;
use crate::peer::Peer;
use crate::transport::{PdSink, Transport};

/// The raw keys a data request touches, for the region check.
fn request_keys(r: &Request) -> Result<Vec<&[u8]>> {
    let missing = || Error::InvalidRequest(format!("command {} without its body", r.cmd_type));
    Ok(match CmdType::try_from(r.cmd_type).unwrap_or(CmdType::Invalid) {
        CmdType::Put => vec![&r.put.as_ref().ok_or_else(missing)?.key],
        CmdType::Delete => vec![&r.delete.as_ref().ok_or_else(missing)?.key],
        CmdType::CompareAndSwap => vec![&r.cas.as_ref().ok_or_else(missing)?.key],
        CmdType::DeleteRange => {
            // The range is clipped to the region at apply; its start must be inside.
            vec![&r.delete_range.as_ref().ok_or_else(missing)?.start_key]
        }
        CmdType::Invalid => {
            return Err(Error::InvalidRequest(format!("unknown command type {}", r.cmd_type)))
        }
    })
}

impl<E: KvEngine> Peer<E> {
    /// THE request-header rule for writes, reads and admin commands: a
    /// live leader of the named region at the sent epoch (`check_conf`:
    /// membership too).
    pub fn check_header(&self, header: Option<&RaftRequestHeader>, check_conf: bool) -> Result<()> {
        if self.stopped {
            return Err(Error::RegionNotFound(self.region_id()));
        }
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let header =
            header.ok_or_else(|| Error::InvalidRequest("request without header".into()))?;
        if header.region_id != self.region_id() {
            return Err(Error::RegionNotFound(header.region_id));
        }
        self.check_epoch(header.region_epoch.as_ref(), check_conf)
    }

    pub fn propose_write<T: Transport, P: PdSink>(
        &mut self,
        req: RaftCmdRequest,
        cb: WriteCallback,
        ctx: &mut PollContext<E, T, P>,
    ) {
        let res = self.check_header(req.header.as_ref(), false).and_then(|()| {
            // A write computed from a snapshot of an earlier term may have
            // missed what another leader committed since: it was not
            // proposed, so the caller may read again and retry.
            let term = req.header.as_ref().map_or(0, |h| h.term);
            if term != 0 && term != self.term() {
                return Err(Error::StaleCommand);
            }
            if req.requests.is_empty() {
                return Err(Error::InvalidRequest("write with no mutations".into()));
            }
            for r in &req.requests {
                for k in request_keys(r)? {
                    self.check_key(k)?;
                }
            }
            Ok(())
        });
        match res {
            Ok(()) => {
                PROPOSALS.with_label_values(&["write"]).inc();
                self.propose(req, Some(cb), ctx)
            }
            Err(e) => cb(Err(e)),
        }
    }

    /// An admin command from this peer, carrying the current epoch.
    pub fn admin_cmd(&self, admin: AdminRequest) -> RaftCmdRequest {
        RaftCmdRequest {
            header: Some(RaftRequestHeader {
                region_id: self.region_id(),
                peer: Some(self.meta().clone()),
                region_epoch: Some(self.epoch()),
                term: self.term(),
            }),
            requests: vec![],
            admin_request: Some(admin),
        }
    }

    /// Proposes an admin command with the current epoch.
    pub fn propose_admin<T: Transport, P: PdSink>(
        &mut self,
        admin: AdminRequest,
        cb: Option<WriteCallback>,
        ctx: &mut PollContext<E, T, P>,
    ) {
        let req = self.admin_cmd(admin);
        PROPOSALS.with_label_values(&["admin"]).inc();
        self.propose(req, cb, ctx);
    }

    fn propose<T: Transport, P: PdSink>(
        &mut self,
        req: RaftCmdRequest,
        cb: Option<WriteCallback>,
        ctx: &mut PollContext<E, T, P>,
    ) {
        let data = req.encode_to_vec();
        if data.len() as u64 > ctx.cfg.raft_entry_max_size.0 {
            if let Some(cb) = cb {
                cb(Err(Error::EntryTooLarge {
                    region_id: self.region_id(),
                    size: data.len() as u64,
                }));
            }
            return;
        }
        self.propose_with(cb, ctx, |raft| raft.propose(vec![], data));
    }

    /// Appends one entry via `f` and remembers `cb` for its index.
    pub fn propose_with<T: Transport, P: PdSink>(
        &mut self,
        cb: Option<WriteCallback>,
        ctx: &mut PollContext<E, T, P>,
        f: impl FnOnce(&mut raft::RawNode<crate::storage::PeerStorage<E>>) -> raft::Result<()>,
    ) {
        let fail = |cb: Option<WriteCallback>, e: Error| {
            if let Some(cb) = cb {
                cb(Err(e));
            }
        };
        if self.proposals.len() >= ctx.cfg.max_pending_proposals {
            return fail(cb, Error::Busy(format!("{} has too many pending proposals", self.tag())));
        }
        self.wake();
        if let Some(to) = self.raft.raft.lead_transferee {
            // Raft drops proposals while leadership moves; point at the new leader.
            let leader = self.peer_cache.get(&to).cloned();
            return fail(cb, Error::NotLeader { region_id: self.region_id(), leader });
        }
        let before = self.raft.raft.raft_log.last_index();
        if let Err(e) = f(&mut self.raft) {
            return fail(
                cb,
                match e {
                    raft::Error::ProposalDropped => self.not_leader(),
                    e => Error::from(e),
                },
            );
        }
        let index = self.raft.raft.raft_log.last_index();
        if index == before {
            // Dropped silently (e.g. a leader transfer is in progress).
            return fail(cb, self.not_leader());
        }
        if let Some(cb) = cb {
            self.proposals.push_back(Proposal {
                index,
                term: self.term(),
                cb,
                proposed_at: Instant::now(),
            });
        }
    }
}
