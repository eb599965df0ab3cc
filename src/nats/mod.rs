//! How every role reaches NATS: the `[nats]` section and [`connect`].
//!
//! Names of streams and subjects live in [`crate::contract::names`]; this
//! module owns the connection: servers, authentication, TLS, and the
//! client's reconnect behaviour. Every role (ingest, archive, channels,
//! replay) connects through [`connect`], so they all honour the same
//! options.

use anyhow::Context as _;
use std::time::Duration;

pub mod config;

pub use config::{NatsConfig, SERVERS_LEN_MAX, TlsConfig};

/// Connect to NATS with every option of `[nats]`. The client retries the
/// first connection and reconnects forever; `connect` returns once the
/// first connection stands (or the options themselves are unusable).
pub async fn connect(n: &NatsConfig) -> anyhow::Result<async_nats::Client> {
    let mut o = async_nats::ConnectOptions::new()
        .name(&n.name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5));
    if let (Some(u), Some(p)) = (&n.user, &n.password) {
        o = o.user_and_password(u.clone(), p.clone());
    }
    if let Some(t) = &n.token {
        o = o.token(t.clone());
    }
    if let Some(c) = &n.credentials_file {
        o = o
            .credentials_file(c)
            .await
            .with_context(|| format!("reading NATS credentials {}", c.display()))?;
    }
    if let Some(t) = &n.tls {
        o = o.require_tls(t.required);
        if let Some(ca) = &t.ca_file {
            o = o.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) {
            o = o.add_client_certificate(cert.clone(), key.clone());
        }
    }
    o.event_callback(|e| async move {
        tracing::info!(event = %e, "nats");
    })
    .connect(n.servers.as_slice())
    .await
    .with_context(|| format!("connecting to NATS {:?}", n.servers))
}
