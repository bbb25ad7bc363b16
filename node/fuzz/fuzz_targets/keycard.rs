//! Keycard APDU responses: a whole operator session (SELECT, PAIR, OPEN SECURE CHANNEL, MUTUALLY
//! AUTHENTICATE, VERIFY PIN, EXPORT KEY, SIGN) against a card whose answers are the fuzz input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roost_node::operator::signer::keycard::{self, apdu, transport::Transport, Session};

/// Answers each APDU with the next length-prefixed chunk of the input (1-byte length).
struct Card<'a> {
    input: &'a [u8],
}

impl Transport for Card<'_> {
    fn transmit(&mut self, _apdu: &[u8]) -> Result<Vec<u8>, keycard::Error> {
        let Some((&len, rest)) = self.input.split_first() else {
            return Err(keycard::Error::CardRemoved("fuzz".into()));
        };
        let len = usize::from(len).min(rest.len());
        let (answer, rest) = rest.split_at(len);
        self.input = rest;
        Ok(answer.to_vec())
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = apdu::Response::parse(data);
    let _ = apdu::read_all(data);
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let Ok(mut session) = Session::select(Card { input }) else {
        return;
    };
    if mode & 1 == 1 {
        let _ = session.pair("KeycardDefaultPairing");
    }
    if session.open_secure_channel(mode >> 4, &[7; 32]).is_err() {
        return;
    }
    let _ = session.verify_pin("123456");
    let path = keycard::parse_path(keycard::DEFAULT_PATH).unwrap_or_default();
    let _ = session.export_public_key(&path);
    let _ = session.sign(&[1; 32], &path);
});
