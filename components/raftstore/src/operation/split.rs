//! Region split: validate keys, get ids from PD, propose `BatchSplit`, and
//! once applied create the new peers on this store.

use atoll_codec::api::check_split_keys;
use atoll_engine_traits::KvEngine;
use atoll_proto::atollpb::{self, AdminCmdType, AdminRequest, BatchSplitRequest};
use atoll_proto::metapb;

use crate::error::Error;
use crate::fsm::{register_region, PollContext};
use crate::metrics::RAFT_MESSAGES_DROPPED;
use crate::msg::{PeerMsg, SplitIds, SplitRequest, WriteCallback};
use crate::peer::Peer;
use crate::transport::{PdSink, Transport};

impl<E: KvEngine> Peer<E> {
    /// Keys must be strictly inside the region and strictly increasing
    /// ([`atoll_codec::api::check_split_keys`], the rule apply and PD use).
    pub fn validate_split_keys(&self, keys: &[Vec<u8>]) -> Result<(), Error> {
        let r = self.region();
        check_split_keys(&r.start_key, &r.end_key, keys.iter().map(|k| k.as_slice()))
            .map_err(|e| Error::InvalidRequest(format!("region {}: {e}", r.id)))
    }

    /// A split from PD, an admin or the split checker: at keys, ask PD
    /// for ids; in half, measure the region first (the result comes back
    /// as keys). Only the leader splits, and only its current epoch.
    pub fn on_split_region<T: Transport, P: PdSink>(
        &mut self,
        epoch: metapb::RegionEpoch,
        request: SplitRequest,
        cb: Option<WriteCallback>,
        ctx: &mut PollContext<E, T, P>,
    ) {
        let check = if !self.is_leader() {
            Err(self.not_leader())
        } else {
            self.check_epoch(Some(&epoch), false).and_then(|()| match &request {
                SplitRequest::AtKeys(keys) => self.validate_split_keys(keys),
                SplitRequest::Half => Ok(()),
            })
        };
        if let Err(e) = check {
            tracing::info!("{} split rejected: {e}", self.tag());
            if let Some(cb) = cb {
                cb(Err(e));
            }
            return;
        }
        match request {
            SplitRequest::AtKeys(keys) => self.ask_split_ids(keys, cb, ctx),
            SplitRequest::Half => {
                let scheduled = self.schedule_half_split(ctx);
                if let Some(cb) = cb {
                    // Measuring comes first; the split itself is not awaited.
                    cb(if scheduled {
                        Ok(Default::default())
                    } else {
                        Err(Error::Busy(format!("{}: the split checker is full", self.tag())))
                    });
                }
            }
        }
    }

    pub fn propose_split<T: Transport, P: PdSink>(
        &mut self,
        epoch: metapb::RegionEpoch,
        split_keys: Vec<Vec<u8>>,
        ids: Vec<SplitIds>,
        cb: Option<WriteCallback>,
        ctx: &mut PollContext<E, T, P>,
    ) {
        let check = self.check_epoch(Some(&epoch), false).and_then(|()| {
            self.validate_split_keys(&split_keys)?;
            if ids.len() != split_keys.len() {
                return Err(Error::InvalidRequest("split ids do not match keys".into()));
            }
            Ok(())
        });
        if let Err(e) = check {
            if let Some(cb) = cb {
                cb(Err(e));
            }
            return;
        }
        let requests = split_keys
            .into_iter()
            .zip(ids)
            .map(|(k, id)| atollpb::SplitRequest {
                split_key: k,
                new_region_id: id.new_region_id,
                new_peer_ids: id.new_peer_ids,
            })
            .collect();
        let admin = AdminRequest {
            cmd_type: AdminCmdType::BatchSplit as i32,
            splits: Some(BatchSplitRequest { requests }),
            ..Default::default()
        };
        self.propose_admin(admin, cb, ctx);
    }

    pub fn on_split_applied<T: Transport, P: PdSink>(
        &mut self,
        derived: metapb::Region,
        regions: Vec<metapb::Region>,
        ctx: &mut PollContext<E, T, P>,
    ) {
        tracing::info!("{} split into {} regions", self.tag(), regions.len());
        self.set_region(derived.clone());
        // Sizes are unknown until measured again.
        self.approximate_size = None;
        self.approximate_keys = None;
        self.split_check_diff = u64::MAX / 2;
        let leader = self.is_leader();
        // Ranges and peers change together under the meta lock: the store
        // FSM, creating peers from messages, must see either the parent's
        // old range or the new regions with their peers.
        let mut meta = ctx.shared.meta.lock();
        meta.set_region(&derived);
        for r in regions.iter().filter(|r| r.id != derived.id) {
            meta.set_region(r);
            if ctx.router.mailbox(r.id).is_some() {
                continue;
            }
            let peer = match Peer::create(
                ctx.store_id,
                &ctx.cfg,
                ctx.engine.clone(),
                r.clone(),
                &ctx.shared,
                &ctx.logger,
            ) {
                Ok(p) => p,
                Err(e) => panic!("{} create split region {}: {e}", self.tag(), r.id),
            };
            let peer_id = peer.meta().id;
            register_region(&ctx.router, &ctx.apply_router, peer);
            for vote in meta.take_pending_votes(r.id, peer_id) {
                if ctx.router.send(r.id, PeerMsg::Raft(Box::new(vote))).is_err() {
                    RAFT_MESSAGES_DROPPED.with_label_values(&["mailbox_full"]).inc();
                }
            }
            if leader {
                // The parent's leader store leads the children: no election wait.
                let _ = ctx.router.force_send(r.id, PeerMsg::Campaign);
            }
        }
        drop(meta);
        if leader {
            self.report_split(regions, ctx);
        }
    }
}
