//! `tspi archive`: JetStream to PostgreSQL (issue 5; being built).

use serde::Deserialize;

/// `[archive]` section of the configuration file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {}
