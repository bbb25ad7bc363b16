//! Store sync: store nodes reconcile their archives with each other, so a node that was down
//! (a crash, an upgrade, a cut) gets back what it missed, and nwaku store nodes can sit in the
//! same fleet (waku-org/specs `standards/core/{sync,store-sync}.md`, in nwaku's wire format).
//!
//! This module owns the two protocols' wire formats ([`codec`]), the reconciliation rounds
//! ([`reconcile`], reading fingerprints from the archive's index, see
//! `store::archive::sync_index`), sessions ([`session`]), message transfer ([`transfer`]), the
//! `[store_sync]` config, the `roost_store_sync_*` metrics and the `store_sync` health
//! component.
//!
//! Flow: streams come and go through `libp2p-stream`'s behaviour in the swarm (the swarm task
//! still owns the `Swarm`; this task holds a `Control`, a channel into it). The scheduler picks
//! a connected store peer (fleet members first) and runs a session as initiator: after a start
//! as soon as it meets one and its window covers the start (`relay_jitter` + 10 s; over the
//! span since the archive's newest message), then every
//! `interval` over `range`, leaving out the last `relay_jitter`. Each round's "the peer lacks
//! these" goes to a transfer sender; "this node lacks these" arrives on the peer's transfer
//! stream and goes through the relay's validation into the store's acknowledged write path.
//! A node is in one session at a time, and starts or serves none while a transfer is still
//! arriving or being sent (a transfer stream is open, or a sender still has messages to
//! send): two sessions that overlap (with two peers, or both ends starting at once), or a
//! session that starts while the last one's messages are still on their way, would find the
//! same messages missing again and have them sent twice. A session refused for
//! that is retried (a node's own after a random few seconds, a peer's at its next round).
//! Inbound sessions are admitted by the throttle's `store_sync` quota.

pub mod codec;
mod config;
mod metrics;
pub mod reconcile;
pub mod session;
pub mod transfer;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt as _;
use libp2p::{PeerId, StreamProtocol};
use rand::Rng as _;
use tokio::sync::{mpsc, oneshot, watch};

pub use config::Config;
pub use metrics::Metrics;

use crate::{
    health::{Health, Status},
    message::now_nanos,
    operator::FleetView,
    relay::Validator,
    store::ArchiveHandle,
    swarm::command::Command,
    throttle::{Service, Throttle},
};

/// The health component's name.
pub const HEALTH_COMPONENT: &str = "store_sync";
/// A peer's transfers are taken this long after its last session ended.
const TRANSFER_GRACE: Duration = Duration::from_secs(120);
/// The first round after a start waits until its window (which ends `relay_jitter` before
/// now) reaches this far past the start: everything published while the node was down, and
/// while it was meshing again, falls inside it.
const CATCH_UP_MARGIN: Duration = Duration::from_secs(10);
/// How often the scheduler looks for a first store peer after a start.
const PEER_POLL: Duration = Duration::from_secs(1);
/// A start with no store peer in sight this long counts as in sync (a lone store node).
const ALONE_AFTER: Duration = Duration::from_secs(60);
/// Retry delay after a failed or refused round: random in this span (at most `interval`), so
/// two nodes that started at once do not collide again.
const RETRY: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(8));
/// After a round that found messages missing here, the next round comes this soon.
const CONFIRM_AFTER: Duration = Duration::from_secs(15);
/// A transfer frame this recent means messages are still arriving: no new session yet.
const TRANSFER_QUIET: Duration = Duration::from_secs(2);
/// Longest a session may take, whoever started it.
const SESSION_LIMIT: Duration = Duration::from_secs(120);
/// Most inbound transfer streams one peer may hold open.
pub const MAX_TRANSFER_STREAMS: u32 = 2;
/// Most peers whose last session `/health` shows.
const MAX_PEERS_SHOWN: usize = 64;
/// Most hashes remembered as "on their way here"; beyond it a round's rest is not tracked
/// (in-sync status then waits for the next round).
const MAX_PENDING: usize = 1_000_000;

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("stream error: {0}")]
    Io(std::io::Error),
    #[error("cannot open a stream: {0}")]
    Open(String),
    #[error("{0}")]
    Decode(codec::DecodeError),
    #[error("archive: {0}")]
    Store(crate::store::StoreError),
    #[error("the peer sent nothing for {}s", session::ROUND_TIMEOUT.as_secs())]
    Timeout,
    #[error("the peer closed the stream before the session was over")]
    Closed,
    #[error("no settlement after {0} rounds")]
    TooManyRounds(usize),
    #[error("internal: {0}")]
    Internal(String),
}

#[derive(Debug, Default)]
struct PeerSessions {
    active: u32,
    ended: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    /// A session is running (this node is in one at a time).
    busy: bool,
    /// Transfers running: senders, and inbound streams from peers in session.
    transfers: usize,
    last_transfer: Option<Instant>,
    sessions: HashMap<PeerId, PeerSessions>,
    /// Inbound transfer streams open per peer.
    transfer_streams: HashMap<PeerId, u32>,
    /// Hashes the last round this node started found missing here, not yet settled.
    pending: HashSet<[u8; 32]>,
    last_round_ok: bool,
    last_success: Option<SystemTime>,
    /// The last completed session with each peer (either role), for `/health`; at most
    /// [`MAX_PEERS_SHOWN`], the oldest forgotten first.
    last_success_by_peer: HashMap<PeerId, SystemTime>,
    last_error: Option<String>,
    last_peer: Option<PeerId>,
    peers: usize,
    started: Option<Instant>,
    /// Since when the node is out of sync (for the health status).
    out_of_sync_since: Option<Instant>,
}

/// State shared by the scheduler, the sessions and the transfer receivers.
#[derive(Debug, Default)]
pub struct Shared {
    state: Mutex<State>,
}

impl Shared {
    /// Starts a session with `peer` unless one is running or transfers are still under way.
    fn try_begin(&self, peer: PeerId) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        if s.busy
            || s.transfers > 0
            || s.last_transfer
                .is_some_and(|t| t.elapsed() < TRANSFER_QUIET)
        {
            return false;
        }
        s.busy = true;
        s.sessions.entry(peer).or_default().active += 1;
        true
    }

    fn end(&self, peer: PeerId) {
        if let Ok(mut s) = self.state.lock() {
            s.busy = false;
            let entry = s.sessions.entry(peer).or_default();
            entry.active = entry.active.saturating_sub(1);
            entry.ended = Some(Instant::now());
            // Forget peers whose grace is long over (the map stays bounded by recent peers).
            s.sessions.retain(|_, p| {
                p.active > 0 || p.ended.is_some_and(|e| e.elapsed() < TRANSFER_GRACE)
            });
        }
    }

    /// A session with `peer` completed.
    fn succeeded(&self, peer: PeerId) {
        if let Ok(mut s) = self.state.lock() {
            s.last_success_by_peer.insert(peer, SystemTime::now());
            while s.last_success_by_peer.len() > MAX_PEERS_SHOWN {
                let oldest = s
                    .last_success_by_peer
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(p, _)| *p);
                match oldest {
                    Some(p) => s.last_success_by_peer.remove(&p),
                    None => break,
                };
            }
        }
    }

    /// Counts an inbound transfer stream of `peer` while the guard lives; `None` when the
    /// peer has too many open.
    pub fn open_transfer(self: &Arc<Self>, peer: PeerId) -> Option<TransferStream> {
        let mut s = self.state.lock().ok()?;
        let open = s.transfer_streams.entry(peer).or_default();
        if *open >= MAX_TRANSFER_STREAMS {
            return None;
        }
        *open += 1;
        Some(TransferStream {
            shared: self.clone(),
            peer,
        })
    }

    /// A transfer is under way until the guard is dropped (no session starts meanwhile).
    pub fn transfer_started(self: &Arc<Self>) -> TransferGuard {
        if let Ok(mut s) = self.state.lock() {
            s.transfers += 1;
        }
        TransferGuard(self.clone())
    }

    /// A transfer frame arrived (sessions wait until they stop).
    pub fn transfer_frame(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.last_transfer = Some(Instant::now());
        }
    }

    /// Whether `peer` has, or just had, a session with this node.
    pub fn expects_transfer_from(&self, peer: &PeerId) -> bool {
        self.state.lock().is_ok_and(|s| {
            s.sessions.get(peer).is_some_and(|p| {
                p.active > 0 || p.ended.is_some_and(|e| e.elapsed() < TRANSFER_GRACE)
            })
        })
    }

    /// A message the last round waited for has been dealt with (stored, a duplicate, refused).
    pub fn settled(&self, hash: &[u8; 32]) {
        if let Ok(mut s) = self.state.lock() {
            s.pending.remove(hash);
        }
    }

    fn in_sync(s: &State) -> bool {
        if s.peers == 0 {
            // Alone: in sync once nobody showed up for a while after the start.
            return s.last_round_ok || s.started.is_some_and(|t| t.elapsed() >= ALONE_AFTER);
        }
        s.last_round_ok && s.pending.is_empty()
    }

    /// Whether this node is in sync now.
    pub fn is_in_sync(&self) -> bool {
        self.state.lock().is_ok_and(|s| Self::in_sync(&s))
    }
}

/// A running transfer, counted in [`Shared`] until dropped.
#[derive(Debug)]
pub struct TransferGuard(Arc<Shared>);

impl Drop for TransferGuard {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.state.lock() {
            s.transfers = s.transfers.saturating_sub(1);
        }
    }
}

/// What the sync task's parts share (cloned into each initiated session).
#[derive(Clone)]
struct Core {
    config: Config,
    control: libp2p_stream::Control,
    archive: ArchiveHandle,
    validator: Validator,
    throttle: Throttle,
    fleet: FleetView,
    commands: mpsc::Sender<Command>,
    metrics: Metrics,
    health: Health,
    pubsub_topics: Vec<String>,
    shared: Arc<Shared>,
}

/// Everything the task is built from.
pub struct Parts {
    pub config: Config,
    pub control: libp2p_stream::Control,
    pub archive: ArchiveHandle,
    pub validator: Validator,
    pub throttle: Throttle,
    pub fleet: FleetView,
    pub commands: mpsc::Sender<Command>,
    pub metrics: Metrics,
    pub health: Health,
}

/// The outcome of the running initiator session; never resolves when there is none.
async fn finished(running: &mut Option<tokio::task::JoinHandle<bool>>) -> bool {
    match running {
        Some(handle) => handle.await.unwrap_or(false),
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`; never resolves for `None`.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// An open inbound transfer stream, counted per peer until dropped.
pub struct TransferStream {
    shared: Arc<Shared>,
    peer: PeerId,
}

impl Drop for TransferStream {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shared.state.lock() {
            if let Some(open) = s.transfer_streams.get_mut(&self.peer) {
                *open = open.saturating_sub(1);
                if *open == 0 {
                    s.transfer_streams.remove(&self.peer);
                }
            }
        }
    }
}

/// The running store sync: accepts sessions and transfers, and starts sessions.
pub struct SyncTask {
    core: Core,
    reconciliations: libp2p_stream::IncomingStreams,
    transfers: libp2p_stream::IncomingStreams,
}

impl SyncTask {
    /// Registers the two protocols (from here on identify lists them) and builds the task.
    pub fn new(mut parts: Parts) -> Result<SyncTask, String> {
        let reconciliations = parts
            .control
            .accept(StreamProtocol::new(codec::RECONCILIATION_PROTOCOL))
            .map_err(|e| format!("store sync: {e}"))?;
        let transfers = parts
            .control
            .accept(StreamProtocol::new(codec::TRANSFER_PROTOCOL))
            .map_err(|e| format!("store sync: {e}"))?;
        Ok(SyncTask {
            core: Core::new(parts),
            reconciliations,
            transfers,
        })
    }

    /// Runs until shutdown.
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> Result<(), String> {
        self.core
            .run(self.reconciliations, self.transfers, shutdown)
            .await
    }
}

impl Core {
    fn new(parts: Parts) -> Core {
        let pubsub_topics = parts.archive.served_topics().into_iter().collect();
        Core {
            config: parts.config,
            control: parts.control,
            archive: parts.archive,
            validator: parts.validator,
            throttle: parts.throttle,
            fleet: parts.fleet,
            commands: parts.commands,
            metrics: parts.metrics,
            health: parts.health,
            pubsub_topics,
            shared: Arc::new(Shared::default()),
        }
    }

    async fn run(
        self,
        mut reconciliations: libp2p_stream::IncomingStreams,
        mut transfers: libp2p_stream::IncomingStreams,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), String> {
        if let Ok(mut s) = self.shared.state.lock() {
            s.started = Some(Instant::now());
        }
        self.publish_health();
        let receiver = transfer::Receiver {
            archive: self.archive.clone(),
            validator: self.validator.clone(),
            shared: self.shared.clone(),
            metrics: self.metrics.clone(),
        };
        // The first round after a start covers the span since the newest archived message.
        let newest = {
            let archive = self.archive.weak_archive();
            tokio::task::spawn_blocking(move || {
                archive
                    .upgrade()
                    .and_then(|a| a.extremes().ok())
                    .and_then(|(_, newest)| newest)
            })
            .await
            .ok()
            .flatten()
        };
        let mut catch_up = Some(newest);
        // Not before the window covers the start (see CATCH_UP_MARGIN).
        let mut next_round =
            Some(tokio::time::Instant::now() + self.config.relay_jitter + CATCH_UP_MARGIN);
        let mut running: Option<tokio::task::JoinHandle<bool>> = None;
        let mut turn = 0usize;
        let mut health_tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some((peer, stream)) = reconciliations.next() => self.serve(peer, stream),
                Some((peer, stream)) = transfers.next() => {
                    if self.admit(&peer) {
                        tokio::spawn(receiver.clone().receive(peer, stream));
                    }
                }
                ok = finished(&mut running) => {
                    running = None;
                    if ok {
                        catch_up = None;
                    }
                    let found_gaps = self.shared.state.lock().is_ok_and(|s| !s.pending.is_empty());
                    let wait = if ok && found_gaps {
                        // A round that found messages missing here is followed by a short one
                        // once they should have arrived: it confirms the node is in sync (or
                        // asks again for what did not come) instead of waiting an interval.
                        CONFIRM_AFTER.min(self.config.interval)
                    } else if ok {
                        self.config.interval
                    } else {
                        rand::thread_rng().gen_range(RETRY.0..RETRY.1).min(self.config.interval)
                    };
                    next_round = Some(tokio::time::Instant::now() + wait);
                }
                _ = sleep_until(next_round) => {
                    let peers = self.eligible_peers().await;
                    self.metrics.peers.set(peers.len() as i64);
                    if let Ok(mut s) = self.shared.state.lock() {
                        s.peers = peers.len();
                    }
                    if peers.is_empty() {
                        // Look again soon while catching up, else at the next interval.
                        let wait = if catch_up.is_some() { PEER_POLL } else { self.config.interval };
                        next_round = Some(tokio::time::Instant::now() + wait);
                        continue;
                    }
                    let peer = if catch_up.is_some() {
                        peers[0]
                    } else {
                        turn = turn.wrapping_add(1);
                        peers[turn % peers.len()]
                    };
                    let window = self.window(catch_up.flatten());
                    next_round = None;
                    running = Some(tokio::spawn(self.clone().initiate(peer, window)));
                }
                _ = health_tick.tick() => self.publish_health(),
            }
        }
        if let Some(running) = running {
            running.abort();
        }
        Ok(())
    }

    /// The (start, end) of a round: the last `range` before the jitter; after a start, from
    /// the newest archived message (less the jitter) if that is earlier, within
    /// `catch_up_limit`.
    fn window(&self, newest_at_start: Option<i64>) -> (i64, i64) {
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        let end = now_nanos().saturating_sub(nanos(self.config.relay_jitter));
        let mut start = end.saturating_sub(nanos(self.config.range));
        if let Some(newest) = newest_at_start {
            let floor = now_nanos().saturating_sub(nanos(self.config.catch_up_limit));
            let from = newest
                .saturating_sub(nanos(self.config.relay_jitter))
                .max(floor);
            start = start.min(from);
        }
        (start, end)
    }

    /// Connected peers that serve store sync, fleet members first.
    async fn eligible_peers(&self) -> Vec<PeerId> {
        let (reply, rx) = oneshot::channel();
        if self.commands.send(Command::Status { reply }).await.is_err() {
            return Vec::new();
        }
        let Ok(status) = rx.await else {
            return Vec::new();
        };
        let mut peers: Vec<(bool, PeerId)> = status
            .peers
            .iter()
            .filter(|p| {
                p.protocols
                    .iter()
                    .any(|proto| proto == codec::RECONCILIATION_PROTOCOL)
            })
            .map(|p| (!self.fleet.is_fleet_peer(&p.peer_id), p.peer_id))
            .collect();
        peers.sort();
        peers.into_iter().map(|(_, p)| p).collect()
    }

    /// Throttle and session limits for a peer's inbound stream.
    fn admit(&self, peer: &PeerId) -> bool {
        match self.throttle.check(Service::StoreSync, peer, None) {
            Ok(()) => true,
            Err(throttled) => {
                tracing::debug!(%peer, %throttled, "store sync stream refused");
                false
            }
        }
    }

    /// Serves a session a peer started.
    fn serve(&self, peer: PeerId, stream: libp2p::Stream) {
        if !self.admit(&peer) {
            self.metrics.round("responder", false);
            return;
        }
        if !self.shared.try_begin(peer) {
            tracing::debug!(%peer, "store sync: busy with another session; refusing one");
            self.metrics.round("responder", false);
            return;
        }
        let ctx = self.session_context(peer);
        let shared = self.shared.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let result =
                tokio::time::timeout(SESSION_LIMIT, session::run(peer, stream, None, &ctx))
                    .await
                    .unwrap_or(Err(SyncError::Timeout));
            drop(ctx);
            shared.end(peer);
            match result {
                Ok(summary) => {
                    shared.succeeded(peer);
                    metrics.round("responder", true);
                    metrics
                        .differences
                        .observe((summary.to_send + summary.to_receive.len()) as f64);
                }
                Err(e) => {
                    metrics.round("responder", false);
                    tracing::debug!(%peer, error = %e, "store sync session (served) failed");
                }
            }
        });
    }

    /// A session's context, with a transfer sender to `peer` running beside it.
    fn session_context(&self, peer: PeerId) -> session::Context {
        let (outbox, hashes) = mpsc::unbounded_channel();
        let sending = self.shared.transfer_started();
        let send = transfer::send(
            self.control.clone(),
            peer,
            hashes,
            self.archive.clone(),
            self.metrics.clone(),
        );
        tokio::spawn(async move {
            send.await;
            drop(sending);
        });
        session::Context {
            archive: self.archive.weak_archive(),
            pubsub_topics: self.pubsub_topics.clone(),
            metrics: self.metrics.clone(),
            outbox,
        }
    }

    /// Runs one session this node starts; true when it completed.
    async fn initiate(mut self, peer: PeerId, window: (i64, i64)) -> bool {
        let started = Instant::now();
        if !self.shared.try_begin(peer) {
            return false;
        }
        let result = async {
            let stream = self
                .control
                .open_stream(peer, StreamProtocol::new(codec::RECONCILIATION_PROTOCOL))
                .await
                .map_err(|e| SyncError::Open(e.to_string()))?;
            let ctx = self.session_context(peer);
            tokio::time::timeout(
                SESSION_LIMIT,
                session::run(peer, stream, Some(window), &ctx),
            )
            .await
            .unwrap_or(Err(SyncError::Timeout))
        }
        .await;
        self.shared.end(peer);
        self.metrics
            .round_duration
            .observe(started.elapsed().as_secs_f64());
        let ok = result.is_ok();
        self.metrics.round("initiator", ok);
        if ok {
            self.shared.succeeded(peer);
        }
        if let Ok(mut s) = self.shared.state.lock() {
            s.last_peer = Some(peer);
            match result {
                Ok(summary) => {
                    self.metrics
                        .differences
                        .observe((summary.to_send + summary.to_receive.len()) as f64);
                    tracing::info!(
                        %peer,
                        rounds = summary.rounds,
                        to_send = summary.to_send,
                        to_receive = summary.to_receive.len(),
                        took = ?started.elapsed(),
                        "store sync session done"
                    );
                    s.pending = summary.to_receive.into_iter().take(MAX_PENDING).collect();
                    s.last_round_ok = true;
                    s.last_error = None;
                    let now = SystemTime::now();
                    s.last_success = Some(now);
                    self.metrics.last_success.set(unix_seconds(now) as i64);
                }
                Err(e) => {
                    // A peer busy with another session closes the stream at once: routine,
                    // retried in a few seconds; anything else is worth a warning.
                    if matches!(e, SyncError::Closed | SyncError::Io(_)) {
                        tracing::info!(%peer, error = %e, "store sync session refused or cut; retrying soon");
                    } else {
                        tracing::warn!(%peer, error = %e, "store sync session failed");
                    }
                    s.last_round_ok = false;
                    s.last_error = Some(e.to_string());
                }
            }
        }
        self.publish_health();
        ok
    }

    fn publish_health(&self) {
        let Ok(mut s) = self.shared.state.lock() else {
            return;
        };
        let in_sync = Shared::in_sync(&s);
        self.metrics.in_sync.set(i64::from(in_sync));
        if in_sync {
            s.out_of_sync_since = None;
        } else if s.out_of_sync_since.is_none() {
            s.out_of_sync_since = Some(Instant::now());
        }
        // Catching up after a start is normal: degraded only when it lasts beyond two rounds.
        let late = s
            .out_of_sync_since
            .is_some_and(|t| t.elapsed() > self.config.interval * 2 + Duration::from_secs(60));
        let status = if late { Status::Degraded } else { Status::Ok };
        self.health.set(
            HEALTH_COMPONENT,
            status,
            serde_json::json!({
                "in_sync": in_sync,
                "peers": s.peers,
                "pending": s.pending.len(),
                "last_success_unix": s.last_success.map(|t| unix_seconds(t) as u64),
                "last_success_by_peer": s
                    .last_success_by_peer
                    .iter()
                    .map(|(p, t)| (p.to_string(), serde_json::json!(unix_seconds(*t) as u64)))
                    .collect::<serde_json::Map<_, _>>(),
                "last_peer": s.last_peer.map(|p| p.to_string()),
                "last_error": s.last_error,
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_session_starts_while_a_transfer_is_under_way() {
        let shared = Arc::new(Shared::default());
        let peer = PeerId::random();
        let guard = shared.transfer_started();
        assert!(!shared.try_begin(peer), "a transfer is still under way");
        drop(guard);
        assert!(shared.try_begin(peer));
        assert!(!shared.try_begin(peer), "one session at a time");
        shared.end(peer);
        assert!(shared.try_begin(peer));
    }
}
