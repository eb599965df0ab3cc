//! Pieces the benches share (each bench includes this file with `#[path]`).

use tspi::codec::{Geocentric, Payload};

/// The benches' geocentric payload: one fixed track, `y` varied by `i` so
/// bodies differ.
pub fn geocentric(i: u64) -> Payload {
    Payload::Geocentric(Geocentric {
        x: -155_123_456,
        y: -510_654_321 + (i % 1000) as i32,
        z: 340_111_222,
        vx: 12_000,
        vy: -3_000,
        vz: 150,
        ax: 10,
        ay: -20,
        az: 0,
    })
}
