//! Operator public keys as people write them: hex of the libp2p protobuf encoding of the key
//! (`08021221…` for secp256k1, `08011220…` for Ed25519), the same bytes an attestation envelope
//! carries. `roost operator init` and `pubkey` print this form; `--trusted` and
//! `operator.trusted_keys` take it.

use std::{fmt, str::FromStr};

use libp2p::identity::{KeyType, PublicKey};
use sha2::{Digest, Sha256};

/// An operator public key (secp256k1 or Ed25519).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OperatorKey(PublicKey);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    #[error("`{0}` is not an operator public key: expected the hex line `roost operator pubkey` prints (e.g. 08021221…)")]
    NotHex(String),
    #[error("`{0}` is not an operator public key: {1}")]
    Invalid(String, String),
    #[error("operator keys must be secp256k1 or Ed25519, `{0}` is {1}")]
    UnsupportedType(String, String),
}

impl OperatorKey {
    pub fn new(key: PublicKey) -> Result<Self, KeyParseError> {
        match key.key_type() {
            KeyType::Secp256k1 | KeyType::Ed25519 => Ok(OperatorKey(key)),
            other => Err(KeyParseError::UnsupportedType(
                hex::encode(key.encode_protobuf()),
                format!("{other:?}"),
            )),
        }
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.0
    }

    /// `secp256k1` or `ed25519`.
    pub fn algorithm(&self) -> &'static str {
        match self.0.key_type() {
            KeyType::Ed25519 => "ed25519",
            _ => "secp256k1",
        }
    }

    /// A short, stable name for logs: the first 8 bytes of SHA-256 of the encoded key, in hex.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.encode_protobuf());
        hex::encode(&digest[..8])
    }

    /// The key as k256 sees it, for a secp256k1 key.
    pub fn secp256k1(&self) -> Option<k256::ecdsa::VerifyingKey> {
        let key = self.0.clone().try_into_secp256k1().ok()?;
        k256::ecdsa::VerifyingKey::from_sec1_bytes(&key.to_bytes()).ok()
    }

    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.0.verify(message, signature)
    }
}

impl fmt::Display for OperatorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0.encode_protobuf()))
    }
}

impl fmt::Debug for OperatorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OperatorKey({} {})",
            self.algorithm(),
            self.fingerprint()
        )
    }
}

impl FromStr for OperatorKey {
    type Err = KeyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let text = text.strip_prefix("0x").unwrap_or(text);
        let bytes = hex::decode(text).map_err(|_| KeyParseError::NotHex(s.to_owned()))?;
        let key = PublicKey::try_decode_protobuf(&bytes)
            .map_err(|e| KeyParseError::Invalid(s.to_owned(), e.to_string()))?;
        OperatorKey::new(key)
    }
}

impl serde::Serialize for OperatorKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for OperatorKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;

    #[test]
    fn keys_round_trip_through_hex() {
        for keypair in [Keypair::generate_ed25519(), Keypair::generate_secp256k1()] {
            let key = OperatorKey::new(keypair.public()).unwrap();
            let text = key.to_string();
            assert_eq!(text.parse::<OperatorKey>().unwrap(), key);
            assert_eq!(format!("0x{text}").parse::<OperatorKey>().unwrap(), key);
            assert_eq!(key.fingerprint().len(), 16);
        }
        let secp = OperatorKey::new(Keypair::generate_secp256k1().public()).unwrap();
        assert!(secp.to_string().starts_with("08021221"));
        assert_eq!(secp.algorithm(), "secp256k1");
    }

    #[test]
    fn garbage_is_refused_with_the_expected_form() {
        let e = "nope".parse::<OperatorKey>().unwrap_err();
        assert!(e.to_string().contains("roost operator pubkey"));
        assert!(matches!(
            "0802".parse::<OperatorKey>(),
            Err(KeyParseError::Invalid(..))
        ));
    }
}
