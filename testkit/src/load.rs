//! A livestream of moving tracks published straight onto
//! `tspi.channel.livestream` (what the channels service would deliver), for
//! the console's benches: the hub's fan-out (`bench/console.rs`) and the
//! page in a browser (`bench/page.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tspi::codec::Frame;
use tspi::message::{RecvTime, utc_day_ticks};

/// Track `j`'s `k`-th update: sensor `j + 1`, geocentric, moving, stamped
/// now (so its time only grows).
pub fn body(j: u16, k: u32, out: &mut Vec<u8>) {
    let now = RecvTime::now();
    let (day, time_ticks) = utc_day_ticks(now.unix_ns);
    let mut payload = crate::frames::geocentric(u64::from(j));
    if let tspi::codec::Payload::Geocentric(g) = &mut payload {
        g.x += (k % 100_000) as i32 * 120;
    }
    let f = Frame {
        sensor_id: j + 1,
        day,
        time_ticks,
        status: 0xFF,
        status_flags: 0x01,
        payload,
    };
    out.clear();
    tspi::message::encode_cbor(&f, now, out);
}

/// Publish every one of `tracks` at 10 Hz, a tenth of them each 10 ms slot,
/// until `stop` (or `limit`). Returns bodies published and seconds taken.
pub async fn publish_livestream(
    url: String,
    tracks: u16,
    stop: Arc<AtomicBool>,
    limit: Duration,
) -> (u64, f64) {
    let client = async_nats::connect(url).await.expect("publisher connects");
    let mut slot = tokio::time::interval(Duration::from_millis(10));
    slot.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut buf = Vec::with_capacity(128);
    let mut sent = 0u64;
    let mut n = 0u64;
    while !stop.load(Relaxed) && start.elapsed() < limit {
        slot.tick().await;
        let s = (n % 10) as u16;
        let k = (n / 10) as u32;
        for j in (s..tracks).step_by(10) {
            body(j, k, &mut buf);
            client
                .publish("tspi.channel.livestream", buf.clone().into())
                .await
                .expect("publish");
            sent += 1;
        }
        n += 1;
    }
    client.flush().await.expect("flush");
    (sent, start.elapsed().as_secs_f64())
}
