//! nats-server: one JetStream node, or a JetStream cluster on loopback.

use super::process::{self, free_ports};
use super::{HarnessError, PORT_ATTEMPTS, READY_TIMEOUT, STOP_TIMEOUT};
use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
use tempfile::TempDir;

/// The oldest nats-server the project works with: fast-ingest batch publish
/// (ADR-50) arrived in 2.14.
pub const NATS_MIN_VERSION: (u32, u32, u32) = (2, 14, 0);

/// The readiness probe: 200 once the server is up with JetStream enabled.
const HEALTHZ: &str = "/healthz?js-enabled-only=true";

/// The nats-server binary the harness runs, found once per process:
/// `TSPI_NATS_SERVER`, then `<workspace>/.tools/venv/bin/nats-server`, then
/// `nats-server` on `PATH`. It must report version 2.14 or newer.
pub fn nats_server_binary() -> Result<PathBuf, HarnessError> {
    static BINARY: OnceLock<Result<PathBuf, HarnessError>> = OnceLock::new();
    BINARY.get_or_init(resolve_binary).clone()
}

fn resolve_binary() -> Result<PathBuf, HarnessError> {
    let mut tried = Vec::new();
    if let Some(path) = env::var_os("TSPI_NATS_SERVER").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(HarnessError::NatsNotFound {
                tried: format!("TSPI_NATS_SERVER={}, which is not a file", path.display()),
            });
        }
        return check_version(path);
    }
    tried.push("TSPI_NATS_SERVER (unset)".to_owned());

    // The workspace root is this crate's parent. A development-only path:
    // the crate is never part of the shipped `tspi` binary.
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/nats-server");
    if venv.is_file() {
        return check_version(venv);
    }
    tried.push(venv.display().to_string());

    if let Some(path) = find_on_path("nats-server", env::var_os("PATH")) {
        return check_version(path);
    }
    tried.push("nats-server on PATH".to_owned());
    Err(HarnessError::NatsNotFound {
        tried: tried.join(", "),
    })
}

fn find_on_path(name: &str, path: Option<OsString>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    env::split_paths(&path?)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn check_version(path: PathBuf) -> Result<PathBuf, HarnessError> {
    let out = Command::new(&path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| HarnessError::io(format!("running {} --version", path.display()), e))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match parse_nats_version(&text) {
        Some(v) if v >= NATS_MIN_VERSION => Ok(path),
        Some((a, b, c)) => Err(HarnessError::NatsTooOld {
            path,
            found: format!("{a}.{b}.{c}"),
        }),
        None => Err(HarnessError::NatsVersionUnknown {
            path,
            output: text.trim().to_owned(),
        }),
    }
}

/// The version in `nats-server --version` output (`nats-server: v2.15.1`),
/// as (major, minor, patch). Pre-release suffixes (`-RC.1`) are ignored.
pub fn parse_nats_version(output: &str) -> Option<(u32, u32, u32)> {
    output.split_whitespace().find_map(|word| {
        let v = word.strip_prefix('v')?;
        let core = v.split(['-', '+']).next()?;
        let mut parts = core.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().map_or(Some(0), |p| p.parse().ok())?;
        Some((major, minor, patch))
    })
}

/// The cluster part of a node's configuration.
#[derive(Clone, Debug, PartialEq)]
struct ClusterConfig {
    name: String,
    port: u16,
    /// Route ports of the other nodes.
    routes: Vec<u16>,
}

/// The credentials a server requires of its clients
/// (its `authorization { }` block).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerAuth {
    /// `authorization { user, password }`.
    UserPassword { user: String, password: String },
    /// `authorization { token }`.
    Token(String),
}

/// Everything a node's configuration file says.
#[derive(Clone, Debug, PartialEq)]
struct NodeConfig {
    server_name: String,
    /// The client listen address (`127.0.0.1` unless a test asks).
    host: std::net::IpAddr,
    auth: Option<ServerAuth>,
    port: u16,
    http_port: u16,
    store_dir: PathBuf,
    log_file: PathBuf,
    cluster: Option<ClusterConfig>,
}

/// A string in nats-server's configuration syntax.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl NodeConfig {
    fn render(&self) -> String {
        let mut s = String::new();
        s.push_str("# Written by the tspi test harness.\n");
        s.push_str(&format!("server_name: {}\n", quote(&self.server_name)));
        s.push_str(&format!("listen: \"{}:{}\"\n", self.host, self.port));
        s.push_str(&format!("http: \"127.0.0.1:{}\"\n", self.http_port));
        s.push_str(&format!(
            "log_file: {}\n",
            quote(&self.log_file.to_string_lossy())
        ));
        s.push_str("logtime: true\n");
        match &self.auth {
            None => {}
            Some(ServerAuth::UserPassword { user, password }) => s.push_str(&format!(
                "authorization {{\n  user: {}\n  password: {}\n}}\n",
                quote(user),
                quote(password)
            )),
            Some(ServerAuth::Token(t)) => {
                s.push_str(&format!("authorization {{\n  token: {}\n}}\n", quote(t)))
            }
        }
        s.push_str("jetstream {\n");
        s.push_str(&format!(
            "  store_dir: {}\n",
            quote(&self.store_dir.to_string_lossy())
        ));
        s.push_str("  max_memory_store: 256MB\n");
        s.push_str("  max_file_store: 2GB\n");
        s.push_str("}\n");
        if let Some(c) = &self.cluster {
            s.push_str("cluster {\n");
            s.push_str(&format!("  name: {}\n", quote(&c.name)));
            s.push_str(&format!("  listen: \"127.0.0.1:{}\"\n", c.port));
            s.push_str("  routes: [\n");
            for p in &c.routes {
                s.push_str(&format!("    \"nats-route://127.0.0.1:{p}\"\n"));
            }
            s.push_str("  ]\n");
            s.push_str("}\n");
        }
        s
    }
}

/// One nats-server process with JetStream, its files in a temporary
/// directory. Stopped, and the directory removed, on drop.
pub struct NatsServer {
    config: NodeConfig,
    /// "nats-server n0 (127.0.0.1:PORT)", for messages.
    label: String,
    config_path: PathBuf,
    child: Option<Child>,
    dir: TempDir,
}

impl NatsServer {
    /// A single node with JetStream, on free loopback ports; returns once it
    /// answers `/healthz?js-enabled-only=true`.
    pub fn start() -> Result<NatsServer, HarnessError> {
        NatsServer::start_with_auth(None)
    }

    /// [`NatsServer::start`], the server requiring `auth` of every client
    /// (`None`: anyone may connect).
    pub fn start_with_auth(auth: Option<ServerAuth>) -> Result<NatsServer, HarnessError> {
        let mut log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let p = free_ports(2)?;
            let mut node = NatsServer::prepare("tspi-nats".to_owned(), p[0], p[1], None)?;
            node.config.auth = auth.clone();
            node.write_config()?;
            match node.spawn().and_then(|()| node.wait_ready()) {
                Ok(()) => return Ok(node),
                Err(e) if e.is_port_in_use() => log = node.log_tail(40),
                Err(e) => return Err(e),
            }
        }
        Err(HarnessError::PortsExhausted {
            server: "nats-server".to_owned(),
            attempts: PORT_ATTEMPTS,
            log,
        })
    }

    /// [`NatsServer::start`] with clients served on `host` instead of
    /// `127.0.0.1` (a test's own network namespace: another namespace
    /// reaches it over a veth pair); monitoring stays on `127.0.0.1`.
    pub fn start_on(host: std::net::IpAddr) -> Result<NatsServer, HarnessError> {
        let p = free_ports(2)?;
        let mut node = NatsServer::prepare("tspi-nats".to_owned(), p[0], p[1], None)?;
        node.config.host = host;
        node.write_config()?;
        node.spawn().and_then(|()| node.wait_ready())?;
        Ok(node)
    }

    /// Write the configuration; start nothing.
    fn prepare(
        server_name: String,
        port: u16,
        http_port: u16,
        cluster: Option<ClusterConfig>,
    ) -> Result<NatsServer, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("tspi-nats-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating a temporary directory for nats-server", e))?;
        let config = NodeConfig {
            server_name,
            host: std::net::Ipv4Addr::LOCALHOST.into(),
            auth: None,
            port,
            http_port,
            store_dir: dir.path().join("store"),
            log_file: dir.path().join("nats.log"),
            cluster,
        };
        let config_path = dir.path().join("nats.conf");
        let node = NatsServer {
            label: format!("nats-server {} (127.0.0.1:{port})", config.server_name),
            config,
            config_path,
            child: None,
            dir,
        };
        node.write_config()?;
        Ok(node)
    }

    fn write_config(&self) -> Result<(), HarnessError> {
        std::fs::write(&self.config_path, self.config.render())
            .map_err(|e| HarnessError::io(format!("writing {}", self.config_path.display()), e))
    }

    /// Require `auth` of clients from the next start on (`None`: anyone);
    /// then [`NatsServer::restart`] it, as an operator changing the
    /// server's authorization would.
    pub fn set_auth(&mut self, auth: Option<ServerAuth>) -> Result<(), HarnessError> {
        self.config.auth = auth;
        self.write_config()
    }

    fn spawn(&mut self) -> Result<(), HarnessError> {
        let binary = nats_server_binary()?;
        let log = &self.config.log_file;
        process::log_note(log, &format!("starting {}", binary.display()));
        let stdout = process::open_log(log)?;
        let stderr = process::open_log(log)?;
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&self.config_path)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| HarnessError::io(format!("starting {}", binary.display()), e))?;
        self.child = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<(), HarnessError> {
        let http_port = self.config.http_port;
        let child = self.child.as_mut().expect("spawned");
        let result = process::wait_ready(
            &self.label,
            child,
            &self.config.log_file,
            READY_TIMEOUT,
            Duration::from_millis(25),
            || process::http_get_status(http_port, HEALTHZ) == Some(200),
        );
        if result.is_err() {
            // Not ready in time, or exited: make sure nothing is left running.
            self.kill();
        }
        result
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.config.host, self.config.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.config.port
    }

    /// The HTTP monitoring port (`/varz`, `/jsz`, `/healthz`, ...).
    pub fn monitor_port(&self) -> u16 {
        self.config.http_port
    }

    /// The configured `server_name`, as JetStream reports it (stream
    /// leaders, peers).
    pub fn server_name(&self) -> &str {
        &self.config.server_name
    }

    /// The JetStream store directory (survives `kill`/`restart`).
    pub fn store_dir(&self) -> &Path {
        &self.config.store_dir
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL now, as in a crash. Idempotent.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.take() {
            let status = process::kill_child(child);
            process::log_note(&self.config.log_file, &format!("killed ({status:?})"));
        }
    }

    /// SIGSTOP: the server stays connected but answers nothing (a stalled
    /// server), until [`NatsServer::resume`].
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`NatsServer::pause`].
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&mut self, sig: libc::c_int) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on our own child's pid, which has not been
            // reaped (we hold the Child), with a valid signal number.
            unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        }
    }

    /// Graceful stop: SIGTERM, then SIGKILL if it has not exited within 10 s.
    /// Idempotent.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            let status = process::stop_child(child, libc::SIGTERM, STOP_TIMEOUT);
            process::log_note(&self.config.log_file, &format!("stopped ({status:?})"));
        }
    }

    /// Start again on the same ports with the same store directory (a
    /// running server is stopped first); returns once it is ready.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop();
        process::restart_on_same_port(|| self.spawn().and_then(|()| self.wait_ready()))
    }

    /// The last `lines` lines of the server's log (its `log_file`, with
    /// stdout/stderr and the harness's start/stop notes).
    pub fn log_tail(&self, lines: usize) -> String {
        process::tail_file(&self.config.log_file, lines)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        process::dump_log_if_panicking(&self.label, &self.config.log_file);
        self.stop();
    }
}

impl std::fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsServer")
            .field("label", &self.label)
            .field("dir", &self.dir.path())
            .field("running", &self.child.is_some())
            .finish()
    }
}

/// A JetStream cluster of nats-server nodes on loopback, full-mesh routes.
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// The cluster's name in every node's `cluster { name }`.
    pub const NAME: &'static str = "tspi-test";

    /// `nodes` nodes (3 for a quorum that survives one loss), named `n0`,
    /// `n1`, ...; returns when each answers its health check. The JetStream
    /// meta leader may still be being elected: create streams with
    /// [`tspi::jetstream::ensure_stream`], which waits that out.
    pub fn start(nodes: usize) -> Result<NatsCluster, HarnessError> {
        assert!(
            nodes >= 2,
            "a JetStream cluster needs at least two nodes; use NatsServer::start for one server"
        );
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let ports = free_ports(3 * nodes)?;
            let (client, rest) = ports.split_at(nodes);
            let (http, route) = rest.split_at(nodes);
            let mut cluster = NatsCluster { nodes: Vec::new() };
            for i in 0..nodes {
                let routes = (0..nodes).filter(|&j| j != i).map(|j| route[j]).collect();
                let cfg = ClusterConfig {
                    name: Self::NAME.to_owned(),
                    port: route[i],
                    routes,
                };
                cluster.nodes.push(NatsServer::prepare(
                    format!("n{i}"),
                    client[i],
                    http[i],
                    Some(cfg),
                )?);
            }
            match cluster.spawn_and_wait() {
                Ok(()) => return Ok(cluster),
                Err(e) if e.is_port_in_use() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        let log = match last {
            Some(HarnessError::Exited { log, .. }) => log,
            _ => String::new(),
        };
        Err(HarnessError::PortsExhausted {
            server: format!("nats cluster of {nodes}"),
            attempts: PORT_ATTEMPTS,
            log,
        })
    }

    fn spawn_and_wait(&mut self) -> Result<(), HarnessError> {
        for node in &mut self.nodes {
            node.spawn()?;
        }
        for node in &mut self.nodes {
            node.wait_ready()?;
        }
        // A JetStream API request sent before the meta leader is elected is
        // not answered at all: the client waits out its whole request
        // timeout (10 s). Election takes well under a second here, so wait
        // for it rather than hand out a cluster that looks dead.
        self.wait_healthy(READY_TIMEOUT)
    }

    /// Wait until every running node answers its full `/healthz` with 200:
    /// in contact with a JetStream meta leader, and its streams and consumers
    /// current. Use after restarting a node to wait for it to catch up.
    pub fn wait_healthy(&mut self, timeout: Duration) -> Result<(), HarnessError> {
        for node in &mut self.nodes {
            let http_port = node.config.http_port;
            let Some(child) = node.child.as_mut() else {
                continue;
            };
            process::wait_ready(
                &node.label,
                child,
                &node.config.log_file,
                timeout,
                Duration::from_millis(25),
                || process::http_get_status(http_port, "/healthz") == Some(200),
            )?;
        }
        Ok(())
    }

    /// Client URLs of every node, `nats://127.0.0.1:PORT`; pass them all to
    /// the client so it fails over.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// All nodes.
    pub fn nodes(&self) -> &[NatsServer] {
        &self.nodes
    }

    /// Node `i`, to kill, stop or restart it.
    pub fn node_mut(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }

    /// The index of the node with this `server_name` (e.g. a stream leader's).
    pub fn index_of(&self, server_name: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.server_name() == server_name)
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        // Ask every node to stop at once rather than one after another, so
        // no node waits on peers that are already gone. Each node's own drop
        // then prints its log if a test is failing, waits for it (bounded)
        // and reaps it.
        for node in &self.nodes {
            if let Some(child) = &node.child {
                process::signal(child, libc::SIGTERM);
            }
        }
    }
}

impl std::fmt::Debug for NatsCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.nodes).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_parsing() {
        assert_eq!(
            parse_nats_version("nats-server: v2.15.1\n"),
            Some((2, 15, 1))
        );
        assert_eq!(parse_nats_version("nats-server: v2.9.10"), Some((2, 9, 10)));
        assert_eq!(
            parse_nats_version("nats-server: v2.14.0-RC.2"),
            Some((2, 14, 0))
        );
        assert_eq!(parse_nats_version("v3.0"), Some((3, 0, 0)));
        assert_eq!(parse_nats_version("nats-server version unknown"), None);
        assert_eq!(parse_nats_version(""), None);
        assert!(parse_nats_version("nats-server: v2.9.10").unwrap() < NATS_MIN_VERSION);
        assert!(parse_nats_version("nats-server: v2.14.0").unwrap() >= NATS_MIN_VERSION);
        assert!(parse_nats_version("nats-server: v2.15.1").unwrap() >= NATS_MIN_VERSION);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("/tmp/a b"), "\"/tmp/a b\"");
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn single_node_config() {
        let cfg = NodeConfig {
            host: std::net::Ipv4Addr::LOCALHOST.into(),
            server_name: "s".into(),
            auth: None,
            port: 4222,
            http_port: 8222,
            store_dir: "/tmp/x/jetstream".into(),
            log_file: "/tmp/x/nats.log".into(),
            cluster: None,
        };
        let text = cfg.render();
        assert!(text.contains("server_name: \"s\"\n"));
        assert!(text.contains("listen: \"127.0.0.1:4222\"\n"));
        assert!(text.contains("http: \"127.0.0.1:8222\"\n"));
        assert!(text.contains("log_file: \"/tmp/x/nats.log\"\n"));
        assert!(text.contains("jetstream {\n  store_dir: \"/tmp/x/jetstream\"\n"));
        assert!(!text.contains("cluster"));
        // Balanced braces.
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }

    #[test]
    fn cluster_node_config() {
        let cfg = NodeConfig {
            host: std::net::Ipv4Addr::LOCALHOST.into(),
            server_name: "n1".into(),
            auth: Some(ServerAuth::Token("t".into())),
            port: 1,
            http_port: 2,
            store_dir: "/s".into(),
            log_file: "/l".into(),
            cluster: Some(ClusterConfig {
                name: "c".into(),
                port: 3,
                routes: vec![10, 11],
            }),
        };
        let text = cfg.render();
        assert!(text.contains("cluster {\n  name: \"c\"\n  listen: \"127.0.0.1:3\"\n"));
        assert!(text.contains("authorization {\n  token: \"t\"\n}\n"));
        assert!(text.contains("\"nats-route://127.0.0.1:10\"\n"));
        assert!(text.contains("\"nats-route://127.0.0.1:11\"\n"));
        assert_eq!(text.matches('{').count(), text.matches('}').count());
        assert_eq!(text.matches('[').count(), 1);
    }

    /// A fake nats-server that prints `version_line`.
    fn fake_binary(dir: &Path, version_line: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("nats-server");
        std::fs::write(&bin, format!("#!/bin/sh\necho '{version_line}'\n")).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        bin
    }

    /// `check_version`, retrying ETXTBSY: another test thread may fork while
    /// the script is still open for writing, and its child holds the file
    /// open until it execs.
    fn check(bin: &Path) -> Result<PathBuf, HarnessError> {
        for _ in 0..50 {
            match check_version(bin.to_owned()) {
                Err(HarnessError::Io { source, .. })
                    if source.raw_os_error() == Some(libc::ETXTBSY) =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
        panic!("{} stayed busy", bin.display());
    }

    #[test]
    fn version_check_of_binaries() {
        let dir = tempfile::tempdir().unwrap();
        let old = fake_binary(dir.path(), "nats-server: v2.9.10");
        let err = check(&old).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, HarnessError::NatsTooOld { .. }), "{err:?}");
        assert!(
            text.contains("2.9.10") && text.contains("./scripts/setup"),
            "{text}"
        );
        assert!(text.contains("TSPI_NATS_SERVER"), "{text}");

        let dir = tempfile::tempdir().unwrap();
        let new = fake_binary(dir.path(), "nats-server: v2.15.1");
        assert_eq!(check(&new).unwrap(), new);

        let dir = tempfile::tempdir().unwrap();
        let odd = fake_binary(dir.path(), "hello");
        let err = check(&odd).unwrap_err();
        assert!(
            matches!(err, HarnessError::NatsVersionUnknown { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn not_found_message_says_what_to_do() {
        let text = HarnessError::NatsNotFound { tried: "x".into() }.to_string();
        assert!(text.starts_with("nats-server not found"), "{text}");
        assert!(
            text.contains("./scripts/setup") && text.contains("TSPI_NATS_SERVER="),
            "{text}"
        );
    }

    #[test]
    fn taken_port_is_recognised() {
        // Needs the real binary: ./scripts/setup installs it. A missing
        // binary fails the test with the install hint rather than skipping.
        if let Err(e) = nats_server_binary() {
            panic!("{e}");
        }
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let http = free_ports(1).unwrap()[0];
        let mut node = NatsServer::prepare("t".into(), port, http, None).unwrap();
        let err = node.spawn().and_then(|()| node.wait_ready()).unwrap_err();
        assert!(err.is_port_in_use(), "{err}");
        assert!(!node.is_running());
    }

    #[test]
    fn path_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("tool");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        assert_eq!(
            find_on_path("tool", Some(dir.path().into())),
            None,
            "not executable"
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = env::join_paths(["/nonexistent".as_ref(), dir.path()]).unwrap();
        assert_eq!(find_on_path("tool", Some(path)), Some(bin));
        assert_eq!(find_on_path("tool", None), None);
    }
}
