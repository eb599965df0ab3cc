//! Fleet construction, kinematic consistency and the datagram ranges.

use super::*;
use crate::geo::{norm, sub};

fn fleets() -> Vec<Arc<Fleet>> {
    let mut v = Vec::new();
    for style in [Style::Airshow, Style::Normal] {
        for output in [Output::Geocentric, Output::Spherical, Output::Mixed] {
            let mut c = FleetConfig::new(style, 40, 11);
            c.output = output;
            v.push(Fleet::new(c).unwrap());
        }
    }
    v
}

/// Central differences: velocity against position, acceleration against
/// velocity, away from the instants where a pull starts or ends (there the
/// acceleration steps, as a real aircraft's does, and a difference across
/// the step averages it).
#[test]
fn velocity_and_acceleration_are_the_derivatives() {
    // h = 1 ms: truncation error ~h²/6 × jerk (< 1e-5 here), rounding
    // ~1e-16 × 6.4e6 m / h ≈ 1e-6 m/s in ECEF. Tolerances 1e-3 m/s and
    // 1e-3 m/s² leave a wide margin and still catch any wrong term (the
    // smallest terms, formation-roll accelerations, are above 0.1 m/s²).
    let h = 1e-3;
    for fleet in fleets() {
        for k in 0..fleet.tracks() {
            let steps = fleet.acceleration_steps_s(k);
            let period = fleet.period_s(k);
            for i in 0..200 {
                let t = period * f64::from(i) / 200.0 + 0.123;
                let near_step = steps.iter().any(|s| {
                    let d = (t - s).rem_euclid(period);
                    d < 2.0 * h || period - d < 2.0 * h
                });
                if near_step {
                    continue;
                }
                let (m, s, p) = (
                    fleet.state_ecef(k, t - h),
                    fleet.state_ecef(k, t),
                    fleet.state_ecef(k, t + h),
                );
                for j in 0..3 {
                    let dv = (p.p[j] - m.p[j]) / (2.0 * h) - s.v[j];
                    let da = (p.v[j] - m.v[j]) / (2.0 * h) - s.a[j];
                    assert!(dv.abs() < 1e-3, "track {k} t {t}: velocity off by {dv}");
                    assert!(da.abs() < 1e-3, "track {k} t {t}: acceleration off by {da}");
                }
                if let (Some(sm), Some(s0), Some(sp)) = (
                    fleet.spherical_state(k, t - h),
                    fleet.spherical_state(k, t),
                    fleet.spherical_state(k, t + h),
                ) {
                    let fd = |a: f64, b: f64| (b - a) / (2.0 * h);
                    let mut daz = sp.azimuth_deg - sm.azimuth_deg;
                    if daz.abs() > 180.0 {
                        daz -= 360.0 * daz.signum();
                    }
                    assert!((daz / (2.0 * h) - s0.azimuth_rate_dps).abs() < 1e-4);
                    assert!((fd(sm.range_m, sp.range_m) - s0.range_rate_mps).abs() < 1e-3);
                    assert!(
                        (fd(sm.elevation_deg, sp.elevation_deg) - s0.elevation_rate_dps).abs()
                            < 1e-4
                    );
                    assert!(
                        (fd(sm.range_rate_mps, sp.range_rate_mps) - s0.range_accel_mps2).abs()
                            < 1e-3
                    );
                    assert!(
                        (fd(sm.azimuth_rate_dps, sp.azimuth_rate_dps) - s0.azimuth_accel_dps2)
                            .abs()
                            < 1e-4
                    );
                    assert!(
                        (fd(sm.elevation_rate_dps, sp.elevation_rate_dps)
                            - s0.elevation_accel_dps2)
                            .abs()
                            < 1e-4
                    );
                }
            }
        }
    }
}

/// Velocity is continuous everywhere, across the acceleration steps too
/// (position has no kinks).
#[test]
fn velocity_is_continuous_across_pieces() {
    for fleet in fleets() {
        for k in 0..fleet.tracks() {
            for s in fleet.acceleration_steps_s(k) {
                let (a, b) = (fleet.state_ecef(k, s - 1e-6), fleet.state_ecef(k, s + 1e-6));
                assert!(norm(sub(a.v, b.v)) < 1e-3, "track {k} at {s}");
            }
        }
    }
}

#[test]
fn airshow_teams_fly_tight_formations_and_pass_each_other() {
    let fleet = Fleet::new(FleetConfig::new(Style::Airshow, 64, 5)).unwrap();
    // Slot 1 of the first team stays within ~40 m of its leader all circuit
    // long (12 m abeam, 0.1 s in trail, rolling round).
    let period = fleet.period_s(0);
    let mut closest_other = f64::INFINITY;
    for i in 0..400 {
        let t = period * f64::from(i) / 400.0;
        let lead = fleet.state_enu(0, t);
        let wing = fleet.state_enu(1, t);
        let d = norm(sub(lead.p, wing.p));
        assert!(d > 5.0 && d < 40.0, "wingman at {d} m at t {t}");
        assert!(lead.p[2] > 100.0, "leader below 100 m at t {t}");
        // The opposing team (the second of the box) comes close at some point.
        let first_of_team2 = (1..fleet.tracks())
            .find(|&k| fleet.tracks[k as usize].m != fleet.tracks[0].m)
            .unwrap();
        closest_other = closest_other.min(norm(sub(lead.p, fleet.state_enu(first_of_team2, t).p)));
    }
    assert!(
        closest_other < 200.0,
        "opposing pass never closer than {closest_other} m"
    );
    // Speeds are realistic; the pulls are 4 to 6 g.
    let mut max_a: f64 = 0.0;
    for i in 0..1000 {
        let s = fleet.state_enu(0, period * f64::from(i) / 1000.0);
        assert!((120.0..=180.0).contains(&norm(s.v)));
        max_a = max_a.max(norm(s.a));
    }
    assert!(max_a > 3.9 * 9.8 && max_a < 6.1 * 9.81, "{max_a}");
}

#[test]
fn sensor_ids_are_unique_and_types_follow_the_output() {
    let mut c = FleetConfig::new(Style::Normal, 1000, 1);
    c.output = Output::Mixed;
    c.sensor_id_base = 100;
    let f = Fleet::new(c).unwrap();
    let ids: std::collections::HashSet<u16> = (0..1000).map(|k| f.sensor_id(k)).collect();
    assert_eq!(ids.len(), 1000);
    assert_eq!(f.sensor_id(0), 100);
    assert_eq!(f.track_of(1099), Some(999));
    assert_eq!(f.track_of(99), None);
    assert_eq!(f.track_of(1100), None);
    let spherical = (0..1000)
        .filter(|&k| f.frame_type(k) == FrameType::Spherical)
        .count();
    assert_eq!(spherical, 250);
}

#[test]
fn too_many_tracks_is_an_error_that_says_why() {
    let e = Fleet::new(FleetConfig::new(Style::Normal, 100_000, 1)).unwrap_err();
    assert_eq!(e, FleetError::TooManyTracks(100_000));
    assert!(e.to_string().contains("16 bits"), "{e}");
    let mut c = FleetConfig::new(Style::Normal, 100, 1);
    c.sensor_id_base = 65_500;
    assert!(matches!(
        Fleet::new(c).unwrap_err(),
        FleetError::SensorIds { .. }
    ));
    assert_eq!(
        Fleet::new(FleetConfig::new(Style::Airshow, 0, 1)).unwrap_err(),
        FleetError::NoTracks
    );
    let mut c = FleetConfig::new(Style::Airshow, 10, 1);
    c.speed_mps = Some((100.0, 400.0));
    assert!(matches!(Fleet::new(c).unwrap_err(), FleetError::Speed(..)));
    // A site right under the traffic and nothing else: refused, not clamped.
    let mut c = FleetConfig::new(Style::Normal, 50, 1);
    c.output = Output::Spherical;
    c.sites = vec![c.origin];
    assert!(matches!(
        Fleet::new(c).unwrap_err(),
        FleetError::NoSite { .. }
    ));
}

#[test]
fn the_largest_fleet_builds() {
    let mut c = FleetConfig::new(Style::Airshow, TRACKS_MAX, 9);
    c.output = Output::Geocentric;
    let f = Fleet::new(c).unwrap();
    assert_eq!(f.tracks(), TRACKS_MAX);
    assert_eq!(f.sensor_id(TRACKS_MAX - 1), 65_535);
}
