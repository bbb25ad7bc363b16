//! Health reporting: each capability sets the status of its own component; `/health` reports
//! the worst of them (`ok` < `degraded` < `unhealthy`, the last one answered with HTTP 503).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Degraded,
    Unhealthy,
}

#[derive(Debug, Clone, Serialize)]
pub struct Component {
    pub status: Status,
    /// Free-form facts about the component (peer counts, sizes, last error).
    pub detail: serde_json::Value,
}

/// The whole report, as `/health` serves it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub status: Status,
    pub components: BTreeMap<&'static str, Component>,
}

/// Shared, cheap-to-clone health board.
#[derive(Debug, Clone, Default)]
pub struct Health {
    components: Arc<Mutex<BTreeMap<&'static str, Component>>>,
}

impl Health {
    /// Sets one component's status and details.
    pub fn set(&self, name: &'static str, status: Status, detail: serde_json::Value) {
        if let Ok(mut map) = self.components.lock() {
            map.insert(name, Component { status, detail });
        }
    }

    pub fn report(&self) -> Report {
        let components = self
            .components
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        let status = components
            .values()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Ok);
        Report { status, components }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_component_wins() {
        let h = Health::default();
        assert_eq!(h.report().status, Status::Ok);
        h.set("relay", Status::Ok, serde_json::json!({}));
        h.set(
            "store",
            Status::Degraded,
            serde_json::json!({"why": "slow"}),
        );
        assert_eq!(h.report().status, Status::Degraded);
        h.set("store", Status::Unhealthy, serde_json::json!({}));
        assert_eq!(h.report().status, Status::Unhealthy);
        h.set("store", Status::Ok, serde_json::json!({}));
        assert_eq!(h.report().status, Status::Ok);
    }
}
