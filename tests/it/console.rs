//! The console's track tables against the load generator: the positions
//! the fleet flew, through the wire (37-byte datagram, CONTRACT §2 body),
//! come out of a [`TrackTable`] as WGS84 latitude, longitude and height.
//! Pure: no server needed.

use tspi::codec;
use tspi::config::{ConsoleConfig, SiteConfig};
use tspi::console::geodesy::{Geodetic, LocalFrame, V3};
use tspi::console::tracks::{Ingested, Track, TrackTable};
use tspi::message::{RecvTime, encode_cbor};
use tspi_loadgen::{Fleet, FleetConfig, Output, Style};

const DAY: u16 = 200;
const T0_MS: u64 = 1_750_000_000_000;

fn dist(a: V3, b: V3) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// The acceptance test of the console's geodesy: two aircraft of an
/// airshow fleet, one geocentric and one spherical (seen from the fleet's
/// own sensor site, configured as a `[[console.site]]`), land within 2 cm
/// of where the fleet flew them. The wire quantizes ECEF and range to the
/// centimetre (±5 mm per axis) and angles to 1e-6 degree (sub-millimetre at
/// these ranges): the tolerance is that and nothing more.
#[test]
fn two_fleet_tracks_land_where_the_fleet_flew() {
    let mut fc = FleetConfig::new(Style::Airshow, 2, 7);
    fc.output = Output::Mixed;
    fc.spherical_every = 2;
    let fleet = Fleet::new(fc).expect("fleet");
    assert_eq!(fleet.frame_type(0), codec::FrameType::Geocentric);
    assert_eq!(fleet.frame_type(1), codec::FrameType::Spherical);

    let mut console = ConsoleConfig::default();
    for k in 0..fleet.tracks() {
        if let Some(site) = fleet.site_of(k) {
            console.sites.push(SiteConfig {
                sensor_id: fleet.sensor_id(k),
                lat_deg: site.at.lat_deg,
                lon_deg: site.at.lon_deg,
                alt_m: site.at.alt_m,
            });
        }
    }
    assert_eq!(console.sites.len(), 1);
    assert_eq!(console.problems(), Vec::<String>::new());
    let mut table = TrackTable::new("livestream", &console.tracks_config());

    let mut out_of_range = 0;
    let mut body = Vec::new();
    let (mut worst_pos, mut checked) = (0.0f64, 0);
    // 60 s at 10 Hz: loops, rolls and passes.
    for step in 0..600u32 {
        let t_s = f64::from(step) / 10.0;
        let ticks = 36_000_000 + step * 1_000;
        let now_ms = T0_MS + u64::from(step) * 100;
        for k in 0..fleet.tracks() {
            let frame = fleet.frame(k, t_s, DAY, ticks, &mut out_of_range);
            // Through the wire as ingest sees it, then the body ingest publishes.
            let frame = codec::parse(&frame.encode()).expect("a valid datagram");
            body.clear();
            encode_cbor(
                &frame,
                RecvTime::from_unix_ns(now_ms * 1_000_000),
                &mut body,
            );
            assert_eq!(table.ingest(now_ms, &body), Ok(Ingested::Updated));
        }
        let out = table.tick(now_ms).frame.expect("both tracks moved");
        assert_eq!(out.tracks.len(), 2);
        for tr in &out.tracks {
            let k = fleet.track_of(tr.sensor_id).expect("a fleet sensor");
            let truth = fleet.state_ecef(k, t_s);
            let truth_geo = Geodetic::from_ecef(truth.p);
            // Independent of the inverse under test: the table's
            // lat/lon/alt, forward to ECEF (closed form), is the truth.
            let got = Geodetic {
                lat_deg: tr.lat_deg,
                lon_deg: tr.lon_deg,
                alt_m: tr.alt_m,
            };
            let d = dist(got.to_ecef(), truth.p);
            assert!(d <= 0.02, "{} at {t_s} s: {d} m off\n{tr:?}", tr.id);
            worst_pos = worst_pos.max(d);
            // And in the units the browser reads: north, east and up errors.
            let north_m = (tr.lat_deg - truth_geo.lat_deg).to_radians() * 6_357_000.0;
            let east_m = (tr.lon_deg - truth_geo.lon_deg).to_radians()
                * 6_400_000.0
                * truth_geo.lat_deg.to_radians().cos();
            let up_m = tr.alt_m - truth_geo.alt_m;
            for (what, e) in [("north", north_m), ("east", east_m), ("up", up_m)] {
                assert!(
                    e.abs() <= 0.02,
                    "{} at {t_s} s: {what} {e} m\n{tr:?}",
                    tr.id
                );
            }
            check_motion(&fleet, k, t_s, tr);
            checked += 1;
        }
    }
    assert_eq!(out_of_range, 0);
    assert_eq!(checked, 1200);
    assert!(
        worst_pos > 0.0,
        "the wire quantizes: some error is expected"
    );

    let snap = table.snapshot(T0_MS + 59_900);
    assert_eq!(snap.tracks.len(), 2);
    for tr in &snap.tracks {
        let trail = tr.trail.as_ref().expect("snapshots carry trails");
        // 60 s of trail at one point per 0.1 s (trail_s 60 / 600 points).
        assert!((590..=600).contains(&trail.len()), "{}", trail.len());
    }
}

/// Speed, heading and climb against the fleet's ENU velocity at the track's
/// position. Geocentric velocity crosses the wire at 0.01 m/s per axis;
/// spherical velocity comes from angular rates at 0.01 °/s, worth
/// `range × 1.75e-4` m/s across the line of sight.
fn check_motion(fleet: &Fleet, k: u32, t_s: f64, tr: &Track) {
    let s = fleet.state_ecef(k, t_s);
    let at = Geodetic::from_ecef(s.p);
    let [e, n, u] = LocalFrame::new(at).vec_from_ecef(s.v);
    let speed = (e * e + n * n + u * u).sqrt();
    let tol = match fleet.spherical_state(k, t_s) {
        None => 0.03,
        Some(sp) => 0.03 + sp.range_m * 0.01f64.to_radians() * 1.5,
    };
    let got = tr.speed_mps.expect("velocity valid");
    assert!(
        (got - speed).abs() <= tol,
        "{} speed {got} vs {speed}",
        tr.id
    );
    assert!((tr.climb_mps.unwrap() - u).abs() <= tol, "{} climb", tr.id);
    let ground = e.hypot(n);
    if ground > 10.0 * tol {
        let want = e.atan2(n).to_degrees().rem_euclid(360.0);
        let got = tr.heading_deg.expect("moving");
        let diff = (got - want + 540.0).rem_euclid(360.0) - 180.0;
        let tol_deg = (2.0 * tol / ground).atan().to_degrees();
        assert!(diff.abs() <= tol_deg, "{} heading {got} vs {want}", tr.id);
    }
}
