use super::*;
use crate::codec::{Frame as Datagram, Geocentric, Payload, Spherical};
use crate::console::geodesy::{self, V3};
use crate::message::{RecvTime, encode_cbor};
use proptest::prelude::*;

const DAY: u16 = 120;
const T0_MS: u64 = 1_700_000_000_000;

fn cfg() -> TracksConfig {
    let mut sites = HashMap::new();
    sites.insert(
        900,
        Geodetic {
            lat_deg: 32.4,
            lon_deg: -106.4,
            alt_m: 1250.0,
        },
    );
    TracksConfig {
        trail_ms: 60_000,
        trail_points_max: 600,
        stale_ms: 5_000,
        expire_ms: 300_000,
        tracks_max: TRACKS_MAX,
        sites,
    }
}

/// A geocentric body for `sensor` at `at`, moving `v_enu` (m/s), stamped
/// `time_s` of day [`DAY`].
fn geocentric(sensor: u16, time_s: f64, at: Geodetic, v_enu: V3) -> Vec<u8> {
    let p = at.to_ecef();
    let v = LocalFrame::new(at).vec_to_ecef(v_enu);
    let q = |x: f64| (x * 100.0).round();
    let frame = Datagram {
        sensor_id: sensor,
        day: DAY,
        time_ticks: (time_s * 10_000.0).round() as u32,
        status: 0xFF,
        status_flags: 1,
        payload: Payload::Geocentric(Geocentric {
            x: q(p[0]) as i32,
            y: q(p[1]) as i32,
            z: q(p[2]) as i32,
            vx: q(v[0]) as i16,
            vy: q(v[1]) as i16,
            vz: q(v[2]) as i16,
            ..Geocentric::default()
        }),
    };
    body(&frame)
}

fn body(frame: &Datagram) -> Vec<u8> {
    let mut out = Vec::new();
    encode_cbor(frame, RecvTime::from_unix_ns(T0_MS * 1_000_000), &mut out);
    out
}

fn here(north_m: f64) -> Geodetic {
    Geodetic {
        lat_deg: 32.5 + north_m / 111_000.0,
        lon_deg: -106.5,
        alt_m: 3000.0,
    }
}

fn json(v: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

#[test]
fn snapshot_then_only_changes() {
    let mut t = TrackTable::new("livestream", &cfg());
    let north = [0.0, 150.0, 0.0];
    assert_eq!(
        t.ingest(T0_MS, &geocentric(1, 10.0, here(0.0), north)),
        Ok(Ingested::Updated)
    );
    assert_eq!(
        t.ingest(T0_MS, &geocentric(2, 10.0, here(500.0), north)),
        Ok(Ingested::Updated)
    );
    let first = t.tick(T0_MS).frame.expect("two new tracks");
    assert_eq!(first.tracks.len(), 2);
    let snap = t.snapshot(T0_MS + 50);
    assert_eq!(snap.tracks.len(), 2);
    let s = json(&snap);
    assert_eq!(s["type"], "snapshot");
    assert_eq!(s["protocol"], 1);
    assert_eq!(s["channel_id"], "livestream");
    assert_eq!(s["server_time_ms"], T0_MS + 50);
    let tr = &s["tracks"][0];
    assert_eq!(tr["id"], "1:geocentric");
    assert_eq!(tr["sensor_id"], 1);
    assert_eq!(tr["type"], "geocentric");
    assert_eq!(tr["day"], DAY);
    assert_eq!(tr["time_s"], 10.0);
    assert_eq!(tr["stale"], false);
    assert!(
        (tr["lat_deg"].as_f64().unwrap() - 32.5).abs() < 1e-7,
        "{tr}"
    );
    assert!(
        (tr["alt_m"].as_f64().unwrap() - 3000.0).abs() < 0.02,
        "{tr}"
    );
    assert!(
        (tr["speed_mps"].as_f64().unwrap() - 150.0).abs() < 0.03,
        "{tr}"
    );
    let heading = tr["heading_deg"].as_f64().unwrap();
    assert!(!(0.02..=359.98).contains(&heading), "{tr}");
    assert!(tr["climb_mps"].as_f64().unwrap().abs() < 0.02, "{tr}");
    assert_eq!(tr["trail"].as_array().unwrap().len(), 1);

    // Nothing new: no frame.
    assert_eq!(t.tick(T0_MS + 100).frame, None);
    // One track moves: the frame carries it alone, without a trail.
    t.ingest(T0_MS + 150, &geocentric(2, 10.1, here(515.0), north))
        .unwrap();
    let f = t.tick(T0_MS + 200).frame.expect("one change");
    let j = json(&f);
    assert_eq!(j["type"], "frame");
    assert_eq!(j["channel_id"], "livestream");
    assert_eq!(j["server_time_ms"], T0_MS + 200);
    assert_eq!(j["removed"], serde_json::json!([]));
    assert_eq!(j["tracks"].as_array().unwrap().len(), 1);
    assert_eq!(j["tracks"][0]["id"], "2:geocentric");
    assert_eq!(j["tracks"][0]["time_s"], 10.1);
    assert!(j["tracks"][0].get("trail").is_none(), "{j}");
    assert_eq!(t.tick(T0_MS + 300).frame, None);
}

#[test]
fn a_stale_track_is_flagged_once_then_expires() {
    let mut t = TrackTable::new("livestream", &cfg());
    t.ingest(T0_MS, &geocentric(1, 10.0, here(0.0), [0.0; 3]))
        .unwrap();
    t.ingest(T0_MS, &geocentric(2, 10.0, here(900.0), [0.0; 3]))
        .unwrap();
    assert!(t.tick(T0_MS).frame.is_some());
    // Track 2 keeps reporting, track 1 falls silent.
    let mut stale_frames = 0;
    for i in 1..=100u64 {
        let now = T0_MS + i * 100;
        t.ingest(
            now,
            &geocentric(2, 10.0 + i as f64 / 10.0, here(900.0), [0.0; 3]),
        )
        .unwrap();
        let f = t.tick(now).frame.expect("track 2 changed");
        for tr in &f.tracks {
            if tr.sensor_id == 1 {
                assert!(tr.stale, "{tr:?}");
                assert!(now - T0_MS >= 5_000);
                stale_frames += 1;
            } else {
                assert!(!tr.stale);
            }
        }
    }
    assert_eq!(stale_frames, 1, "flagged once");
    let s = t.snapshot(T0_MS + 10_000);
    assert!(s.tracks[0].stale && !s.tracks[1].stale);
    // Expiry: removed once, then gone from snapshots.
    assert_eq!(
        t.tick(T0_MS + 299_999).frame.map(|f| f.removed),
        Some(vec![])
    );
    let out = t.tick(T0_MS + 300_000);
    assert_eq!(out.expired, 1);
    assert_eq!(out.tracks, 1);
    assert_eq!(out.frame.unwrap().removed, vec!["1:geocentric".to_owned()]);
    assert_eq!(t.snapshot(T0_MS + 300_000).tracks.len(), 1);
    // Back again: a new track, not stale.
    t.ingest(T0_MS + 301_000, &geocentric(1, 400.0, here(0.0), [0.0; 3]))
        .unwrap();
    let f = t.tick(T0_MS + 301_000).frame.unwrap();
    assert_eq!(f.tracks.len(), 1);
    assert!(!f.tracks[0].stale);
}

#[test]
fn the_trail_is_bounded_in_time_and_length() {
    let c = TracksConfig {
        trail_ms: 10_000,
        trail_points_max: 50,
        ..cfg()
    };
    let mut t = TrackTable::new("livestream", &c);
    // 1 kHz for 30 s of server time.
    for i in 0..30_000u64 {
        let body = geocentric(
            7,
            100.0 + i as f64 / 1000.0,
            here(i as f64 * 0.15),
            [0.0, 150.0, 0.0],
        );
        t.ingest(T0_MS + i, &body).unwrap();
        if i % 100 == 0 {
            t.tick(T0_MS + i);
        }
    }
    let snap = t.snapshot(T0_MS + 29_999);
    let trail = snap.tracks[0].trail.as_ref().unwrap();
    assert!(trail.len() <= 50 && trail.len() >= 45, "{}", trail.len());
    // Only the last 10 s, oldest first, the newest at the track's time.
    let oldest = trail[0][3];
    assert!(oldest >= 100.0 + 19.999 - 1e-9, "{oldest}");
    assert!(trail.windows(2).all(|w| w[0][3] < w[1][3]));
    assert!(129.999 - trail.last().unwrap()[3] < 0.2 + 1e-9);
    // Later, without updates, the trail empties as its points age.
    assert!(
        t.snapshot(T0_MS + 45_000).tracks[0]
            .trail
            .as_ref()
            .unwrap()
            .is_empty()
    );
    t.tick(T0_MS + 45_000);
    assert!(t.tracks.values().all(|s| s.trail.is_empty()));
}

#[test]
fn out_of_order_and_repeats_are_ignored() {
    let mut t = TrackTable::new("livestream", &cfg());
    let v = [10.0, 0.0, 0.0];
    t.ingest(T0_MS, &geocentric(3, 50.0, here(0.0), v)).unwrap();
    t.tick(T0_MS);
    let older = geocentric(3, 49.9, here(-100.0), v);
    assert_eq!(t.ingest(T0_MS + 10, &older), Ok(Ingested::OutOfOrder));
    let same = geocentric(3, 50.0, here(-100.0), v);
    assert_eq!(t.ingest(T0_MS + 10, &same), Ok(Ingested::OutOfOrder));
    assert_eq!(t.tick(T0_MS + 20).frame, None, "nothing changed");
    assert!((t.snapshot(T0_MS + 20).tracks[0].lat_deg - 32.5).abs() < 1e-7);
    // The next day starts again at midnight: accepted.
    let b = geocentric(3, 0.5, here(0.0), v);
    let mut frame = crate::archive::proto::rows::decode_telemetry(&b, None)
        .unwrap()
        .frame;
    frame.day = DAY + 1;
    let next_day = body(&frame);
    assert_eq!(t.ingest(T0_MS + 30, &next_day), Ok(Ingested::Updated));
    // A geocentric and a spherical track of one sensor are two tracks.
    assert_eq!(t.len(), 1);
}

#[test]
fn spherical_tracks_need_a_site() {
    let mut t = TrackTable::new("replay.x", &cfg());
    let sph = |sensor| Datagram {
        sensor_id: sensor,
        day: DAY,
        time_ticks: 10_000,
        status: 0xFF,
        status_flags: 1,
        payload: Payload::Spherical(Spherical {
            range: 1_000_000,    // 10 km
            azimuth: 90_000_000, // due east
            elevation: 0,        // on the horizon
            range_rate: 10_000,  // 100 m/s outbound
            ..Spherical::default()
        }),
    };
    assert_eq!(t.ingest(T0_MS, &body(&sph(5))), Err(TrackError::NoSite(5)));
    assert_eq!(TrackError::NoSite(5).label(), "no_site");
    assert_eq!(t.ingest(T0_MS, &body(&sph(900))), Ok(Ingested::Updated));
    let s = t.snapshot(T0_MS);
    let tr = &s.tracks[0];
    assert_eq!((tr.id.as_str(), tr.kind), ("900:spherical", "spherical"));
    let site = cfg().sites[&900];
    let want = Geodetic::from_ecef(LocalFrame::new(site).point_to_ecef([10_000.0, 0.0, 0.0]));
    assert!((tr.lat_deg - want.lat_deg).abs() < 1e-12 && (tr.lon_deg - want.lon_deg).abs() < 1e-12);
    assert!(tr.lon_deg > site.lon_deg);
    assert!((tr.speed_mps.unwrap() - 100.0).abs() < 1e-9);
    // Heading east at the site is a touch less than 90° 10 km further east
    // (meridians converge), still close.
    assert!((tr.heading_deg.unwrap() - 90.0).abs() < 0.1, "{tr:?}");
}

#[test]
fn velocity_without_its_valid_bits_is_null() {
    let mut t = TrackTable::new("livestream", &cfg());
    let b = geocentric(4, 1.0, here(0.0), [5.0, 5.0, 0.0]);
    let mut frame = crate::archive::proto::rows::decode_telemetry(&b, None)
        .unwrap()
        .frame;
    frame.status = 0b0000_0111; // positions valid, velocities not
    frame.status_flags = 0;
    t.ingest(T0_MS, &body(&frame)).unwrap();
    let j = json(&t.snapshot(T0_MS));
    let tr = &j["tracks"][0];
    assert!(tr["speed_mps"].is_null() && tr["heading_deg"].is_null() && tr["climb_mps"].is_null());
    assert!(tr["lat_deg"].is_f64());
}

#[test]
fn a_fix_near_the_earths_centre_is_refused() {
    let mut t = TrackTable::new("livestream", &cfg());
    // Test vector 1 of CONTRACT §7: x 5123.25 m from the centre.
    let frame = crate::codec::parse(&crate::codec::vectors::bytes(
        crate::codec::vectors::GEOCENTRIC_1,
    ))
    .unwrap();
    let e = t.ingest(T0_MS, &body(&frame)).unwrap_err();
    assert_eq!(e.label(), "position");
    assert!(t.is_empty());
    assert_eq!(t.tick(T0_MS).frame, None);
}

#[test]
fn the_table_is_bounded() {
    let c = TracksConfig {
        tracks_max: 3,
        ..cfg()
    };
    let mut t = TrackTable::new("livestream", &c);
    for s in 1..=3 {
        t.ingest(T0_MS, &geocentric(s, 1.0, here(0.0), [0.0; 3]))
            .unwrap();
    }
    let e = t.ingest(T0_MS, &geocentric(4, 1.0, here(0.0), [0.0; 3]));
    assert_eq!(e, Err(TrackError::TableFull(3)));
    // Known tracks still update.
    assert_eq!(
        t.ingest(T0_MS, &geocentric(2, 2.0, here(0.0), [0.0; 3])),
        Ok(Ingested::Updated)
    );
}

#[test]
fn the_geodesy_of_a_body_matches_the_module() {
    // The table's position is geodesy's conversion of the body's own
    // (quantized) ECEF: the only error against the truth is the wire's
    // centimetre.
    let mut t = TrackTable::new("livestream", &cfg());
    let at = Geodetic {
        lat_deg: -33.9,
        lon_deg: 151.2,
        alt_m: 11_000.0,
    };
    t.ingest(T0_MS, &geocentric(8, 1.0, at, [0.0; 3])).unwrap();
    let tr = &t.snapshot(T0_MS).tracks[0];
    let back = Geodetic {
        lat_deg: tr.lat_deg,
        lon_deg: tr.lon_deg,
        alt_m: tr.alt_m,
    }
    .to_ecef();
    let truth = at.to_ecef();
    let d = geodesy::Geodetic::from_ecef(truth);
    assert!((d.alt_m - at.alt_m).abs() < 1e-6);
    assert!(
        (0..3).all(|i| (back[i] - truth[i]).abs() <= 0.005 + 1e-6),
        "{back:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Junk never panics: any bytes, or a valid body with bytes changed,
    /// are refused or taken, and the table's messages still serialise.
    #[test]
    fn junk_bodies_never_panic(
        junk in proptest::collection::vec(any::<u8>(), 0..600),
        flips in proptest::collection::vec((0usize..600, any::<u8>()), 0..6),
        sensor in any::<u16>(),
    ) {
        let mut t = TrackTable::new("livestream", &cfg());
        let _ = t.ingest(T0_MS, &junk);
        let mut b = geocentric(sensor, 5.0, here(0.0), [1.0, 2.0, 3.0]);
        for (at, byte) in flips {
            let n = b.len();
            b[at % n] = byte;
        }
        let _ = t.ingest(T0_MS + 1, &b);
        let _ = t.ingest(T0_MS + 2, &body(&Datagram {
            sensor_id: 900,
            day: DAY,
            time_ticks: 1,
            status: 0xFF,
            status_flags: 1,
            payload: Payload::Spherical(Spherical {
                range: junk.len() as i32 * 1_000_003 - 300_000_000,
                azimuth: u32::from(sensor) * 65_537,
                elevation: u32::from(sensor).wrapping_mul(90_001),
                azimuth_rate: sensor as i16,
                ..Spherical::default()
            }),
        }));
        let f = t.tick(T0_MS + 3);
        prop_assert!(serde_json::to_string(&f.frame).is_ok());
        let s = t.snapshot(T0_MS + 3);
        for tr in &s.tracks {
            prop_assert!(tr.lat_deg.is_finite() && tr.lon_deg.is_finite() && tr.alt_m.is_finite());
        }
        prop_assert!(serde_json::to_string(&s).is_ok());
    }
}

#[test]
fn detail_has_every_contract_field_age_and_rate() {
    let mut t = TrackTable::new("livestream", &cfg());
    let north = [0.0, 150.0, 0.0];
    // 10 Hz for 8 s of server time.
    for i in 0..80u64 {
        let b = geocentric(3, 10.0 + i as f64 / 10.0, here(i as f64 * 15.0), north);
        assert_eq!(t.ingest(T0_MS + i * 100, &b), Ok(Ingested::Updated));
    }
    let now = T0_MS + 7_900 + 250;
    let d = t.detail("3:geocentric", now).expect("the track is there");
    assert_eq!(
        (d.kind, d.id.as_str(), d.age_ms),
        ("track_detail", "3:geocentric", 250)
    );
    assert!(!d.stale);
    assert!((d.updates_per_s - 10.0).abs() < 0.6, "{}", d.updates_per_s);
    let v = json(&d);
    for field in [
        "type",
        "sensor_id",
        "day",
        "time_s",
        "status",
        "status_flags",
        "recv_iso",
        "payload",
    ] {
        assert!(
            v["record"].get(field).is_some(),
            "record lacks {field}: {v}"
        );
    }
    assert_eq!(v["record"]["sensor_id"], 3);
    assert_eq!(v["record"]["time_s"], 17.9);
    assert!(v["record"]["payload"]["vy_mps"].is_number(), "{v}");
    assert_eq!(v["track"]["id"], "3:geocentric");
    assert!(v["track"].get("trail").is_none());
    // Unknown ids, other types of the same sensor, and nonsense: none.
    assert!(t.detail("3:spherical", now).is_none());
    assert!(t.detail("4:geocentric", now).is_none());
    assert!(t.detail("x", now).is_none());
    assert!(t.detail("99999:geocentric", now).is_none());
    // Silent for 20 s: stale, and the rate falls to nothing.
    let later = t.detail("3:geocentric", now + 20_000).unwrap();
    assert!(later.stale);
    assert_eq!(later.updates_per_s, 0.0);
}

#[test]
fn update_rate_of_a_young_track_counts_from_its_first_update() {
    let mut t = TrackTable::new("livestream", &cfg());
    for i in 0..4u64 {
        let b = geocentric(5, 10.0 + i as f64, here(0.0), [0.0; 3]);
        t.ingest(T0_MS + 1_000 + i * 500, &b).unwrap();
    }
    // Four updates in 1.5 s (2 s to now): about 2 per second, not 4/10.
    let d = t.detail("5:geocentric", T0_MS + 3_000).unwrap();
    assert!((d.updates_per_s - 2.0).abs() < 0.01, "{}", d.updates_per_s);
}
