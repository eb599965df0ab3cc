//! `tspi archive`: the `TSPI` and `TSPI_OPS` streams into PostgreSQL, exactly
//! once, in batches.
//!
//! Pure core, [`proto`] (no I/O, no clock; see its docs):
//! - [`rows`]: message bodies to rows, or a typed reject;
//! - [`copy`]: PostgreSQL's binary `COPY` format and the telemetry row in it;
//! - [`proto::batcher`]: deliveries in; batches to write, ack plans and
//!   consumer rewinds out; retries and the bisection of refused batches.
//!
//! Edges:
//! - [`schema`]: the ordered SQL migrations of `schema/migrations/`, applied
//!   at start and recorded in `tspi_schema_migrations`;
//! - [`db`]: one PostgreSQL session that writes a batch in one transaction
//!   (binary `COPY` into a temporary staging table, then `INSERT ... SELECT
//!   ... ON CONFLICT DO NOTHING` into place), keeps partitions, and says
//!   whether a failed write is transient or permanent;
//! - [`driver`]: per stream, a task that owns the durable pull consumer and
//!   the clock and drives a batcher, and a writer task that owns the
//!   database session;
//! - [`report`]: counters, deltas and their renderings (log line, JSON line,
//!   Prometheus, NATS snapshot).
//!
//! Why exactly once: a message is acked only after the transaction holding
//! its row committed, so a crash before the commit leaves it unacked (JetStream
//! redelivers it after `ack_wait`), and a crash between commit and ack
//! redelivers a message whose row exists: the unique key skips it. A batch
//! PostgreSQL refuses for good (a value out of range, a constraint) is
//! bisected down to the refused messages, which go to `tspi_rejects` with the
//! server's reason; the stream never stalls on them.

pub mod db;
pub mod driver;
pub mod proto;
pub mod report;
pub mod schema;

pub use driver::{Account, ArchiveError, Handle, Stats, run};
pub use proto::AckMode;
/// The pure decoders and the COPY writer, where they always were.
pub use proto::{copy, rows};

use serde::Deserialize;

/// Where the telemetry table's time partitions come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Partitioning {
    /// TimescaleDB when the extension can be created, else native.
    #[default]
    Auto,
    /// A TimescaleDB hypertable (error if the extension is missing).
    Timescaledb,
    /// Native declarative partitioning, one partition per UTC day.
    Native,
}

impl Partitioning {
    pub const fn name(self) -> &'static str {
        match self {
            Partitioning::Auto => "auto",
            Partitioning::Timescaledb => "timescaledb",
            Partitioning::Native => "native",
        }
    }
}

/// `[archive]` section of the configuration file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// PostgreSQL connection string, libpq key/value
    /// (`host=db port=5432 user=tspi dbname=tspi`) or URL form. `--postgres`
    /// overrides it. Plain TCP or a Unix socket (`host=/run/postgresql`); no
    /// TLS yet.
    pub postgres: Option<String>,
    /// Durable pull consumer on `TSPI`.
    pub durable: String,
    /// Durable pull consumer on `TSPI_OPS`.
    pub ops_durable: String,
    /// Archive `TSPI_OPS` too (tags, display commands, control, status).
    pub ops: bool,
    /// A batch is written when it has this many messages...
    pub batch_len_max: usize,
    /// ...or this long after its first message, whichever comes first.
    pub flush_interval_ms: u64,
    /// Batches decoded ahead while the database commits (per stream).
    pub batches_in_flight_max: usize,
    /// `explicit` (default): an ack per message. `all`: one ack per batch
    /// (ack policy all; one archiver per durable; see [`AckMode`]).
    pub ack: AckMode,
    /// A delivered message not acked within this long is delivered again
    /// (after a crash, or while the database is away). Must exceed the time
    /// a healthy batch takes to commit.
    pub ack_wait_s: u64,
    /// Database retry backoff: doubles from the initial value to the maximum.
    pub retry_backoff_initial_ms: u64,
    pub retry_backoff_max_ms: u64,
    /// On SIGINT/SIGTERM: how long to wait for batches in flight to commit.
    /// What is not committed by then is left unacked (redelivered later).
    pub drain_timeout_s: u64,
    /// `auto`, `timescaledb` or `native`; fixed when the schema is created.
    pub partitioning: Partitioning,
    /// Native partitioning: days of partitions created ahead of today.
    pub partition_premake_days: u32,
    /// Drop telemetry partitions (or chunks) whose whole day is older than
    /// this many days; 0 keeps everything.
    pub retention_days: u32,
    /// Seconds between partition upkeep runs (premake and retention).
    pub maintenance_interval_s: u64,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            postgres: None,
            durable: "tspi-archive".into(),
            ops_durable: "tspi-archive-ops".into(),
            ops: true,
            batch_len_max: 5_000,
            flush_interval_ms: 200,
            batches_in_flight_max: 2,
            ack: AckMode::Explicit,
            ack_wait_s: 30,
            retry_backoff_initial_ms: 100,
            retry_backoff_max_ms: 5_000,
            drain_timeout_s: 30,
            partitioning: Partitioning::Auto,
            partition_premake_days: 3,
            retention_days: 0,
            maintenance_interval_s: 3_600,
        }
    }
}

/// Largest `batch_len_max`: bounds the COPY buffer (~300 bytes a row) and
/// the unacked messages per stream.
pub const BATCH_LEN_LIMIT: usize = 100_000;
/// Largest `batches_in_flight_max`.
pub const BATCHES_IN_FLIGHT_LIMIT: usize = 16;

impl ArchiveConfig {
    /// Every problem with these values (empty: fine).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Some(dsn) = &self.postgres
            && dsn.trim().is_empty()
        {
            p.push("archive.postgres is empty: give a connection string or leave it out".into());
        }
        for (key, name) in [
            ("durable", &self.durable),
            ("ops_durable", &self.ops_durable),
        ] {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                p.push(format!(
                    "archive.{key} = {name:?}: a consumer name is letters, digits, '-' and '_'"
                ));
            }
        }
        if self.durable == self.ops_durable {
            p.push("archive.durable and archive.ops_durable must differ".into());
        }
        if !(1..=BATCH_LEN_LIMIT).contains(&self.batch_len_max) {
            p.push(format!(
                "archive.batch_len_max = {}: must be 1..={BATCH_LEN_LIMIT}",
                self.batch_len_max
            ));
        }
        if !(1..=60_000).contains(&self.flush_interval_ms) {
            p.push(format!(
                "archive.flush_interval_ms = {}: must be 1..=60000",
                self.flush_interval_ms
            ));
        }
        if !(1..=BATCHES_IN_FLIGHT_LIMIT).contains(&self.batches_in_flight_max) {
            p.push(format!(
                "archive.batches_in_flight_max = {}: must be 1..={BATCHES_IN_FLIGHT_LIMIT}",
                self.batches_in_flight_max
            ));
        }
        if self.ack_wait_s == 0 || self.ack_wait_s * 1000 <= self.flush_interval_ms {
            p.push(format!(
                "archive.ack_wait_s = {}: must be at least 1 and longer than flush_interval_ms, \
                 or every batch is redelivered before it is written",
                self.ack_wait_s
            ));
        }
        if self.retry_backoff_initial_ms == 0 {
            p.push("archive.retry_backoff_initial_ms must be > 0".into());
        }
        if self.retry_backoff_max_ms < self.retry_backoff_initial_ms {
            p.push("archive.retry_backoff_max_ms is below retry_backoff_initial_ms".into());
        }
        if self.drain_timeout_s == 0 {
            p.push("archive.drain_timeout_s must be at least 1".into());
        }
        if self.partition_premake_days > 366 {
            p.push(format!(
                "archive.partition_premake_days = {}: must be 0..=366",
                self.partition_premake_days
            ));
        }
        if self.maintenance_interval_s == 0 {
            p.push("archive.maintenance_interval_s must be at least 1".into());
        }
        p
    }

    /// [`ArchiveConfig::problems`] as an error.
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        let p = self.problems();
        if p.is_empty() {
            Ok(())
        } else {
            Err(crate::config::ConfigError::Invalid(p.join("; ")))
        }
    }

    /// Unacked messages a consumer may have out: the batches in flight, the
    /// one being filled, and one of slack.
    pub fn max_ack_pending(&self) -> i64 {
        (self.batch_len_max * (self.batches_in_flight_max + 2)) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    /// `proto/` stays pure: no network, runtime, NATS or PostgreSQL client,
    /// no clock, and of this crate only the pure contract modules.
    #[test]
    fn proto_imports_no_io_and_reads_no_clock() {
        fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    files(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/archive/proto");
        let mut all = Vec::new();
        files(&root, &mut all);
        assert!(all.len() >= 6, "{all:?}");
        let forbidden = [
            "std::net",
            "tokio",
            "async_nats",
            "postgres",
            "futures",
            "Instant::now",
            "SystemTime::now",
            "std::thread",
            "std::fs",
        ];
        let allowed_crate_paths = ["crate::codec", "crate::message", "crate::archive::proto"];
        for path in all {
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                // Code only: what comments say is not an import.
                let code = line.split("//").next().unwrap_or("");
                for f in forbidden {
                    assert!(
                        !code.contains(f),
                        "{}:{}: `{f}` in the pure core: {line}",
                        path.display(),
                        n + 1
                    );
                }
                for (i, _) in code.match_indices("crate::") {
                    assert!(
                        allowed_crate_paths.iter().any(|a| code[i..].starts_with(a)),
                        "{}:{}: the pure core uses only {allowed_crate_paths:?}: {line}",
                        path.display(),
                        n + 1
                    );
                }
            }
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(ArchiveConfig::default().problems(), Vec::<String>::new());
    }

    #[test]
    fn section_parses() {
        let c = Config::from_toml(
            "[archive]\npostgres = \"host=db\"\nbatch_len_max = 100\nack = \"all\"\n\
             partitioning = \"native\"\nretention_days = 30\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.archive.postgres.as_deref(), Some("host=db"));
        assert_eq!(c.archive.batch_len_max, 100);
        assert_eq!(c.archive.ack, AckMode::All);
        assert_eq!(c.archive.partitioning, Partitioning::Native);
        assert_eq!(c.archive.retention_days, 30);
        assert_eq!(c.archive.flush_interval_ms, 200);
    }

    #[test]
    fn unknown_keys_and_bad_enums_name_the_line() {
        let e = Config::from_toml("[archive]\nbatch_len = 5\n", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("batch_len") && e.contains("line 2"), "{e}");
        let e = Config::from_toml("\n[archive]\nack = \"some\"\n", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("explicit"), "{e}");
        let e = Config::from_toml("[archive]\npartitioning = \"daily\"\n", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("native"), "{e}");
    }

    #[test]
    fn bad_values_are_all_listed() {
        let c = ArchiveConfig {
            postgres: Some(" ".into()),
            durable: "a.b".into(),
            batch_len_max: 0,
            flush_interval_ms: 0,
            batches_in_flight_max: 99,
            ack_wait_s: 0,
            retry_backoff_initial_ms: 10,
            retry_backoff_max_ms: 5,
            drain_timeout_s: 0,
            partition_premake_days: 400,
            maintenance_interval_s: 0,
            ..ArchiveConfig::default()
        };
        let p = c.problems();
        for needle in [
            "archive.postgres",
            "archive.durable",
            "batch_len_max",
            "flush_interval_ms",
            "batches_in_flight_max",
            "ack_wait_s",
            "retry_backoff_max_ms",
            "drain_timeout_s",
            "partition_premake_days",
            "maintenance_interval_s",
        ] {
            assert!(p.iter().any(|s| s.contains(needle)), "{needle} in {p:?}");
        }
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("invalid configuration")
        );
        let same = ArchiveConfig {
            ops_durable: "tspi-archive".into(),
            ..ArchiveConfig::default()
        };
        assert!(same.problems().iter().any(|s| s.contains("must differ")));
    }
}
