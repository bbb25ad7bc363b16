//! Filter metrics: requests by type and outcome, subscriptions, pushes and push failures, and
//! the filter task's queues.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `subscribe`, `unsubscribe`, `unsubscribe_all`, `ping` or `unknown`.
    pub r#type: &'static str,
    /// `ok`, `bad_request`, `not_found`, `throttled` or `unavailable`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// `requests` (subscribe requests from the swarm task), `messages` (relayed messages from
    /// the sink) or `pushes` (pushes in flight).
    pub queue: &'static str,
}

/// Reasons a push fails (`roost_filter_push_failures_total`), created at 0 at start.
pub const PUSH_FAILURE_REASONS: [&str; 7] = [
    "timeout",
    "dial",
    "unsupported",
    "connection_closed",
    "io",
    "backlog",
    "shutting_down",
];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Handles to the filter metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: HistogramFamily<TypeLabels>,
    pub subscribed_peers: Gauge,
    pub criteria: Gauge,
    pub subscriptions_removed: Family<ReasonLabels, Counter>,
    pub pushes: Counter,
    pub push_failures: Family<ReasonLabels, Counter>,
    pub push_duration: Histogram,
    pub dropped_messages: Counter,
    pub received_pushes: Family<OutcomeLabels, Counter>,
    pub queue_depth: Family<QueueLabels, Gauge>,
}

impl Metrics {
    /// Registers under the given (already `roost_filter`-prefixed) registry.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(
                crate::metrics::request_duration_histogram,
            ),
            subscribed_peers: Gauge::default(),
            criteria: Gauge::default(),
            subscriptions_removed: Family::default(),
            pushes: Counter::default(),
            push_failures: Family::default(),
            push_duration: crate::metrics::request_duration_histogram(),
            dropped_messages: Counter::default(),
            received_pushes: Family::default(),
            queue_depth: Family::default(),
        };
        for reason in PUSH_FAILURE_REASONS {
            let _ = m.push_failures.get_or_create(&ReasonLabels { reason });
        }
        registry.register(
            "requests",
            "Filter subscribe requests served, by type and outcome",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from receiving a filter subscribe request to answering it",
            m.request_duration.clone(),
        );
        registry.register(
            "subscribed_peers",
            "Peers with a filter subscription",
            m.subscribed_peers.clone(),
        );
        registry.register(
            "criteria",
            "(pubsub topic, content topic) criteria held by all subscribers",
            m.criteria.clone(),
        );
        registry.register(
            "subscriptions_removed",
            "Subscribers removed, by reason (unsubscribed, expired, push_failed)",
            m.subscriptions_removed.clone(),
        );
        registry.register(
            "pushes",
            "Messages pushed to subscribers (written to their push stream)",
            m.pushes.clone(),
        );
        registry.register(
            "push_failures",
            "Pushes that failed, by reason (timeout, dial, unsupported, connection_closed, io, backlog, shutting_down)",
            m.push_failures.clone(),
        );
        registry.register(
            "push_duration_seconds",
            "Time from starting a push to it being written to the subscriber",
            m.push_duration.clone(),
        );
        registry.register(
            "dropped_messages",
            "Relayed messages the filter task could not take because its queue was full",
            m.dropped_messages.clone(),
        );
        registry.register(
            "received_pushes",
            "Pushes received as a filter client, by outcome (delivered, unsolicited, malformed)",
            m.received_pushes.clone(),
        );
        registry.register(
            "queue_depth",
            "Work waiting in the filter task: requests, messages (queues) and pushes in flight",
            m.queue_depth.clone(),
        );
        m
    }

    /// Sets the depth of one of the filter task's queues.
    pub fn set_queue_depth(&self, queue: &'static str, depth: usize) {
        self.queue_depth
            .get_or_create(&QueueLabels { queue })
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    pub fn answered(&self, kind: &'static str, outcome: &'static str, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                r#type: kind,
                outcome,
            })
            .inc();
        self.request_duration
            .get_or_create(&TypeLabels { r#type: kind })
            .observe(seconds);
    }

    pub fn push_failed(&self, reason: &'static str) {
        self.push_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_push_failure_reason_exists_from_the_start() {
        let mut registry = Registry::default();
        Metrics::register(registry.sub_registry_with_prefix("roost_filter"));
        let text = crate::metrics::render(&registry);
        for reason in PUSH_FAILURE_REASONS {
            let sample = format!("roost_filter_push_failures_total{{reason=\"{reason}\"}} 0\n");
            assert!(text.contains(&sample), "{sample} missing from:\n{text}");
        }
    }
}
