//! `POST /lightpush/v3/message` (nwaku's `endpoint/lightpush`): `{"pubsubTopic", "message"}`
//! published as a light push request would be (autosharded when the topic is absent, then
//! `NodeHandle::publish`, then the store's acknowledgement on a store node), answered
//! `200 {"relayPeerCount": n}` or with the light push status code as the HTTP status and
//! `{"statusDesc": …}`; and the legacy `POST /lightpush/v1/message` (`endpoint/legacy_lightpush`)
//! with the same body, answered in text. A node with `rest.lightpush_node` set sends the push
//! there, and one that serves no light push to a connected light push peer, as nwaku's REST
//! does.

use axum::{
    body::Bytes,
    extract::State as AxumState,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use serde::Deserialize;

use super::{admit, ok, Client, RestError, RestMessage, State};
use crate::{
    lightpush::{decode_response, encode_request, refusal_for, Refused, Status, Version},
    message::WakuMessage,
    store::StoreError,
    throttle,
};

/// How long a light push service node may take to answer (nwaku's
/// `FutTimeoutForPushRequestProcessing`).
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub fn routes() -> Router<State> {
    Router::new()
        .route("/lightpush/v3/message", post(push))
        .route("/lightpush/v1/message", post(push_legacy))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PushRequest {
    pubsub_topic: Option<String>,
    message: RestMessage,
}

fn refused(refused: Refused) -> Response {
    tracing::debug!(status = %refused.status, reason = %refused.description, "REST light push refused");
    let status = u16::try_from(refused.status.0)
        .ok()
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        Json(serde_json::json!({ "statusDesc": refused.description })),
    )
        .into_response()
}

/// Publishes a push as the light push service does: autoshard when no topic is given, the
/// node's publish, 505 without relay peers, and on a store node the answer waits until the
/// message is committed (`ArchiveHandle::insert`), so a 200 means stored as well.
async fn publish(state: &State, client: Client, body: &[u8]) -> Result<u32, Refused> {
    // The light push quota, before decoding, as the libp2p service spends it; the refusal
    // reads as the libp2p service's 429 description.
    admit(state, throttle::Service::LightPush, &client)
        .map_err(|throttled| Refused::new(Status::TOO_MANY_REQUESTS, throttled.to_string()))?;
    let request: PushRequest = serde_json::from_slice(body)
        .map_err(|e| Refused::new(Status::BAD_REQUEST, format!("Invalid push request! {e}")))?;
    let message = request
        .message
        .into_message()
        .map_err(|e| Refused::new(Status::BAD_REQUEST, format!("Invalid message! {e}")))?;
    if !state.lightpush_enabled || state.lightpush_node.is_some() {
        // As nwaku: with `--lightpushnode` (a light push client) or without a light push
        // service of its own, a light push client of the service node configured, or of a
        // connected one.
        return forward(state, request.pubsub_topic, &message).await;
    }
    let topic = match request.pubsub_topic {
        Some(topic) if topic.trim().is_empty() => {
            return Err(Refused::new(
                Status::BAD_REQUEST,
                "pubsub topic must not be empty",
            ))
        }
        Some(topic) => topic,
        None => state
            .relay
            .autoshard(&message.content_topic)
            .map_err(|e| Refused::new(Status::INVALID_MESSAGE, format!("cannot autoshard: {e}")))?
            .to_string(),
    };
    let store = state
        .node
        .store()
        .filter(|store| store.accepts(&topic, &message))
        .cloned();
    let to_store = store.as_ref().map(|_| message.clone());
    let receipt = state
        .node
        .publish(topic.clone(), message)
        .await
        .map_err(|e| refusal_for(e, &state.relay))?;
    if receipt.relay_peers == 0 {
        return Err(Refused::new(
            Status::NO_PEERS_TO_RELAY,
            format!("not_published_to_any_peer: no relay peers on {topic}"),
        ));
    }
    let relay_peers = u32::try_from(receipt.relay_peers).unwrap_or(u32::MAX);
    if let (Some(store), Some(message)) = (store, to_store) {
        match store.insert(&topic, message).await {
            // Rejected: it left the timestamp window while relayed; the relay answer stands.
            Ok(_) => {}
            Err(StoreError::ShuttingDown) => {
                return Err(Refused::new(
                    Status::SERVICE_NOT_AVAILABLE,
                    format!("relayed to {relay_peers} peer(s), but the node is shutting down and did not store it"),
                ))
            }
            Err(e) => {
                return Err(Refused::new(
                    Status::INTERNAL_SERVER_ERROR,
                    format!("relayed to {relay_peers} peer(s), but not stored: {e}"),
                ))
            }
        }
    }
    Ok(relay_peers)
}

/// Sends the push to a light push service node (`rest.lightpush_node`, else a connected peer
/// that lists light push v3) and answers what it answered.
async fn forward(
    state: &State,
    pubsub_topic: Option<String>,
    message: &WakuMessage,
) -> Result<u32, Refused> {
    let protocol = Version::V3.protocol_id();
    let Some((peer, addresses)) =
        super::service_peer(state, state.lightpush_node.as_ref(), protocol.as_ref()).await
    else {
        return Err(Refused::new(
            Status::SERVICE_NOT_AVAILABLE,
            "No suitable service peer & no discovery method",
        ));
    };
    let request_id = crate::client::request_id();
    let request = encode_request(Version::V3, &request_id, pubsub_topic.as_deref(), message);
    let answer = tokio::time::timeout(
        FORWARD_TIMEOUT,
        state
            .node
            .request(Version::V3.reqres(), peer, addresses, request),
    )
    .await
    .map_err(|_| Refused::new(Status::SERVICE_NOT_AVAILABLE, "Push request timed out"))?
    .map_err(|e| match e {
        // nwaku's client words for a service node it cannot reach.
        crate::reqres::RequestError::Dial(_) | crate::reqres::RequestError::ConnectionClosed => {
            Refused::new(
                Status::NO_PEERS_TO_RELAY,
                format!("dial_failure: the light push service node {peer}: {e}"),
            )
        }
        e => Refused::new(
            Status::INTERNAL_SERVER_ERROR,
            format!("lightpush error: the light push service node {peer}: {e}"),
        ),
    })?;
    let reply = decode_response(Version::V3, &answer).map_err(|e| {
        Refused::new(
            Status::INTERNAL_SERVER_ERROR,
            format!("the light push service node's answer is unreadable: {e}"),
        )
    })?;
    // A 429 carries no request id by design (nwaku's client checks the same way).
    if reply.request_id != request_id && reply.status != Status::TOO_MANY_REQUESTS {
        return Err(Refused::new(
            Status::INTERNAL_SERVER_ERROR,
            "response failure, requestId mismatch",
        ));
    }
    if reply.status == Status::SUCCESS {
        Ok(reply.relay_peer_count.unwrap_or(0))
    } else {
        Err(Refused::new(
            reply.status,
            reply
                .description
                .unwrap_or_else(|| reply.status.name().to_owned()),
        ))
    }
}

/// v3: `200 {"relayPeerCount": n}`, else the light push code as HTTP status with
/// `{"statusDesc"}`.
async fn push(AxumState(state): AxumState<State>, client: Client, body: Bytes) -> Response {
    match publish(&state, client, &body).await {
        Ok(relay_peers) => {
            Json(serde_json::json!({ "relayPeerCount": relay_peers })).into_response()
        }
        Err(e) => refused(e),
    }
}

/// Legacy (nwaku's `/lightpush/v1/message`, still called by the interop test suite): 200 `OK`,
/// 400 for an unreadable request, 429 over quota, 503 for any other failure, all as text.
async fn push_legacy(AxumState(state): AxumState<State>, client: Client, body: Bytes) -> Response {
    match publish(&state, client, &body).await {
        Ok(_) => ok(),
        Err(e) if e.status == Status::BAD_REQUEST => {
            RestError::BadRequest(e.description).into_response()
        }
        Err(e) if e.status == Status::TOO_MANY_REQUESTS => {
            RestError::TooManyRequests("Request rate limit reached".into()).into_response()
        }
        Err(e) => RestError::Unavailable(format!(
            "Failed to request a message push: {}",
            e.description
        ))
        .into_response(),
    }
}
