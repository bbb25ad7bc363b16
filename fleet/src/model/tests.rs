use super::*;

const MINIMAL: &str = r#"
[fleet]
name = "t"
cluster_id = 16
shards = [32]
node_version = "0.1.0"
rendezvous_points = ["rendezvous-01.dc1.t"]

[[hosts]]
name = "boot-01.dc1.t"
address = "10.0.0.1"
dc = "dc1"
roles = ["boot"]

[[hosts]]
name = "rendezvous-01.dc1.t"
address = "10.0.0.2"
dc = "dc1"
roles = ["rendezvous", "relay"]
"#;

fn parse(text: &str) -> Result<Fleet, FleetError> {
    Fleet::parse(text, Path::new("t.toml"))
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn minimal_fleet_is_valid() {
    let f = parse(MINIMAL).unwrap();
    assert_eq!(f.hosts.len(), 2);
    assert_eq!(f.ports_of(&f.hosts[0]), Ports::default());
}

#[test]
fn shipped_fleets_are_valid() {
    for name in ["staging", "beta"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("{name}.toml"));
        let fleet = Fleet::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(fleet.name(), name);
    }
}

#[test]
fn unknown_keys_are_errors_with_a_line() {
    let e = err(&MINIMAL.replace("node_version", "node_versoin"));
    assert!(e.contains("node_versoin") && e.contains("line"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    let e = err(&format!("{MINIMAL}\n[node]\nrelay.clusterid = 3\n"));
    assert!(e.contains("relay.clusterid"), "{e}");
}

#[test]
fn duplicate_ports_on_a_host_are_errors() {
    let text = MINIMAL.replace(
        "roles = [\"boot\"]",
        "roles = [\"boot\"]\nports = { ws = 30303 }",
    );
    let e = err(&text);
    assert!(e.contains("port 30303 for both tcp and ws"), "{e}");
}

#[test]
fn store_without_relay_is_an_error() {
    let text = format!(
        "{MINIMAL}\n[[hosts]]\nname = \"store-01.dc1.t\"\naddress = \"10.0.0.3\"\ndc = \"dc1\"\nroles = [\"store\"]\n"
    );
    let e = err(&text);
    assert!(e.contains("store role without relay"), "{e}");
}

#[test]
fn a_fleet_needs_a_rendezvous_point() {
    let e = err(&MINIMAL.replace(
        "rendezvous_points = [\"rendezvous-01.dc1.t\"]",
        "rendezvous_points = []",
    ));
    assert!(e.contains("no rendezvous point"), "{e}");
    let e = err(&MINIMAL.replace(
        "rendezvous_points = [\"rendezvous-01.dc1.t\"]",
        "rendezvous_points = [\"boot-01.dc1.t\"]",
    ));
    assert!(e.contains("does not have the rendezvous role"), "{e}");
}

#[test]
fn host_names_follow_the_convention() {
    let e = err(&MINIMAL.replace("name = \"boot-01.dc1.t\"", "name = \"boot1.dc1.t\""));
    assert!(e.contains("<role>-NN"), "{e}");
    let e = err(&MINIMAL.replace("name = \"boot-01.dc1.t\"", "name = \"store-01.dc1.t\""));
    assert!(e.contains("named for the store role"), "{e}");
    let e = err(&MINIMAL.replace("name = \"boot-01.dc1.t\"", "name = \"boot-01.dc2.t\""));
    assert!(e.contains("<role>-NN"), "{e}");
}

#[test]
fn computed_keys_cannot_be_overridden() {
    let e = err(&format!("{MINIMAL}\n[node]\nnetwork.tcp_port = 1\n"));
    assert!(
        e.contains("network.tcp_port") && e.contains("[ports]"),
        "{e}"
    );
}

#[test]
fn same_address_and_port_on_two_hosts_is_an_error() {
    let e = err(&MINIMAL.replace("10.0.0.2", "10.0.0.1"));
    assert!(e.contains("both use 10.0.0.1:"), "{e}");
}
