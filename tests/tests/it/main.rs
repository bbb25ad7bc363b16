//! One integration-test binary for the whole node: each module is a capability.

mod ansible;
mod browser;
mod chaos;
mod cli;
mod dashboards;
mod dns;
mod filter;
mod fleet;
mod interop;
mod js;
mod light_cli;
mod lightpush;
mod memory;
mod operator;
mod peer_exchange;
mod relay;
mod rendezvous;
mod rest;
mod store;
mod store_postgres;
mod store_postgres_nodes;
mod sync;
mod throttle;
