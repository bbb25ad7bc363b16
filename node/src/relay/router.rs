//! The relay's share of the swarm task's work: publishing this node's messages through
//! gossipsub (validated like any relayed message), judging every message gossipsub hands up,
//! and handing accepted ones to the node's sinks (store, filter, API). The swarm task owns
//! gossipsub and lends it to these calls; the router owns the validator, the sinks and the
//! relay metrics.

use std::{
    collections::{HashSet, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use libp2p::{
    gossipsub::{self, MessageAcceptance, MessageId},
    PeerId,
};

use super::{
    metrics::{PublishLabels, ShardLabels},
    Config, Invalid, MessageSink, Metrics, RelayedMessage, Validator,
};
use crate::message::{MessageHash, WakuMessage};

/// What a successful publish reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishReceipt {
    pub hash: MessageHash,
    /// Peers subscribed to the topic the message was sent to (0: it stayed local).
    pub relay_peers: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("invalid message: {0}")]
    Invalid(#[from] Invalid),
    /// `relay_peers`: the peers on the topic now (the message went to them, or to their
    /// predecessors, the first time).
    #[error("message was already published")]
    Duplicate { relay_peers: usize },
    #[error("relay is disabled on this node")]
    RelayDisabled,
    #[error("cannot publish: {0}")]
    Failed(String),
    #[error("the node is shutting down")]
    ShuttingDown,
}

pub struct Router {
    validator: Validator,
    sinks: Vec<Box<dyn MessageSink>>,
    metrics: Metrics,
    /// A few figures again under nwaku's names.
    nwaku: crate::metrics::NwakuNames,
    /// Messages published while no peer was on their topic: gossipsub keeps no record of
    /// those, so a second publish of the same message would be delivered again locally.
    published_alone: PublishedAlone,
}

/// Hashes of messages published to no peer, for as long as gossipsub remembers the others
/// (its duplicate cache), at most [`PUBLISHED_ALONE_CAP`].
#[derive(Default)]
struct PublishedAlone {
    order: VecDeque<(Instant, MessageHash)>,
    seen: HashSet<MessageHash>,
}

/// gossipsub's `duplicate_cache_time` (see [`super::gossipsub_behaviour`]).
const PUBLISHED_ALONE_TTL: Duration = Duration::from_secs(120);
const PUBLISHED_ALONE_CAP: usize = 4096;

impl PublishedAlone {
    /// Records `hash`; `false` when it was recorded already (a duplicate).
    fn insert(&mut self, hash: MessageHash, now: Instant) -> bool {
        while let Some((at, old)) = self.order.front().copied() {
            if now.duration_since(at) < PUBLISHED_ALONE_TTL
                && self.order.len() < PUBLISHED_ALONE_CAP
            {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&old);
        }
        if !self.seen.insert(hash) {
            return false;
        }
        self.order.push_back((now, hash));
        true
    }
}

impl Router {
    pub fn new(
        config: &Config,
        topics: super::RelayedTopics,
        sinks: Vec<Box<dyn MessageSink>>,
        metrics: Metrics,
        nwaku: crate::metrics::NwakuNames,
    ) -> Self {
        Router {
            validator: Validator::with_topics(config, topics),
            sinks,
            metrics,
            nwaku,
            published_alone: PublishedAlone::default(),
        }
    }

    /// Validates `message`, publishes it on `pubsub_topic` and hands it to the local sinks.
    /// `relay` is `None` on a node with relay disabled. With `fanout`, a static-sharding topic
    /// this node does not relay is published through gossipsub's fanout to the peers that
    /// relay it, and not delivered locally (nothing here takes that topic).
    pub fn publish(
        &mut self,
        relay: Option<&mut gossipsub::Behaviour>,
        pubsub_topic: String,
        message: WakuMessage,
        fanout: bool,
    ) -> Result<PublishReceipt, PublishError> {
        let Some(gs) = relay else {
            return Err(PublishError::RelayDisabled);
        };
        let local = self.validator.serves(&pubsub_topic);
        let fanout = fanout && crate::message::ShardTopic::parse(&pubsub_topic).is_some();
        if !(local || fanout) {
            self.published("invalid");
            return Err(Invalid::UnknownPubsubTopic(pubsub_topic).into());
        }
        if let Err(e) = self.validator.check(&message) {
            self.published("invalid");
            return Err(e.into());
        }
        let data = message.encode_to_vec();
        if data.len() > self.validator.max_message_size() {
            self.published("invalid");
            return Err(Invalid::Oversize {
                size: data.len(),
                max: self.validator.max_message_size(),
            }
            .into());
        }
        let size = data.len();
        let topic = gossipsub::IdentTopic::new(pubsub_topic.clone());
        let topic_hash = topic.hash();
        let relay_peers = match gs.publish(topic, data) {
            Ok(_) => {
                self.published("ok");
                gs.all_peers()
                    .filter(|(_, topics)| topics.contains(&&topic_hash))
                    .count()
            }
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                let hash = message.hash(&pubsub_topic);
                if !self.published_alone.insert(hash, Instant::now()) {
                    self.published("duplicate");
                    return Err(PublishError::Duplicate { relay_peers: 0 });
                }
                self.published("no_peers");
                0
            }
            Err(gossipsub::PublishError::Duplicate) => {
                self.published("duplicate");
                let relay_peers = gs
                    .all_peers()
                    .filter(|(_, topics)| topics.contains(&&topic_hash))
                    .count();
                return Err(PublishError::Duplicate { relay_peers });
            }
            Err(e) => {
                self.published("error");
                return Err(PublishError::Failed(e.to_string()));
            }
        };
        let hash = message.hash(&pubsub_topic);
        if local {
            self.deliver(RelayedMessage {
                pubsub_topic: pubsub_topic.into(),
                message,
                hash,
                source: None,
                size,
            });
        }
        Ok(PublishReceipt { hash, relay_peers })
    }

    /// A message from `source` the throttle admitted: decode and check it, tell gossipsub
    /// whether to forward it, and deliver it if valid. The error is the reason it was rejected
    /// (the caller charges `source` for it).
    pub fn received(
        &mut self,
        gs: &mut gossipsub::Behaviour,
        source: PeerId,
        message_id: &MessageId,
        message: &gossipsub::Message,
    ) -> Result<(), Invalid> {
        let topic = message.topic.as_str();
        let verdict = self.validator.validate(topic, &message.data);
        let acceptance = match &verdict {
            Ok(_) => {
                self.metrics.accept();
                MessageAcceptance::Accept
            }
            Err(invalid) => {
                self.metrics.verdict("reject", invalid.label());
                tracing::debug!(peer = %source, reason = invalid.label(), error = %invalid, "rejected relay message");
                MessageAcceptance::Reject
            }
        };
        gs.report_message_validation_result(message_id, &source, acceptance);
        let waku_message = verdict?;
        let pubsub_topic: Arc<str> = Arc::from(topic);
        let hash = waku_message.hash(&pubsub_topic);
        self.deliver(RelayedMessage {
            pubsub_topic,
            message: waku_message,
            hash,
            source: Some(source),
            size: message.data.len(),
        });
        Ok(())
    }

    /// A message the throttle refused before decoding: counted as `result` (`ignore` or
    /// `reject`) for `throttled`, and reported to gossipsub with that verdict.
    pub fn refused(
        &self,
        gs: &mut gossipsub::Behaviour,
        source: PeerId,
        message_id: &MessageId,
        result: &'static str,
        acceptance: MessageAcceptance,
    ) {
        self.metrics.verdict(result, "throttled");
        gs.report_message_validation_result(message_id, &source, acceptance);
    }

    /// Mesh and topic peers per shard, for the gauges.
    pub fn set_shard_peers(&self, pubsub_topic: &str, mesh_peers: usize, topic_peers: usize) {
        let labels = ShardLabels {
            shard: pubsub_topic.to_owned(),
        };
        self.metrics
            .mesh_peers
            .get_or_create(&labels)
            .set(mesh_peers as i64);
        self.metrics
            .topic_peers
            .get_or_create(&labels)
            .set(topic_peers as i64);
    }

    fn published(&self, outcome: &'static str) {
        self.metrics
            .published
            .get_or_create(&PublishLabels { outcome })
            .inc();
    }

    fn deliver(&mut self, message: RelayedMessage) {
        self.metrics.message_bytes.observe(message.size as f64);
        self.nwaku.relayed(message.size);
        let message = Arc::new(message);
        for sink in &mut self.sinks {
            sink.deliver(&message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_published_alone_twice_is_a_duplicate_until_gossipsub_would_forget_it() {
        let mut alone = PublishedAlone::default();
        let (a, b) = (MessageHash([1; 32]), MessageHash([2; 32]));
        let t0 = Instant::now();
        assert!(alone.insert(a, t0));
        assert!(!alone.insert(a, t0 + Duration::from_secs(1)));
        assert!(alone.insert(b, t0 + Duration::from_secs(2)));
        // After the window, a is new again (as for gossipsub's duplicate cache).
        assert!(alone.insert(a, t0 + PUBLISHED_ALONE_TTL + Duration::from_secs(1)));
        assert!(alone.order.len() <= PUBLISHED_ALONE_CAP);
    }

    #[test]
    fn the_record_stays_bounded() {
        let mut alone = PublishedAlone::default();
        let now = Instant::now();
        for i in 0..(PUBLISHED_ALONE_CAP as u32 + 100) {
            let mut h = [0u8; 32];
            h[..4].copy_from_slice(&i.to_be_bytes());
            assert!(alone.insert(MessageHash(h), now));
        }
        assert_eq!(alone.order.len(), PUBLISHED_ALONE_CAP);
        assert_eq!(alone.seen.len(), PUBLISHED_ALONE_CAP);
    }
}
