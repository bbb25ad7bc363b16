use super::*;
use k256::ecdsa::SigningKey;

/// EIP-1459's example zone. The EIP's example URL names the key AM5FCQ…; the zone itself was
/// signed with go-ethereum's `dnsdisc` test key AKPYQIUQ… (its client test syncs this zone with
/// that URL), which is what the root's signature recovers to.
const EXAMPLE_URL: &str =
    "enrtree://AKPYQIUQIL7PSIACI32J7FGZW56E5FKHEFCCOFHILBIMW3M6LWXS2@nodes.example.org";
const EIP_URL: &str =
    "enrtree://AM5FCQLWIZX2QFPNJAP7VUERCCRNGRHWZG3YYHIUV7BVDQ5FDPRT2@nodes.example.org";
const EXAMPLE: [(&str, &str); 6] = [
    ("nodes.example.org", "enrtree-root:v1 e=JWXYDBPXYWG6FX3GMDIBFA6CJ4 l=C7HRFPF3BLGF3YR4DY5KX3SMBE seq=1 sig=o908WmNp7LibOfPsr4btQwatZJ5URBr2ZAuxvK4UWHlsB9sUOTJQaGAlLPVAhM__XJesCHxLISo94z5Z2a463gA"),
    ("C7HRFPF3BLGF3YR4DY5KX3SMBE.nodes.example.org", "enrtree://AM5FCQLWIZX2QFPNJAP7VUERCCRNGRHWZG3YYHIUV7BVDQ5FDPRT2@morenodes.example.org"),
    ("JWXYDBPXYWG6FX3GMDIBFA6CJ4.nodes.example.org", "enrtree-branch:2XS2367YHAXJFGLZHVAWLQD4ZY,H4FHT4B454P6UXFD7JCYQ5PWDY,MHTDO6TMUBRIA2XWG5LUDACK24"),
    ("2XS2367YHAXJFGLZHVAWLQD4ZY.nodes.example.org", "enr:-HW4QOFzoVLaFJnNhbgMoDXPnOvcdVuj7pDpqRvh6BRDO68aVi5ZcjB3vzQRZH2IcLBGHzo8uUN3snqmgTiE56CH3AMBgmlkgnY0iXNlY3AyNTZrMaECC2_24YYkYHEgdzxlSNKQEnHhuNAbNlMlWJxrJxbAFvA"),
    ("H4FHT4B454P6UXFD7JCYQ5PWDY.nodes.example.org", "enr:-HW4QAggRauloj2SDLtIHN1XBkvhFZ1vtf1raYQp9TBW2RD5EEawDzbtSmlXUfnaHcvwOizhVYLtr7e6vw7NAf6mTuoCgmlkgnY0iXNlY3AyNTZrMaECjrXI8TLNXU0f8cthpAMxEshUyQlK-AM0PW2wfrnacNI"),
    ("MHTDO6TMUBRIA2XWG5LUDACK24.nodes.example.org", "enr:-HW4QLAYqmrwllBEnzWWs7I5Ev2IAs7x_dZlbYdRdMUx5EyKHDXp7AV5CkuPGUPdvbv1_Ms1CPfhcGCvSElSosZmyoqAgmlkgnY0iXNlY3AyNTZrMaECriawHKWdDRk2xeZkrOXBQ0dfMFLHY4eENZwdufn1S1o"),
];

fn example() -> BTreeMap<String, String> {
    EXAMPLE
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

fn url(text: &str) -> TreeUrl {
    text.parse().unwrap()
}

fn key(n: u8) -> SigningKey {
    let mut secret = [0u8; 32];
    secret[31] = n;
    secret[0] = 0x42;
    SigningKey::from_slice(&secret).unwrap()
}

fn sign(hash: &[u8; 32], key: &SigningKey) -> [u8; 65] {
    let (sig, id) = key.sign_prehash_recoverable(hash);
    let mut out = [0u8; 65];
    out[..64].copy_from_slice(&sig.to_bytes());
    out[64] = id.to_byte();
    out
}

fn enr(n: u8) -> Enr {
    let key = key(100 + n);
    enr::Enr::builder()
        .ip4(std::net::Ipv4Addr::new(10, 0, 0, n))
        .tcp4(60000)
        .build(&key)
        .unwrap()
}

fn url_of(key: &SigningKey, domain: &str) -> TreeUrl {
    TreeUrl::new(*key.verifying_key(), domain).unwrap()
}

/// A zone with a root signed by `key` over `e`/`l`, plus `records` (name relative to `n`).
fn zone(key: &SigningKey, e: &str, l: &str, records: &[&str]) -> BTreeMap<String, String> {
    let unsigned = Root::unsigned_text(e, l, 7);
    let mut root = Root::parse(&format!("{unsigned} sig={}", "A".repeat(87))).unwrap();
    root.signature = sign(&root.signing_hash(), key);
    let mut map = BTreeMap::from([("n".to_owned(), root.text())]);
    for text in records {
        map.insert(format!("{}.n", subdomain(text)), text.to_string());
    }
    map
}

#[tokio::test]
async fn the_eip_1459_example_tree_verifies() {
    // Every record lives at the hash of its text.
    for (name, text) in EXAMPLE.iter().skip(1) {
        assert_eq!(format!("{}.nodes.example.org", subdomain(text)), *name);
    }
    let synced = sync(&example(), &url(EXAMPLE_URL), Limits::default())
        .await
        .unwrap();
    assert_eq!(synced.root.seq, 1);
    assert_eq!(synced.enrs.len(), 3);
    assert_eq!(synced.records, 5);
    assert_eq!(
        synced
            .links
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["enrtree://AM5FCQLWIZX2QFPNJAP7VUERCCRNGRHWZG3YYHIUV7BVDQ5FDPRT2@morenodes.example.org"]
    );
    // The root text round-trips byte for byte, and its signature recovers to the URL's key.
    let root = Root::parse(EXAMPLE[0].1).unwrap();
    assert_eq!(root.text(), EXAMPLE[0].1);
    let recovered = VerifyingKey::recover_from_prehash(
        &root.signing_hash(),
        &Signature::from_slice(&root.signature[..64]).unwrap(),
        k256::ecdsa::RecoveryId::from_byte(root.signature[64]).unwrap(),
    )
    .unwrap();
    assert_eq!(&recovered, url(EXAMPLE_URL).key());
    // The URL in the EIP's text (another key) is refused with the reason.
    let err = sync(&example(), &url(EIP_URL), Limits::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, TreeError::BadSignature { seq: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("does not verify"), "{err}");
}

#[tokio::test]
async fn tampered_roots_are_refused_with_the_reason() {
    let u = url(EXAMPLE_URL);
    // A flipped signature byte.
    let mut zone = example();
    let mut root = Root::parse(EXAMPLE[0].1).unwrap();
    root.signature[10] ^= 1;
    zone.insert("nodes.example.org".into(), root.text());
    let err = sync(&zone, &u, Limits::default()).await.unwrap_err();
    assert_eq!(err.reason(), "bad_signature", "{err}");
    // A higher seq with the old signature.
    let mut zone = example();
    zone.insert(
        "nodes.example.org".into(),
        EXAMPLE[0].1.replace("seq=1", "seq=2"),
    );
    let err = sync(&zone, &u, Limits::default()).await.unwrap_err();
    assert_eq!(err.reason(), "bad_signature", "{err}");
    // Another enr root under the old signature.
    let mut zone = example();
    zone.insert(
        "nodes.example.org".into(),
        EXAMPLE[0].1.replace(
            "e=JWXYDBPXYWG6FX3GMDIBFA6CJ4",
            "e=C7HRFPF3BLGF3YR4DY5KX3SMBE",
        ),
    );
    let err = sync(&zone, &u, Limits::default()).await.unwrap_err();
    assert_eq!(err.reason(), "bad_signature", "{err}");
    // Garbage and a missing root.
    let mut zone = example();
    zone.insert(
        "nodes.example.org".into(),
        "enrtree-root:v1 e=JWXYDBPXYWG6FX3GMDIBFA6CJ4 seq=1".into(),
    );
    let err = sync(&zone, &u, Limits::default()).await.unwrap_err();
    assert_eq!(err.reason(), "bad_root", "{err}");
    assert!(err.to_string().contains("missing `l=`"), "{err}");
    let mut zone = example();
    zone.remove("nodes.example.org");
    let err = sync(&zone, &u, Limits::default()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "nodes.example.org: no enrtree-root:v1 TXT record"
    );
}

#[tokio::test]
async fn tampered_branches_and_leaves_are_refused_with_the_reason() {
    let u = url(EXAMPLE_URL);
    // A branch naming another leaf, published under the old branch's name.
    let mut zone = example();
    zone.insert(
        "JWXYDBPXYWG6FX3GMDIBFA6CJ4.nodes.example.org".into(),
        "enrtree-branch:2XS2367YHAXJFGLZHVAWLQD4ZY,H4FHT4B454P6UXFD7JCYQ5PWDY".into(),
    );
    let err = sync(&zone, &u, Limits::default()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "JWXYDBPXYWG6FX3GMDIBFA6CJ4.nodes.example.org: the record does not match the hash it is published under"
    );
    // A leaf swapped for another (valid) ENR.
    let mut zone = example();
    zone.insert(
        "2XS2367YHAXJFGLZHVAWLQD4ZY.nodes.example.org".into(),
        EXAMPLE[4].1.into(),
    );
    let err = sync(&zone, &u, Limits::default()).await.unwrap_err();
    assert_eq!(err.reason(), "hash_mismatch", "{err}");
    assert!(
        err.to_string().starts_with("2XS2367YHAXJFGLZHVAWLQD4ZY"),
        "{err}"
    );
    // A leaf that is gone.
    let mut zone = example();
    zone.remove("MHTDO6TMUBRIA2XWG5LUDACK24.nodes.example.org");
    let err = sync(&zone, &u, Limits::default()).await.unwrap_err();
    assert_eq!(err.reason(), "lookup", "{err}");
}

#[tokio::test]
async fn bad_leaves_loops_and_wrong_subtrees_are_refused() {
    let k = key(1);
    let u = url_of(&k, "n");
    // An ENR whose signature does not match its content, at its own hash.
    let mut text = enr(1).to_base64();
    let last = text.pop().unwrap();
    text.push(if last == 'A' { 'B' } else { 'A' });
    let branch = format!("{BRANCH_PREFIX}{}", subdomain(&text));
    let empty = BRANCH_PREFIX.to_owned();
    let z = zone(
        &k,
        &subdomain(&branch),
        &subdomain(&empty),
        &[&branch, &empty, &text],
    );
    let err = sync(&z, &u, Limits::default()).await.unwrap_err();
    assert_eq!(err.reason(), "bad_record", "{err}");
    assert!(err.to_string().contains("bad `enr:` record"), "{err}");

    // Content addressing makes a true cycle a hash collision; what a forger can do is name a
    // record twice, which would walk it (and all below it) again.
    let leaf = enr(2).to_base64();
    let inner = format!("{BRANCH_PREFIX}{}", subdomain(&leaf));
    let outer = format!("{BRANCH_PREFIX}{},{}", subdomain(&inner), subdomain(&inner));
    let z = zone(
        &k,
        &subdomain(&outer),
        &subdomain(&empty),
        &[&outer, &inner, &leaf, &empty],
    );
    let err = sync(&z, &u, Limits::default()).await.unwrap_err();
    assert_eq!(err.reason(), "loop", "{err}");
    assert!(err.to_string().contains("reached a second time"), "{err}");
    // The link root pointing into the ENR subtree meets an ENR where only links may be.
    let z = zone(&k, &subdomain(&inner), &subdomain(&inner), &[&inner, &leaf]);
    let err = sync(&z, &u, Limits::default()).await.unwrap_err();
    assert_eq!(
        err,
        TreeError::WrongSubtree {
            name: format!("{}.n", subdomain(&leaf)),
            kind: "ENR",
            subtree: "link"
        }
    );
}

#[tokio::test]
async fn oversized_records_and_trees_are_refused() {
    let k = key(1);
    let u = url_of(&k, "n");
    // 40 hashes in one branch: 1054 bytes.
    let leaves: Vec<String> = (0..40).map(|i| enr(i).to_base64()).collect();
    let hashes: Vec<String> = leaves.iter().map(|l| subdomain(l)).collect();
    let branch = format!("{BRANCH_PREFIX}{}", hashes.join(","));
    let empty = BRANCH_PREFIX.to_owned();
    let mut records: Vec<&str> = leaves.iter().map(String::as_str).collect();
    records.push(&branch);
    records.push(&empty);
    let z = zone(&k, &subdomain(&branch), &subdomain(&empty), &records);
    let err = sync(&z, &u, Limits::default()).await.unwrap_err();
    assert_eq!(err.reason(), "too_large", "{err}");
    assert!(err.to_string().contains("over the 512-byte limit"), "{err}");

    // A well-formed tree with more records than the verifier walks.
    let enrs: Vec<Enr> = (0..40).map(enr).collect();
    let unsigned = UnsignedTree::build(&enrs, &[], 3);
    let hash = unsigned.signing_hash();
    let tree = unsigned.sign(sign(&hash, &k), k.verifying_key()).unwrap();
    let zone: BTreeMap<String, String> = tree
        .txt_records("n")
        .into_iter()
        .map(|r| (r.name, r.value))
        .collect();
    let err = sync(&zone, &u, Limits { max_records: 20 })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "n: tree has more than 20 records");
    assert_eq!(
        sync(&zone, &u, Limits::default()).await.unwrap().enrs.len(),
        40
    );
}

#[tokio::test]
async fn built_trees_split_branches_sign_and_verify() {
    let k = key(9);
    let u = url_of(&k, "nodes.example.org");
    let link = url_of(&key(10), "other.example.org");
    let enrs: Vec<Enr> = (0..30).map(enr).collect();
    let unsigned = UnsignedTree::build(&enrs, std::slice::from_ref(&link), 5);
    assert!(unsigned.unsigned_root().starts_with("enrtree-root:v1 e="));
    let hash = unsigned.signing_hash();
    // A signature by another key is refused before anything is written.
    assert!(unsigned
        .clone()
        .sign(sign(&hash, &key(8)), k.verifying_key())
        .is_err());
    let tree = unsigned.sign(sign(&hash, &k), k.verifying_key()).unwrap();
    for text in tree.records().values() {
        if text.starts_with(BRANCH_PREFIX) {
            assert!(text.len() <= MAX_BUILT_RECORD, "{} bytes", text.len());
        }
    }
    // 30 leaves: 13 + 13 + 4 under one top branch, one link.
    assert_eq!(tree.records().len(), 30 + 3 + 1 + 1);
    let synced = tree.verify(&u).await.unwrap();
    assert_eq!(synced.root.seq, 5);
    let mut got: Vec<String> = synced.enrs.iter().map(|e| e.to_base64()).collect();
    let mut want: Vec<String> = enrs.iter().map(|e| e.to_base64()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(synced.links, vec![link]);
    // The same content builds the same records, whatever the order.
    let mut reversed = enrs.clone();
    reversed.reverse();
    assert_eq!(
        UnsignedTree::build(&reversed, &[], 5).signing_hash(),
        UnsignedTree::build(&enrs, &[], 5).signing_hash()
    );
    // Zone file: origin, the root at @, long texts split into 255-byte strings.
    let zone = tree.zone_file("nodes.example.org");
    assert!(zone.contains("$ORIGIN nodes.example.org.\n"));
    assert!(zone.contains(&format!(
        "@                                60 IN TXT \"{}\"",
        tree.root().text()
    )));
    for line in zone.lines().filter(|l| l.contains("\"enr:")) {
        for part in line.split('"').skip(1).step_by(2) {
            assert!(part.len() <= 255);
        }
    }
    // An empty tree is valid: two empty branches.
    let empty = UnsignedTree::build(&[], &[], 1);
    let hash = empty.signing_hash();
    let tree = empty.sign(sign(&hash, &k), k.verifying_key()).unwrap();
    let synced = tree.verify(&u).await.unwrap();
    assert!(synced.enrs.is_empty() && synced.links.is_empty());
}

#[test]
fn tree_urls_round_trip_and_bad_ones_say_why() {
    let u = url(EIP_URL);
    assert_eq!(u.to_string(), EIP_URL);
    assert_eq!(u.domain(), "nodes.example.org");
    // The EIP's text gives "the" key uncompressed: it is the key the example zone is signed
    // with (AKPYQIUQ…), not the one in its example URL.
    assert_eq!(
        hex::encode(url(EXAMPLE_URL).key().to_sec1_point(false).as_bytes()),
        "049f88229042fef9200246f49f94d9b77c4e954721442714e85850cb6d9e5daf2d880ea0e53cb3ac1a75f9923c2726a4f941f7d326781baa6380754a360de5c2b6"
    );
    for (bad, why) in [
        ("https://x@y", "does not start with enrtree://"),
        ("enrtree://AM5FCQ", "no `@<domain>`"),
        (
            "enrtree://AM5FCQLW@nodes.example.org",
            "not a compressed secp256k1 key",
        ),
        ("enrtree://!!@nodes.example.org", "not base32"),
        (
            "enrtree://AM5FCQLWIZX2QFPNJAP7VUERCCRNGRHWZG3YYHIUV7BVDQ5FDPRT2@bad domain",
            "not a domain name",
        ),
    ] {
        let err = bad.parse::<TreeUrl>().unwrap_err().to_string();
        assert!(err.contains(why), "{bad}: {err}");
    }
}

/// go-ethereum's `dnsdisc` client test: a tree its `MakeTree`/`Sign` produced (seq 3, the same
/// test key as [`EXAMPLE_URL`]) whose enr root is a broken ENR. Refused, naming the record.
const GETH_BAD_NODE: [(&str, &str); 3] = [
    ("n", "enrtree-root:v1 e=INDMVBZEEQ4ESVYAKGIYU74EAA l=C7HRFPF3BLGF3YR4DY5KX3SMBE seq=3 sig=Vl3AmunLur0JZ3sIyJPSH6A3Vvdp4F40jWQeCmkIhmcgwE4VC5U9wpK8C_uL_CMY29fd6FAhspRvq2z_VysTLAA"),
    ("C7HRFPF3BLGF3YR4DY5KX3SMBE.n", "enrtree://AM5FCQLWIZX2QFPNJAP7VUERCCRNGRHWZG3YYHIUV7BVDQ5FDPRT2@morenodes.example.org"),
    ("INDMVBZEEQ4ESVYAKGIYU74EAA.n", "enr:-----"),
];

/// js-waku's `@waku/discovery` test data: a root signed by a production Waku tree's key (seq
/// 1839), the same root with the signature's first byte changed, one without its link root,
/// and Waku ENRs carrying the `multiaddrs` field.
const JS_WAKU_URL: &str =
    "enrtree://AKA3AM6LPBYEUDMVNU3BSVQJ5AD45Y7YPOHJLEF6W26QOE4VTUDPE@nodes.example.org";
const JS_WAKU_ROOT: &str = "enrtree-root:v1 e=JORXBYVVM7AEKETX5DGXW44EAY l=FDXN3SN67NA5DKA4J2GOK7BVQI seq=1839 sig=Ma7yIqW2gj59dY8F6plfL7dfotaBPz285mu_XZK1e5VRzNrnf0pCAfacu4fBLuE7jMX-nDbqCM1sFiWWLq8WogE";
const JS_WAKU_ROOT_BAD_SIG: &str = "enrtree-root:v1 e=JORXBYVVM7AEKETX5DGXW44EAY l=FDXN3SN67NA5DKA4J2GOK7BVQI seq=1839 sig=Aa7yIqW2gj59dY8F6plfL7dfotaBPz285mu_XZK1e5VRzNrnf0pCAfacu4fBLuE7jMX-nDbqCM1sFiWWLq8WogE";
const JS_WAKU_ROOT_MALFORMED: &str = "enrtree-root:v1 e=FDXN3SN67NA5DKA4J2GOK7BVQI seq=1839 sig=Ma7yIqW2gj59dY8F6plfL7dfotaBPz285mu_XZK1e5VRzNrnf0pCAfacu4fBLuE7jMX-nDbqCM1sFiWWLq8WogE";
const JS_WAKU_ENR_RELAY: &str = "enr:-KO4QANhx2beNpDw8LfX8hdyoNocMD5WCBY28EjKA50DyJv9QDxE5IWafE_O_nhbA31gmasx3WjpH517do3GqmzQvmaAgmlkgnY0gmlwhMCosvuKbXVsdGlhZGRyc4wACgTAqLL7Bh9C3QOJc2VjcDI1NmsxoQOmp7OJvC-UX4KeIJDW1CQQvhSA33OWgRrKccOcTG7dYYN0Y3CCH0KFd2FrdTIB";

#[tokio::test]
async fn records_made_by_go_ethereum_and_js_waku_verify_or_are_refused_with_the_reason() {
    let bad_node: BTreeMap<String, String> = GETH_BAD_NODE
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    // Every record sits at the hash of its text, as go-ethereum computed it.
    for (name, text) in GETH_BAD_NODE.iter().skip(1) {
        assert_eq!(format!("{}.n", subdomain(text)), *name);
    }
    let geth_url = url(&EXAMPLE_URL.replace("nodes.example.org", "n"));
    let err = sync(&bad_node, &geth_url, Limits::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TreeError::BadRecord { name, .. } if name == "INDMVBZEEQ4ESVYAKGIYU74EAA.n"),
        "{err}"
    );
    assert_eq!(err.reason(), "bad_record");
    // Its root alone verifies: the refusal is the leaf's, not the signature's.
    let root = Root::parse(GETH_BAD_NODE[0].1).unwrap();
    assert_eq!(root.seq, 3);
    assert!(root.verify(geth_url.key()));

    let js = url(JS_WAKU_URL);
    let root = Root::parse(JS_WAKU_ROOT).unwrap();
    assert_eq!(root.seq, 1839);
    assert_eq!(root.text(), JS_WAKU_ROOT);
    assert!(root.verify(js.key()), "js-waku's root verifies");
    assert!(
        !root.verify(url(EXAMPLE_URL).key()),
        "not against another key"
    );
    let tampered = Root::parse(JS_WAKU_ROOT_BAD_SIG)
        .map(|r| r.verify(js.key()))
        .unwrap_or(false);
    assert!(!tampered, "a changed signature does not verify");
    let err = Root::parse(JS_WAKU_ROOT_MALFORMED).unwrap_err();
    assert!(err.to_string().contains("enrtree-root:v1"), "{err}");

    // Its Waku ENR (ip 192.168.178.251, tcp 8002, plus `multiaddrs`) parses as a tree leaf.
    let Entry::Enr(enr) = Entry::parse(JS_WAKU_ENR_RELAY).unwrap() else {
        panic!("an enr: leaf");
    };
    assert_eq!(enr.ip4(), Some(std::net::Ipv4Addr::new(192, 168, 178, 251)));
    assert_eq!(enr.tcp4(), Some(8002));
}
