//! Relay metrics: validation verdicts by reason, publishes, sizes and mesh sizes per shard.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    /// `accept`, `reject` or `ignore`.
    pub result: &'static str,
    /// `valid` or the [`super::Invalid::label`].
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabels {
    pub shard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PublishLabels {
    /// `ok`, `no_peers`, `duplicate`, `invalid` or `error`.
    pub outcome: &'static str,
}

/// Handles to the relay's metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub validated: Family<VerdictLabels, Counter>,
    pub published: Family<PublishLabels, Counter>,
    pub message_bytes: Histogram,
    pub mesh_peers: Family<ShardLabels, Gauge>,
    pub topic_peers: Family<ShardLabels, Gauge>,
}

impl Metrics {
    /// Registers under the given (already `roost_relay`-prefixed) registry.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            validated: Family::default(),
            published: Family::default(),
            message_bytes: Histogram::new([
                256.0, 1024.0, 4096.0, 16384.0, 65536.0, 153600.0, 524288.0, 1048576.0,
            ]),
            mesh_peers: Family::default(),
            topic_peers: Family::default(),
        };
        registry.register(
            "messages_validated",
            "Relayed messages by validation result and reason",
            m.validated.clone(),
        );
        registry.register(
            "messages_published",
            "Messages published by this node, by outcome",
            m.published.clone(),
        );
        registry.register(
            "message_size_bytes",
            "Encoded size of accepted messages",
            m.message_bytes.clone(),
        );
        registry.register(
            "mesh_peers",
            "Peers in this node's gossipsub mesh, per shard",
            m.mesh_peers.clone(),
        );
        registry.register(
            "topic_peers",
            "Connected peers subscribed to each shard",
            m.topic_peers.clone(),
        );
        m
    }

    pub fn verdict(&self, result: &'static str, reason: &'static str) {
        self.validated
            .get_or_create(&VerdictLabels { result, reason })
            .inc();
    }
}
