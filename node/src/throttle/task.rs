//! The throttle's maintenance task: sweeps idle limiter keys, decayed offence scores and
//! forgotten bans every `throttle.prune_interval`, and reports on `/health` when throttling
//! is heavy.

use std::time::Duration;

use tokio::sync::watch;

use super::Throttle;
use crate::health::{Health, Status};

/// How often the health component is refreshed.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// Throttling is "heavy" when, within one health interval, at least this many requests were
/// refused...
const HEAVY_MIN_THROTTLED: u64 = 100;
/// ...and they were at least this share of all checked requests.
const HEAVY_SHARE: f64 = 0.25;

/// Runs until shutdown.
pub async fn run(
    throttle: Throttle,
    prune_interval: Duration,
    health: Health,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut prune = tokio::time::interval(prune_interval);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut report = tokio::time::interval(HEALTH_INTERVAL);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = throttle.metrics().totals();
    loop {
        tokio::select! {
            biased;
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
            _ = prune.tick() => throttle.prune(),
            _ = report.tick() => {
                let now = throttle.metrics().totals();
                let (status, detail) = assess(&throttle, last, now);
                health.set("throttle", status, detail);
                last = now;
            }
        }
    }
}

/// The health verdict from the (admitted, throttled) totals at the last and this report.
fn assess(throttle: &Throttle, last: (u64, u64), now: (u64, u64)) -> (Status, serde_json::Value) {
    let admitted = now.0.saturating_sub(last.0);
    let throttled = now.1.saturating_sub(last.1);
    let checked = admitted + throttled;
    let share = if checked == 0 {
        0.0
    } else {
        throttled as f64 / checked as f64
    };
    let heavy = throttled >= HEAVY_MIN_THROTTLED && share >= HEAVY_SHARE;
    let full = throttle.full_limiters();
    let status = if heavy || !full.is_empty() {
        Status::Degraded
    } else {
        Status::Ok
    };
    let detail = serde_json::json!({
        "enabled": throttle.is_enabled(),
        "window_seconds": HEALTH_INTERVAL.as_secs(),
        "admitted": admitted,
        "throttled": throttled,
        "heavy_throttling": heavy,
        "full_limiters": full,
        "bans_active": throttle.bans_active(),
    });
    (status, detail)
}
