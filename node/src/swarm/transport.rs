//! Building the libp2p `Swarm`: TCP and WebSocket transports, Noise, yamux **and** mplex
//! (js-waku dials mplex only), DNS, bandwidth metrics in the node's registry.

use libp2p::{gossipsub, identity::Keypair, noise, tcp, yamux, Swarm};
use prometheus_client::registry::Registry;

use super::behaviour::Behaviour;
use crate::{config::Config, throttle::Throttle};

#[derive(Debug, thiserror::Error)]
#[error("cannot build the libp2p swarm: {0}")]
pub struct BuildError(String);

pub async fn build_swarm(
    keypair: Keypair,
    config: &Config,
    registry: &mut Registry,
    throttle: Throttle,
) -> Result<Swarm<Behaviour>, BuildError> {
    let err = |e: &dyn std::fmt::Display| BuildError(e.to_string());
    // Built before the swarm builder so gossipsub can register its metrics in our registry.
    let relay = if config.relay.enabled {
        let mut gs = crate::relay::gossipsub_behaviour(&config.relay).map_err(|e| err(&e))?;
        crate::throttle::scoring::enable(&mut gs, config).map_err(|e| err(&e))?;
        Some(gs.with_metrics(
            registry.sub_registry_with_prefix("libp2p_gossipsub"),
            gossipsub::MetricsConfig::default(),
        ))
    } else {
        None
    };
    let idle = config.network.idle_connection_timeout;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            (yamux::Config::default, libp2p_mplex::Config::default),
        )
        .map_err(|e| err(&e))?
        .with_dns()
        .map_err(|e| err(&e))?
        .with_websocket(
            noise::Config::new,
            (yamux::Config::default, libp2p_mplex::Config::default),
        )
        .await
        .map_err(|e| err(&e))?
        .with_bandwidth_metrics(registry)
        .with_behaviour(|key| Behaviour::new(key, config, relay, throttle))
        .map_err(|e| err(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    Ok(swarm)
}
