//! The PKCS#11 backend against a real SoftHSM2 token (each test has its own token directory).

use roost_tests::rig::{SoftHsm, SOFTHSM_MODULE};

use super::{node_dir, ok, one_line_error, path_str, stderr};

fn init_args<'a>(
    hsm: &'a SoftHsm,
    label: &'a str,
    key_type: &'a str,
    profile: &'a str,
) -> Vec<&'a str> {
    vec![
        "operator",
        "init",
        "--backend",
        "pkcs11",
        "--module",
        SOFTHSM_MODULE,
        "--token",
        &hsm.token,
        "--key-label",
        label,
        "--key-type",
        key_type,
        "--profile",
        profile,
    ]
}

#[test]
fn softhsm_keys_of_both_algorithms_sign_attestations_that_verify() {
    let hsm = SoftHsm::new("fleet");
    let cwd = hsm.dir.path();
    let (node, peer) = node_dir();
    for (label, key_type, prefix) in [
        ("op-k1", "secp256k1", "08021221"),
        ("op-ed", "ed25519", "08011220"),
    ] {
        let profile = format!("{label}.toml");
        let init = hsm.roost(&init_args(&hsm, label, key_type, &profile), cwd, &hsm.pin);
        let key = ok(&init);
        assert!(key.starts_with(prefix), "{key_type}: {key}");
        assert!(stderr(&init).contains("created a new"), "{}", stderr(&init));
        // Running init again finds the key instead of making another.
        let again = hsm.roost(&init_args(&hsm, label, key_type, &profile), cwd, &hsm.pin);
        assert_eq!(ok(&again), key);
        assert!(stderr(&again).contains("found the"), "{}", stderr(&again));
        assert_eq!(
            ok(&hsm.roost(
                &["operator", "pubkey", "--profile", &profile, "--from-device"],
                cwd,
                &hsm.pin
            )),
            key
        );
        // Several signatures: CKM_ECDSA's raw r||s is high-S about half the time, and every one
        // must come out as low-S DER that verifies.
        for i in 0..6 {
            let out = format!("{label}-{i}.att");
            ok(&hsm.roost(
                &[
                    "operator",
                    "attest",
                    "--profile",
                    &profile,
                    "--node",
                    path_str(node.path()),
                    "--fleet",
                    "staging",
                    "--roles",
                    "relay,rendezvous",
                    "--valid",
                    "30d",
                    "--out",
                    &out,
                ],
                cwd,
                &hsm.pin,
            ));
            let valid = ok(&hsm.roost(
                &[
                    "operator",
                    "verify",
                    &out,
                    "--trusted",
                    &key,
                    "--fleet",
                    "staging",
                    "--node",
                    &peer.to_string(),
                ],
                cwd,
                &hsm.pin,
            ));
            assert!(valid.contains("(pkcs11)"), "{valid}");
        }
    }
}

#[test]
fn keys_made_outside_roost_with_pkcs11_tool_are_found_not_replaced() {
    let hsm = SoftHsm::new("ops");
    let cwd = hsm.dir.path();
    hsm.keygen_with_pkcs11_tool("made-outside", "EC:secp256k1");
    let init = hsm.roost(
        &init_args(&hsm, "made-outside", "ed25519", "p.toml"),
        cwd,
        &hsm.pin,
    );
    let key = ok(&init);
    assert!(
        key.starts_with("08021221"),
        "the existing secp256k1 key, not a new ed25519 one: {key}"
    );
    assert!(
        stderr(&init).contains("found the secp256k1 key"),
        "{}",
        stderr(&init)
    );
    let (_node, peer) = node_dir();
    ok(&hsm.roost(
        &[
            "operator",
            "attest",
            "--profile",
            "p.toml",
            "--node",
            &peer.to_string(),
            "--fleet",
            "staging",
            "--roles",
            "store",
            "--out",
            "a.att",
        ],
        cwd,
        &hsm.pin,
    ));
    ok(&hsm.roost(
        &["operator", "verify", "a.att", "--trusted", &key],
        cwd,
        &hsm.pin,
    ));
}

#[test]
fn hsm_faults_are_one_clear_line_and_a_non_zero_exit() {
    let hsm = SoftHsm::new("fleet");
    let cwd = hsm.dir.path();
    ok(&hsm.roost(&init_args(&hsm, "op", "secp256k1", "p.toml"), cwd, &hsm.pin));
    let (_node, peer) = node_dir();
    let peer = peer.to_string();
    let attest = |profile: &str, pin: &str| {
        hsm.roost(
            &[
                "operator",
                "attest",
                "--profile",
                profile,
                "--node",
                &peer,
                "--fleet",
                "staging",
                "--roles",
                "relay",
                "--out",
                "x.att",
            ],
            cwd,
            pin,
        )
    };
    one_line_error(&attest("p.toml", "9999"), 1, "wrong PIN for token `fleet`");
    assert!(stderr(&attest("p.toml", "9999")).contains("does not retry"));

    // Token not found: the tokens present are named.
    let mut args = init_args(&hsm, "op", "secp256k1", "q.toml");
    args[7] = "no-such-token";
    one_line_error(
        &hsm.roost(&args, cwd, &hsm.pin),
        1,
        "no token labelled `no-such-token`",
    );
    assert!(stderr(&hsm.roost(&args, cwd, &hsm.pin)).contains("`fleet`"));

    // Wrong key label: a profile naming a key that is not on the token.
    let profile = std::fs::read_to_string(cwd.join("p.toml")).unwrap();
    std::fs::write(
        cwd.join("wrong-label.toml"),
        profile.replace("key_label = \"op\"", "key_label = \"nope\""),
    )
    .unwrap();
    one_line_error(
        &attest("wrong-label.toml", &hsm.pin),
        1,
        "no private key labelled `nope` on token `fleet`",
    );

    // Module missing.
    std::fs::write(
        cwd.join("no-module.toml"),
        profile.replace(SOFTHSM_MODULE, "/usr/lib/no-such-pkcs11.so"),
    )
    .unwrap();
    one_line_error(
        &attest("no-module.toml", &hsm.pin),
        1,
        "PKCS#11 module /usr/lib/no-such-pkcs11.so does not exist",
    );
    assert!(!cwd.join("x.att").exists(), "nothing was written");
}

/// EIP-1459 roots are signed over keccak256: the token signs the 32 bytes as they are
/// (CKM_ECDSA), and the 65-byte r || s || v that comes out has low S and recovers to the key.
#[test]
fn softhsm_signs_prehashes_recoverably_with_low_s() {
    use roost_node::operator::{
        pin::Secret,
        signer::{
            file::Algorithm,
            pkcs11::{Config, Pkcs11Signer},
            recover_prehash, sign_recoverable, Signer,
        },
    };
    let hsm = SoftHsm::new("dns");
    // nextest runs each test in its own process: the variable is this test's alone.
    std::env::set_var("SOFTHSM2_CONF", &hsm.conf);
    let config = Config {
        module: SOFTHSM_MODULE.into(),
        token: hsm.token.clone(),
        key_label: "tree".into(),
        key_type: Algorithm::Secp256k1,
    };
    let pin = hsm.pin.clone();
    let (mut signer, created) =
        Pkcs11Signer::open_or_create(&config, || Ok(Secret::new(pin))).expect("open token");
    assert!(created);
    let key = signer.public_key().secp256k1().expect("secp256k1 key");
    let mut ids = [0usize; 2];
    for i in 0..16u8 {
        let prehash = [i.wrapping_mul(37); 32];
        let sig = sign_recoverable(&mut signer, &prehash).expect("sign");
        assert_eq!(
            recover_prehash(&prehash, &sig),
            Some(key),
            "low S, recovers"
        );
        ids[sig[64] as usize] += 1;
    }
    println!("softhsm prehash signatures: recovery ids {ids:?}");
    assert!(ids[0] > 0 && ids[1] > 0, "{ids:?}");
}
