//! The channels service's operator features against real servers: group
//! replays from the PostgreSQL archive, controls of a running replay
//! (pause, resume, rate, seek to a time and to a tag), a foreign
//! `GroupReplayStart` honoured once, the archive over TLS
//! (`archive_ca_file`), and the live metrics.
//!
//! Timing is asserted loosely (this box has 2 shared cores): medians of
//! gaps, spans within wide bounds, silences of a second.

use crate::channels::Running;
use crate::kit::*;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::time::Duration;
use tspi::channels::message::{
    ChannelId, ControlAction, GroupReplayRequest, GroupReplayStart, ReplayControl,
    ReplayControlResult, ReplaySource, ReplaySpec, SUBJECT_CTRL, to_cbor,
};
use tspi::channels::service::{self, SERVICE_HEADER};
use tspi::message::{Message, RecvTime};
use tspi::replay::ChannelsConfig;
use tspi_testkit::harness::PgCluster;

fn iso(ns: u64) -> String {
    String::from_utf8(RecvTime::from_unix_ns(ns).iso().to_vec()).unwrap()
}

/// The original `Nats-Msg-Id` of a replayed message and its epoch suffix
/// (0 before any seek).
fn original(m: &async_nats::Message, channel: &str) -> (String, u32) {
    let id = header(m, "Nats-Msg-Id").expect("Nats-Msg-Id");
    let marker = format!(":replay:{channel}");
    let at = id
        .find(&marker)
        .unwrap_or_else(|| panic!("{id}: no {marker}"));
    let rest = &id[at + marker.len()..];
    let epoch = rest.strip_prefix(':').map_or(0, |e| e.parse().unwrap());
    (id[..at].to_owned(), epoch)
}

fn gaps_ms(got: &[(u64, async_nats::Message)]) -> Vec<f64> {
    got.windows(2)
        .map(|w| (w[1].0 - w[0].0) as f64 / 1e6)
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Nothing arrives on `sub` for `quiet`.
async fn silent(sub: &mut async_nats::Subscriber, quiet: Duration) -> bool {
    tokio::time::timeout(quiet, sub.next()).await.is_err()
}

/// The archive's schema and `rec` as rows (as tests/it/replay.rs does:
/// rows the archiver's decoder produced).
async fn archive(dsn: &str, rec: &[(RecvTime, Message, tspi::codec::Frame)]) {
    let (mut db, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    tspi::archive::schema::migrate(&mut db, tspi::archive::Partitioning::Native)
        .await
        .unwrap();
    insert_telemetry_rows(&db, rec, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_replay_from_the_archive_reaches_its_channel_at_the_recorded_pace() {
    let pg = tokio::task::spawn_blocking(PgCluster::start)
        .await
        .unwrap()
        .unwrap();
    // 50 messages 25 ms apart in the archive; the window takes the first 40
    // (975 ms). The TSPI stream holds none of them.
    let rec = recording(&even(50, 25_000_000));
    archive(&pg.dsn(), &rec).await;
    let (nats, client, _js) = nats_with_streams().await;
    let channels = ChannelsConfig {
        archive_dsn: Some(pg.dsn()),
        ..ChannelsConfig::default()
    };
    let svc = Running::start(&nats.url(), channels).await;
    let mut sub = client
        .subscribe("tspi.channel.replay.from-archive")
        .await
        .unwrap();
    client.flush().await.unwrap();
    let spec = ReplaySpec {
        start: Some(iso(T0_NS)),
        end: Some(iso(T0_NS + 39 * 25_000_000 + 1_000_000)),
        rate: 1.0,
        source: ReplaySource::Archive,
        ..ReplaySpec::default()
    };
    let channel = ChannelId::parse("replay.from-archive").unwrap();
    let req = GroupReplayRequest::new(&channel, "From the archive".into(), spec);
    let start = service::request_group_replay(&client, &req, WAIT)
        .await
        .unwrap();
    assert_eq!(start.identifier, iso(T0_NS));
    let got = collect(&mut sub, 40, WAIT).await;
    assert_eq!(got.len(), 40);
    assert!(
        silent(&mut sub, Duration::from_millis(700)).await,
        "more than the window"
    );
    // Exactly those messages, in order, bodies unchanged, ids with the
    // replay suffix.
    for ((_, m), (_, want, _)) in got.iter().zip(&rec) {
        assert_eq!(m.payload.as_ref(), want.body.as_slice());
        assert_eq!(
            header(m, "Nats-Msg-Id").unwrap(),
            format!("{}:replay:replay.from-archive", want.msg_id)
        );
        assert_eq!(header(m, "Tspi-Subject").unwrap(), want.subject);
    }
    // The recorded spacing, loosely: 975 ms recorded, not all at once.
    let span_ms = (got[39].0 - got[0].0) as f64 / 1e6;
    assert!((700.0..3000.0).contains(&span_ms), "span {span_ms} ms");
    let m = median(gaps_ms(&got));
    assert!((12.0..60.0).contains(&m), "median gap {m} ms");

    // The command line's --from-archive, with a tag-free window.
    let url = nats.url();
    let (from, to) = (iso(T0_NS + 40 * 25_000_000), iso(T0_NS + 49 * 25_000_000));
    let mut sub = client.subscribe("tspi.channel.replay.rest").await.unwrap();
    client.flush().await.unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tspi"))
            .args(["channels", "start-replay", "--nats", &url, "--from-archive"])
            .args(["--start", &from, "--end", &to, "--id", "rest"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(start["channel_id"], "replay.rest");
    let got = collect(&mut sub, 10, WAIT).await;
    assert_eq!(got.len(), 10);
    assert_eq!(original(&got[0].1, "replay.rest").0, rec[40].1.msg_id);

    // A tag's window from the archive's tspi_tags (tag_before_s and
    // tag_after_s cover the whole recording), slowed down, then a seek to
    // that tag (message 45's moment), looked up in the archive too.
    let (db, conn) = tokio_postgres::connect(&pg.dsn(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let tag_ts = T0_NS + 45 * 25_000_000;
    db.execute(
        "INSERT INTO tspi_tags (id, ts, label, updated_ts, body, subject, stream_seq) \
         VALUES ($1, 'epoch'::timestamptz + $2::bigint * interval '1 microsecond', 'x', \
                 'epoch'::timestamptz + $2::bigint * interval '1 microsecond', $3, 'tags.broadcast', 1)",
        &[&"t-arch", &((tag_ts / 1000) as i64), &tag_body("t-arch", tag_ts, "x")],
    )
    .await
    .unwrap();
    let mut sub = client
        .subscribe("tspi.channel.replay.t-arch")
        .await
        .unwrap();
    client.flush().await.unwrap();
    let spec = ReplaySpec {
        tag: Some("t-arch".into()),
        rate: 0.1,
        source: ReplaySource::Archive,
        ..ReplaySpec::default()
    };
    let channel = ChannelId::parse("replay.t-arch").unwrap();
    let req = GroupReplayRequest::new(&channel, "Tag".into(), spec);
    let start = service::request_group_replay(&client, &req, WAIT)
        .await
        .unwrap();
    assert_eq!(start.identifier, "t-arch");
    let got = collect(&mut sub, 1, WAIT).await;
    assert_eq!(original(&got[0].1, "replay.t-arch").0, rec[0].1.msg_id);
    let r = control(
        &client,
        "replay.t-arch",
        ControlAction::Seek,
        Some("t-arch".into()),
        None,
    )
    .await;
    assert!(r.ok, "{r:?}");
    let after: Vec<(String, u32)> = collect(&mut sub, 3, WAIT)
        .await
        .iter()
        .map(|(_, m)| original(m, "replay.t-arch"))
        .collect();
    let first = after
        .iter()
        .find(|(_, e)| *e == 1)
        .expect("a message after the seek");
    assert_eq!(first.0, rec[45].1.msg_id, "{after:?}");
    service::stop_group_replay(&client, "replay.t-arch", None, WAIT)
        .await
        .unwrap();
    assert_eq!(svc.stats.load().groups_started, 3);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_replays_are_refused_without_an_archive() {
    let (nats, client, _js) = nats_with_streams().await;
    let svc = Running::start(&nats.url(), ChannelsConfig::default()).await;
    let spec = ReplaySpec {
        start: Some(iso(T0_NS)),
        rate: 1.0,
        source: ReplaySource::Archive,
        ..ReplaySpec::default()
    };
    let req = GroupReplayRequest::new(&ChannelId::parse("replay.x").unwrap(), "X".into(), spec);
    let e = service::request_group_replay(&client, &req, WAIT)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no archive is configured"), "{e}");
    assert_eq!(svc.stats.refused("no_archive"), 1);
    svc.stop().await;
}

/// `[channels] archive_ca_file`: a group replay from an archive whose
/// server requires TLS. Without the CA file the start is refused (the
/// server says "no encryption"); with it, the window arrives in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_replay_from_the_archive_over_tls() {
    let pg = tokio::task::spawn_blocking(PgCluster::start_requiring_tls)
        .await
        .unwrap()
        .expect("postgres with TLS");
    let role = tokio::task::block_in_place(|| pg.ordinary_database("tspi_archive")).expect("role");
    let ca = pg.tls_ca().expect("a CA").to_path_buf();
    let tls = tspi::pg::Tls::from_ca_file(&ca).unwrap();
    let rec = recording(&even(20, 25_000_000));
    {
        let (mut db, _conn) = tspi::pg::connect(&role.dsn, Some(&tls)).await.expect("TLS");
        tspi::archive::schema::migrate(&mut db, tspi::archive::Partitioning::Native)
            .await
            .unwrap();
        insert_telemetry_rows(&db, &rec, false).await;
    }
    let (nats, client, _js) = nats_with_streams().await;
    let spec = ReplaySpec {
        start: Some(iso(T0_NS)),
        end: Some(iso(T0_NS + 19 * 25_000_000 + 1_000_000)),
        rate: 1.0,
        source: ReplaySource::Archive,
        ..ReplaySpec::default()
    };
    let channel = ChannelId::parse("replay.tls").unwrap();
    let req = GroupReplayRequest::new(&channel, "Over TLS".into(), spec);

    // No CA file: plain, which this server refuses.
    let plain = ChannelsConfig {
        archive_dsn: Some(role.dsn.clone()),
        ..ChannelsConfig::default()
    };
    let svc = Running::start(&nats.url(), plain).await;
    let e = service::request_group_replay(&client, &req, WAIT)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no encryption"), "{e}");
    svc.stop().await;

    let channels = ChannelsConfig {
        archive_dsn: Some(role.dsn.clone()),
        archive_ca_file: Some(ca),
        ..ChannelsConfig::default()
    };
    let svc = Running::start(&nats.url(), channels).await;
    let mut sub = client.subscribe("tspi.channel.replay.tls").await.unwrap();
    client.flush().await.unwrap();
    let start = service::request_group_replay(&client, &req, WAIT)
        .await
        .unwrap();
    assert_eq!(start.identifier, iso(T0_NS));
    let got = collect(&mut sub, 20, WAIT).await;
    assert_eq!(got.len(), 20);
    for ((_, m), (_, want, _)) in got.iter().zip(&rec) {
        assert_eq!(m.payload.as_ref(), want.body.as_slice());
    }
    svc.stop().await;
}

/// Send a control; the service's result.
async fn control(
    client: &async_nats::Client,
    channel: &str,
    action: ControlAction,
    to: Option<String>,
    rate: Option<f64>,
) -> ReplayControlResult {
    let mut c = ReplayControl::new(&ChannelId::parse(channel).unwrap(), action);
    c.to = to;
    c.rate = rate;
    service::control_replay(client, &c, WAIT).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_replay_pauses_resumes_changes_rate_and_seeks() {
    let (nats, client, js) = nats_with_streams().await;
    // 400 messages 50 ms apart: 20 s; a tag at message 100's moment.
    let rec = recording(&even(400, 50_000_000));
    publish_recording(&js, &rec).await;
    publish_tags(&js, &[("mark-5s", T0_NS + 100 * 50_000_000, "five")]).await;
    let index: HashMap<String, usize> = rec
        .iter()
        .enumerate()
        .map(|(i, (_, m, _))| (m.msg_id.clone(), i))
        .collect();
    let svc = Running::start(&nats.url(), ChannelsConfig::default()).await;
    let ch = "replay.ctl";
    let mut sub = client.subscribe("tspi.channel.replay.ctl").await.unwrap();
    client.flush().await.unwrap();
    let spec = ReplaySpec {
        start: Some(iso(T0_NS)),
        rate: 1.0,
        ..ReplaySpec::default()
    };
    let req = GroupReplayRequest::new(&ChannelId::parse(ch).unwrap(), "Ctl".into(), spec);
    service::request_group_replay(&client, &req, WAIT)
        .await
        .unwrap();
    let idx = |m: &async_nats::Message| {
        let (id, epoch) = original(m, ch);
        (index[&id], epoch)
    };

    // 1x: about 50 ms apart.
    let got = collect(&mut sub, 10, WAIT).await;
    assert_eq!(got.len(), 10);
    let before = median(gaps_ms(&got));
    assert!((35.0..80.0).contains(&before), "1x median gap {before} ms");

    // Live metrics while it runs.
    let text = svc.stats.render_prometheus();
    assert!(
        text.contains("\ntspi_channels_replays_active{kind=\"group\"} 1\n"),
        "{text}"
    );
    let count_line = "tspi_channels_replay_pacing_error_seconds_count{channel=\"replay.ctl\"} ";
    let n: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(count_line))
        .unwrap_or_else(|| panic!("no pacing series: {text}"))
        .parse()
        .unwrap();
    assert!(n >= 5, "pacing errors recorded so far: {n}");

    // Pause (from the command line): nothing for a second and a half, once
    // what was in flight has arrived.
    let url = nats.url();
    let cli = move |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tspi"))
            .args([
                "channels",
                "control",
                "--nats",
                &url,
                "--channel",
                "replay.ctl",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let c2 = cli.clone();
    let r = tokio::task::spawn_blocking(move || c2(&["pause"]))
        .await
        .unwrap();
    assert_eq!(
        (r["ok"].as_bool(), r["action"].as_str()),
        (Some(true), Some("pause"))
    );
    let mut last = idx(&got[9].1).0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, sub.next()).await {
        last = idx(&m).0;
    }
    assert!(
        silent(&mut sub, Duration::from_millis(1500)).await,
        "delivered while paused"
    );

    // Resume: it goes on from where it stopped, nothing skipped.
    let c2 = cli.clone();
    let r = tokio::task::spawn_blocking(move || c2(&["resume"]))
        .await
        .unwrap();
    assert_eq!(r["ok"], true);
    let got = collect(&mut sub, 6, WAIT).await;
    assert_eq!(idx(&got[0].1), (last + 1, 0), "resumed where it paused");

    // Rate 2: the spacing about halves.
    let r = control(&client, ch, ControlAction::Rate, None, Some(2.0)).await;
    assert!(r.ok, "{r:?}");
    let _ = collect(&mut sub, 2, WAIT).await; // in flight at the change
    let got = collect(&mut sub, 12, WAIT).await;
    let after = median(gaps_ms(&got));
    assert!(
        (10.0..40.0).contains(&after) && after < before * 0.8,
        "2x median gap {after} ms (1x: {before} ms)"
    );
    // A bad rate is refused with its reason.
    let r = control(&client, ch, ControlAction::Rate, None, Some(0.0)).await;
    assert_eq!((r.ok, r.reason.as_deref()), (false, Some("bad_control")));

    // Seek to a time: messages resume from there, with the epoch suffix.
    let r = control(
        &client,
        ch,
        ControlAction::Seek,
        Some(iso(T0_NS + 300 * 50_000_000)),
        None,
    )
    .await;
    assert!(r.ok, "{r:?}");
    let first_after = |got: Vec<(u64, async_nats::Message)>, epoch: u32| {
        got.iter()
            .map(|(_, m)| idx(m))
            .find(|&(_, e)| e == epoch)
            .unwrap_or_else(|| panic!("no message of epoch {epoch}"))
            .0
    };
    let i = first_after(collect(&mut sub, 8, WAIT).await, 1);
    assert!((300..=302).contains(&i), "after the seek: message {i}");

    // Seek to a tag: to its moment (message 100).
    let r = control(
        &client,
        ch,
        ControlAction::Seek,
        Some("mark-5s".into()),
        None,
    )
    .await;
    assert!(r.ok, "{r:?}");
    let i = first_after(collect(&mut sub, 8, WAIT).await, 2);
    assert!((100..=102).contains(&i), "after the tag seek: message {i}");
    let r = control(
        &client,
        ch,
        ControlAction::Seek,
        Some("no-such-tag".into()),
        None,
    )
    .await;
    assert_eq!((r.ok, r.reason.as_deref()), (false, Some("bad_control")));
    assert!(r.error.unwrap().contains("no tag"));

    let c = svc.stats.load();
    assert_eq!(c.controls_applied, 5);
    service::stop_group_replay(&client, ch, None, WAIT)
        .await
        .unwrap();
    let r = control(&client, ch, ControlAction::Pause, None, None).await;
    assert_eq!(r.reason.as_deref(), Some("not_running"));
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_group_replay_start_is_honoured_once() {
    let (nats, client, js) = nats_with_streams().await;
    let rec = recording(&even(60, 10_000_000)); // 0.6 s
    publish_recording(&js, &rec).await;
    let svc = Running::start(&nats.url(), ChannelsConfig::default()).await;
    let ch = "replay.console-1";
    let mut sub = client
        .subscribe("tspi.channel.replay.console-1")
        .await
        .unwrap();
    let mut ctrl = client.subscribe(SUBJECT_CTRL).await.unwrap();
    client.flush().await.unwrap();
    // As the toolkit's console sends it: the contract's map, no header;
    // twice (a duplicate).
    let start = GroupReplayStart {
        kind: "GroupReplayStart".into(),
        channel_id: ch.into(),
        display_name: "Console".into(),
        identifier: iso(T0_NS),
        stream: "TSPI_REPLAY".into(),
    };
    for _ in 0..2 {
        client
            .publish(SUBJECT_CTRL, to_cbor(&start).into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let got = collect(&mut sub, 60, WAIT).await;
    assert_eq!(got.len(), 60);
    for ((_, m), (_, want, _)) in got.iter().zip(&rec) {
        assert_eq!(original(m, ch), (want.msg_id.clone(), 0));
    }
    // Not again: neither for the duplicate nor for its own announcement,
    // which carries the service's header.
    assert!(
        silent(&mut sub, Duration::from_millis(1500)).await,
        "replayed twice"
    );
    let mut own = 0;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), ctrl.next()).await {
        let v: ciborium::Value = ciborium::from_reader(m.payload.as_ref()).unwrap();
        let is_start =
            v.as_map().unwrap().iter().any(|(k, v)| {
                k.as_text() == Some("type") && v.as_text() == Some("GroupReplayStart")
            });
        if is_start
            && m.headers
                .as_ref()
                .is_some_and(|h| h.get(SERVICE_HEADER).is_some())
        {
            own += 1;
        }
    }
    assert_eq!(own, 1, "the service announced its start once");
    let c = svc.stats.load();
    assert_eq!((c.foreign_starts, c.groups_started), (1, 1));
    assert_eq!(svc.stats.refused_total(), 0);
    svc.stop().await;
}
