//! `[archive]`: the archiver's section of the configuration file, and the
//! enums it names.

use crate::config::limits;
use serde::Deserialize;

/// How a batch's messages are acknowledged after its commit: defined
/// with the batcher that acts on it.
pub use super::proto::AckMode;

/// `archive.ack`: the ack policy of the durable consumers the archiver
/// creates, and what it does with one that exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AckSetting {
    /// A consumer that exists keeps its ack policy (a policy cannot change);
    /// a new one gets ack policy `all`, the cheaper one: per message, an
    /// explicit ack costs nats-server about as much again as the delivery
    /// (`bench/README.md`). Several archivers sharing one durable need
    /// `explicit`.
    #[default]
    Auto,
    /// Ack policy `explicit`: an ack per message (see [`AckMode::Explicit`]).
    Explicit,
    /// Ack policy `all`: one ack per batch (see [`AckMode::All`]).
    All,
}

impl From<AckMode> for AckSetting {
    fn from(m: AckMode) -> Self {
        match m {
            AckMode::Explicit => AckSetting::Explicit,
            AckMode::All => AckSetting::All,
        }
    }
}

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
    /// overrides it. Plain TCP, a Unix socket (`host=/run/postgresql`), or
    /// TLS with [`Self::ca_file`]. Several hosts with
    /// `target_session_attrs=read-write` reach whichever is the primary.
    pub postgres: Option<String>,
    /// PEM file of the CA(s) the PostgreSQL server's certificate must chain
    /// to. Set: TLS is required and the server verified (its name must match
    /// the host connected to); see [`crate::pg`].
    pub ca_file: Option<std::path::PathBuf>,
    /// Durable pull consumer on `TSPI`.
    pub durable: String,
    /// Durable pull consumer on `TSPI_OPS`. Was `ops_durable`.
    #[serde(alias = "ops_durable")]
    pub durable_ops: String,
    /// Archive `TSPI_OPS` too (tags, display commands, control, status).
    pub ops: bool,
    /// A batch is written when it has this many messages...
    pub batch_len_max: usize,
    /// ...or this long after its first message, whichever comes first.
    pub flush_interval_ms: u64,
    /// Batches decoded ahead while the database commits (per stream).
    pub batches_in_flight_max: usize,
    /// `auto` (default): an existing consumer's policy, else `all`.
    /// `explicit`: an ack per message. `all`: one ack per batch (one
    /// archiver per durable). See [`AckSetting`] and [`AckMode`].
    pub ack: AckSetting,
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
    /// Milliseconds between folds of the per-minute aggregate's appended
    /// rows into one row per minute and sensor (a session of its own).
    pub fold_interval_ms: u64,
    /// TimescaleDB: compress chunks older than this many days (a compression
    /// policy, segmented by sensor, ordered by time); 0: no policy. Needs
    /// the Timescale-licensed build; elsewhere a warning says why not.
    pub compress_after_days: u32,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        use limits::*;
        ArchiveConfig {
            postgres: None,
            ca_file: None,
            durable: "tspi-archive".into(),
            durable_ops: "tspi-archive-ops".into(),
            ops: true,
            batch_len_max: ARCHIVE_BATCH_LEN_MAX.default as usize,
            flush_interval_ms: ARCHIVE_FLUSH_INTERVAL_MS.default,
            batches_in_flight_max: ARCHIVE_BATCHES_IN_FLIGHT_MAX.default as usize,
            ack: AckSetting::Auto,
            ack_wait_s: ARCHIVE_ACK_WAIT_S.default,
            retry_backoff_initial_ms: ARCHIVE_RETRY_BACKOFF_INITIAL_MS.default,
            retry_backoff_max_ms: ARCHIVE_RETRY_BACKOFF_MAX_MS.default,
            drain_timeout_s: ARCHIVE_DRAIN_TIMEOUT_S.default,
            partitioning: Partitioning::Auto,
            partition_premake_days: ARCHIVE_PARTITION_PREMAKE_DAYS.default as u32,
            retention_days: ARCHIVE_RETENTION_DAYS.default as u32,
            maintenance_interval_s: ARCHIVE_MAINTENANCE_INTERVAL_S.default,
            fold_interval_ms: ARCHIVE_FOLD_INTERVAL_MS.default,
            compress_after_days: ARCHIVE_COMPRESS_AFTER_DAYS.default as u32,
        }
    }
}

/// Largest `batch_len_max`: bounds the COPY buffer (~300 bytes a row) and
/// the unacked messages per stream.
pub const BATCH_LEN_LIMIT: usize = limits::ARCHIVE_BATCH_LEN_MAX.max as usize;
/// Largest `batches_in_flight_max`.
pub const BATCHES_IN_FLIGHT_LIMIT: usize = limits::ARCHIVE_BATCHES_IN_FLIGHT_MAX.max as usize;

impl ArchiveConfig {
    /// Every problem with these values (empty: fine), each naming its key.
    pub fn problems(&self) -> Vec<String> {
        use limits::*;
        let mut p = Vec::new();
        if let Some(dsn) = &self.postgres
            && dsn.trim().is_empty()
        {
            p.push("archive.postgres is empty: give a connection string or leave it out".into());
        }
        if let Some(ca) = &self.ca_file
            && ca.as_os_str().is_empty()
        {
            p.push("archive.ca_file is empty: give the CA file's path or leave it out".into());
        }
        for (key, name) in [
            ("durable", &self.durable),
            ("durable_ops", &self.durable_ops),
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
        if self.durable == self.durable_ops {
            p.push("archive.durable and archive.durable_ops must differ".into());
        }
        let k = |key: &str| format!("archive.{key}");
        ARCHIVE_BATCH_LEN_MAX.check(&k("batch_len_max"), self.batch_len_max, &mut p);
        ARCHIVE_FLUSH_INTERVAL_MS.check(&k("flush_interval_ms"), self.flush_interval_ms, &mut p);
        ARCHIVE_BATCHES_IN_FLIGHT_MAX.check(
            &k("batches_in_flight_max"),
            self.batches_in_flight_max,
            &mut p,
        );
        ARCHIVE_ACK_WAIT_S.check(&k("ack_wait_s"), self.ack_wait_s, &mut p);
        // Both bounded above, so the product cannot overflow; checked anyway.
        let ack_wait_ms = self.ack_wait_s.checked_mul(MS_PER_S);
        if ARCHIVE_ACK_WAIT_S.contains(self.ack_wait_s)
            && ack_wait_ms.is_none_or(|ms| ms <= self.flush_interval_ms)
        {
            p.push(format!(
                "archive.ack_wait_s = {} s must be longer than archive.flush_interval_ms = {} ms, \
                 or every batch is redelivered before it is written",
                self.ack_wait_s, self.flush_interval_ms
            ));
        }
        ARCHIVE_RETRY_BACKOFF_INITIAL_MS.check(
            &k("retry_backoff_initial_ms"),
            self.retry_backoff_initial_ms,
            &mut p,
        );
        ARCHIVE_RETRY_BACKOFF_MAX_MS.check(
            &k("retry_backoff_max_ms"),
            self.retry_backoff_max_ms,
            &mut p,
        );
        if self.retry_backoff_max_ms < self.retry_backoff_initial_ms {
            p.push(format!(
                "archive.retry_backoff_max_ms = {} is below archive.retry_backoff_initial_ms = {}",
                self.retry_backoff_max_ms, self.retry_backoff_initial_ms
            ));
        }
        ARCHIVE_DRAIN_TIMEOUT_S.check(&k("drain_timeout_s"), self.drain_timeout_s, &mut p);
        ARCHIVE_PARTITION_PREMAKE_DAYS.check(
            &k("partition_premake_days"),
            self.partition_premake_days,
            &mut p,
        );
        ARCHIVE_RETENTION_DAYS.check(&k("retention_days"), self.retention_days, &mut p);
        ARCHIVE_MAINTENANCE_INTERVAL_S.check(
            &k("maintenance_interval_s"),
            self.maintenance_interval_s,
            &mut p,
        );
        ARCHIVE_FOLD_INTERVAL_MS.check(&k("fold_interval_ms"), self.fold_interval_ms, &mut p);
        ARCHIVE_COMPRESS_AFTER_DAYS.check(
            &k("compress_after_days"),
            self.compress_after_days,
            &mut p,
        );
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
    ///
    /// # Panics
    /// On values [`ArchiveConfig::problems`] refuses (validate first).
    pub fn max_ack_pending(&self) -> i64 {
        self.batch_len_max
            .checked_mul(self.batches_in_flight_max + 2)
            .and_then(|n| i64::try_from(n).ok())
            .expect("archive.batch_len_max and batches_in_flight_max validated")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

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
        assert_eq!(c.archive.ack, AckSetting::All);
        assert_eq!(c.archive.partitioning, Partitioning::Native);
        assert_eq!(c.archive.retention_days, 30);
        assert_eq!(c.archive.flush_interval_ms, 200);
        for (text, want) in [
            ("auto", AckSetting::Auto),
            ("explicit", AckSetting::Explicit),
        ] {
            let c = Config::from_toml(
                &format!("[archive]\nack = \"{text}\"\n"),
                Path::new("t.toml"),
            )
            .unwrap();
            assert_eq!(c.archive.ack, want);
        }
        assert_eq!(ArchiveConfig::default().ack, AckSetting::Auto);
        assert_eq!(AckSetting::from(AckMode::Explicit), AckSetting::Explicit);
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
            fold_interval_ms: 10,
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
            "fold_interval_ms",
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
            durable_ops: "tspi-archive".into(),
            ..ArchiveConfig::default()
        };
        assert!(same.problems().iter().any(|s| s.contains("must differ")));
    }
}
