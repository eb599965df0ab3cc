//! `[nats]`: servers, authentication, TLS, the subject prefix. Pure: the
//! connection is made by the parent module's `connect`.

use crate::contract::names;
use serde::Deserialize;
use std::path::PathBuf;

/// `[nats]`: how to reach NATS. Its `Debug` redacts the password, the
/// token and credentials in server URLs.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URLs; the client fails over between them.
    pub servers: Vec<String>,
    /// Connection name shown by the server's monitoring.
    pub name: String,
    /// User name; with `password`. May also be given in a URL
    /// (`nats://user:pass@host`).
    pub user: Option<String>,
    pub password: Option<String>,
    /// Authentication token; may also be given in a URL
    /// (`nats://token@host`).
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
        } else if let Err(e) = self.resolve() {
            problems.push(e);
        }
        if let Some(t) = &self.tls
            && t.cert_file.is_some() != t.key_file.is_some()
        {
            problems.push("nats.tls.cert_file and nats.tls.key_file go together".to_owned());
        }
        problems
    }
}

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let servers: Vec<String> = self.servers.iter().map(|s| redact_url(s)).collect();
        f.debug_struct("NatsConfig")
            .field("servers", &servers)
            .field("name", &self.name)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .field("token", &self.token.as_ref().map(|_| REDACTED))
            .field("credentials_file", &self.credentials_file)
            .field("tls", &self.tls)
            .field("subject_prefix", &self.subject_prefix)
            .finish()
    }
}

/// What a redacted secret is shown as.
pub const REDACTED: &str = "<redacted>";

/// The credentials a connection presents: from `[nats]` or from the URLs.
/// Its `Debug` redacts the password and the token.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Auth {
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .field("token", &self.token.as_ref().map(|_| REDACTED))
            .finish()
    }
}

impl Auth {
    fn is_empty(&self) -> bool {
        self.user.is_none() && self.password.is_none() && self.token.is_none()
    }
}

/// A server URL split into the URL without credentials and the credentials
/// its user-info part carried (`user:pass@` or `token@`, percent-decoded).
/// `None` when the URL carries none.
fn split_credentials(url: &str) -> Result<(String, Option<Auth>), String> {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let Some(at) = authority.rfind('@') else {
        return Ok((url.to_owned(), None));
    };
    let (info, host) = (&authority[..at], &authority[at + 1..]);
    let auth = match info.split_once(':') {
        Some((u, p)) => Auth {
            user: Some(percent_decode(u)?),
            password: Some(percent_decode(p)?),
            token: None,
        },
        None => Auth {
            user: None,
            password: None,
            token: Some(percent_decode(info)?),
        },
    };
    Ok((format!("{scheme}{host}{tail}"), Some(auth)))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a bad %-escape in the credentials of a server URL")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "credentials in a server URL are not UTF-8".to_owned())
}

/// The URL with any credentials replaced by [`REDACTED`]: what logs and
/// messages show.
pub fn redact_url(url: &str) -> String {
    match split_credentials(url) {
        Ok((_, None)) => url.to_owned(),
        Ok((bare, Some(auth))) => {
            let (scheme, host) = match bare.find("://") {
                Some(i) => bare.split_at(i + 3),
                None => ("", bare.as_str()),
            };
            match auth.user {
                Some(u) => format!("{scheme}{u}:{REDACTED}@{host}"),
                None => format!("{scheme}{REDACTED}@{host}"),
            }
        }
        // Unparseable credentials: show nothing of the user-info part.
        Err(_) => match url.rfind('@') {
            Some(at) => format!("{REDACTED}@{}", &url[at + 1..]),
            None => url.to_owned(),
        },
    }
}

impl NatsConfig {
    /// The server URLs stripped of credentials, and the credentials to
    /// present: `user`/`password`/`token` of `[nats]`, or those written in
    /// the URLs. Refused (with a message naming no secret): URLs carrying
    /// different credentials, URL credentials that differ from the
    /// configured ones, and a token given together with a user.
    pub fn resolve(&self) -> Result<(Vec<String>, Auth), String> {
        let configured = Auth {
            user: self.user.clone(),
            password: self.password.clone(),
            token: self.token.clone(),
        };
        let mut from_urls: Option<Auth> = None;
        let mut servers = Vec::with_capacity(self.servers.len());
        for s in &self.servers {
            let (bare, auth) =
                split_credentials(s).map_err(|e| format!("nats.servers {}: {e}", redact_url(s)))?;
            servers.push(bare);
            let Some(auth) = auth else { continue };
            match &from_urls {
                Some(a) if *a != auth => {
                    return Err(format!(
                        "nats.servers: {} carries other credentials than an earlier URL; \
                         one connection presents one set of credentials",
                        redact_url(s)
                    ));
                }
                _ => from_urls = Some(auth),
            }
        }
        let auth = match from_urls {
            None => configured,
            Some(a) if configured.is_empty() || a == configured => a,
            Some(_) => {
                return Err("nats.servers: credentials in a URL differ from nats.user/\
                            nats.password/nats.token; give them in one place"
                    .to_owned());
            }
        };
        if auth.token.is_some() && auth.user.is_some() {
            return Err("nats: give a token or a user and password, not both".to_owned());
        }
        Ok((servers, auth))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(servers: &[&str]) -> NatsConfig {
        NatsConfig {
            servers: servers.iter().map(|s| s.to_string()).collect(),
            ..NatsConfig::default()
        }
    }

    #[test]
    fn credentials_move_from_the_url_into_the_options() {
        let (servers, auth) = cfg(&["nats://alice:s%40cret@127.0.0.1:4222"])
            .resolve()
            .unwrap();
        assert_eq!(servers, ["nats://127.0.0.1:4222"]);
        assert_eq!(auth.user.as_deref(), Some("alice"));
        assert_eq!(auth.password.as_deref(), Some("s@cret"));
        assert_eq!(auth.token, None);

        let (servers, auth) = cfg(&["tls://tok@host:1/x", "host:2"]).resolve().unwrap();
        assert_eq!(servers, ["tls://host:1/x", "host:2"]);
        assert_eq!(auth.token.as_deref(), Some("tok"));

        let (servers, auth) = cfg(&["u:p@host:2"]).resolve().unwrap();
        assert_eq!(servers, ["host:2"]);
        assert_eq!(auth.password.as_deref(), Some("p"));
    }

    #[test]
    fn configured_credentials_stand_without_url_credentials() {
        let mut c = cfg(&["nats://h:1"]);
        c.user = Some("u".into());
        c.password = Some("p".into());
        let (_, auth) = c.resolve().unwrap();
        assert_eq!(auth.password.as_deref(), Some("p"));
    }

    #[test]
    fn conflicting_credentials_are_refused_without_showing_them() {
        let e = cfg(&["nats://a:secret1@h:1", "nats://a:secret2@h:2"])
            .resolve()
            .unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        let mut c = cfg(&["nats://a:secret1@h:1"]);
        c.user = Some("a".into());
        c.password = Some("secret2".into());
        let e = c.resolve().unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        assert!(c.problems().iter().any(|p| p.contains("differ")));
        let e = cfg(&["nats://h:1%zz@h:1"]).resolve().unwrap_err();
        assert!(!e.contains("zz"), "{e}");
    }

    #[test]
    fn urls_and_debug_are_redacted() {
        assert_eq!(
            redact_url("nats://alice:secret@h:1"),
            "nats://alice:<redacted>@h:1"
        );
        assert_eq!(redact_url("nats://secret@h:1"), "nats://<redacted>@h:1");
        assert_eq!(redact_url("nats://h:1"), "nats://h:1");
        assert!(!redact_url("nats://a:secret%zz@h:1").contains("secret"));
        let mut c = cfg(&["nats://alice:secret@h:1"]);
        c.user = Some("alice".into());
        c.password = Some("secret".into());
        c.token = Some("secret".into());
        let d = format!("{c:?}");
        assert!(!d.contains("secret") && d.contains("alice"), "{d}");
        let (_, auth) = cfg(&["nats://alice:secret@h:1"]).resolve().unwrap();
        assert!(!format!("{auth:?}").contains("secret"));
    }
}
