//! Building the libp2p `Swarm`: TCP and WebSocket transports (secure WebSocket when
//! `network.ws_tls_cert`/`ws_tls_key` are set), Noise, yamux **and** mplex (js-waku dials mplex
//! only), DNS, bandwidth metrics in the node's registry.

use std::path::Path;

use libp2p::{
    core::{muxing::StreamMuxerBox, upgrade::Version},
    gossipsub,
    identity::Keypair,
    noise, tcp, websocket, yamux, PeerId, Swarm, Transport,
};
use prometheus_client::registry::Registry;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use super::behaviour::Behaviour;
use crate::{config::Config, throttle::Throttle};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot build the libp2p swarm: {0}")]
    Swarm(String),
    #[error("cannot read {key} {path}: {reason}")]
    TlsFile {
        key: &'static str,
        path: String,
        reason: String,
    },
    #[error("network.ws_tls_cert and network.ws_tls_key do not make a usable TLS identity: {0}; check that the key belongs to the certificate")]
    Tls(String),
}

/// Reads the PEM certificate chain and key for the secure WebSocket listener.
pub fn load_tls(cert: &Path, key: &Path) -> Result<websocket::tls::Config, BuildError> {
    let read = |key_name: &'static str, path: &Path| {
        std::fs::read(path).map_err(|e| BuildError::TlsFile {
            key: key_name,
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    };
    let cert_pem = read("network.ws_tls_cert", cert)?;
    let certs: Vec<websocket::tls::Certificate> = CertificateDer::pem_slice_iter(&cert_pem)
        .map(|c| c.map(|c| websocket::tls::Certificate::new(c.to_vec())))
        .collect::<Result<_, _>>()
        .map_err(|e| BuildError::TlsFile {
            key: "network.ws_tls_cert",
            path: cert.display().to_string(),
            reason: format!("not a PEM certificate chain: {e}"),
        })?;
    if certs.is_empty() {
        return Err(BuildError::TlsFile {
            key: "network.ws_tls_cert",
            path: cert.display().to_string(),
            reason: "no `BEGIN CERTIFICATE` block in it".into(),
        });
    }
    let key_pem = read("network.ws_tls_key", key)?;
    let der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| BuildError::TlsFile {
        key: "network.ws_tls_key",
        path: key.display().to_string(),
        reason: format!("not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
    })?;
    let bytes = der.secret_der().to_vec();
    // libp2p re-detects the key format and panics on failure: check first.
    PrivateKeyDer::try_from(bytes.clone()).map_err(|e| BuildError::TlsFile {
        key: "network.ws_tls_key",
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    websocket::tls::Config::new(websocket::tls::PrivateKey::new(bytes), certs)
        .map_err(|e| BuildError::Tls(e.to_string()))
}

pub async fn build_swarm(
    keypair: Keypair,
    config: &Config,
    registry: &mut Registry,
    throttle: Throttle,
    rendezvous_metrics: &crate::rendezvous::Metrics,
    services: super::behaviour::Services,
) -> Result<Swarm<Behaviour>, BuildError> {
    let err = |e: &dyn std::fmt::Display| BuildError::Swarm(e.to_string());
    // Built before the swarm builder so gossipsub can register its metrics in our registry.
    let relay = if config.relay.enabled {
        let mut gs = crate::relay::gossipsub_behaviour(&config.relay).map_err(|e| err(&e))?;
        crate::throttle::scoring::enable(&mut gs, &config.relay, &config.throttle)
            .map_err(|e| err(&e))?;
        Some(gs.with_metrics(
            registry.sub_registry_with_prefix("libp2p_gossipsub"),
            gossipsub::MetricsConfig::default(),
        ))
    } else {
        None
    };
    let tls = match (&config.network.ws_tls_cert, &config.network.ws_tls_key) {
        (Some(cert), Some(key)) => Some(load_tls(cert, key)?),
        _ => None,
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
        .with_other_transport(|key| websocket_transport(key, tls))
        .map_err(|e| err(&e))?
        .with_dns()
        .map_err(|e| err(&e))?
        .with_bandwidth_metrics(registry)
        .with_behaviour(|key| {
            Behaviour::new(key, config, relay, throttle, rendezvous_metrics, services)
        })
        .map_err(|e| err(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    Ok(swarm)
}

/// WebSocket over TCP with Noise and yamux/mplex, TLS-terminated when `tls` has a server
/// identity (listen on `/wss`). The builder's DNS layer sits outside it; to dial a secure
/// WebSocket by name, give the name as `/tls/sni/<name>/ws`.
fn websocket_transport(
    key: &Keypair,
    tls: Option<websocket::tls::Config>,
) -> Result<
    libp2p::core::transport::Boxed<(PeerId, StreamMuxerBox)>,
    Box<dyn std::error::Error + Send + Sync>,
> {
    let mut ws = websocket::Config::new(tcp::tokio::Transport::new(
        tcp::Config::default().nodelay(true),
    ));
    if let Some(tls) = tls {
        ws.set_tls_config(tls);
    }
    Ok(ws
        .upgrade(Version::V1Lazy)
        .authenticate(noise::Config::new(key)?)
        .multiplex(libp2p::core::upgrade::SelectUpgrade::new(
            yamux::Config::default(),
            libp2p_mplex::Config::default(),
        ))
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}
