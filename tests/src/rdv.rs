//! A bare rendezvous client: one libp2p identity that sends raw request bytes on
//! `/rendezvous/1.0.0` or `/vac/waku/rendezvous/1.0.0` and answers Waku metadata (so Roost
//! points keep it connected). Tests use it to send what real clients of other languages send
//! (hand-encoded records, proto3 messages, garbage); the rendezvous benchmark uses thousands
//! of them as load against Roost and against rust-libp2p's in-memory server.
//!
//! The swarm is driven only while a request is in flight: no task, no channels.

use std::time::Duration;

use futures::StreamExt;
use libp2p::{
    identity::Keypair,
    noise, request_response,
    swarm::{NetworkBehaviour, SwarmEvent},
    tcp, yamux, Multiaddr, PeerId, Swarm,
};
use prost::Message as _;
use roost_node::{client::peer_id_of, metadata::WakuMetadata, rendezvous, reqres::LpCodec};

#[derive(NetworkBehaviour)]
pub struct RdvBehaviour {
    pub rendezvous: request_response::Behaviour<LpCodec>,
    pub waku_rendezvous: request_response::Behaviour<LpCodec>,
    pub metadata: request_response::Behaviour<LpCodec>,
}

/// Which rendezvous protocol a request goes out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Libp2p,
    Waku,
}

pub struct RdvPeer {
    pub keypair: Keypair,
    pub peer_id: PeerId,
    swarm: Swarm<RdvBehaviour>,
    metadata: Vec<u8>,
}

impl RdvPeer {
    /// A client with `keypair`, announcing `cluster_id` in the metadata exchange.
    pub fn new(keypair: Keypair, cluster_id: u16) -> anyhow::Result<RdvPeer> {
        let outbound = |protocol| {
            request_response::Behaviour::with_codec(
                LpCodec::new(64 * 1024, rendezvous::MAX_RESPONSE_BYTES),
                [(protocol, request_response::ProtocolSupport::Outbound)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(30)),
            )
        };
        let metadata = request_response::Behaviour::with_codec(
            LpCodec::new(1024, 1024),
            [(
                roost_node::metadata::PROTOCOL_ID,
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default(),
        );
        let behaviour = RdvBehaviour {
            rendezvous: outbound(rendezvous::PROTOCOL_ID),
            waku_rendezvous: outbound(rendezvous::WAKU_PROTOCOL_ID),
            metadata,
        };
        let peer_id = keypair.public().to_peer_id();
        let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair.clone())
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(|_| behaviour)?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        Ok(RdvPeer {
            keypair,
            peer_id,
            swarm,
            metadata: WakuMetadata::new(cluster_id, &[]).encode_to_vec(),
        })
    }

    /// A client with a fresh Ed25519 identity in cluster 1.
    pub fn ed25519() -> anyhow::Result<RdvPeer> {
        RdvPeer::new(Keypair::generate_ed25519(), 1)
    }

    /// Sends `request` to the point at `point` (with `/p2p/`), dialling it if needed, and
    /// returns the response bytes (empty when the point closed the stream without one).
    pub async fn request(
        &mut self,
        point: &Multiaddr,
        flavour: Flavour,
        request: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let peer = peer_id_of(point).ok_or("point address has no /p2p/")?;
        let behaviour = self.swarm.behaviour_mut();
        let rr = match flavour {
            Flavour::Libp2p => &mut behaviour.rendezvous,
            Flavour::Waku => &mut behaviour.waku_rendezvous,
        };
        let id = rr.send_request_with_addresses(&peer, request, vec![point.clone()]);
        loop {
            let event = self.swarm.select_next_some().await;
            let rr_event = match event {
                SwarmEvent::Behaviour(RdvBehaviourEvent::Rendezvous(e))
                | SwarmEvent::Behaviour(RdvBehaviourEvent::WakuRendezvous(e)) => e,
                SwarmEvent::Behaviour(RdvBehaviourEvent::Metadata(
                    request_response::Event::Message {
                        message: request_response::Message::Request { channel, .. },
                        ..
                    },
                )) => {
                    let ours = self.metadata.clone();
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .metadata
                        .send_response(channel, ours);
                    continue;
                }
                _ => continue,
            };
            match rr_event {
                request_response::Event::Message {
                    message:
                        request_response::Message::Response {
                            request_id,
                            response,
                        },
                    ..
                } if request_id == id => return Ok(response),
                request_response::Event::OutboundFailure {
                    request_id, error, ..
                } if request_id == id => return Err(error.to_string()),
                _ => {}
            }
        }
    }

    /// Whether this client has a connection to `peer`.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.swarm.is_connected(peer)
    }
}
