//! `tspi decode` on hostile and odd input: bounded lines and messages,
//! empty input, and captures taken on a GSO sender (issue 13, items 9, 15).

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
    // The child may stop reading early (an unusable input): ignore EPIPE.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn empty_file_exits_2_whatever_the_format() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pcap");
    std::fs::write(&empty, b"").unwrap();
    let path = empty.to_str().unwrap();
    for format in ["auto", "raw", "hex", "pcap"] {
        let out = tspi(&["decode", "--format", format, path], b"");
        assert_eq!(out.status.code(), Some(2), "{format}: {}", stderr(&out));
        assert_eq!(
            stderr(&out),
            "tspi decode: input is empty (0 bytes): nothing to decode\n",
            "{format}"
        );
    }
    let out = tspi(&["decode"], b"");
    assert_eq!(out.status.code(), Some(2), "stdin: {}", stderr(&out));
}

#[test]
fn hex_without_newlines_is_one_rejected_line() {
    // 8 MB of hex digits and no newline, then one good line.
    let mut input = vec![b'c'; 8_000_000];
    input.push(b'\n');
    input.extend_from_slice(vectors::GEOCENTRIC_1.as_bytes());
    input.push(b'\n');
    let out = tspi(&["decode", "--recv-epoch-ms", "1700000000000"], &input);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "line 1: rejected (unreadable): line of 8000000 bytes is longer than 4096\n\
         tspi decode: 1 decoded, 1 rejected (unreadable 1), 0 skipped\n"
    );
    let rec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rec["sensor_id"], 501);
    // A whole-second receive time has no fraction (CONTRACT §2).
    assert_eq!(rec["recv_iso"], "2023-11-14T22:13:20+00:00");
}

#[test]
fn corrupt_pcapng_message_is_short() {
    let le = |v: u32| v.to_le_bytes();
    let mut file = Vec::new();
    // Section header block (28 bytes), then a block of length zero.
    file.extend_from_slice(&le(0x0A0D_0D0A));
    file.extend_from_slice(&le(28));
    file.extend_from_slice(&le(0x1A2B_3C4D));
    file.extend_from_slice(&[1, 0, 0, 0]);
    file.extend_from_slice(&(-1i64).to_le_bytes());
    file.extend_from_slice(&le(28));
    file.extend_from_slice(&le(6));
    file.extend_from_slice(&le(0));
    file.extend(std::iter::repeat_n(0x41u8, 3_000_000));
    let out = tspi(&["decode"], &file);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.len() < 400, "{} bytes: {err:.400}", err.len());
    assert!(
        err.starts_with("tspi decode: not a pcap or pcapng capture: "),
        "{err}"
    );
}

#[test]
fn capture_from_a_gso_sender_is_split() {
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    let src = "127.0.0.1:40000".parse().unwrap();
    let dst = "127.0.0.1:5000".parse().unwrap();
    let all: Vec<u8> = vectors::ACCEPTED
        .iter()
        .flat_map(|h| vectors::bytes(h))
        .collect();
    // Two GSO sends (4 and 2 datagrams) and a lone datagram.
    w.write_udp(1_700_000_000_000_000_000, src, dst, &all)
        .unwrap();
    w.write_udp(1_700_000_000_500_000_000, src, dst, &all[..74])
        .unwrap();
    w.write_udp(1_700_000_001_000_000_000, src, dst, &all[..37])
        .unwrap();
    let out = tspi(&["decode", "-"], &w.finish().unwrap());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 7);
    assert_eq!(
        stderr(&out),
        "tspi decode: 7 decoded, 0 rejected, 0 skipped, 6 split from 2 coalesced packets\n"
    );
}
