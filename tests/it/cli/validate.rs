//! `tspi validate`: the shipped example passes; a typo names its line and key.

use std::process::Command;

fn validate(path: &std::path::Path) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args(["validate", "--config"])
        .arg(path)
        .output()
        .expect("run tspi validate");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn shipped_example_is_valid() {
    let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/tspi.toml"));
    let (code, out, err) = validate(path);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.ends_with("tspi.toml: ok\n"), "{out}");
}

#[test]
fn typo_and_bad_values_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[ingest]\nudp = [\"127.0.0.1:5000\"]\nworkerz = 3\n").unwrap();
    let (code, _, err) = validate(&typo);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("typo.toml") && err.contains("line 3") && err.contains("workerz"),
        "{err}"
    );

    let short = dir.path().join("short-window.toml");
    std::fs::write(
        &short,
        "[ingest]\nudp = [\"127.0.0.1:5000\"]\n[stream]\nduplicate_window_s = 2\n",
    )
    .unwrap();
    let (code, _, err) = validate(&short);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("duplicate_window_s = 2 s does not cover the retry horizon"),
        "{err}"
    );
}

/// Source allow-lists (issue 13, item 6): a good one passes; a bad network
/// names its line, key and value; a list for an address that is not
/// listened on is refused by key.
#[test]
fn source_allow_lists_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let good = write(
        "good.toml",
        "[ingest]\nudp = [\"0.0.0.0:5000\", \"[::]:5000\"]\n\
         allow_sources = [\"10.1.0.0/16\", \"192.168.5.7\", \"fd00::/8\"]\n\
         [[ingest.sources]]\nlisten = \"0.0.0.0:5000\"\nallow = [\"10.1.2.0/24\"]\n",
    );
    let (code, out, err) = validate(&good);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.ends_with("good.toml: ok\n"), "{out}");

    let bad = write(
        "bad-network.toml",
        "[ingest]\nudp = [\"0.0.0.0:5000\"]\nallow_sources = [\"10.1.0.0/33\"]\n",
    );
    let (code, _, err) = validate(&bad);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("line 3")
            && err.contains("allow_sources")
            && err.contains("\"10.1.0.0/33\": prefix 33 is longer than the address's 32 bits"),
        "{err}"
    );

    let unlistened = write(
        "unlistened.toml",
        "[ingest]\nudp = [\"0.0.0.0:5000\"]\n\
         [[ingest.sources]]\nlisten = \"0.0.0.0:5001\"\nallow = [\"10.1.2.0/24\"]\n",
    );
    let (code, _, err) = validate(&unlistened);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("ingest.sources")
            && err.contains("0.0.0.0:5001, which is not a listen address"),
        "{err}"
    );
}
