//! The one metrics registry: everything the node exports lives under `roost_*`, libp2p's own
//! metrics under `libp2p_*`, both served by `/metrics`. Capabilities register their metrics in
//! sub-registries (`roost_relay_*`, `roost_store_*`, ...) when the node is built.

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};

/// The node's version, as shown in `roost_build_info` and identify's agent string.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Buckets (seconds) of the request-duration histograms of the request/response services.
pub const REQUEST_DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram with [`REQUEST_DURATION_BUCKETS`], as a `Family` constructor.
pub fn request_duration_histogram() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new(REQUEST_DURATION_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    pub channel: &'static str,
}

/// Node-wide network metrics owned by the swarm task.
#[derive(Clone, Debug)]
pub struct NetworkMetrics {
    pub peers_connected: Gauge,
    pub connections_established: Family<DirectionLabels, Counter>,
    pub peer_disconnects: Family<ReasonLabels, Counter>,
    pub static_peer_dials: Family<ReasonLabels, Counter>,
    pub channel_depth: Family<ChannelLabels, Gauge>,
}

impl NetworkMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = NetworkMetrics {
            peers_connected: Gauge::default(),
            connections_established: Family::default(),
            peer_disconnects: Family::default(),
            static_peer_dials: Family::default(),
            channel_depth: Family::default(),
        };
        registry.register(
            "peers_connected",
            "Peers with at least one open connection",
            m.peers_connected.clone(),
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

/// A registry with the build info already in it.
pub fn new_registry() -> Registry {
    let mut registry = Registry::default();
    let info = Info::new(vec![("version", VERSION.to_owned())]);
    registry
        .sub_registry_with_prefix("roost")
        .register("build", "Roost build information", info);
    registry
}

/// The registry rendered in the Prometheus/OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = encode(&mut out, registry) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    out
}
