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
pub(crate) const PURE: &[&str] = &["codec", "message", "replay/pacer"];

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
/// comments stripped.
fn first_violation(source: &str) -> Option<(usize, &'static str)> {
    for (i, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        if let Some(bad) = FORBIDDEN.iter().find(|f| code.contains(**f)) {
            return Some((i + 1, bad));
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
    assert_eq!(
        first_violation("use tokio::net::UdpSocket;"),
        Some((1, "tokio"))
    );
    assert_eq!(
        first_violation("fn f() {}\nlet t = Instant::now();"),
        Some((2, "Instant::now"))
    );
    assert_eq!(first_violation("// tokio is mentioned in a comment"), None);
    assert_eq!(first_violation("let now = args.now;"), None);
}
