//! Every stream name and subject of the contract, spelled once.
//!
//! The message encoder, the stream definitions, the archiver's consumer
//! filters, the channels service and the metrics snapshots all take their
//! names from here. Pure: no I/O, imports only the message module's default
//! prefix (which the pure encoder owns).

/// The telemetry stream: `<prefix>.geocentric.>` and `<prefix>.spherical.>`.
pub const STREAM_TELEMETRY: &str = "TSPI";
/// Short-retention copy of replay channels for late joiners.
pub const STREAM_REPLAY: &str = "TSPI_REPLAY";
/// Operator traffic: control, status, commands, tags, metrics.
pub const STREAM_OPS: &str = "TSPI_OPS";

/// First subject token of telemetry messages (`<prefix>.<type>.<sensor>`)
/// unless `nats.subject_prefix` says otherwise.
pub use crate::message::DEFAULT_PREFIX as SUBJECT_PREFIX_DEFAULT;

/// The telemetry stream's subjects for a prefix.
pub fn telemetry_subjects(prefix: &str) -> Vec<String> {
    vec![
        format!("{prefix}.geocentric.>"),
        format!("{prefix}.spherical.>"),
    ]
}

/// `TSPI_REPLAY`'s subjects: group and private replay channels.
pub const REPLAY_SUBJECTS: [&str; 2] = ["tspi.channel.replay.>", "tspi.channel.client.>"];
/// `TSPI_OPS`'s subjects.
pub const OPS_SUBJECTS: [&str; 3] = ["tspi.ops.>", "tspi.cmd.>", "tags.>"];
/// What the archiver reads from `TSPI_OPS`: commands, tags, control and
/// status (not the metrics snapshots).
pub const OPS_SUBJECTS_ARCHIVED: [&str; 4] = ["tspi.cmd.>", "tags.>", SUBJECT_CTRL, SUBJECT_STATUS];

/// The live channel.
pub const SUBJECT_LIVESTREAM: &str = "tspi.channel.livestream";
/// Channel subjects start with this.
pub const SUBJECT_CHANNEL_PREFIX: &str = "tspi.channel.";
/// Group replay start/stop announcements.
pub const SUBJECT_CTRL: &str = "tspi.ops.ctrl";
/// Channel directory requests.
pub const SUBJECT_LIST_REQ: &str = "tspi.channel.list.req";
/// Private replay requests.
pub const SUBJECT_PRIVATE_REQ: &str = "tspi.channel.private.req";
/// Client status heartbeats.
pub const SUBJECT_STATUS: &str = "tspi.ops.status";
/// Tags for everyone.
pub const SUBJECT_TAGS: &str = "tags.broadcast";

/// Metrics snapshots of ingest boxes: `tspi.ops.metrics.ingest.<host>`.
pub const METRICS_SUBJECT_PREFIX: &str = "tspi.ops.metrics.ingest";
/// Every ingest box's snapshots.
pub const METRICS_SUBJECT_ALL: &str = "tspi.ops.metrics.ingest.>";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archived_ops_subjects_lie_inside_the_ops_stream() {
        for s in OPS_SUBJECTS_ARCHIVED {
            let covered = OPS_SUBJECTS.iter().any(|pattern| {
                let stem = pattern.trim_end_matches('>');
                s.starts_with(stem)
            });
            assert!(covered, "{s} is outside TSPI_OPS");
        }
        assert!(METRICS_SUBJECT_ALL.starts_with(METRICS_SUBJECT_PREFIX));
        assert!(SUBJECT_LIVESTREAM.starts_with(SUBJECT_CHANNEL_PREFIX));
    }
}
