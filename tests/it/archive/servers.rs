//! The PostgreSQL an archive test runs against: plain (native day
//! partitions) or with TimescaleDB preloaded (a hypertable with day
//! chunks), always reached as an ordinary role that owns its database, the
//! way a production archive connects (docs/archive.md, "Database role").

use tspi_testkit::harness::{Ordinary, PgCluster};
use tspi_testkit::skip;

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// No TimescaleDB preloaded: native partitions.
    Native,
    /// TimescaleDB preloaded and created in the archive's database by the
    /// superuser (the DBA's step).
    Timescaledb,
}

impl Flavor {
    /// What `tspi_archive_partitioning()` says on it.
    pub fn mode(self) -> &'static str {
        match self {
            Flavor::Native => "native",
            Flavor::Timescaledb => "timescaledb",
        }
    }
}

/// The archive role's name (and its database's).
pub const ROLE: &str = "tspi_archive";

/// Start the server and do the DBA's one-time steps for [`ROLE`]. `None`
/// when TimescaleDB is wanted but not installed: skipped loudly (a failure
/// under `TSPI_TEST_NO_SKIP=1`, which `scripts/test` sets).
pub fn archive_pg(test: &str, flavor: Flavor) -> Option<(PgCluster, Ordinary)> {
    archive_pg_with(test, flavor, &[])
}

/// [`archive_pg`] with extra server settings.
pub fn archive_pg_with(
    test: &str,
    flavor: Flavor,
    settings: &[&str],
) -> Option<(PgCluster, Ordinary)> {
    let pg = match flavor {
        Flavor::Native => PgCluster::start_with_settings(settings).expect("postgres"),
        Flavor::Timescaledb => {
            if !skip::require(test, skip::timescaledb()) {
                return None;
            }
            PgCluster::start_timescaledb_with_settings(settings).expect("postgres + timescaledb")
        }
    };
    let role = pg.ordinary_database(ROLE).expect("the DBA's steps");
    Some((pg, role))
}

/// A plain server (native partitions) and [`ROLE`] on it.
pub fn plain() -> (PgCluster, Ordinary) {
    archive_pg("", Flavor::Native).expect("a plain server is never skipped")
}
