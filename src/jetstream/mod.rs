//! The JetStream streams of CONTRACT §3, the `[stream]` section that
//! shapes `TSPI`, and their idempotent creation.

use crate::config::limits;
use crate::contract::names;
use async_nats::jetstream::{self, stream};
use std::time::{Duration, Instant};

pub mod config;
pub mod existing;

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

/// What [`ensure_stream_with`] does with a stream that exists already.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Existing {
    /// Update it to our settings where they differ (`stream.update`,
    /// `--update-stream`). Off: leave it as it is, logging each difference.
    pub update: bool,
    /// The subjects the stream must capture (what this appliance publishes
    /// there); `None`: the definition's own subjects. A stream that does not
    /// cover them is refused (unless updated).
    pub required: Option<Vec<String>>,
}

impl Existing {
    /// Update it or not; it must capture its definition's own subjects.
    pub fn update(update: bool) -> Self {
        Existing {
            update,
            required: None,
        }
    }
}

/// What `tspi ingest` publishes on `TSPI`: `<prefix>.geocentric.<sensor>`
/// and `<prefix>.spherical.<sensor>`. A `TSPI` that covers these (the
/// toolkit's `tspi.>` does) can be used as it is.
pub fn telemetry_required(prefix: &str) -> Vec<String> {
    vec![
        format!("{prefix}.geocentric.*"),
        format!("{prefix}.spherical.*"),
    ]
}

/// A stream could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum EnsureStreamError {
    #[error(transparent)]
    Create(#[from] jetstream::context::CreateStreamError),
    #[error("reading stream {stream}: {source}")]
    Info {
        stream: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "stream {stream} exists with subjects [{theirs}], which do not capture [{}], \
         what this appliance publishes there: add them to the stream, or update it \
         (stream.update = true, --update-stream)",
        missing.join(", ")
    )]
    MissingSubjects {
        stream: String,
        theirs: String,
        missing: Vec<String>,
    },
}

/// [`ensure_stream_with`], leaving a stream that exists as it is.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
    wait: Duration,
) -> Result<stream::Info, EnsureStreamError> {
    ensure_stream_with(js, config, &Existing::default(), wait).await
}

/// Create the stream if it does not exist. If it does, compare it with
/// `config` ([`existing::differences`]): log each difference and leave it
/// (or update it, with [`Existing::update`]); refuse it when its subjects
/// do not cover [`Existing::required`], naming the missing ones. The one
/// place every part (ingest, archive, channels, replay) makes its streams.
///
/// # Panics
/// When a duration of `config` does not fit JetStream's `i64` nanoseconds
/// (the client would send it wrapped: validate the configuration first).
///
/// A cluster that has just started answers "JetStream system temporarily
/// unavailable" until it has elected a meta leader; that, and only that kind
/// of transient error, is retried until `wait` has passed.
pub async fn ensure_stream_with(
    js: &jetstream::Context,
    config: stream::Config,
    existing: &Existing,
    wait: Duration,
) -> Result<stream::Info, EnsureStreamError> {
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
        let result = match current(js, &config.name).await {
            Ok(Some(theirs)) => return settle(js, theirs, config, existing, deadline).await,
            Ok(None) => js
                .create_stream(config.clone())
                .await
                .map(|s| s.cached_info().clone()),
            Err(e) => Err(e),
        };
        match result {
            Ok(info) if config.num_replicas > 1 => {
                return Ok(wait_for_leader(js, info, deadline).await);
            }
            Ok(info) => return Ok(info),
            // Another box created it between our look and our create: look
            // again (and compare).
            Err(e) if is_name_in_use(&e) => {}
            Err(e) if Instant::now() < deadline && is_transient(&e) => {
                tracing::debug!(stream = %config.name, error = %e, "stream not ready, retrying");
                tokio::time::sleep(backoff).await;
                backoff = backoffs.next(backoff);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The stream's info, `None` when it does not exist.
async fn current(
    js: &jetstream::Context,
    name: &str,
) -> Result<Option<stream::Info>, jetstream::context::CreateStreamError> {
    use jetstream::context::{CreateStreamError, CreateStreamErrorKind, GetStreamErrorKind};
    match js.get_stream(name).await {
        Ok(mut s) => match s.info().await {
            Ok(info) => Ok(Some(info.clone())),
            Err(e) => Err(CreateStreamError::with_source(
                CreateStreamErrorKind::Response,
                e,
            )),
        },
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(None)
            }
            GetStreamErrorKind::JetStream(j) => Err(CreateStreamError::new(
                CreateStreamErrorKind::JetStream(j.clone()),
            )),
            GetStreamErrorKind::Request => Err(CreateStreamError::with_source(
                CreateStreamErrorKind::TimedOut,
                e,
            )),
            _ => Err(CreateStreamError::with_source(
                CreateStreamErrorKind::Response,
                e,
            )),
        },
    }
}

/// A stream that exists: log how it differs, refuse it if it cannot
/// capture what is required, update it only when told to.
async fn settle(
    js: &jetstream::Context,
    theirs: stream::Info,
    ours: stream::Config,
    existing: &Existing,
    deadline: Instant,
) -> Result<stream::Info, EnsureStreamError> {
    let name = ours.name.clone();
    let diffs = existing::differences(&theirs.config, &ours);
    if diffs.is_empty() {
        return Ok(theirs);
    }
    if existing.update {
        for d in &diffs {
            tracing::warn!(stream = %name, key = d.key, theirs = %d.theirs, ours = %d.ours,
                "stream differs from this appliance's settings: updating it (stream.update)");
        }
        let info = js.update_stream(ours.clone()).await?;
        return Ok(if ours.num_replicas > 1 {
            wait_for_leader(js, info, deadline).await
        } else {
            info
        });
    }
    for d in &diffs {
        tracing::warn!(stream = %name, key = d.key, theirs = %d.theirs, ours = %d.ours,
            "stream differs from this appliance's settings: left as it is \
             (stream.update = true or --update-stream to update it)");
    }
    let required = existing.required.as_ref().unwrap_or(&ours.subjects);
    let missing = existing::missing_subjects(&theirs.config.subjects, required);
    if !missing.is_empty() {
        return Err(EnsureStreamError::MissingSubjects {
            stream: name,
            theirs: theirs.config.subjects.join(", "),
            missing,
        });
    }
    Ok(theirs)
}

/// "stream name already in use" (10058): created by someone else since we
/// looked.
fn is_name_in_use(e: &jetstream::context::CreateStreamError) -> bool {
    use jetstream::context::CreateStreamErrorKind as K;
    matches!(e.kind(), K::JetStream(js) if js.error_code().0 == 10058)
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
