//! NATS credentials: refused credentials end every role at start with a
//! message naming authorization (so systemd's `Restart=on-failure` acts);
//! credentials written in a URL are used; no secret is ever logged; a
//! refusal after a server change is retried and counted.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tspi_testkit::harness::{NatsServer, ServerAuth};

const USER: &str = "tspi";
/// Distinctive, so a search of the logs finds nothing else.
const PASSWORD: &str = "S3cretPa55word";
const WRONG: &str = "Wr0ngPa55word";

fn server() -> NatsServer {
    NatsServer::start_with_auth(Some(ServerAuth::UserPassword {
        user: USER.into(),
        password: PASSWORD.into(),
    }))
    .expect("nats-server")
}

fn url_with(server: &NatsServer, password: &str) -> String {
    format!("nats://{USER}:{password}@127.0.0.1:{}", server.port())
}

/// Run `tspi args`, killed after `limit`; (exit code, stderr).
fn tspi(args: &[&str], limit: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tspi");
    // Read stderr on a thread so a chatty child never blocks on the pipe.
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut pipe, &mut s).unwrap();
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
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
        None => panic!("{args:?} still ran after {limit:?}; stderr:\n{err}"),
    }
}

/// `args` must exit non-zero within a few seconds, saying why.
fn refused(args: &[&str]) -> String {
    let (code, err) = tspi(args, Duration::from_secs(15));
    assert_ne!(code, Some(0), "{args:?}: {err}");
    assert!(err.contains("authorization"), "{args:?}: {err}");
    assert!(!err.contains(WRONG) && !err.contains(PASSWORD), "{err}");
    err
}

#[test]
fn every_role_exits_at_once_when_the_server_refuses_the_credentials() {
    let server = server();
    let wrong = url_with(&server, WRONG);
    let nats = ["--nats", wrong.as_str()];
    let long = ["--duration-s", "60"];
    let ingest = [
        &["--log", "debug", "ingest", "--udp", "127.0.0.1:0"][..],
        &nats,
        &long,
    ]
    .concat();
    refused(&ingest);
    // Any DSN: the archive must fail on NATS before needing PostgreSQL.
    let archive = [
        &["archive", "--postgres", "host=127.0.0.1 port=1 dbname=tspi"][..],
        &nats,
        &long,
    ]
    .concat();
    refused(&archive);
    refused(&[&["channels", "serve"][..], &nats].concat());
    refused(&[&["channels", "list"][..], &nats].concat());
    // No credentials at all: the message says none were given.
    let bare = server.url();
    let err = refused(&["channels", "list", "--nats", &bare]);
    assert!(err.contains("none were given"), "{err}");
}

#[test]
fn a_wrong_token_in_the_config_file_is_refused_and_the_right_one_works() {
    let server =
        NatsServer::start_with_auth(Some(ServerAuth::Token(PASSWORD.into()))).expect("nats");
    let dir = tempfile::tempdir().unwrap();
    let config = |token: &str| {
        let path = dir.path().join(format!("{token}.toml"));
        let text = format!(
            "[nats]\nservers = [\"{}\"]\ntoken = \"{token}\"\n[ingest]\nudp = [\"127.0.0.1:0\"]\n",
            server.url()
        );
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let err = refused(&["ingest", "--config", &config(WRONG), "--duration-s", "60"]);
    assert!(err.contains("token"), "{err}");
    let (code, err) = tspi(
        &[
            "--log",
            "debug",
            "ingest",
            "--config",
            &config(PASSWORD),
            "--duration-s",
            "1",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        !err.contains(PASSWORD),
        "a debug log shows the token:\n{err}"
    );
}

#[test]
fn credentials_in_the_url_are_used_and_never_logged() {
    let server = server();
    let right = url_with(&server, PASSWORD);
    let (code, err) = tspi(
        &[
            "--log",
            "debug",
            "ingest",
            "--udp",
            "127.0.0.1:0",
            "--nats",
            &right,
            "--duration-s",
            "1",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        !err.contains(PASSWORD),
        "a debug log shows the password:\n{err}"
    );
    assert!(
        err.contains("<redacted>"),
        "the URL is shown redacted:\n{err}"
    );

    // The channels service and its client, both through URL credentials.
    let mut serve = Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args(["--log", "debug", "channels", "serve", "--nats", &right])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut listed = None;
    for _ in 0..50 {
        let out: Output = Command::new(env!("CARGO_BIN_EXE_tspi"))
            .args(["channels", "list", "--nats", &right, "--wait-s", "1"])
            .output()
            .unwrap();
        if out.status.success() {
            listed = Some(String::from_utf8(out.stdout).unwrap());
            break;
        }
    }
    // SAFETY: kill(2) on the pid of a child this test spawned and has not
    // reaped, with a valid signal number.
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    let status = serve.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut serve.stderr.take().unwrap(), &mut err).unwrap();
    let listed = listed.unwrap_or_else(|| panic!("channels list never answered:\n{err}"));
    assert!(listed.contains("livestream"), "{listed}");
    assert!(status.success(), "{status:?}: {err}");
    assert!(
        !err.contains(PASSWORD),
        "a debug log shows the password:\n{err}"
    );
}

/// After the first connection, a server that starts refusing the
/// credentials (its authorization changed) is retried, each refusal
/// counted, and the client is back once the server accepts them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_refusal_is_retried_and_counted() {
    let mut server = server();
    let cfg = tspi::nats::NatsConfig {
        servers: vec![url_with(&server, PASSWORD)],
        ..Default::default()
    };
    let client = tspi::nats::connect(&cfg).await.expect("connect");
    let before = tspi::nats::auth_errors();
    let other = Some(ServerAuth::UserPassword {
        user: USER.into(),
        password: "changed".into(),
    });
    server.set_auth(other).unwrap();
    tokio::task::block_in_place(|| server.restart()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while tspi::nats::auth_errors() <= before {
        assert!(Instant::now() < deadline, "no authorization error counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let accepted = Some(ServerAuth::UserPassword {
        user: USER.into(),
        password: PASSWORD.into(),
    });
    server.set_auth(accepted).unwrap();
    tokio::task::block_in_place(|| server.restart()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), client.flush())
        .await
        .expect("reconnected in time")
        .expect("flush");
}
