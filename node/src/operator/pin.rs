//! Secrets typed by the operator: the PIN of a token or card (`ROOST_PIN`, else a prompt on the
//! terminal) and a Keycard pairing password (`ROOST_PAIRING_PASSWORD`, else a prompt). Each is
//! asked for at most once per command: Roost never retries a PIN by itself, because every wrong
//! try brings the card or token closer to blocking it.

use std::io::IsTerminal;

use zeroize::Zeroizing;

/// Environment variable holding the PIN (not a config key).
pub const PIN_ENV: &str = "ROOST_PIN";
/// Environment variable holding the Keycard pairing password (not a config key).
pub const PAIRING_PASSWORD_ENV: &str = "ROOST_PAIRING_PASSWORD";

/// A secret string, wiped from memory when dropped.
pub type Secret = Zeroizing<String>;

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("no {what}: set {env} or run the command in a terminal to be asked for it")]
    NotGiven {
        what: &'static str,
        env: &'static str,
    },
    #[error("cannot read the {what} from the terminal: {source}")]
    Prompt {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// The PIN for `device` (e.g. "token `fleet`", "Keycard").
pub fn pin(device: &str) -> Result<Secret, PinError> {
    obtain(PIN_ENV, "PIN", &format!("PIN for {device}: "))
}

/// The Keycard pairing password.
pub fn pairing_password() -> Result<Secret, PinError> {
    obtain(
        PAIRING_PASSWORD_ENV,
        "pairing password",
        "Keycard pairing password: ",
    )
}

fn obtain(env: &'static str, what: &'static str, prompt: &str) -> Result<Secret, PinError> {
    if let Ok(value) = std::env::var(env) {
        return Ok(Zeroizing::new(value));
    }
    if !std::io::stdin().is_terminal() {
        return Err(PinError::NotGiven { what, env });
    }
    rpassword::prompt_password(prompt)
        .map(Zeroizing::new)
        .map_err(|source| PinError::Prompt { what, source })
}
