//! The node's composed `NetworkBehaviour`. Policy behaviours come first so they can refuse a
//! connection before the protocols see it.

use std::time::Duration;

use libp2p::{
    gossipsub, identify, identity::Keypair, ping, swarm::behaviour::toggle::Toggle,
    swarm::NetworkBehaviour,
};

use super::keep_alive;
use crate::{
    config::Config,
    filter, lightpush, metadata,
    metrics::VERSION,
    peer_exchange, rendezvous,
    reqres::{Endpoint, Protocol},
    store, throttle,
};

/// identify's protocol version string: the Waku protocol family.
const IDENTIFY_PROTOCOL: &str = "/vac/waku/2.0.0";

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Per-IP connection limits and bans, refused before the Noise handshake; remote IPs of
    /// connections for quota keys.
    pub throttle: throttle::Behaviour,
    /// Connection caps (total, pending, per peer).
    pub limits: libp2p_connection_limits::Behaviour,
    /// Waku relay; absent when the relay is turned off.
    pub relay: Toggle<gossipsub::Behaviour>,
    /// Cluster/shard exchange on every new connection.
    pub metadata: metadata::Behaviour,
    /// Store v3 queries: served on a store node, client-only otherwise.
    pub store: store::Behaviour,
    /// Rendezvous point and client (`/rendezvous/1.0.0`); outbound-only without the server.
    pub rendezvous: rendezvous::Behaviour,
    /// nwaku's rendezvous flavour (`/vac/waku/rendezvous/1.0.0`), same table.
    pub waku_rendezvous: rendezvous::Behaviour,
    /// Operator attestations (`/roost/attestation/1.0.0`): served when this node has one,
    /// fetched from peers that claim fleet membership.
    pub attestation: crate::operator::behaviour::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    /// Keeps connections of filter subscribers open.
    pub keep_alive: keep_alive::Behaviour,
    /// Light push v3 and legacy (inbound only with `lightpush.enabled`).
    pub lightpush: lightpush::Behaviour,
    pub lightpush_legacy: lightpush::Behaviour,
    /// Filter subscribe (inbound only with `filter.enabled`) and push.
    pub filter_subscribe: filter::SubscribeBehaviour,
    pub filter_push: filter::PushBehaviour,
    /// Peer exchange (inbound only with `peer_exchange.enabled`).
    pub peer_exchange: peer_exchange::Behaviour,
    /// Raw streams for store sync (the sync task holds its `Control`); its protocols are
    /// served only once the sync task accepts them, on store nodes.
    pub sync: libp2p_stream::Behaviour,
}

/// The services' state, moved into their behaviours.
pub struct Services {
    /// Attestations: this node's, and the verified fleet peers.
    pub attestation: crate::operator::behaviour::State,
    /// The rendezvous server's queue (`None`: not a rendezvous point).
    pub rendezvous: Option<rendezvous::Inbox>,
    /// The query threads' queue (`None`: not a store node).
    pub store: Option<store::Inbound>,
    pub lightpush: lightpush::Service,
    pub lightpush_legacy: lightpush::Service,
    pub filter_subscribe: filter::SubscribeService,
    pub filter_push: filter::PushService,
    pub peer_exchange: peer_exchange::Service,
}

impl Behaviour {
    pub fn new(
        keypair: &Keypair,
        config: &Config,
        relay: Option<gossipsub::Behaviour>,
        throttle: throttle::Throttle,
        rendezvous_metrics: &rendezvous::Metrics,
        services: Services,
    ) -> Self {
        let net = &config.network;
        let limits = libp2p_connection_limits::ConnectionLimits::default()
            .with_max_established(Some(net.max_connections))
            .with_max_pending_incoming(Some(net.max_pending_connections))
            .with_max_established_per_peer(Some(net.max_connections_per_peer));
        let max_message = config.relay.max_message_size.as_usize();
        Behaviour {
            throttle: throttle::Behaviour::new(throttle.clone()),
            limits: libp2p_connection_limits::Behaviour::new(limits),
            relay: relay.into(),
            metadata: metadata::behaviour(
                config.relay.cluster_id,
                &config.relay.shards,
                throttle.clone(),
            ),
            store: store::behaviour(services.store, throttle.clone()),
            rendezvous: rendezvous::behaviour(
                &config.rendezvous,
                rendezvous_metrics,
                services.rendezvous.clone(),
                throttle.clone(),
            ),
            waku_rendezvous: rendezvous::waku_behaviour(
                &config.rendezvous,
                rendezvous_metrics,
                services.rendezvous,
                throttle.clone(),
            ),
            attestation: crate::operator::behaviour::behaviour(
                config.operator.attestation.is_some(),
                services.attestation,
                throttle.clone(),
            ),
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.into(), keypair.public())
                    .with_agent_version(format!("roost/{VERSION}"))
                    .with_interval(Duration::from_secs(300)),
            ),
            ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(30))),
            keep_alive: keep_alive::Behaviour::default(),
            lightpush: lightpush::behaviour(
                &config.lightpush,
                max_message,
                services.lightpush,
                throttle.clone(),
            ),
            lightpush_legacy: lightpush::behaviour(
                &config.lightpush,
                max_message,
                services.lightpush_legacy,
                throttle.clone(),
            ),
            filter_subscribe: filter::subscribe_behaviour(
                &config.filter,
                services.filter_subscribe,
                throttle.clone(),
            ),
            filter_push: filter::push_behaviour(
                &config.filter,
                max_message,
                services.filter_push,
                throttle.clone(),
            ),
            peer_exchange: peer_exchange::behaviour(
                &config.peer_exchange,
                services.peer_exchange,
                throttle,
            ),
            sync: libp2p_stream::Behaviour::new(),
        }
    }
}

// === impl Behaviour ===

impl Behaviour {
    /// The behaviour that runs `protocol`, for commands.
    pub fn endpoint(&mut self, protocol: Protocol) -> &mut dyn Endpoint {
        match protocol {
            Protocol::Metadata => &mut self.metadata,
            Protocol::LightPush => &mut self.lightpush,
            Protocol::LightPushLegacy => &mut self.lightpush_legacy,
            Protocol::FilterSubscribe => &mut self.filter_subscribe,
            Protocol::FilterPush => &mut self.filter_push,
            Protocol::PeerExchange => &mut self.peer_exchange,
            Protocol::Store => &mut self.store,
            Protocol::Rendezvous => &mut self.rendezvous,
            Protocol::WakuRendezvous => &mut self.waku_rendezvous,
            Protocol::Attestation => &mut self.attestation,
        }
    }

    /// Fails every request made for another task (at shutdown).
    pub fn fail_pending(&mut self) {
        for protocol in Protocol::ALL {
            self.endpoint(protocol).fail_pending();
        }
    }
}
