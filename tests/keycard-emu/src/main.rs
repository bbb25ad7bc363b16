//! `keycard-emu`: an emulated Keycard inserted into pcscd's vsmartcard vpcd reader.
//!
//! vpcd runs in "reversed" mode (`DEVICENAME 127.0.0.1:<port>` in its reader.conf): it connects
//! to this process, which listens on loopback only. Every vpcd message is a 2-byte big-endian
//! length and a payload; 1-byte payloads are control (00 power off, 01 power on, 02 reset,
//! 04 get ATR, answered with the ATR), longer ones are command APDUs answered with a response APDU.
//!
//! ```text
//! keycard-emu --listen 127.0.0.1:0 --state card.json [--pin 123456] [--puk 123456789012]
//!             [--pairing-password KeycardDefaultPairing] [--pin-tries 3]
//!             [--absent] [--remove-on-ins C0]
//! ```
//! Prints `listening on <port>` once bound. `--absent`: no card in the reader (connections are
//! accepted and closed at once, which vpcd reads as "no card"). `--remove-on-ins XX`: when a
//! command with that INS arrives, the card is pulled mid-operation (the connection drops without
//! an answer and the card stays absent).

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::ExitCode,
};

use roost_keycard_emu::{Card, CardState, ATR};

struct Options {
    listen: String,
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
        listen: "127.0.0.1:0".into(),
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
            "--listen" => o.listen = value()?,
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
    let listener = match TcpListener::bind(&options.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("keycard-emu: cannot listen on {}: {e}", options.listen);
            return ExitCode::from(1);
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    println!("listening on {port}");
    let _ = std::io::stdout().flush();

    let mut present = !options.absent;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if !present {
            // No card: vpcd's ATR request fails and the reader reports an empty slot.
            drop(stream);
            continue;
        }
        card.reset();
        while let Some(payload) = read_frame(&mut stream) {
            match payload.as_slice() {
                [0x00] | [0x02] => card.reset(),
                [0x01] => {}
                [0x04] => {
                    if !write_frame(&mut stream, ATR) {
                        break;
                    }
                }
                [_] => {}
                apdu => {
                    let ins = apdu.get(1).copied().unwrap_or(0);
                    if options.verbose {
                        eprintln!("keycard-emu: APDU INS {ins:02X} ({} bytes)", apdu.len());
                    }
                    if Some(ins) == options.remove_on_ins {
                        eprintln!("keycard-emu: card pulled out during INS {ins:02X}");
                        present = false;
                        break;
                    }
                    let response = card.process(apdu);
                    save_state(&options, &mut card);
                    if !write_frame(&mut stream, &response) {
                        break;
                    }
                }
            }
        }
        card.reset();
    }
    ExitCode::SUCCESS
}
