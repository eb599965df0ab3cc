//! The log as a file, a pipe or the journal receives it (stderr is not a
//! terminal here): no colour codes; `--log-format json` (or
//! `TSPI_LOG_FORMAT=json`) makes every stderr line, log events, the final
//! account and the error that ends the process, one JSON object; secrets
//! stay redacted in JSON too.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tspi_testkit::harness::{NatsServer, ServerAuth};

const USER: &str = "tspi";
/// Distinctive, so a search of the log finds nothing else.
const PASSWORD: &str = "L0gS3cretPa55";

/// Run `tspi args` with `env`, stderr piped, killed after 30 s; (exit
/// code, stderr).
fn tspi(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tspi"));
    // Whatever the test's own environment says, these runs choose.
    cmd.env_remove("NO_COLOR")
        .env_remove("TSPI_LOG_FORMAT")
        .env_remove("RUST_LOG");
    let mut child = cmd
        .envs(env.iter().copied())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tspi");
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut pipe, &mut s).unwrap();
        s
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = reader.join().unwrap();
    match status {
        Some(s) => (s.code(), err),
        None => panic!("{args:?} still ran after 30 s; stderr:\n{err}"),
    }
}

/// One second of ingest against `url`, logging at debug.
fn ingest_args<'a>(url: &'a str, format: &'a [&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--log", "debug"];
    args.extend_from_slice(format);
    args.extend_from_slice(&[
        "ingest",
        "--udp",
        "127.0.0.1:0",
        "--nats",
        url,
        "--duration-s",
        "1",
    ]);
    args
}

#[test]
fn a_log_that_is_not_a_terminal_has_no_colour_codes() {
    let server = NatsServer::start().expect("nats-server");
    let url = server.url();
    let (code, err) = tspi(&ingest_args(&url, &[]), &[]);
    assert!(
        !err.contains('\x1b'),
        "colour codes in a log that is not a terminal:\n{err:?}"
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains(" INFO "), "log lines at info:\n{err}");
    assert!(err.contains(" DEBUG "), "log lines at debug:\n{err}");
    assert!(err.contains("tspi ingest: final account"), "{err}");
}

/// Every line parses as one JSON object with the event's keys; returns
/// them.
fn json_lines(err: &str) -> Vec<serde_json::Value> {
    assert!(!err.is_empty());
    assert!(!err.contains('\x1b'), "colour codes in JSON:\n{err:?}");
    err.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n---\n{err}"));
            for key in ["timestamp", "level", "target", "fields"] {
                assert!(v.get(key).is_some(), "no {key:?} in {line}");
            }
            let level = v["level"].as_str().unwrap();
            assert!(
                ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
                "{line}"
            );
            v
        })
        .collect()
}

fn messages(lines: &[serde_json::Value], level: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|v| v["level"] == level)
        .filter_map(|v| v["fields"]["message"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn json_log_lines_each_parse_and_keep_secrets_redacted() {
    let server = NatsServer::start_with_auth(Some(ServerAuth::UserPassword {
        user: USER.into(),
        password: PASSWORD.into(),
    }))
    .expect("nats-server");
    let url = format!("nats://{USER}:{PASSWORD}@127.0.0.1:{}", server.port());
    for (format, env) in [
        (&["--log-format", "json"][..], &[][..]),
        (&[][..], &[("TSPI_LOG_FORMAT", "json")][..]),
    ] {
        let (code, err) = tspi(&ingest_args(&url, format), env);
        assert_eq!(code, Some(0), "{format:?} {env:?}: {err}");
        let lines = json_lines(&err);
        let info = messages(&lines, "INFO");
        assert!(
            info.iter().any(|m| m.starts_with("connected to NATS")),
            "{err}"
        );
        // The final account, written beside the log, is an event too.
        assert!(
            info.iter()
                .any(|m| m.starts_with("tspi ingest: final account")),
            "{err}"
        );
        assert!(!messages(&lines, "DEBUG").is_empty(), "{err}");
        assert!(lines.iter().any(|v| v["target"] == "tspi::nats"), "{err}");
        assert!(!err.contains(PASSWORD), "the password is logged:\n{err}");
        assert!(
            err.contains("<redacted>"),
            "the URL is shown redacted:\n{err}"
        );
    }
}

#[test]
fn the_error_that_ends_the_process_is_a_json_line_too() {
    // Nothing listens on port 1: the connection is refused at start.
    let (code, err) = tspi(
        &[
            "--log-format",
            "json",
            "channels",
            "list",
            "--nats",
            "nats://127.0.0.1:1",
            "--wait-s",
            "1",
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    let lines = json_lines(&err);
    let last = lines.last().unwrap();
    assert_eq!(last["level"], "ERROR", "{err}");
    assert!(
        last["fields"]["message"]
            .as_str()
            .unwrap()
            .starts_with("tspi: error: "),
        "{err}"
    );
}

#[test]
fn an_unknown_log_format_is_refused() {
    let (code, err) = tspi(&["--log-format", "yaml", "decode", "/dev/null"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("possible values: text, json"), "{err}");
    let (code, err) = tspi(&["decode", "/dev/null"], &[("TSPI_LOG_FORMAT", "xml")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("TSPI_LOG_FORMAT") || err.contains("xml"),
        "{err}"
    );
}
