//! `[stream]`: the `TSPI` stream's settings, and the settings every
//! stream definition takes. Pure: the definitions and their creation are
//! in the parent module.

use crate::config::limits;
use serde::Deserialize;
use std::time::Duration;

/// The contract's default duplicate window for `TSPI`.
pub const DUPLICATE_WINDOW_DEFAULT: Duration = Duration::from_secs(120);

/// Settings every stream definition takes.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamSettings {
    /// 1 on a single server, 3 on a cluster.
    pub replicas: usize,
    /// How long JetStream remembers a `Nats-Msg-Id`. Costs about 180 bytes of
    /// server memory per message held (bench/README.md, machine facts).
    pub duplicate_window: Duration,
    /// Retention by age; zero keeps messages until limits remove them.
    pub max_age: Duration,
    /// Allow fast-ingest batch publishing (nats-server 2.14+). On by
    /// default: ingest's default mode needs it on `TSPI`, and any part that
    /// creates or updates `TSPI` must not switch it off under a running
    /// ingest box (that box would fall back to pipelined publishing).
    pub allow_batch_publish: bool,
    /// Bring a stream that exists already to these settings. Off (the
    /// default): leave it as it is, logging each difference (the stream is
    /// shared: the last box started must not decide for everyone).
    pub update: bool,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            replicas: 1,
            duplicate_window: DUPLICATE_WINDOW_DEFAULT,
            max_age: Duration::ZERO,
            allow_batch_publish: true,
            update: false,
        }
    }
}

/// `[stream]`: the `TSPI` stream (CONTRACT §3).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Create the stream at start if it does not exist (see `update` for
    /// one that does). Off when an administrator manages streams.
    pub create: bool,
    /// 1 on a single server, 3 on a cluster.
    pub replicas: usize,
    /// How long JetStream remembers a `Nats-Msg-Id`. The server holds about
    /// 180 bytes per message in the window: 30 s at 100k msgs/s is ~540 MB;
    /// the contract's 120 s at that rate is ~2 GB. Must exceed the publish
    /// retry horizon (`publish.ack_timeout_ms` + `publish.retry_backoff_max_ms`).
    pub duplicate_window_s: u64,
    /// Retention by age; 0 keeps messages until other limits apply. At least
    /// the duplicate window otherwise (the server refuses a shorter one).
    /// Was `max_age_s`.
    #[serde(alias = "max_age_s")]
    pub age_max_s: u64,
    /// Update a stream that exists (`TSPI`, and `TSPI_OPS` / `TSPI_REPLAY`
    /// where the archive and channels make them) to these settings where it
    /// differs. Off by default: a stream made by someone else (the range
    /// toolkit, an administrator, another box) is left as it is and each
    /// difference logged; start is refused only when its subjects do not
    /// capture what the appliance publishes. `--update-stream` sets it.
    pub update: bool,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            create: true,
            replicas: limits::STREAM_REPLICAS.default as usize,
            duplicate_window_s: limits::STREAM_DUPLICATE_WINDOW_S.default,
            age_max_s: limits::STREAM_AGE_MAX_S.default,
            update: false,
        }
    }
}

impl StreamConfig {
    /// Every problem with these values alone (empty: fine), each naming its
    /// key. Rules that relate sections are in `Config::validate`.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        limits::STREAM_REPLICAS.check("stream.replicas", self.replicas, &mut p);
        limits::STREAM_DUPLICATE_WINDOW_S.check(
            "stream.duplicate_window_s",
            self.duplicate_window_s,
            &mut p,
        );
        limits::STREAM_AGE_MAX_S.check("stream.age_max_s", self.age_max_s, &mut p);
        if self.age_max_s != 0 && self.age_max_s < self.duplicate_window_s {
            p.push(format!(
                "stream.age_max_s = {} is shorter than stream.duplicate_window_s = {}: \
                 the server refuses it (0 keeps messages without an age limit)",
                self.age_max_s, self.duplicate_window_s
            ));
        }
        p
    }

    /// The `TSPI` stream's settings. Fast-ingest batches stay allowed
    /// whatever part (ingest in either mode, the archiver) creates or
    /// updates the stream: switching them off would push running ingest
    /// boxes back to pipelined publishing.
    ///
    /// # Panics
    /// On values [`StreamConfig::problems`] refuses (a programmer's error:
    /// validate first).
    pub fn telemetry_settings(&self) -> StreamSettings {
        let secs = |what: &str, s: u64| {
            limits::jetstream_secs(s).unwrap_or_else(|| {
                panic!("stream.{what} = {s} not validated: overflows nanoseconds")
            })
        };
        StreamSettings {
            replicas: self.replicas,
            duplicate_window: secs("duplicate_window_s", self.duplicate_window_s),
            max_age: secs("age_max_s", self.age_max_s),
            allow_batch_publish: true,
            update: self.update,
        }
    }
}
