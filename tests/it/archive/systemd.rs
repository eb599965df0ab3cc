//! `systemd/tspi-archive.service` passes `systemd-analyze verify`, with its
//! `/usr/local/bin/tspi` pointed at the binary this build made.

#[test]
fn unit_file_verifies() {
    let unit = include_str!("../../../systemd/tspi-archive.service");
    crate::kit::verify_unit("unit_file_verifies", "tspi-archive.service", unit);
    // The unit runs `tspi archive` with the shipped config and validates it first.
    assert!(unit.contains("ExecStart=/usr/local/bin/tspi archive --config /etc/tspi/tspi.toml"));
    assert!(
        unit.contains("ExecStartPre=/usr/local/bin/tspi validate --config /etc/tspi/tspi.toml")
    );
}
