//! Edge: one PostgreSQL session of the archiver. It writes a [`Batch`] in one
//! transaction and keeps the telemetry partitions.
//!
//! Telemetry goes by binary `COPY` into a temporary staging table (`ON COMMIT
//! DELETE ROWS`: empty again after every transaction, never WAL-logged), then
//! `INSERT ... SELECT ... ON CONFLICT (recv_time, msg_id) DO NOTHING` moves it
//! into place, the aggregate gaining the minutes of the rows it inserted
//! (`RETURNING`). A batch with no redelivered message first tries a direct
//! `COPY` into `tspi_telemetry` (all rows new), then appends the minutes
//! the batcher computed. The aggregate's rows are appended to
//! `tspi_track_minutes_recent` (migration 5), and [`Db::fold_minutes`],
//! called by a task of its own, folds them into one row per minute and
//! sensor. Operator rows and rejects are
//! few and go by prepared `INSERT ... ON CONFLICT DO NOTHING`. Any error drops the session: the
//! caller reconnects and writes the same batch again, which the unique keys
//! make harmless. A [`WriteError`] says whether that can help
//! ([`WriteError::failure`]): a batch refused for good is narrowed down to
//! its refused rows by the batcher, and those go to `tspi_rejects`.

use super::proto::commit::classify_sqlstate;
use super::proto::copy::TELEMETRY_COLUMNS;
use super::proto::rows::DAY_US;
use super::proto::{Batch, CommitFailure, Minute, OpsRow, Retry, Written};
use super::schema::MigrateError;
use super::{ArchiveConfig, schema};
use bytes::Bytes;
use futures_util::SinkExt as _;
use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_postgres::{Client, Statement};

/// The aggregate's append, in the batch's transaction (migration 5: plain
/// inserts, no key; the view `tspi_track_minutes` sums, a fold merges).
const MINUTES_APPEND: &str = "INSERT INTO tspi_track_minutes_recent \
    (minute, sensor_id, rows, first_recv, last_recv)";

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to PostgreSQL: {0}")]
    Connect(crate::pg::ConnectError),
    #[error(transparent)]
    Tls(#[from] crate::pg::TlsError),
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    #[error("preparing the archive's session: {}", pg_text(.0))]
    Prepare(tokio_postgres::Error),
}

/// Why a batch did not commit. [`WriteError::failure`] says whether the
/// same rows can ever commit.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{}", pg_text(.0))]
    Db(tokio_postgres::Error),
    #[error("COPY took {took} of {rows} rows")]
    CopyCount { took: u64, rows: usize },
    /// No session: always transient (whatever the server said, it was not
    /// about the batch's rows).
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

impl From<tokio_postgres::Error> for WriteError {
    fn from(e: tokio_postgres::Error) -> Self {
        WriteError::Db(e)
    }
}

/// A PostgreSQL error in full, as one line: `SQLSTATE code: message
/// (detail); hint: hint` when the server said something, else the client's text and
/// its cause (`tokio_postgres::Error` alone displays only its kind, e.g.
/// "db error"). Errors here carry this text instead of a `source`, so a
/// `{:#}` chain does not say it twice.
pub fn pg_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("SQLSTATE {}: {}", db.code().code(), db.message());
            if let Some(d) = db.detail() {
                s.push_str(" (");
                s.push_str(d);
                s.push(')');
            }
            if let Some(h) = db.hint() {
                s.push_str("; hint: ");
                s.push_str(h);
            }
            s
        }
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

impl WriteError {
    /// Transient or permanent (by SQLSTATE, see
    /// [`super::proto::commit::classify_sqlstate`]; no SQLSTATE: the
    /// connection failed, transient), with the reason.
    pub fn failure(&self) -> CommitFailure {
        let retry = match self {
            WriteError::Db(e) => e
                .code()
                .map_or(Retry::Transient, |c| classify_sqlstate(c.code())),
            WriteError::CopyCount { .. } | WriteError::Connect(_) => Retry::Transient,
        };
        CommitFailure {
            retry,
            reason: self.to_string(),
        }
    }
}

/// Stream a finished binary COPY; returns the rows it took.
async fn copy(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &str,
    data: &Bytes,
) -> Result<u64, tokio_postgres::Error> {
    let sink = tx.copy_in::<_, Bytes>(sql).await?;
    let mut sink = std::pin::pin!(sink);
    sink.send(data.clone()).await?;
    sink.as_mut().finish().await
}

/// A Unix-epoch microsecond count as a `timestamptz` parameter.
pub fn system_time(unix_us: i64) -> SystemTime {
    let d = Duration::from_micros(unix_us.unsigned_abs());
    if unix_us >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

/// What [`Db::compression`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compression {
    /// No policy (none asked for).
    Off,
    /// Chunks older than this many days are compressed.
    Policy { after_days: u32 },
    /// Asked for, but this server cannot: why.
    Unavailable(String),
}

/// A connected, migrated session with its staging table and statements.
pub struct Db {
    client: Client,
    connection: tokio::task::JoinHandle<()>,
    /// COPY into the staging table, and straight into `tspi_telemetry`.
    copy_sql: String,
    copy_direct_sql: String,
    /// Batches whose direct COPY met a row already there.
    pub direct_conflicts: u64,
    /// Staging to `tspi_telemetry`, the inserted rows' minutes appended.
    insert: Statement,
    /// A batch's own minutes appended (its rows all went in).
    minutes: Statement,
    reject: Statement,
    tag: Statement,
    command: Statement,
    event: Statement,
    /// Native partitions known to exist (days since 1970-01-01).
    days_ready: HashSet<i32>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("days_ready", &self.days_ready.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Db {
    /// Connect, apply migrations, create the staging table, prepare.
    pub async fn connect(dsn: &str, cfg: &ArchiveConfig) -> Result<Db, ConnectError> {
        let tls = crate::pg::Tls::from_setting(cfg.ca_file.as_deref())?;
        // The archive writes: with several hosts, the one that is primary.
        let (mut client, connection) =
            crate::pg::connect_to(dsn, tls.as_ref(), crate::pg::Target::Primary)
                .await
                .map_err(ConnectError::Connect)?;
        schema::migrate(&mut client, cfg.partitioning).await?;
        client
            .batch_execute(
                "SET application_name = 'tspi archive';
                 CREATE TEMP TABLE IF NOT EXISTS tspi_telemetry_stage
                     (LIKE tspi_telemetry) ON COMMIT DELETE ROWS;",
            )
            .await
            .map_err(ConnectError::Prepare)?;
        let cols = TELEMETRY_COLUMNS.join(", ");
        let insert = client
            .prepare(&format!(
                "WITH ins AS (INSERT INTO tspi_telemetry ({cols}) \
                 SELECT {cols} FROM tspi_telemetry_stage \
                 ON CONFLICT (recv_time, msg_id) DO NOTHING RETURNING recv_time, sensor_id), \
                 g AS (SELECT date_bin('1 minute', recv_time, timestamptz '2000-01-01 00:00+00') \
                 AS minute, sensor_id, count(*) AS rows, min(recv_time) AS first_recv, \
                 max(recv_time) AS last_recv FROM ins GROUP BY 1, 2), \
                 a AS ({MINUTES_APPEND} SELECT minute, sensor_id, rows, first_recv, last_recv \
                 FROM g) \
                 SELECT coalesce(sum(rows), 0)::bigint FROM g"
            ))
            .await
            .map_err(ConnectError::Prepare)?;
        let minutes = client
            .prepare(&format!(
                "{MINUTES_APPEND} SELECT * FROM unnest($1::timestamptz[], $2::int4[], \
                 $3::int8[], $4::timestamptz[], $5::timestamptz[])"
            ))
            .await
            .map_err(ConnectError::Prepare)?;
        let reject = client
            .prepare(
                "INSERT INTO tspi_rejects (stream, stream_seq, stream_time, subject, msg_id, \
                 reason_kind, reason, body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(ConnectError::Prepare)?;
        let tag = client
            .prepare(
                "INSERT INTO tspi_tags (id, ts, label, status, updated_ts, creator, notes, extra, \
                 body, subject, msg_id, stream_seq) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, $9, $10, $11, $12) \
                 ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(ConnectError::Prepare)?;
        let command = client
            .prepare(
                "INSERT INTO tspi_display_commands (cmd_id, name, ts, sender, payload, body, \
                 subject, stream_seq) VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7, $8) \
                 ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(ConnectError::Prepare)?;
        let event = client
            .prepare(
                "INSERT INTO tspi_ops_events (subject, stream_seq, stream_time, msg_id, body, \
                 body_json) VALUES ($1, $2, $3, $4, $5, $6::text::jsonb) ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(ConnectError::Prepare)?;
        Ok(Db {
            client,
            connection,
            copy_sql: format!("COPY tspi_telemetry_stage ({cols}) FROM STDIN (FORMAT binary)"),
            copy_direct_sql: format!("COPY tspi_telemetry ({cols}) FROM STDIN (FORMAT binary)"),
            direct_conflicts: 0,
            insert,
            minutes,
            reject,
            tag,
            command,
            event,
            days_ready: HashSet::new(),
        })
    }

    /// Set the TimescaleDB compression policy: chunks older than
    /// `after_days` are compressed (segment by sensor, order by time); 0
    /// removes it. What the server allows decides: native partitions and
    /// the Apache-2 build of TimescaleDB have no compression.
    pub async fn compression(&self, after_days: u32) -> Result<Compression, tokio_postgres::Error> {
        if self.partitioning().await? != "timescaledb" {
            return Ok(if after_days == 0 {
                Compression::Off
            } else {
                Compression::Unavailable(
                    "the telemetry is in native partitions: compression needs TimescaleDB".into(),
                )
            });
        }
        let license: Option<String> = self
            .client
            .query_one("SELECT current_setting('timescaledb.license', true)", &[])
            .await?
            .get(0);
        if license.as_deref() == Some("apache") {
            return Ok(if after_days == 0 {
                Compression::Off
            } else {
                Compression::Unavailable(
                    "this TimescaleDB is the Apache-2 build (timescaledb.license = apache), which \
                     has no compression"
                        .into(),
                )
            });
        }
        self.client
            .execute(
                "SELECT remove_compression_policy('tspi_telemetry', if_exists => true)",
                &[],
            )
            .await?;
        if after_days == 0 {
            return Ok(Compression::Off);
        }
        self.client
            .batch_execute(
                "ALTER TABLE tspi_telemetry SET (timescaledb.compress, \
                 timescaledb.compress_segmentby = 'sensor_id', \
                 timescaledb.compress_orderby = 'recv_time')",
            )
            .await?;
        self.client
            .execute(
                "SELECT add_compression_policy('tspi_telemetry', \
                 compress_after => make_interval(days => $1))",
                &[&(after_days as i32)],
            )
            .await?;
        Ok(Compression::Policy { after_days })
    }

    /// The partitioning mode the schema was created with.
    pub async fn partitioning(&self) -> Result<String, tokio_postgres::Error> {
        Ok(self
            .client
            .query_one("SELECT tspi_archive_partitioning()", &[])
            .await?
            .get(0))
    }

    /// Make sure the partitions of these days exist (native mode; a no-op
    /// for TimescaleDB). Returns how many were created.
    pub async fn ensure_days(&mut self, days: &[i32]) -> Result<i32, tokio_postgres::Error> {
        let missing: Vec<i32> = days
            .iter()
            .copied()
            .filter(|d| !self.days_ready.contains(d))
            .collect();
        if missing.is_empty() {
            return Ok(0);
        }
        let created: i32 = self
            .client
            .query_one("SELECT tspi_archive_ensure_partitions($1)", &[&missing])
            .await?
            .get(0);
        self.days_ready.extend(missing);
        Ok(created)
    }

    /// Partition upkeep at `now_unix_us`: partitions from yesterday to
    /// `premake_days` ahead; with a retention, drop whole days older than
    /// it. Returns (partitions created, names dropped).
    pub async fn maintain(
        &mut self,
        now_unix_us: i64,
        premake_days: u32,
        retention_days: u32,
    ) -> Result<(i32, Vec<String>), tokio_postgres::Error> {
        let today = now_unix_us.div_euclid(DAY_US) as i32;
        let days: Vec<i32> = (today - 1..=today + premake_days as i32).collect();
        let created = self.ensure_days(&days).await?;
        let mut dropped = Vec::new();
        if retention_days > 0 {
            let cutoff = system_time(now_unix_us - i64::from(retention_days) * DAY_US);
            for row in self
                .client
                .query("SELECT tspi_archive_drop_before($1)", &[&cutoff])
                .await?
            {
                dropped.push(row.get::<_, String>(0));
            }
            // Dropped days are gone: forget them, so a late row makes its
            // partition again rather than failing.
            let cutoff_day = (now_unix_us - i64::from(retention_days) * DAY_US).div_euclid(DAY_US);
            self.days_ready.retain(|&d| i64::from(d) >= cutoff_day);
        }
        Ok((created, dropped))
    }

    /// Fold the aggregate's appended rows into one row per minute and
    /// sensor (`tspi_track_minutes_fold()`, migration 5). Returns the
    /// appended rows folded (0 while another session folds).
    pub async fn fold_minutes(&self) -> Result<i64, tokio_postgres::Error> {
        Ok(self
            .client
            .query_one("SELECT tspi_track_minutes_fold()", &[])
            .await?
            .get(0))
    }

    /// Append a batch's tracks per sensor per minute.
    async fn add_minutes(
        append: &Statement,
        tx: &tokio_postgres::Transaction<'_>,
        minutes: &[Minute],
    ) -> Result<(), tokio_postgres::Error> {
        if minutes.is_empty() {
            return Ok(());
        }
        let col = |f: fn(&Minute) -> i64| -> Vec<SystemTime> {
            minutes.iter().map(|m| system_time(f(m))).collect()
        };
        let sensors: Vec<i32> = minutes.iter().map(|m| m.sensor_id).collect();
        let rows: Vec<i64> = minutes.iter().map(|m| m.rows).collect();
        tx.execute(
            append,
            &[
                &col(|m| m.minute_unix_us),
                &sensors,
                &rows,
                &col(|m| m.first_unix_us),
                &col(|m| m.last_unix_us),
            ],
        )
        .await?;
        Ok(())
    }

    /// Write the batch in one transaction.
    pub async fn write(&mut self, b: &Batch) -> Result<Written, WriteError> {
        if b.copy_rows > 0 {
            self.ensure_days(&b.days).await?;
        }
        let mut tx = self.client.transaction().await?;
        let mut w = Written::default();
        if b.copy_rows > 0 {
            let mut done = false;
            if !b.redelivered {
                // Optimistic: COPY straight into place. The unique key still
                // guards it: a row already there fails the COPY (23505),
                // the savepoint undoes it, and the staging path below runs.
                let sp = tx.savepoint("direct").await?;
                match copy(&sp, &self.copy_direct_sql, &b.copy).await {
                    Ok(n) => {
                        if n as usize != b.copy_rows {
                            return Err(WriteError::CopyCount {
                                took: n,
                                rows: b.copy_rows,
                            });
                        }
                        sp.commit().await?;
                        w.telemetry = n;
                        done = true;
                        // Every row went in: the batch's own minutes.
                        Self::add_minutes(&self.minutes, &tx, &b.minutes).await?;
                    }
                    Err(e)
                        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
                    {
                        sp.rollback().await?;
                        self.direct_conflicts += 1;
                    }
                    // Dropping the savepoint and the transaction rolls back.
                    Err(e) => return Err(e.into()),
                }
            }
            if !done {
                let n = copy(&tx, &self.copy_sql, &b.copy).await?;
                if n as usize != b.copy_rows {
                    return Err(WriteError::CopyCount {
                        took: n,
                        rows: b.copy_rows,
                    });
                }
                // Only the rows inserted count in the aggregate.
                let n: i64 = tx.query_one(&self.insert, &[]).await?.get(0);
                w.telemetry = n as u64;
            }
        }
        for r in &b.rejects {
            let o = &r.origin;
            w.rejects += tx
                .execute(
                    &self.reject,
                    &[
                        &r.stream,
                        &(o.stream_seq as i64),
                        &system_time(o.stream_unix_us),
                        &o.subject,
                        &o.msg_id,
                        &r.kind,
                        &r.reason,
                        &r.body.as_ref(),
                    ],
                )
                .await?;
        }
        for row in &b.ops {
            w.ops += match row {
                OpsRow::Tag(t, o, body) => {
                    tx.execute(
                        &self.tag,
                        &[
                            &t.id,
                            &system_time(t.ts_unix_us),
                            &t.label,
                            &t.status,
                            &system_time(t.updated_unix_us),
                            &t.creator,
                            &t.notes,
                            &t.extra_json,
                            &body.as_ref(),
                            &o.subject,
                            &o.msg_id,
                            &(o.stream_seq as i64),
                        ],
                    )
                    .await?
                }
                OpsRow::Command(c, o, body) => {
                    tx.execute(
                        &self.command,
                        &[
                            &c.cmd_id,
                            &c.name,
                            &system_time(c.ts_unix_us),
                            &c.sender,
                            &c.payload_json,
                            &body.as_ref(),
                            &o.subject,
                            &(o.stream_seq as i64),
                        ],
                    )
                    .await?
                }
                OpsRow::Event(o, body, json) => {
                    tx.execute(
                        &self.event,
                        &[
                            &o.subject,
                            &(o.stream_seq as i64),
                            &system_time(o.stream_unix_us),
                            &o.msg_id,
                            &body.as_ref(),
                            json,
                        ],
                    )
                    .await?
                }
            };
        }
        tx.commit().await?;
        Ok(w)
    }
}
