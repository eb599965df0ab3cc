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
    // Empty input is unusable whatever the format (auto used to read it
    // as zero raw records and exit 0).
    for format in [Format::Auto, Format::Raw, Format::Hex, Format::Pcap] {
        let err = decode(b"", format, CaptureFilter::default());
        assert!(matches!(err, Err(InputError::Empty)), "{format:?}");
    }
    assert_eq!(
        InputError::Empty.to_string(),
        "input is empty (0 bytes): nothing to decode"
    );
}

/// A hex line of `len` bytes: vector 1 padded with spaces.
fn padded_line(len: usize) -> String {
    let mut l = vectors::GEOCENTRIC_1.to_owned();
    while l.len() < len {
        l.push(' ');
    }
    l
}

#[test]
fn hex_line_limit_both_sides() {
    let at_limit = padded_line(HEX_LINE_MAX);
    let over = padded_line(HEX_LINE_MAX + 1);
    let text = format!(
        "{at_limit}\n{at_limit}\r\n{over}\n{over}\r\n{}\n{at_limit}",
        vectors::SPHERICAL_2
    );
    let run = decode(text.as_bytes(), Format::Hex, CaptureFilter::default()).unwrap();
    let g = expected(vectors::GEOCENTRIC_1, RECV);
    let s = expected(vectors::SPHERICAL_2, RECV);
    assert_eq!(records(&run.out), [g.clone(), g.clone(), s, g]);
    assert_eq!(
        run.diag,
        "line 3: rejected (unreadable): line of 4097 bytes is longer than 4096\n\
         line 4: rejected (unreadable): line of 4097 bytes is longer than 4096\n"
    );
    assert_eq!(run.summary.unreadable, 2);
}

#[test]
fn a_line_without_end_is_not_held() {
    // 3 MB of hex digits without a newline, then a good line.
    let mut input = vec![b'a'; 3_000_000];
    input.push(b'\n');
    input.extend_from_slice(vectors::GEOCENTRIC_1.as_bytes());
    let mut reader = std::io::BufReader::new(&input[..]);
    let mut line = Vec::with_capacity(HEX_LINE_MAX + 1);
    assert_eq!(next_line(&mut reader, &mut line).unwrap(), Some(3_000_000));
    assert_eq!(line.capacity(), HEX_LINE_MAX + 1, "the buffer never grew");
    assert_eq!(next_line(&mut reader, &mut line).unwrap(), Some(74));
    assert_eq!(line, vectors::GEOCENTRIC_1.as_bytes());
    assert_eq!(next_line(&mut reader, &mut line).unwrap(), None);
    let run = decode(&input, Format::Auto, CaptureFilter::default()).unwrap();
    assert_eq!(run.summary.decoded, 1);
    assert_eq!(
        run.diag,
        "line 1: rejected (unreadable): line of 3000000 bytes is longer than 4096\n"
    );
}

#[test]
fn quotes_are_bounded() {
    assert_eq!(quote(&[0xAB; 3]), "ababab");
    assert_eq!(quote(&[1; QUOTE_MAX]), "01".repeat(QUOTE_MAX));
    assert_eq!(
        quote(&[1; QUOTE_MAX + 1]),
        format!("{}… (65 bytes)", "01".repeat(QUOTE_MAX))
    );
}

/// A pcapng section header block.
fn ng_section() -> Vec<u8> {
    let mut shb = vec![];
    shb.extend_from_slice(&le32(0x1A2B_3C4D));
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    ng_block(0x0A0D_0D0A, &shb)
}

#[test]
fn corrupt_capture_message_is_bounded() {
    // A block whose length is zero, followed by 3 MB: pcap-parser's own
    // message quoted all of it.
    let mut file = ng_section();
    file.extend_from_slice(&le32(6));
    file.extend_from_slice(&le32(0));
    file.extend(std::iter::repeat_n(0x5Au8, 3_000_000));
    let err = decode(&file, Format::Auto, CaptureFilter::default())
        .err()
        .expect("a zero block length is corrupt");
    let msg = err.to_string();
    assert!(matches!(err, InputError::NotCapture(_)), "{msg}");
    assert!(msg.len() < 300, "{} bytes: {msg:.300}", msg.len());
    assert!(msg.starts_with("not a pcap or pcapng capture: "), "{msg}");
}

/// A pcap whose one record (16-byte header included) is `len` bytes.
fn pcap_with_record(len: usize) -> Vec<u8> {
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    w.write_frame(1, &vec![0u8; len - 16]).unwrap();
    w.finish().unwrap()
}

#[test]
fn capture_record_limit_both_sides() {
    let run = decode(
        &pcap_with_record(pcap::RECORD_LEN_MAX),
        Format::Pcap,
        CaptureFilter::default(),
    )
    .unwrap();
    assert_eq!(
        run.summary.skipped_total(),
        1,
        "a record at the limit is read"
    );
    let err = decode(
        &pcap_with_record(pcap::RECORD_LEN_MAX + 1),
        Format::Pcap,
        CaptureFilter::default(),
    )
    .err()
    .expect("one byte over the limit");
    assert_eq!(
        err.to_string(),
        "not a pcap or pcapng capture: a record after packet 0 is larger than 1048576 bytes"
    );
    // The same for a pcapng block.
    let ng = |len: usize| {
        let mut file = ng_section();
        file.extend(ng_block(0xDEAD, &vec![0u8; len - 12]));
        file.extend(ng_block(0xDEAD, &[]));
        file
    };
    assert!(
        decode(
            &ng(pcap::RECORD_LEN_MAX),
            Format::Pcap,
            CaptureFilter::default()
        )
        .is_ok()
    );
    let err = decode(
        &ng(pcap::RECORD_LEN_MAX + 4),
        Format::Pcap,
        CaptureFilter::default(),
    )
    .err()
    .expect("over the limit");
    assert!(
        err.to_string().contains("larger than 1048576 bytes"),
        "{err}"
    );
}

/// Packets as a capture on a GSO sender shows them: 3 datagrams glued in one
/// UDP packet, then a 74-byte payload whose second chunk does not parse,
/// then one lone datagram.
fn gso_pcap() -> Vec<u8> {
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    let (src, dst) = (v4("127.0.0.1:40000"), v4("127.0.0.1:5000"));
    let glued: Vec<u8> = vectors::ACCEPTED[..3]
        .iter()
        .flat_map(|h| vectors::bytes(h))
        .collect();
    w.write_udp(1_700_000_000_000_000_000, src, dst, &glued)
        .unwrap();
    let mut bad = vectors::bytes(vectors::GEOCENTRIC_1);
    bad.extend(vectors::bytes(
        &vectors::GEOCENTRIC_1.replacen("c104", "c103", 1),
    ));
    w.write_udp(1_700_000_001_000_000_000, src, dst, &bad)
        .unwrap();
    w.write_udp(
        1_700_000_002_000_000_000,
        src,
        dst,
        &vectors::bytes(vectors::ACCEPTED[3]),
    )
    .unwrap();
    w.finish().unwrap()
}

#[test]
fn coalesced_datagrams_are_split() {
    let input = gso_pcap();
    let run = decode(&input, Format::Pcap, CaptureFilter::default()).unwrap();
    let t0 = RecvTime::from_unix_ns(1_700_000_000_000_000_000);
    let mut want: Vec<_> = vectors::ACCEPTED[..3]
        .iter()
        .map(|h| expected(h, t0))
        .collect();
    want.push(expected(
        vectors::ACCEPTED[3],
        RecvTime::from_unix_ns(1_700_000_002_000_000_000),
    ));
    assert_eq!(records(&run.out), want);
    assert_eq!(run.summary.decoded, 4);
    assert_eq!(run.summary.coalesced_packets, 1);
    assert_eq!(run.summary.split_datagrams, 3);
    assert_eq!(run.summary.skipped[SkipReason::OtherUdp as usize], 1);
    assert_eq!(
        run.diag,
        "packet 1: split into 3 datagrams
packet 2: skipped (other UDP)
"
    );
    assert_eq!(
        run.summary.to_string(),
        "4 decoded, 0 rejected, 1 skipped (other UDP 1), 3 split from 1 coalesced packets"
    );
    // With the port, the payload with a bad chunk is one datagram of the
    // wrong length; the glued one is still split.
    let run = decode(
        &input,
        Format::Pcap,
        CaptureFilter {
            udp_port: Some(5000),
        },
    )
    .unwrap();
    assert_eq!(run.summary.decoded, 4);
    assert_eq!(run.summary.split_datagrams, 3);
    assert_eq!(run.summary.rejected[RejectReason::Length.index()], 1);
    assert!(
        run.diag.contains("packet 2: rejected (length)"),
        "{}",
        run.diag
    );
    assert_eq!(
        Position::Coalesced {
            packet: 7,
            datagram: 2
        }
        .to_string(),
        "packet 7 datagram 2"
    );
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
    let file = [ng_section(), ng_block(1, &idb), ng_block(6, &epb)].concat();
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
