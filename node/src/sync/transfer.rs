//! Message transfer (`/vac/waku/transfer/1.0.0`): sending the messages a peer lacks, and
//! taking in the ones this node lacks.
//!
//! Sending: one stream per session, opened when the first hash arrives, fed from the archive
//! in chunks, closed when the session is over and everything is written.
//!
//! Receiving: a message is taken only from a peer this node has (or just had) a session with,
//! then goes through the relay's validation and the store's acknowledged write path, as a
//! relayed message does (only the timestamp window is waived: synced messages are old by
//! nature). Writes run concurrently, so the writer thread commits them in batches.

use std::{sync::Arc, time::Duration};

use futures::{stream::FuturesUnordered, AsyncWriteExt as _, StreamExt as _};
use libp2p::{PeerId, StreamProtocol};
use prost::Message as _;
use tokio::sync::mpsc;

use super::{codec, Metrics, Shared};
use crate::{
    message::MessageHash,
    relay::Validator,
    reqres::{read_frame, write_frame},
    store::{ArchiveHandle, InsertOutcome},
};

/// An inbound transfer stream with no frame for this long is closed. Long: nwaku keeps one
/// transfer stream per peer open across its rounds (5 minutes apart) and loses the first
/// message it writes into a stream the other side closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// An outbound transfer write that makes no progress for this long gives up (a peer that
/// stops reading must not hold this node's sessions back).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(120);
/// Messages read from the archive per blocking call.
const CHUNK: usize = 256;
/// Writes in flight per transfer stream: enough for the writer to batch them.
const IN_FLIGHT: usize = 256;
/// Room around the message in a transfer frame (pubsub topic, protobuf tags).
const FRAME_OVERHEAD: usize = 4096;

/// Sends the messages whose hashes arrive on `hashes` to `peer`, until the channel closes.
pub async fn send(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    mut hashes: mpsc::UnboundedReceiver<Vec<[u8; 32]>>,
    archive: ArchiveHandle,
    metrics: Metrics,
) {
    let mut stream: Option<libp2p::Stream> = None;
    while let Some(batch) = hashes.recv().await {
        for chunk in batch.chunks(CHUNK) {
            let chunk = chunk.to_vec();
            let reader = archive.weak_archive();
            let records = tokio::task::spawn_blocking(move || {
                let Some(reader) = reader.upgrade() else {
                    return Vec::new();
                };
                chunk
                    .iter()
                    .filter_map(|h| reader.record_of(&MessageHash(*h)).ok().flatten())
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            for (pubsub_topic, message) in records {
                if stream.is_none() {
                    match control
                        .open_stream(peer, StreamProtocol::new(codec::TRANSFER_PROTOCOL))
                        .await
                    {
                        Ok(s) => stream = Some(s),
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "cannot open a transfer stream");
                            return;
                        }
                    }
                }
                let Some(s) = stream.as_mut() else { return };
                let frame = codec::MessageAndTopic {
                    pubsub_topic,
                    message,
                }
                .encode_to_vec();
                match tokio::time::timeout(WRITE_TIMEOUT, write_frame(s, &frame)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "transfer stream failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "transfer stream stalled; closing it");
                        return;
                    }
                }
                metrics.bytes("transfer", "sent", frame.len());
                metrics
                    .messages
                    .get_or_create(&super::metrics::DirectionLabels { direction: "sent" })
                    .inc();
            }
        }
    }
    if let Some(mut s) = stream {
        let _ = s.close().await;
    }
}

/// What a receiver needs.
#[derive(Clone)]
pub struct Receiver {
    pub archive: ArchiveHandle,
    pub validator: Validator,
    pub shared: Arc<Shared>,
    pub metrics: Metrics,
}

impl Receiver {
    /// Reads one inbound transfer stream to its end (refused at once when the peer already
    /// has [`super::MAX_TRANSFER_STREAMS`] open).
    pub async fn receive(self, peer: PeerId, mut stream: libp2p::Stream) {
        let Some(_open) = self.shared.open_transfer(peer) else {
            tracing::debug!(%peer, "too many transfer streams from one peer; refusing one");
            let _ = stream.close().await;
            return;
        };
        // While a session's messages arrive (frames coming, writes unacknowledged) no session
        // starts here. An nwaku peer keeps its stream open between rounds, so the mark drops
        // once the stream is quiet and nothing is left to write.
        let mut receiving: Option<super::TransferGuard> = None;
        let max = self.validator.max_message_size() + FRAME_OVERHEAD;
        let mut writes = FuturesUnordered::new();
        loop {
            // Keep the writes moving while waiting for the next frame. The read lives across
            // the wait: dropping a half-done read_frame (as a select! over a fresh read each
            // time did whenever a write finished first) loses the bytes it had read, and the
            // stream is out of step from there on.
            let frame = {
                let read = tokio::time::timeout(IDLE_TIMEOUT, read_frame(&mut stream, max));
                tokio::pin!(read);
                loop {
                    if writes.len() >= IN_FLIGHT {
                        if let Some(()) = writes.next().await {
                            continue;
                        }
                    }
                    tokio::select! {
                        Some(()) = writes.next(), if !writes.is_empty() => continue,
                        read = &mut read => break read,
                        _ = tokio::time::sleep(super::TRANSFER_QUIET),
                            if receiving.is_some() && writes.is_empty() => {
                            receiving = None;
                            continue;
                        }
                    }
                }
            };
            let frame = match frame {
                Ok(Ok(Some(frame))) => frame,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "transfer stream failed");
                    break;
                }
                Err(_) => {
                    tracing::debug!(%peer, "transfer stream idle; closing it");
                    break;
                }
            };
            self.shared.transfer_frame();
            self.metrics.bytes("transfer", "received", frame.len());
            self.metrics
                .messages
                .get_or_create(&super::metrics::DirectionLabels {
                    direction: "received",
                })
                .inc();
            if !self.shared.expects_transfer_from(&peer) {
                self.metrics.received("unsolicited");
                tracing::debug!(%peer, "message transferred outside a sync session; dropped");
                continue;
            }
            if receiving.is_none() {
                receiving = Some(self.shared.transfer_started());
            }
            let Ok(item) = codec::MessageAndTopic::decode(frame.as_slice()) else {
                self.metrics.received("invalid");
                continue;
            };
            let message = match self.validator.validate(&item.pubsub_topic, &item.message) {
                Ok(message) => message,
                Err(invalid) => {
                    self.metrics.received("invalid");
                    tracing::debug!(%peer, reason = invalid.label(), "invalid message transferred");
                    continue;
                }
            };
            let this = self.clone();
            writes.push(async move {
                let hash = message.hash(&item.pubsub_topic);
                let outcome = this
                    .archive
                    .insert_synced(&item.pubsub_topic, message)
                    .await;
                let label = match outcome {
                    Ok(InsertOutcome::Stored) => {
                        this.metrics.gained.inc();
                        "stored"
                    }
                    Ok(InsertOutcome::Duplicate) => "duplicate",
                    Ok(InsertOutcome::Rejected(_)) => "rejected",
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot store a message store sync brought");
                        "failed"
                    }
                };
                this.metrics.received(label);
                this.shared.settled(&hash.0);
            });
        }
        while writes.next().await.is_some() {}
        let _ = stream.close().await;
    }
}
