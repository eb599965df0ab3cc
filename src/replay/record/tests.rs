use super::*;
use crate::message::{Message, RecvTime};
use proptest::prelude::*;

// The shared frame strategies; codec's unit tests load the same file.
#[allow(clippy::duplicate_mod)]
#[path = "../../../testkit/src/arb.rs"]
mod arb;

proptest! {
    #[test]
    fn body_gives_back_its_datagram(mut f in prop_oneof![arb::arb_frame(), arb::edge_frame()]) {
        // The body keeps bit 8 of the validity word only.
        f.status_flags &= 1;
        let m = Message::encode("tspi", &f, RecvTime::from_unix_ns(1_700_000_000_000_000_000));
        let back = frame_from_body(&m.body).unwrap();
        prop_assert_eq!(back, f);
        prop_assert_eq!(back.encode(), f.encode());
    }
}

#[test]
fn bad_bodies_are_refused() {
    assert!(matches!(
        frame_from_body(b"\xa0"),
        Err(RecordError::Decode(_))
    ));
    let f = crate::codec::parse(&crate::codec::vectors::bytes(
        crate::codec::vectors::GEOCENTRIC_1,
    ))
    .unwrap();
    let mut r = Record::new(&f, RecvTime::from_unix_ns(0));
    r.frame_type = "spherical".into();
    assert!(matches!(frame_from_record(&r), Err(RecordError::Type(_))));
    let mut r = Record::new(&f, RecvTime::from_unix_ns(0));
    if let PayloadValues::Geocentric(g) = &mut r.payload {
        g.vx_mps = 1e9;
    }
    assert!(matches!(
        frame_from_record(&r),
        Err(RecordError::Range {
            field: "vx_mps",
            ..
        })
    ));
}
