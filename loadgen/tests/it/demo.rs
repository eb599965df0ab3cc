//! The main job stays runnable: a short `tspi-demo` (what `./demo` runs) on
//! one server and on a three-node cluster flies an airshow fleet through
//! ingest, measures every datagram, and ends with zero loss, a balanced
//! account and exit 0; Ctrl-C stops it cleanly with an account of what was
//! sent. One readable view: on a terminal the progress line is redrawn in
//! place and the ingest's log goes to a file (warnings shown); piped, the
//! view is plain lines and the log has no colour codes.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn demo(nodes: &str, mode: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tspi-demo"))
        .args(["--log", "warn", "--tracks", "40", "--rate-hz", "10"])
        .args(["--duration-s", "2", "--nodes", nodes, "--interval-s", "1"])
        .args(mode)
        .output()
        .expect("run tspi-demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("flying an airshow fleet of 40 tracks"),
        "{stdout}"
    );
    assert!(
        stdout.contains("] offered 400/s  sent "),
        "progress line: {stdout}"
    );
    assert!(stdout.contains("[balanced]"), "{stdout}");
    assert!(
        stdout.contains("stream TSPI holds 800 messages (expected 800"),
        "{stdout}"
    );
    assert!(
        stdout.contains("sent 800  received 800  lost 0  duplicated 0  unknown 0"),
        "{stdout}"
    );
    assert!(stdout.contains("p99.99"), "{stdout}");
    assert!(stdout.contains("duplicate acks 40"), "{stdout}");
    assert!(
        stdout.contains("receive -> JetStream ack (ingest HdrHistogram)   p50"),
        "{stdout}"
    );
    stdout.into_owned()
}

/// `./demo`'s default: the whole appliance (`tspi run` with every role from
/// one file), the page's address printed, the archive holding the stream.
#[test]
fn demo_the_whole_appliance_headless() {
    let out = demo("1", &["--headless", "--console-port", "0"]);
    assert!(out.contains("== the operator's page =="), "{out}");
    assert!(out.contains("  operators: http://127.0.0.1:"), "{out}");
    assert!(out.contains("?token=demo-"), "{out}");
    assert!(
        out.contains("(ingest, archive, channels, console)"),
        "{out}"
    );
    assert!(out.contains("the archive committed 800 rows"), "{out}");
}

#[test]
fn demo_single_server_ingest_only() {
    let out = demo("1", &["--ingest-only"]);
    assert!(!out.contains("the operator's page"), "{out}");
}

#[test]
fn demo_three_node_cluster() {
    demo("3", &["--ingest-only"]);
}

#[test]
fn ctrl_c_stops_the_demo_cleanly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tspi-demo"))
        .args(["--log", "warn", "--tracks", "50", "--rate-hz", "10"])
        .args(["--duration-s", "600", "--nodes", "1", "--interval-s", "1"])
        .arg("--ingest-only")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run tspi-demo");
    // Wait for the fleet to fly (bounded), then interrupt.
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    std::thread::sleep(Duration::from_secs(6));
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("demo did not stop within 60 s of Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = reader.join().unwrap();
    assert_eq!(status.code(), Some(130), "{out}");
    assert!(out.contains("interrupted: stopping the fleet"), "{out}");
    assert!(out.contains("[balanced]"), "{out}");
    assert!(out.contains("stopped early by Ctrl-C"), "{out}");
}

/// The demo's short run, with `extra` arguments and `TMPDIR`; (exit code,
/// stdout, stderr) with stdout and stderr piped.
fn short_demo(extra: &[&str], tmp: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tspi-demo"))
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .env("TMPDIR", tmp)
        .args(["--tracks", "20", "--rate-hz", "10", "--duration-s", "2"])
        .args(["--nodes", "1", "--interval-s", "1", "--ingest-only"])
        .args(extra)
        .output()
        .expect("run tspi-demo");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn piped_the_view_is_plain_lines_and_the_log_has_no_colour_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, out, err) = short_demo(&["--log", "info"], tmp.path());
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(!out.contains('\x1b') && !out.contains('\r'), "{out:?}");
    assert!(!err.contains('\x1b'), "colour codes in the log:\n{err:?}");
    // The log stays on stderr, as tspi writes it; no log file.
    assert!(err.contains(" INFO tspi::ingest: "), "{err}");
    assert!(!out.contains("log (ingest"), "{out}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn a_named_log_file_takes_the_log_and_warnings_still_show() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("demo.log");
    let (code, out, err) = short_demo(
        &["--log", "info", "--log-file", log.to_str().unwrap()],
        tmp.path(),
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    let said = format!("log (ingest, NATS client): {}", log.display());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&said.as_str()), "{out}");
    assert!(lines.last().unwrap().starts_with(&said), "{out}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(" INFO tspi::ingest: "), "{text}");
    assert!(!text.contains('\x1b'), "{text:?}");
    // Only warnings and errors are left on stderr, each also in the file.
    assert!(!err.contains(" INFO ") && !err.contains('\x1b'), "{err:?}");
    for line in err.lines() {
        assert!(line.contains(" WARN ") || line.contains(" ERROR "), "{err}");
        // Each layer stamps its own time: compare what follows it.
        let event = line.split_once(' ').map_or(line, |(_, rest)| rest);
        assert!(text.contains(event), "{line} is not in the file:\n{text}");
    }
}

/// A pseudo-terminal: (controller, the terminal's side).
fn pty() -> (OwnedFd, OwnedFd) {
    let (mut controller, mut terminal) = (-1, -1);
    // SAFETY: openpty(3) writes two descriptors into the two ints; no name,
    // termios or window size is passed.
    let rc = unsafe {
        libc::openpty(
            &mut controller,
            &mut terminal,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are open and owned by nothing else.
    unsafe {
        (
            OwnedFd::from_raw_fd(controller),
            OwnedFd::from_raw_fd(terminal),
        )
    }
}

#[test]
fn on_a_terminal_the_live_line_is_redrawn_and_the_log_goes_to_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (controller, terminal) = pty();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tspi-demo"))
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .env("TMPDIR", tmp.path())
        .args(["--log", "info", "--tracks", "20", "--rate-hz", "10"])
        .args(["--duration-s", "3", "--nodes", "1", "--interval-s", "1"])
        .arg("--ingest-only")
        .stdin(Stdio::null())
        .stdout(terminal.try_clone().unwrap())
        .stderr(terminal)
        .spawn()
        .expect("run tspi-demo");
    // Read the terminal until the demo closes it (EIO once no one holds it).
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(controller);
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("demo did not end within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let screen = reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{screen}");
    // The progress line is redrawn in place.
    assert!(screen.contains("\r\x1b[2K[ "), "{screen:?}");
    assert!(screen.contains("[balanced]"), "{screen}");
    // The log is in the file named at the start and the end, not on the
    // screen.
    let log = tmp.path().join(format!("tspi-demo-{}.log", child.id()));
    let said = format!("log (ingest, NATS client): {}", log.display());
    assert!(screen.starts_with(&said), "{screen}");
    assert!(screen.matches(&said).count() == 2, "{screen}");
    assert!(
        !screen.contains(" INFO "),
        "the log is on the screen:\n{screen}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(" INFO tspi::ingest: "), "{text}");
    assert!(!text.contains('\x1b'), "{text:?}");
}
