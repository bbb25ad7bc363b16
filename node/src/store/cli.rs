//! `roost store query` (ask any store v3 node for history, as a light client),
//! `roost store stats` (what this node's archive holds; works while the node runs) and
//! `roost store migrate` (copy the archive between RocksDB and PostgreSQL).

use std::{process::ExitCode, time::Duration};

use clap::{Args, Subcommand};
use libp2p::Multiaddr;

use super::{
    rpc::{Entry, StoreQueryRequest, STATUS_OK},
    Archive,
};
use crate::{
    args::{fail, ConfigArgs},
    client::Client,
    message::{now_nanos, MessageHash, ShardTopic},
};

const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Query a store node for history (store v3) and print the messages, oldest first.
    Query(QueryArgs),
    /// Show what this node's archive holds: counts, bytes, oldest/newest per pubsub topic.
    /// Reads the database read-only, so it works while the node runs.
    Stats(StatsArgs),
    /// Copy the archive from one engine to the other (RocksDB under the data dir, PostgreSQL
    /// at store.postgres_url), for switching store.backend. Messages the target has are
    /// skipped, so it can be run again; the source is left as it is.
    Migrate(MigrateArgs),
}

/// An archive engine on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineArg {
    Rocksdb,
    Postgres,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The engine to copy from.
    #[arg(long, value_name = "ENGINE")]
    pub from: EngineArg,
    /// The engine to copy to.
    #[arg(long, value_name = "ENGINE")]
    pub to: EngineArg,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The store node: its full multiaddr, ending in /p2p/<peer id>.
    #[arg(long, value_name = "MULTIADDR")]
    pub peer: Multiaddr,
    /// Pubsub topic, e.g. /waku/2/rs/1/0; needed with --content-topic.
    #[arg(long, value_name = "TOPIC")]
    pub pubsub_topic: Option<String>,
    /// Content topic (repeat for up to 10).
    #[arg(long = "content-topic", value_name = "TOPIC")]
    pub content_topics: Vec<String>,
    /// Oldest message time: RFC 3339 (2024-05-01T12:00:00Z), a duration ago (2h), or Unix ns.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Newest message time (exclusive), in the same forms as --since.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Look up messages by hash (0x-hex; repeat). Not combinable with topics or times.
    #[arg(long = "hash", value_name = "HASH")]
    pub hashes: Vec<String>,
    /// Ask for hashes only (a presence check with --hash).
    #[arg(long)]
    pub hashes_only: bool,
    /// Page from the oldest message forwards (default: from the newest backwards).
    #[arg(long)]
    pub forward: bool,
    /// Messages per page (the node caps it at 100; default 20).
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Continue after this cursor (the hash a previous page ended with).
    #[arg(long, value_name = "HASH")]
    pub cursor: Option<String>,
    /// Follow cursors until every matching message is printed.
    #[arg(long)]
    pub all: bool,
    /// One JSON object per message instead of text lines.
    #[arg(long)]
    pub json: bool,
    /// Cluster of the store node (its peers must be in it); default: from --pubsub-topic, else 1.
    #[arg(long, value_name = "ID")]
    pub cluster_id: Option<u16>,
    /// How long to wait for each page.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration ({e})"))
}

/// Runs a `roost store …` command.
pub fn main(command: StoreCommand) -> ExitCode {
    match command {
        StoreCommand::Query(args) => query(args),
        StoreCommand::Stats(args) => stats(args),
        StoreCommand::Migrate(args) => migrate(args),
    }
}

/// Reads a time as RFC 3339, a duration before now, or Unix nanoseconds.
pub fn parse_time(text: &str, now: i64) -> Result<i64, String> {
    let t = text.trim();
    if let Ok(ns) = t.parse::<i64>() {
        return Ok(ns);
    }
    if let Ok(ago) = humantime::parse_duration(t) {
        let ago = i64::try_from(ago.as_nanos()).unwrap_or(i64::MAX);
        return Ok(now.saturating_sub(ago));
    }
    if let Ok(at) = humantime::parse_rfc3339_weak(t) {
        let since = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| format!("`{text}` is before 1970"))?;
        return i64::try_from(since.as_nanos()).map_err(|_| format!("`{text}` is too far ahead"));
    }
    Err(format!(
        "`{text}` is not a time; write RFC 3339 (2024-05-01T12:00:00Z), a duration ago (2h) or Unix nanoseconds"
    ))
}

fn parse_hash(text: &str, what: &str) -> Result<MessageHash, String> {
    MessageHash::from_hex(text).ok_or_else(|| {
        format!("{what} `{text}` is not a 32-byte hex message hash (0x + 64 hex digits)")
    })
}

/// Builds the first request from the arguments.
pub fn build_request(args: &QueryArgs, now: i64) -> Result<StoreQueryRequest, String> {
    let mut request = StoreQueryRequest::new(new_request_id())
        .include_data(!args.hashes_only)
        .forward(args.forward);
    if let Some(limit) = args.limit {
        request = request.limit(limit);
    }
    if let Some(cursor) = &args.cursor {
        request = request.cursor(Some(parse_hash(cursor, "--cursor")?));
    }
    if !args.hashes.is_empty() {
        if args.pubsub_topic.is_some()
            || !args.content_topics.is_empty()
            || args.since.is_some()
            || args.until.is_some()
        {
            return Err("--hash cannot be combined with --pubsub-topic, --content-topic, --since or --until".into());
        }
        let hashes = args
            .hashes
            .iter()
            .map(|h| parse_hash(h, "--hash"))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(request.hashes(hashes));
    }
    match (&args.pubsub_topic, args.content_topics.is_empty()) {
        (Some(topic), false) => {
            request = request.content(topic.clone(), args.content_topics.clone())
        }
        (None, false) => {
            return Err(
                "--content-topic needs --pubsub-topic (e.g. --pubsub-topic /waku/2/rs/1/0)".into(),
            )
        }
        (Some(_), true) => return Err(
            "--pubsub-topic needs at least one --content-topic (store v3 filters on both together)"
                .into(),
        ),
        (None, true) => {}
    }
    let since = args
        .since
        .as_deref()
        .map(|t| parse_time(t, now))
        .transpose()?;
    let until = args
        .until
        .as_deref()
        .map(|t| parse_time(t, now))
        .transpose()?;
    Ok(request.time_range(since, until))
}

fn new_request_id() -> String {
    format!("roost-{:016x}", rand::random::<u64>())
}

fn query(args: QueryArgs) -> ExitCode {
    let request = match build_request(&args, now_nanos()) {
        Ok(r) => r,
        Err(e) => return fail(EXIT_USAGE, &e),
    };
    let cluster = args
        .cluster_id
        .or_else(|| {
            args.pubsub_topic
                .as_deref()
                .and_then(ShardTopic::parse)
                .map(|t| t.cluster)
        })
        .unwrap_or(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return fail(
                EXIT_FAILURE,
                &format!("cannot start the async runtime: {e}"),
            )
        }
    };
    let result = runtime.block_on(async move {
        let client = Client::start(cluster)
            .await
            .map_err(|e| format!("cannot start the light client: {e}"))?;
        let result = run_query(&client, &args, request).await;
        client.stop().await;
        result
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_FAILURE, &e),
    }
}

async fn run_query(
    client: &Client,
    args: &QueryArgs,
    mut request: StoreQueryRequest,
) -> Result<(), String> {
    loop {
        let response = tokio::time::timeout(args.timeout, client.store_query(&args.peer, &request))
            .await
            .map_err(|_| format!("no answer from {} within {:?}", args.peer, args.timeout))?
            .map_err(|e| format!("store query to {} failed: {e}", args.peer))?;
        if response.code() != STATUS_OK {
            return Err(format!(
                "the store node answered {}: {}",
                response.code(),
                response.desc()
            ));
        }
        let entries = response.entries().map_err(|e| e.to_string())?;
        for entry in &entries {
            println!("{}", format_entry(entry, args.json));
        }
        match response.cursor() {
            Some(cursor) if args.all => request = request.cursor(Some(cursor)),
            Some(cursor) => {
                eprintln!("more results: continue with --cursor {cursor}, or use --all");
                return Ok(());
            }
            None => return Ok(()),
        }
    }
}

/// One printed line: time, hash, topics and payload (text when it is UTF-8, else hex).
pub fn format_entry(entry: &Entry, json: bool) -> String {
    let Some((pubsub_topic, message)) = &entry.data else {
        return if json {
            serde_json::json!({ "hash": entry.hash.to_hex() }).to_string()
        } else {
            entry.hash.to_hex()
        };
    };
    let text = std::str::from_utf8(&message.payload)
        .ok()
        .filter(|s| !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t'));
    let ts = message.timestamp.unwrap_or(0);
    if json {
        serde_json::json!({
            "hash": entry.hash.to_hex(),
            "pubsub_topic": pubsub_topic,
            "content_topic": message.content_topic,
            "timestamp": ts,
            "payload": format!("0x{}", hex::encode(&message.payload)),
            "text": text,
            "meta": message.meta.as_ref().map(|m| format!("0x{}", hex::encode(m))),
            "version": message.version,
        })
        .to_string()
    } else {
        let payload = match text {
            Some(t) => t.escape_debug().to_string(),
            None => format!("0x{}", hex::encode(&message.payload)),
        };
        format!(
            "{}  {}  {}  {}  {}",
            format_time(ts),
            entry.hash,
            pubsub_topic,
            message.content_topic,
            payload
        )
    }
}

/// RFC 3339 with nanoseconds, or the raw number when it is out of range.
pub fn format_time(ns: i64) -> String {
    match u64::try_from(ns) {
        Ok(n) => humantime::format_rfc3339_nanos(std::time::UNIX_EPOCH + Duration::from_nanos(n))
            .to_string(),
        Err(_) => ns.to_string(),
    }
}

fn migrate(args: MigrateArgs) -> ExitCode {
    use super::migrate::{self, Copied};
    if args.from == args.to {
        return fail(
            EXIT_USAGE,
            &"--from and --to name the same engine; give rocksdb and postgres, one each",
        );
    }
    let config = match args.config.load() {
        Ok(c) => c,
        Err(e) => return fail(EXIT_USAGE, &e),
    };
    if config.store.postgres_url.trim().is_empty() {
        return fail(
            EXIT_USAGE,
            &"store.postgres_url is empty; give the database with --store-postgres-url (or in --config)",
        );
    }
    let path = super::store_path(&config.node.data_dir);
    if args.from == EngineArg::Rocksdb && !path.join("CURRENT").exists() {
        return fail(
            EXIT_FAILURE,
            &format!(
                "no RocksDB archive at {}; point --data-dir (or node.data_dir in --config) at the store node's data dir",
                path.display()
            ),
        );
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(EXIT_FAILURE, &e),
    };
    let database = super::masked_url(&config.store.postgres_url);
    let mut last_report = std::time::Instant::now();
    let progress = |done: &Copied| {
        if last_report.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "… {} read, {} copied, {} already there",
                done.read, done.copied, done.present
            );
            last_report = std::time::Instant::now();
        }
    };
    let result = runtime.block_on(async {
        let mut client = migrate::connect_postgres(&config.store).await?;
        match args.from {
            EngineArg::Rocksdb => migrate::rocksdb_to_postgres(&path, &mut client, progress).await,
            EngineArg::Postgres => {
                migrate::postgres_to_rocksdb(&client, &path, &config.store, progress).await
            }
        }
    });
    let done = match result {
        Ok(done) => done,
        Err(e) => return fail(EXIT_FAILURE, &e),
    };
    let (source, target) = match args.from {
        EngineArg::Rocksdb => (path.display().to_string(), database),
        EngineArg::Postgres => (database, path.display().to_string()),
    };
    println!(
        "copied      {} messages from {source} to {target}",
        done.copied
    );
    println!("skipped     {} the target had already", done.present);
    if done.refused > 0 {
        println!(
            "refused     {} older than what the target's retention already deleted",
            done.refused
        );
    }
    println!("source      {} messages read", done.read);
    println!("target      {} messages now", done.target_total);
    ExitCode::SUCCESS
}

fn stats(args: StatsArgs) -> ExitCode {
    let config = match args.config.load() {
        Ok(c) => c,
        Err(e) => return fail(EXIT_USAGE, &e),
    };
    if config.store.backend == super::Backend::Postgres {
        return stats_postgres(&config.store, args.json);
    }
    let path = super::store_path(&config.node.data_dir);
    if !path.join("CURRENT").exists() {
        return fail(
            EXIT_FAILURE,
            &format!(
                "no archive at {}; point --data-dir (or node.data_dir in --config) at the store node's data dir",
                path.display()
            ),
        );
    }
    let summary = Archive::open_read_only(&path)
        .and_then(|archive| archive.load_stats().and_then(|s| archive.summary(&s)));
    let summary = match summary {
        Ok(s) => s,
        Err(e) => return fail(EXIT_FAILURE, &e),
    };
    print_summary(&path.display().to_string(), &summary, args.json)
}

/// `roost store stats` of a PostgreSQL archive: asks the database.
fn stats_postgres(config: &super::Config, json: bool) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(EXIT_FAILURE, &e),
    };
    let summary = runtime.block_on(async {
        let client = super::migrate::connect_postgres(config).await?;
        super::postgres::summary(&client).await
    });
    let summary = match summary {
        Ok(s) => s,
        Err(e) => return fail(EXIT_FAILURE, &e),
    };
    print_summary(&super::masked_url(&config.postgres_url), &summary, json)
}

fn print_summary(archive: &str, summary: &super::Summary, json: bool) -> ExitCode {
    if json {
        match serde_json::to_string_pretty(summary) {
            Ok(text) => println!("{text}"),
            Err(e) => return fail(EXIT_FAILURE, &e),
        }
        return ExitCode::SUCCESS;
    }
    println!("archive     {archive}");
    println!("messages    {}", summary.messages);
    println!(
        "bytes       {} logical, {} on disk",
        summary.bytes, summary.disk_bytes
    );
    if let Some(cutoff) = summary.cutoff {
        println!("deleted     everything before {}", format_time(cutoff));
    }
    for topic in &summary.topics {
        println!(
            "{}  messages {}  bytes {}  oldest {}  newest {}",
            topic.pubsub_topic,
            topic.messages,
            topic.bytes,
            topic.oldest.map(format_time).unwrap_or_else(|| "-".into()),
            topic.newest.map(format_time).unwrap_or_else(|| "-".into()),
        );
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> QueryArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            q: QueryArgs,
        }
        let mut argv = vec![
            "x",
            "--peer",
            "/ip4/127.0.0.1/tcp/1/p2p/16Uiu2HAmPLe7Mzm8TsYUubgCAW1aJoeFScxrLj8ppHFivPo97bUZ",
        ];
        argv.extend_from_slice(extra);
        Wrap::parse_from(argv).q
    }

    #[test]
    fn times_parse_in_three_forms() {
        let now = 1_700_000_000_000_000_000;
        assert_eq!(parse_time("5", now).unwrap(), 5);
        assert_eq!(parse_time("2h", now).unwrap(), now - 7_200_000_000_000);
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", now).unwrap(),
            1_700_000_000_000_000_000
        );
        assert!(parse_time("yesterday", now).is_err());
    }

    #[test]
    fn requests_are_built_from_flags() {
        let r = build_request(
            &args(&[
                "--pubsub-topic",
                "/waku/2/rs/1/0",
                "--content-topic",
                "/a/1/b/proto",
                "--since",
                "10",
                "--until",
                "20",
                "--forward",
                "--limit",
                "5",
            ]),
            0,
        )
        .unwrap();
        assert_eq!(r.pubsub_topic.as_deref(), Some("/waku/2/rs/1/0"));
        assert_eq!(r.content_topics, vec!["/a/1/b/proto".to_owned()]);
        assert_eq!((r.time_start, r.time_end), (Some(10), Some(20)));
        assert!(r.pagination_forward && r.include_data);
        assert_eq!(r.pagination_limit, Some(5));

        let hash = MessageHash([7; 32]).to_hex();
        let r = build_request(&args(&["--hash", &hash, "--hashes-only"]), 0).unwrap();
        assert_eq!(r.message_hashes, vec![vec![7u8; 32]]);
        assert!(!r.include_data);
    }

    #[test]
    fn contradictory_flags_are_refused_with_the_fix() {
        let hash = MessageHash([7; 32]).to_hex();
        for (flags, needle) in [
            (
                vec!["--content-topic", "/a/1/b/proto"],
                "needs --pubsub-topic",
            ),
            (
                vec!["--pubsub-topic", "/waku/2/rs/1/0"],
                "needs at least one",
            ),
            (vec!["--hash", "0x12"], "not a 32-byte"),
            (
                vec!["--hash", hash.as_str(), "--since", "1h"],
                "cannot be combined",
            ),
            (vec!["--since", "soon"], "not a time"),
        ] {
            let e = build_request(&args(&flags), 0).unwrap_err();
            assert!(e.contains(needle), "{flags:?}: {e}");
        }
    }
}
