//! Keycard APDU responses: a whole operator session (SELECT, OPEN SECURE CHANNEL, MUTUALLY
//! AUTHENTICATE, VERIFY PIN, EXPORT KEY, SIGN; and PAIR) against the emulated Keycard, with the
//! input tampering with its answers (replace, truncate, flip, extend one answer at a time), or,
//! in raw mode, answering every APDU itself.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use roost_keycard_emu::{Card, CardState};
use roost_node::operator::signer::keycard::{self, apdu, transport::Transport, Session};

const PIN: &str = "123456";
const PASSWORD: &str = "KeycardDefaultPairing";

/// Passes each APDU to the card and lets the next input byte decide what happens to its answer.
struct Tampered<'a> {
    card: Card,
    input: &'a [u8],
}

impl Tampered<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.input.len());
        let (head, rest) = self.input.split_at(n);
        self.input = rest;
        head
    }
}

impl Transport for Tampered<'_> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, keycard::Error> {
        let mut answer = self.card.process(apdu);
        let op = self.take(1).first().copied().unwrap_or(0);
        let arg = usize::from(self.take(1).first().copied().unwrap_or(0));
        match op % 8 {
            1 => answer.truncate(arg),
            2 if !answer.is_empty() => {
                let i = arg % answer.len();
                answer[i] ^= 1 << (op >> 5);
            }
            3 => answer = self.take(arg).to_vec(),
            4 => answer
                .splice(0..0, self.take(arg).iter().copied())
                .for_each(drop),
            5 => return Err(keycard::Error::CardRemoved("fuzz".into())),
            _ => {}
        }
        Ok(answer)
    }
}

/// Answers each APDU with the next length-prefixed chunk of the input.
struct Raw<'a> {
    input: &'a [u8],
}

impl Transport for Raw<'_> {
    fn transmit(&mut self, _apdu: &[u8]) -> Result<Vec<u8>, keycard::Error> {
        let Some((&len, rest)) = self.input.split_first() else {
            return Err(keycard::Error::CardRemoved("fuzz".into()));
        };
        let (answer, rest) = rest.split_at(usize::from(len).min(rest.len()));
        self.input = rest;
        Ok(answer.to_vec())
    }
}

/// A card with a key, paired once (pairing derives keys with PBKDF2: too slow per input).
fn paired() -> &'static (CardState, u8, [u8; 32]) {
    static PAIRED: OnceLock<(CardState, u8, [u8; 32])> = OnceLock::new();
    PAIRED.get_or_init(|| {
        let mut card = Card::new(CardState::new(PIN, "123456789012", PASSWORD, 3));
        let mut session = Session::select(Emu(&mut card)).expect("select");
        let (index, key) = session.pair(PASSWORD).expect("pair");
        session.open_secure_channel(index, &key).expect("channel");
        session.verify_pin(PIN).expect("pin");
        session.generate_key().expect("key");
        drop(session);
        (card.state.clone(), index, key)
    })
}

/// The honest card, for the set-up.
struct Emu<'a>(&'a mut Card);

impl Transport for Emu<'_> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, keycard::Error> {
        Ok(self.0.process(apdu))
    }
}

fn session<T: Transport>(transport: T, pair: bool, index: u8, key: &[u8; 32]) {
    let Ok(mut session) = Session::select(transport) else {
        return;
    };
    if pair {
        let _ = session.pair(PASSWORD);
    }
    if session.open_secure_channel(index, key).is_err() {
        return;
    }
    let _ = session.verify_pin(PIN);
    let path = keycard::parse_path(keycard::DEFAULT_PATH).unwrap_or_default();
    let _ = session.export_public_key(&path);
    let _ = session.sign(&[1; 32], &path);
}

fuzz_target!(|data: &[u8]| {
    let _ = apdu::Response::parse(data);
    let _ = apdu::read_all(data);
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let (state, index, key) = paired();
    if mode & 1 == 1 {
        session(Raw { input }, mode & 2 == 2, mode >> 4, key);
    } else {
        let card = Card::new(state.clone());
        // PAIR costs two PBKDF2 runs: only now and then.
        let pair = mode & 0xF0 == 0xF0;
        session(Tampered { card, input }, pair, *index, key);
    }
});
