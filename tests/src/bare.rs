//! A bare rust-libp2p peer: gossipsub with Waku's protocol id and parameters, the metadata
//! protocol (so Roost lets it into relay; optional, to play a peer that cannot prove its
//! cluster), and nothing else: no validation, no store, no
//! throttle. Tests use it to send what a Roost node never would (malformed or oversize
//! messages); the relay benchmark uses it as subscribers, publishers and as the reference relay.

use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::{
    gossipsub::{self, IdentTopic, MessageAuthenticity, ValidationMode},
    identity::Keypair,
    noise, request_response,
    swarm::{
        behaviour::toggle::Toggle, dial_opts::DialOpts, ConnectionId, NetworkBehaviour, SwarmEvent,
    },
    tcp, yamux, Multiaddr, PeerId, Swarm,
};
use prost::Message as _;
use roost_node::{metadata::WakuMetadata, reqres::LpCodec};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

#[derive(NetworkBehaviour)]
pub struct BareBehaviour {
    pub gossipsub: gossipsub::Behaviour,
    pub metadata: Toggle<request_response::Behaviour<LpCodec>>,
    /// Protocols listed and never used ([`BareOptions::idle_protocols`]).
    pub idle: Toggle<request_response::Behaviour<LpCodec>>,
    /// Roost's composition without its logic ([`BareOptions::composed`]): identify, ping and
    /// nine more request-response behaviours, one protocol each, never used.
    pub identify: Toggle<libp2p::identify::Behaviour>,
    pub ping: Toggle<libp2p::ping::Behaviour>,
    pub service0: Toggle<request_response::Behaviour<LpCodec>>,
    pub service1: Toggle<request_response::Behaviour<LpCodec>>,
    pub service2: Toggle<request_response::Behaviour<LpCodec>>,
    pub service3: Toggle<request_response::Behaviour<LpCodec>>,
    pub service4: Toggle<request_response::Behaviour<LpCodec>>,
    pub service5: Toggle<request_response::Behaviour<LpCodec>>,
    pub service6: Toggle<request_response::Behaviour<LpCodec>>,
    pub service7: Toggle<request_response::Behaviour<LpCodec>>,
    pub service8: Toggle<request_response::Behaviour<LpCodec>>,
}

/// A message the bare peer received.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub data: Vec<u8>,
    pub at: Instant,
}

enum Cmd {
    Publish(String, Vec<u8>, oneshot::Sender<Result<(), String>>),
    Dial(Multiaddr, oneshot::Sender<Result<(), String>>),
    Connect(Multiaddr, oneshot::Sender<Result<PeerId, String>>),
    MeshPeers(String, oneshot::Sender<usize>),
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
}

/// Options for a bare peer.
#[derive(Debug, Clone)]
pub struct BareOptions {
    pub cluster_id: u16,
    pub topics: Vec<String>,
    /// Largest gossipsub frame; set high to be able to send oversize messages.
    pub max_transmit_size: usize,
    /// Whether to keep received messages (subscribers) or just count them.
    pub forward_received: bool,
    /// Whether to speak Waku metadata (answer with `cluster_id`). Without it Roost treats
    /// the peer as a generic libp2p peer and keeps it out of relay.
    pub speaks_metadata: bool,
    /// Extra protocols the peer lists and never uses, all in one handler. For the relay
    /// benchmark: libp2p compares a connection's protocol set with its handlers' on every
    /// wake-up of the connection, so that cost grows with how many protocols a node speaks.
    pub idle_protocols: usize,
    /// What Roost's gossipsub adds to the bare one, for the relay benchmark: peer scoring with
    /// Roost's parameters and gossipsub's metrics (into a registry of the peer's own).
    pub scored_and_metered: bool,
    /// Roost's behaviour composition without its logic: identify, ping and nine more idle
    /// request-response behaviours (Roost composes 17 behaviours, 10 of them request-response;
    /// libp2p polls every handler of a connection on each of its wake-ups).
    pub composed: bool,
    /// libp2p's bandwidth metrics on the transport (`libp2p_bandwidth_bytes_total`), as Roost
    /// counts its traffic.
    pub bandwidth_metered: bool,
    /// Gossipsub's `validate_messages` mode with every message accepted as soon as it is
    /// handed up: the validation round trip any validating node has, without a validator.
    pub validates: bool,
}

impl Default for BareOptions {
    fn default() -> Self {
        BareOptions {
            cluster_id: 1,
            topics: vec!["/waku/2/rs/1/0".into()],
            max_transmit_size: 4 * 1024 * 1024,
            forward_received: true,
            speaks_metadata: true,
            idle_protocols: 0,
            scored_and_metered: false,
            composed: false,
            bandwidth_metered: false,
            validates: false,
        }
    }
}

/// Handle to a bare peer running on its own task.
pub struct BarePeer {
    pub peer_id: PeerId,
    pub listen_addr: Multiaddr,
    commands: mpsc::Sender<Cmd>,
    pub received: mpsc::Receiver<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl BarePeer {
    /// Starts a bare peer listening on 127.0.0.1 with a free TCP port.
    pub async fn start(options: BareOptions) -> anyhow::Result<BarePeer> {
        let keypair = Keypair::generate_ed25519();
        let peer_id = keypair.public().to_peer_id();
        let mut swarm = build(keypair, &options)?;
        swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
        let listen_addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address.with(libp2p::multiaddr::Protocol::P2p(peer_id));
            }
        };
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (recv_tx, recv_rx) = mpsc::channel(100_000);
        let task = tokio::spawn(run(swarm, cmd_rx, recv_tx, options));
        Ok(BarePeer {
            peer_id,
            listen_addr,
            commands: cmd_tx,
            received: recv_rx,
            task,
        })
    }

    /// Publishes raw bytes on a topic, bypassing every Waku check.
    pub async fn publish(&self, topic: &str, data: Vec<u8>) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Cmd::Publish(topic.to_owned(), data, tx))
            .await
            .map_err(|_| "bare peer stopped".to_owned())?;
        rx.await.map_err(|_| "bare peer stopped".to_owned())?
    }

    pub async fn dial(&self, address: Multiaddr) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Cmd::Dial(address, tx))
            .await
            .map_err(|_| "bare peer stopped".to_owned())?;
        rx.await.map_err(|_| "bare peer stopped".to_owned())?
    }

    /// Dials `address` and waits for the outcome: `Ok(peer)` once the connection is
    /// established (Noise and multiplexer done), `Err` when it failed or was refused.
    pub async fn connect(&self, address: Multiaddr) -> Result<PeerId, String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Cmd::Connect(address, tx))
            .await
            .map_err(|_| "bare peer stopped".to_owned())?;
        rx.await.map_err(|_| "bare peer stopped".to_owned())?
    }

    pub async fn mesh_peers(&self, topic: &str) -> usize {
        let (tx, rx) = oneshot::channel();
        if self
            .commands
            .send(Cmd::MeshPeers(topic.to_owned(), tx))
            .await
            .is_err()
        {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    pub async fn connected_peers(&self) -> Vec<PeerId> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Cmd::ConnectedPeers(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Waits for the next received message, up to `timeout`.
    pub async fn next_message(&mut self, timeout: Duration) -> Option<Received> {
        tokio::time::timeout(timeout, self.received.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for BarePeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn build(keypair: Keypair, options: &BareOptions) -> anyhow::Result<Swarm<BareBehaviour>> {
    let mut gs_config = gossipsub::ConfigBuilder::default();
    if options.validates {
        gs_config.validate_messages();
    }
    let gs_config = gs_config
        .protocol_id(roost_node::relay::PROTOCOL_ID, gossipsub::Version::V1_1)
        .validation_mode(ValidationMode::Anonymous)
        .message_id_fn(|m: &gossipsub::Message| {
            gossipsub::MessageId::from(Sha256::digest(&m.data).to_vec())
        })
        .max_transmit_size(options.max_transmit_size)
        .mesh_n(6)
        .mesh_n_low(4)
        .mesh_n_high(8)
        .mesh_outbound_min(3)
        .gossip_lazy(6)
        .gossip_factor(0.25)
        .heartbeat_interval(Duration::from_secs(1))
        .history_length(6)
        .history_gossip(3)
        .fanout_ttl(Duration::from_secs(60))
        .duplicate_cache_time(Duration::from_secs(120))
        .prune_backoff(Duration::from_secs(60))
        .flood_publish(true)
        .build()
        .map_err(|e| anyhow::anyhow!("gossipsub config: {e}"))?;
    let mut gossipsub = gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, gs_config)
        .map_err(|e| anyhow::anyhow!(e))?;
    if options.scored_and_metered {
        // As Roost's test and benchmark nodes run: loopback spared the IP colocation penalty
        // (every peer here shares 127.0.0.1).
        let mut config = roost_node::Config::default();
        config.throttle.exempt_ips = vec![[127, 0, 0, 1].into()];
        roost_node::throttle::scoring::enable(&mut gossipsub, &config.relay, &config.throttle)
            .map_err(|e| anyhow::anyhow!(e))?;
        let mut registry = prometheus_client::registry::Registry::default();
        gossipsub = gossipsub.with_metrics(&mut registry, gossipsub::MetricsConfig::default());
    }
    for topic in &options.topics {
        gossipsub.subscribe(&IdentTopic::new(topic.clone()))?;
    }
    let metadata = options.speaks_metadata.then(|| {
        request_response::Behaviour::with_codec(
            LpCodec::new(1024, 1024),
            [(
                roost_node::metadata::PROTOCOL_ID,
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default(),
        )
    });
    let idle = if options.idle_protocols > 0 {
        let protocols = (0..options.idle_protocols)
            .map(|i| {
                libp2p::StreamProtocol::try_from_owned(format!("/roost-bench/idle/{i}/1.0.0"))
                    .map(|p| (p, request_response::ProtocolSupport::Full))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("idle protocol: {e}"))?;
        Some(request_response::Behaviour::with_codec(
            LpCodec::new(1024, 1024),
            protocols,
            request_response::Config::default(),
        ))
    } else {
        None
    };
    let service = |i: usize| -> anyhow::Result<Option<request_response::Behaviour<LpCodec>>> {
        if !options.composed {
            return Ok(None);
        }
        let protocol =
            libp2p::StreamProtocol::try_from_owned(format!("/roost-bench/service/{i}/1.0.0"))
                .map_err(|e| anyhow::anyhow!("service protocol: {e}"))?;
        Ok(Some(request_response::Behaviour::with_codec(
            LpCodec::new(1024, 1024),
            [(protocol, request_response::ProtocolSupport::Full)],
            request_response::Config::default(),
        )))
    };
    let identify = options.composed.then(|| {
        libp2p::identify::Behaviour::new(libp2p::identify::Config::new(
            "/roost-bench/1.0.0".into(),
            keypair.public(),
        ))
    });
    let ping = options
        .composed
        .then(|| libp2p::ping::Behaviour::new(libp2p::ping::Config::new()));
    let services = [
        service(0)?,
        service(1)?,
        service(2)?,
        service(3)?,
        service(4)?,
        service(5)?,
        service(6)?,
        service(7)?,
        service(8)?,
    ];
    let [s0, s1, s2, s3, s4, s5, s6, s7, s8] = services;
    let behaviour = BareBehaviour {
        gossipsub,
        metadata: metadata.into(),
        idle: idle.into(),
        identify: identify.into(),
        ping: ping.into(),
        service0: s0.into(),
        service1: s1.into(),
        service2: s2.into(),
        service3: s3.into(),
        service4: s4.into(),
        service5: s5.into(),
        service6: s6.into(),
        service7: s7.into(),
        service8: s8.into(),
    };
    let idle_timeout = Duration::from_secs(60);
    let tcp_phase = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            (yamux::Config::default, libp2p_mplex::Config::default),
        )?;
    let swarm = if options.bandwidth_metered {
        // The counters land in a registry of the peer's own, as Roost's land in its registry.
        let mut registry = prometheus_client::registry::Registry::default();
        tcp_phase
            .with_bandwidth_metrics(&mut registry)
            .with_behaviour(|_| behaviour)?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle_timeout))
            .build()
    } else {
        tcp_phase
            .with_behaviour(|_| behaviour)?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle_timeout))
            .build()
    };
    Ok(swarm)
}

async fn run(
    mut swarm: Swarm<BareBehaviour>,
    mut commands: mpsc::Receiver<Cmd>,
    received: mpsc::Sender<Received>,
    options: BareOptions,
) {
    let ours = WakuMetadata::new(options.cluster_id, &[0]).encode_to_vec();
    let mut connecting: std::collections::HashMap<
        ConnectionId,
        oneshot::Sender<Result<PeerId, String>>,
    > = std::collections::HashMap::new();
    loop {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                None => return,
                Some(Cmd::Publish(topic, data, reply)) => {
                    let r = swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(IdentTopic::new(topic), data)
                        .map(|_| ())
                        .map_err(|e| e.to_string());
                    let _ = reply.send(r);
                }
                Some(Cmd::Dial(addr, reply)) => {
                    let _ = reply.send(swarm.dial(addr).map_err(|e| e.to_string()));
                }
                Some(Cmd::Connect(addr, reply)) => {
                    let opts = DialOpts::unknown_peer_id().address(addr).build();
                    let id = opts.connection_id();
                    match swarm.dial(opts) {
                        Ok(()) => {
                            connecting.insert(id, reply);
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e.to_string()));
                        }
                    }
                }
                Some(Cmd::MeshPeers(topic, reply)) => {
                    let hash = IdentTopic::new(topic).hash();
                    let _ = reply.send(swarm.behaviour().gossipsub.mesh_peers(&hash).count());
                }
                Some(Cmd::ConnectedPeers(reply)) => {
                    let _ = reply.send(swarm.connected_peers().copied().collect());
                }
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { peer_id, connection_id, .. } => {
                    if let Some(reply) = connecting.remove(&connection_id) {
                        let _ = reply.send(Ok(peer_id));
                    }
                }
                SwarmEvent::OutgoingConnectionError { connection_id, error, .. } => {
                    if let Some(reply) = connecting.remove(&connection_id) {
                        let _ = reply.send(Err(error.to_string()));
                    }
                }
                SwarmEvent::Behaviour(BareBehaviourEvent::Gossipsub(gossipsub::Event::Message {
                    propagation_source, message_id, message,
                })) => {
                    if options.validates {
                        swarm.behaviour_mut().gossipsub.report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            gossipsub::MessageAcceptance::Accept,
                        );
                    }
                    if options.forward_received {
                        let _ = received.try_send(Received {
                            topic: message.topic.into_string(),
                            data: message.data,
                            at: Instant::now(),
                        });
                    }
                }
                SwarmEvent::Behaviour(BareBehaviourEvent::Metadata(request_response::Event::Message {
                    message: request_response::Message::Request { channel, .. }, ..
                })) => {
                    if let Some(metadata) = swarm.behaviour_mut().metadata.as_mut() {
                        let _ = metadata.send_response(channel, ours.clone());
                    }
                }
                _ => {}
            }
        }
    }
}
