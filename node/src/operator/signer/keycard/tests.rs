//! The client against the emulated applet, in process (the pcscd path is tested in
//! `roost-tests`).

use std::sync::{Arc, Mutex};

use roost_keycard_emu::{Card, CardState};
use zeroize::Zeroizing;

use super::*;

const PIN: &str = "123456";
const PASSWORD: &str = "KeycardDefaultPairing";

/// A transport into a shared emulated card that records the instructions it saw.
#[derive(Clone)]
struct EmuTransport {
    card: Arc<Mutex<Card>>,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl EmuTransport {
    fn new() -> Self {
        EmuTransport {
            card: Arc::new(Mutex::new(Card::new(CardState::new(
                PIN,
                "123456789012",
                PASSWORD,
                3,
            )))),
            seen: Arc::default(),
        }
    }

    fn count(&self, ins: u8) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|i| **i == ins)
            .count()
    }

    /// As if the card was pulled out and put back: transient state is gone.
    fn reinsert(&self) {
        self.card.lock().unwrap().reset();
    }
}

impl Transport for EmuTransport {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, Error> {
        self.seen.lock().unwrap().push(apdu[1]);
        Ok(self.card.lock().unwrap().process(apdu))
    }
}

fn secret(s: &str) -> Secret {
    Zeroizing::new(s.to_owned())
}

fn init(t: &EmuTransport, existing: Option<&Config>) -> (KeycardSigner, Config, bool) {
    t.reinsert();
    KeycardSigner::init(
        Box::new(t.clone()),
        "",
        DEFAULT_PATH,
        existing,
        || Ok(secret(PASSWORD)),
        || Ok(secret(PIN)),
    )
    .unwrap()
}

fn open(t: &EmuTransport, config: &Config, pin: &str) -> Result<KeycardSigner, Error> {
    t.reinsert();
    KeycardSigner::open_with(Box::new(t.clone()), config, &secret(pin))
}

#[test]
fn init_pairs_generates_a_key_and_signs_what_libp2p_verifies() {
    let t = EmuTransport::new();
    let (mut signer, config, created) = init(&t, None);
    assert!(created);
    assert_eq!(t.count(INS_PAIR), 2);
    assert_eq!(t.count(INS_GENERATE_KEY), 1);
    // The exported key is the card's key at the operator path.
    let path = parse_path(DEFAULT_PATH).unwrap();
    let expected = t.card.lock().unwrap().public_key_at(&path).unwrap();
    assert_eq!(
        signer.public_key(),
        &operator_key(&expected).unwrap(),
        "exported key is the derived one"
    );
    let sig = signer.sign(b"attest").unwrap();
    assert!(signer.public_key().verify(b"attest", &sig));
    assert!(!signer.public_key().verify(b"other", &sig));

    // A later session with the stored pairing signs with the same key, without pairing again.
    let mut again = open(&t, &config, PIN).unwrap();
    assert_eq!(again.public_key(), signer.public_key());
    let sig = again.sign(b"second").unwrap();
    assert!(again.public_key().verify(b"second", &sig));
    assert_eq!(t.count(INS_PAIR), 2);

    // init again reuses the pairing and keeps the key.
    let (third, config2, created) = init(&t, Some(&config));
    assert!(!created);
    assert_eq!(config2.pairing_index, config.pairing_index);
    assert_eq!(third.public_key(), signer.public_key());
    assert_eq!(t.count(INS_PAIR), 2);
}

#[test]
fn the_card_signs_prehashes_recoverably_with_low_s() {
    let t = EmuTransport::new();
    let (mut signer, _, _) = init(&t, None);
    let key = signer.public_key().secp256k1().unwrap();
    let mut ids = [0usize; 2];
    for i in 0..16u8 {
        let prehash = [i ^ 0x5a; 32];
        let sig = crate::operator::signer::sign_recoverable(&mut signer, &prehash).unwrap();
        assert_eq!(
            crate::operator::signer::recover_prehash(&prehash, &sig),
            Some(key),
            "low S, recovers"
        );
        ids[sig[64] as usize] += 1;
    }
    assert!(ids[0] > 0 && ids[1] > 0, "{ids:?}");
}

#[test]
fn a_wrong_pin_reports_tries_left_and_is_never_retried() {
    let t = EmuTransport::new();
    let (_, config, _) = init(&t, None);
    let before = t.count(INS_VERIFY_PIN);
    match open(&t, &config, "000000") {
        Err(Error::WrongPin(2)) => {}
        Err(other) => panic!("expected WrongPin(2), got {other}"),
        Ok(_) => panic!("expected WrongPin(2), got a signer"),
    }
    assert_eq!(t.count(INS_VERIFY_PIN), before + 1, "exactly one PIN try");
    assert!(matches!(
        open(&t, &config, "000001"),
        Err(Error::WrongPin(1))
    ));
    // The right PIN resets the counter.
    assert!(open(&t, &config, PIN).is_ok());
    for left in [2, 1] {
        assert!(matches!(open(&t, &config, "999999"), Err(Error::WrongPin(l)) if l == left));
    }
    assert!(matches!(
        open(&t, &config, "999999"),
        Err(Error::PinBlocked)
    ));
    // Blocked: even the right PIN is refused now, and the message says what to do.
    let e = open(&t, &config, PIN).err().unwrap();
    assert!(matches!(e, Error::PinBlocked));
    assert!(e.to_string().contains("PUK"));
    // A malformed PIN never reaches the card.
    let before = t.count(INS_VERIFY_PIN);
    assert!(matches!(open(&t, &config, "12ab"), Err(Error::PinFormat)));
    assert_eq!(t.count(INS_VERIFY_PIN), before);
}

#[test]
fn pairing_problems_are_told_apart() {
    let t = EmuTransport::new();
    t.reinsert();
    let wrong_password = KeycardSigner::init(
        Box::new(t.clone()),
        "",
        DEFAULT_PATH,
        None,
        || Ok(secret("not the password")),
        || Ok(secret(PIN)),
    );
    assert!(matches!(
        wrong_password.err().unwrap(),
        SignerError::Keycard(Error::PairingRejected)
    ));

    let (_, config, _) = init(&t, None);
    // Someone unpaired us (or reset the card): opening says so; init pairs again.
    t.card.lock().unwrap().unpair_all();
    assert!(matches!(open(&t, &config, PIN), Err(Error::PairingGone(_))));
    let (_, repaired, created) = init(&t, Some(&config));
    assert!(!created, "the key survives re-pairing");
    assert_ne!(repaired.pairing_key, config.pairing_key);

    // A pairing key that does not match the card's.
    let mut forged = repaired.clone();
    forged.pairing_key = hex::encode([7u8; 32]);
    assert!(matches!(
        open(&t, &forged, PIN),
        Err(Error::PairingKeyMismatch)
    ));

    // Another card.
    let mut other = repaired.clone();
    other.instance_uid = hex::encode([1u8; 16]);
    assert!(matches!(
        open(&t, &other, PIN),
        Err(Error::WrongCard { .. })
    ));
}

#[test]
fn a_card_without_the_applet_is_not_a_keycard() {
    struct NoApplet;
    impl Transport for NoApplet {
        fn transmit(&mut self, _apdu: &[u8]) -> Result<Vec<u8>, Error> {
            Ok(vec![0x6A, 0x82])
        }
    }
    assert!(matches!(
        Session::select(NoApplet).err().unwrap(),
        Error::NotKeycard
    ));
}

#[test]
fn paths_parse_like_bip32() {
    assert_eq!(
        parse_path("m/44'/60'/0'/0/0").unwrap(),
        vec![0x8000_002C, 0x8000_003C, 0x8000_0000, 0, 0]
    );
    assert_eq!(parse_path("m/1h/2").unwrap(), vec![0x8000_0001, 2]);
    assert!(parse_path("m").unwrap().is_empty());
    for bad in ["44'/0", "m/x", "m/2147483648", ""] {
        assert!(parse_path(bad).is_err(), "{bad}");
    }
}
