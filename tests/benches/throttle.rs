//! B9 throttle cost and flood isolation, in one run:
//!
//! 1. **Check cost**: one `Throttle` check against the raw `governor` check(s) it wraps, same
//!    quotas, same keys (1,000 peers, 256 IPs), admitted and refused paths. Alternating
//!    A/B passes; the table shows each side's median ns per check and the ratio.
//! 2. **Flood isolation**: ten honest peers publish relay messages at a normal rate through a
//!    Roost node to a subscriber, once without and once with attackers: a relay flooder at
//!    100x its relay quota and a store client at 100x its store quota. Passes alternate
//!    clean/attacked after a warm-up; the table shows honest p50/p99 latency and goodput per
//!    pass, the medians and the attacked/clean ratios, and how much of the attackers' traffic
//!    got through.
//!
//! Nothing here is a test: it prints figures.
//!
//! `cargo bench -p roost-tests --bench throttle -- [--pairs N] [--seconds N] [--checks N]`

use std::{
    collections::HashSet,
    hint::black_box,
    net::{IpAddr, Ipv4Addr},
    num::NonZeroU32,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use governor::{clock::DefaultClock, state::keyed::DashMapStateStore, Quota, RateLimiter};
use libp2p::PeerId;
use prometheus_client::registry::Registry;
use roost_node::{
    client::Client,
    message::WakuMessage,
    store::{self, rpc::StoreQueryRequest},
    throttle::{self, Service, Throttle},
    Node,
};
use roost_tests::{
    bare::{BareOptions, BarePeer},
    bench, test_config, wait_until,
};

const TOPIC: &str = "/waku/2/rs/1/0";
const HONEST: usize = 10;
/// Honest relay rate per peer (messages/s): well inside the quota.
const HONEST_RATE: u64 = 5;
/// Relay quota of the node under test (per peer and topic, per second).
const RELAY_QUOTA: u64 = 20;
/// Store quota of the node under test (per peer, per minute).
const STORE_QUOTA: u64 = 30;
const PAYLOAD: usize = 256;

struct Args {
    pairs: usize,
    seconds: u64,
    checks: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    Ok(Args {
        pairs: bench::flag("--pairs", 3)?,
        seconds: bench::flag("--seconds", 10)?,
        checks: bench::flag("--checks", 1_000_000)?,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

// === part 1: check cost ===

type Keyed<K> = RateLimiter<K, DashMapStateStore<K>, DefaultClock>;

fn throttle_with(store: &str) -> Throttle {
    let config = throttle::Config {
        store: store.parse().expect("quota"),
        relay: store.parse().expect("quota"),
        relay_bytes: "unlimited".parse().expect("quota"),
        ..Default::default()
    };
    Throttle::new(
        &config,
        throttle::Metrics::register(&mut Registry::default()),
    )
}

fn quota(volume: u32, period: Duration) -> Quota {
    let volume = NonZeroU32::new(volume).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period / volume.get())
        .unwrap_or(Quota::per_second(volume))
        .allow_burst(volume)
}

/// ns per call of `f` over `n` calls (keys cycle inside `f`).
fn time_per_call(n: usize, mut f: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

struct CostRow {
    name: &'static str,
    raw_ns: Vec<f64>,
    throttle_ns: Vec<f64>,
}

fn check_costs(args: &Args) -> Vec<CostRow> {
    let peers: Vec<PeerId> = (0..1000).map(|_| PeerId::random()).collect();
    let ips: Vec<IpAddr> = (0..256u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i)))
        .collect();
    let big = 1_000_000_000u32;
    let second = Duration::from_secs(1);
    let hour = Duration::from_secs(3600);
    let mut rows = vec![
        CostRow {
            name: "admitted, per-peer rule",
            raw_ns: vec![],
            throttle_ns: vec![],
        },
        CostRow {
            name: "admitted, peer + ip + global",
            raw_ns: vec![],
            throttle_ns: vec![],
        },
        CostRow {
            name: "admitted, relay (topic + bytes)",
            raw_ns: vec![],
            throttle_ns: vec![],
        },
        CostRow {
            name: "refused, per-peer rule",
            raw_ns: vec![],
            throttle_ns: vec![],
        },
    ];
    let n = args.checks;
    for _ in 0..args.pairs {
        // Fresh limiters per pass, both sides, so neither sees a warmer map.
        {
            let raw: Keyed<PeerId> = RateLimiter::keyed(quota(big, second));
            let t = throttle_with(&format!("{big}/1s per-peer"));
            rows[0].raw_ns.push(time_per_call(n, |i| {
                black_box(raw.check_key(&peers[i % peers.len()]).is_ok());
            }));
            rows[0].throttle_ns.push(time_per_call(n, |i| {
                black_box(
                    t.check(Service::Store, &peers[i % peers.len()], Some(ips[i % 256]))
                        .is_ok(),
                );
            }));
        }
        {
            let raw_peer: Keyed<PeerId> = RateLimiter::keyed(quota(big, second));
            let raw_ip: Keyed<throttle::IpKey> = RateLimiter::keyed(quota(big, second));
            let raw_global = RateLimiter::direct(quota(big, second));
            let t = throttle_with(&format!(
                "{big}/1s per-peer; {big}/1s per-ip; {big}/1s global"
            ));
            rows[1].raw_ns.push(time_per_call(n, |i| {
                let ok = raw_peer.check_key(&peers[i % peers.len()]).is_ok()
                    && raw_ip.check_key(&ips[i % 256].into()).is_ok()
                    && raw_global.check().is_ok();
                black_box(ok);
            }));
            rows[1].throttle_ns.push(time_per_call(n, |i| {
                black_box(
                    t.check(Service::Store, &peers[i % peers.len()], Some(ips[i % 256]))
                        .is_ok(),
                );
            }));
        }
        {
            let raw_topic: Keyed<(PeerId, u16)> = RateLimiter::keyed(quota(big, second));
            let raw_bytes: Keyed<PeerId> = RateLimiter::keyed(quota(big, second));
            let config = throttle::Config {
                relay: format!("{big}/1s per-peer").parse().expect("quota"),
                relay_bytes: format!("{big}/1s per-peer").parse().expect("quota"),
                ..Default::default()
            };
            let t = Throttle::new(
                &config,
                throttle::Metrics::register(&mut Registry::default()),
            );
            let cells = NonZeroU32::new(1024).unwrap_or(NonZeroU32::MIN);
            rows[2].raw_ns.push(time_per_call(n, |i| {
                let peer = &peers[i % peers.len()];
                let ok = raw_topic.check_key(&(*peer, 0)).is_ok()
                    && matches!(raw_bytes.check_key_n(peer, cells), Ok(Ok(())));
                black_box(ok);
            }));
            rows[2].throttle_ns.push(time_per_call(n, |i| {
                black_box(
                    t.check_relay(&peers[i % peers.len()], 0, 1024, Some(ips[i % 256]))
                        .is_ok(),
                );
            }));
        }
        {
            let raw: Keyed<PeerId> = RateLimiter::keyed(quota(1, hour));
            let t = throttle_with("1/1h per-peer");
            for p in &peers {
                let _ = raw.check_key(p);
                let _ = t.check(Service::Store, p, None);
            }
            rows[3].raw_ns.push(time_per_call(n, |i| {
                black_box(raw.check_key(&peers[i % peers.len()]).is_err());
            }));
            rows[3].throttle_ns.push(time_per_call(n, |i| {
                black_box(
                    t.check(Service::Store, &peers[i % peers.len()], Some(ips[i % 256]))
                        .is_err(),
                );
            }));
        }
    }
    rows
}

// === part 2: flood isolation ===

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Clean,
    Attacked,
}

impl Pass {
    fn name(self) -> &'static str {
        match self {
            Pass::Clean => "clean",
            Pass::Attacked => "attacked",
        }
    }
}

#[derive(Default)]
struct FloodResult {
    honest_sent: u64,
    honest_delivered: u64,
    goodput: f64,
    p50_ms: f64,
    p99_ms: f64,
    relay_attempted: u64,
    relay_admitted: u64,
    store_attempted: u64,
    store_served: u64,
}

/// Payload: 0xB9 || seq (8 bytes) || send time in ns since `epoch` (8 bytes) || padding.
fn payload(seq: u64, epoch: Instant) -> Vec<u8> {
    let mut p = vec![0u8; PAYLOAD];
    p[0] = 0xB9;
    p[1..9].copy_from_slice(&seq.to_be_bytes());
    p[9..17].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
    p
}

async fn flood_pass(pass: Pass, seconds: u64) -> anyhow::Result<FloodResult> {
    let dir = tempfile::tempdir()?;
    let mut config = test_config(dir.path());
    config.relay.shards = vec![0];
    config.network.ws_enabled = false;
    config.throttle.relay = format!("{RELAY_QUOTA}/1s per-peer").parse()?;
    config.throttle.store = format!("{STORE_QUOTA}/1m per-peer; 300/1s global").parse()?;
    let node = Node::start(config).await?;
    let addr = roost_tests::loopback(&node.handle().info().tcp_addresses);

    let mut sink = BarePeer::start(BareOptions::default()).await?;
    sink.connect(addr.clone())
        .await
        .map_err(anyhow::Error::msg)?;
    let publisher_options = BareOptions {
        topics: vec![],
        forward_received: false,
        ..Default::default()
    };
    let mut honest = Vec::new();
    for _ in 0..HONEST {
        let p = BarePeer::start(publisher_options.clone()).await?;
        p.connect(addr.clone()).await.map_err(anyhow::Error::msg)?;
        honest.push(p);
    }
    let handle = node.handle();
    wait_until(Duration::from_secs(30), || async {
        handle
            .network_status()
            .await
            .and_then(|s| s.shards.into_iter().find(|sh| sh.pubsub_topic == TOPIC))
            .is_some_and(|sh| sh.mesh_peers >= 1)
    })
    .await
    .map_err(|_| anyhow::anyhow!("the sink did not join the node's mesh"))?;
    // Publishers learn the node's subscription from its first gossipsub exchange.
    for p in &honest {
        let probe = WakuMessage::new("/bench/1/probe/proto", vec![0u8; 8]).encode_to_vec();
        let mut tries = 0;
        while p.publish(TOPIC, probe.clone()).await.is_err() {
            tries += 1;
            anyhow::ensure!(
                tries < 3000,
                "a publisher never saw the node's subscription"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    let epoch = Instant::now();
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let delivered = Arc::new(AtomicU64::new(0));
    let spam_delivered = Arc::new(AtomicU64::new(0));
    let drain = {
        let (latencies, delivered, spam) =
            (latencies.clone(), delivered.clone(), spam_delivered.clone());
        tokio::spawn(async move {
            let mut seen = HashSet::new();
            while let Some(received) = sink.received.recv().await {
                let Ok(msg) = WakuMessage::decode(&received.data) else {
                    continue;
                };
                if msg.content_topic == "/bench/1/spam/proto" {
                    spam.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if msg.payload.len() < 17 || msg.payload[0] != 0xB9 {
                    continue;
                }
                let seq = u64::from_be_bytes(msg.payload[1..9].try_into().unwrap_or([0; 8]));
                if !seen.insert(seq) {
                    continue;
                }
                let sent_ns = u64::from_be_bytes(msg.payload[9..17].try_into().unwrap_or([0; 8]));
                let at_ns = received.at.duration_since(epoch).as_nanos() as u64;
                if let Ok(mut l) = latencies.lock() {
                    l.push(at_ns.saturating_sub(sent_ns));
                }
                delivered.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let stop = Arc::new(AtomicBool::new(false));
    let run_for = Duration::from_secs(seconds);
    // Honest publishers: HONEST_RATE messages/s each, sequence numbers interleaved.
    let mut honest_tasks = Vec::new();
    for (index, p) in honest.into_iter().enumerate() {
        honest_tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / HONEST_RATE));
            let mut seq = index as u64;
            let mut sent = 0u64;
            let started = Instant::now();
            while started.elapsed() < run_for {
                tick.tick().await;
                let m = WakuMessage::new("/bench/1/honest/proto", payload(seq, epoch));
                if p.publish(TOPIC, m.encode_to_vec()).await.is_ok() {
                    sent += 1;
                }
                seq += HONEST as u64;
            }
            (p, sent)
        }));
    }
    // Attackers: 100x the relay quota, 100x the store quota.
    let (relay_attack, store_attack) = if pass == Pass::Attacked {
        let flooder = BarePeer::start(publisher_options.clone()).await?;
        flooder
            .connect(addr.clone())
            .await
            .map_err(anyhow::Error::msg)?;
        let stop_relay = stop.clone();
        let relay = tokio::spawn(async move {
            let per_10ms = RELAY_QUOTA; // 100 × quota per second = quota per 10 ms
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut attempted = 0u64;
            while !stop_relay.load(Ordering::Relaxed) {
                tick.tick().await;
                for _ in 0..per_10ms {
                    attempted += 1;
                    let m = WakuMessage::new(
                        "/bench/1/spam/proto",
                        format!("spam {attempted}").into_bytes(),
                    );
                    let _ = flooder.publish(TOPIC, m.encode_to_vec()).await;
                }
            }
            attempted
        });
        let client = Client::start(1).await?;
        let stop_store = stop.clone();
        let store_addr = addr.clone();
        let store = tokio::spawn(async move {
            // 100 × 30/min = 50/s.
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let (mut attempted, mut served) = (0u64, 0u64);
            while !stop_store.load(Ordering::Relaxed) {
                tick.tick().await;
                attempted += 1;
                let request = StoreQueryRequest::new("hammer")
                    .content(TOPIC, ["/bench/1/honest/proto"])
                    .limit(100);
                if let Ok(r) = store::query_peer(&client, &store_addr, &request).await {
                    if r.code() == 200 {
                        served += 1;
                    }
                }
            }
            client.stop().await;
            (attempted, served)
        });
        (Some(relay), Some(store))
    } else {
        (None, None)
    };

    let mut honest_sent = 0;
    let mut publishers = Vec::new();
    for t in honest_tasks {
        let (p, sent) = t.await?;
        honest_sent += sent;
        publishers.push(p);
    }
    stop.store(true, Ordering::Relaxed);
    let relay_attempted = match relay_attack {
        Some(t) => t.await?,
        None => 0,
    };
    let (store_attempted, store_served) = match store_attack {
        Some(t) => t.await?,
        None => (0, 0),
    };
    // Let the last honest messages arrive.
    let _ = wait_until(Duration::from_secs(5), || async {
        delivered.load(Ordering::Relaxed) >= honest_sent
    })
    .await;
    drain.abort();
    let _ = drain.await;
    drop(publishers);
    let _ = node.stop().await;

    let mut lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat[i.min(lat.len() - 1)] as f64 / 1e6
    };
    let honest_delivered = delivered.load(Ordering::Relaxed);
    Ok(FloodResult {
        honest_sent,
        honest_delivered,
        goodput: honest_delivered as f64 / seconds as f64,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        relay_attempted,
        relay_admitted: spam_delivered.load(Ordering::Relaxed),
        store_attempted,
        store_served,
    })
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;

    println!(
        "B9 part 1: cost of one check, {} checks per pass, {} pass(es) per side, 1000 peers, 256 IPs",
        args.checks, args.pairs
    );
    let rows = check_costs(&args);
    println!(
        "{:<34} {:>14} {:>16} {:>8}",
        "check", "raw governor ns", "Roost throttle ns", "ratio"
    );
    for row in &rows {
        let raw = median(row.raw_ns.clone());
        let ours = median(row.throttle_ns.clone());
        println!(
            "{:<34} {:>14.1} {:>16.1} {:>7.2}x",
            row.name,
            raw,
            ours,
            ours / raw
        );
    }
    println!();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        println!(
            "B9 part 2: {HONEST} honest peers × {HONEST_RATE} msg/s for {} s through one node (relay quota {RELAY_QUOTA}/s per peer, store {STORE_QUOTA}/min per peer); attacked passes add a relay flooder at 100x and a store flooder at 100x",
            args.seconds
        );
        // Warm-up (not reported).
        flood_pass(Pass::Clean, 2).await?;
        println!(
            "{:<9} {:>7} {:>9} {:>10} {:>8} {:>8} {:>14} {:>14}",
            "pass",
            "sent",
            "delivered",
            "goodput/s",
            "p50 ms",
            "p99 ms",
            "relay spam in",
            "store served"
        );
        let mut clean: Vec<FloodResult> = Vec::new();
        let mut attacked: Vec<FloodResult> = Vec::new();
        for _ in 0..args.pairs {
            for pass in [Pass::Clean, Pass::Attacked] {
                let r = flood_pass(pass, args.seconds).await?;
                println!(
                    "{:<9} {:>7} {:>9} {:>10.1} {:>8.2} {:>8.2} {:>14} {:>14}",
                    pass.name(),
                    r.honest_sent,
                    r.honest_delivered,
                    r.goodput,
                    r.p50_ms,
                    r.p99_ms,
                    format!("{}/{}", r.relay_admitted, r.relay_attempted),
                    format!("{}/{}", r.store_served, r.store_attempted),
                );
                match pass {
                    Pass::Clean => clean.push(r),
                    Pass::Attacked => attacked.push(r),
                }
            }
        }
        fn med(v: &[FloodResult], f: impl Fn(&FloodResult) -> f64) -> f64 {
            median(v.iter().map(f).collect())
        }
        let (c_good, a_good) = (med(&clean, |r| r.goodput), med(&attacked, |r| r.goodput));
        let (c_p50, a_p50) = (med(&clean, |r| r.p50_ms), med(&attacked, |r| r.p50_ms));
        let (c_p99, a_p99) = (med(&clean, |r| r.p99_ms), med(&attacked, |r| r.p99_ms));
        let delivered_share = med(&attacked, |r| {
            r.honest_delivered as f64 / r.honest_sent.max(1) as f64
        });
        // The attacker's excess: everything beyond what its quota allows over the pass.
        let excess_rejected = med(&attacked, |r| {
            let allowed = RELAY_QUOTA * (args.seconds + 1);
            let excess = r.relay_attempted.saturating_sub(allowed).max(1);
            let excess_in = r.relay_admitted.saturating_sub(allowed);
            1.0 - excess_in as f64 / excess as f64
        });
        let store_excess_refused = med(&attacked, |r| {
            let allowed = STORE_QUOTA + args.seconds * STORE_QUOTA / 60 + 1;
            let excess = r.store_attempted.saturating_sub(allowed).max(1);
            1.0 - r.store_served.saturating_sub(allowed) as f64 / excess as f64
        });
        println!();
        println!(
            "{:<22} {:>10} {:>10} {:>8}",
            "median", "clean", "attacked", "ratio"
        );
        println!(
            "{:<22} {:>10.1} {:>10.1} {:>7.2}x",
            "goodput (msg/s)",
            c_good,
            a_good,
            a_good / c_good
        );
        println!(
            "{:<22} {:>10.2} {:>10.2} {:>7.2}x",
            "p50 latency (ms)",
            c_p50,
            a_p50,
            a_p50 / c_p50
        );
        println!(
            "{:<22} {:>10.2} {:>10.2} {:>7.2}x",
            "p99 latency (ms)",
            c_p99,
            a_p99,
            a_p99 / c_p99
        );
        println!(
            "honest delivered under attack: {:.2}%; relay flood excess dropped: {:.2}%; store flood excess refused: {:.2}%",
            delivered_share * 100.0,
            excess_rejected * 100.0,
            store_excess_refused * 100.0
        );
        anyhow::Ok(())
    })
}
