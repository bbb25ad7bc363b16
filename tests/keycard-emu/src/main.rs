//! `keycard-emu`: an emulated Keycard inserted into pcscd's vsmartcard vpcd reader.
//!
//! vpcd listens for a virtual card (`DEVICENAME /dev/null:<port>` in its reader.conf); this
//! process connects to it, and reconnects whenever vpcd drops the connection. Every vpcd message
//! is a 2-byte big-endian length and a payload, always sent by vpcd; 1-byte payloads are control
//! (00 power off, 01 power on, 02 reset, 04 get ATR, answered with the ATR), longer ones are
//! command APDUs answered with a response APDU.
//!
//! ```text
//! keycard-emu --connect 127.0.0.1:35963 --state card.json [--pin 123456] [--puk 123456789012]
//!             [--pairing-password KeycardDefaultPairing] [--pin-tries 3]
//!             [--absent] [--remove-on-ins C0] [--verbose]
//! ```
//! `--state`: the card's memory (keys, pairings, PIN counter), kept across runs. `--absent`: the
//! card is not in the reader (the process never connects). `--remove-on-ins XX`: when a command
//! with that INS arrives, the card is pulled out mid-operation (the connection drops without an
//! answer and the card stays out).

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use roost_keycard_emu::{Card, CardState, ATR};

struct Options {
    connect: String,
    state: Option<PathBuf>,
    pin: String,
    puk: String,
    pairing_password: String,
    pin_tries: u8,
    absent: bool,
    remove_on_ins: Option<u8>,
    verbose: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        connect: "127.0.0.1:35963".into(),
        state: None,
        pin: "123456".into(),
        puk: "123456789012".into(),
        pairing_password: "KeycardDefaultPairing".into(),
        pin_tries: 3,
        absent: false,
        remove_on_ins: None,
        verbose: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--connect" => o.connect = value()?,
            "--state" => o.state = Some(PathBuf::from(value()?)),
            "--pin" => o.pin = value()?,
            "--puk" => o.puk = value()?,
            "--pairing-password" => o.pairing_password = value()?,
            "--pin-tries" => {
                o.pin_tries = value()?.parse().map_err(|_| "--pin-tries takes a number")?
            }
            "--absent" => o.absent = true,
            "--remove-on-ins" => {
                let v = value()?;
                o.remove_on_ins =
                    Some(u8::from_str_radix(&v, 16).map_err(|_| "--remove-on-ins takes hex")?)
            }
            "--verbose" => o.verbose = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

fn load_state(o: &Options) -> Result<CardState, String> {
    if let Some(path) = &o.state {
        if path.exists() {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("read {}: {e}", path.display()))?;
            return serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()));
        }
    }
    Ok(CardState::new(
        &o.pin,
        &o.puk,
        &o.pairing_password,
        o.pin_tries,
    ))
}

fn save_state(o: &Options, card: &mut Card) {
    if !card.dirty {
        return;
    }
    if let Some(path) = &o.state {
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_string_pretty(&card.state).unwrap_or_default();
        if std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, path))
            .is_err()
        {
            eprintln!("keycard-emu: cannot save state to {}", path.display());
        }
    }
    card.dirty = false;
}

fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).ok()?;
    let mut payload = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut payload).ok()?;
    Some(payload)
}

fn write_frame(stream: &mut TcpStream, payload: &[u8]) -> bool {
    let Ok(len) = u16::try_from(payload.len()) else {
        return false;
    };
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    stream.write_all(&frame).is_ok()
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("keycard-emu: {e}");
            return ExitCode::from(2);
        }
    };
    let mut card = match load_state(&options) {
        Ok(state) => Card::new(state),
        Err(e) => {
            eprintln!("keycard-emu: {e}");
            return ExitCode::from(2);
        }
    };
    card.dirty = true;
    save_state(&options, &mut card);
    eprintln!(
        "keycard-emu: card {} {}",
        card.state.instance_uid,
        if options.absent {
            "kept out of the reader"
        } else {
            "inserted"
        }
    );
    if options.absent {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    loop {
        // vpcd may not listen yet (pcscd starting) or may have dropped us: retry quietly.
        let Ok(mut stream) = TcpStream::connect(&options.connect) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        if options.verbose {
            eprintln!("keycard-emu: connected to vpcd at {}", options.connect);
        }
        card.reset();
        let pulled = serve(&options, &mut card, &mut stream);
        card.reset();
        // Hang up: vpcd sees the card gone (and an unanswered command fails).
        drop(stream);
        if pulled {
            eprintln!("keycard-emu: card pulled out of the reader");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Answers vpcd until it hangs up; returns true when the card was pulled out mid-command.
fn serve(options: &Options, card: &mut Card, stream: &mut TcpStream) -> bool {
    while let Some(payload) = read_frame(stream) {
        match payload.as_slice() {
            [0x00] | [0x02] => card.reset(),
            [0x01] => {}
            [0x04] => {
                if !write_frame(stream, ATR) {
                    return false;
                }
            }
            [_] => {}
            apdu => {
                let ins = apdu.get(1).copied().unwrap_or(0);
                if options.verbose {
                    eprintln!("keycard-emu: APDU INS {ins:02X} ({} bytes)", apdu.len());
                }
                if Some(ins) == options.remove_on_ins {
                    return true;
                }
                let response = card.process(apdu);
                save_state(options, card);
                if !write_frame(stream, &response) {
                    return false;
                }
            }
        }
    }
    false
}
