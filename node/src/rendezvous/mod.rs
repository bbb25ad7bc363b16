//! Rendezvous (libp2p `rendezvous/README.md`): a persistent rendezvous point and this node's
//! client of other points.
//!
//! This module owns:
//! - the wire format of `/rendezvous/1.0.0` and nwaku's `/vac/waku/rendezvous/1.0.0`
//!   ([`proto`]), and every peer record flavour clients send ([`record`]);
//! - the server ([`server`]): a thread with the registration [`table`] and its own RocksDB
//!   under `<data_dir>/rendezvous` ([`store`]), fed by the swarm task ([`swarm`]) through a
//!   bounded queue, with TTL bounds, caps, cookies and an authorisation hook ([`policy`]);
//! - the client ([`client`]): registers this node under `rs/<cluster>/<shard>` at the
//!   configured points, refreshes before expiry, and dials discovered peers until each shard
//!   has enough relay peers;
//! - the `[rendezvous]` config section, the `roost_rendezvous_*` metrics, the `rendezvous`
//!   and `rendezvous_client` health components and the `roost rendezvous` CLI ([`cli`]).
//!
//! Both protocols share one table: a registration made on either is visible on both, in the
//! form each client can read (see [`server`]).

pub mod behaviour;
pub mod cli;
pub mod client;
mod config;
pub mod metrics;
pub mod policy;
pub mod proto;
pub mod record;
pub mod server;
pub mod store;
pub mod table;

use std::time::Duration;

use libp2p::StreamProtocol;

pub use behaviour::{behaviour, waku_behaviour, Behaviour};
pub use config::{Config, MAX_NAMESPACE_LEN, SPEC_MAX_DISCOVER_LIMIT, SPEC_MAX_TTL};
pub use metrics::Metrics;
pub use policy::{Policy, ReservedNamespaces, Verdict};
pub use server::{Inbox, Runner, Server};

use crate::reqres::Protocol as ReqResProtocol;

/// The libp2p rendezvous protocol (go-waku, go/js/nim/rust-libp2p clients).
pub const PROTOCOL_ID: StreamProtocol = StreamProtocol::new("/rendezvous/1.0.0");
/// nwaku's flavour: the same messages, with `WakuPeerRecord`s.
pub const WAKU_PROTOCOL_ID: StreamProtocol = StreamProtocol::new("/vac/waku/rendezvous/1.0.0");

/// Largest request accepted (a REGISTER with a record of up to 32 addresses is ~2 KiB;
/// nim-libp2p points read at most 4 KiB).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Largest response read as a client (nim-libp2p's limit; this server sends at most 1 MiB).
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// How long a request may take before it fails with a timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The namespace a relay node registers under for one shard (Waku's `rs/<cluster>/<shard>`).
pub fn shard_namespace(cluster: u16, shard: u16) -> String {
    format!("rs/{cluster}/{shard}")
}

/// Which protocol a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `/rendezvous/1.0.0`
    Libp2p,
    /// `/vac/waku/rendezvous/1.0.0`
    Waku,
}

impl Dialect {
    pub fn protocol(self) -> ReqResProtocol {
        match self {
            Dialect::Libp2p => ReqResProtocol::Rendezvous,
            Dialect::Waku => ReqResProtocol::WakuRendezvous,
        }
    }
}
