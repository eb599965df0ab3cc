//! The spool's counters and gauges in the Prometheus exposition
//! (`tspi_spool_*`), beside ingest's.

use super::SpoolCounts;
use crate::message::RecvTime;
use crate::metrics::{write_counter_families, write_gauge_family};

crate::counter_set! {
    /// The spool's totals since the process started (frames, and their
    /// bytes on disk: 56 per frame).
    #[derive(serde::Serialize)]
    pub struct SpoolTotals {
        /// Frames written to the spool.
        spooled => "Frames written to the disk spool.",
        /// Their bytes.
        spooled_bytes => "Bytes of frames written to the disk spool.",
        /// Frames acknowledged by JetStream after leaving the spool.
        drained => "Frames from the disk spool acknowledged by JetStream.",
        /// Their bytes.
        drained_bytes => "Bytes of frames from the disk spool acknowledged by JetStream.",
        /// Frames dropped by the full policy.
        dropped => "Frames the full disk spool dropped (spool.full policy).",
        /// Their bytes.
        dropped_bytes => "Bytes of frames the full disk spool dropped.",
        /// Torn or damaged records skipped.
        torn => "Torn or damaged spool records found and skipped.",
        /// Frames found in the spool at start.
        recovered => "Frames found in the disk spool at start.",
        /// Write and read errors.
        errors => "Disk spool file errors.",
    }
}

impl SpoolTotals {
    pub fn from_counts(c: &SpoolCounts) -> Self {
        let b = SpoolCounts::FRAME_BYTES;
        SpoolTotals {
            spooled: c.spooled,
            spooled_bytes: c.spooled * b,
            drained: c.drained,
            drained_bytes: c.drained * b,
            dropped: c.dropped,
            dropped_bytes: c.dropped * b,
            torn: c.torn,
            recovered: c.recovered,
            errors: c.errors,
        }
    }
}

/// The spool's part of `/metrics` at `now`; `max_bytes` is
/// `spool.max_bytes` (`tspi_spool_max_bytes`: the disk alert compares
/// `tspi_spool_bytes` with it).
pub fn render_prometheus(c: &SpoolCounts, max_bytes: u64, now: RecvTime) -> String {
    let mut s = String::with_capacity(2048);
    write_counter_families(&mut s, "tspi_spool", &SpoolTotals::from_counts(c));
    write_gauge_family(
        &mut s,
        "tspi_spool_frames",
        "Frames in the disk spool now.",
        &[("", c.held)],
    );
    write_gauge_family(
        &mut s,
        "tspi_spool_bytes",
        "Bytes of the disk spool's segment files now.",
        &[("", c.bytes)],
    );
    write_gauge_family(
        &mut s,
        "tspi_spool_max_bytes",
        "The most the disk spool's files may hold (spool.max_bytes).",
        &[("", max_bytes)],
    );
    write_gauge_family(
        &mut s,
        "tspi_spool_oldest_age_seconds",
        "Age of the oldest frame in the disk spool (0: empty).",
        &[("", c.oldest_age_s(now))],
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_figure() {
        let c = SpoolCounts {
            spooled: 10,
            drained: 4,
            dropped: 1,
            torn: 2,
            recovered: 3,
            held: 8,
            bytes: 16 + 8 * 56,
            oldest_recv_ns: 1_000_000_000,
            errors: 0,
        };
        let s = render_prometheus(
            &c,
            1 << 30,
            RecvTime {
                unix_ns: 61_000_000_000,
            },
        );
        for line in [
            "tspi_spool_spooled_total 10\n",
            "tspi_spool_spooled_bytes_total 560\n",
            "tspi_spool_drained_total 4\n",
            "tspi_spool_drained_bytes_total 224\n",
            "tspi_spool_dropped_total 1\n",
            "tspi_spool_dropped_bytes_total 56\n",
            "tspi_spool_torn_total 2\n",
            "tspi_spool_recovered_total 3\n",
            "tspi_spool_frames 8\n",
            "tspi_spool_bytes 464\n",
            "tspi_spool_oldest_age_seconds 60\n",
            "tspi_spool_max_bytes 1073741824\n",
            "# TYPE tspi_spool_frames gauge\n",
        ] {
            assert!(s.contains(line), "{line}: {s}");
        }
        let empty = render_prometheus(&SpoolCounts::default(), 0, RecvTime { unix_ns: 5 });
        assert!(empty.contains("tspi_spool_oldest_age_seconds 0\n"));
    }
}
