//! Streaming replication: a hot standby of a running server, made with
//! `pg_basebackup -R` (it writes `standby.signal` and `primary_conninfo`),
//! promoted when the test says so.

use super::PgCluster;
use crate::harness::HarnessError;
use crate::harness::process;
use std::time::{Duration, Instant};

/// How long a standby may take to start streaming, or a promotion to end.
const REPLICA_TIMEOUT: Duration = Duration::from_secs(30);

impl PgCluster {
    /// A hot standby of `self`: `pg_basebackup -R -X stream` over the
    /// primary's Unix socket (initdb's `pg_hba.conf` trusts local
    /// replication), the primary's settings, its own free port. Returns
    /// once it accepts (read-only) connections and the primary lists it as
    /// streaming.
    pub fn start_standby(&self) -> Result<PgCluster, HarnessError> {
        let settings: Vec<&str> = self.settings.iter().map(String::as_str).collect();
        let mut standby = PgCluster::unstarted(&settings)?;
        let out = standby
            .command("pg_basebackup")
            .arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-U", super::PG_USER])
            .arg("-D")
            .arg(&standby.data_dir)
            .args(["-R", "-X", "stream", "--no-sync", "-c", "fast"])
            .output()
            .map_err(|e| HarnessError::io("running pg_basebackup", e))?;
        if !out.status.success() {
            return Err(HarnessError::CommandFailed {
                server: self.label.clone(),
                what: "pg_basebackup -R".to_owned(),
                status: process::status_text(out.status),
                output: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        standby.launch()?;
        standby.label = format!("postgres standby (127.0.0.1:{})", standby.port);
        let deadline = Instant::now() + REPLICA_TIMEOUT;
        loop {
            let streaming = self.psql(
                "postgres",
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
            )?;
            if streaming != "0" {
                return Ok(standby);
            }
            if Instant::now() > deadline {
                return Err(HarnessError::NotReady {
                    server: standby.label.clone(),
                    waited: REPLICA_TIMEOUT,
                    log: standby.log_tail(40),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// True while this server is a standby (in recovery).
    pub fn is_standby(&self) -> Result<bool, HarnessError> {
        Ok(self.psql("postgres", "SELECT pg_is_in_recovery()")? == "t")
    }

    /// Promote this standby to a primary; returns once it accepts writes.
    pub fn promote(&self) -> Result<(), HarnessError> {
        self.psql("postgres", "SELECT pg_promote(true, 30)")?;
        let deadline = Instant::now() + REPLICA_TIMEOUT;
        while self.is_standby()? {
            if Instant::now() > deadline {
                return Err(HarnessError::NotReady {
                    server: self.label.clone(),
                    waited: REPLICA_TIMEOUT,
                    log: self.log_tail(40),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}
