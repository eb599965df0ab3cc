//! Every bound on a configuration value, in one place.
//!
//! Each number a configuration file can hold has a named [`Bound`] here:
//! its smallest and largest accepted value and its default. The sections'
//! validators check against these and nothing else, so two validators can
//! never disagree on a bound again.
//!
//! Why an upper bound on every duration and size: a value becomes other
//! units on its way to where it is used (seconds to the nanoseconds of a
//! JetStream stream definition, hours to seconds, days to microseconds), and
//! an unbounded `u64` wraps. `[stream] max_age_s = 18446744134` once passed
//! validation and reached the server as 60 s, which deleted every older
//! message of the shared `TSPI` stream. Here each bound is chosen so that
//! every conversion the code makes stays exact, and the `const` assertions
//! below prove it at compile time: a bound raised beyond what fits does not
//! build.
//!
//! The other assertions tie related values together (TigerBeetle's
//! `constants.zig` habit): the duplicate window covers the publish retry
//! horizon, the archive's ack wait outlasts its flush interval, and so on,
//! both for the defaults and for the largest accepted values.
//!
//! This module imports nothing: every stage may use it.

/// Nanoseconds per second, the unit JetStream durations travel in (as a
/// signed 64-bit integer).
pub const NS_PER_S: u64 = 1_000_000_000;
/// Milliseconds per second.
pub const MS_PER_S: u64 = 1_000;
/// The largest nanosecond count a JetStream duration (`i64`) holds.
pub const JETSTREAM_NS_MAX: u64 = i64::MAX as u64;

/// The accepted range and the default of one configuration number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    pub min: u64,
    pub max: u64,
    pub default: u64,
}

impl Bound {
    const fn new(min: u64, max: u64, default: u64) -> Bound {
        assert!(min <= default && default <= max);
        Bound { min, max, default }
    }

    pub const fn contains(&self, value: u64) -> bool {
        self.min <= value && value <= self.max
    }

    /// Push a problem naming `key` (`section.key`) when `value` is out of
    /// bounds.
    pub fn check(&self, key: &str, value: impl TryInto<u64>, problems: &mut Vec<String>) {
        let value: Option<u64> = value.try_into().ok();
        match value {
            Some(v) if self.contains(v) => {}
            Some(v) => problems.push(format!("{key} = {v}: must be {}..={}", self.min, self.max)),
            None => problems.push(format!("{key}: must be {}..={}", self.min, self.max)),
        }
    }
}

// usize values are compared as u64.
const _: () = assert!(usize::BITS <= u64::BITS);

/// `seconds` as a `Duration` for a JetStream field (serialized as `i64`
/// nanoseconds), or `None` where it would not fit. Validation keeps every
/// configured value inside; this is the last guard before the server.
pub const fn jetstream_secs(seconds: u64) -> Option<std::time::Duration> {
    match seconds.checked_mul(NS_PER_S) {
        Some(ns) if ns <= JETSTREAM_NS_MAX => Some(std::time::Duration::from_secs(seconds)),
        _ => None,
    }
}

/// Whether a `Duration` survives JetStream's `i64` nanoseconds exactly.
pub const fn fits_jetstream(d: std::time::Duration) -> bool {
    d.as_nanos() <= JETSTREAM_NS_MAX as u128
}

// ---------------------------------------------------------------- [stream]

/// `stream.replicas`: JetStream allows at most 5.
pub const STREAM_REPLICAS: Bound = Bound::new(1, 5, 1);
/// `stream.duplicate_window_s`: one day at most. The server holds about 180
/// bytes per message in the window (30 s at 100k msg/s is ~540 MB), so a
/// day is already far beyond what a box can hold at rate.
pub const STREAM_DUPLICATE_WINDOW_S: Bound = Bound::new(1, 86_400, 30);
/// `stream.age_max_s`: 0 (keep until other limits apply) or up to 100 years.
pub const STREAM_AGE_MAX_S: Bound = Bound::new(0, 3_155_760_000, 0);

const _: () = assert!(STREAM_DUPLICATE_WINDOW_S.max * NS_PER_S <= JETSTREAM_NS_MAX);
const _: () = assert!(STREAM_AGE_MAX_S.max * NS_PER_S <= JETSTREAM_NS_MAX);
// A retention of the largest window is possible (the server refuses a
// window longer than the age limit).
const _: () = assert!(STREAM_DUPLICATE_WINDOW_S.max <= STREAM_AGE_MAX_S.max);

// ---------------------------------------------------------------- [ingest]

/// `ingest.workers`: receive threads, one rtrb ring and one thread each.
pub const INGEST_WORKERS: Bound = Bound::new(1, 256, 1);
/// Core ids are below this (`CPU_SETSIZE`, the size of the affinity mask).
pub const CORE_ID_END: usize = 1024;
/// `ingest.udp`: listen addresses at most.
pub const INGEST_LISTEN_LEN_MAX: usize = 64;
/// `ingest.multicast`: groups at most.
pub const INGEST_MULTICAST_LEN_MAX: usize = 64;
/// `ingest.allow_sources`, and each `ingest.sources` entry's `allow`:
/// networks at most per list (checked one by one per datagram).
pub const INGEST_SOURCE_NETS_MAX: usize = 256;
/// `ingest.batch_len`: datagrams per `recvmmsg` call and buffers per
/// io_uring buffer ring (the kernel allows 32768 ring entries; the
/// completion queue is sized from this).
pub const INGEST_BATCH_LEN: Bound = Bound::new(1, 4096, 64);
/// `ingest.ring_capacity`: frames per receive thread's ring (about 56 bytes
/// a slot: 3.7 GiB at the maximum).
pub const INGEST_RING_CAPACITY: Bound = Bound::new(1, 1 << 26, 1 << 18);
/// `ingest.rcvbuf_bytes`: the kernel takes an `int` and doubles it.
pub const INGEST_RCVBUF_BYTES: Bound = Bound::new(1, 1 << 30, 32 << 20);

const _: () = assert!(INGEST_BATCH_LEN.max.is_power_of_two() && INGEST_BATCH_LEN.max <= 32_768);
const _: () = assert!(INGEST_RCVBUF_BYTES.max * 2 <= i32::MAX as u64 + 1);
const _: () = assert!(INGEST_WORKERS.max as usize <= CORE_ID_END);

// --------------------------------------------------------------- [publish]

/// `publish.acks_in_flight_max`.
pub const PUBLISH_ACKS_IN_FLIGHT_MAX: Bound = Bound::new(1, 65_536, 2048);
/// `publish.batch_len_max`: frames taken from one ring at a time.
pub const PUBLISH_BATCH_LEN_MAX: Bound = Bound::new(1, 65_536, 256);
/// `publish.ack_timeout_ms`: five minutes at most.
pub const PUBLISH_ACK_TIMEOUT_MS: Bound = Bound::new(1, 300_000, 5_000);
/// `publish.retry_backoff_initial_ms`.
pub const PUBLISH_RETRY_BACKOFF_INITIAL_MS: Bound = Bound::new(1, 300_000, 50);
/// `publish.retry_backoff_max_ms` (and at least the initial value).
pub const PUBLISH_RETRY_BACKOFF_MAX_MS: Bound = Bound::new(1, 300_000, 2_000);
/// `publish.drain_timeout_s`: 0 does not wait for outstanding acks.
pub const PUBLISH_DRAIN_TIMEOUT_S: Bound = Bound::new(0, 3_600, 10);
/// `publish.fast_flow_max`: the server caps a flow at 500 messages.
pub const PUBLISH_FAST_FLOW_MAX: Bound = Bound::new(1, 500, 500);
/// `publish.fast_ack_interval_us`: 0 always asks for `fast_flow_max`.
pub const PUBLISH_FAST_ACK_INTERVAL_US: Bound = Bound::new(0, 1_000_000, 250);
/// `publish.fast_acks_outstanding`: 1 stalls against nats-server 2.15.
pub const PUBLISH_FAST_ACKS_OUTSTANDING: Bound = Bound::new(2, 3, 2);
/// `publish.fast_batch_len_max`.
pub const PUBLISH_FAST_BATCH_LEN_MAX: Bound = Bound::new(1, 100_000_000, 100_000);
/// `publish.fast_batch_age_max_ms`: below 10 s, after which the server
/// abandons an idle batch.
pub const PUBLISH_FAST_BATCH_AGE_MAX_MS: Bound = Bound::new(1, 9_999, 2_000);
/// `publish.fast_commit_idle_ms`: below the server's 10 s as well.
pub const PUBLISH_FAST_COMMIT_IDLE_MS: Bound = Bound::new(1, 9_999, 5);

/// The publish retry horizon: how long after its first send a message may
/// still be sent again with the same `Nats-Msg-Id`.
pub const fn retry_horizon_ms(ack_timeout_ms: u64, retry_backoff_max_ms: u64) -> Option<u64> {
    ack_timeout_ms.checked_add(retry_backoff_max_ms)
}

// The default duplicate window covers the default retry horizon...
const _: () = assert!(
    STREAM_DUPLICATE_WINDOW_S.default * MS_PER_S
        > PUBLISH_ACK_TIMEOUT_MS.default + PUBLISH_RETRY_BACKOFF_MAX_MS.default
);
// ...and every accepted horizon can be covered by some accepted window.
const _: () = assert!(
    STREAM_DUPLICATE_WINDOW_S.max * MS_PER_S
        > PUBLISH_ACK_TIMEOUT_MS.max + PUBLISH_RETRY_BACKOFF_MAX_MS.max
);
const _: () =
    assert!(PUBLISH_RETRY_BACKOFF_INITIAL_MS.default <= PUBLISH_RETRY_BACKOFF_MAX_MS.default);
const _: () = assert!(PUBLISH_FAST_COMMIT_IDLE_MS.default <= PUBLISH_FAST_BATCH_AGE_MAX_MS.default);
const _: () = assert!(PUBLISH_FAST_BATCH_AGE_MAX_MS.max < 10_000);

// --------------------------------------------------------------- [metrics]

/// `metrics.interval_s`: an hour at most.
pub const METRICS_INTERVAL_S: Bound = Bound::new(1, 3_600, 10);

// ----------------------------------------------------------------- [spool]

/// `spool.max_bytes`: 1 MiB to 16 TiB; 1 GiB by default (about 19 million
/// frames of 56 bytes: 16 minutes at 20k/s).
pub const SPOOL_MAX_BYTES: Bound = Bound::new(1 << 20, 1 << 44, 1 << 30);
/// `spool.segment_bytes`: one segment file (read whole into memory by the
/// drain), 64 KiB to 256 MiB; 8 MiB by default.
pub const SPOOL_SEGMENT_BYTES: Bound = Bound::new(1 << 16, 1 << 28, 8 << 20);
/// `spool.drain_rate_per_s`: frames per second the drain hands the
/// publisher at most, beside live traffic (0: unpaced).
pub const SPOOL_DRAIN_RATE_PER_S: Bound = Bound::new(0, 10_000_000, 20_000);
/// `spool.fsync_interval_ms` (with `fsync = "interval"`).
pub const SPOOL_FSYNC_INTERVAL_MS: Bound = Bound::new(1, 60_000, 1_000);
/// `spool.spill_capacity`: frames per receive worker waiting for the
/// spool thread when the ring is full (~48 bytes each).
pub const SPOOL_SPILL_CAPACITY: Bound = Bound::new(1, 1 << 24, 1 << 16);
const _: () = assert!(SPOOL_SEGMENT_BYTES.max <= SPOOL_MAX_BYTES.min << 8);
const _: () = assert!(SPOOL_SEGMENT_BYTES.default <= SPOOL_MAX_BYTES.default);

// --------------------------------------------------------------- [archive]

/// `archive.batch_len_max`: bounds the COPY buffer (~300 bytes a row) and
/// the unacked messages per stream.
pub const ARCHIVE_BATCH_LEN_MAX: Bound = Bound::new(1, 100_000, 5_000);
/// `archive.flush_interval_ms`: a minute at most.
pub const ARCHIVE_FLUSH_INTERVAL_MS: Bound = Bound::new(1, 60_000, 200);
/// `archive.batches_in_flight_max`.
pub const ARCHIVE_BATCHES_IN_FLIGHT_MAX: Bound = Bound::new(1, 16, 2);
/// `archive.ack_wait_s`: an hour at most (a JetStream duration).
pub const ARCHIVE_ACK_WAIT_S: Bound = Bound::new(1, 3_600, 30);
/// `archive.retry_backoff_initial_ms`.
pub const ARCHIVE_RETRY_BACKOFF_INITIAL_MS: Bound = Bound::new(1, 300_000, 100);
/// `archive.retry_backoff_max_ms` (and at least the initial value).
pub const ARCHIVE_RETRY_BACKOFF_MAX_MS: Bound = Bound::new(1, 300_000, 5_000);
/// `archive.drain_timeout_s`.
pub const ARCHIVE_DRAIN_TIMEOUT_S: Bound = Bound::new(1, 3_600, 30);
/// `archive.partition_premake_days`.
pub const ARCHIVE_PARTITION_PREMAKE_DAYS: Bound = Bound::new(0, 366, 3);
/// `archive.retention_days`: 0 keeps everything; else up to 100 years (the
/// cut-off is computed in microseconds as an `i64`).
pub const ARCHIVE_RETENTION_DAYS: Bound = Bound::new(0, 36_525, 0);
/// `archive.compress_after_days` (TimescaleDB compression policy; 0: off).
pub const ARCHIVE_COMPRESS_AFTER_DAYS: Bound = Bound::new(0, 36_525, 0);
/// `archive.fold_interval_ms`: the per-minute aggregate's appended rows are
/// folded this often (a tenth of a second to ten minutes).
pub const ARCHIVE_FOLD_INTERVAL_MS: Bound = Bound::new(100, 600_000, 5_000);

/// `archive.maintenance_interval_s`: a day at most.
pub const ARCHIVE_MAINTENANCE_INTERVAL_S: Bound = Bound::new(1, 86_400, 3_600);

/// Microseconds per day, the unit of the archive's retention cut-off.
pub const US_PER_DAY: u64 = 86_400_000_000;

const _: () = assert!(ARCHIVE_ACK_WAIT_S.max * NS_PER_S <= JETSTREAM_NS_MAX);
const _: () = assert!(ARCHIVE_RETENTION_DAYS.max * US_PER_DAY <= i64::MAX as u64);
// An ack wait outlasts the flush interval, or every batch is redelivered
// before it is written: true of the defaults, and some accepted ack wait
// outlasts every accepted flush interval.
const _: () = assert!(ARCHIVE_ACK_WAIT_S.default * MS_PER_S > ARCHIVE_FLUSH_INTERVAL_MS.default);
const _: () = assert!(ARCHIVE_ACK_WAIT_S.max * MS_PER_S > ARCHIVE_FLUSH_INTERVAL_MS.max);
const _: () =
    assert!(ARCHIVE_RETRY_BACKOFF_INITIAL_MS.default <= ARCHIVE_RETRY_BACKOFF_MAX_MS.default);
// `max_ack_pending` (an i64) = batch_len_max * (batches_in_flight_max + 2).
const _: () =
    assert!(ARCHIVE_BATCH_LEN_MAX.max * (ARCHIVE_BATCHES_IN_FLIGHT_MAX.max + 2) <= i64::MAX as u64);

// -------------------------------------------------------------- [channels]

/// `channels.replay_age_max_h`: `TSPI_REPLAY` retention, a week at most
/// (the contract says 1 to 6 hours).
pub const CHANNELS_REPLAY_AGE_MAX_H: Bound = Bound::new(1, 168, 6);
/// Seconds per hour.
pub const S_PER_H: u64 = 3_600;
/// `channels.private_idle_s`: a day at most.
pub const CHANNELS_PRIVATE_IDLE_S: Bound = Bound::new(1, 86_400, 60);
/// `channels.private_max`: each replay has a pacing thread.
pub const CHANNELS_PRIVATE_MAX: Bound = Bound::new(0, 256, 32);
/// `channels.group_max`.
pub const CHANNELS_GROUP_MAX: Bound = Bound::new(0, 256, 4);
/// `channels.tag_before_s` / `tag_after_s`: a week each at most (the window
/// is computed in nanoseconds as a `u64` from the tag's moment).
pub const CHANNELS_TAG_BEFORE_S: Bound = Bound::new(0, 604_800, 60);
pub const CHANNELS_TAG_AFTER_S: Bound = Bound::new(0, 604_800, 600);
/// `channels.read_batch_len`.
pub const CHANNELS_READ_BATCH_LEN: Bound = Bound::new(1, 65_536, 1024);
/// `channels.read_batches_max`.
pub const CHANNELS_READ_BATCHES_MAX: Bound = Bound::new(1, 1024, 8);
/// `channels.acks_in_flight_max`.
pub const CHANNELS_ACKS_IN_FLIGHT_MAX: Bound = Bound::new(1, 65_536, 2048);
/// `channels.sink_queue_len`: about 0.5 KB a queued message.
pub const CHANNELS_SINK_QUEUE_LEN: Bound = Bound::new(1, 1_048_576, 16_384);
/// `channels.spin_us`.
pub const CHANNELS_SPIN_US: Bound = Bound::new(0, 10_000, 200);
/// `channels.pacing_realtime_priority`: 0 off, else a `SCHED_FIFO` priority.
pub const CHANNELS_PACING_REALTIME_PRIORITY: Bound = Bound::new(0, 99, 0);
/// `channels.private_per_client_max`: at most `private_max`'s bound.
pub const CHANNELS_PRIVATE_PER_CLIENT_MAX: Bound = Bound::new(1, 256, 2);
/// `channels.requests_per_min`: private replay starts of all clients. At
/// the default (1 a second after a burst of 8) a flood of invented client
/// ids takes 8 slots at once and one a second after.
pub const CHANNELS_REQUESTS_PER_MIN: Bound = Bound::new(1, 600_000, 60);
/// `channels.requests_burst`.
pub const CHANNELS_REQUESTS_BURST: Bound = Bound::new(1, 10_000, 8);
/// `channels.client_requests_per_min`: private replay starts of one client.
pub const CHANNELS_CLIENT_REQUESTS_PER_MIN: Bound = Bound::new(1, 60_000, 12);
/// `channels.client_requests_burst`.
pub const CHANNELS_CLIENT_REQUESTS_BURST: Bound = Bound::new(1, 1_000, 3);
/// `channels.controls_per_min`: controls (pause, resume, seek, rate) of one
/// running replay per minute, after `controls_burst` at once.
pub const CHANNELS_CONTROLS_PER_MIN: Bound = Bound::new(1, 60_000, 120);
/// `channels.controls_burst`.
pub const CHANNELS_CONTROLS_BURST: Bound = Bound::new(1, 1_000, 20);
/// `channels.operator_tokens` (with `operator_token`): how many at most.
pub const CHANNELS_OPERATOR_TOKENS_MAX: usize = 64;
/// Each operator token's length in bytes: 16 at least, so a token is not a
/// word; 256 at most, so every control message stays small.
pub const CHANNELS_OPERATOR_TOKEN_LEN_MIN: usize = 16;
pub const CHANNELS_OPERATOR_TOKEN_LEN_MAX: usize = 256;

const _: () = assert!(CHANNELS_REPLAY_AGE_MAX_H.max * S_PER_H * NS_PER_S <= JETSTREAM_NS_MAX);
// A tag's moment (now about 1.8e18 ns since 1970) plus the window stays in
// u64 for centuries.
const _: () = assert!(CHANNELS_TAG_AFTER_S.max * NS_PER_S < u64::MAX / 4);
const _: () = assert!(CHANNELS_TAG_BEFORE_S.max * NS_PER_S < u64::MAX / 4);
// The replay stream takes the telemetry stream's duplicate window; the
// server refuses a window longer than the age limit, so the largest window
// must fit the shortest replay retention... it does not (a day against an
// hour), hence the cross-key rule in `Config::validate`. The defaults fit:
const _: () =
    assert!(STREAM_DUPLICATE_WINDOW_S.default <= CHANNELS_REPLAY_AGE_MAX_H.default * S_PER_H);

// --- [console] ----------------------------------------------------------------

/// `console.tick_hz`: frames per second to each browser.
pub const CONSOLE_TICK_HZ: Bound = Bound::new(1, 60, 10);
/// `console.trail_s`: an hour at most (the trail's points are also capped
/// by [`CONSOLE_TRAIL_POINTS_MAX`]).
pub const CONSOLE_TRAIL_S: Bound = Bound::new(0, 3_600, 60);
/// `console.stale_s`.
pub const CONSOLE_STALE_S: Bound = Bound::new(1, 3_600, 5);
/// `console.expire_s`: a day at most.
pub const CONSOLE_EXPIRE_S: Bound = Bound::new(1, 86_400, 300);
/// `console.clients_max`: browsers at once.
pub const CONSOLE_CLIENTS_MAX: Bound = Bound::new(1, 4_096, 256);
/// `console.events_queue_len`: frames queued per browser.
pub const CONSOLE_EVENTS_QUEUE_LEN: Bound = Bound::new(1, 65_536, 1024);
/// `console.allowed_origins`: how many at most.
pub const CONSOLE_ALLOWED_ORIGINS_MAX: usize = 64;
/// `[[console.site]]`: how many at most.
pub const CONSOLE_SITES_MAX: usize = 4_096;
/// `console.site.alt_m`: accepted heights (m above the ellipsoid).
pub const CONSOLE_SITE_ALT_M: (f64, f64) = (-1_000.0, 100_000.0);
/// Points of one track's trail at most: a trail keeps a point every
/// `trail_s / CONSOLE_TRAIL_POINTS_MAX` at most, so a snapshot of a track
/// stays below about 40 KB of JSON whatever the update rate.
pub const CONSOLE_TRAIL_POINTS_MAX: usize = 600;

const _: () = assert!(CONSOLE_STALE_S.default <= CONSOLE_EXPIRE_S.default);
// Seconds become milliseconds in the track tables, far from overflow.
const _: () = assert!(CONSOLE_EXPIRE_S.max * MS_PER_S < u64::MAX / 4);
const _: () = assert!(CONSOLE_TRAIL_S.max * MS_PER_S < u64::MAX / 4);
