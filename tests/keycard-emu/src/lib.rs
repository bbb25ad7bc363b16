//! An emulated Status Keycard (applet v3.1, secure channel v1) for tests, written from the public
//! APDU specification with the real cryptography: secp256k1 ECDH and ECDSA, AES-256-CBC with
//! ISO 9797-1 padding and CBC-MAC, SHA-256/512, PBKDF2 pairing secrets and BIP32 derivation.
//!
//! It implements SELECT, PAIR, OPEN SECURE CHANNEL, MUTUALLY AUTHENTICATE, VERIFY PIN (with its
//! retry counter), GET STATUS, GENERATE KEY, EXPORT KEY and SIGN; anything else answers 6D00 like
//! the applet. [`Card::process`] maps one command APDU to one response APDU; the `keycard-emu`
//! binary plugs a card into pcscd through the vsmartcard vpcd reader.

use aes::Aes256;
use cbc::cipher::{
    block_padding::{Iso7816, NoPadding},
    BlockDecryptMut, BlockEncryptMut, KeyIvInit,
};
use hmac::{Hmac, KeyInit, Mac};
use k256::{
    ecdsa::{signature::hazmat::PrehashSigner, SigningKey},
    sha2::{Digest, Sha256, Sha512},
    SecretKey,
};
use serde::{Deserialize, Serialize};

/// Keycard instance AID (applet AID || instance 1).
pub const INSTANCE_AID: &[u8] = &[0xA0, 0x00, 0x00, 0x08, 0x04, 0x00, 0x01, 0x01, 0x01];
/// An ATR pcscd accepts (T=1).
pub const ATR: &[u8] = &[0x3B, 0x80, 0x80, 0x01, 0x01];
const VERSION: [u8; 2] = [0x03, 0x01];
const PAIRING_SLOTS: usize = 5;

const SW_OK: u16 = 0x9000;
const SW_SECURITY: u16 = 0x6982;
const SW_CONDITIONS: u16 = 0x6985;
const SW_WRONG_DATA: u16 = 0x6A80;
const SW_NOT_FOUND: u16 = 0x6A82;
const SW_FILE_FULL: u16 = 0x6A84;
const SW_P1P2: u16 = 0x6A86;
const SW_REF_NOT_FOUND: u16 = 0x6A88;
const SW_INS: u16 = 0x6D00;

/// What survives a power cycle: the card's persistent memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CardState {
    pub instance_uid: String,
    /// The static secure-channel key (regenerated only by INIT on a real card).
    pub sc_secret: String,
    pub pin: String,
    pub puk: String,
    pub pin_tries_max: u8,
    pub pin_tries_left: u8,
    pub puk_tries_left: u8,
    /// PBKDF2 of the pairing password.
    pub pairing_secret: String,
    /// Pairing keys per slot (hex), `None` when the slot is free.
    pub pairings: Vec<Option<String>>,
    /// The 64-byte BIP32 seed of the loaded key, if any.
    pub seed: Option<String>,
}

impl CardState {
    /// An initialised card with a PIN, PUK and pairing password, and no key yet.
    pub fn new(pin: &str, puk: &str, pairing_password: &str, pin_tries: u8) -> CardState {
        CardState {
            instance_uid: hex::encode(rand::random::<[u8; 16]>()),
            sc_secret: hex::encode(random_secret().to_bytes()),
            pin: pin.into(),
            puk: puk.into(),
            pin_tries_max: pin_tries,
            pin_tries_left: pin_tries,
            puk_tries_left: 5,
            pairing_secret: hex::encode(pairing_secret(pairing_password)),
            pairings: vec![None; PAIRING_SLOTS],
            seed: None,
        }
    }
}

/// Session state that a reset, power-off or SELECT clears.
#[derive(Default)]
struct Session {
    selected: bool,
    pin_verified: bool,
    channel: Option<Channel>,
    /// (slot, card challenge) between the two PAIR steps.
    pending_pair: Option<(usize, [u8; 32])>,
}

struct Channel {
    enc: [u8; 32],
    mac: [u8; 32],
    iv: [u8; 16],
    authenticated: bool,
}

/// The emulated card.
pub struct Card {
    pub state: CardState,
    session: Session,
    /// Set when persistent state changed (the binary saves it).
    pub dirty: bool,
}

/// A parsed command APDU.
struct Apdu<'a> {
    cla: u8,
    ins: u8,
    p1: u8,
    p2: u8,
    data: &'a [u8],
}

fn parse_apdu(raw: &[u8]) -> Option<Apdu<'_>> {
    let (header, body) = raw.split_at_checked(4)?;
    let data = match body {
        [] | [_] => &[][..],
        [lc, rest @ ..] => {
            let lc = usize::from(*lc);
            // Data, optionally followed by Le.
            if rest.len() == lc || rest.len() == lc + 1 {
                &rest[..lc]
            } else {
                return None;
            }
        }
    };
    Some(Apdu {
        cla: header[0],
        ins: header[1],
        p1: header[2],
        p2: header[3],
        data,
    })
}

fn sw(sw: u16) -> Vec<u8> {
    sw.to_be_bytes().to_vec()
}

impl Card {
    pub fn new(state: CardState) -> Card {
        Card {
            state,
            session: Session::default(),
            dirty: false,
        }
    }

    /// Power-off, reset or card removal: transient state is lost.
    pub fn reset(&mut self) {
        self.session = Session::default();
    }

    /// Handles one command APDU and returns the response APDU (data || SW).
    pub fn process(&mut self, raw: &[u8]) -> Vec<u8> {
        let Some(apdu) = parse_apdu(raw) else {
            return sw(0x6700);
        };
        if apdu.cla == 0x00 && apdu.ins == 0xA4 {
            return self.select(&apdu);
        }
        if !self.session.selected {
            return sw(SW_INS);
        }
        if apdu.cla != 0x80 {
            return sw(0x6E00);
        }
        match apdu.ins {
            0x12 => self.pair(&apdu),
            0x10 => self.open_secure_channel(&apdu),
            0x11 => self.mutually_authenticate(&apdu),
            0x20 | 0xF2 | 0xD4 | 0xC2 | 0xC0 => self.secured(&apdu),
            _ => sw(SW_INS),
        }
    }

    fn select(&mut self, apdu: &Apdu) -> Vec<u8> {
        if apdu.p1 != 0x04 || apdu.data != INSTANCE_AID {
            self.session.selected = false;
            return sw(SW_NOT_FOUND);
        }
        self.session = Session {
            selected: true,
            ..Session::default()
        };
        let mut body = Vec::new();
        tlv(&mut body, 0x8F, &hex_bytes(&self.state.instance_uid));
        tlv(&mut body, 0x80, &uncompressed(&self.sc_key().public_key()));
        tlv(&mut body, 0x02, &VERSION);
        let free = self.state.pairings.iter().filter(|p| p.is_none()).count() as u8;
        tlv(&mut body, 0x02, &[free]);
        match self.master() {
            Some((key, _)) => tlv(&mut body, 0x8E, &key_uid(&key)),
            None => tlv(&mut body, 0x8E, &[]),
        }
        tlv(&mut body, 0x8D, &[0x1F]);
        let mut out = Vec::new();
        tlv(&mut out, 0xA4, &body);
        out.extend_from_slice(&sw(SW_OK));
        out
    }

    fn pair(&mut self, apdu: &Apdu) -> Vec<u8> {
        if self.channel_open() {
            return sw(SW_CONDITIONS);
        }
        if apdu.data.len() != 32 {
            return sw(SW_WRONG_DATA);
        }
        let secret = hex_bytes(&self.state.pairing_secret);
        match apdu.p1 {
            0x00 => {
                let Some(slot) = self.state.pairings.iter().position(|p| p.is_none()) else {
                    self.session.pending_pair = None;
                    return sw(SW_FILE_FULL);
                };
                let challenge: [u8; 32] = rand::random();
                self.session.pending_pair = Some((slot, challenge));
                let mut out = sha256(&[&secret, apdu.data]).to_vec();
                out.extend_from_slice(&challenge);
                out.extend_from_slice(&sw(SW_OK));
                out
            }
            0x01 => {
                let Some((slot, challenge)) = self.session.pending_pair.take() else {
                    return sw(SW_P1P2);
                };
                if sha256(&[&secret, &challenge]) != apdu.data {
                    return sw(SW_SECURITY);
                }
                let salt: [u8; 32] = rand::random();
                let key = sha256(&[&secret, &salt]);
                self.state.pairings[slot] = Some(hex::encode(key));
                self.dirty = true;
                let mut out = vec![slot as u8];
                out.extend_from_slice(&salt);
                out.extend_from_slice(&sw(SW_OK));
                out
            }
            _ => sw(SW_P1P2),
        }
    }

    fn open_secure_channel(&mut self, apdu: &Apdu) -> Vec<u8> {
        self.session.channel = None;
        let index = usize::from(apdu.p1);
        let Some(Some(pairing_key)) = self.state.pairings.get(index) else {
            return sw(SW_P1P2);
        };
        let pairing_key = hex_bytes(pairing_key);
        let Ok(client) = k256::PublicKey::from_sec1_bytes(apdu.data) else {
            return sw(SW_WRONG_DATA);
        };
        let shared = self.sc_key().diffie_hellman(&client);
        let salt: [u8; 32] = rand::random();
        let iv: [u8; 16] = rand::random();
        let k = Sha512::new()
            .chain_update(shared.raw_secret_bytes())
            .chain_update(&pairing_key)
            .chain_update(salt)
            .finalize();
        let mut enc = [0u8; 32];
        let mut mac = [0u8; 32];
        enc.copy_from_slice(&k[..32]);
        mac.copy_from_slice(&k[32..]);
        self.session.channel = Some(Channel {
            enc,
            mac,
            iv,
            authenticated: false,
        });
        let mut out = salt.to_vec();
        out.extend_from_slice(&iv);
        out.extend_from_slice(&sw(SW_OK));
        out
    }

    fn channel_open(&self) -> bool {
        self.session
            .channel
            .as_ref()
            .is_some_and(|c| c.authenticated)
    }

    /// Checks the MAC and decrypts a wrapped command; on a bad MAC the channel is dropped.
    fn unwrap_command(&mut self, apdu: &Apdu) -> Result<Vec<u8>, u16> {
        let channel = self.session.channel.as_mut().ok_or(SW_CONDITIONS)?;
        let Some((mac, encrypted)) = apdu.data.split_at_checked(16) else {
            self.session.channel = None;
            return Err(SW_SECURITY);
        };
        let mut meta = [0u8; 16];
        meta[..5].copy_from_slice(&[apdu.cla, apdu.ins, apdu.p1, apdu.p2, apdu.data.len() as u8]);
        if encrypted.is_empty()
            || !encrypted.len().is_multiple_of(16)
            || cbc_mac(&channel.mac, &meta, encrypted) != mac
        {
            self.session.channel = None;
            return Err(SW_SECURITY);
        }
        let plain = cbc::Decryptor::<Aes256>::new(&channel.enc.into(), &channel.iv.into())
            .decrypt_padded_vec_mut::<Iso7816>(encrypted);
        channel.iv.copy_from_slice(mac);
        plain.map_err(|_| SW_WRONG_DATA)
    }

    /// Encrypts and MACs a response (data || 9000) for the open channel.
    fn wrap_response(&mut self, data: &[u8]) -> Vec<u8> {
        let Some(channel) = self.session.channel.as_mut() else {
            return sw(SW_CONDITIONS);
        };
        let mut plain = data.to_vec();
        plain.extend_from_slice(&sw(SW_OK));
        let encrypted = cbc::Encryptor::<Aes256>::new(&channel.enc.into(), &channel.iv.into())
            .encrypt_padded_vec_mut::<Iso7816>(&plain);
        let mut meta = [0u8; 16];
        meta[0] = (encrypted.len() + 16) as u8;
        let mac = cbc_mac(&channel.mac, &meta, &encrypted);
        channel.iv = mac;
        let mut out = mac.to_vec();
        out.extend_from_slice(&encrypted);
        out.extend_from_slice(&sw(SW_OK));
        out
    }

    fn mutually_authenticate(&mut self, apdu: &Apdu) -> Vec<u8> {
        let Some(channel) = self.session.channel.as_ref() else {
            return sw(SW_CONDITIONS);
        };
        let already = channel.authenticated;
        let data = match self.unwrap_command(apdu) {
            Ok(data) => data,
            Err(code) => return sw(code),
        };
        if already {
            return sw(SW_CONDITIONS);
        }
        if data.len() != 32 {
            self.session.channel = None;
            return sw(SW_SECURITY);
        }
        if let Some(channel) = self.session.channel.as_mut() {
            channel.authenticated = true;
        }
        let challenge: [u8; 32] = rand::random();
        self.wrap_response(&challenge)
    }

    fn secured(&mut self, apdu: &Apdu) -> Vec<u8> {
        if !self.channel_open() {
            return sw(SW_CONDITIONS);
        }
        let data = match self.unwrap_command(apdu) {
            Ok(data) => data,
            Err(code) => return sw(code),
        };
        let result = match apdu.ins {
            0x20 => self.verify_pin(&data),
            0xF2 => self.get_status(apdu.p1),
            0xD4 => self.generate_key(),
            0xC2 => self.export_key(apdu.p1, apdu.p2, &data),
            0xC0 => self.sign(apdu.p1, &data),
            _ => Err(SW_INS),
        };
        match result {
            Ok(out) => self.wrap_response(&out),
            Err(code) => sw(code),
        }
    }

    fn verify_pin(&mut self, pin: &[u8]) -> Result<Vec<u8>, u16> {
        if pin.len() != 6 || !pin.iter().all(u8::is_ascii_digit) {
            return Err(SW_WRONG_DATA);
        }
        if self.state.pin_tries_left == 0 {
            return Err(0x63C0);
        }
        if pin == self.state.pin.as_bytes() {
            self.state.pin_tries_left = self.state.pin_tries_max;
            self.session.pin_verified = true;
            self.dirty = true;
            Ok(Vec::new())
        } else {
            self.state.pin_tries_left -= 1;
            self.session.pin_verified = false;
            self.dirty = true;
            Err(0x63C0 | u16::from(self.state.pin_tries_left))
        }
    }

    fn get_status(&self, p1: u8) -> Result<Vec<u8>, u16> {
        match p1 {
            0x00 => Ok(vec![
                0xA3,
                9,
                0x02,
                1,
                self.state.pin_tries_left,
                0x02,
                1,
                self.state.puk_tries_left,
                0x01,
                1,
                if self.state.seed.is_some() {
                    0xFF
                } else {
                    0x00
                },
            ]),
            0x01 => Ok(Vec::new()),
            _ => Err(SW_P1P2),
        }
    }

    fn generate_key(&mut self) -> Result<Vec<u8>, u16> {
        if !self.session.pin_verified {
            return Err(SW_CONDITIONS);
        }
        let seed: [u8; 64] = std::array::from_fn(|_| rand::random());
        self.state.seed = Some(hex::encode(seed));
        self.dirty = true;
        let (key, _) = self.master().ok_or(SW_CONDITIONS)?;
        Ok(key_uid(&key).to_vec())
    }

    /// The key at `path` (derived from the master, which is also the current key here: this
    /// emulator does not implement DERIVE KEY).
    fn derive(&self, p1: u8, path_bytes: &[u8]) -> Result<(SecretKey, [u8; 32], Vec<u32>), u16> {
        let source = p1 & 0xC0;
        if source != 0x00 && source != 0x80 {
            return Err(SW_P1P2);
        }
        if !path_bytes.len().is_multiple_of(4) || path_bytes.len() > 40 {
            return Err(SW_WRONG_DATA);
        }
        let path: Vec<u32> = path_bytes
            .chunks(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let (mut key, mut chain) = self.master().ok_or(SW_CONDITIONS)?;
        for index in &path {
            (key, chain) = bip32_child(&key, &chain, *index).ok_or(SW_WRONG_DATA)?;
        }
        Ok((key, chain, path))
    }

    fn export_key(&mut self, p1: u8, p2: u8, data: &[u8]) -> Result<Vec<u8>, u16> {
        if !self.session.pin_verified || self.state.seed.is_none() {
            return Err(SW_CONDITIONS);
        }
        let path_bytes = match p1 & 0x3F {
            0x00 => &[][..],
            0x01 | 0x02 => data,
            _ => return Err(SW_P1P2),
        };
        let (key, chain, path) = self.derive(p1, path_bytes)?;
        let eip1581 = path.len() >= 3 && path[..3] == [0x8000_002B, 0x8000_003C, 0x8000_062D];
        let mut body = Vec::new();
        match p2 {
            0x00 if eip1581 => tlv(&mut body, 0x81, &key.to_bytes()),
            0x01 => tlv(&mut body, 0x80, &uncompressed(&key.public_key())),
            0x02 if !eip1581 => {
                tlv(&mut body, 0x80, &uncompressed(&key.public_key()));
                tlv(&mut body, 0x82, &chain);
            }
            0x00 | 0x02 => return Err(SW_CONDITIONS),
            _ => return Err(SW_P1P2),
        }
        let mut out = Vec::new();
        tlv(&mut out, 0xA1, &body);
        Ok(out)
    }

    fn sign(&mut self, p1: u8, data: &[u8]) -> Result<Vec<u8>, u16> {
        let path_bytes = match p1 & 0x3F {
            0x00 => &[][..],
            0x01 | 0x02 => data.get(32..).unwrap_or(&[]),
            0x03 => return Err(SW_REF_NOT_FOUND),
            _ => return Err(SW_P1P2),
        };
        if data.len() < 32 {
            return Err(SW_WRONG_DATA);
        }
        if !self.session.pin_verified || self.state.seed.is_none() {
            return Err(SW_CONDITIONS);
        }
        let (key, _, _) = self.derive(p1, path_bytes)?;
        let signing = SigningKey::from(&key);
        let signature: k256::ecdsa::Signature = signing
            .sign_prehash(&data[..32])
            .map_err(|_| SW_WRONG_DATA)?;
        let der = signature.normalize_s().to_der();
        let mut body = Vec::new();
        tlv(&mut body, 0x80, &uncompressed(&key.public_key()));
        body.extend_from_slice(der.as_bytes());
        // The applet always writes the template length in the long form `81 LL`.
        let mut out = vec![0xA0, 0x81, body.len() as u8];
        out.extend_from_slice(&body);
        Ok(out)
    }

    fn sc_key(&self) -> SecretKey {
        SecretKey::from_slice(&hex_bytes(&self.state.sc_secret)).unwrap_or_else(|_| random_secret())
    }

    /// Master key and chain code from the seed (BIP32: HMAC-SHA512("Bitcoin seed", seed)).
    fn master(&self) -> Option<(SecretKey, [u8; 32])> {
        let seed = hex_bytes(self.state.seed.as_ref()?);
        let i = hmac_sha512(b"Bitcoin seed", &[&seed]);
        let key = SecretKey::from_slice(&i[..32]).ok()?;
        let mut chain = [0u8; 32];
        chain.copy_from_slice(&i[32..]);
        Some((key, chain))
    }

    /// Public key at `path` of the loaded seed, for tests that check exported keys.
    pub fn public_key_at(&self, path: &[u32]) -> Option<Vec<u8>> {
        let (mut key, mut chain) = self.master()?;
        for index in path {
            (key, chain) = bip32_child(&key, &chain, *index)?;
        }
        Some(uncompressed(&key.public_key()))
    }

    /// Frees every pairing slot (as UNPAIR or a factory reset would).
    pub fn unpair_all(&mut self) {
        self.state.pairings = vec![None; PAIRING_SLOTS];
        self.dirty = true;
    }
}

/// BIP32 private child derivation.
fn bip32_child(key: &SecretKey, chain: &[u8; 32], index: u32) -> Option<(SecretKey, [u8; 32])> {
    let i = if index & 0x8000_0000 != 0 {
        hmac_sha512(chain, &[&[0u8], &key.to_bytes(), &index.to_be_bytes()])
    } else {
        let public = key.public_key();
        let compressed = k256::elliptic_curve::sec1::ToSec1Point::to_sec1_point(&public, true);
        hmac_sha512(chain, &[compressed.as_bytes(), &index.to_be_bytes()])
    };
    let tweak = SecretKey::from_slice(&i[..32]).ok()?;
    let sum = *tweak.to_nonzero_scalar() + *key.to_nonzero_scalar();
    let child = Option::<k256::NonZeroScalar>::from(k256::NonZeroScalar::new(sum))?;
    let mut next_chain = [0u8; 32];
    next_chain.copy_from_slice(&i[32..]);
    Some((SecretKey::from(child), next_chain))
}

fn hmac_sha512(key: &[u8], parts: &[&[u8]]) -> [u8; 64] {
    let mut mac =
        <Hmac<Sha512> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA256(NFKD(password), "Keycard Pairing Password Salt", 50 000, 32) for ASCII
/// passwords.
pub fn pairing_secret(password: &str) -> [u8; 32] {
    let block = |data: &[u8]| -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(password.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(data);
        mac.finalize().into_bytes().into()
    };
    let mut first = b"Keycard Pairing Password Salt".to_vec();
    first.extend_from_slice(&[0, 0, 0, 1]);
    let mut u = block(&first);
    let mut out = u;
    for _ in 1..50_000 {
        u = block(&u);
        out.iter_mut().zip(u).for_each(|(o, x)| *o ^= x);
    }
    out
}

fn cbc_mac(key: &[u8; 32], meta: &[u8; 16], data: &[u8]) -> [u8; 16] {
    let mut input = meta.to_vec();
    input.extend_from_slice(data);
    let out = cbc::Encryptor::<Aes256>::new(key.into(), &[0u8; 16].into())
        .encrypt_padded_vec_mut::<NoPadding>(&input);
    let mut mac = [0u8; 16];
    mac.copy_from_slice(&out[out.len() - 16..]);
    mac
}

fn key_uid(master: &SecretKey) -> [u8; 32] {
    sha256(&[&uncompressed(&master.public_key())])
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn tlv(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    if value.len() >= 0x80 {
        out.push(0x81);
    }
    out.push(value.len() as u8);
    out.extend_from_slice(value);
}

/// The 65-byte uncompressed SEC1 encoding the applet uses for every public key.
fn uncompressed(key: &k256::PublicKey) -> Vec<u8> {
    k256::elliptic_curve::sec1::ToSec1Point::to_sec1_point(key, false)
        .as_bytes()
        .to_vec()
}

fn hex_bytes(text: &str) -> Vec<u8> {
    hex::decode(text).unwrap_or_default()
}

fn random_secret() -> SecretKey {
    loop {
        if let Ok(key) = SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
            return key;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bip32_matches_the_standard_test_vector() {
        // BIP32 test vector 1: seed 000102…0f, chain m/0H.
        let state = CardState {
            seed: Some("000102030405060708090a0b0c0d0e0f".into()),
            ..CardState::new("123456", "123456789012", "x", 3)
        };
        let card = Card::new(state);
        let (master, chain) = card.master().unwrap();
        assert_eq!(
            hex::encode(master.to_bytes()),
            "e8f32e723decf4051aefac8e2c93c9c5b214313817cdb01a1494b917c8436b35"
        );
        assert_eq!(
            hex::encode(chain),
            "873dff81c02f525623fd1fe5167eac3a55a049de3d314bb42ee227ffed37d508"
        );
        let (child, _) = bip32_child(&master, &chain, 0x8000_0000).unwrap();
        assert_eq!(
            hex::encode(child.to_bytes()),
            "edb2e14f9ee77d26dd93b4ecede8d16ed408ce149b6cd80b0715a2d911a0afea"
        );
        // m/0H/1 (non-hardened step).
        let (k0, c0) = bip32_child(&master, &chain, 0x8000_0000).unwrap();
        let (k1, _) = bip32_child(&k0, &c0, 1).unwrap();
        assert_eq!(
            hex::encode(k1.to_bytes()),
            "3c6cb8d0f6a264c91ea8b5030fadaa8e538b020f0a387421a12de9319dc93368"
        );
    }

    #[test]
    fn apdus_parse_with_and_without_le() {
        let a = parse_apdu(&[0x80, 0x20, 0, 0, 2, 1, 2]).unwrap();
        assert_eq!(a.data, &[1, 2]);
        let a = parse_apdu(&[0x80, 0x20, 0, 0, 2, 1, 2, 0]).unwrap();
        assert_eq!(a.data, &[1, 2]);
        let a = parse_apdu(&[0x80, 0xF2, 0, 0, 0]).unwrap();
        assert!(a.data.is_empty());
        assert!(parse_apdu(&[0x80, 0x20, 0, 0, 5, 1]).is_none());
    }

    #[test]
    fn unknown_instructions_and_aids_get_the_applet_answers() {
        let mut card = Card::new(CardState::new("123456", "123456789012", "pw", 3));
        assert_eq!(card.process(&[0x80, 0x12, 0, 0]), vec![0x6D, 0x00]);
        assert_eq!(
            card.process(&[0x00, 0xA4, 0x04, 0x00, 2, 0xA0, 0x00, 0x00]),
            vec![0x6A, 0x82]
        );
        let mut select = vec![0x00, 0xA4, 0x04, 0x00, INSTANCE_AID.len() as u8];
        select.extend_from_slice(INSTANCE_AID);
        select.push(0);
        let r = card.process(&select);
        assert_eq!(&r[r.len() - 2..], &[0x90, 0x00]);
        assert_eq!(r[0], 0xA4);
        assert_eq!(card.process(&[0x80, 0x99, 0, 0, 0]), vec![0x6D, 0x00]);
    }
}
