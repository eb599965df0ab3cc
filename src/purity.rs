//! The pure cores stay pure: this test reads their sources and fails when one
//! of them imports I/O or reads a clock.
//!
//! Pure means: no `std::net`, no tokio, async-nats, tokio-postgres or
//! futures, no files, no threads, and no `Instant::now`/`SystemTime::now`.
//! Time and buffers come in as arguments, so these modules are tested
//! exhaustively (property tests, simulated servers) without a server. The
//! check is textual, on code with comments stripped; the compiler would be
//! stricter (a crate of their own without those dependencies), at the cost
//! of one more crate to build and a public API between them. This keeps the
//! rule next to the code it guards while the pure modules are still moving.

use std::path::{Path, PathBuf};

/// Files or folders (every `.rs` below) that must stay pure, relative to
/// `src/`.
pub(crate) const PURE: &[&str] = &[
    "archive/proto",
    "backoff.rs",
    "channels/client_state.rs",
    "channels/client_state",
    "channels/directory.rs",
    "channels/directory/limits.rs",
    "channels/directory/ops.rs",
    "channels/message.rs",
    "console/geodesy.rs",
    "console/tracks.rs",
    "console/tracks",
    "contract",
    "player/body.rs",
    "player/view.rs",
    "publish/proto",
    "receive/sources.rs",
    "replay/pacer",
    "spool/proto",
];

/// The only paths into this crate a pure module may take: other pure
/// modules. (A pure module that reached `crate::jetstream` or
/// `super::service` would drag I/O in through the back door.)
const CRATE_PATHS_ALLOWED: &[&str] = &[
    "crate::archive::proto",
    "crate::backoff",
    "crate::channels::client_state",
    "crate::channels::directory",
    "crate::channels::message",
    "crate::codec",
    "crate::console::geodesy",
    "crate::console::tracks",
    "crate::contract",
    "crate::hex",
    "crate::message",
    "crate::publish::proto",
    "crate::replay::pacer",
    "crate::spool::proto",
];

/// What a pure module must not name.
const FORBIDDEN: &[&str] = &[
    "std::net",
    "std::fs",
    "std::thread",
    "tokio",
    "async_nats",
    "tokio_postgres",
    "futures",
    "socket2",
    "postgres",
    "libc::",
    "Instant::now",
    "SystemTime::now",
    "RecvTime::now",
    "mono_ns",
];

fn rust_files(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for e in entries {
            rust_files(&e, out);
        }
    } else if p.extension().is_some_and(|x| x == "rs") {
        out.push(p.to_path_buf());
    }
}

/// The first forbidden name in `source` with its line number (1-based),
/// comments stripped: an I/O or clock name, or a path into an impure part
/// of this crate.
fn first_violation(source: &str) -> Option<(usize, String)> {
    for (i, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        if let Some(bad) = FORBIDDEN.iter().find(|f| code.contains(**f)) {
            return Some((i + 1, (*bad).to_owned()));
        }
        for (at, _) in code.match_indices("crate::") {
            let path = &code[at..];
            if !CRATE_PATHS_ALLOWED.iter().any(|a| path.starts_with(a)) {
                let end = path
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(path.len());
                return Some((i + 1, path[..end].to_owned()));
            }
        }
        for sibling in ["super::service", "super::driver"] {
            if code.contains(sibling) {
                return Some((i + 1, sibling.to_owned()));
            }
        }
    }
    None
}

#[test]
fn pure_modules_do_no_io_and_read_no_clock() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    let mut violations = Vec::new();
    for entry in PURE {
        let mut files = Vec::new();
        let path = src.join(entry);
        let path = if path.exists() {
            path
        } else {
            src.join(format!("{entry}.rs"))
        };
        assert!(path.exists(), "pure module {entry} not found under src/");
        rust_files(&path, &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).expect("read source");
            checked += 1;
            if let Some((line, bad)) = first_violation(&text) {
                violations.push(format!("{}:{line}: `{bad}`", f.display()));
            }
        }
    }
    assert!(checked >= PURE.len(), "no sources checked");
    assert!(
        violations.is_empty(),
        "pure modules name I/O or a clock:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_check_catches_what_it_should() {
    let v = |s: &str| first_violation(s);
    assert_eq!(v("use tokio::net::UdpSocket;"), Some((1, "tokio".into())));
    assert_eq!(
        v("fn f() {}\nlet t = Instant::now();"),
        Some((2, "Instant::now".into()))
    );
    assert_eq!(
        v("use crate::jetstream::STREAM_TELEMETRY;"),
        Some((1, "crate::jetstream::STREAM_TELEMETRY".into()))
    );
    assert_eq!(v("use crate::codec::Frame;"), None);
    assert_eq!(
        v("use super::service::serve;"),
        Some((1, "super::service".into()))
    );
    assert_eq!(v("// tokio is mentioned in a comment"), None);
    assert_eq!(v("let now = args.now;"), None);
}
