use super::*;
use std::path::Path;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Path::new("test.toml"))
}

#[test]
fn documented_example_parses_and_validates() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/tspi.toml"));
    let c = Config::load(path).unwrap();
    c.validate().unwrap();
    assert_eq!(c.ingest.udp, ["0.0.0.0:5000".parse().unwrap()]);
    // Every value the example states equals the default, except the
    // examples it marks as such (the listen address).
    let mut d = Config::default();
    d.ingest.udp = c.ingest.udp.clone();
    assert_eq!(c, d);
}

#[test]
fn unknown_key_names_key_and_line() {
    let e = parse("[ingest]\nudp = [\"127.0.0.1:5000\"]\nworkerz = 2\n").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("line 3"), "{msg}");
    assert!(msg.contains("workerz"), "{msg}");
    assert!(msg.starts_with("test.toml: "), "{msg}");
    let e = parse("[ingestt]\n").unwrap_err().to_string();
    assert!(e.contains("ingestt") && e.contains("line 1"), "{e}");
}

#[test]
fn bad_value_names_line() {
    let e = parse("[ingest]\n\nbackend = \"dpdk\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 3") && e.contains("dpdk"), "{e}");
    let e = parse("[ingest]\nudp = [\"not an address\"]\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2"), "{e}");
}

#[test]
fn validation_lists_every_problem() {
    let mut c = Config::default();
    c.ingest.workers = 2;
    c.ingest.cores = vec![1];
    c.stream.duplicate_window_s = 5;
    c.nats.subject_prefix = "tspi.>".into();
    let msg = c.validate().unwrap_err().to_string();
    for want in [
        "ingest.udp",
        "ingest.cores",
        "duplicate_window_s",
        "subject_prefix",
    ] {
        assert!(msg.contains(want), "{want} missing in: {msg}");
    }
}

#[test]
fn receive_cores_default_to_the_first_ones() {
    let mut c = Config::default();
    c.ingest.workers = 3;
    assert_eq!(c.receive_cores(), [0, 1, 2]);
    c.ingest.cores = vec![4, 6, 8];
    assert_eq!(c.receive_cores(), [4, 6, 8]);
}
