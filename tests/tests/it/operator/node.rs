//! A node with an attestation: start-up checks, serving it, expiry reporting and renewal.

use std::time::{Duration, SystemTime};

use libp2p::PeerId;
use roost_node::{
    client::Client,
    operator::{
        attestation::unix, signer::file::FileSigner, Claims, OperatorKey, Role, SignedAttestation,
    },
    swarm::ReqResProtocol,
};
use roost_tests::{process::roost_command, wait_until, TestNode, WAIT};

use super::{node_dir, one_line_error, path_str};

/// An attestation for `node` signed by a fresh file key, valid for `valid` from now.
fn attestation(
    signer: &mut FileSigner,
    node: PeerId,
    valid: Duration,
    seq: u64,
) -> SignedAttestation {
    let now = unix(SystemTime::now());
    Claims {
        fleet: "staging".into(),
        node,
        roles: vec![Role::Relay],
        issued_at: now,
        expires_at: now + valid.as_secs(),
        seq,
    }
    .sign(signer)
    .unwrap()
}

#[test]
fn a_node_refuses_to_start_with_another_nodes_attestation() {
    let (dir, _me) = node_dir();
    let mut signer =
        FileSigner::from_keypair(libp2p::identity::Keypair::generate_ed25519()).unwrap();
    let other = attestation(&mut signer, PeerId::random(), Duration::from_secs(3600), 1);
    let file = dir.path().join("node.attestation");
    std::fs::write(&file, other.to_file_text()).unwrap();
    let out = roost_command(
        &[
            "run",
            "--data-dir",
            path_str(dir.path()),
            "--operator-attestation",
            path_str(&file),
        ],
        dir.path(),
    )
    .env("ROOST_NETWORK_TCP_PORT", "0")
    .env("ROOST_NETWORK_WS_PORT", "0")
    .env("ROOST_HTTP_ADDRESS", "127.0.0.1:0")
    .env("ROOST_REST_ADDRESS", "127.0.0.1:0")
    .env("ROOST_NETWORK_LISTEN_IP", "127.0.0.1")
    .output()
    .unwrap();
    // The node logs nothing before it refuses: the one line is the error.
    one_line_error(&out, 1, "but this node is");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("roost operator attest --node"),
        "says how to fix it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serves_its_attestation_reports_expiry_and_picks_up_renewals() {
    roost_tests::init_tracing();
    let (dir, me) = node_dir();
    let mut signer =
        FileSigner::from_keypair(libp2p::identity::Keypair::generate_secp256k1()).unwrap();
    let key = OperatorKey::new(signer_public(&signer)).unwrap();
    let key_text = key.to_string();
    let file = dir.path().join("node.attestation");
    let first = attestation(&mut signer, me, Duration::from_secs(3600), 1);
    std::fs::write(&file, first.to_file_text()).unwrap();

    let path = file.clone();
    let node = TestNode::start_in(dir, move |c| {
        c.operator.attestation = Some(path);
        c.operator.trusted_keys = vec![key];
        c.operator.expiry_warning = Duration::from_secs(2 * 3600);
    })
    .await;
    assert!(node
        .handle
        .info()
        .protocols
        .contains(&"/roost/attestation/1.0.0".to_owned()));

    // Expires within the warning window: the gauge says how long is left and health degrades.
    let left = node
        .metric("roost_operator_attestation_expiry_seconds")
        .await
        .expect("expiry gauge");
    assert!((3000.0..=3600.0).contains(&left), "{left}");
    let (_, health) = roost_tests::http_get(&format!("{}/health", node.http_url())).await;
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(
        health["components"]["operator"]["status"], "degraded",
        "{health}"
    );

    // /debug/v1/info shows it (fleet tooling audits the signer).
    let (_, info) = roost_tests::http_get(&format!("{}/debug/v1/info", node.http_url())).await;
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["attestation"]["fleet"], "staging");
    assert_eq!(
        info["attestation"]["operator_key"].as_str(),
        Some(key_text.as_str())
    );

    // Served over /roost/attestation/1.0.0, byte for byte.
    let client = Client::start(1).await.unwrap();
    let fetch = || async {
        client
            .request(ReqResProtocol::Attestation, &node.tcp_addr(), Vec::new())
            .await
            .unwrap()
    };
    assert_eq!(fetch().await, first.bytes);

    // Renewal: the file is replaced and the node serves the new one without a restart.
    let renewed = attestation(&mut signer, me, Duration::from_secs(30 * 24 * 3600), 2);
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, renewed.to_file_text()).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    wait_until(WAIT, || async { fetch().await == renewed.bytes })
        .await
        .expect("renewed attestation served");
    wait_until(WAIT, || async {
        node.metric("roost_operator_attestation_expiry_seconds")
            .await
            .is_some_and(|v| v > 29.0 * 24.0 * 3600.0)
    })
    .await
    .expect("expiry gauge follows the renewal");
    let (_, health) = roost_tests::http_get(&format!("{}/health", node.http_url())).await;
    assert!(health.contains("\"status\":\"ok\""), "{health}");

    client.stop().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_attestation_exports_no_expiry_and_does_not_offer_the_protocol() {
    let node = TestNode::start().await;
    assert_eq!(
        node.metric("roost_operator_attestation_expiry_seconds")
            .await,
        None
    );
    assert!(!node
        .handle
        .info()
        .protocols
        .contains(&"/roost/attestation/1.0.0".to_owned()));
    let client = Client::start(1).await.unwrap();
    let err = client
        .request(ReqResProtocol::Attestation, &node.tcp_addr(), Vec::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not support"), "{err}");
    client.stop().await;
    node.stop().await;
}

fn signer_public(signer: &FileSigner) -> libp2p::identity::PublicKey {
    use roost_node::operator::Signer;
    signer.public_key().public_key().clone()
}
