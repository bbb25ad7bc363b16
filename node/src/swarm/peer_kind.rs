//! What the node knows each connected peer to be, from the Waku metadata exchange every new
//! peer gets: a Waku peer of this cluster, a generic libp2p peer (it does not speak metadata:
//! a plain rendezvous client, a libp2p tool), or not known yet (the exchange is in flight).
//!
//! Generic peers are served everything that is not Waku-specific (rendezvous, identify, ping)
//! and the Waku services they ask for, but are kept out of relay: they cannot prove their
//! cluster, so the swarm task keeps them out of gossipsub meshes and ignores their gossip.
//! A peer that *answers* metadata with another cluster is disconnected instead.

use std::collections::HashMap;

use libp2p::PeerId;

/// Gossipsub application score (P5) of generic peers: below the publish threshold (−1000,
/// nothing is flood-published to them) and the gossip threshold (−100, their IHAVEs are
/// ignored), negative (never grafted, pruned from meshes), yet far above graylist (−10000),
/// where the throttle would ban them.
pub const GENERIC_APP_SCORE: f64 = -2000.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// Connected, metadata not answered yet.
    Pending,
    /// Answered metadata with this node's cluster.
    Waku,
    /// Does not speak metadata (or never answered it).
    Generic,
}

impl PeerKind {
    pub const ALL: [PeerKind; 3] = [PeerKind::Waku, PeerKind::Generic, PeerKind::Pending];

    /// The `kind` label in `/metrics` and the key in `/health`.
    pub fn label(self) -> &'static str {
        match self {
            PeerKind::Pending => "pending",
            PeerKind::Waku => "waku",
            PeerKind::Generic => "generic",
        }
    }
}

/// The kind of every connected peer; an entry lives from a peer's first connection to its
/// last, so the map is bounded by the connection limits.
#[derive(Debug, Default)]
pub struct PeerKinds {
    kinds: HashMap<PeerId, PeerKind>,
}

impl PeerKinds {
    /// A peer's first connection: its kind is pending until metadata decides.
    pub fn connected(&mut self, peer: PeerId) {
        self.kinds.entry(peer).or_insert(PeerKind::Pending);
    }

    /// Records what metadata decided, for a peer still connected.
    pub fn set(&mut self, peer: PeerId, kind: PeerKind) {
        if let Some(k) = self.kinds.get_mut(&peer) {
            *k = kind;
        }
    }

    pub fn get(&self, peer: &PeerId) -> Option<PeerKind> {
        self.kinds.get(peer).copied()
    }

    pub fn is_generic(&self, peer: &PeerId) -> bool {
        self.get(peer) == Some(PeerKind::Generic)
    }

    /// A peer's last connection closed; gives back what it was.
    pub fn disconnected(&mut self, peer: &PeerId) -> Option<PeerKind> {
        self.kinds.remove(peer)
    }

    /// Connected peers of each kind, in [`PeerKind::ALL`] order.
    pub fn counts(&self) -> [(PeerKind, usize); 3] {
        PeerKind::ALL.map(|kind| (kind, self.kinds.values().filter(|k| **k == kind).count()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_pending_until_metadata_decides_and_forgotten_when_gone() {
        let mut kinds = PeerKinds::default();
        let (waku, generic) = (PeerId::random(), PeerId::random());
        kinds.connected(waku);
        kinds.connected(generic);
        assert_eq!(kinds.get(&waku), Some(PeerKind::Pending));
        kinds.set(waku, PeerKind::Waku);
        kinds.set(generic, PeerKind::Generic);
        // A second connection does not reset what metadata decided.
        kinds.connected(waku);
        assert_eq!(kinds.get(&waku), Some(PeerKind::Waku));
        assert!(kinds.is_generic(&generic) && !kinds.is_generic(&waku));
        assert_eq!(
            kinds.counts(),
            [
                (PeerKind::Waku, 1),
                (PeerKind::Generic, 1),
                (PeerKind::Pending, 0)
            ]
        );
        assert_eq!(kinds.disconnected(&generic), Some(PeerKind::Generic));
        // Too late: a verdict for a peer that has gone is not recorded.
        kinds.set(generic, PeerKind::Waku);
        assert_eq!(kinds.get(&generic), None);
    }
}
