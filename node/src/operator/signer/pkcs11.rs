//! The `pkcs11` backend: an operator key in an HSM, through any PKCS#11 module (`cryptoki`).
//!
//! - Tokens are found by label, never by slot number (SoftHSM2 moves a token to a new random
//!   slot when it is initialised).
//! - secp256k1: the host computes SHA-256 and the token signs it with CKM_ECDSA (tokens rarely
//!   offer CKM_ECDSA_SHA256); the raw `r || s` becomes DER with low S, as libp2p verifies it.
//! - Ed25519: CKM_EDDSA over the message, where the token has it.
//! - Keys are generated on the token as `Sensitive`, not `Extractable`: they never leave it.

use std::path::{Path, PathBuf};

use cryptoki::{
    context::{CInitializeArgs, CInitializeFlags, Pkcs11},
    error::{Error as CkError, RvError},
    mechanism::{
        eddsa::{EddsaParams, EddsaSignatureScheme},
        Mechanism, MechanismType,
    },
    object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle},
    session::{Session, UserType},
    slot::Slot,
    types::AuthPin,
};
use k256::sha2::{Digest, Sha256};
use libp2p::identity::{ed25519, secp256k1, PublicKey};

use super::KeyStorage;
use super::{file::Algorithm, secp256k1_libp2p_signature, Signer, SignerError};
use crate::operator::{key::OperatorKey, pin::Secret};

/// DER of OID 1.3.132.0.10 (secp256k1), as `CKA_EC_PARAMS`.
const SECP256K1_PARAMS: &[u8] = &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x0A];
/// DER of OID 1.3.101.112 (Ed25519), as `CKA_EC_PARAMS`.
const ED25519_OID_PARAMS: &[u8] = &[0x06, 0x03, 0x2B, 0x65, 0x70];
/// PrintableString "edwards25519", the other accepted `CKA_EC_PARAMS` for Ed25519.
const ED25519_NAME_PARAMS: &[u8] = b"\x13\x0cedwards25519";

/// Where the key is: module, token label, key label.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Path of the PKCS#11 module (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// Label of the token holding the key.
    pub token: String,
    /// `CKA_LABEL` of the key pair.
    pub key_label: String,
    /// Algorithm used when `init` generates the key.
    pub key_type: Algorithm,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("PKCS#11 module {0} does not exist; install it (e.g. `apt install softhsm2`) or fix --module")]
    ModuleMissing(PathBuf),
    #[error("cannot load PKCS#11 module {path}: {reason}; check that it is a PKCS#11 library for this machine")]
    ModuleLoad { path: PathBuf, reason: String },
    #[error("no token labelled `{label}` in {module} (tokens present: {present}); check --token or initialise the token")]
    TokenNotFound {
        label: String,
        module: PathBuf,
        present: String,
    },
    #[error("wrong PIN for token `{token}`: {tries}; Roost does not retry a PIN, run the command again with the right one")]
    WrongPin { token: String, tries: String },
    #[error("the user PIN of token `{0}` is locked; unlock it with the security officer PIN (e.g. `softhsm2-util` or the HSM's tools)")]
    PinLocked(String),
    #[error("no private key labelled `{label}` on token `{token}`; check --key-label or create it with `roost operator init --backend pkcs11`")]
    KeyNotFound { label: String, token: String },
    #[error("{count} private keys are labelled `{label}` on token `{token}`; give the operator key a label of its own")]
    AmbiguousKey {
        label: String,
        token: String,
        count: usize,
    },
    #[error("key `{label}` on token `{token}` has no public key object with the same label; Roost needs it to know the operator public key")]
    PublicKeyMissing { label: String, token: String },
    #[error("key `{label}` is not a secp256k1 or Ed25519 key ({what}); operator keys must be one of those")]
    UnsupportedKey { label: String, what: String },
    #[error("token `{token}` does not offer {mechanism}, which {algorithm} keys need")]
    MechanismMissing {
        token: String,
        mechanism: &'static str,
        algorithm: &'static str,
    },
    #[error("the token `{0}` was removed or stopped answering; nothing was signed")]
    TokenGone(String),
    #[error("PKCS#11 {operation} failed on token `{token}`: {error}")]
    Call {
        operation: &'static str,
        token: String,
        error: String,
    },
}

/// A logged-in session on the token with the operator key found.
pub struct Pkcs11Signer {
    // Field order matters: the session must close before the library is finalised.
    session: Session,
    _ctx: Pkcs11,
    key: ObjectHandle,
    public: OperatorKey,
    algorithm: Algorithm,
    token: String,
}

impl std::fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Signer")
            .field("token", &self.token)
            .field("public", &self.public)
            .finish()
    }
}

impl Pkcs11Signer {
    /// Logs in to the token and finds the key; fails if it does not exist. The PIN is asked for
    /// once the token was found.
    pub fn open(
        config: &Config,
        pin: impl FnOnce() -> Result<Secret, SignerError>,
    ) -> Result<Self, SignerError> {
        Self::open_inner(config, pin, false).map(|(signer, _)| signer)
    }

    /// Logs in and finds the key, generating it on the token if there is none. Returns whether
    /// the key was created.
    pub fn open_or_create(
        config: &Config,
        pin: impl FnOnce() -> Result<Secret, SignerError>,
    ) -> Result<(Self, bool), SignerError> {
        Self::open_inner(config, pin, true)
    }

    fn open_inner(
        config: &Config,
        pin: impl FnOnce() -> Result<Secret, SignerError>,
        create: bool,
    ) -> Result<(Self, bool), SignerError> {
        let token = config.token.clone();
        let call = |operation: &'static str| {
            let token = token.clone();
            move |e: CkError| map_error(operation, &token, e)
        };
        let ctx = load(&config.module)?;
        let slot = find_slot(&ctx, &config.module, &config.token)?;
        let session = if create {
            ctx.open_rw_session(slot)
        } else {
            ctx.open_ro_session(slot)
        }
        .map_err(call("C_OpenSession"))?;
        let pin = pin()?;
        login(&ctx, slot, &session, &config.token, &pin)?;

        let mut created = false;
        let key = match find_one(
            &session,
            ObjectClass::PRIVATE_KEY,
            &config.key_label,
            &config.token,
        )? {
            Some(key) => key,
            None if create => {
                check_mechanisms(&ctx, slot, &config.token, config.key_type)?;
                generate(&session, &config.key_label, config.key_type)
                    .map_err(call("C_GenerateKeyPair"))?;
                created = true;
                find_one(
                    &session,
                    ObjectClass::PRIVATE_KEY,
                    &config.key_label,
                    &config.token,
                )?
                .ok_or_else(|| Error::KeyNotFound {
                    label: config.key_label.clone(),
                    token: config.token.clone(),
                })?
            }
            None => {
                return Err(Error::KeyNotFound {
                    label: config.key_label.clone(),
                    token: config.token.clone(),
                }
                .into())
            }
        };
        let (public, algorithm) = read_public_key(&session, &config.key_label, &config.token)?;
        if !created {
            check_mechanisms(&ctx, slot, &config.token, algorithm)?;
        }
        Ok((
            Pkcs11Signer {
                session,
                _ctx: ctx,
                key,
                public,
                algorithm,
                token: config.token.clone(),
            },
            created,
        ))
    }
}

impl Signer for Pkcs11Signer {
    fn public_key(&self) -> &OperatorKey {
        &self.public
    }

    fn key_storage(&self) -> KeyStorage {
        KeyStorage::Pkcs11
    }

    fn sign(&mut self, message: &[u8]) -> Result<Vec<u8>, SignerError> {
        let token = self.token.clone();
        match self.algorithm {
            Algorithm::Secp256k1 => {
                let digest = Sha256::digest(message);
                let raw = self
                    .session
                    .sign(&Mechanism::Ecdsa, self.key, &digest)
                    .map_err(|e| map_error("C_Sign (ECDSA)", &token, e))?;
                secp256k1_libp2p_signature(&raw)
            }
            Algorithm::Ed25519 => {
                let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Ed25519));
                Ok(self
                    .session
                    .sign(&mechanism, self.key, message)
                    .map_err(|e| map_error("C_Sign (EdDSA)", &token, e))?)
            }
        }
    }

    fn sign_prehash(&mut self, prehash: &[u8; 32]) -> Result<Vec<u8>, SignerError> {
        match self.algorithm {
            // CKM_ECDSA signs the bytes given as the digest: exactly a prehash signature.
            Algorithm::Secp256k1 => Ok(self
                .session
                .sign(&Mechanism::Ecdsa, self.key, prehash)
                .map_err(|e| map_error("C_Sign (ECDSA)", &self.token, e))?),
            Algorithm::Ed25519 => Err(SignerError::NotSecp256k1),
        }
    }
}

fn load(module: &Path) -> Result<Pkcs11, Error> {
    if !module.exists() {
        return Err(Error::ModuleMissing(module.to_owned()));
    }
    let ctx = Pkcs11::new(module).map_err(|e| Error::ModuleLoad {
        path: module.to_owned(),
        reason: e.to_string(),
    })?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| Error::ModuleLoad {
            path: module.to_owned(),
            reason: format!("C_Initialize: {e}"),
        })?;
    Ok(ctx)
}

fn find_slot(ctx: &Pkcs11, module: &Path, label: &str) -> Result<Slot, Error> {
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| map_error("C_GetSlotList", label, e))?;
    let mut present = Vec::new();
    for slot in slots {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        let token_label = info.label().trim_end().to_owned();
        if token_label == label {
            return Ok(slot);
        }
        present.push(format!("`{token_label}`"));
    }
    Err(Error::TokenNotFound {
        label: label.to_owned(),
        module: module.to_owned(),
        present: if present.is_empty() {
            "none".into()
        } else {
            present.join(", ")
        },
    })
}

fn login(
    ctx: &Pkcs11,
    slot: Slot,
    session: &Session,
    token: &str,
    pin: &Secret,
) -> Result<(), Error> {
    let auth = AuthPin::new(pin.as_str().into());
    match session.login(UserType::User, Some(&auth)) {
        Ok(()) => Ok(()),
        Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(Error::PinLocked(token.to_owned())),
        Err(CkError::Pkcs11(
            RvError::PinIncorrect | RvError::PinLenRange | RvError::PinInvalid,
            _,
        )) => {
            // PKCS#11 has no try counter, only flags; report what the token says.
            let tries = match ctx.get_token_info(slot) {
                Ok(info) if info.user_pin_locked() => {
                    return Err(Error::PinLocked(token.to_owned()))
                }
                Ok(info) if info.user_pin_final_try() => {
                    "one try is left before the PIN locks".to_owned()
                }
                Ok(info) if info.user_pin_count_low() => {
                    "few tries are left before the PIN locks".to_owned()
                }
                _ => "the token does not say how many tries remain".to_owned(),
            };
            Err(Error::WrongPin {
                token: token.to_owned(),
                tries,
            })
        }
        Err(e) => Err(map_error("C_Login", token, e)),
    }
}

fn find_one(
    session: &Session,
    class: ObjectClass,
    label: &str,
    token: &str,
) -> Result<Option<ObjectHandle>, Error> {
    let found = session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| map_error("C_FindObjects", token, e))?;
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.first().copied()),
        count => Err(Error::AmbiguousKey {
            label: label.to_owned(),
            token: token.to_owned(),
            count,
        }),
    }
}

fn check_mechanisms(
    ctx: &Pkcs11,
    slot: Slot,
    token: &str,
    algorithm: Algorithm,
) -> Result<(), Error> {
    let mechanisms = ctx
        .get_mechanism_list(slot)
        .map_err(|e| map_error("C_GetMechanismList", token, e))?;
    let needed: &[(MechanismType, &'static str)] = match algorithm {
        Algorithm::Secp256k1 => &[(MechanismType::ECDSA, "CKM_ECDSA")],
        Algorithm::Ed25519 => &[(MechanismType::EDDSA, "CKM_EDDSA")],
    };
    for (mechanism, name) in needed {
        if !mechanisms.contains(mechanism) {
            return Err(Error::MechanismMissing {
                token: token.to_owned(),
                mechanism: name,
                algorithm: algorithm.as_str(),
            });
        }
    }
    Ok(())
}

fn generate(session: &Session, label: &str, algorithm: Algorithm) -> Result<(), CkError> {
    let id: [u8; 8] = rand::random();
    let (mechanism, params) = match algorithm {
        Algorithm::Secp256k1 => (Mechanism::EccKeyPairGen, SECP256K1_PARAMS),
        Algorithm::Ed25519 => (Mechanism::EccEdwardsKeyPairGen, ED25519_NAME_PARAMS),
    };
    let public = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::EcParams(params.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sign(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    session.generate_key_pair(&mechanism, &public, &private)?;
    Ok(())
}

fn read_public_key(
    session: &Session,
    label: &str,
    token: &str,
) -> Result<(OperatorKey, Algorithm), Error> {
    let handle = find_one(session, ObjectClass::PUBLIC_KEY, label, token)?.ok_or_else(|| {
        Error::PublicKeyMissing {
            label: label.to_owned(),
            token: token.to_owned(),
        }
    })?;
    let attributes = session
        .get_attributes(
            handle,
            &[
                AttributeType::KeyType,
                AttributeType::EcParams,
                AttributeType::EcPoint,
            ],
        )
        .map_err(|e| map_error("C_GetAttributeValue", token, e))?;
    let mut key_type = None;
    let mut params = Vec::new();
    let mut point = Vec::new();
    for attribute in attributes {
        match attribute {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::EcParams(p) => params = p,
            Attribute::EcPoint(p) => point = p,
            _ => {}
        }
    }
    let unsupported = |what: String| Error::UnsupportedKey {
        label: label.to_owned(),
        what,
    };
    let public = public_key_from_attributes(key_type, &params, &point).map_err(unsupported)?;
    let algorithm = match public.key_type() {
        libp2p::identity::KeyType::Ed25519 => Algorithm::Ed25519,
        _ => Algorithm::Secp256k1,
    };
    let key = OperatorKey::new(public).map_err(|e| Error::UnsupportedKey {
        label: label.to_owned(),
        what: e.to_string(),
    })?;
    Ok((key, algorithm))
}

/// The libp2p public key of an EC public key object.
fn public_key_from_attributes(
    key_type: Option<KeyType>,
    params: &[u8],
    point: &[u8],
) -> Result<PublicKey, String> {
    let is_ed25519 = params == ED25519_OID_PARAMS || params == ED25519_NAME_PARAMS;
    let is_secp256k1 = params == SECP256K1_PARAMS;
    match key_type {
        Some(t) if t == KeyType::EC && is_secp256k1 => {
            let raw = unwrap_octet_string(point, 65);
            let key = k256::PublicKey::from_sec1_bytes(raw)
                .map_err(|e| format!("bad secp256k1 point: {e}"))?;
            let compressed = k256::elliptic_curve::sec1::ToSec1Point::to_sec1_point(&key, true);
            secp256k1::PublicKey::try_from_bytes(compressed.as_bytes())
                .map(PublicKey::from)
                .map_err(|e| format!("bad secp256k1 point: {e}"))
        }
        Some(t) if (t == KeyType::EC_EDWARDS || t == KeyType::EC) && is_ed25519 => {
            let raw = unwrap_octet_string(point, 32);
            ed25519::PublicKey::try_from_bytes(raw)
                .map(PublicKey::from)
                .map_err(|e| format!("bad Ed25519 point: {e}"))
        }
        Some(t) => Err(format!(
            "key type {t}, curve parameters {}",
            hex::encode(params)
        )),
        None => Err("the token does not report its key type".into()),
    }
}

/// `CKA_EC_POINT` is a DER OCTET STRING holding the point; some tokens return the bare point.
fn unwrap_octet_string(value: &[u8], bare_len: usize) -> &[u8] {
    if value.len() == bare_len {
        return value;
    }
    match value {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() && *len < 0x80 => rest,
        [0x04, 0x81, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
        _ => value,
    }
}

fn map_error(operation: &'static str, token: &str, error: CkError) -> Error {
    match error {
        CkError::Pkcs11(
            RvError::TokenNotPresent
            | RvError::DeviceRemoved
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed,
            _,
        ) => Error::TokenGone(token.to_owned()),
        other => Error::Call {
            operation,
            token: token.to_owned(),
            error: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_point_attributes_become_libp2p_keys() {
        let secp = libp2p::identity::Keypair::generate_secp256k1();
        let uncompressed = secp
            .public()
            .try_into_secp256k1()
            .unwrap()
            .to_bytes_uncompressed();
        let mut der = vec![0x04, 0x41];
        der.extend_from_slice(&uncompressed);
        for point in [&der[..], &uncompressed[..]] {
            let key =
                public_key_from_attributes(Some(KeyType::EC), SECP256K1_PARAMS, point).unwrap();
            assert_eq!(key, secp.public());
        }

        let ed = libp2p::identity::Keypair::generate_ed25519();
        let raw = ed.public().try_into_ed25519().unwrap().to_bytes();
        let mut der = vec![0x04, 0x20];
        der.extend_from_slice(&raw);
        for params in [ED25519_OID_PARAMS, ED25519_NAME_PARAMS] {
            let key = public_key_from_attributes(Some(KeyType::EC_EDWARDS), params, &der).unwrap();
            assert_eq!(key, ed.public());
        }

        // P-256 (prime256v1) is refused with the reason.
        let p256 = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
        assert!(public_key_from_attributes(Some(KeyType::EC), &p256, &der).is_err());
    }

    #[test]
    fn a_missing_module_is_one_clear_error() {
        let e = load(Path::new("/nonexistent/libpkcs11.so")).unwrap_err();
        assert!(matches!(e, Error::ModuleMissing(_)));
        assert!(e.to_string().contains("--module"));
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake.so");
        std::fs::write(&fake, b"not a library").unwrap();
        assert!(matches!(load(&fake), Err(Error::ModuleLoad { .. })));
    }
}
