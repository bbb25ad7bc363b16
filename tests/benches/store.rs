//! B1/B2/B10 store benchmark: ingest through Roost's real write path against raw RocksDB puts
//! of the same bytes (with and without fsync), query latency over a 1M-message archive against
//! raw RocksDB seeks on the same files, and open time against a raw `DB::open`, in one run.
//!
//! - Ingest (B1): each message is generated as wire bytes, decoded and validated by the relay
//!   validator, then inserted with `ArchiveHandle::insert`, which resolves once the message's
//!   batch is committed (fsynced with `store.sync = true`): decode, validate, hash, index,
//!   RocksDB write, ack. `--window` inserts are in flight at once (concurrent clients; the
//!   writer groups them into batches). The reference writes the same bytes with raw
//!   `WriteBatch`es of `--window` puts (key = sha256 of the bytes), one thread, same sync mode.
//!   The messages are generated before either clock starts.
//!   Runs alternate Roost, raw, Roost, raw (`--pairs`); the table shows medians and ratios.
//! - Queries (B2): a node is filled with `--messages` messages (mix: 1 KiB 90%, 4 KiB 9%,
//!   140 KiB 1%; 1,000 content topics drawn by Zipf; one pubsub topic `/waku/2/rs/16/32`; an
//!   hour of timestamps). Then, closed loop, one query at a time: first pages (pubsub topic + 1
//!   content topic + 1 h window, 20 per page, backward, with data), 5 cursor pages after each,
//!   and lookups of 10 hashes (with data, and presence only). Each is timed three ways: in the
//!   store (`ArchiveHandle::query`: decode, check, read, encode, thread hop), end to end over
//!   libp2p on loopback (light client → node → back), and the raw RocksDB equivalent on the same
//!   files opened read-only (seek + 20 next on the index; with the 20 records fetched; cursor
//!   lookup first for cursor pages; multi_get for lookups).
//! - Open (B10): the store's open of the 1M archive (RocksDB open + loading its per-bucket
//!   counts) against a raw `DB::open` of the same directory; and a whole node's start to its
//!   first answered page.
//!
//! Nothing here is a test: it prints figures. Run in release:
//! `cargo bench -p roost-tests --bench store -- [--messages N] [--ingest N] [--window N] [--pairs N] [--queries N]`

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{stream::FuturesUnordered, StreamExt};
use libp2p::Multiaddr;
use rocksdb::{Options, ReadOptions, WriteBatch, WriteOptions, DB};
use roost_node::{
    client::Client,
    message::{now_nanos, MessageHash, WakuMessage},
    relay::Validator,
    store::{
        self,
        keys::{self, Position},
        rpc::StoreQueryRequest,
        Archive, InsertOutcome, RetentionPolicy, Tuning,
    },
    Config, Node,
};
use roost_tests::bench;
use sha2::{Digest, Sha256};

const TOPIC: &str = "/waku/2/rs/16/32";
const CONTENT_TOPICS: usize = 1000;
/// The dataset's timestamps span this much, ending now.
const SPAN: Duration = Duration::from_secs(3000);

struct Args {
    messages: u64,
    ingest: u64,
    window: usize,
    pairs: usize,
    queries: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    Ok(Args {
        messages: bench::flag("--messages", 1_000_000)?,
        ingest: bench::flag("--ingest", 100_000)?,
        window: bench::flag("--window", 256)?,
        pairs: bench::flag("--pairs", 3)?,
        queries: bench::flag("--queries", 1000)?,
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

fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Deterministic messages: message `i` is the same bytes on every side of a comparison.
struct Dataset {
    /// Incompressible bytes that payloads are cut from (real payloads are encrypted).
    pool: Vec<u8>,
    topics: Vec<String>,
    zipf: Vec<f64>,
    start_ts: i64,
    step_ns: i64,
}

impl Dataset {
    fn new(messages: u64) -> Dataset {
        let mut pool = Vec::with_capacity(256 * 1024);
        let mut block: [u8; 32] = Sha256::digest(b"roost store bench").into();
        while pool.len() < 256 * 1024 {
            pool.extend_from_slice(&block);
            block = Sha256::digest(block).into();
        }
        let weights: Vec<f64> = (1..=CONTENT_TOPICS).map(|k| 1.0 / k as f64).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let zipf = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        let span = SPAN.as_nanos() as i64;
        Dataset {
            pool,
            topics: (0..CONTENT_TOPICS)
                .map(|k| format!("/bench/1/topic-{k}/proto"))
                .collect(),
            zipf,
            start_ts: now_nanos() - span,
            step_ns: (span / messages.max(1) as i64).max(1),
        }
    }

    fn zipf_topic(&self, draw: u64) -> usize {
        let u = unit(draw);
        self.zipf
            .partition_point(|c| *c < u)
            .min(CONTENT_TOPICS - 1)
    }

    fn message(&self, i: u64) -> WakuMessage {
        let r = mix(i);
        let size = match unit(mix(r)) {
            x if x < 0.90 => 1024,
            x if x < 0.99 => 4096,
            _ => 140 * 1024,
        };
        let offset = (r as usize) % (self.pool.len() - size);
        let mut payload = self.pool[offset..offset + size].to_vec();
        payload[..8].copy_from_slice(&i.to_be_bytes());
        WakuMessage {
            payload,
            content_topic: self.topics[self.zipf_topic(mix(r ^ 0x5555))].clone(),
            timestamp: Some(self.start_ts + i as i64 * self.step_ns),
            ..Default::default()
        }
    }

    fn bytes(&self, i: u64) -> Vec<u8> {
        self.message(i).encode_to_vec()
    }
}

// === nodes ===

fn node_config(dir: &Path, sync: bool) -> Config {
    let mut config = roost_tests::test_config(dir);
    config.relay.cluster_id = 16;
    config.relay.shards = vec![32];
    config.network.ws_enabled = false;
    config.store.sync = sync;
    // One reader asks thousands of queries: the store quota (200/min per peer) would answer
    // most of them 429. B2 measures the store, not the throttle (B9 does).
    config.throttle.enabled = false;
    config.store.retention = RetentionPolicy(Vec::new());
    // The dataset's timestamps span the last hour; accept them all.
    config.store.timestamp_window = Duration::from_secs(2 * 3600);
    config
}

/// Where the wire bytes of message `i` come from: generated on the fly (the 1M fill) or
/// generated before the clock starts (the timed ingest runs, so both sides time only writing).
#[derive(Clone)]
enum Source {
    Generate(Arc<Dataset>),
    Ready(Arc<Vec<Vec<u8>>>),
}

impl Source {
    fn bytes(&self, i: u64) -> Vec<u8> {
        match self {
            Source::Generate(data) => data.bytes(i),
            Source::Ready(all) => all[i as usize].clone(),
        }
    }
}

/// Inserts messages `from..to` through the real write path; returns ack latencies (s).
async fn roost_ingest(
    node: &Node,
    data: &Source,
    validator: &Arc<Validator>,
    from: u64,
    to: u64,
    window: usize,
) -> anyhow::Result<Vec<f64>> {
    let store = node
        .handle()
        .store()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("node has no store"))?;
    let mut inflight = FuturesUnordered::new();
    let mut latencies = Vec::with_capacity((to - from) as usize);
    for i in from..to {
        while inflight.len() >= window {
            if let Some(r) = inflight.next().await {
                latencies.push(r?);
            }
        }
        let bytes = data.bytes(i);
        let store = store.clone();
        let validator = validator.clone();
        inflight.push(async move {
            let started = Instant::now();
            let message = validator
                .validate(TOPIC, &bytes)
                .map_err(|e| anyhow::anyhow!("invalid bench message: {e}"))?;
            match store.insert(TOPIC, message).await? {
                InsertOutcome::Stored => Ok(started.elapsed().as_secs_f64()),
                other => Err(anyhow::anyhow!("message {i} not stored: {other:?}")),
            }
        });
    }
    while let Some(r) = inflight.next().await {
        latencies.push(r?);
    }
    Ok(latencies)
}

/// The same bytes into a bare RocksDB: key = sha256(bytes), `window` puts per batch.
fn raw_ingest(dir: &Path, data: &Source, n: u64, window: usize, sync: bool) -> anyhow::Result<()> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    let db = DB::open(&opts, dir)?;
    let mut write = WriteOptions::default();
    write.set_sync(sync);
    let mut batch = WriteBatch::default();
    for i in 0..n {
        let bytes = data.bytes(i);
        let key: [u8; 32] = Sha256::digest(&bytes).into();
        batch.put(key, &bytes);
        if batch.len() >= window {
            db.write_opt(std::mem::take(&mut batch), &write)?;
        }
    }
    if !batch.is_empty() {
        db.write_opt(batch, &write)?;
    }
    Ok(())
}

fn metric(text: &str, name: &str) -> f64 {
    roost_tests::metric_sum(text, name, &[])
}

// === statistics ===

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx.min(v.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    percentile(&mut v, 0.5)
}

fn ms(s: f64) -> f64 {
    s * 1000.0
}

// === main ===

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    println!(
        "Roost store benchmark: ingest {} msgs x {} pairs per mode (window {}), queries over {} msgs",
        args.ingest, args.pairs, args.window, args.messages
    );
    println!("message mix: 1 KiB 90%, 4 KiB 9%, 140 KiB 1%; {CONTENT_TOPICS} content topics (Zipf); {TOPIC}");
    ingest_phase(&args).await?;
    query_phase(&args).await
}

struct IngestRun {
    roost: bool,
    msgs_per_sec: f64,
    p99_ms: f64,
    batch: f64,
}

async fn ingest_phase(args: &Args) -> anyhow::Result<()> {
    let dataset = Dataset::new(args.ingest);
    let data = Source::Ready(Arc::new(
        (0..args.ingest).map(|i| dataset.bytes(i)).collect(),
    ));
    let validator = Arc::new(Validator::new(&node_config(Path::new("."), true).relay));
    let mut table = Vec::new();
    for sync in [false, true] {
        // Warm-up (not reported).
        one_ingest(
            true,
            sync,
            &data,
            &validator,
            args.ingest.min(5000),
            args.window,
        )
        .await?;
        one_ingest(
            false,
            sync,
            &data,
            &validator,
            args.ingest.min(5000),
            args.window,
        )
        .await?;
        let mut runs = Vec::new();
        for pair in 0..args.pairs {
            for roost in [true, false] {
                let r =
                    one_ingest(roost, sync, &data, &validator, args.ingest, args.window).await?;
                println!(
                    "  {} pair {} {:<5} {:>9.0} msgs/s{}",
                    if sync { "fsync   " } else { "no fsync" },
                    pair + 1,
                    if roost { "roost" } else { "raw" },
                    r.msgs_per_sec,
                    if roost {
                        format!("  ack p99 {:.2} ms  mean batch {:.0}", r.p99_ms, r.batch)
                    } else {
                        String::new()
                    }
                );
                runs.push(r);
            }
        }
        table.push((sync, runs));
    }
    println!();
    println!(
        "B1 ingest ({} msgs per run, {} in flight)",
        args.ingest, args.window
    );
    println!("| mode | roost msgs/s | raw RocksDB msgs/s | ratio (min-max) | roost ack p99 ms | roost mean batch |");
    println!("|---|---|---|---|---|---|");
    for (sync, runs) in &table {
        let roost: Vec<&IngestRun> = runs.iter().filter(|r| r.roost).collect();
        let raw: Vec<&IngestRun> = runs.iter().filter(|r| !r.roost).collect();
        let ratios: Vec<f64> = roost
            .iter()
            .zip(&raw)
            .map(|(a, b)| a.msgs_per_sec / b.msgs_per_sec)
            .collect();
        let lo = ratios.iter().cloned().fold(f64::MAX, f64::min);
        let hi = ratios.iter().cloned().fold(f64::MIN, f64::max);
        let r_med = median(roost.iter().map(|r| r.msgs_per_sec).collect());
        let w_med = median(raw.iter().map(|r| r.msgs_per_sec).collect());
        println!(
            "| {} | {:.0} | {:.0} | {:.2} ({:.2}-{:.2}) | {:.2} | {:.0} |",
            if *sync {
                "WAL fsync per batch"
            } else {
                "WAL, no fsync"
            },
            r_med,
            w_med,
            r_med / w_med,
            lo,
            hi,
            median(roost.iter().map(|r| r.p99_ms).collect()),
            median(roost.iter().map(|r| r.batch).collect()),
        );
    }
    Ok(())
}

async fn one_ingest(
    roost: bool,
    sync: bool,
    data: &Source,
    validator: &Arc<Validator>,
    n: u64,
    window: usize,
) -> anyhow::Result<IngestRun> {
    let dir = tempfile::tempdir()?;
    if roost {
        let node = Node::start(node_config(dir.path(), sync)).await?;
        let started = Instant::now();
        let mut lat = roost_ingest(&node, data, validator, 0, n, window).await?;
        let elapsed = started.elapsed().as_secs_f64();
        let http = node.handle().info().http_address.expect("http on");
        let (_, text) = roost_tests::http_get(&format!("http://{http}/metrics")).await;
        let batches = metric(&text, "roost_store_write_batch_messages_count");
        let batched = metric(&text, "roost_store_write_batch_messages_sum");
        node.stop().await.map_err(|e| anyhow::anyhow!(e))?;
        Ok(IngestRun {
            roost,
            msgs_per_sec: n as f64 / elapsed,
            p99_ms: ms(percentile(&mut lat, 0.99)),
            batch: if batches > 0.0 {
                batched / batches
            } else {
                0.0
            },
        })
    } else {
        let path = dir.path().join("raw");
        let data = data.clone();
        let elapsed = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            raw_ingest(&path, &data, n, window, sync).map(|_| started.elapsed().as_secs_f64())
        })
        .await??;
        Ok(IngestRun {
            roost,
            msgs_per_sec: n as f64 / elapsed,
            p99_ms: f64::NAN,
            batch: window as f64,
        })
    }
}

/// One row of the query table: three sets of latencies (seconds).
#[derive(Default)]
struct Lat {
    store: Vec<f64>,
    e2e: Vec<f64>,
    raw: Vec<f64>,
    raw_with_records: Vec<f64>,
}

async fn query_phase(args: &Args) -> anyhow::Result<()> {
    let data = Arc::new(Dataset::new(args.messages));
    let validator = Arc::new(Validator::new(&node_config(Path::new("."), false).relay));
    let dir = tempfile::tempdir()?;
    let node = Node::start(node_config(dir.path(), false)).await?;
    println!();
    println!(
        "filling the archive with {} messages through the write path (no fsync) ...",
        args.messages
    );
    let started = Instant::now();
    let source = Source::Generate(data.clone());
    roost_ingest(&node, &source, &validator, 0, args.messages, args.window).await?;
    let fill = started.elapsed().as_secs_f64();
    let store_dir = store::store_path(dir.path());
    let summary = node.handle().store().expect("store").summary().await?;
    println!(
        "  {} messages in {:.1} s ({:.0} msgs/s), {:.2} GB logical, {:.2} GB on disk",
        summary.messages,
        fill,
        args.messages as f64 / fill,
        summary.bytes as f64 / 1e9,
        store::dir_size(&store_dir) as f64 / 1e9
    );

    let reader = Client::start(16).await?;
    let addr: Multiaddr = roost_tests::loopback(&node.handle().info().tcp_addresses);
    let handle = node.handle();
    let store = handle.store().expect("store").clone();
    let raw = DB::open_cf_for_read_only(
        &Options::default(),
        &store_dir,
        keys::COLUMN_FAMILIES,
        false,
    )?;
    let now = now_nanos();
    let window_start = now - 3_600_000_000_000;

    let mut first = Lat::default();
    let mut cursor = Lat::default();
    let mut lookup = Lat::default();
    let mut presence = Lat::default();
    // Warm-up: a few of each, not reported.
    for q in 0..(args.queries + 50) {
        let record = q >= 50;
        let topic = &data.topics[data.zipf_topic(mix(q as u64 ^ 0xabcd))];
        let request = StoreQueryRequest::new(format!("q{q}"))
            .content(TOPIC, [topic.clone()])
            .time_range(Some(window_start), Some(now + 60_000_000_000))
            .limit(20);
        let (t_store, response) = timed(store.query(&request)).await;
        let (t_e2e, e2e) = timed(reader.store_query(&addr, &request)).await;
        anyhow::ensure!(
            e2e?.messages == response.messages,
            "end-to-end answer differs"
        );
        let t_raw = raw_page(&raw, topic, window_start, now + 60_000_000_000, None, false)?;
        let t_raw_rec = raw_page(&raw, topic, window_start, now + 60_000_000_000, None, true)?;
        if record {
            first.store.push(t_store);
            first.e2e.push(t_e2e);
            first.raw.push(t_raw);
            first.raw_with_records.push(t_raw_rec);
        }
        // Five cursor pages after it.
        let mut next = response.cursor();
        for _ in 0..5 {
            let Some(c) = next else { break };
            let request = request.clone().cursor(Some(c));
            let (t_store, response) = timed(store.query(&request)).await;
            let (t_e2e, e2e) = timed(reader.store_query(&addr, &request)).await;
            anyhow::ensure!(
                e2e?.messages == response.messages,
                "end-to-end answer differs"
            );
            let t_raw = raw_page(
                &raw,
                topic,
                window_start,
                now + 60_000_000_000,
                Some(c),
                false,
            )?;
            let t_raw_rec = raw_page(
                &raw,
                topic,
                window_start,
                now + 60_000_000_000,
                Some(c),
                true,
            )?;
            if record {
                cursor.store.push(t_store);
                cursor.e2e.push(t_e2e);
                cursor.raw.push(t_raw);
                cursor.raw_with_records.push(t_raw_rec);
            }
            next = response.cursor();
        }
        // Lookups of 10 stored hashes, with data and presence only.
        let spread = (args.messages / 10).max(1);
        let base = mix(q as u64 ^ 0x1234) % args.messages;
        let hashes: Vec<MessageHash> = (0..10u64.min(args.messages))
            .map(|k| {
                data.message((base + k * spread) % args.messages)
                    .hash(TOPIC)
            })
            .collect();
        for (with_data, lat) in [(true, &mut lookup), (false, &mut presence)] {
            let request = StoreQueryRequest::new(format!("h{q}"))
                .hashes(hashes.clone())
                .include_data(with_data);
            let (t_store, response) = timed(store.query(&request)).await;
            anyhow::ensure!(
                response.messages.len() == hashes.len(),
                "lookup found {} of {}",
                response.messages.len(),
                hashes.len()
            );
            let (t_e2e, e2e) = timed(reader.store_query(&addr, &request)).await;
            anyhow::ensure!(
                e2e?.messages == response.messages,
                "end-to-end lookup differs"
            );
            let t_raw = raw_lookup(&raw, &hashes, false)?;
            let t_raw_rec = if with_data {
                Some(raw_lookup(&raw, &hashes, true)?)
            } else {
                None
            };
            if record {
                lat.store.push(t_store);
                lat.e2e.push(t_e2e);
                lat.raw.push(t_raw);
                lat.raw_with_records.extend(t_raw_rec);
            }
        }
    }
    println!();
    println!(
        "B2 queries over {} messages ({} first pages, closed loop, one client)",
        summary.messages, args.queries
    );
    println!("| query | store p50 ms | store p99 ms | end-to-end p50 ms | end-to-end p99 ms | raw seek+next p50 ms | raw p99 ms | raw + records p50 ms | raw + records p99 ms | store/raw+records p50 |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, lat) in [
        ("first page (1 topic, 1 h, 20, backward, data)", &mut first),
        ("cursor page (next 20)", &mut cursor),
        ("lookup 10 hashes (data)", &mut lookup),
        ("presence 10 hashes", &mut presence),
    ] {
        let with_records = if lat.raw_with_records.is_empty() {
            lat.raw.clone()
        } else {
            lat.raw_with_records.clone()
        };
        let mut wr = with_records;
        let s50 = ms(percentile(&mut lat.store, 0.5));
        let r50 = ms(percentile(&mut wr, 0.5));
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} |",
            s50,
            ms(percentile(&mut lat.store, 0.99)),
            ms(percentile(&mut lat.e2e, 0.5)),
            ms(percentile(&mut lat.e2e, 0.99)),
            ms(percentile(&mut lat.raw, 0.5)),
            ms(percentile(&mut lat.raw, 0.99)),
            r50,
            ms(percentile(&mut wr, 0.99)),
            s50 / r50,
        );
    }
    println!("raw seek+next: the index walk alone (seek + 21 entries; for cursor pages after the cursor's lookup);");
    println!("raw + records: plus the multi_get of the 20 records. Lookups: multi_get on the hash index, then of the records.");
    println!("store: ArchiveHandle::query (decode, check, read, encode, query-thread hop); end-to-end: light client over libp2p on loopback.");
    drop(raw);
    reader.stop().await;
    node.stop().await.map_err(|e| anyhow::anyhow!(e))?;

    // B10: open time.
    let mut store_open = Vec::new();
    let mut raw_open = Vec::new();
    let mut node_first_page = Vec::new();
    // The node stopped cleanly (memtables flushed), so neither side replays a log; the order
    // alternates so page-cache warmth favours neither.
    for pair in 0..args.pairs {
        for raw_first in [pair % 2 == 1, pair % 2 == 0] {
            let started = Instant::now();
            if raw_first {
                let mut opts = Options::default();
                opts.create_if_missing(false);
                let _db = DB::open_cf(&opts, &store_dir, keys::COLUMN_FAMILIES)?;
                raw_open.push(started.elapsed().as_secs_f64());
            } else {
                let archive = Archive::open(&store_dir, &Tuning::default())?;
                let stats = archive.load_stats()?;
                anyhow::ensure!(stats.messages == summary.messages);
                store_open.push(started.elapsed().as_secs_f64());
            }
        }
        let started = Instant::now();
        let node = Node::start(node_config(dir.path(), false)).await?;
        let page = node
            .handle()
            .store()
            .expect("store")
            .query(&StoreQueryRequest::new("first").limit(20))
            .await;
        anyhow::ensure!(page.messages.len() == 20);
        node_first_page.push(started.elapsed().as_secs_f64());
        node.stop().await.map_err(|e| anyhow::anyhow!(e))?;
    }
    println!();
    println!(
        "B10 open of the {}-message archive (median of {})",
        summary.messages, args.pairs
    );
    println!("| open | ms |");
    println!("|---|---|");
    let so = median(store_open);
    let ro = median(raw_open);
    println!(
        "| store open (RocksDB + per-bucket counts) | {:.1} |",
        ms(so)
    );
    println!("| raw DB::open of the same directory | {:.1} |", ms(ro));
    println!("| ratio | {:.2} |", so / ro);
    println!(
        "| whole node start to first page | {:.1} |",
        ms(median(node_first_page))
    );
    Ok(())
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> (f64, T) {
    let started = Instant::now();
    let out = f.await;
    (started.elapsed().as_secs_f64(), out)
}

/// The raw RocksDB work of one backward page of 20 on one content topic.
fn raw_page(
    db: &DB,
    topic: &str,
    start: i64,
    end: i64,
    cursor: Option<MessageHash>,
    with_records: bool,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let topics = db.cf_handle(keys::CF_TOPICS).expect("topics cf");
    let prefix = keys::topic_prefix(TOPIC, topic);
    let mut upper = prefix.clone();
    match cursor {
        Some(c) => {
            let hashes = db.cf_handle(keys::CF_HASHES).expect("hashes cf");
            let ts = db
                .get_pinned_cf(hashes, c.0)?
                .and_then(|v| keys::decode_ts(&v))
                .ok_or_else(|| anyhow::anyhow!("cursor not found"))?;
            upper.extend_from_slice(&Position::new(ts, &c).to_key());
        }
        None => upper.extend_from_slice(&Position::at(end).to_key()),
    }
    let mut lower = prefix;
    lower.extend_from_slice(&Position::at(start).to_key());
    let mut opts = ReadOptions::default();
    opts.set_iterate_lower_bound(lower);
    opts.set_iterate_upper_bound(upper);
    let mut it = db.raw_iterator_cf_opt(topics, opts);
    it.seek_to_last();
    let mut keys_found = Vec::with_capacity(21);
    while keys_found.len() < 21 {
        let Some(key) = it.key() else { break };
        if let Some(p) = Position::from_key_suffix(key) {
            keys_found.push(p.to_key());
        }
        it.prev();
    }
    if with_records {
        let messages = db.cf_handle(keys::CF_MESSAGES).expect("messages cf");
        for v in db.batched_multi_get_cf(messages, keys_found.iter().take(20), false) {
            anyhow::ensure!(v?.is_some(), "record missing");
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The raw RocksDB work of a lookup of `hashes`.
fn raw_lookup(db: &DB, hashes: &[MessageHash], with_records: bool) -> anyhow::Result<f64> {
    let started = Instant::now();
    let cf = db.cf_handle(keys::CF_HASHES).expect("hashes cf");
    let mut positions = Vec::with_capacity(hashes.len());
    for (h, v) in hashes
        .iter()
        .zip(db.batched_multi_get_cf(cf, hashes.iter().map(|h| h.0), false))
    {
        if let Some(ts) = v?.and_then(|v| keys::decode_ts(&v)) {
            positions.push(Position::new(ts, h).to_key());
        }
    }
    if with_records {
        let messages = db.cf_handle(keys::CF_MESSAGES).expect("messages cf");
        for v in db.batched_multi_get_cf(messages, positions.iter(), false) {
            anyhow::ensure!(v?.is_some(), "record missing");
        }
    }
    Ok(started.elapsed().as_secs_f64())
}
