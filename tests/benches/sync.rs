//! Store sync benchmark: two in-process store nodes whose archives differ converge through
//! range-based set reconciliation (`/vac/waku/reconciliation/1.0.0`) and message transfer
//! (`/vac/waku/transfer/1.0.0`), and two archives already in sync pay for one round.
//!
//! - Convergence: two archives of `--messages` messages that differ by 0.1%, 1% and 10% of
//!   that count, half of the differing messages on each side (so both directions move). From
//!   the dial until both archives hold the union (their message counts): time, sessions,
//!   reconciliation and transfer bytes (frames sent by either node), total sync bytes against
//!   the encoded WakuMessages that had to move, and the process's CPU seconds (both nodes run
//!   here). Reference, same run: the same messages inserted directly (`ArchiveHandle::insert`
//!   after relay validation, 256 in flight per node, both nodes at once): what the transfer
//!   side could at best reach.
//! - Steady state: two archives of `--messages` already in sync, `store_sync.interval` 5 s:
//!   bytes and milliseconds of `--rounds` initiator rounds (deltas of the
//!   `roost_store_sync_*` metrics of both nodes), against sending every message hash of the
//!   1 h window (32 bytes each).
//!
//! Dataset: 200-400 byte incompressible payloads, 300 content topics, one pubsub topic
//! `/waku/2/rs/16/32` (cluster 16, shard 32); timestamps over 50 minutes ending a minute
//! before the run starts, so everything is inside the default 1 h sync range (the run must
//! finish within ~9 minutes; it checks). The shared part of the archives is written once; each
//! pair of nodes starts from copies of its store directory in fresh data dirs (fresh keys),
//! then the per-level messages are inserted. No fsync (`store.sync = false`) anywhere, so the
//! reference and the transfer write the same way.
//!
//! Nothing here is a test: it prints figures. Run in release:
//! `cargo bench -p roost-tests --bench sync -- [--messages N] [--rounds N]`

use std::{
    path::Path,
    time::{Duration, Instant},
};

use futures::{stream::FuturesUnordered, StreamExt};
use roost_node::{
    message::{now_nanos, WakuMessage},
    relay::Validator,
    store::{self, ArchiveHandle, InsertOutcome, RetentionPolicy},
    Config, Node,
};
use roost_tests::bench;
use sha2::{Digest, Sha256};

const TOPIC: &str = "/waku/2/rs/16/32";
const CONTENT_TOPICS: u64 = 300;
/// The dataset's timestamps span this much ...
const SPAN: Duration = Duration::from_secs(50 * 60);
/// ... ending this long before the run starts.
const END_BEFORE: Duration = Duration::from_secs(60);
/// The node's default `store_sync.range` and `relay_jitter`, set explicitly.
const RANGE: Duration = Duration::from_secs(3600);
const JITTER: Duration = Duration::from_secs(20);
/// How much the archives differ: differing messages / `--messages`.
const LEVELS: [f64; 3] = [0.001, 0.01, 0.1];
/// Inserts in flight per node.
const WINDOW: usize = 256;
/// `store_sync.interval` for the steady-state rounds.
const STEADY_INTERVAL: Duration = Duration::from_secs(5);
/// Longest wait for two nodes to converge, or for a round.
const PATIENCE: Duration = Duration::from_secs(600);
/// `/proc/self/stat` counts CPU time in USER_HZ, 100 per second on Linux.
const USER_HZ: f64 = 100.0;

struct Args {
    messages: u64,
    rounds: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    Ok(Args {
        messages: bench::flag("--messages", 1_000_000)?,
        rounds: bench::flag("--rounds", 3)?,
    })
}

// === the dataset ===

/// splitmix64: a deterministic stream of numbers from a seed.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Which messages of a level: in both archives, only in A, only in B.
#[derive(Clone, Copy)]
enum Part {
    Common = 0,
    OnlyA = 1,
    OnlyB = 2,
}

/// Deterministic messages: the same id gives the same bytes on every node.
struct Dataset {
    /// Incompressible bytes that payloads are cut from (real payloads are encrypted).
    pool: Vec<u8>,
    /// Messages of the shared part (in every archive).
    shared: u64,
    start_ts: i64,
    span_ns: i64,
}

impl Dataset {
    fn new(shared: u64) -> Dataset {
        let mut pool = Vec::with_capacity(64 * 1024);
        let mut block: [u8; 32] = Sha256::digest(b"roost sync bench").into();
        while pool.len() < 64 * 1024 {
            pool.extend_from_slice(&block);
            block = Sha256::digest(block).into();
        }
        let span_ns = SPAN.as_nanos() as i64;
        Dataset {
            pool,
            shared,
            start_ts: now_nanos() - END_BEFORE.as_nanos() as i64 - span_ns,
            span_ns,
        }
    }

    fn message(&self, id: u64, timestamp: i64) -> WakuMessage {
        let r = mix(id);
        let size = 200 + (mix(r) % 201) as usize;
        let offset = (r as usize) % (self.pool.len() - size);
        let mut payload = self.pool[offset..offset + size].to_vec();
        payload[..8].copy_from_slice(&id.to_be_bytes());
        WakuMessage {
            payload,
            content_topic: format!("/bench/1/topic-{}/proto", mix(r ^ 0x5555) % CONTENT_TOPICS),
            timestamp: Some(timestamp),
            ..Default::default()
        }
    }

    /// Message `i` of the shared part: evenly spaced over the span, in time order.
    fn shared_message(&self, i: u64) -> WakuMessage {
        let step = self.span_ns / self.shared.max(1) as i64;
        self.message(i, self.start_ts + i as i64 * step)
    }

    /// Message `k` of a level's `part` (`level` 0..: the differing levels, then steady
    /// state): anywhere in the span, among the shared ones.
    fn extra_message(&self, level: u64, part: Part, k: u64) -> WakuMessage {
        let id = ((level + 1) << 40) | ((part as u64) << 32) | k;
        let offset = (mix(id ^ 0x7777) % self.span_ns as u64) as i64;
        self.message(id, self.start_ts + offset)
    }

    /// Fails when the oldest message is about to leave the sync range (the run took too long).
    fn check_in_range(&self, margin: Duration) -> anyhow::Result<()> {
        let window_start = now_nanos() - (RANGE + JITTER).as_nanos() as i64;
        anyhow::ensure!(
            self.start_ts > window_start + margin.as_nanos() as i64,
            "the run took too long: the dataset's oldest messages are leaving the 1 h sync range"
        );
        Ok(())
    }
}

// === nodes ===

fn node_config(dir: &Path, sync: bool, interval: Duration) -> Config {
    let mut config = roost_tests::test_config(dir);
    config.relay.cluster_id = 16;
    config.relay.shards = vec![32];
    config.network.ws_enabled = false;
    // No fsync: the reference inserts and the transfers write alike.
    config.store.sync = false;
    // Sync sessions and transfers of a whole archive: not what the quotas are about.
    config.throttle.enabled = false;
    config.store.retention = RetentionPolicy(Vec::new());
    // The dataset's timestamps span the last hour; accept them all.
    config.store.timestamp_window = Duration::from_secs(2 * 3600);
    config.store_sync.enabled = sync;
    config.store_sync.interval = interval;
    config.store_sync.range = RANGE;
    config.store_sync.relay_jitter = JITTER;
    config
}

fn store_of(node: &Node) -> anyhow::Result<ArchiveHandle> {
    node.handle()
        .store()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("node has no store"))
}

async fn stop(node: Node) -> anyhow::Result<()> {
    node.stop().await.map_err(|e| anyhow::anyhow!(e))
}

/// Inserts `n` messages (wire bytes from `bytes`) through relay validation and the store's
/// acknowledged write path, `WINDOW` in flight.
async fn ingest(
    store: &ArchiveHandle,
    validator: &Validator,
    n: u64,
    bytes: impl Fn(u64) -> Vec<u8>,
) -> anyhow::Result<()> {
    let mut inflight = FuturesUnordered::new();
    for i in 0..n {
        while inflight.len() >= WINDOW {
            if let Some(r) = inflight.next().await {
                r?;
            }
        }
        let bytes = bytes(i);
        inflight.push(async move {
            let message = validator
                .validate(TOPIC, &bytes)
                .map_err(|e| anyhow::anyhow!("invalid bench message: {e}"))?;
            match store.insert(TOPIC, message).await? {
                InsertOutcome::Stored => Ok(()),
                other => Err(anyhow::anyhow!("message {i} not stored: {other:?}")),
            }
        });
    }
    while let Some(r) = inflight.next().await {
        r?;
    }
    Ok(())
}

/// Copies a stopped node's store directory into another data dir (SST files, which RocksDB
/// never changes, as hard links).
fn copy_store(from_data_dir: &Path, to_data_dir: &Path) -> anyhow::Result<()> {
    let (from, to) = (
        store::store_path(from_data_dir),
        store::store_path(to_data_dir),
    );
    std::fs::create_dir_all(&to)?;
    for entry in std::fs::read_dir(&from)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let target = to.join(entry.file_name());
        let is_sst = entry.path().extension().is_some_and(|e| e == "sst");
        if !is_sst || std::fs::hard_link(entry.path(), &target).is_err() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which may hold spaces) start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("/proc/self/stat: no command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("/proc/self/stat: too short"))?
            .parse::<f64>()?)
    };
    Ok((tick(11)? + tick(12)?) / USER_HZ)
}

// === metrics ===

async fn metrics_text(node: &Node) -> anyhow::Result<String> {
    let http = node
        .handle()
        .info()
        .http_address
        .ok_or_else(|| anyhow::anyhow!("node has no HTTP endpoint"))?;
    Ok(roost_tests::http_get(&format!("http://{http}/metrics"))
        .await
        .1)
}

/// The store sync counters of a set of nodes, summed.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    reconciliation_sent: f64,
    transfer_sent: f64,
    initiator_ok: f64,
    initiator_failed: f64,
    duration_sum: f64,
    duration_count: f64,
    gained: f64,
    messages_sent: f64,
    responder_failed: f64,
    /// Messages received by transfer and not stored (duplicate, unsolicited, invalid, ...).
    received_not_stored: f64,
}

impl Counters {
    async fn of(nodes: &[&Node]) -> anyhow::Result<Counters> {
        let mut c = Counters::default();
        for node in nodes {
            let text = metrics_text(node).await?;
            let sum = |name: &str, labels: &[(&str, &str)]| {
                roost_tests::metric_sum(&text, &format!("roost_store_sync_{name}"), labels)
            };
            c.reconciliation_sent += sum(
                "bytes_total",
                &[("protocol", "reconciliation"), ("direction", "sent")],
            );
            c.transfer_sent += sum(
                "bytes_total",
                &[("protocol", "transfer"), ("direction", "sent")],
            );
            c.initiator_ok += sum("rounds_total", &[("role", "initiator"), ("outcome", "ok")]);
            c.initiator_failed += sum(
                "rounds_total",
                &[("role", "initiator"), ("outcome", "failed")],
            );
            c.duration_sum += sum("round_duration_seconds_sum", &[]);
            c.duration_count += sum("round_duration_seconds_count", &[]);
            c.gained += sum("messages_gained_total", &[]);
            c.messages_sent += sum("messages_total", &[("direction", "sent")]);
            c.responder_failed += sum(
                "rounds_total",
                &[("role", "responder"), ("outcome", "failed")],
            );
            c.received_not_stored += sum("received_messages_total", &[])
                - sum("received_messages_total", &[("outcome", "stored")]);
        }
        Ok(c)
    }

    fn minus(&self, before: &Counters) -> Counters {
        Counters {
            reconciliation_sent: self.reconciliation_sent - before.reconciliation_sent,
            transfer_sent: self.transfer_sent - before.transfer_sent,
            initiator_ok: self.initiator_ok - before.initiator_ok,
            initiator_failed: self.initiator_failed - before.initiator_failed,
            duration_sum: self.duration_sum - before.duration_sum,
            duration_count: self.duration_count - before.duration_count,
            gained: self.gained - before.gained,
            messages_sent: self.messages_sent - before.messages_sent,
            responder_failed: self.responder_failed - before.responder_failed,
            received_not_stored: self.received_not_stored - before.received_not_stored,
        }
    }

    fn initiator_rounds(&self) -> f64 {
        self.initiator_ok + self.initiator_failed
    }
}

async fn message_count(store: &ArchiveHandle) -> anyhow::Result<u64> {
    Ok(store.summary().await?.messages)
}

// === main ===

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    // Warnings (a failed session) show; RUST_LOG=roost_node::sync=debug shows more.
    roost_tests::init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

/// A pair of nodes started on copies of the shared archive, with their own messages added.
struct Pair {
    a: Node,
    b: Node,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Pair {
    async fn start(base: &Path, interval: Duration) -> anyhow::Result<Pair> {
        let (da, db) = (tempfile::tempdir()?, tempfile::tempdir()?);
        copy_store(base, da.path())?;
        copy_store(base, db.path())?;
        let a = Node::start(node_config(da.path(), true, interval)).await?;
        let b = Node::start(node_config(db.path(), true, interval)).await?;
        Ok(Pair {
            a,
            b,
            _dirs: (da, db),
        })
    }

    async fn connect(&self) -> anyhow::Result<()> {
        let addr = roost_tests::loopback(&self.b.handle().info().tcp_addresses);
        self.a
            .handle()
            .dial(addr)
            .await
            .map_err(|e| anyhow::anyhow!(e))
    }

    async fn stop(self) -> anyhow::Result<()> {
        stop(self.a).await?;
        stop(self.b).await
    }
}

struct LevelResult {
    level: f64,
    missing: u64,
    missing_bytes: u64,
    converge_s: f64,
    cpu_s: f64,
    sync: Counters,
    direct_s: f64,
    direct_cpu_s: f64,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let n = args.messages;
    // The most any level differs by on one side: the shared part leaves room for it.
    let halves: Vec<u64> = LEVELS
        .iter()
        .map(|l| ((n as f64 * l / 2.0).round() as u64).max(1))
        .collect();
    let max_half = halves.iter().copied().max().unwrap_or(0);
    anyhow::ensure!(max_half < n, "--messages {n} is too small");
    let data = Dataset::new(n - max_half);
    let validator = Validator::new(&node_config(Path::new("."), false, RANGE).relay);
    println!(
        "Roost store sync benchmark: archives of {n} messages; payloads 200-400 B, {CONTENT_TOPICS} content topics, {TOPIC}"
    );
    println!(
        "timestamps over {} min ending {} s before the start; sync range {} min, relay jitter {} s; no fsync",
        SPAN.as_secs() / 60,
        END_BEFORE.as_secs(),
        RANGE.as_secs() / 60,
        JITTER.as_secs()
    );

    // The shared part, written once.
    let base = tempfile::tempdir()?;
    {
        let node = Node::start(node_config(base.path(), false, RANGE)).await?;
        let store = store_of(&node)?;
        println!("writing the shared part: {} messages ...", data.shared);
        let started = Instant::now();
        ingest(&store, &validator, data.shared, |i| {
            data.shared_message(i).encode_to_vec()
        })
        .await?;
        let took = started.elapsed().as_secs_f64();
        println!(
            "  {} messages in {:.1} s ({:.0} msgs/s)",
            message_count(&store).await?,
            took,
            data.shared as f64 / took
        );
        stop(node).await?;
    }

    let mut results = Vec::new();
    for (level, (&fraction, &half)) in LEVELS.iter().zip(&halves).enumerate() {
        data.check_in_range(Duration::from_secs(60))?;
        let r = converge_level(
            &data,
            &validator,
            base.path(),
            level as u64,
            fraction,
            half,
            max_half,
        )
        .await?;
        results.push(r);
    }
    data.check_in_range(Duration::from_secs(30))?;
    let steady = steady_state(&data, &validator, base.path(), max_half, args.rounds).await?;

    println!();
    println!(
        "Convergence: two archives of {n} messages differing by the share below, half missing on each side"
    );
    println!("| differ | messages to move | converge s | sessions ok (failed) | reconciliation bytes | transfer bytes | total sync bytes | bytes of the messages moved | total / messages | CPU s | direct insert s | direct CPU s | converge / direct |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &results {
        let total = r.sync.reconciliation_sent + r.sync.transfer_sent;
        println!(
            "| {}% | {} | {:.2} | {} ({}) | {} | {} | {} | {} | {:.3} | {:.2} | {:.2} | {:.2} | {:.1} |",
            r.level * 100.0,
            r.missing,
            r.converge_s,
            r.sync.initiator_ok,
            r.sync.initiator_failed,
            r.sync.reconciliation_sent,
            r.sync.transfer_sent,
            total,
            r.missing_bytes,
            total / r.missing_bytes as f64,
            r.cpu_s,
            r.direct_s,
            r.direct_cpu_s,
            r.converge_s / r.direct_s,
        );
    }
    println!("converge: from the dial until both archives count the union; bytes: frames sent by both nodes (without length prefixes);");
    println!("sessions: initiator sessions of both nodes until then (a failed one is mostly a refusal: the peer was in a session);");
    println!("CPU: the whole process (both nodes); direct: the same messages inserted with ArchiveHandle::insert after validation, both nodes at once.");

    println!();
    println!(
        "Steady state: two archives of {n} messages in sync, store_sync.interval {} s, one initiator round each",
        STEADY_INTERVAL.as_secs()
    );
    println!("| round | ms | reconciliation bytes | transfer bytes | hashes in the 1 h window | naive bytes (32 per hash) | naive / sync |");
    println!("|---|---|---|---|---|---|---|");
    for (i, d) in steady.rounds.iter().enumerate() {
        let naive = 32.0 * steady.window_hashes as f64;
        let bytes = d.reconciliation_sent + d.transfer_sent;
        println!(
            "| {} | {:.1} | {} | {} | {} | {} | {:.0} |",
            i + 1,
            1000.0 * d.duration_sum / d.duration_count.max(1.0),
            d.reconciliation_sent,
            d.transfer_sent,
            steady.window_hashes,
            naive,
            naive / bytes.max(1.0),
        );
    }
    println!("ms: the initiator's round_duration_seconds (open, all frames, close); bytes: frames sent by both nodes.");
    Ok(())
}

/// One level: two archives of `n` messages, `half` only in A and `half` only in B.
async fn converge_level(
    data: &Dataset,
    validator: &Validator,
    base: &Path,
    level: u64,
    fraction: f64,
    half: u64,
    max_half: u64,
) -> anyhow::Result<LevelResult> {
    println!();
    println!(
        "{}%: {} messages only in A, {} only in B",
        fraction * 100.0,
        half,
        half
    );
    let pair = Pair::start(base, Duration::from_secs(300)).await?;
    let (sa, sb) = (store_of(&pair.a)?, store_of(&pair.b)?);
    // Filling up to n on both sides (not timed).
    let common = max_half - half;
    let common_bytes = |k: u64| data.extra_message(level, Part::Common, k).encode_to_vec();
    ingest(&sa, validator, common, common_bytes).await?;
    ingest(&sb, validator, common, common_bytes).await?;
    // The messages that will have to move: their insertion here is the reference.
    let only_a: Vec<Vec<u8>> = (0..half)
        .map(|k| data.extra_message(level, Part::OnlyA, k).encode_to_vec())
        .collect();
    let only_b: Vec<Vec<u8>> = (0..half)
        .map(|k| data.extra_message(level, Part::OnlyB, k).encode_to_vec())
        .collect();
    let missing_bytes = only_a.iter().chain(&only_b).map(Vec::len).sum::<usize>() as u64;
    let cpu0 = cpu_seconds()?;
    let started = Instant::now();
    let (ra, rb) = tokio::join!(
        ingest(&sa, validator, half, |k| only_a[k as usize].clone()),
        ingest(&sb, validator, half, |k| only_b[k as usize].clone()),
    );
    ra?;
    rb?;
    let direct_s = started.elapsed().as_secs_f64();
    let direct_cpu_s = cpu_seconds()? - cpu0;
    let (na, nb) = (message_count(&sa).await?, message_count(&sb).await?);
    let union = data.shared + max_half + half;
    anyhow::ensure!(
        na == data.shared + max_half && nb == na,
        "archives hold {na} and {nb} messages"
    );
    println!(
        "  A and B hold {na} messages each; direct insert of the {} differing: {direct_s:.2} s",
        2 * half
    );

    // Converge.
    let before = Counters::of(&[&pair.a, &pair.b]).await?;
    let cpu0 = cpu_seconds()?;
    let started = Instant::now();
    pair.connect().await?;
    let mut converged = None;
    loop {
        anyhow::ensure!(
            started.elapsed() < PATIENCE,
            "no convergence after {} s",
            PATIENCE.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        if converged.is_none()
            && message_count(&sa).await? == union
            && message_count(&sb).await? == union
        {
            converged = Some((started.elapsed().as_secs_f64(), cpu_seconds()? - cpu0));
        }
        // The figures count the whole first session, even if its last frames come after the
        // last message.
        if let Some((converge_s, cpu_s)) = converged {
            let now = Counters::of(&[&pair.a, &pair.b]).await?;
            if now.minus(&before).initiator_ok >= 1.0 {
                let sync = now.minus(&before);
                println!(
                    "  converged in {converge_s:.2} s: {} sent, {} gained, {} received but not stored; sessions: {} ok, {} failed (initiators), {} failed (responders)",
                    sync.messages_sent,
                    sync.gained,
                    sync.received_not_stored,
                    sync.initiator_ok,
                    sync.initiator_failed,
                    sync.responder_failed
                );
                pair.stop().await?;
                return Ok(LevelResult {
                    level: fraction,
                    missing: 2 * half,
                    missing_bytes,
                    converge_s,
                    cpu_s,
                    sync,
                    direct_s,
                    direct_cpu_s,
                });
            }
        }
    }
}

struct Steady {
    window_hashes: u64,
    rounds: Vec<Counters>,
}

/// Two archives of `n` in sync: the deltas of `rounds` single initiator rounds.
async fn steady_state(
    data: &Dataset,
    validator: &Validator,
    base: &Path,
    max_half: u64,
    rounds: usize,
) -> anyhow::Result<Steady> {
    println!();
    println!("steady state: two archives in sync ...");
    let pair = Pair::start(base, STEADY_INTERVAL).await?;
    let (sa, sb) = (store_of(&pair.a)?, store_of(&pair.b)?);
    let level = LEVELS.len() as u64;
    let bytes = |k: u64| data.extra_message(level, Part::Common, k).encode_to_vec();
    ingest(&sa, validator, max_half, bytes).await?;
    ingest(&sb, validator, max_half, bytes).await?;
    let n = message_count(&sa).await?;
    anyhow::ensure!(n == message_count(&sb).await?, "the archives differ");
    let nodes = [&pair.a, &pair.b];
    pair.connect().await?;
    // The first round after the start (catching up, finding nothing); from then on the
    // counters are read right after each round, so two readings enclose one round.
    let mut previous = Counters::of(&nodes).await?;
    previous = wait_for_round(&nodes, &previous).await?;
    let mut measured = Vec::new();
    let mut attempts = 0;
    while measured.len() < rounds {
        attempts += 1;
        anyhow::ensure!(attempts <= rounds * 4, "rounds keep failing or overlapping");
        let now = wait_for_round(&nodes, &previous).await?;
        let delta = now.minus(&previous);
        previous = now;
        if delta.initiator_ok == 1.0 && delta.initiator_failed == 0.0 {
            println!(
                "  round: {:.1} ms, {} reconciliation bytes",
                1000.0 * delta.duration_sum,
                delta.reconciliation_sent
            );
            measured.push(delta);
        }
    }
    anyhow::ensure!(
        message_count(&sa).await? == n && message_count(&sb).await? == n,
        "archives changed during the steady-state rounds"
    );
    pair.stop().await?;
    Ok(Steady {
        window_hashes: n,
        rounds: measured,
    })
}

/// Waits until the nodes' initiator rounds pass those of `before`; returns the counters then.
async fn wait_for_round(nodes: &[&Node], before: &Counters) -> anyhow::Result<Counters> {
    let started = Instant::now();
    loop {
        anyhow::ensure!(started.elapsed() < PATIENCE, "no sync round");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = Counters::of(nodes).await?;
        if now.initiator_rounds() > before.initiator_rounds() {
            return Ok(now);
        }
    }
}
