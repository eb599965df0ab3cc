//! Skips that say so. A test that needs something a machine may lack (the
//! kernel's io_uring, root for a private network namespace) asks a probe
//! first; when the probe fails, [`skip`] prints
//! `SKIPPED: <test>: <reason>` on stderr and the test returns. Never a
//! silent return.
//!
//! With `TSPI_TEST_NO_SKIP=1` (set by `scripts/test`, which CI runs) a
//! skip fails the test instead, so CI still runs every test or says why
//! it could not.

use std::process::{Command, Stdio};

/// The variable that turns every skip into a failure.
pub const NO_SKIP_ENV: &str = "TSPI_TEST_NO_SKIP";

/// Report that `test` cannot run here because of `reason`: `SKIPPED:` on
/// stderr, or a panic under [`NO_SKIP_ENV`].
#[track_caller]
pub fn skip(test: &str, reason: &str) {
    if std::env::var_os(NO_SKIP_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
        panic!(
            "{test} cannot run here ({NO_SKIP_ENV} is set, so this fails instead of skipping): {reason}"
        );
    }
    eprintln!("SKIPPED: {test}: {reason}");
}

/// Run `test` only when `probe` passed; otherwise [`skip`] it loudly.
/// Returns whether it may run.
#[track_caller]
pub fn require(test: &str, probe: Result<(), String>) -> bool {
    match probe {
        Ok(()) => true,
        Err(reason) => {
            skip(test, &reason);
            false
        }
    }
}

/// The kernel offers what the io_uring receive backend needs.
pub fn io_uring() -> Result<(), String> {
    tspi::receive::probe_io_uring().map_err(|e| format!("no io_uring here: {e}"))
}

/// The process may make a network namespace of its own (`unshare --net`:
/// root or CAP_SYS_ADMIN, util-linux installed).
pub fn netns() -> Result<(), String> {
    match Command::new("unshare")
        .args(["--net", "--", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`unshare --net` refused ({}; it needs root or CAP_SYS_ADMIN): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!(
            "`unshare` did not run ({e}; util-linux provides it, scripts/setup installs it)"
        )),
    }
}

/// TimescaleDB is installed for the harness's PostgreSQL (`./scripts/setup`
/// installs or builds it).
pub fn timescaledb() -> Result<(), String> {
    crate::harness::timescaledb_installed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passing_probe_runs_the_test() {
        assert!(require("t", Ok(())));
    }

    #[test]
    fn a_failing_probe_skips_or_fails_by_the_environment() {
        let failed = std::panic::catch_unwind(|| require("t", Err("no such thing".into())));
        match std::env::var_os(NO_SKIP_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
            true => assert!(failed.is_err()),
            false => assert_eq!(failed.ok(), Some(false)),
        }
    }
}
