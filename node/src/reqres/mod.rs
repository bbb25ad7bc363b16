//! Request/response glue shared by every Waku service, written once.
//!
//! - [`codec`]: the framing (one stream per request, one varint length-prefixed frame each way),
//!   bounded per protocol;
//! - [`Behaviour`]: a `NetworkBehaviour` wrapping `request_response::Behaviour` for one
//!   [`Service`]: it admits each inbound request through the throttle *before* anything is
//!   decoded (a refusal is answered at once with the service's own "too many requests" reply),
//!   then hands the raw bytes to the service, which answers or emits a typed event for the
//!   rest of the node. It also resolves requests other tasks make through
//!   [`Command::Request`](crate::swarm::Command::Request).
//!
//! A service is a folder with a type implementing [`Service`]; the swarm task only routes its
//! events.

pub mod codec;
mod service;

use libp2p::request_response;
use tokio::sync::oneshot;

pub use codec::{encode_varint, read_frame, read_varint, write_frame, FrameTooLarge, LpCodec};
pub use service::{Behaviour, Endpoint, Handled, Inbound, Responder, Service};

/// The request/response protocols the swarm runs (how commands name them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Metadata,
    LightPush,
    LightPushLegacy,
    FilterSubscribe,
    FilterPush,
    PeerExchange,
    Store,
    Rendezvous,
    WakuRendezvous,
    Attestation,
}

impl Protocol {
    pub const ALL: [Protocol; 10] = [
        Protocol::Metadata,
        Protocol::LightPush,
        Protocol::LightPushLegacy,
        Protocol::FilterSubscribe,
        Protocol::FilterPush,
        Protocol::PeerExchange,
        Protocol::Store,
        Protocol::Rendezvous,
        Protocol::WakuRendezvous,
        Protocol::Attestation,
    ];
}

/// Why an outbound request got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("cannot reach the peer: {0}")]
    Dial(String),
    #[error("the peer did not answer in time")]
    Timeout,
    #[error("the peer does not support the protocol")]
    Unsupported,
    #[error("the connection closed before the response arrived")]
    ConnectionClosed,
    #[error("stream error: {0}")]
    Io(String),
    #[error("protocol is not enabled on this node")]
    Disabled,
    #[error("the node is shutting down")]
    ShuttingDown,
}

impl From<request_response::OutboundFailure> for RequestError {
    fn from(f: request_response::OutboundFailure) -> Self {
        match f {
            request_response::OutboundFailure::DialFailure => {
                RequestError::Dial("dial failed".into())
            }
            request_response::OutboundFailure::Timeout => RequestError::Timeout,
            request_response::OutboundFailure::UnsupportedProtocols => RequestError::Unsupported,
            request_response::OutboundFailure::ConnectionClosed => RequestError::ConnectionClosed,
            request_response::OutboundFailure::Io(e) => RequestError::Io(e.to_string()),
        }
    }
}

/// Where the response to a [`Command::Request`](crate::swarm::Command::Request) goes.
pub type ReplySender = oneshot::Sender<Result<Vec<u8>, RequestError>>;

/// The stable label of an inbound stream failure.
pub fn inbound_failure_label(error: &request_response::InboundFailure) -> &'static str {
    match error {
        request_response::InboundFailure::Timeout => "timeout",
        request_response::InboundFailure::ConnectionClosed => "connection_closed",
        request_response::InboundFailure::UnsupportedProtocols => "unsupported",
        request_response::InboundFailure::ResponseOmission => "response_omission",
        request_response::InboundFailure::Io(_) => "io",
    }
}

/// Whether a protocol is served (`Full`) or only used as a client (`Outbound`).
pub fn support(serve: bool) -> request_response::ProtocolSupport {
    if serve {
        request_response::ProtocolSupport::Full
    } else {
        request_response::ProtocolSupport::Outbound
    }
}
