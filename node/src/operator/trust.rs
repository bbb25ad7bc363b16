//! Deciding whether an attestation is acceptable, and the shared view of verified fleet peers
//! that other capabilities (rendezvous, throttle) consult.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
    time::SystemTime,
};

use libp2p::PeerId;

use super::{
    attestation::{unix, Attestation, Rejection, Role, SignedAttestation, CLOCK_SKEW},
    key::OperatorKey,
};

/// Checks attestations against a fleet's trusted operator keys.
///
/// Checks run in a fixed order, and the first failure is the reason reported: format and
/// signature, trusted key, fleet, node PeerId, validity window.
#[derive(Debug, Clone)]
pub struct Verifier {
    /// The fleet attestations must name; `None` accepts any fleet (for `roost operator verify`
    /// without `--fleet`).
    pub fleet: Option<String>,
    pub trusted: Vec<OperatorKey>,
}

impl Verifier {
    pub fn new(fleet: Option<String>, trusted: Vec<OperatorKey>) -> Self {
        Verifier { fleet, trusted }
    }

    /// Verifies `bytes` as an attestation for `peer` (if given) at `now`.
    pub fn verify(
        &self,
        bytes: &[u8],
        peer: Option<&PeerId>,
        now: SystemTime,
    ) -> Result<SignedAttestation, Rejection> {
        let signed = SignedAttestation::decode(bytes)?;
        self.check(&signed.attestation, peer, now)?;
        Ok(signed)
    }

    /// The checks after decoding.
    pub fn check(
        &self,
        a: &Attestation,
        peer: Option<&PeerId>,
        now: SystemTime,
    ) -> Result<(), Rejection> {
        if !self.trusted.contains(&a.operator) {
            return Err(Rejection::UntrustedKey(a.operator.to_string()));
        }
        if let Some(fleet) = &self.fleet {
            if &a.fleet != fleet {
                return Err(Rejection::WrongFleet {
                    expected: fleet.clone(),
                    got: a.fleet.clone(),
                });
            }
        }
        if let Some(peer) = peer {
            if &a.node != peer {
                return Err(Rejection::WrongPeer {
                    expected: peer.to_string(),
                    got: a.node.to_string(),
                });
            }
        }
        let now = unix(now);
        let skew = CLOCK_SKEW.as_secs();
        if a.issued_at > now.saturating_add(skew) {
            return Err(Rejection::NotYetValid(a.issued_at));
        }
        if a.expires_at <= now {
            return Err(Rejection::Expired(a.expires_at));
        }
        Ok(())
    }
}

/// A peer whose attestation this node verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetPeer {
    pub fleet: String,
    pub roles: Vec<Role>,
    pub expires_at: u64,
    pub seq: u64,
    pub operator: OperatorKey,
}

impl FleetPeer {
    pub fn from_attestation(a: &Attestation) -> Self {
        FleetPeer {
            fleet: a.fleet.clone(),
            roles: a.roles.clone(),
            expires_at: a.expires_at,
            seq: a.seq,
            operator: a.operator.clone(),
        }
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn valid_at(&self, now: SystemTime) -> bool {
        self.expires_at > unix(now)
    }
}

/// What this node knows about a connected peer's fleet membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerStatus {
    /// Its attestation verified and is still valid.
    Member(Box<FleetPeer>),
    /// Its attestation was refused, for this reason ([`Rejection::label`] or `unreachable`).
    Refused(&'static str),
    /// Its attestation is being fetched.
    Pending,
    /// It offered no attestation (or this node does not check them).
    Unknown,
}

#[derive(Debug, Default)]
struct Peers {
    members: HashMap<PeerId, FleetPeer>,
    refused: HashMap<PeerId, &'static str>,
    pending: HashSet<PeerId>,
    /// Highest attestation seq verified per connected peer (kept across expiry, so a peer
    /// cannot fall back to an older attestation while connected).
    newest_seq: HashMap<PeerId, u64>,
}

/// The fleet status of connected peers, shared (cheap to clone) between the swarm task, which
/// writes it, and the capabilities that give fleet peers their due (the rendezvous server's
/// fleet namespaces; throttle quotas are told directly). Reads take a short `std` lock and never
/// wait on I/O, so the rendezvous server thread can ask it for every request.
#[derive(Debug, Clone, Default)]
pub struct FleetView {
    inner: Arc<RwLock<Peers>>,
}

impl FleetView {
    /// The verified fleet peer `peer`, if its attestation is still valid now.
    pub fn get(&self, peer: &PeerId) -> Option<FleetPeer> {
        let peers = self.inner.read().ok()?;
        peers
            .members
            .get(peer)
            .filter(|p| p.valid_at(SystemTime::now()))
            .cloned()
    }

    /// Everything known about `peer`.
    pub fn status(&self, peer: &PeerId) -> PeerStatus {
        if let Some(member) = self.get(peer) {
            return PeerStatus::Member(Box::new(member));
        }
        let Ok(peers) = self.inner.read() else {
            return PeerStatus::Unknown;
        };
        if let Some(reason) = peers.refused.get(peer) {
            PeerStatus::Refused(reason)
        } else if peers.pending.contains(peer) {
            PeerStatus::Pending
        } else if peers.members.contains_key(peer) {
            PeerStatus::Refused("expired")
        } else {
            PeerStatus::Unknown
        }
    }

    pub fn is_fleet_peer(&self, peer: &PeerId) -> bool {
        self.get(peer).is_some()
    }

    /// Whether `peer` is a verified member of `fleet` (with `role`, when given).
    pub fn is_member(&self, peer: &PeerId, fleet: &str, role: Option<Role>) -> bool {
        self.get(peer)
            .map(|p| p.fleet == fleet && role.is_none_or(|r| p.has_role(r)))
            .unwrap_or(false)
    }

    /// How many members are known.
    pub fn len(&self) -> usize {
        self.inner.read().map(|p| p.members.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn peers(&self) -> Vec<(PeerId, FleetPeer)> {
        self.inner
            .read()
            .map(|p| p.members.iter().map(|(k, v)| (*k, v.clone())).collect())
            .unwrap_or_default()
    }

    pub(crate) fn insert(&self, peer: PeerId, fleet_peer: FleetPeer) {
        if let Ok(mut p) = self.inner.write() {
            p.refused.remove(&peer);
            p.pending.remove(&peer);
            let newest = p.newest_seq.entry(peer).or_insert(fleet_peer.seq);
            *newest = (*newest).max(fleet_peer.seq);
            p.members.insert(peer, fleet_peer);
        }
    }

    /// The highest attestation seq verified for `peer` while it has been connected.
    pub(crate) fn newest_seq(&self, peer: &PeerId) -> Option<u64> {
        self.inner.read().ok()?.newest_seq.get(peer).copied()
    }

    /// Records a refusal; returns whether the peer was a member until now.
    pub(crate) fn refuse(&self, peer: PeerId, reason: &'static str) -> bool {
        self.inner
            .write()
            .map(|mut p| {
                p.pending.remove(&peer);
                p.refused.insert(peer, reason);
                p.members.remove(&peer).is_some()
            })
            .unwrap_or(false)
    }

    /// Marks a fetch as started; false if one already is.
    pub(crate) fn start_fetch(&self, peer: PeerId) -> bool {
        self.inner
            .write()
            .map(|mut p| p.pending.insert(peer))
            .unwrap_or(false)
    }

    /// Whether a fetch for `peer` was in flight (and clears it).
    pub(crate) fn end_fetch(&self, peer: &PeerId) -> bool {
        self.inner
            .write()
            .map(|mut p| p.pending.remove(peer))
            .unwrap_or(false)
    }

    /// Forgets `peer` (its last connection closed); returns its membership if it had one.
    pub(crate) fn forget(&self, peer: &PeerId) -> Option<FleetPeer> {
        let mut p = self.inner.write().ok()?;
        p.pending.remove(peer);
        p.refused.remove(peer);
        p.newest_seq.remove(peer);
        p.members.remove(peer)
    }

    /// Drops members whose attestation expired; returns the peers dropped.
    pub(crate) fn remove_expired(&self, now: SystemTime) -> Vec<PeerId> {
        let Ok(mut p) = self.inner.write() else {
            return Vec::new();
        };
        let expired: Vec<PeerId> = p
            .members
            .iter()
            .filter(|(_, m)| !m.valid_at(now))
            .map(|(k, _)| *k)
            .collect();
        for peer in &expired {
            p.members.remove(peer);
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use libp2p::identity::Keypair;

    use super::*;
    use crate::operator::{attestation::tests::claims, signer::file::FileSigner};

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn every_rejection_reason_is_reported() {
        let now = 1_700_000_000;
        let operator = Keypair::generate_secp256k1();
        let mut signer = FileSigner::from_keypair(operator.clone()).unwrap();
        let key = OperatorKey::new(operator.public()).unwrap();
        let node = PeerId::random();
        let verifier = Verifier::new(Some("staging".into()), vec![key.clone()]);
        let good = claims(node, now).sign(&mut signer).unwrap();

        assert!(verifier.verify(&good.bytes, Some(&node), at(now)).is_ok());
        // Within the clock skew either side of issue time: still fine.
        assert!(verifier
            .verify(&good.bytes, Some(&node), at(now - 200))
            .is_ok());

        let reason = |bytes: &[u8], peer: &PeerId, t: u64| {
            verifier
                .verify(bytes, Some(peer), at(t))
                .unwrap_err()
                .label()
        };
        assert_eq!(reason(&good.bytes, &PeerId::random(), now), "wrong_peer");
        assert_eq!(reason(&good.bytes, &node, now + 3600), "expired");
        assert_eq!(reason(&good.bytes, &node, now - 301), "not_yet_valid");

        let mut other_fleet = claims(node, now);
        other_fleet.fleet = "beta".into();
        let other_fleet = other_fleet.sign(&mut signer).unwrap();
        assert_eq!(reason(&other_fleet.bytes, &node, now), "wrong_fleet");

        let mut stranger = FileSigner::from_keypair(Keypair::generate_secp256k1()).unwrap();
        let self_signed = claims(node, now).sign(&mut stranger).unwrap();
        assert_eq!(reason(&self_signed.bytes, &node, now), "untrusted_key");

        let mut tampered = good.bytes.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(reason(&tampered, &node, now), "bad_signature");

        // Without fleet and peer constraints only trust and time count.
        let loose = Verifier::new(None, vec![key]);
        assert!(loose
            .verify(&other_fleet.bytes, Some(&node), at(now))
            .is_ok());
        assert!(loose.verify(&good.bytes, None, at(now)).is_ok());
    }

    #[test]
    fn fleet_view_answers_membership_and_forgets_expired_peers() {
        let view = FleetView::default();
        let peer = PeerId::random();
        let key = OperatorKey::new(Keypair::generate_ed25519().public()).unwrap();
        let now = unix(SystemTime::now());
        view.insert(
            peer,
            FleetPeer {
                fleet: "staging".into(),
                roles: vec![Role::Relay],
                expires_at: now + 60,
                seq: 1,
                operator: key.clone(),
            },
        );
        assert!(view.is_member(&peer, "staging", None));
        assert!(view.is_member(&peer, "staging", Some(Role::Relay)));
        assert!(!view.is_member(&peer, "staging", Some(Role::Store)));
        assert!(!view.is_member(&peer, "beta", None));
        assert!(!view.is_fleet_peer(&PeerId::random()));
        assert_eq!(view.status(&PeerId::random()), PeerStatus::Unknown);
        assert!(matches!(view.status(&peer), PeerStatus::Member(_)));
        assert!(view.remove_expired(at(now)).is_empty());
        assert_eq!(view.remove_expired(at(now + 61)), vec![peer]);
        assert!(view.is_empty());
        assert_eq!(view.newest_seq(&peer), Some(1), "remembered across expiry");
        view.forget(&peer);
        assert_eq!(view.newest_seq(&peer), None);

        let other = PeerId::random();
        assert!(view.start_fetch(other));
        assert!(!view.start_fetch(other));
        assert_eq!(view.status(&other), PeerStatus::Pending);
        assert!(!view.refuse(other, "expired"));
        assert_eq!(view.status(&other), PeerStatus::Refused("expired"));
        view.forget(&other);
        assert_eq!(view.status(&other), PeerStatus::Unknown);
    }
}
