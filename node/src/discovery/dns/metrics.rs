//! DNS discovery metrics (`roost_discovery_dns_*`): tree readings by outcome, dials, and what
//! each tree holds.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::tree::TreeError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TreeLabels {
    pub domain: String,
}

/// Handles to the DNS discovery metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub syncs: Family<OutcomeLabels, Counter>,
    pub dials: Family<OutcomeLabels, Counter>,
    pub tree_nodes: Family<TreeLabels, Gauge>,
    pub tree_seq: Family<TreeLabels, Gauge>,
}

impl Metrics {
    /// Registers under the given (already `roost_discovery_dns`-prefixed) registry.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            syncs: Family::default(),
            dials: Family::default(),
            tree_nodes: Family::default(),
            tree_seq: Family::default(),
        };
        registry.register(
            "syncs",
            "Readings of a DNS tree, by outcome (ok, or why the tree was refused)",
            m.syncs.clone(),
        );
        registry.register(
            "dials",
            "Dials of nodes found in DNS trees, by outcome (ok, failed)",
            m.dials.clone(),
        );
        registry.register(
            "tree_nodes",
            "Nodes of this node's cluster in the last good reading of each tree",
            m.tree_nodes.clone(),
        );
        registry.register(
            "tree_seq",
            "Sequence number of the last good reading of each tree",
            m.tree_seq.clone(),
        );
        let _ = m.syncs.get_or_create(&OutcomeLabels { outcome: "ok" });
        for outcome in TreeError::REASONS {
            let _ = m.syncs.get_or_create(&OutcomeLabels { outcome });
        }
        for outcome in ["ok", "failed"] {
            let _ = m.dials.get_or_create(&OutcomeLabels { outcome });
        }
        m
    }
}
