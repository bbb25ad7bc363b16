//! The node's composed `NetworkBehaviour`. Policy behaviours come first so they can refuse a
//! connection before the protocols see it.

use std::time::Duration;

use libp2p::{
    gossipsub, identify, identity::Keypair, ping, swarm::behaviour::toggle::Toggle,
    swarm::NetworkBehaviour,
};

use crate::{config::Config, metadata, metrics::VERSION};

/// identify's protocol version string: the Waku protocol family.
const IDENTIFY_PROTOCOL: &str = "/vac/waku/2.0.0";

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Connection caps (total, pending, per peer).
    pub limits: libp2p_connection_limits::Behaviour,
    /// Waku relay; absent when the relay is turned off.
    pub relay: Toggle<gossipsub::Behaviour>,
    /// Cluster/shard exchange on every new connection.
    pub metadata: metadata::Behaviour,
    /// Operator attestations (`/roost/attestation/1.0.0`): served when this node has one,
    /// fetched from peers that claim fleet membership.
    pub attestation: crate::operator::swarm::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
}

impl Behaviour {
    pub fn new(keypair: &Keypair, config: &Config, relay: Option<gossipsub::Behaviour>) -> Self {
        let net = &config.network;
        let limits = libp2p_connection_limits::ConnectionLimits::default()
            .with_max_established(Some(net.max_connections))
            .with_max_pending_incoming(Some(net.max_pending_connections))
            .with_max_established_per_peer(Some(net.max_connections_per_peer));
        Behaviour {
            limits: libp2p_connection_limits::Behaviour::new(limits),
            relay: relay.into(),
            metadata: metadata::behaviour(),
            attestation: crate::operator::swarm::behaviour(config.operator.attestation.is_some()),
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.into(), keypair.public())
                    .with_agent_version(format!("roost/{VERSION}"))
                    .with_interval(Duration::from_secs(300)),
            ),
            ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(30))),
        }
    }
}
