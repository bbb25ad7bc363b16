//! Peer records in every flavour a rendezvous client sends, verified the same way:
//!
//! | flavour | sent by | envelope domain | payload type | payload |
//! |---|---|---|---|---|
//! | [`Flavour::Standard`] | go-, js-, nim-libp2p, Roost | `libp2p-peer-record` | `0x0301` | RFC 0003 `PeerRecord` |
//! | [`Flavour::Legacy`] | rust-libp2p `libp2p-rendezvous` ≤ 0.18 | `libp2p-routing-state` | `/libp2p/routing-state-record` | RFC 0003 `PeerRecord` |
//! | [`Flavour::Waku`] | nwaku on `/vac/waku/rendezvous/1.0.0` | `libp2p-custom-peer-record` | `0x300000` | `WakuPeerRecord` |
//! | [`Flavour::PeerInfo`] | the original go-libp2p-rendezvous | — (unsigned) | — | `PeerInfo { id, addrs }` |
//!
//! A signed record is valid when its signature verifies over the RFC 0002 byte string and the
//! record's peer id is the signing key's. An unsigned `PeerInfo` is only as good as the
//! connection it came on: the server accepts it only from the peer it names.

use libp2p::{identity::PublicKey, Multiaddr, PeerId};
use prost::Message as _;

use super::proto;
use crate::reqres::encode_varint;

pub const STANDARD_DOMAIN: &str = "libp2p-peer-record";
pub const STANDARD_PAYLOAD_TYPE: &[u8] = &[0x03, 0x01];
pub const LEGACY_DOMAIN: &str = "libp2p-routing-state";
pub const LEGACY_PAYLOAD_TYPE: &[u8] = b"/libp2p/routing-state-record";
pub const WAKU_DOMAIN: &str = "libp2p-custom-peer-record";
pub const WAKU_PAYLOAD_TYPE: &[u8] = &[0x30, 0x00, 0x00];

/// Most addresses kept from one record; more is a sign of abuse, not of a real node.
pub const MAX_ADDRESSES: usize = 32;

/// Which record format a registration came in (stored with it, as one byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavour {
    Standard = 0,
    Legacy = 1,
    Waku = 2,
    PeerInfo = 3,
}

impl Flavour {
    pub fn from_u8(value: u8) -> Option<Flavour> {
        Some(match value {
            0 => Flavour::Standard,
            1 => Flavour::Legacy,
            2 => Flavour::Waku,
            3 => Flavour::PeerInfo,
            _ => return None,
        })
    }

    pub fn label(self) -> &'static str {
        match self {
            Flavour::Standard => "standard",
            Flavour::Legacy => "legacy",
            Flavour::Waku => "waku",
            Flavour::PeerInfo => "peer_info",
        }
    }
}

/// A record whose signature (if it has one) checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub peer: PeerId,
    pub addresses: Vec<Multiaddr>,
    pub flavour: Flavour,
    /// The record's sequence number (0 for `PeerInfo`, which has none).
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the peer record is missing")]
    Missing,
    #[error("the peer record is not a signed envelope or PeerInfo: {0}")]
    Malformed(String),
    #[error("unknown envelope payload type 0x{0}; expected a libp2p peer record (0x0301), a legacy rust-libp2p record or a WakuPeerRecord (0x300000)")]
    UnknownPayloadType(String),
    #[error(
        "the envelope's public key cannot be used: {0} (Ed25519 and secp256k1 keys are supported)"
    )]
    BadKey(String),
    #[error("the envelope's signature does not verify")]
    BadSignature,
    #[error("the record is for peer {record} but was signed by {signer}")]
    KeyMismatch { record: String, signer: String },
    #[error("the record's peer id is malformed")]
    BadPeerId,
    #[error("the record lists an address that is not a multiaddr")]
    BadAddress,
    #[error("the record lists no addresses")]
    NoAddresses,
    #[error("the record lists more than {MAX_ADDRESSES} addresses")]
    TooManyAddresses,
}

/// The byte string RFC 0002 signs: `varint(len(domain)) domain varint(len(type)) type
/// varint(len(payload)) payload`.
pub fn signature_payload(domain: &str, payload_type: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(domain.len() + payload_type.len() + payload.len() + 30);
    encode_varint(domain.len() as u64, &mut out);
    out.extend_from_slice(domain.as_bytes());
    encode_varint(payload_type.len() as u64, &mut out);
    out.extend_from_slice(payload_type);
    encode_varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

/// The envelope in `bytes`, or `None` when `bytes` is an unsigned `PeerInfo`. Both share
/// fields 1 and 2; only an envelope has a payload (3) and a signature (5).
fn envelope(bytes: &[u8]) -> Result<Option<proto::Envelope>, RecordError> {
    let env = proto::Envelope::decode(bytes).map_err(|e| RecordError::Malformed(e.to_string()))?;
    if env.payload.is_empty() && env.signature.is_empty() {
        return Ok(None);
    }
    Ok(Some(env))
}

fn domain_of(payload_type: &[u8]) -> Result<(&'static str, Flavour), RecordError> {
    match payload_type {
        STANDARD_PAYLOAD_TYPE => Ok((STANDARD_DOMAIN, Flavour::Standard)),
        LEGACY_PAYLOAD_TYPE => Ok((LEGACY_DOMAIN, Flavour::Legacy)),
        WAKU_PAYLOAD_TYPE => Ok((WAKU_DOMAIN, Flavour::Waku)),
        other => Err(RecordError::UnknownPayloadType(hex::encode(other))),
    }
}

/// Raw peer id, sequence number and raw addresses of a record payload.
type Contents = (Vec<u8>, u64, Vec<Vec<u8>>);

/// Peer id, sequence number and raw addresses of a payload, without any signature check.
fn payload_contents(flavour: Flavour, payload: &[u8]) -> Result<Contents, RecordError> {
    let malformed = |e: prost::DecodeError| RecordError::Malformed(e.to_string());
    match flavour {
        Flavour::Standard | Flavour::Legacy => {
            let r = proto::PeerRecord::decode(payload).map_err(malformed)?;
            Ok((
                r.peer_id,
                r.seq,
                r.addresses.into_iter().map(|a| a.multiaddr).collect(),
            ))
        }
        Flavour::Waku => {
            let r = proto::WakuPeerRecord::decode(payload).map_err(malformed)?;
            Ok((r.peer_id, r.seq_no, r.multiaddrs))
        }
        Flavour::PeerInfo => {
            let r = proto::PeerInfo::decode(payload).map_err(malformed)?;
            Ok((r.id.unwrap_or_default(), 0, r.addrs))
        }
    }
}

fn parse_addresses(raw: Vec<Vec<u8>>) -> Result<Vec<Multiaddr>, RecordError> {
    if raw.is_empty() {
        return Err(RecordError::NoAddresses);
    }
    if raw.len() > MAX_ADDRESSES {
        return Err(RecordError::TooManyAddresses);
    }
    raw.into_iter()
        .map(|a| Multiaddr::try_from(a).map_err(|_| RecordError::BadAddress))
        .collect()
}

/// Decodes and verifies a record of any flavour.
pub fn verify(bytes: &[u8]) -> Result<Record, RecordError> {
    if bytes.is_empty() {
        return Err(RecordError::Missing);
    }
    let Some(env) = envelope(bytes)? else {
        let (id, _, addrs) = payload_contents(Flavour::PeerInfo, bytes)?;
        let peer = PeerId::from_bytes(&id).map_err(|_| RecordError::BadPeerId)?;
        return Ok(Record {
            peer,
            addresses: parse_addresses(addrs)?,
            flavour: Flavour::PeerInfo,
            seq: 0,
        });
    };
    let (domain, flavour) = domain_of(&env.payload_type)?;
    let key = PublicKey::try_decode_protobuf(&env.public_key)
        .map_err(|e| RecordError::BadKey(e.to_string()))?;
    let signed = signature_payload(domain, &env.payload_type, &env.payload);
    if !key.verify(&signed, &env.signature) {
        return Err(RecordError::BadSignature);
    }
    let (id, seq, addrs) = payload_contents(flavour, &env.payload)?;
    let peer = PeerId::from_bytes(&id).map_err(|_| RecordError::BadPeerId)?;
    let signer = key.to_peer_id();
    if peer != signer {
        return Err(RecordError::KeyMismatch {
            record: peer.to_base58(),
            signer: signer.to_base58(),
        });
    }
    Ok(Record {
        peer,
        addresses: parse_addresses(addrs)?,
        flavour,
        seq,
    })
}

/// The unsigned `PeerInfo` form of a stored record, for clients that read only that. The
/// record was verified when it was stored, so it is only re-read here.
pub fn to_peer_info(flavour: Flavour, bytes: &[u8]) -> Option<Vec<u8>> {
    if flavour == Flavour::PeerInfo {
        return Some(bytes.to_vec());
    }
    let env = envelope(bytes).ok()??;
    let (id, _, addrs) = payload_contents(flavour, &env.payload).ok()?;
    Some(
        proto::PeerInfo {
            id: Some(id),
            addrs,
        }
        .encode_to_vec(),
    )
}

/// A standard (go/js/nim-readable) signed peer record for `keypair` and `addresses`, as this
/// node's rendezvous client registers it.
pub fn standard_envelope(
    keypair: &libp2p::identity::Keypair,
    addresses: Vec<Multiaddr>,
) -> Result<Vec<u8>, libp2p::identity::SigningError> {
    let record = libp2p::core::PeerRecord::new_interop(keypair, addresses)?;
    Ok(record.into_signed_envelope().into_protobuf_encoding())
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;

    fn addr() -> Multiaddr {
        "/ip4/127.0.0.1/tcp/60000".parse().unwrap()
    }

    #[test]
    fn standard_and_legacy_records_verify_with_their_flavour() {
        for key in [Keypair::generate_ed25519(), Keypair::generate_secp256k1()] {
            let std_bytes = standard_envelope(&key, vec![addr()]).unwrap();
            let r = verify(&std_bytes).unwrap();
            assert_eq!(r.flavour, Flavour::Standard);
            assert_eq!(r.peer, key.public().to_peer_id());
            assert_eq!(r.addresses, vec![addr()]);

            let legacy = libp2p::core::PeerRecord::new(&key, vec![addr()])
                .unwrap()
                .into_signed_envelope()
                .into_protobuf_encoding();
            assert_eq!(verify(&legacy).unwrap().flavour, Flavour::Legacy);
        }
    }

    #[test]
    fn tampered_and_foreign_records_are_refused() {
        let key = Keypair::generate_ed25519();
        let bytes = standard_envelope(&key, vec![addr()]).unwrap();
        let mut env = proto::Envelope::decode(&bytes[..]).unwrap();
        env.signature[0] ^= 1;
        assert_eq!(verify(&env.encode_to_vec()), Err(RecordError::BadSignature));

        // A record naming another peer, correctly signed by this key.
        let other = Keypair::generate_ed25519().public().to_peer_id();
        let payload = proto::PeerRecord {
            peer_id: other.to_bytes(),
            seq: 1,
            addresses: vec![proto::AddressInfo {
                multiaddr: addr().to_vec(),
            }],
        }
        .encode_to_vec();
        let sig = key
            .sign(&signature_payload(
                STANDARD_DOMAIN,
                STANDARD_PAYLOAD_TYPE,
                &payload,
            ))
            .unwrap();
        let env = proto::Envelope {
            public_key: key.public().encode_protobuf(),
            payload_type: STANDARD_PAYLOAD_TYPE.to_vec(),
            payload,
            signature: sig,
        };
        assert!(matches!(
            verify(&env.encode_to_vec()),
            Err(RecordError::KeyMismatch { .. })
        ));
        assert!(matches!(
            verify(&[0xff, 0xff]),
            Err(RecordError::Malformed(_))
        ));
        assert_eq!(verify(&[]), Err(RecordError::Missing));
    }

    #[test]
    fn peer_info_is_recognised_and_converted() {
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        let info = proto::PeerInfo {
            id: Some(peer.to_bytes()),
            addrs: vec![addr().to_vec()],
        }
        .encode_to_vec();
        let r = verify(&info).unwrap();
        assert_eq!(r.flavour, Flavour::PeerInfo);
        assert_eq!(r.peer, peer);

        let key = Keypair::generate_ed25519();
        let signed = standard_envelope(&key, vec![addr()]).unwrap();
        let converted = to_peer_info(Flavour::Standard, &signed).unwrap();
        let back = verify(&converted).unwrap();
        assert_eq!(back.flavour, Flavour::PeerInfo);
        assert_eq!(back.peer, key.public().to_peer_id());
        assert_eq!(back.addresses, vec![addr()]);
    }

    #[test]
    fn records_without_addresses_are_refused() {
        let key = Keypair::generate_ed25519();
        let bytes = standard_envelope(&key, vec![]).unwrap();
        assert_eq!(verify(&bytes), Err(RecordError::NoAddresses));
    }
}
