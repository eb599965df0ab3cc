//! Where the tracks fly: show boxes of formation teams (airshow) or cruise
//! traffic (normal). Pure functions of the config and its seed.

use crate::fleet::{FleetConfig, FleetError, Track};
use crate::geo::V3;
use crate::motion::{Circuit, Roll, Segment};
use crate::rng::Rng;
use std::f64::consts::{FRAC_PI_2, PI, TAU};

pub(crate) struct Laid {
    pub circuits: Vec<Circuit>,
    pub tracks: Vec<Track>,
    /// Automatic sensor sites (ENU of the range origin).
    pub auto_sites: Vec<V3>,
    /// Per track, its automatic site.
    pub auto_site_of: Vec<u16>,
}

/// Standard gravity, for turn loads.
const G: f64 = 9.806_65;

/// Rotation by `psi` about up, then (optionally) a mirror of the local x
/// axis: columns are the images of local x, y, z.
fn placement(psi: f64, mirror: bool) -> [V3; 3] {
    let (s, c) = psi.sin_cos();
    let x = if mirror { -1.0 } else { 1.0 };
    [[c * x, s * x, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]]
}

fn apply(m: &[V3; 3], v: V3) -> V3 {
    std::array::from_fn(|i| m[0][i] * v[0] + m[1][i] * v[1] + m[2][i] * v[2])
}

/// Teams per show box (four lanes, each an opposing pair).
const TEAMS_PER_BOX: u32 = 8;
/// Distance between show box centres.
const BOX_SPACING_M: f64 = 6_000.0;
/// Lateral spacing of formation slots, and the in-trail delay per slot.
const SLOT_LATERAL_M: f64 = 12.0;
const SLOT_TRAIL_S: f64 = 0.1;
/// Circuit designs shared by the teams (each placed and timed its own way).
const AIRSHOW_DESIGNS: u64 = 32;

/// An airshow circuit in the show-line frame (x along the show line, y
/// across, z up), starting at the west end of the low pass heading east:
/// low pass with a loop over show centre, pull up into a vertical climb,
/// over the top into the westbound high pass, down into a vertical dive,
/// and out level at the start. Returns the circuit and the roll window.
fn airshow_design(rng: &mut Rng, speed: (f64, f64)) -> Result<(Circuit, Roll), FleetError> {
    let v = rng.range(speed.0, speed.1);
    let g_pull = rng.range(4.0, 6.0);
    let r = v * v / (g_pull * G);
    let r_loop = r * rng.range(1.0, 1.3);
    let pass_m = rng.range(2_000.0, 3_000.0);
    let climb_m = rng.range(300.0, 800.0);
    let pitch: V3 = [0.0, -1.0, 0.0];
    let arc = |angle_rad, radius_m| Segment::Arc {
        axis: pitch,
        angle_rad,
        radius_m,
    };
    let segments = [
        Segment::Straight {
            len_m: pass_m / 2.0,
        },
        arc(TAU, r_loop),
        Segment::Straight {
            len_m: pass_m / 2.0,
        },
        arc(FRAC_PI_2, r),
        Segment::Straight { len_m: climb_m },
        arc(FRAC_PI_2, r),
        Segment::Straight { len_m: pass_m },
        arc(FRAC_PI_2, r),
        Segment::Straight { len_m: climb_m },
        arc(FRAC_PI_2, r),
    ];
    let c = Circuit::build([-pass_m / 2.0, 0.0, 0.0], [1.0, 0.0, 0.0], v, &segments)?;
    // The formation rolls once during the first half of the low pass.
    let first_leg_s = pass_m / 2.0 / v;
    let dur_s = (first_leg_s * 0.8).min(8.0);
    let roll = Roll {
        t0_s: (first_leg_s - dur_s) / 2.0,
        dur_s,
        axis: [1.0, 0.0, 0.0],
    };
    Ok((c, roll))
}

/// Lateral slot index of formation position `i` (0 leads): 0, -1, 1, -2, 2...
fn slot(i: u32) -> i32 {
    let n = i.div_ceil(2) as i32;
    if i % 2 == 1 { -n } else { n }
}

pub(crate) fn airshow(c: &FleetConfig, speed: (f64, f64)) -> Result<Laid, FleetError> {
    let designs_n = AIRSHOW_DESIGNS.min(u64::from(c.tracks.div_ceil(4)));
    let mut designs = Vec::new();
    let mut circuits = Vec::new();
    for d in 0..designs_n {
        let (circuit, roll) = airshow_design(&mut Rng::stream(c.seed, d), speed)?;
        circuits.push(circuit);
        designs.push(roll);
    }
    // Teams of 4 to 7 until the fleet is full.
    let mut team_sizes = Vec::new();
    let mut left = c.tracks;
    let mut team_rng = Rng::stream(c.seed, u64::MAX);
    while left > 0 {
        let n = (4 + team_rng.below(4) as u32).min(left);
        team_sizes.push(n);
        left -= n;
    }
    let boxes = (team_sizes.len() as u32).div_ceil(TEAMS_PER_BOX);
    let side = f64::from(boxes).sqrt().ceil() as u32;
    let mut tracks = Vec::with_capacity(c.tracks as usize);
    let mut auto_sites = Vec::with_capacity(boxes as usize);
    let mut auto_site_of = Vec::with_capacity(c.tracks as usize);
    let mut pair_design = 0u32;
    let mut pair_shift = 0.0;
    for (team, &size) in team_sizes.iter().enumerate() {
        let team = team as u32;
        let bx = team / TEAMS_PER_BOX;
        let mut box_rng = Rng::stream(c.seed ^ 0xB0C5, u64::from(bx));
        let psi = box_rng.range(0.0, PI);
        let centre = [
            (f64::from(bx % side) - f64::from(side - 1) / 2.0) * BOX_SPACING_M,
            (f64::from(bx / side) - f64::from(side - 1) / 2.0) * BOX_SPACING_M + 8_000.0,
            0.0,
        ];
        if team.is_multiple_of(TEAMS_PER_BOX) {
            // The box's tracking radar: 4 km off the show line, on the crowd side.
            auto_sites.push(crate::geo::add(
                centre,
                apply(&placement(psi, false), [0.0, -4_000.0, 0.0]),
            ));
        }
        let in_box = team % TEAMS_PER_BOX;
        let lane = in_box / 2;
        let opposing = in_box % 2 == 1;
        if !opposing {
            let mut pr = Rng::stream(c.seed ^ 0x9A1E, u64::from(team));
            pair_design = pr.below(designs_n) as u32;
            pair_shift = pr.range(0.0, circuits[pair_design as usize].period_s());
        }
        let m = placement(psi, opposing);
        // Lanes 150 m apart across the show line; an opposing team passes
        // 40 m off its partner and 30 m higher.
        let lane_y = (f64::from(lane) - 1.5) * 150.0 + if opposing { 40.0 } else { 0.0 };
        let alt = 150.0 + f64::from(lane) * 60.0 + if opposing { 30.0 } else { 0.0 };
        let b = crate::geo::add(centre, apply(&placement(psi, false), [0.0, lane_y, alt]));
        for i in 0..size {
            let s = slot(i);
            let k = tracks.len() as u32;
            tracks.push(Track {
                circuit: pair_design,
                shift_s: pair_shift - f64::from(s.unsigned_abs()) * SLOT_TRAIL_S,
                offset: [0.0, f64::from(s) * SLOT_LATERAL_M, 0.0],
                roll: (s != 0).then_some(designs[pair_design as usize]),
                m,
                b,
                sensor_id: c.sensor_id_base + k as u16,
                site: None,
            });
            auto_site_of.push(bx as u16);
        }
    }
    Ok(Laid {
        circuits,
        tracks,
        auto_sites,
        auto_site_of,
    })
}

/// Circuit designs shared by normal traffic.
const NORMAL_DESIGNS: u64 = 96;
/// Normal traffic flies within this radius of the origin.
const NORMAL_AREA_M: f64 = 30_000.0;

/// Orbit, racetrack or transit (a long racetrack), centred on the local
/// origin, starting on its southern side heading east.
fn normal_design(rng: &mut Rng, speed: (f64, f64)) -> Result<Circuit, FleetError> {
    let v = rng.range(speed.0, speed.1);
    let up: V3 = [0.0, 0.0, 1.0];
    let turn = |r: f64| Segment::Arc {
        axis: up,
        angle_rad: PI,
        radius_m: r,
    };
    // Standard-rate-ish turns: bank giving at most 1.5 g.
    let r_min = v * v / (1.1 * G);
    let (len_m, r) = match rng.below(3) {
        0 => (0.0, rng.range(r_min.max(3_000.0), 15_000.0)),
        1 => (
            rng.range(10_000.0, 40_000.0),
            rng.range(r_min.max(3_000.0), 6_000.0),
        ),
        _ => (
            rng.range(60_000.0, 120_000.0),
            rng.range(r_min.max(6_000.0), 9_000.0),
        ),
    };
    let segments = [
        Segment::Straight { len_m },
        turn(r),
        Segment::Straight { len_m },
        turn(r),
    ];
    Ok(Circuit::build(
        [-len_m / 2.0, -r, 0.0],
        [1.0, 0.0, 0.0],
        v,
        &segments,
    )?)
}

pub(crate) fn normal(c: &FleetConfig, speed: (f64, f64)) -> Result<Laid, FleetError> {
    let designs_n = NORMAL_DESIGNS.min(u64::from(c.tracks));
    let circuits = (0..designs_n)
        .map(|d| normal_design(&mut Rng::stream(c.seed, d), speed))
        .collect::<Result<Vec<_>, _>>()?;
    let auto_sites: Vec<V3> = (0..4)
        .map(|i| {
            let a = PI / 4.0 + f64::from(i) * FRAC_PI_2;
            [45_000.0 * a.sin(), 45_000.0 * a.cos(), 0.0]
        })
        .collect();
    let mut tracks = Vec::with_capacity(c.tracks as usize);
    let mut auto_site_of = Vec::with_capacity(c.tracks as usize);
    for k in 0..c.tracks {
        let mut r = Rng::stream(c.seed ^ 0x7A3C, u64::from(k));
        let design = r.below(designs_n) as u32;
        let psi = r.range(0.0, TAU);
        let dist = NORMAL_AREA_M * r.unit().sqrt();
        let bearing = r.range(0.0, TAU);
        let alt = r.range(1_500.0, 12_000.0);
        let b = [dist * bearing.sin(), dist * bearing.cos(), alt];
        tracks.push(Track {
            circuit: design,
            shift_s: r.range(0.0, circuits[design as usize].period_s()),
            offset: [0.0; 3],
            roll: None,
            m: placement(psi, false),
            b,
            sensor_id: c.sensor_id_base + k as u16,
            site: None,
        });
        auto_site_of.push((k % 4) as u16);
    }
    Ok(Laid {
        circuits,
        tracks,
        auto_sites,
        auto_site_of,
    })
}
