//! Waku relay (11/WAKU2-RELAY): gossipsub on `/vac/waku/relay/2.0.0` over static-shard pubsub
//! topics, with every message decoded and validated before it is forwarded.
//!
//! This module owns the relay config, the gossipsub parameters Waku uses, the validation
//! rules, the relay metrics and the [`Router`], through which the swarm task publishes this
//! node's messages and hands up every message gossipsub receives.

pub mod metrics;
mod router;

use std::{
    collections::BTreeSet,
    sync::{Arc, RwLock},
    time::Duration,
};

use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, ValidationMode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use metrics::Metrics;
pub use router::{PublishError, PublishReceipt, Router};

use crate::{
    message::{ContentTopic, MessageHash, ShardTopic, WakuMessage, MAX_META_LEN},
    units::ByteSize,
};

/// The relay protocol id; nwaku mounts only this codec.
pub const PROTOCOL_ID: &str = "/vac/waku/relay/2.0.0";

/// Gossipsub framing on top of a message (topic, ids, control): allowed beyond
/// `max_message_size` so oversize messages still reach the validator and are counted.
const TRANSMIT_OVERHEAD: usize = 64 * 1024;

/// Relay settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Run the relay. A node without relay cannot store or serve light clients. Default `true`.
    pub enabled: bool,
    /// Waku cluster id (1 = The Waku Network, 16 = Status). Default `1`.
    pub cluster_id: u16,
    /// Shards this node relays, as `/waku/2/rs/<cluster_id>/<shard>`. Default `[0..=7]`.
    pub shards: Vec<u16>,
    /// Largest encoded WakuMessage accepted. Default `150KiB`; Status fleets use `1MiB`.
    pub max_message_size: ByteSize,
    /// Number of shards in the network, for autosharding content topics. Default `8`.
    pub num_shards_in_network: u16,
    /// Content topics this node relays from its start (nwaku's `--content-topic`): the shards
    /// they autoshard to are relayed besides `shards`, and REST readers get them cached from
    /// the start, as nwaku's. Default: none.
    pub content_topics: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            cluster_id: 1,
            shards: (0..8).collect(),
            max_message_size: ByteSize::kib(150),
            num_shards_in_network: 8,
            content_topics: Vec::new(),
        }
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.shards.is_empty() {
            return Err("relay.shards is empty; list at least one shard, e.g. shards = [0]".into());
        }
        if let Some(bad) = self.shards.iter().find(|s| **s > crate::message::MAX_SHARD) {
            return Err(format!(
                "relay.shards contains {bad}; shard indices go from 0 to {}",
                crate::message::MAX_SHARD
            ));
        }
        if self.max_message_size.0 < 1024 {
            return Err("relay.max_message_size is below 1KiB; use e.g. 150KiB".into());
        }
        if self.num_shards_in_network == 0 {
            return Err("relay.num_shards_in_network must be at least 1".into());
        }
        for topic in &self.content_topics {
            ContentTopic::parse(topic)
                .map_err(|e| format!("relay.content_topics: {topic} cannot be autosharded: {e}"))?;
        }
        Ok(())
    }

    /// Adds the shards `content_topics` autoshard to `shards` (once, when the node starts).
    pub(crate) fn resolve_content_topics(&mut self) {
        for topic in &self.content_topics {
            if let Ok(shard) = self.autoshard(topic) {
                if !self.shards.contains(&shard.shard) {
                    self.shards.push(shard.shard);
                }
            }
        }
    }

    /// The pubsub topics this node relays.
    pub fn pubsub_topics(&self) -> Vec<ShardTopic> {
        let unique: BTreeSet<u16> = self.shards.iter().copied().collect();
        unique
            .into_iter()
            .map(|s| ShardTopic::new(self.cluster_id, s))
            .collect()
    }

    /// The pubsub topic a content topic autoshards to in this cluster.
    pub fn autoshard(
        &self,
        content_topic: &str,
    ) -> Result<ShardTopic, crate::message::ContentTopicError> {
        let parsed = ContentTopic::parse(content_topic)?;
        Ok(ShardTopic::new(
            self.cluster_id,
            parsed.shard(self.num_shards_in_network),
        ))
    }
}

/// Gossipsub configured as Waku configures it (29/WAKU2-CONFIG, nwaku `waku_relay/protocol.nim`).
pub fn gossipsub_behaviour(config: &Config) -> Result<gossipsub::Behaviour, String> {
    let gs_config = gossipsub::ConfigBuilder::default()
        .protocol_id(PROTOCOL_ID, gossipsub::Version::V1_1)
        .validation_mode(ValidationMode::Anonymous)
        .validate_messages()
        .message_id_fn(|m: &gossipsub::Message| gossipsub::MessageId::from(message_id(&m.data)))
        .max_transmit_size(config.max_message_size.as_usize() + TRANSMIT_OVERHEAD)
        .mesh_n(6)
        .mesh_n_low(4)
        .mesh_n_high(8)
        .retain_scores(6)
        .mesh_outbound_min(3)
        .gossip_lazy(6)
        .gossip_factor(0.25)
        .heartbeat_interval(Duration::from_secs(1))
        .history_length(6)
        .history_gossip(3)
        .fanout_ttl(Duration::from_secs(60))
        .duplicate_cache_time(Duration::from_secs(120))
        .prune_backoff(Duration::from_secs(60))
        .unsubscribe_backoff(Duration::from_secs(5))
        .flood_publish(true)
        .build()
        .map_err(|e| format!("invalid gossipsub parameters: {e}"))?;
    gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, gs_config).map_err(str::to_owned)
}

/// Gossipsub message id: sha256 of the encoded WakuMessage.
pub fn message_id(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

/// The gossipsub topic for a shard.
pub fn topic(shard: ShardTopic) -> IdentTopic {
    IdentTopic::new(shard.to_string())
}

/// A message the relay accepted, as handed to the node's consumers (store, filter, API).
#[derive(Debug, Clone)]
pub struct RelayedMessage {
    pub pubsub_topic: Arc<str>,
    pub message: WakuMessage,
    pub hash: MessageHash,
    /// The peer that forwarded it; `None` when it was published by this node.
    pub source: Option<libp2p::PeerId>,
    /// Encoded size in bytes.
    pub size: usize,
}

/// Why a message was not accepted. The label is the `reason` metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("not a valid WakuMessage protobuf: {0}")]
    Decode(String),
    #[error("Message size exceeded maximum of {max} bytes (relay.max_message_size; this one: {size} bytes)")]
    Oversize { size: usize, max: usize },
    #[error("invalid length for Meta field: {0} bytes, at most {MAX_META_LEN}")]
    MetaTooLong(usize),
    #[error("{0}")]
    ContentTopic(#[from] crate::message::ContentTopicError),
    #[error("pubsub topic `{0}` is not one of this node's shards")]
    UnknownPubsubTopic(String),
}

impl Invalid {
    /// Stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Invalid::Decode(_) => "decode",
            Invalid::Oversize { .. } => "oversize",
            Invalid::MetaTooLong(_) => "meta_too_long",
            Invalid::ContentTopic(_) => "content_topic",
            Invalid::UnknownPubsubTopic(_) => "pubsub_topic",
        }
    }
}

/// The pubsub topics this node relays: `relay.shards` from the start, and the shards a REST
/// client joined at run time (nwaku's `POST /relay/v1/subscriptions` subscribes
/// the relay). One set, shared by everything that takes messages by topic (the relay's
/// validator, the store, filter, store sync, REST); only the swarm task changes it, as it
/// subscribes gossipsub.
#[derive(Debug, Clone)]
pub struct RelayedTopics {
    configured: Arc<BTreeSet<String>>,
    current: Arc<RwLock<BTreeSet<String>>>,
}

impl RelayedTopics {
    pub fn new(config: &Config) -> Self {
        let configured: BTreeSet<String> = config
            .pubsub_topics()
            .iter()
            .map(ToString::to_string)
            .collect();
        RelayedTopics {
            current: Arc::new(RwLock::new(configured.clone())),
            configured: Arc::new(configured),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeSet<String>> {
        // A panic while holding the lock leaves a plain set behind: still usable.
        self.current.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn contains(&self, pubsub_topic: &str) -> bool {
        self.read().contains(pubsub_topic)
    }

    /// Every relayed topic, in order.
    pub fn list(&self) -> Vec<String> {
        self.read().iter().cloned().collect()
    }

    /// A copy of the set, for code that checks many topics at once.
    pub fn snapshot(&self) -> BTreeSet<String> {
        self.read().clone()
    }

    /// Whether `pubsub_topic` is one of `relay.shards` (relayed whatever REST clients do).
    pub fn is_configured(&self, pubsub_topic: &str) -> bool {
        self.configured.contains(pubsub_topic)
    }

    /// Whether `pubsub_topic` is a static-sharding topic (`/waku/2/rs/<cluster>/<shard>`), which
    /// the node could join. Like nwaku, any cluster's: peers of another cluster are still
    /// refused by metadata, so such a shard only carries what this node and its peers of the
    /// same cluster publish on it.
    pub fn could_join(&self, pubsub_topic: &str) -> bool {
        ShardTopic::parse(pubsub_topic).is_some()
    }

    /// Adds a joined topic; `false` when it was relayed already.
    pub(crate) fn insert(&self, pubsub_topic: &str) -> bool {
        let mut set = self.current.write().unwrap_or_else(|e| e.into_inner());
        set.insert(pubsub_topic.to_owned())
    }

    /// Removes a joined topic; configured shards stay. `false` when nothing was removed.
    pub(crate) fn remove(&self, pubsub_topic: &str) -> bool {
        if self.is_configured(pubsub_topic) {
            return false;
        }
        let mut set = self.current.write().unwrap_or_else(|e| e.into_inner());
        set.remove(pubsub_topic)
    }
}

/// Applies the relay validation rules; cheap and synchronous, it runs on the swarm task.
#[derive(Debug, Clone)]
pub struct Validator {
    max_message_size: usize,
    topics: RelayedTopics,
}

impl Validator {
    /// A validator of its own topic set (the configured shards only).
    pub fn new(config: &Config) -> Self {
        Self::with_topics(config, RelayedTopics::new(config))
    }

    /// A validator that follows the node's shared topic set.
    pub fn with_topics(config: &Config, topics: RelayedTopics) -> Self {
        Validator {
            max_message_size: config.max_message_size.as_usize(),
            topics,
        }
    }

    /// Decodes and checks one message received (or about to be published) on `pubsub_topic`.
    pub fn validate(&self, pubsub_topic: &str, data: &[u8]) -> Result<WakuMessage, Invalid> {
        if !self.topics.contains(pubsub_topic) {
            return Err(Invalid::UnknownPubsubTopic(pubsub_topic.to_owned()));
        }
        if data.len() > self.max_message_size {
            return Err(Invalid::Oversize {
                size: data.len(),
                max: self.max_message_size,
            });
        }
        let message = WakuMessage::decode(data).map_err(|e| Invalid::Decode(e.to_string()))?;
        self.check(&message)?;
        Ok(message)
    }

    /// The checks that apply to an already decoded message. Like nwaku's relay validator,
    /// it does not hold a content topic to the `/app/version/name/encoding` form (nwaku relays
    /// `Hello World!` as a content topic, and gossipsub would otherwise penalise the nwaku
    /// peers forwarding such messages) nor refuse payload versions it does not know (the
    /// version tells applications how to read the payload; relay never does). The content
    /// topic must be there, as nwaku's decoder requires.
    pub fn check(&self, message: &WakuMessage) -> Result<(), Invalid> {
        if let Some(meta) = &message.meta {
            if meta.len() > MAX_META_LEN {
                return Err(Invalid::MetaTooLong(meta.len()));
            }
        }
        if message.content_topic.is_empty() {
            return Err(Invalid::ContentTopic(
                crate::message::ContentTopicError::Empty,
            ));
        }
        Ok(())
    }

    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    pub fn serves(&self, pubsub_topic: &str) -> bool {
        self.topics.contains(pubsub_topic)
    }
}

/// A consumer of accepted relay messages. `deliver` runs on the swarm task: it must not block
/// (hand the message to a channel or a buffer and return).
pub trait MessageSink: Send + 'static {
    fn deliver(&mut self, message: &Arc<RelayedMessage>);
}

impl MessageSink for tokio::sync::broadcast::Sender<Arc<RelayedMessage>> {
    fn deliver(&mut self, message: &Arc<RelayedMessage>) {
        // No receivers is fine: nobody is listening through the API right now.
        let _ = self.send(message.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validator() -> Validator {
        Validator::new(&Config::default())
    }

    const TOPIC: &str = "/waku/2/rs/1/0";

    #[test]
    fn default_topics_are_the_waku_network() {
        let topics: Vec<String> = Config::default()
            .pubsub_topics()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(topics.len(), 8);
        assert_eq!(topics[0], "/waku/2/rs/1/0");
        assert_eq!(topics[7], "/waku/2/rs/1/7");
    }

    #[test]
    fn valid_messages_pass() {
        let msg = WakuMessage::new("/app/1/chat/proto", b"hi".to_vec());
        let decoded = validator().validate(TOPIC, &msg.encode_to_vec()).unwrap();
        assert_eq!(decoded, msg);
    }

    #[test]
    fn each_rule_rejects_with_its_label() {
        let v = validator();
        assert_eq!(
            v.validate(TOPIC, &[0xff, 0xff]).unwrap_err().label(),
            "decode"
        );
        let big = WakuMessage::new("/app/1/chat/proto", vec![0u8; 150 * 1024 + 1]);
        assert_eq!(
            v.validate(TOPIC, &big.encode_to_vec()).unwrap_err().label(),
            "oversize"
        );
        let mut meta = WakuMessage::new("/app/1/chat/proto", vec![]);
        meta.meta = Some(vec![0; 65]);
        assert_eq!(
            v.validate(TOPIC, &meta.encode_to_vec())
                .unwrap_err()
                .label(),
            "meta_too_long"
        );
        meta.meta = Some(vec![0; 64]);
        assert!(v.validate(TOPIC, &meta.encode_to_vec()).is_ok());
        // As nwaku: any payload version, any non-empty content topic.
        let mut version = WakuMessage::new("/app/1/chat/proto", vec![]);
        version.version = Some(7);
        assert!(v.validate(TOPIC, &version.encode_to_vec()).is_ok());
        let free_form = WakuMessage::new("Hello World!", vec![]);
        assert!(v.validate(TOPIC, &free_form.encode_to_vec()).is_ok());
        let topic = WakuMessage::new("", vec![]);
        assert_eq!(
            v.validate(TOPIC, &topic.encode_to_vec())
                .unwrap_err()
                .label(),
            "content_topic"
        );
        let ok = WakuMessage::new("/app/1/chat/proto", vec![]);
        assert_eq!(
            v.validate("/waku/2/rs/2/0", &ok.encode_to_vec())
                .unwrap_err()
                .label(),
            "pubsub_topic"
        );
    }

    #[test]
    fn message_id_is_sha256_of_the_encoding() {
        let data = WakuMessage::new("/app/1/chat/proto", b"x".to_vec()).encode_to_vec();
        assert_eq!(message_id(&data), Sha256::digest(&data).to_vec());
    }

    #[test]
    fn gossipsub_builds_with_waku_parameters() {
        assert!(gossipsub_behaviour(&Config::default()).is_ok());
    }
}
