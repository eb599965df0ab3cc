//! PURE. WGS84 geodesy for the console: geodetic <-> earth-centred (ECEF),
//! local east-north-up (ENU) frames, the spherical view of a sensor
//! (range, azimuth, elevation) and a velocity as speed, heading and climb.
//!
//! - ECEF -> geodetic is exact and closed-form (H. Vermeille, "Direct
//!   transformation from geocentric coordinates to geodetic coordinates",
//!   J. Geodesy 76, 2002), valid everywhere outside the evolute of the
//!   ellipsoid (a region within about 43 km of the Earth's centre); the
//!   height is then taken with the formula that is first-order insensitive
//!   to a latitude error, `h = p cos φ + z sin φ - a sqrt(1 - e² sin² φ)`.
//!   Round trips are better than a micrometre from 1 km below the ellipsoid
//!   to 100 km above it, poles included (property-tested).
//! - Azimuth is clockwise from true north, elevation above the local
//!   horizontal plane (the plane normal to the ellipsoid's normal at the
//!   site), as CONTRACT §1's spherical datagram and the load generator use
//!   them.
//! - Spherical velocity comes from the datagram's own range, azimuth and
//!   elevation rates through the Jacobian of the spherical -> ENU map
//!   ([`spherical_to_enu`]), not from differences of successive fixes: the
//!   rates are measured at the same instant as the position, so the
//!   velocity needs no earlier fix (nothing to go wrong when datagrams are
//!   lost or reordered), has no half-interval lag, and is computed exactly
//!   like the geocentric one (which also comes from the datagram). Its
//!   limit: the wire's angular rates have a resolution of 0.01 °/s, so the
//!   cross-range velocity has a resolution of `range × 1.75e-4 /s`
//!   (about 1.7 m/s at 10 km).
//!
//! The load generator (`tspi-loadgen`) flies its fleet with these same
//! functions: one definition of the ellipsoid and of its frames.

use serde::{Deserialize, Serialize};

/// Three-vector (metres, m/s, or unitless), ECEF or ENU as named.
pub type V3 = [f64; 3];

/// WGS84 semi-major axis `a` (m).
pub const WGS84_A_M: f64 = 6_378_137.0;
/// WGS84 flattening `f`.
pub const WGS84_F: f64 = 1.0 / 298.257_223_563;
/// WGS84 first eccentricity squared, `e² = f (2 - f)`.
pub const WGS84_E2: f64 = WGS84_F * (2.0 - WGS84_F);
/// WGS84 semi-minor axis `b = a (1 - f)` (m).
pub const WGS84_B_M: f64 = WGS84_A_M * (1.0 - WGS84_F);

fn add(a: V3, b: V3) -> V3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// A point on or above the WGS84 ellipsoid.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Geodetic {
    /// Geodetic latitude, degrees north, -90..=90.
    pub lat_deg: f64,
    /// Longitude, degrees east, -180..=180.
    pub lon_deg: f64,
    /// Height above the ellipsoid (m).
    pub alt_m: f64,
}

impl Geodetic {
    /// Earth-centred, earth-fixed coordinates (m).
    pub fn to_ecef(self) -> V3 {
        let (lat, lon) = (self.lat_deg.to_radians(), self.lon_deg.to_radians());
        let n = WGS84_A_M / (1.0 - WGS84_E2 * lat.sin().powi(2)).sqrt();
        [
            (n + self.alt_m) * lat.cos() * lon.cos(),
            (n + self.alt_m) * lat.cos() * lon.sin(),
            (n * (1.0 - WGS84_E2) + self.alt_m) * lat.sin(),
        ]
    }

    /// The exact inverse of [`Geodetic::to_ecef`] (Vermeille 2002, closed
    /// form; see the module note). Within about 43 km of the Earth's centre
    /// (never a real track) the result may be NaN: callers check
    /// [`Geodetic::is_finite`].
    pub fn from_ecef(p: V3) -> Geodetic {
        let [x, y, z] = p;
        let a2 = WGS84_A_M * WGS84_A_M;
        let e4 = WGS84_E2 * WGS84_E2;
        let rho2 = x * x + y * y;
        let rho = rho2.sqrt();
        let pp = rho2 / a2;
        let q = (1.0 - WGS84_E2) * z * z / a2;
        let r = (pp + q - e4) / 6.0;
        let s = e4 * pp * q / (4.0 * r * r * r);
        let t = (1.0 + s + (s * (2.0 + s)).sqrt()).cbrt();
        let u = r * (1.0 + t + 1.0 / t);
        let v = (u * u + e4 * q).sqrt();
        let w = WGS84_E2 * (u + v - q) / (2.0 * v);
        let k = (u + v + w * w).sqrt() - w;
        let d = k * rho / (k + WGS84_E2);
        let lat = 2.0 * z.atan2(d + (d * d + z * z).sqrt());
        let lon = y.atan2(x);
        let (sin_lat, cos_lat) = lat.sin_cos();
        let alt =
            rho * cos_lat + z * sin_lat - WGS84_A_M * (1.0 - WGS84_E2 * sin_lat * sin_lat).sqrt();
        Geodetic {
            lat_deg: lat.to_degrees(),
            lon_deg: lon.to_degrees(),
            alt_m: alt,
        }
    }

    /// All three values are finite numbers.
    pub fn is_finite(&self) -> bool {
        self.lat_deg.is_finite() && self.lon_deg.is_finite() && self.alt_m.is_finite()
    }
}

/// A local east-north-up frame tangent to the ellipsoid at a point: the
/// ENU rotation at a site, and its origin.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LocalFrame {
    /// The frame's origin in ECEF.
    pub origin_ecef: V3,
    /// Unit east, north and up vectors, in ECEF.
    pub axes: [V3; 3],
}

impl LocalFrame {
    pub fn new(at: Geodetic) -> Self {
        let (lat, lon) = (at.lat_deg.to_radians(), at.lon_deg.to_radians());
        LocalFrame {
            origin_ecef: at.to_ecef(),
            axes: enu_axes(lat, lon),
        }
    }

    /// An ENU vector (velocity, acceleration) in ECEF axes.
    #[inline]
    pub fn vec_to_ecef(&self, v: V3) -> V3 {
        let [e, n, u] = self.axes;
        std::array::from_fn(|i| e[i] * v[0] + n[i] * v[1] + u[i] * v[2])
    }

    /// An ENU point in ECEF.
    #[inline]
    pub fn point_to_ecef(&self, p: V3) -> V3 {
        add(self.origin_ecef, self.vec_to_ecef(p))
    }

    /// An ECEF vector in this frame's ENU axes.
    #[inline]
    pub fn vec_from_ecef(&self, v: V3) -> V3 {
        [
            dot(self.axes[0], v),
            dot(self.axes[1], v),
            dot(self.axes[2], v),
        ]
    }

    /// An ECEF point in this frame.
    #[inline]
    pub fn point_from_ecef(&self, p: V3) -> V3 {
        self.vec_from_ecef(sub(p, self.origin_ecef))
    }
}

/// Unit east, north and up vectors (ECEF) at geodetic latitude and
/// longitude in radians.
pub fn enu_axes(lat_rad: f64, lon_rad: f64) -> [V3; 3] {
    let (slat, clat) = lat_rad.sin_cos();
    let (slon, clon) = lon_rad.sin_cos();
    [
        [-slon, clon, 0.0],
        [-slat * clon, -slat * slon, clat],
        [clat * clon, clat * slon, slat],
    ]
}

/// A spherical measurement: range, azimuth (clockwise from true north),
/// elevation (above the local horizontal) and their rates, as CONTRACT §1
/// names them.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct SphericalFix {
    pub range_m: f64,
    pub azimuth_deg: f64,
    pub elevation_deg: f64,
    pub range_rate_mps: f64,
    pub azimuth_rate_dps: f64,
    pub elevation_rate_dps: f64,
}

/// Position and velocity of a spherical fix in the sensor's ENU frame:
/// `e = R cos el sin az`, `n = R cos el cos az`, `u = R sin el`, and the
/// velocity by the Jacobian of that map applied to the rates.
pub fn spherical_to_enu(f: &SphericalFix) -> (V3, V3) {
    let r = f.range_m;
    let (saz, caz) = f.azimuth_deg.to_radians().sin_cos();
    let (sel, cel) = f.elevation_deg.to_radians().sin_cos();
    let (dr, daz, del) = (
        f.range_rate_mps,
        f.azimuth_rate_dps.to_radians(),
        f.elevation_rate_dps.to_radians(),
    );
    let p = [r * cel * saz, r * cel * caz, r * sel];
    let v = [
        dr * cel * saz - r * sel * del * saz + r * cel * caz * daz,
        dr * cel * caz - r * sel * del * caz - r * cel * saz * daz,
        dr * sel + r * cel * del,
    ];
    (p, v)
}

/// A spherical fix from a sensor at `site`: the target's ECEF position and
/// ECEF velocity.
pub fn spherical_to_ecef(site: &LocalFrame, f: &SphericalFix) -> (V3, V3) {
    let (p, v) = spherical_to_enu(f);
    (site.point_to_ecef(p), site.vec_to_ecef(v))
}

/// A velocity as an operator reads it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Motion {
    /// Magnitude of the velocity (m/s, 3-D).
    pub speed_mps: f64,
    /// Direction of the horizontal velocity, degrees clockwise from true
    /// north, `[0, 360)`; `None` when the horizontal speed is below
    /// [`HEADING_SPEED_MIN_MPS`] (no direction to speak of).
    pub heading_deg: Option<f64>,
    /// Vertical speed (m/s, up positive).
    pub climb_mps: f64,
}

/// Below this horizontal speed (the wire's velocity resolution) there is
/// no heading.
pub const HEADING_SPEED_MIN_MPS: f64 = 0.01;

/// Speed, heading and climb of ECEF velocity `v_ecef` at `at`: the velocity
/// rotated into the ENU frame at the position.
pub fn motion(at: Geodetic, v_ecef: V3) -> Motion {
    let axes = enu_axes(at.lat_deg.to_radians(), at.lon_deg.to_radians());
    let [e, n, u] = [
        dot(axes[0], v_ecef),
        dot(axes[1], v_ecef),
        dot(axes[2], v_ecef),
    ];
    let horizontal = e.hypot(n);
    let heading_deg = (horizontal >= HEADING_SPEED_MIN_MPS)
        .then(|| e.atan2(n).to_degrees().rem_euclid(360.0))
        // rem_euclid can round up to exactly 360.0 for a tiny negative angle.
        .map(|h| if h >= 360.0 { 0.0 } else { h });
    Motion {
        speed_mps: (e * e + n * n + u * u).sqrt(),
        heading_deg,
        climb_mps: u,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn g(lat_deg: f64, lon_deg: f64, alt_m: f64) -> Geodetic {
        Geodetic {
            lat_deg,
            lon_deg,
            alt_m,
        }
    }

    fn close(a: V3, b: V3, tol: f64) -> bool {
        (0..3).all(|i| (a[i] - b[i]).abs() <= tol)
    }

    #[test]
    fn known_points() {
        // Equator, prime meridian: (a, 0, 0).
        assert!(close(
            g(0.0, 0.0, 0.0).to_ecef(),
            [WGS84_A_M, 0.0, 0.0],
            1e-9
        ));
        let back = Geodetic::from_ecef([WGS84_A_M, 0.0, 0.0]);
        assert_eq!((back.lat_deg, back.lon_deg), (0.0, 0.0));
        assert!(back.alt_m.abs() < 1e-9, "{back:?}");
        // Equator, 90° E, 1000 m up.
        let back = Geodetic::from_ecef([0.0, WGS84_A_M + 1000.0, 0.0]);
        assert!((back.lon_deg - 90.0).abs() < 1e-12 && (back.alt_m - 1000.0).abs() < 1e-9);
        // Poles: (0, 0, ±b); b = 6356752.314245 m.
        assert!((WGS84_B_M - 6_356_752.314_245).abs() < 1e-6);
        for sign in [1.0, -1.0] {
            let p = Geodetic::from_ecef([0.0, 0.0, sign * (WGS84_B_M + 250.0)]);
            assert_eq!(p.lat_deg, sign * 90.0, "{p:?}");
            assert!((p.alt_m - 250.0).abs() < 1e-9, "{p:?}");
        }
        // Published points: GeographicLib's CartConvert(1) examples,
        // `echo 33.3 44.4 6000 | CartConvert` => 3816209.60 3737108.55
        // 3485109.57, and in the local frame at 33 44 20 (`-l 33 44 20`)
        // => 37288.97 33374.29 5783.64 (east, north, up).
        let pt = g(33.3, 44.4, 6000.0);
        let p = pt.to_ecef();
        assert!(
            close(p, [3_816_209.60, 3_737_108.55, 3_485_109.57], 0.005),
            "{p:?}"
        );
        // The published figures are rounded to the centimetre: back to
        // within a centimetre (1e-7 degree is 1.1 cm or less).
        let back = Geodetic::from_ecef([3_816_209.60, 3_737_108.55, 3_485_109.57]);
        assert!((back.lat_deg - 33.3).abs() < 1e-7, "{back:?}");
        assert!((back.lon_deg - 44.4).abs() < 1e-7, "{back:?}");
        assert!((back.alt_m - 6000.0).abs() < 0.01, "{back:?}");
        let enu = LocalFrame::new(g(33.0, 44.0, 20.0)).point_from_ecef(p);
        assert!(
            close(enu, [37_288.97, 33_374.29, 5_783.64], 0.01),
            "{enu:?}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// geodetic -> ECEF -> geodetic everywhere on the globe, from 1 km
        /// below the ellipsoid to 100 km above it.
        #[test]
        fn round_trip_over_the_globe(
            lat in prop_oneof![-90.0f64..=90.0, Just(90.0), Just(-90.0), -1e-6f64..1e-6,
                               89.999f64..=90.0],
            lon in -180.0f64..180.0,
            alt in -1_000.0f64..=100_000.0,
        ) {
            let p = g(lat, lon, alt);
            let back = Geodetic::from_ecef(p.to_ecef());
            prop_assert!((back.alt_m - alt).abs() <= 1e-6, "{p:?} -> {back:?}");
            prop_assert!((back.lat_deg - lat).abs() <= 1e-9, "{p:?} -> {back:?}");
            // Longitude is undefined at a pole.
            if lat.abs() < 90.0 - 1e-9 {
                let dlon = (back.lon_deg - lon + 540.0).rem_euclid(360.0) - 180.0;
                prop_assert!(dlon.abs() <= 1e-9, "{p:?} -> {back:?}");
            }
            // And the other way: the point found lies where we started.
            prop_assert!(close(back.to_ecef(), p.to_ecef(), 1e-6));
        }

        /// ENU -> ECEF -> ENU is the identity and the axes orthonormal.
        #[test]
        fn enu_frames_are_rotations(
            lat in -90.0f64..=90.0, lon in -180.0f64..180.0,
            e in -1e5f64..1e5, n in -1e5f64..1e5, u in -1e5f64..1e5,
        ) {
            let f = LocalFrame::new(g(lat, lon, 100.0));
            for i in 0..3 {
                for j in 0..3 {
                    let want = if i == j { 1.0 } else { 0.0 };
                    prop_assert!((dot(f.axes[i], f.axes[j]) - want).abs() < 1e-12);
                }
            }
            prop_assert!(close(f.point_from_ecef(f.point_to_ecef([e, n, u])), [e, n, u], 1e-6));
        }
    }

    #[test]
    fn up_from_a_site_is_altitude() {
        let site = g(32.5, -106.5, 1200.0);
        let f = LocalFrame::new(site);
        let fix = SphericalFix {
            range_m: 5000.0,
            elevation_deg: 90.0,
            range_rate_mps: 10.0,
            ..SphericalFix::default()
        };
        let (p, v) = spherical_to_ecef(&f, &fix);
        let at = Geodetic::from_ecef(p);
        assert!((at.lat_deg - site.lat_deg).abs() < 1e-12, "{at:?}");
        assert!((at.lon_deg - site.lon_deg).abs() < 1e-12, "{at:?}");
        assert!((at.alt_m - 6200.0).abs() < 1e-6, "{at:?}");
        let m = motion(at, v);
        assert!((m.climb_mps - 10.0).abs() < 1e-9 && (m.speed_mps - 10.0).abs() < 1e-9);
        assert_eq!(m.heading_deg, None);
    }

    #[test]
    fn due_north_on_the_horizon() {
        // On the equator, 10 km due north at elevation 0: the tangent plane
        // rises above the ellipsoid by about d²/2R (7.8 m at 10 km), the
        // latitude is 10 km along the meridian's radius of curvature.
        let f = LocalFrame::new(g(0.0, 0.0, 0.0));
        let fix = SphericalFix {
            range_m: 10_000.0,
            ..SphericalFix::default()
        };
        let (p, _) = spherical_to_ecef(&f, &fix);
        assert!(close(p, [WGS84_A_M, 0.0, 10_000.0], 1e-9), "{p:?}");
        let at = Geodetic::from_ecef(p);
        assert_eq!(at.lon_deg, 0.0);
        // M at the equator = a (1 - e²) = 6335439.327 m.
        let m = WGS84_A_M * (1.0 - WGS84_E2);
        assert!(
            (at.lat_deg - (10_000.0 / m).to_degrees()).abs() < 1e-6,
            "{at:?}"
        );
        assert!(at.alt_m > 7.0 && at.alt_m < 9.0, "{at:?}");
    }

    #[test]
    fn headings_of_north_and_east() {
        let at = g(45.0, 10.0, 500.0);
        let f = LocalFrame::new(at);
        let m = motion(at, f.vec_to_ecef([0.0, 100.0, 0.0]));
        assert!((m.heading_deg.unwrap() - 0.0).abs() < 1e-9 && (m.speed_mps - 100.0).abs() < 1e-9);
        let m = motion(at, f.vec_to_ecef([100.0, 0.0, -5.0]));
        assert!((m.heading_deg.unwrap() - 90.0).abs() < 1e-9);
        assert!((m.climb_mps + 5.0).abs() < 1e-9);
        let m = motion(at, f.vec_to_ecef([-1.0, -1.0, 0.0]));
        assert!((m.heading_deg.unwrap() - 225.0).abs() < 1e-9);
        let m = motion(at, f.vec_to_ecef([-1.0, 0.0, 0.0]));
        assert!((m.heading_deg.unwrap() - 270.0).abs() < 1e-9);
    }

    /// The Jacobian velocity is the derivative of the position: compared
    /// with a central difference of the position over the rates.
    #[test]
    fn spherical_velocity_is_the_derivative_of_position() {
        let fix = |t: f64| SphericalFix {
            range_m: 20_000.0 + 150.0 * t,
            azimuth_deg: 40.0 + 0.3 * t,
            elevation_deg: 5.0 - 0.05 * t,
            range_rate_mps: 150.0,
            azimuth_rate_dps: 0.3,
            elevation_rate_dps: -0.05,
        };
        let h = 1e-3;
        let (_, v) = spherical_to_enu(&fix(0.0));
        let (pm, _) = spherical_to_enu(&fix(-h));
        let (pp, _) = spherical_to_enu(&fix(h));
        let fd: V3 = std::array::from_fn(|i| (pp[i] - pm[i]) / (2.0 * h));
        assert!(close(v, fd, 1e-3), "{v:?} vs {fd:?}");
    }
}
