//! TimescaleDB and ordinary roles: a server with the extension preloaded,
//! and the one-time steps a DBA takes for an archive role that is not a
//! superuser (docs/archive.md, "Database role").

use super::{PG_USER, PgCluster, pg_bindir};
use crate::harness::HarnessError;
use crate::harness::process;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Server settings for a TimescaleDB server: the library preloaded, and no
/// telemetry (it would try to reach the internet).
const TIMESCALEDB_SETTINGS: &[&str] = &[
    "shared_preload_libraries=timescaledb",
    "timescaledb.telemetry_level=off",
];

/// `pg_config --<what>` of the PostgreSQL in `bindir` (its own pg_config,
/// else the one on PATH).
fn pg_config(bindir: &Path, what: &str) -> Option<PathBuf> {
    let own = bindir.join("pg_config");
    let program = if own.is_file() {
        own
    } else {
        PathBuf::from("pg_config")
    };
    let out = Command::new(program)
        .arg(format!("--{what}"))
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// TimescaleDB is installed for the PostgreSQL the harness runs (its
/// control file under the share directory and its library under the
/// library directory): `Ok`, or why not, with the fix.
pub fn timescaledb_installed() -> Result<(), String> {
    let bindir = pg_bindir().map_err(|e| e.to_string())?;
    // Debian's layout (/usr/lib/postgresql/N/bin -> /usr/share/postgresql/N,
    // /usr/lib/postgresql/N/lib) when no pg_config answers.
    let major = bindir
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let share = pg_config(&bindir, "sharedir")
        .unwrap_or_else(|| PathBuf::from(format!("/usr/share/postgresql/{major}")));
    let lib = pg_config(&bindir, "pkglibdir")
        .unwrap_or_else(|| bindir.parent().unwrap_or(&bindir).join("lib"));
    let control = share.join("extension/timescaledb.control");
    let library = lib.join("timescaledb.so");
    if control.is_file() && library.is_file() {
        Ok(())
    } else {
        Err(format!(
            "TimescaleDB is not installed for {} (no {} and {}): run ./scripts/setup (it builds \
             it from the source tarball named by TSPI_TIMESCALEDB_SOURCE when no package is \
             reachable)",
            bindir.display(),
            control.display(),
            library.display()
        ))
    }
}

/// An ordinary role and the database it owns, made by
/// [`PgCluster::ordinary_database`].
#[derive(Clone, Debug)]
pub struct Ordinary {
    pub role: String,
    pub database: String,
    /// libpq key/value form, as that role.
    pub dsn: String,
}

impl PgCluster {
    /// [`PgCluster::start`] with TimescaleDB in `shared_preload_libraries`
    /// (telemetry off). Fails with the install hint when it is not installed
    /// ([`timescaledb_installed`]).
    pub fn start_timescaledb() -> Result<PgCluster, HarnessError> {
        Self::start_timescaledb_with_settings(&[])
    }

    /// [`PgCluster::start_timescaledb`] with extra settings (after the
    /// preload, so they win).
    pub fn start_timescaledb_with_settings(settings: &[&str]) -> Result<PgCluster, HarnessError> {
        timescaledb_installed().map_err(|detail| HarnessError::TimescaledbNotFound { detail })?;
        let all: Vec<&str> = TIMESCALEDB_SETTINGS
            .iter()
            .chain(settings)
            .copied()
            .collect();
        Self::start_with_settings(&all)
    }

    /// True when this server was started with TimescaleDB preloaded.
    pub fn has_timescaledb(&self) -> bool {
        self.settings
            .iter()
            .any(|s| s == "shared_preload_libraries=timescaledb")
    }

    /// Run `sql` with `psql` as the superuser `tspi` in `dbname`, over the
    /// Unix socket (stop at the first error); returns its unaligned,
    /// tuples-only output.
    pub fn psql(&self, dbname: &str, sql: &str) -> Result<String, HarnessError> {
        let out = self
            .command("psql")
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string()])
            .args(["-U", PG_USER, "-d", dbname, "-c", sql])
            .output()
            .map_err(|e| HarnessError::io(format!("running {}/psql", self.bindir.display()), e))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned());
        }
        Err(HarnessError::CommandFailed {
            server: self.label.clone(),
            what: format!("psql -d {dbname} -c {sql:?}"),
            status: process::status_text(out.status),
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// A DBA's one-time steps for an archive that does not run as a
    /// superuser: a login role `name` (no superuser, no role or database
    /// creation, no `pg_read_all_settings`) owning a database `name`; on a
    /// TimescaleDB server, `CREATE EXTENSION timescaledb` in it, done by the
    /// superuser. Returns the role's connection string.
    pub fn ordinary_database(&self, name: &str) -> Result<Ordinary, HarnessError> {
        self.psql(
            "postgres",
            &format!("CREATE ROLE {name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"),
        )?;
        self.psql("postgres", &format!("CREATE DATABASE {name} OWNER {name}"))?;
        if self.has_timescaledb() {
            self.psql(name, "CREATE EXTENSION IF NOT EXISTS timescaledb")?;
        }
        Ok(Ordinary {
            role: name.to_owned(),
            database: name.to_owned(),
            dsn: format!(
                "host=127.0.0.1 port={} user={name} dbname={name}",
                self.port
            ),
        })
    }
}
