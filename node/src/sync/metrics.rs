//! Store sync metrics (`roost_store_sync_*`): rounds by role and outcome with their duration,
//! bytes and ranges exchanged, messages sent and received (and what became of them), the
//! messages gained, the last successful round, whether the node is in sync, eligible peers.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoundLabels {
    /// `initiator` or `responder`.
    pub role: &'static str,
    /// `ok` or `failed`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    /// `reconciliation` or `transfer`.
    pub protocol: &'static str,
    /// `sent` or `received`.
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RangeLabels {
    /// `skip`, `fingerprint` or `item_set`.
    pub kind: &'static str,
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// What became of a received message: `stored`, `duplicate`, `rejected` (a store rule),
    /// `invalid` (failed relay validation), `unsolicited` (no session with its sender),
    /// `failed` (the archive could not write it).
    pub outcome: &'static str,
}

/// Handles to the store sync metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub rounds: Family<RoundLabels, Counter>,
    pub round_duration: Histogram,
    pub bytes: Family<BytesLabels, Counter>,
    pub ranges: Family<RangeLabels, Counter>,
    pub messages: Family<DirectionLabels, Counter>,
    pub received: Family<OutcomeLabels, Counter>,
    pub gained: Counter,
    pub differences: Histogram,
    pub last_success: Gauge,
    pub in_sync: Gauge,
    pub peers: Gauge,
}

impl Metrics {
    /// Registers under `roost_store_sync` (the caller passes that sub-registry).
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            rounds: Family::default(),
            round_duration: Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            bytes: Family::default(),
            ranges: Family::default(),
            messages: Family::default(),
            received: Family::default(),
            gained: Counter::default(),
            differences: Histogram::new([0.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 50000.0]),
            last_success: Gauge::default(),
            in_sync: Gauge::default(),
            peers: Gauge::default(),
        };
        registry.register(
            "rounds",
            "Reconciliation sessions, by this node's role and outcome",
            m.rounds.clone(),
        );
        registry.register(
            "round_duration_seconds",
            "Duration of reconciliation sessions this node started",
            m.round_duration.clone(),
        );
        registry.register(
            "bytes",
            "Bytes of store sync frames, by protocol and direction",
            m.bytes.clone(),
        );
        registry.register(
            "ranges",
            "Ranges in reconciliation payloads, by kind and direction",
            m.ranges.clone(),
        );
        registry.register(
            "messages",
            "Messages transferred, by direction",
            m.messages.clone(),
        );
        registry.register(
            "received_messages",
            "Messages received by transfer, by what became of them",
            m.received.clone(),
        );
        registry.register(
            "messages_gained",
            "Messages received by store sync that the archive did not have",
            m.gained.clone(),
        );
        registry.register(
            "differences",
            "Messages found missing on either side per session",
            m.differences.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last reconciliation session that completed",
            m.last_success.clone(),
        );
        registry.register(
            "in_sync",
            "1 when the last session found nothing missing here (or all of it arrived), or no store peer is there to sync with",
            m.in_sync.clone(),
        );
        registry.register(
            "peers",
            "Connected store peers this node can sync with",
            m.peers.clone(),
        );
        // Every series a dashboard plots exists from the start, at 0.
        for role in ["initiator", "responder"] {
            for outcome in ["ok", "failed"] {
                let _ = m.rounds.get_or_create(&RoundLabels { role, outcome });
            }
        }
        for protocol in ["reconciliation", "transfer"] {
            for direction in ["sent", "received"] {
                let _ = m.bytes.get_or_create(&BytesLabels {
                    protocol,
                    direction,
                });
            }
        }
        for direction in ["sent", "received"] {
            let _ = m.messages.get_or_create(&DirectionLabels { direction });
            for kind in ["skip", "fingerprint", "item_set"] {
                let _ = m.ranges.get_or_create(&RangeLabels { kind, direction });
            }
        }
        for outcome in [
            "stored",
            "duplicate",
            "rejected",
            "invalid",
            "unsolicited",
            "failed",
        ] {
            let _ = m.received.get_or_create(&OutcomeLabels { outcome });
        }
        m
    }

    pub fn round(&self, role: &'static str, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.rounds
            .get_or_create(&RoundLabels { role, outcome })
            .inc();
    }

    pub fn bytes(&self, protocol: &'static str, direction: &'static str, n: usize) {
        self.bytes
            .get_or_create(&BytesLabels {
                protocol,
                direction,
            })
            .inc_by(n as u64);
    }

    pub fn ranges(&self, payload: &super::codec::Payload, direction: &'static str) {
        for range in &payload.ranges {
            self.ranges
                .get_or_create(&RangeLabels {
                    kind: range.kind.label(),
                    direction,
                })
                .inc();
        }
    }

    pub fn received(&self, outcome: &'static str) {
        self.received
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }
}
