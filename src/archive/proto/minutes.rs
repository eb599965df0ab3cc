//! Pure: tracks per sensor per minute (`tspi_track_minutes`) of one batch,
//! computed by the archiver so that PostgreSQL only appends a few rows per
//! batch instead of grouping every inserted row in a trigger.
//!
//! A minute is a bin of the UTC clock from 2000-01-01 (PostgreSQL's
//! `date_bin('1 minute', recv_time, '2000-01-01 00:00+00')`), so the bins
//! are the ones migration 3's trigger made. The batch's rows are counted
//! as they are encoded ([`Minutes::add`]) or, for a batch rebuilt from
//! another's COPY rows, read back from each row's fixed prefix
//! ([`Minutes::add_copy_row`]).

use super::rows::PG_EPOCH_UNIX_US;
use std::collections::BTreeMap;

/// Microseconds per minute.
pub const MINUTE_US: i64 = 60_000_000;

/// One `tspi_track_minutes` row of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Minute {
    /// Start of the minute, µs since the Unix epoch.
    pub minute_unix_us: i64,
    pub sensor_id: i32,
    pub rows: i64,
    pub first_unix_us: i64,
    pub last_unix_us: i64,
}

/// The minute bin of a receive time (µs since the Unix epoch): the same
/// bin as `date_bin('1 minute', t, '2000-01-01 00:00+00')`.
pub fn minute_of(unix_us: i64) -> i64 {
    let pg = unix_us - PG_EPOCH_UNIX_US;
    pg - pg.rem_euclid(MINUTE_US) + PG_EPOCH_UNIX_US
}

/// The aggregate being built for one batch.
#[derive(Clone, Debug, Default)]
pub struct Minutes {
    by_key: BTreeMap<(i64, i32), Minute>,
}

impl Minutes {
    /// Count one row.
    pub fn add(&mut self, recv_unix_us: i64, sensor_id: i32) {
        let minute = minute_of(recv_unix_us);
        self.by_key
            .entry((minute, sensor_id))
            .and_modify(|m| {
                m.rows += 1;
                m.first_unix_us = m.first_unix_us.min(recv_unix_us);
                m.last_unix_us = m.last_unix_us.max(recv_unix_us);
            })
            .or_insert(Minute {
                minute_unix_us: minute,
                sensor_id,
                rows: 1,
                first_unix_us: recv_unix_us,
                last_unix_us: recv_unix_us,
            });
    }

    /// Count one row given as its binary COPY bytes (field count, then
    /// `recv_time`, `recv_epoch_ms`, `sensor_id`: the telemetry column
    /// order). `None` if the prefix is not that.
    pub fn add_copy_row(&mut self, row: &[u8]) -> Option<()> {
        let (recv, sensor) = copy_row_key(row)?;
        self.add(recv, sensor);
        Some(())
    }

    /// The rows, by (minute, sensor), emptying the accumulator.
    pub fn take(&mut self) -> Vec<Minute> {
        std::mem::take(&mut self.by_key).into_values().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// `recv_time` (µs since the Unix epoch) and `sensor_id` of one telemetry
/// row in binary COPY form.
pub fn copy_row_key(row: &[u8]) -> Option<(i64, i32)> {
    let be_i32 = |at: usize| -> Option<i32> {
        Some(i32::from_be_bytes(row.get(at..at + 4)?.try_into().ok()?))
    };
    let be_i64 = |at: usize| -> Option<i64> {
        Some(i64::from_be_bytes(row.get(at..at + 8)?.try_into().ok()?))
    };
    // i16 field count; then (i32 length, value) per field.
    if be_i32(2)? != 8 || be_i32(14)? != 8 || be_i32(26)? != 4 {
        return None;
    }
    Some((be_i64(6)? + PG_EPOCH_UNIX_US, be_i32(30)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the trigger's `GROUP BY date_bin(...), sensor_id` gives, the
    /// slow obvious way.
    fn reference(rows: &[(i64, i32)]) -> Vec<Minute> {
        let mut keys: Vec<(i64, i32)> = rows
            .iter()
            .map(|&(t, s)| {
                let pg = t - PG_EPOCH_UNIX_US;
                (pg.div_euclid(MINUTE_US) * MINUTE_US + PG_EPOCH_UNIX_US, s)
            })
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys.into_iter()
            .map(|(m, s)| {
                let inside: Vec<i64> = rows
                    .iter()
                    .filter(|&&(t, x)| x == s && t >= m && t < m + MINUTE_US)
                    .map(|&(t, _)| t)
                    .collect();
                Minute {
                    minute_unix_us: m,
                    sensor_id: s,
                    rows: inside.len() as i64,
                    first_unix_us: *inside.iter().min().unwrap(),
                    last_unix_us: *inside.iter().max().unwrap(),
                }
            })
            .collect()
    }

    #[test]
    fn minute_bins_are_utc_minutes_also_before_2000() {
        assert_eq!(minute_of(PG_EPOCH_UNIX_US), PG_EPOCH_UNIX_US);
        assert_eq!(minute_of(PG_EPOCH_UNIX_US + 59_999_999), PG_EPOCH_UNIX_US);
        assert_eq!(
            minute_of(PG_EPOCH_UNIX_US - 1),
            PG_EPOCH_UNIX_US - MINUTE_US
        );
        // 2024-03-09 12:34:56.789 UTC.
        assert_eq!(minute_of(1_709_987_696_789_000), 1_709_987_640_000_000);
        assert_eq!(minute_of(0), 0);
    }

    #[test]
    fn copy_row_key_reads_the_encoded_prefix() {
        let frame = crate::codec::parse(&crate::codec::vectors::bytes(
            crate::codec::vectors::SPHERICAL_2,
        ))
        .unwrap();
        let row = super::super::rows::TelemetryRow {
            recv_unix_us: 1_709_987_696_789_123,
            recv_epoch_ms: 1_709_987_696_789,
            frame,
        };
        let mut c = super::super::copy::CopyBuf::with_capacity(0);
        let start = c.bytes().len();
        c.telemetry(&row, "id", 1);
        let bytes = &c.bytes()[start..];
        assert_eq!(
            copy_row_key(bytes),
            Some((row.recv_unix_us, i32::from(frame.sensor_id)))
        );
        assert_eq!(copy_row_key(&bytes[..20]), None);
    }

    proptest! {
        #[test]
        fn the_batch_aggregate_is_the_group_by(
            rows in prop::collection::vec(
                (-3 * MINUTE_US..10 * MINUTE_US, 0i32..4)
                    .prop_map(|(t, s)| (t + 1_709_987_640_000_000, s)),
                0..200,
            ),
            split in 0usize..200,
        ) {
            let mut m = Minutes::default();
            for &(t, s) in &rows {
                m.add(t, s);
            }
            prop_assert_eq!(m.take(), reference(&rows));
            prop_assert!(m.is_empty());
            // Two batches' aggregates summed (the view, or a fold) are the whole's.
            let split = split.min(rows.len());
            let (a, b) = rows.split_at(split);
            let mut sum: BTreeMap<(i64, i32), Minute> = BTreeMap::new();
            for part in [a, b] {
                let mut m = Minutes::default();
                for &(t, s) in part {
                    m.add(t, s);
                }
                for x in m.take() {
                    sum.entry((x.minute_unix_us, x.sensor_id))
                        .and_modify(|y| {
                            y.rows += x.rows;
                            y.first_unix_us = y.first_unix_us.min(x.first_unix_us);
                            y.last_unix_us = y.last_unix_us.max(x.last_unix_us);
                        })
                        .or_insert(x);
                }
            }
            prop_assert_eq!(sum.into_values().collect::<Vec<_>>(), reference(&rows));
        }
    }
}
