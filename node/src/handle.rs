//! [`NodeHandle`]: the cloneable front to a running node, and [`NodeInfo`]. A leaf of its own,
//! so the node's parts (HTTP, the rendezvous client, light clients) take a handle without
//! importing `node.rs`, which builds them.

use std::{net::SocketAddr, sync::Arc};

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::{
    filter::ReceivedPush,
    health::Health,
    message::WakuMessage,
    relay::RelayedMessage,
    store,
    swarm::command::{Command, NetworkStatus, PublishError, PublishReceipt},
    throttle::Throttle,
};

/// Facts about a running node that do not change while it runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeInfo {
    pub peer_id: PeerId,
    pub version: &'static str,
    /// Every listen address with `/p2p/<peer id>` appended.
    pub listen_addresses: Vec<Multiaddr>,
    pub tcp_addresses: Vec<Multiaddr>,
    pub ws_addresses: Vec<Multiaddr>,
    pub http_address: Option<SocketAddr>,
    /// Where the nwaku-compatible REST API listens (`[rest]`), when enabled.
    pub rest_address: Option<SocketAddr>,
    pub cluster_id: u16,
    pub shards: Vec<u16>,
    pub pubsub_topics: Vec<String>,
    pub protocols: Vec<String>,
    /// This node's Waku ENR (`enr:-…`), as peer exchange hands it out.
    pub enr: Option<String>,
}

/// A cloneable front to a running node.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) messages: broadcast::Sender<Arc<RelayedMessage>>,
    pub(crate) filter_pushes: broadcast::Sender<Arc<ReceivedPush>>,
    /// Snapshot requests to the filter service task; `None` without the filter service.
    pub(crate) filter_snapshots: Option<mpsc::Sender<crate::filter::service::SnapshotReply>>,
    pub(crate) info: Arc<NodeInfo>,
    pub(crate) health: Health,
    pub(crate) throttle: Throttle,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) store: Option<store::ArchiveHandle>,
    pub(crate) fleet: crate::operator::FleetView,
    pub(crate) attestation: watch::Receiver<crate::operator::local::Current>,
}

impl NodeHandle {
    pub fn info(&self) -> &NodeInfo {
        &self.info
    }

    pub fn peer_id(&self) -> PeerId {
        self.info.peer_id
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The node's quotas, offence scores and bans (see [`crate::throttle`]); e.g. the
    /// operator-identity capability marks attested fleet members through it.
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// The archive, when this node is a store node: acknowledged inserts, local queries, stats.
    pub fn store(&self) -> Option<&store::ArchiveHandle> {
        self.store.as_ref()
    }

    /// The connected peers whose fleet attestations this node verified.
    pub fn fleet(&self) -> &crate::operator::FleetView {
        &self.fleet
    }

    /// The attestation this node serves now, if any (renewals replace it while running).
    pub fn attestation(&self) -> crate::operator::local::Current {
        self.attestation.borrow().clone()
    }

    /// Validates and publishes a message; it is also handed to this node's own consumers.
    pub async fn publish(
        &self,
        pubsub_topic: impl Into<String>,
        message: WakuMessage,
    ) -> Result<PublishReceipt, PublishError> {
        self.send_publish(pubsub_topic.into(), message, false).await
    }

    /// [`Self::publish`], and on a static-sharding topic this node does not relay, through
    /// gossipsub's fanout to the peers that do (not delivered locally), as nwaku's
    /// autosharded REST publish does.
    pub async fn publish_anywhere(
        &self,
        pubsub_topic: impl Into<String>,
        message: WakuMessage,
    ) -> Result<PublishReceipt, PublishError> {
        self.send_publish(pubsub_topic.into(), message, true).await
    }

    async fn send_publish(
        &self,
        pubsub_topic: String,
        message: WakuMessage,
        fanout: bool,
    ) -> Result<PublishReceipt, PublishError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Publish {
                pubsub_topic,
                message,
                fanout,
                reply,
            })
            .await
            .map_err(|_| PublishError::ShuttingDown)?;
        rx.await.map_err(|_| PublishError::ShuttingDown)?
    }

    /// Every message this node accepts from now on (relayed or published locally).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RelayedMessage>> {
        self.messages.subscribe()
    }

    /// Messages filter services push to this node from now on (this node as a filter client).
    /// Pushes that arrive while nobody listens are dropped.
    pub fn filter_pushes(&self) -> broadcast::Receiver<Arc<ReceivedPush>> {
        self.filter_pushes.subscribe()
    }

    /// Keeps connections to `peer` open although no stream is active on them (`true`), or
    /// lets them close when idle again (`false`): a filter client must stay reachable for the
    /// service's pushes. Does nothing once the node is shutting down.
    pub async fn keep_alive(&self, peer: PeerId, keep_alive: bool) {
        let _ = self
            .commands
            .send(Command::KeepAlive { peer, keep_alive })
            .await;
    }

    /// The filter service's live subscribers and their (pubsub topic, content topic)
    /// criteria; `None` when this node serves no filter or is shutting down.
    pub async fn filter_subscriptions(&self) -> Option<Vec<(PeerId, Vec<(String, String)>)>> {
        let (reply, rx) = oneshot::channel();
        self.filter_snapshots.as_ref()?.send(reply).await.ok()?;
        rx.await.ok()
    }

    pub async fn dial(&self, address: Multiaddr) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Dial { address, reply })
            .await
            .map_err(|_| "node is shutting down".to_owned())?;
        rx.await.map_err(|_| "node is shutting down".to_owned())?
    }

    /// Dials `address` and waits until that connection is established (`Ok`) or the dial
    /// fails; a connection the remote closes right after still counts, as in nwaku.
    pub async fn connect(&self, address: Multiaddr) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Connect { address, reply })
            .await
            .map_err(|_| "node is shutting down".to_owned())?;
        rx.await.map_err(|_| "node is shutting down".to_owned())?
    }

    /// Joins (or leaves) the relay of a shard of this node's cluster at run time, as nwaku's
    /// REST relay subscriptions do; `relay.shards` are never left. `Ok(true)` when something
    /// changed.
    pub async fn relay_topic(&self, pubsub_topic: String, join: bool) -> Result<bool, String> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::RelayTopic {
                pubsub_topic,
                join,
                reply,
            })
            .await
            .map_err(|_| "node is shutting down".to_owned())?;
        rx.await.map_err(|_| "node is shutting down".to_owned())?
    }

    /// Dials `peer` at every address in `addresses` (one connection is kept).
    pub async fn dial_peer(&self, peer: PeerId, addresses: Vec<Multiaddr>) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::DialPeer {
                peer,
                addresses,
                reply,
            })
            .await
            .map_err(|_| "node is shutting down".to_owned())?;
        rx.await.map_err(|_| "node is shutting down".to_owned())?
    }

    /// Keeps redialling `address` (with `/p2p/<peer id>`) whenever the peer is down, as the
    /// static peers are (nwaku's peer manager reconnects the peers an operator added).
    pub async fn keep_peer(&self, address: Multiaddr) {
        let _ = self.commands.send(Command::KeepPeer { address }).await;
    }

    pub async fn network_status(&self) -> Option<NetworkStatus> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::Status { reply }).await.ok()?;
        rx.await.ok()
    }

    /// Sends a request on a request/response protocol and waits for the response bytes.
    /// `addresses` are dialled when the peer is not connected yet.
    pub async fn request(
        &self,
        protocol: crate::reqres::Protocol,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        request: Vec<u8>,
    ) -> Result<Vec<u8>, crate::reqres::RequestError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Request {
                protocol,
                peer,
                addresses,
                request,
                reply,
            })
            .await
            .map_err(|_| crate::reqres::RequestError::ShuttingDown)?;
        rx.await
            .map_err(|_| crate::reqres::RequestError::ShuttingDown)?
    }

    /// Answers an inbound request whose work was done off the swarm task.
    pub async fn respond(
        &self,
        protocol: crate::reqres::Protocol,
        channel: libp2p::request_response::ResponseChannel<Vec<u8>>,
        response: Vec<u8>,
    ) {
        let _ = self
            .commands
            .send(Command::Respond {
                protocol,
                channel,
                response,
            })
            .await;
    }

    /// A sender for commands, for capabilities that run their own tasks.
    pub fn command_sender(&self) -> mpsc::Sender<Command> {
        self.commands.clone()
    }

    /// Asks the node to stop; [`Node::wait`] returns when it has.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}
