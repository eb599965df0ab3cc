//! `systemd/tspi-archive.service` passes `systemd-analyze verify`, with its
//! `/usr/local/bin/tspi` pointed at the binary this build made.

use std::process::Command;

#[test]
fn unit_file_verifies() {
    let unit = include_str!("../../../systemd/tspi-archive.service");
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("SKIPPED LOUDLY: systemd-analyze is not installed; unit file not verified");
        return;
    };
    assert!(probe.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tspi-archive.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/tspi", env!("CARGO_BIN_EXE_tspi")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    assert!(
        !stderr.contains("tspi-archive.service"),
        "warnings about the unit:\n{stderr}"
    );
    // The unit runs `tspi archive` with the shipped config and validates it first.
    assert!(unit.contains("ExecStart=/usr/local/bin/tspi archive --config /etc/tspi/tspi.toml"));
    assert!(
        unit.contains("ExecStartPre=/usr/local/bin/tspi validate --config /etc/tspi/tspi.toml")
    );
}
