//! Traffic for tests and benches: one deterministic [`frame`] (cheap, unique
//! per index, invertible from its message id) and one seeded generator
//! ([`Rng`], [`random_frame`]) whose frames vary every field.

use tspi::codec::{self, Frame, Geocentric, Payload, Spherical};
use tspi::message::{RecvTime, utc_day_ticks};

/// Sensors per tick: frame `i` is sensor `i % SENSORS` at tick `i / SENSORS`.
pub const SENSORS: u64 = 500;
/// The day every [`frame`] carries.
pub const DAY: u16 = 200;

/// Frame `i`: unique per `i` (sensor `i % SENSORS`, one 0.1 ms tick per
/// round of sensors, day [`DAY`]), every fourth spherical, the payload
/// varied by `i` so bodies differ. Callers that need other sensors or
/// times set those fields on the result.
pub fn frame(i: u64) -> Frame {
    let payload = if i % 4 == 3 {
        Payload::Spherical(Spherical {
            range: 1_234_567 + (i % 1000) as i32,
            azimuth: 45_000_000,
            elevation: 10_000_000,
            azimuth_rate: 12,
            elevation_rate: -3,
            range_rate: 250,
            ..Spherical::default()
        })
    } else {
        geocentric(i)
    };
    Frame {
        sensor_id: (i % SENSORS) as u16,
        day: DAY,
        time_ticks: (i / SENSORS) as u32,
        status: 0xFF,
        status_flags: 0x01,
        payload,
    }
}

/// The index of the [`frame`] a `Nats-Msg-Id` (`<sensor>:<day>:<s>.<frac>`)
/// names.
pub fn index_of(msg_id: &str) -> Option<u64> {
    let mut it = msg_id.split(':');
    let sensor: u64 = it.next()?.parse().ok()?;
    let _day = it.next()?;
    let (s, frac) = it.next()?.split_once('.')?;
    let ticks = s.parse::<u64>().ok()? * 10_000 + frac.parse::<u64>().ok()?;
    Some(ticks * SENSORS + sensor)
}

/// The geocentric payload of [`frame`]: one fixed track, `y` varied by `i`.
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

/// The seeded generator: a deterministic stream of u64s (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// 2023-11-14T22:13:20Z: the first receive time of [`random_frame`]. Sends
/// spaced 1.5 s apart cross midnight after ~4,270 messages, so two day
/// partitions get rows in the bigger archive tests.
pub const BASE_NS: u64 = 1_700_000_000_000_000_000;

/// Message `i` of `seed`: its frame (both types, every field varied;
/// `status_flags` 0 or 1, which is all the contract body carries) and its
/// receive time, about 1.5 s after message `i - 1`'s.
pub fn random_frame(i: u64, seed: u64) -> (Frame, RecvTime) {
    let mut r = Rng(seed ^ i.wrapping_mul(0x1234_5678_9ABC_DEF1));
    let recv = RecvTime::from_unix_ns(BASE_NS + i * 1_500_000_000 + r.next() % 1_000_000_000);
    let (day, time_ticks) = utc_day_ticks(recv.unix_ns);
    let payload = if i.is_multiple_of(3) {
        Payload::Spherical(Spherical {
            range: r.next() as i32,
            azimuth: r.next() as u32,
            elevation: r.next() as u32,
            azimuth_rate: r.next() as i16,
            elevation_rate: r.next() as i16,
            range_rate: r.next() as i16,
            azimuth_accel: r.next() as i16,
            elevation_accel: r.next() as i16,
            range_accel: r.next() as i16,
        })
    } else {
        Payload::Geocentric(Geocentric {
            x: r.next() as i32,
            y: r.next() as i32,
            z: r.next() as i32,
            vx: r.next() as i16,
            vy: r.next() as i16,
            vz: r.next() as i16,
            ax: r.next() as i16,
            ay: r.next() as i16,
            az: r.next() as i16,
        })
    };
    let f = Frame {
        sensor_id: 100 + (i % 37) as u16,
        day,
        time_ticks,
        status: r.next() as u8,
        status_flags: (r.next() % 2) as u16,
        payload,
    };
    assert_eq!(codec::parse(&f.encode()), Ok(f));
    (f, recv)
}

/// The codec bench's batch: `len` mixed frames (3 geocentric : 1
/// spherical, varying sensors, days and times) from a fixed seed, so the
/// inputs vary but every run encodes the same ones. The archive bench's
/// yardstick of the box's speed encodes them too.
pub fn codec_batch(len: usize) -> Vec<Frame> {
    // The tests' seeded generator, so the inputs vary but the bench is
    // reproducible.
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut next = move || (rng.next() >> 32) as u32;
    (0..len)
        .map(|i| {
            let payload = if i % 4 == 3 {
                Payload::Spherical(Spherical {
                    range: next() as i32 / 4,
                    azimuth: next() % 360_000_000,
                    elevation: next() % 90_000_000,
                    azimuth_rate: next() as i16,
                    elevation_rate: next() as i16,
                    range_rate: next() as i16,
                    ..Spherical::default()
                })
            } else {
                Payload::Geocentric(Geocentric {
                    x: -155_000_000 + (next() % 1_000_000) as i32,
                    y: -510_000_000 + (next() % 1_000_000) as i32,
                    z: 340_000_000 + (next() % 1_000_000) as i32,
                    vx: next() as i16,
                    vy: next() as i16,
                    vz: next() as i16,
                    ax: next() as i16,
                    ay: next() as i16,
                    az: next() as i16,
                })
            };
            Frame {
                sensor_id: 1000 + (i % 500) as u16,
                day: 1 + (next() % 366) as u16,
                time_ticks: next() % codec::TIME_TICKS_END,
                status: 0xFF,
                status_flags: 0x01,
                payload,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_unique_valid_and_invertible() {
        let mut ids = std::collections::HashSet::new();
        for i in 0..5 * SENSORS {
            let f = frame(i);
            assert_eq!(codec::parse(&f.encode()), Ok(f));
            let mut id = String::new();
            tspi::message::write_msg_id(&f, &mut id);
            assert_eq!(index_of(&id), Some(i), "{id}");
            assert!(ids.insert(id));
        }
    }

    #[test]
    fn random_frames_repeat_by_seed() {
        assert_eq!(random_frame(5, 1), random_frame(5, 1));
        assert_ne!(random_frame(5, 1).0, random_frame(5, 2).0);
    }
}
