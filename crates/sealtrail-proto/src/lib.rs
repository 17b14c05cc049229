//! sealtrail's gRPC API (package `sealtrail.v1`): the code generated from
//! `proto/sealtrail/v1/audit_log.proto` (prost messages, a tonic client and server), the
//! encoded file descriptor set for server reflection, and conversions between the
//! messages and the core types.
//!
//! The conversions define what "same semantics as REST" means on the wire:
//! - [`event_input_to_json`] turns an [`AuditEventInput`] into the JSON object a REST
//!   client would have sent, so the server validates both with the same function and the
//!   same error codes;
//! - [`record_from_core`] / [`record_to_core`] carry a committed record losslessly: its
//!   metadata travels as the JSON text serde_json writes for REST, so a record fetched
//!   over gRPC and turned back into JSON hashes to its `hash`.
#![forbid(unsafe_code)]

#[allow(clippy::all, missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/sealtrail.v1.rs"));
}

pub use generated::*;

mod convert;
pub use convert::*;

mod encode;
pub use encode::{RecordAck, RecordRef};

/// The encoded `FileDescriptorSet` of `sealtrail.v1`, for the reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sealtrail_v1_descriptor.bin"));

/// The fully qualified name of the service, as health checks and reflection use it.
pub const SERVICE_NAME: &str = "sealtrail.v1.AuditLog";
