//! `roost-fleet`: render, run, check, audit and compare Roost fleets.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use roost_fleet::{
    audit, check, compare, dns,
    local::{self, Progress},
    render, Fleet,
};

#[derive(Debug, Parser)]
#[command(
    name = "roost-fleet",
    version,
    about = "Render, run, check, audit and compare Roost fleets"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Check a fleet definition and print a summary.
    Validate {
        /// Fleet name (`staging`) or path to its TOML file.
        fleet: String,
    },
    /// Write a roost.toml per host plus the Ansible inventory and host vars.
    Render {
        fleet: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the whole fleet on this machine (loopback, free ports) and write DIR/fleet.json.
    Up {
        fleet: String,
        /// Run locally (the only mode: remote fleets are deployed with Ansible).
        #[arg(long, required = true)]
        local: bool,
        #[arg(long)]
        dir: PathBuf,
        /// The roost binary (default: beside this tool, then PATH).
        #[arg(long)]
        roost_bin: Option<PathBuf>,
        /// Sign the nodes' attestations with this operator profile (`roost operator init`, e.g.
        /// a SoftHSM2 token; PIN from ROOST_PIN) instead of a development key made in DIR/operator.
        #[arg(long, conflicts_with = "no_attestations")]
        operator_profile: Option<PathBuf>,
        /// Start the nodes without attestations.
        #[arg(long)]
        no_attestations: bool,
        /// Give the nodes no static peers: serve the fleet's EIP-1459 tree (signed with the
        /// operator key) from a DNS server on 127.0.0.1 and bootstrap every node from it. `up`
        /// then keeps serving until Ctrl-C or `roost-fleet down`.
        #[arg(long, conflicts_with = "no_attestations")]
        dns: bool,
        /// The tree's domain (default `nodes.<fleet>.roost.test`).
        #[arg(long, requires = "dns", value_name = "DOMAIN")]
        dns_domain: Option<String>,
        /// The DNS server's port on 127.0.0.1, UDP and TCP (default: a free one).
        #[arg(long, requires = "dns", value_name = "PORT")]
        dns_port: Option<u16>,
    },
    /// Connect to every node and report health, versions, attestations, the relay
    /// connectivity matrix, store answers, a canary message and rendezvous. Non-zero on failure.
    Check {
        fleet: String,
        /// A local fleet started with `up` (its fleet.json).
        #[arg(long, conflicts_with = "inventory")]
        dir: Option<PathBuf>,
        /// A rendered inventory (hosts.yml) whose ansible_host addresses to use.
        #[arg(long)]
        inventory: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Store divergence: a store node missing messages older than this many seconds fails
        /// the check; missing newer ones (maybe still in flight) is a warning.
        #[arg(long, default_value_t = check::DIVERGENCE_GRACE.as_secs(), value_name = "SECONDS")]
        divergence_grace: u64,
    },
    /// Compare what runs with the definition (config, versions, attestation signers); lists
    /// drift and exits non-zero if there is any.
    Audit {
        fleet: String,
        #[arg(long, conflicts_with = "inventory")]
        dir: Option<PathBuf>,
        #[arg(long)]
        inventory: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// What differs between two fleet definitions; with both running locally, a cross-fleet
    /// test (push through one fleet, find the message on the other's store nodes).
    Compare {
        a: String,
        b: String,
        #[arg(long, requires = "dir_b")]
        dir_a: Option<PathBuf>,
        #[arg(long, requires = "dir_a")]
        dir_b: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Publish the fleet as an EIP-1459 DNS tree: read every node's ENR, sign the root with the
    /// operator key, write OUT/zone.txt (BIND) and OUT/records.json (TXT records); seq goes up
    /// whenever the content changes (OUT/tree.json keeps the last tree).
    Dns {
        fleet: String,
        /// The tree's domain (e.g. `nodes.staging.example.org`).
        #[arg(long)]
        domain: String,
        /// Directory for zone.txt, records.json and tree.json (the last tree).
        #[arg(long)]
        out: PathBuf,
        /// A local fleet started with `up` (its fleet.json).
        #[arg(long, conflicts_with = "inventory")]
        dir: Option<PathBuf>,
        /// A rendered inventory (hosts.yml) whose ansible_host addresses to use.
        #[arg(long)]
        inventory: Option<PathBuf>,
        /// Operator profile (`roost operator init`: file, pkcs11 or keycard; PIN from
        /// ROOST_PIN or asked). A local fleet's development key without it.
        #[arg(long, value_name = "FILE")]
        operator_profile: Option<PathBuf>,
        /// Link to another tree (`enrtree://<key>@<domain>`), repeatable.
        #[arg(long, value_name = "ENRTREE_URL")]
        link: Vec<roost_node::discovery::dns::TreeUrl>,
        #[arg(long)]
        json: bool,
    },
    /// Stop a local fleet started with `up`.
    Down {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Stop one node of a local fleet (`--kill` for SIGKILL, as a crash).
    StopNode {
        #[arg(long)]
        dir: PathBuf,
        name: String,
        #[arg(long)]
        kill: bool,
    },
    /// Restart a stopped node of a local fleet on its identity, data and ports.
    StartNode {
        #[arg(long)]
        dir: PathBuf,
        name: String,
        #[arg(long)]
        roost_bin: Option<PathBuf>,
    },
}

/// A progress bar on a terminal; plain lines otherwise.
struct Bar(indicatif::ProgressBar);

impl Progress for Bar {
    fn step(&self, message: String) {
        if self.0.is_hidden() {
            eprintln!("{message}");
        }
        self.0.set_message(message);
        self.0.tick();
    }
    fn done(&self, message: String) {
        self.0.finish_and_clear();
        eprintln!("{message}");
    }
}

fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(name: &str) -> anyhow::Result<(Fleet, PathBuf)> {
    let path = Fleet::resolve(name)?;
    Ok((Fleet::load(&path)?, path))
}

/// The nodes to talk to: a local fleet's fleet.json, a rendered inventory's addresses, or the
/// definition's own addresses.
fn targets(
    fleet: &Fleet,
    dir: Option<&std::path::Path>,
    inventory: Option<&std::path::Path>,
) -> anyhow::Result<Vec<check::Target>> {
    Ok(match (dir, inventory) {
        (Some(dir), _) => check::targets_from_state(&local::FleetState::load(dir)?),
        (None, Some(inv)) => {
            let text = std::fs::read_to_string(inv)
                .map_err(|e| anyhow::anyhow!("cannot read inventory {}: {e}", inv.display()))?;
            check::targets_from_fleet(fleet, &check::inventory_addresses(&text))
        }
        (None, None) => check::targets_from_fleet(fleet, &Default::default()),
    })
}

async fn run(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Validate { fleet } => {
            let (fleet, path) = load(&fleet)?;
            println!(
                "{}: fleet {} (cluster {}, shards {:?}, version {}), {} hosts, valid",
                path.display(),
                fleet.name(),
                fleet.fleet.cluster_id,
                fleet.fleet.shards,
                fleet.fleet.node_version,
                fleet.hosts.len()
            );
        }
        Cmd::Render { fleet, out } => {
            let (fleet, path) = load(&fleet)?;
            let rendered = render::render(&fleet, &path, &out)?;
            println!(
                "rendered {} files for fleet {} into {}",
                rendered.files.len(),
                fleet.name(),
                out.display()
            );
        }
        Cmd::Up {
            fleet,
            local: _,
            dir,
            roost_bin,
            operator_profile,
            no_attestations,
            dns,
            dns_domain,
            dns_port,
        } => {
            let (fleet, _) = load(&fleet)?;
            let dns = dns.then(|| local::DnsOptions {
                domain: dns_domain.unwrap_or_else(|| format!("nodes.{}.roost.test", fleet.name())),
                port: dns_port,
            });
            let bin = local::find_roost_bin(roost_bin);
            let operator = match (operator_profile, no_attestations) {
                (Some(p), _) => local::Operator::Profile(p),
                (None, true) => local::Operator::None,
                (None, false) => local::Operator::Dev,
            };
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            let (state, server) =
                local::up_with(&fleet, &dir, &bin, &operator, dns.as_ref(), &Bar(bar)).await?;
            for n in &state.nodes {
                println!(
                    "{:<32} {:<22} {}",
                    n.name,
                    n.roles
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    n.tcp
                );
            }
            if let (Some(tree), Some(mut server)) = (&state.dns, server) {
                println!(
                    "dns: {} seq {} served at {} (UDP and TCP)",
                    tree.url, tree.seq, tree.name_server
                );
                println!("state: {}", dir.join(local::STATE_FILE).display());
                println!("serving the tree until Ctrl-C or `roost-fleet down`");
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                    result = server.block_until_done() => {
                        result.map_err(|e| anyhow::anyhow!("the DNS server stopped: {e}"))?;
                    }
                }
                // The nodes run on (`down` stops them); only the tree is gone.
                let _ = server.shutdown_gracefully().await;
                eprintln!("stopped serving {}", tree.url);
            } else {
                println!("state: {}", dir.join(local::STATE_FILE).display());
            }
        }
        Cmd::Check {
            fleet,
            dir,
            inventory,
            json,
            divergence_grace,
        } => {
            let (fleet, _) = load(&fleet)?;
            let targets = match (&dir, &inventory) {
                (Some(dir), _) => check::targets_from_state(&local::FleetState::load(dir)?),
                (None, Some(inv)) => {
                    let text = std::fs::read_to_string(inv).map_err(|e| {
                        anyhow::anyhow!("cannot read inventory {}: {e}", inv.display())
                    })?;
                    check::targets_from_fleet(&fleet, &check::inventory_addresses(&text))
                }
                (None, None) => check::targets_from_fleet(&fleet, &Default::default()),
            };
            let expect = check::Expectations {
                divergence_grace: std::time::Duration::from_secs(divergence_grace),
                ..check::Expectations::of(&fleet)
            };
            let report = check::check(&targets, &expect).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", check::render_table(&report));
            }
            return Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Cmd::Audit {
            fleet,
            dir,
            inventory,
            json,
        } => {
            let (fleet, _) = load(&fleet)?;
            let targets = targets(&fleet, dir.as_deref(), inventory.as_deref())?;
            let report = audit::audit(&fleet, &targets, dir.is_some()).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", audit::render_table(&report));
            }
            return Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Cmd::Compare {
            a,
            b,
            dir_a,
            dir_b,
            json,
        } => {
            let (fa, _) = load(&a)?;
            let (fb, _) = load(&b)?;
            let states = match (dir_a, dir_b) {
                (Some(da), Some(db)) => {
                    Some((local::FleetState::load(&da)?, local::FleetState::load(&db)?))
                }
                _ => None,
            };
            let comparison = compare::compare(&fa, &fb, states.as_ref().map(|(x, y)| (x, y))).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&comparison)?);
            } else {
                print!("{}", compare::render_table(&comparison));
            }
            return Ok(if comparison.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Cmd::Dns {
            fleet,
            domain,
            out,
            dir,
            inventory,
            operator_profile,
            link,
            json,
        } => {
            let (fleet, _) = load(&fleet)?;
            let targets = targets(&fleet, dir.as_deref(), inventory.as_deref())?;
            let profile = match (operator_profile, &dir) {
                (Some(p), _) => p,
                (None, Some(dir)) => dir.join("operator").join("roost-operator.toml"),
                (None, None) => roost_node::operator::profile::DEFAULT_PROFILE.into(),
            };
            let nodes = dns::fetch_enrs(&targets).await?;
            let published = tokio::task::block_in_place(|| {
                dns::publish(&domain, &nodes, &link, &profile, &out)
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&published)?);
            } else {
                println!(
                    "{} seq {} ({}): {} nodes, {} TXT records in {} and {}",
                    published.url,
                    published.seq,
                    if published.changed {
                        "new"
                    } else {
                        "unchanged"
                    },
                    published.nodes,
                    published.records,
                    published.zone_file.display(),
                    published.records_file.display()
                );
            }
        }
        Cmd::Down { dir } => {
            let stopped = local::down(&dir).await?;
            println!("stopped {stopped} nodes");
        }
        Cmd::StopNode { dir, name, kill } => {
            local::stop_node(&dir, &name, kill).await?;
            println!("stopped {name}");
        }
        Cmd::StartNode {
            dir,
            name,
            roost_bin,
        } => {
            let node =
                local::start_node_again(&dir, &name, &local::find_roost_bin(roost_bin)).await?;
            println!("started {} (pid {}) at {}", node.name, node.pid, node.tcp);
        }
    }
    Ok(ExitCode::SUCCESS)
}
