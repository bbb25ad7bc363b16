//! Operator identity: fleet attestations signed by an operator key held in hardware.
//!
//! Owns:
//! - the [`Attestation`] wire format (a libp2p RFC 0002 signed envelope with its own domain and
//!   payload type) and its verification, with every rejection reason typed ([`Rejection`]);
//! - the [`Signer`] backends that hold operator keys: `file` (development only), `pkcs11` (an HSM
//!   through any PKCS#11 module) and `keycard` (a Status Keycard over PC/SC);
//! - the `roost operator` command line ([`cli`]);
//! - the node side: the `[operator]` config section, loading this node's own attestation,
//!   serving it on `/roost/attestation/1.0.0`, fetching and checking the attestations of peers
//!   that claim fleet membership, and the `roost_operator_*` metrics.
//!
//! Two key tiers: every node keeps its own software libp2p key (needed online for every Noise
//! handshake); the operator key stays on a card or HSM and is used offline, rarely, to certify
//! nodes with short-lived attestations. The node itself never signs anything with the operator
//! key, so no PKCS#11 or PC/SC call ever runs inside the node's async runtime.
//! See `docs/keys.md` for every key in the system.

pub mod attestation;
pub mod behaviour;
pub mod cli;
pub mod config;
pub mod key;
pub mod local;
pub mod metrics;
pub mod pin;
pub mod policy;
pub mod profile;
pub mod signer;
pub mod trust;

pub use attestation::{Attestation, Claims, Rejection, Role, SignedAttestation};
pub use config::Config;
pub use key::OperatorKey;
pub use metrics::Metrics;
pub use signer::KeyStorage;
pub use signer::{Signer, SignerError};
pub use trust::{FleetPeer, FleetView, PeerStatus, Verifier};

/// The request/response protocol that serves a node's attestation.
pub const PROTOCOL_ID: libp2p::StreamProtocol =
    libp2p::StreamProtocol::new("/roost/attestation/1.0.0");

/// Fleet names that mark development fleets: a software (`file`) operator key is fine there.
pub fn is_dev_fleet(fleet: &str) -> bool {
    matches!(fleet, "dev" | "test" | "local")
        || fleet.starts_with("dev-")
        || fleet.starts_with("test-")
}

/// Checks a fleet name: 1-32 characters of `a-z`, `0-9` and `-`, starting with a letter or
/// digit. Fleet names appear in rendezvous namespaces (`/roost/<fleet>/…`), so they stay plain.
pub fn check_fleet_name(fleet: &str) -> Result<(), String> {
    let ok = !fleet.is_empty()
        && fleet.len() <= 32
        && fleet
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !fleet.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{fleet}` is not a fleet name: use 1-32 characters of a-z, 0-9 and `-` (e.g. `staging`)"
        ))
    }
}

/// The rendezvous namespace of a fleet's role: `/roost/<fleet>/<role>`.
pub fn fleet_namespace(fleet: &str, role: Role) -> String {
    format!("/roost/{fleet}/{role}")
}

/// The fleet a rendezvous namespace is reserved for, if it is a fleet namespace
/// (`/roost/<fleet>/…`), and the role segment after it, if any.
pub fn parse_fleet_namespace(namespace: &str) -> Option<(&str, Option<&str>)> {
    let rest = namespace.strip_prefix("/roost/")?;
    let mut parts = rest.splitn(3, '/');
    let fleet = parts.next().filter(|f| !f.is_empty())?;
    let role = parts.next().filter(|r| !r.is_empty());
    Some((fleet, role))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_names_are_plain() {
        assert!(check_fleet_name("staging").is_ok());
        assert!(check_fleet_name("beta-2").is_ok());
        assert!(check_fleet_name("").is_err());
        assert!(check_fleet_name("Staging").is_err());
        assert!(check_fleet_name("a/b").is_err());
        assert!(check_fleet_name("-x").is_err());
        assert!(check_fleet_name(&"x".repeat(33)).is_err());
    }

    #[test]
    fn dev_fleets_are_recognised() {
        assert!(is_dev_fleet("dev"));
        assert!(is_dev_fleet("test-7"));
        assert!(!is_dev_fleet("staging"));
        assert!(!is_dev_fleet("developers"));
    }

    #[test]
    fn fleet_namespaces_are_parsed() {
        assert_eq!(
            parse_fleet_namespace("/roost/staging/relay"),
            Some(("staging", Some("relay")))
        );
        assert_eq!(
            parse_fleet_namespace("/roost/staging/relay/extra"),
            Some(("staging", Some("relay")))
        );
        assert_eq!(
            parse_fleet_namespace("/roost/staging"),
            Some(("staging", None))
        );
        assert_eq!(parse_fleet_namespace("/roost//x"), None);
        assert_eq!(parse_fleet_namespace("rs/1/0"), None);
    }
}
