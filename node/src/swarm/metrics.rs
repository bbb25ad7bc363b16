//! The swarm task's own metrics: connected peers and their kinds, connections, disconnects on
//! purpose, static peer dials and the depth of the node's internal channels.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::PeerKind;
use crate::metrics::ReasonLabels;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerKindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    pub channel: &'static str,
}

/// Reasons the swarm task disconnects a peer on purpose (`roost_peer_disconnects_total`):
/// the metadata exchange's (a peer that answers with another cluster or with garbage; one
/// that does not answer is a generic peer and stays) and the throttle's (`graylisted`).
/// Created at 0 when the node starts, so a burst of disconnects is a visible increase from
/// the first one.
pub const DISCONNECT_REASONS: [&str; 3] = ["wrong_cluster", "metadata_malformed", "graylisted"];

/// Node-wide network metrics owned by the swarm task.
#[derive(Clone, Debug)]
pub struct NetworkMetrics {
    pub peers_connected: Gauge,
    pub peers_by_kind: Family<PeerKindLabels, Gauge>,
    pub connections_established: Family<DirectionLabels, Counter>,
    pub peer_disconnects: Family<ReasonLabels, Counter>,
    pub static_peer_dials: Family<ReasonLabels, Counter>,
    pub channel_depth: Family<ChannelLabels, Gauge>,
}

impl NetworkMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = NetworkMetrics {
            peers_connected: Gauge::default(),
            peers_by_kind: Family::default(),
            connections_established: Family::default(),
            peer_disconnects: Family::default(),
            static_peer_dials: Family::default(),
            channel_depth: Family::default(),
        };
        for reason in DISCONNECT_REASONS {
            let _ = m.peer_disconnects.get_or_create(&ReasonLabels { reason });
        }
        registry.register(
            "peers_connected",
            "Peers with at least one open connection",
            m.peers_connected.clone(),
        );
        for kind in PeerKind::ALL {
            let _ = m
                .peers_by_kind
                .get_or_create(&PeerKindLabels { kind: kind.label() });
        }
        registry.register(
            "peers_by_kind",
            "Connected peers by what metadata showed: waku (this cluster), generic (a libp2p \
             peer without Waku metadata: served rendezvous, kept out of relay), pending",
            m.peers_by_kind.clone(),
        );
        registry.register(
            "connections_established",
            "Connections established, by direction",
            m.connections_established.clone(),
        );
        registry.register(
            "peer_disconnects",
            "Peers this node disconnected on purpose, by reason",
            m.peer_disconnects.clone(),
        );
        registry.register(
            "static_peer_dials",
            "Dials of configured static peers, by outcome",
            m.static_peer_dials.clone(),
        );
        registry.register(
            "channel_depth",
            "Messages waiting in internal channels",
            m.channel_depth.clone(),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disconnect_reasons_exist_from_the_start() {
        let mut registry = Registry::default();
        NetworkMetrics::register(registry.sub_registry_with_prefix("roost"));
        let text = crate::metrics::render(&registry);
        for reason in DISCONNECT_REASONS {
            let sample = format!("roost_peer_disconnects_total{{reason=\"{reason}\"}} 0\n");
            assert!(text.contains(&sample), "{sample} missing from:\n{text}");
        }
    }
}
