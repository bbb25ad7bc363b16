//! `roost rendezvous discover|register|unregister`: ask a rendezvous point from the command
//! line, through a light client ([`crate::client::Client`]).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Subcommand};
use libp2p::{identity::Keypair, Multiaddr};

use super::{client, proto, record};
use crate::{client::Client, reqres::Protocol as ReqResProtocol};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the peers registered at a rendezvous point (one line each, then the cookie).
    Discover(DiscoverArgs),
    /// Register under a namespace at a rendezvous point, to check that it accepts you.
    Register(RegisterArgs),
    /// Remove a registration (made with `register --key`).
    Unregister(UnregisterArgs),
}

#[derive(Debug, Args)]
pub struct PointArgs {
    /// The rendezvous point's full multiaddr, ending in /p2p/<peer id>.
    #[arg(long, value_name = "MULTIADDR")]
    pub server: Multiaddr,
    /// Waku cluster to announce; Roost and nwaku points disconnect clients of other clusters.
    #[arg(long, default_value_t = 1)]
    pub cluster: u16,
    /// Speak nwaku's /vac/waku/rendezvous/1.0.0 instead of /rendezvous/1.0.0.
    #[arg(long)]
    pub waku: bool,
}

#[derive(Debug, Args)]
pub struct DiscoverArgs {
    #[command(flatten)]
    pub point: PointArgs,
    /// Namespace to list, e.g. rs/1/0; every namespace when omitted.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Most registrations per page (the point caps it, at most 1000).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Continue after a cookie printed by an earlier call (hex).
    #[arg(long)]
    pub cookie: Option<String>,
    /// Follow cookies until the point has nothing more.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    pub point: PointArgs,
    /// Namespace to register under, e.g. rs/1/0.
    #[arg(long, short = 'n')]
    pub namespace: String,
    /// TTL to ask for (e.g. 60s, 2h); the point's default when omitted.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    /// Address to announce (repeatable); this client's own listen address when omitted.
    #[arg(long = "address", value_name = "MULTIADDR")]
    pub addresses: Vec<Multiaddr>,
    /// Register as the node whose key is in this file (e.g. <data_dir>/node.key) instead of
    /// a throw-away identity.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Send a legacy rust-libp2p peer record instead of a standard one.
    #[arg(long)]
    pub legacy: bool,
}

#[derive(Debug, Args)]
pub struct UnregisterArgs {
    #[command(flatten)]
    pub point: PointArgs,
    /// Namespace to leave.
    #[arg(long, short = 'n')]
    pub namespace: String,
    /// The key file of the registered node (as given to `register --key`).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
}

/// Runs one `roost rendezvous` command.
pub fn run(command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return crate::args::fail(1, &format!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Discover(args) => discover(args).await,
            Command::Register(args) => register(args).await,
            Command::Unregister(args) => unregister(args).await,
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => crate::args::fail(1, &e),
    }
}

fn load_key(path: &PathBuf) -> Result<Keypair, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
    crate::identity::parse(&text).ok_or_else(|| {
        format!(
            "{} is not a node key (32-byte secp256k1 secret in hex)",
            path.display()
        )
    })
}

async fn start_client(point: &PointArgs, key: Option<Keypair>) -> Result<Client, String> {
    let started = match key {
        Some(key) => Client::start_with_keypair(point.cluster, key).await,
        None => Client::start(point.cluster).await,
    };
    started.map_err(|e| format!("cannot start the client: {e}"))
}

fn protocol(point: &PointArgs) -> ReqResProtocol {
    if point.waku {
        ReqResProtocol::WakuRendezvous
    } else {
        ReqResProtocol::Rendezvous
    }
}

async fn discover(args: DiscoverArgs) -> Result<(), String> {
    let mut cookie = match &args.cookie {
        Some(hex_text) => Some(
            hex::decode(hex_text.trim()).map_err(|_| format!("--cookie {hex_text} is not hex"))?,
        ),
        None => None,
    };
    let client = start_client(&args.point, None).await?;
    let result = async {
        loop {
            let request =
                proto::discover_request(args.namespace.as_deref(), args.limit, cookie.clone());
            let response = client
                .request(protocol(&args.point), &args.point.server, request)
                .await
                .map_err(|e| format!("cannot reach {}: {e}", args.point.server))?;
            let (registrations, next) =
                client::read_discover_response(&response).map_err(|e| e.to_string())?;
            for reg in &registrations {
                println!("{}", describe(reg));
            }
            let done = registrations.is_empty() || next.is_none() || next == cookie;
            cookie = next;
            if !args.all || done {
                break;
            }
        }
        if let Some(c) = &cookie {
            println!("cookie: {}", hex::encode(c));
        }
        Ok(())
    }
    .await;
    client.stop().await;
    result
}

fn describe(reg: &client::Discovered) -> String {
    let ttl = reg
        .ttl
        .map(|t| format!("{t}s"))
        .unwrap_or_else(|| "-".into());
    match &reg.record {
        Ok(r) => {
            let addresses: Vec<String> = r.addresses.iter().map(ToString::to_string).collect();
            format!(
                "{}\t{}\tttl {ttl}\t{}\t{}",
                reg.namespace,
                r.peer,
                r.flavour.label(),
                addresses.join(" ")
            )
        }
        Err(e) => format!("{}\t<invalid record: {e}>\tttl {ttl}", reg.namespace),
    }
}

async fn register(args: RegisterArgs) -> Result<(), String> {
    let key = match &args.key {
        Some(path) => load_key(path)?,
        None => Keypair::generate_secp256k1(),
    };
    let client = start_client(&args.point, Some(key.clone())).await?;
    let result = async {
        let addresses = if args.addresses.is_empty() {
            client
                .handle()
                .info()
                .tcp_addresses
                .iter()
                .map(|a| {
                    a.iter()
                        .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
                        .collect()
                })
                .collect()
        } else {
            args.addresses.clone()
        };
        let envelope = if args.legacy {
            libp2p::core::PeerRecord::new(&key, addresses)
                .map(|r| r.into_signed_envelope().into_protobuf_encoding())
        } else {
            record::standard_envelope(&key, addresses)
        }
        .map_err(|e| format!("cannot sign the peer record: {e}"))?;
        let request =
            proto::register_request(&args.namespace, envelope, args.ttl.map(|t| t.as_secs()));
        let response = client
            .request(protocol(&args.point), &args.point.server, request)
            .await
            .map_err(|e| format!("cannot reach {}: {e}", args.point.server))?;
        let ttl = client::read_register_response(&response).map_err(|e| e.to_string())?;
        println!(
            "registered {} under {} for {ttl}s",
            key.public().to_peer_id(),
            args.namespace
        );
        Ok(())
    }
    .await;
    client.stop().await;
    result
}

async fn unregister(args: UnregisterArgs) -> Result<(), String> {
    let key = load_key(&args.key)?;
    let client = start_client(&args.point, Some(key.clone())).await?;
    let request = proto::unregister_request(&args.namespace);
    // UNREGISTER has no response: the point closes the stream, which reads as empty.
    let result = client
        .request(protocol(&args.point), &args.point.server, request)
        .await
        .map(|_| {
            println!(
                "unregistered {} from {}",
                key.public().to_peer_id(),
                args.namespace
            )
        })
        .map_err(|e| format!("cannot reach {}: {e}", args.point.server));
    client.stop().await;
    result
}
