//! The contract's test vectors (CONTRACT §7), shared by unit tests,
//! integration tests, the decode tool's tests and the demo.

/// Vector 1: geocentric, sensor 501, day 123, time 1.534 s, all flags set.
pub const GEOCENTRIC_1: &str =
    "c10401f5007b00003becff00010007d145fffff9f20001d4c004d2fdc90000000cffde0038";
/// Vector 2: spherical, sensor 2048, day 42, time 92.34 s.
pub const SPHERICAL_2: &str =
    "c2040800002a000e17080e00070005cc60031b574000a29271007bfe380315000cffde0038";
/// Vector 3: geocentric, extreme values, sensor 65535, day 366.
pub const GEOCENTRIC_3: &str =
    "c104ffff016e337f97ff00ff00800000007fffffffffffffff80007fffffff0001ffff0000";
/// Vector 4: spherical, extreme values, sensor 0, day 1.
pub const SPHERICAL_4: &str =
    "c2040000000100000001010000ffffffffffffffff0000000080007fffffff000000000000";

/// The four accepted vectors, in contract order.
pub const ACCEPTED: [&str; 4] = [GEOCENTRIC_1, SPHERICAL_2, GEOCENTRIC_3, SPHERICAL_4];

/// Decode a hex string (test data; panics on bad hex, which is a bug in the
/// caller's constant).
pub fn bytes(hex: &str) -> Vec<u8> {
    crate::hex::decode(hex).expect("contract vector is valid hex")
}

/// The contract's receive time for the rendering example: 1700000000.1234 s.
pub const RECV_EXAMPLE_UNIX_NS: u64 = 1_700_000_000_123_400_000;
/// `recv_iso` of [`RECV_EXAMPLE_UNIX_NS`].
pub const RECV_EXAMPLE_ISO: &str = "2023-11-14T22:13:20.123400+00:00";
/// The contract's whole-second receive time, 1700000000.0 s: its `recv_iso`
/// has no fraction, as the existing tools write it.
pub const RECV_WHOLE_UNIX_NS: u64 = 1_700_000_000_000_000_000;
/// `recv_iso` of [`RECV_WHOLE_UNIX_NS`].
pub const RECV_WHOLE_ISO: &str = "2023-11-14T22:13:20+00:00";
