//! The PostgreSQL engine behind [`ArchiveRead`] and [`ArchiveWrite`]: the writer thread's own
//! connection (batched inserts in one transaction each, partitions, retention) and one
//! connection shared by the query threads and store sync (tokio-postgres pipelines concurrent
//! queries on it).
//!
//! The store's threads are plain threads; each call here runs the async client on the node's
//! runtime through [`Handle::block_on`]. A lost connection fails the call at hand with a clear
//! error (the writer's batch: not stored, nothing acknowledged) and the next call reconnects,
//! at most once per [`RECONNECT_EVERY`], so a node whose database is gone keeps relaying,
//! reports the store degraded and recovers on its own.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::runtime::Handle;
use tokio_postgres::{error::SqlState, Client};

use super::{
    drop_partitions_before, ensure_partitions, partition_of, partitions, query, Inserter, PgError,
    PARTITION_NANOS,
};
use crate::{
    message::MessageHash,
    store::{
        archive::{Cut, Incoming, Page, QueryError, RangeScope, RangeSummary, Written},
        config::RetentionPolicy,
        engine::{ArchiveRead, ArchiveWrite, EngineStatus, RangeSource},
        keys::Position,
        metrics::Metrics,
        rpc::Query,
        RejectReason, StoreError, Summary,
    },
};

/// Least time between two connection attempts after one failed.
pub const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// Connection timeout when the URL sets none: a database that does not answer must not hold
/// the writer (and the relay's store queue) longer than this per attempt.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the writer re-reads counts and sizes for gauges and `/health` (a few catalog and
/// counter rows; the extremes are read on every refresh).
const MEASURE_EVERY: Duration = Duration::from_secs(2);
/// How far ahead of now the writer keeps partitions created.
const PARTITIONS_AHEAD: i64 = 6 * 3600 * 1_000_000_000;

/// Where the database is and how to log in.
#[derive(Clone)]
pub struct PgSettings {
    pub url: String,
    pub password: Option<String>,
    /// `synchronous_commit` for the writer's sessions (`store.sync`).
    pub synchronous_commit: bool,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &crate::store::masked_url(&self.url))
            .finish_non_exhaustive()
    }
}

impl PgSettings {
    async fn connect(&self) -> Result<Client, PgError> {
        let mut config: tokio_postgres::Config = self.url.parse().map_err(PgError::Url)?;
        if let Some(password) = &self.password {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("roost");
        }
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(PgError::Connect)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL connection ended");
            }
        });
        Ok(client)
    }
}

/// An error as operators should read it (tokio-postgres's own `Display` hides the server's
/// message behind "db error").
trait Describe {
    fn describe(&self) -> String;
}

impl Describe for tokio_postgres::Error {
    fn describe(&self) -> String {
        super::describe(self)
    }
}

impl Describe for PgError {
    fn describe(&self) -> String {
        self.to_string()
    }
}

impl Describe for String {
    fn describe(&self) -> String {
        self.clone()
    }
}

impl Describe for &str {
    fn describe(&self) -> String {
        (*self).to_owned()
    }
}

fn unreachable(e: impl Describe) -> StoreError {
    StoreError::Database(format!("unavailable ({}); reconnecting", e.describe()))
}

fn read_error(e: impl Describe) -> StoreError {
    StoreError::Read(format!("PostgreSQL: {}", e.describe()))
}

/// Opens the archive: connects, applies migrations, creates the partitions around now.
/// Fails (the node does not start) when the database cannot be reached or migrated: a store
/// node that starts without its archive would answer nothing.
pub async fn open(settings: PgSettings, retention: &RetentionPolicy) -> Result<PgWriter, PgError> {
    let mut client = settings.connect().await?;
    let version = super::migrate(&mut client).await?;
    let now = crate::message::now_nanos();
    ensure_partitions(
        &mut client,
        now - PARTITION_NANOS,
        now.saturating_add(PARTITIONS_AHEAD),
    )
    .await?;
    let known = partitions(&client).await?.iter().map(|p| p.1).collect();
    let cutoff = super::cutoff(&client).await?;
    let inserter = Inserter::prepare(&client).await?;
    set_commit_mode(&client, settings.synchronous_commit).await?;
    let reader_client = settings.connect().await?;
    tracing::info!(
        url = %crate::store::masked_url(&settings.url),
        schema = version,
        "PostgreSQL archive opened"
    );
    let reader = Arc::new(PgReader {
        settings: settings.clone(),
        handle: Handle::current(),
        client: Mutex::new(Some(Arc::new(reader_client))),
        next_attempt: Mutex::new(Instant::now()),
    });
    Ok(PgWriter {
        settings,
        handle: Handle::current(),
        connection: Some((client, inserter)),
        next_attempt: Instant::now(),
        last_error: None,
        reader,
        partitions: known,
        retention_time: retention.time(),
        cutoff,
        counts: HashMap::new(),
        counted: (0, 0),
        written_since_count: (0, 0),
        measured: None,
        status: EngineStatus::default(),
    })
}

async fn set_commit_mode(client: &Client, synchronous: bool) -> Result<(), PgError> {
    let mode = if synchronous { "on" } else { "off" };
    client
        .batch_execute(&format!("SET synchronous_commit = {mode}"))
        .await?;
    Ok(())
}

/// The query threads' and store sync's side: one connection, reconnected when lost.
pub struct PgReader {
    settings: PgSettings,
    handle: Handle,
    client: Mutex<Option<Arc<Client>>>,
    next_attempt: Mutex<Instant>,
}

impl PgReader {
    fn client(&self) -> Result<Arc<Client>, String> {
        let mut slot = self.client.lock().map_err(|_| "a reader panicked")?;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        *slot = None;
        let mut next = self.next_attempt.lock().map_err(|_| "a reader panicked")?;
        if Instant::now() < *next {
            return Err("PostgreSQL connection lost; reconnecting".into());
        }
        *next = Instant::now() + RECONNECT_EVERY;
        let client = self
            .handle
            .block_on(self.settings.connect())
            .map_err(|e| e.to_string())?;
        tracing::info!("store reconnected to PostgreSQL (queries)");
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }
}

impl ArchiveRead for PgReader {
    fn query(&self, q: &Query) -> Result<Page, QueryError> {
        let client = self.client().map_err(QueryError::Read)?;
        self.handle.block_on(query::query(&client, q))
    }

    fn extremes(&self) -> Result<(Option<i64>, Option<i64>), StoreError> {
        let client = self.client().map_err(read_error)?;
        let row = self
            .handle
            .block_on(client.query_one("SELECT min(timestamp), max(timestamp) FROM messages", &[]))
            .map_err(read_error)?;
        Ok((
            row.try_get(0).map_err(read_error)?,
            row.try_get(1).map_err(read_error)?,
        ))
    }

    fn record_of(&self, hash: &MessageHash) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let client = self.client().map_err(read_error)?;
        let row = self
            .handle
            .block_on(client.query_opt(
                "SELECT m.pubsub_topic, m.message FROM messages_lookup l
                 JOIN messages m ON m.timestamp = l.timestamp AND m.hash = l.hash
                 WHERE l.hash = $1",
                &[&&hash.0[..]],
            ))
            .map_err(read_error)?;
        row.map(|row| -> Result<(String, Vec<u8>), tokio_postgres::Error> {
            Ok((row.try_get(0)?, row.try_get(1)?))
        })
        .transpose()
        .map_err(read_error)
    }

    fn sync_view(&self) -> Result<Box<dyn RangeSource + '_>, StoreError> {
        let client = self.client().map_err(read_error)?;
        Ok(Box::new(PgRange {
            handle: &self.handle,
            client,
        }))
    }
}

/// Store sync's ranges, read with SQL over the primary key (timestamp, hash).
struct PgRange<'a> {
    handle: &'a Handle,
    client: Arc<Client>,
}

impl PgRange<'_> {
    /// The WHERE clause and parameters of a range in scope.
    fn clause(
        lower: &Position,
        upper: &Position,
        scope: &RangeScope<'_>,
    ) -> (
        String,
        Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>>,
    ) {
        let mut sql = "(timestamp, hash) >= ($1, $2) AND (timestamp, hash) <= ($3, $4)".to_owned();
        let mut params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = vec![
            Box::new(lower.ts),
            Box::new(lower.hash.to_vec()),
            Box::new(upper.ts),
            Box::new(upper.hash.to_vec()),
        ];
        if !scope.pubsub_topics.is_empty() {
            params.push(Box::new(scope.pubsub_topics.to_vec()));
            sql.push_str(&format!(" AND pubsub_topic = ANY(${})", params.len()));
        }
        if !scope.content_topics.is_empty() {
            params.push(Box::new(scope.content_topics.to_vec()));
            sql.push_str(&format!(" AND content_topic = ANY(${})", params.len()));
        }
        (sql, params)
    }
}

fn refs(
    params: &[Box<dyn tokio_postgres::types::ToSql + Sync + Send>],
) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

impl RangeSource for PgRange<'_> {
    fn summarize(
        &self,
        lower: Position,
        upper: Position,
        scope: RangeScope<'_>,
    ) -> Result<RangeSummary, StoreError> {
        if upper < lower {
            return Ok(RangeSummary::default());
        }
        let (clause, params) = Self::clause(&lower, &upper, &scope);
        // XOR of the hashes in the database (bit_xor over bit(256)), so a range costs one index
        // scan and one row back, not its hashes.
        let sql = format!(
            "SELECT count(*), bit_xor(('x' || encode(hash, 'hex'))::bit(256))::text
             FROM messages WHERE {clause}"
        );
        let row = self
            .handle
            .block_on(self.client.query_one(&sql, &refs(&params)))
            .map_err(read_error)?;
        let count: i64 = row.try_get(0).map_err(read_error)?;
        let bits: Option<String> = row.try_get(1).map_err(read_error)?;
        let mut fingerprint = [0u8; 32];
        if let Some(bits) = bits {
            if bits.len() != 256 {
                return Err(read_error(format!("a fingerprint of {} bits", bits.len())));
            }
            for (i, bit) in bits.bytes().enumerate() {
                if bit == b'1' {
                    fingerprint[i / 8] |= 0x80 >> (i % 8);
                }
            }
        }
        Ok(RangeSummary {
            count: u64::try_from(count).unwrap_or(0),
            fingerprint,
        })
    }

    fn ids(
        &self,
        lower: Position,
        upper: Position,
        scope: RangeScope<'_>,
    ) -> Result<Vec<Position>, StoreError> {
        if upper < lower {
            return Ok(Vec::new());
        }
        let (clause, params) = Self::clause(&lower, &upper, &scope);
        let sql =
            format!("SELECT timestamp, hash FROM messages WHERE {clause} ORDER BY timestamp, hash");
        let rows = self
            .handle
            .block_on(self.client.query(&sql, &refs(&params)))
            .map_err(read_error)?;
        rows.iter()
            .map(|row| {
                let ts: i64 = row.try_get(0).map_err(read_error)?;
                let hash: Vec<u8> = row.try_get(1).map_err(read_error)?;
                let hash = <[u8; 32]>::try_from(hash.as_slice())
                    .map_err(|_| read_error("a hash that is not 32 bytes"))?;
                Ok(Position { ts, hash })
            })
            .collect()
    }
}

/// The writer thread's side.
pub struct PgWriter {
    settings: PgSettings,
    handle: Handle,
    connection: Option<(Client, Inserter)>,
    next_attempt: Instant,
    last_error: Option<String>,
    reader: Arc<PgReader>,
    /// Starts of the partitions known to exist.
    partitions: BTreeSet<i64>,
    /// The time rule: older messages are refused (their partition is gone or going).
    retention_time: Option<Duration>,
    /// Retention's cutoff on the database (any node's): older messages are refused.
    cutoff: Option<i64>,
    /// (messages, bytes) per partition, from the last count.
    counts: HashMap<String, (u64, u64)>,
    /// The sums of `counts`.
    counted: (u64, u64),
    /// What this node stored since `counts` was taken.
    written_since_count: (u64, u64),
    measured: Option<Instant>,
    status: EngineStatus,
}

impl PgWriter {
    /// The writer's connection, reconnected (at most once per [`RECONNECT_EVERY`]) when lost.
    fn connection(&mut self) -> Result<(), StoreError> {
        if self
            .connection
            .as_ref()
            .is_some_and(|(c, _)| !c.is_closed())
        {
            return Ok(());
        }
        if self.connection.take().is_some() {
            tracing::warn!("store lost its PostgreSQL connection; reconnecting");
        }
        if Instant::now() < self.next_attempt {
            return Err(unreachable(
                self.last_error
                    .as_deref()
                    .unwrap_or("the connection was lost"),
            ));
        }
        self.next_attempt = Instant::now() + RECONNECT_EVERY;
        let settings = self.settings.clone();
        let connected = self.handle.block_on(async move {
            let client = settings.connect().await?;
            set_commit_mode(&client, settings.synchronous_commit).await?;
            let inserter = Inserter::prepare(&client).await?;
            Ok::<_, PgError>((client, inserter))
        });
        match connected {
            Ok(connection) => {
                tracing::info!("store reconnected to PostgreSQL");
                self.connection = Some(connection);
                self.last_error = None;
                // Another node may have created or dropped partitions meanwhile.
                self.partitions.clear();
                Ok(())
            }
            Err(e) => {
                self.last_error = Some(e.to_string());
                Err(unreachable(e))
            }
        }
    }

    /// Runs `work` on the writer's connection; a failure that closed it is reported as
    /// unavailability, the next call reconnects.
    fn with_client<T>(
        &mut self,
        work: impl AsyncFnOnce(&mut Client, &Inserter) -> Result<T, PgError>,
    ) -> Result<T, PgError> {
        let handle = self.handle.clone();
        let Some((client, inserter)) = self.connection.as_mut() else {
            return Err(PgError::Closed);
        };
        let result = handle.block_on(work(client, inserter));
        if result.is_err() && client.is_closed() {
            self.connection = None;
        }
        result
    }

    /// Creates the partitions `starts` that are not known to exist.
    fn ensure(&mut self, starts: &BTreeSet<i64>) -> Result<(), PgError> {
        if self.partitions.is_empty() {
            let found = self.with_client(async |client, _| partitions(client).await)?;
            self.partitions = found.iter().map(|p| p.1).collect();
        }
        let missing: Vec<i64> = starts.difference(&self.partitions).copied().collect();
        for start in missing {
            self.with_client(async |client, _| ensure_partitions(client, start, start).await)?;
            self.partitions.insert(start);
        }
        Ok(())
    }

    fn insert(&mut self, batch: &[Incoming]) -> Result<Vec<bool>, PgError> {
        let starts: BTreeSet<i64> = batch.iter().map(|m| partition_of(m.timestamp).1).collect();
        self.ensure(&starts)?;
        self.with_client(async |client, inserter| inserter.insert(client, batch).await)
    }

    /// Reads messages and bytes per partition, as every node's inserts counted them
    /// (`roost_partition_counts`: a few rows, not a scan of the archive).
    fn count(&mut self) -> Result<(), PgError> {
        let found = self.with_client(async |client, _| partitions(client).await)?;
        self.partitions = found.iter().map(|p| p.1).collect();
        let counted = self.with_client(async |client, _| super::partition_counts(client).await)?;
        self.counts = found
            .into_iter()
            .map(|(name, start, _)| (name, counted.get(&start).copied().unwrap_or_default()))
            .collect();
        self.counted = self
            .counts
            .values()
            .fold((0, 0), |acc, c| (acc.0 + c.0, acc.1 + c.1));
        self.written_since_count = (0, 0);
        Ok(())
    }

    /// The partitions of `messages` with their on-disk size (table, indexes, TOAST), oldest first.
    fn sizes(&mut self) -> Result<Vec<(String, i64, u64)>, PgError> {
        let rows = self.with_client(async |client, _| {
            Ok(client
                .query(
                    "SELECT c.relname::text, pg_total_relation_size(c.oid)
                     FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                     WHERE i.inhparent = 'messages'::regclass",
                    &[],
                )
                .await?)
        })?;
        let mut out = Vec::new();
        for row in rows {
            let name: String = row.try_get(0)?;
            let size: i64 = row.try_get(1)?;
            if let Some(start) = partition_start(&name) {
                out.push((name, start, size.max(0) as u64));
            }
        }
        out.sort_by_key(|p| p.1);
        Ok(out)
    }

    fn lookup_bytes(&mut self) -> Result<u64, PgError> {
        let row = self.with_client(async |client, _| {
            Ok(client
                .query_one("SELECT pg_total_relation_size('messages_lookup')", &[])
                .await?)
        })?;
        Ok(row.try_get::<_, i64>(0)?.max(0) as u64)
    }

    fn measure(&mut self, metrics: &Metrics) -> Result<(), PgError> {
        self.count()?;
        let disk = self.sizes()?.iter().map(|p| p.2).sum::<u64>() + self.lookup_bytes()?;
        let (oldest, newest) = self
            .reader
            .extremes()
            .map_err(|e| PgError::Read(e.to_string()))?;
        metrics.disk_bytes.set(disk as i64);
        self.status = EngineStatus {
            messages: self.counted.0,
            bytes: self.counted.1,
            disk_bytes: disk,
            oldest,
            newest,
            unavailable: None,
            details: serde_json::Map::new(),
        };
        self.measured = Some(Instant::now());
        Ok(())
    }
}

/// Start of a partition from its name (`messages_<start>`, `messages_m<-start>`).
fn partition_start(name: &str) -> Option<i64> {
    match name.strip_prefix("messages_m") {
        Some(n) => n.parse::<i64>().ok().map(|n| -n),
        None => name.strip_prefix("messages_")?.parse::<i64>().ok(),
    }
}

impl ArchiveWrite for PgWriter {
    fn engine(&self) -> &'static str {
        "postgres"
    }

    fn reader(&self) -> Arc<dyn ArchiveRead> {
        self.reader.clone()
    }

    fn write(&mut self, batch: &[Incoming]) -> Result<Vec<Written>, StoreError> {
        self.connection()?;
        let now = crate::message::now_nanos();
        let expired_before = self
            .retention_time
            .map(|age| now.saturating_sub(i64::try_from(age.as_nanos()).unwrap_or(i64::MAX)));
        let is_expired = |m: &Incoming| expired_before.is_some_and(|cut| m.timestamp < cut);
        let kept: Vec<Incoming> = batch.iter().filter(|m| !is_expired(m)).cloned().collect();
        let mut result = self.insert(&kept);
        // A partition another node dropped (retention) or that was never there: learn the
        // partitions again and retry once.
        if let Err(PgError::Db(e)) = &result {
            if e.code() == Some(&SqlState::CHECK_VIOLATION) && self.connection.is_some() {
                self.partitions.clear();
                result = self.insert(&kept);
            }
        }
        let fresh = match result {
            Ok(fresh) => fresh,
            Err(e) => {
                let closed = self.connection.is_none();
                self.last_error = Some(e.to_string());
                return Err(if closed {
                    unreachable(e)
                } else {
                    StoreError::Database(e.to_string())
                });
            }
        };
        let mut fresh = fresh.into_iter();
        let mut outcomes = Vec::with_capacity(batch.len());
        for m in batch {
            if is_expired(m) {
                outcomes.push(Written::Rejected(RejectReason::Expired));
            } else if fresh.next().unwrap_or(false) {
                self.written_since_count.0 += 1;
                self.written_since_count.1 += m.bytes.len() as u64;
                outcomes.push(Written::Stored);
            } else {
                outcomes.push(Written::Duplicate);
            }
        }
        Ok(outcomes)
    }

    fn totals(&self) -> (u64, u64) {
        (
            self.counted.0 + self.written_since_count.0,
            self.counted.1 + self.written_since_count.1,
        )
    }

    fn retention_pressing(&mut self, policy: &RetentionPolicy) -> bool {
        let over_capacity = policy
            .capacity()
            .is_some_and(|cap| self.totals().0 > cap.saturating_add(self.newest_partition_count()));
        let over_size = policy.size().is_some_and(|limit| {
            self.status.disk_bytes > limit.0
                && self.measured.is_some_and(|t| t.elapsed() >= MEASURE_EVERY)
        });
        over_capacity || over_size
    }

    fn retain(&mut self, policy: &RetentionPolicy, now: i64) -> Result<Option<Cut>, StoreError> {
        self.connection()?;
        let write_error = |e: PgError| StoreError::Database(format!("retention: {e}"));
        // Partitions ahead of time, so inserts never wait for DDL.
        let ahead = partition_of(now.saturating_add(PARTITIONS_AHEAD)).1;
        let wanted: BTreeSet<i64> = (0..=PARTITIONS_AHEAD / PARTITION_NANOS + 1)
            .map(|i| partition_of(now).1 + i * PARTITION_NANOS)
            .filter(|s| *s <= ahead)
            .collect();
        self.ensure(&wanted).map_err(write_error)?;
        self.count().map_err(write_error)?;
        // Another node on the database may have cut meanwhile.
        self.cutoff = self
            .with_client(async |client, _| super::cutoff(client).await)
            .map_err(write_error)?;

        // Each rule gives the end of the partitions it wants gone; the furthest wins. A
        // partition that holds newer messages than the rule allows stays whole, so capacity and
        // size keep up to one partition (an hour) more than they say.
        let mut plan: Option<(i64, &'static str)> = None;
        let mut consider = |cutoff: i64, rule: &'static str| {
            if plan.is_none_or(|(c, _)| cutoff > c) {
                plan = Some((cutoff, rule));
            }
        };
        if let Some(age) = policy.time() {
            consider(
                now.saturating_sub(i64::try_from(age.as_nanos()).unwrap_or(i64::MAX)),
                "time",
            );
        }
        let current = partition_of(now).1;
        let found = self.sizes().map_err(write_error)?;
        if let Some(cap) = policy.capacity() {
            let mut left = self.counted.0;
            for (name, start, _) in &found {
                let count = self.counts.get(name).map_or(0, |c| c.0);
                if left <= cap || *start >= current {
                    break;
                }
                left -= count;
                consider(start + PARTITION_NANOS, "capacity");
            }
        }
        if let Some(limit) = policy.size() {
            let mut left: u64 = found.iter().map(|p| p.2).sum();
            for (_, start, size) in &found {
                if left <= limit.0 || *start >= current {
                    break;
                }
                left -= size;
                consider(start + PARTITION_NANOS, "size");
            }
        }
        let Some((cutoff, rule)) = plan else {
            return Ok(None);
        };
        let before = self.counts.clone();
        let dropped = self
            .with_client(async |client, _| drop_partitions_before(client, cutoff).await)
            .map_err(write_error)?;
        let (mut messages, mut bytes) = (0, 0);
        for name in &dropped {
            if let Some((m, b)) = before.get(name) {
                messages += m;
                bytes += b;
            }
            self.counts.remove(name);
            if let Some(start) = partition_start(name) {
                self.partitions.remove(&start);
            }
        }
        self.counted = self
            .counts
            .values()
            .fold((0, 0), |acc, c| (acc.0 + c.0, acc.1 + c.1));
        self.cutoff = self
            .with_client(async |client, _| super::cutoff(client).await)
            .map_err(write_error)?;
        Ok(Some(Cut {
            cutoff: Position::at(cutoff.div_euclid(PARTITION_NANOS) * PARTITION_NANOS),
            policy: rule,
            messages,
            bytes,
        }))
    }

    fn status(&mut self, metrics: &Metrics) -> EngineStatus {
        let mut status = if let Err(e) = self.connection() {
            EngineStatus {
                unavailable: Some(e.to_string()),
                ..self.status.clone()
            }
        } else {
            // Counts and sizes scan: every MEASURE_EVERY. The extremes are two index probes
            // per partition: every refresh, so `/health` shows the newest message at once.
            let measured = if self.measured.is_none_or(|t| t.elapsed() >= MEASURE_EVERY) {
                self.measure(metrics)
            } else {
                self.reader
                    .extremes()
                    .map(|(oldest, newest)| {
                        self.status.oldest = oldest;
                        self.status.newest = newest;
                    })
                    .map_err(|e| PgError::Read(e.to_string()))
            };
            match measured {
                Ok(()) => self.status.clone(),
                Err(e) => EngineStatus {
                    unavailable: Some(if self.connection.is_none() {
                        unreachable(e.to_string()).to_string()
                    } else {
                        format!("PostgreSQL: {e}")
                    }),
                    ..self.status.clone()
                },
            }
        };
        let (messages, bytes) = self.totals();
        status.messages = messages;
        status.bytes = bytes;
        status.details.insert(
            "database".into(),
            serde_json::Value::String(
                if status.unavailable.is_some() {
                    "unreachable"
                } else {
                    "connected"
                }
                .into(),
            ),
        );
        status.details.insert(
            "partitions".into(),
            serde_json::Value::from(self.partitions.len()),
        );
        status
    }

    fn summary(&mut self) -> Result<Summary, StoreError> {
        self.connection()?;
        self.with_client(async |client, _| super::summary(client).await)
            .map_err(read_error)
    }

    fn close(&mut self) {
        self.connection = None;
    }
}

impl PgWriter {
    /// Messages in the newest partition with data: what capacity retention cannot drop.
    fn newest_partition_count(&self) -> u64 {
        self.partitions
            .iter()
            .rev()
            .find_map(|start| {
                let (name, _, _) = partition_of(*start);
                self.counts.get(&name).filter(|c| c.0 > 0).map(|c| c.0)
            })
            .unwrap_or(0)
            + self.written_since_count.0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn partition_names_parse_back_to_their_start() {
        for ts in [0, 1, super::PARTITION_NANOS * 3 + 5, -7] {
            let (name, start, _) = super::partition_of(ts);
            assert_eq!(super::partition_start(&name), Some(start));
        }
        assert_eq!(super::partition_start("messages_lookup"), None);
    }
}
