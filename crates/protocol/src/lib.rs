//! RESP framing for ringkv: the bytes on the wire between clients and the server.
//!
//! This crate owns the Redis serialization protocol, versions 2 and 3: parsing client
//! requests ([`RequestParser`], one per connection, which resumes a partly arrived request
//! where it stopped so a request trickled in many reads costs linear time; [`parse_request`]
//! for whole buffers: arrays of bulk strings and inline command lines, with Redis' limits and
//! error texts), the [`Frame`] type for replies and any other RESP value, its
//! encoding for either [`RespVersion`] (RESP2 downgrades of RESP3 types included), and a
//! parser for any value ([`Frame::parse`]) for clients, tests and replication links.
//!
//! It does not touch sockets, commands or storage: no I/O, no tokio, no engine. Callers hand
//! it bytes and get values back (or the reverse); what a request *means* is the server's job.

#![warn(missing_docs)]

mod error;
mod frame;
mod inline;
mod limits;
mod number;
mod request;

pub use bytes::{Bytes, BytesMut};

pub use error::ProtocolError;
pub use frame::{Frame, FRAME_DEPTH_MAX};
pub use limits::{Limits, ARGS_MAX_DEFAULT, BULK_BYTES_MAX_DEFAULT, INLINE_BYTES_MAX_DEFAULT};
pub use number::{format_double, parse_i64_strict as parse_i64};
pub use request::{encode_request, parse_request, RequestParser};

/// RESP protocol version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RespVersion {
    /// RESP2, what every connection starts with.
    #[default]
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}
