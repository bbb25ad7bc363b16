//! A fleet of three nodes attested each way (SoftHSM2 secp256k1, SoftHSM2 Ed25519, Keycard over
//! pcscd) accepts each other; impostors with a self-signed or an expired attestation are not
//! fleet peers. Uses the pcscd rig, so it runs in the `pcscd` group.

use std::path::{Path, PathBuf};

use libp2p::PeerId;
use roost_node::operator::OperatorKey;
use roost_tests::{
    metric_sum,
    process::run_roost,
    rig::{Card, PcscRig, Readers, SoftHsm, CARD_PIN, SOFTHSM_MODULE},
    wait_until, TestNode, WAIT,
};

use super::{node_dir, ok, path_str};

struct Member {
    dir: tempfile::TempDir,
    attestation: PathBuf,
}

fn attest_args<'a>(
    profile: &'a str,
    node: &'a Path,
    out: &'a Path,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "operator",
        "attest",
        "--profile",
        profile,
        "--node",
        path_str(node),
        "--fleet",
        "staging",
        "--roles",
        "relay,store,rendezvous",
        "--out",
        path_str(out),
    ];
    args.extend_from_slice(extra);
    args
}

fn member() -> Member {
    let (dir, _peer) = node_dir();
    let attestation = dir.path().join("node.attestation");
    Member { dir, attestation }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_attested_each_way_accepts_each_other_and_refuses_impostors() {
    roost_tests::init_tracing();
    // Operator keys: two on the HSM, one on the Keycard.
    let hsm = SoftHsm::new("fleet");
    let ops = hsm.dir.path();
    let init_hsm = |label: &str, key_type: &str| {
        ok(&hsm.roost(
            &[
                "operator",
                "init",
                "--backend",
                "pkcs11",
                "--module",
                SOFTHSM_MODULE,
                "--token",
                "fleet",
                "--key-label",
                label,
                "--key-type",
                key_type,
                "--profile",
                &format!("{label}.toml"),
            ],
            ops,
            &hsm.pin,
        ))
    };
    let key_k1 = init_hsm("k1", "secp256k1");
    let key_ed = init_hsm("ed", "ed25519");
    let mut rig = PcscRig::start(Readers::Vpcd);
    rig.insert(Card::default());
    let key_card = ok(&rig.roost(
        &[
            "operator",
            "init",
            "--backend",
            "keycard",
            "--profile",
            "card.toml",
        ],
        ops,
        CARD_PIN,
    ));
    let trusted: Vec<OperatorKey> = [&key_k1, &key_ed, &key_card]
        .iter()
        .map(|k| k.parse().unwrap())
        .collect();

    // Three members, one per way of signing.
    let members = [member(), member(), member()];
    ok(&hsm.roost(
        &attest_args(
            "k1.toml",
            members[0].dir.path(),
            &members[0].attestation,
            &[],
        ),
        ops,
        &hsm.pin,
    ));
    ok(&rig.roost(
        &attest_args(
            "card.toml",
            members[1].dir.path(),
            &members[1].attestation,
            &[],
        ),
        ops,
        CARD_PIN,
    ));
    ok(&hsm.roost(
        &attest_args(
            "ed.toml",
            members[2].dir.path(),
            &members[2].attestation,
            &[],
        ),
        ops,
        &hsm.pin,
    ));
    drop(rig);

    // Impostors: one self-signed with its own (untrusted) key, one with an expired attestation
    // from a trusted key.
    let self_signed = member();
    let own = tempfile::tempdir().unwrap();
    ok(&run_roost(
        &["operator", "init", "--backend", "file"],
        own.path(),
    ));
    ok(&run_roost(
        &attest_args(
            "roost-operator.toml",
            self_signed.dir.path(),
            &self_signed.attestation,
            &[],
        ),
        own.path(),
    ));
    let expired = member();
    ok(&hsm.roost(
        &attest_args(
            "k1.toml",
            expired.dir.path(),
            &expired.attestation,
            &["--valid-from", "2020-01-01T00:00:00Z", "--valid", "1d"],
        ),
        ops,
        &hsm.pin,
    ));

    let mut nodes = Vec::new();
    for m in members {
        let (path, keys) = (m.attestation.clone(), trusted.clone());
        nodes.push(
            TestNode::start_in(m.dir, move |c| {
                c.operator.attestation = Some(path);
                c.operator.trusted_keys = keys;
            })
            .await,
        );
    }
    let path = self_signed.attestation.clone();
    let impostor_self = TestNode::start_in(self_signed.dir, move |c| {
        c.operator.attestation = Some(path);
    })
    .await;
    let (path, keys) = (expired.attestation.clone(), trusted.clone());
    let impostor_expired = TestNode::start_in(expired.dir, move |c| {
        c.operator.attestation = Some(path);
        c.operator.trusted_keys = keys;
    })
    .await;

    nodes[0].connect(&nodes[1]).await;
    nodes[1].connect(&nodes[2]).await;
    nodes[2].connect(&nodes[0]).await;
    impostor_self.connect(&nodes[0]).await;
    impostor_expired.connect(&nodes[0]).await;

    // Every member verifies the other two.
    for (i, node) in nodes.iter().enumerate() {
        let others: Vec<PeerId> = nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| n.handle.peer_id())
            .collect();
        wait_until(WAIT, || async {
            others
                .iter()
                .all(|p| node.handle.fleet().is_member(p, "staging", None))
        })
        .await
        .unwrap_or_else(|_| panic!("node {i} did not verify its fleet peers"));
        assert_eq!(
            node.metric("roost_operator_fleet_peers").await,
            Some(2.0),
            "node {i}"
        );
    }
    let peer = nodes[0]
        .handle
        .fleet()
        .get(&nodes[1].handle.peer_id())
        .unwrap();
    assert_eq!(
        peer.operator.to_string(),
        key_card,
        "member 1 was attested by the Keycard"
    );

    // The impostors are refused, each for its reason, and are not fleet peers.
    wait_until(WAIT, || async {
        let m = nodes[0].metrics().await;
        metric_sum(
            &m,
            "roost_operator_attestation_rejections_total",
            &[("reason", "untrusted_key")],
        ) >= 1.0
            && metric_sum(
                &m,
                "roost_operator_attestation_rejections_total",
                &[("reason", "expired")],
            ) >= 1.0
    })
    .await
    .expect("impostors' attestations refused and counted");
    for impostor in [&impostor_self, &impostor_expired] {
        assert!(!nodes[0]
            .handle
            .fleet()
            .is_fleet_peer(&impostor.handle.peer_id()));
    }
    assert_eq!(
        nodes[0].metric("roost_operator_fleet_peers").await,
        Some(2.0)
    );

    for node in nodes {
        node.stop().await;
    }
    impostor_self.stop().await;
    impostor_expired.stop().await;
}
