//! `tspi decode` as an operator runs it: files and stdin, exit statuses,
//! stdout records and stderr lines.

use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Output, Stdio};
use tspi::codec::vectors;
use tspi::decode::pcap::PcapWriter;

fn tspi(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tspi");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn lines(b: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(b)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each stdout line is JSON"))
        .collect()
}

fn contract_hex() -> String {
    vectors::ACCEPTED.join("\n") + "\n"
}

const RECV_MS: &str = "1700000000123";

#[test]
fn contract_vectors_print_the_contract_values() {
    let out = tspi(
        &["decode", "--hex", "--recv-epoch-ms", RECV_MS],
        contract_hex().as_bytes(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = lines(&out.stdout);
    assert_eq!(recs.len(), 4);
    let all = |b: bool| {
        json!({
            "position_x_valid": b, "position_y_valid": b, "position_z_valid": b,
            "velocity_x_valid": b, "velocity_y_valid": b, "velocity_z_valid": b,
            "acceleration_x_valid": b, "acceleration_y_valid": b, "acceleration_z_valid": b
        })
    };
    let recv =
        json!({"recv_epoch_ms": 1700000000123u64, "recv_iso": "2023-11-14T22:13:20.123000+00:00"});
    let with_recv = |mut v: Value| {
        v["recv_epoch_ms"] = recv["recv_epoch_ms"].clone();
        v["recv_iso"] = recv["recv_iso"].clone();
        v
    };
    assert_eq!(
        recs[0],
        with_recv(json!({
            "type": "geocentric", "sensor_id": 501, "day": 123, "time_s": 1.534, "status": 255,
            "status_flags": all(true),
            "payload": {"x_m": 5123.25, "y_m": -15.5, "z_m": 1200.0, "vx_mps": 12.34, "vy_mps": -5.67,
                        "vz_mps": 0.0, "ax_mps2": 0.12, "ay_mps2": -0.34, "az_mps2": 0.56}
        }))
    );
    assert_eq!(
        recs[1],
        with_recv(json!({
            "type": "spherical", "sensor_id": 2048, "day": 42, "time_s": 92.34, "status": 14,
            "status_flags": {
                "position_x_valid": false, "position_y_valid": true, "position_z_valid": true,
                "velocity_x_valid": true, "velocity_y_valid": false, "velocity_z_valid": false,
                "acceleration_x_valid": false, "acceleration_y_valid": false, "acceleration_z_valid": true
            },
            "payload": {"range_m": 3800.0, "azimuth_deg": 52.123456, "elevation_deg": 10.654321,
                        "azimuth_rate_dps": 1.23, "elevation_rate_dps": -4.56, "range_rate_mps": 7.89,
                        "azimuth_accel_dps2": 0.12, "elevation_accel_dps2": -0.34, "range_accel_mps2": 0.56}
        }))
    );
    assert_eq!(
        recs[2],
        with_recv(json!({
            "type": "geocentric", "sensor_id": 65535, "day": 366, "time_s": 86399.9999, "status": 0,
            "status_flags": all(false),
            "payload": {"x_m": -21474836.48, "y_m": 21474836.47, "z_m": -0.01, "vx_mps": -327.68,
                        "vy_mps": 327.67, "vz_mps": -0.01, "ax_mps2": 0.01, "ay_mps2": -0.01, "az_mps2": 0.0}
        }))
    );
    let mut only_px = all(false);
    only_px["position_x_valid"] = json!(true);
    assert_eq!(
        recs[3],
        with_recv(json!({
            "type": "spherical", "sensor_id": 0, "day": 1, "time_s": 0.0001, "status": 1,
            "status_flags": only_px,
            "payload": {"range_m": -0.01, "azimuth_deg": 4294.967295, "elevation_deg": 0.0,
                        "azimuth_rate_dps": -327.68, "elevation_rate_dps": 327.67, "range_rate_mps": -0.01,
                        "azimuth_accel_dps2": 0.0, "elevation_accel_dps2": 0.0, "range_accel_mps2": 0.0}
        }))
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "tspi decode: 4 decoded, 0 rejected, 0 skipped\n"
    );
}

#[test]
fn rejected_vectors_exit_1_with_reason_and_position() {
    let good = vectors::GEOCENTRIC_1;
    let text = format!(
        "{}\n{}\n03{}\n{}\n{}0000{}\n",
        &good[..72],                      // line 1: 36 bytes
        good.replacen("c104", "c103", 1), // line 2: version 3
        &good[2..],                       // line 3: type 0x03 (the 03 prefix)
        good.replacen("c104", "c304", 1), // line 4: type 0xC3
        &good[..8],                       // line 5: day 0
        &good[12..]
    );
    let out = tspi(
        &["decode", "--hex", "--recv-epoch-ms", RECV_MS],
        text.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    let want = [
        "line 1: rejected (length): length 36 bytes, a TSPI v4 datagram is exactly 37",
        "line 2: rejected (version): version 3, expected 4",
        "line 3: rejected (type): message type 0x03, expected 0xC1 (geocentric) or 0xC2 (spherical)",
        "line 4: rejected (type): message type 0xC3, expected 0xC1 (geocentric) or 0xC2 (spherical)",
        "line 5: rejected (day): day 0 out of range 1..=366",
        "tspi decode: 0 decoded, 5 rejected (length 1, type 2, version 1, day 1), 0 skipped",
    ];
    assert_eq!(err.lines().collect::<Vec<_>>(), want);
}

#[test]
fn raw_file_and_pcap_file_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let raw: Vec<u8> = vectors::ACCEPTED
        .iter()
        .flat_map(|h| vectors::bytes(h))
        .collect();
    let raw_path = dir.path().join("fleet.raw");
    std::fs::write(&raw_path, &raw).unwrap();
    let out = tspi(
        &[
            "decode",
            raw_path.to_str().unwrap(),
            "--recv-epoch-ms",
            RECV_MS,
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0));
    let from_file = lines(&out.stdout);
    assert_eq!(from_file.len(), 4);
    // Same bytes on stdin, same records.
    let out = tspi(
        &["decode", "-", "--format", "raw", "--recv-epoch-ms", RECV_MS],
        &raw,
    );
    assert_eq!(lines(&out.stdout), from_file);

    let mut w = PcapWriter::new(Vec::new()).unwrap();
    let (src, dst) = (
        "[::1]:40000".parse().unwrap(),
        "[::1]:5000".parse().unwrap(),
    );
    for (i, hex) in vectors::ACCEPTED.iter().enumerate() {
        w.write_udp(
            1_700_000_000_000_000_000 + i as u64 * 1_000_000,
            src,
            dst,
            &vectors::bytes(hex),
        )
        .unwrap();
    }
    let pcap_path = dir.path().join("capture.pcap");
    std::fs::write(&pcap_path, w.finish().unwrap()).unwrap();
    let out = tspi(&["decode", pcap_path.to_str().unwrap()], b"");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = lines(&out.stdout);
    assert_eq!(recs.len(), 4);
    // Capture time, not now: packet i is at 1700000000 s + i ms.
    let ms: Vec<u64> = recs
        .iter()
        .map(|r| r["recv_epoch_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ms,
        [1700000000000, 1700000000001, 1700000000002, 1700000000003]
    );
}

#[test]
fn unusable_input_exits_2() {
    let out = tspi(&["decode", "/nonexistent/capture.pcap"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open /nonexistent/capture.pcap"));
    let out = tspi(
        &["decode", "--format", "pcap"],
        b"plain text, not a capture",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a pcap or pcapng capture"));
}
