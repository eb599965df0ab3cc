//! The JetStream streams of CONTRACT §3, the `[stream]` section that
//! shapes `TSPI`, and their idempotent creation.

use crate::config::limits;
use crate::contract::names;
use async_nats::jetstream::{self, stream};
use serde::Deserialize;
use std::time::{Duration, Instant};

pub use crate::contract::names::{STREAM_OPS, STREAM_REPLAY, STREAM_TELEMETRY};

/// `[stream]`: the `TSPI` stream (CONTRACT §3).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Create or update the stream at start (idempotent). Off when an
    /// administrator manages streams.
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
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            create: true,
            replicas: limits::STREAM_REPLICAS.default as usize,
            duplicate_window_s: limits::STREAM_DUPLICATE_WINDOW_S.default,
            age_max_s: limits::STREAM_AGE_MAX_S.default,
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
        }
    }
}

/// The contract's default duplicate window for `TSPI`.
pub const DUPLICATE_WINDOW_DEFAULT: Duration = Duration::from_secs(120);

/// Settings every stream definition takes.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamSettings {
    /// 1 on a single server, 3 on a cluster.
    pub replicas: usize,
    /// How long JetStream remembers a `Nats-Msg-Id`. Costs about 180 bytes of
    /// server memory per message held (NOTES.md).
    pub duplicate_window: Duration,
    /// Retention by age; zero keeps messages until limits remove them.
    pub max_age: Duration,
    /// Allow fast-ingest batch publishing (nats-server 2.14+). On by
    /// default: ingest's default mode needs it on `TSPI`, and any part that
    /// creates or updates `TSPI` must not switch it off under a running
    /// ingest box (that box would fall back to pipelined publishing).
    pub allow_batch_publish: bool,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            replicas: 1,
            duplicate_window: DUPLICATE_WINDOW_DEFAULT,
            max_age: Duration::ZERO,
            allow_batch_publish: true,
        }
    }
}

/// `TSPI`: `<prefix>.geocentric.>` and `<prefix>.spherical.>`, file storage.
pub fn telemetry_stream(prefix: &str, s: &StreamSettings) -> stream::Config {
    stream::Config {
        name: STREAM_TELEMETRY.to_owned(),
        subjects: names::telemetry_subjects(prefix),
        storage: stream::StorageType::File,
        num_replicas: s.replicas,
        duplicate_window: s.duplicate_window,
        max_age: s.max_age,
        allow_batch_publish: s.allow_batch_publish,
        ..Default::default()
    }
}

/// `TSPI_REPLAY`: replay channels, short retention (default 6 h).
pub fn replay_stream(s: &StreamSettings) -> stream::Config {
    stream::Config {
        name: STREAM_REPLAY.to_owned(),
        subjects: names::REPLAY_SUBJECTS.map(String::from).to_vec(),
        storage: stream::StorageType::File,
        num_replicas: s.replicas,
        duplicate_window: s.duplicate_window,
        max_age: if s.max_age.is_zero() {
            Duration::from_secs(limits::CHANNELS_REPLAY_AGE_MAX_H.default * limits::S_PER_H)
        } else {
            s.max_age
        },
        ..Default::default()
    }
}

/// `TSPI_OPS`: `tspi.ops.>`, `tspi.cmd.>`, `tags.>`.
pub fn ops_stream(s: &StreamSettings) -> stream::Config {
    stream::Config {
        name: STREAM_OPS.to_owned(),
        subjects: names::OPS_SUBJECTS.map(String::from).to_vec(),
        storage: stream::StorageType::File,
        num_replicas: s.replicas,
        duplicate_window: s.duplicate_window,
        max_age: s.max_age,
        ..Default::default()
    }
}

/// Create the stream, or update it to `config` if it exists. Idempotent.
///
/// # Panics
/// When a duration of `config` does not fit JetStream's `i64` nanoseconds
/// (the client would send it wrapped: validate the configuration first).
///
/// A cluster that has just started answers "JetStream system temporarily
/// unavailable" until it has elected a meta leader; that, and only that kind
/// of transient error, is retried until `wait` has passed.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
    wait: Duration,
) -> Result<stream::Info, jetstream::context::CreateStreamError> {
    assert!(
        limits::fits_jetstream(config.max_age) && limits::fits_jetstream(config.duplicate_window),
        "stream {}: max_age {:?} or duplicate_window {:?} overflows nanoseconds",
        config.name,
        config.max_age,
        config.duplicate_window
    );
    let deadline = Instant::now() + wait;
    let mut backoff = Duration::from_millis(50);
    loop {
        match js.create_or_update_stream(config.clone()).await {
            Ok(info) if config.num_replicas > 1 => {
                return Ok(wait_for_leader(js, info, deadline).await);
            }
            Ok(info) => return Ok(info),
            Err(e) if Instant::now() < deadline && is_transient(&e) => {
                tracing::debug!(stream = %config.name, error = %e, "stream not ready, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            Err(e) => return Err(e),
        }
    }
}

/// A replicated stream answers publishes only once its RAFT group has a
/// leader; until then a publish gets "no responders". Wait (bounded) for
/// one; on timeout return what we have and let publish retries cover it.
async fn wait_for_leader(
    js: &jetstream::Context,
    mut info: stream::Info,
    deadline: Instant,
) -> stream::Info {
    while info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.as_ref())
        .is_none()
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(25)).await;
        if let Ok(mut s) = js.get_stream(&info.config.name).await
            && let Ok(i) = s.info().await
        {
            info = i.clone();
        }
    }
    info
}

fn is_transient(e: &jetstream::context::CreateStreamError) -> bool {
    use jetstream::context::CreateStreamErrorKind as K;
    match e.kind() {
        K::TimedOut | K::JetStreamUnavailable => true,
        K::JetStream(js) => {
            // 10008: temporarily unavailable; 10074: insufficient resources
            // (peers not yet known) during cluster formation.
            matches!(js.error_code().0, 10008 | 10023 | 10074)
        }
        _ => false,
    }
}
