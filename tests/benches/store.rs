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
//!   and lookups of 10 hashes (with data, and presence only). Each is timed three ways (taking
//!   turns at going first, so that none always meets the pages another just read): in the
//!   store (`ArchiveHandle::query`: decode, check, read, encode, thread hop), end to end over
//!   libp2p on loopback (light client → node → back), and the raw RocksDB equivalent on the same
//!   files opened read-only (`Archive::open_read_only`, whose replay of the live log knows the
//!   fingerprints' merges; then plain RocksDB calls: seek + 20 next on the index; with the 20
//!   records fetched; cursor lookup first for cursor pages; multi_get for lookups).
//! - Open (B10): the store's open of the 1M archive (RocksDB open + loading its per-bucket
//!   counts) against a raw `DB::open` of the same directory; and a whole node's start to its
//!   first answered page.
//!
//! The PostgreSQL backend (`store.backend = "postgres"`) runs side by side in the same run, on
//! a private cluster (`roost_tests::postgres::PgCluster`: stock settings as `initdb` makes them,
//! fsync and `synchronous_commit` on, loopback TCP), against raw PostgreSQL through
//! tokio-postgres on the same cluster and against the RocksDB figures above:
//! - Ingest (durable): Roost on PostgreSQL (`ArchiveHandle::insert` through the node, the same
//!   messages, `--window` in flight, `store.sync = true`, i.e. `synchronous_commit = on`) against
//!   raw PostgreSQL doing the engine's inserts: per transaction of `--window` messages (sorted by
//!   hash, as the engine locks them), `INSERT INTO messages_lookup … SELECT * FROM unnest(…) ON
//!   CONFLICT DO NOTHING RETURNING hash`, then the returned ones into `messages` the same way,
//!   `COMMIT`; one connection, statements prepared before the clock, hashes and topics computed
//!   before the clock too (so the reference times the database work only). Each run gets a fresh
//!   database (schema and partitions made before the clock) after a `CHECKPOINT`; runs alternate
//!   Roost, raw (`--pairs`); the table gives medians, Roost-PG / raw PG and Roost-PG /
//!   Roost-RocksDB (the fsync row of B1).
//! - Queries: a PostgreSQL archive is filled with the same `--messages` messages through the node
//!   (the write path, `synchronous_commit = off`, `--window` in flight: the fill rate is printed),
//!   then `VACUUM ANALYZE` (what autovacuum does soon after such a fill; it keeps plans and
//!   visibility maps out of the timings). The same closed loop of queries (the same topics,
//!   time window, cursors and hashes as the RocksDB part) is timed in the store
//!   (`ArchiveHandle::query`), end to end over libp2p, and as raw PostgreSQL: the very SELECTs
//!   the engine issues (`store/postgres/query.rs`: the page with `LIMIT 21`, the cursor's
//!   `messages_lookup` probe first for cursor pages, the `messages_lookup` JOIN `messages` for
//!   hash lookups), prepared once with custom plans (`plan_cache_mode = force_custom_plan`,
//!   planned for their parameters as the engine's are: the reference), and also sent as text
//!   the way the engine sends them (tokio-postgres then parses each one: a round trip more;
//!   and pages are also timed in the engine's first shape, `= ANY(array)` for the topics, in a
//!   small table of its own, to show what that SQL shape cost on this server; the order of these
//!   raw forms is drawn per query). The raw pages' hashes
//!   are checked against the store's answers. Ratios: store / raw PG (prepared) at p50 and p99,
//!   and Roost-PG / Roost-RocksDB (store and end to end).
//! - `--backends rocksdb,postgres` picks the backends (default: both when a cluster starts, i.e.
//!   PostgreSQL's server binaries are installed; else RocksDB only, with a note). The cluster
//!   and its temp dir are removed at the end.
//!
//! Nothing here is a test: it prints figures. Run in release:
//! `cargo bench -p roost-tests --bench store -- [--messages N] [--ingest N] [--window N] [--pairs N] [--queries N] [--backends rocksdb,postgres]`

use std::{
    collections::HashSet,
    path::Path,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc,
    },
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
        Archive, ArchiveHandle, Backend, InsertOutcome, RetentionPolicy, Tuning,
    },
    Config, Node,
};
use roost_tests::{bench, postgres::PgCluster};
use sha2::{Digest, Sha256};
use tokio_postgres::{Client as PgClient, Row, Statement, ToStatement};

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
    /// `--backends`: RocksDB's part.
    rocksdb: bool,
    /// `--backends`: PostgreSQL's part.
    postgres: bool,
    /// Whether `--backends` was given (then a cluster that cannot start is an error).
    backends_given: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let backends: String = bench::flag("--backends", String::new())?;
    let mut args = Args {
        messages: bench::flag("--messages", 1_000_000)?,
        ingest: bench::flag("--ingest", 100_000)?,
        window: bench::flag("--window", 256)?,
        pairs: bench::flag("--pairs", 3)?,
        queries: bench::flag("--queries", 1000)?,
        rocksdb: backends.is_empty(),
        postgres: backends.is_empty(),
        backends_given: !backends.is_empty(),
    };
    for backend in backends.split(',').filter(|b| !b.is_empty()) {
        match backend.trim() {
            "rocksdb" => args.rocksdb = true,
            "postgres" | "postgresql" => args.postgres = true,
            other => anyhow::bail!("--backends {backends}: {other} is not rocksdb or postgres"),
        }
    }
    anyhow::ensure!(args.rocksdb || args.postgres, "--backends names no backend");
    Ok(args)
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

async fn run(mut args: Args) -> anyhow::Result<()> {
    println!(
        "Roost store benchmark: ingest {} msgs x {} pairs per mode (window {}), queries over {} msgs",
        args.ingest, args.pairs, args.window, args.messages
    );
    println!("message mix: 1 KiB 90%, 4 KiB 9%, 140 KiB 1%; {CONTENT_TOPICS} content topics (Zipf); {TOPIC}");
    let pg = if args.postgres {
        match Pg::start() {
            Ok(pg) => Some(pg),
            Err(e) if !args.backends_given => {
                println!(
                    "note: PostgreSQL part skipped, no private cluster could start ({e:#}); \
                     RocksDB only (`--backends rocksdb` says so without trying)"
                );
                args.postgres = false;
                None
            }
            Err(e) => return Err(e.context("--backends postgres")),
        }
    } else {
        None
    };
    println!(
        "backends: {}",
        match (args.rocksdb, args.postgres) {
            (true, true) => "rocksdb, postgres (side by side)",
            (true, false) => "rocksdb",
            _ => "postgres",
        }
    );
    let ingest = Arc::new(Dataset::new(args.ingest));
    let ingest_data = Source::Ready(Arc::new(
        (0..args.ingest).map(|i| ingest.bytes(i)).collect(),
    ));
    let rocks_ingest = if args.rocksdb {
        Some(ingest_phase(&args, &ingest_data).await?)
    } else {
        None
    };
    if let Some(pg) = &pg {
        pg_ingest_phase(&args, pg, &ingest, &ingest_data, rocks_ingest).await?;
    }
    drop(ingest_data);
    let data = Arc::new(Dataset::new(args.messages));
    let rocks_queries = if args.rocksdb {
        Some(query_phase(&args, &data).await?)
    } else {
        None
    };
    if let Some(pg) = pg {
        pg_query_phase(&args, &pg, &data, rocks_queries.as_ref()).await?;
        let dir = pg.cluster.dir().to_path_buf();
        drop(pg);
        println!();
        println!(
            "PostgreSQL cluster stopped and removed ({})",
            if dir.exists() {
                "its temp dir is still there"
            } else {
                "temp dir gone"
            }
        );
    }
    Ok(())
}

struct IngestRun {
    roost: bool,
    msgs_per_sec: f64,
    p99_ms: f64,
    batch: f64,
}

/// Roost's runs of an ingest table, the two sides' median rates, and the spread of the
/// round-by-round ratios (Roost's run against the raw run of the same round).
struct IngestSummary<'a> {
    roost: Vec<&'a IngestRun>,
    r_med: f64,
    w_med: f64,
    lo: f64,
    hi: f64,
}

impl<'a> IngestSummary<'a> {
    fn of(runs: &'a [IngestRun]) -> Self {
        let roost: Vec<&IngestRun> = runs.iter().filter(|r| r.roost).collect();
        let raw: Vec<&IngestRun> = runs.iter().filter(|r| !r.roost).collect();
        let ratios: Vec<f64> = roost
            .iter()
            .zip(&raw)
            .map(|(a, b)| a.msgs_per_sec / b.msgs_per_sec)
            .collect();
        IngestSummary {
            lo: ratios.iter().cloned().fold(f64::MAX, f64::min),
            hi: ratios.iter().cloned().fold(f64::MIN, f64::max),
            r_med: median(roost.iter().map(|r| r.msgs_per_sec).collect()),
            w_med: median(raw.iter().map(|r| r.msgs_per_sec).collect()),
            roost,
        }
    }
}

/// Runs B1 on RocksDB; returns Roost's median msgs/s with fsync (the durable mode).
async fn ingest_phase(args: &Args, data: &Source) -> anyhow::Result<f64> {
    let validator = Arc::new(Validator::new(&node_config(Path::new("."), true).relay));
    let mut table = Vec::new();
    for sync in [false, true] {
        // Warm-up (not reported).
        one_ingest(
            true,
            sync,
            data,
            &validator,
            args.ingest.min(5000),
            args.window,
        )
        .await?;
        one_ingest(
            false,
            sync,
            data,
            &validator,
            args.ingest.min(5000),
            args.window,
        )
        .await?;
        let mut runs = Vec::new();
        for pair in 0..args.pairs {
            for roost in [true, false] {
                let r = one_ingest(roost, sync, data, &validator, args.ingest, args.window).await?;
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
    let mut durable = f64::NAN;
    for (sync, runs) in &table {
        let IngestSummary {
            roost,
            r_med,
            w_med,
            lo,
            hi,
        } = IngestSummary::of(runs);
        if *sync {
            durable = r_med;
        }
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
    Ok(durable)
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
        roost_run(node_config(dir.path(), sync), data, validator, n, window).await
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

/// One timed ingest through a node started with `config`: messages `0..n`, `window` in flight.
async fn roost_run(
    config: Config,
    data: &Source,
    validator: &Arc<Validator>,
    n: u64,
    window: usize,
) -> anyhow::Result<IngestRun> {
    let node = Node::start(config).await?;
    let started = Instant::now();
    let mut lat = roost_ingest(&node, data, validator, 0, n, window).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let http = node.handle().info().http_address.expect("http on");
    let (_, text) = roost_tests::http_get(&format!("http://{http}/metrics")).await;
    let batches = metric(&text, "roost_store_write_batch_messages_count");
    let batched = metric(&text, "roost_store_write_batch_messages_sum");
    node.stop().await.map_err(|e| anyhow::anyhow!(e))?;
    Ok(IngestRun {
        roost: true,
        msgs_per_sec: n as f64 / elapsed,
        p99_ms: ms(percentile(&mut lat, 0.99)),
        batch: if batches > 0.0 {
            batched / batches
        } else {
            0.0
        },
    })
}

/// One row of the query table: sets of latencies (seconds).
#[derive(Default)]
struct Lat {
    store: Vec<f64>,
    e2e: Vec<f64>,
    /// RocksDB: the index walk alone. PostgreSQL: unused.
    raw: Vec<f64>,
    /// RocksDB: plus the records. PostgreSQL: the engine's SELECTs, prepared once.
    raw_with_records: Vec<f64>,
    /// PostgreSQL: the same SELECTs sent as text, as the engine sends them.
    raw_unprepared: Vec<f64>,
    /// PostgreSQL pages: prepared with `=` for the topics instead of `= ANY`.
    raw_scalar: Vec<f64>,
}

/// Medians and tails of one backend's query rows, for the other backend's table.
#[derive(Clone, Copy)]
struct QueryRow {
    store50: f64,
    store99: f64,
    e2e50: f64,
    e2e99: f64,
}

impl QueryRow {
    fn of(lat: &mut Lat) -> QueryRow {
        QueryRow {
            store50: percentile(&mut lat.store, 0.5),
            store99: percentile(&mut lat.store, 0.99),
            e2e50: percentile(&mut lat.e2e, 0.5),
            e2e99: percentile(&mut lat.e2e, 0.99),
        }
    }
}

/// What the RocksDB query part hands the PostgreSQL one: its time window and figures.
struct RocksQueries {
    window: (i64, i64),
    rows: [QueryRow; 4],
    first_page_start: f64,
}

const QUERY_NAMES: [&str; 4] = [
    "first page (1 topic, 1 h, 20, backward, data)",
    "cursor page (next 20)",
    "lookup 10 hashes (data)",
    "presence 10 hashes",
];

async fn query_phase(args: &Args, data: &Arc<Dataset>) -> anyhow::Result<RocksQueries> {
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
    // Read-only on the same files, as the store opens them for operator commands: the live
    // write-ahead log holds merges of the fingerprints family (store sync), whose merge
    // operator the replay needs (without it RocksDB stops the replay and refuses the open:
    // "SST file is ahead of WALs").
    let raw_archive = Archive::open_read_only(&store_dir)?;
    let raw = raw_archive.db();
    let now = now_nanos();
    let window = (now - 3_600_000_000_000, now + 60_000_000_000);
    let (mut lats, _) = query_loop(
        args,
        data,
        &store,
        &reader,
        &addr,
        window,
        RawDb::Rocks(raw),
    )
    .await?;
    let [first, cursor, lookup, presence] = &mut lats;
    println!();
    println!(
        "B2 queries over {} messages ({} first pages, closed loop, one client)",
        summary.messages, args.queries
    );
    println!("| query | store p50 ms | store p99 ms | end-to-end p50 ms | end-to-end p99 ms | raw seek+next p50 ms | raw p99 ms | raw + records p50 ms | raw + records p99 ms | store/raw+records p50 |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, lat) in QUERY_NAMES
        .into_iter()
        .zip([first, cursor, lookup, presence])
    {
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
    let rows = lats.each_mut().map(QueryRow::of);
    drop(raw_archive);
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
    let first_page_start = median(node_first_page);
    println!(
        "| whole node start to first page | {:.1} |",
        ms(first_page_start)
    );
    Ok(RocksQueries {
        window,
        rows,
        first_page_start,
    })
}

/// The raw reference of a query loop: the RocksDB files read-only, or a PostgreSQL connection.
enum RawDb<'a> {
    Rocks(&'a DB),
    Pg(&'a PgRaw),
}

/// Raw timings of one query (s): the index walk alone, with the records, and (PostgreSQL) the
/// SELECTs sent as text and pages with `=` for their topics; plus (PostgreSQL) the hashes the
/// prepared SELECT found, to check.
#[derive(Default)]
struct RawTimes {
    index: Option<f64>,
    records: Option<f64>,
    unprepared: Option<f64>,
    scalar: Option<f64>,
    found: Option<Vec<[u8; 32]>>,
}

/// How raw PostgreSQL sends a query: the engine's SELECT prepared, the same as text (as the
/// engine sends it), or (pages) prepared with `=` for the topics.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Form {
    Prepared,
    Text,
    Scalar,
}

impl RawDb<'_> {
    async fn page(
        &self,
        topic: &str,
        (start, end): (i64, i64),
        cursor: Option<MessageHash>,
    ) -> anyhow::Result<RawTimes> {
        match self {
            RawDb::Rocks(db) => Ok(RawTimes {
                index: Some(raw_page(db, topic, start, end, cursor, false)?),
                records: Some(raw_page(db, topic, start, end, cursor, true)?),
                ..RawTimes::default()
            }),
            RawDb::Pg(pg) => {
                let mut times = RawTimes::default();
                for form in pg.order(&[Form::Prepared, Form::Text, Form::Scalar]) {
                    let (t, found) = pg.page(topic, start, end, cursor, form).await?;
                    match form {
                        Form::Prepared => {
                            times.records = Some(t);
                            times.found = Some(found);
                        }
                        Form::Text => times.unprepared = Some(t),
                        Form::Scalar => times.scalar = Some(t),
                    }
                }
                Ok(times)
            }
        }
    }

    async fn lookup(&self, hashes: &[MessageHash], with_data: bool) -> anyhow::Result<RawTimes> {
        match self {
            RawDb::Rocks(db) => Ok(RawTimes {
                index: Some(raw_lookup(db, hashes, false)?),
                records: if with_data {
                    Some(raw_lookup(db, hashes, true)?)
                } else {
                    None
                },
                ..RawTimes::default()
            }),
            RawDb::Pg(pg) => {
                let mut times = RawTimes::default();
                for form in pg.order(&[Form::Prepared, Form::Text]) {
                    let (t, found) = pg.lookup(hashes, with_data, form).await?;
                    if form == Form::Text {
                        times.unprepared = Some(t);
                    } else {
                        times.records = Some(t);
                        times.found = Some(found);
                    }
                }
                Ok(times)
            }
        }
    }
}

impl Lat {
    fn record(&mut self, store: f64, e2e: f64, raw: RawTimes) {
        self.store.push(store);
        self.e2e.push(e2e);
        self.raw.extend(raw.index);
        self.raw_with_records.extend(raw.records);
        self.raw_unprepared.extend(raw.unprepared);
        self.raw_scalar.extend(raw.scalar);
    }
}

/// Whether the raw reference found the same messages as the store (`None`: not checked).
fn same_hashes(found: &Option<Vec<[u8; 32]>>, response: &store::StoreQueryResponse) -> bool {
    let Some(found) = found else { return true };
    let mut found = found.clone();
    let mut answered: Vec<Vec<u8>> = response
        .messages
        .iter()
        .filter_map(|m| m.message_hash.clone())
        .collect();
    found.sort();
    answered.sort();
    found.len() == answered.len() && found.iter().zip(&answered).all(|(a, b)| a[..] == b[..])
}

/// One query timed three ways (in the store, end to end, raw), which take turns going first
/// (`turn` advances), so that none always meets the pages another just read.
async fn three_ways<Raw>(
    turn: &mut usize,
    store: &ArchiveHandle,
    reader: &Client,
    addr: &Multiaddr,
    request: &StoreQueryRequest,
    raw: impl FnOnce() -> Raw,
) -> anyhow::Result<(
    f64,
    store::StoreQueryResponse,
    f64,
    anyhow::Result<store::StoreQueryResponse>,
    RawTimes,
)>
where
    Raw: std::future::Future<Output = anyhow::Result<RawTimes>>,
{
    let (mut in_store, mut e2e, mut raw_times) = (None, None, None);
    let mut raw = Some(raw);
    for step in 0..3 {
        match (*turn + step) % 3 {
            0 => in_store = Some(timed(store.query(request)).await),
            1 => {
                e2e = Some(
                    timed(async {
                        reader
                            .store_query(addr, request)
                            .await
                            .map_err(anyhow::Error::from)
                    })
                    .await,
                )
            }
            _ => {
                if let Some(raw) = raw.take() {
                    raw_times = Some(raw().await?);
                }
            }
        }
    }
    *turn += 1;
    let (Some((t_store, response)), Some((t_e2e, e2e)), Some(raw_times)) =
        (in_store, e2e, raw_times)
    else {
        anyhow::bail!("a query was not timed three ways");
    };
    Ok((t_store, response, t_e2e, e2e, raw_times))
}

/// The closed loop of queries, timed in the store, end to end and raw: first pages, 5 cursor
/// pages after each, lookups of 10 hashes with data and presence only. Returns the rows
/// (first, cursor, lookup, presence) and how many raw answers differed from the store's.
async fn query_loop(
    args: &Args,
    data: &Dataset,
    store: &ArchiveHandle,
    reader: &Client,
    addr: &Multiaddr,
    window: (i64, i64),
    raw: RawDb<'_>,
) -> anyhow::Result<([Lat; 4], u64)> {
    let (window_start, window_end) = window;
    let mut first = Lat::default();
    let mut cursor = Lat::default();
    let mut lookup = Lat::default();
    let mut presence = Lat::default();
    let mut differ = 0u64;
    let mut turn = 0;
    // Warm-up: a few of each, not reported.
    for q in 0..(args.queries + 50) {
        let record = q >= 50;
        let topic = &data.topics[data.zipf_topic(mix(q as u64 ^ 0xabcd))];
        let request = StoreQueryRequest::new(format!("q{q}"))
            .content(TOPIC, [topic.clone()])
            .time_range(Some(window_start), Some(window_end))
            .limit(20);
        let (t_store, response, t_e2e, e2e, t_raw) =
            three_ways(&mut turn, store, reader, addr, &request, || {
                raw.page(topic, window, None)
            })
            .await?;
        anyhow::ensure!(
            e2e?.messages == response.messages,
            "end-to-end answer differs"
        );
        differ += u64::from(!same_hashes(&t_raw.found, &response));
        if record {
            first.record(t_store, t_e2e, t_raw);
        }
        // Five cursor pages after it.
        let mut next = response.cursor();
        for _ in 0..5 {
            let Some(c) = next else { break };
            let request = request.clone().cursor(Some(c));
            let (t_store, response, t_e2e, e2e, t_raw) =
                three_ways(&mut turn, store, reader, addr, &request, || {
                    raw.page(topic, window, Some(c))
                })
                .await?;
            anyhow::ensure!(
                e2e?.messages == response.messages,
                "end-to-end answer differs"
            );
            differ += u64::from(!same_hashes(&t_raw.found, &response));
            if record {
                cursor.record(t_store, t_e2e, t_raw);
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
            let (t_store, response, t_e2e, e2e, t_raw) =
                three_ways(&mut turn, store, reader, addr, &request, || {
                    raw.lookup(&hashes, with_data)
                })
                .await?;
            anyhow::ensure!(
                response.messages.len() == hashes.len(),
                "lookup found {} of {}",
                response.messages.len(),
                hashes.len()
            );
            anyhow::ensure!(
                e2e?.messages == response.messages,
                "end-to-end lookup differs"
            );
            differ += u64::from(!same_hashes(&t_raw.found, &response));
            if record {
                lat.record(t_store, t_e2e, t_raw);
            }
        }
    }
    Ok(([first, cursor, lookup, presence], differ))
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

// === PostgreSQL ===

/// The private cluster, a password file for nodes, and fresh database names.
struct Pg {
    cluster: PgCluster,
    /// Holds `password`, for `store.postgres_password_file`.
    password_dir: tempfile::TempDir,
    next_db: AtomicU32,
}

impl Pg {
    fn start() -> anyhow::Result<Pg> {
        let cluster = PgCluster::start()?;
        let password_dir = tempfile::tempdir()?;
        std::fs::write(
            password_dir.path().join("password"),
            format!("{}\n", cluster.password()),
        )?;
        Ok(Pg {
            cluster,
            password_dir,
            next_db: AtomicU32::new(0),
        })
    }

    /// Creates a fresh database named after `what`; returns its name.
    fn fresh_database(&self, what: &str) -> anyhow::Result<String> {
        let name = format!(
            "bench_{what}_{}",
            self.next_db.fetch_add(1, Ordering::Relaxed)
        );
        self.cluster.create_database(&name)?;
        Ok(name)
    }

    fn drop_database(&self, name: &str) -> anyhow::Result<()> {
        self.cluster.psql(
            "postgres",
            &format!("DROP DATABASE \"{name}\" WITH (FORCE)"),
        )?;
        Ok(())
    }

    /// Points a node's store at `database`, as an operator would configure it.
    fn configure(&self, config: &mut Config, database: &str) {
        config.store.backend = Backend::Postgres;
        config.store.postgres_url = self.cluster.url(database);
        config.store.postgres_password_file = Some(self.password_dir.path().join("password"));
        // The PostgreSQL part runs after the RocksDB one; its messages keep the timestamps
        // they were generated with, so accept them whatever that part took.
        config.store.timestamp_window = Duration::from_secs(12 * 3600);
    }

    /// A raw connection to `database` (tokio-postgres, the node's own client library).
    async fn connect(&self, database: &str) -> anyhow::Result<PgClient> {
        Ok(roost_node::store::postgres::connect(
            &self.cluster.url(database),
            Some(self.cluster.password()),
        )
        .await?)
    }
}

/// What the raw reference inserts for one message (computed before its clock starts).
struct PgRow {
    timestamp: i64,
    hash: [u8; 32],
    content_topic: String,
}

/// The engine's insert statements (store/postgres/mod.rs), verbatim.
const PG_INSERT_LOOKUP: &str = "INSERT INTO messages_lookup (hash, timestamp)
     SELECT * FROM unnest($1::bytea[], $2::bigint[])
     ON CONFLICT DO NOTHING RETURNING hash";
const PG_INSERT_MESSAGES: &str =
    "INSERT INTO messages (timestamp, hash, pubsub_topic, content_topic, message)
     SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::text[], $4::text[], $5::bytea[])
     ON CONFLICT DO NOTHING";

/// Raw PostgreSQL ingest into a fresh database: the schema and partitions first, then, timed,
/// one transaction per `window` messages doing the engine's two inserts. Returns seconds.
async fn raw_pg_ingest(
    pg: &Pg,
    database: &str,
    rows: &[PgRow],
    bytes: &[Vec<u8>],
    window: usize,
) -> anyhow::Result<f64> {
    use roost_node::store::postgres::{ensure_partitions, migrate};
    let mut client = pg.connect(database).await?;
    migrate(&mut client).await?;
    let lo = rows.iter().map(|r| r.timestamp).min().unwrap_or(0);
    let hi = rows.iter().map(|r| r.timestamp).max().unwrap_or(0);
    ensure_partitions(&mut client, lo, hi).await?;
    client.batch_execute("SET synchronous_commit = on").await?;
    let lookup = client.prepare(PG_INSERT_LOOKUP).await?;
    let messages = client.prepare(PG_INSERT_MESSAGES).await?;
    let started = Instant::now();
    for from in (0..rows.len()).step_by(window.max(1)) {
        let batch = from..(from + window.max(1)).min(rows.len());
        // Sorted by hash, as the engine locks rows.
        let mut order: Vec<usize> = batch.clone().collect();
        order.sort_by(|&a, &b| rows[a].hash.cmp(&rows[b].hash));
        let hashes: Vec<&[u8]> = order.iter().map(|&i| &rows[i].hash[..]).collect();
        let timestamps: Vec<i64> = order.iter().map(|&i| rows[i].timestamp).collect();
        let tx = client.transaction().await?;
        let inserted = tx.query(&lookup, &[&hashes, &timestamps]).await?;
        let mut new: HashSet<Vec<u8>> = inserted
            .iter()
            .map(|row| row.try_get::<_, Vec<u8>>(0))
            .collect::<Result<_, _>>()?;
        let (mut ts, mut hs, mut pubsub, mut content, mut body) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in batch {
            if new.remove(&rows[i].hash[..]) {
                ts.push(rows[i].timestamp);
                hs.push(&rows[i].hash[..]);
                pubsub.push(TOPIC);
                content.push(rows[i].content_topic.as_str());
                body.push(bytes[i].as_slice());
            }
        }
        anyhow::ensure!(ts.len() == order.len(), "raw insert met duplicates");
        tx.execute(&messages, &[&ts, &hs, &pubsub, &content, &body])
            .await?;
        tx.commit().await?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// One timed ingest run on PostgreSQL, Roost's or raw, into a fresh database (dropped after).
#[allow(clippy::too_many_arguments)]
async fn pg_one_ingest(
    roost: bool,
    pg: &Pg,
    data: &Source,
    rows: &[PgRow],
    bytes: &[Vec<u8>],
    validator: &Arc<Validator>,
    n: u64,
    window: usize,
) -> anyhow::Result<IngestRun> {
    let database = pg.fresh_database(if roost { "roost" } else { "raw" })?;
    // Every run starts from a clean checkpoint: none is owed by the previous run.
    pg.cluster.psql("postgres", "CHECKPOINT")?;
    let run = if roost {
        let dir = tempfile::tempdir()?;
        let mut config = node_config(dir.path(), true);
        pg.configure(&mut config, &database);
        roost_run(config, data, validator, n, window).await
    } else {
        raw_pg_ingest(pg, &database, &rows[..n as usize], bytes, window)
            .await
            .map(|elapsed| IngestRun {
                roost: false,
                msgs_per_sec: n as f64 / elapsed,
                p99_ms: f64::NAN,
                batch: window as f64,
            })
    };
    pg.drop_database(&database)?;
    run
}

/// B1 on PostgreSQL: Roost-PG against raw PostgreSQL, durable, same messages as B1.
async fn pg_ingest_phase(
    args: &Args,
    pg: &Pg,
    dataset: &Dataset,
    data: &Source,
    rocks_durable: Option<f64>,
) -> anyhow::Result<()> {
    let Source::Ready(bytes) = data else {
        anyhow::bail!("the ingest messages are generated before the clock");
    };
    let rows: Vec<PgRow> = (0..args.ingest)
        .map(|i| {
            let message = dataset.message(i);
            PgRow {
                timestamp: message.timestamp.unwrap_or(0),
                hash: message.hash(TOPIC).0,
                content_topic: message.content_topic,
            }
        })
        .collect();
    let validator = Arc::new(Validator::new(&node_config(Path::new("."), true).relay));
    println!();
    println!("PostgreSQL ingest (synchronous_commit on, fresh database per run) ...");
    let warm = args.ingest.min(5000);
    for roost in [true, false] {
        pg_one_ingest(roost, pg, data, &rows, bytes, &validator, warm, args.window).await?;
    }
    let mut runs = Vec::new();
    for pair in 0..args.pairs {
        for roost in [true, false] {
            let r = pg_one_ingest(
                roost,
                pg,
                data,
                &rows,
                bytes,
                &validator,
                args.ingest,
                args.window,
            )
            .await?;
            println!(
                "  durable  pair {} {:<8} {:>9.0} msgs/s{}",
                pair + 1,
                if roost { "roost-pg" } else { "raw pg" },
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
    let IngestSummary {
        roost,
        r_med,
        w_med,
        lo,
        hi,
    } = IngestSummary::of(&runs);
    println!();
    println!(
        "B1 ingest on PostgreSQL ({} msgs per run, {} in flight; raw: {} per transaction)",
        args.ingest, args.window, args.window
    );
    println!("| mode | roost-PG msgs/s | raw PG msgs/s | roost-PG/raw PG (min-max) | roost-PG ack p99 ms | roost-PG mean batch | roost-RocksDB msgs/s (fsync) | roost-PG/roost-RocksDB |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| durable (synchronous_commit on / WAL fsync per batch) | {:.0} | {:.0} | {:.2} ({:.2}-{:.2}) | {:.2} | {:.0} | {} | {} |",
        r_med,
        w_med,
        r_med / w_med,
        lo,
        hi,
        median(roost.iter().map(|r| r.p99_ms).collect()),
        median(roost.iter().map(|r| r.batch).collect()),
        rocks_durable.map_or("n/a".into(), |v| format!("{v:.0}")),
        rocks_durable.map_or("n/a".into(), |v| format!("{:.2}", r_med / v)),
    );
    println!("raw PG: tokio-postgres, the engine's unnest inserts (messages_lookup RETURNING hash, then messages) in one transaction per {} messages, prepared, one connection.", args.window);
    Ok(())
}

/// The engine's SELECTs (store/postgres/query.rs) for the bench's queries, as it formats them.
/// A content page is one branch per (pubsub topic, content topic) with `=`, each reading the
/// topics index in page order, under an outer ORDER BY and LIMIT (one branch here).
const PG_FIRST_PAGE: &str = "SELECT m.timestamp, m.hash, m.pubsub_topic, m.message FROM ((SELECT m.timestamp, m.hash, m.pubsub_topic, m.message FROM messages m WHERE m.timestamp >= $1 AND m.timestamp < $2 AND m.pubsub_topic = $3 AND m.content_topic = $4 ORDER BY m.timestamp DESC, m.hash DESC LIMIT $5)) m ORDER BY m.timestamp DESC, m.hash DESC LIMIT $5";
const PG_CURSOR_PAGE: &str = "SELECT m.timestamp, m.hash, m.pubsub_topic, m.message FROM ((SELECT m.timestamp, m.hash, m.pubsub_topic, m.message FROM messages m WHERE m.timestamp >= $1 AND m.timestamp < $2 AND m.pubsub_topic = $3 AND m.content_topic = $4 AND (m.timestamp, m.hash) < ($5, $6) ORDER BY m.timestamp DESC, m.hash DESC LIMIT $7)) m ORDER BY m.timestamp DESC, m.hash DESC LIMIT $7";
/// The pages as the engine first wrote them, `= ANY(array)` for the topics: the measure of what
/// that shape cost (PostgreSQL before 17 does not read a btree in order under `= ANY`, so the
/// topics index could not serve the page's order and every match of the window was sorted).
const PG_FIRST_PAGE_EQ: &str = "SELECT m.timestamp, m.hash, m.pubsub_topic, m.message FROM messages m WHERE m.timestamp >= $1 AND m.timestamp < $2 AND m.pubsub_topic = ANY(ARRAY[$3]) AND m.content_topic = ANY(ARRAY[$4]) ORDER BY m.timestamp DESC, m.hash DESC LIMIT $5";
const PG_CURSOR_PAGE_EQ: &str = "SELECT m.timestamp, m.hash, m.pubsub_topic, m.message FROM messages m WHERE m.timestamp >= $1 AND m.timestamp < $2 AND m.pubsub_topic = ANY(ARRAY[$3]) AND m.content_topic = ANY(ARRAY[$4]) AND (m.timestamp, m.hash) < ($5, $6) ORDER BY m.timestamp DESC, m.hash DESC LIMIT $7";
const PG_POSITION: &str = "SELECT timestamp FROM messages_lookup WHERE hash = $1";
const PG_LOOKUP: &str = "SELECT m.timestamp, m.hash, m.pubsub_topic, m.message FROM messages_lookup l JOIN messages m ON m.timestamp = l.timestamp AND m.hash = l.hash WHERE l.hash = ANY($1) ORDER BY m.timestamp DESC, m.hash DESC LIMIT $2";
const PG_PRESENCE: &str = "SELECT m.timestamp, m.hash FROM messages_lookup l JOIN messages m ON m.timestamp = l.timestamp AND m.hash = l.hash WHERE l.hash = ANY($1) ORDER BY m.timestamp DESC, m.hash DESC LIMIT $2";
/// A page of 20, plus one to learn whether more remain (as the engine asks).
const PG_WANT: i64 = 21;

/// Raw PostgreSQL queries on one connection: the engine's statements, prepared once.
struct PgRaw {
    client: PgClient,
    /// Calls so far: the order of the raw forms of a query is drawn from it (a fixed rotation
    /// would fall in step with the loop's 8 queries per round, so one form would always meet
    /// the pages another just read).
    calls: AtomicU64,
    first: Statement,
    cursor: Statement,
    first_eq: Statement,
    cursor_eq: Statement,
    position: Statement,
    lookup: Statement,
    presence: Statement,
}

async fn pg_rows<T: ?Sized + ToStatement>(
    client: &PgClient,
    statement: &T,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> anyhow::Result<Vec<Row>> {
    Ok(client.query(statement, params).await?)
}

/// The hashes of the first 20 rows, reading each row's columns as the engine does.
fn page_hashes(rows: &[Row], with_data: bool) -> anyhow::Result<Vec<[u8; 32]>> {
    rows.iter()
        .take(20)
        .map(|row| {
            let _ts: i64 = row.try_get(0)?;
            let hash: &[u8] = row.try_get(1)?;
            if with_data {
                let _topic: &str = row.try_get(2)?;
                let _message: &[u8] = row.try_get(3)?;
            }
            Ok(hash.try_into()?)
        })
        .collect()
}

impl PgRaw {
    async fn connect(pg: &Pg, database: &str) -> anyhow::Result<PgRaw> {
        let client = pg.connect(database).await?;
        // A prepared statement is planned for its parameters every time, as the engine's text
        // statements are: a generic plan cannot prune partitions at plan time and picks its
        // index without the topic's selectivity, which would make the reference the slower.
        client
            .batch_execute("SET plan_cache_mode = force_custom_plan")
            .await?;
        Ok(PgRaw {
            calls: AtomicU64::new(0),
            first: client.prepare(PG_FIRST_PAGE).await?,
            cursor: client.prepare(PG_CURSOR_PAGE).await?,
            first_eq: client.prepare(PG_FIRST_PAGE_EQ).await?,
            cursor_eq: client.prepare(PG_CURSOR_PAGE_EQ).await?,
            position: client.prepare(PG_POSITION).await?,
            lookup: client.prepare(PG_LOOKUP).await?,
            presence: client.prepare(PG_PRESENCE).await?,
            client,
        })
    }

    /// The forms in the order to run them this time (drawn from the call count).
    fn order(&self, forms: &[Form]) -> Vec<Form> {
        let mut draw = mix(self.calls.fetch_add(1, Ordering::Relaxed) ^ 0x7e57);
        let mut forms = forms.to_vec();
        for i in (1..forms.len()).rev() {
            forms.swap(i, (draw % (i as u64 + 1)) as usize);
            draw /= i as u64 + 1;
        }
        forms
    }

    /// One backward page of 20 on one content topic, with data: (seconds, hashes found).
    async fn page(
        &self,
        topic: &str,
        start: i64,
        end: i64,
        cursor: Option<MessageHash>,
        form: Form,
    ) -> anyhow::Result<(f64, Vec<[u8; 32]>)> {
        let c = &self.client;
        let started = Instant::now();
        // The engine's pages and the `= ANY` shape both take the topics as scalars.
        let (pubsub, content) = (TOPIC, topic);
        let rows = match cursor {
            None => {
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
                    [&start, &end, &pubsub, &content, &PG_WANT];
                match form {
                    Form::Prepared => pg_rows(c, &self.first, &params).await?,
                    Form::Text => pg_rows(c, PG_FIRST_PAGE, &params).await?,
                    Form::Scalar => pg_rows(c, &self.first_eq, &params).await?,
                }
            }
            Some(cursor) => {
                let hash = &cursor.0[..];
                let position = match form {
                    Form::Prepared | Form::Scalar => pg_rows(c, &self.position, &[&hash]).await?,
                    Form::Text => pg_rows(c, PG_POSITION, &[&hash]).await?,
                };
                let ts: i64 = position
                    .first()
                    .ok_or_else(|| anyhow::anyhow!("cursor not in messages_lookup"))?
                    .try_get(0)?;
                let hash = cursor.0.to_vec();
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] =
                    [&start, &end, &pubsub, &content, &ts, &hash, &PG_WANT];
                match form {
                    Form::Prepared => pg_rows(c, &self.cursor, &params).await?,
                    Form::Text => pg_rows(c, PG_CURSOR_PAGE, &params).await?,
                    Form::Scalar => pg_rows(c, &self.cursor_eq, &params).await?,
                }
            }
        };
        let found = page_hashes(&rows, true)?;
        Ok((started.elapsed().as_secs_f64(), found))
    }

    /// A lookup of `hashes`, with data or presence only: (seconds, hashes found).
    async fn lookup(
        &self,
        hashes: &[MessageHash],
        with_data: bool,
        form: Form,
    ) -> anyhow::Result<(f64, Vec<[u8; 32]>)> {
        let prepared = form != Form::Text;
        let c = &self.client;
        let started = Instant::now();
        let hashes: Vec<Vec<u8>> = hashes.iter().map(|h| h.0.to_vec()).collect();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&hashes, &PG_WANT];
        let rows = match (with_data, prepared) {
            (true, true) => pg_rows(c, &self.lookup, &params).await?,
            (true, false) => pg_rows(c, PG_LOOKUP, &params).await?,
            (false, true) => pg_rows(c, &self.presence, &params).await?,
            (false, false) => pg_rows(c, PG_PRESENCE, &params).await?,
        };
        let found = page_hashes(&rows, with_data)?;
        Ok((started.elapsed().as_secs_f64(), found))
    }
}

fn ratio_or_na(a: f64, b: Option<f64>) -> String {
    b.map_or("n/a".into(), |b| format!("{:.2}", a / b))
}

/// B2 on PostgreSQL: the same queries over the same messages, in a PostgreSQL archive.
async fn pg_query_phase(
    args: &Args,
    pg: &Pg,
    data: &Arc<Dataset>,
    rocks: Option<&RocksQueries>,
) -> anyhow::Result<()> {
    let validator = Arc::new(Validator::new(&node_config(Path::new("."), false).relay));
    let database = pg.fresh_database("archive")?;
    let dir = tempfile::tempdir()?;
    let mut config = node_config(dir.path(), false);
    pg.configure(&mut config, &database);
    let node = Node::start(config.clone()).await?;
    println!();
    println!(
        "filling the PostgreSQL archive with {} messages through the write path (synchronous_commit off) ...",
        args.messages
    );
    let started = Instant::now();
    let source = Source::Generate(data.clone());
    roost_ingest(&node, &source, &validator, 0, args.messages, args.window).await?;
    let fill = started.elapsed().as_secs_f64();
    let started = Instant::now();
    pg.cluster.psql(&database, "VACUUM ANALYZE")?;
    let vacuum = started.elapsed().as_secs_f64();
    let summary = node.handle().store().expect("store").summary().await?;
    println!(
        "  {} messages in {:.1} s ({:.0} msgs/s), {:.2} GB logical, {:.2} GB on disk (relations); VACUUM ANALYZE {:.1} s",
        summary.messages,
        fill,
        args.messages as f64 / fill,
        summary.bytes as f64 / 1e9,
        summary.disk_bytes as f64 / 1e9,
        vacuum,
    );

    let reader = Client::start(16).await?;
    let addr: Multiaddr = roost_tests::loopback(&node.handle().info().tcp_addresses);
    let handle = node.handle();
    let store = handle.store().expect("store").clone();
    let raw = PgRaw::connect(pg, &database).await?;
    let window = rocks.map_or_else(
        || {
            let now = now_nanos();
            (now - 3_600_000_000_000, now + 60_000_000_000)
        },
        |r| r.window,
    );
    let (mut lats, differ) =
        query_loop(args, data, &store, &reader, &addr, window, RawDb::Pg(&raw)).await?;
    println!();
    println!(
        "B2 queries on PostgreSQL over {} messages ({} first pages, closed loop, one client; the same queries as on RocksDB)",
        summary.messages, args.queries
    );
    println!("| query | roost-PG store p50 ms | store p99 ms | end-to-end p50 ms | end-to-end p99 ms | raw PG p50 ms | raw PG p99 ms | store/raw PG p50 | store/raw PG p99 | raw PG as text p50 ms | as text p99 ms | store PG/RocksDB p50 | store PG/RocksDB p99 | e2e PG/RocksDB p50 | e2e PG/RocksDB p99 |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, (name, lat)) in QUERY_NAMES.into_iter().zip(lats.iter_mut()).enumerate() {
        let mine = QueryRow::of(lat);
        let r50 = percentile(&mut lat.raw_with_records, 0.5);
        let r99 = percentile(&mut lat.raw_with_records, 0.99);
        let other = rocks.map(|r| r.rows[i]);
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} | {:.2} | {:.3} | {:.3} | {} | {} | {} | {} |",
            ms(mine.store50),
            ms(mine.store99),
            ms(mine.e2e50),
            ms(mine.e2e99),
            ms(r50),
            ms(r99),
            mine.store50 / r50,
            mine.store99 / r99,
            ms(percentile(&mut lat.raw_unprepared, 0.5)),
            ms(percentile(&mut lat.raw_unprepared, 0.99)),
            ratio_or_na(mine.store50, other.map(|o| o.store50)),
            ratio_or_na(mine.store99, other.map(|o| o.store99)),
            ratio_or_na(mine.e2e50, other.map(|o| o.e2e50)),
            ratio_or_na(mine.e2e99, other.map(|o| o.e2e99)),
        );
    }
    println!("raw PG: the engine's SELECTs (page LIMIT 21; cursor pages: the messages_lookup probe, then the page; lookups: messages_lookup JOIN messages), prepared once (custom plans), one connection;");
    println!("as text: the same SELECTs sent as the engine sends them (client.query with SQL text: parse + execute, a round trip more per statement); the order of the raw forms (prepared, text, `=`) is drawn per query.");
    println!(
        "store: ArchiveHandle::query on the PostgreSQL engine; end-to-end: light client over libp2p on loopback. Raw pages that differed from the store's: {differ}."
    );
    println!();
    println!("What the pages' SQL shape costs (raw PG, prepared, custom plans): the engine's branches with `topic = $n` against its first version's `topic = ANY($n)`");
    println!("| query | engine's = p50 ms | = p99 ms | = ANY p50 ms | = ANY p99 ms | = ANY / = p50 | = ANY / = p99 | store / raw (=) p50 |");
    println!("|---|---|---|---|---|---|---|---|");
    for (name, lat) in QUERY_NAMES.into_iter().zip(lats.iter_mut()).take(2) {
        let (a50, a99) = (
            percentile(&mut lat.raw_with_records, 0.5),
            percentile(&mut lat.raw_with_records, 0.99),
        );
        let (e50, e99) = (
            percentile(&mut lat.raw_scalar, 0.5),
            percentile(&mut lat.raw_scalar, 0.99),
        );
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} | {:.2} | {:.2} |",
            ms(a50),
            ms(a99),
            ms(e50),
            ms(e99),
            e50 / a50,
            e99 / a99,
            percentile(&mut lat.store, 0.5) / a50,
        );
    }
    drop(raw);
    reader.stop().await;
    node.stop().await.map_err(|e| anyhow::anyhow!(e))?;

    // A whole node's start to its first page, as B10 measures on RocksDB.
    let mut node_first_page = Vec::new();
    for _ in 0..args.pairs {
        let started = Instant::now();
        let node = Node::start(config.clone()).await?;
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
    let start = median(node_first_page);
    println!();
    println!(
        "B10 on PostgreSQL: whole node start to first page over {} messages (median of {})",
        summary.messages, args.pairs
    );
    println!("| open | ms | PG/RocksDB |");
    println!("|---|---|---|");
    println!(
        "| whole node start to first page | {:.1} | {} |",
        ms(start),
        ratio_or_na(start, rocks.map(|r| r.first_page_start))
    );
    pg.drop_database(&database)?;
    Ok(())
}
