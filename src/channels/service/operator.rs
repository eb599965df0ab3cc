//! The operator's side of the channels service: what `tspi channels
//! start-replay`, `stop-replay`, `control` and `list` (and tests) send, and
//! how they wait for the service's answer on `tspi.ops.ctrl`.

use super::super::message::{
    self, ChannelId, Ctrl, DirectoryEntry, GroupReplayRequest, GroupReplayStart, GroupReplayStop,
    GroupReplayStopRequest, PrivateReplayReply, PrivateReplayRequest, ReplayControl,
    ReplayControlResult, ReplaySpec, SUBJECT_CTRL, SUBJECT_LIST_REQ, SUBJECT_PRIVATE_REQ,
    from_cbor, to_cbor,
};
use crate::replay::source::StartAt;
use futures_util::StreamExt;
use std::time::Duration;

/// Publish `body` on `tspi.ops.ctrl` and wait (up to `wait`) for the
/// control message `answer` picks: `Some(Ok(..))` the answer, `Some(Err)` a
/// refusal, `None` not this request's. `silence` says what did not come.
async fn ask_ctrl<T>(
    client: &async_nats::Client,
    body: Vec<u8>,
    wait: Duration,
    silence: impl FnOnce() -> String,
    mut answer: impl FnMut(Ctrl) -> Option<anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let mut ctrl = client.subscribe(SUBJECT_CTRL).await?;
    client.flush().await?;
    client.publish(SUBJECT_CTRL, body.into()).await?;
    client.flush().await?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let Ok(m) = tokio::time::timeout_at(deadline, ctrl.next()).await else {
            anyhow::bail!("{} within {wait:?}", silence());
        };
        let m = m.ok_or_else(|| anyhow::anyhow!("subscription closed"))?;
        if let Some(r) = Ctrl::decode(&m.payload).ok().and_then(&mut answer) {
            return r;
        }
    }
}

/// Ask the service for a group replay and wait for its `GroupReplayStart`
/// (or its `GroupReplayError`).
pub async fn request_group_replay(
    client: &async_nats::Client,
    req: &GroupReplayRequest,
    wait: Duration,
) -> anyhow::Result<GroupReplayStart> {
    ask_ctrl(
        client,
        to_cbor(req),
        wait,
        || "no answer from a channels service (is `tspi channels serve` running?)".into(),
        |c| match c {
            Ctrl::Start(s) if s.channel_id == req.channel_id => Some(Ok(s)),
            Ctrl::Error(e) if e.channel_id == req.channel_id => Some(Err(anyhow::anyhow!(
                "the channels service refused {}: {}",
                e.channel_id,
                e.error
            ))),
            _ => None,
        },
    )
    .await
}

/// Ask the service to stop a group replay and wait for its `GroupReplayStop`
/// (or its `GroupReplayError`). `operator_token`: see
/// [`GroupReplayRequest::operator_token`].
pub async fn stop_group_replay(
    client: &async_nats::Client,
    channel_id: &str,
    operator_token: Option<String>,
    wait: Duration,
) -> anyhow::Result<GroupReplayStop> {
    let req = GroupReplayStopRequest {
        kind: "GroupReplayStopRequest".into(),
        channel_id: channel_id.to_owned(),
        operator_token,
    };
    ask_ctrl(
        client,
        to_cbor(&req),
        wait,
        || format!("no GroupReplayStop for {channel_id} (is it running?)"),
        |c| match c {
            Ctrl::Stop(s) if s.channel_id == channel_id => Some(Ok(s)),
            Ctrl::Error(e) if e.channel_id == channel_id => Some(Err(anyhow::anyhow!(
                "the channels service refused to stop {channel_id}: {}",
                e.error
            ))),
            _ => None,
        },
    )
    .await
}

/// Send a control of a running replay and wait for its
/// `ReplayControlResult` (a refusal is an `Ok` with `ok: false`: the caller
/// shows its reason).
pub async fn control_replay(
    client: &async_nats::Client,
    req: &ReplayControl,
    wait: Duration,
) -> anyhow::Result<ReplayControlResult> {
    ask_ctrl(
        client,
        to_cbor(req),
        wait,
        || "no answer from a channels service (is `tspi channels serve` running?)".into(),
        |c| match c {
            Ctrl::ControlResult(r) if r.channel_id == req.channel_id && r.action == req.action => {
                Some(Ok(r))
            }
            _ => None,
        },
    )
    .await
}

/// The directory, as the service answers it.
pub async fn list_channels(
    client: &async_nats::Client,
    wait: Duration,
) -> anyhow::Result<Vec<DirectoryEntry>> {
    let m = tokio::time::timeout(wait, client.request(SUBJECT_LIST_REQ, bytes::Bytes::new()))
        .await
        .map_err(|_| anyhow::anyhow!("no directory answer within {wait:?}"))??;
    Ok(from_cbor(&m.payload)?)
}

/// Send a private replay request (or stop) and return the answer.
pub async fn private_request(
    client: &async_nats::Client,
    req: &PrivateReplayRequest,
    wait: Duration,
) -> anyhow::Result<PrivateReplayReply> {
    let m = tokio::time::timeout(
        wait,
        client.request(SUBJECT_PRIVATE_REQ, to_cbor(req).into()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer to the private replay request within {wait:?}"))??;
    Ok(from_cbor(&m.payload)?)
}

/// The channel id `tspi channels start-replay` uses: `--id` slugged, else
/// the tag id slugged, else `YYYYMMDDTHHMMSSZ` of the start time (or
/// `seq-<n>` for a sequence).
pub fn group_channel_id(id: Option<&str>, spec: &ReplaySpec) -> Result<ChannelId, String> {
    let token = if let Some(id) = id {
        message::slug(id).ok_or_else(|| format!("--id {id:?} has no letters or digits"))?
    } else if let Some(tag) = &spec.tag {
        message::slug(tag).ok_or_else(|| format!("tag {tag:?} has no letters or digits"))?
    } else if let Some(start) = &spec.start {
        match start.parse::<StartAt>().map_err(|e| e.to_string())? {
            StartAt::Time(ns) => crate::replay::time::compact_utc(ns),
            StartAt::Sequence(n) => format!("seq-{n}"),
        }
    } else {
        return Err("give a start or a tag".into());
    };
    ChannelId::parse(&format!("replay.{token}")).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_ids_for_requests() {
        let spec = |start: Option<&str>, tag: Option<&str>| ReplaySpec {
            start: start.map(str::to_owned),
            tag: tag.map(str::to_owned),
            rate: 1.0,
            ..ReplaySpec::default()
        };
        assert_eq!(
            group_channel_id(None, &spec(Some("2026-04-30T14:05:00.5+02:00"), None))
                .unwrap()
                .to_string(),
            "replay.20260430T120500Z"
        );
        assert_eq!(
            group_channel_id(None, &spec(Some("17"), None))
                .unwrap()
                .to_string(),
            "replay.seq-17"
        );
        assert_eq!(
            group_channel_id(None, &spec(None, Some("Merge #2")))
                .unwrap()
                .to_string(),
            "replay.merge-2"
        );
        assert_eq!(
            group_channel_id(Some("Sortie 12"), &spec(Some("1"), None))
                .unwrap()
                .to_string(),
            "replay.sortie-12"
        );
        assert!(group_channel_id(Some("!!"), &spec(Some("1"), None)).is_err());
        assert!(group_channel_id(None, &spec(None, None)).is_err());
    }
}
