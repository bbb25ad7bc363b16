//! `roost operator` with the file backend, and `verify` refusing every kind of bad attestation.

use roost_tests::process::run_roost;

use super::{node_dir, ok, one_line_error, path_str, stderr, stdout};

#[test]
fn file_backend_attests_and_verify_refuses_every_bad_attestation() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let init = run_roost(&["operator", "init", "--backend", "file"], cwd);
    let key = ok(&init);
    assert!(
        key.starts_with("08021221"),
        "secp256k1 key by default: {key}"
    );
    assert!(stderr(&init).contains("development fleets only"));
    assert_eq!(ok(&run_roost(&["operator", "pubkey"], cwd)), key);

    // --node takes a data directory as well as a PeerId.
    let (node, peer) = node_dir();
    let attest = |fleet: &str, extra: &[&str], out: &str| {
        let mut args = vec![
            "operator",
            "attest",
            "--node",
            path_str(node.path()),
            "--fleet",
            fleet,
            "--roles",
            "relay,store",
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        run_roost(&args, cwd)
    };
    let good = attest("staging", &["--valid", "30d"], "good.att");
    let summary = ok(&good);
    assert!(summary.contains(&peer.to_string()), "{summary}");
    assert!(
        stderr(&good).contains("file (software) operator key"),
        "warns about file keys on non-dev fleets: {}",
        stderr(&good)
    );
    assert!(
        !stderr(&attest("dev", &[], "dev.att")).contains("software"),
        "no warning on a dev fleet"
    );

    let verify = |file: &str, extra: &[&str]| {
        let mut args = vec!["operator", "verify", file, "--trusted", key.as_str()];
        args.extend_from_slice(extra);
        run_roost(&args, cwd)
    };
    let valid = ok(&verify(
        "good.att",
        &["--fleet", "staging", "--node", &peer.to_string()],
    ));
    assert!(valid.starts_with("valid: "), "{valid}");
    assert!(valid.contains("relay,store") && valid.contains("(file)"));

    // Untrusted key.
    let other = tempfile::tempdir().unwrap();
    let other_key = ok(&run_roost(
        &[
            "operator",
            "init",
            "--backend",
            "file",
            "--key-type",
            "ed25519",
        ],
        other.path(),
    ));
    assert!(other_key.starts_with("08011220"), "{other_key}");
    one_line_error(
        &run_roost(
            &["operator", "verify", "good.att", "--trusted", &other_key],
            cwd,
        ),
        3,
        "(untrusted_key)",
    );
    // Either of several trusted keys will do (comma-separated or repeated).
    ok(&run_roost(
        &[
            "operator",
            "verify",
            "good.att",
            "--trusted",
            &format!("{other_key},{key}"),
        ],
        cwd,
    ));
    one_line_error(
        &verify("good.att", &["--fleet", "beta"]),
        3,
        "(wrong_fleet)",
    );
    one_line_error(
        &verify(
            "good.att",
            &["--node", &libp2p::PeerId::random().to_string()],
        ),
        3,
        "(wrong_peer)",
    );

    // Tampered: flip one hex digit inside the payload.
    let text = std::fs::read_to_string(cwd.join("good.att")).unwrap();
    let mut bytes = hex::decode(text.trim()).unwrap();
    let at = bytes.windows(7).position(|w| w == b"staging").unwrap();
    bytes[at + 1] ^= 0x01;
    std::fs::write(cwd.join("tampered.att"), hex::encode(bytes)).unwrap();
    one_line_error(&verify("tampered.att", &[]), 3, "(bad_signature)");
    std::fs::write(cwd.join("garbage.att"), "hello").unwrap();
    one_line_error(&verify("garbage.att", &[]), 3, "(malformed)");

    // Expired and not yet valid.
    ok(&attest(
        "staging",
        &["--valid-from", "2020-01-01T00:00:00Z", "--valid", "1d"],
        "old.att",
    ));
    one_line_error(&verify("old.att", &[]), 3, "(expired)");
    ok(&attest(
        "staging",
        &["--valid-from", "2099-01-01T00:00:00Z", "--valid", "1d"],
        "future.att",
    ));
    one_line_error(&verify("future.att", &[]), 3, "(not_yet_valid)");

    // Bad arguments are usage errors (exit 2), and nothing is written.
    one_line_error(
        &attest("staging", &["--valid", "100d"], "long.att"),
        2,
        "short-lived",
    );
    one_line_error(
        &run_roost(
            &[
                "operator", "attest", "--node", "nonsense", "--fleet", "staging", "--roles",
                "relay", "--out", "x.att",
            ],
            cwd,
        ),
        2,
        "neither a PeerId nor a node data directory",
    );
    one_line_error(
        &attest("Staging!", &[], "bad.att"),
        2,
        "is not a fleet name",
    );
    assert!(!cwd.join("long.att").exists() && !cwd.join("x.att").exists());
    assert!(stdout(&verify("missing.att", &[])).is_empty());
    one_line_error(&verify("missing.att", &[]), 1, "cannot read");
    one_line_error(
        &run_roost(&["operator", "pubkey", "--profile", "none.toml"], cwd),
        1,
        "no operator profile at none.toml",
    );
}
