//! One reconciliation session on one stream, in either role: frames go back and forth until a
//! side has nothing but skips left (nwaku's `processRequest` loop). The archive is read on a
//! blocking thread, one round at a time; what this node must send is handed to the transfer
//! sender as each round finds it, so messages flow while reconciliation goes on.

use std::{sync::Weak, time::Duration};

use futures::AsyncWriteExt as _;
use libp2p::PeerId;
use tokio::sync::mpsc;

use super::{
    codec::{self, Payload},
    reconcile, Metrics, SyncError,
};
use crate::{
    reqres::{read_frame, write_frame},
    store::ArchiveRead,
};

/// Longest wait for the peer's next frame.
pub const ROUND_TIMEOUT: Duration = Duration::from_secs(30);
/// Most rounds in a session: each round narrows ranges eightfold, and a reply carries at most
/// `reconcile::REPLY_ITEM_BUDGET` ids of its own, so a session ends in about
/// log8(messages / 100) rounds plus one per budget of differing ids (~30 for 10% of 1M); a
/// peer that never settles is cut off here.
pub const MAX_ROUNDS: usize = 256;
/// Largest reconciliation frame read: ~1.8M ids. A Roost peer sends at most ~2.3 MB of its own
/// ids per frame, but nwaku bounds neither what it sends nor what it reads (`readLp(int.high)`),
/// and answers to item sets are not bounded: a frame of every id of a busy hour must pass.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// What a session found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub rounds: usize,
    pub to_send: usize,
    pub to_receive: Vec<[u8; 32]>,
}

/// What a session needs besides its stream.
pub struct Context {
    /// Weak, so a session cannot keep the database open after the store stops.
    pub archive: Weak<dyn ArchiveRead>,
    pub pubsub_topics: Vec<String>,
    pub metrics: Metrics,
    /// Hashes the peer lacks, for the transfer sender.
    pub outbox: mpsc::UnboundedSender<Vec<[u8; 32]>>,
}

async fn send(
    stream: &mut libp2p::Stream,
    payload: &Payload,
    metrics: &Metrics,
) -> Result<(), SyncError> {
    let bytes = codec::encode(payload);
    metrics.bytes("reconciliation", "sent", bytes.len());
    metrics.ranges(payload, "sent");
    write_frame(stream, &bytes).await.map_err(SyncError::Io)
}

async fn on_blocking<T: Send + 'static>(
    archive: &Weak<dyn ArchiveRead>,
    work: impl FnOnce(&dyn ArchiveRead) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, SyncError> {
    let archive = archive.clone();
    tokio::task::spawn_blocking(move || {
        let archive = archive
            .upgrade()
            .ok_or(crate::store::StoreError::ShuttingDown)?;
        work(&*archive)
    })
    .await
    .map_err(|e| SyncError::Internal(e.to_string()))?
    .map_err(SyncError::Store)
}

/// Runs a session. The initiator passes the window (start, end) of its first payload.
pub async fn run(
    peer: PeerId,
    mut stream: libp2p::Stream,
    window: Option<(i64, i64)>,
    ctx: &Context,
) -> Result<Summary, SyncError> {
    let mut summary = Summary::default();
    if let Some((start, end)) = window {
        let topics = ctx.pubsub_topics.clone();
        let first = on_blocking(&ctx.archive, move |archive| {
            reconcile::initial(&*archive.sync_view()?, &topics, &[], start, end)
        })
        .await?;
        send(&mut stream, &first, &ctx.metrics).await?;
    }
    loop {
        if summary.rounds >= MAX_ROUNDS {
            return Err(SyncError::TooManyRounds(MAX_ROUNDS));
        }
        let frame = tokio::time::timeout(ROUND_TIMEOUT, read_frame(&mut stream, MAX_FRAME))
            .await
            .map_err(|_| SyncError::Timeout)?
            .map_err(SyncError::Io)?;
        let Some(frame) = frame else {
            // The peer closed: fine when it had nothing more to say (a responder's peer
            // closes after its last frame), an error when a reply was due.
            if window.is_some() {
                return Err(SyncError::Closed);
            }
            break;
        };
        ctx.metrics.bytes("reconciliation", "received", frame.len());
        let payload = codec::decode(&frame).map_err(SyncError::Decode)?;
        ctx.metrics.ranges(&payload, "received");
        summary.rounds += 1;
        if payload.is_done() {
            break;
        }
        let topics = ctx.pubsub_topics.clone();
        let round = on_blocking(&ctx.archive, move |archive| {
            reconcile::process(&*archive.sync_view()?, &topics, &[], &payload)
        })
        .await?;
        if !round.to_send.is_empty() {
            summary.to_send += round.to_send.len();
            let _ = ctx.outbox.send(round.to_send);
        }
        summary.to_receive.extend(round.to_receive);
        send(&mut stream, &round.reply, &ctx.metrics).await?;
        if round.reply.is_done() {
            break;
        }
    }
    tracing::trace!(%peer, rounds = summary.rounds, "reconciliation session over");
    let _ = stream.close().await;
    Ok(summary)
}
