//! `/admin/v1/peers` (nwaku's `endpoint/admin`), served only with `rest.admin`: the connected
//! peers in nwaku's `WakuPeer` shape (also `/admin/v1/peers/connected` and one by id at
//! `/admin/v1/peer/{peerId}`), and dialling a list of multiaddrs.

use std::time::{Duration, Instant};

use axum::{
    body::Bytes,
    extract::{Path, State as AxumState},
    response::{IntoResponse, Response},
    routing::get,
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
    let protocols: Vec<&str> = if peer.topics.is_empty() {
        Vec::new()
    } else {
        vec![crate::relay::PROTOCOL_ID]
    };
    serde_json::json!({
        "multiaddr": address.to_string(),
        "protocols": protocols,
        "shards": shards,
        "connected": "Connected",
        "agent": "",
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
        if is_connected(&state, peer_id).await {
            continue;
        }
        if let Err(e) = state.node.dial(address).await {
            tracing::debug!(%peer, error = %e, "REST admin dial failed");
            return Err(failed());
        }
        let started = Instant::now();
        loop {
            if is_connected(&state, peer_id).await {
                break;
            }
            if started.elapsed() > CONNECT_TIMEOUT {
                return Err(failed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
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
