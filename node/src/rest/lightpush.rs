//! `POST /lightpush/v3/message` (nwaku's `endpoint/lightpush`): `{"pubsubTopic", "message"}`
//! published as a light push request would be (autosharded when the topic is absent, then
//! `NodeHandle::publish`), answered `200 {"relayPeerCount": n}` or with the light push status
//! code as the HTTP status and `{"statusDesc": …}`.

use axum::{
    body::Bytes,
    extract::State as AxumState,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use serde::Deserialize;

use super::{RestMessage, State};
use crate::lightpush::{refusal_for, Refused, Status};

pub fn routes() -> Router<State> {
    Router::new().route("/lightpush/v3/message", post(push))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
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

async fn push(AxumState(state): AxumState<State>, body: Bytes) -> Response {
    if !state.lightpush_enabled {
        // nwaku without a light push service of its own looks for a peer; Roost has none to
        // pick, as nwaku without peers and discovery.
        return refused(Refused::new(
            Status::SERVICE_NOT_AVAILABLE,
            "No suitable service peer & no discovery method",
        ));
    }
    let request: PushRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return refused(Refused::new(
                Status::BAD_REQUEST,
                format!("Invalid push request! {e}"),
            ))
        }
    };
    let message = match request.message.into_message() {
        Ok(message) => message,
        Err(e) => {
            return refused(Refused::new(
                Status::BAD_REQUEST,
                format!("Invalid message! {e}"),
            ))
        }
    };
    let topic = match request.pubsub_topic {
        Some(topic) if topic.trim().is_empty() => {
            return refused(Refused::new(
                Status::BAD_REQUEST,
                "pubsub topic must not be empty",
            ))
        }
        Some(topic) => topic,
        None => match state.relay.autoshard(&message.content_topic) {
            Ok(topic) => topic.to_string(),
            Err(e) => {
                return refused(Refused::new(
                    Status::INVALID_MESSAGE,
                    format!("cannot autoshard: {e}"),
                ))
            }
        },
    };
    match state.node.publish(topic.clone(), message).await {
        Err(e) => refused(refusal_for(e, &state.relay)),
        Ok(receipt) if receipt.relay_peers == 0 => refused(Refused::new(
            Status::NO_PEERS_TO_RELAY,
            format!("no relay peers on {topic}"),
        )),
        Ok(receipt) => {
            Json(serde_json::json!({ "relayPeerCount": receipt.relay_peers })).into_response()
        }
    }
}
