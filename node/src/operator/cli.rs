//! `roost operator …`: create or find the operator key, print it, attest nodes, verify
//! attestations. Synchronous on purpose: PKCS#11 and PC/SC calls block, and no async runtime
//! runs here.
//!
//! Output: the operator key (`init`, `pubkey`) or a summary (`attest`, `verify`) on stdout;
//! problems as one `error: …` line on stderr with a non-zero exit (1: the operation failed,
//! 2: bad arguments, 3: `verify` refused the attestation).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, SystemTime},
};

use clap::{Args, Subcommand};
use libp2p::PeerId;

use super::{
    attestation::{format_time, unix, Claims, Role, MAX_VALIDITY},
    check_fleet_name, is_dev_fleet,
    key::OperatorKey,
    pin,
    profile::{BackendKind, FileConfig, Profile, DEFAULT_PROFILE},
    signer::{
        file::{Algorithm, FileSigner},
        keycard::{self, KeycardSigner},
        pkcs11::{self, Pkcs11Signer},
        Signer,
    },
    SignedAttestation, Verifier,
};

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_REJECTED: u8 = 3;

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Create or find the operator key on a backend (pairing with a Keycard), print the
    /// operator public key and write the profile the other commands use.
    Init(InitArgs),
    /// Print the operator public key (from the profile, or read from the device).
    Pubkey(PubkeyArgs),
    /// Sign an attestation binding a node's PeerId to a fleet and roles.
    Attest(AttestArgs),
    /// Check an attestation against trusted operator keys.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct ProfileArg {
    /// Operator profile written by `roost operator init`.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_PROFILE)]
    pub profile: PathBuf,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where the operator key lives.
    #[arg(long, value_enum)]
    pub backend: BackendKind,
    #[command(flatten)]
    pub profile: ProfileArg,
    /// file: the key file (created if missing; relative to the profile's directory).
    #[arg(long, value_name = "FILE", default_value = "roost-operator.key")]
    pub key_file: PathBuf,
    /// file, pkcs11: algorithm of a key created by init.
    #[arg(long, value_enum, default_value = "secp256k1")]
    pub key_type: Algorithm,
    /// pkcs11: the PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so).
    #[arg(long, value_name = "PATH")]
    pub module: Option<PathBuf>,
    /// pkcs11: label of the token holding the key.
    #[arg(long, value_name = "LABEL")]
    pub token: Option<String>,
    /// pkcs11: label of the key pair (found, or created if absent).
    #[arg(long, value_name = "LABEL", default_value = "roost-operator")]
    pub key_label: String,
    /// keycard: part of the reader name (default: the first reader holding a card).
    #[arg(long, value_name = "NAME", default_value = "")]
    pub reader: String,
    /// keycard: BIP32 path of the operator key on the card.
    #[arg(long, value_name = "PATH", default_value = keycard::DEFAULT_PATH)]
    pub path: String,
}

#[derive(Debug, Args)]
pub struct PubkeyArgs {
    #[command(flatten)]
    pub profile: ProfileArg,
    /// Read the key from the card, token or file (needs the PIN) instead of the profile.
    #[arg(long)]
    pub from_device: bool,
}

#[derive(Debug, Args)]
pub struct AttestArgs {
    #[command(flatten)]
    pub profile: ProfileArg,
    /// The node: its PeerId, or its data directory (holding node.key).
    #[arg(long, value_name = "PEERID|DIR")]
    pub node: String,
    /// The fleet the node belongs to (e.g. staging).
    #[arg(long)]
    pub fleet: String,
    /// Comma-separated roles: relay, store, rendezvous, lightpush, filter.
    #[arg(long, value_name = "ROLES")]
    pub roles: String,
    /// How long the attestation is valid (at most 90d), e.g. 30d.
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    pub valid: humantime::Duration,
    /// Start of validity (RFC 3339, e.g. 2025-01-31T00:00:00Z); default now.
    #[arg(long, value_name = "TIME")]
    pub valid_from: Option<String>,
    /// Sequence number; default the issue time in unix seconds (so later ones are higher).
    #[arg(long)]
    pub seq: Option<u64>,
    /// Where to write the attestation.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The attestation file.
    pub file: PathBuf,
    /// Trusted operator public keys (hex, as `roost operator pubkey` prints them).
    #[arg(long, value_name = "PUBKEY", required = true, num_args = 1.., value_delimiter = ',')]
    pub trusted: Vec<OperatorKey>,
    /// Require this fleet.
    #[arg(long)]
    pub fleet: Option<String>,
    /// Require this node PeerId.
    #[arg(long, value_name = "PEERID")]
    pub node: Option<PeerId>,
}

/// Runs an operator command; returns the process exit code.
pub fn run(command: OperatorCommand) -> ExitCode {
    // Warnings (a key file readable by others, ...) go to stderr.
    crate::telemetry::init(&crate::telemetry::LogConfig {
        format: crate::telemetry::LogFormat::Text,
        filter: "warn".into(),
    });
    let result = match command {
        OperatorCommand::Init(args) => init(args),
        OperatorCommand::Pubkey(args) => pubkey(args),
        OperatorCommand::Attest(args) => attest(args),
        OperatorCommand::Verify(args) => verify(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, message }) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

struct Failure {
    code: u8,
    message: String,
}

fn failed(e: impl std::fmt::Display) -> Failure {
    Failure {
        code: EXIT_FAILED,
        message: e.to_string(),
    }
}

fn usage(e: impl std::fmt::Display) -> Failure {
    Failure {
        code: EXIT_USAGE,
        message: e.to_string(),
    }
}

fn init(args: InitArgs) -> Result<(), Failure> {
    let profile_path = &args.profile.profile;
    let existing = Profile::load(profile_path).ok();
    let (public_key, mut profile, what) = match args.backend {
        BackendKind::File => {
            let key_path = super::profile::resolve(profile_path, &args.key_file);
            let (signer, created) =
                FileSigner::open_or_create(&key_path, args.key_type).map_err(failed)?;
            eprintln!("warning: a file key is for development fleets only; use --backend pkcs11 or keycard for real fleets");
            let what = if created {
                format!(
                    "created a new {} key in {}",
                    args.key_type.as_str(),
                    key_path.display()
                )
            } else {
                format!("found the key in {}", key_path.display())
            };
            (
                signer.public_key().clone(),
                Profile {
                    backend: BackendKind::File,
                    public_key: signer.public_key().clone(),
                    file: Some(FileConfig {
                        key_file: args.key_file.clone(),
                    }),
                    pkcs11: None,
                    keycard: None,
                },
                what,
            )
        }
        BackendKind::Pkcs11 => {
            let module = args
                .module
                .clone()
                .ok_or_else(|| usage("--backend pkcs11 needs --module <PKCS#11 module path>"))?;
            let token = args
                .token
                .clone()
                .ok_or_else(|| usage("--backend pkcs11 needs --token <token label>"))?;
            let config = pkcs11::Config {
                module,
                token,
                key_label: args.key_label.clone(),
                key_type: args.key_type,
            };
            let device = format!("token `{}`", config.token);
            let (signer, created) =
                Pkcs11Signer::open_or_create(&config, || Ok(pin::pin(&device)?)).map_err(failed)?;
            let what = if created {
                format!(
                    "created a new {} key labelled `{}` on token `{}`",
                    signer.public_key().algorithm(),
                    config.key_label,
                    config.token
                )
            } else {
                format!(
                    "found the {} key labelled `{}` on token `{}`",
                    signer.public_key().algorithm(),
                    config.key_label,
                    config.token
                )
            };
            (
                signer.public_key().clone(),
                Profile {
                    backend: BackendKind::Pkcs11,
                    public_key: signer.public_key().clone(),
                    file: None,
                    pkcs11: Some(config),
                    keycard: None,
                },
                what,
            )
        }
        BackendKind::Keycard => {
            let previous = existing.as_ref().and_then(|p| p.keycard.as_ref());
            let (signer, config, created) = KeycardSigner::init_pcsc(
                &args.reader,
                &args.path,
                previous,
                || Ok(pin::pairing_password()?),
                || Ok(pin::pin("the Keycard")?),
            )
            .map_err(failed)?;
            let what = if created {
                format!(
                    "generated a new key on the Keycard; the operator key is at {}",
                    config.path
                )
            } else {
                format!("found the Keycard's key at {}", config.path)
            };
            (
                signer.public_key().clone(),
                Profile {
                    backend: BackendKind::Keycard,
                    public_key: signer.public_key().clone(),
                    file: None,
                    pkcs11: None,
                    keycard: Some(config),
                },
                what,
            )
        }
    };
    profile.public_key = public_key.clone();
    profile.save(profile_path).map_err(failed)?;
    eprintln!(
        "{what}; profile written to {} (fingerprint {})",
        profile_path.display(),
        public_key.fingerprint()
    );
    println!("{public_key}");
    Ok(())
}

fn pubkey(args: PubkeyArgs) -> Result<(), Failure> {
    let path = &args.profile.profile;
    let profile = Profile::load(path).map_err(failed)?;
    if args.from_device {
        let signer = profile.open_signer(path).map_err(failed)?;
        println!("{}", signer.public_key());
    } else {
        println!("{}", profile.public_key);
    }
    Ok(())
}

fn attest(args: AttestArgs) -> Result<(), Failure> {
    check_fleet_name(&args.fleet).map_err(usage)?;
    let roles = Role::parse_list(&args.roles).map_err(usage)?;
    let node = resolve_node(&args.node).map_err(usage)?;
    let valid: Duration = args.valid.into();
    if valid.is_zero() || valid > MAX_VALIDITY {
        return Err(usage(format!(
            "--valid must be between 1s and {}: attestations are short-lived and re-issued",
            humantime::format_duration(MAX_VALIDITY)
        )));
    }
    let now = SystemTime::now();
    let start = match &args.valid_from {
        Some(text) => humantime::parse_rfc3339_weak(text).map_err(|e| {
            usage(format!(
                "--valid-from `{text}` is not an RFC 3339 time ({e}); write e.g. 2025-01-31T00:00:00Z"
            ))
        })?,
        None => now,
    };
    let issued_at = unix(start);
    let claims = Claims {
        fleet: args.fleet.clone(),
        node,
        roles,
        issued_at,
        expires_at: issued_at + valid.as_secs(),
        seq: args.seq.unwrap_or_else(|| unix(now)),
    };
    let path = &args.profile.profile;
    let profile = Profile::load(path).map_err(failed)?;
    if profile.backend == BackendKind::File && !is_dev_fleet(&args.fleet) {
        eprintln!(
            "warning: signing for fleet `{}` with a file (software) operator key; use a Keycard or an HSM for fleets other than dev/test",
            args.fleet
        );
    }
    let mut signer = profile.open_signer(path).map_err(failed)?;
    let signed = claims.sign(signer.as_mut()).map_err(failed)?;
    write_attestation(&args.out, &signed).map_err(failed)?;
    let a = &signed.attestation;
    println!(
        "attested {} for fleet {} ({}) from {} until {}, seq {}, by operator key {} ({}); written to {}",
        a.node,
        a.fleet,
        a.roles_text(),
        format_time(a.issued_at),
        format_time(a.expires_at),
        a.seq,
        a.operator.fingerprint(),
        a.key_storage.as_str(),
        args.out.display()
    );
    Ok(())
}

fn write_attestation(path: &Path, signed: &SignedAttestation) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, signed.to_file_text())
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A PeerId, or a node data directory (or its node.key file).
fn resolve_node(text: &str) -> Result<PeerId, String> {
    if let Ok(peer) = text.parse::<PeerId>() {
        return Ok(peer);
    }
    let path = Path::new(text);
    let key_file = if path.is_dir() {
        path.join(crate::identity::KEY_FILE)
    } else {
        path.to_owned()
    };
    let key_text = std::fs::read_to_string(&key_file).map_err(|_| {
        format!("`{text}` is neither a PeerId nor a node data directory holding {}; start the node once to create its key, or give its PeerId", crate::identity::KEY_FILE)
    })?;
    let keypair = crate::identity::parse(&key_text)
        .ok_or_else(|| format!("{} is not a node key", key_file.display()))?;
    Ok(keypair.public().to_peer_id())
}

fn verify(args: VerifyArgs) -> Result<(), Failure> {
    if let Some(fleet) = &args.fleet {
        check_fleet_name(fleet).map_err(usage)?;
    }
    let bytes = std::fs::read(&args.file)
        .map_err(|e| failed(format!("cannot read {}: {e}", args.file.display())))?;
    let signed = SignedAttestation::from_file_bytes(&bytes).map_err(|r| Failure {
        code: EXIT_REJECTED,
        message: format!("attestation rejected ({}): {r}", r.label()),
    })?;
    let verifier = Verifier::new(args.fleet.clone(), args.trusted.clone());
    let a = &signed.attestation;
    verifier
        .check(a, args.node.as_ref(), SystemTime::now())
        .map_err(|r| Failure {
            code: EXIT_REJECTED,
            message: format!("attestation rejected ({}): {r}", r.label()),
        })?;
    let left = a.seconds_left(SystemTime::now()).max(0) as u64;
    println!(
        "valid: node {}, fleet {}, roles {}, issued {}, expires {} (in {}), seq {}, operator key {} ({})",
        a.node,
        a.fleet,
        a.roles_text(),
        format_time(a.issued_at),
        format_time(a.expires_at),
        humantime::format_duration(Duration::from_secs(left)),
        a.seq,
        a.operator.fingerprint(),
        a.key_storage.as_str()
    );
    Ok(())
}
