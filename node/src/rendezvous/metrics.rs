//! Rendezvous metrics, registered under `roost_rendezvous_*`. Every label comes from a closed
//! set; namespaces, which peers choose, are labelled only for the largest
//! [`LABELLED_NAMESPACES`] of them, the rest summed under `namespace="other"`.

use std::collections::HashSet;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Namespaces with their own label in `roost_rendezvous_namespace_registrations`.
pub const LABELLED_NAMESPACES: usize = 32;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `register`, `unregister`, `discover` or `unknown`.
    pub kind: &'static str,
    /// A status label (`ok`, `invalid_ttl`, …) or `malformed`, `throttled`, `overloaded`,
    /// `unreadable` (frame over the limit or cut short), `stream_error`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FlavourLabels {
    pub flavour: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// Server and client metrics (both sides of the module share one set).
#[derive(Clone, Debug)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<KindLabels, Histogram>,
    pub registrations_accepted: Family<FlavourLabels, Counter>,
    pub expirations: Counter,
    pub table_size: Gauge,
    pub namespaces: Gauge,
    pub namespace_registrations: Family<NamespaceLabels, Gauge>,
    pub client_registrations: Family<OutcomeLabels, Counter>,
    pub client_discovered: Counter,
    pub client_dials: Family<OutcomeLabels, Counter>,
}

impl Metrics {
    /// Registers everything in `registry` (the `roost_rendezvous` sub-registry).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(|| {
                Histogram::new([
                    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                    0.1,
                ])
            }),
            registrations_accepted: Family::default(),
            expirations: Counter::default(),
            table_size: Gauge::default(),
            namespaces: Gauge::default(),
            namespace_registrations: Family::default(),
            client_registrations: Family::default(),
            client_discovered: Counter::default(),
            client_dials: Family::default(),
        };
        registry.register(
            "requests",
            "Rendezvous requests served, by kind and outcome (status, malformed, throttled, overloaded, unreadable, stream_error)",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time the server spent on one request, from the queue to the response, by kind",
            m.request_seconds.clone(),
        );
        registry.register(
            "registrations_accepted",
            "REGISTER requests accepted, by peer record flavour",
            m.registrations_accepted.clone(),
        );
        registry.register(
            "expirations",
            "Registrations removed because their TTL ran out",
            m.expirations.clone(),
        );
        registry.register(
            "table_size",
            "Live registrations in the table",
            m.table_size.clone(),
        );
        registry.register(
            "namespaces",
            "Namespaces with at least one live registration",
            m.namespaces.clone(),
        );
        registry.register(
            "namespace_registrations",
            "Live registrations in the largest namespaces; the rest under namespace=\"other\"",
            m.namespace_registrations.clone(),
        );
        registry.register(
            "client_registrations",
            "This node's own REGISTER requests to rendezvous points, by outcome",
            m.client_registrations.clone(),
        );
        registry.register(
            "client_discovered_peers",
            "Peers this node learnt from rendezvous points (valid records, others than itself)",
            m.client_discovered.clone(),
        );
        registry.register(
            "client_dials",
            "Dials of peers found through rendezvous, by outcome",
            m.client_dials.clone(),
        );
        m
    }

    pub fn request(&self, kind: &'static str, outcome: &'static str) {
        self.requests
            .get_or_create(&RequestLabels { kind, outcome })
            .inc();
    }

    /// Sets the table gauges: the `LABELLED_NAMESPACES` largest namespaces by name, the rest as
    /// `other`. `labelled` remembers which labels exist so that dropped ones are removed.
    pub fn set_table<'a>(
        &self,
        total: usize,
        sizes: impl Iterator<Item = (&'a str, usize)>,
        labelled: &mut HashSet<String>,
    ) {
        self.table_size.set(total as i64);
        let mut sizes: Vec<(&str, usize)> = sizes.collect();
        self.namespaces.set(sizes.len() as i64);
        if sizes.len() > LABELLED_NAMESPACES {
            sizes.select_nth_unstable_by(LABELLED_NAMESPACES, |a, b| b.1.cmp(&a.1));
            sizes.truncate(LABELLED_NAMESPACES);
        }
        let mut now: HashSet<String> = HashSet::with_capacity(sizes.len());
        let mut shown = 0usize;
        for (ns, n) in sizes {
            self.namespace_registrations
                .get_or_create(&NamespaceLabels {
                    namespace: ns.to_owned(),
                })
                .set(n as i64);
            shown += n;
            now.insert(ns.to_owned());
        }
        for gone in labelled.difference(&now) {
            self.namespace_registrations.remove(&NamespaceLabels {
                namespace: gone.clone(),
            });
        }
        self.namespace_registrations
            .get_or_create(&NamespaceLabels {
                namespace: "other".into(),
            })
            .set(total.saturating_sub(shown) as i64);
        *labelled = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_labels_stay_bounded() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        let mut labelled = HashSet::new();
        let names: Vec<String> = (0..100).map(|i| format!("ns{i}")).collect();
        let sizes: Vec<(&str, usize)> = names.iter().map(|n| (n.as_str(), 1)).collect();
        let mut big = sizes.clone();
        big[99].1 = 50;
        m.set_table(149, big.into_iter(), &mut labelled);
        assert_eq!(labelled.len(), LABELLED_NAMESPACES);
        assert!(
            labelled.contains("ns99"),
            "the largest namespace is labelled"
        );
        let other = m
            .namespace_registrations
            .get_or_create(&NamespaceLabels {
                namespace: "other".into(),
            })
            .get();
        assert_eq!(other, 149 - 50 - (LABELLED_NAMESPACES as i64 - 1));
        m.set_table(1, [("solo", 1)].into_iter(), &mut labelled);
        assert_eq!(labelled.len(), 1);
        let text = crate::metrics::render(&registry);
        assert!(!text.contains("ns99"), "dropped labels are removed");
    }
}
