//! Typed configuration: `config/tspi.toml` is the documented example.
//!
//! This module only assembles the file. Each stage owns its section, its
//! defaults and its checks, in a module that does no I/O:
//!
//! | section      | owner                                    |
//! |--------------|------------------------------------------|
//! | `[nats]`     | [`crate::nats::config`]                  |
//! | `[stream]`   | [`crate::jetstream::config`]             |
//! | `[ingest]`   | [`crate::receive::config`]               |
//! | `[publish]`  | [`crate::publish::config`]               |
//! | `[spool]`    | [`crate::spool::config`]                 |
//! | `[metrics]`  | [`crate::metrics::config`]               |
//! | `[archive]`  | [`crate::archive::config`]               |
//! | `[channels]` | [`crate::replay::config`]                |
//! | `[console]`  | [`crate::console::config`]               |
//!
//! Every bound is in [`limits`]. What relates two sections (the duplicate
//! window against the publish retry horizon, say) and what depends on the
//! machine (which cores this process may run on) is checked here, by
//! [`Config::validate_for`], which `tspi validate` and every role run before
//! their first request to a server.
//!
//! Unknown keys are errors that name the key and its line, never silently
//! ignored. Renamed keys keep working for one release, with a warning that
//! names the new spelling ([`Config::warnings`]). Command-line flags
//! override file values.

pub mod limits;
mod renamed;

// Only the stages' section modules, which do no I/O (a test checks).
pub use crate::archive::config::ArchiveConfig;
pub use crate::console::config::{ConsoleConfig, SiteConfig};
pub use crate::jetstream::config::StreamConfig;
pub use crate::metrics::config::MetricsConfig;
pub use crate::nats::config::{NatsConfig, TlsConfig};
pub use crate::publish::config::{PublishConfig, PublishMode};
pub use crate::receive::config::{IngestConfig, MulticastConfig};
pub use crate::replay::config::ChannelsConfig;
pub use crate::spool::config::SpoolConfig;

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// The whole file. Every section is optional; defaults are documented on
/// each field.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub nats: NatsConfig,
    pub stream: StreamConfig,
    pub ingest: IngestConfig,
    pub publish: PublishConfig,
    pub spool: SpoolConfig,
    pub metrics: MetricsConfig,
    pub archive: ArchiveConfig,
    pub channels: ChannelsConfig,
    pub console: ConsoleConfig,
    /// What the file itself said beyond the values: which sections it
    /// holds, and the renamed keys it used. Empty for a `Config` built in
    /// code.
    #[serde(skip)]
    pub file: FileInfo,
}

/// What parsing a file learned besides its values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileInfo {
    /// Top-level sections present, in file order.
    pub sections: Vec<String>,
    /// One warning per renamed key spelled the old way.
    pub warnings: Vec<String>,
}

/// A part of the appliance that a configuration file can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Role {
    /// `tspi ingest`: `[ingest]`, `[publish]`, `[stream]`, `[metrics]`.
    Ingest,
    /// `tspi archive`: `[archive]`, `[stream]`, `[metrics]`.
    Archive,
    /// `tspi channels serve`: `[channels]`, `[stream]`.
    Channels,
    /// `tspi replay`: `[channels]` (its defaults).
    Replay,
    /// `tspi console serve`: `[console]`.
    Console,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Ingest,
        Role::Archive,
        Role::Channels,
        Role::Replay,
        Role::Console,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Archive => "archive",
            Role::Channels => "channels",
            Role::Replay => "replay",
            Role::Console => "console",
        }
    }

    /// The key that enables this role in a file, as `tspi run` and `tspi
    /// validate` read it (`replay` is an operator's command, never enabled
    /// by a file).
    pub const fn enabled_by(self) -> Option<&'static str> {
        match self {
            Role::Ingest => Some("[ingest] udp"),
            Role::Archive => Some("[archive] postgres"),
            Role::Channels => Some("[channels] enabled = true"),
            Role::Replay => None,
            Role::Console => Some("[console] enabled = true"),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What validation needs to know about the machine it runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// Core ids this process may run on (its affinity mask), ascending.
    pub cores_allowed: Vec<usize>,
}

impl Machine {
    /// This process on this machine: the cores its main thread was allowed
    /// when first asked (what systemd's `CPUAffinity=` or `taskset` gave
    /// the process); else (where that cannot be read) cores
    /// `0..available_parallelism`. Read once and kept: every role validates
    /// before it pins a thread, and `tspi run` pins its main thread to the
    /// non-receive cores before starting the roles, which validate again.
    pub fn current() -> Machine {
        static FIRST: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();
        let cores_allowed = FIRST
            .get_or_init(|| {
                let mut cores = process_cores().unwrap_or_else(|| {
                    (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
                });
                cores.sort_unstable();
                cores
            })
            .clone();
        Machine { cores_allowed }
    }

    fn allows(&self, core: usize) -> bool {
        self.cores_allowed.binary_search(&core).is_ok()
    }

    fn describe(&self) -> String {
        let ids: Vec<String> = self.cores_allowed.iter().map(|c| c.to_string()).collect();
        ids.join(",")
    }
}

/// The cores the process's main thread may run on (`sched_getaffinity` of
/// the process id, which is the main thread's id).
fn process_cores() -> Option<Vec<usize>> {
    // SAFETY: `cpu_set_t` is plain data for which all zeroes is a valid
    // (empty) set; `sched_getaffinity` writes at most `size_of::<cpu_set_t>()`
    // bytes into it, and `CPU_ISSET` reads within it for indices below
    // `CPU_SETSIZE`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(
            libc::getpid(),
            std::mem::size_of::<libc::cpu_set_t>(),
            &mut set,
        ) != 0
        {
            return None;
        }
        let cores: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect();
        (!cores.is_empty()).then_some(cores)
    }
}

/// A configuration that cannot be used. The message names the file, the
/// line and the key where there is one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Parse TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: describe_toml_error(text, &e),
        })?;
        // Parsed once more as a plain table, to see what the typed parse
        // cannot: which sections are present, and old key spellings (serde
        // aliases accept them silently).
        let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: describe_toml_error(text, &e),
        })?;
        cfg.file = FileInfo {
            sections: table.keys().cloned().collect(),
            warnings: renamed::warnings(&table, origin),
        };
        Ok(cfg)
    }

    /// Read and parse a file (not yet validated: flags may still override).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Warnings about the file that do not stop it from working (renamed
    /// keys). `tspi validate` prints them and every role logs them.
    pub fn warnings(&self) -> &[String] {
        &self.file.warnings
    }

    /// The roles this configuration enables, in the order they start: the
    /// one rule `tspi run` starts by and `tspi validate` checks by.
    /// - ingest: `[ingest] udp` lists an address (it cannot run without);
    /// - archive: `[archive] postgres` is set (likewise);
    /// - channels: `[channels] enabled = true` (the service needs nothing
    ///   but NATS, so it is switched on by name);
    /// - console: `[console] enabled = true` (likewise).
    ///
    /// The documented example, `config/tspi.toml`, enables ingest alone.
    pub fn roles_enabled(&self) -> Vec<Role> {
        let mut roles = Vec::new();
        if !self.ingest.udp.is_empty() {
            roles.push(Role::Ingest);
        }
        if self.archive.postgres.is_some() {
            roles.push(Role::Archive);
        }
        if self.channels.enabled {
            roles.push(Role::Channels);
        }
        if self.console.enabled {
            roles.push(Role::Console);
        }
        roles
    }

    /// Check the roles the file enables on this machine: what `tspi
    /// validate --config F` does.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_for(&self.roles_enabled(), &Machine::current())
    }

    /// Check every value, every rule between sections, and what `roles`
    /// need of the file and of `machine`. Every problem is listed, not just
    /// the first. Touches nothing: roles call it before their first request
    /// to a server.
    pub fn validate_for(&self, roles: &[Role], machine: &Machine) -> Result<(), ConfigError> {
        let problems = self.problems_for(roles, machine);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems.join("; ")))
        }
    }

    /// [`Config::validate_for`]'s problems, each naming its key.
    pub fn problems_for(&self, roles: &[Role], machine: &Machine) -> Vec<String> {
        let mut problems = Vec::new();
        // Every section's own values, whichever roles run: a bound is a
        // bound, and absent sections hold valid defaults.
        problems.extend(self.nats.problems());
        problems.extend(self.stream.problems());
        problems.extend(self.ingest.problems());
        problems.extend(self.publish.problems());
        problems.extend(self.spool.problems());
        problems.extend(self.metrics.problems());
        problems.extend(self.archive.problems());
        problems.extend(self.channels.problems());
        problems.extend(self.console.problems());

        // Between sections.
        let window_ms = self.stream.duplicate_window_s.checked_mul(limits::MS_PER_S);
        let horizon_ms = self.publish.retry_horizon_ms();
        if let (Some(window_ms), Some(horizon_ms)) = (window_ms, horizon_ms)
            && window_ms <= horizon_ms
        {
            problems.push(format!(
                "stream.duplicate_window_s = {} s does not cover the retry horizon of {horizon_ms} ms \
                 (publish.ack_timeout_ms + publish.retry_backoff_max_ms): a retried message \
                 could be stored twice",
                self.stream.duplicate_window_s
            ));
        }

        for role in roles {
            match role {
                Role::Ingest => {
                    if self.ingest.udp.is_empty() {
                        problems.push("ingest.udp: no UDP address to listen on".to_owned());
                    }
                    problems.extend(self.receive_core_problems(machine));
                }
                Role::Archive => {}
                Role::Console => {
                    // `tspi run` serves its /metrics and the hub side by
                    // side: they cannot share a port.
                    let listen = self.console.listen;
                    if let Some(m) = self.metrics.addr
                        && m.port() != 0
                        && m.port() == listen.port()
                        && (m.ip() == listen.ip()
                            || m.ip().is_unspecified()
                            || listen.ip().is_unspecified())
                    {
                        problems.push(format!(
                            "console.listen = {listen} and metrics.addr = {m} share a port: \
                             tspi run serves both; give the console its own"
                        ));
                    }
                }
                Role::Channels | Role::Replay => {
                    let replay_age_s = self.channels.replay_age_max_h.checked_mul(limits::S_PER_H);
                    if replay_age_s.is_some_and(|age| age < self.stream.duplicate_window_s) {
                        problems.push(format!(
                            "stream.duplicate_window_s = {} is longer than \
                             channels.replay_age_max_h = {} h: the server refuses a \
                             TSPI_REPLAY stream whose duplicate window outlasts its retention",
                            self.stream.duplicate_window_s, self.channels.replay_age_max_h
                        ));
                    }
                    if *role == Role::Channels
                        && self.channels.honour_foreign_starts
                        && self.channels.foreign_start_source
                            == crate::channels::message::ReplaySource::Archive
                        && self.channels.archive_dsn.is_none()
                        && self.archive.postgres.is_none()
                    {
                        problems.push(
                            "channels.foreign_start_source = \"archive\" needs an archive: \
                             channels.archive_dsn (or archive.postgres)"
                                .to_owned(),
                        );
                    }
                    for &core in &self.channels.pacing_cores {
                        if core < limits::CORE_ID_END && !machine.allows(core) {
                            problems.push(format!(
                                "channels.pacing_cores: this process may not run on core \
                                 {core} (allowed: {})",
                                machine.describe()
                            ));
                        }
                    }
                }
            }
        }
        problems.dedup();
        problems
    }

    /// The receive threads' cores against the machine's.
    fn receive_core_problems(&self, machine: &Machine) -> Vec<String> {
        let i = &self.ingest;
        if !limits::INGEST_WORKERS.contains(i.workers as u64)
            || (!i.cores.is_empty() && i.cores.len() != i.workers)
        {
            return Vec::new(); // already reported
        }
        let missing: Vec<usize> = self
            .receive_cores()
            .into_iter()
            .filter(|&c| c < limits::CORE_ID_END && !machine.allows(c))
            .collect();
        if missing.is_empty() {
            Vec::new()
        } else if i.cores.is_empty() {
            vec![format!(
                "ingest.workers = {} pins receive threads to cores 0..{}, but this process \
                 may run only on cores {}: lower ingest.workers or list ingest.cores",
                i.workers,
                i.workers,
                machine.describe()
            )]
        } else {
            let list: Vec<String> = missing.iter().map(|c| c.to_string()).collect();
            vec![format!(
                "ingest.cores: this process may not run on core {} (allowed: {})",
                list.join(","),
                machine.describe()
            )]
        }
    }

    /// The operator tokens the console accepts: `[console] operator_tokens`,
    /// or, when that is empty, the `[channels]` ones (`operator_tokens` and
    /// `operator_token`): one list of operators for both unless a file
    /// says otherwise.
    pub fn console_operator_tokens(&self) -> Vec<String> {
        if self.console.operator_tokens.is_empty() {
            self.channels.all_operator_tokens()
        } else {
            self.console.operator_tokens.clone()
        }
    }

    /// Cores for the receive threads: as configured, else 0..workers.
    pub fn receive_cores(&self) -> Vec<usize> {
        self.ingest.receive_cores()
    }
}

/// toml's message already says "TOML parse error at line L, column C" with
/// the offending line quoted; keep it, and make sure the line is named even
/// when the error carries only a byte span.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.to_string();
    if msg.contains("line ") {
        return msg.trim_end().to_owned();
    }
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {}", msg.trim_end())
        }
        None => msg.trim_end().to_owned(),
    }
}

#[cfg(test)]
mod tests;
