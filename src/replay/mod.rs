//! Original-rate replay and karaoke channels (issue 6; being built).

use serde::Deserialize;

/// `[channels]` section of the configuration file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsConfig {}
