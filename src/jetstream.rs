//! The JetStream streams of CONTRACT §3, and their idempotent creation.

use async_nats::jetstream::{self, stream};
use std::time::{Duration, Instant};

/// Live telemetry.
pub const STREAM_TELEMETRY: &str = "TSPI";
/// Short-retention copy of replay channels for late joiners.
pub const STREAM_REPLAY: &str = "TSPI_REPLAY";
/// Operator traffic: control, status, commands, tags, metrics.
pub const STREAM_OPS: &str = "TSPI_OPS";

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
        subjects: vec![
            format!("{prefix}.geocentric.>"),
            format!("{prefix}.spherical.>"),
        ],
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
        subjects: vec![
            "tspi.channel.replay.>".into(),
            "tspi.channel.client.>".into(),
        ],
        storage: stream::StorageType::File,
        num_replicas: s.replicas,
        duplicate_window: s.duplicate_window,
        max_age: if s.max_age.is_zero() {
            Duration::from_secs(6 * 3600)
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
        subjects: vec!["tspi.ops.>".into(), "tspi.cmd.>".into(), "tags.>".into()],
        storage: stream::StorageType::File,
        num_replicas: s.replicas,
        duplicate_window: s.duplicate_window,
        max_age: s.max_age,
        ..Default::default()
    }
}

/// Create the stream, or update it to `config` if it exists. Idempotent.
///
/// A cluster that has just started answers "JetStream system temporarily
/// unavailable" until it has elected a meta leader; that, and only that kind
/// of transient error, is retried until `wait` has passed.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
    wait: Duration,
) -> Result<stream::Info, jetstream::context::CreateStreamError> {
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
