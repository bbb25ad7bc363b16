//! `roost store migrate`: copies an archive from one engine to the other (RocksDB under the
//! node's data dir ↔ the PostgreSQL database of `store.postgres_url`), for operators who
//! switch `store.backend`.
//!
//! The copy reads the source in (timestamp, hash) order and writes batches through each
//! engine's own write path (the RocksDB [`Writer`], the PostgreSQL [`Inserter`]), so the target
//! ends up as the node would have built it. Messages the target already has are skipped, so a
//! copy that was interrupted, or run again after the node stored more, just continues.
//! Nothing is deleted from the source.

use std::{collections::HashSet, path::Path, sync::Arc};

use super::{
    archive::{Archive, Incoming, Tuning, Writer, Written},
    keys::{self, Position},
    postgres::{self, Client, Inserter, PgError},
    Config, StoreError,
};
use crate::message::{MessageHash, WakuMessage};

/// Messages per write batch (one transaction or one RocksDB write batch).
const BATCH: usize = 1000;

/// What a copy did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Messages read from the source.
    pub read: u64,
    /// Messages the target did not have and now has.
    pub copied: u64,
    /// Messages the target had already.
    pub present: u64,
    /// Messages the target refused (RocksDB: older than what its retention already deleted).
    pub refused: u64,
    /// Messages in the target after the copy.
    pub target_total: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("the RocksDB archive: {0}")]
    Rocksdb(#[from] StoreError),
    #[error("the PostgreSQL archive: {0}")]
    Postgres(#[from] PgError),
    #[error("a record of the RocksDB archive at {0:?} does not decode; the archive is damaged")]
    BadRecord(Position),
}

/// The PostgreSQL database of `config`, connected with its password and migrated to the
/// current schema.
pub async fn connect_postgres(config: &Config) -> Result<Client, PgError> {
    let password = config.postgres_password().map_err(PgError::Read)?;
    let mut client = postgres::connect(&config.postgres_url, password.as_deref()).await?;
    postgres::migrate(&mut client).await?;
    Ok(client)
}

/// Copies the RocksDB archive at `path` (opened read-only: a running node keeps running, and
/// what it stores after the copy started is left for a second run) into PostgreSQL.
pub async fn rocksdb_to_postgres(
    path: &Path,
    client: &mut Client,
    mut progress: impl FnMut(&Copied),
) -> Result<Copied, MigrateError> {
    let archive = Archive::open_read_only(path)?;
    let inserter = Inserter::prepare(client).await?;
    let mut partitions: HashSet<i64> = postgres::partitions(client)
        .await?
        .into_iter()
        .map(|p| p.1)
        .collect();
    let mut done = Copied::default();
    let mut after = None;
    loop {
        let records = archive.records_after(after, BATCH)?;
        let Some(last) = records.last() else { break };
        after = Some(last.0);
        let mut batch = Vec::with_capacity(records.len());
        for (position, record) in &records {
            batch.push(incoming(*position, record)?);
        }
        for m in &batch {
            let start = postgres::partition_of(m.timestamp).1;
            if partitions.insert(start) {
                postgres::ensure_partitions(client, start, start).await?;
            }
        }
        let fresh = inserter.insert(client, &batch).await?;
        done.read += batch.len() as u64;
        let copied = fresh.iter().filter(|f| **f).count() as u64;
        done.copied += copied;
        done.present += batch.len() as u64 - copied;
        progress(&done);
    }
    let total: i64 = client
        .query_one("SELECT count(*) FROM messages", &[])
        .await
        .map_err(PgError::Db)?
        .get(0);
    done.target_total = total.max(0) as u64;
    Ok(done)
}

/// Copies the PostgreSQL archive into a RocksDB archive at `path` (created if absent; the
/// node using it must be stopped, RocksDB allows one writer).
pub async fn postgres_to_rocksdb(
    client: &Client,
    path: &Path,
    config: &Config,
    mut progress: impl FnMut(&Copied),
) -> Result<Copied, MigrateError> {
    let archive = Arc::new(Archive::open(
        path,
        &Tuning {
            size_limit: config.retention.size(),
            memory_budget: config.memory_budget,
        },
    )?);
    let mut writer = Writer::new(archive.clone(), config.sync)?;
    let page = client
        .prepare(
            "SELECT timestamp, hash, pubsub_topic, content_topic, message FROM messages
             WHERE (timestamp, hash) > ($1, $2) ORDER BY timestamp, hash LIMIT $3",
        )
        .await
        .map_err(PgError::Db)?;
    let mut done = Copied::default();
    let mut after: (i64, Vec<u8>) = (i64::MIN, Vec::new());
    loop {
        let rows = client
            .query(&page, &[&after.0, &after.1, &(BATCH as i64)])
            .await
            .map_err(PgError::Db)?;
        if rows.is_empty() {
            break;
        }
        let mut batch = Vec::with_capacity(rows.len());
        for row in &rows {
            let timestamp: i64 = row.try_get(0).map_err(PgError::Db)?;
            let hash: Vec<u8> = row.try_get(1).map_err(PgError::Db)?;
            let hash = <[u8; 32]>::try_from(hash.as_slice())
                .map_err(|_| PgError::Read("a hash that is not 32 bytes".into()))?;
            let pubsub_topic: String = row.try_get(2).map_err(PgError::Db)?;
            batch.push(Incoming {
                pubsub_topic: Arc::from(pubsub_topic.as_str()),
                hash: MessageHash(hash),
                timestamp,
                content_topic: row.try_get(3).map_err(PgError::Db)?,
                bytes: row.try_get(4).map_err(PgError::Db)?,
            });
            after = (timestamp, hash.to_vec());
        }
        for outcome in writer.write(&batch)? {
            match outcome {
                Written::Stored => done.copied += 1,
                Written::Duplicate => done.present += 1,
                Written::Rejected(_) => done.refused += 1,
            }
        }
        done.read += batch.len() as u64;
        progress(&done);
    }
    archive.flush()?;
    done.target_total = writer.stats().messages;
    Ok(done)
}

/// A RocksDB `messages` record as a message on its way into another archive.
fn incoming(position: Position, record: &[u8]) -> Result<Incoming, MigrateError> {
    let (pubsub_topic, bytes) =
        keys::decode_record(record).ok_or(MigrateError::BadRecord(position))?;
    let message = WakuMessage::decode(bytes).map_err(|_| MigrateError::BadRecord(position))?;
    Ok(Incoming {
        pubsub_topic: Arc::from(pubsub_topic),
        hash: MessageHash(position.hash),
        timestamp: position.ts,
        content_topic: message.content_topic,
        bytes: bytes.to_vec(),
    })
}
