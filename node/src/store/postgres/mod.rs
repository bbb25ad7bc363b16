//! The PostgreSQL archive's schema: versioned migrations (SQL files next to this module,
//! compiled in) applied at start, and the time partitions of `messages` created ahead.
//!
//! Several store nodes may share one database and start at the same moment: migrations and
//! partition creation each run in one transaction holding a transaction-scoped advisory lock,
//! so exactly one node applies a step and the others see it done.
//!
//! It also owns the batched insert ([`Inserter`]), time retention by dropping whole partitions
//! ([`drop_partitions_before`]) and store v3 queries ([`query::query`]); [`engine`] puts them
//! behind the store's archive traits (`store.backend = "postgres"`).

pub mod engine;
pub mod query;

/// A connection to the archive's database (what `connect` returns).
pub use tokio_postgres::Client;
use tokio_postgres::{Config, NoTls, Statement};

use super::archive::{Incoming, Summary, TopicSummary};

/// The schema's migrations, in order; a version is applied once and never edited afterwards.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "messages", include_str!("migrations/0001_messages.sql")),
    (
        2,
        "archive_state",
        include_str!("migrations/0002_archive_state.sql"),
    ),
    (
        3,
        "partition_counts",
        include_str!("migrations/0003_partition_counts.sql"),
    ),
];

/// Advisory lock key for schema changes ("roost" in ASCII, an arbitrary constant shared by
/// every Roost node on the database).
const SCHEMA_LOCK: i64 = 0x0072_6f6f_7374;

/// Width of one `messages` partition: one UTC hour, in nanoseconds (nwaku's width too).
/// Retention drops whole partitions, so every rule cuts at hour granularity.
pub const PARTITION_NANOS: i64 = 3_600 * 1_000_000_000;

/// A tokio-postgres error with what the server or the socket said: its own `Display` says
/// only "db error" or "error connecting to server", the reason sits in the server's message
/// and in the source chain.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("bad PostgreSQL URL: {}", describe(.0))]
    Url(#[source] tokio_postgres::Error),
    #[error("connect to PostgreSQL: {}", describe(.0))]
    Connect(#[source] tokio_postgres::Error),
    #[error("apply schema migration {version} ({name}): {}", describe(.source))]
    Migration {
        version: i32,
        name: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "the database has schema version {found}, newer than this node's {known}: upgrade the node"
    )]
    NewerSchema { found: i32, known: i32 },
    #[error("PostgreSQL: {}", describe(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("the PostgreSQL connection is closed")]
    Closed,
    #[error("{0}")]
    Read(String),
}

/// Connects to `url` (a libpq URL) with `password` given apart from it (read from a file or an
/// environment variable, never part of the URL in the config). The connection runs on its own
/// task and ends when the client is dropped or the server goes.
pub async fn connect(url: &str, password: Option<&str>) -> Result<Client, PgError> {
    let mut config: Config = url.parse().map_err(PgError::Url)?;
    if let Some(password) = password {
        config.password(password);
    }
    let (client, connection) = config.connect(NoTls).await.map_err(PgError::Connect)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Applies the migrations the database does not have yet, in one transaction under the schema
/// lock; returns the schema version now in place. Refuses a database whose schema is newer
/// than this node knows.
pub async fn migrate(client: &mut Client) -> Result<i32, PgError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS roost_schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let current: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM roost_schema_migrations",
            &[],
        )
        .await?
        .get(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > known {
        return Err(PgError::NewerSchema {
            found: current,
            known,
        });
    }
    for &(version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        let step = |source| PgError::Migration {
            version,
            name,
            source,
        };
        tx.batch_execute(sql).await.map_err(step)?;
        tx.execute(
            "INSERT INTO roost_schema_migrations (version, name) VALUES ($1, $2)",
            &[&version, &name],
        )
        .await
        .map_err(step)?;
        tracing::info!(version, name, "applied PostgreSQL schema migration");
    }
    tx.commit().await?;
    Ok(known)
}

/// Name of the partition holding `timestamp` (nanoseconds): `messages_<first day's nanos>`.
pub fn partition_of(timestamp: i64) -> (String, i64, i64) {
    let start = timestamp.div_euclid(PARTITION_NANOS) * PARTITION_NANOS;
    let name = if start < 0 {
        format!("messages_m{}", start.unsigned_abs())
    } else {
        format!("messages_{start}")
    };
    (name, start, start.saturating_add(PARTITION_NANOS))
}

/// Creates the partitions covering `[from, until]` (nanoseconds) that do not exist yet, under
/// the schema lock; returns how many it created.
pub async fn ensure_partitions(client: &mut Client, from: i64, until: i64) -> Result<u32, PgError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await?;
    let mut created = 0;
    let mut at = from;
    while at <= until {
        let (name, start, end) = partition_of(at);
        let exists: bool = tx
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
            .await?
            .get(0);
        if !exists {
            // Names and bounds are numbers this function made, not input: safe to format in.
            tx.batch_execute(&format!(
                "CREATE TABLE {name} PARTITION OF messages FOR VALUES FROM ({start}) TO ({end})"
            ))
            .await?;
            created += 1;
        }
        if end <= at {
            break;
        }
        at = end;
    }
    tx.commit().await?;
    Ok(created)
}

/// The partitions of `messages` as (name, start, end) in time order, read from the catalog.
pub async fn partitions(client: &Client) -> Result<Vec<(String, i64, i64)>, PgError> {
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'messages'::regclass",
            &[],
        )
        .await?;
    let mut out: Vec<(String, i64, i64)> = rows
        .iter()
        .filter_map(|row| {
            let name: String = row.get(0);
            let start = match name.strip_prefix("messages_m") {
                Some(n) => n.parse::<i64>().ok().map(|n| -n)?,
                None => name.strip_prefix("messages_")?.parse::<i64>().ok()?,
            };
            Some((name, start, start.saturating_add(PARTITION_NANOS)))
        })
        .collect();
    out.sort_by_key(|p| p.1);
    Ok(out)
}

/// Hash → timestamp first: the row that decides "new or duplicate" across every node on the
/// database (unique on the hash alone, which `messages`, keyed by time, cannot be). Arrays
/// through `unnest` keep one statement shape for any batch size, so it is prepared once.
const INSERT_LOOKUP: &str = "INSERT INTO messages_lookup (hash, timestamp)
     SELECT * FROM unnest($1::bytea[], $2::bigint[])
     ON CONFLICT DO NOTHING RETURNING hash";

/// The messages the lookup insert reported new.
const INSERT_MESSAGES: &str =
    "INSERT INTO messages (timestamp, hash, pubsub_topic, content_topic, message)
     SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::text[], $4::text[], $5::bytea[])
     ON CONFLICT DO NOTHING";

/// Adds a batch's new messages to their partitions' counts (rows locked in partition order,
/// after every hash: see [`Inserter::insert`]).
const ADD_COUNTS: &str = "INSERT INTO roost_partition_counts (partition_start, messages, bytes)
     SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[])
     ON CONFLICT (partition_start) DO UPDATE SET
         messages = roost_partition_counts.messages + EXCLUDED.messages,
         bytes = roost_partition_counts.bytes + EXCLUDED.bytes";

/// The insert statements, prepared once on a connection (a new connection needs its own).
pub struct Inserter {
    lookup: Statement,
    messages: Statement,
    counts: Statement,
}

impl Inserter {
    pub async fn prepare(client: &Client) -> Result<Inserter, PgError> {
        Ok(Inserter {
            lookup: client.prepare(INSERT_LOOKUP).await?,
            messages: client.prepare(INSERT_MESSAGES).await?,
            counts: client.prepare(ADD_COUNTS).await?,
        })
    }

    /// Stores `batch` in one transaction (`messages_lookup` and `messages` together) and returns,
    /// in batch order, whether each message is new here (`false`: already in the database, from
    /// this node, another node sharing it, or earlier in the batch). When this returns `Ok` the
    /// transaction is committed, durably so under the server's `synchronous_commit` (on by
    /// default); on `Err` nothing of the batch counts as stored. The partitions of the batch's
    /// timestamps must exist ([`ensure_partitions`]).
    pub async fn insert(
        &self,
        client: &mut Client,
        batch: &[Incoming],
    ) -> Result<Vec<bool>, PgError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // Lock rows in one global order (by hash), so two nodes inserting overlapping batches
        // wait for each other instead of deadlocking.
        let mut order: Vec<usize> = (0..batch.len()).collect();
        order.sort_by(|&a, &b| batch[a].hash.0.cmp(&batch[b].hash.0));
        let hashes: Vec<&[u8]> = order.iter().map(|&i| &batch[i].hash.0[..]).collect();
        let timestamps: Vec<i64> = order.iter().map(|&i| batch[i].timestamp).collect();

        let tx = client.transaction().await?;
        let inserted = tx.query(&self.lookup, &[&hashes, &timestamps]).await?;
        let mut new_hashes = inserted
            .iter()
            .map(|row| row.try_get::<_, Vec<u8>>(0))
            .collect::<Result<std::collections::HashSet<_>, _>>()?;

        let mut fresh = vec![false; batch.len()];
        let (mut ts, mut hs, mut pubsub, mut content, mut bytes) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, m) in batch.iter().enumerate() {
            // The first copy in the batch is the new one; later copies are duplicates.
            if new_hashes.remove(&m.hash.0[..]) {
                fresh[i] = true;
                ts.push(m.timestamp);
                hs.push(&m.hash.0[..]);
                pubsub.push(&*m.pubsub_topic);
                content.push(m.content_topic.as_str());
                bytes.push(m.bytes.as_slice());
            }
        }
        if !ts.is_empty() {
            tx.execute(&self.messages, &[&ts, &hs, &pubsub, &content, &bytes])
                .await?;
            // Every hash is locked by now; the count rows come last, in partition order, so
            // two nodes' transactions cannot wait on each other in a cycle.
            let mut per_partition: std::collections::BTreeMap<i64, (i64, i64)> =
                std::collections::BTreeMap::new();
            for (t, b) in ts.iter().zip(&bytes) {
                let entry = per_partition.entry(partition_of(*t).1).or_default();
                entry.0 += 1;
                entry.1 += b.len() as i64;
            }
            let starts: Vec<i64> = per_partition.keys().copied().collect();
            let counts: Vec<i64> = per_partition.values().map(|c| c.0).collect();
            let sizes: Vec<i64> = per_partition.values().map(|c| c.1).collect();
            tx.execute(&self.counts, &[&starts, &counts, &sizes])
                .await?;
        }
        tx.commit().await?;
        Ok(fresh)
    }
}

/// Time retention: drops every partition of `messages` that ends at or before `cutoff`
/// (nanoseconds), whole, never row by row, and the `messages_lookup` rows of those days (a
/// ranged delete on its timestamp index: that table is not partitioned, see the schema). A
/// partition holding `cutoff` stays, so messages live up to one partition (a UTC day) longer
/// than the policy says. One transaction under the schema lock, so nodes sharing the database
/// can run it at once. Returns the names of the partitions dropped, oldest first.
pub async fn drop_partitions_before(
    client: &mut Client,
    cutoff: i64,
) -> Result<Vec<String>, PgError> {
    let expired: Vec<(String, i64, i64)> = partitions(client)
        .await?
        .into_iter()
        .filter(|p| p.2 <= cutoff)
        .collect();
    let Some(until) = expired.last().map(|p| p.2) else {
        return Ok(Vec::new());
    };
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await?;
    let mut dropped = Vec::new();
    for (name, _, _) in expired {
        // Another node may have dropped it while this one waited for the lock.
        let exists: bool = tx
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
            .await?
            .try_get(0)?;
        if exists {
            // The name came from the catalog and matched `messages_<number>`: safe to format.
            tx.batch_execute(&format!("DROP TABLE {name}")).await?;
            dropped.push(name);
        }
    }
    tx.execute(
        "DELETE FROM messages_lookup WHERE timestamp < $1",
        &[&until],
    )
    .await?;
    tx.execute(
        "DELETE FROM roost_partition_counts WHERE partition_start < $1",
        &[&until],
    )
    .await?;
    tx.execute(
        "INSERT INTO roost_archive_state (name, value) VALUES ('cutoff', $1)
         ON CONFLICT (name) DO UPDATE SET value = GREATEST(roost_archive_state.value, EXCLUDED.value)",
        &[&until],
    )
    .await?;
    tx.commit().await?;
    Ok(dropped)
}

/// (messages, bytes) per partition start, as the inserts counted them.
pub async fn partition_counts(
    client: &Client,
) -> Result<std::collections::BTreeMap<i64, (u64, u64)>, PgError> {
    let rows = client
        .query(
            "SELECT partition_start, messages, bytes FROM roost_partition_counts",
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let start: i64 = row.try_get(0)?;
            let messages: i64 = row.try_get(1)?;
            let bytes: i64 = row.try_get(2)?;
            Ok((start, (messages.max(0) as u64, bytes.max(0) as u64)))
        })
        .collect()
}

/// Unix ns before which retention dropped everything (`None`: nothing dropped yet).
pub async fn cutoff(client: &Client) -> Result<Option<i64>, PgError> {
    Ok(client
        .query_opt(
            "SELECT value FROM roost_archive_state WHERE name = 'cutoff'",
            &[],
        )
        .await?
        .map(|row| row.try_get(0))
        .transpose()?)
}

/// Counts, bytes and extremes per pubsub topic, the space the archive takes (its partitions
/// and `messages_lookup`, with indexes and TOAST) and retention's cutoff. Scans the archive: for operators (`roost store stats`), not a hot path.
pub async fn summary(client: &Client) -> Result<Summary, PgError> {
    let rows = client
        .query(
            "SELECT pubsub_topic, count(*), COALESCE(sum(octet_length(message)), 0)::bigint,
                    min(timestamp), max(timestamp)
             FROM messages GROUP BY pubsub_topic ORDER BY pubsub_topic",
            &[],
        )
        .await?;
    let mut topics = Vec::new();
    for row in rows {
        let messages: i64 = row.try_get(1)?;
        let bytes: i64 = row.try_get(2)?;
        topics.push(TopicSummary {
            pubsub_topic: row.try_get(0)?,
            messages: messages.max(0) as u64,
            bytes: bytes.max(0) as u64,
            oldest: row.try_get(3)?,
            newest: row.try_get(4)?,
        });
    }
    let disk: i64 = client
        .query_one(
            "SELECT (COALESCE(sum(pg_total_relation_size(i.inhrelid)), 0)
                     + pg_total_relation_size('messages_lookup'))::bigint
             FROM pg_inherits i WHERE i.inhparent = 'messages'::regclass",
            &[],
        )
        .await?
        .try_get(0)?;
    let cutoff = cutoff(client).await?;
    Ok(Summary {
        messages: topics.iter().map(|t| t.messages).sum(),
        bytes: topics.iter().map(|t| t.bytes).sum(),
        disk_bytes: disk.max(0) as u64,
        cutoff,
        topics,
    })
}
