//! Who may register and discover where: the server's authorisation hook.
//!
//! The server asks its [`Policy`] after a request passed every format check (namespace, TTL,
//! record signature, record peer = sender) and before it touches the table; a
//! [`Verdict::Deny`] is answered with `E_NOT_AUTHORIZED` and the verdict's text.
//!
//! Namespaces under [`RESERVED_PREFIX`] (`/roost/…`) belong to Roost fleets: a fleet policy
//! (operator attestations, [`crate::operator::policy::FleetPolicy`], which the node plugs in)
//! decides who may register there. [`ReservedNamespaces`] is the fallback for a server without
//! one: it refuses registrations under them and allows everything else.
//!
//! A policy runs on the rendezvous server thread for every REGISTER and DISCOVER: it must
//! answer from memory (e.g. a cache of verified attestations that another task fills),
//! never wait on I/O.

use libp2p::PeerId;

/// Namespaces starting with this are reserved for Roost fleets (`/roost/<fleet>/<role>`).
pub const RESERVED_PREFIX: &str = "/roost/";

/// A policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refuse with `E_NOT_AUTHORIZED`; the text tells the client why and what would help.
    Deny(String),
}

/// Decides REGISTER and DISCOVER requests that are otherwise valid.
pub trait Policy: Send + Sync + 'static {
    /// May `peer` register itself under `namespace`?
    fn may_register(&self, peer: &PeerId, namespace: &str) -> Verdict;

    /// May `peer` list `namespace` (`None`: every namespace)? Default: yes.
    fn may_discover(&self, peer: &PeerId, namespace: Option<&str>) -> Verdict {
        let _ = (peer, namespace);
        Verdict::Allow
    }
}

/// Whether `namespace` lies under [`RESERVED_PREFIX`].
pub fn is_reserved(namespace: &str) -> bool {
    namespace.starts_with(RESERVED_PREFIX)
}

/// The default policy: anyone may register anywhere except under [`RESERVED_PREFIX`], and
/// anyone may discover anything.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReservedNamespaces;

impl Policy for ReservedNamespaces {
    fn may_register(&self, _peer: &PeerId, namespace: &str) -> Verdict {
        if is_reserved(namespace) {
            Verdict::Deny(format!(
                "namespaces under {RESERVED_PREFIX} are reserved for attested fleet nodes, and this point has no fleet policy"
            ))
        } else {
            Verdict::Allow
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_refuses_only_reserved_namespaces() {
        let p = ReservedNamespaces;
        let peer = PeerId::random();
        assert_eq!(p.may_register(&peer, "rs/1/0"), Verdict::Allow);
        assert_eq!(p.may_register(&peer, "roost/x"), Verdict::Allow);
        assert!(matches!(
            p.may_register(&peer, "/roost/fleet-a/relay"),
            Verdict::Deny(_)
        ));
        assert_eq!(
            p.may_discover(&peer, Some("/roost/fleet-a/relay")),
            Verdict::Allow
        );
    }
}
