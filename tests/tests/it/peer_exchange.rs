//! Peer exchange and ENRs against real nodes: a node's own ENR on /debug/v1/info, answers from
//! configured ENRs, learning from static peers, and the secure WebSocket listener.

use std::process::Command;

use libp2p::{multiaddr::Protocol, Multiaddr, PeerId};
use roost_node::{
    client::Client,
    peer_exchange::{self, status},
    swarm::ReqResProtocol,
    waku_enr,
};
use roost_tests::{http_get, init_tracing, metric_sum, wait_until, TestNode, WAIT};

/// The node's ENR as /debug/v1/info shows it.
async fn enr_of(node: &TestNode) -> String {
    let (_, body) = http_get(&format!("{}/debug/v1/info", node.http_url())).await;
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    info["enr"].as_str().expect("info has an enr").to_owned()
}

fn peers_of(enrs: &[Vec<u8>]) -> Vec<PeerId> {
    let mut peers: Vec<PeerId> = enrs
        .iter()
        .map(|raw| waku_enr::peer_id(&waku_enr::decode(raw).expect("valid ENR")).unwrap())
        .collect();
    peers.sort();
    peers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_info_shows_an_enr_with_the_nodes_identity_addresses_and_shards() {
    init_tracing();
    let node = TestNode::start().await;
    let enr = waku_enr::parse(&enr_of(&node).await).unwrap();
    assert_eq!(waku_enr::peer_id(&enr).unwrap(), node.handle.peer_id());
    assert_eq!(
        waku_enr::capabilities(&enr),
        Some(
            waku_enr::capabilities::RELAY
                | waku_enr::capabilities::STORE
                | waku_enr::capabilities::FILTER
                | waku_enr::capabilities::LIGHTPUSH
                | waku_enr::capabilities::SYNC
        ),
        "relay, store, filter, light push, store sync"
    );
    assert_eq!(waku_enr::shards(&enr), Some((1, (0..8).collect())));
    let addresses = waku_enr::addresses(&enr).unwrap();
    assert!(addresses.contains(&node.tcp_addr()), "{addresses:?}");
    assert!(addresses.contains(&node.ws_addr()), "{addresses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_come_from_configured_enrs_and_never_include_the_requester() {
    init_tracing();
    let b = TestNode::start().await;
    let c = TestNode::start().await;
    let (b_enr, c_enr) = (enr_of(&b).await, enr_of(&c).await);
    let a = TestNode::start_with(|cfg| cfg.peer_exchange.enrs = vec![b_enr, c_enr]).await;
    let client = Client::start(1).await.unwrap();

    let ask = |n: u64| {
        let client = &client;
        let addr = a.tcp_addr();
        async move {
            let raw = client
                .request(
                    ReqResProtocol::PeerExchange,
                    &addr,
                    peer_exchange::encode_request(n),
                )
                .await
                .expect("answered");
            peer_exchange::decode_response(&raw).unwrap()
        }
    };
    let reply = ask(5).await;
    assert_eq!(reply.status, status::OK);
    let mut expected = vec![b.handle.peer_id(), c.handle.peer_id()];
    expected.sort();
    assert_eq!(peers_of(&reply.enrs), expected);
    let one = ask(1).await;
    assert_eq!(one.enrs.len(), 1);

    // B asks A: it is offered C only.
    let raw = b
        .handle
        .request(
            ReqResProtocol::PeerExchange,
            a.handle.peer_id(),
            vec![a.tcp_addr()],
            peer_exchange::encode_request(10),
        )
        .await
        .unwrap();
    let reply = peer_exchange::decode_response(&raw).unwrap();
    assert_eq!(peers_of(&reply.enrs), vec![c.handle.peer_id()]);

    // Garbage is a 400.
    let raw = client
        .request(
            ReqResProtocol::PeerExchange,
            &a.tcp_addr(),
            vec![0xff, 0x01],
        )
        .await
        .unwrap();
    assert_eq!(
        peer_exchange::decode_response(&raw).unwrap().status,
        status::BAD_REQUEST
    );

    let m = a.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "roost_peer_exchange_requests_total",
            &[("outcome", "ok")]
        ),
        3.0
    );
    assert_eq!(
        metric_sum(
            &m,
            "roost_peer_exchange_requests_total",
            &[("outcome", "bad_request")]
        ),
        1.0
    );
    assert_eq!(
        metric_sum(&m, "roost_peer_exchange_enrs_sent_total", &[]),
        4.0
    );
    assert_eq!(
        metric_sum(
            &m,
            "roost_peer_exchange_book_enrs",
            &[("origin", "configured")]
        ),
        2.0
    );
    client.stop().await;
}

/// D's static peer A knows B's ENR: D learns it and hands it out in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrs_are_learned_from_static_peers() {
    init_tracing();
    let b = TestNode::start().await;
    let b_enr = enr_of(&b).await;
    let a = TestNode::start_with(|cfg| cfg.peer_exchange.enrs = vec![b_enr]).await;
    let a_addr = a.tcp_addr();
    let d = TestNode::start_with(|cfg| cfg.network.peers = vec![a_addr]).await;
    wait_until(WAIT, || async {
        metric_sum(
            &d.metrics().await,
            "roost_peer_exchange_book_enrs",
            &[("origin", "learned")],
        ) == 1.0
    })
    .await
    .expect("D learns B's ENR from A");
    let client = Client::start(1).await.unwrap();
    let raw = client
        .request(
            ReqResProtocol::PeerExchange,
            &d.tcp_addr(),
            peer_exchange::encode_request(10),
        )
        .await
        .unwrap();
    let reply = peer_exchange::decode_response(&raw).unwrap();
    assert_eq!(peers_of(&reply.enrs), vec![b.handle.peer_id()]);
    let m = d.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "roost_peer_exchange_queries_total",
            &[("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        metric_sum(
            &m,
            "roost_peer_exchange_learned_enrs_total",
            &[("outcome", "new")]
        ),
        1.0
    );
    client.stop().await;
}

/// Writes a self-signed certificate for 127.0.0.1 and localhost; returns (cert, key) paths.
pub fn self_signed_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs (scripts/setup --test installs it)");
    assert!(status.success(), "openssl made a certificate");
    (cert, key)
}

/// With a certificate the WebSocket listener is `/wss`: it completes a TLS handshake presenting
/// that certificate, and the ENR announces the `/wss` address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_listener_serves_tls_when_given_a_certificate() {
    init_tracing();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(certs.path());
    let node = TestNode::start_with(|c| {
        c.network.ws_tls_cert = Some(cert.clone());
        c.network.ws_tls_key = Some(key.clone());
    })
    .await;
    let wss = node.ws_addr();
    assert!(wss.iter().any(|p| matches!(p, Protocol::Wss(_))), "{wss}");
    let port = wss
        .iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap();
    let cert_path = cert.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{port}"),
                "-verify_return_error",
                "-CAfile",
            ])
            .arg(&cert_path)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl s_client runs")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Verify return code: 0 (ok)"),
        "TLS handshake with the node's certificate: {text}"
    );
    let enr = waku_enr::parse(&enr_of(&node).await).unwrap();
    let announced: Vec<Multiaddr> = waku_enr::addresses(&enr).unwrap();
    assert!(announced.contains(&wss), "{announced:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_tls_files_stop_the_node_with_the_key_and_path() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    for (cert, key, expect) in [
        (
            dir.path().join("missing.pem"),
            garbage.clone(),
            "network.ws_tls_cert",
        ),
        (garbage.clone(), garbage.clone(), "network.ws_tls_cert"),
    ] {
        let mut config = roost_tests::test_config(dir.path());
        config.network.ws_tls_cert = Some(cert);
        config.network.ws_tls_key = Some(key);
        let err = roost_node::Node::start(config)
            .await
            .err()
            .expect("start fails");
        let text = err.to_string();
        assert!(text.contains(expect), "{text}");
    }
    let (cert, _) = self_signed_cert(dir.path());
    let mut config = roost_tests::test_config(dir.path());
    config.network.ws_tls_cert = Some(cert);
    config.network.ws_tls_key = Some(garbage);
    let err = roost_node::Node::start(config)
        .await
        .err()
        .expect("start fails");
    assert!(err.to_string().contains("network.ws_tls_key"), "{err}");
}

/// Over the per-peer quota a peer exchange request gets 429 and no ENRs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_quota_requests_get_429() {
    init_tracing();
    let b = TestNode::start().await;
    let b_enr = enr_of(&b).await;
    let a = TestNode::start_with(|c| {
        c.peer_exchange.enrs = vec![b_enr];
        c.throttle.peer_exchange = "1/1h per-peer".parse().unwrap();
        c.throttle.ban_threshold = 0;
    })
    .await;
    let client = Client::start(1).await.unwrap();
    let mut replies = Vec::new();
    for _ in 0..2 {
        let raw = client
            .request(
                ReqResProtocol::PeerExchange,
                &a.tcp_addr(),
                peer_exchange::encode_request(5),
            )
            .await
            .unwrap();
        replies.push(peer_exchange::decode_response(&raw).unwrap());
    }
    assert_eq!((replies[0].status, replies[0].enrs.len()), (status::OK, 1));
    assert_eq!(
        (replies[1].status, replies[1].enrs.len()),
        (status::TOO_MANY_REQUESTS, 0)
    );
    assert_eq!(
        metric_sum(
            &a.metrics().await,
            "roost_peer_exchange_requests_total",
            &[("outcome", "throttled")]
        ),
        1.0
    );
    client.stop().await;
}
