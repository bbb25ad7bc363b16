//! The light-client commands: `roost publish` (light push) and `roost subscribe` (filter), run
//! through a [`Client`] against a service node's multiaddr.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use clap::{ArgGroup, Args};
use libp2p::Multiaddr;
use tokio::sync::broadcast::error::RecvError;

use crate::{
    client::{peer_id_of, Client, ClientError},
    filter::{ReceivedPush, RequestType, Status as FilterStatus},
    lightpush::Version,
    message::{ContentTopic, ShardTopic, WakuMessage},
};

/// Exit code for bad arguments.
const EXIT_USAGE: u8 = 2;
/// Exit code when the service refused or could not be reached.
const EXIT_FAILURE: u8 = 1;
/// How often `roost subscribe` pings its subscription (it lapses after 5 minutes).
const PING_INTERVAL: Duration = Duration::from_secs(60);
/// Retry delay after a failed ping or resubscription.
const RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// Where to find the service node and which network it is in.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// The service node's full multiaddr, ending in /p2p/<peer id> (its log and
    /// /debug/v1/info show it), e.g. /ip4/127.0.0.1/tcp/60000/p2p/16Uiu2...
    #[arg(long, value_name = "MULTIADDR")]
    pub peer: Multiaddr,
    /// Pubsub topic, e.g. /waku/2/rs/1/0. Default: autosharded from the content topic.
    #[arg(long, value_name = "TOPIC")]
    pub pubsub_topic: Option<String>,
    /// The network's cluster id (the service disconnects clients of another cluster).
    #[arg(long, default_value_t = 1)]
    pub cluster_id: u16,
    /// Shards in the network, for autosharding content topics.
    #[arg(long, default_value_t = 8)]
    pub num_shards: u16,
    /// How long to wait for the service node's answer.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

impl ServiceArgs {
    /// The pubsub topic for a content topic: the one given, or the autosharded one.
    fn pubsub_topic_for(&self, content_topic: &str) -> Result<String, String> {
        if let Some(topic) = &self.pubsub_topic {
            return Ok(topic.clone());
        }
        let parsed = ContentTopic::parse(content_topic).map_err(|e| e.to_string())?;
        Ok(ShardTopic::new(self.cluster_id, parsed.shard(self.num_shards.max(1))).to_string())
    }
}

/// `roost publish`: push one message through a service node's light push.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("body").required(true).args(["payload", "file"])))]
pub struct PublishArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Content topic, /{app}/{version}/{name}/{encoding}, e.g. /myapp/1/chat/proto.
    #[arg(long, value_name = "TOPIC")]
    pub content_topic: String,
    /// The payload, as text.
    #[arg(long, value_name = "TEXT")]
    pub payload: Option<String>,
    /// Read the payload from a file (bytes as they are).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Ask nodes not to store the message.
    #[arg(long)]
    pub ephemeral: bool,
    /// Use legacy light push (/vac/waku/lightpush/2.0.0-beta1) instead of v3.
    #[arg(long)]
    pub legacy: bool,
}

/// `roost subscribe`: print messages a service node pushes through filter as they arrive.
#[derive(Debug, Args)]
pub struct SubscribeArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Content topic to subscribe to; repeat for several.
    #[arg(long = "content-topic", value_name = "TOPIC", required = true)]
    pub content_topics: Vec<String>,
    /// One JSON object per message instead of text lines.
    #[arg(long)]
    pub json: bool,
    /// Exit after this many messages.
    #[arg(long, value_name = "N")]
    pub count: Option<usize>,
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            fail(
                EXIT_FAILURE,
                &format!("cannot start the async runtime: {e}"),
            )
        })
}

/// A hint for the usual cause of a failed request.
fn explain(error: &ClientError, cluster_id: u16) -> String {
    match error {
        ClientError::Request(crate::swarm::RequestError::ConnectionClosed) => format!(
            "{error} (a node of another cluster closes the connection: check that --cluster-id {cluster_id} is the node's cluster)"
        ),
        ClientError::Request(crate::swarm::RequestError::Unsupported) => format!(
            "{error} (the node does not serve this protocol: enable it in its config)"
        ),
        _ => error.to_string(),
    }
}

pub fn publish(args: PublishArgs) -> ExitCode {
    let payload = match (&args.payload, &args.file) {
        (Some(text), _) => text.as_bytes().to_vec(),
        (None, Some(path)) => match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => return fail(EXIT_USAGE, &format!("cannot read {}: {e}", path.display())),
        },
        (None, None) => return fail(EXIT_USAGE, "give --payload TEXT or --file FILE"),
    };
    if peer_id_of(&args.service.peer).is_none() {
        return fail(
            EXIT_USAGE,
            &format!(
                "--peer {} has no /p2p/<peer id> part; use the full multiaddr the node logs at start",
                args.service.peer
            ),
        );
    }
    let pubsub_topic = match args.service.pubsub_topic_for(&args.content_topic) {
        Ok(t) => t,
        Err(e) => return fail(EXIT_USAGE, &e),
    };
    let mut message = WakuMessage::new(args.content_topic.clone(), payload);
    if args.ephemeral {
        message.ephemeral = Some(true);
    }
    let version = if args.legacy {
        Version::Legacy
    } else {
        Version::V3
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let service = &args.service;
    let code = rt.block_on(async {
        let client = match Client::start(service.cluster_id).await {
            Ok(c) => c,
            Err(e) => return fail(EXIT_FAILURE, &format!("cannot start the client: {e}")),
        };
        let push = client.light_push(&service.peer, version, Some(&pubsub_topic), &message);
        let result = tokio::time::timeout(service.timeout, push).await;
        client.stop().await;
        let reply = match result {
            Err(_) => {
                return fail(
                    EXIT_FAILURE,
                    &format!(
                        "no answer from {} within {:?}",
                        service.peer, service.timeout
                    ),
                )
            }
            Ok(Err(e)) => return fail(EXIT_FAILURE, &explain(&e, service.cluster_id)),
            Ok(Ok(reply)) => reply,
        };
        let hash = message.hash(&pubsub_topic);
        if reply.is_success() {
            let peers = reply
                .relay_peer_count
                .map(|n| format!("relayed to {n} peer(s)"))
                .unwrap_or_else(|| "accepted".to_owned());
            println!("published {hash} on {pubsub_topic}: {peers}");
            ExitCode::SUCCESS
        } else {
            let status = if reply.status.0 == 0 {
                "refused".to_owned()
            } else {
                reply.status.to_string()
            };
            fail(
                EXIT_FAILURE,
                &format!(
                    "light push of {hash} refused: {status}: {}",
                    reply.description.as_deref().unwrap_or("no reason given")
                ),
            )
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}

pub fn subscribe(args: SubscribeArgs) -> ExitCode {
    let Some(service_peer) = peer_id_of(&args.service.peer) else {
        return fail(
            EXIT_USAGE,
            &format!(
                "--peer {} has no /p2p/<peer id> part; use the full multiaddr the node logs at start",
                args.service.peer
            ),
        );
    };
    // Group content topics by pubsub topic: one subscription per pubsub topic.
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for topic in &args.content_topics {
        match args.service.pubsub_topic_for(topic) {
            Ok(pubsub) => groups.entry(pubsub).or_default().push(topic.clone()),
            Err(e) => return fail(EXIT_USAGE, &e),
        }
    }
    let wanted: BTreeSet<(String, String)> = groups
        .iter()
        .flat_map(|(p, cs)| cs.iter().map(move |c| (p.clone(), c.clone())))
        .collect();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let code = rt.block_on(async {
        let client = match Client::start(args.service.cluster_id).await {
            Ok(c) => c,
            Err(e) => return fail(EXIT_FAILURE, &format!("cannot start the client: {e}")),
        };
        let mut pushes = client.handle().filter_pushes();
        let session = Session {
            client: &client,
            args: &args,
            groups: &groups,
        };
        if let Err(e) = session.subscribe_all().await {
            client.stop().await;
            return fail(EXIT_FAILURE, &e);
        }
        eprintln!(
            "subscribed to {} via {}; waiting for messages (Ctrl-C to stop)",
            args.content_topics.join(", "),
            args.service.peer
        );
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + PING_INTERVAL,
            PING_INTERVAL,
        );
        let mut received = 0usize;
        let stop = wait_for_signal();
        tokio::pin!(stop);
        let code = loop {
            tokio::select! {
                _ = &mut stop => break ExitCode::SUCCESS,
                push = pushes.recv() => match push {
                    Ok(push) => {
                        if push.peer != service_peer
                            || !wanted.contains(&(push.pubsub_topic.clone(), push.message.content_topic.clone()))
                        {
                            continue;
                        }
                        print_push(&push, args.json);
                        received += 1;
                        if args.count.is_some_and(|n| received >= n) {
                            break ExitCode::SUCCESS;
                        }
                    }
                    Err(RecvError::Lagged(n)) => eprintln!("warning: missed {n} messages (printing too slowly)"),
                    Err(RecvError::Closed) => break fail(EXIT_FAILURE, "the client stopped"),
                },
                _ = ping.tick() => {
                    if let Err(e) = session.keep_subscribed().await {
                        eprintln!("warning: {e}; retrying in {RETRY_INTERVAL:?}");
                        ping.reset_after(RETRY_INTERVAL);
                    }
                }
            }
        };
        // Best effort: tell the service we are gone so it stops pushing.
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            client.filter(&args.service.peer, RequestType::UnsubscribeAll, None, &[]),
        )
        .await;
        client.stop().await;
        code
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}

/// One `roost subscribe` run: the client and what it subscribed to.
struct Session<'a> {
    client: &'a Client,
    args: &'a SubscribeArgs,
    groups: &'a BTreeMap<String, Vec<String>>,
}

impl Session<'_> {
    async fn request(
        &self,
        kind: RequestType,
        pubsub_topic: Option<&str>,
        content_topics: &[String],
    ) -> Result<crate::filter::SubscribeReply, String> {
        let service = &self.args.service;
        let request = self
            .client
            .filter(&service.peer, kind, pubsub_topic, content_topics);
        match tokio::time::timeout(service.timeout, request).await {
            Err(_) => Err(format!(
                "no answer from {} within {:?}",
                service.peer, service.timeout
            )),
            Ok(Err(e)) => Err(explain(&e, service.cluster_id)),
            Ok(Ok(reply)) => Ok(reply),
        }
    }

    async fn subscribe_all(&self) -> Result<(), String> {
        for (pubsub_topic, content_topics) in self.groups {
            let reply = self
                .request(RequestType::Subscribe, Some(pubsub_topic), content_topics)
                .await?;
            if reply.status != FilterStatus::OK {
                return Err(format!(
                    "subscription to {} on {pubsub_topic} refused: {}: {}",
                    content_topics.join(", "),
                    reply.status,
                    reply.description.as_deref().unwrap_or("no reason given")
                ));
            }
        }
        Ok(())
    }

    /// Pings the subscription; subscribes again when the service no longer knows it (it
    /// restarted, or the subscription lapsed while the connection was down).
    async fn keep_subscribed(&self) -> Result<(), String> {
        let reply = self.request(RequestType::Ping, None, &[]).await?;
        if reply.status == FilterStatus::NOT_FOUND {
            eprintln!("the service lost the subscription; subscribing again");
            return self.subscribe_all().await;
        }
        if reply.status != FilterStatus::OK {
            return Err(format!(
                "ping refused: {}: {}",
                reply.status,
                reply.description.as_deref().unwrap_or("no reason given")
            ));
        }
        Ok(())
    }
}

fn print_push(push: &ReceivedPush, json: bool) {
    let message = &push.message;
    let text = std::str::from_utf8(&message.payload)
        .ok()
        .filter(|t| !t.chars().any(|c| c.is_control() && c != '\n' && c != '\t'));
    let line = if json {
        serde_json::json!({
            "hash": push.hash.to_hex(),
            "pubsub_topic": push.pubsub_topic,
            "content_topic": message.content_topic,
            "timestamp": message.timestamp,
            "payload": text,
            "payload_hex": hex::encode(&message.payload),
        })
        .to_string()
    } else {
        let when = message
            .timestamp
            .and_then(|ns| u64::try_from(ns).ok())
            .map(|ns| {
                humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
            })
            .unwrap_or_else(|| humantime::format_rfc3339_millis(SystemTime::now()).to_string());
        let payload = match text {
            Some(t) => t.replace('\n', "\\n"),
            None => format!("0x{}", hex::encode(&message.payload)),
        };
        format!("{when} {} {} {payload}", message.content_topic, push.hash)
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Resolves on SIGINT or SIGTERM.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
