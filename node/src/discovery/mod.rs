//! Finding peers beyond the configured static ones. [`dns`]: EIP-1459 node lists published in
//! DNS (the tree format, building and verifying trees, and the node's resolver task).

pub mod dns;

/// `[discovery]`: the DNS discovery keys (`dns_urls`, `dns_name_servers`,
/// `dns_refresh_interval`).
pub type Config = dns::Config;
