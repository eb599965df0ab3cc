//! How every role reaches NATS: the `[nats]` section and [`connect`].
//!
//! Names of streams and subjects live in [`crate::contract::names`]; this
//! module owns the connection: servers, authentication, TLS, and the
//! client's reconnect behaviour. Every role (ingest, archive, channels,
//! replay) connects through [`connect`], so they all honour the same
//! options.
//!
//! Credentials are never logged: URLs are shown through [`redact_url`],
//! and credentials written in a URL (`nats://user:pass@host`,
//! `nats://token@host`) are moved into the connect options and stripped
//! from the URL the client is given (the client would otherwise ignore
//! them and print the URL in its own debug logs).

use anyhow::Context as _;
use async_nats::ConnectErrorKind;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub mod config;

pub use config::{Auth, NatsConfig, SERVERS_LEN_MAX, TlsConfig, redact_url};

/// Authorization errors (the server refused the credentials) seen by every
/// connection of this process since it started: at start they are fatal,
/// later (after a server-side change) the client retries and each refusal
/// is counted here and logged.
static AUTH_ERRORS: AtomicU64 = AtomicU64::new(0);

/// The `nats_auth_errors` counter: authorization errors every NATS
/// connection of this process has met since it started.
pub fn auth_errors() -> u64 {
    AUTH_ERRORS.load(Ordering::Relaxed)
}

/// The `nats_auth_errors` counter as a Prometheus family,
/// `tspi_nats_auth_errors_total`: one per process, whatever roles it runs.
pub fn render_prometheus() -> String {
    let mut s = String::new();
    crate::metrics::write_family(
        &mut s,
        "tspi_nats_auth_errors_total",
        "Connections the NATS server refused for their credentials.",
        "counter",
    );
    s.push_str(&format!("tspi_nats_auth_errors_total {}\n", auth_errors()));
    s
}

/// The connection timeout of one attempt to one server.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// True for an event that says the server refused our credentials.
fn is_auth_event(e: &async_nats::Event) -> bool {
    use async_nats::{ClientError, Event, ServerError};
    match e {
        Event::ServerError(ServerError::AuthorizationViolation) => true,
        Event::ClientError(ClientError::Other(s)) => {
            s == &ConnectErrorKind::AuthorizationViolation.to_string()
                || s == &ConnectErrorKind::Authentication.to_string()
        }
        _ => false,
    }
}

/// What to tell an operator whose credentials were refused.
fn auth_hint(n: &NatsConfig, auth: &Auth) -> String {
    let what = if n.credentials_file.is_some() {
        "check nats.credentials_file"
    } else if auth.token.is_some() {
        "check the token (nats.token, or nats://TOKEN@host)"
    } else if auth.user.is_some() {
        "check the user and password (nats.user and nats.password, or nats://USER:PASS@host)"
    } else {
        return "none were given: set nats.user and nats.password, nats.token or \
                nats.credentials_file, or write them in the URL"
            .to_owned();
    };
    format!("{what}, against the server's authorization settings")
}

/// The `[nats]` options, with `auth` (already resolved from the config and
/// the URLs).
async fn options(n: &NatsConfig, auth: &Auth) -> anyhow::Result<async_nats::ConnectOptions> {
    let mut o = async_nats::ConnectOptions::new()
        .name(&n.name)
        .max_reconnects(None)
        .connection_timeout(CONNECTION_TIMEOUT);
    if let (Some(u), Some(p)) = (&auth.user, &auth.password) {
        o = o.user_and_password(u.clone(), p.clone());
    }
    if let Some(t) = &auth.token {
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
    Ok(o.event_callback(|e| async move {
        if is_auth_event(&e) {
            let n = AUTH_ERRORS.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::error!(
                nats_auth_errors = n,
                "NATS refused the credentials ({e}); retrying"
            );
        } else {
            tracing::info!(event = %e, "nats");
        }
    }))
}

/// Connect to NATS with every option of `[nats]`.
///
/// The first attempt tries each server once. If a server refuses the
/// credentials (authorization violation) that is fatal: the error names it
/// and says what to check, so the process exits non-zero (and systemd's
/// `Restart=on-failure` applies) instead of retrying for ever. If no
/// server is reachable yet, the client is returned at once and connects in
/// the background, as it reconnects for ever afterwards; authorization
/// errors met then are retried, logged and counted ([`auth_errors`]).
pub async fn connect(n: &NatsConfig) -> anyhow::Result<async_nats::Client> {
    let (servers, auth) = n.resolve().map_err(|e| anyhow::anyhow!("{e}"))?;
    let shown: Vec<String> = n.servers.iter().map(|s| redact_url(s)).collect();
    let shown = shown.join(", ");
    match options(n, &auth).await?.connect(servers.as_slice()).await {
        Ok(client) => {
            tracing::info!(servers = %shown, "connected to NATS");
            Ok(client)
        }
        Err(e) => match e.kind() {
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                AUTH_ERRORS.fetch_add(1, Ordering::Relaxed);
                anyhow::bail!(
                    "NATS authorization failed at {shown}: the server refused the \
                     credentials ({e}); {}",
                    auth_hint(n, &auth)
                )
            }
            ConnectErrorKind::ServerParse => {
                anyhow::bail!("NATS server URLs {shown}: {e}")
            }
            _ => {
                tracing::warn!(
                    servers = %shown,
                    error = %e,
                    "NATS not reachable yet; connecting in the background"
                );
                options(n, &auth)
                    .await?
                    .retry_on_initial_connect()
                    .connect(servers.as_slice())
                    .await
                    .with_context(|| format!("connecting to NATS {shown}"))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::{ClientError, Event, ServerError};

    #[test]
    fn refusals_are_told_from_other_events() {
        assert!(is_auth_event(&Event::ServerError(
            ServerError::AuthorizationViolation
        )));
        assert!(is_auth_event(&Event::ClientError(ClientError::Other(
            ConnectErrorKind::AuthorizationViolation.to_string()
        ))));
        assert!(!is_auth_event(&Event::ClientError(ClientError::Other(
            ConnectErrorKind::Io.to_string()
        ))));
        assert!(!is_auth_event(&Event::Disconnected));
    }

    #[test]
    fn the_counter_renders_as_one_prometheus_family() {
        let text = render_prometheus();
        assert!(text.contains("# TYPE tspi_nats_auth_errors_total counter\n"));
        assert!(text.contains("\ntspi_nats_auth_errors_total "));
    }
}
