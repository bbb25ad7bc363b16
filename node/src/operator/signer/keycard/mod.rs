//! The `keycard` backend: an operator key on a Status Keycard (applet v2/v3, secure channel v1),
//! reached through PC/SC.
//!
//! Session: SELECT → OPEN SECURE CHANNEL with the stored pairing → MUTUALLY AUTHENTICATE →
//! VERIFY PIN (once; never retried) → EXPORT KEY (public, at the operator path) → SIGN. `init`
//! pairs first (PAIR with the pairing password, stored as slot index and pairing key) and
//! generates a key on the card if it has none.
//!
//! The key is derived on the card at [`DEFAULT_PATH`], outside the EIP-1581 subtree, so the card
//! refuses to ever export its private part. The card signs a SHA-256 digest with low-S DER ECDSA,
//! which is exactly what libp2p verifies for secp256k1 keys.

pub mod apdu;
pub mod channel;
pub mod transport;

use libp2p::identity::{secp256k1, PublicKey};

use self::{
    apdu::{Command, Response},
    channel::SecureChannel,
    transport::{PcscTransport, Transport},
};
use super::{secp256k1_libp2p_signature, Signer, SignerError};
use crate::operator::{key::OperatorKey, pin::Secret, signer::KeyStorage};

/// Instance AID of the Keycard applet (applet AID || instance 1).
pub const KEYCARD_AID: &[u8] = &[0xA0, 0x00, 0x00, 0x08, 0x04, 0x00, 0x01, 0x01, 0x01];
/// Where the operator key lives on the card: a purpose of its own, outside EIP-1581.
pub const DEFAULT_PATH: &str = "m/1947'/0'/0'";

const CLA: u8 = 0x80;
const INS_SELECT: u8 = 0xA4;
const INS_OPEN_SECURE_CHANNEL: u8 = 0x10;
const INS_MUTUALLY_AUTHENTICATE: u8 = 0x11;
const INS_PAIR: u8 = 0x12;
const INS_VERIFY_PIN: u8 = 0x20;
const INS_SIGN: u8 = 0xC0;
const INS_EXPORT_KEY: u8 = 0xC2;
const INS_GENERATE_KEY: u8 = 0xD4;

/// Where the key is and how to reach it, as `roost operator init` records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Part of the reader name to use; empty: the first reader holding a card.
    #[serde(default)]
    pub reader: String,
    /// BIP32 path of the operator key on the card.
    pub path: String,
    /// Instance UID of the paired card (hex), to tell cards apart.
    pub instance_uid: String,
    /// Pairing slot on the card.
    pub pairing_index: u8,
    /// Pairing key (hex, secret: whoever has it and the PIN can use the card).
    pub pairing_key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pcscd is not running (no PC/SC service); start it (e.g. `systemctl start pcscd.socket`) and try again")]
    NoService,
    #[error("no smart-card reader found; connect the reader (pcscd sees none)")]
    NoReaders,
    #[error("no reader matching `{wanted}` (readers: {present}); fix --reader")]
    ReaderNotFound { wanted: String, present: String },
    #[error("no card in reader {0}; insert the Keycard and try again")]
    CardAbsent(String),
    #[error("the card in reader `{0}` was removed or stopped answering during the operation; nothing was signed, insert it and run the command again")]
    CardRemoved(String),
    #[error("the card is not a Keycard (it has no Keycard applet)")]
    NotKeycard,
    #[error("the Keycard is not initialised (no PIN set yet); initialise it with keycard-cli or the Status app first")]
    NotInitialized,
    #[error("Keycard applet version {0}.{1} uses a secure channel Roost does not speak (it supports versions 2.x and 3.x)")]
    UnsupportedVersion(u8, u8),
    #[error("this is not the paired Keycard (instance {got}, the profile was paired with {expected}); insert that card or run `roost operator init --backend keycard` again")]
    WrongCard { expected: String, got: String },
    #[error("the pairing password is wrong (the card's answer does not match it)")]
    PairingRejected,
    #[error("the Keycard has no free pairing slot; unpair an old client (keycard-cli) first")]
    NoFreePairingSlot,
    #[error("pairing slot {0} is empty on this card (unpaired or the card was reset); run `roost operator init --backend keycard` again")]
    PairingGone(u8),
    #[error("the stored pairing key does not open a secure channel with this card; run `roost operator init --backend keycard` again")]
    PairingKeyMismatch,
    #[error("wrong PIN; {} left before the card blocks the PIN (Roost never retries a PIN by itself)", tries(*.0))]
    WrongPin(u8),
    #[error("the PIN is blocked after too many wrong tries; unblock it with the PUK (keycard-cli) first")]
    PinBlocked,
    #[error("a Keycard PIN is 6 digits")]
    PinFormat,
    #[error(
        "the Keycard holds no key; run `roost operator init --backend keycard` to generate one"
    )]
    NoKey,
    #[error("`{0}` is not a derivation path; write e.g. m/1947'/0'/0'")]
    BadPath(String),
    #[error("the card answered {command} with status {sw:04X} ({meaning})")]
    Status {
        command: &'static str,
        sw: u16,
        meaning: &'static str,
    },
    #[error("unexpected answer from the card to {0}")]
    BadResponse(&'static str),
    #[error("the profile's pairing key is not 32 bytes of hex; run `roost operator init --backend keycard` again")]
    BadPairingKey,
    #[error("PC/SC: {0}")]
    Pcsc(String),
}

fn tries(n: u8) -> String {
    if n == 1 {
        "1 try".into()
    } else {
        format!("{n} tries")
    }
}

/// What SELECT says about the applet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppInfo {
    pub instance_uid: Vec<u8>,
    pub sc_public: Vec<u8>,
    pub version: (u8, u8),
    pub free_pairing_slots: u8,
    pub key_loaded: bool,
}

/// A conversation with one card.
pub struct Session<T: Transport> {
    transport: T,
    pub info: AppInfo,
    channel: Option<SecureChannel>,
}

impl<T: Transport> Session<T> {
    /// Selects the Keycard applet.
    pub fn select(mut transport: T) -> Result<Self, Error> {
        let raw = transport.transmit(
            &Command::new(0x00, INS_SELECT, 0x04, 0x00, KEYCARD_AID.to_vec()).to_bytes(),
        )?;
        let response = Response::parse(&raw).ok_or(Error::BadResponse("SELECT"))?;
        if response.sw == apdu::SW_FILE_NOT_FOUND {
            return Err(Error::NotKeycard);
        }
        check("SELECT", &response)?;
        let info = parse_select(&response.data)?;
        Ok(Session {
            transport,
            info,
            channel: None,
        })
    }

    /// Pairs with the card; returns the slot index and the pairing key.
    pub fn pair(&mut self, password: &str) -> Result<(u8, [u8; 32]), Error> {
        let secret = channel::pairing_secret(password);
        let challenge: [u8; 32] = rand::random();
        let r = self.plain(Command::new(CLA, INS_PAIR, 0x00, 0x00, challenge.to_vec()))?;
        if r.sw == apdu::SW_FILE_FULL {
            return Err(Error::NoFreePairingSlot);
        }
        check("PAIR", &r)?;
        let (card_cryptogram, card_challenge) = r
            .data
            .split_at_checked(32)
            .filter(|(_, c)| c.len() == 32)
            .ok_or(Error::BadResponse("PAIR"))?;
        if channel::sha256(&[&secret[..], &challenge]) != card_cryptogram {
            return Err(Error::PairingRejected);
        }
        let cryptogram = channel::sha256(&[&secret[..], card_challenge]);
        let r = self.plain(Command::new(CLA, INS_PAIR, 0x01, 0x00, cryptogram.to_vec()))?;
        if r.sw == apdu::SW_SECURITY_STATUS_NOT_SATISFIED {
            return Err(Error::PairingRejected);
        }
        check("PAIR", &r)?;
        let (index, salt) = r
            .data
            .split_first()
            .filter(|(_, salt)| salt.len() == 32)
            .ok_or(Error::BadResponse("PAIR"))?;
        Ok((*index, channel::sha256(&[&secret[..], salt])))
    }

    /// Opens the secure channel with a stored pairing and authenticates both sides.
    pub fn open_secure_channel(&mut self, index: u8, pairing_key: &[u8; 32]) -> Result<(), Error> {
        let card_key = k256::PublicKey::from_sec1_bytes(&self.info.sc_public)
            .map_err(|_| Error::BadResponse("SELECT (secure channel key)"))?;
        let ephemeral = random_secret_key();
        let ours =
            k256::elliptic_curve::sec1::ToSec1Point::to_sec1_point(&ephemeral.public_key(), false);
        let r = self.plain(Command::new(
            CLA,
            INS_OPEN_SECURE_CHANNEL,
            index,
            0x00,
            ours.as_bytes().to_vec(),
        ))?;
        if r.sw == apdu::SW_INCORRECT_P1P2 {
            return Err(Error::PairingGone(index));
        }
        check("OPEN SECURE CHANNEL", &r)?;
        if r.data.len() != 48 {
            return Err(Error::BadResponse("OPEN SECURE CHANNEL"));
        }
        let shared = ephemeral.diffie_hellman(&card_key);
        let (salt, iv) = r.data.split_at(32);
        let mut seed_iv = [0u8; 16];
        seed_iv.copy_from_slice(iv);
        self.channel = Some(SecureChannel::new(
            shared.raw_secret_bytes(),
            pairing_key,
            salt,
            seed_iv,
        ));
        let challenge: [u8; 32] = rand::random();
        let r = self.secure(Command::new(
            CLA,
            INS_MUTUALLY_AUTHENTICATE,
            0x00,
            0x00,
            challenge.to_vec(),
        ));
        match r {
            Ok(r) if r.is_ok() && r.data.len() == 32 => Ok(()),
            Ok(r) if r.sw == apdu::SW_SECURITY_STATUS_NOT_SATISFIED => {
                self.channel = None;
                Err(Error::PairingKeyMismatch)
            }
            Ok(r) => {
                self.channel = None;
                Err(status("MUTUALLY AUTHENTICATE", r.sw))
            }
            Err(Error::BadResponse(_)) => {
                self.channel = None;
                Err(Error::PairingKeyMismatch)
            }
            Err(e) => Err(e),
        }
    }

    /// Verifies the PIN, once.
    pub fn verify_pin(&mut self, pin: &str) -> Result<(), Error> {
        if pin.len() != 6 || !pin.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::PinFormat);
        }
        let r = self.secure(Command::new(
            CLA,
            INS_VERIFY_PIN,
            0x00,
            0x00,
            pin.as_bytes().to_vec(),
        ))?;
        match r.sw {
            apdu::SW_OK => Ok(()),
            0x63C0 => Err(Error::PinBlocked),
            sw if sw & 0xFFF0 == 0x63C0 => Err(Error::WrongPin((sw & 0x000F) as u8)),
            sw => Err(status("VERIFY PIN", sw)),
        }
    }

    /// Generates a new master key on the card (GENERATE KEY); returns its key UID.
    pub fn generate_key(&mut self) -> Result<Vec<u8>, Error> {
        let r = self.secure(Command::new(CLA, INS_GENERATE_KEY, 0x00, 0x00, Vec::new()))?;
        check("GENERATE KEY", &r)?;
        self.info.key_loaded = true;
        Ok(r.data)
    }

    /// The uncompressed public key at `path` (EXPORT KEY, public only).
    pub fn export_public_key(&mut self, path: &[u32]) -> Result<Vec<u8>, Error> {
        let r = self.secure(Command::new(
            CLA,
            INS_EXPORT_KEY,
            0x01,
            0x01,
            encode_path(path),
        ))?;
        if r.sw == apdu::SW_CONDITIONS_NOT_SATISFIED && !self.info.key_loaded {
            return Err(Error::NoKey);
        }
        check("EXPORT KEY", &r)?;
        let template = apdu::find(&r.data, 0xA1).ok_or(Error::BadResponse("EXPORT KEY"))?;
        let public = apdu::find(template, 0x80).ok_or(Error::BadResponse("EXPORT KEY"))?;
        Ok(public.to_vec())
    }

    /// Signs a 32-byte digest with the key at `path`; returns (public key, DER signature).
    pub fn sign(&mut self, digest: &[u8; 32], path: &[u32]) -> Result<(Vec<u8>, Vec<u8>), Error> {
        let mut data = digest.to_vec();
        data.extend_from_slice(&encode_path(path));
        let r = self.secure(Command::new(CLA, INS_SIGN, 0x01, 0x00, data))?;
        if r.sw == apdu::SW_CONDITIONS_NOT_SATISFIED && !self.info.key_loaded {
            return Err(Error::NoKey);
        }
        check("SIGN", &r)?;
        let template = apdu::find(&r.data, 0xA0).ok_or(Error::BadResponse("SIGN"))?;
        let tlvs = apdu::read_all(template);
        let public = tlvs
            .iter()
            .find(|t| t.tag == 0x80)
            .ok_or(Error::BadResponse("SIGN"))?;
        let signature = tlvs
            .iter()
            .find(|t| t.tag == 0x30)
            .ok_or(Error::BadResponse("SIGN"))?;
        // Re-wrap the signature's own SEQUENCE header: the TLV reader gave only its contents.
        let mut der = vec![0x30];
        if signature.value.len() < 0x80 {
            der.push(signature.value.len() as u8);
        } else {
            der.extend_from_slice(&[0x81, signature.value.len() as u8]);
        }
        der.extend_from_slice(signature.value);
        Ok((public.value.to_vec(), der))
    }

    fn plain(&mut self, command: Command) -> Result<Response, Error> {
        let raw = self.transport.transmit(&command.to_bytes())?;
        Response::parse(&raw).ok_or(Error::BadResponse("a command"))
    }

    /// Sends a command through the secure channel. A failing command comes back as a plain
    /// status word with no data (the card does not wrap errors).
    fn secure(&mut self, command: Command) -> Result<Response, Error> {
        let channel = self
            .channel
            .as_mut()
            .ok_or(Error::BadResponse("a command before the secure channel"))?;
        let data = channel.wrap(
            command.cla,
            command.ins,
            command.p1,
            command.p2,
            &command.data,
        );
        let wrapped = Command::new(command.cla, command.ins, command.p1, command.p2, data);
        let raw = self.transport.transmit(&wrapped.to_bytes())?;
        let outer = Response::parse(&raw).ok_or(Error::BadResponse("a secured command"))?;
        if !outer.is_ok() {
            if outer.sw == apdu::SW_SECURITY_STATUS_NOT_SATISFIED {
                // The card failed our MAC and dropped the channel.
                self.channel = None;
            }
            return Ok(outer);
        }
        let plain = channel
            .unwrap(&outer.data)
            .map_err(|_| Error::BadResponse("a secured command (bad MAC)"))?;
        Response::parse(&plain).ok_or(Error::BadResponse("a secured command"))
    }
}

fn check(command: &'static str, response: &Response) -> Result<(), Error> {
    if response.is_ok() {
        Ok(())
    } else {
        Err(status(command, response.sw))
    }
}

fn status(command: &'static str, sw: u16) -> Error {
    Error::Status {
        command,
        sw,
        meaning: apdu::describe_sw(sw),
    }
}

fn parse_select(data: &[u8]) -> Result<AppInfo, Error> {
    if data.first() == Some(&0x80) {
        // A pre-initialised applet answers with its bare secure-channel key.
        return Err(Error::NotInitialized);
    }
    let template = apdu::find(data, 0xA4).ok_or(Error::BadResponse("SELECT"))?;
    let tlvs = apdu::read_all(template);
    let value = |tag: u8, nth: usize| {
        tlvs.iter()
            .filter(|t| t.tag == tag)
            .nth(nth)
            .map(|t| t.value)
    };
    let uid = value(0x8F, 0).ok_or(Error::BadResponse("SELECT"))?;
    let sc_public = value(0x80, 0).ok_or(Error::BadResponse("SELECT"))?;
    let version = match value(0x02, 0) {
        Some([major, minor]) => (*major, *minor),
        _ => return Err(Error::BadResponse("SELECT")),
    };
    if !(2..=3).contains(&version.0) {
        return Err(Error::UnsupportedVersion(version.0, version.1));
    }
    let free = match value(0x02, 1) {
        Some([n]) => *n,
        _ => 0,
    };
    let key_loaded = value(0x8E, 0).is_some_and(|k| !k.is_empty());
    if sc_public.len() != 65 {
        return Err(Error::BadResponse("SELECT (secure channel key)"));
    }
    Ok(AppInfo {
        instance_uid: uid.to_vec(),
        sc_public: sc_public.to_vec(),
        version,
        free_pairing_slots: free,
        key_loaded,
    })
}

/// Parses `m/44'/60'/0'/0/0` (`'` or `h` marks hardened steps).
pub fn parse_path(text: &str) -> Result<Vec<u32>, Error> {
    let bad = || Error::BadPath(text.to_owned());
    let mut parts = text.trim().split('/');
    if parts.next() != Some("m") {
        return Err(bad());
    }
    let mut path = Vec::new();
    for part in parts {
        let (number, hardened) = match part.strip_suffix('\'').or_else(|| part.strip_suffix('h')) {
            Some(n) => (n, true),
            None => (part, false),
        };
        let n: u32 = number.parse().map_err(|_| bad())?;
        if n >= 0x8000_0000 {
            return Err(bad());
        }
        path.push(if hardened { n | 0x8000_0000 } else { n });
    }
    if path.len() > 10 {
        return Err(bad());
    }
    Ok(path)
}

fn encode_path(path: &[u32]) -> Vec<u8> {
    path.iter().flat_map(|i| i.to_be_bytes()).collect()
}

fn random_secret_key() -> k256::SecretKey {
    loop {
        let bytes: [u8; 32] = rand::random();
        if let Ok(key) = k256::SecretKey::from_slice(&bytes) {
            return key;
        }
    }
}

/// The operator key of an uncompressed secp256k1 point.
fn operator_key(uncompressed: &[u8]) -> Result<OperatorKey, Error> {
    let key = k256::PublicKey::from_sec1_bytes(uncompressed)
        .map_err(|_| Error::BadResponse("EXPORT KEY (not a secp256k1 point)"))?;
    let compressed = k256::elliptic_curve::sec1::ToSec1Point::to_sec1_point(&key, true);
    let public = secp256k1::PublicKey::try_from_bytes(compressed.as_bytes())
        .map_err(|_| Error::BadResponse("EXPORT KEY (not a secp256k1 point)"))?;
    OperatorKey::new(PublicKey::from(public))
        .map_err(|_| Error::BadResponse("EXPORT KEY (not a secp256k1 point)"))
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, Error> {
        (**self).transmit(apdu)
    }
}

/// A Keycard with the secure channel open and the PIN verified.
pub struct KeycardSigner {
    session: Session<Box<dyn Transport>>,
    path: Vec<u32>,
    public: OperatorKey,
}

impl KeycardSigner {
    /// Connects through pcscd and unlocks the card of `config`; the PIN is asked for once a
    /// card is found.
    pub fn open(
        config: &Config,
        pin: impl FnOnce() -> Result<Secret, SignerError>,
    ) -> Result<Self, SignerError> {
        let transport = PcscTransport::connect(&config.reader)?;
        let pin = pin()?;
        Ok(Self::open_with(Box::new(transport), config, &pin)?)
    }

    /// Pairs and unlocks the card in the reader matching `reader` (see [`Self::init`]).
    pub fn init_pcsc(
        reader: &str,
        path: &str,
        existing: Option<&Config>,
        password: impl FnOnce() -> Result<Secret, SignerError>,
        pin: impl FnOnce() -> Result<Secret, SignerError>,
    ) -> Result<(Self, Config, bool), SignerError> {
        let transport = PcscTransport::connect(reader)?;
        Self::init(Box::new(transport), reader, path, existing, password, pin)
    }

    /// As [`Self::open`], over any transport.
    pub fn open_with(
        transport: Box<dyn Transport>,
        config: &Config,
        pin: &Secret,
    ) -> Result<Self, Error> {
        let path = parse_path(&config.path)?;
        let pairing_key = decode_pairing_key(&config.pairing_key)?;
        let mut session = Session::select(transport)?;
        let uid = hex::encode(&session.info.instance_uid);
        if uid != config.instance_uid {
            return Err(Error::WrongCard {
                expected: config.instance_uid.clone(),
                got: uid,
            });
        }
        session.open_secure_channel(config.pairing_index, &pairing_key)?;
        session.verify_pin(pin)?;
        if !session.info.key_loaded {
            return Err(Error::NoKey);
        }
        let public = operator_key(&session.export_public_key(&path)?)?;
        Ok(KeycardSigner {
            session,
            path,
            public,
        })
    }

    /// Pairs with the card (unless `existing` still works with it), unlocks it, generates a key
    /// if the card has none and exports the operator public key. Returns the signer, the config
    /// to store and whether a key was generated. The password and PIN are asked for only when
    /// needed, and each at most once.
    pub fn init(
        transport: Box<dyn Transport>,
        reader: &str,
        path: &str,
        existing: Option<&Config>,
        password: impl FnOnce() -> Result<Secret, SignerError>,
        pin: impl FnOnce() -> Result<Secret, SignerError>,
    ) -> Result<(Self, Config, bool), SignerError> {
        let parsed_path = parse_path(path)?;
        let mut session = Session::select(transport)?;
        let uid = hex::encode(&session.info.instance_uid);
        let reusable = existing
            .filter(|c| c.instance_uid == uid)
            .and_then(|c| Some((c.pairing_index, decode_pairing_key(&c.pairing_key).ok()?)));
        let mut paired = None;
        if let Some((index, key)) = reusable {
            match session.open_secure_channel(index, &key) {
                Ok(()) => paired = Some((index, key)),
                Err(Error::PairingGone(_) | Error::PairingKeyMismatch) => {
                    tracing::info!(
                        "the stored pairing no longer works with this card; pairing again"
                    );
                    // The card dropped the half-open channel: select again before pairing.
                    session = Session::select(session.transport)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let (index, key) = match paired {
            Some(p) => p,
            None => {
                let password = password()?;
                let (index, key) = session.pair(&password)?;
                session.open_secure_channel(index, &key)?;
                (index, key)
            }
        };
        let pin = pin()?;
        session.verify_pin(&pin)?;
        let mut created = false;
        if !session.info.key_loaded {
            session.generate_key()?;
            created = true;
        }
        let public = operator_key(&session.export_public_key(&parsed_path)?)?;
        let config = Config {
            reader: reader.to_owned(),
            path: path.to_owned(),
            instance_uid: uid,
            pairing_index: index,
            pairing_key: hex::encode(key),
        };
        Ok((
            KeycardSigner {
                session,
                path: parsed_path,
                public,
            },
            config,
            created,
        ))
    }
}

fn decode_pairing_key(text: &str) -> Result<[u8; 32], Error> {
    hex::decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or(Error::BadPairingKey)
}

impl Signer for KeycardSigner {
    fn public_key(&self) -> &OperatorKey {
        &self.public
    }

    fn key_storage(&self) -> KeyStorage {
        KeyStorage::Keycard
    }

    fn sign(&mut self, message: &[u8]) -> Result<Vec<u8>, SignerError> {
        let digest = channel::sha256(&[message]);
        let (public, der) = self.session.sign(&digest, &self.path)?;
        if operator_key(&public)? != self.public {
            return Err(SignerError::BadSignature(
                "the card signed with another key than the one it exported".into(),
            ));
        }
        secp256k1_libp2p_signature(&der)
    }

    fn sign_prehash(&mut self, prehash: &[u8; 32]) -> Result<Vec<u8>, SignerError> {
        // SIGN takes the 32-byte digest as it is.
        let (public, der) = self.session.sign(prehash, &self.path)?;
        if operator_key(&public)? != self.public {
            return Err(SignerError::BadSignature(
                "the card signed with another key than the one it exported".into(),
            ));
        }
        Ok(der)
    }
}

#[cfg(test)]
mod tests;
