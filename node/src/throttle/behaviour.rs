//! The throttle's `NetworkBehaviour`, first in the node's behaviour: it refuses inbound
//! connections from banned IPs or over the per-IP limits (count and rate) before the Noise
//! handshake, connections of banned peers right after it (and dials to them), closes the
//! connections of peers and IPs as they get banned, and keeps track of every connection's
//! remote IP so protocol handlers can key quotas by it.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    net::IpAddr,
    task::{Context, Poll},
};

use libp2p::{
    core::{transport::PortUse, Endpoint},
    multiaddr::Protocol,
    swarm::{
        dummy, CloseConnection, ConnectionClosed, ConnectionDenied, ConnectionId, DialFailure,
        FromSwarm, ListenFailure, NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent,
        ToSwarm,
    },
    Multiaddr, PeerId,
};

use super::{offence::points, BanReason, IpKey, KeyKind, Offender, Throttle};

/// Why the throttle refused a connection (the error inside `ConnectionDenied`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("this IP is banned (roost ban list)")]
    BannedIp,
    #[error("this peer is banned (roost ban list)")]
    BannedPeer,
    #[error("too many connections from this IP (throttle.max_connections_per_ip)")]
    IpConnections,
    #[error("too many new connections from this IP (throttle.connections per-ip rule)")]
    IpRate,
    #[error("too many new connections to this node (throttle.connections global rule)")]
    GlobalRate,
    #[error("connection limiter is full (throttle.max_keys)")]
    Capacity,
}

impl Refused {
    /// The `reason` label of `roost_throttle_connections_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refused::BannedIp => "banned_ip",
            Refused::BannedPeer => "banned_peer",
            Refused::IpConnections => "ip_connections",
            Refused::IpRate => "ip_rate",
            Refused::GlobalRate => "global_rate",
            Refused::Capacity => "capacity",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Connection {
    ip: Option<IpAddr>,
    peer: Option<PeerId>,
    /// Counted against the per-IP connection limit (inbound from a non-exempt IP).
    counted: Option<IpKey>,
}

/// Connection policy and bookkeeping. Holds no protocol: its handler is `dummy`.
pub struct Behaviour {
    throttle: Throttle,
    connections: HashMap<ConnectionId, Connection>,
    /// Connections per peer, to find a peer's IP (relay messages name peers, not connections).
    by_peer: HashMap<PeerId, Vec<ConnectionId>>,
    /// Inbound connections (pending or established) per IP.
    per_ip: HashMap<IpKey, u32>,
    /// The ban generation last acted on.
    seen_bans: u64,
    /// Connections of banned peers/IPs waiting to be closed.
    to_close: VecDeque<(PeerId, ConnectionId)>,
}

impl Behaviour {
    pub fn new(throttle: Throttle) -> Self {
        Behaviour {
            throttle,
            connections: HashMap::new(),
            by_peer: HashMap::new(),
            per_ip: HashMap::new(),
            seen_bans: 0,
            to_close: VecDeque::new(),
        }
    }

    /// The remote IP of a connection.
    pub fn remote_ip(&self, connection: ConnectionId) -> Option<IpAddr> {
        self.connections.get(&connection).and_then(|c| c.ip)
    }

    /// The remote IP of one of a peer's connections (the oldest still open).
    pub fn peer_ip(&self, peer: &PeerId) -> Option<IpAddr> {
        self.by_peer
            .get(peer)
            .and_then(|conns| conns.iter().find_map(|c| self.remote_ip(*c)))
    }

    /// Inbound connections from `ip`'s bucket now (pending or established).
    pub fn connections_from(&self, ip: IpAddr) -> u32 {
        self.per_ip.get(&IpKey::from(ip)).copied().unwrap_or(0)
    }

    fn refuse(&self, why: Refused) -> ConnectionDenied {
        self.throttle.metrics().refused(why.label());
        tracing::debug!(reason = why.label(), "connection refused");
        ConnectionDenied::new(why)
    }

    /// Refuses a connection that broke a per-IP limit; the IP collects an offence point.
    fn refuse_ip(&self, ip: IpAddr, why: Refused) -> ConnectionDenied {
        self.throttle.offend(
            Offender::Ip(ip.into()),
            points::REFUSED_CONNECTION,
            BanReason::Quota,
        );
        self.refuse(why)
    }

    /// Queues every open connection of a banned peer or from a banned IP for closing.
    fn close_banned(&mut self) {
        for (id, conn) in &self.connections {
            if let Some(peer) = conn.peer {
                if self.throttle.is_banned_connection(Some(&peer), conn.ip) {
                    tracing::info!(%peer, ip = ?conn.ip, "closing connection of a banned peer");
                    self.to_close.push_back((peer, *id));
                }
            }
        }
    }

    fn forget(&mut self, connection: ConnectionId) {
        let Some(conn) = self.connections.remove(&connection) else {
            return;
        };
        if let Some(key) = conn.counted {
            if let Some(n) = self.per_ip.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_ip.remove(&key);
                }
            }
        }
        if let Some(peer) = conn.peer {
            if let Some(list) = self.by_peer.get_mut(&peer) {
                list.retain(|c| *c != connection);
                if list.is_empty() {
                    self.by_peer.remove(&peer);
                }
            }
        }
    }

    fn established(&mut self, connection: ConnectionId, peer: PeerId, ip: Option<IpAddr>) {
        let entry = self.connections.entry(connection).or_insert(Connection {
            ip,
            peer: None,
            counted: None,
        });
        entry.peer = Some(peer);
        if entry.ip.is_none() {
            entry.ip = ip;
        }
        self.by_peer.entry(peer).or_default().push(connection);
    }
}

/// The IP of a multiaddr (`/ip4/...` or `/ip6/...`), if it has one.
pub fn ip_of(address: &Multiaddr) -> Option<IpAddr> {
    address.iter().find_map(|p| match p {
        Protocol::Ip4(v4) => Some(IpAddr::V4(v4)),
        Protocol::Ip6(v6) => Some(IpAddr::V6(v6)),
        _ => None,
    })
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let ip = ip_of(remote_addr);
        let mut counted = None;
        if self.throttle.is_enabled() {
            if self.throttle.is_banned_connection(None, ip) {
                return Err(self.refuse(Refused::BannedIp));
            }
            let limited_ip = ip.filter(|ip| !self.throttle.is_exempt(*ip));
            if let Some(ip) = limited_ip {
                let max = self.throttle.max_connections_per_ip();
                if max > 0 && self.connections_from(ip) >= max {
                    return Err(self.refuse_ip(ip, Refused::IpConnections));
                }
            }
            if let Err(throttled) = self.throttle.check_connection(limited_ip) {
                return Err(match (throttled.key, limited_ip) {
                    (KeyKind::Ip, Some(ip)) => self.refuse_ip(ip, Refused::IpRate),
                    (KeyKind::Capacity, _) => self.refuse(Refused::Capacity),
                    _ => self.refuse(Refused::GlobalRate),
                });
            }
            counted = limited_ip.map(IpKey::from);
        }
        if let Some(key) = counted {
            *self.per_ip.entry(key).or_default() += 1;
        }
        self.connections.insert(
            connection_id,
            Connection {
                ip,
                peer: None,
                counted,
            },
        );
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let ip = ip_of(remote_addr);
        if self.throttle.is_enabled() && self.throttle.is_banned(&Offender::Peer(peer)) {
            // Each attempt cost a handshake: a banned peer that keeps coming back gets its
            // IP banned too, which is refused before the handshake.
            return Err(match ip {
                Some(ip) => self.refuse_ip(ip, Refused::BannedPeer),
                None => self.refuse(Refused::BannedPeer),
            });
        }
        self.established(connection_id, peer, ip);
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        _addresses: &[Multiaddr],
        _effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        if let Some(peer) = maybe_peer {
            if self.throttle.is_enabled() && self.throttle.is_banned(&Offender::Peer(peer)) {
                return Err(self.refuse(Refused::BannedPeer));
            }
        }
        Ok(vec![])
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if self.throttle.is_enabled() && self.throttle.is_banned(&Offender::Peer(peer)) {
            return Err(self.refuse(Refused::BannedPeer));
        }
        self.established(connection_id, peer, ip_of(addr));
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. })
            | FromSwarm::DialFailure(DialFailure { connection_id, .. }) => {
                self.forget(connection_id)
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer_id: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        let generation = self.throttle.ban_generation(cx.waker());
        if generation != self.seen_bans {
            self.seen_bans = generation;
            self.close_banned();
        }
        match self.to_close.pop_front() {
            Some((peer_id, connection)) => Poll::Ready(ToSwarm::CloseConnection {
                peer_id,
                connection: CloseConnection::One(connection),
            }),
            None => Poll::Pending,
        }
    }
}
