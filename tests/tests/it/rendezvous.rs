//! Rendezvous across real nodes on loopback: fleet discovery through one point, every record
//! flavour clients send (go-libp2p's standard record built byte by byte from the specs,
//! nwaku's WakuPeerRecord, rust-libp2p's own client, the old unsigned PeerInfo), persistence
//! across a restart, TTL expiry, caps, cookie paging, bad input and the CLI.

use std::time::Duration;

use futures::StreamExt;
use libp2p::{
    identify, identity::Keypair, noise, ping, swarm::NetworkBehaviour, swarm::SwarmEvent, tcp,
    yamux, Multiaddr, PeerId,
};
use prost::Message as _;
use roost_node::{
    message::WakuMessage,
    rendezvous::{
        client::{read_discover_response, read_register_response, ResponseError},
        proto::{self, Status},
        record::{self, Flavour as RecordFlavour},
    },
    Config,
};
use roost_tests::{
    init_tracing, metric_sum,
    process::run_roost,
    rdv::{Flavour, RdvPeer},
    wait_until, TestNode, WAIT,
};

const TOPIC: &str = "/waku/2/rs/1/0";

/// A node that is only a rendezvous point: no relay (and so no store, light push or filter),
/// so peers can only meet through discovery.
fn point_only(c: &mut Config) {
    c.relay.enabled = false;
    c.store.enabled = false;
    c.lightpush.enabled = false;
    c.filter.enabled = false;
}

async fn point(adjust: impl FnOnce(&mut Config)) -> TestNode {
    TestNode::start_with(|c| {
        point_only(c);
        adjust(c);
    })
    .await
}

fn addr(port: u16) -> Multiaddr {
    format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
}

/// A standard REGISTER for `peer`'s own identity.
fn register_request(peer: &RdvPeer, ns: &str, ttl: Option<u64>) -> Vec<u8> {
    let envelope = record::standard_envelope(&peer.keypair, vec![addr(4001)]).unwrap();
    proto::register_request(ns, envelope, ttl)
}

async fn register(
    peer: &mut RdvPeer,
    point: &Multiaddr,
    ns: &str,
    ttl: Option<u64>,
) -> Result<u64, ResponseError> {
    let request = register_request(peer, ns, ttl);
    let response = peer
        .request(point, Flavour::Libp2p, request)
        .await
        .expect("point answers");
    read_register_response(&response)
}

/// The peers a DISCOVER of `ns` returns, and the cookie.
async fn discover(
    peer: &mut RdvPeer,
    point: &Multiaddr,
    ns: &str,
    limit: Option<u64>,
    cookie: Option<Vec<u8>>,
) -> Result<(Vec<PeerId>, Option<Vec<u8>>), ResponseError> {
    let request = proto::discover_request(Some(ns), limit, cookie);
    let response = peer
        .request(point, Flavour::Libp2p, request)
        .await
        .expect("point answers");
    let (registrations, cookie) = read_discover_response(&response)?;
    let peers = registrations
        .into_iter()
        .map(|r| r.record.expect("records from the point verify").peer)
        .collect();
    Ok((peers, cookie))
}

// === hand-written protobuf, from the specs' byte layouts ===

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(tag: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint(tag << 3 | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn varint_field(tag: u64, v: u64, out: &mut Vec<u8>) {
    varint(tag << 3, out);
    varint(v, out);
}

/// RFC 0002: `varint(len(domain)) domain varint(len(type)) type varint(len(payload)) payload`.
fn rfc0002_signed_bytes(domain: &str, payload_type: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(domain.len() as u64, &mut out);
    out.extend_from_slice(domain.as_bytes());
    varint(payload_type.len() as u64, &mut out);
    out.extend_from_slice(payload_type);
    varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

/// go-libp2p's `crypto.pb.PublicKey { Type = 1; Data = 2 }` (Ed25519 = 1, Secp256k1 = 2).
fn public_key_proto(key: &Keypair) -> Vec<u8> {
    let (key_type, data) = match key.public().try_into_ed25519() {
        Ok(ed) => (1, ed.to_bytes().to_vec()),
        Err(_) => (
            2,
            key.public()
                .try_into_secp256k1()
                .unwrap()
                .to_bytes()
                .to_vec(),
        ),
    };
    let mut out = Vec::new();
    varint_field(1, key_type, &mut out);
    bytes_field(2, &data, &mut out);
    out
}

/// RFC 0002 `Envelope { public_key = 1; payload_type = 2; payload = 3; signature = 5 }`.
fn envelope(key: &Keypair, domain: &str, payload_type: &[u8], payload: &[u8]) -> Vec<u8> {
    let signature = key
        .sign(&rfc0002_signed_bytes(domain, payload_type, payload))
        .unwrap();
    let mut out = Vec::new();
    bytes_field(1, &public_key_proto(key), &mut out);
    bytes_field(2, payload_type, &mut out);
    bytes_field(3, payload, &mut out);
    bytes_field(5, &signature, &mut out);
    out
}

/// What go-libp2p's `record.Seal(&peer.PeerRecord{...})` produces: RFC 0003
/// `PeerRecord { peer_id = 1; seq = 2; repeated AddressInfo addresses = 3 { multiaddr = 1 } }`
/// in an envelope with domain `libp2p-peer-record` and payload type 0x0301.
fn go_signed_peer_record(key: &Keypair, addresses: &[Multiaddr], seq: u64) -> Vec<u8> {
    let mut payload = Vec::new();
    bytes_field(1, &key.public().to_peer_id().to_bytes(), &mut payload);
    varint_field(2, seq, &mut payload);
    for a in addresses {
        let mut info = Vec::new();
        bytes_field(1, &a.to_vec(), &mut info);
        bytes_field(3, &info, &mut payload);
    }
    envelope(key, "libp2p-peer-record", &[0x03, 0x01], &payload)
}

/// nwaku's `SignedPayload[WakuPeerRecord]`: `{ peerId = 1; seqNo = 2; repeated multiaddrs = 3;
/// mixKey = 4 }`, domain `libp2p-custom-peer-record`, payload type `30 00 00`.
fn nwaku_signed_peer_record(key: &Keypair, addresses: &[Multiaddr], seq: u64) -> Vec<u8> {
    let mut payload = Vec::new();
    bytes_field(1, &key.public().to_peer_id().to_bytes(), &mut payload);
    varint_field(2, seq, &mut payload);
    for a in addresses {
        bytes_field(3, &a.to_vec(), &mut payload);
    }
    bytes_field(4, b"mix-public-key-hex", &mut payload);
    envelope(
        key,
        "libp2p-custom-peer-record",
        &[0x30, 0x00, 0x00],
        &payload,
    )
}

/// A proto3 (go) `Message`: a zero `type` (REGISTER) is not written at all.
fn go_register_message(ns: &str, signed_peer_record: &[u8], ttl: u64) -> Vec<u8> {
    let mut register = Vec::new();
    bytes_field(1, ns.as_bytes(), &mut register);
    bytes_field(2, signed_peer_record, &mut register);
    varint_field(3, ttl, &mut register);
    let mut message = Vec::new();
    bytes_field(2, &register, &mut message);
    message
}

fn go_discover_message(ns: &str, limit: u64) -> Vec<u8> {
    let mut discover = Vec::new();
    bytes_field(1, ns.as_bytes(), &mut discover);
    varint_field(2, limit, &mut discover);
    let mut message = Vec::new();
    varint_field(1, 3, &mut message);
    bytes_field(5, &discover, &mut message);
    message
}

/// The raw `signedPeerRecord` bytes of each registration in a DISCOVER response.
fn raw_records(response: &[u8]) -> Vec<Vec<u8>> {
    let m = proto::Message::decode(response).unwrap();
    let body = proto::DiscoverResponse::decode(&m.discover_response.unwrap()[..]).unwrap();
    assert_eq!(body.status, Some(0), "text: {:?}", body.status_text);
    body.registrations
        .into_iter()
        .map(|r| r.signed_peer_record.unwrap())
        .collect()
}

// === tests ===

/// One point and six nodes that know only the point: they register under rs/1/0, discover
/// each other, dial, and form a relay mesh in which every node's message reaches all others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_nodes_given_only_a_rendezvous_point_find_each_other_and_relay_to_all() {
    init_tracing();
    let rdv = point(|_| {}).await;
    let rdv_addr = rdv.tcp_addr();
    let mut nodes = Vec::new();
    for _ in 0..6 {
        let a = rdv_addr.clone();
        nodes.push(
            TestNode::start_with(move |c| {
                c.relay.shards = vec![0];
                c.rendezvous.enabled = false;
                c.rendezvous.points = vec![a];
                c.rendezvous.discover_interval = Duration::from_secs(1);
                c.rendezvous.target_relay_peers = 5;
            })
            .await,
        );
    }
    let ids: Vec<PeerId> = nodes.iter().map(|n| n.handle.peer_id()).collect();
    let all_connected = wait_until(WAIT * 2, || async {
        for node in &nodes {
            let Some(status) = node.handle.network_status().await else {
                return false;
            };
            let me = node.handle.peer_id();
            if !ids
                .iter()
                .filter(|id| **id != me)
                .all(|id| status.connected_peers.contains(id))
            {
                return false;
            }
        }
        true
    })
    .await;
    if all_connected.is_err() {
        for node in &nodes {
            eprintln!(
                "{}: {:?}",
                node.handle.peer_id(),
                node.handle.network_status().await
            );
        }
        panic!(
            "the six nodes did not all connect:\n{}",
            rdv.metrics().await
        );
    }
    wait_until(WAIT, || async {
        rdv.metric("roost_rendezvous_table_size").await == Some(6.0)
    })
    .await
    .expect("each node registered once under rs/1/0");
    for node in &nodes {
        node.wait_for_mesh(TOPIC, 3).await;
    }

    let mut inboxes: Vec<_> = nodes.iter().map(|n| n.handle.subscribe()).collect();
    for (i, node) in nodes.iter().enumerate() {
        let message = WakuMessage::new("/roost/1/rdv/proto", format!("from {i}").into_bytes());
        node.handle.publish(TOPIC, message).await.expect("publish");
    }
    for (j, inbox) in inboxes.iter_mut().enumerate() {
        let mut got = std::collections::BTreeSet::new();
        while got.len() < 6 {
            let m = tokio::time::timeout(WAIT, inbox.recv())
                .await
                .unwrap_or_else(|_| panic!("node {j} got only {got:?}"))
                .expect("subscription open");
            got.insert(String::from_utf8(m.message.payload.clone()).unwrap());
        }
        let want: std::collections::BTreeSet<String> =
            (0..6).map(|i| format!("from {i}")).collect();
        assert_eq!(
            got, want,
            "node {j} saw every node's message (its own locally)"
        );
    }
    let node_metrics = nodes[5].metrics().await;
    assert!(
        metric_sum(
            &node_metrics,
            "roost_rendezvous_client_registrations_total",
            &[("outcome", "ok")]
        ) >= 1.0
    );
    assert!(
        metric_sum(
            &node_metrics,
            "roost_rendezvous_client_discovered_peers_total",
            &[]
        ) >= 5.0
    );
    let (_, health) = roost_tests::http_get(&format!("{}/health", rdv.http_url())).await;
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(
        health["components"]["rendezvous"]["detail"]["registrations"],
        6
    );
}

/// A REGISTER exactly as go-libp2p-rendezvous sends it (proto3 message without `type`,
/// standard signed peer record), built here byte by byte; DISCOVER (as go sends it) returns
/// the same record bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_style_signed_peer_record_registers_and_is_discovered_back_byte_for_byte() {
    init_tracing();
    let rdv = point(|_| {}).await;
    let at = rdv.tcp_addr();
    let key = Keypair::generate_ed25519();
    let mut go = RdvPeer::new(key.clone(), 1).unwrap();
    let record = go_signed_peer_record(
        &key,
        &[
            addr(4001),
            "/ip4/10.1.2.3/udp/4001/quic-v1".parse().unwrap(),
        ],
        1_700_000_000,
    );
    let response = go
        .request(
            &at,
            Flavour::Libp2p,
            go_register_message("rs/1/7", &record, 7200),
        )
        .await
        .unwrap();
    assert_eq!(read_register_response(&response), Ok(7200));

    let response = go
        .request(&at, Flavour::Libp2p, go_discover_message("rs/1/7", 100))
        .await
        .unwrap();
    assert_eq!(raw_records(&response), vec![record.clone()]);
    // And it reads as a standard record for this peer.
    let parsed = record::verify(&record).unwrap();
    assert_eq!(parsed.flavour, RecordFlavour::Standard);
    assert_eq!(parsed.peer, key.public().to_peer_id());

    // A secp256k1 key (go-waku, nwaku identities) works the same.
    let key = Keypair::generate_secp256k1();
    let mut waku_go = RdvPeer::new(key.clone(), 1).unwrap();
    let record = go_signed_peer_record(&key, &[addr(60000)], 1);
    let response = waku_go
        .request(
            &at,
            Flavour::Libp2p,
            go_register_message("rs/1/7", &record, 7200),
        )
        .await
        .unwrap();
    assert_eq!(read_register_response(&response), Ok(7200));
    let response = waku_go
        .request(&at, Flavour::Libp2p, go_discover_message("rs/1/7", 100))
        .await
        .unwrap();
    assert_eq!(raw_records(&response).len(), 2);
}

/// nwaku registers a WakuPeerRecord on /vac/waku/rendezvous/1.0.0; nwaku discovers it there,
/// and it is in the same table a /rendezvous/1.0.0 client sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nwaku_peer_record_registers_on_the_waku_protocol_and_shares_the_table() {
    init_tracing();
    let rdv = point(|_| {}).await;
    let at = rdv.tcp_addr();
    let key = Keypair::generate_secp256k1();
    let mut nwaku = RdvPeer::new(key.clone(), 1).unwrap();
    let record = nwaku_signed_peer_record(&key, &[addr(60000)], 1_700_000_000);
    let request = proto::register_request("rs/1/mix", record.clone(), Some(60));
    let response = nwaku.request(&at, Flavour::Waku, request).await.unwrap();
    assert_eq!(read_register_response(&response), Ok(60));
    let request = proto::discover_request(Some("rs/1/mix"), Some(12), None);
    let response = nwaku.request(&at, Flavour::Waku, request).await.unwrap();
    assert_eq!(raw_records(&response), vec![record.clone()]);

    // A standard client registered in the same namespace is not shown to nwaku (it could not
    // read it), but a standard client sees both.
    let mut go = RdvPeer::ed25519().unwrap();
    assert_eq!(register(&mut go, &at, "rs/1/mix", Some(60)).await, Ok(60));
    let request = proto::discover_request(Some("rs/1/mix"), Some(12), None);
    let response = nwaku.request(&at, Flavour::Waku, request).await.unwrap();
    assert_eq!(raw_records(&response), vec![record]);
    let (peers, _) = discover(&mut go, &at, "rs/1/mix", None, None)
        .await
        .unwrap();
    assert_eq!(peers, vec![key.public().to_peer_id(), go.peer_id]);
}

/// A plain rust-libp2p rendezvous client, as its examples build one: rendezvous, identify
/// and ping, nothing Waku.
#[derive(NetworkBehaviour)]
struct CrateClient {
    rendezvous: libp2p_rendezvous::client::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

/// rust-libp2p's own rendezvous client (legacy peer records), which speaks no Waku protocol,
/// registers and discovers at a node with the default config (relay, store and all), stays
/// connected, and is counted as a generic peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_libp2p_rendezvous_client_registers_and_discovers() {
    init_tracing();
    let rdv = TestNode::start().await;
    let at = rdv.tcp_addr();
    let point_id = rdv.handle.peer_id();
    let key = Keypair::generate_ed25519();
    let me = key.public().to_peer_id();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|k| CrateClient {
            rendezvous: libp2p_rendezvous::client::Behaviour::new(k.clone()),
            identify: identify::Behaviour::new(identify::Config::new(
                "/ipfs/id/1.0.0".into(),
                k.public(),
            )),
            ping: ping::Behaviour::default(),
        })
        .unwrap()
        .build();
    swarm.add_external_address(addr(4001));
    swarm.dial(at).unwrap();
    let ns = libp2p_rendezvous::Namespace::from_static("rust/legacy");
    let mut registered = false;
    let outcome = tokio::time::timeout(WAIT, async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == point_id => {
                    swarm
                        .behaviour_mut()
                        .rendezvous
                        .register(ns.clone(), point_id, Some(60))
                        .unwrap();
                }
                SwarmEvent::Behaviour(CrateClientEvent::Rendezvous(event)) => match event {
                    libp2p_rendezvous::client::Event::Registered { ttl, .. } => {
                        assert_eq!(ttl, 60);
                        registered = true;
                        swarm.behaviour_mut().rendezvous.discover(
                            Some(ns.clone()),
                            None,
                            None,
                            point_id,
                        );
                    }
                    libp2p_rendezvous::client::Event::Discovered { registrations, .. } => {
                        return registrations;
                    }
                    other => panic!("unexpected rendezvous event: {other:?}"),
                },
                _ => {}
            }
        }
    })
    .await
    .expect("register and discover within the timeout");
    assert!(registered);
    assert_eq!(outcome.len(), 1);
    assert_eq!(outcome[0].record.peer_id(), me);
    assert_eq!(outcome[0].record.addresses(), &[addr(4001)]);
    // Well past the metadata exchange (it used to disconnect such peers within a second),
    // the client is still connected and still served.
    let later = tokio::time::timeout(WAIT, async {
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                event = swarm.select_next_some() => {
                    if let SwarmEvent::ConnectionClosed { peer_id, cause, .. } = event {
                        panic!("the node closed the connection to {peer_id}: {cause:?}");
                    }
                }
            }
        }
        assert!(swarm.is_connected(&point_id));
        swarm
            .behaviour_mut()
            .rendezvous
            .discover(Some(ns.clone()), None, None, point_id);
        loop {
            if let SwarmEvent::Behaviour(CrateClientEvent::Rendezvous(
                libp2p_rendezvous::client::Event::Discovered { registrations, .. },
            )) = swarm.select_next_some().await
            {
                return registrations;
            }
        }
    })
    .await
    .expect("a second discover is answered");
    assert_eq!(later.len(), 1);
    let health = rdv.health().await;
    assert_eq!(
        health["components"]["network"]["detail"]["peer_kinds"]["generic"], 1,
        "{health}"
    );
    assert_eq!(
        rdv.metric("roost_peers_by_kind{kind=\"generic\"}").await,
        Some(1.0)
    );
    assert_eq!(
        rdv.metric("roost_rendezvous_registrations_accepted_total{flavour=\"legacy\"}")
            .await,
        Some(1.0)
    );
}

/// The original go-libp2p-rendezvous sends an unsigned PeerInfo: accepted only from the peer
/// it names, and that client gets PeerInfos back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_go_peer_info_is_accepted_only_from_the_peer_it_names() {
    init_tracing();
    let rdv = point(|_| {}).await;
    let at = rdv.tcp_addr();
    let mut old = RdvPeer::ed25519().unwrap();
    let info = |id: PeerId| {
        let mut out = Vec::new();
        bytes_field(1, &id.to_bytes(), &mut out);
        bytes_field(2, &addr(4001).to_vec(), &mut out);
        out
    };
    let someone_else = PeerId::random();
    let response = old
        .request(
            &at,
            Flavour::Libp2p,
            go_register_message("old/go", &info(someone_else), 7200),
        )
        .await
        .unwrap();
    assert!(matches!(
        read_register_response(&response),
        Err(ResponseError::Refused {
            status: Status::NotAuthorized,
            ..
        })
    ));
    let response = old
        .request(
            &at,
            Flavour::Libp2p,
            go_register_message("old/go", &info(old.peer_id), 7200),
        )
        .await
        .unwrap();
    assert_eq!(read_register_response(&response), Ok(7200));
    let mut signed = RdvPeer::ed25519().unwrap();
    assert_eq!(register(&mut signed, &at, "old/go", None).await, Ok(7200));

    let response = old
        .request(&at, Flavour::Libp2p, go_discover_message("old/go", 10))
        .await
        .unwrap();
    let records = raw_records(&response);
    assert_eq!(records, vec![info(old.peer_id), info(signed.peer_id)]);
}

/// Registrations live on across a restart of the point, until their TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_survive_a_restart_of_the_point() {
    init_tracing();
    let rdv = point(|_| {}).await;
    let mut peers: Vec<RdvPeer> = (0..3).map(|_| RdvPeer::ed25519().unwrap()).collect();
    for p in &mut peers {
        assert_eq!(
            register(p, &rdv.tcp_addr(), "persist/me", Some(3600)).await,
            Ok(3600)
        );
    }
    // UNREGISTER has no response: the stream just ends, which reads as an empty answer.
    let mut gone = RdvPeer::ed25519().unwrap();
    assert_eq!(
        register(&mut gone, &rdv.tcp_addr(), "persist/me", Some(3600)).await,
        Ok(3600)
    );
    let answer = gone
        .request(
            &rdv.tcp_addr(),
            Flavour::Libp2p,
            proto::unregister_request("persist/me"),
        )
        .await;
    assert_eq!(answer, Ok(Vec::new()));
    let dir = rdv.stop().await;
    let rdv = TestNode::start_in(dir, point_only).await;
    let mut asker = RdvPeer::ed25519().unwrap();
    let (found, _) = discover(&mut asker, &rdv.tcp_addr(), "persist/me", None, None)
        .await
        .unwrap();
    let want: Vec<PeerId> = peers.iter().map(|p| p.peer_id).collect();
    assert_eq!(found, want);
    wait_until(WAIT, || async {
        rdv.metric("roost_rendezvous_table_size").await == Some(3.0)
    })
    .await
    .expect("the table gauge shows the reloaded registrations");
}

/// A registration disappears once its TTL ran out, and the expiry is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_expire_after_their_ttl() {
    init_tracing();
    let rdv = point(|c| c.rendezvous.min_ttl = Duration::from_secs(1)).await;
    let at = rdv.tcp_addr();
    let mut short = RdvPeer::ed25519().unwrap();
    let mut long = RdvPeer::ed25519().unwrap();
    assert_eq!(register(&mut short, &at, "ttl/test", Some(2)).await, Ok(2));
    assert_eq!(
        register(&mut long, &at, "ttl/test", Some(3600)).await,
        Ok(3600)
    );
    let (found, _) = discover(&mut long, &at, "ttl/test", None, None)
        .await
        .unwrap();
    assert_eq!(found, vec![short.peer_id, long.peer_id]);
    wait_until(WAIT, || async {
        rdv.metric("roost_rendezvous_expirations_total").await == Some(1.0)
    })
    .await
    .expect("the short registration expires");
    let (found, _) = discover(&mut long, &at, "ttl/test", None, None)
        .await
        .unwrap();
    assert_eq!(found, vec![long.peer_id]);
    wait_until(WAIT, || async {
        rdv.metric("roost_rendezvous_table_size").await == Some(1.0)
    })
    .await
    .expect("the table gauge follows expiry");
}

/// Per-peer and total caps refuse new registrations with E_UNAVAILABLE; refreshing an
/// existing registration always works and never grows the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_refuse_new_registrations_and_refreshes_do_not_grow_the_table() {
    init_tracing();
    let rdv = point(|c| {
        c.rendezvous.max_registrations_per_peer = 2;
        c.rendezvous.max_registrations = 3;
        // 25 REGISTERs from one peer: more than its quota allows.
        c.throttle.enabled = false;
    })
    .await;
    let at = rdv.tcp_addr();
    let mut a = RdvPeer::ed25519().unwrap();
    let mut b = RdvPeer::ed25519().unwrap();
    assert_eq!(register(&mut a, &at, "cap/1", None).await, Ok(7200));
    assert_eq!(register(&mut a, &at, "cap/2", None).await, Ok(7200));
    let refused = register(&mut a, &at, "cap/3", None).await.unwrap_err();
    assert!(
        matches!(&refused, ResponseError::Refused { status: Status::Unavailable, text: Some(t) } if t.contains("per peer")),
        "{refused}"
    );
    assert_eq!(register(&mut b, &at, "cap/1", None).await, Ok(7200));
    let refused = register(&mut b, &at, "cap/2", None).await.unwrap_err();
    assert!(
        matches!(&refused, ResponseError::Refused { status: Status::Unavailable, text: Some(t) } if t.contains("maximum")),
        "{refused}"
    );
    for _ in 0..20 {
        assert_eq!(register(&mut a, &at, "cap/1", Some(120)).await, Ok(120));
    }
    wait_until(WAIT, || async {
        rdv.metric("roost_rendezvous_table_size").await == Some(3.0)
    })
    .await
    .expect("the table holds exactly three registrations");
    let m = rdv.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "roost_rendezvous_requests_total",
            &[("kind", "register"), ("outcome", "unavailable")]
        ),
        2.0
    );
}

/// DISCOVER returns at most the requested limit (and never more than the point's maximum),
/// and its cookie pages through the namespace without repeats or gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_pages_through_a_namespace_with_cookies() {
    init_tracing();
    let rdv = point(|c| c.rendezvous.max_discover_limit = 4).await;
    let at = rdv.tcp_addr();
    let mut peers: Vec<RdvPeer> = (0..11).map(|_| RdvPeer::ed25519().unwrap()).collect();
    for p in &mut peers {
        assert_eq!(register(p, &at, "page/ns", None).await, Ok(7200));
    }
    let other = &mut peers[0];
    assert_eq!(register(other, &at, "page/other", None).await, Ok(7200));
    let mut asker = RdvPeer::ed25519().unwrap();
    let (first, _) = discover(&mut asker, &at, "page/ns", Some(3), None)
        .await
        .unwrap();
    assert_eq!(first.len(), 3, "the requested limit is honoured");
    let mut seen = Vec::new();
    let mut cookie = None;
    loop {
        let (page, next) = discover(&mut asker, &at, "page/ns", Some(100), cookie.clone())
            .await
            .unwrap();
        assert!(page.len() <= 4, "capped at max_discover_limit");
        if page.is_empty() {
            break;
        }
        seen.extend(page);
        cookie = next;
    }
    let want: Vec<PeerId> = peers.iter().map(|p| p.peer_id).collect();
    assert_eq!(seen, want);
    // New registrations show up after the last cookie.
    let mut late = RdvPeer::ed25519().unwrap();
    assert_eq!(register(&mut late, &at, "page/ns", None).await, Ok(7200));
    let (page, _) = discover(&mut asker, &at, "page/ns", None, cookie.clone())
        .await
        .unwrap();
    assert_eq!(page, vec![late.peer_id]);
    // A cookie of another namespace is refused.
    let refused = discover(&mut asker, &at, "page/other", None, cookie)
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        ResponseError::Refused {
            status: Status::InvalidCookie,
            ..
        }
    ));
}

/// Malformed messages, bad namespaces, foreign records and oversize frames get status codes
/// (or a failed stream), are counted, and the connection stays up for the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_status_codes_and_the_connection_stays_up() {
    init_tracing();
    let rdv = point(|_| {}).await;
    let at = rdv.tcp_addr();
    let point_id = rdv.handle.peer_id();
    let mut peer = RdvPeer::ed25519().unwrap();
    assert_eq!(register(&mut peer, &at, "ok/first", None).await, Ok(7200));

    let garbage = peer
        .request(&at, Flavour::Libp2p, vec![0xff, 0xff, 0xff])
        .await
        .unwrap();
    let err = read_register_response(&garbage).unwrap_err();
    assert!(
        matches!(&err, ResponseError::Refused { status: Status::InvalidSignedPeerRecord, text: Some(t) } if t.contains("malformed")),
        "{err}"
    );

    let long_ns = "n".repeat(300);
    let bad_discover = peer
        .request(
            &at,
            Flavour::Libp2p,
            proto::discover_request(Some(&long_ns), None, None),
        )
        .await
        .unwrap();
    assert!(matches!(
        read_discover_response(&bad_discover),
        Err(ResponseError::Refused {
            status: Status::InvalidNamespace,
            ..
        })
    ));

    let stranger = RdvPeer::ed25519().unwrap();
    let foreign = register_request(&stranger, "ok/first", None);
    let response = peer.request(&at, Flavour::Libp2p, foreign).await.unwrap();
    assert!(matches!(
        read_register_response(&response),
        Err(ResponseError::Refused {
            status: Status::NotAuthorized,
            ..
        })
    ));

    let oversize = vec![0u8; roost_node::rendezvous::MAX_REQUEST_BYTES + 1];
    // The point reads no further than the limit: the stream ends without an answer.
    let answer = peer.request(&at, Flavour::Libp2p, oversize).await;
    assert!(
        answer.is_err() || matches!(&answer, Ok(b) if b.is_empty()),
        "{answer:?}"
    );

    assert!(peer.is_connected(&point_id), "the connection survived");
    assert_eq!(register(&mut peer, &at, "ok/second", None).await, Ok(7200));
    let m = rdv.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "roost_rendezvous_requests_total",
            &[("outcome", "malformed")]
        ),
        1.0
    );
    assert_eq!(
        metric_sum(
            &m,
            "roost_rendezvous_requests_total",
            &[("outcome", "invalid_namespace")]
        ),
        1.0
    );
    assert_eq!(
        metric_sum(
            &m,
            "roost_rendezvous_requests_total",
            &[("outcome", "not_authorized")]
        ),
        1.0
    );
    wait_until(WAIT, || async {
        let m = rdv.metrics().await;
        metric_sum(
            &m,
            "roost_rendezvous_requests_total",
            &[("outcome", "unreadable")],
        ) == 1.0
    })
    .await
    .expect("the oversize frame is counted");
}

/// Over its quota a peer gets E_UNAVAILABLE for REGISTER and DISCOVER alike, before anything
/// is decoded (garbage is refused the same way, not counted as malformed); other peers are
/// not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_throttle_quota_get_unavailable_undecoded() {
    init_tracing();
    let rdv = point(|c| {
        c.throttle.rendezvous_register = "2/1h per-peer".parse().unwrap();
        c.throttle.rendezvous_discover = "1/1h per-peer".parse().unwrap();
    })
    .await;
    let at = rdv.tcp_addr();
    let mut greedy = RdvPeer::ed25519().unwrap();
    assert_eq!(register(&mut greedy, &at, "quota/a", None).await, Ok(7200));
    assert_eq!(register(&mut greedy, &at, "quota/b", None).await, Ok(7200));
    let refused = register(&mut greedy, &at, "quota/c", None)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, ResponseError::Refused { status: Status::Unavailable, text: Some(t) } if t.contains("quota")),
        "{refused}"
    );
    let garbage = greedy
        .request(&at, Flavour::Libp2p, vec![0xff, 0xff, 0xff])
        .await
        .unwrap();
    assert!(matches!(
        read_register_response(&garbage),
        Err(ResponseError::Refused {
            status: Status::Unavailable,
            ..
        })
    ));
    assert!(discover(&mut greedy, &at, "quota/a", None, None)
        .await
        .is_ok());
    let refused = discover(&mut greedy, &at, "quota/a", None, None)
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        ResponseError::Refused {
            status: Status::Unavailable,
            ..
        }
    ));
    // Someone else still gets served.
    let mut polite = RdvPeer::ed25519().unwrap();
    let (found, _) = discover(&mut polite, &at, "quota/a", None, None)
        .await
        .unwrap();
    assert_eq!(found, vec![greedy.peer_id]);
    let m = rdv.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "roost_rendezvous_requests_total",
            &[("kind", "register"), ("outcome", "throttled")]
        ),
        1.0
    );
    assert_eq!(
        metric_sum(
            &m,
            "roost_rendezvous_requests_total",
            &[("kind", "unknown"), ("outcome", "throttled")]
        ),
        1.0
    );
    assert_eq!(
        metric_sum(
            &m,
            "roost_rendezvous_requests_total",
            &[("kind", "discover"), ("outcome", "throttled")]
        ),
        1.0
    );
    assert_eq!(
        metric_sum(
            &m,
            "roost_rendezvous_requests_total",
            &[("outcome", "malformed")]
        ),
        0.0
    );
}

/// `roost rendezvous register` and `discover` against a running point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_registers_and_discovers() {
    init_tracing();
    let rdv = point(|_| {}).await;
    let at = rdv.tcp_addr().to_string();
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().to_owned();
    let at2 = at.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_roost(
            &[
                "rendezvous",
                "register",
                "--server",
                &at2,
                "--namespace",
                "cli/ns",
                "--ttl",
                "5m",
                "--address",
                "/ip4/10.9.8.7/tcp/60000",
            ],
            &cwd,
        )
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "register failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("under cli/ns for 300s"), "{stdout}");
    let registered: PeerId = stdout.split_whitespace().nth(1).unwrap().parse().unwrap();

    let cwd = dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        run_roost(
            &[
                "rendezvous",
                "discover",
                "--server",
                &at,
                "--namespace",
                "cli/ns",
            ],
            &cwd,
        )
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "discover failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("cli/ns"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains(&registered.to_string()), "{line}");
    assert!(line.contains("/ip4/10.9.8.7/tcp/60000"), "{line}");
    assert!(
        stdout.lines().any(|l| l.starts_with("cookie: ")),
        "{stdout}"
    );

    // Register and unregister as a given node key.
    let key = libp2p::identity::secp256k1::Keypair::generate();
    let key_hex: String = key
        .secret()
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let node_id = Keypair::from(key).public().to_peer_id();
    let key_file = dir.path().join("node.key");
    std::fs::write(&key_file, key_hex).unwrap();
    let key_path = key_file.to_string_lossy().into_owned();
    for (command, want) in [("register", "registered"), ("unregister", "unregistered")] {
        let (cwd, at, key_path) = (
            dir.path().to_owned(),
            rdv.tcp_addr().to_string(),
            key_path.clone(),
        );
        let out = tokio::task::spawn_blocking(move || {
            run_roost(
                &[
                    "rendezvous",
                    command,
                    "--server",
                    &at,
                    "--namespace",
                    "cli/keyed",
                    "--key",
                    &key_path,
                ],
                &cwd,
            )
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.starts_with(&format!("{want} {node_id}")), "{stdout}");
    }
    let mut asker = RdvPeer::ed25519().unwrap();
    let (found, _) = discover(&mut asker, &rdv.tcp_addr(), "cli/keyed", None, None)
        .await
        .unwrap();
    assert!(found.is_empty(), "unregistered: {found:?}");

    // A refusal is one line on stderr and a failing exit code.
    let cwd = dir.path().to_owned();
    let at = rdv.tcp_addr().to_string();
    let out = tokio::task::spawn_blocking(move || {
        run_roost(
            &[
                "rendezvous",
                "register",
                "--server",
                &at,
                "--namespace",
                "/roost/fleet/relay",
            ],
            &cwd,
        )
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("E_NOT_AUTHORIZED"), "{stderr}");
}

// === py-libp2p, unmodified, from PyPI ===

/// Installs the py-libp2p client once per test process (a no-op when `scripts/test` already
/// did); gives the venv's Python.
fn ensure_py_client() -> std::path::PathBuf {
    static PYTHON: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let python = py_dir().join(".venv").join("bin").join("python");
            roost_tests::client_process::install_with("py-interop-setup", python)
        })
        .clone()
}

fn py_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("interop")
        .join("py")
}

fn ids(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .expect("an array of peer ids")
        .iter()
        .map(|v| v.as_str().expect("a peer id").to_owned())
        .collect()
}

/// py-libp2p's rendezvous client, used as its own users use it (`new_host()` defaults,
/// `RendezvousDiscovery.advertise`, `discover` with its cookie, `unregister`), against a node
/// with the default config: it registers (an unsigned PeerInfo, py-libp2p's format), pages
/// through everyone with a cookie, gets only newer registrations with the last cookie, stays
/// connected without speaking Waku metadata, and unregisters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_libp2p_registers_discovers_with_a_cookie_and_unregisters() {
    init_tracing();
    let python = ensure_py_client();
    let rdv = TestNode::start().await;
    let at = rdv.tcp_addr();
    let ns = "py/interop";
    let mut others = Vec::new();
    for _ in 0..3 {
        let mut peer = RdvPeer::ed25519().unwrap();
        assert_eq!(register(&mut peer, &at, ns, Some(600)).await, Ok(600));
        others.push(peer);
    }
    let point = at
        .clone()
        .with(libp2p::multiaddr::Protocol::P2p(rdv.handle.peer_id()));
    let mut cmd = std::process::Command::new(python);
    cmd.arg("rendezvous_client.py")
        .arg(
            serde_json::json!({"point": point.to_string(), "namespace": ns, "page": 3, "linger": 2})
                .to_string(),
        )
        .current_dir(py_dir());
    let py = roost_tests::client_process::ClientProcess::spawn(
        "py-libp2p",
        cmd,
        Duration::from_secs(90),
    );
    let (py, registered) = py.event("registered").await;
    assert_eq!(
        registered["ttl"], 7200,
        "py-libp2p's default TTL is granted"
    );
    let py_peer = registered["peer"].as_str().expect("peer id").to_owned();
    let (mut py, ready) = py.event("ready").await;
    let pages: Vec<Vec<String>> = ready["pages"]
        .as_array()
        .expect("pages")
        .iter()
        .map(ids)
        .collect();
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![3, 1],
        "{ready}"
    );
    let mut seen: Vec<String> = pages.concat();
    seen.sort();
    let mut everyone: Vec<String> = others.iter().map(|p| p.peer_id.to_string()).collect();
    everyone.push(py_peer.clone());
    everyone.sort();
    assert_eq!(seen, everyone, "every registration once, its own included");

    // A registration after the last page: the cookie returns it alone.
    let mut late = RdvPeer::ed25519().unwrap();
    assert_eq!(register(&mut late, &at, ns, Some(600)).await, Ok(600));
    py.send_line("go");
    let (py, result) = py.event("result").await;
    assert_eq!(result["connected"], true, "{}", py.logs());
    assert_eq!(ids(&result["newer"]), vec![late.peer_id.to_string()]);

    // Unregistered: a fresh discover no longer has it.
    let (peers, _) = wait_for_unregister(&mut late, &at, ns, &py_peer).await;
    assert_eq!(peers.len(), 4, "the three others and the late one remain");
    assert_eq!(
        rdv.metric("roost_rendezvous_registrations_accepted_total{flavour=\"peer_info\"}")
            .await,
        Some(1.0)
    );
    drop(py);
}

/// Discovers `ns` until `gone` is no longer among the peers (UNREGISTER has no response, so
/// the client cannot wait for it).
async fn wait_for_unregister(
    peer: &mut RdvPeer,
    at: &Multiaddr,
    ns: &str,
    gone: &str,
) -> (Vec<PeerId>, Option<Vec<u8>>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let found = discover(peer, at, ns, None, None).await.expect("discover");
        if found.0.iter().all(|p| p.to_string() != gone) {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{gone} is still registered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
