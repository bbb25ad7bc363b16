//! Operator metrics (`roost_operator_*`).

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::metrics::ReasonLabels;

/// Reasons a peer's attestation is refused (`roost_operator_attestation_rejections_total`):
/// every [`super::Rejection::label`], and `unreachable` (the fetch failed). Created at 0 when
/// the node starts, so the first refusal is a visible increase (the AttestationInvalid alert).
pub const REJECTION_REASONS: [&str; 12] = [
    "missing",
    "malformed",
    "unsupported_version",
    "bad_signature",
    "untrusted_key",
    "wrong_fleet",
    "wrong_peer",
    "not_yet_valid",
    "expired",
    "superseded",
    "missing_role",
    "unreachable",
];

/// Handles to the operator metrics; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Seconds until this node's own attestation expires (negative once expired).
    pub attestation_expiry_seconds: Gauge,
    /// Peers' attestations that verified.
    pub verified: Counter,
    /// Peers' attestations refused, by reason ([`super::Rejection::label`], `unreachable`).
    pub rejections: Family<ReasonLabels, Counter>,
    /// Connected peers with a verified attestation.
    pub fleet_peers: Gauge,
    /// Times this node served its attestation.
    pub served: Counter,
    /// Fleet-namespace requests refused (rendezvous), by reason.
    pub namespace_refusals: Family<ReasonLabels, Counter>,
}

impl Metrics {
    /// Registers under the given (already `roost_operator`-prefixed) registry. The expiry
    /// gauge exists only on a node with an attestation (absent = no attestation, never 0).
    pub fn register(registry: &mut Registry, has_attestation: bool) -> Self {
        let m = Metrics::default();
        for reason in REJECTION_REASONS {
            let _ = m.rejections.get_or_create(&ReasonLabels { reason });
        }
        if has_attestation {
            registry.register(
                "attestation_expiry_seconds",
                "Seconds until this node's attestation expires (negative once expired)",
                m.attestation_expiry_seconds.clone(),
            );
        }
        registry.register(
            "attestations_verified",
            "Peer attestations that verified",
            m.verified.clone(),
        );
        registry.register(
            "attestation_rejections",
            "Peer attestations refused, by reason",
            m.rejections.clone(),
        );
        registry.register(
            "fleet_peers",
            "Connected peers with a verified attestation for this node's fleet",
            m.fleet_peers.clone(),
        );
        registry.register(
            "attestations_served",
            "Times this node served its attestation to a peer",
            m.served.clone(),
        );
        registry.register(
            "fleet_namespace_refusals",
            "Fleet-namespace requests refused (e.g. rendezvous registrations), by reason",
            m.namespace_refusals.clone(),
        );
        m
    }

    pub fn reject(&self, reason: &'static str) {
        self.rejections
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::{Rejection, Role};

    #[test]
    fn every_rejection_reason_exists_from_the_start() {
        let mut registry = Registry::default();
        Metrics::register(registry.sub_registry_with_prefix("roost_operator"), false);
        let text = crate::metrics::render(&registry);
        for reason in REJECTION_REASONS {
            let sample =
                format!("roost_operator_attestation_rejections_total{{reason=\"{reason}\"}} 0\n");
            assert!(text.contains(&sample), "{sample} missing from:\n{text}");
        }
        for rejection in [
            Rejection::Missing,
            Rejection::Malformed("x".into()),
            Rejection::UnsupportedVersion(9),
            Rejection::BadSignature,
            Rejection::UntrustedKey("k".into()),
            Rejection::WrongFleet {
                expected: "a".into(),
                got: "b".into(),
            },
            Rejection::WrongPeer {
                expected: "a".into(),
                got: "b".into(),
            },
            Rejection::NotYetValid(1),
            Rejection::Expired(1),
            Rejection::Superseded { got: 1, newest: 2 },
            Rejection::MissingRole(Role::Relay),
        ] {
            assert!(REJECTION_REASONS.contains(&rejection.label()));
        }
    }
}
