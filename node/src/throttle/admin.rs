//! Admin endpoints for bans, on the node's HTTP server. They answer loopback clients only
//! (`roost ban` on the same host), whatever address the server binds:
//!
//! - `GET /admin/v1/bans` → the bans in force (JSON list of [`BanRecord`]);
//! - `POST /admin/v1/bans` with `{"target": "<peer id or IP>", "duration": "1h"}` → the new ban;
//! - `DELETE /admin/v1/bans?target=<peer id or IP>` → 200 if a ban was lifted, 404 if none.

use std::{net::SocketAddr, time::Duration};

use axum::{
    extract::{ConnectInfo, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde::{Deserialize, Serialize};

use super::{bans::BanRecord, Offender, Throttle};

/// The path of the ban list.
pub const BANS_PATH: &str = "/admin/v1/bans";
/// Length of a manual ban when the request names none.
pub const DEFAULT_MANUAL_BAN: Duration = Duration::from_secs(86_400);

/// Body of `POST /admin/v1/bans`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddBan {
    /// A peer id, an IPv4 address or an IPv6 address (its /64 is banned).
    pub target: String,
    /// How long, e.g. `30m`, `1h`, `7d`. Default `1d`.
    #[serde(default)]
    pub duration: Option<String>,
}

/// Query of `DELETE /admin/v1/bans`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveBan {
    pub target: String,
}

/// An error answer: `{"error": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminError {
    pub error: String,
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (
        code,
        Json(AdminError {
            error: message.into(),
        }),
    )
        .into_response()
}

/// The admin routes; the server must be run with `ConnectInfo<SocketAddr>`.
pub fn router(throttle: Throttle) -> Router {
    Router::new()
        .route(BANS_PATH, get(list).post(add).delete(remove))
        .with_state(throttle)
}

/// `Some(403 answer)` for a client that is not on loopback.
fn refuse_remote(peer: &SocketAddr) -> Option<Response> {
    (!peer.ip().is_loopback()).then(|| {
        error(
            StatusCode::FORBIDDEN,
            "admin endpoints answer loopback clients only; run `roost ban` on the node's host",
        )
    })
}

async fn list(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(throttle): State<Throttle>,
) -> Response {
    if let Some(denied) = refuse_remote(&peer) {
        return denied;
    }
    Json(throttle.bans()).into_response()
}

async fn add(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(throttle): State<Throttle>,
    Json(body): Json<AddBan>,
) -> Response {
    if let Some(denied) = refuse_remote(&peer) {
        return denied;
    }
    let target: Offender = match body.target.parse() {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let duration = match body.duration.as_deref() {
        None => DEFAULT_MANUAL_BAN,
        Some(text) => match humantime::parse_duration(text) {
            Ok(d) if !d.is_zero() => d,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("`{text}` is not a duration; write e.g. 30m, 1h, 7d"),
                )
            }
        },
    };
    let record: BanRecord = throttle.ban(target, duration);
    Json(record).into_response()
}

async fn remove(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(throttle): State<Throttle>,
    Query(query): Query<RemoveBan>,
) -> Response {
    if let Some(denied) = refuse_remote(&peer) {
        return denied;
    }
    let target: Offender = match query.target.parse() {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if throttle.unban(&target) {
        Json(serde_json::json!({"removed": target.to_string()})).into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            format!("{target} is not banned (see `roost ban list`)"),
        )
    }
}
