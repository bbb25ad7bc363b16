//! EIP-1459 node lists: the records of a DNS tree, building a tree from ENRs and signing its
//! root, and verifying a tree record by record as it is resolved.
//!
//! - the root, a TXT record at the tree's domain:
//!   `enrtree-root:v1 e=<enr root> l=<link root> seq=<n> sig=<signature>`, where the signature
//!   is base64url(r || s || v) (65 bytes, secp256k1) over keccak256 of the text before ` sig=`;
//! - every other record at `<hash>.<domain>`, hash = base32(keccak256(text)[..16]), unpadded:
//!   `enrtree-branch:<hash>,<hash>…`, `enr:<base64url ENR>` leaves (only under the enr root),
//!   `enrtree://<base32 compressed key>@<domain>` links (only under the link root);
//! - branches this builder writes hold at most 13 hashes, so every branch fits 370 bytes as
//!   go-ethereum's; the verifier refuses any record over the 512-byte UDP answer EIP-1459 sizes
//!   records for, trees of more than [`Limits::max_records`] records, and hashes reached twice.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet, VecDeque},
    fmt,
    future::Future,
    str::FromStr,
    time::Duration,
};

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use k256::ecdsa::{signature::hazmat::PrehashVerifier, Signature, VerifyingKey};
use sha3::{Digest, Keccak256};

use crate::waku_enr::{self, Enr};

pub const ROOT_PREFIX: &str = "enrtree-root:v1";
pub const BRANCH_PREFIX: &str = "enrtree-branch:";
pub const ENR_PREFIX: &str = "enr:";
pub const LINK_PREFIX: &str = "enrtree://";

/// Bytes of keccak256 in a subdomain this builder writes (26 base32 characters).
pub const HASH_SIZE: usize = 16;
/// The shortest hash a branch may name (go-ethereum's `minHashLength`).
const MIN_HASH_SIZE: usize = 12;
/// The longest branch this builder writes (go-ethereum's limit).
pub const MAX_BUILT_RECORD: usize = 370;
/// Hashes per branch so that a branch fits [`MAX_BUILT_RECORD`]: each is 26 characters and a
/// comma.
pub const MAX_CHILDREN: usize = MAX_BUILT_RECORD / (26 + 1);
/// The longest record the verifier accepts: EIP-1459 sizes records for a 512-byte UDP answer.
pub const MAX_RECORD: usize = 512;

/// keccak256.
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    let digest = Keccak256::digest(data);
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest);
    out
}

/// The subdomain a record lives at: base32 of the first 16 bytes of keccak256 of its text.
pub fn subdomain(text: &str) -> String {
    BASE32_NOPAD.encode(&keccak256(text.as_bytes())[..HASH_SIZE])
}

/// Why one record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("not an `enrtree-root:v1 e=… l=… seq=… sig=…` record: {0}")]
    BadRoot(String),
    #[error("bad `enrtree-branch:` record: {0}")]
    BadBranch(String),
    #[error("bad `enr:` record: {0}")]
    BadEnr(String),
    #[error("bad `enrtree://` link: {0}")]
    BadLink(String),
    #[error("not a tree record (expected enrtree-branch:, enr: or enrtree://)")]
    Unknown,
}

/// `enrtree://<key>@<domain>`: where a tree is and the key that signs it.
#[derive(Clone, PartialEq, Eq)]
pub struct TreeUrl {
    key: VerifyingKey,
    domain: String,
}

impl TreeUrl {
    pub fn new(key: VerifyingKey, domain: &str) -> Result<Self, RecordError> {
        Ok(TreeUrl {
            key,
            domain: check_domain(domain)?,
        })
    }

    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The key as the URL writes it: base32 of the 33-byte compressed key.
    pub fn key_base32(&self) -> String {
        BASE32_NOPAD.encode(self.key.to_sec1_point(true).as_bytes())
    }
}

fn check_domain(domain: &str) -> Result<String, RecordError> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let valid = !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if valid {
        Ok(domain)
    } else {
        Err(RecordError::BadLink(format!(
            "`{domain}` is not a domain name"
        )))
    }
}

impl fmt::Display for TreeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{LINK_PREFIX}{}@{}", self.key_base32(), self.domain)
    }
}

impl fmt::Debug for TreeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TreeUrl({self})")
    }
}

impl FromStr for TreeUrl {
    type Err = RecordError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .trim()
            .strip_prefix(LINK_PREFIX)
            .ok_or_else(|| RecordError::BadLink(format!("`{s}` does not start with enrtree://")))?;
        let (key, domain) = rest
            .split_once('@')
            .ok_or_else(|| RecordError::BadLink(format!("`{s}` has no `@<domain>`")))?;
        let bytes = BASE32_NOPAD
            .decode(key.to_ascii_uppercase().as_bytes())
            .map_err(|_| RecordError::BadLink(format!("key `{key}` is not base32")))?;
        let key = VerifyingKey::from_sec1_bytes(&bytes).map_err(|_| {
            RecordError::BadLink(format!("key `{key}` is not a compressed secp256k1 key"))
        })?;
        TreeUrl::new(key, domain)
    }
}

impl serde::Serialize for TreeUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for TreeUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The root record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    pub enr_root: String,
    pub link_root: String,
    pub seq: u64,
    /// r || s || v.
    pub signature: [u8; 65],
}

impl Root {
    fn unsigned_text(enr_root: &str, link_root: &str, seq: u64) -> String {
        format!("{ROOT_PREFIX} e={enr_root} l={link_root} seq={seq}")
    }

    /// What the signature covers: keccak256 of the root text without ` sig=…`.
    pub fn signing_hash(&self) -> [u8; 32] {
        keccak256(Self::unsigned_text(&self.enr_root, &self.link_root, self.seq).as_bytes())
    }

    /// The record's text.
    pub fn text(&self) -> String {
        format!(
            "{} sig={}",
            Self::unsigned_text(&self.enr_root, &self.link_root, self.seq),
            BASE64URL_NOPAD.encode(&self.signature)
        )
    }

    pub fn parse(text: &str) -> Result<Root, RecordError> {
        let bad = |why: &str| RecordError::BadRoot(why.to_owned());
        let mut fields = text.split(' ');
        if fields.next() != Some(ROOT_PREFIX) {
            return Err(bad("does not start with enrtree-root:v1"));
        }
        let mut field = |name: &str| {
            fields
                .next()
                .and_then(|f| f.strip_prefix(name))
                .ok_or_else(|| bad(&format!("missing `{name}`")))
        };
        let enr_root = field("e=")?.to_owned();
        let link_root = field("l=")?.to_owned();
        let seq = field("seq=")?
            .parse::<u64>()
            .map_err(|_| bad("seq is not a number"))?;
        // go-ethereum's older trees padded the signature; padding carries nothing.
        let sig = field("sig=")?.trim_end_matches('=');
        if fields.next().is_some() {
            return Err(bad("trailing fields"));
        }
        for hash in [&enr_root, &link_root] {
            decode_hash(hash).map_err(|why| bad(&why))?;
        }
        let signature: [u8; 65] = BASE64URL_NOPAD
            .decode(sig.as_bytes())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("sig is not 65 bytes of base64url"))?;
        Ok(Root {
            enr_root,
            link_root,
            seq,
            signature,
        })
    }

    /// Checks the signature (r || s; v is not needed with the key at hand) against `key`.
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        let Ok(signature) = Signature::from_slice(&self.signature[..64]) else {
            return false;
        };
        key.verify_prehash(&self.signing_hash(), &signature).is_ok()
    }
}

fn decode_hash(hash: &str) -> Result<Vec<u8>, String> {
    let bytes = BASE32_NOPAD
        .decode(hash.as_bytes())
        .map_err(|_| format!("`{hash}` is not an unpadded base32 hash"))?;
    if bytes.len() < MIN_HASH_SIZE || bytes.len() > 32 {
        return Err(format!(
            "hash `{hash}` is {} bytes, not {MIN_HASH_SIZE} to 32",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// A record below the root.
#[derive(Debug, Clone)]
pub enum Entry {
    Branch(Vec<String>),
    Enr(Box<Enr>),
    Link(TreeUrl),
}

impl Entry {
    pub fn parse(text: &str) -> Result<Entry, RecordError> {
        if let Some(rest) = text.strip_prefix(BRANCH_PREFIX) {
            if rest.is_empty() {
                return Ok(Entry::Branch(Vec::new()));
            }
            let hashes: Vec<String> = rest.split(',').map(str::to_owned).collect();
            for hash in &hashes {
                decode_hash(hash).map_err(RecordError::BadBranch)?;
            }
            Ok(Entry::Branch(hashes))
        } else if text.starts_with(ENR_PREFIX) {
            waku_enr::parse(text)
                .map(|enr| Entry::Enr(Box::new(enr)))
                .map_err(|e| RecordError::BadEnr(e.to_string()))
        } else if text.starts_with(LINK_PREFIX) {
            text.parse().map(Entry::Link)
        } else {
            Err(RecordError::Unknown)
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Entry::Branch(_) => "branch",
            Entry::Enr(_) => "ENR",
            Entry::Link(_) => "link",
        }
    }
}

/// A tree built from ENRs and links, waiting for its root signature.
#[derive(Debug, Clone)]
pub struct UnsignedTree {
    enr_root: String,
    link_root: String,
    seq: u64,
    records: BTreeMap<String, String>,
}

impl UnsignedTree {
    /// Builds the tree: leaves sorted (the same content gives the same tree), branches of at
    /// most [`MAX_CHILDREN`] hashes, as go-ethereum's `dnsdisc.MakeTree`.
    pub fn build(enrs: &[Enr], links: &[TreeUrl], seq: u64) -> UnsignedTree {
        let enr_leaves: BTreeSet<String> = enrs.iter().map(|e| e.to_base64()).collect();
        let link_leaves: BTreeSet<String> = links.iter().map(|l| l.to_string()).collect();
        let mut records = BTreeMap::new();
        let enr_root = build_subtree(&mut records, enr_leaves.into_iter().collect());
        let link_root = build_subtree(&mut records, link_leaves.into_iter().collect());
        let enr_hash = subdomain(&enr_root);
        let link_hash = subdomain(&link_root);
        records.insert(enr_hash.clone(), enr_root);
        records.insert(link_hash.clone(), link_root);
        UnsignedTree {
            enr_root: enr_hash,
            link_root: link_hash,
            seq,
            records,
        }
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The root text the signature covers.
    pub fn unsigned_root(&self) -> String {
        Root::unsigned_text(&self.enr_root, &self.link_root, self.seq)
    }

    /// keccak256 of [`Self::unsigned_root`]: the 32 bytes the operator key signs.
    pub fn signing_hash(&self) -> [u8; 32] {
        keccak256(self.unsigned_root().as_bytes())
    }

    /// Attaches the 65-byte r || s || v signature; checks it against `key` first.
    pub fn sign(self, signature: [u8; 65], key: &VerifyingKey) -> Result<Tree, TreeError> {
        let root = Root {
            enr_root: self.enr_root,
            link_root: self.link_root,
            seq: self.seq,
            signature,
        };
        if !root.verify(key) {
            return Err(TreeError::BadSignature {
                domain: "(new tree)".into(),
                key: BASE32_NOPAD.encode(key.to_sec1_point(true).as_bytes()),
                seq: root.seq,
            });
        }
        Ok(Tree {
            root,
            records: self.records,
        })
    }
}

fn build_subtree(records: &mut BTreeMap<String, String>, leaves: Vec<String>) -> String {
    if leaves.len() == 1 {
        return leaves.into_iter().next().unwrap_or_default();
    }
    if leaves.len() <= MAX_CHILDREN {
        let hashes: Vec<String> = leaves
            .into_iter()
            .map(|leaf| {
                let hash = subdomain(&leaf);
                records.insert(hash.clone(), leaf);
                hash
            })
            .collect();
        return format!("{BRANCH_PREFIX}{}", hashes.join(","));
    }
    let subtrees: Vec<String> = leaves
        .chunks(MAX_CHILDREN)
        .map(|chunk| {
            let sub = build_subtree(records, chunk.to_vec());
            records.insert(subdomain(&sub), sub.clone());
            sub
        })
        .collect();
    build_subtree(records, subtrees)
}

/// A signed tree: what a zone holds.
#[derive(Debug, Clone)]
pub struct Tree {
    root: Root,
    records: BTreeMap<String, String>,
}

/// One TXT record of a tree as DNS providers' APIs take it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TxtRecord {
    /// Fully qualified, without the trailing dot.
    pub name: String,
    pub ttl: u32,
    pub value: String,
}

/// TTLs for a published tree: the root changes with every update, the rest never changes
/// under its name (go-ethereum's `devp2p dns` defaults).
pub const ROOT_TTL: u32 = 60;
pub const RECORD_TTL: u32 = 86_400;

impl Tree {
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// Records below the root, by subdomain.
    pub fn records(&self) -> &BTreeMap<String, String> {
        &self.records
    }

    /// Every TXT record of the tree at `domain`, the root first.
    pub fn txt_records(&self, domain: &str) -> Vec<TxtRecord> {
        let domain = domain.trim_end_matches('.');
        let mut out = vec![TxtRecord {
            name: domain.to_owned(),
            ttl: ROOT_TTL,
            value: self.root.text(),
        }];
        out.extend(self.records.iter().map(|(hash, text)| TxtRecord {
            name: format!("{hash}.{domain}"),
            ttl: RECORD_TTL,
            value: text.clone(),
        }));
        out
    }

    /// A BIND zone file for `domain`: `$ORIGIN`, `$TTL`, one TXT record per line, texts over
    /// 255 bytes split into several character strings (which resolvers join).
    pub fn zone_file(&self, domain: &str) -> String {
        let domain = domain.trim_end_matches('.');
        let mut out = format!(
            "; EIP-1459 node list, seq {}\n$ORIGIN {domain}.\n$TTL {RECORD_TTL}\n",
            self.root.seq
        );
        out.push_str(&format!(
            "{:<28} {:>6} IN TXT {}\n",
            "@",
            ROOT_TTL,
            zone_strings(&self.root.text())
        ));
        for (hash, text) in &self.records {
            out.push_str(&format!(
                "{hash:<28} {RECORD_TTL:>6} IN TXT {}\n",
                zone_strings(text)
            ));
        }
        out
    }

    /// Verifies this tree as a resolver would see it at `url`'s domain.
    pub async fn verify(&self, url: &TreeUrl) -> Result<Synced, TreeError> {
        let source: BTreeMap<String, String> = self
            .txt_records(url.domain())
            .into_iter()
            .map(|r| (r.name, r.value))
            .collect();
        sync(&source, url, Limits::default()).await
    }
}

fn zone_strings(text: &str) -> String {
    // Record texts are base32, base64url, ':', ',', '=', '/', '@', ' ', '-', '.': nothing to
    // escape, and every character is one byte.
    text.as_bytes()
        .chunks(255)
        .map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The answer to a TXT lookup: each record's strings joined, and the answer's TTL.
#[derive(Debug, Clone, Default)]
pub struct TxtAnswer {
    pub texts: Vec<String>,
    pub ttl: Option<Duration>,
}

/// Where a tree's records come from: DNS in the node, a map in tests and for local checks.
pub trait TxtSource {
    /// The TXT records at `name`; an empty answer when the name has none.
    fn txt(&self, name: &str) -> impl Future<Output = Result<TxtAnswer, String>> + Send;
}

impl TxtSource for BTreeMap<String, String> {
    fn txt(&self, name: &str) -> impl Future<Output = Result<TxtAnswer, String>> + Send {
        let texts = self.get(name).cloned().into_iter().collect();
        std::future::ready(Ok(TxtAnswer { texts, ttl: None }))
    }
}

/// Bounds on what a verifier walks.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Records below the root, both subtrees together.
    pub max_records: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_records: 2000 }
    }
}

/// Why a tree was refused. Every variant names the record at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("{domain}: no enrtree-root:v1 TXT record")]
    NoRoot { domain: String },
    #[error("{domain}: {reason}")]
    BadRoot { domain: String, reason: RecordError },
    #[error(
        "{domain}: the root signature (seq {seq}) does not verify against the URL's key {key}"
    )]
    BadSignature {
        domain: String,
        key: String,
        seq: u64,
    },
    #[error("{domain}: root seq {got} is lower than seq {seen} already seen (a rollback)")]
    Rollback { domain: String, got: u64, seen: u64 },
    #[error("{name}: the record does not match the hash it is published under")]
    HashMismatch { name: String },
    #[error("{name}: {reason}")]
    BadRecord { name: String, reason: RecordError },
    #[error("{name}: a {kind} record in the {subtree} subtree")]
    WrongSubtree {
        name: String,
        kind: &'static str,
        subtree: &'static str,
    },
    #[error("{name}: reached a second time (a loop or a repeated hash)")]
    Loop { name: String },
    #[error("{name}: record is {len} bytes, over the {max}-byte limit")]
    RecordTooLarge {
        name: String,
        len: usize,
        max: usize,
    },
    #[error("{domain}: tree has more than {max} records")]
    TooManyRecords { domain: String, max: usize },
    #[error("{name}: no TXT record")]
    Missing { name: String },
    #[error("{name}: DNS lookup failed: {reason}")]
    Lookup { name: String, reason: String },
}

impl TreeError {
    /// A metric label from a closed set.
    pub fn reason(&self) -> &'static str {
        match self {
            TreeError::NoRoot { .. } => "no_root",
            TreeError::BadRoot { .. } => "bad_root",
            TreeError::BadSignature { .. } => "bad_signature",
            TreeError::Rollback { .. } => "rollback",
            TreeError::HashMismatch { .. } => "hash_mismatch",
            TreeError::BadRecord { .. } | TreeError::WrongSubtree { .. } => "bad_record",
            TreeError::Loop { .. } => "loop",
            TreeError::RecordTooLarge { .. } | TreeError::TooManyRecords { .. } => "too_large",
            TreeError::Missing { .. } | TreeError::Lookup { .. } => "lookup",
        }
    }

    pub const REASONS: [&'static str; 9] = [
        "no_root",
        "bad_root",
        "bad_signature",
        "rollback",
        "hash_mismatch",
        "bad_record",
        "loop",
        "too_large",
        "lookup",
    ];
}

/// A verified tree: its root and everything below it.
#[derive(Debug, Clone)]
pub struct Synced {
    pub root: Root,
    /// The root answer's TTL, when the source gave one.
    pub root_ttl: Option<Duration>,
    pub enrs: Vec<Enr>,
    pub links: Vec<TreeUrl>,
    /// Records below the root.
    pub records: usize,
}

/// Reads and verifies the root at `url`'s domain: present, well formed, signed by `url`'s key.
pub async fn resolve_root<S: TxtSource>(
    source: &S,
    url: &TreeUrl,
) -> Result<(Root, Option<Duration>), TreeError> {
    let domain = url.domain().to_owned();
    let answer = source
        .txt(&domain)
        .await
        .map_err(|reason| TreeError::Lookup {
            name: domain.clone(),
            reason,
        })?;
    let text = answer
        .texts
        .iter()
        .find(|t| t.starts_with(ROOT_PREFIX))
        .ok_or_else(|| TreeError::NoRoot {
            domain: domain.clone(),
        })?;
    if text.len() > MAX_RECORD {
        return Err(TreeError::RecordTooLarge {
            name: domain,
            len: text.len(),
            max: MAX_RECORD,
        });
    }
    let root = Root::parse(text).map_err(|reason| TreeError::BadRoot {
        domain: domain.clone(),
        reason,
    })?;
    if !root.verify(url.key()) {
        return Err(TreeError::BadSignature {
            domain,
            key: url.key_base32(),
            seq: root.seq,
        });
    }
    Ok((root, answer.ttl))
}

/// Resolves the whole tree at `url` and verifies every record: the root's signature, each
/// record against the hash it is published under, each record's type against its subtree,
/// and no hash reached twice. Any fault refuses the whole tree.
pub async fn sync<S: TxtSource>(
    source: &S,
    url: &TreeUrl,
    limits: Limits,
) -> Result<Synced, TreeError> {
    let (root, root_ttl) = resolve_root(source, url).await?;
    let mut walk = Walk {
        source,
        domain: url.domain(),
        limits,
        records: 0,
    };
    let mut enrs = Vec::new();
    let mut links = Vec::new();
    for entry in walk.subtree(&root.enr_root, "enr").await? {
        if let Entry::Enr(enr) = entry {
            enrs.push(*enr);
        }
    }
    for entry in walk.subtree(&root.link_root, "link").await? {
        if let Entry::Link(link) = entry {
            links.push(link);
        }
    }
    Ok(Synced {
        root,
        root_ttl,
        enrs,
        links,
        records: walk.records,
    })
}

struct Walk<'a, S> {
    source: &'a S,
    domain: &'a str,
    limits: Limits,
    records: usize,
}

impl<S: TxtSource> Walk<'_, S> {
    /// The leaves below `hash`, breadth first. `subtree` is `enr` or `link`.
    async fn subtree(
        &mut self,
        hash: &str,
        subtree: &'static str,
    ) -> Result<Vec<Entry>, TreeError> {
        let mut seen = HashSet::new();
        let mut queue = VecDeque::from([hash.to_owned()]);
        let mut leaves = Vec::new();
        while let Some(hash) = queue.pop_front() {
            let name = format!("{hash}.{}", self.domain);
            if !seen.insert(hash.to_ascii_uppercase()) {
                return Err(TreeError::Loop { name });
            }
            self.records += 1;
            if self.records > self.limits.max_records {
                return Err(TreeError::TooManyRecords {
                    domain: self.domain.to_owned(),
                    max: self.limits.max_records,
                });
            }
            let text = self.record(&hash, &name).await?;
            let entry = Entry::parse(&text).map_err(|reason| TreeError::BadRecord {
                name: name.clone(),
                reason,
            })?;
            match entry {
                Entry::Branch(children) => queue.extend(children),
                Entry::Enr(_) if subtree == "enr" => leaves.push(entry),
                Entry::Link(_) if subtree == "link" => leaves.push(entry),
                other => {
                    return Err(TreeError::WrongSubtree {
                        name,
                        kind: other.kind(),
                        subtree,
                    })
                }
            }
        }
        Ok(leaves)
    }

    /// The text at `name` whose keccak256 starts with `hash`.
    async fn record(&self, hash: &str, name: &str) -> Result<String, TreeError> {
        let want = decode_hash(hash).map_err(|why| TreeError::BadRecord {
            name: name.to_owned(),
            reason: RecordError::BadBranch(why),
        })?;
        let answer = self
            .source
            .txt(name)
            .await
            .map_err(|reason| TreeError::Lookup {
                name: name.to_owned(),
                reason,
            })?;
        if answer.texts.is_empty() {
            return Err(TreeError::Missing {
                name: name.to_owned(),
            });
        }
        let text = answer
            .texts
            .into_iter()
            .find(|t| keccak256(t.as_bytes()).starts_with(&want))
            .ok_or_else(|| TreeError::HashMismatch {
                name: name.to_owned(),
            })?;
        if text.len() > MAX_RECORD {
            return Err(TreeError::RecordTooLarge {
                name: name.to_owned(),
                len: text.len(),
                max: MAX_RECORD,
            });
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests;
