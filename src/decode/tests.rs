use super::pcap::PcapWriter;
use super::*;
use crate::codec::vectors;
use std::net::SocketAddr;

const RECV: RecvTime = RecvTime::from_unix_ns(vectors::RECV_EXAMPLE_UNIX_NS);

struct Run {
    summary: Summary,
    out: String,
    diag: String,
}

fn decode(input: &[u8], format: Format, filter: CaptureFilter) -> Result<Run, InputError> {
    let mut d = Decoder::new(RECV, Vec::new(), Vec::new());
    d.verbose = true;
    d.run(input, format, filter)?;
    Ok(Run {
        summary: d.summary,
        out: String::from_utf8(d.out).unwrap(),
        diag: String::from_utf8(d.diag).unwrap(),
    })
}

fn records(out: &str) -> Vec<Record> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn expected(hex: &str, recv: RecvTime) -> Record {
    Record::new(&codec::parse(&vectors::bytes(hex)).unwrap(), recv)
}

fn raw_vectors() -> Vec<u8> {
    vectors::ACCEPTED
        .iter()
        .flat_map(|h| vectors::bytes(h))
        .collect()
}

#[test]
fn raw_records_decode_in_order() {
    let run = decode(&raw_vectors(), Format::Raw, CaptureFilter::default()).unwrap();
    let want: Vec<_> = vectors::ACCEPTED
        .iter()
        .map(|h| expected(h, RECV))
        .collect();
    assert_eq!(records(&run.out), want);
    assert_eq!(run.summary.decoded, 4);
    assert_eq!(run.summary.exit_code(), 0);
    assert_eq!(run.diag, "");
    // Auto-detection picks raw for binary input.
    let auto = decode(&raw_vectors(), Format::Auto, CaptureFilter::default()).unwrap();
    assert_eq!(auto.out, run.out);
}

#[test]
fn raw_partial_tail_and_bad_record_are_rejected_not_fatal() {
    let mut input = raw_vectors();
    input[37 + 1] = 3; // record 2: version 3
    input.extend_from_slice(&[0xC1, 0x04, 0x00]); // a 3-byte tail
    let run = decode(&input, Format::Raw, CaptureFilter::default()).unwrap();
    assert_eq!(run.summary.decoded, 3);
    assert_eq!(run.summary.rejected[RejectReason::Version.index()], 1);
    assert_eq!(run.summary.rejected[RejectReason::Length.index()], 1);
    assert_eq!(run.summary.exit_code(), 1);
    assert_eq!(
        run.diag,
        "record 2 (byte 37): rejected (version): version 3, expected 4\n\
         record 5 (byte 148): rejected (length): length 3 bytes, a TSPI v4 datagram is exactly 37\n"
    );
    assert_eq!(
        run.summary.to_string(),
        "3 decoded, 2 rejected (length 1, version 1), 0 skipped"
    );
}

#[test]
fn hex_lines_with_comments_and_errors() {
    let text = format!(
        "# contract vectors\n{}\n\n  {}  \nzz11\n{}\n",
        vectors::GEOCENTRIC_1,
        vectors::SPHERICAL_2.to_uppercase(),
        &vectors::GEOCENTRIC_3[..72]
    );
    let run = decode(text.as_bytes(), Format::Hex, CaptureFilter::default()).unwrap();
    assert_eq!(
        records(&run.out),
        [
            expected(vectors::GEOCENTRIC_1, RECV),
            expected(vectors::SPHERICAL_2, RECV)
        ]
    );
    assert_eq!(
        run.diag,
        "line 5: rejected (unreadable): not hex: character 'z' at column 1 is not a hex digit\n\
         line 6: rejected (length): length 36 bytes, a TSPI v4 datagram is exactly 37\n"
    );
    assert_eq!(run.summary.exit_code(), 1);
    let auto = decode(text.as_bytes(), Format::Auto, CaptureFilter::default()).unwrap();
    assert_eq!(auto.out, run.out);
}

fn v4(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A capture with the four vectors to port 5000, one bad datagram to port
/// 5000, a DNS-sized UDP packet to port 53 and a TCP segment.
fn sample_pcap() -> Vec<u8> {
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    let (src, dst) = (v4("127.0.0.1:40000"), v4("127.0.0.1:5000"));
    for (i, hex) in vectors::ACCEPTED.iter().enumerate() {
        let t = 1_700_000_000_000_000_000 + i as u64 * 1_000_123;
        w.write_udp(t, src, dst, &vectors::bytes(hex)).unwrap();
    }
    w.write_udp(1_700_000_001_000_000_000, src, dst, &[0xC1; 20])
        .unwrap();
    w.write_udp(1_700_000_002_000_000_000, src, v4("127.0.0.1:53"), &[0; 40])
        .unwrap();
    let mut tcp = Vec::new();
    etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
        .tcp(1, 2, 3, 4)
        .write(&mut tcp, &vectors::bytes(vectors::GEOCENTRIC_1))
        .unwrap();
    w.write_frame(1_700_000_003_000_000_000, &tcp).unwrap();
    w.finish().unwrap()
}

#[test]
fn pcap_uses_packet_times_and_skips_other_traffic() {
    let input = sample_pcap();
    let run = decode(&input, Format::Pcap, CaptureFilter::default()).unwrap();
    let want: Vec<_> = vectors::ACCEPTED
        .iter()
        .enumerate()
        .map(|(i, h)| {
            expected(
                h,
                RecvTime::from_unix_ns(1_700_000_000_000_000_000 + i as u64 * 1_000_123),
            )
        })
        .collect();
    assert_eq!(records(&run.out), want);
    // Without a port, only 37-byte UDP payloads are datagrams.
    assert_eq!(run.summary.decoded, 4);
    assert_eq!(run.summary.rejected_total(), 0);
    assert_eq!(run.summary.skipped[SkipReason::OtherUdp as usize], 2);
    assert_eq!(run.summary.skipped[SkipReason::NotUdp as usize], 1);
    assert_eq!(run.summary.exit_code(), 0);
    assert!(
        run.diag.contains("packet 7: skipped (not UDP)"),
        "{}",
        run.diag
    );
    // With the port, the 20-byte packet to it is a rejected datagram.
    let run = decode(
        &input,
        Format::Auto,
        CaptureFilter {
            udp_port: Some(5000),
        },
    )
    .unwrap();
    assert_eq!(run.summary.decoded, 4);
    assert_eq!(run.summary.rejected[RejectReason::Length.index()], 1);
    assert!(
        run.diag.contains("packet 5: rejected (length)"),
        "{}",
        run.diag
    );
    assert_eq!(run.summary.exit_code(), 1);
}

#[test]
fn truncated_capture_keeps_what_came_before() {
    let input = sample_pcap();
    // Cut in the middle of the fourth record.
    let cut = 24 + 3 * (16 + 42 + 37) + 30;
    let run = decode(&input[..cut], Format::Pcap, CaptureFilter::default()).unwrap();
    assert_eq!(run.summary.decoded, 3);
    assert_eq!(run.summary.unreadable, 1);
    assert!(
        run.diag
            .starts_with("packet 4: rejected (unreadable): capture ends inside a record")
    );
}

#[test]
fn unusable_input_is_an_error() {
    let err = decode(
        b"this is not a capture",
        Format::Pcap,
        CaptureFilter::default(),
    );
    assert!(
        matches!(err, Err(InputError::NotCapture(_))),
        "{:?}",
        err.err()
    );
    let err = decode(b"", Format::Pcap, CaptureFilter::default());
    assert!(matches!(err, Err(InputError::NotCapture(_))));
}

fn le32(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

/// A pcapng block: type, total length, body (padded to 4), total length.
fn ng_block(kind: u32, body: &[u8]) -> Vec<u8> {
    let mut body = body.to_vec();
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
    let total = 12 + body.len() as u32;
    [&le32(kind)[..], &le32(total), &body, &le32(total)].concat()
}

#[test]
fn pcapng_with_nanosecond_interface_and_linux_cooked_v1() {
    // Section header.
    let mut shb = vec![];
    shb.extend_from_slice(&le32(0x1A2B_3C4D));
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    // Interface 0: Linux cooked (113), if_tsresol = 9 (nanoseconds).
    let mut idb = vec![];
    idb.extend_from_slice(&113u16.to_le_bytes());
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&le32(65535));
    idb.extend_from_slice(&9u16.to_le_bytes()); // option if_tsresol
    idb.extend_from_slice(&1u16.to_le_bytes());
    idb.extend_from_slice(&[9, 0, 0, 0]);
    idb.extend_from_slice(&[0, 0, 0, 0]); // opt_endofopt
    // A Linux cooked v1 frame carrying IPv6/UDP with vector 2.
    let mut ip = Vec::new();
    etherparse::PacketBuilder::ipv6([0; 16], [0; 16], 64)
        .udp(40000, 5000)
        .write(&mut ip, &vectors::bytes(vectors::SPHERICAL_2))
        .unwrap();
    let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
    sll.extend_from_slice(&0x86DDu16.to_be_bytes());
    sll.extend_from_slice(&ip);
    let ts: u64 = 1_700_000_000_123_456_789;
    let mut epb = vec![];
    epb.extend_from_slice(&le32(0));
    epb.extend_from_slice(&le32((ts >> 32) as u32));
    epb.extend_from_slice(&le32(ts as u32));
    epb.extend_from_slice(&le32(sll.len() as u32));
    epb.extend_from_slice(&le32(sll.len() as u32));
    epb.extend_from_slice(&sll);
    let file = [
        ng_block(0x0A0D_0D0A, &shb),
        ng_block(1, &idb),
        ng_block(6, &epb),
    ]
    .concat();
    let run = decode(&file, Format::Auto, CaptureFilter::default()).unwrap();
    assert_eq!(
        records(&run.out),
        [expected(vectors::SPHERICAL_2, RecvTime::from_unix_ns(ts))]
    );
    assert_eq!(
        records(&run.out)[0].recv_iso,
        "2023-11-14T22:13:20.123457+00:00"
    );
}

#[test]
fn ip_fragments_are_skipped() {
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    // IPv4 with "more fragments" set, carrying a 37-byte UDP datagram.
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
        .udp(1, 5000)
        .write(&mut frame, &vectors::bytes(vectors::GEOCENTRIC_1))
        .unwrap();
    frame[14 + 6] |= 0x20; // flags: more fragments
    // Fix the IPv4 header checksum is not needed: etherparse does not verify it.
    w.write_frame(1, &frame).unwrap();
    let input = w.finish().unwrap();
    let run = decode(&input, Format::Pcap, CaptureFilter::default()).unwrap();
    assert_eq!(run.summary.decoded, 0);
    assert_eq!(run.summary.skipped[SkipReason::Fragment as usize], 1);
}
