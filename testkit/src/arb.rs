//! Property-test strategies for frames, shared by the integration tests
//! (`tspi_testkit::arb`) and the crate's own unit tests, which include this
//! file with `#[path]`: a unit test cannot take `Frame` from this crate,
//! whose `tspi` is a second build of the library, so they compile the
//! strategies against their own `crate` (named `tspi` there).

#![allow(dead_code)]

use proptest::prelude::*;
use tspi::codec::{self, Frame, Geocentric, Payload, Spherical};

/// Any valid frame, with every field drawn over its whole range.
pub fn arb_frame() -> impl Strategy<Value = Frame> {
    let geo = (any::<[i32; 3]>(), any::<[i16; 6]>()).prop_map(|(p, d)| {
        Payload::Geocentric(Geocentric {
            x: p[0],
            y: p[1],
            z: p[2],
            vx: d[0],
            vy: d[1],
            vz: d[2],
            ax: d[3],
            ay: d[4],
            az: d[5],
        })
    });
    let sph = (any::<i32>(), any::<[u32; 2]>(), any::<[i16; 6]>()).prop_map(|(r, ae, d)| {
        Payload::Spherical(Spherical {
            range: r,
            azimuth: ae[0],
            elevation: ae[1],
            azimuth_rate: d[0],
            elevation_rate: d[1],
            range_rate: d[2],
            azimuth_accel: d[3],
            elevation_accel: d[4],
            range_accel: d[5],
        })
    });
    (
        any::<u16>(),
        codec::DAY_MIN..=codec::DAY_MAX,
        0..codec::TIME_TICKS_END,
        any::<u8>(),
        any::<u16>(),
        prop_oneof![geo, sph],
    )
        .prop_map(
            |(sensor_id, day, time_ticks, status, status_flags, payload)| Frame {
                sensor_id,
                day,
                time_ticks,
                status,
                status_flags,
                payload,
            },
        )
}

/// Frames with every field at an end of its range.
pub fn edge_frame() -> impl Strategy<Value = Frame> {
    let i32s = prop::sample::select(vec![i32::MIN, -1, 0, 1, i32::MAX]);
    let u32s = prop::sample::select(vec![0, 1, u32::MAX]);
    let i16s = prop::sample::select(vec![i16::MIN, -1, 0, 1, i16::MAX]);
    (
        prop::sample::select(vec![0u16, u16::MAX]),
        prop::sample::select(vec![codec::DAY_MIN, codec::DAY_MAX]),
        prop::sample::select(vec![0u32, codec::TIME_TICKS_END - 1]),
        any::<bool>(),
        i32s,
        u32s,
        i16s,
    )
        .prop_map(|(sensor_id, day, time_ticks, geo, w, u, h)| Frame {
            sensor_id,
            day,
            time_ticks,
            status: 0xFF,
            status_flags: 0xFFFF,
            payload: if geo {
                Payload::Geocentric(Geocentric {
                    x: w,
                    y: w,
                    z: w,
                    vx: h,
                    vy: h,
                    vz: h,
                    ax: h,
                    ay: h,
                    az: h,
                })
            } else {
                Payload::Spherical(Spherical {
                    range: w,
                    azimuth: u,
                    elevation: u,
                    azimuth_rate: h,
                    elevation_rate: h,
                    range_rate: h,
                    azimuth_accel: h,
                    elevation_accel: h,
                    range_accel: h,
                })
            },
        })
}
