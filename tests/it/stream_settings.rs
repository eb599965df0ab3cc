//! A stream that exists is left as it is unless the operator says to
//! update it (issue 13, item 13): the range toolkit's `TSPI` (`tspi.>` and
//! `tags.>`, 120 s duplicate window, no fast batches) is used as it is,
//! each difference logged; `--update-stream` brings it to the appliance's
//! settings; a `TSPI` that cannot capture what the appliance publishes is
//! refused, naming the missing subjects.

use async_nats::jetstream::{self, stream};
use std::io::{BufRead as _, BufReader, Read as _};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tspi_testkit::frames::frame;
use tspi_testkit::harness::NatsServer;

/// The log without colour codes (`ESC [ ... m`).
fn plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub(crate) struct Ingest {
    pub(crate) child: Child,
    pub(crate) udp: String,
    pub(crate) log: Arc<Mutex<String>>,
}

/// `tspi ingest` at `--log info` on a free loopback port, its stderr
/// collected; waits until it receives (or has exited).
fn start(url: &str, extra: &[&str]) -> Ingest {
    let port = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    start_on(url, &format!("127.0.0.1:{port}"), extra)
}

/// [`start`] on `udp`.
pub(crate) fn start_on(url: &str, udp: &str, extra: &[&str]) -> Ingest {
    let udp = udp.to_owned();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args([
            "--log", "info", "ingest", "--udp", &udp, "--nats", url, "--json",
        ])
        .args(["--interval-s", "1"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut l = sink.lock().unwrap();
            l.push_str(&plain(&line));
            l.push('\n');
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if log.lock().unwrap().contains("receiving") || child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "ingest did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ingest { child, udp, log }
}

impl Ingest {
    /// SIGTERM, then the final account (JSON) and the whole log.
    pub(crate) fn stop(mut self) -> (serde_json::Value, String) {
        // SAFETY: kill(2) on our own child's pid with a valid signal number.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let log = self.log.lock().unwrap().clone();
        assert_eq!(status.code(), Some(0), "{log}");
        let last = out.lines().last().unwrap_or_default();
        (
            serde_json::from_str(last).expect("final account JSON line"),
            log,
        )
    }
}

/// The range toolkit's `TSPI`.
fn toolkit_stream() -> stream::Config {
    stream::Config {
        name: "TSPI".into(),
        subjects: vec!["tspi.>".into(), "tags.>".into()],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

async fn stream_config(js: &jetstream::Context) -> stream::Config {
    js.get_stream("TSPI")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone()
}

async fn messages(js: &jetstream::Context) -> u64 {
    js.get_stream("TSPI")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

fn send(udp: &str, n: u64) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..n {
        s.send_to(&frame(i).encode(), udp).unwrap();
    }
}

async fn wait_messages(js: &jetstream::Context, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while messages(js).await < n {
        assert!(
            Instant::now() < deadline,
            "stored {} of {n}",
            messages(js).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_toolkit_stream_is_left_as_it_is_and_used() {
    let server = NatsServer::start().expect("nats-server");
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    js.create_stream(toolkit_stream()).await.unwrap();
    let ing = tokio::task::block_in_place(|| start(&server.url(), &[]));
    send(&ing.udp, 200);
    wait_messages(&js, 200).await;
    let (account, log) = tokio::task::block_in_place(|| ing.stop());
    assert_eq!(account["balanced"], true, "{account}");
    assert_eq!(
        account["final_account"]["counters"]["acked"], 200,
        "{account}"
    );
    // No fast batches on this stream: pipelined from the start, said so.
    assert_eq!(account["final_account"]["publish_mode"], "pipelined");
    assert!(log.contains("does not allow batched publishing"), "{log}");
    for (key, theirs, ours) in [
        ("duplicate_window", "120s", "30s"),
        (
            "subjects",
            "tags.>, tspi.>",
            "tspi.geocentric.>, tspi.spherical.>",
        ),
        ("allow_batched", "false", "true"),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains("left as it is") && l.contains(&format!("key=\"{key}\"")))
            .unwrap_or_else(|| panic!("no line for {key}:\n{log}"));
        assert!(
            line.contains(&format!("theirs={theirs}")) && line.contains(&format!("ours={ours}")),
            "{line}"
        );
    }
    let after = stream_config(&js).await;
    assert_eq!(after.subjects, toolkit_stream().subjects);
    assert_eq!(after.duplicate_window, Duration::from_secs(120));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_stream_brings_it_to_the_appliances_settings() {
    let server = NatsServer::start().expect("nats-server");
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    js.create_stream(toolkit_stream()).await.unwrap();
    let ing = tokio::task::block_in_place(|| start(&server.url(), &["--update-stream"]));
    send(&ing.udp, 100);
    wait_messages(&js, 100).await;
    let (account, log) = tokio::task::block_in_place(|| ing.stop());
    assert_eq!(account["balanced"], true, "{account}");
    assert_eq!(
        account["final_account"]["counters"]["acked"], 100,
        "{account}"
    );
    assert!(log.contains("updating it"), "{log}");
    let after = stream_config(&js).await;
    let mut subjects = after.subjects.clone();
    subjects.sort();
    assert_eq!(subjects, ["tspi.geocentric.>", "tspi.spherical.>"]);
    assert_eq!(after.duplicate_window, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_cannot_capture_the_appliance_is_refused() {
    let server = NatsServer::start().expect("nats-server");
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    js.create_stream(stream::Config {
        subjects: vec!["other.>".into()],
        ..toolkit_stream()
    })
    .await
    .unwrap();
    let mut ing = tokio::task::block_in_place(|| start(&server.url(), &[]));
    let status = tokio::task::block_in_place(|| ing.child.wait().unwrap());
    std::thread::sleep(Duration::from_millis(100));
    let log = ing.log.lock().unwrap().clone();
    assert_ne!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("do not capture [tspi.geocentric.*, tspi.spherical.*]"),
        "{log}"
    );
    assert_eq!(stream_config(&js).await.subjects, ["other.>"]);
}
