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
//! 3. **Profiles against the shipped defaults** (`throttle::Config::default()`, no IP exempt):
//!    the honest client profiles of the README (200 pushes at once, 2 pushes/s, a 50-page
//!    history sync, 100 filter topics re-subscribed, a 50-push fan-out, 20 clients behind one
//!    IP) with their requests, refusals and p99, and the attacker profiles (one peer at 100x
//!    the light push, store and filter quotas, many identities from one IP, a reconnect storm)
//!    with what they sent, what got in, what the quota allows and whether they were banned.
//!    Long profiles run at the real rate for `--seconds` and are replayed in full (10 minutes,
//!    an hour) through governor's GCRA with a fake clock on the same rules; re-subscribing
//!    "every minute" runs its minutes back to back live, which only leaves less refill.
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

use governor::{
    clock::{DefaultClock, FakeRelativeClock},
    state::keyed::DashMapStateStore,
    Quota, RateLimiter,
};
use libp2p::PeerId;
use prometheus_client::registry::Registry;
use roost_node::{
    client::Client,
    filter::RequestType,
    lightpush::Version,
    message::WakuMessage,
    store::rpc::StoreQueryRequest,
    throttle::{self, quota::QuotaSpec, Service, Throttle},
    Node,
};
use roost_tests::{
    bare::{BareOptions, BarePeer},
    bench, http_get, metric_sum, profiles, test_config, wait_until, TestNode,
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
                if let Ok(r) = client.store_query(&store_addr, &request).await {
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

// === part 3: honest and attacker profiles against the shipped defaults ===

/// The shipped defaults with nothing spared: the harness's loopback exemption is cleared, so
/// every client of the bench counts against one IP like clients behind a NAT.
fn shipped(c: &mut roost_node::Config) {
    c.throttle = throttle::Config::default();
}

/// A node on the shipped defaults and a relay peer connected to it, on another address than
/// the attacker's (127.0.0.2), so light pushes have somewhere to go.
async fn shipped_node_with_relay_peer() -> (TestNode, TestNode) {
    let node = TestNode::start_with(shipped).await;
    let relay_peer = TestNode::start_with(|c| {
        shipped(c);
        c.network.listen_ip = [127, 0, 0, 2].into();
    })
    .await;
    node.connect(&relay_peer).await;
    (node, relay_peer)
}

/// Requests of `spec` at `offsets` from the start, replayed through governor's GCRA with a
/// fake clock, one bucket per rule (one peer, one IP, the node): how many would be refused.
/// This is the node's own arithmetic (the same `Rule::governor_quota`) without waiting for
/// the real minutes.
fn simulate_refused(spec: &QuotaSpec, offsets: impl IntoIterator<Item = Duration>) -> u64 {
    let clock = FakeRelativeClock::default();
    let limiters: Vec<_> = spec
        .rules
        .iter()
        .map(|r| RateLimiter::direct_with_clock(r.governor_quota(), clock.clone()))
        .collect();
    let (mut refused, mut now) = (0, Duration::ZERO);
    for at in offsets {
        clock.advance(at.saturating_sub(now));
        now = now.max(at);
        if !limiters.iter().all(|l| l.check().is_ok()) {
            refused += 1;
        }
    }
    refused
}

struct HonestRow {
    name: String,
    run: profiles::ProfileRun,
    note: String,
}

/// How the honest profiles run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HonestPass {
    /// The shipped defaults, nothing exempt: the refusals that count.
    Shipped,
    /// The reference for `Attacked`: 127.0.0.1 exempt from per-IP rules and IP bans, because
    /// the attackers can only dial from the honest clients' address here; on separate hosts
    /// the per-IP rules would keep them apart too.
    Reference,
    /// As `Reference`, with a light push and a store flooder at 100x their per-peer rates.
    Attacked,
}

/// The honest profiles against one node, one client each (20 for the NAT row).
async fn honest_profiles(seconds: u64, pass: HonestPass) -> anyhow::Result<Vec<HonestRow>> {
    const PAGES: usize = 50;
    let defaults = throttle::Config::default();
    let push_topic = "/b9-honest/1/group/proto";
    let history_topic = "/b9-honest/1/history/proto";
    let push_shard = roost_node::Config::default()
        .relay
        .autoshard(push_topic)?
        .to_string();
    let history_shard = roost_node::Config::default()
        .relay
        .autoshard(history_topic)?
        .to_string();
    let a = TestNode::start_with(|c| {
        shipped(c);
        if pass != HonestPass::Shipped {
            c.throttle.exempt_ips = vec![[127, 0, 0, 1].into()];
        }
    })
    .await;
    // The relay peer is on another address, as it would be in a fleet.
    let b = TestNode::start_with(|c| {
        shipped(c);
        c.network.listen_ip = [127, 0, 0, 2].into();
    })
    .await;
    a.connect(&b).await;
    a.wait_for_mesh(&push_shard, 1).await;
    let store = a
        .handle
        .store()
        .ok_or_else(|| anyhow::anyhow!("no store"))?;
    let base = roost_node::message::now_nanos() - 60_000_000_000;
    for i in 0..(PAGES as i64 * 20) {
        let mut m = WakuMessage::new(history_topic, format!("history {i}").into_bytes());
        m.timestamp = Some(base + i * 1_000_000);
        store.insert(&history_shard, m).await?;
    }
    let addr = a.tcp_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    if pass == HonestPass::Attacked {
        for kind in [Flood::LightPush, Flood::Store] {
            let client = Arc::new(Client::start(1).await?);
            let (_, rate) = allowance(kind.quota(&defaults), throttle::quota::Scope::PerPeer, 0.0);
            attackers.push(tokio::spawn(flood_lanes(
                client,
                addr.clone(),
                kind,
                rate,
                stop.clone(),
            )));
        }
    }
    let shards = profiles::topics_by_shard("b9-honest", 100);
    let mut rows = Vec::new();
    let fresh = || Client::start(1);

    let c = fresh().await?;
    let run = profiles::light_pushes(&c, &addr, push_topic, 200, Duration::ZERO).await;
    rows.push(HonestRow {
        name: "200 pushes after a reconnect".into(),
        run,
        note: "as fast as the client goes".into(),
    });
    c.stop().await;

    let c = fresh().await?;
    let run = profiles::light_pushes(
        &c,
        &addr,
        push_topic,
        2 * seconds as usize,
        Duration::from_millis(500),
    )
    .await;
    let ten_minutes = (0..1200u64).map(|i| Duration::from_millis(500 * i));
    let sim = simulate_refused(&defaults.lightpush, ten_minutes);
    rows.push(HonestRow {
        name: "2 pushes/s".into(),
        run,
        note: format!("live {seconds} s; 10 min through the GCRA: {sim} of 1200 refused"),
    });
    c.stop().await;

    let c = fresh().await?;
    let run = profiles::store_pages(&c, &addr, &history_shard, history_topic, PAGES, 20).await;
    rows.push(HonestRow {
        name: "history sync, 50 pages".into(),
        run,
        note: "back to back, 20 a page".into(),
    });
    c.stop().await;

    for (one_call_per_topic, name) in [
        (false, "filter 100 topics, re-subscribed"),
        (true, "filter 100 topics, a call each"),
    ] {
        let c = fresh().await?;
        let run = profiles::filter_resubscribes(
            &c,
            &addr,
            &shards,
            one_call_per_topic,
            2,
            Duration::ZERO,
        )
        .await;
        // An hour of it at the real pace: the subscribe calls, then each minute one
        // unsubscribe, subscribe and ping per shard.
        let first = if one_call_per_topic {
            100
        } else {
            shards.len()
        };
        let hour = (0..first).map(|_| Duration::ZERO).chain(
            (1..=60u64)
                .flat_map(|m| std::iter::repeat_n(Duration::from_secs(60 * m), 3 * shards.len())),
        );
        let sim = simulate_refused(&defaults.filter, hour);
        rows.push(HonestRow {
            name: name.into(),
            run,
            note: format!("2 minutes back to back; 1 h through the GCRA: {sim} refused"),
        });
        c.stop().await;
    }

    let c = fresh().await?;
    let run = profiles::light_pushes(&c, &addr, push_topic, 50, Duration::from_millis(40)).await;
    rows.push(HonestRow {
        name: "fan-out, 50 pushes in 2 s".into(),
        run,
        note: String::new(),
    });
    c.stop().await;

    let mut nat = Vec::new();
    for _ in 0..20 {
        nat.push(fresh().await?);
    }
    let per_client = nat.iter().map(|c| {
        let (addr, shards, history_shard) = (&addr, &shards, &history_shard);
        async move {
            let mut run =
                profiles::light_pushes(c, addr, push_topic, 50, Duration::from_millis(40)).await;
            run.merge(
                profiles::store_pages(c, addr, history_shard, history_topic, PAGES, 20).await,
            );
            run.merge(
                profiles::filter_resubscribes(c, addr, shards, false, 1, Duration::ZERO).await,
            );
            run
        }
    });
    let mut run = profiles::ProfileRun::default();
    for r in futures::future::join_all(per_client).await {
        run.merge(r);
    }
    rows.push(HonestRow {
        name: "20 clients behind one IP".into(),
        run,
        note: "fan-out + history sync + filter each, at once".into(),
    });
    for c in nat {
        c.stop().await;
    }
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.await?;
    }
    let relay_throttled = metric_sum(&b.metrics().await, "roost_throttle_throttled_total", &[]);
    if let Some(last) = rows.last_mut() {
        last.note.push_str(&format!(
            "; relay peer throttled {relay_throttled} of their messages"
        ));
    }
    a.stop().await;
    b.stop().await;
    Ok(rows)
}

struct AttackRow {
    name: &'static str,
    sent: u64,
    admitted: u64,
    /// What the quota allows over the run (burst plus refill): the rest is excess.
    allowed: u64,
    banned: bool,
}

/// The per-peer (or per-IP) rule of `spec`: its burst and its refill over `seconds`.
fn allowance(spec: &QuotaSpec, scope: throttle::quota::Scope, seconds: f64) -> (u64, f64) {
    match spec.rule(scope) {
        Some(r) => {
            let rate = r.volume.get() as f64 / r.period.as_secs_f64();
            (r.volume.get() as u64 + (rate * seconds).ceil() as u64, rate)
        }
        None => (u64::MAX, f64::INFINITY),
    }
}

async fn banned(node: &TestNode, target: &str) -> bool {
    let (_, body) = http_get(&format!("{}/admin/v1/bans", node.http_url())).await;
    serde_json::from_str::<Vec<serde_json::Value>>(&body)
        .unwrap_or_default()
        .iter()
        .any(|b| b["target"] == target)
}

#[derive(Clone, Copy)]
enum Flood {
    LightPush,
    Store,
    Filter,
}

impl Flood {
    fn quota(self, defaults: &throttle::Config) -> &QuotaSpec {
        match self {
            Flood::LightPush => &defaults.lightpush,
            Flood::Store => &defaults.store,
            Flood::Filter => &defaults.filter,
        }
    }
}

/// One peer sending `kind` requests at 100x its per-peer rate until `stop`, from a few
/// concurrent loops (each request waits for its answer). Returns (sent, admitted).
async fn flood_lanes(
    client: Arc<Client>,
    addr: libp2p::Multiaddr,
    kind: Flood,
    rate: f64,
    stop: Arc<AtomicBool>,
) -> (u64, u64) {
    const LANES: u64 = 8;
    let interval = Duration::from_secs_f64(LANES as f64 / (100.0 * rate));
    let lanes = (0..LANES).map(|lane| {
        let (client, addr, stop) = (client.clone(), addr.clone(), stop.clone());
        async move {
            let mut tick = tokio::time::interval(interval);
            let (mut sent, mut admitted) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                sent += 1;
                let ok = match kind {
                    Flood::LightPush => {
                        let m =
                            WakuMessage::new("/b9-flood/1/spam/proto", format!("{lane}-{sent}"));
                        matches!(client.light_push(&addr, Version::V3, None, &m).await, Ok(r) if r.is_success())
                    }
                    Flood::Store => {
                        let q = StoreQueryRequest::new("flood")
                            .content(TOPIC, ["/b9-flood/1/spam/proto"])
                            .limit(20);
                        matches!(client.store_query(&addr, &q).await, Ok(r) if r.code() == 200)
                    }
                    // A ping without a subscription is answered 404: served all the same.
                    Flood::Filter => matches!(
                        client.filter(&addr, RequestType::Ping, None, &[]).await,
                        Ok(r) if r.status.0 == 404 || r.status.0 == 200
                    ),
                };
                admitted += u64::from(ok);
            }
            (sent, admitted)
        }
    });
    let (mut sent, mut admitted) = (0, 0);
    for (s, a) in futures::future::join_all(lanes).await {
        sent += s;
        admitted += a;
    }
    (sent, admitted)
}

/// One peer sending `kind` requests at 100x its per-peer rate for `seconds`.
async fn request_flood(kind: Flood, seconds: u64) -> anyhow::Result<AttackRow> {
    let defaults = throttle::Config::default();
    let name = match kind {
        Flood::LightPush => "light push at 100x, one peer",
        Flood::Store => "store at 100x, one peer",
        Flood::Filter => "filter at 100x, one peer",
    };
    let (allowed, rate) = allowance(
        kind.quota(&defaults),
        throttle::quota::Scope::PerPeer,
        seconds as f64,
    );
    let (node, relay_peer) = shipped_node_with_relay_peer().await;
    let client = Arc::new(Client::start(1).await?);
    let attacker = client.handle().peer_id().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let flood = tokio::spawn(flood_lanes(
        client.clone(),
        node.tcp_addr(),
        kind,
        rate,
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let (sent, admitted) = flood.await?;
    let banned = banned(&node, &attacker).await;
    if let Ok(client) = Arc::try_unwrap(client) {
        client.stop().await;
    }
    node.stop().await;
    relay_peer.stop().await;
    Ok(AttackRow {
        name,
        sent,
        admitted,
        allowed,
        banned,
    })
}

/// Twice `max_connections_per_ip` identities from one IP, each light pushing as fast as it
/// goes: the per-IP rules and the connection cap bound them together.
async fn identities_flood(seconds: u64) -> anyhow::Result<AttackRow> {
    let defaults = throttle::Config::default();
    let identities = 2 * defaults.max_connections_per_ip as usize;
    let (allowed, _) = allowance(
        &defaults.lightpush,
        throttle::quota::Scope::PerIp,
        seconds as f64,
    );
    let (node, relay_peer) = shipped_node_with_relay_peer().await;
    let addr = node.tcp_addr();
    let mut clients = Vec::new();
    for _ in 0..identities {
        clients.push(Client::start(1).await?);
    }
    let started = Instant::now();
    let floods = clients.iter().enumerate().map(|(i, c)| {
        let addr = addr.clone();
        async move {
            let (mut sent, mut admitted) = (0u64, 0u64);
            // As fast as each identity goes, for the whole run: refused connections (the
            // cap, the rate, then the IP ban) are tried again, as flooders do.
            while started.elapsed() < Duration::from_secs(seconds) {
                sent += 1;
                let m = WakuMessage::new("/b9-flood/1/sybil/proto", format!("{i}-{sent}"));
                match c.light_push(&addr, Version::V3, None, &m).await {
                    Ok(r) if r.is_success() => admitted += 1,
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
            (sent, admitted)
        }
    });
    let (mut sent, mut admitted) = (0, 0);
    for (s, a) in futures::future::join_all(floods).await {
        sent += s;
        admitted += a;
    }
    let ip_banned = banned(&node, "127.0.0.1").await;
    for c in clients {
        c.stop().await;
    }
    node.stop().await;
    relay_peer.stop().await;
    Ok(AttackRow {
        name: "many identities, one IP",
        sent,
        admitted,
        allowed,
        banned: ip_banned,
    })
}

/// New TCP connections from one IP at 100x the per-IP connection rate (closed right away, as
/// a reconnect storm does); admitted = those the node did not refuse before the handshake.
async fn reconnect_storm(seconds: u64) -> anyhow::Result<AttackRow> {
    let defaults = throttle::Config::default();
    let (allowed, rate) = allowance(
        &defaults.connections,
        throttle::quota::Scope::PerIp,
        seconds as f64,
    );
    let node = TestNode::start_with(shipped).await;
    let target = node
        .handle
        .info()
        .tcp_addresses
        .iter()
        .find_map(|a| {
            let mut ip = None;
            let mut port = None;
            for p in a.iter() {
                match p {
                    libp2p::multiaddr::Protocol::Ip4(v) => ip = Some(v),
                    libp2p::multiaddr::Protocol::Tcp(v) => port = Some(v),
                    _ => {}
                }
            }
            Some(std::net::SocketAddr::from((ip?, port?)))
        })
        .ok_or_else(|| anyhow::anyhow!("no TCP address"))?;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / (100.0 * rate)));
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        sent += 1;
        if let Ok(s) = tokio::net::TcpStream::connect(target).await {
            drop(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = node.metrics().await;
    let refused = metric_sum(&m, "roost_throttle_connections_refused_total", &[]) as u64;
    let ip_banned = banned(&node, "127.0.0.1").await;
    node.stop().await;
    Ok(AttackRow {
        name: "reconnect storm at 100x",
        sent,
        admitted: sent.saturating_sub(refused),
        allowed,
        banned: ip_banned,
    })
}

/// The profiles table: `honest` with the shipped defaults; `reference` and `attacked` the
/// same profiles with loopback exempt, without and with attackers, one set of rows per pair
/// (passes alternate, so load on the machine falls on both sides alike).
fn print_profiles(
    honest: &[HonestRow],
    reference: &[Vec<HonestRow>],
    attacked: &[Vec<HonestRow>],
    attacks: &[AttackRow],
) {
    let d = throttle::Config::default();
    println!(
        "shipped defaults: lightpush \"{}\", store \"{}\", filter \"{}\", relay \"{}\", connections \"{}\", max_connections_per_ip {}, ban_threshold {}",
        d.lightpush, d.store, d.filter, d.relay, d.connections, d.max_connections_per_ip, d.ban_threshold
    );
    println!(
        "{:<34} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7} {:>13}  notes",
        "honest profile",
        "requests",
        "refused",
        "p99 ms",
        "ref p99",
        "att. p99",
        "ratio",
        "pairs min-max"
    );
    for (i, r) in honest.iter().enumerate() {
        let refs: Vec<&HonestRow> = reference.iter().filter_map(|rows| rows.get(i)).collect();
        let atts: Vec<&HonestRow> = attacked.iter().filter_map(|rows| rows.get(i)).collect();
        let p99s = |rows: &[&HonestRow]| -> Vec<f64> {
            rows.iter().map(|r| r.run.quantile_ms(0.99)).collect()
        };
        let (p99_ref, p99_att) = (median(p99s(&refs)), median(p99s(&atts)));
        let pair_ratios: Vec<f64> = p99s(&atts)
            .iter()
            .zip(p99s(&refs))
            .map(|(a, r)| a / r)
            .collect();
        let (lo, hi) = pair_ratios
            .iter()
            .fold((f64::INFINITY, 0f64), |(lo, hi), x| {
                (lo.min(*x), hi.max(*x))
            });
        let runs: Vec<&profiles::ProfileRun> = std::iter::once(&r.run)
            .chain(refs.iter().map(|r| &r.run))
            .chain(atts.iter().map(|r| &r.run))
            .collect();
        let failed: u64 = runs.iter().map(|r| r.failed).sum();
        println!(
            "{:<34} {:>8} {:>8} {:>8.1} {:>8.1} {:>9.1} {:>6.2}x {:>5.2}-{:<6.2}  {}{}",
            r.name,
            runs.iter().map(|r| r.requests).sum::<u64>(),
            runs.iter().map(|r| r.refused).sum::<u64>(),
            r.run.quantile_ms(0.99),
            p99_ref,
            p99_att,
            p99_att / p99_ref,
            lo,
            hi,
            r.note,
            if failed > 0 {
                let first = runs.iter().flat_map(|r| &r.problems).next();
                format!(
                    "; {failed} failed otherwise, first: {}",
                    first.map_or("", |p| p)
                )
            } else {
                String::new()
            }
        );
    }
    println!();
    println!(
        "{:<34} {:>8} {:>9} {:>9} {:>16} {:>7}",
        "attacker profile", "sent", "admitted", "allowed", "excess refused", "banned"
    );
    for r in attacks {
        let excess = r.sent.saturating_sub(r.allowed);
        let excess_in = r.admitted.saturating_sub(r.allowed);
        let refused = if excess == 0 {
            "no excess".to_string()
        } else {
            format!("{:.2}%", 100.0 * (1.0 - excess_in as f64 / excess as f64))
        };
        println!(
            "{:<34} {:>8} {:>9} {:>9} {:>16} {:>7}",
            r.name,
            r.sent,
            r.admitted,
            if r.allowed == u64::MAX {
                "-".to_string()
            } else {
                r.allowed.to_string()
            },
            refused,
            if r.banned { "yes" } else { "no" }
        );
    }
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
        println!();

        println!(
            "B9 part 3: honest and attacker profiles against throttle::Config::default(), {} s per live profile. Honest profiles run once with the shipped defaults, nothing exempt (\"p99 ms\"); then {} alternating pairs with loopback exempt, since the attackers here share the clients' address, without (\"ref p99\") and with (\"att. p99\") a light push and a store flooder at 100x (medians, and the ratio's range over pairs); requests and refusals count every run",
            args.seconds, args.pairs.max(1)
        );
        let honest = honest_profiles(args.seconds, HonestPass::Shipped).await?;
        let (mut reference, mut attacked) = (Vec::new(), Vec::new());
        for _ in 0..args.pairs.max(1) {
            reference.push(honest_profiles(args.seconds, HonestPass::Reference).await?);
            attacked.push(honest_profiles(args.seconds, HonestPass::Attacked).await?);
        }
        let mut attacks = Vec::new();
        for kind in [Flood::LightPush, Flood::Store, Flood::Filter] {
            attacks.push(request_flood(kind, args.seconds).await?);
        }
        attacks.push(identities_flood(args.seconds).await?);
        attacks.push(reconnect_storm(args.seconds).await?);
        print_profiles(&honest, &reference, &attacked, &attacks);
        anyhow::Ok(())
    })
}
