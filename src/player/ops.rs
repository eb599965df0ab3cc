//! The operator's side on NATS (`tspi console ...`): display commands and
//! tags published to JetStream with their `Nats-Msg-Id`, the roster of
//! clients from their heartbeats, and the operations log from `TSPI_OPS`.
//!
//! **Who may.** These go straight to NATS subjects; no appliance process
//! sits between the operator and the subject, so nothing here checks an
//! operator token: NATS permissions decide who may publish on
//! `tspi.cmd.>` and `tags.>` (give operators' accounts publish rights
//! there, everyone else subscribe rights only). Group replay control goes
//! through the channels service, which checks `[channels] operator_tokens`
//! (`tspi channels start-replay --operator-token`).

use super::view::{OpsKind, OpsLine, Roster, RosterEntry, Seen};
use crate::channels::message::{Heartbeat, SUBJECT_STATUS, SUBJECT_TAGS, from_cbor};
use crate::contract::names::{STREAM_OPS, SUBJECT_CTRL};
use crate::message::RecvTime;
use crate::message::ops::{NewTag, encode_command, encode_tag, event_json};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// `n` random bytes as hex (std's per-process random hash keys, mixed
/// with the time and a counter; ids need uniqueness, not secrecy).
pub fn random_hex(n: usize) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::with_capacity(2 * n);
    while out.len() < 2 * n {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(RecvTime::now().unix_ns);
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u32(std::process::id());
        for b in h.finish().to_be_bytes() {
            out.push_str(&format!("{b:02x}"));
        }
    }
    out.truncate(2 * n);
    out
}

/// A new unique id: `<prefix>-<unix ms>-<16 hex digits>` (sortable by
/// time, 1 to 64 of `[A-Za-z0-9_-]`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}-{}", RecvTime::now().epoch_ms(), random_hex(8))
}

/// RFC 3339 (UTC, µs) of a wall-clock time.
pub fn iso(t: RecvTime) -> String {
    t.iso().as_str().to_owned()
}

async fn publish_js(
    js: &jetstream::Context,
    subject: String,
    msg_id: &str,
    body: Vec<u8>,
) -> anyhow::Result<()> {
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", msg_id);
    let ack = js
        .publish_with_headers(subject.clone(), h, body.into())
        .await
        .map_err(|e| anyhow::anyhow!("publishing to {subject}: {e}"))?;
    ack.await.map_err(|e| {
        anyhow::anyhow!(
            "{subject} was not stored ({e}): is there a {STREAM_OPS} stream \
             (`tspi channels serve` or `tspi run` creates it)?"
        )
    })?;
    Ok(())
}

/// Publish display command `name` (`units`, `marker_color`,
/// `session_metadata`) on `tspi.cmd.display.<name>` with `Nats-Msg-Id =
/// cmd_id`; returns the command's JSON form (what was sent).
pub async fn send_display(
    js: &jetstream::Context,
    name: &str,
    payload: ciborium::Value,
    sender: &str,
) -> anyhow::Result<serde_json::Value> {
    let cmd_id = new_id("cmd");
    let ts = iso(RecvTime::now());
    let body = encode_command(&cmd_id, name, &ts, sender, payload.clone());
    publish_js(js, format!("tspi.cmd.display.{name}"), &cmd_id, body).await?;
    Ok(serde_json::json!({
        "cmd_id": cmd_id,
        "name": name,
        "ts": ts,
        "sender": sender,
        "payload": crate::message::ops::to_json(&payload),
    }))
}

/// Publish a tag on `tags.broadcast` with `Nats-Msg-Id = id`.
pub async fn send_tag(js: &jetstream::Context, tag: &NewTag) -> anyhow::Result<()> {
    publish_js(js, SUBJECT_TAGS.to_owned(), &tag.id, encode_tag(tag)).await
}

fn stored_ns(m: &jetstream::Message) -> u64 {
    m.info()
        .map(|i| i.published.unix_timestamp_nanos().max(0) as u64)
        .unwrap_or_else(|_| RecvTime::now().unix_ns)
}

/// Most messages read from `TSPI_OPS` history in one run.
pub const HISTORY_MAX: usize = 1_000_000;

/// Read `TSPI_OPS` (subjects `filters`) from `start`: every stored message
/// to `f` up to the last one stored when it began, then, with `follow`,
/// what comes after until `stop`. No `TSPI_OPS`: nothing to read (an
/// error).
async fn read_ops(
    js: &jetstream::Context,
    filters: Vec<String>,
    start: consumer::DeliverPolicy,
    follow: bool,
    stop: impl std::future::Future<Output = ()>,
    mut f: impl FnMut(&jetstream::Message),
    mut tick: impl FnMut(),
) -> anyhow::Result<()> {
    let mut stream = js
        .get_stream(STREAM_OPS)
        .await
        .map_err(|e| anyhow::anyhow!("no {STREAM_OPS} stream ({e})"))?;
    let last = stream.info().await?.state.last_sequence;
    let c = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subjects: filters,
            deliver_policy: start,
            ..Default::default()
        })
        .await?;
    let mut pending = c.cached_info().num_pending;
    if pending == 0 && !follow {
        return Ok(());
    }
    let mut msgs = c.messages().await?;
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(stop);
    let mut read = 0usize;
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = ticks.tick() => tick(),
            m = msgs.next() => {
                let Some(m) = m else { return Ok(()) };
                let m = m.map_err(|e| anyhow::anyhow!("reading {STREAM_OPS}: {e}"))?;
                read += 1;
                f(&m);
                let (seq, left) = m.info().map(|i| (i.stream_sequence, i.pending)).unwrap_or((last, 0));
                pending = left;
                if !follow && (pending == 0 || seq >= last || read >= HISTORY_MAX) {
                    return Ok(());
                }
            }
        }
    }
}

/// The clients whose heartbeat `TSPI_OPS` stored within the last `stale`,
/// plus those heard while listening `listen` more, expired at the end.
pub async fn roster(
    client: &async_nats::Client,
    stale: Duration,
    listen: Duration,
) -> anyhow::Result<(Vec<RosterEntry>, u64)> {
    let js = jetstream::new(client.clone());
    let mut r = Roster::new(stale.as_nanos() as u64);
    let mut live = client.subscribe(SUBJECT_STATUS).await?;
    client.flush().await?;
    let since_ns = RecvTime::now()
        .unix_ns
        .saturating_sub(stale.as_nanos() as u64);
    let since = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(since_ns))?;
    let mut bad = 0u64;
    read_ops(
        &js,
        vec![SUBJECT_STATUS.to_owned()],
        consumer::DeliverPolicy::ByStartTime { start_time: since },
        false,
        std::future::pending(),
        |m| match from_cbor::<Heartbeat>(&m.payload) {
            Ok(hb) => {
                r.see(stored_ns(m), hb);
            }
            Err(_) => bad += 1,
        },
        || {},
    )
    .await?;
    let end = tokio::time::Instant::now() + listen;
    while let Ok(Some(m)) = tokio::time::timeout_at(end, live.next()).await {
        match from_cbor::<Heartbeat>(&m.payload) {
            Ok(hb) => {
                r.see(RecvTime::now().unix_ns, hb);
            }
            Err(_) => bad += 1,
        }
    }
    let now = RecvTime::now().unix_ns;
    r.expire(now);
    Ok((r.entries(now), bad))
}

/// Options of the operations log.
#[derive(Clone, Debug)]
pub struct OpsLogOptions {
    /// History from this long ago (zero: none, only what comes next).
    pub since: Duration,
    pub follow: bool,
    pub json: bool,
    /// A client silent this long is reported gone (follow only).
    pub stale: Duration,
}

/// Print the operations log: control messages, display commands, tags, and
/// status heartbeats only when a client appears, changes state or channel,
/// or (with `follow`) falls silent. One line each, text or JSON.
pub async fn ops_log(
    client: &async_nats::Client,
    o: OpsLogOptions,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<u64> {
    let js = jetstream::new(client.clone());
    let start = if o.since.is_zero() {
        consumer::DeliverPolicy::New
    } else {
        let since_ns = RecvTime::now()
            .unix_ns
            .saturating_sub(o.since.as_nanos() as u64);
        consumer::DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(since_ns))?,
        }
    };
    let filters = vec![
        SUBJECT_CTRL.to_owned(),
        SUBJECT_STATUS.to_owned(),
        "tspi.cmd.>".to_owned(),
        "tags.>".to_owned(),
    ];
    let roster = std::cell::RefCell::new(Roster::new(o.stale.as_nanos() as u64));
    let mut lines = 0u64;
    let print = |l: &OpsLine| {
        use std::io::Write as _;
        let text = if o.json {
            serde_json::to_string(l).unwrap_or_default()
        } else {
            l.text()
        };
        let _ = writeln!(std::io::stdout().lock(), "{text}");
    };
    let lines_cell = std::cell::Cell::new(0u64);
    read_ops(
        &js,
        filters,
        start,
        o.follow,
        stop,
        |m| {
            let kind = OpsKind::of(&m.subject);
            let at = stored_ns(m);
            if kind == OpsKind::Status {
                let Ok(hb) = from_cbor::<Heartbeat>(&m.payload) else {
                    return;
                };
                if matches!(roster.borrow_mut().see(at, hb), Seen::Same | Seen::LeftOut) {
                    return;
                }
            }
            print(&OpsLine {
                ts: iso(RecvTime::from_unix_ns(at)),
                kind,
                subject: m.subject.to_string(),
                body: event_json(&m.payload)
                    .and_then(|s| serde_json::from_str(&s).ok())
                    .unwrap_or(serde_json::Value::Null),
            });
            lines_cell.set(lines_cell.get() + 1);
        },
        || {
            if !o.follow {
                return;
            }
            let now = RecvTime::now().unix_ns;
            for id in roster.borrow_mut().expire(now) {
                print(&OpsLine {
                    ts: iso(RecvTime::from_unix_ns(now)),
                    kind: OpsKind::Status,
                    subject: SUBJECT_STATUS.to_owned(),
                    body: serde_json::json!({ "client_id": id, "gone": true }),
                });
                lines_cell.set(lines_cell.get() + 1);
            }
        },
    )
    .await?;
    lines += lines_cell.get();
    Ok(lines)
}
