//! Where operator keys live, behind one [`Signer`] trait.
//!
//! - [`file`]: a key file on disk, for development fleets only;
//! - [`pkcs11`]: a key in an HSM (or SoftHSM2) through any PKCS#11 module;
//! - [`keycard`]: a key on a Status Keycard, through PC/SC.
//!
//! Signing is blocking (PKCS#11 and PC/SC calls can take a second): call it from a plain thread,
//! or through `tokio::task::spawn_blocking` from async code. The `roost operator` commands are
//! synchronous and the node never signs, so neither ever runs on an executor thread.

pub mod file;
pub mod keycard;
pub mod pkcs11;

use super::{key::OperatorKey, pin::PinError};

/// Where the signing key was kept, as the signer declared it. Nodes warn about `file` keys on
/// non-development fleets; the value is informative (a verifier cannot check it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStorage {
    File,
    Pkcs11,
    Keycard,
    Unknown,
}

impl KeyStorage {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStorage::File => "file",
            KeyStorage::Pkcs11 => "pkcs11",
            KeyStorage::Keycard => "keycard",
            KeyStorage::Unknown => "unknown",
        }
    }

    pub(crate) fn parse(s: &str) -> KeyStorage {
        match s {
            "file" => KeyStorage::File,
            "pkcs11" => KeyStorage::Pkcs11,
            "keycard" => KeyStorage::Keycard,
            _ => KeyStorage::Unknown,
        }
    }

    pub fn is_hardware(self) -> bool {
        matches!(self, KeyStorage::Pkcs11 | KeyStorage::Keycard)
    }
}

/// An operator key that can sign.
pub trait Signer {
    /// The operator public key.
    fn public_key(&self) -> &OperatorKey;

    /// Where the key is kept (written into attestations).
    fn key_storage(&self) -> KeyStorage;

    /// Signs `message` the way libp2p verifies signatures of this key type: Ed25519 over the
    /// message; secp256k1 as DER ECDSA over SHA-256(message) with low S.
    fn sign(&mut self, message: &[u8]) -> Result<Vec<u8>, SignerError>;

    /// Signs a 32-byte digest as it is, without hashing it again (EIP-1459 roots are signed over
    /// keccak256). secp256k1 keys only. Returns the backend's ECDSA signature: raw r || s or
    /// DER, either S; [`sign_recoverable`] makes the 65-byte form of it.
    fn sign_prehash(&mut self, prehash: &[u8; 32]) -> Result<Vec<u8>, SignerError>;
}

/// Signs `prehash` with a secp256k1 operator key and returns r || s || v: S low, v the recovery
/// id (0 or 1), found by recovering the key with each and comparing it with the signer's.
pub fn sign_recoverable(
    signer: &mut dyn Signer,
    prehash: &[u8; 32],
) -> Result<[u8; 65], SignerError> {
    let key = signer
        .public_key()
        .secp256k1()
        .ok_or(SignerError::NotSecp256k1)?;
    let raw = signer.sign_prehash(prehash)?;
    let signature = if raw.len() == 64 {
        k256::ecdsa::Signature::from_slice(&raw)
    } else {
        k256::ecdsa::Signature::from_der(&raw)
    }
    .map_err(|e| SignerError::BadSignature(format!("not an ECDSA signature: {e}")))?
    .normalize_s();
    let mut out = [0u8; 65];
    out[..64].copy_from_slice(&signature.to_bytes());
    for v in 0..=1u8 {
        out[64] = v;
        if recover_prehash(prehash, &out).as_ref() == Some(&key) {
            return Ok(out);
        }
    }
    Err(SignerError::BadSignature(
        "the signature does not recover to the operator key with either recovery id".into(),
    ))
}

/// A failure of an operator key backend; each message is one line saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error(transparent)]
    File(#[from] file::Error),
    #[error(transparent)]
    Pkcs11(#[from] pkcs11::Error),
    #[error(transparent)]
    Keycard(#[from] keycard::Error),
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error("the operator key produced an unusable signature ({0}); nothing was written")]
    BadSignature(String),
    #[error("this needs a secp256k1 operator key, and the profile's key is Ed25519; make a secp256k1 one with `roost operator init --key-type secp256k1`")]
    NotSecp256k1,
    #[error("the operator profile is incomplete: {0}; run `roost operator init` again")]
    Profile(String),
    #[error("the key found is {got}, not the operator key {expected} the profile names; is this the right card or token? (run `roost operator init` again to adopt this key)")]
    KeyMismatch { expected: String, got: String },
}

/// The key a 65-byte r || s || v signature over `prehash` recovers to; `None` unless S is low,
/// v is 0 or 1 and a key comes out.
pub fn recover_prehash(
    prehash: &[u8; 32],
    signature: &[u8; 65],
) -> Option<k256::ecdsa::VerifyingKey> {
    let parsed = k256::ecdsa::Signature::from_slice(&signature[..64]).ok()?;
    if parsed.normalize_s() != parsed || signature[64] > 1 {
        return None;
    }
    let id = k256::ecdsa::RecoveryId::from_byte(signature[64])?;
    k256::ecdsa::VerifyingKey::recover_from_prehash(prehash, &parsed, id).ok()
}

/// The secp256k1 signature libp2p verifies: DER with low S. Accepts raw `r || s` (64 bytes, as
/// PKCS#11 CKM_ECDSA returns it) or DER (as a Keycard returns it).
pub fn secp256k1_libp2p_signature(signature: &[u8]) -> Result<Vec<u8>, SignerError> {
    let parsed = if signature.len() == 64 {
        k256::ecdsa::Signature::from_slice(signature)
    } else {
        k256::ecdsa::Signature::from_der(signature)
    }
    .map_err(|e| SignerError::BadSignature(format!("not an ECDSA signature: {e}")))?;
    let normalized = parsed.normalize_s();
    Ok(normalized.to_der().as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k256::ecdsa::{signature::hazmat::PrehashSigner, SigningKey};
    use k256::sha2::{Digest, Sha256};

    #[test]
    fn raw_high_s_signatures_become_low_s_der_that_libp2p_accepts() {
        let secret: [u8; 32] = rand::random();
        let signing = SigningKey::from_slice(&secret).unwrap();
        let public = libp2p::identity::secp256k1::PublicKey::try_from_bytes(
            signing.verifying_key().to_sec1_point(true).as_bytes(),
        )
        .unwrap();
        let message = b"attest this";
        let digest = Sha256::digest(message);
        let sig: k256::ecdsa::Signature = signing.sign_prehash(&digest).unwrap();
        // Make it high-S, as a PKCS#11 token may return it: s' = n - s.
        let (r, s) = (sig.r(), sig.s());
        let high = k256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
        assert!(high.normalize_s() != high, "constructed a high-S signature");
        let raw = high.to_bytes();
        assert_eq!(raw.len(), 64);
        // libp2p refuses the high-S form...
        assert!(!public.verify(message, high.to_der().as_bytes()));
        // ...and accepts what we make of it, from raw and from DER input.
        let fixed = secp256k1_libp2p_signature(&raw).unwrap();
        assert!(public.verify(message, &fixed));
        let fixed_der = secp256k1_libp2p_signature(high.to_der().as_bytes()).unwrap();
        assert_eq!(fixed, fixed_der);
        assert!(secp256k1_libp2p_signature(&[1, 2, 3]).is_err());
    }

    #[test]
    fn file_keys_sign_prehashes_recoverably_with_low_s() {
        let dir = tempfile::tempdir().unwrap();
        let (mut signer, _) =
            file::FileSigner::open_or_create(&dir.path().join("k"), file::Algorithm::Secp256k1)
                .unwrap();
        let key = signer.public_key().secp256k1().unwrap();
        // Enough digests that both recovery ids and (before normalising) both S halves occur.
        let mut ids = [0usize; 2];
        for i in 0..32u8 {
            let prehash = [i; 32];
            let sig = sign_recoverable(&mut signer, &prehash).unwrap();
            assert_eq!(
                recover_prehash(&prehash, &sig),
                Some(key),
                "low S, recovers"
            );
            ids[sig[64] as usize] += 1;
        }
        assert!(ids[0] > 0 && ids[1] > 0, "{ids:?}");
        // Ed25519 keys cannot sign EIP-1459 roots.
        let (mut ed, _) =
            file::FileSigner::open_or_create(&dir.path().join("e"), file::Algorithm::Ed25519)
                .unwrap();
        assert!(matches!(
            sign_recoverable(&mut ed, &[0; 32]),
            Err(SignerError::NotSecp256k1)
        ));
    }
}
