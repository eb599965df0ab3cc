//! The spherical view (range, azimuth, elevation and their first two
//! derivatives) of a moving point from a fixed sensor site.
//!
//! The ellipsoid itself (WGS-84 geodetic <-> earth-centred coordinates,
//! local east-north-up frames) is `tspi::console::geodesy`, re-exported
//! here: the fleet is flown and the console shows it with the same
//! definitions.

pub use tspi::console::geodesy::{Geodetic, LocalFrame, V3, WGS84_A_M, WGS84_F};

pub(crate) fn add(a: V3, b: V3) -> V3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
pub(crate) fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
pub(crate) fn scale(a: V3, s: f64) -> V3 {
    [a[0] * s, a[1] * s, a[2] * s]
}
pub(crate) fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
pub(crate) fn cross(a: V3, b: V3) -> V3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}
pub(crate) fn norm(a: V3) -> f64 {
    dot(a, a).sqrt()
}

/// Range, azimuth (clockwise from north, `[0, 360)`), elevation and their
/// first and second time derivatives, in metres and degrees.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct SphericalState {
    pub range_m: f64,
    pub azimuth_deg: f64,
    pub elevation_deg: f64,
    pub range_rate_mps: f64,
    pub azimuth_rate_dps: f64,
    pub elevation_rate_dps: f64,
    pub range_accel_mps2: f64,
    pub azimuth_accel_dps2: f64,
    pub elevation_accel_dps2: f64,
}

/// The spherical view of a point at `r` moving with velocity `v` and
/// acceleration `a`, all in the sensor's ENU frame. Exact derivatives of
/// `range = |r|`, `az = atan2(e, n)`, `el = atan2(u, hypot(e, n))`;
/// undefined at the sensor and straight overhead (`hypot(e, n) = 0`), which
/// the fleet keeps tracks away from.
pub fn spherical(r: V3, v: V3, a: V3) -> SphericalState {
    let [e, n, u] = r;
    let [de, dn, du] = v;
    let [dde, ddn, ddu] = a;
    let rho2 = dot(r, r);
    let rho = rho2.sqrt();
    let h2 = e * e + n * n;
    let h = h2.sqrt();
    // Range.
    let d_rho = dot(r, v) / rho;
    let dd_rho = (dot(v, v) + dot(r, a) - d_rho * d_rho) / rho;
    // Azimuth: az' = (n e' - e n') / h^2.
    let az_num = n * de - e * dn;
    let d_h2 = 2.0 * (e * de + n * dn);
    let d_az = az_num / h2;
    let d_az_num = n * dde - e * ddn; // (n' e' - e' n' cancels)
    let dd_az = d_az_num / h2 - az_num * d_h2 / (h2 * h2);
    // Elevation: el' = (h u' - u h') / rho^2.
    let d_h = (e * de + n * dn) / h;
    let dd_h = (de * de + e * dde + dn * dn + n * ddn - d_h * d_h) / h;
    let el_num = h * du - u * d_h;
    let d_el = el_num / rho2;
    let d_el_num = h * ddu - u * dd_h; // (h' u' - u' h' cancels)
    let dd_el = d_el_num / rho2 - el_num * 2.0 * d_rho / (rho2 * rho);
    SphericalState {
        range_m: rho,
        azimuth_deg: e.atan2(n).to_degrees().rem_euclid(360.0),
        elevation_deg: u.atan2(h).to_degrees(),
        range_rate_mps: d_rho,
        azimuth_rate_dps: d_az.to_degrees(),
        elevation_rate_dps: d_el.to_degrees(),
        range_accel_mps2: dd_rho,
        azimuth_accel_dps2: dd_az.to_degrees(),
        elevation_accel_dps2: dd_el.to_degrees(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecef_of_known_points() {
        let p = Geodetic {
            lat_deg: 0.0,
            lon_deg: 0.0,
            alt_m: 0.0,
        }
        .to_ecef();
        assert!((p[0] - WGS84_A_M).abs() < 1e-6 && p[1].abs() < 1e-6 && p[2].abs() < 1e-6);
        // North pole: the semi-minor axis b = a (1 - f) = 6356752.314245 m.
        let p = Geodetic {
            lat_deg: 90.0,
            lon_deg: 0.0,
            alt_m: 0.0,
        }
        .to_ecef();
        assert!((p[2] - 6_356_752.314_245).abs() < 1e-3, "{p:?}");
    }

    #[test]
    fn geodetic_round_trip() {
        for g in [
            Geodetic {
                lat_deg: 32.5,
                lon_deg: -106.5,
                alt_m: 1200.0,
            },
            Geodetic {
                lat_deg: -45.0,
                lon_deg: 170.0,
                alt_m: 9000.0,
            },
        ] {
            let back = Geodetic::from_ecef(g.to_ecef());
            assert!((back.lat_deg - g.lat_deg).abs() < 1e-9, "{back:?}");
            assert!((back.lon_deg - g.lon_deg).abs() < 1e-9, "{back:?}");
            assert!((back.alt_m - g.alt_m).abs() < 1e-3, "{back:?}");
        }
    }

    #[test]
    fn enu_axes_are_orthonormal_and_up_is_up() {
        let g = Geodetic {
            lat_deg: 32.5,
            lon_deg: -106.5,
            alt_m: 1200.0,
        };
        let f = LocalFrame::new(g);
        for i in 0..3 {
            for j in 0..3 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot(f.axes[i], f.axes[j]) - want).abs() < 1e-12);
            }
        }
        // 1000 m up in ENU is 1000 m more altitude.
        let up = Geodetic::from_ecef(f.point_to_ecef([0.0, 0.0, 1000.0]));
        assert!((up.alt_m - 2200.0).abs() < 1e-3, "{up:?}");
        let p = [123.0, -456.0, 789.0];
        let back = f.point_from_ecef(f.point_to_ecef(p));
        assert!(norm(sub(back, p)) < 1e-6);
    }

    #[test]
    fn spherical_derivatives_match_finite_differences() {
        // A point on a curving path: r(t) = r0 + v0 t + a0 t^2 / 2.
        let (r0, v0, a0) = (
            [3000.0, 4000.0, 900.0],
            [-150.0, 60.0, 20.0],
            [5.0, -30.0, 4.0],
        );
        let at = |t: f64| {
            let r = add(add(r0, scale(v0, t)), scale(a0, t * t / 2.0));
            let v = add(v0, scale(a0, t));
            spherical(r, v, a0)
        };
        let h = 1e-3;
        let (m, s0, p) = (at(-h), at(0.0), at(h));
        let fd = |a: f64, b: f64| (b - a) / (2.0 * h);
        assert!((fd(m.range_m, p.range_m) - s0.range_rate_mps).abs() < 1e-4);
        assert!((fd(m.azimuth_deg, p.azimuth_deg) - s0.azimuth_rate_dps).abs() < 1e-6);
        assert!((fd(m.elevation_deg, p.elevation_deg) - s0.elevation_rate_dps).abs() < 1e-6);
        assert!((fd(m.range_rate_mps, p.range_rate_mps) - s0.range_accel_mps2).abs() < 1e-4);
        assert!((fd(m.azimuth_rate_dps, p.azimuth_rate_dps) - s0.azimuth_accel_dps2).abs() < 1e-6);
        assert!(
            (fd(m.elevation_rate_dps, p.elevation_rate_dps) - s0.elevation_accel_dps2).abs() < 1e-6
        );
        assert!((s0.range_m - norm(r0)).abs() < 1e-9);
        assert!((s0.azimuth_deg - 36.869_897_645_844_02).abs() < 1e-9);
    }
}
