//! The Keycard backend through the real PC/SC stack: pcscd, the vsmartcard vpcd reader and the
//! emulated Keycard applet. These tests run one at a time (nextest group `pcscd`).

use roost_tests::rig::{Card, PcscRig, Readers, CARD_PIN};

use super::{node_dir, ok, one_line_error, stderr};

fn init(rig: &PcscRig, cwd: &std::path::Path) -> String {
    let out = rig.roost(&["operator", "init", "--backend", "keycard"], cwd, CARD_PIN);
    if !out.status.success() {
        panic!("keycard init failed: {}\n{}", stderr(&out), rig.logs());
    }
    super::stdout(&out)
}

fn attest_args(peer: &str) -> Vec<&str> {
    vec![
        "operator",
        "attest",
        "--node",
        peer,
        "--fleet",
        "staging",
        "--roles",
        "relay,store",
        "--valid",
        "7d",
        "--out",
        "node.attestation",
    ]
}

#[test]
fn keycard_init_attest_and_verify_through_pcscd() {
    let mut rig = PcscRig::start(Readers::Vpcd);
    rig.insert(Card::default());
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let key = init(&rig, cwd);
    assert!(key.starts_with("08021221"), "a secp256k1 key: {key}");
    let profile = std::fs::read_to_string(cwd.join("roost-operator.toml")).unwrap();
    assert!(profile.contains("backend = \"keycard\"") && profile.contains("pairing_key"));

    let (_node, peer) = node_dir();
    let peer = peer.to_string();
    let attested = ok(&rig.roost(&attest_args(&peer), cwd, CARD_PIN));
    assert!(attested.contains("(keycard)"), "{attested}");
    let valid = ok(&rig.roost(
        &[
            "operator",
            "verify",
            "node.attestation",
            "--trusted",
            &key,
            "--fleet",
            "staging",
            "--node",
            &peer,
        ],
        cwd,
        CARD_PIN,
    ));
    assert!(valid.contains("relay,store"), "{valid}");
    assert_eq!(
        ok(&rig.roost(&["operator", "pubkey", "--from-device"], cwd, CARD_PIN)),
        key
    );
    // The card keeps its key across a re-insertion; init finds it and keeps the pairing.
    rig.insert(Card::default());
    let again = rig.roost(&["operator", "init", "--backend", "keycard"], cwd, CARD_PIN);
    assert_eq!(ok(&again), key);
    assert!(
        stderr(&again).contains("found the Keycard's key"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn a_wrong_pin_through_pcscd_reports_tries_left_and_uses_exactly_one_try() {
    let mut rig = PcscRig::start(Readers::Vpcd);
    rig.insert(Card::default());
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    init(&rig, cwd);
    assert_eq!(rig.pin_tries_left(), 3);
    let (_node, peer) = node_dir();
    let peer = peer.to_string();

    let wrong = rig.roost(&attest_args(&peer), cwd, "000000");
    one_line_error(&wrong, 1, "wrong PIN; 2 tries left");
    assert!(stderr(&wrong).contains("never retries"));
    assert_eq!(rig.pin_tries_left(), 2, "exactly one try used");
    one_line_error(
        &rig.roost(&attest_args(&peer), cwd, "000001"),
        1,
        "wrong PIN; 1 try left",
    );
    assert_eq!(rig.pin_tries_left(), 1);
    assert!(!cwd.join("node.attestation").exists());
    // The right PIN still works and resets the counter.
    ok(&rig.roost(&attest_args(&peer), cwd, CARD_PIN));
    assert_eq!(rig.pin_tries_left(), 3);
    // A PIN that is not 6 digits never reaches the card.
    one_line_error(&rig.roost(&attest_args(&peer), cwd, "12"), 1, "6 digits");
    assert_eq!(rig.pin_tries_left(), 3);
    // Blocked after three wrong tries.
    for _ in 0..2 {
        rig.roost(&attest_args(&peer), cwd, "999999");
    }
    one_line_error(
        &rig.roost(&attest_args(&peer), cwd, "999999"),
        1,
        "PIN is blocked",
    );
    one_line_error(&rig.roost(&attest_args(&peer), cwd, CARD_PIN), 1, "PUK");
}

#[test]
fn an_absent_or_removed_card_is_one_clear_error() {
    let mut rig = PcscRig::start(Readers::Vpcd);
    rig.insert(Card::default());
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    init(&rig, cwd);
    let (_node, peer) = node_dir();
    let peer = peer.to_string();

    rig.insert(Card {
        absent: true,
        ..Card::default()
    });
    one_line_error(
        &rig.roost(&attest_args(&peer), cwd, CARD_PIN),
        1,
        "no card in reader",
    );
    one_line_error(
        &rig.roost(&["operator", "init", "--backend", "keycard"], cwd, CARD_PIN),
        1,
        "insert the Keycard",
    );

    // Pulled out in the middle of signing: after SELECT, the secure channel and the PIN.
    rig.insert(Card {
        remove_on_ins: Some(0xC0),
        ..Card::default()
    });
    let removed = rig.roost(&attest_args(&peer), cwd, CARD_PIN);
    one_line_error(
        &removed,
        1,
        "removed or stopped answering during the operation",
    );
    assert!(stderr(&removed).contains("nothing was signed"));
    assert!(!cwd.join("node.attestation").exists());
}

#[test]
fn a_missing_reader_or_pcscd_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let no_reader = PcscRig::start(Readers::None);
    one_line_error(
        &no_reader.roost(&["operator", "init", "--backend", "keycard"], cwd, CARD_PIN),
        1,
        "no smart-card reader found",
    );
    let no_pcscd = PcscRig::start(Readers::NoDaemon);
    one_line_error(
        &no_pcscd.roost(&["operator", "init", "--backend", "keycard"], cwd, CARD_PIN),
        1,
        "pcscd is not running",
    );
    // A reader name that matches nothing.
    let mut rig = PcscRig::start(Readers::Vpcd);
    rig.insert(Card::default());
    one_line_error(
        &rig.roost(
            &[
                "operator",
                "init",
                "--backend",
                "keycard",
                "--reader",
                "Gemalto",
            ],
            cwd,
            CARD_PIN,
        ),
        1,
        "no reader matching `Gemalto`",
    );
}
