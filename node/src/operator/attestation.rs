//! The attestation: an operator's signed statement "node <PeerId> belongs to fleet <F> with roles
//! <R> from <issued> until <expires>".
//!
//! Wire format: a libp2p signed envelope (RFC 0002: `Envelope{public_key=1, payload_type=2,
//! payload=3, signature=5}`) with the domain [`DOMAIN`] and payload type [`PAYLOAD_TYPE`]. The
//! signature covers `uvarint(len(domain)) || domain || uvarint(len(type)) || type ||
//! uvarint(len(payload)) || payload`, so verifiers use libp2p's own envelope code. The payload is a
//! protobuf [`Payload`] written by prost (fields in tag order, no unknown fields: one canonical
//! encoding for given claims). secp256k1 signatures are DER ECDSA over SHA-256 of that string with
//! low S, Ed25519 signatures are RFC 8032 over the string itself, as libp2p verifies them.
//!
//! Files hold the envelope in hex (one line), so attestations can be pasted and templated.

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use libp2p::{core::SignedEnvelope, PeerId};
use prost::Message as _;

use super::{
    key::OperatorKey,
    signer::{KeyStorage, Signer, SignerError},
};

/// Domain separation string of attestation envelopes.
pub const DOMAIN: &str = "roost-node-attestation";
/// Payload type of attestation envelopes.
pub const PAYLOAD_TYPE: &[u8] = b"/roost/node-attestation/1";
/// Payload version this code writes and reads.
pub const VERSION: u32 = 1;
/// Largest encoded attestation accepted (a real one is ~250 bytes).
pub const MAX_BYTES: usize = 2048;
/// Longest validity `roost operator attest` issues: attestations are short-lived and re-issued.
pub const MAX_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// Clock difference tolerated between the operator's machine and a verifier.
pub const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// What a fleet node does; rendezvous namespaces `/roost/<fleet>/<role>` are reserved per role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Relay,
    Store,
    Rendezvous,
    Lightpush,
    Filter,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Relay,
        Role::Store,
        Role::Rendezvous,
        Role::Lightpush,
        Role::Filter,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Relay => "relay",
            Role::Store => "store",
            Role::Rendezvous => "rendezvous",
            Role::Lightpush => "lightpush",
            Role::Filter => "filter",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Parses a comma-separated role list (`relay,store`), refusing unknown names.
    pub fn parse_list(s: &str) -> Result<Vec<Role>, String> {
        let mut roles = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let role = Role::parse(part).ok_or_else(|| {
                format!(
                    "unknown role `{part}`; roles are {}",
                    Role::ALL.map(Role::as_str).join(", ")
                )
            })?;
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        if roles.is_empty() {
            return Err("give at least one role, e.g. --roles relay,store".into());
        }
        roles.sort();
        Ok(roles)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The protobuf payload inside the envelope.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    #[prost(uint32, tag = "1")]
    pub version: u32,
    #[prost(string, tag = "2")]
    pub fleet: String,
    /// The node's PeerId (multihash bytes).
    #[prost(bytes = "vec", tag = "3")]
    pub node: Vec<u8>,
    #[prost(string, repeated, tag = "4")]
    pub roles: Vec<String>,
    /// Unix seconds.
    #[prost(uint64, tag = "5")]
    pub issued_at: u64,
    /// Unix seconds.
    #[prost(uint64, tag = "6")]
    pub expires_at: u64,
    /// Monotonic per operator and node; a verifier keeps the highest it has seen.
    #[prost(uint64, tag = "7")]
    pub seq: u64,
    #[prost(string, tag = "8")]
    pub key_storage: String,
}

/// What an operator signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub fleet: String,
    pub node: PeerId,
    pub roles: Vec<Role>,
    pub issued_at: u64,
    pub expires_at: u64,
    pub seq: u64,
}

impl Claims {
    fn payload(&self, storage: KeyStorage) -> Payload {
        Payload {
            version: VERSION,
            fleet: self.fleet.clone(),
            node: self.node.to_bytes(),
            roles: self.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            seq: self.seq,
            key_storage: storage.as_str().to_owned(),
        }
    }

    /// Signs the claims with `signer` and checks the signature before returning it, so a
    /// misbehaving token never produces an attestation nobody can verify.
    pub fn sign(&self, signer: &mut dyn Signer) -> Result<SignedAttestation, SignerError> {
        let payload = self.payload(signer.key_storage()).encode_to_vec();
        let message = signing_input(&payload);
        let signature = signer.sign(&message)?;
        let key = signer.public_key().clone();
        if !key.verify(&message, &signature) {
            return Err(SignerError::BadSignature(
                "the signature from the key does not verify against its public key".into(),
            ));
        }
        let envelope = Envelope {
            public_key: key.public_key().encode_protobuf(),
            payload_type: PAYLOAD_TYPE.to_vec(),
            payload,
            signature,
        };
        let bytes = envelope.encode_to_vec();
        // Decoding what we just wrote checks it with libp2p's envelope code, as peers will.
        SignedAttestation::decode(&bytes).map_err(|r| SignerError::BadSignature(r.to_string()))
    }
}

/// The RFC 0002 envelope, written here because hardware signers have no in-memory `Keypair`
/// for `SignedEnvelope::new`; reading goes through libp2p's `SignedEnvelope`.
#[derive(Clone, PartialEq, prost::Message)]
struct Envelope {
    #[prost(bytes = "vec", tag = "1")]
    public_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    payload_type: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    payload: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    signature: Vec<u8>,
}

/// The bytes an operator key signs for `payload` (RFC 0002).
pub fn signing_input(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(DOMAIN.len() + PAYLOAD_TYPE.len() + payload.len() + 8);
    for part in [DOMAIN.as_bytes(), PAYLOAD_TYPE, payload] {
        put_uvarint(&mut out, part.len() as u64);
        out.extend_from_slice(part);
    }
    out
}

fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A decoded attestation whose signature verified (against the key it carries: whether that key
/// is trusted is the [`super::Verifier`]'s question).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    pub fleet: String,
    pub node: PeerId,
    /// Known roles; roles this version does not know are dropped.
    pub roles: Vec<Role>,
    pub issued_at: u64,
    pub expires_at: u64,
    pub seq: u64,
    pub key_storage: KeyStorage,
    pub operator: OperatorKey,
}

impl Attestation {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Seconds from `now` until expiry (negative once expired).
    pub fn seconds_left(&self, now: SystemTime) -> i64 {
        let now = unix(now) as i128;
        (self.expires_at as i128 - now).clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    pub fn roles_text(&self) -> String {
        self.roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// An attestation with the exact bytes it was decoded from (what a node serves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedAttestation {
    pub attestation: Attestation,
    pub bytes: Vec<u8>,
}

impl SignedAttestation {
    /// Decodes an envelope and checks its signature and format (not trust, fleet, peer or time).
    pub fn decode(bytes: &[u8]) -> Result<SignedAttestation, Rejection> {
        if bytes.is_empty() {
            return Err(Rejection::Missing);
        }
        if bytes.len() > MAX_BYTES {
            return Err(Rejection::Malformed(format!(
                "{} bytes, more than the {MAX_BYTES} an attestation may have",
                bytes.len()
            )));
        }
        let envelope = SignedEnvelope::from_protobuf_encoding(bytes)
            .map_err(|e| Rejection::Malformed(format!("not a signed envelope: {e}")))?;
        let (payload, key) = envelope
            .payload_and_signing_key(DOMAIN.to_owned(), PAYLOAD_TYPE)
            .map_err(|e| match e {
                libp2p::core::signed_envelope::ReadPayloadError::InvalidSignature => {
                    Rejection::BadSignature
                }
                other => Rejection::Malformed(format!("not an attestation: {other}")),
            })?;
        let operator = OperatorKey::new(key.clone())
            .map_err(|e| Rejection::Malformed(format!("signing key: {e}")))?;
        let payload =
            Payload::decode(payload).map_err(|e| Rejection::Malformed(format!("payload: {e}")))?;
        if payload.version != VERSION {
            return Err(Rejection::UnsupportedVersion(payload.version));
        }
        let node = PeerId::from_bytes(&payload.node)
            .map_err(|e| Rejection::Malformed(format!("node PeerId: {e}")))?;
        if payload.expires_at <= payload.issued_at {
            return Err(Rejection::Malformed(
                "expires before it is issued".to_owned(),
            ));
        }
        let mut roles: Vec<Role> = payload
            .roles
            .iter()
            .filter_map(|r| Role::parse(r))
            .collect();
        roles.sort();
        roles.dedup();
        Ok(SignedAttestation {
            attestation: Attestation {
                fleet: payload.fleet,
                node,
                roles,
                issued_at: payload.issued_at,
                expires_at: payload.expires_at,
                seq: payload.seq,
                key_storage: KeyStorage::parse(&payload.key_storage),
                operator,
            },
            bytes: bytes.to_vec(),
        })
    }

    /// Parses the text form (hex, whitespace ignored) or, failing that, raw envelope bytes.
    pub fn from_file_bytes(contents: &[u8]) -> Result<SignedAttestation, Rejection> {
        let text: Vec<u8> = contents
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        match hex::decode(&text) {
            Ok(bytes) if !text.is_empty() => SignedAttestation::decode(&bytes),
            _ => SignedAttestation::decode(contents),
        }
    }

    /// The text form written to files: hex and a newline.
    pub fn to_file_text(&self) -> String {
        format!("{}\n", hex::encode(&self.bytes))
    }
}

/// Why an attestation was not accepted. [`Rejection::label`] is the metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("no attestation was offered")]
    Missing,
    #[error("malformed attestation: {0}")]
    Malformed(String),
    #[error("attestation version {0} is not supported (this node reads version 1)")]
    UnsupportedVersion(u32),
    #[error("the signature does not match the contents (tampered or corrupted)")]
    BadSignature,
    #[error("signed by operator key {0}, which is not among the trusted operator keys")]
    UntrustedKey(String),
    #[error("attestation is for fleet `{got}`, not `{expected}`")]
    WrongFleet { expected: String, got: String },
    #[error("attestation is for node {got}, not {expected}")]
    WrongPeer { expected: String, got: String },
    #[error("attestation is not valid before {}", format_time(*.0))]
    NotYetValid(u64),
    #[error("attestation expired at {}", format_time(*.0))]
    Expired(u64),
    #[error("attestation seq {got} is older than seq {newest} already seen for this node")]
    Superseded { got: u64, newest: u64 },
    #[error("attestation does not grant role `{0}`")]
    MissingRole(Role),
}

impl Rejection {
    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::Missing => "missing",
            Rejection::Malformed(_) => "malformed",
            Rejection::UnsupportedVersion(_) => "unsupported_version",
            Rejection::BadSignature => "bad_signature",
            Rejection::UntrustedKey(_) => "untrusted_key",
            Rejection::WrongFleet { .. } => "wrong_fleet",
            Rejection::WrongPeer { .. } => "wrong_peer",
            Rejection::NotYetValid(_) => "not_yet_valid",
            Rejection::Expired(_) => "expired",
            Rejection::Superseded { .. } => "superseded",
            Rejection::MissingRole(_) => "missing_role",
        }
    }
}

/// Unix seconds of a time (0 before 1970).
pub fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// RFC 3339 UTC text of unix seconds.
pub fn format_time(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::operator::signer::file::FileSigner;
    use libp2p::identity::Keypair;

    pub fn claims(node: PeerId, now: u64) -> Claims {
        Claims {
            fleet: "staging".into(),
            node,
            roles: vec![Role::Relay, Role::Store],
            issued_at: now,
            expires_at: now + 3600,
            seq: 7,
        }
    }

    #[test]
    fn signed_attestations_decode_with_libp2p_envelope_code() {
        for keypair in [Keypair::generate_ed25519(), Keypair::generate_secp256k1()] {
            let mut signer = FileSigner::from_keypair(keypair.clone()).unwrap();
            let node = PeerId::random();
            let signed = claims(node, 1_700_000_000).sign(&mut signer).unwrap();
            let a = &signed.attestation;
            assert_eq!(a.node, node);
            assert_eq!(a.fleet, "staging");
            assert_eq!(a.roles, vec![Role::Relay, Role::Store]);
            assert_eq!(a.seq, 7);
            assert_eq!(a.key_storage, KeyStorage::File);
            assert_eq!(a.operator.public_key(), &keypair.public());
            // The envelope is the standard one: libp2p's own constructor agrees byte for byte
            // for Ed25519 (deterministic signatures).
            if keypair.key_type() == libp2p::identity::KeyType::Ed25519 {
                let payload = claims(node, 1_700_000_000).payload(KeyStorage::File);
                let theirs = SignedEnvelope::new(
                    &keypair,
                    DOMAIN.into(),
                    PAYLOAD_TYPE.to_vec(),
                    payload.encode_to_vec(),
                )
                .unwrap()
                .into_protobuf_encoding();
                assert_eq!(theirs, signed.bytes);
            }
        }
    }

    #[test]
    fn encoding_is_canonical() {
        let node = PeerId::random();
        let a = claims(node, 1_700_000_000).payload(KeyStorage::Pkcs11);
        let b = claims(node, 1_700_000_000).payload(KeyStorage::Pkcs11);
        assert_eq!(a.encode_to_vec(), b.encode_to_vec());
        let decoded = Payload::decode(a.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.encode_to_vec(), a.encode_to_vec());
    }

    #[test]
    fn tampering_is_detected() {
        let mut signer = FileSigner::from_keypair(Keypair::generate_secp256k1()).unwrap();
        let signed = claims(PeerId::random(), 1_700_000_000)
            .sign(&mut signer)
            .unwrap();
        // Flip a byte inside the payload (the fleet name).
        let mut bytes = signed.bytes.clone();
        let at = bytes
            .windows(7)
            .position(|w| w == b"staging")
            .expect("fleet name in the envelope");
        bytes[at] = b'x';
        assert_eq!(
            SignedAttestation::decode(&bytes).unwrap_err(),
            Rejection::BadSignature
        );
        // Swap in another key: the signature no longer matches either.
        let other = Keypair::generate_secp256k1().public().encode_protobuf();
        let mut env = Envelope::decode(signed.bytes.as_slice()).unwrap();
        env.public_key = other;
        assert_eq!(
            SignedAttestation::decode(&env.encode_to_vec()).unwrap_err(),
            Rejection::BadSignature
        );
        // Truncation and garbage are malformed, never a panic.
        for cut in [1, 10, signed.bytes.len() / 2, signed.bytes.len() - 1] {
            assert!(SignedAttestation::decode(&signed.bytes[..cut]).is_err());
        }
        assert_eq!(
            SignedAttestation::decode(&[]).unwrap_err(),
            Rejection::Missing
        );
        assert_eq!(
            SignedAttestation::decode(&vec![0u8; MAX_BYTES + 1])
                .unwrap_err()
                .label(),
            "malformed"
        );
    }

    #[test]
    fn other_envelopes_are_not_attestations() {
        // A libp2p peer record envelope signed by the same key is refused: other domain/type.
        let keypair = Keypair::generate_ed25519();
        let record = SignedEnvelope::new(
            &keypair,
            "libp2p-peer-record".into(),
            b"\x03\x01".to_vec(),
            b"payload".to_vec(),
        )
        .unwrap()
        .into_protobuf_encoding();
        assert_eq!(
            SignedAttestation::decode(&record).unwrap_err().label(),
            "malformed"
        );
        // Same type but another domain: the signature check fails.
        let wrong_domain = SignedEnvelope::new(
            &keypair,
            "some-other-domain".into(),
            PAYLOAD_TYPE.to_vec(),
            b"payload".to_vec(),
        )
        .unwrap()
        .into_protobuf_encoding();
        assert_eq!(
            SignedAttestation::decode(&wrong_domain).unwrap_err(),
            Rejection::BadSignature
        );
    }

    #[test]
    fn file_text_round_trips_and_raw_bytes_are_accepted() {
        let mut signer = FileSigner::from_keypair(Keypair::generate_ed25519()).unwrap();
        let signed = claims(PeerId::random(), 1_700_000_000)
            .sign(&mut signer)
            .unwrap();
        let text = signed.to_file_text();
        assert_eq!(
            SignedAttestation::from_file_bytes(text.as_bytes()).unwrap(),
            signed
        );
        assert_eq!(
            SignedAttestation::from_file_bytes(&signed.bytes).unwrap(),
            signed
        );
        assert!(SignedAttestation::from_file_bytes(b"zz\n").is_err());
    }

    #[test]
    fn roles_parse_strictly() {
        assert_eq!(
            Role::parse_list("store, relay,relay").unwrap(),
            vec![Role::Relay, Role::Store]
        );
        assert!(Role::parse_list("relay,mailserver")
            .unwrap_err()
            .contains("mailserver"));
        assert!(Role::parse_list("").is_err());
    }
}

/// Property test: any claims a signer signs decode back, from the wire and from the file form,
/// to exactly those claims; any change to the signed bytes is refused.
#[cfg(test)]
mod props {
    use libp2p::identity::Keypair;
    use proptest::{collection::vec, prelude::*};

    use super::*;
    use crate::operator::signer::file::FileSigner;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn signed_claims_round_trip(
            fleet in "[a-z0-9-]{1,24}",
            roles in vec(prop::sample::select(Role::ALL.to_vec()), 0..6),
            issued_at in 0u64..4_000_000_000,
            valid_for in 1u64..100_000_000,
            seq in any::<u64>(),
            flip in any::<prop::sample::Index>(),
        ) {
            let mut signer = FileSigner::from_keypair(Keypair::generate_ed25519()).unwrap();
            let node = PeerId::random();
            let claims = Claims {
                fleet: fleet.clone(),
                node,
                roles: roles.clone(),
                issued_at,
                expires_at: issued_at + valid_for,
                seq,
            };
            let signed = claims.sign(&mut signer).unwrap();
            let decoded = SignedAttestation::decode(&signed.bytes).unwrap();
            prop_assert_eq!(&decoded, &signed);
            let a = &decoded.attestation;
            prop_assert_eq!(&a.fleet, &fleet);
            prop_assert_eq!(a.node, node);
            let mut want_roles = roles;
            want_roles.sort();
            want_roles.dedup();
            prop_assert_eq!(&a.roles, &want_roles);
            prop_assert_eq!((a.issued_at, a.expires_at, a.seq), (issued_at, issued_at + valid_for, seq));
            prop_assert_eq!(SignedAttestation::from_file_bytes(signed.to_file_text().as_bytes()).unwrap(), signed.clone());
            // One flipped bit anywhere: refused (malformed or a bad signature), never accepted.
            let mut tampered = signed.bytes.clone();
            let i = flip.index(tampered.len());
            tampered[i] ^= 1;
            prop_assert!(SignedAttestation::decode(&tampered).is_err());
        }
    }
}
