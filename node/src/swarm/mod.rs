//! The swarm task: the only owner of the libp2p `Swarm`.
//!
//! Data flow:
//! - socket → transport (TCP or WebSocket) → Noise → yamux/mplex → behaviours;
//! - gossipsub hands every received message up as `Event::Message`; the task asks the
//!   throttle's relay gate, then the relay's [`Router`](crate::relay::Router), which validates
//!   it, reports Accept/Reject to gossipsub (which forwards only accepted messages) and gives
//!   accepted ones to the local [`MessageSink`]s (store, filter, API subscribers);
//! - every other service is a behaviour of its own ([`Behaviour`]); the task routes the few
//!   events they emit (a light push to publish, what metadata learnt) and the commands;
//! - other tasks talk to it only through the bounded [`Command`] channel;
//! - the loop is `biased`: shutdown first, then local commands, then network events (up to
//!   `EVENTS_PER_ROUND` already ready ones per turn), then timers.

mod behaviour;
pub mod command;
pub mod keep_alive;
pub mod metrics;
pub mod peer_kind;
mod static_peers;
mod status;
mod transport;

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use libp2p::metrics::Recorder;
use libp2p::{gossipsub, identify, multiaddr::Protocol, ping, swarm::SwarmEvent, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot, watch};

pub use crate::relay::MessageSink;
pub use crate::reqres::{Protocol as ReqResProtocol, RequestError};
pub use behaviour::{Behaviour, BehaviourEvent, Services};
pub use command::{
    Command, NetworkStatus, PeerStatus, PublishError, PublishReceipt, ShardStatus, COMMAND_CAPACITY,
};
pub use peer_kind::{PeerKind, PeerKinds};
pub use transport::{build_swarm, BuildError};

use metrics::{DirectionLabels, NetworkMetrics};
use static_peers::StaticPeers;

use crate::{
    config::Config, health::Health, lightpush, metadata, metrics::ReasonLabels, relay,
    throttle::Throttle,
};

/// How often gauges (mesh sizes, queue depths, health) are refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);
/// Most swarm events handled per wake-up of the swarm task before shutdown, commands and
/// timers are looked at again.
const EVENTS_PER_ROUND: usize = 32;

pub struct SwarmTask {
    pub(crate) swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    shutdown: watch::Receiver<bool>,
    relay: relay::Router,
    net_metrics: NetworkMetrics,
    libp2p_metrics: libp2p::metrics::Metrics,
    health: Health,
    pub(crate) throttle: Throttle,
    /// The relayed topics: `relay.shards` and what REST joined.
    topics: relay::RelayedTopics,
    nwaku: crate::metrics::NwakuNames,
    relay_enabled: bool,
    static_peers: StaticPeers,
    /// What metadata said each connected peer is (Waku, generic libp2p, not known yet).
    pub(crate) peer_kinds: PeerKinds,
    /// The address of each connected peer's first connection, for the REST admin peer list.
    peer_addresses: std::collections::HashMap<libp2p::PeerId, libp2p::Multiaddr>,
    /// The agent and protocols each connected peer gave in identify (store sync picks its
    /// peers by them; the REST admin API lists them); bounded by the connection limits.
    peer_protocols: std::collections::HashMap<libp2p::PeerId, (String, Vec<String>)>,
    command_capacity: usize,
    /// `Command::Connect`s waiting for their dial's outcome; every dial ends in exactly one
    /// established or failed event, which removes its entry.
    pending_connects:
        std::collections::HashMap<libp2p::swarm::ConnectionId, oneshot::Sender<Result<(), String>>>,
    /// `Command::Connect`s whose connection is up, answered once the peer's metadata exchange
    /// has settled what it is (or it went away): then relay has taken it in or left it out, as
    /// nim-libp2p's connect returns after identify. Emptied by metadata and disconnects.
    awaiting_metadata: std::collections::HashMap<PeerId, Vec<oneshot::Sender<Result<(), String>>>>,
}

/// Everything the swarm task needs besides the swarm itself.
pub struct SwarmTaskParts {
    pub commands: mpsc::Receiver<Command>,
    pub shutdown: watch::Receiver<bool>,
    pub sinks: Vec<Box<dyn MessageSink>>,
    pub relay_metrics: relay::Metrics,
    pub net_metrics: NetworkMetrics,
    pub libp2p_metrics: libp2p::metrics::Metrics,
    pub health: Health,
    pub throttle: Throttle,
    /// The node's relayed topics, shared with what takes messages by topic.
    pub topics: relay::RelayedTopics,
    /// A few figures under nwaku's names.
    pub nwaku: crate::metrics::NwakuNames,
}

impl SwarmTask {
    pub fn new(swarm: Swarm<Behaviour>, config: &Config, parts: SwarmTaskParts) -> Self {
        let static_peers = StaticPeers::new(
            &config.network.peers,
            config.network.redial_max_backoff,
            parts.net_metrics.static_peer_dials.clone(),
        );
        let mut task = SwarmTask {
            swarm,
            commands: parts.commands,
            shutdown: parts.shutdown,
            relay: relay::Router::new(
                &config.relay,
                parts.topics.clone(),
                parts.sinks,
                parts.relay_metrics,
                parts.nwaku.clone(),
            ),
            topics: parts.topics,
            nwaku: parts.nwaku,
            net_metrics: parts.net_metrics,
            libp2p_metrics: parts.libp2p_metrics,
            health: parts.health,
            throttle: parts.throttle,
            relay_enabled: config.relay.enabled,
            static_peers,
            peer_kinds: PeerKinds::default(),
            peer_addresses: std::collections::HashMap::new(),
            peer_protocols: std::collections::HashMap::new(),
            command_capacity: COMMAND_CAPACITY,
            pending_connects: std::collections::HashMap::new(),
            awaiting_metadata: std::collections::HashMap::new(),
        };
        task.subscribe_shards(config);
        task
    }

    fn subscribe_shards(&mut self, config: &Config) {
        if let Some(gs) = self.swarm.behaviour_mut().relay.as_mut() {
            for shard in config.relay.pubsub_topics() {
                match gs.subscribe(&relay::topic(shard)) {
                    Ok(_) => {
                        self.nwaku.pubsub_subscriptions.inc();
                    }
                    Err(e) => {
                        tracing::error!(topic = %shard, error = ?e, "cannot subscribe to shard")
                    }
                };
            }
        }
    }

    /// Joins or leaves a shard at run time: gossipsub (un)subscribes, the topic gets Waku's
    /// score parameters, and the shared topic set follows, so validation, store and filter
    /// take its messages.
    fn relay_topic(&mut self, pubsub_topic: &str, join: bool) -> Result<bool, String> {
        if !self.topics.could_join(pubsub_topic) {
            return Err(format!(
                "{pubsub_topic} is not a pubsub topic of the form /waku/2/rs/<cluster>/<shard>"
            ));
        }
        let Some(gs) = self.swarm.behaviour_mut().relay.as_mut() else {
            return Err("relay is disabled on this node".into());
        };
        let topic = gossipsub::IdentTopic::new(pubsub_topic);
        if join {
            if self.topics.contains(pubsub_topic) {
                return Ok(false);
            }
            // Scoring may be off (no throttle); then there are no parameters to set.
            let _ = gs.set_topic_params(topic.clone(), crate::throttle::scoring::topic_params());
            gs.subscribe(&topic)
                .map_err(|e| format!("cannot subscribe to {pubsub_topic}: {e:?}"))?;
            self.nwaku.pubsub_subscriptions.inc();
            self.topics.insert(pubsub_topic);
            tracing::info!(topic = pubsub_topic, "relaying a shard joined at run time");
            Ok(true)
        } else {
            if self.topics.is_configured(pubsub_topic) || !self.topics.contains(pubsub_topic) {
                return Ok(false);
            }
            self.topics.remove(pubsub_topic);
            gs.unsubscribe(&topic);
            tracing::info!(
                topic = pubsub_topic,
                "no longer relaying a shard joined at run time"
            );
            Ok(true)
        }
    }

    /// Mutable access for start-up (listeners) before the task runs.
    pub fn swarm_mut(&mut self) -> &mut Swarm<Behaviour> {
        &mut self.swarm
    }

    /// Runs until shutdown is signalled or every command sender is gone.
    pub async fn run(mut self) {
        let mut gauges = tokio::time::interval(GAUGE_INTERVAL);
        gauges.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        break;
                    }
                }
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                event = self.swarm.select_next_some() => {
                    self.on_swarm_event(event);
                    // Under load events come in runs (a relayed message, its forwards, the
                    // next one): take those already ready before going round the select
                    // again, which re-arms the shutdown and command futures each time.
                    for _ in 1..EVENTS_PER_ROUND {
                        match self.swarm.next().now_or_never() {
                            Some(Some(event)) => self.on_swarm_event(event),
                            _ => break,
                        }
                    }
                }
                _ = gauges.tick() => {
                    self.static_peers.redial(&mut self.swarm);
                    self.attestation_tick();
                    self.refresh_gauges();
                    self.score_tick();
                }
            }
        }
        self.drain().await;
    }

    /// Stops listening, closes connections and gives them a moment to say goodbye.
    async fn drain(&mut self) {
        tracing::info!("swarm task stopping: closing listeners and connections");
        let listeners: Vec<_> = self.swarm.listeners().cloned().collect();
        if !listeners.is_empty() {
            tracing::debug!(count = listeners.len(), "listeners closing");
        }
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        // Fail pending commands clearly instead of leaving callers hanging.
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Publish { reply, .. } => {
                    let _ = reply.send(Err(PublishError::ShuttingDown));
                }
                Command::Request { reply, .. } => {
                    let _ = reply.send(Err(RequestError::ShuttingDown));
                }
                _ => {}
            }
        }
        self.swarm.behaviour_mut().fail_pending();
        let deadline = tokio::time::sleep(Duration::from_millis(500));
        tokio::pin!(deadline);
        while self.swarm.connected_peers().next().is_some() {
            tokio::select! {
                _ = &mut deadline => break,
                event = self.swarm.select_next_some() => self.libp2p_metrics.record(&event),
            }
        }
    }

    // === commands ===

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish {
                pubsub_topic,
                message,
                fanout,
                reply,
            } => {
                let result = self.publish(pubsub_topic, message, fanout);
                let _ = reply.send(result);
            }
            Command::RelayTopic {
                pubsub_topic,
                join,
                reply,
            } => {
                let _ = reply.send(self.relay_topic(&pubsub_topic, join));
            }
            Command::KeepPeer { address } => {
                self.static_peers.add(address);
            }
            Command::Dial { address, reply } => {
                let result = self.swarm.dial(address).map_err(|e| e.to_string());
                let _ = reply.send(result);
            }
            Command::Connect { address, reply } => {
                let opts = libp2p::swarm::dial_opts::DialOpts::from(address);
                let connection = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.pending_connects.insert(connection, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            Command::DialPeer {
                peer,
                addresses,
                reply,
            } => {
                let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                    .addresses(addresses)
                    .condition(libp2p::swarm::dial_opts::PeerCondition::DisconnectedAndNotDialing)
                    .build();
                let result = match self.swarm.dial(opts) {
                    Ok(()) | Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => Ok(()),
                    Err(e) => Err(e.to_string()),
                };
                let _ = reply.send(result);
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::Request {
                protocol,
                peer,
                addresses,
                request,
                reply,
            } => self
                .swarm
                .behaviour_mut()
                .endpoint(protocol)
                .request_for(&peer, addresses, request, reply),
            Command::Respond {
                protocol,
                channel,
                response,
            } => self
                .swarm
                .behaviour_mut()
                .endpoint(protocol)
                .respond(channel, response),
            Command::KeepAlive { peer, keep_alive } => {
                self.swarm.behaviour_mut().keep_alive.set(peer, keep_alive);
            }
        }
    }

    fn publish(
        &mut self,
        pubsub_topic: String,
        message: crate::message::WakuMessage,
        fanout: bool,
    ) -> Result<PublishReceipt, PublishError> {
        let relay = self.swarm.behaviour_mut().relay.as_mut();
        self.relay.publish(relay, pubsub_topic, message, fanout)
    }

    /// A light push to publish as if it were local; the behaviour answers with the result.
    fn on_lightpush(&mut self, event: lightpush::Event) {
        let lightpush::Event::Publish(push) = event;
        let result = self.publish(push.pubsub_topic, push.message, false);
        let behaviour = self.swarm.behaviour_mut();
        let lightpush = match push.pending.version() {
            lightpush::Version::V3 => &mut behaviour.lightpush,
            lightpush::Version::Legacy => &mut behaviour.lightpush_legacy,
        };
        lightpush::published(lightpush, push.pending, result);
    }

    // === swarm events ===

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.libp2p_metrics.record(&event);
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Relay(event)) => self.on_gossipsub(event),
            SwarmEvent::Behaviour(BehaviourEvent::Metadata(event)) => self.on_metadata(event),
            SwarmEvent::Behaviour(BehaviourEvent::Store(never)) => match never {},
            SwarmEvent::Behaviour(BehaviourEvent::Rendezvous(never)) => match never {},
            SwarmEvent::Behaviour(BehaviourEvent::WakuRendezvous(never)) => match never {},
            SwarmEvent::Behaviour(BehaviourEvent::Attestation(never)) => match never {},
            SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => {
                self.libp2p_metrics.record(&event);
                if let identify::Event::Received { peer_id, info, .. } = &event {
                    tracing::debug!(peer = %peer_id, agent = %info.agent_version, "identified peer");
                    if self.swarm.is_connected(peer_id) {
                        self.peer_protocols.insert(
                            *peer_id,
                            (
                                info.agent_version.clone(),
                                info.protocols.iter().map(ToString::to_string).collect(),
                            ),
                        );
                    }
                    let is_static = self.static_peers.contains(peer_id);
                    crate::peer_exchange::behaviour::on_identified(
                        &mut self.swarm.behaviour_mut().peer_exchange,
                        *peer_id,
                        &info.protocols,
                        is_static,
                    );
                    crate::operator::behaviour::on_identified(
                        &mut self.swarm.behaviour_mut().attestation,
                        *peer_id,
                        info,
                    );
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(event)) => self.on_ping(event),
            SwarmEvent::Behaviour(BehaviourEvent::Limits(never)) => match never {},
            SwarmEvent::Behaviour(BehaviourEvent::Throttle(never)) => match never {},
            SwarmEvent::Behaviour(BehaviourEvent::KeepAlive(never)) => match never {},
            SwarmEvent::Behaviour(BehaviourEvent::Lightpush(event))
            | SwarmEvent::Behaviour(BehaviourEvent::LightpushLegacy(event)) => {
                self.on_lightpush(event)
            }
            SwarmEvent::Behaviour(BehaviourEvent::FilterSubscribe(never)) => match never {},
            SwarmEvent::Behaviour(BehaviourEvent::FilterPush(never)) => match never {},
            SwarmEvent::Behaviour(BehaviourEvent::PeerExchange(never)) => match never {},
            SwarmEvent::Behaviour(BehaviourEvent::Sync(())) => {}
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                let direction = if endpoint.is_dialer() {
                    // A dial that came through (failed ones count below).
                    self.nwaku.dial_attempts.inc();
                    "outbound"
                } else {
                    "inbound"
                };
                self.net_metrics
                    .connections_established
                    .get_or_create(&DirectionLabels { direction })
                    .inc();
                tracing::debug!(peer = %peer_id, %direction, address = %static_peers::endpoint_address(&endpoint), "connection established");
                self.static_peers
                    .connected(peer_id, connection_id, &endpoint);
                if num_established.get() == 1 {
                    self.peer_kinds.connected(peer_id);
                    self.peer_addresses
                        .insert(peer_id, static_peers::endpoint_address(&endpoint).clone());
                    metadata::ask(&mut self.swarm.behaviour_mut().metadata, peer_id);
                }
                if let Some(reply) = self.pending_connects.remove(&connection_id) {
                    if self.peer_kinds.get(&peer_id) == Some(PeerKind::Pending) {
                        self.awaiting_metadata
                            .entry(peer_id)
                            .or_default()
                            .push(reply);
                    } else {
                        let _ = reply.send(Ok(()));
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                tracing::debug!(peer = %peer_id, cause = ?cause, remaining = num_established, "connection closed");
                if num_established == 0 {
                    self.settle_connects(peer_id);
                    self.peer_addresses.remove(&peer_id);
                    self.peer_protocols.remove(&peer_id);
                    metadata::forget(&mut self.swarm.behaviour_mut().metadata, &peer_id);
                    if self.peer_kinds.disconnected(&peer_id) == Some(PeerKind::Generic) {
                        // The blacklist is per peer id: keep it as small as the connections.
                        if let Some(gs) = self.swarm.behaviour_mut().relay.as_mut() {
                            gs.remove_blacklisted_peer(&peer_id);
                        }
                    }
                    self.static_peers.disconnected(peer_id);
                    crate::operator::behaviour::on_peer_gone(
                        &mut self.swarm.behaviour_mut().attestation,
                        peer_id,
                    );
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                tracing::debug!(peer = ?peer_id, %error, "outgoing connection failed");
                if let Some(reply) = self.pending_connects.remove(&connection_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
                self.nwaku.dial_attempts.inc();
                self.static_peers
                    .dial_failed(connection_id, &error.to_string());
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => {
                tracing::debug!(from = %send_back_addr, %error, "incoming connection failed");
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address.with(Protocol::P2p(*self.swarm.local_peer_id()));
                tracing::info!(address = %full, "listening");
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::error!(%error, "listener error");
            }
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => {
                tracing::info!(?addresses, ?reason, "listener closed");
            }
            _ => {}
        }
    }

    /// Gossipsub handed up a message: the throttle's quotas first (an over-quota message is
    /// dropped before it is decoded), then the relay's validation; invalid ones count
    /// against their sender.
    fn on_gossipsub(&mut self, event: gossipsub::Event) {
        self.libp2p_metrics.record(&event);
        let gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        } = event
        else {
            return;
        };
        let ip = self.swarm.behaviour().throttle.peer_ip(&propagation_source);
        let Some(gs) = self.swarm.behaviour_mut().relay.as_mut() else {
            return;
        };
        let admitted = self.throttle.relay_gate(
            &propagation_source,
            ip,
            message.topic.as_str(),
            message.data.len(),
        );
        match admitted {
            Err(refusal) => self.relay.refused(
                gs,
                propagation_source,
                &message_id,
                refusal.label(),
                refusal.acceptance(),
            ),
            Ok(()) => {
                if self
                    .relay
                    .received(gs, propagation_source, &message_id, &message)
                    .is_err()
                {
                    self.throttle.relay_invalid(&propagation_source);
                }
            }
        }
    }

    /// What metadata said about a peer.
    fn on_metadata(&mut self, event: metadata::Event) {
        match event {
            metadata::Event::Waku(peer) => self.peer_kinds.set(peer, PeerKind::Waku),
            metadata::Event::WrongCluster(peer) => self.disconnect(peer, "wrong_cluster"),
            metadata::Event::Malformed(peer) => self.disconnect(peer, "metadata_malformed"),
            metadata::Event::Generic(peer) => self.mark_generic(peer),
        }
        let peer = match event {
            metadata::Event::Waku(peer)
            | metadata::Event::WrongCluster(peer)
            | metadata::Event::Malformed(peer)
            | metadata::Event::Generic(peer) => peer,
        };
        self.settle_connects(peer);
    }

    /// Answers the `Command::Connect`s waiting for `peer`: its connection came up.
    fn settle_connects(&mut self, peer: PeerId) {
        for reply in self.awaiting_metadata.remove(&peer).unwrap_or_default() {
            let _ = reply.send(Ok(()));
        }
    }

    /// Keeps a peer that did not prove its cluster out of relay: its messages and gossip are
    /// ignored (gossipsub's blacklist, without a score penalty) and a negative application
    /// score keeps it out of every mesh (no GRAFT accepted, pruned at the next heartbeat).
    fn mark_generic(&mut self, peer: PeerId) {
        self.peer_kinds.set(peer, PeerKind::Generic);
        if let Some(gs) = self.swarm.behaviour_mut().relay.as_mut() {
            gs.blacklist_peer(&peer);
            gs.set_application_score(&peer, peer_kind::GENERIC_APP_SCORE);
        }
    }

    /// A connection whose ping times out (or fails) is dead: a cut link drops packets
    /// silently, and without this the connection would count as a relay peer until TCP gives
    /// up (many minutes) while nothing reaches it. libp2p's ping no longer closes it itself.
    fn on_ping(&mut self, event: ping::Event) {
        self.libp2p_metrics.record(&event);
        match &event.result {
            Ok(_) | Err(ping::Failure::Unsupported) => {}
            Err(failure) => {
                tracing::info!(peer = %event.peer, %failure, "ping failed; closing the connection");
                self.net_metrics
                    .peer_disconnects
                    .get_or_create(&ReasonLabels {
                        reason: "ping_failed",
                    })
                    .inc();
                self.swarm.close_connection(event.connection);
            }
        }
    }

    pub(crate) fn disconnect(&mut self, peer: PeerId, reason: &'static str) {
        self.net_metrics
            .peer_disconnects
            .get_or_create(&ReasonLabels { reason })
            .inc();
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    /// Once a second: fleet peers whose attestation expired are asked for a renewed one.
    fn attestation_tick(&mut self) {
        for peer in crate::operator::behaviour::expire(&mut self.swarm.behaviour_mut().attestation)
        {
            if self.swarm.is_connected(&peer) {
                crate::operator::behaviour::fetch(
                    &mut self.swarm.behaviour_mut().attestation,
                    peer,
                );
            }
        }
    }

    /// Once a second: gossipsub scores through the throttle; graylisted relay peers go.
    fn score_tick(&mut self) {
        let Some(gs) = self.swarm.behaviour_mut().relay.as_mut() else {
            return;
        };
        let peer_kinds = &self.peer_kinds;
        let graylisted = self.throttle.score_tick(gs, |p| peer_kinds.is_generic(p));
        for peer in graylisted {
            self.disconnect(peer, "graylisted");
        }
    }
}
