//! Fleet simulation: `N` `roost` processes (release build) on loopback wired as a fleet, `M`
//! light clients in this process publishing through light push and receiving through filter,
//! and a tenth of the nodes killed with -9 and restarted halfway. Not a test: it prints a table
//! per fleet size, then one line per size to compare how the figures grow.
//!
//! Fleet: every node relays (shipped shards), serves light push and filter; every tenth node
//! (at least one) is a store node with store sync. Node `i` has up to four earlier nodes as
//! static peers, so gossipsub meshes form from connections, as in a fleet with static peers.
//! Loopback is exempt from the per-IP quotas: here every client shares 127.0.0.1, where a real
//! fleet's phones have addresses of their own.
//!
//! Clients: client `j` uses node `j % N` for light push and filter, and belongs to group
//! `j / group` (one content topic per group, on shard 0). Groups span nodes, so a message
//! reaches its group's members through relay. Each message is pushed by a group member and
//! expected by every member (the sender included: it is subscribed too).
//!
//! Kill: at half time, `--kill` percent of the nodes (a store node among them when there are
//! two or more) get SIGKILL and restart 2 s later with the same data directory and port; their
//! clients subscribe again once the node is back, as js-waku does after a failed ping.
//! "Survivors" are the (message, subscriber) pairs where neither the publisher's node nor the
//! subscriber's node was killed: their delivery must stay 100%.
//!
//! `cargo bench -p roost-tests --bench fleet -- --nodes 50 --clients 1000` (the defaults);
//! `--sizes 10,50,100` runs several fleet sizes one after the other; `--seconds` (60), `--rate`
//! (messages per second in all, 10), `--group` (10), `--payload` (bytes, 1024), `--kill`
//! (percent, 10). `--heap-dir <dir>` starts the nodes with their heap profiler on, saves the
//! jemalloc heap dumps of node 0 (a store node) and node 1 (a relay node) idle and again with
//! the light clients connected and subscribed, and prints `jeprof`'s top sites of each: what
//! an idle node's heap holds, and what the light clients added.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use libp2p::Multiaddr;
use roost_node::{
    client::Client,
    filter::RequestType,
    lightpush::{Status, Version},
    message::{now_nanos, MessageHash, WakuMessage},
};
use roost_tests::{
    bench::{flag, jeprof_top, missing_hashes, save_heap_dump},
    process::NodeProcess,
    wait_until,
};
use tokio::sync::mpsc;

const TOPIC: &str = "/waku/2/rs/1/0";

fn content_topic(group: usize) -> String {
    format!("/fleet/1/group-{group}/proto")
}

#[derive(Debug, Clone)]
struct Settings {
    nodes: usize,
    clients: usize,
    seconds: u64,
    rate: u64,
    group: usize,
    payload: usize,
    kill_percent: usize,
    /// Where heap dumps go (`--heap-dir`); none: the profiler stays off.
    heap_dir: Option<std::path::PathBuf>,
}

/// One `roost` process of the fleet, with what it needs to come back after a kill.
struct FleetNode {
    process: NodeProcess,
    dir: tempfile::TempDir,
    args: Vec<String>,
    store: bool,
    tcp_port: u16,
}

impl FleetNode {
    async fn start(store: bool, peers: &[Multiaddr], heap: bool) -> anyhow::Result<FleetNode> {
        let dir = tempfile::tempdir()?;
        let mut args: Vec<String> = [
            "--throttle-exempt-ips",
            "127.0.0.1",
            "--network-ws-enabled",
            "false",
            "--rest-enabled",
            "false",
            "--store-enabled",
            if store { "true" } else { "false" },
            "--store-sync-enabled",
            if store { "true" } else { "false" },
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if heap {
            args.extend(["--http-heap-profile".into(), "true".into()]);
        }
        if !peers.is_empty() {
            args.push("--network-peers".into());
            args.push(
                peers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let process = NodeProcess::start(dir.path(), &refs).await;
        let tcp_port = tcp_port_of(&process.tcp_addr())
            .ok_or_else(|| anyhow::anyhow!("node has no TCP port"))?;
        Ok(FleetNode {
            process,
            dir,
            args,
            store,
            tcp_port,
        })
    }

    /// SIGKILL; `restart` brings it back on the same port with the same data.
    fn kill(&mut self) {
        self.process.kill9();
    }

    async fn restart(&mut self) {
        let mut args = self.args.clone();
        args.push("--network-tcp-port".into());
        args.push(self.tcp_port.to_string());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.process = NodeProcess::start(self.dir.path(), &refs).await;
    }

    fn addr(&self) -> Multiaddr {
        self.process.tcp_addr()
    }

    /// (utime + stime) in seconds, from `/proc/<pid>/stat`.
    fn cpu_seconds(&self) -> f64 {
        let Ok(stat) =
            std::fs::read_to_string(format!("/proc/{}/stat", self.process.process.pid()))
        else {
            return 0.0;
        };
        // Fields after the command name (which may contain spaces) start at field 3.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            return 0.0;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        (ticks(11) + ticks(12)) as f64 / 100.0
    }

    fn rss_mib(&self) -> f64 {
        self.process.rss_bytes().unwrap_or(0) as f64 / f64::from(1 << 20)
    }
}

fn tcp_port_of(addr: &Multiaddr) -> Option<u16> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
        _ => None,
    })
}

/// Sum of a metric's series in Prometheus text (`name{…} value` lines), those whose labels
/// contain `label` when given.
fn metric_sum(text: &str, name: &str, label: Option<&str>) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| label.is_none_or(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Bytes in and out of a node's libp2p transport so far.
async fn transport_bytes(node: &FleetNode) -> (f64, f64) {
    let text = node.process.metrics().await;
    (
        metric_sum(
            &text,
            "libp2p_bandwidth_bytes_total",
            Some("direction=\"Inbound\""),
        ),
        metric_sum(
            &text,
            "libp2p_bandwidth_bytes_total",
            Some("direction=\"Outbound\""),
        ),
    )
}

async fn mesh_peers(node: &FleetNode) -> f64 {
    let text = node.process.metrics().await;
    metric_sum(
        &text,
        "roost_relay_mesh_peers",
        Some(&format!("\"{TOPIC}\"")),
    )
}

fn self_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// A message pushed and acknowledged: when, by whom, for which group.
struct Published {
    sent: Instant,
    publisher: usize,
    group: usize,
    hash: MessageHash,
}

/// One filter push as a client saw it.
struct Delivery {
    client: usize,
    seq: u64,
    at: Instant,
}

/// What one run printed, for the summary across sizes.
struct Row {
    nodes: usize,
    delivered_pct: f64,
    survivors_pct: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    rss_median: f64,
    rss_max: f64,
    cpu_median: f64,
    cpu_max: f64,
    in_per_msg: f64,
    out_per_msg: f64,
    mesh_median: f64,
    per_client_kib: f64,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let sizes: String = flag("--sizes", String::new())?;
    let nodes: usize = flag("--nodes", 50)?;
    let base = Settings {
        nodes,
        clients: flag("--clients", 1000)?,
        seconds: flag("--seconds", 60)?,
        rate: flag("--rate", 10)?,
        group: flag("--group", 10)?,
        payload: flag("--payload", 1024)?,
        kill_percent: flag("--kill", 10)?,
        heap_dir: Some(flag("--heap-dir", String::new())?)
            .filter(|d| !d.is_empty())
            .map(std::path::PathBuf::from),
    };
    if let Some(dir) = &base.heap_dir {
        std::fs::create_dir_all(dir)?;
    }
    anyhow::ensure!(
        base.group >= 1 && base.clients >= base.group,
        "--group must be 1..=clients"
    );
    anyhow::ensure!(base.payload >= 16, "--payload must be at least 16 bytes");
    let sizes: Vec<usize> = if sizes.is_empty() {
        vec![nodes]
    } else {
        sizes
            .split(',')
            .map(|s| s.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|_| anyhow::anyhow!("--sizes {sizes}: a comma-separated list of numbers"))?
    };
    let mut rows = Vec::new();
    for n in sizes {
        anyhow::ensure!(n >= 2, "a fleet needs at least 2 nodes");
        let settings = Settings {
            nodes: n,
            ..base.clone()
        };
        rows.push(run(&settings).await?);
    }
    println!();
    println!(
        "== how the figures grow with the fleet ({} light clients)",
        base.clients
    );
    println!(
        "{:>6} {:>9} {:>10} {:>7} {:>7} {:>8} {:>8} {:>8} {:>7} {:>7} {:>9} {:>9} {:>6} {:>10}",
        "nodes",
        "deliv %",
        "survivor%",
        "p50 ms",
        "p99 ms",
        "max ms",
        "RSS med",
        "RSS max",
        "CPU% m",
        "CPU% x",
        "in B/msg",
        "out B/msg",
        "mesh",
        "KiB/client"
    );
    for r in &rows {
        println!(
            "{:>6} {:>9.2} {:>10.2} {:>7.1} {:>7.1} {:>8.1} {:>8.1} {:>8.1} {:>7.1} {:>7.1} {:>9.0} {:>9.0} {:>6.1} {:>10.1}",
            r.nodes,
            r.delivered_pct,
            r.survivors_pct,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.rss_median,
            r.rss_max,
            r.cpu_median,
            r.cpu_max,
            r.in_per_msg,
            r.out_per_msg,
            r.mesh_median,
            r.per_client_kib
        );
    }
    println!(
        "reference, nwaku DST (1000 relay nodes, 1 KB at 1 msg/s): ~10.1 KB/s in and ~10.3 KB/s out \
         per node, i.e. ~10x the payload; propagation to all nodes avg 0.05 s, max 1.6 s"
    );
    Ok(())
}

/// With `--heap-dir`: node 0's and node 1's heap dumps as `<dir>/<nodes>-node<i>-<label>.heap`,
/// with their allocator figures from `/metrics`.
async fn save_heaps(
    s: &Settings,
    fleet: &[FleetNode],
    label: &str,
) -> Vec<(String, std::path::PathBuf)> {
    let Some(dir) = &s.heap_dir else {
        return Vec::new();
    };
    let mut saved = Vec::new();
    for (i, node) in fleet.iter().enumerate().take(2) {
        let path = dir.join(format!("{}-node{i}-{label}.heap", s.nodes));
        if save_heap_dump(&node.process.http, &path).await {
            let metrics = node.process.metrics().await;
            let mib = |name: &str| metric_sum(&metrics, name, None) / f64::from(1 << 20);
            // One shared cache, repeated under every column family: its largest reading.
            let block_cache = metrics
                .lines()
                .filter(|l| l.starts_with("roost_store_rocksdb_block_cache_bytes"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .fold(0.0, f64::max)
                / f64::from(1 << 20);
            let what = if node.store { "store" } else { "relay" };
            println!(
                "node {i} ({what}) {label}: RSS {:.1} MiB; allocator allocated {:.1}, resident {:.1}, \
                 metadata {:.1} MiB; RocksDB block cache {:.1}, memtables {:.1} MiB",
                node.rss_mib(),
                mib("roost_allocator_allocated_bytes"),
                mib("roost_allocator_resident_bytes"),
                mib("roost_allocator_metadata_bytes"),
                block_cache,
                mib("roost_store_rocksdb_memtable_bytes"),
            );
            saved.push((format!("node {i} ({what})"), path));
        }
    }
    saved
}

/// jeprof's top sites: of each idle heap, and of what the clients added to it.
fn print_heaps(idle: &[(String, std::path::PathBuf)], clients: &[(String, std::path::PathBuf)]) {
    let binary = roost_tests::process::roost_bin();
    for (name, path) in idle {
        println!("-- {name}, idle: top heap sites (jeprof --text)");
        for line in jeprof_top(&binary, None, path, 16) {
            println!("   {line}");
        }
    }
    for ((name, base), (_, path)) in idle.iter().zip(clients) {
        println!("-- {name}: what the light clients added (jeprof --text --base=idle)");
        for line in jeprof_top(&binary, Some(base), path, 16) {
            println!("   {line}");
        }
    }
}

async fn run(s: &Settings) -> anyhow::Result<Row> {
    println!();
    println!(
        "== fleet: {} nodes, {} light clients, {} s at {} msgs/s of {} B, groups of {}, kill {}%",
        s.nodes, s.clients, s.seconds, s.rate, s.payload, s.group, s.kill_percent
    );

    // --- the fleet (the release binary is built first, outside the timing)
    let _ = roost_tests::process::roost_bin();
    let t = Instant::now();
    let mut fleet: Vec<FleetNode> = Vec::with_capacity(s.nodes);
    for i in 0..s.nodes {
        let store = i % 10 == 0;
        // Up to four earlier nodes: the previous one and three spread over the rest.
        let mut peers: Vec<usize> = Vec::new();
        for candidate in [i.wrapping_sub(1), i / 2, i / 3, (i * 7) / 11] {
            if candidate < i && !peers.contains(&candidate) {
                peers.push(candidate);
            }
        }
        let addrs: Vec<Multiaddr> = peers.iter().map(|&p| fleet[p].addr()).collect();
        fleet.push(FleetNode::start(store, &addrs, s.heap_dir.is_some()).await?);
    }
    let stores = fleet.iter().filter(|n| n.store).count();
    println!(
        "started {} nodes ({stores} store) in {:.1} s",
        s.nodes,
        t.elapsed().as_secs_f64()
    );
    let mesh_formed = wait_until(Duration::from_secs(120), || async {
        for node in &fleet {
            if mesh_peers(node).await < 1.0 {
                return false;
            }
        }
        true
    })
    .await;
    if mesh_formed.is_err() {
        println!("warning: some nodes had no mesh peer on {TOPIC} after 120 s");
    }
    // Gossipsub's heartbeat grows meshes towards D; give it a few heartbeats.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_rss: Vec<f64> = fleet.iter().map(FleetNode::rss_mib).collect();
    let idle_heaps = save_heaps(s, &fleet, "idle").await;

    // --- the light clients
    let t = Instant::now();
    let rss_before_clients = self_rss_mib();
    let mut clients: Vec<Arc<Client>> = Vec::with_capacity(s.clients);
    for chunk_start in (0..s.clients).step_by(100) {
        let chunk = chunk_start..(chunk_start + 100).min(s.clients);
        let started = futures::future::join_all(chunk.map(|_| Client::start(1))).await;
        for client in started {
            clients.push(Arc::new(client?));
        }
    }
    let client_rss_kib = (self_rss_mib() - rss_before_clients) * 1024.0 / s.clients as f64;
    let node_of = |client: usize| client % s.nodes;
    let group_of = |client: usize| client / s.group;
    let (deliveries_tx, mut deliveries_rx) = mpsc::unbounded_channel::<Delivery>();
    let mut receivers = Vec::with_capacity(s.clients);
    for (j, client) in clients.iter().enumerate() {
        let mut pushes = client.handle().filter_pushes();
        let tx = deliveries_tx.clone();
        receivers.push(tokio::spawn(async move {
            loop {
                match pushes.recv().await {
                    Ok(push) => {
                        let Some(seq) = push
                            .message
                            .payload
                            .get(..8)
                            .and_then(|b| <[u8; 8]>::try_from(b).ok())
                            .map(u64::from_be_bytes)
                        else {
                            continue;
                        };
                        let _ = tx.send(Delivery {
                            client: j,
                            seq,
                            at: Instant::now(),
                        });
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        }));
    }
    drop(deliveries_tx);
    let subscribe = |j: usize, addr: Multiaddr| {
        let client = clients[j].clone();
        let topics = vec![content_topic(group_of(j))];
        async move {
            for _ in 0..5 {
                if let Ok(reply) = client
                    .filter(&addr, RequestType::Subscribe, Some(TOPIC), &topics)
                    .await
                {
                    if reply.status.0 == 200 {
                        return true;
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            false
        }
    };
    let mut subscribed = 0;
    for chunk_start in (0..s.clients).step_by(100) {
        let chunk = chunk_start..(chunk_start + 100).min(s.clients);
        let results =
            futures::future::join_all(chunk.map(|j| subscribe(j, fleet[node_of(j)].addr()))).await;
        subscribed += results.into_iter().filter(|ok| *ok).count();
    }
    println!(
        "{} clients started and {subscribed} subscribed in {:.1} s; {client_rss_kib:.0} KiB of this \
         process's RSS per in-process client",
        s.clients,
        t.elapsed().as_secs_f64()
    );
    // Connection and subscription state settles.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded_idle_rss: Vec<f64> = fleet.iter().map(FleetNode::rss_mib).collect();
    let client_heaps = save_heaps(s, &fleet, "clients").await;
    print_heaps(&idle_heaps, &client_heaps);
    let clients_per_node = s.clients as f64 / s.nodes as f64;
    let per_client_node_kib: Vec<f64> = idle_rss
        .iter()
        .zip(&loaded_idle_rss)
        .map(|(idle, loaded)| (loaded - idle) * 1024.0 / clients_per_node)
        .collect();

    // --- the load
    let published: Arc<Mutex<HashMap<u64, Published>>> = Arc::default();
    let push_errors = Arc::new(Mutex::new(HashMap::<String, u64>::new()));
    let killed: Arc<Mutex<HashSet<usize>>> = Arc::default();
    let cpu_before: Vec<f64> = fleet.iter().map(FleetNode::cpu_seconds).collect();
    let mut bytes_before = Vec::with_capacity(s.nodes);
    for node in &fleet {
        bytes_before.push(transport_bytes(node).await);
    }
    let started = Instant::now();
    let until = started + Duration::from_secs(s.seconds);
    let node_addrs: Arc<Mutex<Vec<Multiaddr>>> =
        Arc::new(Mutex::new(fleet.iter().map(FleetNode::addr).collect()));
    let load = {
        let (published, push_errors, clients, node_addrs) = (
            published.clone(),
            push_errors.clone(),
            clients.clone(),
            node_addrs.clone(),
        );
        let s = s.clone();
        async move {
            let mut interval =
                tokio::time::interval(Duration::from_micros(1_000_000 / s.rate.max(1)));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut pushes = Vec::new();
            let mut seq: u64 = 0;
            while Instant::now() < until {
                interval.tick().await;
                // Spread publishers over clients (7919 is prime, so every client comes up).
                let publisher = (seq as usize * 7919) % s.clients;
                let group = publisher / s.group;
                let mut payload = vec![0u8; s.payload];
                payload[..8].copy_from_slice(&seq.to_be_bytes());
                let message = WakuMessage {
                    timestamp: Some(now_nanos()),
                    ..WakuMessage::new(content_topic(group), payload)
                };
                let addr = node_addrs.lock().unwrap()[publisher % s.nodes].clone();
                let client = clients[publisher].clone();
                let (published, push_errors) = (published.clone(), push_errors.clone());
                let this = seq;
                pushes.push(tokio::spawn(async move {
                    let sent = Instant::now();
                    match client
                        .light_push(&addr, Version::V3, Some(TOPIC), &message)
                        .await
                    {
                        Ok(reply) if reply.status == Status::SUCCESS => {
                            published.lock().unwrap().insert(
                                this,
                                Published {
                                    sent,
                                    publisher,
                                    group,
                                    hash: message.hash(TOPIC),
                                },
                            );
                        }
                        Ok(reply) => {
                            *push_errors
                                .lock()
                                .unwrap()
                                .entry(format!("status {}", reply.status.0))
                                .or_default() += 1;
                        }
                        Err(e) => {
                            let kind = e.to_string();
                            let kind = kind.split(':').next().unwrap_or("error").to_owned();
                            *push_errors.lock().unwrap().entry(kind).or_default() += 1;
                        }
                    }
                }));
                seq += 1;
            }
            futures::future::join_all(pushes).await;
            seq
        }
    };
    // Kill -9 and restart a tenth of the nodes at half time.
    let victims: Vec<usize> = {
        let count = (s.nodes * s.kill_percent).div_ceil(100).min(s.nodes - 1);
        let mut v: Vec<usize> = (0..count).map(|k| s.nodes - 1 - k * 3 % s.nodes).collect();
        // A store node among them when there is another to keep serving.
        if stores >= 2 && !v.iter().any(|&i| fleet[i].store) {
            if let Some(last) = v.last_mut() {
                *last = (stores - 1) * 10;
            }
        }
        v.sort_unstable();
        v.dedup();
        v
    };
    let chaos = async {
        if victims.is_empty() {
            return Duration::ZERO;
        }
        tokio::time::sleep(Duration::from_secs(s.seconds / 2)).await;
        killed.lock().unwrap().extend(victims.iter().copied());
        for &i in &victims {
            fleet[i].kill();
        }
        let down = Instant::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        for &i in &victims {
            fleet[i].restart().await;
            node_addrs.lock().unwrap()[i] = fleet[i].addr();
        }
        let back = down.elapsed();
        // Their clients subscribe again.
        let again: Vec<usize> = (0..s.clients)
            .filter(|j| victims.contains(&node_of(*j)))
            .collect();
        futures::future::join_all(
            again
                .iter()
                .map(|&j| subscribe(j, fleet[node_of(j)].addr())),
        )
        .await;
        back
    };
    // A ping a minute keeps the subscriptions of long runs (js-waku pings every minute).
    let pings = async {
        while Instant::now() + Duration::from_secs(60) < until {
            tokio::time::sleep(Duration::from_secs(60)).await;
            let addrs = node_addrs.lock().unwrap().clone();
            futures::future::join_all(clients.iter().enumerate().map(|(j, c)| {
                let addr = addrs[node_of(j)].clone();
                async move {
                    let _ = c.filter(&addr, RequestType::Ping, None, &[]).await;
                }
            }))
            .await;
        }
    };
    let (sent, downtime, ()) = tokio::join!(load, chaos, pings);
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after: Vec<f64> = fleet.iter().map(FleetNode::cpu_seconds).collect();
    let mut bytes_after = Vec::with_capacity(s.nodes);
    for node in &fleet {
        bytes_after.push(transport_bytes(node).await);
    }
    // Late deliveries settle.
    tokio::time::sleep(Duration::from_secs(5)).await;

    // --- deliveries
    let mut got: HashMap<(u64, usize), u32> = HashMap::new();
    let mut latencies_ms = Vec::new();
    {
        let published = published.lock().unwrap();
        while let Ok(d) = deliveries_rx.try_recv() {
            let count = got.entry((d.seq, d.client)).or_default();
            *count += 1;
            if *count == 1 {
                if let Some(p) = published.get(&d.seq) {
                    latencies_ms
                        .push(d.at.saturating_duration_since(p.sent).as_secs_f64() * 1000.0);
                }
            }
        }
    }
    let killed = killed.lock().unwrap().clone();
    let published = Arc::try_unwrap(published)
        .map_err(|_| anyhow::anyhow!("publishers still running"))?
        .into_inner()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    let (mut expected, mut delivered, mut survivor_expected, mut survivor_delivered) =
        (0u64, 0u64, 0u64, 0u64);
    for (seq, p) in &published {
        let members = (p.group * s.group)..((p.group + 1) * s.group).min(s.clients);
        for member in members {
            let ok = got.contains_key(&(*seq, member));
            expected += 1;
            delivered += u64::from(ok);
            if !killed.contains(&node_of(member)) && !killed.contains(&node_of(p.publisher)) {
                survivor_expected += 1;
                survivor_delivered += u64::from(ok);
            }
        }
    }
    let duplicates: u64 = got.values().map(|c| u64::from(c.saturating_sub(1))).sum();
    let latencies_ms = sorted(latencies_ms);
    let pct = |a: u64, b: u64| {
        if b == 0 {
            100.0
        } else {
            a as f64 * 100.0 / b as f64
        }
    };

    // --- stores: every acknowledged message in every store node (restarted ones via sync)
    let reader = Client::start(1).await?;
    let hashes: Vec<MessageHash> = published.values().map(|p| p.hash).collect();
    let store_nodes: Vec<usize> = (0..s.nodes).filter(|&i| fleet[i].store).collect();
    let catch_up = Instant::now();
    let _ = wait_until(Duration::from_secs(90), || async {
        for &i in &store_nodes {
            if !missing_hashes(&reader, &fleet[i].addr(), &hashes)
                .await
                .is_empty()
            {
                return false;
            }
        }
        true
    })
    .await;
    let mut store_rows = Vec::new();
    for &i in &store_nodes {
        let lost = missing_hashes(&reader, &fleet[i].addr(), &hashes)
            .await
            .len();
        store_rows.push((i, killed.contains(&i), lost));
    }
    let catch_up = catch_up.elapsed();

    // --- per node
    let rss: Vec<f64> = fleet.iter().map(FleetNode::rss_mib).collect();
    let cpu_pct: Vec<f64> = cpu_before
        .iter()
        .zip(&cpu_after)
        .enumerate()
        // A restarted node's counter started again; its share is what it used since.
        .map(|(i, (b, a))| {
            let used = if killed.contains(&i) { *a } else { a - b };
            used * 100.0 / elapsed
        })
        .collect();
    let acked = published.len().max(1) as f64;
    let per_msg: Vec<(f64, f64)> = bytes_before
        .iter()
        .zip(&bytes_after)
        .enumerate()
        .filter(|(i, _)| !killed.contains(i))
        .map(|(_, (b, a))| ((a.0 - b.0) / acked, (a.1 - b.1) / acked))
        .collect();
    let mut mesh = Vec::new();
    for node in &fleet {
        mesh.push(mesh_peers(node).await);
    }
    let (rss, cpu_pct, mesh) = (sorted(rss), sorted(cpu_pct), sorted(mesh));
    let bytes_in = sorted(per_msg.iter().map(|p| p.0).collect());
    let bytes_out = sorted(per_msg.iter().map(|p| p.1).collect());
    let idle_rss = sorted(idle_rss);
    let per_client_node_kib = sorted(per_client_node_kib);

    let errors = push_errors.lock().unwrap().clone();
    println!(
        "light push: {sent} sent, {} acknowledged (200), refused or failed: {}",
        published.len(),
        if errors.is_empty() {
            "none".to_owned()
        } else {
            format!("{errors:?}")
        }
    );
    println!(
        "filter deliveries: {delivered} of {expected} expected ({:.2}%), survivors {survivor_delivered} \
         of {survivor_expected} ({:.2}%), duplicates {duplicates}",
        pct(delivered, expected),
        pct(survivor_delivered, survivor_expected)
    );
    println!(
        "publish -> filter delivery, ms: p50 {:.1}  p99 {:.1}  max {:.1}",
        quantile(&latencies_ms, 0.5),
        quantile(&latencies_ms, 0.99),
        latencies_ms.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "killed -9: nodes {victims:?}, back (restarted, subscribed) after {:.1} s",
        downtime.as_secs_f64()
    );
    for (i, was_killed, lost) in &store_rows {
        println!(
            "store node {i}{}: {lost} of {} acknowledged messages missing{}",
            if *was_killed {
                " (killed, restarted)"
            } else {
                ""
            },
            hashes.len(),
            if *was_killed {
                format!(" after {:.0} s of catch-up", catch_up.as_secs_f64())
            } else {
                String::new()
            }
        );
    }
    println!(
        "{:<34} {:>9} {:>9} {:>9}",
        "per node", "min", "median", "max"
    );
    let line = |name: &str, v: &[f64]| {
        println!(
            "{name:<34} {:>9.1} {:>9.1} {:>9.1}",
            v.first().copied().unwrap_or(f64::NAN),
            quantile(v, 0.5),
            v.last().copied().unwrap_or(f64::NAN)
        );
    };
    line("RSS idle, no clients (MiB)", &idle_rss);
    line("RSS at the end (MiB)", &rss);
    line("RSS per light client (KiB)", &per_client_node_kib);
    line("CPU during load (% of a core)", &cpu_pct);
    line("bytes in per acked message", &bytes_in);
    line("bytes out per acked message", &bytes_out);
    line("gossipsub mesh peers (shard 0)", &mesh);
    println!(
        "amplification: {:.1}x the {} B payload in, {:.1}x out (median node)",
        quantile(&bytes_in, 0.5) / s.payload as f64,
        s.payload,
        quantile(&bytes_out, 0.5) / s.payload as f64
    );

    reader.stop().await;
    for task in receivers {
        task.abort();
    }
    for client in clients {
        if let Ok(client) = Arc::try_unwrap(client) {
            client.stop().await;
        }
    }
    for mut node in fleet {
        node.kill();
    }
    Ok(Row {
        nodes: s.nodes,
        delivered_pct: pct(delivered, expected),
        survivors_pct: pct(survivor_delivered, survivor_expected),
        p50_ms: quantile(&latencies_ms, 0.5),
        p99_ms: quantile(&latencies_ms, 0.99),
        max_ms: latencies_ms.last().copied().unwrap_or(f64::NAN),
        rss_median: quantile(&rss, 0.5),
        rss_max: rss.last().copied().unwrap_or(f64::NAN),
        cpu_median: quantile(&cpu_pct, 0.5),
        cpu_max: cpu_pct.last().copied().unwrap_or(f64::NAN),
        in_per_msg: quantile(&bytes_in, 0.5),
        out_per_msg: quantile(&bytes_out, 0.5),
        mesh_median: quantile(&mesh, 0.5),
        per_client_kib: quantile(&per_client_node_kib, 0.5),
    })
}
