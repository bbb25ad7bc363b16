//! The rendezvous server's fleet policy: namespaces under `/roost/<fleet>/…` are for attested
//! fleet members only.
//!
//! A REGISTER under `/roost/<fleet>/[<role>/…]` is allowed when the registering peer's
//! attestation verified (the swarm task fetched and checked it, see [`super::swarm`]) for this
//! point's fleet, with `<role>` when the segment names one. Every refusal says why (the peer's
//! attestation was refused and for what reason, is still being checked, was never offered, ...)
//! and is counted in `roost_operator_fleet_namespace_refusals_total{reason}`. Other namespaces
//! and every DISCOVER are open to all. The policy answers from the shared [`FleetView`] only: it
//! runs on the rendezvous server thread and never waits.

use libp2p::PeerId;

use super::{parse_fleet_namespace, FleetView, Metrics, PeerStatus, Role};
use crate::{
    metrics::ReasonLabels,
    rendezvous::{
        policy::{is_reserved, RESERVED_PREFIX},
        Policy, Verdict,
    },
};

/// Fleet namespaces need a verified attestation.
#[derive(Debug, Clone)]
pub struct FleetPolicy {
    /// The fleet this point vouches for (`None`: it knows no fleet).
    fleet: Option<String>,
    /// Whether this point checks attestations at all (it trusts operator keys).
    checks: bool,
    view: FleetView,
    metrics: Metrics,
}

impl FleetPolicy {
    pub fn new(fleet: Option<String>, checks: bool, view: FleetView, metrics: Metrics) -> Self {
        FleetPolicy {
            fleet,
            checks,
            view,
            metrics,
        }
    }

    /// `Ok` or (metric label, text for the client).
    pub fn authorize(&self, peer: &PeerId, namespace: &str) -> Result<(), (&'static str, String)> {
        let Some((fleet, role)) = parse_fleet_namespace(namespace) else {
            return Err((
                "malformed_namespace",
                format!(
                    "`{namespace}` is not a fleet namespace: write {RESERVED_PREFIX}<fleet>/<role>"
                ),
            ));
        };
        let ours = match (&self.fleet, self.checks) {
            (Some(ours), true) => ours,
            _ => {
                return Err((
                    "foreign_fleet",
                    format!("this rendezvous point trusts no operator keys, so it admits nobody to {RESERVED_PREFIX}<fleet>/… namespaces"),
                ))
            }
        };
        if fleet != ours {
            return Err((
                "foreign_fleet",
                format!("this rendezvous point vouches for fleet `{ours}` only, not `{fleet}`"),
            ));
        }
        let role = match role {
            Some(text) => Some(Role::parse(text).ok_or_else(|| {
                (
                    "unknown_role",
                    format!(
                        "`{text}` is not a role; roles are {}",
                        Role::ALL.map(Role::as_str).join(", ")
                    ),
                )
            })?),
            None => None,
        };
        match self.view.status(peer) {
            PeerStatus::Member(member) => match role {
                Some(role) if !member.has_role(role) => Err((
                    "missing_role",
                    format!("this peer's attestation for fleet `{ours}` does not grant role `{role}`"),
                )),
                _ => Ok(()),
            },
            PeerStatus::Refused(reason) => Err((
                reason,
                format!("this peer's attestation was refused ({reason}); fleet `{ours}` namespaces need a valid attestation from one of its operator keys"),
            )),
            PeerStatus::Pending => Err((
                "not_verified_yet",
                "this peer's attestation is still being checked; register again in a few seconds".to_owned(),
            )),
            PeerStatus::Unknown => Err((
                "no_attestation",
                format!("this peer offers no attestation (on {}); fleet `{ours}` namespaces need one", super::PROTOCOL_ID),
            )),
        }
    }
}

impl Policy for FleetPolicy {
    fn may_register(&self, peer: &PeerId, namespace: &str) -> Verdict {
        if !is_reserved(namespace) {
            return Verdict::Allow;
        }
        match self.authorize(peer, namespace) {
            Ok(()) => Verdict::Allow,
            Err((reason, text)) => {
                self.metrics
                    .namespace_refusals
                    .get_or_create(&ReasonLabels { reason })
                    .inc();
                tracing::info!(%peer, %namespace, reason, "fleet namespace registration refused");
                Verdict::Deny(text)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use libp2p::identity::Keypair;

    use super::*;
    use crate::operator::{attestation::unix, FleetPeer, OperatorKey};

    #[test]
    fn fleet_namespaces_need_a_verified_attestation_with_the_role() {
        let view = FleetView::default();
        let metrics = Metrics::default();
        let policy = FleetPolicy::new(Some("staging".into()), true, view.clone(), metrics.clone());
        let member = PeerId::random();
        view.insert(
            member,
            FleetPeer {
                fleet: "staging".into(),
                roles: vec![Role::Relay],
                expires_at: unix(SystemTime::now()) + 600,
                seq: 1,
                operator: OperatorKey::new(Keypair::generate_ed25519().public()).unwrap(),
            },
        );
        let allow = |peer: &PeerId, ns: &str| policy.may_register(peer, ns) == Verdict::Allow;
        assert!(allow(&member, "/roost/staging/relay"));
        assert!(allow(&member, "/roost/staging"));
        assert!(allow(&member, "rs/16/32"), "other namespaces are open");
        let label = |peer: &PeerId, ns: &str| policy.authorize(peer, ns).unwrap_err().0;
        assert_eq!(label(&member, "/roost/staging/store"), "missing_role");
        assert_eq!(label(&member, "/roost/staging/mailserver"), "unknown_role");
        assert_eq!(label(&member, "/roost/beta/relay"), "foreign_fleet");
        assert_eq!(label(&member, "/roost//relay"), "malformed_namespace");

        let stranger = PeerId::random();
        assert_eq!(label(&stranger, "/roost/staging/relay"), "no_attestation");
        view.start_fetch(stranger);
        assert_eq!(label(&stranger, "/roost/staging/relay"), "not_verified_yet");
        view.refuse(stranger, "expired");
        assert_eq!(label(&stranger, "/roost/staging/relay"), "expired");
        assert!(!allow(&stranger, "/roost/staging/relay"));
        assert!(allow(&stranger, "/waku/whatever"));
        // Refusals through the policy are counted by reason.
        assert_eq!(
            metrics
                .namespace_refusals
                .get_or_create(&ReasonLabels { reason: "expired" })
                .get(),
            1
        );

        // A point without trusted keys admits nobody to fleet namespaces.
        let open = FleetPolicy::new(Some("staging".into()), false, view, metrics);
        assert_eq!(
            open.authorize(&member, "/roost/staging/relay")
                .unwrap_err()
                .0,
            "foreign_fleet"
        );
    }
}
