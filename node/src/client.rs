//! A light client for the CLI (`roost store query`, `roost publish`, ...) and for tests: a node
//! with an ephemeral identity, no relay, no HTTP endpoint and only a loopback listener. It still
//! answers the metadata protocol, so service nodes of its cluster keep it connected.

use libp2p::Multiaddr;
use prost::Message as _;
use tempfile::TempDir;

pub use crate::addr::peer_id_of;

use crate::{
    config::Config,
    filter::{self, RequestType, SubscribeReply},
    handle::NodeHandle,
    lightpush::{self, PushReply},
    message::WakuMessage,
    node::{Node, StartError},
    store::{StoreQueryRequest, StoreQueryResponse},
    swarm::{ReqResProtocol, RequestError},
};

/// Why a client request could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "address {0} has no /p2p/<peer id> part; use the full multiaddr the node logs at start"
    )]
    NoPeerId(Multiaddr),
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("the node's answer is not a valid {protocol} response ({reason}); is it a Waku service node?")]
    Decode {
        protocol: &'static str,
        reason: String,
    },
}

/// A running light client.
pub struct Client {
    node: Node,
    handle: NodeHandle,
    _dir: TempDir,
}

impl Client {
    /// Starts a client of `cluster_id` (service nodes disconnect clients of another cluster).
    pub async fn start(cluster_id: u16) -> Result<Client, StartError> {
        Self::start_inner(cluster_id, None).await
    }

    /// Starts a client that acts as the peer of `keypair` (e.g. to register a node's identity
    /// at a rendezvous point).
    pub async fn start_with_keypair(
        cluster_id: u16,
        keypair: libp2p::identity::Keypair,
    ) -> Result<Client, StartError> {
        Self::start_inner(cluster_id, Some(keypair)).await
    }

    async fn start_inner(
        cluster_id: u16,
        keypair: Option<libp2p::identity::Keypair>,
    ) -> Result<Client, StartError> {
        let dir = tempfile::tempdir().map_err(|source| StartError::DataDir {
            path: std::env::temp_dir(),
            source,
        })?;
        let mut config = Config::default();
        config.node.data_dir = dir.path().to_owned();
        config.network.listen_ip = [127, 0, 0, 1].into();
        config.network.tcp_port = 0;
        config.network.ws_enabled = false;
        config.http.enabled = false;
        config.rest.enabled = false;
        config.relay.enabled = false;
        config.store.enabled = false;
        config.relay.cluster_id = cluster_id;
        config.lightpush.enabled = false;
        config.filter.enabled = false;
        config.peer_exchange.enabled = false;
        config.rendezvous.enabled = false;
        // A service node pushes filter messages over the client's connection: the client must
        // not close it for being idle (the service keeps its side open while subscribed).
        config.network.idle_connection_timeout = std::time::Duration::from_secs(24 * 3600);
        let node = Node::start_with_keypair(config, keypair, Vec::new()).await?;
        Ok(Client {
            handle: node.handle(),
            node,
            _dir: dir,
        })
    }

    pub fn handle(&self) -> &NodeHandle {
        &self.handle
    }

    /// Sends one request to the node at `address` (which must end in `/p2p/<peer id>`).
    pub async fn request(
        &self,
        protocol: ReqResProtocol,
        address: &Multiaddr,
        request: Vec<u8>,
    ) -> Result<Vec<u8>, ClientError> {
        let peer = peer_id_of(address).ok_or_else(|| ClientError::NoPeerId(address.clone()))?;
        Ok(self
            .handle
            .request(protocol, peer, vec![address.clone()], request)
            .await?)
    }

    /// Pushes `message` through the light push service at `address`. `pubsub_topic: None` lets
    /// the service autoshard (v3; legacy sends an empty topic, which Roost also autoshards).
    pub async fn light_push(
        &self,
        address: &Multiaddr,
        version: lightpush::Version,
        pubsub_topic: Option<&str>,
        message: &WakuMessage,
    ) -> Result<PushReply, ClientError> {
        let request = lightpush::encode_request(version, &request_id(), pubsub_topic, message);
        let response = self.request(version.reqres(), address, request).await?;
        lightpush::decode_response(version, &response).map_err(|e| ClientError::Decode {
            protocol: "light push",
            reason: e.to_string(),
        })
    }

    /// Sends one filter subscribe request (subscribe, unsubscribe, unsubscribe-all or ping).
    /// Sends one store v3 query to the store node at `address`.
    pub async fn store_query(
        &self,
        address: &Multiaddr,
        request: &StoreQueryRequest,
    ) -> Result<StoreQueryResponse, ClientError> {
        let response = self
            .request(ReqResProtocol::Store, address, request.encode_to_vec())
            .await?;
        StoreQueryResponse::decode_bytes(&response).map_err(|e| ClientError::Decode {
            protocol: "store",
            reason: e.to_string(),
        })
    }

    pub async fn filter(
        &self,
        address: &Multiaddr,
        kind: RequestType,
        pubsub_topic: Option<&str>,
        content_topics: &[String],
    ) -> Result<SubscribeReply, ClientError> {
        let request =
            filter::encode_subscribe_request(&request_id(), kind, pubsub_topic, content_topics);
        let response = self
            .request(ReqResProtocol::FilterSubscribe, address, request)
            .await?;
        filter::decode_subscribe_response(&response).map_err(|e| ClientError::Decode {
            protocol: "filter",
            reason: e.to_string(),
        })
    }

    /// Stops the client and removes its temporary identity.
    pub async fn stop(self) {
        let _ = self.node.stop().await;
    }
}

/// A fresh random request id.
pub fn request_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}
