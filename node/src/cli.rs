//! The `roost` command line: `run`, `config dump`, `config keys`, `store query|stats`,
//! `operator …`. Every subcommand that builds a config takes `--config FILE` and one override flag per config key.

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

pub use crate::args::{fail, ConfigArgs};

use crate::{
    config::{env_var_for, flag_for, Schema},
    node::Node,
};

/// Exit code for a configuration the node refuses (bad key, bad value).
const EXIT_CONFIG: u8 = 2;
/// Exit code for a failure while starting or running.
const EXIT_FAILURE: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "roost",
    version,
    about = "Roost: a Waku v2 fleet node (relay, store, rendezvous)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node. With no arguments: data in ./roost-data, TCP 60000, WebSocket 8000,
    /// metrics and health on http://127.0.0.1:8008.
    Run(ConfigArgs),
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// List, add or lift bans on a running node (through its admin endpoint on loopback).
    Ban {
        #[command(subcommand)]
        command: crate::throttle::cli::BanCommand,
    },
    /// Publish one message through a service node's light push, e.g.
    /// `roost publish --peer /ip4/127.0.0.1/tcp/60000/p2p/16Uiu2... --content-topic /myapp/1/chat/proto --payload hello`.
    Publish(crate::lightclient::PublishArgs),
    /// Subscribe through a service node's filter and print messages as they arrive, e.g.
    /// `roost subscribe --peer /ip4/127.0.0.1/tcp/60000/p2p/16Uiu2... --content-topic /myapp/1/chat/proto`.
    Subscribe(crate::lightclient::SubscribeArgs),
    /// Query a store node for history, or inspect this node's archive.
    Store {
        #[command(subcommand)]
        command: crate::store::cli::StoreCommand,
    },
    /// Ask a rendezvous point: list peers, register, unregister.
    Rendezvous {
        #[command(subcommand)]
        command: crate::rendezvous::cli::Command,
    },
    /// Operator keys (file, HSM via PKCS#11, Keycard via PC/SC) and fleet attestations.
    Operator {
        #[command(subcommand)]
        command: crate::operator::cli::OperatorCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (defaults < file < ROOST_* env < flags) as TOML.
    Dump(ConfigArgs),
    /// List every config key with its environment variable and flag.
    Keys,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
        Command::Ban { command } => crate::throttle::cli::run(command),
        Command::Publish(args) => crate::lightclient::publish(args),
        Command::Subscribe(args) => crate::lightclient::subscribe(args),
        Command::Config {
            command: ConfigCommand::Dump(args),
        } => match args.load() {
            Ok(config) => {
                print!("{}", config.to_toml());
                ExitCode::SUCCESS
            }
            Err(e) => fail(EXIT_CONFIG, &e),
        },
        Command::Store { command } => crate::store::cli::main(command),
        Command::Operator { command } => crate::operator::cli::run(command),
        Command::Config {
            command: ConfigCommand::Keys,
        } => {
            for key in Schema::get().keys.keys() {
                println!("{key:<40} {:<44} --{}", env_var_for(key), flag_for(key));
            }
            ExitCode::SUCCESS
        }
        Command::Rendezvous { command } => crate::rendezvous::cli::run(command),
    }
}

fn run(args: ConfigArgs) -> ExitCode {
    let config = match args.load() {
        Ok(config) => config,
        Err(e) => return fail(EXIT_CONFIG, &e),
    };
    crate::telemetry::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return fail(
                EXIT_FAILURE,
                &format!("cannot start the async runtime: {e}"),
            )
        }
    };
    let result = runtime.block_on(async move {
        let node = Node::start(config).await.map_err(|e| e.to_string())?;
        let handle = node.handle();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested; draining (a second signal exits at once)");
            handle.shutdown();
            wait_for_signal().await;
            tracing::warn!("second signal: exiting without draining");
            std::process::exit(130);
        });
        node.wait().await
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_FAILURE, &e),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the node");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
