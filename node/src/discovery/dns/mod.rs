//! DNS discovery (EIP-1459): [`tree`] owns the record formats, building and signing a tree and
//! verifying one as it is resolved; [`client`] is the node's task that reads the configured
//! trees and dials the nodes they list; [`metrics`] its `roost_discovery_dns_*` metrics;
//! [`seen`] the highest `seq` seen per tree, persisted in the data dir.

pub mod client;
pub mod metrics;
pub mod seen;
pub mod tree;

pub use client::{Config, DnsDiscovery, NameServer};
pub use tree::{Synced, Tree, TreeError, TreeUrl, UnsignedTree};
