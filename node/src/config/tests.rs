use std::io::Write;

use super::*;

fn sources_with_file(text: &str) -> (tempfile::NamedTempFile, Sources) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    let sources = Sources {
        file: Some(file.path().to_owned()),
        ..Default::default()
    };
    (file, sources)
}

#[test]
fn defaults_are_the_documented_ones() {
    let c = Config::load(&Sources::default()).unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.network.tcp_port, 60000);
    assert_eq!(c.network.ws_port, 8000);
    assert_eq!(c.http.address.to_string(), "127.0.0.1:8008");
    // nwaku's defaults: --rest=true, --rest-address=127.0.0.1, --rest-port=8645.
    assert!(c.rest.enabled);
    assert_eq!(c.rest.address.to_string(), "127.0.0.1:8645");
    assert!(!c.rest.admin);
    assert_eq!(c.rest.relay_cache_capacity, 50);
    assert_eq!(c.relay.cluster_id, 1);
    assert_eq!(c.relay.shards, (0..8).collect::<Vec<u16>>());
    assert_eq!(c.relay.max_message_size, ByteSize::kib(150));
    assert_eq!(c.node.data_dir, PathBuf::from("./roost-data"));
}

#[test]
fn example_file_parses_and_documents_every_default_key() {
    let example = Config::from_toml_str(EXAMPLE_TOML).unwrap();
    assert_eq!(example.network.tcp_port, 60000);
    let example_keys = {
        let table: toml::Table = toml::from_str(EXAMPLE_TOML).unwrap();
        let mut keys = Vec::new();
        fn walk(prefix: &str, t: &toml::Table, out: &mut Vec<String>) {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match v {
                    toml::Value::Table(inner) => walk(&key, inner, out),
                    _ => out.push(key),
                }
            }
        }
        walk("", &table, &mut keys);
        keys
    };
    for key in Schema::get().keys.keys() {
        assert!(
            example_keys.contains(key),
            "roost.example.toml does not document `{key}`"
        );
    }
}

#[test]
fn env_vars_and_flags_are_unique_per_key() {
    let keys: Vec<&String> = Schema::get().keys.keys().collect();
    let envs: std::collections::HashSet<String> = keys.iter().map(|k| env_var_for(k)).collect();
    let flags: std::collections::HashSet<String> = keys.iter().map(|k| flag_for(k)).collect();
    assert_eq!(envs.len(), keys.len());
    assert_eq!(flags.len(), keys.len());
}

#[test]
fn precedence_is_defaults_file_env_flag() {
    let (_f, mut sources) =
        sources_with_file("[network]\ntcp_port = 1000\nws_port = 1001\n[relay]\ncluster_id = 16\n");
    sources.env = vec![
        ("ROOST_NETWORK_WS_PORT".into(), "2001".into()),
        ("ROOST_RELAY_CLUSTER_ID".into(), "17".into()),
        ("PATH".into(), "/bin".into()),
    ];
    sources.flags = vec![("relay.cluster_id".into(), vec!["18".into()])];
    let c = Config::load(&sources).unwrap();
    assert_eq!(c.network.tcp_port, 1000, "file beats default");
    assert_eq!(c.network.ws_port, 2001, "env beats file");
    assert_eq!(c.relay.cluster_id, 18, "flag beats env");
}

#[test]
fn lists_come_from_commas_repeats_or_toml_arrays() {
    let sources = Sources {
        env: vec![("ROOST_RELAY_SHARDS".into(), "1, 2,3".into())],
        flags: vec![(
            "network.peers".into(),
            vec!["/ip4/127.0.0.1/tcp/1".into(), "/ip4/127.0.0.1/tcp/2".into()],
        )],
        ..Default::default()
    };
    let c = Config::load(&sources).unwrap();
    assert_eq!(c.relay.shards, vec![1, 2, 3]);
    assert_eq!(c.network.peers.len(), 2);
    let sources = Sources {
        env: vec![("ROOST_RELAY_SHARDS".into(), "[4, 5]".into())],
        ..Default::default()
    };
    assert_eq!(Config::load(&sources).unwrap().relay.shards, vec![4, 5]);
}

#[test]
fn unknown_keys_are_errors_naming_the_key() {
    let (_f, sources) = sources_with_file("[relay]\nclusterid = 3\n");
    let err = Config::load(&sources).unwrap_err().to_string();
    assert!(err.contains("`relay.clusterid`"), "{err}");
    let (_f, sources) = sources_with_file("[relai]\ncluster_id = 3\n");
    let err = Config::load(&sources).unwrap_err().to_string();
    assert!(err.contains("`relai`"), "{err}");
    let sources = Sources {
        env: vec![("ROOST_RELAY_CLUSTERID".into(), "3".into())],
        ..Default::default()
    };
    let err = Config::load(&sources).unwrap_err().to_string();
    assert!(err.contains("ROOST_RELAY_CLUSTERID"), "{err}");
}

#[test]
fn bad_values_name_the_key_and_origin_on_one_line() {
    let (_f, sources) = sources_with_file("[network]\ntcp_port = \"sixty\"\n");
    let err = Config::load(&sources).unwrap_err().to_string();
    assert!(err.contains("`network.tcp_port`"), "{err}");
    assert!(!err.contains('\n'), "{err}");

    let (_f, sources) = sources_with_file("[network]\npeers = [\"not-a-multiaddr\"]\n");
    let err = Config::load(&sources).unwrap_err().to_string();
    assert!(err.contains("`network.peers`"), "{err}");
    assert!(!err.contains('\n'), "{err}");

    let sources = Sources {
        env: vec![("ROOST_NETWORK_TCP_PORT".into(), "70000".into())],
        ..Default::default()
    };
    let err = Config::load(&sources).unwrap_err().to_string();
    assert!(err.contains("ROOST_NETWORK_TCP_PORT"), "{err}");

    let sources = Sources {
        flags: vec![("relay.max_message_size".into(), vec!["lots".into()])],
        ..Default::default()
    };
    let err = Config::load(&sources).unwrap_err().to_string();
    assert!(err.contains("--relay-max-message-size"), "{err}");
}

#[test]
fn syntax_errors_give_the_line() {
    let (_f, sources) = sources_with_file("[network]\ntcp_port = = 3\n");
    let err = Config::load(&sources).unwrap_err().to_string();
    assert!(err.contains("line 2"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn cross_field_rules_are_checked() {
    let sources = Sources {
        flags: vec![
            ("network.tcp_port".into(), vec!["9000".into()]),
            ("network.ws_port".into(), vec!["9000".into()]),
        ],
        ..Default::default()
    };
    assert!(Config::load(&sources)
        .unwrap_err()
        .to_string()
        .contains("ws_port"));
    let sources = Sources {
        flags: vec![("relay.shards".into(), vec!["[]".into()])],
        ..Default::default()
    };
    assert!(Config::load(&sources).is_err());
}

#[test]
fn dump_round_trips() {
    let mut c = Config::default();
    c.network.peers = vec!["/ip4/127.0.0.1/tcp/5".parse().unwrap()];
    c.relay.max_message_size = ByteSize::mib(1);
    let again = Config::from_toml_str(&c.to_toml()).unwrap();
    assert_eq!(again, c);
}

#[test]
fn rest_keys_come_from_env_and_flags() {
    let sources = Sources {
        env: vec![
            ("ROOST_REST_ADDRESS".into(), "127.0.0.1:0".into()),
            (
                "ROOST_REST_ALLOW_ORIGIN".into(),
                "http://a.example,http://*.b".into(),
            ),
        ],
        flags: vec![
            ("rest.admin".into(), vec!["true".into()]),
            ("rest.relay_cache_capacity".into(), vec!["7".into()]),
        ],
        ..Default::default()
    };
    let c = Config::load(&sources).unwrap();
    assert_eq!(c.rest.address.port(), 0);
    assert_eq!(c.rest.allow_origin, vec!["http://a.example", "http://*.b"]);
    assert!(c.rest.admin);
    assert_eq!(c.rest.relay_cache_capacity, 7);
    let sources = Sources {
        env: vec![("ROOST_REST_RELAY_CACHE_CAPACITY".into(), "0".into())],
        ..Default::default()
    };
    assert!(Config::load(&sources).is_err());
}

#[test]
fn nwaku_rest_flags_parse() {
    use clap::{Args, FromArgMatches};
    let command = ConfigFlags::augment_args(clap::Command::new("roost"));
    let matches = command
        .try_get_matches_from([
            "roost",
            "--rest=false",
            "--rest-admin=true",
            "--rest-allow-origin",
            "http://a.example",
            "--rest-relay-cache-capacity=9",
            "--filternode",
            "/ip4/10.0.0.2/tcp/60000/p2p/16Uiu2HAmPLe7Mzm8TsYUubgCAW1aJoeFScxrLj8ppHFivPo97bUZ",
            "--storenode=/ip4/10.0.0.3/tcp/60000/p2p/16Uiu2HAmPLe7Mzm8TsYUubgCAW1aJoeFScxrLj8ppHFivPo97bUZ",
            "--lightpushnode",
            "/ip4/10.0.0.4/tcp/60000/p2p/16Uiu2HAmPLe7Mzm8TsYUubgCAW1aJoeFScxrLj8ppHFivPo97bUZ",
        ])
        .unwrap();
    let flags = ConfigFlags::from_arg_matches(&matches).unwrap();
    let c = Config::load(&Sources {
        flags: flags.values,
        ..Default::default()
    })
    .unwrap();
    assert!(!c.rest.enabled);
    assert!(c.rest.admin);
    assert_eq!(c.rest.allow_origin, vec!["http://a.example"]);
    assert_eq!(c.rest.relay_cache_capacity, 9);
    assert_eq!(
        c.rest.filter_node.map(|a| a.to_string()).as_deref(),
        Some("/ip4/10.0.0.2/tcp/60000/p2p/16Uiu2HAmPLe7Mzm8TsYUubgCAW1aJoeFScxrLj8ppHFivPo97bUZ")
    );
    assert_eq!(
        c.rest.store_node.map(|a| a.to_string()).as_deref(),
        Some("/ip4/10.0.0.3/tcp/60000/p2p/16Uiu2HAmPLe7Mzm8TsYUubgCAW1aJoeFScxrLj8ppHFivPo97bUZ")
    );
    assert_eq!(
        c.rest.lightpush_node.map(|a| a.to_string()).as_deref(),
        Some("/ip4/10.0.0.4/tcp/60000/p2p/16Uiu2HAmPLe7Mzm8TsYUubgCAW1aJoeFScxrLj8ppHFivPo97bUZ")
    );
}

#[test]
fn rest_filter_node_needs_a_peer_id() {
    for (var, key) in [
        ("ROOST_REST_FILTER_NODE", "rest.filter_node"),
        ("ROOST_REST_STORE_NODE", "rest.store_node"),
        ("ROOST_REST_LIGHTPUSH_NODE", "rest.lightpush_node"),
    ] {
        let sources = Sources {
            env: vec![(var.into(), "/ip4/10.0.0.2/tcp/60000".into())],
            ..Default::default()
        };
        let err = Config::load(&sources).unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    }
}

#[test]
fn a_store_without_relay_needs_store_sync_to_fill_it() {
    let mut c = Config::default();
    c.relay.enabled = false;
    c.lightpush.enabled = false;
    c.filter.enabled = false;
    c.store_sync.enabled = false;
    let refused = c.validate().unwrap_err().to_string();
    assert!(
        refused.contains("store.enabled needs something to fill"),
        "{refused}"
    );
    assert!(!c.serves_store());
    c.store_sync.enabled = true;
    c.validate().expect("a replica filled by store sync alone");
    assert!(c.serves_store() && c.runs_store_sync());
    c.lightpush.enabled = true;
    let refused = c.validate().unwrap_err().to_string();
    assert!(
        refused.contains("lightpush.enabled needs the relay"),
        "{refused}"
    );
}
