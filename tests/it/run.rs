//! `tspi run`: ingest, archive, channels and console from one file in one
//! process, against a real nats-server and a real PostgreSQL. Datagrams sent
//! over loopback UDP reach the `TSPI` stream and the archive table, the
//! channels directory answers and plays a group replay, the console serves
//! browsers, one `/metrics` endpoint shows every role's counters, and
//! SIGTERM stops every role with its account printed and exit 0.

use crate::kit::*;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::task::block_in_place;
use tspi::replay::channels::{DirectoryEntry, GroupReplayRequest, ReplaySpec};
use tspi::replay::service;
use tspi_testkit::harness::{NatsServer, PgCluster};
use tspi_testkit::proc::{sample, scrape};

/// How long the whole run may take at most, start to stop, on a loaded box.
const BOUND: Duration = Duration::from_secs(120);

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `Cpus_allowed_list` (`0-2,5`) as cores.
fn cpu_list(s: &str) -> Vec<usize> {
    s.trim()
        .split(',')
        .filter(|r| !r.is_empty())
        .flat_map(|r| match r.split_once('-') {
            Some((a, b)) => a.parse().unwrap()..=b.parse().unwrap(),
            None => r.parse().unwrap()..=r.parse().unwrap(),
        })
        .collect()
}

/// Each thread of process `pid`: its name and the cores it may run on.
fn threads(pid: u32) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap_or_default();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_owned())
        };
        if let (Some(name), Some(cpus)) = (field("Name:"), field("Cpus_allowed_list:")) {
            out.push((name, cpu_list(&cpus)));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_archive_and_channels_in_one_process() {
    const N: u64 = 600;
    let Some(cores) = run_cores("ingest_archive_and_channels_in_one_process") else {
        return;
    };
    let (nats, pg) = block_in_place(|| (NatsServer::start(), PgCluster::start()));
    let (nats, pg) = (nats.expect("nats-server"), pg.expect("postgres"));
    let (udp, metrics, console) = (free_udp_port(), free_tcp_port(), free_tcp_port());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tspi.toml");
    std::fs::write(
        &path,
        format!(
            "[nats]\nservers = [{nats:?}]\n\
             [stream]\nduplicate_window_s = 30\n\
             [ingest]\nudp = [\"127.0.0.1:{udp}\"]\nbackend = \"recvmmsg\"\ncores = [{core}]\n\
             [metrics]\ninterval_s = 1\naddr = \"127.0.0.1:{metrics}\"\n\
             [archive]\npostgres = {dsn:?}\nbatch_len_max = 500\nflush_interval_ms = 50\n\
             ack_wait_s = 3\npartitioning = \"native\"\n\
             [channels]\nenabled = true\n\
             [console]\nenabled = true\nlisten = \"127.0.0.1:{console}\"\n\
             [spool]\ndir = {spool:?}\n",
            nats = nats.url(),
            dsn = pg.dsn(),
            spool = dir.path().join("spool"),
            core = cores[0],
        ),
    )
    .unwrap();
    let started = Instant::now();
    let (mut running, stdout, stderr) = spawn_run(&path);
    let log = || stderr.lock().unwrap().clone();

    // Receiving once ingest has reported (its reporter starts after the
    // receive threads); the other roles' families come with their reports.
    let text = loop {
        if let Some(t) = block_in_place(|| scrape(metrics))
            && t.contains("tspi_ingest_received_total")
        {
            break t;
        }
        assert!(started.elapsed() < BOUND, "no ingest report:\n{}", log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");

    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..N {
        let (f, _) = random_frame(i, 7);
        sock.send_to(&f.encode(), ("127.0.0.1", udp)).unwrap();
        if i % 100 == 99 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    // Into the stream and the archive table.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    loop {
        let mut s = js.get_stream("TSPI").await.unwrap();
        if s.info().await.unwrap().state.messages == N {
            break;
        }
        assert!(started.elapsed() < BOUND, "TSPI short:\n{}", log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_rows(&pg.dsn(), "tspi_telemetry", N as i64, BOUND).await;

    // The channels directory answers.
    let directory = loop {
        if let Ok(d) = service::list_channels(&client, Duration::from_millis(500)).await {
            break d;
        }
        assert!(started.elapsed() < BOUND, "no directory:\n{}", log());
    };
    assert_eq!(directory, [DirectoryEntry::livestream()]);

    // A group replay of what ingest stored: its pacing thread is placed off
    // the receive core (channels.pacing_cores filled by tspi run) and runs.
    let spec = ReplaySpec {
        start: Some("1".into()),
        rate: 1.0,
        ..ReplaySpec::default()
    };
    let channel = service::group_channel_id(Some("run"), &spec).unwrap();
    let req = GroupReplayRequest::new(&channel, "run".into(), spec);
    service::request_group_replay(&client, &req, Duration::from_secs(30))
        .await
        .expect("group replay started");
    while !log().contains("group replay over") {
        assert!(started.elapsed() < BOUND, "replay never ended:\n{}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!log().contains("replay failed"), "{}", log());

    // One endpoint, every role's counters, up to date.
    loop {
        let text = block_in_place(|| scrape(metrics)).unwrap_or_default();
        if sample(&text, "tspi_ingest_acked_total") == Some(N)
            && sample(&text, "tspi_archive_telemetry_rows_total") == Some(N)
            && sample(&text, "tspi_channels_livestream_messages_total").is_some()
            && sample(&text, "tspi_channels_groups_started_total") == Some(1)
        {
            assert_eq!(text.matches("# TYPE tspi_ingest_acked_total ").count(), 1);
            // The Grafana dashboard and the alert rules name only metrics
            // the appliance exports.
            let missing = crate::ops::missing_from(&text);
            assert!(
                missing.is_empty(),
                "the dashboard or the rules name {missing:?}, which /metrics lacks:\n{text}"
            );
            break;
        }
        assert!(
            started.elapsed() < BOUND,
            "metrics never showed every role:\n{text}\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The console's replay timeline shows what the archive holds (its
    // per-minute aggregate, read every 10 s).
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{console}/ws"))
        .await
        .expect("the console's /ws");
    loop {
        let t = next_within(&mut ws, "timeline", Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("no timeline from the console\n{}", log()));
        if t["archive"]["rows"] == N {
            let a = &t["archive"];
            assert!(a["first_unix_ms"].as_u64().unwrap() < a["last_unix_ms"].as_u64().unwrap());
            let density: u64 = a["density"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d[1].as_u64().unwrap())
                .sum();
            assert_eq!(density, N, "{t}");
            break;
        }
        assert!(
            started.elapsed() < BOUND,
            "the timeline never showed the archive's {N} rows: {t}\n{}",
            log()
        );
    }
    drop(ws);

    // Nothing but the receive thread may run on the receive core.
    let receive_core = cores[0];
    let placed = threads(running.0.as_ref().unwrap().id());
    assert!(
        placed
            .iter()
            .any(|(n, c)| n.starts_with("tspi-rx-") && c == &[receive_core]),
        "{placed:?}"
    );
    assert!(
        placed.iter().any(|(n, _)| n.starts_with("tspi-service")),
        "{placed:?}"
    );
    for (name, allowed) in &placed {
        if !name.starts_with("tspi-rx-") {
            assert!(
                !allowed.contains(&receive_core) && !allowed.is_empty(),
                "{name} may run on the receive core {receive_core}: {placed:?}"
            );
        }
    }

    // SIGTERM: one drained stop, every role's account, exit 0.
    let child = running.0.take().unwrap();
    let err = sigterm_with_accounts(
        child,
        &log,
        &[
            "tspi ingest: final account",
            "tspi archive: final account",
            "tspi channels: final account",
        ],
    )
    .await;
    assert!(!err.contains("UNBALANCED"), "{err}");
    let out = stdout.lock().unwrap().clone();
    let last = out
        .lines()
        .rev()
        .find(|l| l.contains("final_accounts"))
        .unwrap_or_else(|| panic!("no final_accounts line:\n{out}"));
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    let a = &v["final_accounts"];
    assert_eq!(a["ingest"]["account"]["counters"]["acked"], N);
    assert_eq!(a["ingest"]["balanced"], true);
    assert_eq!(a["archive"]["account"]["counters"]["telemetry_rows"], N);
    assert!(a["channels"]["account"]["livestream_messages"].is_u64());
    assert_eq!(a["channels"]["account"]["groups_started"], 1);
}

/// A WebSocket client of the console.
type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON message of type `ty`, skipping others, if one comes
/// within `within`.
async fn next_within(ws: &mut Ws, ty: &str, within: Duration) -> Option<serde_json::Value> {
    use futures_util::StreamExt as _;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .ok()?
            .expect("open")
            .expect("no error");
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            if v["type"] == ty {
                return Some(v);
            }
        }
    }
}

/// The next JSON message of type `ty`, skipping others; at most 20 s.
async fn next_of(ws: &mut Ws, ty: &str) -> serde_json::Value {
    next_within(ws, ty, Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("no {ty} within 20 s"))
}

/// `[console] enabled = true`: `tspi run` serves the console's hub beside
/// ingest and the channels service. A browser gets `hello` and a
/// `snapshot`, then the track of a datagram that went in over UDP (ingest →
/// `TSPI` → the livestream → the hub); the shared /metrics shows the hub's
/// families (each family once); SIGTERM stops it with its account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_a_role_of_tspi_run() {
    use tspi::codec::{Geocentric, Payload};
    let Some(cores) = run_cores("the_console_is_a_role_of_tspi_run") else {
        return;
    };
    let nats = block_in_place(NatsServer::start).expect("nats-server");
    let (udp, metrics, console) = (free_udp_port(), free_tcp_port(), free_tcp_port());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tspi.toml");
    std::fs::write(
        &path,
        format!(
            "[nats]\nservers = [{nats:?}]\n\
             [stream]\nduplicate_window_s = 30\n\
             [ingest]\nudp = [\"127.0.0.1:{udp}\"]\nbackend = \"recvmmsg\"\ncores = [{core}]\n\
             [metrics]\ninterval_s = 1\naddr = \"127.0.0.1:{metrics}\"\n\
             [channels]\nenabled = true\n\
             [console]\nenabled = true\nlisten = \"127.0.0.1:{console}\"\n",
            nats = nats.url(),
            core = cores[0],
        ),
    )
    .unwrap();
    // `tspi validate` reports the role.
    let out = Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("roles checked: ingest, channels, console\n"),
        "{text}"
    );

    let started = Instant::now();
    let (mut running, stdout, stderr) = spawn_run(&path);
    let log = || stderr.lock().unwrap().clone();

    // A browser on [console] listen: hello, then a snapshot.
    let mut ws: Ws = loop {
        let url = format!("ws://127.0.0.1:{console}/ws?client_id=range-map");
        match tokio_tungstenite::connect_async(url).await {
            Ok((ws, _)) => break ws,
            Err(e) => assert!(
                started.elapsed() < BOUND,
                "the console never served /ws: {e}\n{}",
                log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let hello = next_of(&mut ws, "hello").await;
    assert_eq!(hello["client_id"], "range-map", "{hello}");
    assert_eq!(hello["operator"], false, "{hello}");
    let snap = next_of(&mut ws, "snapshot").await;
    assert_eq!(snap["channel_id"], "livestream", "{snap}");

    // A geocentric datagram in over UDP reaches the browser as a track
    // (ingest → TSPI → LIVE_MAIN → the hub: a push consumer's messages
    // arrive under their stored subject). One every half second until one
    // does: the livestream takes only what is stored after it starts.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sent = 0u32;
    let frame = loop {
        let mut f = tspi_testkit::frames::frame(1);
        f.sensor_id = 4242;
        f.time_ticks = 10_000 * (sent + 1);
        f.payload = Payload::Geocentric(Geocentric {
            x: 637_813_700, // the equator at 0° E, on the ellipsoid
            y: 0,
            z: 0,
            ..Geocentric::default()
        });
        sock.send_to(&f.encode(), ("127.0.0.1", udp)).unwrap();
        sent += 1;
        if let Some(v) = next_within(&mut ws, "frame", Duration::from_millis(500)).await {
            break v;
        }
        assert!(
            started.elapsed() < BOUND,
            "no frame after {sent} datagrams:\n{}\n{}",
            block_in_place(|| scrape(metrics)).unwrap_or_default(),
            log()
        );
    };
    assert_eq!(frame["tracks"][0]["sensor_id"], 4242, "{frame}");

    // The shared /metrics: the hub's families beside the others, each once.
    loop {
        let text = block_in_place(|| scrape(metrics)).unwrap_or_default();
        if sample(&text, "tspi_console_connected_total") == Some(1)
            && text.contains("tspi_console_tracks{channel=\"livestream\"} 1\n")
            && sample(&text, "tspi_channels_livestream_messages_total").is_some()
        {
            assert!(
                text.contains("tspi_console_clients{channel=\"livestream\"} 1\n"),
                "{text}"
            );
            let mut types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
            let n = types.len();
            types.sort_unstable();
            types.dedup();
            assert_eq!(types.len(), n, "a family given twice:\n{text}");
            break;
        }
        assert!(
            started.elapsed() < BOUND,
            "metrics never showed the console:\n{text}\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // SIGTERM: one drained stop, the console's account too, exit 0; the
    // browser's connection ends.
    let child = running.0.take().unwrap();
    let err = sigterm_with_accounts(
        child,
        &log,
        &[
            "tspi ingest: final account",
            "tspi channels: final account",
            "tspi console: final account",
        ],
    )
    .await;
    assert!(
        err.contains("tspi run: stopped ingest, channels, console (every role cleanly)"),
        "{err}"
    );
    {
        use futures_util::StreamExt as _;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(None | Some(Err(_))) => break,
                Ok(Some(Ok(m))) if m.is_close() => break,
                Ok(Some(Ok(_))) => {}
                Err(_) => panic!("the console's connection outlived the stop"),
            }
        }
    }
    let out = stdout.lock().unwrap().clone();
    let last = out
        .lines()
        .rev()
        .find(|l| l.contains("final_accounts"))
        .unwrap_or_else(|| panic!("no final_accounts line:\n{out}"));
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    let a = &v["final_accounts"]["console"]["account"];
    assert_eq!(a["connected"], 1, "{v}");
    assert!(a["frames_sent"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["final_accounts"]["ingest"]["balanced"], true, "{v}");
}

/// `systemd/tspi-console.service`: `tspi console serve` with the shipped
/// config, validated first for the console role; it passes `systemd-analyze
/// verify`, and its ExecStartPre accepts a console-only file.
#[test]
fn the_console_unit_serves_the_console_and_verifies() {
    let unit = include_str!("../../systemd/tspi-console.service");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/tspi console serve --config /etc/tspi/tspi.toml")
    );
    let pre = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStartPre="))
        .expect("ExecStartPre");
    assert_eq!(
        pre,
        "/usr/local/bin/tspi validate --config /etc/tspi/tspi.toml --role console"
    );
    for hardening in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.contains(hardening), "{hardening}");
    }
    crate::kit::verify_unit(
        "the_console_unit_serves_the_console_and_verifies",
        "tspi-console.service",
        unit,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tspi.toml");
    std::fs::write(
        &path,
        "[nats]\nservers = [\"nats://127.0.0.1:4222\"]\n[console]\nlisten = \"0.0.0.0:8080\"\n",
    )
    .unwrap();
    let args: Vec<String> = pre
        .split_whitespace()
        .skip(1)
        .map(|w| {
            if w == "/etc/tspi/tspi.toml" {
                path.to_str().unwrap().to_owned()
            } else {
                w.to_owned()
            }
        })
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args(&args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{pre}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("roles checked: console\n"), "{text}");
}

#[test]
fn a_file_that_enables_no_role_is_refused_naming_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tspi.toml");
    std::fs::write(&path, "[nats]\nservers = [\"nats://127.0.0.1:1\"]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args(["run", "--duration-s", "1", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "[ingest] udp",
        "[archive] postgres",
        "[channels] enabled",
        "[console] enabled",
    ] {
        assert!(err.contains(key), "{key} in {err}");
    }
}

#[test]
fn the_unit_runs_tspi_run_and_verifies() {
    let unit = include_str!("../../systemd/tspi.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/tspi run --config /etc/tspi/tspi.toml"));
    assert!(
        unit.contains("ExecStartPre=/usr/local/bin/tspi validate --config /etc/tspi/tspi.toml")
    );
    crate::kit::verify_unit("the_unit_runs_tspi_run_and_verifies", "tspi.service", unit);
}

#[test]
fn a_role_that_fails_makes_the_exit_status_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tspi.toml");
    // Not a connection string: the archive role fails as it starts.
    std::fs::write(
        &path,
        "[nats]\nservers = [\"nats://127.0.0.1:1\"]\n[archive]\npostgres = \"port=none\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args(["run", "--duration-s", "30", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("tspi archive: failed"), "{err}");
    assert!(err.contains("FAILED"), "{err}");
}

/// SIGTERM to `tspi run`: it stops within 60 s with exit 0 and prints each
/// of `accounts`; returns its log (`log()` once the readers took the last
/// lines).
async fn sigterm_with_accounts(
    mut child: std::process::Child,
    log: &impl Fn() -> String,
    accounts: &[&str],
) -> String {
    // SAFETY: kill(2) on the pid of a child this test spawned and has not
    // reaped, with a valid signal number.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || child.wait().unwrap()),
    )
    .await
    .expect("stopped within 60 s of SIGTERM")
    .unwrap();
    // Let the readers take the last lines.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = log();
    assert!(status.success(), "{status:?}\n{err}");
    for account in accounts {
        assert!(err.contains(account), "{account} in:\n{err}");
    }
    err
}
