//! What the swarm task reports: `Command::Status`, and once a second the gauges and the
//! `network` and `relay` health components.

use std::collections::HashMap;

use libp2p::{gossipsub, PeerId};

use super::{
    metrics::{ChannelLabels, PeerKindLabels},
    NetworkStatus, PeerStatus, ShardStatus, SwarmTask,
};
use crate::health::Status;

impl SwarmTask {
    pub(super) fn status(&self) -> NetworkStatus {
        let connected_peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        let shards = self
            .swarm
            .behaviour()
            .relay
            .as_ref()
            .map(|gs| {
                let mut topic_counts: HashMap<gossipsub::TopicHash, usize> = HashMap::new();
                for (_, topics) in gs.all_peers() {
                    for t in topics {
                        *topic_counts.entry(t.clone()).or_default() += 1;
                    }
                }
                self.validator_topics()
                    .into_iter()
                    .map(|t| {
                        let hash = gossipsub::IdentTopic::new(t.clone()).hash();
                        ShardStatus {
                            mesh_peers: gs.mesh_peers(&hash).count(),
                            topic_peers: topic_counts.get(&hash).copied().unwrap_or(0),
                            pubsub_topic: t,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut topics_of: HashMap<PeerId, Vec<String>> = HashMap::new();
        if let Some(gs) = self.swarm.behaviour().relay.as_ref() {
            for (peer, topics) in gs.all_peers() {
                topics_of
                    .entry(*peer)
                    .or_default()
                    .extend(topics.iter().map(|t| t.to_string()));
            }
        }
        let mut mesh_of: HashMap<PeerId, Vec<String>> = HashMap::new();
        if let Some(gs) = self.swarm.behaviour().relay.as_ref() {
            for topic in self.validator_topics() {
                let hash = gossipsub::IdentTopic::new(topic.clone()).hash();
                for peer in gs.mesh_peers(&hash) {
                    mesh_of.entry(*peer).or_default().push(topic.clone());
                }
            }
        }
        let peers = connected_peers
            .iter()
            .map(|peer| PeerStatus {
                peer_id: *peer,
                address: self.peer_addresses.get(peer).cloned(),
                agent: self
                    .peer_protocols
                    .get(peer)
                    .map(|(agent, _)| agent.clone())
                    .unwrap_or_default(),
                protocols: self
                    .peer_protocols
                    .get(peer)
                    .map(|(_, protocols)| protocols.clone())
                    .unwrap_or_default(),
                topics: topics_of.remove(peer).unwrap_or_default(),
                is_static: self.static_peers.contains(peer),
                mesh_topics: mesh_of.remove(peer).unwrap_or_default(),
            })
            .collect();
        NetworkStatus {
            connected_peers,
            shards,
            peers,
        }
    }

    fn validator_topics(&self) -> Vec<String> {
        self.topics.list()
    }

    pub(super) fn refresh_gauges(&mut self) {
        let status = self.status();
        self.net_metrics
            .peers_connected
            .set(status.connected_peers.len() as i64);
        let kinds = self.peer_kinds.counts();
        for (kind, count) in kinds {
            self.net_metrics
                .peers_by_kind
                .get_or_create(&PeerKindLabels { kind: kind.label() })
                .set(count as i64);
        }
        for shard in &status.shards {
            self.relay
                .set_shard_peers(&shard.pubsub_topic, shard.mesh_peers, shard.topic_peers);
        }
        self.nwaku.peers.set(status.connected_peers.len() as i64);
        let (_, static_down) = self.static_peers.known();
        self.nwaku
            .peer_store_size
            .set((status.connected_peers.len() + static_down) as i64);
        // nim-libp2p's pubsub makes a pubsub peer of every peer that joins the switch (it
        // then tries to open its stream), relay-capable or not, and drops it when it leaves;
        // without relay nwaku has no pubsub at all.
        self.nwaku.pubsub_peers.set(if self.relay_enabled {
            status.connected_peers.len() as i64
        } else {
            0
        });
        self.nwaku.pubsub_topics.set(status.shards.len() as i64);
        self.nwaku
            .mesh_peers
            .get_or_create(&crate::metrics::TopicLabels { topic: "other" })
            .set(status.shards.iter().map(|s| s.mesh_peers).sum::<usize>() as i64);
        let queued = self
            .command_capacity
            .saturating_sub(self.commands.capacity());
        self.net_metrics
            .channel_depth
            .get_or_create(&ChannelLabels {
                channel: "swarm_commands",
            })
            .set(queued as i64);
        let (static_total, static_down) = self.static_peers.counts();
        let status_level = if self.relay_enabled && static_total > 0 && static_down == static_total
        {
            Status::Degraded
        } else {
            Status::Ok
        };
        self.health.set(
            "network",
            status_level,
            serde_json::json!({
                "connected_peers": status.connected_peers.len(),
                "static_peers": static_total,
                "static_peers_down": static_down,
                "peer_kinds": kinds
                    .iter()
                    .map(|(kind, count)| (kind.label(), *count))
                    .collect::<std::collections::BTreeMap<_, _>>(),
            }),
        );
        if self.relay_enabled {
            let mesh_total: usize = status.shards.iter().map(|s| s.mesh_peers).sum();
            self.health.set(
                "relay",
                Status::Ok,
                serde_json::json!({
                    "shards": status.shards.len(),
                    "mesh_peers": mesh_total,
                }),
            );
        }
    }
}
