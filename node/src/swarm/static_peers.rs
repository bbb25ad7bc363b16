//! Static peers (`network.peers`): dialled at start, redialled with exponential backoff while
//! down, counted in `roost_static_peer_dials_total` and the `network` health component. Peers
//! an operator added at run time (`POST /admin/v1/peers`) are redialled the same way, as
//! nwaku's peer manager reconnects the peers in its store, but are not counted in health.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use libp2p::{
    core::ConnectedPoint,
    multiaddr::Protocol,
    swarm::{dial_opts::DialOpts, ConnectionId},
    Multiaddr, PeerId, Swarm,
};
use prometheus_client::metrics::{counter::Counter, family::Family};

use super::Behaviour;
use crate::metrics::ReasonLabels;

/// First redial delay of a static peer; doubles up to `network.redial_max_backoff`.
const INITIAL_REDIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Most peers added at run time that are kept and redialled; more are dialled once only.
pub const MAX_ADDED_PEERS: usize = 256;

/// A configured static peer and its redial state.
#[derive(Debug)]
struct StaticPeer {
    address: Multiaddr,
    peer_id: Option<PeerId>,
    dialing: Option<ConnectionId>,
    connected: bool,
    next_dial: Instant,
    backoff: Duration,
    /// From `network.peers` (else added at run time).
    configured: bool,
}

/// The configured static peers and their redial state.
pub struct StaticPeers {
    peers: Vec<StaticPeer>,
    max_backoff: Duration,
    dials: Family<ReasonLabels, Counter>,
}

impl StaticPeers {
    pub fn new(
        addresses: &[Multiaddr],
        max_backoff: Duration,
        dials: Family<ReasonLabels, Counter>,
    ) -> Self {
        let now = Instant::now();
        let peers = addresses
            .iter()
            .map(|address| StaticPeer {
                peer_id: address.iter().find_map(|p| match p {
                    Protocol::P2p(id) => Some(id),
                    _ => None,
                }),
                address: address.clone(),
                dialing: None,
                connected: false,
                next_dial: now,
                backoff: INITIAL_REDIAL_BACKOFF,
                configured: true,
            })
            .collect();
        StaticPeers {
            peers,
            max_backoff,
            dials,
        }
    }

    /// (configured, down), of `network.peers` only.
    pub fn counts(&self) -> (usize, usize) {
        let configured = self.peers.iter().filter(|p| p.configured);
        let (total, down) = configured.fold((0, 0), |(total, down), p| {
            (total + 1, down + usize::from(!p.connected))
        });
        (total, down)
    }

    /// (kept, down) of every peer redialled: `network.peers` and those added at run time.
    pub fn known(&self) -> (usize, usize) {
        let down = self.peers.iter().filter(|p| !p.connected).count();
        (self.peers.len(), down)
    }

    /// Whether `peer` is one of the configured static peers.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.peers
            .iter()
            .any(|p| p.configured && p.peer_id == Some(*peer))
    }

    /// Keeps a peer added at run time (its address ends in `/p2p/<peer id>`), to redial it
    /// whenever it is down. `false` when it was known already or the list is full.
    pub fn add(&mut self, address: Multiaddr) -> bool {
        let peer_id = address.iter().find_map(|p| match p {
            Protocol::P2p(id) => Some(id),
            _ => None,
        });
        let Some(peer_id) = peer_id else {
            return false;
        };
        if self.peers.iter().any(|p| p.peer_id == Some(peer_id)) {
            return false;
        }
        if self.peers.iter().filter(|p| !p.configured).count() >= MAX_ADDED_PEERS {
            tracing::warn!(%address, "not keeping a peer added at run time: {MAX_ADDED_PEERS} are kept already");
            return false;
        }
        self.peers.push(StaticPeer {
            peer_id: Some(peer_id),
            address,
            dialing: None,
            connected: false,
            // Dialled by whoever added it; redialled once it is down.
            next_dial: Instant::now() + INITIAL_REDIAL_BACKOFF,
            backoff: INITIAL_REDIAL_BACKOFF,
            configured: false,
        });
        true
    }

    pub fn redial(&mut self, swarm: &mut Swarm<Behaviour>) {
        let now = Instant::now();
        let connected: HashSet<PeerId> = swarm.connected_peers().copied().collect();
        for i in 0..self.peers.len() {
            let peer = &mut self.peers[i];
            if let Some(id) = peer.peer_id {
                peer.connected = connected.contains(&id);
            }
            if peer.connected || peer.dialing.is_some() || now < peer.next_dial {
                continue;
            }
            let opts = match peer.peer_id {
                Some(id) => DialOpts::peer_id(id)
                    .addresses(vec![peer.address.clone()])
                    .build(),
                None => DialOpts::unknown_peer_id()
                    .address(peer.address.clone())
                    .build(),
            };
            let connection_id = opts.connection_id();
            let address = peer.address.clone();
            match swarm.dial(opts) {
                Ok(()) => {
                    tracing::debug!(%address, "dialling static peer");
                    self.peers[i].dialing = Some(connection_id);
                }
                Err(e) => {
                    tracing::debug!(%address, error = %e, "cannot dial static peer now");
                    self.schedule_redial(i, "dial_refused");
                }
            }
        }
    }

    fn schedule_redial(&mut self, index: usize, outcome: &'static str) {
        self.dials
            .get_or_create(&ReasonLabels { reason: outcome })
            .inc();
        let max = self.max_backoff;
        if let Some(peer) = self.peers.get_mut(index) {
            peer.dialing = None;
            peer.next_dial = Instant::now() + peer.backoff;
            peer.backoff = (peer.backoff * 2).min(max);
        }
    }

    pub fn connected(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        endpoint: &ConnectedPoint,
    ) {
        let mut counted = false;
        for peer in &mut self.peers {
            let ours = peer.dialing == Some(connection_id)
                || peer.peer_id == Some(peer_id)
                || (peer.peer_id.is_none()
                    && endpoint.is_dialer()
                    && endpoint_address(endpoint) == &peer.address);
            if ours {
                if peer.dialing == Some(connection_id) && !counted {
                    self.dials
                        .get_or_create(&ReasonLabels {
                            reason: "connected",
                        })
                        .inc();
                    counted = true;
                }
                peer.peer_id.get_or_insert(peer_id);
                peer.dialing = None;
                peer.connected = true;
                peer.backoff = INITIAL_REDIAL_BACKOFF;
            }
        }
    }

    pub fn disconnected(&mut self, peer_id: PeerId) {
        let now = Instant::now();
        for peer in &mut self.peers {
            if peer.peer_id == Some(peer_id) {
                tracing::info!(peer = %peer_id, address = %peer.address, "static peer disconnected; will redial");
                peer.connected = false;
                peer.next_dial = now + peer.backoff;
            }
        }
    }

    pub fn dial_failed(&mut self, connection_id: ConnectionId, error: &str) {
        if let Some(index) = self
            .peers
            .iter()
            .position(|p| p.dialing == Some(connection_id))
        {
            tracing::info!(address = %self.peers[index].address, %error, "static peer dial failed; backing off");
            self.schedule_redial(index, "failed");
        }
    }
}

/// The remote address of a connection.
pub(super) fn endpoint_address(endpoint: &ConnectedPoint) -> &Multiaddr {
    match endpoint {
        ConnectedPoint::Dialer { address, .. } => address,
        ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr,
    }
}
