//! Filter v2 (12/WAKU2-FILTER): light clients subscribe to (pubsub topic, content topic) pairs
//! and this node pushes them every matching message it relays.
//!
//! - `/vac/waku/filter-subscribe/2.0.0-beta1`: SUBSCRIBE / UNSUBSCRIBE / UNSUBSCRIBE_ALL /
//!   SUBSCRIBER_PING, answered with 200, 400 (bad criteria, more than
//!   [`MAX_CONTENT_TOPICS_PER_REQUEST`] topics), 404 (no such subscription), 429 or 503 (the
//!   node's subscriber or per-peer criteria caps are reached). A subscription lapses after
//!   `filter.subscription_timeout` (5 min) without a subscribe or ping.
//! - `/vac/waku/filter-push/2.0.0-beta1`: service → client `MessagePush`, no response; a push
//!   counts as delivered once written to the subscriber's stream (as in nwaku; js-waku never
//!   closes its side), and fails if that takes longer than `filter.push_timeout`.
//!
//! This module owns both wire formats, the `[filter]` config section, the `roost_filter_*`
//! metrics and the subscription state. The state lives in its own task ([`service`]): the swarm
//! task hands it inbound requests (with their response channels) and accepted relay messages
//! (through a [`service::Sink`], never blocking); the filter task answers and pushes through the
//! command channel. Subscribers' connections are kept open while they are subscribed.
//!
//! The client side ([`encode_subscribe_request`], [`decode_subscribe_response`], and pushes
//! arriving on any node through [`ReceivedPush`]) is what `roost subscribe` uses.

pub mod behaviour;
pub mod metrics;
pub mod service;
pub mod subscriptions;

use std::time::Duration;

use libp2p::{PeerId, StreamProtocol};
use prost::Message as _;
use serde::{Deserialize, Serialize};

pub use behaviour::{
    push_behaviour, subscribe_behaviour, PushBehaviour, PushService, SubscribeBehaviour,
    SubscribeService,
};
pub use metrics::Metrics;

use crate::{
    message::{MessageHash, WakuMessage, WakuMessageProto},
    units,
};

pub const SUBSCRIBE_PROTOCOL: StreamProtocol =
    StreamProtocol::new("/vac/waku/filter-subscribe/2.0.0-beta1");
pub const PUSH_PROTOCOL: StreamProtocol = StreamProtocol::new("/vac/waku/filter-push/2.0.0-beta1");

/// Most content topics one SUBSCRIBE or UNSUBSCRIBE may name (nwaku's limit).
pub const MAX_CONTENT_TOPICS_PER_REQUEST: usize = 100;
/// Subscribe requests are a few topics; 100 long topics fit easily.
const MAX_SUBSCRIBE_REQUEST: usize = 256 * 1024;
const MAX_SUBSCRIBE_RESPONSE: usize = 64 * 1024;
/// Protocol framing around a pushed message.
const PUSH_OVERHEAD: usize = 64 * 1024;
/// A client accepts pushes of messages up to this size whatever its own relay limit (Status
/// fleets relay 1 MiB messages).
const MIN_PUSH_MESSAGE: usize = 1024 * 1024;
/// How long a subscribe request may take end to end.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(20);
/// `request_id` used when the request could not be decoded.
pub const UNKNOWN_REQUEST_ID: &str = "N/A";

/// `[filter]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Serve filter subscriptions to light clients. Needs `relay.enabled`. Default `true`.
    pub enabled: bool,
    /// Most peers subscribed at once; more get 503. Default `1000`.
    pub max_peers: usize,
    /// Most (pubsub topic, content topic) criteria one peer may hold; more get 503.
    /// Default `1000`.
    pub max_criteria_per_peer: usize,
    /// A subscription lapses after this long without a subscribe or ping. Default `5m`.
    #[serde(with = "units::duration")]
    pub subscription_timeout: Duration,
    /// A push not written to the subscriber within this long counts as failed. Default `20s`.
    #[serde(with = "units::duration")]
    pub push_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            max_peers: 1000,
            max_criteria_per_peer: 1000,
            subscription_timeout: Duration::from_secs(300),
            push_timeout: Duration::from_secs(20),
        }
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.max_peers == 0 {
            return Err(
                "filter.max_peers must be at least 1 (or set filter.enabled = false)".into(),
            );
        }
        if self.max_criteria_per_peer == 0 {
            return Err("filter.max_criteria_per_peer must be at least 1".into());
        }
        if self.subscription_timeout < Duration::from_secs(1) {
            return Err("filter.subscription_timeout must be at least 1s; js-waku pings every 60s, so keep it above that (default 5m)".into());
        }
        if self.push_timeout.is_zero() {
            return Err("filter.push_timeout must be above 0, e.g. 20s".into());
        }
        Ok(())
    }
}

/// Filter status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub u32);

impl Status {
    pub const OK: Status = Status(200);
    pub const BAD_REQUEST: Status = Status(400);
    pub const NOT_FOUND: Status = Status(404);
    pub const TOO_MANY_REQUESTS: Status = Status(429);
    pub const SERVICE_UNAVAILABLE: Status = Status(503);

    pub fn name(self) -> &'static str {
        match self.0 {
            200 => "OK",
            400 => "BAD_REQUEST",
            404 => "NOT_FOUND",
            429 => "TOO_MANY_REQUESTS",
            503 => "SERVICE_UNAVAILABLE",
            _ => "UNKNOWN",
        }
    }

    /// The `outcome` metric label.
    pub fn outcome(self) -> &'static str {
        match self.0 {
            200 => "ok",
            400 => "bad_request",
            404 => "not_found",
            429 => "throttled",
            _ => "unavailable",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0, self.name())
    }
}

/// A refusal: status and a description for the client.
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

/// `filter_subscribe_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestType {
    Ping = 0,
    Subscribe = 1,
    Unsubscribe = 2,
    UnsubscribeAll = 3,
}

impl RequestType {
    pub fn from_wire(value: Option<u32>) -> Option<RequestType> {
        // Absent means PING, as in nwaku.
        match value.unwrap_or(0) {
            0 => Some(RequestType::Ping),
            1 => Some(RequestType::Subscribe),
            2 => Some(RequestType::Unsubscribe),
            3 => Some(RequestType::UnsubscribeAll),
            _ => None,
        }
    }

    /// The `type` metric label.
    pub fn label(self) -> &'static str {
        match self {
            RequestType::Ping => "ping",
            RequestType::Subscribe => "subscribe",
            RequestType::Unsubscribe => "unsubscribe",
            RequestType::UnsubscribeAll => "unsubscribe_all",
        }
    }
}

/// What a subscribe request asks for, decoded and checked as the filter service reads it
/// (everything but this node's topics and its subscription table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeRequest {
    Ping,
    UnsubscribeAll,
    Subscribe {
        pubsub_topic: String,
        content_topics: Vec<String>,
    },
    Unsubscribe {
        pubsub_topic: String,
        content_topics: Vec<String>,
    },
}

impl SubscribeRequest {
    pub fn kind(&self) -> RequestType {
        match self {
            SubscribeRequest::Ping => RequestType::Ping,
            SubscribeRequest::UnsubscribeAll => RequestType::UnsubscribeAll,
            SubscribeRequest::Subscribe { .. } => RequestType::Subscribe,
            SubscribeRequest::Unsubscribe { .. } => RequestType::Unsubscribe,
        }
    }
}

/// A subscribe request that gets a refusal: the request id to echo (`N/A` when the request could
/// not be decoded), the request type when it was known, and the refusal.
pub type BadSubscribeRequest = (String, Option<RequestType>, Refused);

/// Decodes one subscribe request (the server side) and checks its shape: a known type, and for
/// SUBSCRIBE/UNSUBSCRIBE a pubsub topic and 1 to [`MAX_CONTENT_TOPICS_PER_REQUEST`] content
/// topics. Returns the request id to echo with the request.
pub fn decode_subscribe_request(
    bytes: &[u8],
) -> Result<(String, SubscribeRequest), BadSubscribeRequest> {
    let request = FilterSubscribeRequest::decode(bytes).map_err(|e| {
        (
            UNKNOWN_REQUEST_ID.to_owned(),
            None,
            Refused::new(Status::BAD_REQUEST, format!("cannot decode request: {e}")),
        )
    })?;
    let request_id = request.request_id.clone().unwrap_or_default();
    let Some(kind) = RequestType::from_wire(request.filter_subscribe_type) else {
        return Err((
            request_id,
            None,
            Refused::new(
                Status::BAD_REQUEST,
                format!(
                    "unknown filter_subscribe_type {}",
                    request.filter_subscribe_type.unwrap_or_default()
                ),
            ),
        ));
    };
    let topics = |request: FilterSubscribeRequest| {
        let bad = |description: String| {
            (
                request_id.clone(),
                Some(kind),
                Refused::new(Status::BAD_REQUEST, description),
            )
        };
        let Some(pubsub_topic) = request.pubsub_topic.filter(|t| !t.is_empty()) else {
            return Err(bad("pubsub_topic and content_topics must be given".into()));
        };
        let content_topics = request.content_topics;
        if content_topics.is_empty() {
            return Err(bad("pubsub_topic and content_topics must be given".into()));
        }
        if content_topics.len() > MAX_CONTENT_TOPICS_PER_REQUEST {
            return Err(bad(format!(
                "{} content topics: exceeds maximum content topics: {MAX_CONTENT_TOPICS_PER_REQUEST}",
                content_topics.len()
            )));
        }
        Ok((pubsub_topic, content_topics))
    };
    let decoded = match kind {
        RequestType::Ping => SubscribeRequest::Ping,
        RequestType::UnsubscribeAll => SubscribeRequest::UnsubscribeAll,
        RequestType::Subscribe => {
            let (pubsub_topic, content_topics) = topics(request)?;
            SubscribeRequest::Subscribe {
                pubsub_topic,
                content_topics,
            }
        }
        RequestType::Unsubscribe => {
            let (pubsub_topic, content_topics) = topics(request)?;
            SubscribeRequest::Unsubscribe {
                pubsub_topic,
                content_topics,
            }
        }
    };
    Ok((request_id, decoded))
}

// === wire formats (required fields are `optional` so they are always written) ===

#[derive(Clone, PartialEq, prost::Message)]
pub struct FilterSubscribeRequest {
    #[prost(string, optional, tag = "1")]
    pub request_id: Option<String>,
    #[prost(uint32, optional, tag = "2")]
    pub filter_subscribe_type: Option<u32>,
    #[prost(string, optional, tag = "10")]
    pub pubsub_topic: Option<String>,
    #[prost(string, repeated, tag = "11")]
    pub content_topics: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FilterSubscribeResponse {
    #[prost(string, optional, tag = "1")]
    pub request_id: Option<String>,
    #[prost(uint32, optional, tag = "10")]
    pub status_code: Option<u32>,
    #[prost(string, optional, tag = "11")]
    pub status_desc: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MessagePush {
    #[prost(message, optional, tag = "1")]
    pub waku_message: Option<WakuMessageProto>,
    #[prost(string, optional, tag = "2")]
    pub pubsub_topic: Option<String>,
}

/// Encodes a response.
pub fn encode_subscribe_response(request_id: &str, result: &Result<(), Refused>) -> Vec<u8> {
    let (code, desc) = match result {
        Ok(()) => (Status::OK.0, None),
        Err(r) => (r.status.0, Some(r.description.clone())),
    };
    FilterSubscribeResponse {
        request_id: Some(request_id.to_owned()),
        status_code: Some(code),
        status_desc: desc,
    }
    .encode_to_vec()
}

/// Encodes a push.
pub fn encode_push(pubsub_topic: &str, message: &WakuMessage) -> Vec<u8> {
    MessagePush {
        waku_message: Some(message.clone().into()),
        pubsub_topic: Some(pubsub_topic.to_owned()),
    }
    .encode_to_vec()
}

/// A request as a client sends it.
pub fn encode_subscribe_request(
    request_id: &str,
    kind: RequestType,
    pubsub_topic: Option<&str>,
    content_topics: &[String],
) -> Vec<u8> {
    FilterSubscribeRequest {
        request_id: Some(request_id.to_owned()),
        filter_subscribe_type: Some(kind as u32),
        pubsub_topic: pubsub_topic.map(str::to_owned),
        content_topics: content_topics.to_vec(),
    }
    .encode_to_vec()
}

/// A service node's answer as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeReply {
    pub request_id: String,
    pub status: Status,
    pub description: Option<String>,
}

pub fn decode_subscribe_response(bytes: &[u8]) -> Result<SubscribeReply, prost::DecodeError> {
    let r = FilterSubscribeResponse::decode(bytes)?;
    Ok(SubscribeReply {
        request_id: r.request_id.unwrap_or_default(),
        status: Status(r.status_code.unwrap_or_default()),
        description: r.status_desc,
    })
}

/// A message a filter service pushed to this node (client side).
#[derive(Debug, Clone)]
pub struct ReceivedPush {
    /// The service node that pushed it.
    pub peer: PeerId,
    pub pubsub_topic: String,
    pub message: WakuMessage,
    pub hash: MessageHash,
}

/// Decodes a push; `None` when it is malformed or names no pubsub topic.
pub fn decode_push(peer: PeerId, bytes: &[u8]) -> Option<ReceivedPush> {
    let push = MessagePush::decode(bytes).ok()?;
    let pubsub_topic = push.pubsub_topic?;
    let message: WakuMessage = push.waku_message?.into();
    let hash = message.hash(&pubsub_topic);
    Some(ReceivedPush {
        peer,
        pubsub_topic,
        message,
        hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let topics = vec!["/a/1/b/proto".to_owned(), "/a/1/c/proto".to_owned()];
        let bytes = encode_subscribe_request(
            "id",
            RequestType::Subscribe,
            Some("/waku/2/rs/1/0"),
            &topics,
        );
        let r = FilterSubscribeRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(r.request_id.as_deref(), Some("id"));
        assert_eq!(
            RequestType::from_wire(r.filter_subscribe_type),
            Some(RequestType::Subscribe)
        );
        assert_eq!(r.pubsub_topic.as_deref(), Some("/waku/2/rs/1/0"));
        assert_eq!(r.content_topics, topics);
    }

    #[test]
    fn absent_type_is_ping_and_unknown_types_are_refused() {
        assert_eq!(RequestType::from_wire(None), Some(RequestType::Ping));
        assert_eq!(RequestType::from_wire(Some(9)), None);
    }

    #[test]
    fn responses_always_carry_request_id_and_code() {
        let bytes = encode_subscribe_response("", &Ok(()));
        assert_eq!(&bytes[..2], &[0x0a, 0x00]);
        let reply = decode_subscribe_response(&bytes).unwrap();
        assert_eq!(reply.status, Status::OK);
        let refused = Refused::new(Status::NOT_FOUND, "peer has no subscriptions");
        let reply =
            decode_subscribe_response(&encode_subscribe_response("r", &Err(refused))).unwrap();
        assert_eq!(reply.status.0, 404);
        assert_eq!(reply.request_id, "r");
        assert_eq!(
            reply.description.as_deref(),
            Some("peer has no subscriptions")
        );
    }

    #[test]
    fn pushes_round_trip_with_their_hash() {
        let message = WakuMessage::new("/a/1/b/proto", b"x".to_vec());
        let peer = PeerId::random();
        let push = decode_push(peer, &encode_push("/waku/2/rs/1/2", &message)).unwrap();
        assert_eq!(push.message, message);
        assert_eq!(push.hash, message.hash("/waku/2/rs/1/2"));
        let no_topic = MessagePush {
            waku_message: Some(message.into()),
            pubsub_topic: None,
        }
        .encode_to_vec();
        assert!(decode_push(peer, &no_topic).is_none());
    }
}

/// Property tests: subscribe requests and pushes read back as they were written.
#[cfg(test)]
mod props {
    use proptest::{collection::vec, prelude::*};

    use super::*;
    use crate::message::props::message;

    proptest! {
        #[test]
        fn subscribe_requests_round_trip(
            id in ".{0,20}",
            kind in prop::sample::select(vec![
                RequestType::Ping,
                RequestType::Subscribe,
                RequestType::Unsubscribe,
                RequestType::UnsubscribeAll,
            ]),
            topic in "/waku/2/rs/[0-9]{1,2}/[0-9]{1,3}",
            topics in vec("/[a-z]{1,8}/1/[a-z]{1,8}/proto", 0..=MAX_CONTENT_TOPICS_PER_REQUEST + 2),
        ) {
            let bytes = encode_subscribe_request(&id, kind, Some(&topic), &topics);
            match decode_subscribe_request(&bytes) {
                Ok((got_id, request)) => {
                    prop_assert_eq!(&got_id, &id);
                    prop_assert_eq!(request.kind(), kind);
                    let want = match kind {
                        RequestType::Ping => SubscribeRequest::Ping,
                        RequestType::UnsubscribeAll => SubscribeRequest::UnsubscribeAll,
                        RequestType::Subscribe => SubscribeRequest::Subscribe {
                            pubsub_topic: topic.clone(),
                            content_topics: topics.clone(),
                        },
                        RequestType::Unsubscribe => SubscribeRequest::Unsubscribe {
                            pubsub_topic: topic.clone(),
                            content_topics: topics.clone(),
                        },
                    };
                    prop_assert_eq!(request, want);
                }
                Err((got_id, got_kind, refused)) => {
                    // Only a (un)subscribe with no or too many content topics is refused.
                    prop_assert!(matches!(kind, RequestType::Subscribe | RequestType::Unsubscribe));
                    prop_assert!(topics.is_empty() || topics.len() > MAX_CONTENT_TOPICS_PER_REQUEST);
                    prop_assert_eq!(got_id, id);
                    prop_assert_eq!(got_kind, Some(kind));
                    prop_assert_eq!(refused.status, Status::BAD_REQUEST);
                }
            }
        }

        #[test]
        fn pushes_round_trip(topic in "/waku/2/rs/[0-9]{1,2}/[0-9]{1,3}", message in message()) {
            let peer = PeerId::random();
            let push = decode_push(peer, &encode_push(&topic, &message)).unwrap();
            prop_assert_eq!(push.pubsub_topic, topic);
            prop_assert_eq!(push.message, message);
        }
    }
}
