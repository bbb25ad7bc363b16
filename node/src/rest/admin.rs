//! `/admin/v1/peers` (nwaku's `endpoint/admin`), served only with `rest.admin`: the connected
//! peers in nwaku's `WakuPeer` shape (also `/admin/v1/peers/connected` and one by id at
//! `/admin/v1/peer/{peerId}`, by shard at `/admin/v1/peers/connected/on/{shardId}`), the
//! relay and mesh peers per shard (`/admin/v1/peers/relay[/on/{shardId}]`,
//! `/admin/v1/peers/mesh[/on/{shardId}]`, from gossipsub's view in `NodeHandle::network_status`)
//! and dialling a list of multiaddrs.

use std::time::Duration;

use axum::{
    body::Bytes,
    extract::{Path, State as AxumState},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use libp2p::{multiaddr::Protocol, Multiaddr, PeerId};

use super::{json_body, ok, RestError, State};
use crate::{message::ShardTopic, swarm::command::PeerStatus};

/// How long one peer of a `POST` may take to connect (nwaku's `connectPeer` waits for the
/// connection, not just the dial).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most addresses one `POST` dials; each may wait [`CONNECT_TIMEOUT`].
const MAX_PEERS_PER_POST: usize = 64;

pub fn routes() -> Router<State> {
    Router::new()
        .route("/admin/v1/peers", get(peers).post(connect))
        // Roost lists connected peers only, so both lists are the same.
        .route("/admin/v1/peers/connected", get(peers))
        .route("/admin/v1/peer/{peer_id}", get(peer))
        .route(
            "/admin/v1/peers/connected/on/{shard}",
            get(connected_on_shard),
        )
        .route("/admin/v1/peers/relay", get(relay_peers))
        .route(
            "/admin/v1/peers/relay/on/{shard}",
            get(relay_peers_on_shard),
        )
        .route("/admin/v1/peers/mesh", get(mesh_peers))
        .route("/admin/v1/peers/mesh/on/{shard}", get(mesh_peers_on_shard))
        .route("/admin/v1/filter/subscriptions", get(filter_subscriptions))
        .route("/admin/v1/peers/stats", get(stats))
        .route("/admin/v1/peers/service", get(service_peers))
        .route("/admin/v1/log-level/{level}", post(log_level))
}

/// The protocols nwaku's `/admin/v1/peers/service` lists peers by.
const SERVICE_PROTOCOLS: [&str; 9] = [
    "/vac/waku/relay/2.0.0",
    "/vac/waku/filter-subscribe/2.0.0-beta1",
    "/vac/waku/store-query/3.0.0",
    "/vac/waku/store/2.0.0-beta4",
    "/vac/waku/lightpush/2.0.0-beta1",
    "/vac/waku/lightpush/3.0.0",
    "/vac/waku/peer-exchange/2.0.0-alpha1",
    "/vac/waku/reconciliation/1.0.0",
    "/vac/waku/transfer/1.0.0",
];

/// Connected peers that serve a Waku service (by their identify protocols), each with those
/// protocols, as nwaku's `/admin/v1/peers/service`.
async fn service_peers(AxumState(state): AxumState<State>) -> Result<Response, RestError> {
    let peers = connected_peers(&state).await?;
    let list: Vec<serde_json::Value> = peers
        .iter()
        .filter_map(|peer| {
            let services: Vec<&str> = SERVICE_PROTOCOLS
                .into_iter()
                .filter(|s| peer.protocols.iter().any(|p| p == s))
                .collect();
            if services.is_empty() {
                return None;
            }
            let mut json = waku_peer(peer);
            json["protocols"] = services.into();
            Some(json)
        })
        .collect();
    Ok(Json(list).into_response())
}

/// nwaku's `POST /admin/v1/log-level/{logLevel}`: TRACE, DEBUG, INFO, NOTICE, WARN, ERROR or
/// FATAL (any case) set the whole process's log filter (NOTICE is INFO, FATAL is ERROR here).
async fn log_level(Path(level): Path<String>) -> Result<Response, RestError> {
    if level.trim().is_empty() {
        return Err(RestError::BadRequest(
            "Invalid log-level, it can’t be empty".into(),
        ));
    }
    let filter = match level.to_ascii_uppercase().as_str() {
        "TRACE" => "trace",
        "DEBUG" => "debug",
        "INFO" | "NOTICE" => "info",
        "WARN" => "warn",
        "ERROR" | "FATAL" => "error",
        _ => {
            return Err(RestError::BadRequest(format!(
                "Invalid log-level: {level}. Please specify one of TRACE, DEBUG, INFO, NOTICE, WARN, ERROR or FATAL"
            )))
        }
    };
    match crate::telemetry::set_filter(filter) {
        Ok(()) => Ok(ok()),
        Err(crate::telemetry::SetFilterError::NotInstalled) => Err(RestError::Unavailable(
            "Dynamic Log level management is not available in this process: its logging was not set up by roost".into(),
        )),
        Err(e) => Err(RestError::Internal(e.to_string())),
    }
}

/// nwaku's peer statistics: `Sum`, `By Connectedness`, `Relay peers` and `Mesh peers` per shard
/// (each with nwaku's total, which counts shards), `By Protocols` (from identify). Roost lists
/// connected peers only.
async fn stats(AxumState(state): AxumState<State>) -> Result<Response, RestError> {
    let peers = connected_peers(&state).await?;
    let topics = if state.relay.enabled {
        relayed_shards(&state)
    } else {
        Vec::new()
    };
    let per_shard = |list: ShardList, total: &str| {
        let mut map = serde_json::Map::new();
        for topic in &topics {
            let name = topic.to_string();
            let count = peers
                .iter()
                .filter(|p| match list {
                    ShardList::Relay => p.topics.contains(&name),
                    ShardList::Mesh => p.mesh_topics.contains(&name),
                })
                .count();
            map.insert(topic.shard.to_string(), count.into());
        }
        map.insert(total.to_owned(), topics.len().into());
        serde_json::Value::Object(map)
    };
    // Peers per protocol they listed in identify (relay from gossipsub before identify).
    let mut by_protocol: std::collections::BTreeMap<&str, usize> = Default::default();
    for peer in &peers {
        if peer.protocols.is_empty() && !peer.topics.is_empty() {
            *by_protocol.entry(crate::relay::PROTOCOL_ID).or_default() += 1;
        }
        for protocol in &peer.protocols {
            *by_protocol.entry(protocol.as_str()).or_default() += 1;
        }
    }
    Ok(Json(serde_json::json!({
        "Sum": {"Total peers": peers.len()},
        "By Connectedness": {
            "Connected": peers.len(),
            "NotConnected": 0,
            "CannotConnect": 0,
            "CanConnect": 0,
        },
        "Relay peers": per_shard(ShardList::Relay, "Total relay peers"),
        "Mesh peers": per_shard(ShardList::Mesh, "Total mesh peers"),
        "By Protocols": by_protocol,
    }))
    .into_response())
}

/// nwaku's `[{"peerId", "filterCriteria": [{"pubsubTopic", "contentTopic"}]}]` of this node's
/// filter service; 400 without it, as nwaku without a mounted filter.
async fn filter_subscriptions(AxumState(state): AxumState<State>) -> Result<Response, RestError> {
    let subscriptions = state.node.filter_subscriptions().await.ok_or_else(|| {
        RestError::BadRequest("Error: Filter Protocol is not mounted to the node".into())
    })?;
    let list: Vec<serde_json::Value> = subscriptions
        .into_iter()
        .map(|(peer, criteria)| {
            let criteria: Vec<serde_json::Value> = criteria
                .into_iter()
                .map(|(pubsub_topic, content_topic)| {
                    serde_json::json!({"pubsubTopic": pubsub_topic, "contentTopic": content_topic})
                })
                .collect();
            serde_json::json!({"peerId": peer.to_string(), "filterCriteria": criteria})
        })
        .collect();
    Ok(Json(list).into_response())
}

/// Which peers of a shard a per-shard list shows.
#[derive(Clone, Copy)]
enum ShardList {
    /// Peers subscribed to the shard's pubsub topic (nwaku's `getConnectedPubSubPeers`).
    Relay,
    /// Peers in this node's gossipsub mesh of the topic (nwaku's `getPubSubPeersInMesh`).
    Mesh,
}

fn shard_of(text: &str) -> Result<u16, RestError> {
    text.parse()
        .map_err(|e| RestError::BadRequest(format!("Invalid shardId: {e}")))
}

/// nwaku's `PeersOfShard`: `{"shard", "peers": [WakuPeer]}`.
fn peers_of_shard(peers: &[PeerStatus], topic: &ShardTopic, list: ShardList) -> serde_json::Value {
    let name = topic.to_string();
    let peers: Vec<serde_json::Value> = peers
        .iter()
        .filter(|p| match list {
            ShardList::Relay => p.topics.contains(&name),
            ShardList::Mesh => p.mesh_topics.contains(&name),
        })
        .map(waku_peer)
        .collect();
    serde_json::json!({ "shard": topic.shard, "peers": peers })
}

fn relay_mounted(state: &State) -> Result<(), RestError> {
    if state.relay.enabled {
        Ok(())
    } else {
        Err(RestError::Unavailable(
            "Error: Relay Protocol is not mounted to the node".into(),
        ))
    }
}

/// The shards this node relays now (`relay.shards` and those REST clients joined).
fn relayed_shards(state: &State) -> Vec<crate::message::ShardTopic> {
    state
        .topics
        .list()
        .iter()
        .filter_map(|t| crate::message::ShardTopic::parse(t))
        .collect()
}

/// Every shard this node relays, with its peers.
async fn shard_lists(state: &State, list: ShardList) -> Result<Response, RestError> {
    relay_mounted(state)?;
    let peers = connected_peers(state).await?;
    let shards: Vec<serde_json::Value> = relayed_shards(state)
        .iter()
        .map(|topic| peers_of_shard(&peers, topic, list))
        .collect();
    Ok(Json(shards).into_response())
}

/// One shard of this node's cluster (any shard number, as nwaku: an unrelayed one has no peers).
async fn shard_list(state: &State, shard: &str, list: ShardList) -> Result<Response, RestError> {
    let shard = shard_of(shard)?;
    relay_mounted(state)?;
    let peers = connected_peers(state).await?;
    let topic = ShardTopic::new(state.relay.cluster_id, shard);
    Ok(Json(peers_of_shard(&peers, &topic, list)).into_response())
}

/// `[{"shard", "peers"}]` for every relayed shard; 503 without relay.
async fn relay_peers(AxumState(state): AxumState<State>) -> Result<Response, RestError> {
    shard_lists(&state, ShardList::Relay).await
}

async fn relay_peers_on_shard(
    AxumState(state): AxumState<State>,
    Path(shard): Path<String>,
) -> Result<Response, RestError> {
    shard_list(&state, &shard, ShardList::Relay).await
}

async fn mesh_peers(AxumState(state): AxumState<State>) -> Result<Response, RestError> {
    shard_lists(&state, ShardList::Mesh).await
}

async fn mesh_peers_on_shard(
    AxumState(state): AxumState<State>,
    Path(shard): Path<String>,
) -> Result<Response, RestError> {
    shard_list(&state, &shard, ShardList::Mesh).await
}

/// Connected peers whose relay topics include the shard (nwaku filters its peer list by the
/// shards each peer announced).
async fn connected_on_shard(
    AxumState(state): AxumState<State>,
    Path(shard): Path<String>,
) -> Result<Response, RestError> {
    let shard = shard_of(&shard)?;
    let peers: Vec<serde_json::Value> = connected_peers(&state)
        .await?
        .iter()
        .map(waku_peer)
        .filter(|p| {
            p["shards"]
                .as_array()
                .is_some_and(|s| s.contains(&serde_json::json!(shard)))
        })
        .collect();
    Ok(Json(peers).into_response())
}

/// One connected peer in nwaku's `WakuPeer` shape. Roost knows a peer's relay topics
/// (gossipsub) but keeps no identify record, so `protocols` lists the relay protocol for relay
/// peers only and `agent` is empty.
fn waku_peer(peer: &PeerStatus) -> serde_json::Value {
    let mut address = peer.address.clone().unwrap_or_else(Multiaddr::empty);
    if !matches!(address.iter().last(), Some(Protocol::P2p(_))) {
        address.push(Protocol::P2p(peer.peer_id));
    }
    let mut shards: Vec<u16> = peer
        .topics
        .iter()
        .filter_map(|t| ShardTopic::parse(t))
        .map(|t| t.shard)
        .collect();
    shards.sort_unstable();
    shards.dedup();
    // What it listed in identify; before identify, what gossipsub shows (relay).
    let protocols: Vec<&str> = if !peer.protocols.is_empty() {
        let mut listed: Vec<&str> = peer.protocols.iter().map(String::as_str).collect();
        listed.sort_unstable();
        listed
    } else if peer.topics.is_empty() {
        Vec::new()
    } else {
        vec![crate::relay::PROTOCOL_ID]
    };
    serde_json::json!({
        "multiaddr": address.to_string(),
        "protocols": protocols,
        "shards": shards,
        "connected": "Connected",
        "agent": peer.agent,
        "origin": if peer.is_static { "Static" } else { "UnknownOrigin" },
        "score": serde_json::Value::Null,
    })
}

async fn connected_peers(state: &State) -> Result<Vec<PeerStatus>, RestError> {
    Ok(state
        .node
        .network_status()
        .await
        .ok_or_else(|| RestError::Internal("the node is shutting down".into()))?
        .peers)
}

/// `[{"multiaddr", "protocols", "shards", "connected", "agent", "origin", "score"}]`.
async fn peers(AxumState(state): AxumState<State>) -> Result<Response, RestError> {
    let peers: Vec<serde_json::Value> = connected_peers(&state)
        .await?
        .iter()
        .map(waku_peer)
        .collect();
    Ok(Json(peers).into_response())
}

/// One peer by id: 400 for an unreadable id, 404 when it is not connected (nwaku: not in its
/// peer store).
async fn peer(
    AxumState(state): AxumState<State>,
    Path(peer_id): Path<String>,
) -> Result<Response, RestError> {
    let id: PeerId = peer_id
        .parse()
        .map_err(|e| RestError::BadRequest(format!("Invalid argument:{e}")))?;
    connected_peers(&state)
        .await?
        .iter()
        .find(|p| p.peer_id == id)
        .map(|p| Json(waku_peer(p)).into_response())
        .ok_or_else(|| RestError::NotFound(format!("Peer with ID {peer_id} not found")))
}

/// Dials each address (`/…/p2p/<peer id>`) and waits until it is connected; the first that
/// cannot be parsed or reached ends the request with 400, as nwaku.
async fn connect(AxumState(state): AxumState<State>, body: Bytes) -> Result<Response, RestError> {
    let peers: Vec<String> = json_body(&body)?;
    if peers.len() > MAX_PEERS_PER_POST {
        return Err(RestError::BadRequest(format!(
            "{} peers in one request; the limit is {MAX_PEERS_PER_POST}",
            peers.len()
        )));
    }
    for (i, peer) in peers.iter().enumerate() {
        let address: Multiaddr = peer
            .parse()
            .map_err(|e| RestError::BadRequest(format!("Couldn't parse remote peer info: {e}")))?;
        let Some(peer_id) = crate::addr::peer_id_of(&address) else {
            return Err(RestError::BadRequest(
                "Couldn't parse remote peer info: the address has no /p2p/<peer id>".into(),
            ));
        };
        let failed =
            || RestError::BadRequest(format!("Failed to connect to peer at index: {i} - {peer}"));
        // Once connected, redialled whenever it goes down, as nwaku's peer manager does.
        let keep = address.clone();
        if is_connected(&state, peer_id).await {
            state.node.keep_peer(keep).await;
            continue;
        }
        // Connected means the connection came up, as nwaku's `connectPeer`: a peer of another
        // cluster that is dropped right after the metadata exchange was still connected.
        match tokio::time::timeout(CONNECT_TIMEOUT, state.node.connect(address)).await {
            Ok(Ok(())) => state.node.keep_peer(keep).await,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "REST admin dial failed");
                return Err(failed());
            }
            Err(_) => {
                tracing::debug!(%peer, "REST admin dial timed out");
                return Err(failed());
            }
        }
    }
    Ok(ok())
}

async fn is_connected(state: &State, peer: libp2p::PeerId) -> bool {
    state
        .node
        .network_status()
        .await
        .is_some_and(|s| s.connected_peers.contains(&peer))
}
