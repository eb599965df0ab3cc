//! `tspi decode`'s input readers (pcap/pcapng, hex, raw) on arbitrary bytes:
//! an error or a summary, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tspi::decode::{CaptureFilter, Decoder, Format};
use tspi::message::RecvTime;

fuzz_target!(|data: &[u8]| {
    for format in [Format::Auto, Format::Pcap, Format::Hex, Format::Raw] {
        let mut d = Decoder::new(RecvTime::from_unix_ns(0), std::io::sink(), std::io::sink());
        let _ = d.run(data, format, CaptureFilter::default());
        let _ = d.run(data, format, CaptureFilter { udp_port: Some(5000) });
    }
});
