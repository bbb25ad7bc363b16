//! The operator HTTP endpoint (axum): `/metrics` (Prometheus text), `/health` (JSON, 503 when
//! unhealthy), `/debug/v1/info` (identity, addresses, cluster, protocols, attestation),
//! `/debug/v1/peers` (connected peers, mesh per shard), `/debug/pprof/heap` (a heap profile
//! when `http.heap_profile` is on, [`crate::alloc`]) and the admin routes capabilities
//! contribute (bans: [`crate::throttle::admin`], loopback clients only).

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Query, State as AxumState},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, sync::watch};

use crate::{handle::NodeHandle, health::Status};

/// How long `/health` waits for the swarm task before calling it unresponsive.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct State {
    pub registry: Arc<Registry>,
    pub node: NodeHandle,
    /// The effective config, for `/debug/v1/config` (`roost-fleet audit` compares it with the
    /// fleet definition). It holds no secrets: keys and PINs never live in the config.
    pub config: Arc<crate::config::Config>,
}

pub fn router(state: State) -> Router {
    let admin = crate::throttle::admin::router(state.node.throttle().clone());
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/debug/v1/info", get(info))
        .route("/debug/v1/peers", get(peers))
        .route("/debug/v1/config", get(config))
        .route("/debug/pprof/heap", get(heap_profile))
        .with_state(state)
        .merge(admin)
}

pub async fn serve(
    listener: TcpListener,
    state: State,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    // Connect info: admin routes answer loopback clients only.
    let service = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        })
        .await
}

async fn metrics(AxumState(state): AxumState<State>) -> Response {
    let body = crate::metrics::render(&state.registry);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[derive(Debug, serde::Deserialize)]
struct HeapQuery {
    /// `pprof` (default: gzipped protobuf) or `jeprof` (jemalloc's text dump).
    format: Option<String>,
}

async fn heap_profile(Query(query): Query<HeapQuery>) -> Response {
    use crate::alloc::{AllocError, ProfileFormat};
    let format = match query.format.as_deref() {
        None | Some("pprof") => ProfileFormat::Pprof,
        Some("jeprof") => ProfileFormat::Jeprof,
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("unknown format `{other}`; use pprof or jeprof\n"),
            )
                .into_response()
        }
    };
    match crate::alloc::heap_profile(format).await {
        Ok(body) => ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response(),
        Err(e @ (AllocError::ProfilingOff | AllocError::ProfilingUnavailable)) => {
            (StatusCode::CONFLICT, format!("{e}\n")).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "heap profile failed");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
        }
    }
}

async fn health(AxumState(state): AxumState<State>) -> Response {
    let health = state.node.health();
    // The swarm task must answer: a wedged event loop is the one failure a gauge cannot show.
    let status = tokio::time::timeout(STATUS_TIMEOUT, state.node.network_status()).await;
    match status {
        Ok(Some(_)) => health.set("swarm", Status::Ok, serde_json::json!({"responsive": true})),
        _ => health.set(
            "swarm",
            Status::Unhealthy,
            serde_json::json!({"responsive": false}),
        ),
    }
    let report = health.report();
    let peers = status
        .ok()
        .flatten()
        .map(|s| s.connected_peers.len())
        .unwrap_or(0);
    let code = if report.status == Status::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = serde_json::json!({
        "status": report.status,
        "peers": peers,
        "version": crate::metrics::VERSION,
        "components": report.components,
    });
    (code, Json(body)).into_response()
}

/// Connected peers and the mesh per shard, as the swarm task sees them now.
async fn peers(AxumState(state): AxumState<State>) -> Response {
    match tokio::time::timeout(STATUS_TIMEOUT, state.node.network_status()).await {
        Ok(Some(status)) => Json(status).into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": "the swarm task did not answer"})),
        )
            .into_response(),
    }
}

async fn config(AxumState(state): AxumState<State>) -> Response {
    Json(state.config.as_ref().clone()).into_response()
}

async fn info(AxumState(state): AxumState<State>) -> Response {
    let mut body = serde_json::to_value(state.node.info()).unwrap_or_default();
    if let (Some(map), Some(signed)) = (body.as_object_mut(), state.node.attestation()) {
        map.insert(
            "attestation".into(),
            crate::operator::local::describe(&signed.attestation),
        );
    }
    Json(body).into_response()
}
