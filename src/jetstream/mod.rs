//! The JetStream streams of CONTRACT §3, the `[stream]` section that
//! shapes `TSPI`, and their idempotent creation.

use crate::config::limits;
use crate::contract::names;
use async_nats::jetstream::{self, stream};
use std::time::{Duration, Instant};

pub mod config;

pub use crate::contract::names::{STREAM_OPS, STREAM_REPLAY, STREAM_TELEMETRY};
pub use config::{DUPLICATE_WINDOW_DEFAULT, StreamConfig, StreamSettings};

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
    let backoffs =
        crate::backoff::Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
    let mut backoff = backoffs.initial();
    loop {
        match js.create_or_update_stream(config.clone()).await {
            Ok(info) if config.num_replicas > 1 => {
                return Ok(wait_for_leader(js, info, deadline).await);
            }
            Ok(info) => return Ok(info),
            Err(e) if Instant::now() < deadline && is_transient(&e) => {
                tracing::debug!(stream = %config.name, error = %e, "stream not ready, retrying");
                tokio::time::sleep(backoff).await;
                backoff = backoffs.next(backoff);
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
