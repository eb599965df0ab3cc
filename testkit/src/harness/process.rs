//! Helpers shared by the servers: ports, child processes, logs, HTTP probes.

use super::HarnessError;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Ports this process has handed out. A port is never handed out twice, so
/// two servers of one test binary cannot race for it, and a stopped server's
/// port stays its own for a restart.
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A loopback TCP port that was free a moment ago: bind `127.0.0.1:0`, note
/// the port, close. Another process may still take it before the server
/// binds it; callers retry the start with fresh ports when that happens.
pub(crate) fn free_port() -> Result<u16, HarnessError> {
    for _ in 0..64 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| HarnessError::io("binding 127.0.0.1:0 to find a free port", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| HarnessError::io("reading the port of a bound socket", e))?
            .port();
        drop(listener);
        let mut ports = handed_out().lock().unwrap_or_else(|p| p.into_inner());
        if ports.insert(port) {
            return Ok(port);
        }
    }
    Err(HarnessError::io(
        "finding a free loopback port",
        std::io::Error::other("the kernel kept returning ports already in use by this process"),
    ))
}

/// `n` distinct free ports.
pub(crate) fn free_ports(n: usize) -> Result<Vec<u16>, HarnessError> {
    (0..n).map(|_| free_port()).collect()
}

/// Open (create or append to) a log file for a child's stdout and stderr.
pub(crate) fn open_log(path: &Path) -> Result<File, HarnessError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| HarnessError::io(format!("opening log file {}", path.display()), e))
}

/// Append a line of the harness's own to a log, to mark starts and stops.
pub(crate) fn log_note(path: &Path, note: &str) {
    if let Ok(mut f) = open_log(path) {
        let _ = writeln!(f, "--- harness: {note} ---");
    }
}

/// The last `lines` lines of a file, or a note saying why there are none.
pub(crate) fn tail_file(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => tail_text(&String::from_utf8_lossy(&bytes), lines),
        Err(e) => format!("(no log at {}: {e})", path.display()),
    }
}

pub(crate) fn tail_text(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    let mut out = all[start..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// Print a server's log tail to stderr when a test is failing.
pub(crate) fn dump_log_if_panicking(server: &str, log: &Path) {
    if std::thread::panicking() {
        let tail = tail_file(log, super::PANIC_LOG_LINES);
        eprintln!(
            "===== {server}: last {} log lines ({}) =====\n{tail}===== end of {server} log =====",
            super::PANIC_LOG_LINES,
            log.display()
        );
    }
}

pub(crate) fn status_text(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

/// Send `signal` to a child that has not been reaped yet (so its pid cannot
/// have been reused).
pub(crate) fn signal(child: &Child, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours. The
    // pid is that of our own child, which has not been waited for, so it is
    // still ours (at worst a zombie) and cannot name another process.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Ask a child to stop with `sig`, wait up to `timeout`, then SIGKILL it.
/// Reaps the child. Returns how it ended, if it could be told.
pub(crate) fn stop_child(
    mut child: Child,
    sig: libc::c_int,
    timeout: Duration,
) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    signal(&child, sig);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => break,
        }
    }
    kill_child(child)
}

/// SIGKILL a child now and reap it.
pub(crate) fn kill_child(mut child: Child) -> Option<ExitStatus> {
    let _ = child.kill();
    child.wait().ok()
}

/// True if something accepts TCP connections on `127.0.0.1:port`.
/// Start a server again on its own, fixed port. Only another process can
/// hold that port, or the old socket is still closing: wait a little and try
/// again, a bounded number of times.
pub(crate) fn restart_on_same_port(
    mut start: impl FnMut() -> Result<(), HarnessError>,
) -> Result<(), HarnessError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match start() {
            Err(e) if e.is_port_in_use() && attempt < super::PORT_ATTEMPTS => {
                std::thread::sleep(Duration::from_millis(200 * attempt as u64));
            }
            other => return other,
        }
    }
}

pub(crate) fn tcp_accepts(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// `GET path` over HTTP/1.0 on `127.0.0.1:port`; the status code, if any
/// answer came.
pub(crate) fn http_get_status(port: u16, path: &str) -> Option<u16> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    // HTTP/1.0: the server closes the connection after the body. Only the
    // status line matters; a read error after some bytes is fine.
    let _ = stream.take(64 * 1024).read_to_end(&mut response);
    parse_http_status(&String::from_utf8_lossy(&response))
}

/// The status code of an HTTP response's status line (`HTTP/1.1 200 OK`).
pub(crate) fn parse_http_status(response: &str) -> Option<u16> {
    let line = response.lines().next()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Poll `ready` every `interval` until it says true, `child` exits, or
/// `timeout` passes.
pub(crate) fn wait_ready(
    server: &str,
    child: &mut Child,
    log: &Path,
    timeout: Duration,
    interval: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), HarnessError> {
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(HarnessError::Exited {
                server: server.to_owned(),
                status: status_text(status),
                log: tail_file(log, 40),
            });
        }
        if ready() {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(HarnessError::NotReady {
                server: server.to_owned(),
                waited: timeout,
                log: tail_file(log, 40),
            });
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_status_line() {
        assert_eq!(
            parse_http_status("HTTP/1.1 200 OK\r\nContent-Type: x\r\n\r\n{}"),
            Some(200)
        );
        assert_eq!(
            parse_http_status("HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_http_status(""), None);
        assert_eq!(parse_http_status("SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_http_status("HTTP/1.1 abc\r\n"), None);
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail_text("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail_text("a\nb\nc", 5), "a\nb\nc\n");
        assert_eq!(tail_text("", 5), "");
    }

    #[test]
    fn ports_are_distinct() {
        let ports = free_ports(16).unwrap();
        let set: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(set.len(), ports.len());
        assert!(ports.iter().all(|&p| p != 0));
    }

    #[test]
    fn http_probe_on_closed_port_is_none() {
        let port = free_port().unwrap();
        assert_eq!(http_get_status(port, "/"), None);
        assert!(!tcp_accepts(port));
    }
}
