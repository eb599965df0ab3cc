//! Keys renamed for "qualifier and unit last" (`age_max_s`, not
//! `max_age_s`). The old spellings keep working for one release: each
//! field carries a serde `alias`, and this list, checked over the parsed
//! table, turns every old spelling into a warning that names the new one
//! (an alias alone is silent).

use std::path::Path;

/// `(section, old key, new key)`. Every old key here is a serde `alias` of
/// its new key's field (a test checks both directions).
pub(crate) const RENAMED: [(&str, &str, &str); 6] = [
    ("stream", "max_age_s", "age_max_s"),
    ("publish", "fast_flow", "fast_flow_max"),
    ("publish", "fast_outstanding_acks", "fast_acks_outstanding"),
    ("publish", "fast_idle_commit_ms", "fast_commit_idle_ms"),
    ("archive", "ops_durable", "durable_ops"),
    ("channels", "replay_max_age_h", "replay_age_max_h"),
];

/// One warning per old spelling in `table`.
pub(crate) fn warnings(table: &toml::Table, origin: &Path) -> Vec<String> {
    RENAMED
        .iter()
        .filter(|(section, old, _)| {
            table
                .get(*section)
                .and_then(|s| s.as_table())
                .is_some_and(|s| s.contains_key(*old))
        })
        .map(|(section, old, new)| {
            format!(
                "{}: [{section}] {old} is renamed {section}.{new}; the old spelling \
                 still works in this release but will be refused in the next: write {new}",
                origin.display()
            )
        })
        .collect()
}
