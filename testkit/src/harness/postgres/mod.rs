//! PostgreSQL: `initdb` and `postgres` in a temporary directory, TCP on a free
//! loopback port, trust authentication for the user `tspi`.
//!
//! Started plain ([`PgCluster::start`]) or with TimescaleDB preloaded
//! ([`PgCluster::start_timescaledb`]); [`PgCluster::ordinary_database`] does
//! a DBA's one-time steps for an archive role that is not a superuser.

mod replica;
mod roles;
mod tls;

pub use roles::{Ordinary, timescaledb_installed};
pub use tls::make_ca;

use super::process::{self, free_port};
use super::{HarnessError, PORT_ATTEMPTS, READY_TIMEOUT, STOP_TIMEOUT};
use std::env;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
use tempfile::TempDir;

/// The database user `initdb` creates (a superuser, trust authentication).
pub const PG_USER: &str = "tspi";
/// The account PostgreSQL runs as when the harness runs as root.
const DEFAULT_RUN_AS: &str = "postgres";

/// The directory holding `initdb`, `postgres` and `pg_isready`, found once
/// per process: `TSPI_PG_BINDIR`, then the newest `/usr/lib/postgresql/<N>/bin`
/// with both `initdb` and `postgres`, then `pg_config --bindir`.
pub fn pg_bindir() -> Result<PathBuf, HarnessError> {
    static BINDIR: OnceLock<Result<PathBuf, HarnessError>> = OnceLock::new();
    BINDIR.get_or_init(resolve_bindir).clone()
}

fn has_server(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("postgres").is_file()
}

fn resolve_bindir() -> Result<PathBuf, HarnessError> {
    if let Some(dir) = env::var_os("TSPI_PG_BINDIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return if has_server(&dir) {
            Ok(dir)
        } else {
            Err(HarnessError::PgNotFound {
                detail: format!(
                    "TSPI_PG_BINDIR={} has no initdb and postgres",
                    dir.display()
                ),
            })
        };
    }
    let mut candidates: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = parse_major(&entry.file_name().to_string_lossy())?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .collect();
    candidates.sort();
    if let Some((_, bin)) = candidates.pop() {
        return Ok(bin);
    }
    if let Ok(out) = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_server(&dir) {
            return Ok(dir);
        }
        return Err(HarnessError::PgNotFound {
            detail: format!(
                "no /usr/lib/postgresql/<N>/bin, and `pg_config --bindir` = {} has no initdb and postgres \
                 (only the client is installed?)",
                dir.display()
            ),
        });
    }
    Err(HarnessError::PgNotFound {
        detail: "TSPI_PG_BINDIR unset, no /usr/lib/postgresql/<N>/bin, no pg_config".to_owned(),
    })
}

/// `15` → `[15]`, `9.6` → `[9, 6]`; anything else is not a version directory.
fn parse_major(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|p| p.parse().ok()).collect()
}

/// The unprivileged account to run the server as.
#[derive(Clone, Debug, PartialEq)]
struct Account {
    name: String,
    uid: u32,
    gid: u32,
}

/// `(uid, gid)` of `user` in `/etc/passwd` text.
fn lookup_passwd(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != user {
            return None;
        }
        let _password = f.next()?;
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

/// `None` when not root (the server runs as us); the account to switch to
/// when root, since PostgreSQL refuses to run as root.
fn run_as() -> Result<Option<Account>, HarnessError> {
    // SAFETY: geteuid(2) has no arguments, cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Ok(None);
    }
    let name = env::var("TSPI_PG_USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_RUN_AS.to_owned());
    let passwd = std::fs::read_to_string("/etc/passwd")
        .map_err(|e| HarnessError::io("reading /etc/passwd to find the PostgreSQL account", e))?;
    match lookup_passwd(&passwd, &name) {
        Some((0, _)) | None => Err(HarnessError::PgAccountMissing { user: name }),
        Some((uid, gid)) => Ok(Some(Account { name, uid, gid })),
    }
}

/// A PostgreSQL server of its own: data directory, socket directory and log
/// in a temporary directory, TCP on `127.0.0.1:port`, user `tspi` with trust
/// authentication, durability off (fsync, synchronous_commit and
/// full_page_writes) for speed. Stopped, and the directory removed, on drop.
pub struct PgCluster {
    port: u16,
    bindir: PathBuf,
    account: Option<Account>,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    label: String,
    /// `name=value` server settings passed after the defaults (so they win).
    settings: Vec<String>,
    /// The CA that signed the server's certificate, when it requires TLS.
    tls_ca: Option<PathBuf>,
    child: Option<Child>,
    dir: TempDir,
}

impl PgCluster {
    /// `initdb`, then start `postgres` on a free port; returns once
    /// `pg_isready` says it accepts connections.
    pub fn start() -> Result<PgCluster, HarnessError> {
        Self::start_with_settings(&[])
    }

    /// [`PgCluster::start`] with extra server settings (`name=value`, each
    /// passed as `-c`, after the defaults so they override them), e.g.
    /// `["fsync=on", "synchronous_commit=on", "full_page_writes=on"]` for a
    /// durable server in a benchmark.
    pub fn start_with_settings(settings: &[&str]) -> Result<PgCluster, HarnessError> {
        Self::start_prepared(settings, |_| Ok(()))
    }

    /// `initdb`, then `prepare` (configuration files, certificates), then
    /// start with `settings`.
    fn start_prepared(
        settings: &[&str],
        prepare: impl FnOnce(&mut PgCluster) -> Result<(), HarnessError>,
    ) -> Result<PgCluster, HarnessError> {
        let mut pg = Self::unstarted(settings)?;
        pg.initdb()?;
        prepare(&mut pg)?;
        pg.launch()?;
        Ok(pg)
    }

    /// The temporary directories (owned by the server's account), no data
    /// directory yet, not running.
    fn unstarted(settings: &[&str]) -> Result<PgCluster, HarnessError> {
        let bindir = pg_bindir()?;
        let account = run_as()?;
        let dir = tempfile::Builder::new()
            .prefix("tspi-pg-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating a temporary directory for PostgreSQL", e))?;
        let socket_dir = dir.path().join("socket");
        std::fs::create_dir(&socket_dir)
            .map_err(|e| HarnessError::io(format!("creating {}", socket_dir.display()), e))?;
        if let Some(a) = &account {
            for path in [dir.path(), &socket_dir] {
                std::os::unix::fs::chown(path, Some(a.uid), Some(a.gid)).map_err(|e| {
                    HarnessError::io(format!("chown {} to {}", path.display(), a.name), e)
                })?;
            }
        }
        Ok(PgCluster {
            port: 0,
            data_dir: dir.path().join("data"),
            log_path: dir.path().join("postgres.log"),
            label: "postgres".to_owned(),
            settings: settings.iter().map(|s| (*s).to_owned()).collect(),
            tls_ca: None,
            bindir,
            account,
            socket_dir,
            child: None,
            dir,
        })
    }

    /// Start on a free port (retried when the port was taken meanwhile);
    /// returns once ready.
    fn launch(&mut self) -> Result<(), HarnessError> {
        for _ in 0..PORT_ATTEMPTS {
            self.port = free_port()?;
            self.label = format!("postgres (127.0.0.1:{})", self.port);
            match self.spawn().and_then(|()| self.wait_ready()) {
                Ok(()) => return Ok(()),
                Err(e) if e.is_port_in_use() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(HarnessError::PortsExhausted {
            server: "postgres".to_owned(),
            attempts: PORT_ATTEMPTS,
            log: self.log_tail(40),
        })
    }

    /// A command from the bindir, as the server account, in the temp dir,
    /// with a locale that always exists.
    fn command(&self, program: &str) -> Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(self.bindir.join(program));
        cmd.current_dir(self.dir.path())
            .stdin(Stdio::null())
            .env("LC_ALL", "C")
            .env("LANG", "C")
            .env_remove("PGDATA")
            .env_remove("PGHOST")
            .env_remove("PGPORT");
        if let Some(a) = &self.account {
            cmd.uid(a.uid).gid(a.gid);
        }
        cmd
    }

    fn initdb(&self) -> Result<(), HarnessError> {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(&self.data_dir)
            .args([
                "-U",
                PG_USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .map_err(|e| {
                HarnessError::io(format!("running {}/initdb", self.bindir.display()), e)
            })?;
        if out.status.success() {
            return Ok(());
        }
        let what = match &self.account {
            Some(a) => format!(
                "initdb as account {:?} in {} (that account must be able to reach the directory: \
                 set TMPDIR to a directory it can search, such as /tmp)",
                a.name,
                self.dir.path().display()
            ),
            None => format!("initdb in {}", self.dir.path().display()),
        };
        Err(HarnessError::CommandFailed {
            server: "postgres".to_owned(),
            what,
            status: process::status_text(out.status),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }

    fn spawn(&mut self) -> Result<(), HarnessError> {
        process::log_note(
            &self.log_path,
            &format!("starting postgres on port {}", self.port),
        );
        let stdout = process::open_log(&self.log_path)?;
        let stderr = process::open_log(&self.log_path)?;
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.socket_dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .args(self.settings.iter().flat_map(|s| ["-c", s.as_str()]))
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| {
                HarnessError::io(format!("starting {}/postgres", self.bindir.display()), e)
            })?;
        self.child = Some(child);
        Ok(())
    }

    fn is_ready(&self) -> bool {
        process::tcp_accepts(self.port)
            && Command::new(self.bindir.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", PG_USER, "-d", "postgres", "-t", "2"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    }

    fn wait_ready(&mut self) -> Result<(), HarnessError> {
        let mut child = self.child.take().expect("spawned");
        let result = process::wait_ready(
            &self.label,
            &mut child,
            &self.log_path,
            READY_TIMEOUT,
            Duration::from_millis(50),
            || self.is_ready(),
        );
        match result {
            Ok(()) => self.child = Some(child),
            Err(_) => {
                process::kill_child(child);
            }
        }
        result
    }

    /// libpq key/value form: `host=127.0.0.1 port=P user=tspi dbname=postgres`.
    pub fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={PG_USER} dbname=postgres",
            self.port
        )
    }

    /// URL form: `postgresql://tspi@127.0.0.1:P/postgres`.
    pub fn url(&self) -> String {
        format!("postgresql://{PG_USER}@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the Unix-domain socket (`host=` this for a socket
    /// connection).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The data directory (survives `stop`/`restart`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// True while the postmaster runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Fast shutdown (SIGINT: roll back open transactions, checkpoint,
    /// exit), then SIGKILL if it has not exited within 10 s. Idempotent.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            let status = process::stop_child(child, libc::SIGINT, STOP_TIMEOUT);
            process::log_note(&self.log_path, &format!("stopped ({status:?})"));
        }
    }

    /// SIGKILL the postmaster now, as in a crash. Idempotent. Its backends
    /// notice and exit; a restart then runs crash recovery.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.take() {
            let status = process::kill_child(child);
            process::log_note(&self.log_path, &format!("killed ({status:?})"));
        }
    }

    /// Start again on the same port with the same data directory (a running
    /// server is stopped first); returns once it is ready.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop();
        process::restart_on_same_port(|| self.spawn().and_then(|()| self.wait_ready()))
    }

    /// The last `lines` lines of the server's log (stdout/stderr, with the
    /// harness's start/stop notes).
    pub fn log_tail(&self, lines: usize) -> String {
        process::tail_file(&self.log_path, lines)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        process::dump_log_if_panicking(&self.label, &self.log_path);
        self.stop();
    }
}

impl std::fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCluster")
            .field("label", &self.label)
            .field("dir", &self.dir.path())
            .field("running", &self.child.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_directories() {
        assert_eq!(parse_major("15"), Some(vec![15]));
        assert_eq!(parse_major("9.6"), Some(vec![9, 6]));
        assert_eq!(parse_major("common"), None);
        assert_eq!(parse_major(""), None);
        assert!(parse_major("16").unwrap() > parse_major("9.6").unwrap());
    }

    #[test]
    fn taken_port_is_recognised() {
        // Needs the real binary: ./scripts/setup installs it. A missing
        // binary fails the test with the install hint rather than skipping.
        if let Err(e) = pg_bindir() {
            panic!("{e}");
        }
        let mut pg = PgCluster::start().expect("start postgres");
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        pg.stop();
        pg.port = taken.local_addr().unwrap().port();
        let err = pg.spawn().and_then(|()| pg.wait_ready()).unwrap_err();
        assert!(err.is_port_in_use(), "{err}");
        assert!(!pg.is_running());
    }

    #[test]
    fn passwd_lookup() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      postgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n\
                      broken:x:abc:1::/:/bin/false\n";
        assert_eq!(lookup_passwd(passwd, "postgres"), Some((101, 104)));
        assert_eq!(lookup_passwd(passwd, "root"), Some((0, 0)));
        assert_eq!(lookup_passwd(passwd, "post"), None);
        assert_eq!(lookup_passwd(passwd, "broken"), None);
        assert_eq!(lookup_passwd(passwd, "nobody"), None);
    }
}
