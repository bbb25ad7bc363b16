//! B4 relay throughput: messages/s delivered through one relay to 8 subscribers, Roost against a
//! bare rust-libp2p gossipsub relay built from the same libp2p version, in the same run.
//!
//! Topology (per run): 2 publishers and 8 subscribers, all bare gossipsub peers on loopback,
//! each connected only to the relay under test. Publishers do not subscribe (they fan out to the
//! relay); subscribers fill the relay's mesh (D_high = 8). Messages are valid WakuMessages with a
//! 1 KiB payload. Publishing is windowed: at most `window` messages may be published and not yet
//! delivered to all 8 subscribers, so the figure is the relay's capacity, not a queue overflow.
//!
//! Runs alternate Roost, bare, Roost, bare, ... after a warm-up; the table shows every run, the
//! median of each side and the ratio. Nothing here is a test: it prints figures.
//!
//! `cargo bench -p roost-tests --bench relay -- [--messages N] [--window N] [--pairs N]
//! [--only roost|bare] [--store true|false] [--bare-protocols N] [--bare-scored true]
//! [--bare-composed true] [--bare-as-roost true]`: `--only` runs one side (for a profiler), `--store false` runs Roost
//! as a relay-only node (the shipped default is a store node too). The last three add a third
//! relay to each round, the bare relay with some of what Roost has, to show what each costs:
//! `--bare-protocols N` lists `N` more protocols it never uses (libp2p compares a connection's
//! protocol set with its handlers' on every wake-up), `--bare-scored true` turns on Roost's
//! peer scoring and gossipsub's metrics, `--bare-composed true` composes it as Roost is
//! (identify, ping and nine more request-response behaviours, all idle: libp2p polls every
//! handler of a connection on each wake-up). `--bare-as-roost true` turns on all that libp2p
//! does in Roost and the bare relay does not: the composition, peer scoring and gossipsub's
//! metrics, bandwidth metrics on the transport and gossipsub's validation mode (every message
//! accepted at once). Roost against it is the cost of Roost's own code on the hot path (decode,
//! checks, hash, throttle gate, sinks, the swarm task); it against bare is the cost of the
//! libp2p features Roost turns on.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use roost_node::{message::WakuMessage, Node};
use roost_tests::{
    bare::{BareOptions, BarePeer},
    bench, test_config, wait_until,
};

const TOPIC: &str = "/waku/2/rs/1/0";
const SUBSCRIBERS: usize = 8;
const PUBLISHERS: usize = 2;
const PAYLOAD: usize = 1024;
/// A run ends when no message completes delivery for this long.
const STALL: Duration = Duration::from_secs(5);

struct Args {
    messages: usize,
    window: usize,
    pairs: usize,
    only: String,
    store: bool,
    bare_protocols: usize,
    bare_scored: bool,
    bare_composed: bool,
    bare_as_roost: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    Ok(Args {
        // At full speed on a loaded 2-core machine both relays start dropping forwards
        // (gossipsub's bounded per-peer send queues) after ~10K messages; a run that loses a
        // window's worth stalls and reports it under "lost". 8K stays clear of that.
        messages: bench::flag("--messages", 8_000)?,
        window: bench::flag("--window", 256)?,
        pairs: bench::flag("--pairs", 3)?,
        only: bench::flag("--only", String::new())?,
        store: bench::flag("--store", true)?,
        bare_protocols: bench::flag("--bare-protocols", 0)?,
        bare_scored: bench::flag("--bare-scored", false)?,
        bare_composed: bench::flag("--bare-composed", false)?,
        bare_as_roost: bench::flag("--bare-as-roost", false)?,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Relay {
    Roost,
    Bare,
    /// The bare relay with some of what Roost has: this many more protocols listed (never
    /// used), and Roost's peer scoring and gossipsub metrics when `scored`.
    BareWith {
        protocols: usize,
        scored: bool,
        composed: bool,
        /// libp2p's bandwidth metrics and gossipsub's validation mode (`--bare-as-roost`).
        metered_and_validating: bool,
    },
}

impl Relay {
    fn name(self) -> String {
        match self {
            Relay::Roost => "roost".into(),
            Relay::Bare => "bare libp2p".into(),
            Relay::BareWith {
                protocols: _,
                scored: true,
                composed: true,
                metered_and_validating: true,
            } => "bare as roost".into(),
            Relay::BareWith {
                protocols,
                scored,
                composed,
                metered_and_validating,
            } => format!(
                "bare{}{}{}{}",
                if protocols > 0 {
                    format!(" +{protocols} protocols")
                } else {
                    String::new()
                },
                if scored { " +scoring" } else { "" },
                if composed { " +composed" } else { "" },
                if metered_and_validating {
                    " +bandwidth +validating"
                } else {
                    ""
                }
            ),
        }
    }
}

/// What a relay under test is: a Roost node or a bare peer, kept alive for the run.
enum RelayUnderTest {
    Roost(Node, tempfile::TempDir),
    Bare(BarePeer),
}

impl RelayUnderTest {
    async fn start(
        kind: Relay,
        store: bool,
    ) -> anyhow::Result<(RelayUnderTest, libp2p::Multiaddr)> {
        match kind {
            Relay::Roost => {
                let dir = tempfile::tempdir()?;
                let mut config = test_config(dir.path());
                config.relay.shards = vec![0];
                config.network.ws_enabled = false;
                config.store.enabled = store;
                // B4 measures the relay's capacity, with two publishers far above any per-peer
                // relay quota: the throttle's gate stays in the path but its relay quotas are
                // off; the throttle bench (B9) measures throttling itself.
                config.throttle.relay = roost_node::throttle::quota::QuotaSpec::unlimited();
                config.throttle.relay_bytes = roost_node::throttle::quota::QuotaSpec::unlimited();
                let node = Node::start(config).await?;
                let addr = roost_tests::loopback(&node.handle().info().tcp_addresses);
                Ok((RelayUnderTest::Roost(node, dir), addr))
            }
            Relay::Bare | Relay::BareWith { .. } => {
                let (idle_protocols, scored_and_metered, composed, metered_and_validating) =
                    match kind {
                        Relay::BareWith {
                            protocols,
                            scored,
                            composed,
                            metered_and_validating,
                        } => (protocols, scored, composed, metered_and_validating),
                        _ => (0, false, false, false),
                    };
                let peer = BarePeer::start(BareOptions {
                    topics: vec![TOPIC.into()],
                    forward_received: false,
                    idle_protocols,
                    scored_and_metered,
                    composed,
                    bandwidth_metered: metered_and_validating,
                    validates: metered_and_validating,
                    ..Default::default()
                })
                .await?;
                let addr = peer.listen_addr.clone();
                Ok((RelayUnderTest::Bare(peer), addr))
            }
        }
    }

    async fn mesh_peers(&self) -> usize {
        match self {
            RelayUnderTest::Roost(node, _) => node
                .handle()
                .network_status()
                .await
                .and_then(|s| s.shards.into_iter().find(|sh| sh.pubsub_topic == TOPIC))
                .map(|sh| sh.mesh_peers)
                .unwrap_or(0),
            RelayUnderTest::Bare(peer) => peer.mesh_peers(TOPIC).await,
        }
    }

    async fn stop(self) {
        match self {
            RelayUnderTest::Roost(node, _dir) => {
                let _ = node.stop().await;
            }
            RelayUnderTest::Bare(peer) => drop(peer),
        }
    }
}

struct RunResult {
    relay: Relay,
    delivered: usize,
    sent: usize,
    msgs_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Payload: seq (8 bytes) || send time in ns since `epoch` (8 bytes) || padding.
fn payload(seq: u64, epoch: Instant) -> Vec<u8> {
    let mut p = vec![0u8; PAYLOAD];
    p[..8].copy_from_slice(&seq.to_be_bytes());
    p[8..16].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
    p
}

async fn run_once(
    kind: Relay,
    messages: usize,
    window: usize,
    store: bool,
) -> anyhow::Result<RunResult> {
    let (relay, relay_addr) = RelayUnderTest::start(kind, store).await?;
    let mut subscribers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let peer = BarePeer::start(BareOptions::default()).await?;
        peer.dial(relay_addr.clone())
            .await
            .map_err(anyhow::Error::msg)?;
        subscribers.push(peer);
    }
    let mut publishers = Vec::new();
    for _ in 0..PUBLISHERS {
        let peer = BarePeer::start(BareOptions {
            topics: vec![],
            forward_received: false,
            ..Default::default()
        })
        .await?;
        peer.dial(relay_addr.clone())
            .await
            .map_err(anyhow::Error::msg)?;
        publishers.push(peer);
    }
    wait_until(Duration::from_secs(30), || async {
        relay.mesh_peers().await >= SUBSCRIBERS
    })
    .await
    .map_err(|_| anyhow::anyhow!("{} relay mesh did not reach {SUBSCRIBERS}", kind.name()))?;
    // Publishers need to know the relay subscribes to the topic before fanning out.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let epoch = Instant::now();
    let counts: Arc<Vec<AtomicU8>> = Arc::new((0..messages).map(|_| AtomicU8::new(0)).collect());
    let complete = Arc::new(AtomicUsize::new(0));
    let last_complete_ns = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(
        messages * SUBSCRIBERS,
    )));
    let mut drains = Vec::new();
    for mut sub in subscribers {
        let counts = counts.clone();
        let complete = complete.clone();
        let last = last_complete_ns.clone();
        let latencies = latencies.clone();
        drains.push(tokio::spawn(async move {
            let mut local = Vec::new();
            while let Some(received) = sub.received.recv().await {
                let Ok(msg) = WakuMessage::decode(&received.data) else {
                    continue;
                };
                if msg.payload.len() < 16 {
                    continue;
                }
                let seq =
                    u64::from_be_bytes(msg.payload[..8].try_into().unwrap_or([0; 8])) as usize;
                let sent_ns = u64::from_be_bytes(msg.payload[8..16].try_into().unwrap_or([0; 8]));
                let at_ns = received.at.duration_since(epoch).as_nanos() as u64;
                local.push(at_ns.saturating_sub(sent_ns));
                if let Some(c) = counts.get(seq) {
                    if c.fetch_add(1, Ordering::AcqRel) + 1 == SUBSCRIBERS as u8 {
                        complete.fetch_add(1, Ordering::AcqRel);
                        last.fetch_max(at_ns, Ordering::AcqRel);
                    }
                }
                if local.len() >= 1024 {
                    latencies.lock().map(|mut l| l.append(&mut local)).ok();
                }
            }
            latencies.lock().map(|mut l| l.append(&mut local)).ok();
            drop(sub);
        }));
    }

    let sent = Arc::new(AtomicUsize::new(0));
    // Set when delivery stalls, so publishers waiting for window space give up.
    let stalled = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut pubs = Vec::new();
    for (index, publisher) in publishers.into_iter().enumerate() {
        let complete = complete.clone();
        let sent = sent.clone();
        let stalled = stalled.clone();
        pubs.push(tokio::spawn(async move {
            let mut seq = index;
            while seq < messages && !stalled.load(Ordering::Acquire) {
                let in_flight = sent.load(Ordering::Acquire) - complete.load(Ordering::Acquire);
                if in_flight >= window {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    continue;
                }
                let msg = WakuMessage::new("/bench/1/relay/proto", payload(seq as u64, epoch));
                match publisher.publish(TOPIC, msg.encode_to_vec()).await {
                    Ok(()) => {
                        sent.fetch_add(1, Ordering::AcqRel);
                        seq += PUBLISHERS;
                    }
                    // Queues full: back off and retry the same message.
                    Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
            publisher
        }));
    }
    // Wait until all are delivered or progress stalls.
    let mut last_progress = (0usize, Instant::now());
    loop {
        let done = complete.load(Ordering::Acquire);
        if done >= messages {
            break;
        }
        if done != last_progress.0 {
            last_progress = (done, Instant::now());
        } else if last_progress.1.elapsed() > STALL {
            stalled.store(true, Ordering::Release);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = complete.load(Ordering::Acquire);
    let end_ns = last_complete_ns.load(Ordering::Acquire);
    let start_ns = start.duration_since(epoch).as_nanos() as u64;
    let elapsed = Duration::from_nanos(end_ns.saturating_sub(start_ns))
        .as_secs_f64()
        .max(1e-9);
    let mut publishers_back = Vec::new();
    for p in pubs {
        if let Ok(p) = p.await {
            publishers_back.push(p);
        }
    }
    for d in &drains {
        d.abort();
    }
    for d in drains {
        let _ = d.await;
    }
    drop(publishers_back);
    relay.stop().await;
    let mut lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat[i.min(lat.len() - 1)] as f64 / 1e6
    };
    Ok(RunResult {
        relay: kind,
        delivered,
        sent: sent.load(Ordering::Acquire),
        msgs_per_sec: delivered as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        println!(
            "B4 relay throughput: {} msgs of {PAYLOAD} B, {PUBLISHERS} publishers -> relay -> {SUBSCRIBERS} subscribers, window {}",
            args.messages, args.window
        );
        let mut kinds: Vec<Relay> = match args.only.as_str() {
            "roost" => vec![Relay::Roost],
            "bare" => vec![Relay::Bare],
            "" => vec![Relay::Roost, Relay::Bare],
            other => anyhow::bail!("--only takes roost or bare, not {other}"),
        };
        let as_roost = args.bare_as_roost;
        if (args.bare_protocols > 0 || args.bare_scored || args.bare_composed || as_roost)
            && kinds.len() == 2
        {
            kinds.push(Relay::BareWith {
                protocols: args.bare_protocols,
                scored: args.bare_scored || as_roost,
                composed: args.bare_composed || as_roost,
                metered_and_validating: as_roost,
            });
        }
        if !args.store {
            println!("roost runs as a relay-only node (store.enabled = false)");
        }
        // Warm-up (not reported): sockets, allocators, caches.
        for &kind in &kinds {
            run_once(kind, 1000, args.window, args.store).await?;
        }
        let mut results = Vec::new();
        for _ in 0..args.pairs {
            for &kind in &kinds {
                let r = run_once(kind, args.messages, args.window, args.store).await?;
                println!(
                    "  run {:>2}  {:<28} delivered {:>6}/{:<6}  {:>9.0} msgs/s  p50 {:>7.2} ms  p99 {:>7.2} ms",
                    results.len() + 1,
                    r.relay.name(),
                    r.delivered,
                    r.sent,
                    r.msgs_per_sec,
                    r.p50_ms,
                    r.p99_ms
                );
                results.push(r);
            }
        }
        if kinds.len() < 2 {
            // One side only (profiling): no ratio to print.
            return anyhow::Ok(());
        }
        let side = |k: Relay, f: fn(&RunResult) -> f64| -> f64 {
            median(results.iter().filter(|r| r.relay == k).map(f).collect())
        };
        // Each round runs every kind once, in `kinds` order: ratios to the bare run of the round.
        let round_ratios = |k: usize| -> Vec<f64> {
            results
                .chunks(kinds.len())
                .filter(|c| c.len() == kinds.len())
                .map(|c| c[k].msgs_per_sec / c[1].msgs_per_sec)
                .collect()
        };
        let spread = |ratios: &[f64]| {
            ratios
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)))
        };
        let ratios = round_ratios(0);
        let (rmin, rmax) = spread(&ratios);
        println!();
        println!("| relay | msgs/s delivered to all 8 (median) | p50 ms | p99 ms | lost |");
        println!("|---|---|---|---|---|");
        for &kind in &kinds {
            let lost: usize = results.iter().filter(|r| r.relay == kind).map(|r| r.sent - r.delivered).sum();
            println!(
                "| {} | {:.0} | {:.2} | {:.2} | {} |",
                kind.name(),
                side(kind, |r| r.msgs_per_sec),
                side(kind, |r| r.p50_ms),
                side(kind, |r| r.p99_ms),
                lost
            );
        }
        println!(
            "\nroost / bare throughput ratio: {:.2} (min {:.2}, max {:.2} over {} pairs); p99 {:.2}x",
            side(Relay::Roost, |r| r.msgs_per_sec) / side(Relay::Bare, |r| r.msgs_per_sec),
            rmin,
            rmax,
            ratios.len(),
            side(Relay::Roost, |r| r.p99_ms) / side(Relay::Bare, |r| r.p99_ms),
        );
        if let Some(&variant) = kinds.get(2) {
            let ratios = round_ratios(2);
            let (lo, hi) = spread(&ratios);
            println!(
                "{} / bare throughput ratio: {:.2} (min {lo:.2}, max {hi:.2} over {} rounds); p99 {:.2}x",
                variant.name(),
                side(variant, |r| r.msgs_per_sec) / side(Relay::Bare, |r| r.msgs_per_sec),
                ratios.len(),
                side(variant, |r| r.p99_ms) / side(Relay::Bare, |r| r.p99_ms),
            );
            // Roost against the variant, round by round: what Roost costs beyond what the
            // variant shares with it.
            let against: Vec<f64> = results
                .chunks(kinds.len())
                .filter(|c| c.len() == kinds.len())
                .map(|c| c[0].msgs_per_sec / c[2].msgs_per_sec)
                .collect();
            let (lo, hi) = spread(&against);
            println!(
                "roost / {} throughput ratio: {:.2} (min {lo:.2}, max {hi:.2} over {} rounds); p99 {:.2}x",
                variant.name(),
                side(Relay::Roost, |r| r.msgs_per_sec) / side(variant, |r| r.msgs_per_sec),
                against.len(),
                side(Relay::Roost, |r| r.p99_ms) / side(variant, |r| r.p99_ms),
            );
        }
        anyhow::Ok(())
    })
}
