//! Building and running a node: identity, registry, swarm task, HTTP endpoint, supervision and
//! graceful shutdown. [`Node::start`] returns once every listener is bound, so callers (tests,
//! the binary) know the real addresses even when ports were `0`.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use libp2p::{multiaddr::Protocol, swarm::SwarmEvent, Multiaddr};
use tokio::{
    sync::{broadcast, mpsc, watch},
    task::JoinSet,
};

pub use crate::handle::{NodeHandle, NodeInfo};

use crate::{
    config::Config,
    filter::{self},
    health::Health,
    http, lightpush, metrics, peer_exchange,
    relay::{self},
    rendezvous, store,
    swarm::{
        build_swarm, metrics::NetworkMetrics, MessageSink, Services, SwarmTask, SwarmTaskParts,
        COMMAND_CAPACITY,
    },
    throttle::{self, Throttle},
    waku_enr,
};

/// Buffer of the broadcast channel that API subscribers read relayed messages from; a
/// subscriber that falls this far behind misses messages (it sees `Lagged`), the node does not
/// slow down for it.
const SUBSCRIBER_BUFFER: usize = 4096;
/// How long start-up waits for listeners to report their addresses.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "cannot create data dir {path}: {source}; create it or choose another with --data-dir"
    )]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Identity(#[from] crate::identity::Error),
    #[error(transparent)]
    Build(#[from] crate::swarm::BuildError),
    #[error(transparent)]
    Bans(#[from] crate::throttle::bans::BanDbError),
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    #[error("{0}")]
    Sync(String),
    #[error(transparent)]
    Rendezvous(#[from] rendezvous::server::Error),
    #[error(transparent)]
    Attestation(#[from] crate::operator::local::LoadError),
    #[error("{what} port {port} is already in use ({key}); choose another with --{flag} or ROOST_{env}, or 0 for any free port")]
    PortInUse {
        what: &'static str,
        port: u16,
        key: &'static str,
        flag: &'static str,
        env: &'static str,
    },
    #[error("cannot listen on {address}: {reason}")]
    Listen { address: Multiaddr, reason: String },
    #[error("HTTP address {address} is unavailable ({source}); choose another with --http-address or ROOST_HTTP_ADDRESS")]
    Http {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("REST address {address} is unavailable ({source}); choose another with --rest-address or ROOST_REST_ADDRESS, or turn the REST API off with --rest=false")]
    Rest {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// A running node: its tasks and a handle to it.
pub struct Node {
    handle: NodeHandle,
    tasks: JoinSet<(&'static str, Result<(), String>)>,
    shutdown_rx: watch::Receiver<bool>,
    shutdown_timeout: Duration,
    /// Stops the store's threads and closes its database when the node is dropped, even
    /// without a graceful stop (last field: dropped after the tasks are aborted).
    _store: Option<store::Guard>,
}

impl Node {
    /// Starts a node from a validated config.
    pub async fn start(config: Config) -> Result<Node, StartError> {
        Self::start_with_sinks(config, Vec::new()).await
    }

    /// Starts a node whose accepted messages also go to `extra_sinks`.
    pub async fn start_with_sinks(
        config: Config,
        extra_sinks: Vec<Box<dyn MessageSink>>,
    ) -> Result<Node, StartError> {
        Self::start_with_keypair(config, None, extra_sinks).await
    }

    /// Starts a node with the given identity instead of the one in its data dir (light
    /// clients acting as a given peer), or the data dir's when `keypair` is `None`.
    pub async fn start_with_keypair(
        mut config: Config,
        keypair: Option<libp2p::identity::Keypair>,
        extra_sinks: Vec<Box<dyn MessageSink>>,
    ) -> Result<Node, StartError> {
        // REST readers get `relay.shards` cached from the start, and the content topics (not
        // their shards' pubsub topics), as nwaku's REST builder does.
        let rest_pubsub_topics: Vec<String> = config
            .relay
            .pubsub_topics()
            .iter()
            .map(ToString::to_string)
            .collect();
        // nwaku's `--content-topic`: their shards are relayed like `relay.shards`.
        config.relay.resolve_content_topics();
        let http_config = Arc::new(config.clone());
        let data_dir = config.node.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| StartError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let keypair = match keypair {
            Some(keypair) => keypair,
            None => crate::identity::load_or_create(&data_dir)?,
        };
        let peer_id = keypair.public().to_peer_id();
        let attestation = match &config.operator.attestation {
            Some(path) => {
                let bytes = tokio::fs::read(path).await.map_err(|source| {
                    crate::operator::local::LoadError::Read {
                        path: path.clone(),
                        source,
                    }
                })?;
                let signed =
                    crate::operator::local::check(&config.operator, path, peer_id, &bytes)?;
                crate::operator::local::announce(&signed, path);
                Some(Arc::new(signed))
            }
            None => None,
        };

        let mut registry = metrics::new_registry();
        let libp2p_metrics = libp2p::metrics::Metrics::new(&mut registry);
        let relay_metrics =
            relay::Metrics::register(registry.sub_registry_with_prefix("roost_relay"));
        let net_metrics = NetworkMetrics::register(registry.sub_registry_with_prefix("roost"));
        let nwaku_names = crate::metrics::NwakuNames::register(&mut registry);
        if config.rest.enabled {
            let mut service_peers = Vec::new();
            if let Some(node) = &config.rest.store_node {
                service_peers.push((crate::store::rpc::PROTOCOL_ID, node));
            }
            if let Some(node) = &config.rest.lightpush_node {
                service_peers.push((crate::lightpush::PROTOCOL_V3, node));
                service_peers.push((crate::lightpush::PROTOCOL_LEGACY, node));
            }
            if let Some(node) = &config.rest.filter_node {
                service_peers.push((crate::filter::SUBSCRIBE_PROTOCOL, node));
            }
            crate::metrics::register_service_peers(&mut registry, &service_peers);
        }
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (throttle, ban_writer) = Throttle::open(
            &config.throttle,
            throttle::Metrics::register(registry.sub_registry_with_prefix("roost_throttle")),
            &data_dir,
            shutdown_rx.clone(),
        )
        .await?;
        let lightpush_metrics =
            lightpush::Metrics::register(registry.sub_registry_with_prefix("roost_lightpush"));
        let rest_metrics =
            crate::rest::Metrics::register(registry.sub_registry_with_prefix("roost_rest"));
        let filter_metrics =
            filter::Metrics::register(registry.sub_registry_with_prefix("roost_filter"));
        let px_metrics = peer_exchange::Metrics::register(
            registry.sub_registry_with_prefix("roost_peer_exchange"),
        );
        let operator_metrics = crate::operator::Metrics::register(
            registry.sub_registry_with_prefix("roost_operator"),
            attestation.is_some(),
        );
        let dns_metrics = crate::discovery::dns::metrics::Metrics::register(
            registry.sub_registry_with_prefix("roost_discovery_dns"),
        );
        let health = Health::default();
        // Fleet trust: the fleet is the configured one, else the attestation's.
        let fleet = config.operator.fleet.clone().or_else(|| {
            attestation
                .as_ref()
                .map(|signed| signed.attestation.fleet.clone())
        });
        let verifier = (!config.operator.trusted_keys.is_empty()).then(|| {
            crate::operator::Verifier::new(fleet.clone(), config.operator.trusted_keys.clone())
        });
        let fleet_view = crate::operator::FleetView::default();
        let rendezvous_metrics =
            rendezvous::Metrics::register(registry.sub_registry_with_prefix("roost_rendezvous"));
        // Opened before any listener, so a locked or damaged database stops start-up cleanly.
        let rendezvous_server = if config.rendezvous.enabled {
            // Fleet namespaces (/roost/<fleet>/…) need a verified attestation (operator/policy.rs).
            let policy: Arc<dyn rendezvous::Policy> =
                Arc::new(crate::operator::policy::FleetPolicy::new(
                    fleet.clone(),
                    verifier.is_some(),
                    fleet_view.clone(),
                    operator_metrics.clone(),
                ));
            Some(rendezvous::Server::open(
                &config.rendezvous,
                &data_dir,
                rendezvous_metrics.clone(),
                health.clone(),
                policy,
            )?)
        } else {
            None
        };
        // Opened before any listener, so a locked or damaged archive stops start-up cleanly.
        // The relayed topics: `relay.shards`, and shards REST clients join at run time.
        let relayed_topics = relay::RelayedTopics::new(&config.relay);
        let store = if config.serves_store() {
            Some(
                store::Store::open(
                    &config.store,
                    &data_dir,
                    relayed_topics.clone(),
                    registry.sub_registry_with_prefix("roost_store"),
                    health.clone(),
                )
                .await?,
            )
        } else {
            None
        };

        let (command_tx, command_rx) = mpsc::channel(COMMAND_CAPACITY);
        let has_store = store.is_some();
        let (store_handle, store_inbound, store_runner, store_guard, store_sink) = match store {
            Some(store) => {
                let started = store.start(command_tx.clone())?;
                (
                    Some(started.handle),
                    Some(started.inbound),
                    Some(started.runner),
                    Some(started.guard),
                    Some(started.sink),
                )
            }
            None => (None, None, None, None, None),
        };
        let (rendezvous_inbox, rendezvous_runner) = match rendezvous_server {
            Some(server) => {
                let (inbox, runner) = server.start(command_tx.clone());
                (Some(inbox), Some(runner))
            }
            None => (None, None),
        };
        let (messages_tx, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        let mut sinks: Vec<Box<dyn MessageSink>> = vec![Box::new(messages_tx.clone())];
        sinks.extend(extra_sinks);
        let (filter_pushes_tx, _) = broadcast::channel(filter::behaviour::RECEIVED_BUFFER);
        let filter_task = if config.filter.enabled {
            let (task, wiring) = filter::service::FilterTask::new(
                &config.filter,
                relayed_topics.clone(),
                command_tx.clone(),
                shutdown_rx.clone(),
                filter_metrics.clone(),
            );
            sinks.push(Box::new(wiring.sink));
            Some((task, wiring.requests, wiring.snapshots))
        } else {
            None
        };
        let (filter_task, filter_requests, filter_snapshots) = match filter_task {
            Some((task, requests, snapshots)) => (Some(task), Some(requests), Some(snapshots)),
            None => (None, None, None),
        };

        if let Some(sink) = store_sink {
            sinks.push(Box::new(sink));
        }
        let has_attestation = attestation.is_some();
        let (attestation_tx, attestation_rx) = watch::channel(attestation);
        let attestation_state = crate::operator::behaviour::State::new(
            attestation_rx.clone(),
            verifier,
            fleet_view.clone(),
            operator_metrics.clone(),
            throttle.clone(),
        );
        let lightpush_service = |version| {
            lightpush::Service::new(
                version,
                lightpush_metrics.clone(),
                store_handle.clone(),
                config.relay.clone(),
            )
        };

        let mut swarm = build_swarm(
            keypair.clone(),
            &config,
            &mut registry,
            throttle.clone(),
            &rendezvous_metrics,
            Services {
                attestation: attestation_state,
                rendezvous: rendezvous_inbox,
                store: store_inbound,
                lightpush: lightpush_service(lightpush::Version::V3),
                lightpush_legacy: lightpush_service(lightpush::Version::Legacy),
                filter_subscribe: filter::SubscribeService::new(
                    filter_requests,
                    filter_metrics.clone(),
                ),
                filter_push: filter::PushService::new(
                    filter_pushes_tx.clone(),
                    filter_metrics.clone(),
                ),
                peer_exchange: peer_exchange::Service::new(
                    &config.peer_exchange,
                    peer_id,
                    config.relay.cluster_id,
                    px_metrics,
                ),
            },
        )
        .await?;
        // Store sync registers its protocols before any connection, so identify lists them.
        let sync_task = match (&store_handle, config.runs_store_sync()) {
            (Some(archive), true) => Some(
                crate::sync::SyncTask::new(crate::sync::Parts {
                    config: config.store_sync.clone(),
                    control: swarm.behaviour().sync.new_control(),
                    archive: archive.clone(),
                    validator: relay::Validator::with_topics(&config.relay, relayed_topics.clone()),
                    throttle: throttle.clone(),
                    fleet: fleet_view.clone(),
                    commands: command_tx.clone(),
                    metrics: crate::sync::Metrics::register(
                        registry.sub_registry_with_prefix("roost_store_sync"),
                    ),
                    health: health.clone(),
                })
                .map_err(StartError::Sync)?,
            ),
            _ => None,
        };
        let listeners = listen(&mut swarm, &config)?;
        for address in &config.network.external_addresses {
            swarm.add_external_address(address.clone());
        }
        let (tcp_addresses, ws_addresses) = wait_for_listen_addrs(&mut swarm, &listeners).await?;

        let with_p2p = |a: &Multiaddr| a.clone().with(Protocol::P2p(peer_id));
        let mut protocols = vec![
            crate::metadata::PROTOCOL_ID.to_string(),
            "/ipfs/id/1.0.0".to_owned(),
            "/ipfs/ping/1.0.0".to_owned(),
        ];
        if config.relay.enabled {
            protocols.insert(0, relay::PROTOCOL_ID.to_owned());
        }
        if has_store {
            protocols.push(store::PROTOCOL_ID.to_string());
        }
        if sync_task.is_some() {
            protocols.push(crate::sync::codec::RECONCILIATION_PROTOCOL.to_owned());
            protocols.push(crate::sync::codec::TRANSFER_PROTOCOL.to_owned());
        }
        if config.lightpush.enabled {
            protocols.push(lightpush::PROTOCOL_V3.to_string());
            protocols.push(lightpush::PROTOCOL_LEGACY.to_string());
        }
        if config.filter.enabled {
            protocols.push(filter::SUBSCRIBE_PROTOCOL.to_string());
        }
        if config.rendezvous.enabled {
            protocols.push(rendezvous::PROTOCOL_ID.to_string());
            if config.rendezvous.waku_protocol {
                protocols.push(rendezvous::WAKU_PROTOCOL_ID.to_string());
            }
        }
        if config.peer_exchange.enabled {
            protocols.push(peer_exchange::PROTOCOL_ID.to_string());
        }
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1);
        let record = waku_enr::local_record(
            &config.enr_announcement(),
            &tcp_addresses,
            &ws_addresses,
            seq,
        );
        let enr = match waku_enr::build(&keypair, &record) {
            Ok(enr) => Some(enr.to_base64()),
            Err(e) => {
                tracing::warn!(error = %e, "no ENR for this node; peer exchange clients cannot list it");
                None
            }
        };
        if has_attestation {
            protocols.push(crate::operator::PROTOCOL_ID.to_string());
        }
        let mut info = NodeInfo {
            peer_id,
            version: metrics::VERSION,
            listen_addresses: tcp_addresses
                .iter()
                .chain(&ws_addresses)
                .map(with_p2p)
                .collect(),
            tcp_addresses: tcp_addresses.iter().map(with_p2p).collect(),
            ws_addresses: ws_addresses.iter().map(with_p2p).collect(),
            http_address: None,
            rest_address: None,
            cluster_id: config.relay.cluster_id,
            shards: config.relay.shards.clone(),
            pubsub_topics: config
                .relay
                .pubsub_topics()
                .iter()
                .map(ToString::to_string)
                .collect(),
            protocols,
            enr,
        };

        let mut tasks = JoinSet::new();
        // Bind HTTP before announcing the node, so a port clash fails start-up.
        if config.http.heap_profile {
            match crate::alloc::start_profiling().await {
                Ok(()) => tracing::info!("heap profiling on: /debug/pprof/heap"),
                Err(e) => tracing::warn!(error = %e, "heap profiling not started"),
            }
        }
        let http_listener = if config.http.enabled {
            let listener = tokio::net::TcpListener::bind(config.http.address)
                .await
                .map_err(|source| StartError::Http {
                    address: config.http.address,
                    source,
                })?;
            info.http_address = listener.local_addr().ok();
            Some(listener)
        } else {
            None
        };
        let rest_listener = if config.rest.enabled {
            let listener = tokio::net::TcpListener::bind(config.rest.address)
                .await
                .map_err(|source| StartError::Rest {
                    address: config.rest.address,
                    source,
                })?;
            info.rest_address = listener.local_addr().ok();
            Some(listener)
        } else {
            None
        };

        let handle = NodeHandle {
            commands: command_tx,
            messages: messages_tx,
            filter_pushes: filter_pushes_tx.clone(),
            filter_snapshots,
            info: Arc::new(info),
            health: health.clone(),
            throttle: throttle.clone(),
            shutdown: shutdown_tx,
            store: store_handle,
            fleet: fleet_view.clone(),
            attestation: attestation_rx.clone(),
        };

        if let Some(path) = config.operator.attestation.clone() {
            let watcher = crate::operator::local::Watcher {
                config: config.operator.clone(),
                path,
                me: peer_id,
                current: attestation_tx,
                metrics: operator_metrics,
                health: health.clone(),
            };
            let mut last_warning = None;
            watcher.evaluate(&mut last_warning);
            let shutdown = shutdown_rx.clone();
            tasks.spawn(async move {
                watcher.run(shutdown, last_warning).await;
                ("operator", Ok(()))
            });
        }

        let task = SwarmTask::new(
            swarm,
            &config,
            SwarmTaskParts {
                commands: command_rx,
                shutdown: shutdown_rx.clone(),
                sinks,
                relay_metrics,
                net_metrics,
                libp2p_metrics,
                health: health.clone(),
                throttle: throttle.clone(),
                topics: relayed_topics.clone(),
                nwaku: nwaku_names,
            },
        );
        tasks.spawn(async move {
            task.run().await;
            ("swarm", Ok(()))
        });
        {
            let (throttle, health, shutdown) =
                (throttle.clone(), health.clone(), shutdown_rx.clone());
            let interval = config.throttle.prune_interval;
            tasks.spawn(async move {
                throttle::task::run(throttle, interval, health, shutdown).await;
                ("throttle", Ok(()))
            });
            tasks.spawn(async move {
                ban_writer.await;
                ("ban writer", Ok(()))
            });
        }
        if let Some(runner) = store_runner {
            let shutdown = shutdown_rx.clone();
            tasks.spawn(async move { ("store", runner.run(shutdown).await) });
        }
        if let Some(sync_task) = sync_task {
            let shutdown = shutdown_rx.clone();
            tasks.spawn(async move { ("store sync", sync_task.run(shutdown).await) });
        }
        if let Some(filter_task) = filter_task {
            tasks.spawn(async move {
                filter_task.run().await;
                ("filter", Ok(()))
            });
        }
        if let Some(runner) = rendezvous_runner {
            let shutdown = shutdown_rx.clone();
            tasks.spawn_blocking(move || {
                runner.run(shutdown);
                ("rendezvous", Ok(()))
            });
        }
        let mut plan = rendezvous::client::Plan::from_config(&config.relay, &config.rendezvous);
        if let Some(signed) = handle.attestation() {
            // An attested node registers under its fleet's namespaces, one per role, and finds
            // the other relays of its fleet there (renewals with other roles need a restart).
            let a = &signed.attestation;
            for role in &a.roles {
                plan.register_under(crate::operator::fleet_namespace(&a.fleet, *role));
            }
            if a.has_role(crate::operator::Role::Relay) {
                plan.discover_in(crate::operator::fleet_namespace(
                    &a.fleet,
                    crate::operator::Role::Relay,
                ));
            }
        }
        if !config.rendezvous.points.is_empty() && !plan.is_empty() {
            let client = rendezvous::client::ClientTask::new(
                &config.rendezvous,
                &config.network.external_addresses,
                plan,
                handle.clone(),
                keypair,
                rendezvous_metrics,
                health.clone(),
            );
            let shutdown = shutdown_rx.clone();
            tasks.spawn(async move {
                client.run(shutdown).await;
                ("rendezvous-client", Ok(()))
            });
        }

        if !config.discovery.dns_urls.is_empty() {
            let discovery = crate::discovery::dns::DnsDiscovery {
                config: config.discovery.clone(),
                cluster_id: config.relay.cluster_id,
                data_dir: data_dir.clone(),
                handle: handle.clone(),
                metrics: dns_metrics,
                health: health.clone(),
            };
            let shutdown = shutdown_rx.clone();
            tasks.spawn(async move {
                discovery.run(shutdown).await;
                ("dns discovery", Ok(()))
            });
        }

        if let Some(listener) = http_listener {
            let state = http::State {
                registry: Arc::new(registry),
                node: handle.clone(),
                config: http_config,
            };
            let shutdown = shutdown_rx.clone();
            tasks.spawn(async move {
                let result = http::serve(listener, state, shutdown).await;
                ("http", result.map_err(|e| e.to_string()))
            });
        }

        if let Some(listener) = rest_listener {
            let cache = crate::rest::relay::Cache::new(config.rest.relay_cache_capacity as usize);
            if config.relay.enabled {
                // As nwaku: the shards a node relays from its start are REST-subscribed.
                if let Err(e) = cache.subscribe_pubsub_topics(&rest_pubsub_topics) {
                    tracing::warn!(error = %e, "the REST relay cache does not follow the node's shards");
                }
                if let Err(e) = cache.subscribe_content_topics(&config.relay.content_topics) {
                    tracing::warn!(error = %e, "the REST relay cache does not follow relay.content_topics");
                }
            }
            let state = crate::rest::State {
                node: handle.clone(),
                relay: Arc::new(config.relay.clone()),
                topics: relayed_topics.clone(),
                lightpush_enabled: config.lightpush.enabled,
                cache: Arc::new(cache),
                filter: Arc::new(crate::rest::filter::Filter::new(
                    config.rest.filter_node.clone(),
                    config.rest.relay_cache_capacity as usize,
                )),
                store_node: config.rest.store_node.clone(),
                lightpush_node: config.rest.lightpush_node.clone(),
            };
            let rest_config = config.rest.clone();
            let shutdown = shutdown_rx.clone();
            tasks.spawn(async move {
                let result =
                    crate::rest::serve(listener, state, rest_config, rest_metrics, shutdown).await;
                ("rest", result.map_err(|e| e.to_string()))
            });
        }

        for address in &handle.info.listen_addresses {
            tracing::info!(%address, "listening on");
        }
        tracing::info!(
            peer_id = %peer_id,
            cluster = config.relay.cluster_id,
            shards = ?config.relay.shards,
            http = ?handle.info.http_address,
            rest = ?handle.info.rest_address,
            "roost node started"
        );

        Ok(Node {
            handle,
            tasks,
            shutdown_rx,
            shutdown_timeout: config.node.shutdown_timeout,
            _store: store_guard,
        })
    }

    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Runs until shutdown is requested or a task fails; then drains within the shutdown
    /// timeout. Returns an error naming the task if one failed on its own.
    pub async fn wait(mut self) -> Result<(), String> {
        let mut failure: Option<String> = None;
        let mut shutdown_rx = self.shutdown_rx.clone();
        loop {
            tokio::select! {
                changed = shutdown_rx.changed() => {
                    if changed.is_err() || *shutdown_rx.borrow() {
                        break;
                    }
                }
                joined = self.tasks.join_next() => match joined {
                    None => break,
                    Some(Ok((name, result))) => {
                        // Tasks end on their own once shutdown was asked for: not a failure.
                        if *shutdown_rx.borrow() && result.is_ok() {
                            break;
                        }
                        let why = match result {
                            Ok(()) => format!("task {name} stopped unexpectedly"),
                            Err(e) => format!("task {name} failed: {e}"),
                        };
                        tracing::error!("{why}; shutting the node down");
                        failure = Some(why);
                        break;
                    }
                    Some(Err(join_error)) => {
                        if join_error.is_panic() {
                            std::panic::resume_unwind(join_error.into_panic());
                        }
                        failure = Some(format!("a task was cancelled: {join_error}"));
                        break;
                    }
                }
            }
        }
        self.handle.shutdown();
        let drain = async {
            while let Some(joined) = self.tasks.join_next().await {
                if let Err(e) = joined {
                    if e.is_panic() {
                        std::panic::resume_unwind(e.into_panic());
                    }
                }
            }
        };
        if tokio::time::timeout(self.shutdown_timeout, drain)
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?self.shutdown_timeout, "shutdown took too long; aborting remaining tasks");
            self.tasks.abort_all();
        }
        tracing::info!("roost node stopped");
        match failure {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    /// Signals shutdown and waits for it.
    pub async fn stop(self) -> Result<(), String> {
        self.handle.shutdown();
        self.wait().await
    }
}

#[derive(Debug)]
struct Listeners {
    tcp: libp2p::core::transport::ListenerId,
    ws: Option<libp2p::core::transport::ListenerId>,
}

fn listen(
    swarm: &mut libp2p::Swarm<crate::swarm::Behaviour>,
    config: &Config,
) -> Result<Listeners, StartError> {
    let net = &config.network;
    let ip = match net.listen_ip {
        std::net::IpAddr::V4(v4) => Protocol::Ip4(v4),
        std::net::IpAddr::V6(v6) => Protocol::Ip6(v6),
    };
    let tcp_addr = Multiaddr::empty()
        .with(ip.clone())
        .with(Protocol::Tcp(net.tcp_port));
    let tcp = swarm.listen_on(tcp_addr.clone()).map_err(|e| {
        listen_error(
            e,
            tcp_addr,
            "TCP",
            net.tcp_port,
            "network.tcp_port",
            "tcp-port",
            "NETWORK_TCP_PORT",
        )
    })?;
    let ws = if net.ws_enabled {
        let ws = if net.ws_tls_cert.is_some() {
            Protocol::Wss("/".into())
        } else {
            Protocol::Ws("/".into())
        };
        let ws_addr = Multiaddr::empty()
            .with(ip)
            .with(Protocol::Tcp(net.ws_port))
            .with(ws);
        Some(swarm.listen_on(ws_addr.clone()).map_err(|e| {
            listen_error(
                e,
                ws_addr,
                "WebSocket",
                net.ws_port,
                "network.ws_port",
                "ws-port",
                "NETWORK_WS_PORT",
            )
        })?)
    } else {
        None
    };
    Ok(Listeners { tcp, ws })
}

fn listen_error(
    error: libp2p::TransportError<std::io::Error>,
    address: Multiaddr,
    what: &'static str,
    port: u16,
    key: &'static str,
    flag: &'static str,
    env: &'static str,
) -> StartError {
    let in_use = match &error {
        libp2p::TransportError::Other(e) => {
            e.kind() == std::io::ErrorKind::AddrInUse
                || e.get_ref()
                    .map(|inner| inner.to_string().contains("in use"))
                    .unwrap_or(false)
        }
        _ => false,
    };
    if in_use {
        StartError::PortInUse {
            what,
            port,
            key,
            flag,
            env,
        }
    } else {
        StartError::Listen {
            address,
            reason: error.to_string(),
        }
    }
}

/// Polls the swarm until every listener reported an address. Port 0 becomes the real port here.
async fn wait_for_listen_addrs(
    swarm: &mut libp2p::Swarm<crate::swarm::Behaviour>,
    listeners: &Listeners,
) -> Result<(Vec<Multiaddr>, Vec<Multiaddr>), StartError> {
    use futures::StreamExt;
    let mut tcp = Vec::new();
    let mut ws = Vec::new();
    let deadline = tokio::time::sleep(LISTEN_TIMEOUT);
    tokio::pin!(deadline);
    while tcp.is_empty() || (listeners.ws.is_some() && ws.is_empty()) {
        tokio::select! {
            _ = &mut deadline => {
                return Err(StartError::Listen {
                    address: Multiaddr::empty(),
                    reason: "listeners did not report an address within 10s".into(),
                });
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { listener_id, address } => {
                    if listener_id == listeners.tcp {
                        tcp.push(address);
                    } else if Some(listener_id) == listeners.ws {
                        ws.push(address);
                    }
                }
                SwarmEvent::ListenerClosed { reason: Err(e), addresses, .. } => {
                    return Err(StartError::Listen {
                        address: addresses.first().cloned().unwrap_or_else(Multiaddr::empty),
                        reason: e.to_string(),
                    });
                }
                _ => {}
            }
        }
    }
    // A wildcard listener reports one address per interface; give the others a moment so the
    // node announces all of them.
    let settle = tokio::time::sleep(Duration::from_millis(50));
    tokio::pin!(settle);
    loop {
        tokio::select! {
            _ = &mut settle => break,
            event = swarm.select_next_some() => {
                if let SwarmEvent::NewListenAddr { listener_id, address } = event {
                    if listener_id == listeners.tcp {
                        tcp.push(address);
                    } else if Some(listener_id) == listeners.ws {
                        ws.push(address);
                    }
                }
            }
        }
    }
    Ok((tcp, ws))
}
