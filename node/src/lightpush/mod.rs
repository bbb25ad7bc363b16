//! Light push (19/WAKU2-LIGHTPUSH): light clients hand a message to this node, which validates
//! it like any relayed message, publishes it on the relay and answers with a status code.
//!
//! Two wire versions are served side by side (waku.md §1.3):
//! - `/vac/waku/lightpush/3.0.0`: `LightPushRequest`/`LightPushResponse` with nwaku's status
//!   codes (200 + `relay_peer_count`, 400, 413, 420, 421, 429, 500, 503, 505); an absent pubsub
//!   topic is autosharded from the content topic ([`crate::relay::Config::autoshard`]);
//! - `/vac/waku/lightpush/2.0.0-beta1` (legacy): `PushRPC` with `is_success` + `info`.
//!
//! This module owns both wire formats, the `[lightpush]` config section and the
//! `roost_lightpush_*` metrics. Each version is a behaviour of its own (`behaviour.rs`): it is a
//! decode, a few checks, and an event asking the swarm task for a gossipsub publish. On a node with the store enabled, a storable message is
//! answered with 200 only once the store has committed it to its write-ahead log, so a light-push
//! 200 from a store node means "durably stored".
//!
//! The client side ([`encode_request`], [`decode_response`]) is what `roost publish` uses.

pub mod behaviour;
pub mod metrics;

use std::time::Duration;

use libp2p::StreamProtocol;
use prost::Message as _;
use serde::{Deserialize, Serialize};

pub use behaviour::{behaviour, published, refusal_for, Behaviour, Event, Service};
pub use metrics::Metrics;

use crate::message::{WakuMessage, WakuMessageProto};

/// Light push v3.
pub const PROTOCOL_V3: StreamProtocol = StreamProtocol::new("/vac/waku/lightpush/3.0.0");
/// Legacy light push, still used by older js-waku and go-waku (status-go) clients.
pub const PROTOCOL_LEGACY: StreamProtocol = StreamProtocol::new("/vac/waku/lightpush/2.0.0-beta1");

/// How long a request may take end to end (including the store's commit on a store node).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Protocol framing on top of the message (request id, topic, field tags).
const FRAME_OVERHEAD: usize = 64 * 1024;
/// Responses are a status and a short description.
const MAX_RESPONSE: usize = 64 * 1024;
/// `request_id` nwaku and Roost use when the request could not be decoded.
pub const UNKNOWN_REQUEST_ID: &str = "N/A";

/// `[lightpush]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Serve light push (v3 and legacy) to light clients. Needs `relay.enabled`. Default `true`.
    pub enabled: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config { enabled: true }
    }
}

/// Which wire version a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V3,
    Legacy,
}

impl Version {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Version::V3 => "v3",
            Version::Legacy => "legacy",
        }
    }

    pub fn protocol_id(self) -> StreamProtocol {
        match self {
            Version::V3 => PROTOCOL_V3,
            Version::Legacy => PROTOCOL_LEGACY,
        }
    }

    pub fn reqres(self) -> crate::reqres::Protocol {
        match self {
            Version::V3 => crate::reqres::Protocol::LightPush,
            Version::Legacy => crate::reqres::Protocol::LightPushLegacy,
        }
    }
}

/// Light push v3 status codes as nwaku and js-waku use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub u32);

impl Status {
    pub const SUCCESS: Status = Status(200);
    pub const BAD_REQUEST: Status = Status(400);
    pub const PAYLOAD_TOO_LARGE: Status = Status(413);
    pub const INVALID_MESSAGE: Status = Status(420);
    pub const UNSUPPORTED_PUBSUB_TOPIC: Status = Status(421);
    pub const TOO_MANY_REQUESTS: Status = Status(429);
    pub const INTERNAL_SERVER_ERROR: Status = Status(500);
    pub const SERVICE_NOT_AVAILABLE: Status = Status(503);
    pub const NO_PEERS_TO_RELAY: Status = Status(505);

    /// The name nwaku gives the code.
    pub fn name(self) -> &'static str {
        match self.0 {
            200 => "SUCCESS",
            400 => "BAD_REQUEST",
            413 => "PAYLOAD_TOO_LARGE",
            420 => "INVALID_MESSAGE",
            421 => "UNSUPPORTED_PUBSUB_TOPIC",
            429 => "TOO_MANY_REQUESTS",
            500 => "INTERNAL_SERVER_ERROR",
            503 => "SERVICE_NOT_AVAILABLE",
            504 => "OUT_OF_RLN_PROOF",
            505 => "NO_PEERS_TO_RELAY",
            _ => "UNKNOWN",
        }
    }

    /// The `outcome` metric label.
    pub fn outcome(self) -> &'static str {
        match self.0 {
            200 => "ok",
            400 => "bad_request",
            413 => "too_large",
            420 => "invalid",
            421 => "unsupported_topic",
            429 => "throttled",
            503 => "unavailable",
            505 => "no_peers",
            _ => "internal",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0, self.name())
    }
}

/// A request refused with a status and a description for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: Status,
    pub description: String,
}

impl Refused {
    pub fn new(status: Status, description: impl Into<String>) -> Self {
        Refused {
            status,
            description: description.into(),
        }
    }
}

// === wire formats ===

/// `/vac/waku/lightpush/3.0.0` request. Required fields are `optional` so they are always
/// written, even when empty (nwaku rejects requests without them; waku.md §0.1).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LightPushRequestV3 {
    #[prost(string, optional, tag = "1")]
    pub request_id: Option<String>,
    #[prost(string, optional, tag = "20")]
    pub pubsub_topic: Option<String>,
    #[prost(message, optional, tag = "21")]
    pub message: Option<WakuMessageProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LightPushResponseV3 {
    #[prost(string, optional, tag = "1")]
    pub request_id: Option<String>,
    #[prost(uint32, optional, tag = "10")]
    pub status_code: Option<u32>,
    #[prost(string, optional, tag = "11")]
    pub status_desc: Option<String>,
    #[prost(uint32, optional, tag = "12")]
    pub relay_peer_count: Option<u32>,
}

/// Legacy `/vac/waku/lightpush/2.0.0-beta1` envelope.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRpc {
    #[prost(string, optional, tag = "1")]
    pub request_id: Option<String>,
    #[prost(message, optional, tag = "2")]
    pub request: Option<PushRequestLegacy>,
    #[prost(message, optional, tag = "3")]
    pub response: Option<PushResponseLegacy>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequestLegacy {
    #[prost(string, optional, tag = "1")]
    pub pubsub_topic: Option<String>,
    #[prost(message, optional, tag = "2")]
    pub message: Option<WakuMessageProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PushResponseLegacy {
    #[prost(bool, optional, tag = "1")]
    pub is_success: Option<bool>,
    #[prost(string, optional, tag = "2")]
    pub info: Option<String>,
}

/// A decoded push request, whichever version it came in.
#[derive(Debug, Clone, PartialEq)]
pub struct PushRequest {
    pub request_id: String,
    /// `None`: autoshard from the content topic.
    pub pubsub_topic: Option<String>,
    pub message: WakuMessage,
}

/// Decodes a request; a refusal carries the request id when it could be read.
pub fn decode_request(version: Version, bytes: &[u8]) -> Result<PushRequest, (String, Refused)> {
    let unknown = || UNKNOWN_REQUEST_ID.to_owned();
    match version {
        Version::V3 => {
            let request = LightPushRequestV3::decode(bytes).map_err(|e| {
                (
                    unknown(),
                    Refused::new(Status::BAD_REQUEST, format!("cannot decode request: {e}")),
                )
            })?;
            let request_id = request.request_id.unwrap_or_default();
            let Some(message) = request.message else {
                return Err((
                    request_id,
                    Refused::new(Status::BAD_REQUEST, "request has no message"),
                ));
            };
            Ok(PushRequest {
                request_id,
                pubsub_topic: request.pubsub_topic,
                message: message.into(),
            })
        }
        Version::Legacy => {
            let rpc = PushRpc::decode(bytes).map_err(|e| {
                (
                    unknown(),
                    Refused::new(Status::BAD_REQUEST, format!("cannot decode request: {e}")),
                )
            })?;
            let request_id = rpc.request_id.unwrap_or_default();
            let Some(request) = rpc.request else {
                return Err((
                    request_id,
                    Refused::new(Status::BAD_REQUEST, "request body is empty"),
                ));
            };
            let Some(message) = request.message else {
                return Err((
                    request_id,
                    Refused::new(Status::BAD_REQUEST, "request has no message"),
                ));
            };
            // Legacy clients always name the topic; an empty one is autosharded like v3's
            // absent one.
            let pubsub_topic = request.pubsub_topic.filter(|t| !t.is_empty());
            Ok(PushRequest {
                request_id,
                pubsub_topic,
                message: message.into(),
            })
        }
    }
}

/// Encodes the answer to a request: `Ok(relay peers)` or a refusal.
pub fn encode_response(
    version: Version,
    request_id: &str,
    result: &Result<u32, Refused>,
) -> Vec<u8> {
    match version {
        Version::V3 => {
            let response = match result {
                Ok(peers) => LightPushResponseV3 {
                    request_id: Some(request_id.to_owned()),
                    status_code: Some(Status::SUCCESS.0),
                    status_desc: None,
                    relay_peer_count: Some(*peers),
                },
                Err(refused) => LightPushResponseV3 {
                    request_id: Some(request_id.to_owned()),
                    status_code: Some(refused.status.0),
                    status_desc: Some(refused.description.clone()),
                    relay_peer_count: None,
                },
            };
            response.encode_to_vec()
        }
        Version::Legacy => {
            let response = match result {
                Ok(_) => PushResponseLegacy {
                    is_success: Some(true),
                    info: Some("OK".into()),
                },
                Err(refused) => PushResponseLegacy {
                    is_success: Some(false),
                    info: Some(refused.description.clone()),
                },
            };
            PushRpc {
                request_id: Some(request_id.to_owned()),
                request: None,
                response: Some(response),
            }
            .encode_to_vec()
        }
    }
}

/// A request as a client sends it.
pub fn encode_request(
    version: Version,
    request_id: &str,
    pubsub_topic: Option<&str>,
    message: &WakuMessage,
) -> Vec<u8> {
    let proto = WakuMessageProto::from(message.clone());
    match version {
        Version::V3 => LightPushRequestV3 {
            request_id: Some(request_id.to_owned()),
            pubsub_topic: pubsub_topic.map(str::to_owned),
            message: Some(proto),
        }
        .encode_to_vec(),
        Version::Legacy => PushRpc {
            request_id: Some(request_id.to_owned()),
            request: Some(PushRequestLegacy {
                pubsub_topic: Some(pubsub_topic.unwrap_or_default().to_owned()),
                message: Some(proto),
            }),
            response: None,
        }
        .encode_to_vec(),
    }
}

/// What a service node answered, as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReply {
    pub request_id: String,
    /// v3 status code; legacy answers map `is_success` to 200 and failures to 0 (no code).
    pub status: Status,
    pub description: Option<String>,
    pub relay_peer_count: Option<u32>,
}

impl PushReply {
    /// Success as js-waku and nwaku's client judge it: 200 and at least one relay peer (a
    /// legacy success has no count).
    pub fn is_success(&self) -> bool {
        self.status == Status::SUCCESS && self.relay_peer_count != Some(0)
    }
}

/// Decodes a service node's answer.
pub fn decode_response(version: Version, bytes: &[u8]) -> Result<PushReply, prost::DecodeError> {
    match version {
        Version::V3 => {
            let r = LightPushResponseV3::decode(bytes)?;
            Ok(PushReply {
                request_id: r.request_id.unwrap_or_default(),
                status: Status(r.status_code.unwrap_or_default()),
                description: r.status_desc,
                relay_peer_count: r.relay_peer_count,
            })
        }
        Version::Legacy => {
            let r = PushRpc::decode(bytes)?;
            let response = r.response.unwrap_or_default();
            Ok(PushReply {
                request_id: r.request_id.unwrap_or_default(),
                status: if response.is_success.unwrap_or(false) {
                    Status::SUCCESS
                } else {
                    Status(0)
                },
                description: response.info,
                relay_peer_count: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> WakuMessage {
        WakuMessage {
            timestamp: Some(1_700_000_000_000_000_000),
            ..WakuMessage::new("/app/1/chat/proto", b"hello".to_vec())
        }
    }

    #[test]
    fn v3_requests_round_trip_and_keep_an_absent_topic_absent() {
        let bytes = encode_request(Version::V3, "r1", None, &message());
        let request = decode_request(Version::V3, &bytes).unwrap();
        assert_eq!(request.request_id, "r1");
        assert_eq!(request.pubsub_topic, None);
        assert_eq!(request.message, message());
        let bytes = encode_request(Version::V3, "r2", Some("/waku/2/rs/1/0"), &message());
        let request = decode_request(Version::V3, &bytes).unwrap();
        assert_eq!(request.pubsub_topic.as_deref(), Some("/waku/2/rs/1/0"));
    }

    #[test]
    fn legacy_requests_round_trip() {
        let bytes = encode_request(Version::Legacy, "r1", Some("/waku/2/rs/1/3"), &message());
        let request = decode_request(Version::Legacy, &bytes).unwrap();
        assert_eq!(request.request_id, "r1");
        assert_eq!(request.pubsub_topic.as_deref(), Some("/waku/2/rs/1/3"));
        assert_eq!(request.message, message());
    }

    #[test]
    fn malformed_and_incomplete_requests_are_bad_requests() {
        let (id, refused) = decode_request(Version::V3, &[0xff, 0xff, 0xff]).unwrap_err();
        assert_eq!(id, UNKNOWN_REQUEST_ID);
        assert_eq!(refused.status, Status::BAD_REQUEST);
        let no_message = LightPushRequestV3 {
            request_id: Some("x".into()),
            ..Default::default()
        }
        .encode_to_vec();
        let (id, refused) = decode_request(Version::V3, &no_message).unwrap_err();
        assert_eq!(id, "x");
        assert_eq!(refused.status, Status::BAD_REQUEST);
        let empty_rpc = PushRpc {
            request_id: Some("y".into()),
            ..Default::default()
        }
        .encode_to_vec();
        let (id, refused) = decode_request(Version::Legacy, &empty_rpc).unwrap_err();
        assert_eq!((id.as_str(), refused.status), ("y", Status::BAD_REQUEST));
    }

    #[test]
    fn responses_always_carry_request_id_and_status() {
        // An empty request id and a success are still written (nwaku requires both fields).
        let bytes = encode_response(Version::V3, "", &Ok(3));
        assert_eq!(&bytes[..2], &[0x0a, 0x00], "field 1 present though empty");
        let reply = decode_response(Version::V3, &bytes).unwrap();
        assert_eq!(reply.status, Status::SUCCESS);
        assert_eq!(reply.relay_peer_count, Some(3));
        assert!(reply.is_success());
        let refused = Refused::new(Status::NO_PEERS_TO_RELAY, "no peers");
        let reply = decode_response(
            Version::V3,
            &encode_response(Version::V3, "a", &Err(refused)),
        )
        .unwrap();
        assert_eq!(reply.status.0, 505);
        assert_eq!(reply.description.as_deref(), Some("no peers"));
        assert!(!reply.is_success());
    }

    #[test]
    fn legacy_responses_map_to_success_or_failure() {
        let ok = decode_response(
            Version::Legacy,
            &encode_response(Version::Legacy, "a", &Ok(1)),
        )
        .unwrap();
        assert!(ok.is_success());
        assert_eq!(ok.request_id, "a");
        let refused = Refused::new(Status::INVALID_MESSAGE, "bad topic");
        let err = decode_response(
            Version::Legacy,
            &encode_response(Version::Legacy, "b", &Err(refused)),
        )
        .unwrap();
        assert!(!err.is_success());
        assert_eq!(err.description.as_deref(), Some("bad topic"));
    }

    #[test]
    fn zero_relay_peers_is_not_success_for_clients() {
        let reply = PushReply {
            request_id: String::new(),
            status: Status::SUCCESS,
            description: None,
            relay_peer_count: Some(0),
        };
        assert!(!reply.is_success());
    }
}

/// Property tests: what `roost publish` writes, the service reads back unchanged, in both
/// versions, and the service's answers read back as the client judges them.
#[cfg(test)]
mod props {
    use proptest::{option, prelude::*};

    use super::*;
    use crate::message::props::message;

    proptest! {
        #[test]
        fn requests_round_trip(
            id in ".{0,20}",
            topic in option::of("/waku/2/rs/[0-9]{1,2}/[0-9]{1,3}"),
            message in message(),
        ) {
            for version in [Version::V3, Version::Legacy] {
                let bytes = encode_request(version, &id, topic.as_deref(), &message);
                let request = decode_request(version, &bytes).unwrap();
                prop_assert_eq!(&request.request_id, &id);
                prop_assert_eq!(&request.pubsub_topic, &topic);
                prop_assert_eq!(&request.message, &message);
            }
        }

        #[test]
        fn responses_round_trip(
            id in ".{0,20}",
            result in prop_oneof![
                any::<u32>().prop_map(Ok),
                (prop::sample::select(vec![400u32, 413, 429, 500, 503]), ".{0,30}")
                    .prop_map(|(code, text)| Err(Refused::new(Status(code), text))),
            ],
        ) {
            let v3 = decode_response(Version::V3, &encode_response(Version::V3, &id, &result)).unwrap();
            prop_assert_eq!(&v3.request_id, &id);
            match &result {
                Ok(peers) => {
                    prop_assert_eq!(v3.status, Status::SUCCESS);
                    prop_assert_eq!(v3.relay_peer_count, Some(*peers));
                    prop_assert_eq!(v3.is_success(), *peers > 0);
                }
                Err(refused) => {
                    prop_assert_eq!(v3.status, refused.status);
                    prop_assert_eq!(v3.description.as_deref(), Some(refused.description.as_str()));
                    prop_assert!(!v3.is_success());
                }
            }
            let legacy = decode_response(
                Version::Legacy,
                &encode_response(Version::Legacy, &id, &result),
            )
            .unwrap();
            prop_assert_eq!(&legacy.request_id, &id);
            prop_assert_eq!(legacy.is_success(), result.is_ok());
        }
    }
}
