//! Edge: publish the interval snapshot over core NATS.

use super::report::Report;
use super::snapshot::snapshot_message;

/// The snapshot could not be handed to the NATS client.
#[derive(Debug, thiserror::Error)]
#[error(
    "publishing the metrics snapshot on {subject} failed ({source}): the NATS connection is \
     closed; operator tools miss this interval, the next one is tried again"
)]
pub struct SnapshotPublishError {
    pub subject: String,
    #[source]
    pub source: async_nats::PublishError,
}

/// Publish [`snapshot_message`] with a core NATS publish (fire and forget,
/// not JetStream: a missed snapshot is replaced by the next). If the
/// `TSPI_OPS` stream exists it also captures the message (`tspi.ops.>`).
pub async fn publish_snapshot(
    client: &async_nats::Client,
    r: &Report<'_>,
    host: &str,
) -> Result<(), SnapshotPublishError> {
    let (subject, body) = snapshot_message(r, host);
    client
        .publish(subject.clone(), body.into())
        .await
        .map_err(|source| SnapshotPublishError { subject, source })
}
