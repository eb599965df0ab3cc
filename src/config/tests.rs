use super::*;
use proptest::prelude::*;
use std::path::Path;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Path::new("test.toml"))
}

/// A machine where every core id exists, so only the values decide.
fn any_cores() -> Machine {
    Machine {
        cores_allowed: (0..limits::CORE_ID_END).collect(),
    }
}

fn two_cores() -> Machine {
    Machine {
        cores_allowed: vec![0, 1],
    }
}

fn problems(c: &Config) -> Vec<String> {
    c.problems_for(&Role::ALL, &any_cores())
}

fn udp(c: &mut Config) {
    c.ingest.udp = vec!["127.0.0.1:5000".parse().unwrap()];
}

#[test]
fn documented_example_parses_and_validates() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/tspi.toml"));
    let c = Config::load(path).unwrap();
    c.validate().unwrap();
    c.validate_for(&Role::ALL, &two_cores()).unwrap();
    assert_eq!(
        c.warnings(),
        &[] as &[String],
        "the example uses no old key"
    );
    assert_eq!(c.roles_enabled(), [Role::Ingest]);
    assert_eq!(c.ingest.udp, ["0.0.0.0:5000".parse().unwrap()]);
    // Every value the example states equals the default, except the
    // examples it marks as such (the listen address).
    let mut d = Config::default();
    d.ingest.udp = c.ingest.udp.clone();
    d.file = c.file.clone();
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
fn source_allow_lists_parse_and_are_checked() {
    let c = parse(
        "[ingest]\nudp = [\"0.0.0.0:5000\", \"[::]:5000\"]\n\
         allow_sources = [\"10.1.0.0/16\", \"192.168.5.7\", \"fd00::/8\"]\n\
         [[ingest.sources]]\nlisten = \"0.0.0.0:5000\"\nallow = [\"10.1.2.0/24\"]\n",
    )
    .unwrap();
    assert!(problems(&c).is_empty(), "{:?}", problems(&c));
    let rc = c.ingest.receive_config();
    let shown = |addr: &str| -> Vec<String> {
        rc.sources_for(addr.parse().unwrap())
            .iter()
            .map(|n| n.to_string())
            .collect()
    };
    assert_eq!(shown("0.0.0.0:5000"), ["10.1.2.0/24"], "its own list");
    assert_eq!(
        shown("[::]:5000"),
        ["10.1.0.0/16", "192.168.5.7/32", "fd00::/8"],
        "allow_sources"
    );
    // Old files (no lists) allow every sender.
    let old = parse("[ingest]\nudp = [\"0.0.0.0:5000\"]\n").unwrap();
    assert!(
        old.ingest
            .receive_config()
            .sources_for("0.0.0.0:5000".parse().unwrap())
            .is_empty()
    );

    // A bad network is a parse error naming the line, the key and the value.
    for (text, line, value) in [
        (
            "[ingest]\nudp = [\"0.0.0.0:5000\"]\nallow_sources = [\"10.1.0.0/33\"]\n",
            3,
            "10.1.0.0/33",
        ),
        (
            "[ingest]\nallow_sources = [\"10.1.2.3/16\"]\n",
            2,
            "10.1.2.3/16",
        ),
        ("[ingest]\nallow_sources = [\"radar-1\"]\n", 2, "radar-1"),
        (
            "[ingest]\n[[ingest.sources]]\nlisten = \"0.0.0.0:5000\"\nallow = [\"fd00::/200\"]\n",
            4,
            "fd00::/200",
        ),
    ] {
        let e = parse(text).unwrap_err().to_string();
        assert!(
            e.contains(&format!("line {line}")) && e.contains(&format!("{value:?}")),
            "{e}"
        );
        assert!(e.contains("allow"), "names the key: {e}");
    }
    assert!(
        parse("[ingest]\nallow_sources = [\"10.1.2.3/16\"]\n")
            .unwrap_err()
            .to_string()
            .contains("the network is 10.1.0.0/16")
    );

    // An allow-list for an address not listened on, twice, or empty.
    let p = |text: &str| problems(&parse(text).unwrap()).join("; ");
    let e = p("[ingest]\nudp = [\"0.0.0.0:5000\"]\n\
               [[ingest.sources]]\nlisten = \"0.0.0.0:6000\"\nallow = [\"10.0.0.0/8\"]\n");
    assert!(
        e.contains("ingest.sources")
            && e.contains("0.0.0.0:6000")
            && e.contains("not a listen address"),
        "{e}"
    );
    let e = p("[ingest]\nudp = [\"0.0.0.0:5000\"]\n\
               [[ingest.sources]]\nlisten = \"0.0.0.0:5000\"\nallow = [\"10.0.0.0/8\"]\n\
               [[ingest.sources]]\nlisten = \"0.0.0.0:5000\"\nallow = [\"10.0.0.1\"]\n");
    assert!(
        e.contains("ingest.sources") && e.contains("two allow-lists"),
        "{e}"
    );
    let e = p("[ingest]\nudp = [\"0.0.0.0:5000\"]\n\
               [[ingest.sources]]\nlisten = \"0.0.0.0:5000\"\nallow = []\n");
    assert!(e.contains("ingest.sources") && e.contains("empty"), "{e}");
    let e = parse("[ingest]\n[[ingest.sources]]\nlisten = \"0.0.0.0:5000\"\nallowed = []\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("allowed") && e.contains("line 4"), "{e}");
    let mut c = Config::default();
    udp(&mut c);
    c.ingest.allow_sources = vec!["10.0.0.1".parse().unwrap(); crate::receive::SOURCE_NETS_MAX + 1];
    assert!(
        problems(&c).join(";").contains("ingest.allow_sources"),
        "{:?}",
        problems(&c)
    );
}

#[test]
fn validation_lists_every_problem() {
    let mut c = Config::default();
    c.ingest.workers = 2;
    c.ingest.cores = vec![1];
    c.stream.duplicate_window_s = 5;
    c.nats.subject_prefix = "tspi.>".into();
    let msg = c
        .validate_for(&[Role::Ingest], &any_cores())
        .unwrap_err()
        .to_string();
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

// ------------------------------------------------------------ roles

#[test]
fn an_archive_only_file_validates_for_the_archive_role() {
    let text = "[nats]\nservers = [\"nats://db:4222\"]\n[stream]\ncreate = false\n\
                [archive]\npostgres = \"host=/run/postgresql dbname=tspi\"\n";
    let c = parse(text).unwrap();
    assert_eq!(c.roles_enabled(), [Role::Archive]);
    c.validate_for(&c.roles_enabled(), &two_cores()).unwrap();
    c.validate().unwrap();
    // The ingest role needs what the file does not have.
    let e = c
        .validate_for(&[Role::Ingest], &two_cores())
        .unwrap_err()
        .to_string();
    assert!(e.contains("ingest.udp"), "{e}");
}

#[test]
fn a_file_without_role_sections_checks_the_common_ones() {
    let c = parse("[nats]\nservers = []\n").unwrap();
    assert!(c.roles_enabled().is_empty());
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("nats.servers"), "{e}");
    assert!(!e.contains("ingest.udp"), "{e}");
}

// ------------------------------------------------------ the machine

#[test]
fn receive_cores_must_exist_on_this_machine() {
    let mut c = Config::default();
    udp(&mut c);
    c.ingest.workers = 2;
    c.ingest.cores = vec![0, 999];
    let e = c
        .validate_for(&[Role::Ingest], &two_cores())
        .unwrap_err()
        .to_string();
    assert!(e.contains("ingest.cores") && e.contains("999"), "{e}");
    // Not an ingest box: its cores are none of this role's business.
    c.validate_for(&[Role::Archive], &two_cores()).unwrap();

    // More workers than cores, with cores left to the default 0..workers.
    c.ingest.cores.clear();
    c.ingest.workers = 4;
    let e = c
        .validate_for(&[Role::Ingest], &two_cores())
        .unwrap_err()
        .to_string();
    assert!(e.contains("ingest.workers = 4"), "{e}");
    c.ingest.workers = 2;
    c.validate_for(&[Role::Ingest], &two_cores()).unwrap();

    // Beyond the affinity mask's size: a bound, whatever the machine.
    c.ingest.cores = vec![0, limits::CORE_ID_END];
    let e = c
        .validate_for(&[Role::Ingest], &any_cores())
        .unwrap_err()
        .to_string();
    assert!(e.contains("ingest.cores"), "{e}");

    c.ingest.cores = vec![1, 1];
    let e = c
        .validate_for(&[Role::Ingest], &two_cores())
        .unwrap_err()
        .to_string();
    assert!(e.contains("core 1 twice"), "{e}");
}

#[test]
fn pacing_cores_must_exist_for_the_replay_roles() {
    let mut c = Config::default();
    c.channels.pacing_cores = vec![1, 7];
    for role in [Role::Channels, Role::Replay] {
        let e = c
            .validate_for(&[role], &two_cores())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("channels.pacing_cores") && e.contains('7'),
            "{e}"
        );
    }
    c.validate_for(&[Role::Archive], &two_cores()).unwrap();
}

#[test]
fn the_current_machine_has_a_core() {
    assert!(!Machine::current().cores_allowed.is_empty());
}

// ----------------------------------------------- rules between keys

#[test]
fn the_three_wraps_of_the_issue_are_refused() {
    // 18446744134 s is 60 s plus 2^64 ns: it reached the server as 60 s.
    let mut c = Config::default();
    c.stream.age_max_s = 18_446_744_134;
    let e = problems(&c).join("; ");
    assert!(e.contains("stream.age_max_s = 18446744134"), "{e}");

    let mut c = Config::default();
    c.stream.duplicate_window_s = 1_000_000_000_000;
    let e = problems(&c).join("; ");
    assert!(
        e.contains("stream.duplicate_window_s = 1000000000000"),
        "{e}"
    );

    // ack_timeout_ms + retry_backoff_max_ms wraps to 0 ms.
    let mut c = Config::default();
    c.publish.ack_timeout_ms = 18_446_744_073_709_549_616;
    assert_eq!(
        c.publish
            .ack_timeout_ms
            .wrapping_add(c.publish.retry_backoff_max_ms),
        0
    );
    let e = problems(&c).join("; ");
    assert!(
        e.contains("publish.ack_timeout_ms = 18446744073709549616"),
        "{e}"
    );
}

#[test]
fn age_max_shorter_than_the_duplicate_window_is_refused() {
    let mut c = Config::default();
    udp(&mut c);
    c.stream.age_max_s = 1;
    let e = problems(&c).join("; ");
    assert!(e.contains("stream.age_max_s = 1 is shorter"), "{e}");
    c.stream.age_max_s = c.stream.duplicate_window_s;
    assert_eq!(problems(&c), Vec::<String>::new());
    c.stream.age_max_s = 0;
    assert_eq!(problems(&c), Vec::<String>::new());
}

#[test]
fn the_duplicate_window_must_cover_the_retry_horizon() {
    let mut c = Config::default();
    udp(&mut c);
    // 5000 + 2000 ms: 7 s is not covered, 8 s is.
    c.stream.duplicate_window_s = 7;
    assert!(problems(&c).join(";").contains("retry horizon of 7000 ms"));
    c.stream.duplicate_window_s = 8;
    assert_eq!(problems(&c), Vec::<String>::new());
}

#[test]
fn the_replay_stream_window_fits_its_retention() {
    let mut c = Config::default();
    c.channels.replay_age_max_h = 1;
    c.stream.duplicate_window_s = 3_601;
    let e = c
        .validate_for(&[Role::Channels], &any_cores())
        .unwrap_err()
        .to_string();
    assert!(e.contains("channels.replay_age_max_h"), "{e}");
    c.validate_for(&[Role::Archive], &any_cores()).unwrap();
    c.stream.duplicate_window_s = 3_600;
    c.validate_for(&[Role::Channels], &any_cores()).unwrap();
}

#[test]
fn the_two_receive_validators_agree() {
    // The file's batch_len bound is the receive threads' (once 1024 here
    // and 4096 there).
    let mut c = Config::default();
    udp(&mut c);
    c.ingest.batch_len = crate::receive::BATCH_LEN_MAX;
    assert_eq!(problems(&c), Vec::<String>::new());
    c.ingest.receive_config().validate().unwrap();
    c.ingest.batch_len += 1;
    assert!(problems(&c).join(";").contains("ingest.batch_len"));
    assert!(c.ingest.receive_config().validate().is_err());
    c.ingest.batch_len = 64;
    c.ingest.workers = crate::receive::WORKERS_MAX;
    assert_eq!(problems(&c), Vec::<String>::new());
    c.ingest.workers += 1;
    assert!(problems(&c).join(";").contains("ingest.workers"));
}

// ------------------------------------------------------ renamed keys

#[test]
fn old_spellings_still_work_with_a_warning_naming_the_new_one() {
    for (section, old, new) in renamed::RENAMED {
        let value = match (section, old) {
            ("archive", "ops_durable") => "\"ops-consumer\"".to_owned(),
            ("stream", _) => "40".to_owned(),
            ("publish", "fast_outstanding_acks") => "3".to_owned(),
            _ => "7".to_owned(),
        };
        let with_old = parse(&format!("[{section}]\n{old} = {value}\n")).unwrap();
        let with_new = parse(&format!("[{section}]\n{new} = {value}\n")).unwrap();
        assert_ne!(with_new, Config::default(), "{section}.{new} is read");
        let strip = |mut c: Config| {
            c.file = FileInfo::default();
            c
        };
        assert_eq!(strip(with_old.clone()), strip(with_new.clone()), "{old}");
        let w = with_old.warnings().join("\n");
        assert!(
            w.contains(&format!("{section}.{new}")) && w.contains(old) && w.contains("test.toml"),
            "{w}"
        );
        assert!(with_new.warnings().is_empty());
        // Both spellings at once: refused, not a silent choice.
        let both = parse(&format!("[{section}]\n{old} = {value}\n{new} = {value}\n"));
        assert!(both.is_err(), "{section}: {old} and {new} together");
    }
}

// --------------------------------------------------------- bounds

type Set = fn(&mut Config, u64) -> Option<()>;

/// One number of the file: its key, how to set it (None: the value does
/// not fit the field's type, which the file parser refuses), its bound,
/// and, for a duration, one unit in nanoseconds with the largest
/// nanosecond count its consumer holds.
#[derive(Clone, Copy)]
struct Key {
    name: &'static str,
    set: Set,
    bound: limits::Bound,
    unit: Option<(u128, u128)>,
}

macro_rules! key {
    ($section:ident . $field:ident, $bound:ident) => {
        key!($section.$field, $bound, None)
    };
    ($section:ident . $field:ident, $bound:ident, $unit:expr) => {
        Key {
            name: concat!(stringify!($section), ".", stringify!($field)),
            set: |c, v| {
                c.$section.$field = v.try_into().ok()?;
                Some(())
            },
            bound: limits::$bound,
            unit: $unit,
        }
    };
}

/// Every number of the file.
fn numeric_keys() -> Vec<Key> {
    const I32: u128 = i32::MAX as u128;
    const I64: u128 = i64::MAX as u128;
    const U64: u128 = u64::MAX as u128;
    const S: u128 = 1_000_000_000;
    const MS: u128 = 1_000_000;
    const US: u128 = 1_000;
    vec![
        key!(stream.replicas, STREAM_REPLICAS),
        key!(
            stream.duplicate_window_s,
            STREAM_DUPLICATE_WINDOW_S,
            Some((S, I64))
        ),
        key!(stream.age_max_s, STREAM_AGE_MAX_S, Some((S, I64))),
        key!(ingest.workers, INGEST_WORKERS),
        key!(ingest.rcvbuf_bytes, INGEST_RCVBUF_BYTES),
        key!(ingest.batch_len, INGEST_BATCH_LEN),
        key!(ingest.ring_capacity, INGEST_RING_CAPACITY),
        key!(publish.acks_in_flight_max, PUBLISH_ACKS_IN_FLIGHT_MAX),
        key!(publish.batch_len_max, PUBLISH_BATCH_LEN_MAX),
        key!(
            publish.ack_timeout_ms,
            PUBLISH_ACK_TIMEOUT_MS,
            Some((MS, U64))
        ),
        key!(
            publish.retry_backoff_initial_ms,
            PUBLISH_RETRY_BACKOFF_INITIAL_MS,
            Some((MS, U64))
        ),
        key!(
            publish.retry_backoff_max_ms,
            PUBLISH_RETRY_BACKOFF_MAX_MS,
            Some((MS, U64))
        ),
        key!(
            publish.drain_timeout_s,
            PUBLISH_DRAIN_TIMEOUT_S,
            Some((S, U64))
        ),
        key!(publish.fast_flow_max, PUBLISH_FAST_FLOW_MAX),
        key!(
            publish.fast_ack_interval_us,
            PUBLISH_FAST_ACK_INTERVAL_US,
            Some((US, U64))
        ),
        key!(publish.fast_acks_outstanding, PUBLISH_FAST_ACKS_OUTSTANDING),
        key!(publish.fast_batch_len_max, PUBLISH_FAST_BATCH_LEN_MAX),
        key!(
            publish.fast_batch_age_max_ms,
            PUBLISH_FAST_BATCH_AGE_MAX_MS,
            Some((MS, U64))
        ),
        key!(
            publish.fast_commit_idle_ms,
            PUBLISH_FAST_COMMIT_IDLE_MS,
            Some((MS, U64))
        ),
        key!(metrics.interval_s, METRICS_INTERVAL_S, Some((S, U64))),
        key!(spool.max_bytes, SPOOL_MAX_BYTES),
        key!(spool.segment_bytes, SPOOL_SEGMENT_BYTES),
        key!(spool.drain_rate_per_s, SPOOL_DRAIN_RATE_PER_S),
        key!(spool.fsync_interval_ms, SPOOL_FSYNC_INTERVAL_MS),
        key!(spool.spill_capacity, SPOOL_SPILL_CAPACITY),
        key!(archive.batch_len_max, ARCHIVE_BATCH_LEN_MAX),
        key!(
            archive.flush_interval_ms,
            ARCHIVE_FLUSH_INTERVAL_MS,
            Some((MS, U64))
        ),
        key!(archive.batches_in_flight_max, ARCHIVE_BATCHES_IN_FLIGHT_MAX),
        key!(archive.ack_wait_s, ARCHIVE_ACK_WAIT_S, Some((S, I64))),
        key!(
            archive.retry_backoff_initial_ms,
            ARCHIVE_RETRY_BACKOFF_INITIAL_MS,
            Some((MS, U64))
        ),
        key!(
            archive.retry_backoff_max_ms,
            ARCHIVE_RETRY_BACKOFF_MAX_MS,
            Some((MS, U64))
        ),
        key!(
            archive.drain_timeout_s,
            ARCHIVE_DRAIN_TIMEOUT_S,
            Some((S, U64))
        ),
        key!(
            archive.partition_premake_days,
            ARCHIVE_PARTITION_PREMAKE_DAYS
        ),
        // Days become microseconds in an i64 (86400e6 us a day).
        key!(
            archive.retention_days,
            ARCHIVE_RETENTION_DAYS,
            Some((86_400_000_000, I64))
        ),
        key!(
            archive.fold_interval_ms,
            ARCHIVE_FOLD_INTERVAL_MS,
            Some((MS, U64))
        ),
        key!(
            archive.maintenance_interval_s,
            ARCHIVE_MAINTENANCE_INTERVAL_S,
            Some((S, U64))
        ),
        // Days become make_interval(days => i32).
        key!(
            archive.compress_after_days,
            ARCHIVE_COMPRESS_AFTER_DAYS,
            Some((1, I32))
        ),
        key!(
            channels.replay_age_max_h,
            CHANNELS_REPLAY_AGE_MAX_H,
            Some((3_600 * S, I64))
        ),
        key!(
            channels.private_idle_s,
            CHANNELS_PRIVATE_IDLE_S,
            Some((S, U64))
        ),
        key!(channels.private_max, CHANNELS_PRIVATE_MAX),
        key!(channels.group_max, CHANNELS_GROUP_MAX),
        // Added to a tag's moment (about 1.8e18 ns now) in a u64.
        key!(
            channels.tag_before_s,
            CHANNELS_TAG_BEFORE_S,
            Some((S, U64 / 4))
        ),
        key!(
            channels.tag_after_s,
            CHANNELS_TAG_AFTER_S,
            Some((S, U64 / 4))
        ),
        key!(channels.read_batch_len, CHANNELS_READ_BATCH_LEN),
        key!(channels.read_batches_max, CHANNELS_READ_BATCHES_MAX),
        key!(channels.acks_in_flight_max, CHANNELS_ACKS_IN_FLIGHT_MAX),
        key!(channels.sink_queue_len, CHANNELS_SINK_QUEUE_LEN),
        key!(channels.spin_us, CHANNELS_SPIN_US, Some((US, U64))),
        key!(
            channels.pacing_realtime_priority,
            CHANNELS_PACING_REALTIME_PRIORITY
        ),
        key!(
            channels.private_per_client_max,
            CHANNELS_PRIVATE_PER_CLIENT_MAX
        ),
        key!(channels.requests_per_min, CHANNELS_REQUESTS_PER_MIN),
        key!(channels.requests_burst, CHANNELS_REQUESTS_BURST),
        key!(
            channels.client_requests_per_min,
            CHANNELS_CLIENT_REQUESTS_PER_MIN
        ),
        key!(
            channels.client_requests_burst,
            CHANNELS_CLIENT_REQUESTS_BURST
        ),
        key!(console.tick_hz, CONSOLE_TICK_HZ),
        key!(console.trail_s, CONSOLE_TRAIL_S, Some((S, U64))),
        key!(console.stale_s, CONSOLE_STALE_S, Some((S, U64))),
        key!(console.expire_s, CONSOLE_EXPIRE_S, Some((S, U64))),
        key!(console.clients_max, CONSOLE_CLIENTS_MAX),
        key!(console.events_queue_len, CONSOLE_EVENTS_QUEUE_LEN),
        key!(channels.controls_per_min, CHANNELS_CONTROLS_PER_MIN),
        key!(channels.controls_burst, CHANNELS_CONTROLS_BURST),
    ]
}

/// A configuration with `key` set to `v` and everything else valid, or
/// None where `v` does not fit the field's type.
fn with(key_set: Set, v: u64) -> Option<Config> {
    let mut c = Config::default();
    udp(&mut c);
    key_set(&mut c, v)?;
    Some(c)
}

/// What the code derives from the configuration, in nanoseconds, next to
/// the exact value: the stream definition as it goes on the wire, the
/// publisher's durations, the replay windows.
fn derived(c: &Config) -> Vec<(&'static str, u128, u128)> {
    let s = 1_000_000_000u128;
    let ms = 1_000_000u128;
    let mut out = Vec::new();
    let stream = crate::jetstream::telemetry_stream("tspi", &c.stream.telemetry_settings());
    let wire = serde_json::to_value(&stream).unwrap();
    let ns = |field: &str| wire[field].as_i64().map_or(0, |v| v as u128);
    out.push((
        "stream.duplicate_window_s",
        ns("duplicate_window"),
        u128::from(c.stream.duplicate_window_s) * s,
    ));
    out.push((
        "stream.age_max_s",
        ns("max_age"),
        u128::from(c.stream.age_max_s) * s,
    ));
    let p = crate::ingest::publisher_config(c);
    let pc = &c.publish;
    out.push((
        "publish.retry_backoff_max_ms",
        p.retry_backoff_max.as_nanos(),
        u128::from(pc.retry_backoff_max_ms) * ms,
    ));
    out.push((
        "publish.drain_timeout_s",
        p.drain_timeout.as_nanos(),
        u128::from(pc.drain_timeout_s) * s,
    ));
    let f = p.fast.expect("fast by default");
    out.push((
        "publish.ack_timeout_ms",
        f.ack_timeout.as_nanos(),
        u128::from(pc.ack_timeout_ms) * ms,
    ));
    let ch = &c.channels;
    out.push((
        "channels.replay_age_max_h",
        ch.replay_age_max().as_nanos(),
        u128::from(ch.replay_age_max_h) * 3_600 * s,
    ));
    out.push((
        "channels.tag_before_s",
        u128::from(ch.tag_before_ns()),
        u128::from(ch.tag_before_s) * s,
    ));
    out.push((
        "channels.tag_after_s",
        u128::from(ch.tag_after_ns()),
        u128::from(ch.tag_after_s) * s,
    ));
    out
}

#[test]
fn every_key_accepts_its_bounds_and_refuses_beyond_them() {
    for Key {
        name: key,
        set,
        bound,
        ..
    } in numeric_keys()
    {
        for v in [bound.min, bound.default, bound.max] {
            let c = with(set, v).unwrap();
            let p = problems(&c);
            let own = format!("{key} = {v}: must be");
            assert!(!p.iter().any(|m| m.contains(&own)), "{key} = {v}: {p:?}");
        }
        let mut beyond = vec![bound.max.saturating_add(1), u64::MAX];
        if bound.min > 0 {
            beyond.push(bound.min - 1);
        }
        for v in beyond {
            if v == bound.max {
                continue;
            }
            let Some(c) = with(set, v) else { continue };
            let p = problems(&c).join("; ");
            assert!(p.contains(key), "{key} = {v} accepted: {p}");
        }
    }
}

#[test]
fn defaults_are_valid_and_the_table_covers_every_bound() {
    let mut c = Config::default();
    udp(&mut c);
    assert_eq!(problems(&c), Vec::<String>::new());
    // limits.rs lists a bound per key: the test table names them all.
    let source = include_str!("limits.rs");
    let declared = source.matches(": Bound = Bound::new(").count();
    assert_eq!(numeric_keys().len(), declared);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Any u64 in any numeric key: validation refuses it naming the key,
    /// or every value derived from it is exact (no wrap on the way to
    /// nanoseconds).
    #[test]
    fn any_u64_is_refused_by_name_or_converted_exactly(
        index in 0usize..64,
        v in prop_oneof![
            any::<u64>(),
            0u64..100_000,
            (0u32..64).prop_map(|b| 1u64 << b),
            (0u32..64).prop_map(|b| (1u64 << b).wrapping_sub(1)),
            Just(18_446_744_134u64),
            Just(18_446_744_073_709_549_616u64),
        ],
    ) {
        let keys = numeric_keys();
        let Key { name: key, set, bound, unit } = keys[index % keys.len()];
        let Some(c) = with(set, v) else { return Ok(()) };
        let p = problems(&c);
        if p.is_empty() {
            prop_assert!(bound.contains(v), "{key} = {v} accepted beyond its bound");
            if let Some((unit_ns, consumer_max)) = unit {
                prop_assert!(u128::from(v) * unit_ns <= consumer_max, "{key} = {v} overflows its consumer");
            }
            for (what, got, exact) in derived(&c) {
                prop_assert_eq!(got, exact, "{} derived from {} = {}", what, key, v);
            }
        } else {
            prop_assert!(p.iter().any(|m| m.contains(key)), "{key} = {v}: {p:?}");
        }
    }
}

#[test]
fn the_largest_stream_values_reach_the_wire_exactly() {
    let mut c = Config::default();
    udp(&mut c);
    c.channels.replay_age_max_h = limits::CHANNELS_REPLAY_AGE_MAX_H.max;
    c.stream.duplicate_window_s = limits::STREAM_DUPLICATE_WINDOW_S.max;
    c.stream.age_max_s = limits::STREAM_AGE_MAX_S.max;
    assert_eq!(problems(&c), Vec::<String>::new());
    for (what, got, exact) in derived(&c) {
        assert_eq!(got, exact, "{what}");
    }
}

#[test]
#[should_panic(expected = "overflows nanoseconds")]
fn an_unvalidated_age_never_reaches_the_server_wrapped() {
    let mut c = Config::default();
    c.stream.age_max_s = 18_446_744_134;
    let _ = c.stream.telemetry_settings();
}

// ------------------------------------------------- dependencies one way

/// The sections are pure (no network, no database, no clock, no files),
/// and `config` reaches into the stages only through their section
/// modules.
#[test]
fn sections_do_no_io_and_config_imports_only_sections() {
    let sections = [
        ("src/config/limits.rs", include_str!("limits.rs")),
        ("src/config/renamed.rs", include_str!("renamed.rs")),
        ("src/nats/config.rs", include_str!("../nats/config.rs")),
        (
            "src/jetstream/config.rs",
            include_str!("../jetstream/config.rs"),
        ),
        (
            "src/receive/config.rs",
            include_str!("../receive/config.rs"),
        ),
        (
            "src/publish/config.rs",
            include_str!("../publish/config.rs"),
        ),
        (
            "src/metrics/config.rs",
            include_str!("../metrics/config.rs"),
        ),
        (
            "src/archive/config.rs",
            include_str!("../archive/config.rs"),
        ),
        ("src/replay/config.rs", include_str!("../replay/config.rs")),
        (
            "src/console/config.rs",
            include_str!("../console/config.rs"),
        ),
        (
            "src/contract/names.rs",
            include_str!("../contract/names.rs"),
        ),
    ];
    let io = [
        "async_nats",
        "tokio_postgres",
        "tokio::net",
        "tokio::time",
        "tokio::spawn",
        "std::fs",
        "UdpSocket",
        "TcpStream",
        "Instant::now",
        "SystemTime::now",
    ];
    for (path, text) in sections {
        for word in io {
            assert!(!text.contains(word), "{path} uses {word}");
        }
    }
    let assembly = include_str!("mod.rs");
    for stage in [
        "nats",
        "jetstream",
        "receive",
        "publish",
        "metrics",
        "archive",
        "replay",
        "console",
    ] {
        let prefix = format!("crate::{stage}::");
        for (at, _) in assembly.match_indices(&prefix) {
            let rest = &assembly[at + prefix.len()..];
            assert!(
                rest.starts_with("config::") || rest.starts_with("config`"),
                "config/mod.rs uses crate::{stage}::{}",
                rest.lines().next().unwrap_or("")
            );
        }
    }
}

#[test]
fn operator_tokens_are_checked_without_being_shown() {
    let mut c = Config::default();
    udp(&mut c);
    c.channels.operator_tokens = vec!["short-secret".into(), "a long secret with spaces".into()];
    c.channels.operator_token = Some("a-good-operator-token".into());
    let p = problems(&c).join("; ");
    assert!(
        p.contains("token 1 of 3") && p.contains("token 2 of 3"),
        "{p}"
    );
    assert!(!p.contains("token 3 of 3"), "{p}");
    assert!(
        !p.contains("short-secret") && !p.contains("with spaces"),
        "{p}"
    );
    c.channels.operator_tokens.clear();
    assert_eq!(problems(&c), Vec::<String>::new());
    assert_eq!(
        c.channels.client_operator_token().as_deref(),
        Some("a-good-operator-token")
    );
    c.channels.operator_tokens = vec!["x".repeat(16); 65];
    assert!(problems(&c).join("; ").contains("66 tokens"));
}

#[test]
fn channels_archive_ca_file_is_read_and_an_empty_one_is_a_problem() {
    let c =
        parse("[channels]\narchive_dsn = \"host=db\"\narchive_ca_file = \"/etc/tspi/ca.pem\"\n")
            .unwrap();
    assert_eq!(
        c.channels.archive_ca_file.as_deref(),
        Some(std::path::Path::new("/etc/tspi/ca.pem"))
    );
    let mut c = Config::default();
    c.channels.archive_ca_file = Some(std::path::PathBuf::new());
    let p = c.problems_for(&[Role::Channels], &any_cores()).join("; ");
    assert!(p.contains("channels.archive_ca_file"), "{p}");
}

#[test]
fn foreign_starts_from_the_archive_need_an_archive() {
    let mut c = Config::default();
    c.channels.foreign_start_source = crate::channels::message::ReplaySource::Archive;
    let p = c.problems_for(&[Role::Channels], &any_cores()).join("; ");
    assert!(p.contains("channels.foreign_start_source"), "{p}");
    c.channels.archive_dsn = Some("host=db".into());
    assert_eq!(
        c.problems_for(&[Role::Channels], &any_cores()),
        Vec::<String>::new()
    );
    c.channels.archive_dsn = None;
    c.archive.postgres = Some("host=db".into());
    assert_eq!(
        c.problems_for(&[Role::Channels], &any_cores()),
        Vec::<String>::new()
    );
    let p = parse("[channels]\nforeign_start_source = \"tape\"\n")
        .unwrap_err()
        .to_string();
    assert!(p.contains("foreign_start_source"), "{p}");
}

#[test]
fn the_console_is_a_role_when_enabled_and_keeps_its_own_port() {
    let c = parse("[console]\nlisten = \"127.0.0.1:9000\"\n").unwrap();
    assert!(c.roles_enabled().is_empty(), "off unless enabled");
    let mut c = parse("[console]\nenabled = true\nlisten = \"127.0.0.1:9000\"\n").unwrap();
    assert_eq!(c.roles_enabled(), [Role::Console]);
    assert_eq!(Role::Console.enabled_by(), Some("[console] enabled = true"));
    c.validate().unwrap();
    // The console's values are checked for the role.
    c.console.tick_hz = 0;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("console.tick_hz"), "{e}");
    c.console.tick_hz = 10;
    // tspi run serves /metrics beside the hub: not on the same port.
    c.metrics.addr = Some("0.0.0.0:9000".parse().unwrap());
    let e = c
        .validate_for(&[Role::Console], &any_cores())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("console.listen = 127.0.0.1:9000 and metrics.addr = 0.0.0.0:9000"),
        "{e}"
    );
    c.validate_for(&[Role::Archive], &any_cores()).unwrap();
    c.metrics.addr = Some("127.0.0.1:9001".parse().unwrap());
    c.validate_for(&[Role::Console], &any_cores()).unwrap();
}
