//! Roost: a Waku v2 fleet node. One process is a relay (gossipsub), and grows into a
//! mailserver, rendezvous point, spam throttle and attested fleet member as those land.
//!
//! See `ARCHITECTURE.md` at the repository root for how a message flows through the node.
//! Each capability is one module that owns its wire format, state and metrics.

pub mod addr;
pub mod alloc;
pub mod args;
pub mod cli;
pub mod client;
pub mod config;
pub mod db;
pub mod discovery;
pub mod filter;
pub mod handle;
pub mod health;
pub mod http;
pub mod identity;
pub mod lightclient;
pub mod lightpush;
pub mod message;
pub mod metadata;
pub mod metrics;
pub mod node;
pub mod operator;
pub mod peer_exchange;
pub mod relay;
pub mod rendezvous;
pub mod reqres;
pub mod rest;
pub mod store;
pub mod swarm;
pub mod sync;
pub mod telemetry;
pub mod throttle;
pub mod units;
pub mod waku_enr;

pub use config::Config;
pub use message::{MessageHash, WakuMessage};
pub use node::{Node, NodeHandle, NodeInfo, StartError};
