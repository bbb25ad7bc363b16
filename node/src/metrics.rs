//! The one metrics registry: everything the node exports lives under `roost_*`, libp2p's own
//! metrics under `libp2p_*`, the process's CPU, memory, file descriptors and threads under the
//! standard `process_*` names (read from `/proc` at each scrape), the allocator's under
//! `roost_allocator_*` ([`crate::alloc`], read at each scrape), all served by `/metrics`.
//! Capabilities register their metrics in sub-registries (`roost_relay_*`, `roost_store_*`,
//! ...) when the node is built. A few series also go out under nwaku's names ([`NwakuNames`]),
//! so dashboards, alerts and test suites written against nwaku read a Roost node too.

use prometheus_client::{
    collector::Collector,
    encoding::{text::encode, DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, info::Info},
    registry::{Registry, Unit},
};

/// The node's version, as shown in `roost_build_info` and identify's agent string.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Buckets (seconds) of the request-duration histograms of the request/response services.
pub const REQUEST_DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram with [`REQUEST_DURATION_BUCKETS`], as a `Family` constructor.
pub fn request_duration_histogram() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new(REQUEST_DURATION_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// A registry with the build info and the process metrics already in it.
pub fn new_registry() -> Registry {
    let mut registry = Registry::default();
    let info = Info::new(vec![("version", VERSION.to_owned())]);
    registry
        .sub_registry_with_prefix("roost")
        .register("build", "Roost build information", info);
    registry.register_collector(Box::new(ProcessCollector));
    registry.register_collector(Box::new(crate::alloc::AllocatorCollector));
    registry
}

// === process metrics ===

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`). The kernel fixes it at 100 for
/// user space on every architecture Roost runs on (x86, ARM, RISC-V), whatever `HZ` it runs at.
const USER_HZ: f64 = 100.0;

/// The process metrics Prometheus client libraries export under standard names
/// (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`, ...), read
/// from `/proc` at each scrape. Where `/proc` is missing (not Linux) nothing is exported.
#[derive(Debug)]
pub struct ProcessCollector;

/// One reading of the process's `/proc` files; `None` where a file could not be read.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub threads: Option<u64>,
    pub start_time_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

/// The fields of `/proc/<pid>/stat` the process metrics use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatFields {
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    pub threads: u64,
    /// Start time in clock ticks after boot.
    pub start_ticks: u64,
    pub virtual_bytes: u64,
}

impl ProcessStats {
    /// Reads this process's `/proc/self` files.
    pub fn read() -> ProcessStats {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let stat = read("/proc/self/stat").and_then(|s| parse_stat(&s));
        let boot_time = read("/proc/stat").and_then(|s| parse_boot_time(&s));
        let status = read("/proc/self/status");
        ProcessStats {
            cpu_seconds: stat.map(|s| s.cpu_ticks as f64 / USER_HZ),
            resident_bytes: status
                .as_deref()
                .and_then(|s| parse_status_kib(s, "VmRSS"))
                .map(|kib| kib * 1024),
            virtual_bytes: stat.map(|s| s.virtual_bytes),
            threads: stat.map(|s| s.threads),
            start_time_seconds: stat
                .zip(boot_time)
                .map(|(s, boot)| boot as f64 + s.start_ticks as f64 / USER_HZ),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|dir| dir.count() as u64),
            max_fds: read("/proc/self/limits").and_then(|s| parse_max_fds(&s)),
        }
    }
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may itself hold
/// spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<StatFields> {
    let (_, rest) = text.rsplit_once(')')?;
    // rest[0] is field 3 (state), so field N is rest[N - 3].
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(StatFields {
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        threads: field(20)?,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
    })
}

/// A `Key:   1234 kB` line of `/proc/<pid>/status`, in KiB.
pub fn parse_status_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// The `btime` line of `/proc/stat`: boot time in seconds since the Unix epoch.
pub fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

/// The soft limit of `Max open files` in `/proc/<pid>/limits` (`None` when unlimited).
pub fn parse_max_fds(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix("Max open files")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn encode_gauge<V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    value: Option<V>,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<V>: EncodeMetric,
{
    if let Some(value) = value {
        let gauge = ConstGauge::new(value);
        let metric = encoder.encode_descriptor(name, help, unit.as_ref(), gauge.metric_type())?;
        gauge.encode(metric)?;
    }
    Ok(())
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = ProcessStats::read();
        if let Some(seconds) = stats.cpu_seconds {
            let counter = ConstCounter::new(seconds);
            let metric = encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent",
                Some(&Unit::Seconds),
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        encode_gauge(
            &mut encoder,
            "process_resident_memory",
            "Resident memory size",
            Some(Unit::Bytes),
            stats.resident_bytes.map(|v| v as f64),
        )?;
        encode_gauge(
            &mut encoder,
            "process_virtual_memory",
            "Virtual memory size",
            Some(Unit::Bytes),
            stats.virtual_bytes.map(|v| v as f64),
        )?;
        encode_gauge(
            &mut encoder,
            "process_start_time",
            "Start time of the process since the Unix epoch",
            Some(Unit::Seconds),
            stats.start_time_seconds,
        )?;
        encode_gauge(
            &mut encoder,
            "process_open_fds",
            "Open file descriptors",
            None,
            stats.open_fds.map(|v| v as f64),
        )?;
        encode_gauge(
            &mut encoder,
            "process_max_fds",
            "Limit on open file descriptors (soft limit)",
            None,
            stats.max_fds.map(|v| v as f64),
        )?;
        encode_gauge(
            &mut encoder,
            "process_threads",
            "Threads of the process",
            None,
            stats.threads.map(|v| v as f64),
        )
    }
}

/// The registry rendered in the Prometheus/OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = encode(&mut out, registry) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    out
}

// === nwaku's names ===

/// `type="relay"`: nwaku's label on `waku_node_messages_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: &'static str,
}

/// `waku_service_peers{protocol, peerId}` = 1 for each service peer this node was given, as
/// nwaku sets it for `--storenode`, `--lightpushnode` and `--filternode`: `peerId` is the
/// peer's address without `/p2p` (nwaku's `addrs[0]`), one series per protocol used with it.
pub fn register_service_peers(
    registry: &mut Registry,
    peers: &[(libp2p::StreamProtocol, &libp2p::Multiaddr)],
) {
    // nwaku names the label `peerId` although it holds an address: a label set of pairs, as
    // `peerId` is not a Rust field name the derive would produce.
    let family = prometheus_client::metrics::family::Family::<
        Vec<(String, String)>,
        prometheus_client::metrics::gauge::Gauge,
    >::default();
    for (protocol, address) in peers {
        let transport: libp2p::Multiaddr = address
            .iter()
            .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
            .collect();
        family
            .get_or_create(&vec![
                ("protocol".to_owned(), protocol.to_string()),
                ("peerId".to_owned(), transport.to_string()),
            ])
            .set(1);
    }
    registry.register(
        "waku_service_peers",
        "Service peer protocol and address, 1 per configured service peer (nwaku's name)",
        family,
    );
}

/// nwaku's message-size buckets, in KiB (`waku_histogram_message_size`).
const NWAKU_SIZE_BUCKETS_KIB: [f64; 13] = [
    0.0, 1.0, 3.0, 5.0, 15.0, 50.0, 75.0, 100.0, 125.0, 150.0, 500.0, 700.0, 1000.0,
];

/// The series nwaku (and nim-libp2p under it) exports that operators' dashboards and the Waku
/// interop suite read, kept by the swarm task and the relay beside Roost's own (`roost_*`
/// stays the reference; these repeat a few of its figures under nwaku's names and meanings).
#[derive(Clone, Debug)]
pub struct NwakuNames {
    /// `libp2p_peers`: connected peers.
    pub peers: prometheus_client::metrics::gauge::Gauge,
    /// `libp2p_total_dial_attempts_total`: outgoing dials, counted when they connect or fail.
    pub dial_attempts: prometheus_client::metrics::counter::Counter,
    /// `waku_peer_store_size`: peers this node knows an address of (connected, or kept for
    /// redialling).
    pub peer_store_size: prometheus_client::metrics::gauge::Gauge,
    /// `libp2p_pubsub_peers`: connected peers while relay runs, as nim-libp2p's pubsub counts
    /// every peer that joined the switch; 0 without relay.
    pub pubsub_peers: prometheus_client::metrics::gauge::Gauge,
    /// `libp2p_pubsub_topics`: pubsub topics this node is subscribed to.
    pub pubsub_topics: prometheus_client::metrics::gauge::Gauge,
    /// `libp2p_pubsub_subscriptions_total`: topic subscriptions made.
    pub pubsub_subscriptions: prometheus_client::metrics::counter::Counter,
    /// `libp2p_gossipsub_peers_per_topic_mesh{topic="other"}`: mesh peers over all topics
    /// (nim-libp2p labels every topic it was not told to name `other`).
    pub mesh_peers: prometheus_client::metrics::family::Family<
        TopicLabels,
        prometheus_client::metrics::gauge::Gauge,
    >,
    /// `waku_node_messages_total{type="relay"}`: relay messages accepted.
    pub messages: prometheus_client::metrics::family::Family<
        KindLabel,
        prometheus_client::metrics::counter::Counter,
    >,
    /// `messages{type="relay"}`, held so each accepted message skips the label lookup.
    relay_messages: prometheus_client::metrics::counter::Counter,
    /// `waku_histogram_message_size`: sizes of accepted relay messages, in KiB.
    pub message_size: prometheus_client::metrics::histogram::Histogram,
}

impl NwakuNames {
    /// Registers at the registry's root (no `roost_` prefix), every series present from the
    /// start.
    pub fn register(registry: &mut Registry) -> Self {
        let mut names = NwakuNames {
            peers: Default::default(),
            dial_attempts: Default::default(),
            peer_store_size: Default::default(),
            pubsub_peers: Default::default(),
            pubsub_topics: Default::default(),
            pubsub_subscriptions: Default::default(),
            mesh_peers: Default::default(),
            messages: Default::default(),
            relay_messages: Default::default(),
            message_size: prometheus_client::metrics::histogram::Histogram::new(
                NWAKU_SIZE_BUCKETS_KIB,
            ),
        };
        let _ = names
            .mesh_peers
            .get_or_create(&TopicLabels { topic: "other" });
        let relay_messages = names
            .messages
            .get_or_create(&KindLabel { r#type: "relay" })
            .clone();
        names.relay_messages = relay_messages;
        registry.register(
            "libp2p_peers",
            "Connected peers (nwaku's name)",
            names.peers.clone(),
        );
        registry.register(
            "libp2p_total_dial_attempts",
            "Outgoing dials (nwaku's name)",
            names.dial_attempts.clone(),
        );
        registry.register(
            "waku_peer_store_size",
            "Peers with a known address: connected or kept for redialling (nwaku's name)",
            names.peer_store_size.clone(),
        );
        registry.register(
            "libp2p_pubsub_peers",
            "Connected peers while relay runs (nwaku's name)",
            names.pubsub_peers.clone(),
        );
        registry.register(
            "libp2p_pubsub_topics",
            "Pubsub topics this node is subscribed to (nwaku's name)",
            names.pubsub_topics.clone(),
        );
        registry.register(
            "libp2p_pubsub_subscriptions",
            "Pubsub topic subscriptions made (nwaku's name)",
            names.pubsub_subscriptions.clone(),
        );
        registry.register(
            "libp2p_gossipsub_peers_per_topic_mesh",
            "Gossipsub mesh peers, all topics as topic=other (nwaku's name)",
            names.mesh_peers.clone(),
        );
        registry.register(
            "waku_node_messages",
            "Relay messages accepted, type=relay (nwaku's name)",
            names.messages.clone(),
        );
        registry.register(
            "waku_histogram_message_size",
            "Size of accepted relay messages in KiB (nwaku's name and buckets)",
            names.message_size.clone(),
        );
        names
    }

    /// One accepted relay message of `bytes`.
    pub fn relayed(&self, bytes: usize) {
        self.relay_messages.inc();
        self.message_size.observe(bytes as f64 / 1024.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real line from Linux 6.1, with a command name holding a space and a parenthesis.
    const STAT: &str = "4242 (roost (x) y) S 1 4242 4242 0 -1 4194560 2811 0 0 0 153 47 0 0 20 0 \
        11 0 889912 1191960576 6144 18446744073709551615 1 1 0 0 0 0 0 4096 17640 0 0 0 17 1 0 0 \
        0 0 0 0 0 0 0 0 0 0 0";

    #[test]
    fn parses_proc_stat_from_the_last_parenthesis() {
        let stat = parse_stat(STAT).unwrap();
        assert_eq!(
            stat,
            StatFields {
                cpu_ticks: 153 + 47,
                threads: 11,
                start_ticks: 889912,
                virtual_bytes: 1191960576,
            }
        );
        assert_eq!(parse_stat("4242 (roost) S 1 2"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn parses_status_limits_and_boot_time() {
        let status = "Name:\troost\nVmPeak:\t 1200 kB\nVmRSS:\t   24576 kB\nThreads:\t11\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(24576));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        let limits =
            "Limit                     Soft Limit           Hard Limit           Units     \n\
            Max processes             95452                95452                processes \n\
            Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_fds(unlimited), None);
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn this_process_reads_and_renders_under_standard_names() {
        let stats = ProcessStats::read();
        assert!(stats.resident_bytes.unwrap() > 0);
        assert!(stats.open_fds.unwrap() >= 3);
        assert!(stats.threads.unwrap() >= 1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = stats.start_time_seconds.unwrap();
        assert!(
            start <= now + 1.0 && start > now - 86400.0 * 365.0,
            "{start}"
        );

        let text = render(&new_registry());
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_start_time_seconds ",
            "process_open_fds ",
            "process_max_fds ",
            "process_threads ",
            "roost_build_info{version=",
            "roost_allocator_allocated_bytes ",
            "roost_allocator_active_bytes ",
            "roost_allocator_resident_bytes ",
            "roost_allocator_mapped_bytes ",
            "roost_allocator_retained_bytes ",
            "roost_allocator_metadata_bytes ",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "{name} missing from:\n{text}"
            );
        }
    }

    #[test]
    fn allocator_statistics_follow_allocations() {
        let before = crate::alloc::AllocatorStats::read().unwrap();
        let held: Vec<Vec<u8>> = (0..64).map(|_| vec![1u8; 1 << 20]).collect();
        let during = crate::alloc::AllocatorStats::read().unwrap();
        // Other tests allocate in parallel: half of the 64 MiB is a safe margin.
        assert!(
            during.allocated >= before.allocated + (32 << 20),
            "{before:?} -> {during:?}"
        );
        assert!(during.resident >= during.allocated / 2 && during.mapped >= during.active);
        drop(held);
    }
}
