//! `/health`, `/info` (+ `/debug/v1/info`) and `/version` (+ `/debug/v1/version`), in nwaku's
//! shapes (`endpoint/health`, `endpoint/debug`).

use std::time::Duration;

use axum::{
    extract::State as AxumState,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};

use super::{text, State};
use crate::health::Status;

/// How long `/health` waits for the swarm task (nwaku waits 5 s for its report).
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

pub fn routes() -> Router<State> {
    Router::new()
        .route("/health", get(health))
        .route("/info", get(info))
        .route("/debug/v1/info", get(info))
        .route("/version", get(version))
        .route("/debug/v1/version", get(version))
}

/// nwaku's `HealthStatus` names for Roost's component states.
fn health_name(status: Status) -> &'static str {
    match status {
        Status::Ok | Status::Degraded => "READY",
        Status::Unhealthy => "NOT_READY",
    }
}

/// `{"nodeHealth": "READY", "protocolsHealth": [{"<component>": "READY", "desc": …}]}`, 200
/// whatever the health (nwaku answers the report itself; only a failed check is an error).
async fn health(AxumState(state): AxumState<State>) -> Response {
    let responsive = matches!(
        tokio::time::timeout(STATUS_TIMEOUT, state.node.network_status()).await,
        Ok(Some(_))
    );
    let report = state.node.health().report();
    let node = if responsive {
        health_name(report.status)
    } else {
        "NOT_READY"
    };
    let protocols: Vec<serde_json::Value> = report
        .components
        .iter()
        .map(|(name, component)| {
            let desc = match component.status {
                Status::Ok => serde_json::Value::Null,
                _ => component.detail.to_string().into(),
            };
            serde_json::json!({ *name: health_name(component.status), "desc": desc })
        })
        .collect();
    Json(serde_json::json!({ "nodeHealth": node, "protocolsHealth": protocols })).into_response()
}

/// `{"listenAddresses": [...], "enrUri": "enr:…"}` (nwaku's `DebugWakuInfo`).
async fn info(AxumState(state): AxumState<State>) -> Response {
    let info = state.node.info();
    let mut body = serde_json::json!({
        "listenAddresses": info
            .listen_addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
    });
    if let (Some(map), Some(enr)) = (body.as_object_mut(), info.enr.as_ref()) {
        map.insert("enrUri".into(), enr.clone().into());
    }
    Json(body).into_response()
}

/// The version as plain text, as nwaku's `git_version`.
async fn version(AxumState(state): AxumState<State>) -> Response {
    text(StatusCode::OK, state.node.info().version)
}
