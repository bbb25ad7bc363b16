//! The rendezvous wire format (libp2p `rendezvous/README.md`, proto2), written so that every
//! dialect seen in the wild decodes:
//!
//! - sub-messages of `Message` are kept as bytes and decoded one by one, so a broken `Register`
//!   is reported as a bad record rather than as an unreadable message;
//! - namespaces are bytes on the wire (protobuf `string` and `bytes` share a wire type) and are
//!   checked for UTF-8 separately, to answer `E_INVALID_NAMESPACE` instead of failing to decode;
//! - `Register.signedPeerRecord` (field 2) also carries the original go-libp2p-rendezvous
//!   `PeerInfo { id = 1, addrs = 2 }`, which uses the same tag and wire type;
//! - every field is `optional`, so proto2 readers (nim-libp2p requires `type`, `status`, `ns`,
//!   `signedPeerRecord`) always find the fields they require, zero values included.

/// `Message.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Register = 0,
    RegisterResponse = 1,
    Unregister = 2,
    Discover = 3,
    DiscoverResponse = 4,
}

impl MessageType {
    pub fn from_i32(value: i32) -> Option<MessageType> {
        Some(match value {
            0 => MessageType::Register,
            1 => MessageType::RegisterResponse,
            2 => MessageType::Unregister,
            3 => MessageType::Discover,
            4 => MessageType::DiscoverResponse,
            _ => return None,
        })
    }
}

/// `ResponseStatus`, with the label used in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok = 0,
    InvalidNamespace = 100,
    InvalidSignedPeerRecord = 101,
    InvalidTtl = 102,
    InvalidCookie = 103,
    NotAuthorized = 200,
    InternalError = 300,
    Unavailable = 400,
}

impl Status {
    pub fn from_i32(value: i32) -> Option<Status> {
        Some(match value {
            0 => Status::Ok,
            100 => Status::InvalidNamespace,
            101 => Status::InvalidSignedPeerRecord,
            102 => Status::InvalidTtl,
            103 => Status::InvalidCookie,
            200 => Status::NotAuthorized,
            300 => Status::InternalError,
            400 => Status::Unavailable,
            _ => return None,
        })
    }

    /// The spec's name, as clients print it.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::InvalidNamespace => "E_INVALID_NAMESPACE",
            Status::InvalidSignedPeerRecord => "E_INVALID_SIGNED_PEER_RECORD",
            Status::InvalidTtl => "E_INVALID_TTL",
            Status::InvalidCookie => "E_INVALID_COOKIE",
            Status::NotAuthorized => "E_NOT_AUTHORIZED",
            Status::InternalError => "E_INTERNAL_ERROR",
            Status::Unavailable => "E_UNAVAILABLE",
        }
    }

    /// A bounded metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::InvalidNamespace => "invalid_namespace",
            Status::InvalidSignedPeerRecord => "invalid_record",
            Status::InvalidTtl => "invalid_ttl",
            Status::InvalidCookie => "invalid_cookie",
            Status::NotAuthorized => "not_authorized",
            Status::InternalError => "internal_error",
            Status::Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), *self as i32)
    }
}

/// `Message`, with its sub-messages as raw bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Message {
    #[prost(int32, optional, tag = "1")]
    pub r#type: Option<i32>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub register: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub register_response: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub unregister: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub discover: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "6")]
    pub discover_response: Option<Vec<u8>>,
}

/// `Register` (also each registration in a DISCOVER response).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Register {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub ns: Option<Vec<u8>>,
    /// A signed envelope (RFC 0002), or an unsigned `PeerInfo` from old go clients.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub signed_peer_record: Option<Vec<u8>>,
    /// Seconds. Old go clients send an `int64`; a negative one reads as a huge TTL and is
    /// refused as out of bounds.
    #[prost(uint64, optional, tag = "3")]
    pub ttl: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RegisterResponse {
    #[prost(int32, optional, tag = "1")]
    pub status: Option<i32>,
    #[prost(string, optional, tag = "2")]
    pub status_text: Option<String>,
    #[prost(uint64, optional, tag = "3")]
    pub ttl: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Unregister {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub ns: Option<Vec<u8>>,
    /// Deprecated (libp2p/specs#335); ignored: a peer only ever unregisters itself.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub id: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Discover {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub ns: Option<Vec<u8>>,
    #[prost(uint64, optional, tag = "2")]
    pub limit: Option<u64>,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub cookie: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DiscoverResponse {
    #[prost(message, repeated, tag = "1")]
    pub registrations: Vec<Register>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub cookie: Option<Vec<u8>>,
    #[prost(int32, optional, tag = "3")]
    pub status: Option<i32>,
    #[prost(string, optional, tag = "4")]
    pub status_text: Option<String>,
}

/// RFC 0002 signed envelope.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    #[prost(bytes = "vec", tag = "1")]
    pub public_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub payload_type: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub payload: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    pub signature: Vec<u8>,
}

/// RFC 0003 peer record (both the standard and the legacy rust-libp2p flavour).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PeerRecord {
    #[prost(bytes = "vec", tag = "1")]
    pub peer_id: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    #[prost(message, repeated, tag = "3")]
    pub addresses: Vec<AddressInfo>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AddressInfo {
    #[prost(bytes = "vec", tag = "1")]
    pub multiaddr: Vec<u8>,
}

/// nwaku's `WakuPeerRecord` (waku_rendezvous/waku_peer_record.nim).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WakuPeerRecord {
    #[prost(bytes = "vec", tag = "1")]
    pub peer_id: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub seq_no: u64,
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub multiaddrs: Vec<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub mix_key: Option<Vec<u8>>,
}

/// The original go-libp2p-rendezvous `PeerInfo`: unsigned.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PeerInfo {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub id: Option<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub addrs: Vec<Vec<u8>>,
}

/// The message type of a request, read from its first field without decoding the rest, so
/// a request refused before decoding (overload, throttle) still gets the matching response
/// type. Encoders put field 1 first; anything else is reported as unknown.
pub fn peek_type(bytes: &[u8]) -> Option<MessageType> {
    match bytes {
        [0x08, value, ..] if *value < 0x80 => MessageType::from_i32(i32::from(*value)),
        _ => None,
    }
}

// === builders ===

use prost::Message as _;

/// A complete `REGISTER_RESPONSE` message.
pub fn register_response(status: Status, text: &str, ttl: Option<u64>) -> Vec<u8> {
    let body = RegisterResponse {
        status: Some(status as i32),
        status_text: (!text.is_empty()).then(|| text.to_owned()),
        ttl,
    };
    Message {
        r#type: Some(MessageType::RegisterResponse as i32),
        register_response: Some(body.encode_to_vec()),
        ..Default::default()
    }
    .encode_to_vec()
}

/// A complete `DISCOVER_RESPONSE` message.
pub fn discover_response(
    status: Status,
    text: &str,
    registrations: Vec<Register>,
    cookie: Option<Vec<u8>>,
) -> Vec<u8> {
    let body = DiscoverResponse {
        registrations,
        cookie,
        status: Some(status as i32),
        status_text: (!text.is_empty()).then(|| text.to_owned()),
    };
    Message {
        r#type: Some(MessageType::DiscoverResponse as i32),
        discover_response: Some(body.encode_to_vec()),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The response to a request refused before it was decoded, typed after [`peek_type`]
/// (DISCOVER gets a DISCOVER_RESPONSE, anything else a REGISTER_RESPONSE).
pub fn refusal_for(request: &[u8], status: Status, text: &str) -> Vec<u8> {
    match peek_type(request) {
        Some(MessageType::Discover) => discover_response(status, text, Vec::new(), None),
        _ => register_response(status, text, None),
    }
}

/// A complete `REGISTER` request.
pub fn register_request(ns: &str, signed_peer_record: Vec<u8>, ttl: Option<u64>) -> Vec<u8> {
    let body = Register {
        ns: Some(ns.as_bytes().to_vec()),
        signed_peer_record: Some(signed_peer_record),
        ttl,
    };
    Message {
        r#type: Some(MessageType::Register as i32),
        register: Some(body.encode_to_vec()),
        ..Default::default()
    }
    .encode_to_vec()
}

/// A complete `UNREGISTER` request.
pub fn unregister_request(ns: &str) -> Vec<u8> {
    let body = Unregister {
        ns: Some(ns.as_bytes().to_vec()),
        id: None,
    };
    Message {
        r#type: Some(MessageType::Unregister as i32),
        unregister: Some(body.encode_to_vec()),
        ..Default::default()
    }
    .encode_to_vec()
}

/// A complete `DISCOVER` request.
pub fn discover_request(ns: Option<&str>, limit: Option<u64>, cookie: Option<Vec<u8>>) -> Vec<u8> {
    let body = Discover {
        ns: ns.map(|n| n.as_bytes().to_vec()),
        limit,
        cookie,
    };
    Message {
        r#type: Some(MessageType::Discover as i32),
        discover: Some(body.encode_to_vec()),
        ..Default::default()
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_values_are_written_for_proto2_readers() {
        // type REGISTER (0) and status OK (0) must be on the wire: nim-libp2p requires them.
        let req = register_request("ns", vec![1], None);
        assert_eq!(&req[..2], &[0x08, 0x00]);
        let resp = register_response(Status::Ok, "", Some(60));
        let m = Message::decode(&resp[..]).unwrap();
        assert_eq!(m.r#type, Some(1));
        let body = RegisterResponse::decode(&m.register_response.unwrap()[..]).unwrap();
        assert_eq!(body.status, Some(0));
        assert_eq!(body.ttl, Some(60));
    }

    #[test]
    fn peek_reads_the_type_without_decoding_the_rest() {
        let req = discover_request(Some("rs/1/0"), Some(5), None);
        assert_eq!(peek_type(&req), Some(MessageType::Discover));
        assert_eq!(peek_type(&[0x12, 0x00]), None);
        assert_eq!(peek_type(&[]), None);
        let refusal = refusal_for(&req, Status::Unavailable, "busy");
        let m = Message::decode(&refusal[..]).unwrap();
        assert_eq!(m.r#type, Some(MessageType::DiscoverResponse as i32));
        let body = DiscoverResponse::decode(&m.discover_response.unwrap()[..]).unwrap();
        assert_eq!(body.status, Some(400));
        assert_eq!(body.status_text.as_deref(), Some("busy"));
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            Status::Ok,
            Status::InvalidNamespace,
            Status::InvalidSignedPeerRecord,
            Status::InvalidTtl,
            Status::InvalidCookie,
            Status::NotAuthorized,
            Status::InternalError,
            Status::Unavailable,
        ] {
            assert_eq!(Status::from_i32(s as i32), Some(s));
        }
        assert_eq!(Status::from_i32(7), None);
    }
}
