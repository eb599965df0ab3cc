//! Edge: the archiver's durable pull consumers: created or updated with the
//! ack policy `archive.ack` asks for (`auto`: the existing consumer's, else
//! `all`), and under ack policy all rewound to the ack floor when
//! deliveries went unacked (a predecessor's) or missing.

use super::driver::{ArchiveError, OPS_SUBJECTS, stream_name};
use super::proto::Kind;
use super::{AckMode, AckSetting, ArchiveConfig};
use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, pull},
};
use std::time::Duration;

/// Create (or update) the durable pull consumer, with ack policy `ack`
/// (`auto`: the existing consumer's, else `all`); returns it and the
/// policy it has. Under ack policy all it is rewound to its ack floor when
/// it has unacked deliveries (at start: a predecessor's), or always with
/// `rewind` (a delivery went missing).
pub(super) async fn open_consumer(
    js: &jetstream::Context,
    kind: Kind,
    cfg: &ArchiveConfig,
    ack: AckSetting,
    rewind: bool,
) -> Result<(jetstream::consumer::Consumer<pull::Config>, AckMode), ArchiveError> {
    let name = stream_name(kind);
    let stream = js
        .get_stream(name)
        .await
        .map_err(|e| ArchiveError::NoStream {
            stream: name,
            source: e.into(),
        })?;
    let durable = match kind {
        Kind::Telemetry => cfg.durable.clone(),
        Kind::Ops => cfg.durable_ops.clone(),
    };
    let existing = stream.consumer_info(&durable).await.ok();
    let mode = match (ack, &existing) {
        (AckSetting::Explicit, _) => AckMode::Explicit,
        (AckSetting::All, _) => AckMode::All,
        (AckSetting::Auto, Some(info)) if info.config.ack_policy != AckPolicy::All => {
            AckMode::Explicit
        }
        (AckSetting::Auto, _) => AckMode::All,
    };
    let ack_policy = match mode {
        AckMode::All => AckPolicy::All,
        AckMode::Explicit => AckPolicy::Explicit,
    };
    let mut config = pull::Config {
        durable_name: Some(durable.clone()),
        description: Some("tspi archive".into()),
        ack_policy,
        ack_wait: Duration::from_secs(cfg.ack_wait_s),
        max_ack_pending: cfg.max_ack_pending(),
        filter_subjects: match kind {
            Kind::Telemetry => Vec::new(),
            Kind::Ops => OPS_SUBJECTS.iter().map(|s| (*s).to_owned()).collect(),
        },
        ..Default::default()
    };
    if let Some(info) = existing {
        if info.config.ack_policy != ack_policy {
            return Err(ArchiveError::AckPolicy {
                durable,
                stream: name,
                found: info.config.ack_policy,
                want: ack,
            });
        }
        // Keep where it was told to start (updates may not change it).
        config.deliver_policy = info.config.deliver_policy;
        if mode == AckMode::All && (rewind || info.num_ack_pending > 0) {
            // Messages delivered to a predecessor and never acked. Under
            // ack policy all, our first ack would cover them before they
            // are redelivered: rewind to the ack floor instead. What the
            // predecessor committed after the floor is skipped by the
            // unique keys.
            let start = info.ack_floor.stream_sequence + 1;
            tracing::warn!(
                consumer = %durable,
                unacked = info.num_ack_pending,
                start_sequence = start,
                "ack policy all: rewinding the consumer to its ack floor"
            );
            stream
                .delete_consumer(&durable)
                .await
                .map_err(|e| ArchiveError::Consumer {
                    what: "removing (to rewind it) the",
                    durable: durable.clone(),
                    stream: name,
                    source: e.into(),
                })?;
            config.deliver_policy = DeliverPolicy::ByStartSequence {
                start_sequence: start,
            };
        }
    }
    stream
        .create_consumer(config)
        .await
        .map(|c| (c, mode))
        .map_err(|e| ArchiveError::Consumer {
            what: "creating or updating the",
            durable,
            stream: name,
            source: e.into(),
        })
}
