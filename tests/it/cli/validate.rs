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
