//! Snapshots: generating one when raft needs it (leader), shipping it over
//! the transport's snapshot stream, and applying a received one (follower
//! or a brand-new learner).

use atoll_engine_traits::{KvEngine, WriteBatch, WriteOptions, CF_RAFT, DATA_CFS};
use atoll_proto::atollpb::{PeerState, RaftMessage, SnapshotData};
use prost::Message as _;
use raft::eraftpb::{Message, Snapshot};

use crate::fsm::{ApplyMsg, PollContext};
use crate::metrics::SNAPSHOTS;
use crate::msg::PeerMsg;
use crate::peer::Peer;
use crate::snap::{self, SnapKey};
use crate::storage::write_region_state;
use crate::transport::{PdSink, Transport};
use crate::{keys, Error, Result};

fn snap_key(region_id: u64, s: &Snapshot) -> SnapKey {
    let m = s.metadata.clone().unwrap_or_default();
    SnapKey { region_id, term: m.term, index: m.index }
}

impl<E: KvEngine> Peer<E> {
    /// Raft asked storage for a snapshot: have the apply FSM capture one.
    pub fn maybe_start_gen_snapshot<T: Transport, P: PdSink>(
        &mut self,
        ctx: &mut PollContext<E, T, P>,
    ) {
        if let Some(slot) = self.raft.store().take_gen_request() {
            let msg = ApplyMsg::GenSnapshot { slot: slot.clone() };
            if ctx.apply_router.force_send(self.region_id(), msg).is_err() {
                *slot.lock() = Some(Err("apply fsm is gone".into()));
            }
        }
    }

    /// Sends a MsgSnapshot: the file first, the message last, off-thread.
    pub fn send_snapshot<T: Transport, P: PdSink>(
        &mut self,
        m: &Message,
        msg: RaftMessage,
        ctx: &mut PollContext<E, T, P>,
    ) {
        let to = m.to;
        let path = ctx.snap_mgr.gen_path(&snap_key(
            self.region_id(),
            m.snapshot.as_ref().expect("MsgSnapshot has one"),
        ));
        let router = ctx.router.clone();
        let region_id = self.region_id();
        SNAPSHOTS.with_label_values(&["sending"]).inc();
        tracing::info!("{} sending snapshot {} to {to}", self.tag(), path.display());
        ctx.trans.send_snapshot(
            msg,
            path,
            Box::new(move |ok| {
                let _ =
                    router.force_send(region_id, PeerMsg::SnapshotReport { to_peer_id: to, ok });
            }),
        );
    }

    pub fn on_snapshot_report(&mut self, to: u64, ok: bool) {
        SNAPSHOTS.with_label_values(&[if ok { "sent" } else { "send_failed" }]).inc();
        let status = if ok { raft::SnapshotStatus::Finish } else { raft::SnapshotStatus::Failure };
        self.raft.report_snapshot(to, status);
    }

    /// May this received snapshot be stepped? Its file must be here and its
    /// range must not overlap another local region.
    pub fn accept_snapshot<T: Transport, P: PdSink>(
        &self,
        m: &Message,
        ctx: &PollContext<E, T, P>,
    ) -> Result<()> {
        let s = m
            .snapshot
            .as_ref()
            .ok_or_else(|| Error::Snapshot("MsgSnapshot without a snapshot".into()))?;
        let data = SnapshotData::decode(s.data.as_slice())
            .map_err(|e| Error::Snapshot(format!("bad metadata: {e}")))?;
        let region =
            data.region.ok_or_else(|| Error::Snapshot("snapshot without a region".into()))?;
        if region.id != self.region_id() {
            return Err(Error::Snapshot(format!(
                "snapshot of region {} sent to {}",
                region.id,
                self.region_id()
            )));
        }
        let path = ctx.snap_mgr.recv_path(&snap_key(region.id, s));
        let len = std::fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| Error::Snapshot(format!("{}: {e}", path.display())))?;
        if len != data.file_size {
            return Err(Error::Snapshot(format!(
                "{}: {len} bytes, expected {}",
                path.display(),
                data.file_size
            )));
        }
        let overlaps =
            ctx.shared.meta.lock().overlapping(&region.start_key, &region.end_key, region.id);
        if let Some(o) = overlaps.first() {
            return Err(Error::Snapshot(format!("snapshot range overlaps local region {}", o.id)));
        }
        Ok(())
    }

    /// Installs a snapshot from a ready: replaces this region's data, log and
    /// states in one synced write, then restarts the apply FSM from it.
    pub fn apply_snapshot<T: Transport, P: PdSink>(
        &mut self,
        s: &Snapshot,
        ctx: &mut PollContext<E, T, P>,
    ) -> Result<()> {
        let meta = s.metadata.clone().unwrap_or_default();
        let data = SnapshotData::decode(s.data.as_slice())
            .map_err(|e| Error::Snapshot(format!("bad metadata: {e}")))?;
        let region = data
            .region
            .clone()
            .ok_or_else(|| Error::Snapshot("snapshot without a region".into()))?;
        assert_eq!(region.id, self.region_id(), "snapshot for another region");
        let key = SnapKey { region_id: region.id, term: meta.term, index: meta.index };
        let path = ctx.snap_mgr.recv_path(&key);
        let mut wb = ctx.engine.write_batch_with_cap(data.file_size as usize + 4096);
        let (start, end) = snap::region_data_range(&region);
        for cf in DATA_CFS {
            wb.delete_range_cf(cf, &start, &end)?;
        }
        snap::load_into(&path, &data, &mut wb)?;
        let (ls, le) = keys::raft_log_range(region.id);
        wb.delete_range_cf(CF_RAFT, &ls, &le)?;
        write_region_state(&mut wb, &region, PeerState::Normal)?;
        let store = self.raft.mut_store();
        store.restore(region.clone(), meta.index, meta.term);
        wb.put_cf(CF_RAFT, &keys::apply_state_key(region.id), &store.apply_state.encode_to_vec())?;
        store.save_raft_state(&mut wb)?;
        let apply_state = store.apply_state.clone();
        ctx.engine.write(&mut wb, WriteOptions::sync())?;
        let _ = std::fs::remove_file(&path);
        self.set_region(region.clone());
        self.apply_sent_index = meta.index;
        self.snapshot_applied = Some(meta.index);
        ctx.shared.meta.lock().set_region(&region);
        if ctx
            .apply_router
            .force_send(region.id, ApplyMsg::Restore { region, apply_state })
            .is_err()
        {
            tracing::error!("{} apply fsm is gone", self.tag());
        }
        SNAPSHOTS.with_label_values(&["applied"]).inc();
        tracing::info!(
            "{} applied snapshot at {} ({} keys)",
            self.tag(),
            meta.index,
            data.key_count
        );
        Ok(())
    }
}
