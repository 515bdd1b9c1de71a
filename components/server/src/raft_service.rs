//! The receiving side of the raft transport.

use atoll_engine_traits::KvEngine;
use atoll_proto::atollpb::{raft_transport_server::RaftTransport, BatchRaftMessage, Done};
use atoll_raftstore::StoreHandle;
use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::TRANSPORT_RECEIVED;

pub struct RaftService<E: KvEngine> {
    pub store: StoreHandle<E>,
}

#[tonic::async_trait]
impl<E: KvEngine> RaftTransport for RaftService<E> {
    async fn batch_raft(&self, req: Request<Streaming<BatchRaftMessage>>) -> Result<Response<Done>, Status> {
        let mut stream = req.into_inner();
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            for msg in batch.msgs {
                let to = msg.to_peer.as_ref().map(|p| p.store_id).unwrap_or_default();
                if to != self.store.store_id {
                    tracing::warn!(to, me = self.store.store_id, "raft message for another store dropped");
                    continue;
                }
                TRANSPORT_RECEIVED.inc();
                self.store.on_raft_message(msg);
            }
        }
        Ok(Response::new(Done {}))
    }
}
