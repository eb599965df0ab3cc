//! `tspi validate` checks the roles a file enables (or `--role` names): an
//! archive-only file passes the archive unit's ExecStartPre; old key
//! spellings warn; values that would wrap are refused by name.

use std::path::{Path, PathBuf};
use std::process::Command;

const ARCHIVE_ONLY: &str = "[nats]\nservers = [\"nats://127.0.0.1:4222\"]\n\
    [stream]\nreplicas = 1\n\
    [archive]\npostgres = \"host=/run/postgresql dbname=tspi\"\n";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn tspi(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args(args)
        .output()
        .expect("run tspi");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn validate(path: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec!["validate", "--config", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    tspi(&args)
}

#[test]
fn an_archive_only_file_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "archive.toml", ARCHIVE_ONLY);
    let (code, out, err) = validate(&path, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("roles checked: archive\n"), "{out}");
    assert!(out.ends_with("archive.toml: ok\n"), "{out}");
    // Asked for the ingest role, the same file lacks what ingest needs.
    let (code, _, err) = validate(&path, &["--role", "ingest"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("ingest.udp"), "{err}");
}

/// The shipped archive unit's ExecStartPre, pointed at an archive-only
/// file, passes (it used to demand `ingest.udp`).
#[test]
fn the_archive_units_exec_start_pre_accepts_an_archive_only_file() {
    let unit = include_str!("../../../systemd/tspi-archive.service");
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStartPre="))
        .expect("ExecStartPre");
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "tspi.toml", ARCHIVE_ONLY);
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/tspi"));
    let args: Vec<String> = words
        .map(|w| {
            if w == "/etc/tspi/tspi.toml" {
                path.to_str().unwrap().to_owned()
            } else {
                w.to_owned()
            }
        })
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = tspi(&args);
    assert_eq!(code, Some(0), "{line}: {err}");
    assert!(out.contains("roles checked: archive"), "{out}");
}

#[test]
fn old_key_spellings_work_and_warn_with_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "old.toml",
        "[ingest]\nudp = [\"127.0.0.1:5000\"]\n[stream]\nmax_age_s = 3600\n\
         [publish]\nfast_flow = 400\n",
    );
    let (code, out, err) = validate(&path, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.ends_with("old.toml: ok\n"), "{out}");
    assert!(
        err.contains("warning:") && err.contains("stream.age_max_s"),
        "{err}"
    );
    assert!(err.contains("publish.fast_flow_max"), "{err}");
}

#[test]
fn values_that_would_wrap_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    // 18446744134 s is 60 s plus 2^64 ns.
    let path = write(
        dir.path(),
        "wrap.toml",
        "[ingest]\nudp = [\"127.0.0.1:5000\"]\n[stream]\nage_max_s = 18446744134\n\
         duplicate_window_s = 1000000000000\n",
    );
    let (code, _, err) = validate(&path, &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("stream.age_max_s = 18446744134"), "{err}");
    assert!(
        err.contains("stream.duplicate_window_s = 1000000000000"),
        "{err}"
    );

    let short = write(
        dir.path(),
        "short.toml",
        "[ingest]\nudp = [\"127.0.0.1:5000\"]\n[stream]\nage_max_s = 1\n",
    );
    let (code, _, err) = validate(&short, &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("stream.age_max_s = 1 is shorter"), "{err}");
}

#[test]
fn receive_cores_are_checked_against_this_machine() {
    let dir = tempfile::tempdir().unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // One worker more than this process has cores, pinned 0..workers.
    let path = write(
        dir.path(),
        "cores.toml",
        &format!(
            "[ingest]\nudp = [\"127.0.0.1:5000\"]\nworkers = {}\n",
            cores + 1
        ),
    );
    let (code, _, err) = validate(&path, &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("ingest.workers"), "{err}");
    // Archive alone does not care about the receive cores.
    let (code, _, err) = validate(&path, &["--role", "archive"]);
    assert_eq!(code, Some(0), "{err}");
}

/// Run `tspi` against a NATS URL where nothing listens: the client would
/// retry the first connection forever, so a prompt exit proves the
/// configuration was refused before any request to a server.
fn refused_before_connecting(args: &[&str]) -> String {
    use std::time::{Duration, Instant};
    let mut child = Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tspi");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{args:?} did not stop: it went past validation");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    err
}

#[test]
fn roles_refuse_a_bad_file_before_the_first_request_to_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = "nats://127.0.0.1:1";
    // Cores this process cannot run on (once found only after the TSPI
    // stream had been updated).
    let cores = write(
        dir.path(),
        "cores.toml",
        "[ingest]\nudp = [\"127.0.0.1:0\"]\nworkers = 2\ncores = [0, 999]\n",
    );
    let err = refused_before_connecting(&[
        "ingest",
        "--config",
        cores.to_str().unwrap(),
        "--nats",
        nowhere,
    ]);
    assert!(err.contains("ingest.cores"), "{err}");

    // A retention shorter than the duplicate window, for the archive,
    // which updates the same stream.
    let short = write(
        dir.path(),
        "short.toml",
        "[stream]\nage_max_s = 1\n[archive]\npostgres = \"host=/nonexistent\"\n",
    );
    let err = refused_before_connecting(&[
        "archive",
        "--config",
        short.to_str().unwrap(),
        "--nats",
        nowhere,
    ]);
    assert!(err.contains("stream.age_max_s = 1"), "{err}");

    let err = refused_before_connecting(&[
        "channels",
        "serve",
        "--config",
        short.to_str().unwrap(),
        "--nats",
        nowhere,
    ]);
    assert!(err.contains("stream.age_max_s = 1"), "{err}");
}
