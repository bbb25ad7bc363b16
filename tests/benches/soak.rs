//! Soak: a local fleet of three `roost` processes (release build) under mixed load for a while,
//! printing throughput and p99 per kind of traffic, RSS and allocator figures of every node over
//! time with a verdict on whether RSS has levelled, the largest structures' sizes, and every
//! message lost. Not a test: it prints figures.
//!
//! Fleet: `hub` (relay, store, light push, filter, rendezvous point), `store` (relay, store) and
//! `edge` (relay), all connected to each other. Load, all at once:
//! - relay: a bare gossipsub peer publishes into `edge` at `ROOST_SOAK_RELAY_RATE` msgs/s;
//! - light push into `hub` (answered once stored) at `ROOST_SOAK_PUSH_RATE` /s;
//! - store queries (first page of a content query) to `store` at `ROOST_SOAK_QUERY_RATE` /s (20);
//! - a filter subscriber on `hub` for the light-pushed content topic;
//! - rendezvous REGISTER + DISCOVER at `hub` by 50 peers, 20 requests/s in all.
//!
//! Lost: every message published (relay) or acknowledged (light push 200) that `store` does not
//! have at the end, and every light-pushed message the filter subscriber did not get.
//!
//! Memory: every node's RSS and `/metrics` (allocator, RocksDB, throttle, rendezvous, filter) are
//! sampled every `ROOST_SOAK_SAMPLE_SECONDS` (default: a 30th of the run, at least 5 s). The
//! verdict is the least-squares slope of RSS over the last third of the run, in MiB per 10
//! minutes: "levelled" under 1 MiB/10 min. With `ROOST_SOAK_HEAP_DIR=<dir>` the nodes sample
//! their heap (`--http-heap-profile true`) and the hub's and the store node's jemalloc heap
//! dumps are saved there at a third of the run and at the end (`jeprof --base=<first> roost
//! <last>` names what grew).
//!
//! Warm-up: a node that has run for days has a full archive and warm RocksDB caches, which the
//! shipped rates take hours to reach. `ROOST_SOAK_WARMUP_SECONDS` (default 0) runs light push
//! and store queries at `ROOST_SOAK_WARMUP_FACTOR` (10) times their rates first; the run proper
//! (`ROOST_SOAK_SECONDS`) follows, and the RSS table's "third" row, the heap dump at a third and
//! the slope verdict are taken over the run proper only. The throughput table covers both.
//!
//! `ROOST_SOAK_SECONDS=600 cargo bench -p roost-tests --bench soak` (default 60 s);
//! `ROOST_SOAK_NODE_ARGS="--store-memory-budget 32MiB"` adds flags to every node.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use libp2p::Multiaddr;
use roost_node::{
    client::Client,
    filter::RequestType,
    lightpush::{Status, Version},
    message::{now_nanos, MessageHash, WakuMessage},
    rendezvous::{client::read_discover_response, client::read_register_response, proto, record},
    store::rpc::StoreQueryRequest,
};
use roost_tests::{
    bare::{BareOptions, BarePeer},
    bench::{self, missing_hashes},
    process::NodeProcess,
    rdv::{Flavour, RdvPeer},
    wait_until,
};

const TOPIC: &str = "/waku/2/rs/1/0";
const RELAYED: &str = "/soak/1/relay/proto";
const PUSHED: &str = "/soak/1/push/proto";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Latencies of one kind of traffic, and its failures.
#[derive(Default)]
struct Series {
    latencies: Vec<Duration>,
    errors: u64,
}

impl Series {
    fn ok(&mut self, took: Duration) {
        self.latencies.push(took);
    }

    fn row(&mut self, name: &str, seconds: f64) -> String {
        self.latencies.sort();
        let pick = |q: f64| {
            self.latencies
                .get(((self.latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .map(|d| format!("{:.1}", d.as_secs_f64() * 1000.0))
                .unwrap_or_else(|| "-".into())
        };
        format!(
            "{name:<22} {:>8} {:>9.1} {:>9} {:>9} {:>7}",
            self.latencies.len(),
            self.latencies.len() as f64 / seconds,
            pick(0.5),
            pick(0.99),
            self.errors
        )
    }
}

type Shared = Arc<Mutex<Series>>;

fn shared() -> Shared {
    Arc::new(Mutex::new(Series::default()))
}

/// Most requests of one kind in flight at once.
const MAX_IN_FLIGHT: usize = 64;

/// The offered rate over time: `factor` times the rate until `warm_until`, then the rate.
#[derive(Clone, Copy)]
struct Schedule {
    warm_until: Instant,
    factor: u64,
}

fn interval_for(rate: u64) -> tokio::time::Interval {
    let mut interval = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// Starts `tick` every `1/rate` seconds until `until` (`schedule.factor` times as often during
/// the warm-up), without waiting for the earlier ones to finish (a rate above 1/latency needs
/// several in flight), at most [`MAX_IN_FLIGHT`] at once: beyond that ticks are skipped, which
/// shows as a lower rate in the table.
async fn paced<F, Fut>(rate: u64, schedule: Option<Schedule>, until: Instant, mut tick: F)
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures::stream::{FuturesUnordered, StreamExt};
    let mut warm_until = schedule
        .filter(|s| s.factor > 1 && Instant::now() < s.warm_until)
        .map(|s| s.warm_until);
    let factor = schedule.map_or(1, |s| s.factor);
    let mut interval = interval_for(if warm_until.is_some() {
        rate * factor
    } else {
        rate
    });
    let mut in_flight = FuturesUnordered::new();
    let mut n = 0;
    while Instant::now() < until {
        if warm_until.is_some_and(|w| Instant::now() >= w) {
            warm_until = None;
            interval = interval_for(rate);
        }
        tokio::select! {
            _ = interval.tick() => {
                if in_flight.len() < MAX_IN_FLIGHT {
                    in_flight.push(tick(n));
                    n += 1;
                }
            }
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
        }
    }
    while in_flight.next().await.is_some() {}
}

fn rss_mib(node: &NodeProcess) -> f64 {
    node.rss_bytes().unwrap_or(0) as f64 / f64::from(1 << 20)
}

const MIB: f64 = 1024.0 * 1024.0;

/// The gauges the memory table shows, summed over their label sets (the shared block cache:
/// the largest): (column, metric name).
const GAUGES: [(&str, &str); 8] = [
    ("alloc", "roost_allocator_allocated_bytes"),
    ("resident", "roost_allocator_resident_bytes"),
    ("retained", "roost_allocator_retained_bytes"),
    ("memtables", "roost_store_rocksdb_memtable_bytes"),
    ("blk cache", "roost_store_rocksdb_block_cache_bytes"),
    ("tbl readers", "roost_store_rocksdb_table_readers_bytes"),
    ("lim keys", "roost_throttle_limiter_keys"),
    ("rdv regs", "roost_rendezvous_table_size"),
];

/// The [`GAUGES`] of a node, read from its `/metrics` (NaN where missing).
async fn scrape(http: &str) -> [f64; GAUGES.len()] {
    let mut out = [f64::NAN; GAUGES.len()];
    let Ok(response) = reqwest::get(format!("{http}/metrics")).await else {
        return out;
    };
    let Ok(text) = response.text().await else {
        return out;
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = match line.split_once(' ') {
            Some((series, value)) => (series.split('{').next().unwrap_or(series), value),
            None => continue,
        };
        let Some(i) = GAUGES.iter().position(|(_, n)| *n == name) else {
            continue;
        };
        if let Ok(v) = value.trim().parse::<f64>() {
            // One block cache serves every column family: each reports all of it.
            out[i] = match (out[i].is_nan(), name.contains("block_cache")) {
                (true, _) => v,
                (false, true) => out[i].max(v),
                (false, false) => out[i] + v,
            };
        }
    }
    out
}

/// Least-squares slope of `(seconds, MiB)` points, in MiB per 10 minutes.
fn slope_per_10min(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_v = points.iter().map(|p| p.1).sum::<f64>() / n;
    let cov: f64 = points.iter().map(|p| (p.0 - mean_t) * (p.1 - mean_v)).sum();
    let var: f64 = points.iter().map(|p| (p.0 - mean_t).powi(2)).sum();
    if var == 0.0 {
        return f64::NAN;
    }
    cov / var * 600.0
}

/// One memory sample of the fleet: RSS (MiB) and [`GAUGES`] per node.
struct Sample {
    at: Duration,
    rss: [f64; 3],
    gauges: [[f64; GAUGES.len()]; 3],
}

/// Saves a node's jemalloc heap dump (for `jeprof`) as `<dir>/<node>-<label>.heap`.
async fn save_heap(http: &str, dir: &std::path::Path, node: &str, label: &str) {
    bench::save_heap_dump(http, &dir.join(format!("{node}-{label}.heap"))).await;
}

async fn missing_from(reader: &Client, addr: &Multiaddr, wanted: &[MessageHash]) -> usize {
    missing_hashes(reader, addr, wanted).await.len()
}

/// RSS per node over time (about 12 rows of the samples), the allocator and structure gauges
/// per node at a third of the run proper and at the end, and the slope verdicts over the last
/// third of the run proper (which starts after `warmup` seconds).
fn print_memory(rows: &[Sample], warmup: u64, seconds: u64) {
    let names = ["hub", "store", "edge"];
    println!(
        "{:>8} {:>10} {:>10} {:>10}",
        "t (s)", "hub MiB", "store MiB", "edge MiB"
    );
    let every = rows.len().div_ceil(12).max(1);
    for (i, row) in rows.iter().enumerate() {
        if i % every == 0 || i + 1 == rows.len() {
            println!(
                "{:>8.0} {:>10.1} {:>10.1} {:>10.1}",
                row.at.as_secs_f64(),
                row.rss[0],
                row.rss[1],
                row.rss[2]
            );
        }
    }
    let third = rows
        .iter()
        .position(|r| r.at.as_secs() >= warmup + seconds / 3)
        .unwrap_or(0);
    println!();
    print!("{:<14}", "node @ t (s)");
    for (column, _) in GAUGES {
        print!(" {column:>11}");
    }
    println!();
    for (node, name) in names.iter().enumerate() {
        for row in [&rows[third], &rows[rows.len() - 1]] {
            print!("{:<14}", format!("{name} @ {:.0}", row.at.as_secs_f64()));
            for (i, (_, metric)) in GAUGES.iter().enumerate() {
                let v = row.gauges[node][i];
                if v.is_nan() {
                    print!(" {:>11}", "-");
                } else if metric.ends_with("_bytes") {
                    print!(" {:>11}", format!("{:.1} MiB", v / MIB));
                } else {
                    print!(" {v:>11.0}");
                }
            }
            println!();
        }
    }
    println!();
    let start = warmup as f64 + seconds as f64 * 2.0 / 3.0;
    for (node, name) in names.iter().enumerate() {
        let tail = |f: &dyn Fn(&Sample) -> f64| -> Vec<(f64, f64)> {
            rows.iter()
                .filter(|r| r.at.as_secs_f64() >= start)
                .map(|r| (r.at.as_secs_f64(), f(r)))
                .filter(|p| !p.1.is_nan())
                .collect()
        };
        let rss = slope_per_10min(&tail(&|r| r.rss[node]));
        let alloc = slope_per_10min(&tail(&|r| r.gauges[node][0] / MIB));
        // The heap outside RocksDB's memtables and block cache, which fill up to
        // `store.memory_budget` as the archive grows (a node without a store has neither).
        let outside = slope_per_10min(&tail(&|r| {
            let cache = |i: usize| {
                let v = r.gauges[node][i];
                if v.is_nan() {
                    0.0
                } else {
                    v
                }
            };
            (r.gauges[node][0] - cache(3) - cache(4)) / MIB
        }));
        let verdict = if rss.is_nan() {
            "too few samples"
        } else if rss < 1.0 {
            "levelled"
        } else if outside < 1.0 {
            "growing only in RocksDB's caches, bounded by store.memory_budget"
        } else {
            "STILL GROWING"
        };
        println!(
            "{name:<6} RSS slope over the last third: {rss:+.2} MiB/10 min (allocated {alloc:+.2}, \
             outside RocksDB's caches {outside:+.2}): {verdict}"
        );
    }
    println!();
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let seconds = env_u64("ROOST_SOAK_SECONDS", 60);
    let relay_rate = env_u64("ROOST_SOAK_RELAY_RATE", 200);
    let push_rate = env_u64("ROOST_SOAK_PUSH_RATE", 50);
    let query_rate = env_u64("ROOST_SOAK_QUERY_RATE", 20);
    let warmup = env_u64("ROOST_SOAK_WARMUP_SECONDS", 0);
    let warmup_factor = env_u64("ROOST_SOAK_WARMUP_FACTOR", 10).max(1);
    let sample_every =
        Duration::from_secs(env_u64("ROOST_SOAK_SAMPLE_SECONDS", (seconds / 30).max(5)));
    let heap_dir = std::env::var_os("ROOST_SOAK_HEAP_DIR").map(std::path::PathBuf::from);
    if let Some(dir) = &heap_dir {
        std::fs::create_dir_all(dir)?;
    }
    let mut unthrottled = vec![
        "--throttle-relay",
        "unlimited",
        "--throttle-relay-bytes",
        "unlimited",
        "--throttle-store",
        "unlimited",
        "--throttle-lightpush",
        "unlimited",
        "--throttle-filter",
        "unlimited",
        "--throttle-rendezvous-register",
        "unlimited",
        "--throttle-rendezvous-discover",
        "unlimited",
        "--throttle-exempt-ips",
        "127.0.0.1",
        "--store-sync",
        "true",
    ];
    if heap_dir.is_some() {
        unthrottled.extend(["--http-heap-profile", "true"]);
    }
    // Extra flags for every node, e.g. `--store-memory-budget 32MiB`.
    let extra = std::env::var("ROOST_SOAK_NODE_ARGS").unwrap_or_default();
    unthrottled.extend(extra.split_whitespace());
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let hub = NodeProcess::start(dirs[0].path(), &unthrottled).await;
    let mut args: Vec<String> = unthrottled.iter().map(|s| s.to_string()).collect();
    args.extend(["--network-peers".into(), hub.tcp_addr().to_string()]);
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let store_node = NodeProcess::start(dirs[1].path(), &args_ref).await;
    let mut edge_args = args.clone();
    edge_args.extend([
        "--network-peers".into(),
        store_node.tcp_addr().to_string(),
        "--store-enabled".into(),
        "false".into(),
    ]);
    let edge_ref: Vec<&str> = edge_args.iter().map(String::as_str).collect();
    let edge = NodeProcess::start(dirs[2].path(), &edge_ref).await;
    let nodes = [("hub", &hub), ("store", &store_node), ("edge", &edge)];
    let mesh = |node: &NodeProcess| {
        let http = node.http.clone();
        async move {
            let Ok(r) = reqwest::get(format!("{http}/health")).await else {
                return 0;
            };
            r.json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|h| h["components"]["relay"]["detail"]["mesh_peers"].as_u64())
                .unwrap_or(0)
        }
    };
    wait_until(Duration::from_secs(60), || async {
        mesh(&hub).await >= 2 && mesh(&store_node).await >= 2 && mesh(&edge).await >= 2
    })
    .await
    .map_err(|_| anyhow::anyhow!("the fleet's mesh did not form"))?;

    let publisher = BarePeer::start(BareOptions {
        forward_received: false,
        ..BareOptions::default()
    })
    .await?;
    publisher
        .connect(edge.tcp_addr())
        .await
        .map_err(|e| anyhow::anyhow!("connect to edge: {e}"))?;
    wait_until(Duration::from_secs(30), || async {
        publisher.mesh_peers(TOPIC).await >= 1
    })
    .await
    .map_err(|_| anyhow::anyhow!("publisher has no mesh"))?;

    let subscriber = Client::start(1).await?;
    let mut pushes = subscriber.handle().filter_pushes();
    let reply = subscriber
        .filter(
            &hub.tcp_addr(),
            RequestType::Subscribe,
            Some(TOPIC),
            &[PUSHED.to_owned()],
        )
        .await?;
    anyhow::ensure!(reply.status.0 == 200, "filter subscribe: {reply:?}");
    let filtered = Arc::new(Mutex::new(HashSet::<MessageHash>::new()));
    let filter_task = {
        let filtered = filtered.clone();
        tokio::spawn(async move {
            while let Ok(push) = pushes.recv().await {
                filtered.lock().unwrap().insert(push.hash);
            }
        })
    };

    if warmup > 0 {
        println!(
            "warm-up: {warmup} s with light push {} /s and store queries {} /s ({warmup_factor}x)",
            push_rate * warmup_factor,
            query_rate * warmup_factor
        );
    }
    println!(
        "soak: {seconds} s; relay {relay_rate}/s into edge, light push {push_rate}/s into hub, \
         store queries {query_rate}/s, rendezvous 20/s, filter on hub"
    );
    let started = Instant::now();
    let until = started + Duration::from_secs(warmup + seconds);
    let schedule = Some(Schedule {
        warm_until: started + Duration::from_secs(warmup),
        factor: warmup_factor,
    });
    let (relay_s, push_s, query_s, rdv_s) = (shared(), shared(), shared(), shared());
    let relayed = Arc::new(Mutex::new(Vec::<MessageHash>::new()));
    let acked = Arc::new(Mutex::new(Vec::<MessageHash>::new()));

    let relay_load = {
        let (relay_s, relayed) = (relay_s.clone(), relayed.clone());
        async move {
            paced(relay_rate, None, until, |n| {
                let m = WakuMessage {
                    timestamp: Some(now_nanos()),
                    ..WakuMessage::new(RELAYED, format!("relay {n}").into_bytes())
                };
                let (relay_s, relayed, publisher) = (relay_s.clone(), relayed.clone(), &publisher);
                async move {
                    let t = Instant::now();
                    match publisher.publish(TOPIC, m.encode_to_vec()).await {
                        Ok(()) => {
                            relay_s.lock().unwrap().ok(t.elapsed());
                            relayed.lock().unwrap().push(m.hash(TOPIC));
                        }
                        Err(_) => relay_s.lock().unwrap().errors += 1,
                    }
                }
            })
            .await
        }
    };
    let pusher = Client::start(1).await?;
    let push_load = {
        let (push_s, acked, addr, pusher) =
            (push_s.clone(), acked.clone(), hub.tcp_addr(), &pusher);
        async move {
            paced(push_rate, schedule, until, |n| {
                let m = WakuMessage {
                    timestamp: Some(now_nanos()),
                    ..WakuMessage::new(PUSHED, format!("push {n}").into_bytes())
                };
                let (push_s, acked, addr) = (push_s.clone(), acked.clone(), addr.clone());
                async move {
                    let t = Instant::now();
                    match pusher.light_push(&addr, Version::V3, Some(TOPIC), &m).await {
                        Ok(r) if r.status == Status::SUCCESS => {
                            push_s.lock().unwrap().ok(t.elapsed());
                            acked.lock().unwrap().push(m.hash(TOPIC));
                        }
                        _ => push_s.lock().unwrap().errors += 1,
                    }
                }
            })
            .await
        }
    };
    let reader = Client::start(1).await?;
    let query_load = {
        let (query_s, addr, reader) = (query_s.clone(), store_node.tcp_addr(), &reader);
        async move {
            paced(query_rate, schedule, until, |_| {
                let (query_s, addr) = (query_s.clone(), addr.clone());
                async move {
                    let t = Instant::now();
                    let request = StoreQueryRequest::new("soak")
                        .content(TOPIC, [RELAYED, PUSHED])
                        .forward(false)
                        .limit(20);
                    match reader.store_query(&addr, &request).await {
                        Ok(r) if r.code() == 200 => query_s.lock().unwrap().ok(t.elapsed()),
                        _ => query_s.lock().unwrap().errors += 1,
                    }
                }
            })
            .await
        }
    };
    let mut rdv_peers: Vec<RdvPeer> = (0..50)
        .map(|_| RdvPeer::ed25519())
        .collect::<Result<_, _>>()?;
    let rdv_load = {
        let (rdv_s, addr, rdv_peers) = (rdv_s.clone(), hub.tcp_addr(), &mut rdv_peers);
        async move {
            let mut interval = tokio::time::interval(Duration::from_millis(50));
            let mut n = 0usize;
            while Instant::now() < until {
                interval.tick().await;
                let peer = &mut rdv_peers[n % 50];
                let register = n.is_multiple_of(2);
                let request = if register {
                    let envelope = record::standard_envelope(
                        &peer.keypair,
                        vec![format!("/ip4/127.0.0.1/tcp/{}", 20_000 + n % 50)
                            .parse()
                            .unwrap()],
                    )
                    .unwrap();
                    proto::register_request("soak/peers", envelope, Some(600))
                } else {
                    proto::discover_request(Some("soak/peers"), Some(20), None)
                };
                let t = Instant::now();
                let ok = match peer.request(&addr, Flavour::Libp2p, request).await {
                    Ok(r) if register => read_register_response(&r).is_ok(),
                    Ok(r) => read_discover_response(&r).is_ok(),
                    Err(_) => false,
                };
                if ok {
                    rdv_s.lock().unwrap().ok(t.elapsed());
                } else {
                    rdv_s.lock().unwrap().errors += 1;
                }
                n += 1;
            }
        }
    };
    let sample = || async {
        let (h, s, e) = tokio::join!(
            scrape(&hub.http),
            scrape(&store_node.http),
            scrape(&edge.http)
        );
        Sample {
            at: started.elapsed(),
            rss: nodes.map(|(_, n)| rss_mib(n)),
            gauges: [h, s, e],
        }
    };
    let rss_load = async {
        let mut rows = Vec::new();
        let mut saved_first = false;
        loop {
            rows.push(sample().await);
            if let Some(dir) = &heap_dir {
                if !saved_first && started.elapsed().as_secs() >= warmup + seconds / 3 {
                    save_heap(&hub.http, dir, "hub", "third").await;
                    save_heap(&store_node.http, dir, "store", "third").await;
                    saved_first = true;
                }
            }
            if Instant::now() + sample_every > until {
                break;
            }
            tokio::time::sleep(sample_every).await;
        }
        rows
    };
    // A filter subscription lapses without a ping (js-waku pings every minute; so does this).
    let filter_pings = async {
        let hub_addr = hub.tcp_addr();
        while Instant::now() + Duration::from_secs(60) < until {
            tokio::time::sleep(Duration::from_secs(60)).await;
            let _ = subscriber
                .filter(&hub_addr, RequestType::Ping, None, &[])
                .await;
        }
    };
    let ((), (), (), (), (), mut rss_rows) = tokio::join!(
        relay_load,
        push_load,
        query_load,
        rdv_load,
        filter_pings,
        rss_load
    );
    let elapsed = started.elapsed().as_secs_f64();
    rss_rows.push(sample().await);
    if let Some(dir) = &heap_dir {
        save_heap(&hub.http, dir, "hub", "end").await;
        save_heap(&store_node.http, dir, "store", "end").await;
    }

    // Let the last messages settle, then count what is missing.
    let relayed = relayed.lock().unwrap().clone();
    let acked = acked.lock().unwrap().clone();
    let mut all: Vec<MessageHash> = relayed.iter().chain(&acked).copied().collect();
    all.sort();
    all.dedup();
    let store_addr = store_node.tcp_addr();
    let _ = wait_until(Duration::from_secs(30), || async {
        missing_from(&reader, &store_addr, &all).await == 0
    })
    .await;
    let lost_relayed = missing_hashes(&reader, &store_addr, &relayed).await;
    let lost_relay = lost_relayed.len();
    // Where a lost relayed message went missing: the hub stores too.
    let lost_at_hub = missing_from(&reader, &hub.tcp_addr(), &lost_relayed).await;
    let lost_index: Vec<usize> = lost_relayed
        .iter()
        .filter_map(|h| relayed.iter().position(|r| r == h))
        .collect();
    let lost_push = missing_from(&reader, &store_addr, &acked).await;
    let _ = wait_until(Duration::from_secs(10), || async {
        let got = filtered.lock().unwrap();
        acked.iter().all(|h| got.contains(h))
    })
    .await;
    let lost_filter = {
        let got = filtered.lock().unwrap();
        acked.iter().filter(|h| !got.contains(h)).count()
    };

    println!();
    println!(
        "{:<22} {:>8} {:>9} {:>9} {:>9} {:>7}",
        "traffic", "ok", "per s", "p50 ms", "p99 ms", "errors"
    );
    println!(
        "{}",
        relay_s.lock().unwrap().row("relay publish (edge)", elapsed)
    );
    println!(
        "{}",
        push_s.lock().unwrap().row("light push (hub, 200)", elapsed)
    );
    println!(
        "{}",
        query_s.lock().unwrap().row("store query (store)", elapsed)
    );
    println!("{}", rdv_s.lock().unwrap().row("rendezvous (hub)", elapsed));
    if warmup > 0 {
        println!("(per s: over the whole run, the {warmup} s warm-up included)");
    }
    println!();
    print_memory(&rss_rows, warmup, seconds);
    println!();
    println!(
        "lost: {lost_relay} of {} relayed messages not in the store node, {lost_push} of {} \
         acknowledged light pushes not in the store node, {lost_filter} of them not pushed to \
         the filter subscriber",
        relayed.len(),
        acked.len()
    );
    if lost_relay > 0 {
        println!(
            "lost relayed messages: publish order {lost_index:?} (of {}); the hub lacks {lost_at_hub} of them",
            relayed.len()
        );
    }
    filter_task.abort();
    for client in [subscriber, pusher, reader] {
        client.stop().await;
    }
    Ok(())
}
