//! The Waku v2 message (14/WAKU2-MESSAGE): its wire codec, its deterministic hash,
//! content-topic parsing and the static-shard pubsub topics (`/waku/2/rs/<cluster>/<shard>`).
//!
//! Every protocol in the node (relay, store, light push, filter) carries this type, so it lives
//! here rather than inside one of them.

use std::fmt;

use prost::Message as _;
use sha2::{Digest, Sha256};

/// Longest `meta` attribute a message may carry (nwaku `MaxMetaAttrLength`).
pub const MAX_META_LEN: usize = 64;

/// A Waku message as the node sees it after decoding.
///
/// `payload` and `content_topic` are required by nwaku; the encoder always emits them, even when
/// empty (waku.md §0.1). The decoder is lenient: a missing field decodes as empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WakuMessage {
    pub payload: Vec<u8>,
    pub content_topic: String,
    pub version: Option<u32>,
    /// Sender timestamp, Unix nanoseconds.
    pub timestamp: Option<i64>,
    pub meta: Option<Vec<u8>>,
    pub rate_limit_proof: Option<Vec<u8>>,
    pub ephemeral: Option<bool>,
}

/// Wire form of [`WakuMessage`]: every field optional so presence survives encoding.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WakuMessageProto {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub payload: Option<Vec<u8>>,
    #[prost(string, optional, tag = "2")]
    pub content_topic: Option<String>,
    #[prost(uint32, optional, tag = "3")]
    pub version: Option<u32>,
    #[prost(sint64, optional, tag = "10")]
    pub timestamp: Option<i64>,
    #[prost(bytes = "vec", optional, tag = "11")]
    pub meta: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "21")]
    pub rate_limit_proof: Option<Vec<u8>>,
    #[prost(bool, optional, tag = "31")]
    pub ephemeral: Option<bool>,
}

impl From<WakuMessageProto> for WakuMessage {
    fn from(p: WakuMessageProto) -> Self {
        WakuMessage {
            payload: p.payload.unwrap_or_default(),
            content_topic: p.content_topic.unwrap_or_default(),
            version: p.version,
            timestamp: p.timestamp,
            meta: p.meta,
            rate_limit_proof: p.rate_limit_proof,
            ephemeral: p.ephemeral,
        }
    }
}

impl From<WakuMessage> for WakuMessageProto {
    fn from(m: WakuMessage) -> Self {
        WakuMessageProto {
            payload: Some(m.payload),
            content_topic: Some(m.content_topic),
            version: m.version,
            timestamp: m.timestamp,
            meta: m.meta,
            rate_limit_proof: m.rate_limit_proof,
            ephemeral: m.ephemeral,
        }
    }
}

impl WakuMessage {
    /// A message with the given content topic and payload, stamped with the current time.
    pub fn new(content_topic: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        WakuMessage {
            payload: payload.into(),
            content_topic: content_topic.into(),
            timestamp: Some(now_nanos()),
            ..Default::default()
        }
    }

    /// Decodes a protobuf-encoded message.
    pub fn decode(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        WakuMessageProto::decode(bytes).map(Into::into)
    }

    /// Encodes the message; `payload` and `content_topic` are always present on the wire.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        WakuMessageProto::from(self.clone()).encode_to_vec()
    }

    /// Encoded length without allocating the encoding.
    pub fn encoded_len(&self) -> usize {
        // Only the two always-present fields differ from the proto's own length computation,
        // and they are owned by the clone; cloning is cheaper than encoding large payloads twice.
        WakuMessageProto::from(self.clone()).encoded_len()
    }

    /// `true` when the sender asked for the message not to be stored.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral.unwrap_or(false)
    }

    /// The deterministic message hash of this message on `pubsub_topic` (14/WAKU2-MESSAGE).
    pub fn hash(&self, pubsub_topic: &str) -> MessageHash {
        let mut h = Sha256::new();
        h.update(pubsub_topic.as_bytes());
        h.update(&self.payload);
        h.update(self.content_topic.as_bytes());
        if let Some(meta) = &self.meta {
            h.update(meta);
        }
        // Absent timestamp hashes as eight zero bytes; negative values as their u64 bit pattern.
        h.update(self.timestamp.unwrap_or(0).to_be_bytes());
        MessageHash(h.finalize().into())
    }
}

/// The 32-byte deterministic message hash: the store key, the store cursor and what clients
/// compare to check delivery.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MessageHash(pub [u8; 32]);

impl MessageHash {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses a hash from exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(MessageHash)
    }

    /// Parses `0x`-prefixed or bare hex.
    pub fn from_hex(s: &str) -> Option<Self> {
        let s = s.strip_prefix("0x").unwrap_or(s);
        let bytes = hex::decode(s).ok()?;
        Self::from_slice(&bytes)
    }

    pub fn to_hex(&self) -> String {
        format!("0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for MessageHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageHash({})", self.to_hex())
    }
}

impl fmt::Display for MessageHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Current Unix time in nanoseconds, the unit of Waku timestamps.
pub fn now_nanos() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX)
}

/// Why a content topic is not of the form `/{app}/{version}/{name}/{encoding}` or
/// `/{generation}/{app}/{version}/{name}/{encoding}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentTopicError {
    #[error("the message has no content topic")]
    Empty,
    #[error("content topic `{0}` must start with `/`")]
    NoLeadingSlash(String),
    #[error("content topic `{0}` must have 4 or 5 non-empty `/`-separated parts: /app/version/name/encoding")]
    WrongShape(String),
    #[error("content topic `{0}` has generation `{1}`; only generation 0 is supported")]
    UnsupportedGeneration(String, String),
}

/// A parsed content topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentTopic<'a> {
    pub generation: u32,
    pub application: &'a str,
    pub version: &'a str,
    pub name: &'a str,
    pub encoding: &'a str,
}

impl<'a> ContentTopic<'a> {
    pub fn parse(topic: &'a str) -> Result<Self, ContentTopicError> {
        let rest = topic
            .strip_prefix('/')
            .ok_or_else(|| ContentTopicError::NoLeadingSlash(topic.to_owned()))?;
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(ContentTopicError::WrongShape(topic.to_owned()));
        }
        match parts.as_slice() {
            [app, version, name, encoding] => Ok(ContentTopic {
                generation: 0,
                application: app,
                version,
                name,
                encoding,
            }),
            [generation, app, version, name, encoding] => {
                if *generation != "0" {
                    return Err(ContentTopicError::UnsupportedGeneration(
                        topic.to_owned(),
                        (*generation).to_owned(),
                    ));
                }
                Ok(ContentTopic {
                    generation: 0,
                    application: app,
                    version,
                    name,
                    encoding,
                })
            }
            _ => Err(ContentTopicError::WrongShape(topic.to_owned())),
        }
    }

    /// Autosharding: the shard (of `num_shards`) this content topic maps to.
    /// `sha256(app || version)`, last 8 bytes big-endian, modulo the shard count.
    pub fn shard(&self, num_shards: u16) -> u16 {
        let mut h = Sha256::new();
        h.update(self.application.as_bytes());
        h.update(self.version.as_bytes());
        let digest: [u8; 32] = h.finalize().into();
        let mut tail = [0u8; 8];
        tail.copy_from_slice(&digest[24..32]);
        let value = u64::from_be_bytes(tail);
        // num_shards is never 0 here: callers pass the configured shard count, validated > 0.
        (value % u64::from(num_shards.max(1))) as u16
    }
}

/// A static-shard pubsub topic `/waku/2/rs/<cluster>/<shard>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardTopic {
    pub cluster: u16,
    pub shard: u16,
}

/// Highest shard index allowed by relay sharding.
pub const MAX_SHARD: u16 = 1023;

impl ShardTopic {
    pub fn new(cluster: u16, shard: u16) -> Self {
        ShardTopic { cluster, shard }
    }

    /// Parses `/waku/2/rs/<cluster>/<shard>`.
    pub fn parse(topic: &str) -> Option<Self> {
        let rest = topic.strip_prefix("/waku/2/rs/")?;
        let (cluster, shard) = rest.split_once('/')?;
        let cluster: u16 = cluster.parse().ok()?;
        let shard: u16 = shard.parse().ok()?;
        (shard <= MAX_SHARD).then_some(ShardTopic { cluster, shard })
    }
}

impl fmt::Display for ShardTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/waku/2/rs/{}/{}", self.cluster, self.shard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_message(meta: Option<Vec<u8>>) -> WakuMessage {
        WakuMessage {
            payload: hex::decode("010203045445535405060708").unwrap(),
            content_topic: "/waku/2/default-content/proto".into(),
            meta,
            timestamp: Some(0x175789bfa23f8400),
            ..Default::default()
        }
    }

    #[test]
    fn hash_matches_spec_vector_with_meta() {
        let msg = spec_message(Some(hex::decode("73757065722d736563726574").unwrap()));
        assert_eq!(
            msg.hash("/waku/2/default-waku/proto").to_hex(),
            "0x64cce733fed134e83da02b02c6f689814872b1a0ac97ea56b76095c3c72bfe05"
        );
    }

    #[test]
    fn hash_matches_spec_vector_without_meta() {
        let msg = spec_message(None);
        assert_eq!(
            msg.hash("/waku/2/default-waku/proto").to_hex(),
            "0xa2554498b31f5bcdfcbf7fa58ad1c2d45f0254f3f8110a85588ec3cf10720fd8"
        );
    }

    #[test]
    fn hash_ignores_version_ephemeral_and_proof() {
        let base = spec_message(None);
        let mut other = base.clone();
        other.version = Some(1);
        other.ephemeral = Some(true);
        other.rate_limit_proof = Some(vec![1, 2, 3]);
        assert_eq!(base.hash("/t"), other.hash("/t"));
    }

    #[test]
    fn empty_payload_is_still_emitted_as_field_one() {
        let msg = WakuMessage {
            content_topic: "/a/1/b/proto".into(),
            ..Default::default()
        };
        let bytes = msg.encode_to_vec();
        // Field 1, wire type 2 (length-delimited), length 0.
        assert_eq!(&bytes[..2], &[0x0a, 0x00]);
        // Field 2 follows.
        assert_eq!(bytes[2], 0x12);
        assert_eq!(WakuMessage::decode(&bytes).unwrap(), msg);
    }

    #[test]
    fn empty_content_topic_is_still_emitted() {
        let bytes = WakuMessage::default().encode_to_vec();
        assert_eq!(bytes, vec![0x0a, 0x00, 0x12, 0x00]);
    }

    #[test]
    fn timestamp_is_zigzag_sint64() {
        let msg = WakuMessage {
            timestamp: Some(-1),
            ..Default::default()
        };
        let bytes = msg.encode_to_vec();
        // Field 10 varint: key 0x50, zig-zag(-1) = 1.
        assert!(bytes.windows(2).any(|w| w == [0x50, 0x01]));
    }

    #[test]
    fn round_trips_every_field() {
        let msg = WakuMessage {
            payload: vec![9; 300],
            content_topic: "/app/1/chat/proto".into(),
            version: Some(1),
            timestamp: Some(1_700_000_000_000_000_000),
            meta: Some(vec![7; 64]),
            rate_limit_proof: Some(vec![1, 2]),
            ephemeral: Some(true),
        };
        let decoded = WakuMessage::decode(&msg.encode_to_vec()).unwrap();
        assert_eq!(decoded, msg);
        assert_eq!(msg.encoded_len(), msg.encode_to_vec().len());
    }

    #[test]
    fn missing_fields_decode_as_empty() {
        assert_eq!(WakuMessage::decode(&[]).unwrap(), WakuMessage::default());
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(WakuMessage::decode(&[0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn content_topics_parse() {
        let t = ContentTopic::parse("/toychat/2/huilong/proto").unwrap();
        assert_eq!(
            (t.application, t.version, t.name, t.encoding),
            ("toychat", "2", "huilong", "proto")
        );
        assert!(ContentTopic::parse("/0/toychat/2/huilong/proto").is_ok());
        assert!(matches!(
            ContentTopic::parse("/1/toychat/2/huilong/proto"),
            Err(ContentTopicError::UnsupportedGeneration(..))
        ));
        assert!(ContentTopic::parse("toychat/2/huilong/proto").is_err());
        assert!(ContentTopic::parse("/toychat/2/huilong").is_err());
        assert!(ContentTopic::parse("/toychat//huilong/proto").is_err());
        assert!(ContentTopic::parse("").is_err());
    }

    #[test]
    fn autosharding_matches_reference_example() {
        // waku.md §3: app `myapp`, version `1`, 8 shards -> shard 0.
        let t = ContentTopic::parse("/myapp/1/chat/proto").unwrap();
        assert_eq!(t.shard(8), 0);
    }

    #[test]
    fn shard_topics_parse_and_print() {
        let t = ShardTopic::parse("/waku/2/rs/16/32").unwrap();
        assert_eq!(t, ShardTopic::new(16, 32));
        assert_eq!(t.to_string(), "/waku/2/rs/16/32");
        assert!(ShardTopic::parse("/waku/2/rs/16/1024").is_none());
        assert!(ShardTopic::parse("/waku/2/default-waku/proto").is_none());
        assert!(ShardTopic::parse("/waku/2/rs/x/1").is_none());
    }

    #[test]
    fn hashes_parse_from_hex() {
        let h = MessageHash([0xab; 32]);
        assert_eq!(MessageHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(MessageHash::from_hex("abcd"), None);
    }
}

/// Property tests: any message survives encoding, and its hash depends on its content only.
#[cfg(test)]
pub(crate) mod props {
    use proptest::{collection::vec, option, prelude::*};

    use super::*;

    /// Any WakuMessage, with every optional field present or absent.
    pub(crate) fn message() -> impl Strategy<Value = WakuMessage> {
        (
            vec(any::<u8>(), 0..300),
            ".{0,40}",
            option::of(any::<u32>()),
            option::of(any::<i64>()),
            option::of(vec(any::<u8>(), 0..80)),
            option::of(vec(any::<u8>(), 0..40)),
            option::of(any::<bool>()),
        )
            .prop_map(
                |(
                    payload,
                    content_topic,
                    version,
                    timestamp,
                    meta,
                    rate_limit_proof,
                    ephemeral,
                )| {
                    WakuMessage {
                        payload,
                        content_topic,
                        version,
                        timestamp,
                        meta,
                        rate_limit_proof,
                        ephemeral,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn messages_round_trip_and_keep_their_hash(m in message(), topic in "/waku/2/rs/[0-9]{1,2}/[0-9]{1,3}") {
            let bytes = m.encode_to_vec();
            prop_assert_eq!(bytes.len(), m.encoded_len());
            let decoded = WakuMessage::decode(&bytes).unwrap();
            prop_assert_eq!(&decoded, &m);
            prop_assert_eq!(decoded.hash(&topic), m.hash(&topic));
            // The hash does not depend on the rate limit proof or the ephemeral flag (RFC 14).
            let mut other = m.clone();
            other.rate_limit_proof = Some(vec![1, 2, 3]);
            other.ephemeral = Some(!m.ephemeral.unwrap_or(false));
            prop_assert_eq!(other.hash(&topic), m.hash(&topic));
        }
    }
}
