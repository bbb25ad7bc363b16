//! What other tasks may ask of the swarm task. Every command that expects an answer carries a
//! `oneshot` sender; the channel into the swarm task is bounded ([`COMMAND_CAPACITY`]).

use libp2p::{request_response::ResponseChannel, Multiaddr, PeerId};
use tokio::sync::oneshot;

use crate::message::WakuMessage;
pub use crate::relay::{PublishError, PublishReceipt};
use crate::reqres::{Protocol, ReplySender};

/// Capacity of the command channel. A full channel makes callers wait (back-pressure on local
/// callers such as the HTTP endpoint or light push handlers); it never drops a command.
pub const COMMAND_CAPACITY: usize = 1024;

#[derive(Debug)]
pub enum Command {
    /// Validate and publish a message on a pubsub topic, and hand it to local consumers.
    Publish {
        pubsub_topic: String,
        message: WakuMessage,
        /// Also on a static-sharding topic this node does not relay, through gossipsub's
        /// fanout and without local delivery (nwaku's autosharded REST publish).
        fanout: bool,
        reply: oneshot::Sender<Result<PublishReceipt, PublishError>>,
    },
    /// Dial an address.
    Dial {
        address: Multiaddr,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Dial an address and answer once that connection is established (`Ok`) or the dial
    /// failed, as nwaku's `connectPeer`: a connection the remote closes right after (another
    /// cluster, say) still counts as connected.
    Connect {
        address: Multiaddr,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Keep redialling a peer added at run time (`/…/p2p/<peer id>`) whenever it is down.
    KeepPeer { address: Multiaddr },
    /// Dial a peer at any of `addresses` (libp2p tries them all, keeps one connection);
    /// nothing is done if it is connected or being dialled already.
    DialPeer {
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A snapshot of the node's network state.
    Status {
        reply: oneshot::Sender<NetworkStatus>,
    },
    /// Send a request on a request/response protocol (dialling `addresses` if not connected).
    Request {
        protocol: Protocol,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        request: Vec<u8>,
        reply: ReplySender,
    },
    /// Answer an inbound request whose work was done off the swarm task.
    Respond {
        protocol: Protocol,
        channel: ResponseChannel<Vec<u8>>,
        response: Vec<u8>,
    },
    /// Keep every connection to `peer` open although it carries no stream (a filter
    /// subscriber), or stop doing so.
    KeepAlive { peer: PeerId, keep_alive: bool },
    /// Relay a shard of this node's cluster besides `relay.shards` (`join: true`), or stop
    /// relaying one joined that way (`join: false`); answers whether anything changed.
    RelayTopic {
        pubsub_topic: String,
        join: bool,
        reply: oneshot::Sender<Result<bool, String>>,
    },
}

/// The network state as `/health` and `/debug/v1/info` show it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NetworkStatus {
    pub connected_peers: Vec<PeerId>,
    /// (pubsub topic, mesh peers, subscribed peers)
    pub shards: Vec<ShardStatus>,
    /// Each connected peer in detail, for the REST admin API (nwaku's `/admin/v1/peers`);
    /// left out of `/debug/v1/peers`, whose shape stays as it was.
    #[serde(skip)]
    pub peers: Vec<PeerStatus>,
}

/// One connected peer as the swarm task sees it.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub peer_id: PeerId,
    /// The remote address of its first connection (dialled, or where it came from).
    pub address: Option<Multiaddr>,
    /// The agent version it gave in identify (empty until it identified).
    pub agent: String,
    /// The protocols it listed in identify (empty until it identified).
    pub protocols: Vec<String>,
    /// Pubsub topics it is subscribed to in gossipsub (empty when it is no relay peer).
    pub topics: Vec<String>,
    /// Whether it is one of `network.peers`.
    pub is_static: bool,
    /// This node's pubsub topics whose gossipsub mesh it is in (nwaku's mesh peers).
    pub mesh_topics: Vec<String>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ShardStatus {
    pub pubsub_topic: String,
    pub mesh_peers: usize,
    pub topic_peers: usize,
}
