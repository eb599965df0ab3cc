//! Closed flight paths with exact derivatives.
//!
//! A [`Circuit`] is a loop of straight legs and circular arcs flown at
//! constant speed. Position, velocity and acceleration are closed forms of
//! time, so velocity is exactly the derivative of position and acceleration
//! of velocity; velocity is continuous everywhere (each piece starts with
//! the previous one's heading), acceleration steps where a pull starts or
//! ends, as it does for a real aircraft. A formation [`Roll`] turns a
//! wingman's offset about the leg's axis with an angle whose first and
//! second derivatives vanish at both ends, so it adds no step at all.

use crate::geo::{V3, add, cross, dot, norm, scale, sub};
use std::f64::consts::TAU;

/// Position, velocity and acceleration at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct State {
    pub p: V3,
    pub v: V3,
    pub a: V3,
}

/// One piece of a circuit, as described by whoever designs it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Segment {
    /// Straight ahead for this many metres.
    Straight { len_m: f64 },
    /// Turn about `axis` (a unit vector at right angles to the heading) by
    /// `angle_rad` on a circle of `radius_m`; the heading turns the way the
    /// right-hand rule about `axis` says.
    Arc {
        axis: V3,
        angle_rad: f64,
        radius_m: f64,
    },
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Line {
        v: V3,
    },
    /// `p(τ) = c + r0 cos ωτ + k×r0 sin ωτ`.
    Arc {
        c: V3,
        r0: V3,
        kxr0: V3,
        omega: f64,
    },
}

#[derive(Clone, Copy, Debug)]
struct Piece {
    t0_s: f64,
    p0: V3,
    kind: Kind,
}

/// Why a circuit cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CircuitError {
    #[error("speed must be positive and finite, got {0}")]
    Speed(f64),
    #[error("segment {index}: {what}")]
    Segment { index: usize, what: &'static str },
    #[error("the circuit does not close: it ends {gap_m:.3} m from its start")]
    Open { gap_m: f64 },
}

/// A closed loop flown at constant speed, forever (time wraps by the period).
#[derive(Clone, Debug)]
pub struct Circuit {
    pieces: Vec<Piece>,
    period_s: f64,
    speed_mps: f64,
}

impl Circuit {
    /// Fly `segments` from `start`, heading along the unit vector `heading`,
    /// at `speed_mps`. The segments must bring the aircraft back to its start
    /// with its start heading (within a millimetre and 1e-6 rad).
    pub fn build(
        start: V3,
        heading: V3,
        speed_mps: f64,
        segments: &[Segment],
    ) -> Result<Circuit, CircuitError> {
        if !(speed_mps.is_finite() && speed_mps > 0.0) {
            return Err(CircuitError::Speed(speed_mps));
        }
        let mut f = scale(heading, 1.0 / norm(heading));
        let mut p = start;
        let mut t = 0.0;
        let mut pieces = Vec::with_capacity(segments.len());
        for (index, s) in segments.iter().enumerate() {
            let bad = |what| CircuitError::Segment { index, what };
            match *s {
                Segment::Straight { len_m } => {
                    if !(len_m.is_finite() && len_m >= 0.0) {
                        return Err(bad("length must be finite and not negative"));
                    }
                    if len_m == 0.0 {
                        continue;
                    }
                    pieces.push(Piece {
                        t0_s: t,
                        p0: p,
                        kind: Kind::Line {
                            v: scale(f, speed_mps),
                        },
                    });
                    p = add(p, scale(f, len_m));
                    t += len_m / speed_mps;
                }
                Segment::Arc {
                    axis,
                    angle_rad,
                    radius_m,
                } => {
                    if !(radius_m.is_finite() && radius_m > 0.0 && angle_rad.is_finite()) {
                        return Err(bad("radius must be positive, angle finite"));
                    }
                    if (norm(axis) - 1.0).abs() > 1e-9 || dot(axis, f).abs() > 1e-9 {
                        return Err(bad(
                            "axis must be a unit vector at right angles to the heading",
                        ));
                    }
                    if angle_rad <= 0.0 {
                        return Err(bad("angle must be positive (turn the axis round instead)"));
                    }
                    let c = add(p, scale(cross(axis, f), radius_m));
                    let r0 = sub(p, c);
                    let kxr0 = cross(axis, r0);
                    let omega = speed_mps / radius_m;
                    pieces.push(Piece {
                        t0_s: t,
                        p0: p,
                        kind: Kind::Arc { c, r0, kxr0, omega },
                    });
                    let (s_, c_) = angle_rad.sin_cos();
                    p = add(c, add(scale(r0, c_), scale(kxr0, s_)));
                    let v = add(scale(r0, -s_), scale(kxr0, c_));
                    f = scale(v, 1.0 / norm(v));
                    t += angle_rad / omega;
                }
            }
        }
        let gap_m = norm(sub(p, start));
        let turn = norm(sub(f, scale(heading, 1.0 / norm(heading))));
        if gap_m > 1e-3 || turn > 1e-6 || pieces.is_empty() {
            return Err(CircuitError::Open { gap_m });
        }
        Ok(Circuit {
            pieces,
            period_s: t,
            speed_mps,
        })
    }

    /// Seconds to fly the circuit once.
    pub fn period_s(&self) -> f64 {
        self.period_s
    }

    pub fn speed_mps(&self) -> f64 {
        self.speed_mps
    }

    /// Start times of the pieces within one period (where acceleration may
    /// step).
    pub fn piece_starts_s(&self) -> impl Iterator<Item = f64> + '_ {
        self.pieces.iter().map(|p| p.t0_s)
    }

    /// Position, velocity and acceleration at time `t_s` (any real; wraps).
    #[inline]
    pub fn state(&self, t_s: f64) -> State {
        let t = t_s.rem_euclid(self.period_s);
        let i = self
            .pieces
            .partition_point(|p| p.t0_s <= t)
            .saturating_sub(1);
        let piece = &self.pieces[i];
        let tau = t - piece.t0_s;
        match piece.kind {
            Kind::Line { v } => State {
                p: add(piece.p0, scale(v, tau)),
                v,
                a: [0.0; 3],
            },
            Kind::Arc { c, r0, kxr0, omega } => {
                let (s, co) = (omega * tau).sin_cos();
                let r = add(scale(r0, co), scale(kxr0, s));
                State {
                    p: add(c, r),
                    v: scale(add(scale(r0, -s), scale(kxr0, co)), omega),
                    a: scale(r, -omega * omega),
                }
            }
        }
    }
}

/// A formation roll: over `[t0_s, t0_s + dur_s)` of the circuit's period an
/// offset turns once round `axis` (a unit vector), with the angle
/// `θ(s) = 2π (s/T − sin(2π s/T) / 2π)`, whose rate and acceleration are
/// zero at both ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Roll {
    pub t0_s: f64,
    pub dur_s: f64,
    pub axis: V3,
}

impl Roll {
    /// The offset `d` (at right angles to the axis) at circuit time `t_s`
    /// (already wrapped into one period), with its first two derivatives.
    #[inline]
    pub fn offset(&self, d: V3, t_s: f64) -> State {
        let s = t_s - self.t0_s;
        if !(0.0..self.dur_s).contains(&s) {
            return State {
                p: d,
                ..State::default()
            };
        }
        let w = TAU / self.dur_s;
        let (sin_ws, cos_ws) = (w * s).sin_cos();
        let theta = w * s - sin_ws;
        let d_theta = w * (1.0 - cos_ws);
        let dd_theta = w * w * sin_ws;
        let (st, ct) = theta.sin_cos();
        // Rodrigues for d ⟂ axis: R d = d cos θ + (k × d) sin θ.
        let kxd = cross(self.axis, d);
        let off = add(scale(d, ct), scale(kxd, st));
        let kxoff = cross(self.axis, off);
        State {
            p: off,
            v: scale(kxoff, d_theta),
            a: sub(scale(kxoff, dd_theta), scale(off, d_theta * d_theta)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: V3 = [0.0, 0.0, 1.0];

    fn racetrack() -> Circuit {
        Circuit::build(
            [0.0, 0.0, 1000.0],
            [1.0, 0.0, 0.0],
            100.0,
            &[
                Segment::Straight { len_m: 2000.0 },
                Segment::Arc {
                    axis: UP,
                    angle_rad: std::f64::consts::PI,
                    radius_m: 500.0,
                },
                Segment::Straight { len_m: 2000.0 },
                Segment::Arc {
                    axis: UP,
                    angle_rad: std::f64::consts::PI,
                    radius_m: 500.0,
                },
            ],
        )
        .unwrap()
    }

    #[test]
    fn racetrack_closes_with_the_expected_period() {
        let c = racetrack();
        let want = (4000.0 + 2.0 * std::f64::consts::PI * 500.0) / 100.0;
        assert!((c.period_s() - want).abs() < 1e-9);
        let s = c.state(c.period_s() * 3.0 + 1.0);
        let s0 = c.state(1.0);
        assert!(norm(sub(s.p, s0.p)) < 1e-6);
        // Constant speed; centripetal acceleration v²/R on the turns.
        let turn = c.state(2000.0 / 100.0 + 1.0);
        assert!((norm(turn.v) - 100.0).abs() < 1e-9);
        assert!((norm(turn.a) - 100.0 * 100.0 / 500.0).abs() < 1e-9);
    }

    #[test]
    fn open_circuits_are_refused() {
        let e = Circuit::build(
            [0.0; 3],
            [1.0, 0.0, 0.0],
            100.0,
            &[Segment::Straight { len_m: 10.0 }],
        );
        assert!(matches!(e, Err(CircuitError::Open { .. })), "{e:?}");
        let e = Circuit::build(
            [0.0; 3],
            [1.0, 0.0, 0.0],
            100.0,
            &[Segment::Arc {
                axis: [1.0, 0.0, 0.0],
                angle_rad: 1.0,
                radius_m: 10.0,
            }],
        );
        assert!(
            matches!(e, Err(CircuitError::Segment { index: 0, .. })),
            "{e:?}"
        );
    }

    #[test]
    fn roll_derivatives_match_finite_differences_and_vanish_at_the_ends() {
        let r = Roll {
            t0_s: 2.0,
            dur_s: 8.0,
            axis: [1.0, 0.0, 0.0],
        };
        let d = [0.0, 30.0, 0.0];
        let h = 1e-4;
        for i in 1..80 {
            let t = 2.0 + 0.1 * f64::from(i);
            let (m, s, p) = (r.offset(d, t - h), r.offset(d, t), r.offset(d, t + h));
            for k in 0..3 {
                assert!(((p.p[k] - m.p[k]) / (2.0 * h) - s.v[k]).abs() < 1e-5);
                assert!(((p.v[k] - m.v[k]) / (2.0 * h) - s.a[k]).abs() < 1e-4);
            }
            assert!(
                (norm(s.p) - 30.0).abs() < 1e-9,
                "the roll keeps the distance"
            );
        }
        let end = r.offset(d, 10.0 - 1e-9);
        assert!(norm(sub(end.p, d)) < 1e-6 && norm(end.v) < 1e-6 && norm(end.a) < 1e-4);
    }
}
