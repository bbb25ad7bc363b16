//! nwaku's REST API against real nodes, driven only through REST (reqwest): health and info,
//! admin peers, relay subscriptions and caches (pubsub and autosharding), store queries with
//! nwaku's parameters and cursor paging both ways, light push v3 and legacy, CORS, body limits
//! and the error codes nwaku answers. Request and response bodies are the ones nwaku's handlers
//! and OpenAPI define.

use roost_node::message::now_nanos;
use roost_tests::{init_tracing, metric_sum, wait_until, TestNode, WAIT};
use serde_json::{json, Value};

const TOPIC: &str = "/waku/2/rs/1/0";
const CONTENT_TOPIC: &str = "/roost/1/rest/proto";

/// Percent-encodes everything but unreserved characters, as a client puts a topic in a path
/// or a query parameter.
fn enc(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Base64 of `bytes` (standard alphabet, padded), as REST clients send payloads.
fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

struct Rest {
    base: String,
    http: reqwest::Client,
}

impl Rest {
    fn of(node: &TestNode) -> Rest {
        Rest {
            base: node.rest_url(),
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, String) {
        let response = request.send().await.expect("REST request");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    async fn get(&self, path: &str) -> (u16, String) {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, String) {
        self.post_raw(path, body.to_string()).await
    }

    async fn post_raw(&self, path: &str, body: String) -> (u16, String) {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    async fn delete(&self, path: &str, body: &Value) -> (u16, String) {
        self.send(
            self.http
                .delete(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
    }
}

async fn start_admin(adjust: impl FnOnce(&mut roost_node::Config)) -> TestNode {
    TestNode::start_with(|c| {
        c.rest.admin = true;
        adjust(c);
    })
    .await
}

/// Connects `a` to `b` with `POST /admin/v1/peers` and waits until `a`'s `GET` lists `b` as
/// a relay peer on [`TOPIC`]'s shard (so a publish reaches it).
async fn connect(a: &Rest, b: &TestNode) {
    let (status, body) = a
        .post("/admin/v1/peers", &json!([b.tcp_addr().to_string()]))
        .await;
    assert_eq!((status, body.as_str()), (200, "OK"));
    let id = b.handle.peer_id().to_string();
    wait_until(WAIT, || async {
        let peers = a.get_json("/admin/v1/peers").await;
        peers.as_array().is_some_and(|list| {
            list.iter().any(|p| {
                p["multiaddr"].as_str().is_some_and(|m| m.ends_with(&id))
                    && p["shards"]
                        .as_array()
                        .is_some_and(|s| s.contains(&json!(0)))
            })
        })
    })
    .await
    .expect("the peer shows up as a relay peer on shard 0");
}

/// Polls a relay `GET` until it returns at least `n` messages in total.
async fn drain_until(rest: &Rest, path: &str, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.len() < n && tokio::time::Instant::now() < deadline {
        let list = rest.get_json(path).await;
        got.extend(list.as_array().cloned().unwrap_or_default());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    got
}

fn message(payload: &[u8], timestamp: i64) -> Value {
    json!({
        "payload": b64(payload),
        "contentTopic": CONTENT_TOPIC,
        "version": 0,
        "timestamp": timestamp,
        "meta": b64(b"m"),
        "ephemeral": false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_info_and_version_have_nwaku_shapes() {
    init_tracing();
    let node = TestNode::start().await;
    let rest = Rest::of(&node);
    let health = rest.get_json("/health").await;
    assert_eq!(health["nodeHealth"], "READY", "{health}");
    assert!(health["protocolsHealth"].is_array(), "{health}");
    let expected: Vec<String> = node
        .handle
        .info()
        .listen_addresses
        .iter()
        .map(ToString::to_string)
        .collect();
    for path in ["/info", "/debug/v1/info"] {
        let info = rest.get_json(path).await;
        assert_eq!(info["listenAddresses"], json!(expected), "{path}: {info}");
        assert!(
            info["enrUri"]
                .as_str()
                .is_some_and(|e| e.starts_with("enr:")),
            "{path}: {info}"
        );
    }
    for path in ["/version", "/debug/v1/version"] {
        assert_eq!(
            rest.get(path).await,
            (200, node.handle.info().version.to_owned()),
            "{path}"
        );
    }
    // Admin routes exist only with rest.admin.
    assert_eq!(rest.get("/admin/v1/peers").await.0, 404);
    // Counted on the node's /metrics by route group and status.
    let metrics = node.metrics().await;
    assert_eq!(
        metric_sum(
            &metrics,
            "roost_rest_requests_total",
            &[("route", "version"), ("status", "200")]
        ),
        2.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_peers_dials_and_lists_connected_peers() {
    init_tracing();
    let a = start_admin(|_| {}).await;
    let b = start_admin(|_| {}).await;
    let rest_a = Rest::of(&a);
    assert_eq!(rest_a.get_json("/admin/v1/peers").await, json!([]));
    connect(&rest_a, &b).await;
    let peers = rest_a.get_json("/admin/v1/peers").await;
    let peer = &peers[0];
    assert_eq!(peer["connected"], "Connected", "{peers}");
    // What the peer listed in identify, as nwaku's peer store has it.
    let protocols = peer["protocols"].as_array().cloned().unwrap_or_default();
    for expected in [
        "/vac/waku/relay/2.0.0",
        "/vac/waku/store-query/3.0.0",
        "/ipfs/id/1.0.0",
    ] {
        assert!(protocols.contains(&json!(expected)), "{expected}: {peers}");
    }
    assert_eq!(peer["shards"], json!([0, 1, 2, 3, 4, 5, 6, 7]), "{peers}");
    for key in ["agent", "origin", "score"] {
        assert!(peer.get(key).is_some(), "{key} missing: {peers}");
    }
    assert_eq!(rest_a.get_json("/admin/v1/peers/connected").await, peers);
    let b_id = b.handle.peer_id().to_string();
    assert_eq!(
        rest_a.get_json(&format!("/admin/v1/peer/{b_id}")).await,
        peers[0]
    );
    assert_eq!(
        rest_a
            .get(&format!("/admin/v1/peer/{}", libp2p::PeerId::random()))
            .await
            .0,
        404
    );
    assert_eq!(rest_a.get("/admin/v1/peer/not-a-peer-id").await.0, 400);

    // Per shard: b is a relay peer on each of a's shards, and joins a's mesh of shard 0.
    let relay = rest_a.get_json("/admin/v1/peers/relay").await;
    let shards: Vec<&Value> = relay
        .as_array()
        .map(|l| l.iter().map(|s| &s["shard"]).collect())
        .unwrap_or_default();
    assert_eq!(shards.len(), 8, "{relay}");
    assert!(
        relay
            .as_array()
            .is_some_and(|l| l.iter().all(|s| s["peers"] == json!([peers[0].clone()]))),
        "{relay}"
    );
    assert_eq!(
        rest_a.get_json("/admin/v1/peers/relay/on/0").await,
        json!({"shard": 0, "peers": [peers[0].clone()]})
    );
    assert_eq!(
        rest_a.get_json("/admin/v1/peers/relay/on/99").await,
        json!({"shard": 99, "peers": []})
    );
    assert_eq!(rest_a.get("/admin/v1/peers/relay/on/x").await.0, 400);
    assert_eq!(
        rest_a.get_json("/admin/v1/peers/connected/on/0").await,
        peers
    );
    assert_eq!(
        rest_a.get_json("/admin/v1/peers/connected/on/99").await,
        json!([])
    );
    wait_until(WAIT, || async {
        rest_a.get_json("/admin/v1/peers/mesh/on/0").await
            == json!({"shard": 0, "peers": [peers[0].clone()]})
    })
    .await
    .expect("b joins a's mesh of shard 0");
    let mesh = rest_a.get_json("/admin/v1/peers/mesh").await;
    assert_eq!(mesh[0]["shard"], json!(0), "{mesh}");
    let stats = rest_a.get_json("/admin/v1/peers/stats").await;
    assert_eq!(stats["Sum"], json!({"Total peers": 1}), "{stats}");
    assert_eq!(stats["By Connectedness"]["Connected"], json!(1), "{stats}");
    assert_eq!(stats["Relay peers"]["0"], json!(1), "{stats}");
    assert_eq!(
        stats["Relay peers"]["Total relay peers"],
        json!(8),
        "{stats}"
    );
    assert_eq!(stats["Mesh peers"]["0"], json!(1), "{stats}");
    assert_eq!(
        stats["By Protocols"]["/vac/waku/relay/2.0.0"],
        json!(1),
        "{stats}"
    );
    // b sees a too, although only a dialled.
    let peers_b = Rest::of(&b).get_json("/admin/v1/peers").await;
    let a_id = a.handle.peer_id().to_string();
    assert!(
        peers_b[0]["multiaddr"]
            .as_str()
            .is_some_and(|m| m.ends_with(&a_id)),
        "{peers_b}"
    );

    // nwaku's 400s: an unreadable body, an unparsable address, one without a peer id, and a
    // peer that cannot be reached (a free port nobody listens on).
    assert_eq!(rest_a.post_raw("/admin/v1/peers", "[".into()).await.0, 400);
    assert_eq!(
        rest_a
            .post("/admin/v1/peers", &json!(["not a multiaddr"]))
            .await
            .0,
        400
    );
    assert_eq!(
        rest_a
            .post("/admin/v1/peers", &json!(["/ip4/127.0.0.1/tcp/1"]))
            .await
            .0,
        400
    );
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let (status, body) = rest_a
        .post(
            "/admin/v1/peers",
            &json!([format!(
                "/ip4/127.0.0.1/tcp/{port}/p2p/{}",
                libp2p::PeerId::random()
            )]),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("Failed to connect to peer at index: 0"),
        "{body}"
    );

    // A peer of another cluster: the connection came up, so 200 as nwaku's `connectPeer`,
    // although the metadata exchange ends it right after.
    let other = start_admin(|c| {
        c.relay.cluster_id = 4;
        c.relay.shards = vec![0];
    })
    .await;
    let (status, body) = rest_a
        .post("/admin/v1/peers", &json!([other.tcp_addr().to_string()]))
        .await;
    assert_eq!((status, body.as_str()), (200, "OK"));
    wait_until(WAIT, || async {
        !a.connected_to(other.handle.peer_id()).await
    })
    .await
    .expect("the peer of another cluster is disconnected");
    let listed = rest_a.get_json("/admin/v1/peers/relay/on/0").await;
    assert_eq!(
        listed["peers"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
}

/// A peer added with `POST /admin/v1/peers` is redialled after it went away and came back,
/// as nwaku's peer manager reconnects the peers it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_added_peers_are_redialled_when_they_come_back() {
    init_tracing();
    let a = start_admin(|_| {}).await;
    let b = start_admin(|_| {}).await;
    let rest_a = Rest::of(&a);
    connect(&rest_a, &b).await;
    let b_id = b.handle.peer_id();
    let port = b
        .tcp_addr()
        .iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("b listens on TCP");
    let dir = b.stop().await;
    wait_until(WAIT, || async { !a.connected_to(b_id).await })
        .await
        .expect("a sees b gone");
    let b = TestNode::start_in(dir, |c| {
        c.rest.admin = true;
        c.network.tcp_port = port;
    })
    .await;
    assert_eq!(b.handle.peer_id(), b_id, "b keeps its identity");
    // Only a can restore the connection: b never knew a's address.
    wait_until(WAIT, || async { a.connected_to(b_id).await })
        .await
        .expect("a redials the peer it was given");
}

/// Without relay the per-shard lists are nwaku's 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_shard_lists_need_relay() {
    init_tracing();
    let node = start_admin(|c| {
        c.relay.enabled = false;
        c.store.enabled = false;
        c.lightpush.enabled = false;
        c.filter.enabled = false;
    })
    .await;
    let rest = Rest::of(&node);
    for path in ["/admin/v1/peers/relay", "/admin/v1/peers/mesh/on/0"] {
        assert_eq!(
            rest.get(path).await,
            (
                503,
                "Error: Relay Protocol is not mounted to the node".to_owned()
            ),
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_subscribe_publish_and_read_across_two_nodes() {
    init_tracing();
    let a = start_admin(|_| {}).await;
    let b = start_admin(|_| {}).await;
    let (rest_a, rest_b) = (Rest::of(&a), Rest::of(&b));
    let messages = format!("/relay/v1/messages/{}", enc(TOPIC));

    // The node's own shards are REST-subscribed from its start, as nwaku's; after an
    // unsubscribe a GET is 404 and a publish 400, as nwaku.
    assert_eq!(rest_b.get(&messages).await.0, 200);
    assert_eq!(
        rest_b
            .delete("/relay/v1/subscriptions", &json!([TOPIC]))
            .await,
        (200, "OK".to_owned())
    );
    assert_eq!(rest_b.get(&messages).await.0, 404);
    let (status, body) = rest_b
        .post(
            &messages,
            &json!({"payload": b64(b"x"), "contentTopic": CONTENT_TOPIC}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Node not subscribed to topic"), "{body}");
    for rest in [&rest_a, &rest_b] {
        assert_eq!(
            rest.post("/relay/v1/subscriptions", &json!([TOPIC])).await,
            (200, "OK".to_owned())
        );
    }
    connect(&rest_a, &b).await;

    let timestamp = now_nanos();
    assert_eq!(
        rest_a
            .post(&messages, &message(b"over rest", timestamp))
            .await,
        (200, "OK".to_owned())
    );
    let got = drain_until(&rest_b, &messages, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["payload"], b64(b"over rest"));
    assert_eq!(got[0]["contentTopic"], CONTENT_TOPIC);
    assert_eq!(got[0]["timestamp"], timestamp);
    assert_eq!(got[0]["meta"], b64(b"m"));
    assert_eq!(got[0]["version"], 0);
    assert_eq!(got[0]["ephemeral"], false);
    // A GET drains the cache; the publisher's own cache has its message too.
    assert_eq!(rest_b.get_json(&messages).await, json!([]));
    assert_eq!(drain_until(&rest_a, &messages, 1).await.len(), 1);

    // Autosharding: subscribe by content topic, publish without a pubsub topic.
    let auto = format!("/relay/v1/auto/messages/{}", enc(CONTENT_TOPIC));
    assert_eq!(rest_b.get(&auto).await.0, 404);
    assert_eq!(
        rest_b
            .post("/relay/v1/auto/subscriptions", &json!([CONTENT_TOPIC]))
            .await,
        (200, "OK".to_owned())
    );
    let auto_topic = roost_node::Config::default()
        .relay
        .autoshard(CONTENT_TOPIC)
        .unwrap()
        .to_string();
    let (status, body) = rest_a
        .post(
            "/relay/v1/auto/messages",
            &message(b"autosharded", now_nanos()),
        )
        .await;
    assert_eq!((status, body.as_str()), (200, "OK"), "to {auto_topic}");
    let got = drain_until(&rest_b, &auto, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["payload"], b64(b"autosharded"));
    assert_eq!(
        rest_b
            .delete("/relay/v1/auto/subscriptions", &json!([CONTENT_TOPIC]))
            .await
            .0,
        200
    );
    assert_eq!(rest_b.get(&auto).await.0, 404);

    // Errors as nwaku answers them.
    let (status, _) = rest_b
        .post_raw("/relay/v1/subscriptions", "not json".into())
        .await;
    assert_eq!(status, 400, "unreadable body");
    let (status, body) = rest_b
        .post("/relay/v1/subscriptions", &json!(["/waku/2/rs/1/70000"]))
        .await;
    assert_eq!(status, 400, "a shard index out of range: {body}");
    let (status, _) = rest_b
        .post("/relay/v1/subscriptions", &json!(["/not/a/shard"]))
        .await;
    assert_eq!(status, 400, "not a static-shard topic");
    let (status, body) = rest_a
        .post(
            &format!("/relay/v1/messages/{}", enc("/waku/2/rs/9/0")),
            &message(b"x", now_nanos()),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Node not subscribed to topic"), "{body}");
    let (status, _) = rest_a
        .post(
            &messages,
            &json!({"payload": "%%%", "contentTopic": CONTENT_TOPIC}),
        )
        .await;
    assert_eq!(status, 400, "payload is not base64");
    let (status, _) = rest_a
        .post(&messages, &json!({"contentTopic": CONTENT_TOPIC}))
        .await;
    assert_eq!(status, 400, "no payload");
    let (status, _) = rest_a
        .post("/relay/v1/auto/messages", &json!({"payload": b64(b"x")}))
        .await;
    assert_eq!(status, 400, "autosharding needs a content topic");

    // Unsubscribing ends the cache.
    assert_eq!(
        rest_b
            .delete("/relay/v1/subscriptions", &json!([TOPIC]))
            .await
            .0,
        200
    );
    assert_eq!(rest_b.get(&messages).await.0, 404);
}

/// The shards `rest`'s node relays now, from `/admin/v1/peers/relay`.
async fn relayed_shards(rest: &Rest) -> Vec<u64> {
    let list = rest.get_json("/admin/v1/peers/relay").await;
    list.as_array()
        .map(|l| l.iter().filter_map(|s| s["shard"].as_u64()).collect())
        .unwrap_or_default()
}

/// Publishes through `from` at `publish_path` (a fresh message each time, `content_topic` when
/// given) until `to` reads one at `read_path`: a shard just joined has no mesh until gossipsub's
/// next heartbeat. Returns what `to` read; panics after 20 tries.
async fn publish_until_read(
    from: &Rest,
    publish_path: &str,
    content_topic: Option<&str>,
    to: &Rest,
    read_path: &str,
) -> Vec<Value> {
    for n in 0..20 {
        let mut m = message(format!("try {n}").as_bytes(), now_nanos());
        if let Some(topic) = content_topic {
            m["contentTopic"] = json!(topic);
        }
        let (status, body) = from.post(publish_path, &m).await;
        assert_eq!(status, 200, "{publish_path}: {body}");
        let got = drain_until(to, read_path, 1).await;
        if !got.is_empty() {
            return got;
        }
    }
    panic!("nothing published at {publish_path} was read at {read_path}");
}

/// A REST subscription to a shard outside `relay.shards` makes the relay join it, as nwaku's
/// does: messages on it are relayed, cached, archived; unsubscribing leaves it again, while
/// the configured shards stay relayed whatever REST does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_subscriptions_join_and_leave_shards_outside_the_configured_ones() {
    init_tracing();
    const JOINED: &str = "/waku/2/rs/1/5";
    let only_shard_0 = |c: &mut roost_node::Config| c.relay.shards = vec![0];
    let a = start_admin(only_shard_0).await;
    let b = start_admin(only_shard_0).await;
    let (rest_a, rest_b) = (Rest::of(&a), Rest::of(&b));
    let messages = format!("/relay/v1/messages/{}", enc(JOINED));
    connect(&rest_a, &b).await;

    // Not relayed yet: not readable, not publishable.
    assert_eq!(rest_b.get(&messages).await.0, 404);
    let (status, body) = rest_a
        .post(&messages, &message(b"early", now_nanos()))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Node not subscribed to topic"), "{body}");
    // A free-form topic cannot be joined.
    for bad in ["/waku/2/default-waku/proto", "/waku/2/rs/1/99999"] {
        let (status, body) = rest_a.post("/relay/v1/subscriptions", &json!([bad])).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    for rest in [&rest_a, &rest_b] {
        assert_eq!(
            rest.post("/relay/v1/subscriptions", &json!([JOINED])).await,
            (200, "OK".to_owned())
        );
    }
    // Both relay it now: the shard shows up in the admin shard lists with the other node.
    let id_b = b.handle.peer_id().to_string();
    wait_until(WAIT, || async {
        let shards = rest_a.get_json("/admin/v1/peers/relay").await;
        shards.as_array().is_some_and(|list| {
            list.iter().any(|s| {
                s["shard"] == json!(5)
                    && s["peers"].as_array().is_some_and(|peers| {
                        peers
                            .iter()
                            .any(|p| p["multiaddr"].as_str().is_some_and(|m| m.ends_with(&id_b)))
                    })
            })
        })
    })
    .await
    .expect("a lists b as a relay peer on the joined shard");
    publish_until_read(&rest_a, &messages, None, &rest_b, &messages).await;
    // b's store archived it: the store takes messages of joined shards too.
    let stored = rest_b
        .get_json(&format!(
            "/store/v3/messages?includeData=true&pubsubTopic={}",
            enc(JOINED)
        ))
        .await;
    assert!(
        stored["messages"].as_array().is_some_and(|m| !m.is_empty()),
        "{stored}"
    );

    // Unsubscribed: b leaves the shard (a's publish is still accepted, a still relays it).
    assert_eq!(
        rest_b
            .delete("/relay/v1/subscriptions", &json!([JOINED]))
            .await,
        (200, "OK".to_owned())
    );
    assert_eq!(rest_b.get(&messages).await.0, 404);
    let (status, body) = rest_b.post(&messages, &message(b"left", now_nanos())).await;
    assert_eq!(status, 400, "{body}");
    wait_until(WAIT, || async {
        !relayed_shards(&rest_b).await.contains(&5)
    })
    .await
    .expect("b no longer lists the shard it left");
    // An autosharded publish goes out on any shard, as nwaku's: one on shard 3, which a does
    // not relay, goes through gossipsub's fanout to b, which does.
    const ON_SHARD_3: &str = "/toychat/2/huilong/proto";
    let three = "/waku/2/rs/1/3";
    assert_eq!(
        rest_b
            .post("/relay/v1/subscriptions", &json!([three]))
            .await,
        (200, "OK".to_owned())
    );
    let at_b = format!("/relay/v1/messages/{}", enc(three));
    let got = publish_until_read(
        &rest_a,
        "/relay/v1/auto/messages",
        Some(ON_SHARD_3),
        &rest_b,
        &at_b,
    )
    .await;
    assert_eq!(got[0]["contentTopic"], ON_SHARD_3);
    // a did not join shard 3 by publishing on it.
    assert!(!relayed_shards(&rest_a).await.contains(&3));

    // The configured shard stays relayed after a REST unsubscribe.
    assert_eq!(
        rest_b
            .delete("/relay/v1/subscriptions", &json!([TOPIC]))
            .await,
        (200, "OK".to_owned())
    );
    assert!(relayed_shards(&rest_b).await.contains(&0));
}

/// `relay.content_topics` (nwaku's `--content-topic`): their shards are relayed and REST readers
/// have them cached from the start, without subscribing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_topics_given_at_start_are_relayed_and_cached() {
    init_tracing();
    const CHAT: &str = "/toychat/2/huilong/proto";
    let start = |c: &mut roost_node::Config| {
        c.relay.shards = vec![0];
        c.relay.content_topics = vec![CHAT.to_owned()];
    };
    let a = start_admin(start).await;
    let b = start_admin(start).await;
    let (rest_a, rest_b) = (Rest::of(&a), Rest::of(&b));
    let auto = format!("/relay/v1/auto/messages/{}", enc(CHAT));
    assert_eq!(rest_b.get_json(&auto).await, json!([]));
    connect(&rest_a, &b).await;
    publish_until_read(
        &rest_a,
        "/relay/v1/auto/messages",
        Some(CHAT),
        &rest_b,
        &auto,
    )
    .await;
    // Its shard (3 of 8) is relayed besides shard 0.
    assert!(relayed_shards(&rest_b).await.contains(&3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_cache_keeps_the_newest_messages_up_to_its_capacity() {
    init_tracing();
    let node = TestNode::start_with(|c| c.rest.relay_cache_capacity = 3).await;
    let rest = Rest::of(&node);
    let messages = format!("/relay/v1/messages/{}", enc(TOPIC));
    assert_eq!(
        rest.post("/relay/v1/subscriptions", &json!([TOPIC]))
            .await
            .0,
        200
    );
    let start = now_nanos();
    for i in 0..5u8 {
        assert_eq!(
            rest.post(&messages, &message(&[i], start + i64::from(i)))
                .await
                .0,
            200
        );
    }
    let got = drain_until(&rest, &messages, 3).await;
    let payloads: Vec<&Value> = got.iter().map(|m| &m["payload"]).collect();
    assert_eq!(
        payloads,
        vec![&json!(b64(&[2])), &json!(b64(&[3])), &json!(b64(&[4]))]
    );
}

/// Publishes `n` messages on [`TOPIC`] through `rest`, one millisecond apart, oldest first.
async fn publish_history(rest: &Rest, n: usize) -> Vec<i64> {
    let path = format!("/relay/v1/messages/{}", enc(TOPIC));
    let start = now_nanos() - 5_000_000_000;
    let mut timestamps = Vec::new();
    for i in 0..n {
        let t = start + i as i64 * 1_000_000;
        let (status, body) = rest
            .post(&path, &message(format!("history {i}").as_bytes(), t))
            .await;
        assert_eq!(status, 200, "{body}");
        timestamps.push(t);
    }
    timestamps
}

/// Follows `paginationCursor` to the end and returns the pages.
async fn store_pages(rest: &Rest, query: &str) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/store/v3/messages?{query}&cursor={}", enc(c)),
            None => format!("/store/v3/messages?{query}"),
        };
        let page = rest.get_json(&path).await;
        assert_eq!(page["statusCode"], 200, "{page}");
        cursor = page["paginationCursor"].as_str().map(str::to_owned);
        pages.push(page);
        if cursor.is_none() {
            return pages;
        }
        assert!(pages.len() < 100, "paging does not end");
    }
}

fn timestamps_of(pages: &[Value]) -> Vec<i64> {
    pages
        .iter()
        .flat_map(|p| p["messages"].as_array().cloned().unwrap_or_default())
        .map(|m| {
            m["message"]["timestamp"]
                .as_i64()
                .expect("includeData gives messages")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_queries_with_nwaku_parameters_and_cursors_both_ways() {
    init_tracing();
    let store = start_admin(|_| {}).await;
    let reader = start_admin(|c| c.store.enabled = false).await;
    let (rest_store, rest_reader) = (Rest::of(&store), Rest::of(&reader));
    let sent = publish_history(&rest_store, 5).await;
    let base = format!(
        "pubsubTopic={}&contentTopics={}&includeData=true&pageSize=2",
        enc(TOPIC),
        enc(&format!("{CONTENT_TOPIC},/other/1/topic/proto"))
    );
    // The writer commits in batches: wait until all five are readable.
    wait_until(WAIT, || async {
        let page = rest_store
            .get_json(&format!("/store/v3/messages?{base}&pageSize=100"))
            .await;
        page["messages"].as_array().is_some_and(|m| m.len() == 5)
    })
    .await
    .expect("the store holds the five messages");

    // Ascending is nwaku's default: pages of 2, 2, 1 in time order.
    let forward = store_pages(&rest_store, &base).await;
    assert_eq!(forward.len(), 3);
    assert_eq!(timestamps_of(&forward), sent);
    let first = &forward[0];
    assert!(first["requestId"].is_string(), "{first}");
    assert_eq!(first["statusDesc"], "OK", "{first}");
    let entry = &first["messages"][0];
    assert_eq!(entry["pubsubTopic"], TOPIC, "{first}");
    assert_eq!(entry["message"]["payload"], b64(b"history 0"), "{first}");
    let hash = entry["messageHash"].as_str().expect("hash").to_owned();
    assert!(hash.starts_with("0x") && hash.len() == 66, "{hash}");
    assert!(
        first["paginationCursor"]
            .as_str()
            .is_some_and(|c| c.starts_with("0x")),
        "{first}"
    );

    // Descending: the newest page first (each page in time order, as store v3 answers).
    let backward = store_pages(&rest_store, &format!("{base}&ascending=false")).await;
    let mut timestamps = timestamps_of(&backward);
    timestamps.sort_unstable();
    assert_eq!(timestamps, sent);
    assert_eq!(
        timestamps_of(&backward[..1]),
        sent[3..].to_vec(),
        "descending starts with the newest"
    );

    // includeData defaults to false: hashes only.
    let bare = rest_store
        .get_json(&format!(
            "/store/v3/messages?pubsubTopic={}&contentTopics={}",
            enc(TOPIC),
            enc(CONTENT_TOPIC)
        ))
        .await;
    assert!(bare["messages"][0].get("message").is_none(), "{bare}");
    assert!(bare["messages"][0]["messageHash"].is_string(), "{bare}");

    // A time window: the middle three.
    let window = rest_store
        .get_json(&format!(
            "/store/v3/messages?{base}&pageSize=100&startTime={}&endTime={}",
            sent[1] - 500_000,
            sent[3] + 500_000
        ))
        .await;
    assert_eq!(timestamps_of(&[window]), sent[1..=3].to_vec());
    // nwaku's REST endTime is inclusive: startTime == endTime finds the message stamped then.
    let exact = rest_store
        .get_json(&format!(
            "/store/v3/messages?{base}&startTime={}&endTime={}",
            sent[2], sent[2]
        ))
        .await;
    assert_eq!(timestamps_of(&[exact]), vec![sent[2]]);
    // A range that ends before it starts matches nothing: 200 and no messages, as nwaku.
    let reversed = rest_store
        .get_json(&format!(
            "/store/v3/messages?{base}&startTime={}&endTime={}",
            sent[3], sent[1]
        ))
        .await;
    assert_eq!(reversed["statusCode"], 200, "{reversed}");
    assert_eq!(reversed["messages"], serde_json::json!([]), "{reversed}");

    // Lookup by hashes, comma-separated.
    let other = forward[2]["messages"][0]["messageHash"].as_str().unwrap();
    let lookup = rest_store
        .get_json(&format!(
            "/store/v3/messages?includeData=true&hashes={}",
            enc(&format!("{hash},{other}"))
        ))
        .await;
    let found: Vec<&str> = lookup["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["messageHash"].as_str())
        .collect();
    assert_eq!(found.len(), 2, "{lookup}");
    assert!(
        found.contains(&hash.as_str()) && found.contains(&other),
        "{lookup}"
    );

    // The reader has no store: it asks the store node named by peerAddr, over libp2p.
    let (status, _) = rest_reader
        .get(&format!("/store/v3/messages?pubsubTopic={}", enc(TOPIC)))
        .await;
    assert_eq!(status, 412, "no store here and no peer named");
    let remote = store_pages(
        &rest_reader,
        &format!("{base}&peerAddr={}", enc(&store.tcp_addr().to_string())),
    )
    .await;
    assert_eq!(timestamps_of(&remote), sent);

    // Bad parameters are 400s with nwaku's reasons.
    for bad in [
        "cursor=0x1234",
        "hashes=nothex",
        "startTime=yesterday",
        "includeData=maybe",
        "pageSize=many",
        "peerAddr=not-an-address",
    ] {
        let (status, body) = rest_store.get(&format!("/store/v3/messages?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    // A pubsub topic this node does not archive (even one that is no Waku topic) matches
    // nothing: 200 and no messages, as nwaku answers the interop suite's `pubsubTopic=test`.
    for elsewhere in ["pubsubTopic=%2Fwaku%2F2%2Frs%2F9%2F9", "pubsubTopic=test"] {
        let page = rest_store
            .get_json(&format!("/store/v3/messages?{elsewhere}"))
            .await;
        assert_eq!(page["messages"], json!([]), "{elsewhere}: {page}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lightpush_v3_relays_and_answers_with_light_push_codes() {
    init_tracing();
    let a = start_admin(|_| {}).await;
    let b = start_admin(|_| {}).await;
    let (rest_a, rest_b) = (Rest::of(&a), Rest::of(&b));

    // Alone, nobody would relay it: 505 NO_PEERS_TO_RELAY.
    let push = |topic: Option<&str>, payload: &[u8]| {
        let mut body = json!({ "message": message(payload, now_nanos()) });
        if let Some(topic) = topic {
            body["pubsubTopic"] = json!(topic);
        }
        body
    };
    let (status, body) = rest_a
        .post("/lightpush/v3/message", &push(Some(TOPIC), b"alone"))
        .await;
    assert_eq!(status, 505, "{body}");
    assert!(serde_json::from_str::<Value>(&body).unwrap()["statusDesc"].is_string());

    assert_eq!(
        rest_b
            .post("/relay/v1/subscriptions", &json!([TOPIC]))
            .await
            .0,
        200
    );
    connect(&rest_a, &b).await;
    let (status, body) = rest_a
        .post("/lightpush/v3/message", &push(Some(TOPIC), b"pushed"))
        .await;
    assert_eq!(status, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert!(
        reply["relayPeerCount"].as_u64().is_some_and(|n| n >= 1),
        "{reply}"
    );
    let got = drain_until(&rest_b, &format!("/relay/v1/messages/{}", enc(TOPIC)), 1).await;
    assert_eq!(
        got.first().map(|m| &m["payload"]),
        Some(&json!(b64(b"pushed")))
    );
    // a is a store node: the 200 came only once the message was committed, so it is in the
    // store at once.
    let stored = rest_a
        .get_json(&format!(
            "/store/v3/messages?includeData=true&pubsubTopic={}&contentTopics={}",
            enc(TOPIC),
            enc(CONTENT_TOPIC)
        ))
        .await;
    assert!(
        stored["messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|e| e["message"]["payload"] == b64(b"pushed"))),
        "{stored}"
    );

    // Legacy light push: the same body, answered in text.
    let (status, body) = rest_a
        .post("/lightpush/v1/message", &push(Some(TOPIC), b"legacy"))
        .await;
    assert_eq!((status, body.as_str()), (200, "OK"));
    let got = drain_until(&rest_b, &format!("/relay/v1/messages/{}", enc(TOPIC)), 1).await;
    assert_eq!(
        got.first().map(|m| &m["payload"]),
        Some(&json!(b64(b"legacy")))
    );
    assert_eq!(
        rest_a.post_raw("/lightpush/v1/message", "{".into()).await.0,
        400
    );
    let (status, body) = rest_a
        .post("/lightpush/v1/message", &push(Some("/waku/2/rs/9/0"), b"x"))
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("Failed to request a message push"),
        "{body}"
    );

    // No pubsub topic: autosharded from the content topic.
    let (status, body) = rest_a
        .post("/lightpush/v3/message", &push(None, b"autosharded"))
        .await;
    assert_eq!(status, 200, "{body}");

    // A topic this node does not relay: 421 UNSUPPORTED_PUBSUB_TOPIC.
    let (status, body) = rest_a
        .post("/lightpush/v3/message", &push(Some("/waku/2/rs/9/0"), b"x"))
        .await;
    assert_eq!(status, 421, "{body}");
    // Unreadable requests: 400 with a statusDesc.
    let (status, body) = rest_a.post_raw("/lightpush/v3/message", "{".into()).await;
    assert_eq!(status, 400, "{body}");
    assert!(serde_json::from_str::<Value>(&body).unwrap()["statusDesc"].is_string());
    let (status, _) = rest_a
        .post(
            "/lightpush/v3/message",
            &json!({"pubsubTopic": TOPIC, "message": {"payload": "%%%"}}),
        )
        .await;
    assert_eq!(status, 400);
}

/// A node without an archive or a light push service of its own (nwaku started with
/// `--storenode`/`--lightpushnode`) answers the store and light push routes through a service
/// node: the one configured, else a connected peer that lists the protocol in identify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_nodes_ask_service_nodes_for_store_and_light_push() {
    init_tracing();
    let service = start_admin(|_| {}).await;
    let relay_peer = start_admin(|_| {}).await;
    let rest_service = Rest::of(&service);
    // The service needs a relay peer to answer a push with 200.
    connect(&rest_service, &relay_peer).await;
    let client_only = |c: &mut roost_node::Config| {
        c.store.enabled = false;
        c.lightpush.enabled = false;
    };
    let configured = {
        let address = service.tcp_addr();
        start_admin(move |c| {
            client_only(c);
            c.rest.store_node = Some(address.clone());
            c.rest.lightpush_node = Some(address);
        })
        .await
    };
    let unconfigured = start_admin(client_only).await;
    let (rest_configured, rest_unconfigured) = (Rest::of(&configured), Rest::of(&unconfigured));
    // nwaku's `waku_service_peers`: the service node's address (no /p2p) per protocol.
    let service_address = service
        .tcp_addr()
        .to_string()
        .split("/p2p/")
        .next()
        .unwrap_or_default()
        .to_owned();
    for protocol in [
        "/vac/waku/store-query/3.0.0",
        "/vac/waku/lightpush/3.0.0",
        "/vac/waku/lightpush/2.0.0-beta1",
    ] {
        assert_eq!(
            configured
                .metric(&format!(
                    "waku_service_peers{{protocol=\"{protocol}\",peerId=\"{service_address}\"}}"
                ))
                .await,
            Some(1.0),
            "{protocol}"
        );
    }
    assert!(!unconfigured.metrics().await.contains("waku_service_peers{"));
    let push =
        |payload: &[u8]| json!({ "pubsubTopic": TOPIC, "message": message(payload, now_nanos()) });
    let query = format!(
        "/store/v3/messages?includeData=true&pubsubTopic={}&contentTopics={}",
        enc(TOPIC),
        enc(CONTENT_TOPIC)
    );
    let payloads = |page: &Value| -> Vec<String> {
        page["messages"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|e| e["message"]["payload"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };

    // Nobody known to ask: nwaku's 412 and 503.
    let (status, body) = rest_unconfigured.get(&query).await;
    assert_eq!(
        (status, body.as_str()),
        (412, "No suitable service peer & no discovery method")
    );
    let (status, body) = rest_unconfigured
        .post("/lightpush/v3/message", &push(b"nobody"))
        .await;
    assert_eq!(status, 503, "{body}");

    // Configured service node: the push is relayed and stored there, and the query that
    // names no peer is answered from its archive.
    let (status, body) = rest_configured
        .post("/lightpush/v3/message", &push(b"through the service"))
        .await;
    assert_eq!(status, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert!(
        reply["relayPeerCount"].as_u64().is_some_and(|n| n >= 1),
        "{reply}"
    );
    let page = rest_configured.get_json(&query).await;
    assert_eq!(payloads(&page), vec![b64(b"through the service")], "{page}");
    // The service's refusals come back with its codes.
    let (status, body) = rest_configured
        .post(
            "/lightpush/v3/message",
            &json!({ "pubsubTopic": "/waku/2/rs/9/0", "message": message(b"x", now_nanos()) }),
        )
        .await;
    assert_eq!(status, 421, "{body}");

    // A node that serves light push itself but has a light push node set sends there, as
    // nwaku with --lightpushnode: alone, it would answer 505 (no relay peers).
    let serving = {
        let address = service.tcp_addr();
        start_admin(move |c| {
            c.store.enabled = false;
            c.rest.lightpush_node = Some(address);
        })
        .await
    };
    let (status, body) = Rest::of(&serving)
        .post("/lightpush/v3/message", &push(b"forwarded"))
        .await;
    assert_eq!(status, 200, "{body}");

    // Not configured but connected to a service node: picked from what identify listed.
    connect(&rest_unconfigured, &service).await;
    let (status, body) = rest_unconfigured
        .post("/lightpush/v3/message", &push(b"picked"))
        .await;
    assert_eq!(status, 200, "{body}");
    let page = rest_unconfigured.get_json(&query).await;
    assert_eq!(
        payloads(&page),
        vec![
            b64(b"through the service"),
            b64(b"forwarded"),
            b64(b"picked")
        ],
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_and_body_limits() {
    init_tracing();
    let node = TestNode::start_with(|c| {
        c.rest.allow_origin = vec!["http://*.example.org".into()];
        c.relay.max_message_size = roost_node::config::ByteSize::kib(1);
    })
    .await;
    let rest = Rest::of(&node);
    let response = rest
        .http
        .get(format!("{}/version", rest.base))
        .header("origin", "http://app.example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("http://app.example.org")
    );
    let response = rest
        .http
        .get(format!("{}/version", rest.base))
        .header("origin", "http://evil.example.com")
        .send()
        .await
        .unwrap();
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    let preflight = rest
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/relay/v1/subscriptions", rest.base),
        )
        .header("origin", "http://app.example.org")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status().as_u16(), 200);
    assert!(preflight
        .headers()
        .get("access-control-allow-methods")
        .is_some());

    // A body far past a message at the relay's size limit is refused unread.
    let big = format!("[\"{}\"]", "a".repeat(512 * 1024));
    let (status, _) = rest.post_raw("/relay/v1/subscriptions", big).await;
    assert_eq!(status, 413);
    // A message body too large is answered as nwaku answers the oversize message in it
    // (nwaku reads bodies up to 16 MiB; Roost does not read them).
    let huge = json!({
        "message": {"payload": b64(&vec![b'a'; 1024 * 1024]), "contentTopic": CONTENT_TOPIC},
        "pubsubTopic": TOPIC,
    });
    let (status, body) = rest.post("/lightpush/v3/message", &huge).await;
    assert_eq!(status, 413, "{body}");
    let desc: Value = serde_json::from_str(&body).unwrap();
    assert!(
        desc["statusDesc"]
            .as_str()
            .is_some_and(|d| d.contains("Message size exceeded maximum of 1024 bytes")),
        "{body}"
    );
    let (status, body) = rest
        .post(
            &format!("/relay/v1/messages/{}", enc(TOPIC)),
            &huge["message"],
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("Message size exceeded maximum of 1024 bytes"),
        "{body}"
    );
}

/// The REST door spends the libp2p door's quotas, keyed by the HTTP client's IP: a client
/// from 127.0.0.2 over a small per-IP store or light push quota gets nwaku's 429 answer for
/// the route, while 127.0.0.1 (exempt in test configs) stays exempt from per-IP rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_clients_spend_the_throttles_quotas_by_ip() {
    init_tracing();
    let node = TestNode::start_with(|c| {
        c.throttle.store = "2/1h per-ip".parse().unwrap();
        c.throttle.lightpush = "2/1h per-ip".parse().unwrap();
    })
    .await;
    let exempt = Rest::of(&node);
    let other = Rest {
        base: node.rest_url(),
        http: reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
            .build()
            .unwrap(),
    };
    let query = format!(
        "/store/v3/messages?pubsubTopic={}&contentTopics={}",
        enc(TOPIC),
        enc(CONTENT_TOPIC)
    );
    for _ in 0..2 {
        let (status, body) = other.get(&query).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = other.get(&query).await;
    assert_eq!((status, body.as_str()), (429, "Request rate limit reached"));
    for _ in 0..5 {
        let (status, body) = exempt.get(&query).await;
        assert_eq!(
            status, 200,
            "an exempt IP is not held to per-IP rules: {body}"
        );
    }

    // Light push: refused or not for want of relay peers, each request spends a cell.
    let push = json!({"pubsubTopic": TOPIC, "message": {"payload": b64(b"q"), "contentTopic": CONTENT_TOPIC}});
    for _ in 0..2 {
        let (status, body) = other.post("/lightpush/v3/message", &push).await;
        assert_ne!(status, 429, "{body}");
    }
    let (status, body) = other.post("/lightpush/v3/message", &push).await;
    assert_eq!(status, 429, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert!(
        body["statusDesc"]
            .as_str()
            .is_some_and(|d| d.contains("lightpush quota exceeded")),
        "{body}"
    );
    let (status, body) = other.post("/lightpush/v1/message", &push).await;
    assert_eq!((status, body.as_str()), (429, "Request rate limit reached"));
    // A relay publish from a client is a publish too: it spends the same quota.
    let message = json!({"payload": b64(b"r"), "contentTopic": CONTENT_TOPIC});
    let (status, body) = other
        .post(&format!("/relay/v1/messages/{}", enc(TOPIC)), &message)
        .await;
    assert_eq!((status, body.as_str()), (429, "Request rate limit reached"));
    let (status, body) = other.post("/relay/v1/auto/messages", &message).await;
    assert_eq!((status, body.as_str()), (429, "Request rate limit reached"));
    let (status, body) = exempt.post("/lightpush/v3/message", &push).await;
    assert_ne!(status, 429, "{body}");
    let metrics = node.metrics().await;
    for (service, refused) in [("store", 1.0), ("lightpush", 4.0)] {
        assert_eq!(
            metric_sum(
                &metrics,
                "roost_throttle_throttled_total",
                &[("service", service), ("key", "ip")]
            ),
            refused,
            "{metrics}"
        );
    }

    // A banned address is refused on every route, as its libp2p connections are; the ban
    // lifted, it is served again.
    let banned = roost_node::throttle::Offender::Ip(std::net::IpAddr::from([127, 0, 0, 2]).into());
    node.handle
        .throttle()
        .ban(banned, std::time::Duration::from_secs(3600));
    let (status, body) = other.get("/health").await;
    assert_eq!((status, body.as_str()), (403, "this address is banned"));
    let (status, body) = exempt.get("/health").await;
    assert_eq!(status, 200, "{body}");
    assert!(node.handle.throttle().unban(&banned));
    let (status, body) = other.get("/health").await;
    assert_eq!(status, 200, "{body}");
}

/// Polls a filter `GET` until it returns at least `n` messages in total.
async fn drain_filter_until(rest: &Rest, path: &str, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.len() < n && tokio::time::Instant::now() < deadline {
        let (status, body) = rest.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        let list: Value = serde_json::from_str(&body).unwrap();
        got.extend(list.as_array().cloned().unwrap_or_default());
        if got.len() < n {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    got
}

/// Node B serves the REST filter routes as a filter client of node A (`rest.filter_node`):
/// subscribe, ping, read what A pushes, unsubscribe, with nwaku's bodies and codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_routes_subscribe_at_the_filter_node_and_read_its_pushes() {
    init_tracing();
    let a = start_admin(|_| {}).await;
    let a_address = a.tcp_addr();
    // B is a pure client: no relay (whose gossip would keep the connection to A busy) and a
    // short idle timeout, so pushes must still arrive after its connection to A went idle.
    let b = start_admin(|c| {
        c.rest.filter_node = Some(a_address);
        c.relay.enabled = false;
        c.store.enabled = false;
        c.lightpush.enabled = false;
        c.filter.enabled = false;
        c.network.idle_connection_timeout = std::time::Duration::from_millis(500);
    })
    .await;
    let (rest_a, rest_b) = (Rest::of(&a), Rest::of(&b));
    let messages = format!("/filter/v2/messages/{}", enc(CONTENT_TOPIC));
    let subscription = json!({
        "requestId": "sub-1",
        "pubsubTopic": TOPIC,
        "contentFilters": [CONTENT_TOPIC],
    });

    // Nothing subscribed yet: reading is a 400, a ping is the service's 404.
    let (status, body) = rest_b.get(&messages).await;
    assert_eq!(
        (status, body),
        (400, format!("Not subscribed to topic: {CONTENT_TOPIC}"))
    );
    let (status, body) = rest_b.get("/filter/v2/subscriptions/ping-0").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["requestId"],
        "ping-0"
    );

    let (status, body) = rest_b.post("/filter/v2/subscriptions", &subscription).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"requestId": "sub-1", "statusDesc": "OK"})
    );
    // A's admin list shows B's criteria.
    assert_eq!(
        rest_a.get_json("/admin/v1/filter/subscriptions").await,
        json!([{
            "peerId": b.handle.peer_id().to_string(),
            "filterCriteria": [{"pubsubTopic": TOPIC, "contentTopic": CONTENT_TOPIC}],
        }])
    );
    // B serves no filter: nwaku's 400.
    assert_eq!(
        rest_b.get("/admin/v1/filter/subscriptions").await,
        (
            400,
            "Error: Filter Protocol is not mounted to the node".to_owned()
        )
    );
    let (status, body) = rest_b.get("/filter/v2/subscriptions/ping-1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"requestId": "ping-1", "statusDesc": "OK"})
    );

    // Past B's idle timeout, a message published on A reaches B's REST reader, once.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (status, body) = rest_a
        .post(
            &format!("/relay/v1/messages/{}", enc(TOPIC)),
            &json!({"payload": b64(b"filtered"), "contentTopic": CONTENT_TOPIC, "timestamp": now_nanos()}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let got = drain_filter_until(&rest_b, &messages, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["payload"], json!(b64(b"filtered")));
    assert_eq!(got[0]["contentTopic"], json!(CONTENT_TOPIC));
    assert!(got[0].get("proof").is_none(), "{got:?}");
    assert_eq!(rest_b.get_json(&messages).await, json!([]));
    // The form naming the pubsub topic (go-waku's, called by waku-interop-tests).
    let (status, body) = rest_a
        .post(
            &format!("/relay/v1/messages/{}", enc(TOPIC)),
            &json!({"payload": b64(b"by shard"), "contentTopic": CONTENT_TOPIC, "timestamp": now_nanos()}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let on_topic = format!("/filter/v2/messages/{}/{}", enc(TOPIC), enc(CONTENT_TOPIC));
    let got = drain_filter_until(&rest_b, &on_topic, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["payload"], json!(b64(b"by shard")));

    // Unreadable bodies: 400 for request id "unknown".
    let (status, body) = rest_b
        .post_raw("/filter/v2/subscriptions", "{".into())
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["requestId"],
        "unknown"
    );

    // Unsubscribe: the service forgets B, the cache goes.
    let (status, body) = rest_b
        .delete("/filter/v2/subscriptions", &subscription)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(rest_b.get(&messages).await.0, 400);
    assert_eq!(rest_b.get("/filter/v2/subscriptions/ping-2").await.0, 404);
    assert_eq!(
        rest_a.get_json("/admin/v1/filter/subscriptions").await,
        json!([])
    );
    let (status, body) = rest_b.post("/filter/v2/subscriptions", &subscription).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = rest_b
        .delete(
            "/filter/v2/subscriptions/all",
            &json!({"requestId": "all-1"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(rest_b.get(&messages).await.0, 400);

    // A node without rest.filter_node: nwaku's 503.
    let (status, body) = rest_a.post("/filter/v2/subscriptions", &subscription).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"requestId": "sub-1", "statusDesc": "No suitable service peer & no discovery method"})
    );
}

/// `/admin/v1/peers/service` lists the peers serving a Waku service with those protocols (from
/// identify), `/admin/v1/peers` their agent; `POST /admin/v1/log-level/{level}` changes a
/// `roost` process's log filter, and says 503 in a process whose logging roost did not set up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_service_peers_and_log_level() {
    init_tracing();
    let a = start_admin(|_| {}).await;
    let b = TestNode::start().await;
    let rest = Rest::of(&a);
    connect(&rest, &b).await;
    let id = b.handle.peer_id().to_string();
    let last = std::sync::Mutex::new(Value::Null);
    let found = wait_until(WAIT, || async {
        let listed = rest.get_json("/admin/v1/peers/service").await;
        *last.lock().unwrap() = listed.clone();
        listed.as_array().is_some_and(|l| {
            l.iter().any(|p| {
                p["multiaddr"].as_str().is_some_and(|m| m.ends_with(&id))
                    && p["protocols"]
                        .as_array()
                        .is_some_and(|ps| ps.contains(&json!("/vac/waku/store-query/3.0.0")))
            })
        })
    })
    .await;
    let listed = last.lock().unwrap().clone();
    assert!(found.is_ok(), "b is listed with its services: {listed}");
    let peer = listed
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|p| p["multiaddr"].as_str().is_some_and(|m| m.ends_with(&id)))
        })
        .cloned()
        .unwrap_or_default();
    let protocols: Vec<&str> = peer["protocols"]
        .as_array()
        .map(|ps| ps.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for expected in [
        "/vac/waku/relay/2.0.0",
        "/vac/waku/store-query/3.0.0",
        "/vac/waku/reconciliation/1.0.0",
        "/vac/waku/transfer/1.0.0",
    ] {
        assert!(protocols.contains(&expected), "{expected} in {protocols:?}");
    }
    assert!(
        !protocols.contains(&"/ipfs/id/1.0.0"),
        "only services: {protocols:?}"
    );
    let all = rest.get_json("/admin/v1/peers").await;
    assert!(
        all.as_array().is_some_and(|l| l
            .iter()
            .any(|p| p["agent"].as_str().is_some_and(|a| a.starts_with("roost/")))),
        "agents from identify: {all}"
    );

    // Embedded in this test process, the node does not own the logging: 503, as nwaku built
    // without runtime log filtering; bad levels are 400 with nwaku's text.
    let (status, _) = rest.post("/admin/v1/log-level/DEBUG", &json!({})).await;
    assert_eq!(status, 503);
    let (status, body) = rest.post("/admin/v1/log-level/LOUD", &json!({})).await;
    assert_eq!(status, 400);
    assert!(body.starts_with("Invalid log-level: LOUD."), "{body}");

    // A roost process: the level changes at once.
    let dir = tempfile::tempdir().unwrap();
    let node =
        roost_tests::process::NodeProcess::start(dir.path(), &["--rest-admin", "true"]).await;
    let rest_address = node
        .logs()
        .iter()
        .find_map(|line| {
            let json: Value = serde_json::from_str(line).ok()?;
            (json["message"] == "roost node started").then(|| {
                json["rest"].as_str().map(|s| {
                    s.trim_start_matches("Some(")
                        .trim_end_matches(')')
                        .to_owned()
                })
            })?
        })
        .expect("the start line names the REST address");
    let process = Rest {
        base: format!("http://{rest_address}"),
        http: reqwest::Client::new(),
    };
    let (status, body) = process.post("/admin/v1/log-level/debug", &json!({})).await;
    assert_eq!((status, body.as_str()), (200, "OK"));
    wait_until(WAIT, || async {
        node.logs()
            .iter()
            .any(|l| l.contains("\"level\":\"DEBUG\""))
    })
    .await
    .expect("debug lines appear");
    let (status, body) = process.post("/admin/v1/log-level/WARN", &json!({})).await;
    assert_eq!((status, body.as_str()), (200, "OK"));
}
