//! `[spool]`: the disk spool (off unless `dir` is set).

use super::proto::ledger::FullPolicy;
use crate::config::limits;
use serde::Deserialize;
use std::path::PathBuf;

/// When the spool thread calls `fsync` on the segment it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// Never: the kernel writes back when it likes (a process crash loses
    /// nothing written; a power cut loses the page cache's dirty pages).
    Never,
    /// At most `fsync_interval_ms` after a write.
    Interval,
    /// After every batch written (a batch is what the spool thread found
    /// waiting: up to a few thousand frames).
    EveryBatch,
}

/// `[spool]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Directory of the segment files (created if missing; one ingest per
    /// directory). None: no spool, frames the rings cannot hold are dropped
    /// (`ring_dropped`).
    pub dir: Option<PathBuf>,
    /// All segment files together at most this many bytes.
    pub max_bytes: u64,
    /// When full: `drop_newest` or `drop_oldest`.
    pub full: FullPolicy,
    /// One segment file's size.
    pub segment_bytes: u64,
    /// `never`, `interval` or `every_batch`.
    pub fsync: FsyncPolicy,
    pub fsync_interval_ms: u64,
    /// Frames per second handed from the spool to the publisher at most
    /// (0: unpaced); live frames always go first.
    pub drain_rate_per_s: u64,
    /// Frames per receive worker waiting for the spool thread.
    pub spill_capacity: usize,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        use limits::*;
        SpoolConfig {
            dir: None,
            max_bytes: SPOOL_MAX_BYTES.default,
            full: FullPolicy::DropNewest,
            segment_bytes: SPOOL_SEGMENT_BYTES.default,
            fsync: FsyncPolicy::Interval,
            fsync_interval_ms: SPOOL_FSYNC_INTERVAL_MS.default,
            drain_rate_per_s: SPOOL_DRAIN_RATE_PER_S.default,
            spill_capacity: SPOOL_SPILL_CAPACITY.default as usize,
        }
    }
}

impl SpoolConfig {
    /// Every problem with these values (empty: fine), each naming its key.
    pub fn problems(&self) -> Vec<String> {
        use limits::*;
        let mut p = Vec::new();
        SPOOL_MAX_BYTES.check("spool.max_bytes", self.max_bytes, &mut p);
        SPOOL_SEGMENT_BYTES.check("spool.segment_bytes", self.segment_bytes, &mut p);
        SPOOL_FSYNC_INTERVAL_MS.check("spool.fsync_interval_ms", self.fsync_interval_ms, &mut p);
        SPOOL_DRAIN_RATE_PER_S.check("spool.drain_rate_per_s", self.drain_rate_per_s, &mut p);
        SPOOL_SPILL_CAPACITY.check("spool.spill_capacity", self.spill_capacity, &mut p);
        if self.segment_bytes > self.max_bytes {
            p.push(format!(
                "spool.segment_bytes = {} is above spool.max_bytes = {}",
                self.segment_bytes, self.max_bytes
            ));
        }
        if self.dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            p.push("spool.dir: empty path (omit the key for no spool)".to_owned());
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, String> {
        Config::from_toml(text, Path::new("t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_section_parses_with_every_key() {
        let c = parse(
            "[spool]\ndir = \"/var/lib/tspi/spool\"\nmax_bytes = 2097152\nfull = \"drop_oldest\"\n\
             segment_bytes = 65536\nfsync = \"every_batch\"\nfsync_interval_ms = 5\n\
             drain_rate_per_s = 0\nspill_capacity = 8\n",
        )
        .unwrap();
        let s = &c.spool;
        assert_eq!(s.dir.as_deref(), Some(Path::new("/var/lib/tspi/spool")));
        assert_eq!(
            (s.full, s.fsync),
            (FullPolicy::DropOldest, FsyncPolicy::EveryBatch)
        );
        assert_eq!(
            (s.max_bytes, s.segment_bytes, s.drain_rate_per_s),
            (2 << 20, 1 << 16, 0)
        );
        assert!(s.problems().is_empty(), "{:?}", s.problems());
        assert_eq!(SpoolConfig::default().dir, None, "off by default");
    }

    #[test]
    fn bad_keys_and_values_name_the_line() {
        let e = parse("[spool]\n\nfull = \"drop_middle\"\n").unwrap_err();
        assert!(e.contains("line 3") && e.contains("drop_middle"), "{e}");
        let e = parse("[spool]\nfsync = \"sometimes\"\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("sometimes"), "{e}");
        let e = parse("[spool]\ndirectory = \"/x\"\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("directory"), "{e}");
    }

    #[test]
    fn bounds_are_checked_by_key() {
        let s = SpoolConfig {
            max_bytes: 1 << 20,
            segment_bytes: 2 << 20,
            drain_rate_per_s: 20_000_000,
            dir: Some(PathBuf::new()),
            ..SpoolConfig::default()
        };
        let p = s.problems().join("; ");
        for key in [
            "spool.segment_bytes = 2097152 is above",
            "spool.drain_rate_per_s",
            "spool.dir",
        ] {
            assert!(p.contains(key), "{key}: {p}");
        }
    }
}
