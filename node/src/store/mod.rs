//! The mailserver: a durable RocksDB archive of relayed messages and the Waku store v3
//! protocol (`/vac/waku/store-query/3.0.0`) that serves it.
//!
//! This module owns the archive (its own database under `<data_dir>/store`), its writer,
//! query and maintenance threads, retention, the store v3 wire format (server and client),
//! the `[store]` config section, the `roost store …` commands, the `roost_store_*` metrics and
//! the `store` health component.
//!
//! Data flow:
//! - the swarm task hands every accepted relay message to [`Sink`], which checks the cheap
//!   rules (ephemeral, timestamp window) and `try_send`s it to the writer thread; a full queue
//!   drops the message and counts it (`roost_store_messages_dropped_total{reason="queue_full"}`);
//! - [`ArchiveHandle::insert`] takes the same path but waits for the acknowledgement, which
//!   comes only after the message's batch is committed to the write-ahead log (fsynced when
//!   `store.sync`): what light push answers 200 on;
//! - the writer thread drains its queue into one `WriteBatch` per round (group commit), then
//!   answers the acknowledgements; between batches it refreshes gauges and applies retention;
//! - inbound store requests travel from the swarm task to the query threads with their
//!   `ResponseChannel` (decoding happens there, not in the codec), and the answer goes back
//!   through `Command::Respond`;
//! - the maintenance thread gives disk space back after retention cuts.

mod archive;
pub mod behaviour;
pub mod cli;
mod config;
pub mod engine;
pub mod keys;
mod metrics;
pub mod migrate;
pub mod postgres;
pub mod rpc;

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc as std_mpsc, Arc, Condvar, Mutex, OnceLock,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use libp2p::{request_response::ResponseChannel, PeerId};
use prometheus_client::registry::Registry;
use prost::Message as _;
use tokio::sync::{mpsc, oneshot, watch};

pub use archive::{
    dir_size, Archive, Incoming, Page, PageEntry, QueryError, RangeScope, RangeSummary, Stats,
    Summary, SyncView, TopicSummary, Tuning, Writer, Written,
};
pub use behaviour::{behaviour, Behaviour, Inbound};
pub use config::{
    masked_url, Backend, Config, Retention, RetentionError, RetentionPolicy, POSTGRES_PASSWORD_ENV,
};
pub use engine::{ArchiveRead, ArchiveWrite, EngineStatus, RangeSource};
pub use metrics::Metrics;
pub use rpc::{StoreQueryRequest, StoreQueryResponse, PROTOCOL_ID};

use crate::{
    health::{Health, Status},
    message::{now_nanos, WakuMessage},
    relay::MessageSink,
    relay::RelayedMessage,
    relay::RelayedTopics,
    reqres::Protocol as ReqResProtocol,
    swarm::command::Command,
    units::ByteSize,
};

/// Messages waiting for the writer thread. Full means the disk cannot keep up: relayed
/// messages are then dropped and counted, and [`ArchiveHandle::insert`] waits for room.
const INGEST_QUEUE: usize = 8192;
/// Most messages committed in one write batch.
const MAX_BATCH: usize = 1024;
/// Most bytes in one write batch.
const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;
/// How long a batch of only relayed (unacknowledged) messages waits for more before it is
/// committed. Bounds what a crash can lose of those, never anything acknowledged.
const RELAYED_LINGER: Duration = Duration::from_millis(5);
/// Store requests waiting for a query thread. Full means the store is overloaded: new
/// requests are answered 503 at once rather than queued.
const QUERY_QUEUE: usize = 64;
/// How often gauges and health are refreshed (and retention is checked when due).
const TICK: Duration = Duration::from_secs(1);
/// A write failure keeps the store `degraded` in `/health` this long.
const WRITE_ERROR_HEALTH: Duration = Duration::from_secs(30);
/// Repeated warnings (drops, write errors) are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Why a message was not stored (not an error: the store declines it by rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The sender marked it ephemeral.
    Ephemeral,
    /// Its timestamp is missing or older than the timestamp window.
    TooOld,
    /// Its timestamp is further in the future than the timestamp window.
    Future,
    /// It is older than what retention already deleted.
    Expired,
    /// Its pubsub topic is not one of the node's shards.
    PubsubTopic,
}

impl RejectReason {
    pub fn label(&self) -> &'static str {
        match self {
            RejectReason::Ephemeral => "ephemeral",
            RejectReason::TooOld => "too_old",
            RejectReason::Future => "future",
            RejectReason::Expired => "expired",
            RejectReason::PubsubTopic => "pubsub_topic",
        }
    }
}

/// What [`ArchiveHandle::insert`] reports once it is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Committed to the write-ahead log (fsynced when `store.sync`).
    Stored,
    /// The archive already had it (committed earlier).
    Duplicate,
    /// Not stored, by rule.
    Rejected(RejectReason),
}

/// What went wrong in the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the archive: {0}")]
    Open(String),
    #[error("archive write failed: {0}; check free disk space and permissions of the data dir")]
    Write(String),
    /// The PostgreSQL archive's database refused or could not be reached.
    #[error("the archive's PostgreSQL database: {0}")]
    Database(String),
    #[error(
        "the archive's disk has {available} free, below store.min_free_space ({reserve}); \
         new messages are not stored until space is freed (or the reserve lowered)"
    )]
    DiskFull {
        available: ByteSize,
        reserve: ByteSize,
    },
    #[error("archive read failed: {0}")]
    Read(String),
    #[error(
        "the archive is damaged: {0}; restore it from a backup or move it away to start empty"
    )]
    Corrupt(String),
    #[error("the store is overloaded; retry later")]
    Busy,
    #[error("the store is shutting down")]
    ShuttingDown,
}

/// The checks made before a message is queued: cheap, so they run wherever the message is.
#[derive(Debug)]
struct IngestRules {
    window_nanos: i64,
    /// The node's relayed topics (shared with the relay, so shards joined at run time count).
    served: RelayedTopics,
    metrics: Metrics,
}

impl IngestRules {
    fn check(
        &self,
        pubsub_topic: &str,
        message: &WakuMessage,
        now: i64,
    ) -> Result<(), RejectReason> {
        if message.is_ephemeral() {
            return Err(RejectReason::Ephemeral);
        }
        if !self.served.contains(pubsub_topic) {
            return Err(RejectReason::PubsubTopic);
        }
        match message.timestamp {
            None | Some(0) => Err(RejectReason::TooOld),
            Some(ts) if ts < now.saturating_sub(self.window_nanos) => Err(RejectReason::TooOld),
            Some(ts) if ts > now.saturating_add(self.window_nanos) => Err(RejectReason::Future),
            Some(_) => Ok(()),
        }
    }

    /// The checks for a message store sync brings: the same, except that it may be older than
    /// the window (that is what sync is for; nwaku's `syncMessageIngress` skips the check too).
    fn check_synced(
        &self,
        pubsub_topic: &str,
        message: &WakuMessage,
        now: i64,
    ) -> Result<(), RejectReason> {
        match self.check(pubsub_topic, message, now) {
            Err(RejectReason::TooOld) if message.timestamp.is_some_and(|ts| ts > 0) => Ok(()),
            other => other,
        }
    }
}

type Ack = oneshot::Sender<Result<InsertOutcome, StoreError>>;

/// What the writer thread is asked to do.
enum WriterCommand {
    Insert {
        message: Arc<RelayedMessage>,
        ack: Option<Ack>,
    },
    Summary {
        reply: oneshot::Sender<Result<Summary, StoreError>>,
    },
    Tick,
    Shutdown,
}

/// What the query threads are asked to do.
pub(crate) enum QueryJob {
    Remote {
        peer: PeerId,
        request: Vec<u8>,
        channel: ResponseChannel<Vec<u8>>,
    },
    Local {
        request: Vec<u8>,
        reply: oneshot::Sender<StoreQueryResponse>,
    },
    Stop,
}

/// A cloneable front to the running store: acknowledged inserts, local queries, stats.
#[derive(Clone)]
pub struct ArchiveHandle {
    writes: mpsc::Sender<WriterCommand>,
    /// Ends a lingering batch's wait when an acknowledged write is queued.
    writer: Arc<WriterWake>,
    queries: std_mpsc::SyncSender<QueryJob>,
    rules: Arc<IngestRules>,
    /// Weak: a handle (held by light push, the REST API, a caller's `NodeHandle`) must not
    /// keep the database open after the store stops.
    archive: std::sync::Weak<dyn ArchiveRead>,
}

impl std::fmt::Debug for ArchiveHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveHandle").finish_non_exhaustive()
    }
}

impl ArchiveHandle {
    /// Stores a message and resolves once that is final: `Stored`/`Duplicate` only after the
    /// batch holding it is committed to the write-ahead log (fsynced when `store.sync`), so an
    /// acknowledged message survives a crash. Waits for room when the writer is behind.
    pub async fn insert(
        &self,
        pubsub_topic: &str,
        message: WakuMessage,
    ) -> Result<InsertOutcome, StoreError> {
        if let Err(reason) = self.rules.check(pubsub_topic, &message, now_nanos()) {
            self.rules.metrics.reject(reason.label());
            return Ok(InsertOutcome::Rejected(reason));
        }
        self.write_acknowledged(pubsub_topic, message).await
    }

    /// Stores a message store sync brought from a peer, through the same writer and with the
    /// same acknowledgement as [`Self::insert`]; only the timestamp window does not apply.
    pub async fn insert_synced(
        &self,
        pubsub_topic: &str,
        message: WakuMessage,
    ) -> Result<InsertOutcome, StoreError> {
        if let Err(reason) = self.rules.check_synced(pubsub_topic, &message, now_nanos()) {
            self.rules.metrics.reject(reason.label());
            return Ok(InsertOutcome::Rejected(reason));
        }
        self.write_acknowledged(pubsub_topic, message).await
    }

    async fn write_acknowledged(
        &self,
        pubsub_topic: &str,
        message: WakuMessage,
    ) -> Result<InsertOutcome, StoreError> {
        let hash = message.hash(pubsub_topic);
        let size = message.encoded_len();
        let relayed = Arc::new(RelayedMessage {
            pubsub_topic: Arc::from(pubsub_topic),
            message,
            hash,
            source: None,
            size,
        });
        let (ack, rx) = oneshot::channel();
        self.writes
            .send(WriterCommand::Insert {
                message: relayed,
                ack: Some(ack),
            })
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        self.writer.wake();
        rx.await.map_err(|_| StoreError::ShuttingDown)?
    }

    /// Whether the store would keep this message (the rules [`Self::insert`] applies first),
    /// counting nothing: light push asks before waiting for an acknowledgement.
    pub fn accepts(&self, pubsub_topic: &str, message: &WakuMessage) -> bool {
        self.rules.check(pubsub_topic, message, now_nanos()).is_ok()
    }

    /// Answers a store query locally, exactly as a peer would get it.
    pub async fn query(&self, request: &StoreQueryRequest) -> StoreQueryResponse {
        let (reply, rx) = oneshot::channel();
        let job = QueryJob::Local {
            request: request.encode_to_vec(),
            reply,
        };
        let request_id = request.request_id.clone().unwrap_or_default();
        self.rules.metrics.query_queued();
        if self.queries.try_send(job).is_err() {
            self.rules.metrics.query_dequeued();
            return StoreQueryResponse::error(
                request_id,
                rpc::STATUS_SERVICE_UNAVAILABLE,
                StoreError::Busy.to_string(),
            );
        }
        rx.await.unwrap_or_else(|_| {
            StoreQueryResponse::error(
                request_id,
                rpc::STATUS_SERVICE_UNAVAILABLE,
                StoreError::ShuttingDown.to_string(),
            )
        })
    }

    /// The archive, for readers that work beside the query threads (store sync); an error
    /// once the store has stopped. Hold it only for the read at hand.
    pub fn archive(&self) -> Result<Arc<dyn ArchiveRead>, StoreError> {
        self.archive.upgrade().ok_or(StoreError::ShuttingDown)
    }

    /// The archive without keeping it open (see [`Self::archive`]).
    pub fn weak_archive(&self) -> std::sync::Weak<dyn ArchiveRead> {
        self.archive.clone()
    }

    /// The pubsub topics the store keeps now.
    pub fn served_topics(&self) -> Vec<String> {
        self.rules.served.list()
    }

    /// Counts, bytes and oldest/newest per pubsub topic.
    pub async fn summary(&self) -> Result<Summary, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writes
            .send(WriterCommand::Summary { reply })
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        rx.await.map_err(|_| StoreError::ShuttingDown)?
    }
}

/// Hands accepted relay messages to the writer without ever blocking the swarm task.
pub struct Sink {
    writes: mpsc::Sender<WriterCommand>,
    rules: Arc<IngestRules>,
    dropped_since_warn: u64,
    last_warn: Option<Instant>,
}

impl MessageSink for Sink {
    fn deliver(&mut self, message: &Arc<RelayedMessage>) {
        let metrics = &self.rules.metrics;
        if let Err(reason) = self
            .rules
            .check(&message.pubsub_topic, &message.message, now_nanos())
        {
            metrics.reject(reason.label());
            tracing::trace!(hash = %message.hash, reason = reason.label(), "not archiving message");
            return;
        }
        let command = WriterCommand::Insert {
            message: message.clone(),
            ack: None,
        };
        match self.writes.try_send(command) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics.drop_message("queue_full");
                self.dropped_since_warn += 1;
                if self.last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    tracing::warn!(
                        dropped = self.dropped_since_warn,
                        queue = INGEST_QUEUE,
                        "store ingest queue full: dropping relayed messages the disk cannot keep up with"
                    );
                    self.dropped_since_warn = 0;
                    self.last_warn = Some(Instant::now());
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => metrics.drop_message("stopped"),
        }
    }
}

/// The engine a store opened, before its threads run.
enum Opened {
    Rocksdb {
        archive: Arc<Archive>,
        writer: Writer,
    },
    Postgres(Box<postgres::engine::PgWriter>),
}

/// A store opened at start-up, before its threads run.
pub struct Store {
    opened: Opened,
    config: Config,
    rules: Arc<IngestRules>,
    health: Health,
}

impl Store {
    /// Opens the archive: `<data_dir>/store` (RocksDB) or the PostgreSQL database of
    /// `store.postgres_url`. `served` are the pubsub topics the node relays.
    pub async fn open(
        config: &Config,
        data_dir: &Path,
        served: RelayedTopics,
        registry: &mut Registry,
        health: Health,
    ) -> Result<Store, StoreError> {
        let started = Instant::now();
        let opened = match config.backend {
            Backend::Rocksdb => {
                let path = store_path(data_dir);
                let archive = Arc::new(Archive::open(
                    &path,
                    &Tuning {
                        size_limit: config.retention.size(),
                        memory_budget: config.memory_budget,
                    },
                )?);
                let mut writer = Writer::new(archive.clone(), config.sync)?;
                writer.keep_free(config.min_free_space);
                tracing::info!(
                    path = %path.display(),
                    messages = writer.stats().messages,
                    took = ?started.elapsed(),
                    retention = %config.retention,
                    sync = config.sync,
                    "store archive opened"
                );
                Opened::Rocksdb { archive, writer }
            }
            Backend::Postgres => {
                let settings = postgres::engine::PgSettings {
                    url: config.postgres_url.clone(),
                    password: config.postgres_password().map_err(StoreError::Open)?,
                    synchronous_commit: config.sync,
                };
                let writer = postgres::engine::open(settings, &config.retention)
                    .await
                    .map_err(|e| {
                        StoreError::Open(format!(
                            "PostgreSQL archive at {}: {e}",
                            masked_url(&config.postgres_url)
                        ))
                    })?;
                tracing::info!(
                    took = ?started.elapsed(),
                    retention = %config.retention,
                    synchronous_commit = config.sync,
                    "store archive opened on PostgreSQL"
                );
                Opened::Postgres(Box::new(writer))
            }
        };
        let metrics = Metrics::register(registry, &config.retention);
        Ok(Store {
            opened,
            config: config.clone(),
            rules: Arc::new(IngestRules {
                window_nanos: i64::try_from(config.timestamp_window.as_nanos()).unwrap_or(i64::MAX),
                served,
                metrics,
            }),
            health,
        })
    }

    /// Starts the store's threads. `commands` is the swarm task's inbox, for answers.
    pub fn start(self, commands: mpsc::Sender<Command>) -> Result<Started, StoreError> {
        let (writes_tx, writes_rx) = mpsc::channel(INGEST_QUEUE);
        let (queries_tx, queries_rx) = std_mpsc::sync_channel(QUERY_QUEUE);
        let queries_rx = Arc::new(Mutex::new(queries_rx));
        let (exited_tx, exited_rx) = std_mpsc::channel();
        let metrics = self.rules.metrics.clone();
        // Created first: if a later thread cannot start, dropping it stops the earlier ones.
        let mut control = Guard {
            writes: writes_tx.clone(),
            queries: queries_tx.clone(),
            readers: self.config.query_threads,
            mailbox: Arc::new(Mailbox::default()),
            stop: Arc::new(AtomicBool::new(false)),
            exited: std::sync::Mutex::new(exited_rx),
            threads: 0,
        };
        let mut threads = Vec::with_capacity(self.config.query_threads + 2);
        let spawn_error =
            |e: std::io::Error| StoreError::Open(format!("cannot start a store thread: {e}"));

        let engine: Box<dyn ArchiveWrite> = match self.opened {
            Opened::Rocksdb { archive, writer } => {
                let mailbox = control.mailbox.clone();
                threads.push(
                    spawn_store_thread(
                        "store-maintenance".into(),
                        ExitNotice(exited_tx.clone()),
                        move || run_maintenance(&archive, &mailbox),
                    )
                    .map_err(spawn_error)?,
                );
                control.threads += 1;
                Box::new(engine::RocksEngine::new(writer, control.mailbox.clone()))
            }
            Opened::Postgres(writer) => writer,
        };
        let reader = engine.reader();
        for i in 0..self.config.query_threads {
            let ctx = QueryContext {
                archive: reader.clone(),
                served: self.rules.served.clone(),
                metrics: metrics.clone(),
                commands: commands.clone(),
                stop: control.stop.clone(),
            };
            let rx = queries_rx.clone();
            threads.push(
                spawn_store_thread(
                    format!("store-query-{i}"),
                    ExitNotice(exited_tx.clone()),
                    move || run_queries(&ctx, &rx),
                )
                .map_err(spawn_error)?,
            );
            control.threads += 1;
        }
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let writer_wake = Arc::new(WriterWake::default());
        {
            let mut state = WriterThread {
                wake: writer_wake.clone(),
                engine,
                config: self.config.clone(),
                metrics: metrics.clone(),
                health: self.health.clone(),
                mailbox: control.mailbox.clone(),
                stop: control.stop.clone(),
                queue: writes_tx.downgrade(),
                last_error: None,
                errors_since_warn: 0,
                last_warn: None,
                next_retention: Instant::now(),
                last_refresh: Instant::now(),
            };
            threads.push(
                spawn_store_thread("store-writer".into(), ExitNotice(exited_tx), move || {
                    state.run(writes_rx);
                    let _ = done_tx.send(());
                })
                .map_err(spawn_error)?,
            );
            control.threads += 1;
        }
        let handle = ArchiveHandle {
            writes: writes_tx.clone(),
            writer: writer_wake,
            queries: queries_tx.clone(),
            rules: self.rules.clone(),
            archive: Arc::downgrade(&reader),
        };
        let sink = Sink {
            writes: writes_tx,
            rules: self.rules.clone(),
            dropped_since_warn: 0,
            last_warn: None,
        };
        let inbound = Inbound::new(queries_tx.clone(), metrics.clone());
        let tick = TICK.min(self.config.retention_interval);
        Ok(Started {
            handle,
            sink,
            inbound,
            runner: Runner {
                writes: control.writes.clone(),
                queries: queries_tx,
                readers: control.readers,
                mailbox: control.mailbox.clone(),
                threads,
                writer_done: done_rx,
                tick,
                metrics,
            },
            guard: control,
        })
    }
}

/// `<data_dir>/store`.
pub fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join("store")
}

/// A started store: what the node wires into the swarm task and its supervisor.
pub struct Started {
    pub handle: ArchiveHandle,
    pub sink: Sink,
    pub inbound: Inbound,
    pub runner: Runner,
    /// Keep it in the `Node`: dropping it stops the threads and closes the database.
    pub guard: Guard,
}

/// Supervises the store's threads: ticks the writer, notices if it dies, stops them all.
pub struct Runner {
    writes: mpsc::Sender<WriterCommand>,
    queries: std_mpsc::SyncSender<QueryJob>,
    readers: usize,
    mailbox: Arc<Mailbox>,
    threads: Vec<JoinHandle<()>>,
    writer_done: oneshot::Receiver<()>,
    tick: Duration,
    metrics: Metrics,
}

impl Runner {
    /// Runs until shutdown; then lets the writer commit what is queued and joins every thread.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), String> {
        let Runner {
            writes,
            queries,
            readers,
            mailbox,
            threads,
            mut writer_done,
            tick,
            metrics,
        } = self;
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failure = None;
        loop {
            tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                _ = &mut writer_done => {
                    failure = Some("the store writer thread stopped".to_owned());
                    break;
                }
                _ = ticker.tick() => {
                    metrics
                        .queue_depth
                        .get_or_create(&metrics::QueueLabels { queue: "ingest" })
                        .set((INGEST_QUEUE - writes.capacity()) as i64);
                    // Full: the writer is busy and checks the time after each batch anyway.
                    let _ = writes.try_send(WriterCommand::Tick);
                }
            }
        }
        // Graceful: the writer commits what is queued before it stops.
        let _ = writes.send(WriterCommand::Shutdown).await;
        let joined = tokio::task::spawn_blocking(move || {
            for _ in 0..readers {
                let _ = queries.send(QueryJob::Stop);
            }
            mailbox.stop();
            let mut panicked = false;
            for thread in threads {
                panicked |= thread.join().is_err();
            }
            panicked
        })
        .await;
        match (failure, joined) {
            (Some(why), _) => Err(why),
            (None, Ok(false)) => Ok(()),
            (None, _) => Err("a store thread panicked".into()),
        }
    }
}

/// Stops the store's threads when dropped and waits (a little) for them, so the database is
/// closed: a node dropped without a graceful stop must not leave it open behind it, e.g. while
/// its data dir is being removed. After a graceful stop it has nothing left to wait for.
pub struct Guard {
    writes: mpsc::Sender<WriterCommand>,
    queries: std_mpsc::SyncSender<QueryJob>,
    readers: usize,
    mailbox: Arc<Mailbox>,
    /// Checked by the writer and query threads after each batch or query.
    stop: Arc<AtomicBool>,
    /// One message per store thread that has ended. In a mutex only so that the guard (and
    /// the node holding it) is `Sync`; drop reaches it through `get_mut` without locking.
    exited: std::sync::Mutex<std_mpsc::Receiver<()>>,
    threads: usize,
}

/// Longest a dropped [`Guard`] waits for the store's threads.
const STOP_WAIT: Duration = Duration::from_secs(30);

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Full queues mean the threads are busy; they see the flag after their current work.
        let _ = self.writes.try_send(WriterCommand::Shutdown);
        for _ in 0..self.readers {
            let _ = self.queries.try_send(QueryJob::Stop);
        }
        self.mailbox.stop();
        let deadline = Instant::now() + STOP_WAIT;
        let exited = self
            .exited
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for _ in 0..self.threads {
            let left = deadline.saturating_duration_since(Instant::now());
            if exited.recv_timeout(left).is_err() {
                tracing::error!(
                    "store threads did not stop within {STOP_WAIT:?}; the archive stays open"
                );
                return;
            }
        }
    }
}

/// Starts one store thread running `work`. `work` and everything it captured (an
/// `Arc<Archive>` among it) are dropped when the call returns or unwinds, and only then does
/// `notice` tell the [`Guard`] the thread has ended: so when a dropped guard stops waiting, the
/// thread no longer holds the database. Sending the notice first let a test process exit while
/// a store thread was still closing RocksDB, which aborted it in RocksDB's C++ teardown.
fn spawn_store_thread(
    name: String,
    notice: ExitNotice,
    work: impl FnOnce() + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(move || {
        let _notice = notice;
        work();
    })
}

/// Tells [`Guard`] a thread ended, however it ended (a panic unwinds through this).
struct ExitNotice(std_mpsc::Sender<()>);

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

// === writer thread ===

/// What one round of the writer has taken so far.
#[derive(Default)]
struct Round {
    bytes: usize,
    /// A message in the batch waits for its acknowledgement (light push).
    acknowledged: bool,
    stop: bool,
}

impl Round {
    fn full(&self, batch: &[(Arc<RelayedMessage>, Option<Ack>)]) -> bool {
        batch.len() >= MAX_BATCH || self.bytes >= MAX_BATCH_BYTES
    }

    fn lingers(&self, batch: &[(Arc<RelayedMessage>, Option<Ack>)]) -> bool {
        !batch.is_empty() && !self.acknowledged && !self.stop && !self.full(batch)
    }
}

/// The writer thread, for an acknowledged write to wake it while its batch lingers. Relayed
/// messages queue without waking it, so a steady relay stream costs one wake-up of the
/// thread per linger rather than one per message or per polling step.
#[derive(Default)]
struct WriterWake(OnceLock<std::thread::Thread>);

impl WriterWake {
    fn wake(&self) {
        if let Some(thread) = self.0.get() {
            thread.unpark();
        }
    }
}

struct WriterThread {
    wake: Arc<WriterWake>,
    engine: Box<dyn ArchiveWrite>,
    config: Config,
    metrics: Metrics,
    health: Health,
    mailbox: Arc<Mailbox>,
    stop: Arc<AtomicBool>,
    /// To read the queue depth without keeping the queue open.
    queue: mpsc::WeakSender<WriterCommand>,
    last_error: Option<(Instant, String)>,
    errors_since_warn: u64,
    last_warn: Option<Instant>,
    next_retention: Instant,
    last_refresh: Instant,
}

impl WriterThread {
    fn run(&mut self, mut rx: mpsc::Receiver<WriterCommand>) {
        let _ = self.wake.0.set(std::thread::current());
        self.refresh();
        let mut batch: Vec<(Arc<RelayedMessage>, Option<Ack>)> = Vec::new();
        loop {
            let Some(first) = rx.blocking_recv() else {
                break;
            };
            let mut round = Round::default();
            // Group commit: take whatever queued up while the last batch was committing.
            self.drain(Some(first), &mut rx, &mut batch, &mut round);
            // Relayed messages are acknowledged to nobody: a batch of only those waits a
            // moment for more, so a steady relay stream costs one commit (and one wake-up of
            // this thread) per `RELAYED_LINGER`, not one per message. A batch holding a light
            // push acknowledgement is committed at once (one queued while the batch waits
            // unparks this thread: `WriterWake`). Parked, not polling: every wake-up of a
            // thread costs the relay CPU on a small machine.
            let deadline = Instant::now() + RELAYED_LINGER;
            while round.lingers(&batch) {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                std::thread::park_timeout(deadline - now);
                let next = rx.try_recv().ok();
                self.drain(next, &mut rx, &mut batch, &mut round);
            }
            let stop = round.stop;
            if !batch.is_empty() {
                self.commit(std::mem::take(&mut batch));
            }
            self.housekeeping();
            if stop || self.stop.load(Ordering::SeqCst) {
                break;
            }
        }
        self.refresh();
        self.engine.close();
        // The maintenance thread has nothing left to do once nothing writes.
        self.mailbox.stop();
        tracing::debug!("store writer stopped");
    }

    /// Moves `first` and whatever else is queued into `batch`, up to the batch limits.
    fn drain(
        &mut self,
        first: Option<WriterCommand>,
        rx: &mut mpsc::Receiver<WriterCommand>,
        batch: &mut Vec<(Arc<RelayedMessage>, Option<Ack>)>,
        round: &mut Round,
    ) {
        let mut command = first;
        while let Some(c) = command.take() {
            match c {
                WriterCommand::Insert { message, ack } => {
                    round.bytes += message.size;
                    round.acknowledged |= ack.is_some();
                    batch.push((message, ack));
                }
                WriterCommand::Summary { reply } => {
                    let _ = reply.send(self.engine.summary());
                }
                WriterCommand::Tick => {}
                WriterCommand::Shutdown => {
                    round.stop = true;
                    return;
                }
            }
            if round.full(batch) {
                return;
            }
            command = rx.try_recv().ok();
        }
    }

    fn commit(&mut self, batch: Vec<(Arc<RelayedMessage>, Option<Ack>)>) {
        let incoming: Vec<Incoming> = batch
            .iter()
            .map(|(m, _)| Incoming {
                pubsub_topic: m.pubsub_topic.clone(),
                hash: m.hash,
                timestamp: m.message.timestamp.unwrap_or(0),
                content_topic: m.message.content_topic.clone(),
                bytes: m.message.encode_to_vec(),
            })
            .collect();
        let started = Instant::now();
        let result = self.engine.write(&incoming);
        self.metrics
            .commit_duration
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(outcomes) => {
                self.metrics.batch_messages.observe(batch.len() as f64);
                for ((_, ack), outcome) in batch.into_iter().zip(outcomes) {
                    let outcome = match outcome {
                        Written::Stored => {
                            self.metrics.stored.inc();
                            InsertOutcome::Stored
                        }
                        Written::Duplicate => {
                            // An acknowledged insert of a message the relay path already
                            // queued (light push on a store node) is a confirmation, not a
                            // rejection.
                            if ack.is_none() {
                                self.metrics.reject("duplicate");
                            }
                            InsertOutcome::Duplicate
                        }
                        Written::Rejected(reason) => {
                            self.metrics.reject(reason.label());
                            InsertOutcome::Rejected(reason)
                        }
                    };
                    if let Some(ack) = ack {
                        let _ = ack.send(Ok(outcome));
                    }
                }
                self.count_gauges();
            }
            Err(error) => {
                self.metrics.write_errors.inc();
                self.errors_since_warn += 1;
                if self.last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    tracing::error!(
                        %error,
                        messages = batch.len(),
                        failed_batches = self.errors_since_warn,
                        "store write failed; these messages are not stored"
                    );
                    self.errors_since_warn = 0;
                    self.last_warn = Some(Instant::now());
                }
                self.last_error = Some((Instant::now(), error.to_string()));
                for (_, ack) in batch {
                    match ack {
                        Some(ack) => {
                            let _ = ack.send(Err(error.clone()));
                        }
                        None => self.metrics.drop_message("write_failed"),
                    }
                }
                self.refresh();
            }
        }
    }

    /// Between batches: gauges, health, and retention when due.
    fn housekeeping(&mut self) {
        let now = Instant::now();
        if now >= self.next_retention || self.engine.retention_pressing(&self.config.retention) {
            self.next_retention = now + self.config.retention_interval;
            self.retention();
        }
        if now.duration_since(self.last_refresh) >= TICK {
            self.refresh();
        }
    }

    fn retention(&mut self) {
        match self.engine.retain(&self.config.retention, now_nanos()) {
            Ok(None) => {}
            Ok(Some(cut)) => {
                if cut.messages > 0 {
                    tracing::info!(
                        policy = cut.policy,
                        deleted = cut.messages,
                        bytes = cut.bytes,
                        before = cut.cutoff.ts,
                        "store retention deleted old messages"
                    );
                }
                self.metrics
                    .retention_deleted
                    .get_or_create(&metrics::PolicyLabels { policy: cut.policy })
                    .inc_by(cut.messages);
                self.count_gauges();
            }
            Err(error) => {
                self.metrics.write_errors.inc();
                self.last_error = Some((Instant::now(), error.to_string()));
                tracing::error!(%error, "store retention could not delete old messages");
            }
        }
    }

    fn count_gauges(&self) {
        let (messages, bytes) = self.engine.totals();
        self.metrics.archive_messages.set(messages as i64);
        self.metrics.archive_bytes.set(bytes as i64);
    }

    /// Gauges and the health component.
    fn refresh(&mut self) {
        self.last_refresh = Instant::now();
        let status = self.engine.status(&self.metrics);
        self.metrics.disk_bytes.set(status.disk_bytes as i64);
        self.count_gauges();
        let depth = self
            .queue
            .upgrade()
            .map(|q| INGEST_QUEUE - q.capacity())
            .unwrap_or(0);
        let recent_error = self
            .last_error
            .as_ref()
            .filter(|(at, _)| at.elapsed() < WRITE_ERROR_HEALTH)
            .map(|(_, e)| e.clone());
        let mut details = serde_json::json!({
            "backend": self.engine.engine(),
            "messages": status.messages,
            "bytes": status.bytes,
            "disk_bytes": status.disk_bytes,
            "oldest": status.oldest,
            "newest": status.newest,
            "retention": self.config.retention.to_string(),
            "ingest_queue": depth,
            "last_write_error": recent_error,
        });
        if let Some(object) = details.as_object_mut() {
            object.extend(status.details);
            if let Some(why) = &status.unavailable {
                object.insert("unavailable".into(), serde_json::Value::String(why.clone()));
            }
        }
        self.health.set(
            "store",
            if recent_error.is_some() || status.unavailable.is_some() {
                Status::Degraded
            } else {
                Status::Ok
            },
            details,
        );
    }
}

// === query threads ===

struct QueryContext {
    archive: Arc<dyn ArchiveRead>,
    served: RelayedTopics,
    metrics: Metrics,
    commands: mpsc::Sender<Command>,
    stop: Arc<AtomicBool>,
}

fn run_queries(ctx: &QueryContext, jobs: &Mutex<std_mpsc::Receiver<QueryJob>>) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        if matches!(job, Ok(QueryJob::Remote { .. } | QueryJob::Local { .. })) {
            ctx.metrics.query_dequeued();
        }
        match job {
            Ok(QueryJob::Remote {
                peer,
                request,
                channel,
            }) => {
                let response = answer(ctx, &request, Some(peer));
                // Full command channel: wait (the swarm task drains it); closed: shutting down.
                let _ = ctx.commands.blocking_send(Command::Respond {
                    protocol: ReqResProtocol::Store,
                    channel,
                    response: response.encode_to_vec(),
                });
            }
            Ok(QueryJob::Local { request, reply }) => {
                let _ = reply.send(answer(ctx, &request, None));
            }
            Ok(QueryJob::Stop) | Err(_) => return,
        }
        if ctx.stop.load(Ordering::SeqCst) {
            return;
        }
    }
}

/// Decodes, checks and runs one request; always produces a response.
fn answer(ctx: &QueryContext, request: &[u8], peer: Option<PeerId>) -> StoreQueryResponse {
    let started = Instant::now();
    let query = match rpc::parse_request(request, &ctx.served.snapshot()) {
        Ok(q) => q,
        Err(bad) => {
            tracing::debug!(?peer, error = %bad.desc, "bad store request");
            ctx.metrics.query(
                "invalid",
                rpc::STATUS_BAD_REQUEST,
                started.elapsed().as_secs_f64(),
            );
            return StoreQueryResponse::error(bad.request_id, rpc::STATUS_BAD_REQUEST, bad.desc);
        }
    };
    let kind = query.kind();
    let response = match ctx.archive.query(&query) {
        Ok(page) => page_response(&query.request_id, page),
        Err(e @ QueryError::InvalidCursor(_)) => {
            StoreQueryResponse::error(&query.request_id, rpc::STATUS_BAD_REQUEST, e.to_string())
        }
        Err(e @ QueryError::Read(_)) => {
            tracing::warn!(error = %e, "store query failed");
            StoreQueryResponse::error(
                &query.request_id,
                rpc::STATUS_SERVICE_UNAVAILABLE,
                e.to_string(),
            )
        }
    };
    ctx.metrics
        .query(kind, response.code(), started.elapsed().as_secs_f64());
    tracing::trace!(
        ?peer,
        kind,
        status = response.code(),
        entries = response.messages.len(),
        "store query answered"
    );
    response
}

fn page_response(request_id: &str, page: Page) -> StoreQueryResponse {
    let messages = page
        .entries
        .into_iter()
        .map(|entry| {
            let (pubsub_topic, message) =
                match entry.record.as_deref().and_then(keys::decode_record) {
                    Some((topic, message)) => (Some(topic.to_owned()), Some(message.to_vec())),
                    None => (None, None),
                };
            rpc::WakuMessageKeyValue {
                message_hash: Some(entry.position.hash.to_vec()),
                message,
                pubsub_topic,
            }
        })
        .collect();
    StoreQueryResponse {
        request_id: Some(request_id.to_owned()),
        status_code: Some(rpc::STATUS_OK),
        status_desc: Some("OK".into()),
        messages,
        pagination_cursor: page.cursor.map(|c| c.0.to_vec()),
    }
}

// === maintenance thread ===

/// The latest reclaim job, merged when the thread is busy (only the newest cutoff matters).
#[derive(Default)]
pub struct Mailbox {
    state: Mutex<MailboxState>,
    wake: Condvar,
    busy: AtomicBool,
}

#[derive(Default)]
struct MailboxState {
    job: Option<(keys::Position, bool)>,
    stop: bool,
}

impl Mailbox {
    fn submit(&self, cutoff: keys::Position, compact: bool) {
        if let Ok(mut state) = self.state.lock() {
            let merged = match state.job {
                Some((c, k)) => (c.max(cutoff), k || compact),
                None => (cutoff, compact),
            };
            state.job = Some(merged);
            self.busy.store(true, Ordering::SeqCst);
            self.wake.notify_one();
        }
    }

    fn stop(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.stop = true;
            self.wake.notify_one();
        }
    }

    fn busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst)
    }
}

fn run_maintenance(archive: &Archive, mailbox: &Mailbox) {
    loop {
        let job = {
            let Ok(mut state) = mailbox.state.lock() else {
                return;
            };
            loop {
                if state.stop {
                    return;
                }
                if let Some(job) = state.job.take() {
                    break job;
                }
                mailbox.busy.store(false, Ordering::SeqCst);
                state = match mailbox.wake.wait(state) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            }
        };
        let (cutoff, compact) = job;
        if let Err(error) = Writer::reclaim(archive, cutoff, compact) {
            tracing::warn!(%error, "store could not give back disk space after retention");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relayed() -> Arc<RelayedMessage> {
        let message = WakuMessage::new("/app/1/chat/proto", vec![0; 100]);
        Arc::new(RelayedMessage {
            pubsub_topic: Arc::from("/waku/2/rs/1/0"),
            hash: message.hash("/waku/2/rs/1/0"),
            size: message.encoded_len(),
            message,
            source: None,
        })
    }

    #[test]
    fn only_a_batch_of_unacknowledged_messages_waits_for_more() {
        let mut round = Round::default();
        let mut batch: Vec<(Arc<RelayedMessage>, Option<Ack>)> = Vec::new();
        assert!(!round.lingers(&batch), "nothing to commit");
        batch.push((relayed(), None));
        assert!(round.lingers(&batch));
        let (ack, _rx) = oneshot::channel();
        batch.push((relayed(), Some(ack)));
        round.acknowledged = true;
        assert!(!round.lingers(&batch), "a light push waits for this commit");
        let mut stopping = Round {
            stop: true,
            ..Round::default()
        };
        assert!(!stopping.lingers(&batch[..1]));
        stopping.stop = false;
        stopping.bytes = MAX_BATCH_BYTES;
        assert!(!stopping.lingers(&batch[..1]), "a full batch goes at once");
    }

    #[test]
    fn an_acknowledged_write_wakes_the_parked_writer() {
        let wake = Arc::new(WriterWake::default());
        wake.wake(); // before the writer runs: nothing to wake, no panic
        let (parked_tx, parked_rx) = std_mpsc::channel();
        let writer = {
            let wake = wake.clone();
            std::thread::spawn(move || {
                let _ = wake.0.set(std::thread::current());
                let _ = parked_tx.send(());
                let started = Instant::now();
                // A lingering batch parks far longer than this test would wait.
                std::thread::park_timeout(Duration::from_secs(60));
                started.elapsed()
            })
        };
        parked_rx.recv().expect("the writer started");
        wake.wake();
        let parked = writer.join().expect("the writer thread");
        assert!(
            parked < Duration::from_secs(30),
            "the wake ended the park: {parked:?}"
        );
    }
}
