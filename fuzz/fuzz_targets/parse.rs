//! The datagram parser on arbitrary bytes: never panics, and whatever it
//! accepts re-encodes to the same bytes and makes a well-formed message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tspi::codec;
use tspi::message::{Message, RecvTime};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = codec::parse(data) {
        assert_eq!(frame.encode().as_slice(), data);
        let m = Message::encode("tspi", &frame, RecvTime::from_unix_ns(1_700_000_000_000_000_000));
        assert!(m.body.len() <= tspi::message::BODY_LEN_MAX);
        assert!(m.msg_id.len() <= tspi::message::MSG_ID_LEN_MAX);
    }
});
