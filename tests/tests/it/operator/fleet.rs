//! A fleet of three nodes attested each way (SoftHSM2 secp256k1, SoftHSM2 Ed25519, Keycard over
//! pcscd) accepts each other; impostors with a self-signed or an expired attestation are not
//! fleet peers, get no fleet quotas and are refused the fleet's rendezvous namespaces. Uses the
//! pcscd rig, so it runs in the `pcscd` group.

use std::path::{Path, PathBuf};

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use roost_node::{
    operator::OperatorKey,
    rendezvous::{client::read_discover_response, proto},
    Config,
};
use roost_tests::{
    metric_sum,
    process::run_roost,
    rdv::{Flavour, RdvPeer},
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

    // Member 0 is also the fleet's rendezvous point; everyone registers there once a second.
    let fleet_config = |c: &mut Config, attestation: PathBuf, keys: Vec<OperatorKey>| {
        c.operator.attestation = Some(attestation);
        c.operator.trusted_keys = keys;
        c.relay.shards = vec![0];
        c.rendezvous.register_interval = Duration::from_secs(1);
        // The point must see every refusal, not the impostors' REGISTER quota running out.
        c.throttle.rendezvous_register = "600/1m per-peer; 500/1s global".parse().unwrap();
    };
    let mut members = members.into_iter();
    let mut nodes = Vec::new();
    let first = members.next().unwrap();
    let (path, keys) = (first.attestation.clone(), trusted.clone());
    nodes.push(TestNode::start_in(first.dir, |c| fleet_config(c, path, keys)).await);
    let point = nodes[0].tcp_addr();
    let with_point = |c: &mut Config| c.rendezvous.points = vec![point.clone()];
    for m in members {
        let (path, keys) = (m.attestation.clone(), trusted.clone());
        nodes.push(
            TestNode::start_in(m.dir, |c| {
                fleet_config(c, path, keys);
                with_point(c);
            })
            .await,
        );
    }
    let path = self_signed.attestation.clone();
    let impostor_self = TestNode::start_in(self_signed.dir, |c| {
        fleet_config(c, path, Vec::new());
        with_point(c);
    })
    .await;
    let (path, keys) = (expired.attestation.clone(), trusted.clone());
    let impostor_expired = TestNode::start_in(expired.dir, |c| {
        fleet_config(c, path, keys);
        with_point(c);
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

    // Fleet quotas from the throttle for members only.
    let throttled = nodes[0].handle.throttle().fleet_members();
    for member in &nodes[1..] {
        assert!(throttled.contains(&member.handle.peer_id()));
    }
    for impostor in [&impostor_self, &impostor_expired] {
        assert!(!throttled.contains(&impostor.handle.peer_id()));
    }

    // The rendezvous point lists the members under the fleet's namespace, never the impostors,
    // and counts why it refused them.
    let mut asker = RdvPeer::ed25519().unwrap();
    let members_listed = [nodes[1].handle.peer_id(), nodes[2].handle.peer_id()];
    // Polled (the first REGISTER may come before the point verified the member).
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut listed = Vec::new();
    while tokio::time::Instant::now() < deadline {
        listed = discover(&mut asker, &point, "/roost/staging/relay").await;
        if members_listed.iter().all(|m| listed.contains(m)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        members_listed.iter().all(|m| listed.contains(m)),
        "members registered under /roost/staging/relay: {listed:?}"
    );
    wait_until(WAIT, || async {
        let m = nodes[0].metrics().await;
        let refused = |reason| {
            metric_sum(
                &m,
                "roost_operator_fleet_namespace_refusals_total",
                &[("reason", reason)],
            )
        };
        refused("untrusted_key") >= 1.0 && refused("expired") >= 1.0
    })
    .await
    .expect("the impostors' registrations refused, by reason");
    for ns in [
        "/roost/staging/relay",
        "/roost/staging/store",
        "/roost/staging/rendezvous",
    ] {
        let listed = discover(&mut asker, &point, ns).await;
        for impostor in [&impostor_self, &impostor_expired] {
            assert!(
                !listed.contains(&impostor.handle.peer_id()),
                "{ns}: {listed:?}"
            );
        }
    }

    for node in nodes {
        node.stop().await;
    }
    impostor_self.stop().await;
    impostor_expired.stop().await;
}

/// The peers registered at `point` under `ns`.
async fn discover(asker: &mut RdvPeer, point: &Multiaddr, ns: &str) -> Vec<PeerId> {
    let request = proto::discover_request(Some(ns), None, None);
    let response = asker
        .request(point, Flavour::Libp2p, request)
        .await
        .expect("the point answers");
    let (registrations, _) = read_discover_response(&response).expect("a DISCOVER response");
    registrations
        .into_iter()
        .filter_map(|r| r.record.ok().map(|record| record.peer))
        .collect()
}
