//! Throttle metrics (`roost_throttle_*`): requests admitted and throttled by service and key
//! kind, refused connections, bans, limiter sizes and the gossipsub peer score distribution.
//! Label sets are closed (services, key kinds, reasons, score ranges).

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::{behaviour::Refused, BanReason, KeyKind, Service};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub service: &'static str,
    /// `admitted` or `throttled`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ThrottledLabels {
    pub service: &'static str,
    /// The rule that refused: `peer`, `ip`, `global` or `capacity` (limiter full).
    pub key: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// `banned_ip`, `banned_peer`, `ip_connections`, `ip_rate`, `global_rate`, `capacity`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BanKindLabels {
    /// `peer` or `ip`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BanLabels {
    /// `peer` or `ip`.
    pub kind: &'static str,
    /// `quota`, `invalid`, `score` or `manual`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimiterLabels {
    /// `default` or `trusted`.
    pub class: &'static str,
    pub service: &'static str,
    /// `per-peer` or `per-ip`.
    pub scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScoreLabels {
    /// A fixed score range: `below_graylist`, `below_publish`, `below_gossip`, `negative`,
    /// `zero`, `positive`.
    pub range: &'static str,
}

/// The score ranges of `roost_throttle_peer_scores`, lowest first.
pub const SCORE_RANGES: [&str; 6] = [
    "below_graylist",
    "below_publish",
    "below_gossip",
    "negative",
    "zero",
    "positive",
];

/// Handles to the throttle metrics; cheap to clone. The per-check counters are resolved
/// once here so a check costs an atomic add, not a label lookup.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub throttled: Family<ThrottledLabels, Counter>,
    pub connections_refused: Family<RefusedLabels, Counter>,
    pub bans_active: Family<BanKindLabels, Gauge>,
    pub bans: Family<BanLabels, Counter>,
    pub ban_writes_dropped: Counter,
    pub limiter_keys: Family<LimiterLabels, Gauge>,
    pub peer_scores: Family<ScoreLabels, Gauge>,
    admitted_by_service: Vec<Counter>,
    throttled_by_service: Vec<Counter>,
    throttled_by_key: Vec<[Counter; KeyKind::COUNT]>,
}

impl Metrics {
    /// Registers under the given (already `roost_throttle`-prefixed) registry.
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let throttled = Family::<ThrottledLabels, Counter>::default();
        let admitted_by_service = Service::ALL
            .iter()
            .map(|s| {
                requests
                    .get_or_create(&RequestLabels {
                        service: s.label(),
                        outcome: "admitted",
                    })
                    .clone()
            })
            .collect();
        let throttled_by_service = Service::ALL
            .iter()
            .map(|s| {
                requests
                    .get_or_create(&RequestLabels {
                        service: s.label(),
                        outcome: "throttled",
                    })
                    .clone()
            })
            .collect();
        let throttled_by_key = Service::ALL
            .iter()
            .map(|s| {
                KeyKind::ALL.map(|k| {
                    throttled
                        .get_or_create(&ThrottledLabels {
                            service: s.label(),
                            key: k.label(),
                        })
                        .clone()
                })
            })
            .collect();
        let m = Metrics {
            requests,
            throttled,
            connections_refused: Family::default(),
            bans_active: Family::default(),
            bans: Family::default(),
            ban_writes_dropped: Counter::default(),
            limiter_keys: Family::default(),
            peer_scores: Family::default(),
            admitted_by_service,
            throttled_by_service,
            throttled_by_key,
        };
        // Every ban and refusal label exists from the start (at 0): a burst of bans within one
        // scrape would otherwise first appear as a series already at N, which rate() and
        // increase() read as no change (BansSpiking, the dashboards' ban panels).
        for kind in ["peer", "ip"] {
            for reason in [
                BanReason::Quota,
                BanReason::Invalid,
                BanReason::Score,
                BanReason::Manual,
            ] {
                let _ = m.bans.get_or_create(&BanLabels {
                    kind,
                    reason: reason.label(),
                });
            }
        }
        for refused in [
            Refused::BannedIp,
            Refused::BannedPeer,
            Refused::IpConnections,
            Refused::IpRate,
            Refused::GlobalRate,
            Refused::Capacity,
        ] {
            let _ = m.connections_refused.get_or_create(&RefusedLabels {
                reason: refused.label(),
            });
        }
        registry.register(
            "requests",
            "Requests, relay messages and new connections checked against quotas, by service and outcome",
            m.requests.clone(),
        );
        registry.register(
            "throttled",
            "Requests refused by a quota, by service and the rule's key kind",
            m.throttled.clone(),
        );
        registry.register(
            "connections_refused",
            "Inbound connections refused before or at the handshake, by reason",
            m.connections_refused.clone(),
        );
        registry.register(
            "bans_active",
            "Bans in force, by kind (peer or ip)",
            m.bans_active.clone(),
        );
        registry.register("bans", "Bans imposed, by kind and reason", m.bans.clone());
        registry.register(
            "ban_writes_dropped",
            "Ban changes not persisted (writer saturated, disk nearly full or a write error); they still apply in memory",
            m.ban_writes_dropped.clone(),
        );
        registry.register(
            "limiter_keys",
            "Keys (peers or IPs) tracked by each keyed limiter after the last sweep",
            m.limiter_keys.clone(),
        );
        registry.register(
            "peer_scores",
            "Connected relay peers per gossipsub score range",
            m.peer_scores.clone(),
        );
        m
    }

    pub(crate) fn admitted(&self, service: Service) {
        self.admitted_by_service[service.index()].inc();
    }

    pub(crate) fn throttled(&self, service: Service, key: KeyKind) {
        self.throttled_by_service[service.index()].inc();
        self.throttled_by_key[service.index()][key.index()].inc();
    }

    pub(crate) fn refused(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&RefusedLabels { reason })
            .inc();
    }

    /// (admitted, throttled) totals over every service, for the health check. Relay bytes are
    /// left out: every relay message is checked against both relay quotas.
    pub(crate) fn totals(&self) -> (u64, u64) {
        let sum = |counters: &[Counter]| -> u64 {
            Service::ALL
                .iter()
                .filter(|s| **s != Service::RelayBytes)
                .map(|s| counters[s.index()].get())
                .sum()
        };
        (
            sum(&self.admitted_by_service),
            sum(&self.throttled_by_service),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ban_and_refusal_labels_exist_from_the_start() {
        let mut registry = Registry::default();
        Metrics::register(registry.sub_registry_with_prefix("roost_throttle"));
        let text = crate::metrics::render(&registry);
        for sample in [
            "roost_throttle_bans_total{kind=\"peer\",reason=\"quota\"} 0\n",
            "roost_throttle_bans_total{kind=\"ip\",reason=\"manual\"} 0\n",
            "roost_throttle_connections_refused_total{reason=\"banned_peer\"} 0\n",
            "roost_throttle_connections_refused_total{reason=\"capacity\"} 0\n",
        ] {
            assert!(text.contains(sample), "{sample} missing from:\n{text}");
        }
        assert_eq!(text.matches("roost_throttle_bans_total{").count(), 8);
    }
}
