//! The Keycard (applet v3.1) pairing and secure channel cryptography.
//!
//! - Pairing secret = PBKDF2-HMAC-SHA256(password, "Keycard Pairing Password Salt", 50 000, 32).
//!   PAIR proves both sides know it; the card then hands out a slot index and a salt, and both
//!   keep the pairing key SHA-256(secret || salt).
//! - OPEN SECURE CHANNEL: the client sends a fresh ephemeral secp256k1 key; the card answers
//!   salt (32) || IV (16). `K = SHA-512(ECDH-x || pairing key || salt)`: encryption key =
//!   `K[..32]`, MAC key = `K[32..]` (AES-256 both).
//! - A wrapped command carries `MAC || AES-CBC(enc, IV, pad(data))` where MAC is the last block
//!   of AES-CBC(mac, 0, [CLA INS P1 P2 Lc 0×11] || ciphertext) and Lc counts the MAC. The IV of a
//!   command is the MAC of the previous response (the OSC IV first); a response is encrypted
//!   with the command's MAC as IV and MACed over `[Lr 0×15] || ciphertext`. Padding is ISO/IEC
//!   9797-1 method 2 (0x80 then zeros, always at least one byte).

use aes::Aes256;
use cbc::cipher::{
    block_padding::{Iso7816, NoPadding},
    BlockDecryptMut, BlockEncryptMut, KeyIvInit,
};
use hmac::{Hmac, KeyInit, Mac};
use k256::sha2::{Digest, Sha256, Sha512};
use zeroize::Zeroizing;

/// PBKDF2 salt of pairing secrets.
const PAIRING_SALT: &[u8] = b"Keycard Pairing Password Salt";
const PAIRING_ITERATIONS: u32 = 50_000;
const BLOCK: usize = 16;

/// The 32-byte pairing secret derived from a pairing password.
pub fn pairing_secret(password: &str) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    pbkdf2_hmac_sha256(
        password.as_bytes(),
        PAIRING_SALT,
        PAIRING_ITERATIONS,
        &mut out[..],
    );
    out
}

/// PBKDF2 (RFC 8018) with HMAC-SHA256, for outputs of at most one block (32 bytes).
fn pbkdf2_hmac_sha256(password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
    let prf = || {
        <Hmac<Sha256> as KeyInit>::new_from_slice(password).expect("HMAC takes keys of any length")
    };
    let mut mac = prf();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u = mac.finalize().into_bytes();
    let mut t = u;
    for _ in 1..iterations {
        let mut mac = prf();
        mac.update(&u);
        u = mac.finalize().into_bytes();
        for (t, u) in t.iter_mut().zip(u.iter()) {
            *t ^= u;
        }
    }
    let n = out.len().min(t.len());
    out[..n].copy_from_slice(&t[..n]);
}

/// SHA-256 of the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Session keys and the running IV of an open secure channel.
pub struct SecureChannel {
    enc: Zeroizing<[u8; 32]>,
    mac: Zeroizing<[u8; 32]>,
    iv: [u8; BLOCK],
}

/// Why a wrapped response could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnwrapError {
    TooShort,
    BadMac,
    BadPadding,
}

impl SecureChannel {
    /// Derives the session from the ECDH x-coordinate, the pairing key and the card's OSC
    /// answer (salt || IV).
    pub fn new(shared_x: &[u8], pairing_key: &[u8; 32], salt: &[u8], iv: [u8; BLOCK]) -> Self {
        let mut h = Sha512::new();
        h.update(shared_x);
        h.update(pairing_key);
        h.update(salt);
        let k = h.finalize();
        let mut enc = Zeroizing::new([0u8; 32]);
        let mut mac = Zeroizing::new([0u8; 32]);
        enc.copy_from_slice(&k[..32]);
        mac.copy_from_slice(&k[32..]);
        SecureChannel { enc, mac, iv }
    }

    /// Encrypts and MACs a command's data; returns the new data field (MAC || ciphertext).
    pub fn wrap(&mut self, cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8]) -> Vec<u8> {
        let encrypted = cbc::Encryptor::<Aes256>::new(self.enc.as_ref().into(), &self.iv.into())
            .encrypt_padded_vec_mut::<Iso7816>(data);
        let lc = (encrypted.len() + BLOCK) as u8;
        let mut meta = [0u8; BLOCK];
        meta[..5].copy_from_slice(&[cla, ins, p1, p2, lc]);
        let mac = self.cbc_mac(&meta, &encrypted);
        self.iv = mac;
        let mut out = Vec::with_capacity(BLOCK + encrypted.len());
        out.extend_from_slice(&mac);
        out.extend_from_slice(&encrypted);
        out
    }

    /// Checks and decrypts a wrapped response's data; returns the plaintext, which ends with
    /// the real status word.
    pub fn unwrap(&mut self, data: &[u8]) -> Result<Vec<u8>, UnwrapError> {
        if data.len() < 2 * BLOCK || !data.len().is_multiple_of(BLOCK) {
            return Err(UnwrapError::TooShort);
        }
        let (mac, encrypted) = data.split_at(BLOCK);
        let mut meta = [0u8; BLOCK];
        meta[0] = data.len() as u8;
        if self.cbc_mac(&meta, encrypted) != mac {
            return Err(UnwrapError::BadMac);
        }
        let plain = cbc::Decryptor::<Aes256>::new(self.enc.as_ref().into(), &self.iv.into())
            .decrypt_padded_vec_mut::<Iso7816>(encrypted)
            .map_err(|_| UnwrapError::BadPadding)?;
        self.iv.copy_from_slice(mac);
        Ok(plain)
    }

    /// Last block of AES-CBC(mac key, IV 0, meta || data), no padding (data is whole blocks).
    fn cbc_mac(&self, meta: &[u8; BLOCK], data: &[u8]) -> [u8; BLOCK] {
        let mut input = Vec::with_capacity(BLOCK + data.len());
        input.extend_from_slice(meta);
        input.extend_from_slice(data);
        let out = cbc::Encryptor::<Aes256>::new(self.mac.as_ref().into(), &[0u8; BLOCK].into())
            .encrypt_padded_vec_mut::<NoPadding>(&input);
        let mut mac = [0u8; BLOCK];
        mac.copy_from_slice(&out[out.len() - BLOCK..]);
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbkdf2_matches_the_rfc_7914_vectors() {
        // RFC 7914 section 11: PBKDF2-HMAC-SHA256("passwd", "salt", 1, 64), first 32 bytes.
        let mut out = [0u8; 32];
        pbkdf2_hmac_sha256(b"passwd", b"salt", 1, &mut out);
        assert_eq!(
            hex::encode(out),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
        // ("Password", "NaCl", 80000, 64), first 32 bytes.
        pbkdf2_hmac_sha256(b"Password", b"NaCl", 80000, &mut out);
        assert_eq!(
            hex::encode(out),
            "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56"
        );
    }

    #[test]
    fn padding_always_adds_a_block_when_aligned() {
        let mut sc = SecureChannel::new(&[1; 32], &[2; 32], &[3; 32], [0; 16]);
        let wrapped = sc.wrap(0x80, 0x20, 0, 0, &[0x31; 16]);
        assert_eq!(wrapped.len(), 16 + 32);
        let wrapped = sc.wrap(0x80, 0x20, 0, 0, &[0x31; 6]);
        assert_eq!(wrapped.len(), 16 + 16);
    }

    #[test]
    fn responses_with_a_bad_mac_are_refused() {
        let mut sc = SecureChannel::new(&[1; 32], &[2; 32], &[3; 32], [0; 16]);
        assert_eq!(sc.unwrap(&[0; 20]), Err(UnwrapError::TooShort));
        assert_eq!(sc.unwrap(&[0; 32]), Err(UnwrapError::BadMac));
    }
}
