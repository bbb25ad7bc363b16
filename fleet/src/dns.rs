//! `roost-fleet dns`: a fleet published as an EIP-1459 tree. Reads each node's ENR from its
//! `/debug/v1/info` (a local fleet's nodes from its `fleet.json`, deployed ones at their
//! addresses), builds the tree (plus links to other trees), signs the root with the operator key
//! (the profile's file key, PKCS#11 token or Keycard) and writes `zone.txt` (BIND) and
//! `records.json` (one `{name, ttl, value}` per TXT record, for DNS providers' APIs).
//!
//! `tree.json` beside them remembers the last tree: the same content is not signed again, new
//! content gets the next `seq`, so clients never see a tree go backwards.
//!
//! [`LocalServer`] serves a written zone from a real authoritative DNS server (hickory-server) on
//! loopback, for `roost-fleet up --local --dns`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context};
use hickory_server::{
    proto::rr::{LowerName, Name},
    store::file::{FileConfig, FileZoneHandler},
    zone_handler::{AxfrPolicy, Catalog, ZoneType},
    Server,
};
use roost_node::{
    discovery::dns::{tree::TxtRecord, TreeUrl, UnsignedTree},
    operator::{
        profile::Profile,
        signer::{sign_recoverable, Signer},
    },
    waku_enr::{self, Enr},
};

use crate::check::Target;

pub const ZONE_FILE: &str = "zone.txt";
pub const RECORDS_FILE: &str = "records.json";
pub const STATE_FILE: &str = "tree.json";

/// What was published last (`tree.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LastTree {
    pub url: String,
    pub seq: u64,
    /// The root without its signature: equal roots hold equal content.
    pub unsigned_root_content: String,
    pub nodes: Vec<String>,
}

/// The outcome of `roost-fleet dns`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Published {
    pub url: String,
    pub seq: u64,
    /// False when the content was the same as last time (nothing signed or written).
    pub changed: bool,
    pub nodes: usize,
    pub records: usize,
    pub zone_file: PathBuf,
    pub records_file: PathBuf,
}

/// Each target's ENR, from `/debug/v1/info` (`enr`, or nwaku's `enrUri`).
pub async fn fetch_enrs(targets: &[Target]) -> anyhow::Result<Vec<(String, Enr)>> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()?;
    let mut out = Vec::new();
    for target in targets {
        let url = format!("{}/debug/v1/info", target.http_url);
        let info: serde_json::Value = client
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("{}: cannot read {url}", target.name))?
            .json()
            .await
            .with_context(|| format!("{}: {url} is not JSON", target.name))?;
        let text = info
            .get("enr")
            .or_else(|| info.get("enrUri"))
            .and_then(|v| v.as_str())
            .with_context(|| format!("{}: {url} shows no ENR", target.name))?;
        let enr = waku_enr::parse(text).with_context(|| format!("{}: its ENR", target.name))?;
        out.push((target.name.clone(), enr));
    }
    Ok(out)
}

/// Builds, signs (only if the content changed) and writes the tree at `domain` into `out`.
/// Blocking: the signer may talk to a token or a card.
pub fn publish(
    domain: &str,
    nodes: &[(String, Enr)],
    links: &[TreeUrl],
    profile_path: &Path,
    out: &Path,
) -> anyhow::Result<Published> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let state_path = out.join(STATE_FILE);
    let last: Option<LastTree> = match std::fs::read_to_string(&state_path) {
        Ok(text) => Some(
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a tree state file", state_path.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => bail!("cannot read {}: {e}", state_path.display()),
    };
    let enrs: Vec<Enr> = nodes.iter().map(|(_, e)| e.clone()).collect();
    let content = UnsignedTree::build(&enrs, links, 0).unsigned_root();
    let zone_file = out.join(ZONE_FILE);
    let records_file = out.join(RECORDS_FILE);
    let mut names: Vec<String> = nodes.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    // The URL comes from the profile alone: no PIN is asked for a tree that needs no signing.
    let profile = Profile::load(profile_path)?;
    let key = profile
        .public_key
        .secp256k1()
        .context("DNS trees are signed with secp256k1; the operator profile's key is Ed25519")?;
    let url = TreeUrl::new(key, domain).map_err(|e| anyhow::anyhow!("--domain: {e}"))?;
    if let Some(last) = &last {
        if last.unsigned_root_content == content
            && last.url == url.to_string()
            && zone_file.exists()
            && records_file.exists()
        {
            return Ok(Published {
                url: last.url.clone(),
                seq: last.seq,
                changed: false,
                nodes: nodes.len(),
                records: count_records(&records_file)?,
                zone_file,
                records_file,
            });
        }
    }
    let seq = last.as_ref().map_or(1, |l| l.seq + 1);
    let unsigned = UnsignedTree::build(&enrs, links, seq);

    // open_signer checks that the device holds the profile's key.
    let mut signer: Box<dyn Signer> = profile.open_signer(profile_path)?;
    let signature = sign_recoverable(signer.as_mut(), &unsigned.signing_hash())?;
    let tree = unsigned
        .sign(signature, &key)
        .map_err(|e| anyhow::anyhow!("the operator key's signature: {e}"))?;
    let records = tree.txt_records(url.domain());
    write(&zone_file, tree.zone_file(url.domain()).as_bytes())?;
    write(
        &records_file,
        format!("{}\n", serde_json::to_string_pretty(&records)?).as_bytes(),
    )?;
    let state = LastTree {
        url: url.to_string(),
        seq,
        unsigned_root_content: content,
        nodes: names,
    };
    write(
        &state_path,
        format!("{}\n", serde_json::to_string_pretty(&state)?).as_bytes(),
    )?;
    Ok(Published {
        url: url.to_string(),
        seq,
        changed: true,
        nodes: nodes.len(),
        records: records.len(),
        zone_file,
        records_file,
    })
}

/// UDP and TCP sockets on one loopback port, bound before anything is served there: the nodes
/// are told the address before the zone holding their own ENRs exists. Queries that arrive
/// before [`LocalServer::serve`] wait in the socket (or time out and are retried by the node).
pub struct LocalServer {
    udp: tokio::net::UdpSocket,
    tcp: tokio::net::TcpListener,
}

/// How long a TCP client may stay silent before the server drops it.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);

impl LocalServer {
    /// Binds 127.0.0.1:`port` (UDP and TCP), or a port free for both when `port` is `None`.
    pub async fn bind(port: Option<u16>) -> anyhow::Result<LocalServer> {
        if let Some(port) = port {
            let udp = tokio::net::UdpSocket::bind(("127.0.0.1", port))
                .await
                .with_context(|| format!("cannot bind UDP 127.0.0.1:{port}"))?;
            let tcp = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .with_context(|| format!("cannot bind TCP 127.0.0.1:{port}"))?;
            return Ok(LocalServer { udp, tcp });
        }
        // A free UDP port is not always free for TCP: try a few.
        for _ in 0..50 {
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
            let port = udp.local_addr()?.port();
            if let Ok(tcp) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                return Ok(LocalServer { udp, tcp });
            }
        }
        bail!("no loopback port is free for both UDP and TCP")
    }

    /// Where it listens (UDP and TCP).
    pub fn address(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.udp.local_addr()?)
    }

    /// Serves `zone_file` (what [`publish`] wrote) as the zone of `domain`, with the SOA and NS
    /// records a zone of its own needs (written beside it as `served.zone`). The server runs
    /// until it is shut down or dropped.
    pub fn serve(self, domain: &str, zone_file: &Path) -> anyhow::Result<Server<Catalog>> {
        let domain = domain.trim_end_matches('.');
        let mut text = std::fs::read_to_string(zone_file)
            .with_context(|| format!("cannot read {}", zone_file.display()))?;
        text.push_str(&format!(
            "@ 3600 IN SOA ns.{domain}. hostmaster.{domain}. 1 3600 600 86400 60\n@ 3600 IN NS ns.{domain}.\n"
        ));
        let served = zone_file.with_file_name("served.zone");
        write(&served, text.as_bytes())?;
        let origin = Name::from_ascii(format!("{domain}."))
            .map_err(|e| anyhow::anyhow!("`{domain}` is not a domain name: {e}"))?;
        let handler = FileZoneHandler::try_from_config(
            origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
            None,
            &FileConfig {
                zone_path: served.clone(),
            },
        )
        .map_err(|e| anyhow::anyhow!("the DNS server cannot load {}: {e}", served.display()))?;
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::from(origin), vec![Arc::new(handler)]);
        let mut server = Server::new(catalog);
        server.register_socket(self.udp);
        server.register_listener(self.tcp, TCP_TIMEOUT, 64);
        Ok(server)
    }
}

fn count_records(path: &Path) -> anyhow::Result<usize> {
    let text = std::fs::read_to_string(path)?;
    let records: Vec<TxtRecord> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a list of TXT records", path.display()))?;
    Ok(records.len())
}

/// Writes through a temp file and a rename: a DNS upload never reads half a file.
fn write(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use roost_node::discovery::dns::tree::{self, Limits};
    use std::collections::BTreeMap;

    fn enr(n: u8) -> Enr {
        let keypair = libp2p::identity::Keypair::generate_secp256k1();
        let record = waku_enr::LocalRecord {
            seq: 1,
            ip: Some(std::net::Ipv4Addr::new(127, 0, 0, n)),
            tcp_port: Some(60000),
            cluster_id: 16,
            shards: vec![1],
            ..Default::default()
        };
        waku_enr::build(&keypair, &record).unwrap()
    }

    #[tokio::test]
    async fn trees_are_signed_written_and_bump_seq_only_when_content_changes() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("dns");
        let profile_path = dir.path().join("op.toml");
        let (signer, _) = roost_node::operator::signer::file::FileSigner::open_or_create(
            &dir.path().join("op.key"),
            roost_node::operator::signer::file::Algorithm::Secp256k1,
        )
        .unwrap();
        Profile {
            backend: roost_node::operator::profile::BackendKind::File,
            public_key: signer.public_key().clone(),
            file: Some(roost_node::operator::profile::FileConfig {
                key_file: "op.key".into(),
            }),
            pkcs11: None,
            keycard: None,
        }
        .save(&profile_path)
        .unwrap();
        let nodes: Vec<(String, Enr)> = (1..=3).map(|n| (format!("node-{n}"), enr(n))).collect();
        let first = publish("test.example.org", &nodes, &[], &profile_path, &out).unwrap();
        assert!(first.changed);
        assert_eq!(first.seq, 1);
        let again = publish("test.example.org", &nodes, &[], &profile_path, &out).unwrap();
        assert!(!again.changed);
        assert_eq!(again.seq, 1);
        let link: TreeUrl = first.url.replace("test.", "other.").parse().unwrap();
        let third = publish(
            "test.example.org",
            &nodes[..2],
            std::slice::from_ref(&link),
            &profile_path,
            &out,
        )
        .unwrap();
        assert!(third.changed);
        assert_eq!(third.seq, 2);
        // Another domain is another tree: signed again, even with the same content.
        let links = std::slice::from_ref(&link);
        let moved = publish("moved.example.org", &nodes[..2], links, &profile_path, &out).unwrap();
        assert!(moved.changed);
        assert_eq!(moved.seq, 3);
        let third = publish("test.example.org", &nodes[..2], links, &profile_path, &out).unwrap();
        assert_eq!(third.seq, 4);

        // What was written verifies against the URL printed.
        let text = std::fs::read_to_string(&third.records_file).unwrap();
        let records: Vec<TxtRecord> = serde_json::from_str(&text).unwrap();
        let zone: BTreeMap<String, String> =
            records.into_iter().map(|r| (r.name, r.value)).collect();
        let synced = tree::sync(&zone, &third.url.parse().unwrap(), Limits::default())
            .await
            .unwrap();
        assert_eq!(synced.root.seq, 4);
        assert_eq!(synced.enrs.len(), 2);
        assert_eq!(synced.links, vec![link]);
        let zone_file = std::fs::read_to_string(&third.zone_file).unwrap();
        assert!(zone_file.contains("$ORIGIN test.example.org."));
    }
}
