//! `roost ban list|add|remove`: manage the bans of a running node through its admin endpoint
//! (`http.address`, on loopback). The node's config (file, env, `--http-address`) says where
//! the endpoint is.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    process::ExitCode,
    time::{Duration, UNIX_EPOCH},
};

use clap::Subcommand;

use super::{
    admin::{AddBan, AdminError, BANS_PATH},
    bans::{now_ms, BanRecord},
};
use crate::args::{fail, ConfigArgs};

/// Exit code when the node answered with an error (bad target, no such ban).
const EXIT_REFUSED: u8 = 1;
/// Exit code for a bad config.
const EXIT_CONFIG: u8 = 2;
/// Exit code when the node cannot be reached.
const EXIT_UNREACHABLE: u8 = 3;

#[derive(Debug, Subcommand)]
pub enum BanCommand {
    /// List the bans in force on the running node.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: ConfigArgs,
    },
    /// Ban a peer id or an IP (IPv6: its /64) on the running node.
    Add {
        /// Peer id (16Uiu2…, 12D3Koo…) or IP address.
        target: String,
        /// How long: 30m, 1h, 7d.
        #[arg(long, default_value = "1d")]
        duration: String,
        #[command(flatten)]
        node: ConfigArgs,
    },
    /// Lift a ban (the target's history of bans is forgotten too).
    Remove {
        /// Peer id or IP address, as `roost ban list` shows it.
        target: String,
        #[command(flatten)]
        node: ConfigArgs,
    },
}

/// The admin base URL for an HTTP bind address (a wildcard bind is reached on loopback).
pub fn admin_base(address: SocketAddr) -> String {
    let ip = match address.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    format!("http://{}", SocketAddr::new(ip, address.port()))
}

/// Runs a `roost ban` subcommand.
pub fn run(command: BanCommand) -> ExitCode {
    let node = match &command {
        BanCommand::List { node, .. }
        | BanCommand::Add { node, .. }
        | BanCommand::Remove { node, .. } => node,
    };
    let config = match node.load() {
        Ok(c) => c,
        Err(e) => return fail(EXIT_CONFIG, &e),
    };
    let base = admin_base(config.http.address);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return fail(
                EXIT_REFUSED,
                &format!("cannot start the async runtime: {e}"),
            )
        }
    };
    runtime.block_on(execute(&base, command))
}

async fn execute(base: &str, command: BanCommand) -> ExitCode {
    let client = reqwest::Client::new();
    let url = format!("{base}{BANS_PATH}");
    let request = match &command {
        BanCommand::List { .. } => client.get(&url),
        BanCommand::Add {
            target, duration, ..
        } => client.post(&url).json(&AddBan {
            target: target.clone(),
            duration: Some(duration.clone()),
        }),
        BanCommand::Remove { target, .. } => client.delete(&url).query(&[("target", target)]),
    };
    let response = match request.timeout(Duration::from_secs(10)).send().await {
        Ok(r) => r,
        Err(e) => {
            return fail(
                EXIT_UNREACHABLE,
                &format!(
                    "cannot reach the node's admin endpoint at {base}: {e}; is the node running with http.enabled, and does --http-address (or http.address in its config) match?"
                ),
            )
        }
    };
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        let message = serde_json::from_str::<AdminError>(&body)
            .map(|e| e.error)
            .unwrap_or(body);
        return fail(
            EXIT_REFUSED,
            &format!("the node refused ({status}): {message}"),
        );
    }
    match command {
        BanCommand::List { json: true, .. } => println!("{body}"),
        BanCommand::List { json: false, .. } => match serde_json::from_str::<Vec<BanRecord>>(&body)
        {
            Ok(bans) => print!("{}", table(&bans, now_ms())),
            Err(e) => {
                return fail(
                    EXIT_REFUSED,
                    &format!("unexpected answer from the node: {e}"),
                )
            }
        },
        BanCommand::Add { .. } => match serde_json::from_str::<BanRecord>(&body) {
            Ok(ban) => println!(
                "banned {} ({}) until {}",
                ban.target,
                ban.kind,
                format_time(ban.until_ms)
            ),
            Err(e) => {
                return fail(
                    EXIT_REFUSED,
                    &format!("unexpected answer from the node: {e}"),
                )
            }
        },
        BanCommand::Remove { target, .. } => println!("lifted the ban on {target}"),
    }
    ExitCode::SUCCESS
}

fn format_time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The bans as a table: target, kind, reason, how many times, time left.
pub fn table(bans: &[BanRecord], now_ms: u64) -> String {
    if bans.is_empty() {
        return "no bans in force\n".to_owned();
    }
    let mut out = format!(
        "{:<54} {:<4} {:<8} {:>5}  {}\n",
        "TARGET", "KIND", "REASON", "COUNT", "EXPIRES IN"
    );
    for b in bans {
        let left = Duration::from_secs(b.until_ms.saturating_sub(now_ms) / 1000);
        out.push_str(&format!(
            "{:<54} {:<4} {:<8} {:>5}  {}\n",
            b.target,
            b.kind,
            b.reason,
            b.count,
            humantime::format_duration(left)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_binds_are_reached_on_loopback() {
        assert_eq!(
            admin_base("0.0.0.0:8008".parse().unwrap()),
            "http://127.0.0.1:8008"
        );
        assert_eq!(admin_base("[::]:9".parse().unwrap()), "http://[::1]:9");
        assert_eq!(
            admin_base("127.0.0.1:8101".parse().unwrap()),
            "http://127.0.0.1:8101"
        );
    }

    #[test]
    fn the_table_shows_time_left() {
        let b = BanRecord {
            target: "192.0.2.1".into(),
            kind: "ip".into(),
            since_ms: 0,
            until_ms: 3_600_000,
            count: 2,
            reason: "quota".into(),
        };
        let t = table(&[b], 0);
        assert!(t.contains("192.0.2.1"));
        assert!(t.contains("1h"));
        assert_eq!(table(&[], 0), "no bans in force\n");
    }
}
