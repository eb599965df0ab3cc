//! `[nats]`: servers, authentication, TLS, the subject prefix. Pure: the
//! connection is made by the parent module's `connect`.

use crate::contract::names;
use serde::Deserialize;
use std::path::PathBuf;

/// `[nats]`: how to reach NATS.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URLs; the client fails over between them.
    pub servers: Vec<String>,
    /// Connection name shown by the server's monitoring.
    pub name: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// NATS credentials file (JWT + NKey seed).
    pub credentials_file: Option<PathBuf>,
    pub tls: Option<TlsConfig>,
    /// First subject token of telemetry messages (`<prefix>.<type>.<sensor>`).
    pub subject_prefix: String,
}

/// Server URLs at most.
pub const SERVERS_LEN_MAX: usize = 64;

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".into()],
            name: "tspi-ingest".into(),
            user: None,
            password: None,
            token: None,
            credentials_file: None,
            tls: None,
            subject_prefix: names::SUBJECT_PREFIX_DEFAULT.into(),
        }
    }
}

/// `[nats.tls]`: TLS to the NATS servers.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Refuse plain-text connections.
    pub required: bool,
    /// PEM file of CA certificates to trust.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, with `key_file`, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl NatsConfig {
    /// Every problem with these values (empty: fine), each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.servers.is_empty() {
            problems.push("nats.servers: no server URL".to_owned());
        }
        if self.servers.len() > SERVERS_LEN_MAX {
            problems.push(format!(
                "nats.servers: {} URLs, at most {SERVERS_LEN_MAX}",
                self.servers.len()
            ));
        }
        let p = &self.subject_prefix;
        if p.is_empty()
            || p.contains(['*', '>', ' '])
            || p.starts_with('.')
            || p.ends_with('.')
            || p.contains("..")
        {
            problems.push(format!(
                "nats.subject_prefix = {p:?}: must be non-empty subject tokens without wildcards"
            ));
        }
        if self.password.is_some() != self.user.is_some() {
            problems.push("nats.user and nats.password go together".to_owned());
        }
        if let Some(t) = &self.tls
            && t.cert_file.is_some() != t.key_file.is_some()
        {
            problems.push("nats.tls.cert_file and nats.tls.key_file go together".to_owned());
        }
        problems
    }
}
