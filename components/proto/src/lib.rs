//! Generated protobuf and gRPC types for Atoll.
//!
//! `metapb`, `errorpb`, `kvrpcpb`, `tikvpb`, `pdpb` and `keyspacepb` are a
//! wire-compatible subset of TiKV's kvproto (same packages, service names and
//! field numbers), so TiKV clients talk to Atoll unchanged. `atollpb` is our
//! own store-to-store and on-disk protocol. This crate holds generated code
//! only and depends on nothing else in the workspace.

#![allow(clippy::all)]

pub mod metapb {
    tonic::include_proto!("metapb");
}
pub mod errorpb {
    tonic::include_proto!("errorpb");
}
pub mod eraftpb {
    tonic::include_proto!("eraftpb");
}
pub mod kvrpcpb {
    tonic::include_proto!("kvrpcpb");
}
pub mod tikvpb {
    tonic::include_proto!("tikvpb");
}
pub mod pdpb {
    tonic::include_proto!("pdpb");
}
pub mod keyspacepb {
    tonic::include_proto!("keyspacepb");
}
pub mod atollpb {
    tonic::include_proto!("atollpb");
}

pub use prost::Message;
