//! Peer exchange metrics: requests by outcome, ENRs handed out, the book, and learning.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OriginLabels {
    /// `configured` or `learned`.
    pub origin: &'static str,
}

/// Handles to the peer exchange metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub requests: Family<OutcomeLabels, Counter>,
    pub duration: Histogram,
    pub enrs_sent: Counter,
    pub book: Family<OriginLabels, Gauge>,
    pub queries: Family<OutcomeLabels, Counter>,
    pub learned: Family<OutcomeLabels, Counter>,
}

impl Metrics {
    /// Registers under the given (already `roost_peer_exchange`-prefixed) registry.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            requests: Family::default(),
            duration: crate::metrics::request_duration_histogram(),
            enrs_sent: Counter::default(),
            book: Family::default(),
            queries: Family::default(),
            learned: Family::default(),
        };
        registry.register(
            "requests",
            "Peer exchange requests served, by outcome (ok, bad_request, throttled)",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from receiving a peer exchange request to answering it",
            m.duration.clone(),
        );
        registry.register(
            "enrs_sent",
            "ENRs handed out in peer exchange answers",
            m.enrs_sent.clone(),
        );
        registry.register(
            "book_enrs",
            "ENRs this node can hand out, by origin (configured, learned)",
            m.book.clone(),
        );
        registry.register(
            "queries",
            "Peer exchange queries this node sent to its static peers, by outcome (ok, failed, refused)",
            m.queries.clone(),
        );
        registry.register(
            "learned_enrs",
            "ENRs received from static peers, by what the book did with them (new, updated, unchanged, other_cluster, own, full, invalid)",
            m.learned.clone(),
        );
        m
    }

    pub fn count(family: &Family<OutcomeLabels, Counter>, outcome: &'static str) {
        family.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}
