use super::*;
use crate::channels::client_state::ClientMachine;
use crate::channels::message::{GroupReplayStart, GroupReplayStop};
use crate::codec::{self, vectors};
use crate::message::RecvTime;
use serde_json::json;

fn record(hex: &str) -> Record {
    let f = codec::parse(&vectors::bytes(hex)).unwrap();
    Record::new(&f, RecvTime::from_unix_ns(vectors::RECV_EXAMPLE_UNIX_NS))
}

#[test]
fn summary_line_shows_rates_sensors_bad_bodies_state_and_display() {
    let mut t = Tally::default();
    for _ in 0..4 {
        t.record(&record(vectors::GEOCENTRIC_1));
    }
    t.record(&record(vectors::SPHERICAL_2));
    t.bad();
    let w = t.take_window(2.0);
    assert_eq!(w.counts.messages(), 5);
    let mut m = ClientMachine::default();
    let mut d = Display::default();
    assert_eq!(
        summary_line(&w, &t, m.state(), &d),
        "livestream FOLLOWING_LIVESTREAM | geocentric 2/s spherical 0/s | sensors 2 (2 seen) \
         | bad 1 (1 total)"
    );
    m.apply(Event::GroupReplayStart(
        ChannelId::parse("replay.x").unwrap(),
    ));
    d.apply(DisplayCmd::Units("imperial".into()));
    d.apply(DisplayCmd::MarkerColor("#ff8800".into()));
    d.apply(DisplayCmd::Session(Session {
        name: "Sortie 12".into(),
        id: "s12".into(),
    }));
    let w = t.take_window(1.0);
    assert_eq!(w.counts, Counts::default());
    assert_eq!(
        summary_line(&w, &t, m.state(), &d),
        "replay.x FOLLOWING_GROUP_REPLAY | geocentric 0/s spherical 0/s | sensors 0 (2 seen) \
         | bad 0 (1 total) | units imperial | marker #ff8800 | session \"Sortie 12\" (s12)"
    );
    let totals = t.totals(3.0);
    assert_eq!(
        (
            totals.messages,
            totals.geocentric,
            totals.spherical,
            totals.bad_bodies
        ),
        (5, 4, 1, 1)
    );
    assert!(
        totals
            .line()
            .starts_with("total: 5 messages (geocentric 4, spherical 1), 2 sensors, 1 bad bodies")
    );
}

#[test]
fn display_commands_are_read_from_their_payloads() {
    assert_eq!(
        display_cmd(CMD_UNITS, &json!("metric")),
        Ok(DisplayCmd::Units("metric".into()))
    );
    assert_eq!(
        display_cmd(CMD_UNITS, &json!({"units": "imperial"})),
        Ok(DisplayCmd::Units("imperial".into()))
    );
    assert!(display_cmd(CMD_UNITS, &json!("furlongs")).is_err());
    assert_eq!(
        display_cmd(CMD_MARKER_COLOR, &json!("#FF8800")),
        Ok(DisplayCmd::MarkerColor("#ff8800".into()))
    );
    assert!(display_cmd(CMD_MARKER_COLOR, &json!("orange")).is_err());
    assert_eq!(
        display_cmd(CMD_SESSION, &json!({"name": "S", "id": "1"})),
        Ok(DisplayCmd::Session(Session {
            name: "S".into(),
            id: "1".into()
        }))
    );
    assert!(display_cmd(CMD_SESSION, &json!("S")).is_err());
    assert!(display_cmd("brightness", &json!(1)).is_err());
    assert!(color_ok("#a0b1c2") && !color_ok("#a0b1c") && !color_ok("a0b1c2x"));
}

#[test]
fn bad_body_reports_are_rate_limited_and_count_what_they_held_back() {
    let mut e = Every::new(1_000);
    assert_eq!(e.allow(0), Some(0));
    assert_eq!(e.allow(10), None);
    assert_eq!(e.allow(999), None);
    assert_eq!(e.allow(1_000), Some(2));
    assert_eq!(e.allow(1_001), None);
}

#[test]
fn control_messages_become_events_for_group_replays_only() {
    let start = |id: &str| {
        Ctrl::Start(GroupReplayStart {
            kind: "GroupReplayStart".into(),
            channel_id: id.into(),
            display_name: "X".into(),
            identifier: "t".into(),
            stream: "TSPI_REPLAY".into(),
        })
    };
    let r = ChannelId::parse("replay.x").unwrap();
    assert_eq!(
        ctrl_event(&start("replay.x")),
        Some(Event::GroupReplayStart(r.clone()))
    );
    assert_eq!(ctrl_event(&start("client.a.b")), None);
    assert_eq!(ctrl_event(&start("not valid!")), None);
    let stop = Ctrl::Stop(GroupReplayStop {
        kind: "GroupReplayStop".into(),
        channel_id: "replay.x".into(),
    });
    assert_eq!(ctrl_event(&stop), Some(Event::GroupReplayStop(r)));
    assert_eq!(ctrl_event(&Ctrl::Other("Ping".into())), None);
}

#[test]
fn roster_lists_heartbeats_and_expires_the_silent() {
    let s = 1_000_000_000;
    let hb = |id: &str, state: &str| {
        let mut h = ClientMachine::default().heartbeat(id, "2026-01-01T00:00:00+00:00".into());
        h.state = state.into();
        h
    };
    let mut r = Roster::new(10 * s);
    assert_eq!(r.see(0, hb("a", "FOLLOWING_LIVESTREAM")), Seen::New);
    assert_eq!(r.see(2 * s, hb("b", "FOLLOWING_LIVESTREAM")), Seen::New);
    assert_eq!(r.see(5 * s, hb("a", "FOLLOWING_LIVESTREAM")), Seen::Same);
    assert_eq!(r.see(6 * s, hb("a", "LIVE_OVERRIDE")), Seen::Changed);
    assert_eq!(
        r.expire(12 * s),
        Vec::<String>::new(),
        "10 s silent is not stale yet"
    );
    assert_eq!(r.expire(13 * s), vec!["b".to_owned()]);
    let e = r.entries(13 * s);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].heartbeat.client_id, "a");
    assert_eq!(e[0].age_s, 7.0);
    let v = serde_json::to_value(&e[0]).unwrap();
    assert_eq!(v["override"], json!(false));
    assert_eq!(v["age_s"], json!(7.0));
    assert_eq!(r.expire(17 * s), vec!["a".to_owned()]);
    assert!(r.entries(17 * s).is_empty());
}

#[test]
fn ops_lines_name_their_kind() {
    assert_eq!(OpsKind::of("tspi.ops.ctrl"), OpsKind::Ctrl);
    assert_eq!(OpsKind::of("tspi.ops.status"), OpsKind::Status);
    assert_eq!(OpsKind::of("tspi.cmd.display.units"), OpsKind::Command);
    assert_eq!(OpsKind::of("tags.broadcast"), OpsKind::Tag);
    assert_eq!(OpsKind::of("tspi.ops.metrics.ingest.h"), OpsKind::Other);
    let l = OpsLine {
        ts: "2026-01-01T00:00:00+00:00".into(),
        kind: OpsKind::Tag,
        subject: "tags.broadcast".into(),
        body: json!({"id": "t1"}),
    };
    assert_eq!(
        l.text(),
        "2026-01-01T00:00:00+00:00 tag     tags.broadcast {\"id\":\"t1\"}"
    );
}
