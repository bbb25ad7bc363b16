//! The store v3 client side: one request to a store node over the light client.

use libp2p::Multiaddr;
use prost::Message as _;

use super::rpc::{ResponseError, StoreQueryRequest, StoreQueryResponse};
use crate::{
    client::{Client, ClientError},
    reqres::Protocol as ReqResProtocol,
};

/// Why a query got no readable answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryPeerError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the store node sent an unreadable response: {0}")]
    Response(#[from] ResponseError),
}

/// Sends one store query to the node at `address` (ending in `/p2p/<peer id>`).
pub async fn query_peer(
    client: &Client,
    address: &Multiaddr,
    request: &StoreQueryRequest,
) -> Result<StoreQueryResponse, QueryPeerError> {
    let bytes = client
        .request(ReqResProtocol::Store, address, request.encode_to_vec())
        .await?;
    Ok(StoreQueryResponse::decode_bytes(&bytes)?)
}
