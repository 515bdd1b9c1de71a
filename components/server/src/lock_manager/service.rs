//! The deadlock detector's gRPC service: other stores' waits, checked on
//! this store's table. A store that is not (or no longer) where PD puts
//! the detector still answers from its table; see `route` for why that
//! is safe.

use std::sync::Arc;

use atoll_proto::atollpb::deadlock_detector_server::DeadlockDetector;
use atoll_proto::atollpb::{DetectRequest, DetectResponse, DetectType};
use tonic::{Request, Response, Status};

use super::LockManager;
use super::{wait_for, wait_for_entry};

pub struct DetectorService {
    pub locks: Arc<LockManager>,
}

#[tonic::async_trait]
impl DeadlockDetector for DetectorService {
    async fn detect(
        &self,
        req: Request<DetectRequest>,
    ) -> Result<Response<DetectResponse>, Status> {
        let req = req.into_inner();
        let entry = req.entry.ok_or_else(|| Status::invalid_argument("detect without an entry"))?;
        let w = wait_for(&entry);
        let mut resp = DetectResponse::default();
        match DetectType::try_from(req.tp) {
            Ok(DetectType::Detect) => {
                if let Some(chain) = self.locks.detect_here(&w) {
                    resp.deadlock = true;
                    resp.wait_chain = chain.iter().map(wait_for_entry).collect();
                }
            }
            Ok(DetectType::CleanUpWaitFor) => self.locks.clean_up_here(&w),
            Err(_) => return Err(Status::invalid_argument(format!("detect type {}", req.tp))),
        }
        Ok(Response::new(resp))
    }
}
