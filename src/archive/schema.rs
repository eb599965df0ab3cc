//! Edge: the ordered SQL migrations of `schema/migrations/`, applied at
//! start, each in its own transaction, and recorded in
//! `tspi_schema_migrations` with a checksum. A session-level advisory lock
//! keeps two archivers starting at once from applying one twice. A recorded
//! migration whose text has since changed is an error, never re-run, unless
//! the recorded checksum is one of that migration's `superseded` texts: a
//! fix to how a migration decides (never to what it creates on a database
//! where it already ran) lists the old checksum there.

use super::Partitioning;
use tokio_postgres::Client;

/// One migration: its version (the file's number), name and SQL.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
    /// Checksums of earlier texts of this migration that created the same
    /// schema, so databases migrated by them are accepted.
    pub superseded: &'static [&'static str],
}

/// Every migration, in order. Version numbers are the file prefixes.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_operator_tables.sql",
        sql: include_str!("../../schema/migrations/0001_operator_tables.sql"),
        superseded: &[],
    },
    Migration {
        version: 2,
        name: "0002_telemetry.sql",
        sql: include_str!("../../schema/migrations/0002_telemetry.sql"),
        // The text that chose TimescaleDB by reading shared_preload_libraries
        // (superuser or pg_read_all_settings only); same tables.
        superseded: &["a5cb29da6b3d5a27"],
    },
    Migration {
        version: 3,
        name: "0003_track_minutes.sql",
        sql: include_str!("../../schema/migrations/0003_track_minutes.sql"),
        superseded: &[],
    },
    Migration {
        version: 4,
        name: "0004_track_minutes_by_archiver.sql",
        sql: include_str!("../../schema/migrations/0004_track_minutes_by_archiver.sql"),
        superseded: &[],
    },
    Migration {
        version: 5,
        name: "0005_track_minutes_append.sql",
        sql: include_str!("../../schema/migrations/0005_track_minutes_append.sql"),
        superseded: &[],
    },
];

const _: () = {
    let mut i = 0;
    while i < MIGRATIONS.len() {
        assert!(
            MIGRATIONS[i].version == i as i32 + 1,
            "versions are 1, 2, 3..."
        );
        i += 1;
    }
};

/// Advisory lock key held while migrating (an arbitrary constant).
const MIGRATION_LOCK: i64 = 0x7473_7069_6172_6368; // "tspiarch"

/// FNV-1a 64 of the SQL, hex: enough to notice an edited migration.
pub fn checksum(sql: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sql.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migration {name} failed: {}", super::db::pg_text(.cause))]
    Apply {
        name: &'static str,
        cause: tokio_postgres::Error,
    },
    #[error(
        "migration {name} was applied with checksum {recorded}, but this build's text has {ours}: \
         migrations are never edited once released; add a new one"
    )]
    Changed {
        name: &'static str,
        recorded: String,
        ours: String,
    },
    #[error(
        "the database has migration {version}, newer than this build knows ({known}): run a newer tspi"
    )]
    Newer { version: i32, known: usize },
    #[error("migrating: {}", super::db::pg_text(.0))]
    Db(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(e: tokio_postgres::Error) -> Self {
        MigrateError::Db(e)
    }
}

/// Bring the schema up to date. Returns the versions applied now.
pub async fn migrate(
    client: &mut Client,
    partitioning: Partitioning,
) -> Result<Vec<i32>, MigrateError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = migrate_locked(client, partitioning).await;
    // The lock goes with the session anyway; release it for a long-lived one.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result
}

async fn migrate_locked(
    client: &mut Client,
    partitioning: Partitioning,
) -> Result<Vec<i32>, MigrateError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS tspi_schema_migrations (
                 version    integer PRIMARY KEY,
                 name       text        NOT NULL,
                 checksum   text        NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let recorded: Vec<(i32, String)> = client
        .query(
            "SELECT version, checksum FROM tspi_schema_migrations ORDER BY version",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if let Some(&(version, _)) = recorded
        .iter()
        .find(|(v, _)| *v as usize > MIGRATIONS.len())
    {
        return Err(MigrateError::Newer {
            version,
            known: MIGRATIONS.len(),
        });
    }
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        let ours = checksum(m.sql);
        if let Some((_, theirs)) = recorded.iter().find(|(v, _)| *v == m.version) {
            if *theirs != ours && !m.superseded.contains(&theirs.as_str()) {
                return Err(MigrateError::Changed {
                    name: m.name,
                    recorded: theirs.clone(),
                    ours,
                });
            }
            continue;
        }
        let apply = |cause| MigrateError::Apply {
            name: m.name,
            cause,
        };
        let tx = client.transaction().await?;
        tx.execute(
            "SELECT set_config('tspi.partitioning', $1, true)",
            &[&partitioning.name()],
        )
        .await
        .map_err(apply)?;
        tx.batch_execute(m.sql).await.map_err(apply)?;
        tx.execute(
            "INSERT INTO tspi_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &ours],
        )
        .await
        .map_err(apply)?;
        tx.commit().await.map_err(apply)?;
        tracing::info!(migration = m.name, "schema migration applied");
        applied.push(m.version);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_differ_and_are_stable() {
        assert_eq!(checksum(""), "cbf29ce484222325");
        assert_ne!(checksum(MIGRATIONS[0].sql), checksum(MIGRATIONS[1].sql));
        assert_eq!(checksum("a"), checksum("a"));
    }

    #[test]
    fn superseded_texts_are_not_the_current_ones() {
        for m in MIGRATIONS {
            assert!(
                !m.superseded.contains(&checksum(m.sql).as_str()),
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn migrations_are_the_files_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let names: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(
            files, names,
            "every file in schema/migrations is listed, in order"
        );
        for m in MIGRATIONS {
            assert!(
                m.name.starts_with(&format!("{:04}_", m.version)),
                "{}",
                m.name
            );
        }
    }
}
