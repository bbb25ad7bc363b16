//! B8, rendezvous capacity: Roost's persistent rendezvous point against rust-libp2p's
//! in-memory `libp2p-rendezvous` 0.18 server, in the same run, under the same load.
//!
//! Load (defaults; override with RDV_BENCH_IDENTITIES, RDV_BENCH_CLIENTS, RDV_BENCH_SECS,
//! RDV_BENCH_PAIRS): 12,500 Ed25519 identities × 8 namespaces `rs/16/<0..7>` = 100K
//! registrations (legacy rust-libp2p peer records, which both servers accept), filled by 100
//! concurrent clients, each identity on its own connection (a point only takes a peer's own
//! record). Then, at 100K registrations, alternating Roost/reference three times:
//! - refresh: 100 clients re-REGISTER their 8 namespaces in a closed loop;
//! - discover: 100 clients DISCOVER `rs/16/<k>` with limit 20, following cookies.
//!
//! Both servers listen on 127.0.0.1 with TCP + Noise + yamux; Roost is a full node (metadata,
//! identify, ping, RocksDB under a temp dir), the reference a swarm with only the server
//! behaviour. Clients and servers share one 2-worker runtime, so every figure includes the
//! clients' cost; only the ratios are meant to be compared.
//!
//! Run: `cargo bench -p roost-tests --bench rendezvous`

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use libp2p::{identity::Keypair, multiaddr::Protocol, noise, tcp, yamux, Multiaddr};
use prost::Message as _;
use roost_node::rendezvous::{client::read_register_response, proto};
use roost_tests::{
    rdv::{Flavour, RdvPeer},
    TestNode,
};

const NAMESPACES: usize = 8;
const CLUSTER: u16 = 16;
const TTL: u64 = 3600;
const DISCOVER_LIMIT: u64 = 20;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn namespace(k: usize) -> String {
    format!("rs/{CLUSTER}/{k}")
}

struct Identity {
    key: Keypair,
    /// A legacy (rust-libp2p) signed peer record, the one flavour both servers accept.
    record: Vec<u8>,
}

fn identities(n: usize) -> Vec<Identity> {
    let address: Multiaddr = "/ip4/10.0.0.1/tcp/60000".parse().unwrap();
    (0..n)
        .map(|_| {
            let key = Keypair::generate_ed25519();
            let record = libp2p::core::PeerRecord::new(&key, vec![address.clone()])
                .unwrap()
                .into_signed_envelope()
                .into_protobuf_encoding();
            Identity { key, record }
        })
        .collect()
}

/// Latencies of one phase, in microseconds.
#[derive(Default)]
struct Sample {
    ops: usize,
    elapsed: Duration,
    latencies: Vec<u64>,
    errors: usize,
}

impl Sample {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&mut self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i] as f64 / 1000.0
    }

    fn merge(parts: Vec<Sample>, elapsed: Duration) -> Sample {
        let mut all = Sample {
            elapsed,
            ..Default::default()
        };
        for p in parts {
            all.ops += p.ops;
            all.errors += p.errors;
            all.latencies.extend(p.latencies);
        }
        all
    }
}

fn register_message(identity: &Identity, ns: &str) -> Vec<u8> {
    proto::register_request(ns, identity.record.clone(), Some(TTL))
}

/// Fills `point` with every identity's 8 registrations, `clients` identities at a time.
async fn fill(point: &Multiaddr, ids: &Arc<Vec<Identity>>, clients: usize) -> Sample {
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..clients {
        let ids = ids.clone();
        let point = point.clone();
        workers.push(tokio::spawn(async move {
            let mut s = Sample::default();
            let mut i = w;
            while i < ids.len() {
                let mut peer = RdvPeer::new(ids[i].key.clone(), CLUSTER).expect("client");
                for k in 0..NAMESPACES {
                    let t = Instant::now();
                    let r = peer
                        .request(
                            &point,
                            Flavour::Libp2p,
                            register_message(&ids[i], &namespace(k)),
                        )
                        .await;
                    match r
                        .map_err(|e| e.to_string())
                        .and_then(|b| read_register_response(&b).map_err(|e| e.to_string()))
                    {
                        Ok(_) => {
                            s.ops += 1;
                            s.latencies.push(t.elapsed().as_micros() as u64);
                        }
                        Err(e) => {
                            if s.errors == 0 {
                                eprintln!("fill: REGISTER failed: {e}");
                            }
                            s.errors += 1;
                        }
                    }
                }
                i += clients;
            }
            s
        }));
    }
    let mut parts = Vec::new();
    for w in workers {
        parts.push(w.await.expect("worker"));
    }
    Sample::merge(parts, started.elapsed())
}

#[derive(Clone, Copy)]
enum Load {
    Refresh,
    Discover,
}

/// `clients` closed-loop clients (identities 0..clients, all registered) for `secs`.
async fn phase(
    point: &Multiaddr,
    ids: &Arc<Vec<Identity>>,
    clients: usize,
    secs: u64,
    load: Load,
) -> Sample {
    // Connect every client first (untimed), then start the clock for all at once.
    let mut peers = Vec::new();
    for id in ids.iter().take(clients) {
        let mut peer = RdvPeer::new(id.key.clone(), CLUSTER).expect("client");
        let warm = peer
            .request(point, Flavour::Libp2p, register_message(id, &namespace(0)))
            .await;
        assert!(warm.is_ok(), "warm-up request failed: {warm:?}");
        peers.push(peer);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut workers = Vec::new();
    for (w, mut peer) in peers.into_iter().enumerate() {
        let ids = ids.clone();
        let point = point.clone();
        workers.push(tokio::spawn(async move {
            let mut s = Sample::default();
            let mut n = 0usize;
            let mut cookies: Vec<Option<Vec<u8>>> = vec![None; NAMESPACES];
            while Instant::now() < deadline {
                let k = (w + n) % NAMESPACES;
                n += 1;
                let request = match load {
                    Load::Refresh => register_message(&ids[w], &namespace(k)),
                    Load::Discover => proto::discover_request(
                        Some(&namespace(k)),
                        Some(DISCOVER_LIMIT),
                        cookies[k].clone(),
                    ),
                };
                let t = Instant::now();
                let ok = match peer.request(&point, Flavour::Libp2p, request).await {
                    Ok(bytes) => match load {
                        Load::Refresh => read_register_response(&bytes).is_ok(),
                        Load::Discover => match discover_page(&bytes) {
                            Some((count, cookie)) => {
                                // At the end of a namespace, start over.
                                cookies[k] = if count == 0 { None } else { cookie };
                                true
                            }
                            None => false,
                        },
                    },
                    Err(_) => false,
                };
                if ok {
                    s.ops += 1;
                    s.latencies.push(t.elapsed().as_micros() as u64);
                } else {
                    s.errors += 1;
                }
            }
            s
        }));
    }
    let mut parts = Vec::new();
    for w in workers {
        parts.push(w.await.expect("worker"));
    }
    Sample::merge(parts, started.elapsed())
}

/// Registrations and cookie of a DISCOVER response, without verifying records (the clients'
/// CPU is shared with the servers).
fn discover_page(bytes: &[u8]) -> Option<(usize, Option<Vec<u8>>)> {
    let m = proto::Message::decode(bytes).ok()?;
    let body = proto::DiscoverResponse::decode(&m.discover_response?[..]).ok()?;
    (body.status.unwrap_or(0) == 0).then_some((body.registrations.len(), body.cookie))
}

/// rust-libp2p's in-memory server, configured to hold the same load.
async fn start_reference(total: usize) -> Multiaddr {
    let key = Keypair::generate_ed25519();
    let id = key.public().to_peer_id();
    let config = libp2p_rendezvous::server::Config::default()
        .with_min_ttl(60)
        .with_max_registration_per_peer(1000)
        .with_max_registration_total(total + 1000)
        .with_max_stored_cookies(10_000);
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| libp2p_rendezvous::server::Behaviour::new(config))
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let address = loop {
        if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
            swarm.select_next_some().await
        {
            break address.with(Protocol::P2p(id));
        }
    };
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    address
}

async fn start_roost(dir: Option<tempfile::TempDir>, total: usize) -> TestNode {
    let adjust = move |c: &mut roost_node::Config| {
        c.relay.enabled = false;
        c.store.enabled = false;
        c.lightpush.enabled = false;
        c.filter.enabled = false;
        c.relay.cluster_id = CLUSTER;
        // Capacity, not spam protection, is measured: the default quotas (10 REGISTER a
        // minute per peer, 500 a second in all) would refuse most of this load.
        c.throttle.enabled = false;
        c.network.ws_enabled = false;
        c.network.max_connections = 20_000;
        c.network.max_pending_connections = 1_000;
        c.rendezvous.max_registrations = (total + 1000) as u32;
        c.log.filter = "warn".into();
    };
    match dir {
        Some(dir) => TestNode::start_in(dir, adjust).await,
        None => TestNode::start_with(adjust).await,
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

struct Row {
    name: String,
    roost: Vec<f64>,
    reference: Vec<f64>,
    /// Lower is better (latencies): the ratio is reference / roost either way, so > 1 means
    /// Roost is better.
    lower_is_better: bool,
}

impl Row {
    fn print(&self) {
        let (r, b) = (median(self.roost.clone()), median(self.reference.clone()));
        let ratio = |r: f64, b: f64| if self.lower_is_better { b / r } else { r / b };
        let ratios: Vec<f64> = self
            .roost
            .iter()
            .zip(&self.reference)
            .map(|(r, b)| ratio(*r, *b))
            .collect();
        let min = ratios.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = ratios.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        println!(
            "| {:<48} | {:>10.2} | {:>10.2} | {:>6.2}x | {:.2}-{:.2}x |",
            self.name,
            r,
            b,
            ratio(r, b),
            min,
            max
        );
    }
}

fn main() {
    let n_ids = env("RDV_BENCH_IDENTITIES", 12_500);
    let clients = env("RDV_BENCH_CLIENTS", 100);
    let secs = env("RDV_BENCH_SECS", 5) as u64;
    let pairs = env("RDV_BENCH_PAIRS", 3);
    let total = n_ids * NAMESPACES;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        println!("B8 rendezvous: {n_ids} identities x {NAMESPACES} namespaces = {total} registrations, {clients} clients, {secs}s phases, {pairs} pairs");
        let t = Instant::now();
        let ids = Arc::new(identities(n_ids));
        println!("signed {n_ids} peer records in {:.1}s", t.elapsed().as_secs_f64());

        let roost = start_roost(None, total).await;
        let roost_addr = roost.tcp_addr();
        let reference = start_reference(total).await;

        let rss0 = rss_bytes();
        let mut roost_fill = fill(&roost_addr, &ids, clients).await;
        let rss1 = rss_bytes();
        let mut ref_fill = fill(&reference, &ids, clients).await;
        let rss2 = rss_bytes();
        println!(
            "fill: roost {} ok / {} errors in {:.1}s; reference {} ok / {} errors in {:.1}s",
            roost_fill.ops,
            roost_fill.errors,
            roost_fill.elapsed.as_secs_f64(),
            ref_fill.ops,
            ref_fill.errors,
            ref_fill.elapsed.as_secs_f64()
        );
        let table = roost.metric("roost_rendezvous_table_size").await.unwrap_or(0.0);
        println!("roost table size after fill: {table}");

        let mut rows = vec![
            Row {
                name: "fill: REGISTER/s (a connection per identity)".into(),
                roost: vec![roost_fill.rate()],
                reference: vec![ref_fill.rate()],
                lower_is_better: false,
            },
            Row {
                name: "fill: REGISTER p99 ms".into(),
                roost: vec![roost_fill.percentile(0.99)],
                reference: vec![ref_fill.percentile(0.99)],
                lower_is_better: true,
            },
        ];
        let mut refresh_rate = Row { name: format!("refresh at {total}: REGISTER/s"), roost: vec![], reference: vec![], lower_is_better: false };
        let mut refresh_p50 = Row { name: format!("refresh at {total}: REGISTER p50 ms"), roost: vec![], reference: vec![], lower_is_better: true };
        let mut refresh_p99 = Row { name: format!("refresh at {total}: REGISTER p99 ms"), roost: vec![], reference: vec![], lower_is_better: true };
        let mut disc_rate = Row { name: format!("DISCOVER/s at {total} (limit 20, cookies)"), roost: vec![], reference: vec![], lower_is_better: false };
        let mut disc_p50 = Row { name: format!("DISCOVER p50 ms at {total}"), roost: vec![], reference: vec![], lower_is_better: true };
        let mut disc_p99 = Row { name: format!("DISCOVER p99 ms at {total}"), roost: vec![], reference: vec![], lower_is_better: true };
        let mut errors = (0usize, 0usize);
        for pair in 0..pairs {
            for (is_roost, addr) in [(true, &roost_addr), (false, &reference)] {
                let mut r = phase(addr, &ids, clients, secs, Load::Refresh).await;
                let mut d = phase(addr, &ids, clients, secs, Load::Discover).await;
                let who = if is_roost { "roost" } else { "reference" };
                println!(
                    "pair {pair} {who}: refresh {:.0}/s ({} errors), discover {:.0}/s ({} errors)",
                    r.rate(), r.errors, d.rate(), d.errors
                );
                if is_roost { errors.0 += r.errors + d.errors } else { errors.1 += r.errors + d.errors }
                let push = |row: &mut Row, v: f64| if is_roost { row.roost.push(v) } else { row.reference.push(v) };
                push(&mut refresh_rate, r.rate());
                push(&mut refresh_p50, r.percentile(0.50));
                push(&mut refresh_p99, r.percentile(0.99));
                push(&mut disc_rate, d.rate());
                push(&mut disc_p50, d.percentile(0.50));
                push(&mut disc_p99, d.percentile(0.99));
            }
        }
        rows.extend([refresh_rate, refresh_p50, refresh_p99, disc_rate, disc_p50, disc_p99]);

        // Restart: reload every registration from RocksDB, then answer a DISCOVER.
        let dir = roost.stop().await;
        let t = Instant::now();
        let roost = start_roost(Some(dir), total).await;
        let mut asker = RdvPeer::new(Keypair::generate_ed25519(), CLUSTER).expect("client");
        let page = asker
            .request(&roost.tcp_addr(), Flavour::Libp2p, proto::discover_request(Some(&namespace(0)), Some(DISCOVER_LIMIT), None))
            .await
            .ok()
            .and_then(|b| discover_page(&b));
        let restart = t.elapsed();
        let reloaded = roost.metric("roost_rendezvous_table_size").await.unwrap_or(0.0);

        println!();
        println!("| {:<48} | {:>10} | {:>10} | {:>7} | {:<10} |", "metric (median of runs)", "roost", "reference", "ratio", "min-max");
        println!("|{}|{}|{}|{}|{}|", "-".repeat(50), "-".repeat(12), "-".repeat(12), "-".repeat(9), "-".repeat(12));
        for row in &rows {
            row.print();
        }
        println!(
            "| {:<48} | {:>10.0} | {:>10.0} | {:>6.2}x | {:<10} |",
            "RSS growth per registration during fill (B)",
            (rss1.saturating_sub(rss0)) as f64 / total as f64,
            (rss2.saturating_sub(rss1)) as f64 / total as f64,
            (rss2.saturating_sub(rss1)) as f64 / (rss1.saturating_sub(rss0)).max(1) as f64,
            "-"
        );
        println!(
            "| {:<48} | {:>10.0} | {:>10} | {:>7} | {:<10} |",
            "restart: reload + first DISCOVER (ms)",
            restart.as_secs_f64() * 1000.0,
            "starts empty",
            "-",
            "-"
        );
        println!();
        println!(
            "ratio > 1: Roost better (throughput: roost/reference; latency: reference/roost). \
             Errors during phases: roost {}, reference {}. After restart Roost reloaded {reloaded} \
             registrations; first page had {:?} registrations.",
            errors.0,
            errors.1,
            page.map(|p| p.0)
        );
    });
}
