//! Address helpers every part of the node uses (a leaf).

use libp2p::{multiaddr::Protocol, Multiaddr, PeerId};

/// The `/p2p/<peer id>` part of an address.
pub fn peer_id_of(address: &Multiaddr) -> Option<PeerId> {
    address.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}
