//! Replay from the PostgreSQL archive: a time window, or a window around a
//! tag's moment. Each row keeps the 37-byte datagram (`raw`), the receive
//! time to the microsecond (`recv_time`) and in ms (`recv_epoch_ms`); the
//! body is rebuilt byte for byte by re-encoding the datagram at a receive
//! time that renders to both ([`super::time::recv_time_from_stored`]).
//!
//! Tables read (created by the archive's migrations, `schema/`):
//! `tspi_telemetry(recv_time, recv_epoch_ms, raw, msg_id, stream_seq, ...)`
//! and `tspi_tags(id, ts, updated_ts, body, stream_seq, ...)`, of which each
//! tag's latest version (by `updated_ts`) counts, as in the stream source.
//! Rows are read through a cursor (a portal in one read-only transaction)
//! in batches of `read_ahead.batch_len`.

use super::source::{
    Batch, Feed, ReadAhead, Source, SourceCounts, SourceStats, TAGS_MAX, parse_tag,
};
use super::time::recv_time_from_stored;
use super::{Item, ItemKind, ReplayError};
use crate::codec;
use crate::message::{self, RecvTime};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::mpsc;

/// Which rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Window {
    /// Receive times from `start_ns` to `end_ns`, both included.
    Time { start_ns: u64, end_ns: u64 },
    /// `before_ns` before tag `id`'s moment to `after_ns` after it.
    Tag {
        id: String,
        before_ns: u64,
        after_ns: u64,
    },
}

const TELEMETRY_SQL: &str = "\
SELECT (extract(epoch FROM recv_time) * 1000000)::bigint AS recv_us, recv_epoch_ms, raw, msg_id
FROM tspi_telemetry
WHERE recv_time >= 'epoch'::timestamptz + $1::bigint * interval '1 microsecond'
  AND recv_time <= 'epoch'::timestamptz + $2::bigint * interval '1 microsecond'
ORDER BY recv_time, stream_seq";

const TAGS_SQL: &str = "\
SELECT id, body
FROM (SELECT DISTINCT ON (id) id, ts, body
      FROM tspi_tags
      ORDER BY id, updated_ts DESC, stream_seq DESC) AS latest
WHERE ts >= 'epoch'::timestamptz + $1::bigint * interval '1 microsecond'
  AND ts <= 'epoch'::timestamptz + $2::bigint * interval '1 microsecond'
ORDER BY ts, id
LIMIT $3";

const TAG_SQL: &str = "\
SELECT (extract(epoch FROM ts) * 1000000)::bigint FROM tspi_tags WHERE id = $1
ORDER BY updated_ts DESC, stream_seq DESC LIMIT 1";

/// The archive as a [`Source`].
pub struct ArchiveSource {
    handle: tokio::runtime::Handle,
    dsn: String,
    pub window: Window,
    pub with_tags: bool,
    pub subject_prefix: String,
    pub read_ahead: ReadAhead,
    /// Read from a hot standby among the DSN's hosts when one answers (the
    /// primary keeps its I/O for the archive's writes); else from any.
    pub from_standby: bool,
    /// TLS with the server verified (`--archive-ca-file`); `None`: plain.
    pub tls: Option<crate::pg::Tls>,
    feed: Feed,
    counters: Arc<SourceCounts>,
}

impl ArchiveSource {
    pub fn new(handle: tokio::runtime::Handle, dsn: String, window: Window) -> ArchiveSource {
        ArchiveSource {
            handle,
            dsn,
            window,
            with_tags: true,
            subject_prefix: message::DEFAULT_PREFIX.into(),
            read_ahead: ReadAhead::default(),
            from_standby: false,
            tls: None,
            feed: Feed::default(),
            counters: Arc::default(),
        }
    }
}

fn pg(e: tokio_postgres::Error) -> ReplayError {
    ReplayError::Source(format!("archive: {e}"))
}

/// A telemetry item from one archive row; `None` when the row does not
/// rebuild (a datagram the codec rejects, or stored times that disagree).
pub fn row_item(
    prefix: &str,
    recv_us: i64,
    recv_epoch_ms: i64,
    raw: &[u8],
    msg_id: Option<String>,
) -> Option<Item> {
    let frame = codec::parse(raw).ok()?;
    let recv: RecvTime = recv_time_from_stored(
        u64::try_from(recv_us).ok()?,
        u64::try_from(recv_epoch_ms).ok()?,
    )?;
    let m = message::Message::encode(prefix, &frame, recv);
    let mut datagram = [0u8; codec::DATAGRAM_LEN];
    datagram.copy_from_slice(raw);
    Some(Item {
        rec_ns: recv.epoch_us() * 1_000,
        kind: ItemKind::Telemetry {
            subject: m.subject,
            msg_id: msg_id.unwrap_or(m.msg_id),
            body: Bytes::from(m.body),
            datagram: Some(datagram),
        },
    })
}

/// A connection to the archive at `dsn` (its connection task spawned).
pub async fn connect(dsn: &str) -> Result<tokio_postgres::Client, ReplayError> {
    connect_to(dsn, crate::pg::Target::AsGiven).await
}

/// [`connect`] to a server of the `target` kind: replay reads, so it may
/// read from a hot standby ([`crate::pg::Target::PreferStandby`]).
pub async fn connect_to(
    dsn: &str,
    target: crate::pg::Target,
) -> Result<tokio_postgres::Client, ReplayError> {
    connect_with(dsn, None, target).await
}

/// [`connect_to`], over TLS when `tls` is given (the server verified
/// against its CA file, as the archive's `ca_file`).
pub async fn connect_with(
    dsn: &str,
    tls: Option<&crate::pg::Tls>,
    target: crate::pg::Target,
) -> Result<tokio_postgres::Client, ReplayError> {
    let (client, _conn) = crate::pg::connect_to(dsn, tls, target)
        .await
        .map_err(|e| ReplayError::Source(format!("archive: {e}")))?;
    Ok(client)
}

/// The moment of tag `id` (its latest version) in the archive, ns since
/// the Unix epoch; [`ReplayError::Empty`] when the archive has no such tag.
pub async fn tag_moment_ns(client: &tokio_postgres::Client, id: &str) -> Result<u64, ReplayError> {
    let row = client.query_opt(TAG_SQL, &[&id]).await.map_err(pg)?;
    let Some(row) = row else {
        return Err(ReplayError::Empty(format!("no tag {id:?} in the archive")));
    };
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0) * 1_000)
}

struct Read {
    dsn: String,
    target: crate::pg::Target,
    tls: Option<crate::pg::Tls>,
    window: Window,
    from_ns: Option<u64>,
    with_tags: bool,
    prefix: String,
    batch_len: usize,
    counters: Arc<SourceCounts>,
}

impl Read {
    async fn run(self, tx: &mpsc::Sender<Batch>) -> Result<(), ReplayError> {
        let mut client = connect_with(&self.dsn, self.tls.as_ref(), self.target).await?;
        let (lo_ns, hi_ns) = match &self.window {
            Window::Time { start_ns, end_ns } => (*start_ns, *end_ns),
            Window::Tag {
                id,
                before_ns,
                after_ns,
            } => {
                let ts_ns = tag_moment_ns(&client, id).await?;
                (
                    ts_ns.saturating_sub(*before_ns),
                    ts_ns.saturating_add(*after_ns),
                )
            }
        };
        let lo_ns = self.from_ns.map_or(lo_ns, |f| f.max(lo_ns));
        let (lo_us, hi_us) = ((lo_ns / 1_000) as i64, (hi_ns / 1_000) as i64);
        let tags: Vec<(u64, Item)> = if self.with_tags {
            let rows = client
                .query(TAGS_SQL, &[&lo_us, &hi_us, &(TAGS_MAX as i64)])
                .await
                .map_err(pg)?;
            rows.iter()
                .filter_map(|r| {
                    let body: Vec<u8> = r.get(1);
                    match parse_tag(&body) {
                        Ok(t) => Some((
                            t.ts_ns,
                            Item {
                                rec_ns: t.ts_ns,
                                kind: ItemKind::Tag {
                                    id: t.id,
                                    body: t.body,
                                },
                            },
                        )),
                        Err(e) => {
                            let id: String = r.get(0);
                            tracing::warn!(tag = %id, error = %e, "archived tag left out");
                            None
                        }
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut tags = tags.into_iter().peekable();
        let txn = client
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .map_err(pg)?;
        let stmt = txn.prepare(TELEMETRY_SQL).await.map_err(pg)?;
        let portal = txn.bind(&stmt, &[&lo_us, &hi_us]).await.map_err(pg)?;
        loop {
            let rows = txn
                .query_portal(&portal, self.batch_len as i32)
                .await
                .map_err(pg)?;
            if rows.is_empty() {
                break;
            }
            let mut batch = Vec::with_capacity(rows.len() + 4);
            for r in &rows {
                let raw: Vec<u8> = r.get(2);
                match row_item(&self.prefix, r.get(0), r.get(1), &raw, r.get(3)) {
                    Some(item) => {
                        while let Some((ts, _)) = tags.peek() {
                            if *ts > item.rec_ns {
                                break;
                            }
                            if let Some((_, t)) = tags.next() {
                                self.counters.tags.fetch_add(1, Relaxed);
                                batch.push(t);
                            }
                        }
                        self.counters.telemetry.fetch_add(1, Relaxed);
                        batch.push(item);
                    }
                    None => {
                        self.counters.unreadable.fetch_add(1, Relaxed);
                    }
                }
            }
            if tx.send(Ok(batch)).await.is_err() {
                return Ok(());
            }
        }
        let rest: Vec<Item> = tags.map(|(_, t)| t).collect();
        self.counters.tags.fetch_add(rest.len() as u64, Relaxed);
        if !rest.is_empty() {
            let _ = tx.send(Ok(rest)).await;
        }
        txn.commit().await.map_err(pg)?;
        Ok(())
    }
}

impl Source for ArchiveSource {
    fn open(&mut self, from_ns: Option<u64>) -> Result<(), ReplayError> {
        let (tx, rx) = mpsc::channel(self.read_ahead.batches_max);
        self.feed.replace(rx);
        let read = Read {
            dsn: self.dsn.clone(),
            target: if self.from_standby {
                crate::pg::Target::PreferStandby
            } else {
                crate::pg::Target::AsGiven
            },
            tls: self.tls.clone(),
            window: self.window.clone(),
            from_ns,
            with_tags: self.with_tags,
            prefix: self.subject_prefix.clone(),
            batch_len: self.read_ahead.batch_len.max(1),
            counters: self.counters.clone(),
        };
        self.handle.spawn(async move {
            if let Err(e) = read.run(&tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(())
    }

    fn next(&mut self) -> Result<Option<Item>, ReplayError> {
        self.feed.next()
    }

    fn stats(&self) -> SourceStats {
        self.counters.load()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_rebuilds_the_ingest_body() {
        let raw = codec::vectors::bytes(codec::vectors::SPHERICAL_2);
        let recv = RecvTime::from_unix_ns(1_700_000_000_123_456_789);
        let original = message::Message::encode("tspi", &codec::parse(&raw).unwrap(), recv);
        let item = row_item(
            "tspi",
            recv.epoch_us() as i64,
            recv.epoch_ms() as i64,
            &raw,
            Some(original.msg_id.clone()),
        )
        .unwrap();
        let ItemKind::Telemetry {
            subject,
            msg_id,
            body,
            datagram,
        } = item.kind
        else {
            panic!("telemetry")
        };
        assert_eq!(body.as_ref(), original.body.as_slice());
        assert_eq!((subject, msg_id), (original.subject, original.msg_id));
        assert_eq!(datagram.unwrap().as_slice(), raw.as_slice());
        assert!(
            row_item("tspi", 1_000_500, 1_002, &raw, None).is_none(),
            "disagreeing times"
        );
        assert!(
            row_item("tspi", 0, 0, &raw[..36], None).is_none(),
            "bad datagram"
        );
    }
}
