//! Light push metrics: requests by version and outcome, and how long answering took.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `v3` or `legacy`.
    pub version: &'static str,
    /// `ok` or the refusal ([`super::Status::outcome`]).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub version: &'static str,
    /// `timeout`, `connection_closed`, `io` or `response_omission`. (Requests over the read
    /// limit are dropped by libp2p before they become events and are not counted here.)
    pub reason: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Handles to the light push metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: HistogramFamily<VersionLabels>,
    pub stream_failures: Family<FailureLabels, Counter>,
}

impl Metrics {
    /// Registers under the given (already `roost_lightpush`-prefixed) registry.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(crate::metrics::request_duration_histogram),
            stream_failures: Family::default(),
        };
        registry.register(
            "requests",
            "Light push requests served, by protocol version and outcome",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from receiving a light push request to answering it",
            m.duration.clone(),
        );
        registry.register(
            "stream_failures",
            "Light push requests that could not be read or answered, by reason",
            m.stream_failures.clone(),
        );
        m
    }

    /// Counts one answered request.
    pub fn answered(&self, version: super::Version, outcome: &'static str, seconds: f64) {
        let version = version.label();
        self.requests
            .get_or_create(&RequestLabels { version, outcome })
            .inc();
        self.duration
            .get_or_create(&VersionLabels { version })
            .observe(seconds);
    }
}
