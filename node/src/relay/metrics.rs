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

/// Reasons a relayed message is rejected: every [`super::Invalid::label`], and `throttled`
/// (over quota, from the throttle's relay gate). Created at 0 when the node starts, so a burst
/// of rejections is a visible increase from the first one.
pub const REJECT_REASONS: [&str; 6] = [
    "decode",
    "oversize",
    "meta_too_long",
    "content_topic",
    "pubsub_topic",
    "throttled",
];

/// Handles to the relay's metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub validated: Family<VerdictLabels, Counter>,
    pub published: Family<PublishLabels, Counter>,
    pub message_bytes: Histogram,
    pub mesh_peers: Family<ShardLabels, Gauge>,
    pub topic_peers: Family<ShardLabels, Gauge>,
    /// `validated{result="accept",reason="valid"}`, held so the hot path skips the label lookup.
    accepted: Counter,
}

impl Metrics {
    /// Registers under the given (already `roost_relay`-prefixed) registry.
    pub fn register(registry: &mut Registry) -> Self {
        let mut m = Metrics {
            validated: Family::default(),
            published: Family::default(),
            message_bytes: Histogram::new([
                256.0, 1024.0, 4096.0, 16384.0, 65536.0, 153600.0, 524288.0, 1048576.0,
            ]),
            mesh_peers: Family::default(),
            topic_peers: Family::default(),
            accepted: Counter::default(),
        };
        let accepted = m
            .validated
            .get_or_create(&VerdictLabels {
                result: "accept",
                reason: "valid",
            })
            .clone();
        m.accepted = accepted;
        for reason in REJECT_REASONS {
            let _ = m.validated.get_or_create(&VerdictLabels {
                result: "reject",
                reason,
            });
        }
        let _ = m.validated.get_or_create(&VerdictLabels {
            result: "ignore",
            reason: "throttled",
        });
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

    /// One more valid message accepted.
    pub fn accept(&self) {
        self.accepted.inc();
    }

    pub fn verdict(&self, result: &'static str, reason: &'static str) {
        self.validated
            .get_or_create(&VerdictLabels { result, reason })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_messages_count_in_the_family() {
        let mut registry = Registry::default();
        let m = Metrics::register(registry.sub_registry_with_prefix("roost_relay"));
        m.accept();
        m.accept();
        let text = crate::metrics::render(&registry);
        let sample = "roost_relay_messages_validated_total{result=\"accept\",reason=\"valid\"} 2\n";
        assert!(text.contains(sample), "{sample} missing from:\n{text}");
    }

    #[test]
    fn every_reject_reason_exists_from_the_start() {
        let mut registry = Registry::default();
        Metrics::register(registry.sub_registry_with_prefix("roost_relay"));
        let text = crate::metrics::render(&registry);
        for reason in REJECT_REASONS {
            let sample = format!(
                "roost_relay_messages_validated_total{{result=\"reject\",reason=\"{reason}\"}} 0\n"
            );
            assert!(text.contains(&sample), "{sample} missing from:\n{text}");
        }
        // Every label the validator produces is in the list.
        use super::super::Invalid;
        for invalid in [
            Invalid::Decode("x".into()),
            Invalid::Oversize { size: 2, max: 1 },
            Invalid::MetaTooLong(65),
            Invalid::ContentTopic(crate::message::ContentTopicError::NoLeadingSlash(
                "x".into(),
            )),
            Invalid::UnknownPubsubTopic("x".into()),
        ] {
            assert!(REJECT_REASONS.contains(&invalid.label()));
        }
    }
}
