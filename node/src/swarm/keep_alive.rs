//! Keeps connections to chosen peers open although no stream is active on them.
//!
//! Waku request/response protocols open one stream per request, so a light client that only
//! holds a filter subscription looks idle to libp2p and its connection would be closed after
//! `network.idle_connection_timeout`; the service could then not push to it (browsers cannot be
//! dialled). The filter service marks its subscribers here ([`super::Command::KeepAlive`]) and
//! unmarks them when their subscription ends.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    convert::Infallible,
    task::{Context, Poll, Waker},
};

use libp2p::{
    core::{transport::PortUse, upgrade::DeniedUpgrade, Endpoint},
    swarm::{
        handler::ConnectionEvent, ConnectionDenied, ConnectionHandlerEvent, ConnectionId,
        FromSwarm, NetworkBehaviour, NotifyHandler, SubstreamProtocol, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};

/// The behaviour: which peers to keep, and their open connections.
#[derive(Default)]
pub struct Behaviour {
    keep: HashSet<PeerId>,
    connections: HashMap<PeerId, HashSet<ConnectionId>>,
    pending: VecDeque<(PeerId, ConnectionId, bool)>,
    waker: Option<Waker>,
}

impl Behaviour {
    /// Keeps (or stops keeping) every connection to `peer` open, now and for new connections.
    pub fn set(&mut self, peer: PeerId, keep: bool) {
        let changed = if keep {
            self.keep.insert(peer)
        } else {
            self.keep.remove(&peer)
        };
        if !changed {
            return;
        }
        if let Some(connections) = self.connections.get(&peer) {
            for connection in connections {
                self.pending.push_back((peer, *connection, keep));
            }
        }
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Peers whose connections are kept open.
    pub fn kept(&self) -> usize {
        self.keep.len()
    }

    fn handler(&self, peer: &PeerId) -> Handler {
        Handler {
            keep_alive: self.keep.contains(peer),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(&peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(&peer))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                self.connections
                    .entry(e.peer_id)
                    .or_default()
                    .insert(e.connection_id);
            }
            FromSwarm::ConnectionClosed(e) => {
                if let Some(set) = self.connections.get_mut(&e.peer_id) {
                    set.remove(&e.connection_id);
                    if set.is_empty() {
                        self.connections.remove(&e.peer_id);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        if let Some((peer_id, connection, keep)) = self.pending.pop_front() {
            return Poll::Ready(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(connection),
                event: keep,
            });
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Per-connection handler: no protocol, only a keep-alive flag.
pub struct Handler {
    keep_alive: bool,
}

impl libp2p::swarm::ConnectionHandler for Handler {
    type FromBehaviour = bool;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<DeniedUpgrade, ()> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        self.keep_alive
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<DeniedUpgrade, (), Infallible>> {
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, keep: bool) {
        self.keep_alive = keep;
    }

    fn on_connection_event(&mut self, _: ConnectionEvent<DeniedUpgrade, DeniedUpgrade, (), ()>) {}
}
