//! The receiving side of the raft transport: message batches, and snapshot
//! files streamed in chunks.

use atoll_engine_traits::KvEngine;
use atoll_proto::atollpb::{
    raft_transport_server::RaftTransport, BatchRaftMessage, Done, SnapshotChunk,
};
use atoll_raftstore::snap::{SnapKey, SNAP_FILE_MAX};
use atoll_raftstore::StoreHandle;
use futures::StreamExt;
use prost011::Message as _;
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::TRANSPORT_RECEIVED;

pub struct RaftService<E: KvEngine> {
    pub store: StoreHandle<E>,
}

#[tonic::async_trait]
impl<E: KvEngine> RaftTransport for RaftService<E> {
    async fn batch_raft(
        &self,
        req: Request<Streaming<BatchRaftMessage>>,
    ) -> Result<Response<Done>, Status> {
        let mut stream = req.into_inner();
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            if batch.from_store_id != 0 {
                self.store.store_seen(batch.from_store_id);
            }
            for msg in batch.msgs {
                let to = msg.to_peer.as_ref().map(|p| p.store_id).unwrap_or_default();
                if to != self.store.store_id {
                    tracing::warn!(
                        to,
                        me = self.store.store_id,
                        "raft message for another store dropped"
                    );
                    continue;
                }
                TRANSPORT_RECEIVED.inc();
                self.store.on_raft_message(msg);
            }
        }
        Ok(Response::new(Done {}))
    }

    /// Writes the chunks to a temporary file; once the stream ends cleanly
    /// the file is renamed into place and the raft message (from the first
    /// chunk) is delivered, so a peer never sees a snapshot without its data.
    async fn snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Done>, Status> {
        let mut stream = req.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let msg = first
            .message
            .ok_or_else(|| Status::invalid_argument("first snapshot chunk has no message"))?;
        let to = msg.to_peer.as_ref().map(|p| p.store_id).unwrap_or_default();
        if to != self.store.store_id {
            return Err(Status::invalid_argument(format!(
                "snapshot for store {to} sent to {}",
                self.store.store_id
            )));
        }
        let m = raft::eraftpb::Message::decode(msg.message.as_slice())
            .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))?;
        let meta = m.snapshot.as_ref().and_then(|s| s.metadata.clone()).ok_or_else(|| {
            Status::invalid_argument("snapshot message without snapshot metadata")
        })?;
        let key = SnapKey { region_id: msg.region_id, term: meta.term, index: meta.index };
        let mgr = self.store.snap_mgr();
        let tmp = mgr.recv_tmp_path(&key);
        let res = async {
            let mut f = tokio::fs::File::create(&tmp).await?;
            let mut total = first.data.len() as u64;
            f.write_all(&first.data).await?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| std::io::Error::other(e.to_string()))?;
                total += chunk.data.len() as u64;
                if total > SNAP_FILE_MAX {
                    return Err(std::io::Error::other("snapshot exceeds the size limit"));
                }
                f.write_all(&chunk.data).await?;
            }
            f.sync_all().await?;
            tokio::fs::rename(&tmp, mgr.recv_path(&key)).await
        }
        .await;
        if let Err(e) = res {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(Status::internal(format!("receive snapshot {key:?}: {e}")));
        }
        tracing::info!(region = key.region_id, index = key.index, "snapshot received");
        self.store.on_raft_message(msg);
        Ok(Response::new(Done {}))
    }
}
