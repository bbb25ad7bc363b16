//! Relay across real nodes on loopback: propagation, validation at the middle node, cluster
//! checks and static peers.

use std::time::Duration;

use roost_node::{message::WakuMessage, swarm::PublishError};
use roost_tests::{
    bare::{BareOptions, BarePeer},
    init_tracing, metric_sum, wait_until, TestNode, WAIT,
};

const TOPIC: &str = "/waku/2/rs/1/0";

/// A–B–C where A and C are not connected: a message published at A reaches C exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_crosses_a_three_node_chain_exactly_once() {
    init_tracing();
    let a = TestNode::start().await;
    let b = TestNode::start().await;
    let c = TestNode::start().await;
    a.connect(&b).await;
    c.connect(&b).await;
    assert!(!a.connected_to(c.handle.peer_id()).await);
    b.wait_for_mesh(TOPIC, 2).await;
    c.wait_for_mesh(TOPIC, 1).await;

    let mut at_c = c.handle.subscribe();
    let message = WakuMessage::new("/roost/1/chain/proto", b"hello C".to_vec());
    let receipt = a
        .handle
        .publish(TOPIC, message.clone())
        .await
        .expect("publish at A");
    assert_eq!(receipt.hash, message.hash(TOPIC));
    assert_eq!(receipt.relay_peers, 1);

    let got = tokio::time::timeout(WAIT, at_c.recv())
        .await
        .expect("C receives")
        .expect("channel open");
    assert_eq!(got.message, message);
    assert_eq!(got.hash, receipt.hash);
    assert_eq!(got.source, Some(b.handle.peer_id()));
    assert_eq!(&*got.pubsub_topic, TOPIC);
    // Gossip (IHAVE/IWANT) must not bring a second copy.
    let second = tokio::time::timeout(Duration::from_secs(3), at_c.recv()).await;
    assert!(second.is_err(), "C got the message twice: {second:?}");

    let b_metrics = b.metrics().await;
    assert_eq!(
        metric_sum(
            &b_metrics,
            "roost_relay_messages_validated_total",
            &[("result", "accept")]
        ),
        1.0
    );
}

/// The series nwaku exports under its own names (dashboards and the Waku interop suite read
/// them) follow the node: peers, pubsub peers and topics, mesh, dials, relayed messages and
/// their sizes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nwaku_metric_names_follow_the_node() {
    init_tracing();
    let a = TestNode::start_with(|c| c.relay.shards = vec![0, 1]).await;
    let b = TestNode::start_with(|c| c.relay.shards = vec![0, 1]).await;
    assert_eq!(
        b.metric("waku_node_messages_total{type=\"relay\"}").await,
        Some(0.0)
    );
    assert_eq!(b.metric("libp2p_pubsub_topics").await, Some(2.0));
    assert_eq!(
        b.metric("libp2p_pubsub_subscriptions_total").await,
        Some(2.0)
    );
    a.connect(&b).await;
    b.wait_for_mesh(TOPIC, 1).await;
    let message = WakuMessage::new("/roost/1/names/proto", vec![7u8; 2048]);
    a.handle
        .publish(TOPIC, message)
        .await
        .expect("publish at A");
    wait_until(WAIT, || async {
        b.metric("waku_node_messages_total{type=\"relay\"}").await == Some(1.0)
            && b.metric("libp2p_peers").await == Some(1.0)
            && b.metric("libp2p_pubsub_peers").await == Some(1.0)
            && b.metric("libp2p_gossipsub_peers_per_topic_mesh{topic=\"other\"}")
                .await
                >= Some(1.0)
            && b.metric("waku_peer_store_size").await >= Some(1.0)
    })
    .await
    .expect("b's nwaku-named series show the peer and the message");
    // 2 KiB and a little framing: in nwaku's (KiB) bucket up to 3.
    assert_eq!(
        b.metric("waku_histogram_message_size_bucket{le=\"1.0\"}")
            .await,
        Some(0.0)
    );
    assert_eq!(
        b.metric("waku_histogram_message_size_bucket{le=\"3.0\"}")
            .await,
        Some(1.0)
    );
    assert!(a.metric("libp2p_total_dial_attempts_total").await >= Some(1.0));
}

/// A raw gossipsub peer sends B what a Roost node never would; B rejects each message with its
/// reason on /metrics and C never sees them, while a valid message still goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_messages_are_rejected_at_the_relay_and_counted_by_reason() {
    init_tracing();
    let b = TestNode::start().await;
    let c = TestNode::start().await;
    c.connect(&b).await;
    let attacker = BarePeer::start(BareOptions::default()).await.unwrap();
    attacker.dial(b.tcp_addr()).await.unwrap();
    wait_until(WAIT, || async { attacker.mesh_peers(TOPIC).await >= 1 })
        .await
        .expect("attacker joins B's mesh");
    b.wait_for_mesh(TOPIC, 2).await;

    let mut at_c = c.handle.subscribe();
    let garbage = vec![0xff, 0xff, 0xff, 0x01];
    let oversize =
        WakuMessage::new("/roost/1/big/proto", vec![7u8; 150 * 1024 + 1]).encode_to_vec();
    let mut long_meta = WakuMessage::new("/roost/1/meta/proto", b"m".to_vec());
    long_meta.meta = Some(vec![1u8; 65]);
    // No content topic at all (a free-form one is relayed, as nwaku relays it).
    let bad_topic = WakuMessage::new("", b"t".to_vec()).encode_to_vec();
    for data in [garbage, oversize, long_meta.encode_to_vec(), bad_topic] {
        attacker.publish(TOPIC, data).await.expect("bare publish");
    }
    let expected = [
        ("decode", 1.0),
        ("oversize", 1.0),
        ("meta_too_long", 1.0),
        ("content_topic", 1.0),
    ];
    let counted = wait_until(WAIT, || async {
        let m = b.metrics().await;
        expected.iter().all(|(reason, n)| {
            metric_sum(
                &m,
                "roost_relay_messages_validated_total",
                &[("result", "reject"), ("reason", reason)],
            ) == *n
        })
    })
    .await;
    if counted.is_err() {
        panic!("B did not count the rejections:\n{}", b.metrics().await);
    }

    let valid = WakuMessage::new("/roost/1/ok/proto", b"fine".to_vec());
    attacker
        .publish(TOPIC, valid.encode_to_vec())
        .await
        .unwrap();
    let got = tokio::time::timeout(WAIT, at_c.recv())
        .await
        .expect("valid message reaches C")
        .unwrap();
    assert_eq!(got.message, valid, "C must only ever see the valid message");
    assert!(tokio::time::timeout(Duration::from_secs(2), at_c.recv())
        .await
        .is_err());
}

/// Local publishes are validated too, with typed errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_publish_validates_before_sending() {
    init_tracing();
    let a = TestNode::start().await;
    let mut bad = WakuMessage::new("/roost/1/x/proto", vec![]);
    bad.meta = Some(vec![0; 65]);
    assert!(matches!(
        a.handle.publish(TOPIC, bad).await,
        Err(PublishError::Invalid(_))
    ));
    let ok = WakuMessage::new("/roost/1/x/proto", vec![]);
    assert!(matches!(
        a.handle.publish("/waku/2/rs/9/0", ok.clone()).await,
        Err(PublishError::Invalid(_))
    ));
    // No peers: accepted locally, sent to nobody.
    let mut local = a.handle.subscribe();
    let receipt = a.handle.publish(TOPIC, ok.clone()).await.unwrap();
    assert_eq!(receipt.relay_peers, 0);
    assert_eq!(local.recv().await.unwrap().message, ok);
}

/// A node of another cluster is disconnected after the metadata exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_of_another_cluster_is_disconnected() {
    init_tracing();
    let a = TestNode::start().await;
    let other = TestNode::start_with(|c| {
        c.relay.cluster_id = 2;
        c.relay.shards = vec![0];
    })
    .await;
    other.handle.dial(a.tcp_addr()).await.unwrap();
    // Both sides ask for metadata on connect; whichever reads the other's answer first hangs up,
    // and the other side's own request then fails with the closed connection.
    wait_until(WAIT, || async {
        let wrong = |m: String| {
            metric_sum(
                &m,
                "roost_peer_disconnects_total",
                &[("reason", "wrong_cluster")],
            )
        };
        wrong(a.metrics().await) + wrong(other.metrics().await) >= 1.0
    })
    .await
    .expect("one side disconnects the peer of the other cluster");
    wait_until(WAIT, || async {
        !a.connected_to(other.handle.peer_id()).await
    })
    .await
    .expect("connection is closed");

    // A peer of the same cluster stays.
    let same = TestNode::start().await;
    same.connect(&a).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(a.connected_to(same.handle.peer_id()).await);
}

/// A gossipsub peer that does not speak Waku metadata cannot prove its cluster: the node keeps
/// it connected (it may want rendezvous, identify, ping) and counts it as generic, but keeps it
/// out of relay: no mesh, and what it publishes goes nowhere. The same peer with metadata
/// joins the mesh and relays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_without_metadata_stays_connected_but_out_of_relay() {
    init_tracing();
    let a = TestNode::start().await;
    let mut at_a = a.handle.subscribe();
    let generic = BarePeer::start(BareOptions {
        speaks_metadata: false,
        ..BareOptions::default()
    })
    .await
    .unwrap();
    generic.dial(a.tcp_addr()).await.unwrap();
    wait_until(WAIT, || async {
        let m = a.metrics().await;
        metric_sum(&m, "roost_peers_by_kind", &[("kind", "generic")]) == 1.0
    })
    .await
    .expect("A counts the peer as generic");
    let health = a.health().await;
    assert_eq!(
        health["components"]["network"]["detail"]["peer_kinds"]["generic"], 1,
        "{health}"
    );
    // A GRAFT that came before the metadata verdict is undone at A's next heartbeat (the
    // peer's score is negative), and no later one is accepted.
    let a_mesh = || async {
        a.handle
            .network_status()
            .await
            .map(|s| s.shards.iter().map(|sh| sh.mesh_peers).sum::<usize>())
            .unwrap_or(usize::MAX)
    };
    wait_until(WAIT, || async {
        a_mesh().await == 0 && generic.mesh_peers(TOPIC).await == 0
    })
    .await
    .expect("the generic peer is out of A's mesh");
    // Several more heartbeats: gossipsub would have grafted it again by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(a.connected_to(generic.peer_id).await, "still connected");
    assert_eq!(a_mesh().await, 0, "not in A's mesh");
    assert_eq!(generic.mesh_peers(TOPIC).await, 0, "A not in its mesh");
    let ignored = WakuMessage::new("/roost/1/generic/proto", b"from nowhere".to_vec());
    generic
        .publish(TOPIC, ignored.encode_to_vec())
        .await
        .expect("bare publish (to its fanout)");
    assert!(
        tokio::time::timeout(Duration::from_secs(2), at_a.recv())
            .await
            .is_err(),
        "A ignores what a peer outside relay sends"
    );
    let m = a.metrics().await;
    for reason in ["metadata_malformed", "wrong_cluster"] {
        assert_eq!(
            metric_sum(&m, "roost_peer_disconnects_total", &[("reason", reason)]),
            0.0
        );
    }

    // The same kind of peer that answers metadata with A's cluster relays.
    let waku = BarePeer::start(BareOptions::default()).await.unwrap();
    waku.dial(a.tcp_addr()).await.unwrap();
    wait_until(WAIT, || async { waku.mesh_peers(TOPIC).await >= 1 })
        .await
        .expect("a Waku peer joins A's mesh");
    let relayed = WakuMessage::new("/roost/1/waku/proto", b"from a waku peer".to_vec());
    waku.publish(TOPIC, relayed.encode_to_vec()).await.unwrap();
    let got = tokio::time::timeout(WAIT, at_a.recv())
        .await
        .expect("A accepts the Waku peer's message")
        .unwrap();
    assert_eq!(got.message, relayed);
    wait_until(WAIT, || async {
        let m = a.metrics().await;
        metric_sum(&m, "roost_peers_by_kind", &[("kind", "waku")]) == 1.0
            && metric_sum(&m, "roost_peers_by_kind", &[("kind", "generic")]) == 1.0
    })
    .await
    .expect("A counts one Waku and one generic peer");
}

/// Twenty light clients behind one address (a NAT; no exemption for it) push and stay: the
/// gossipsub IP colocation penalty sinks every one of them below graylist, but a light client
/// is not a relay peer, and a score it earned by sharing an address is no reason to ban it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn light_clients_behind_one_address_are_not_banned_for_colocation() {
    init_tracing();
    let content_topic = "/roost/1/nat/proto";
    let a = TestNode::start_with(|c| {
        c.throttle.exempt_ips.clear();
        // Connection caps are not what this test is about.
        c.throttle.max_connections_per_ip = 64;
        c.throttle.connections = "unlimited".parse().unwrap();
    })
    .await;
    // No relay peer for A: one behind the same address would be pruned from the mesh by the
    // same colocation penalty (gossipsub scores every connection from an address). Each push
    // is answered "no relay peers"; what matters here is that the clients stay.
    let mut clients = Vec::new();
    for i in 0..20 {
        let client = roost_node::client::Client::start(1).await.unwrap();
        let message = WakuMessage::new(content_topic, format!("behind the NAT {i}").into_bytes());
        let reply = client
            .light_push(
                &a.tcp_addr(),
                roost_node::lightpush::Version::V3,
                None,
                &message,
            )
            .await
            .expect("push answered");
        assert_eq!(reply.status.0, 505, "push {i}: {reply:?}");
        clients.push(client);
    }
    // Several throttle ticks (one a second) with every client connected.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = a.metrics().await;
    assert_eq!(metric_sum(&m, "roost_throttle_bans_total", &[]), 0.0, "{m}");
    assert_eq!(
        metric_sum(
            &m,
            "roost_peer_disconnects_total",
            &[("reason", "graylisted")]
        ),
        0.0
    );
    for client in &clients {
        assert!(a.connected_to(client.handle().peer_id()).await);
    }
}

/// Static peers are dialled at start and redialled after they come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_peers_are_dialled_and_redialled() {
    init_tracing();
    let b = TestNode::start().await;
    let b_addr = b.tcp_addr();
    let b_id = b.handle.peer_id();
    let a = TestNode::start_with(|c| c.network.peers = vec![b_addr.clone()]).await;
    wait_until(WAIT, || async { a.connected_to(b_id).await })
        .await
        .expect("A dials its static peer");

    // Restart B on the same data dir (same identity) and the same port.
    let port = b_addr
        .iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap();
    let dir = b.stop().await;
    wait_until(WAIT, || async { !a.connected_to(b_id).await })
        .await
        .unwrap();
    let b = TestNode::start_in(dir, |c| c.network.tcp_port = port).await;
    assert_eq!(b.handle.peer_id(), b_id);
    wait_until(WAIT, || async { a.connected_to(b_id).await })
        .await
        .expect("A redials its static peer after it returns");
    let m = a.metrics().await;
    assert!(
        metric_sum(
            &m,
            "roost_static_peer_dials_total",
            &[("reason", "connected")]
        ) >= 2.0
    );
}

/// The light client and the generic request path: ask a node for its metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_requests_reach_a_node_and_come_back() {
    use prost::Message as _;
    init_tracing();
    let node = TestNode::start_with(|c| {
        c.relay.cluster_id = 16;
        c.relay.shards = vec![32, 64];
    })
    .await;
    let client = roost_node::client::Client::start(16).await.unwrap();
    let request = roost_node::metadata::WakuMetadata::new(16, &[]).encode_to_vec();
    let response = client
        .request(
            roost_node::swarm::ReqResProtocol::Metadata,
            &node.tcp_addr(),
            request,
        )
        .await
        .expect("metadata response");
    let theirs = roost_node::metadata::WakuMetadata::decode_bytes(&response).unwrap();
    assert_eq!(theirs.cluster_id, Some(16));
    assert_eq!(theirs.announced_shards(), &[32, 64]);
    let no_id: libp2p::Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
    assert!(client
        .request(roost_node::swarm::ReqResProtocol::Metadata, &no_id, vec![])
        .await
        .is_err());
    client.stop().await;
}
