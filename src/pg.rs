//! Edge: how every role reaches PostgreSQL (the archive writes, replay
//! reads): one [`connect`], in plain text or over TLS with the server's
//! certificate verified.
//!
//! With a CA file (`archive.ca_file`) the connection is TLS or nothing: the
//! connection string's `sslmode` becomes `require` (`disable` is an error,
//! never a silent plain-text fallback), the server's chain must lead to a
//! certificate in that file, and its name must match the `host` connected
//! to (an IP address in the certificate's subjectAltName for
//! `host=127.0.0.1`). rustls (ring) does the handshake: TLS 1.2 and 1.3.
//! A failed verification is an error naming the cause (`invalid peer
//! certificate: UnknownIssuer`, `NotValidForName`, ...).
//!
//! Several hosts (`host=a,b port=5432,5432`) are tried in order; a
//! [`Target`] says which kind of server a role needs: the archive writes,
//! so it asks for the primary (`target_session_attrs=read-write`: after a
//! failover it finds the promoted standby); replay may ask for a standby
//! (read-only), falling back to any server when none answers.

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::{SslMode, TargetSessionAttrs};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_rustls::rustls;

/// Why TLS could not be set up (before any connection).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading the PostgreSQL CA file {path}: {cause}")]
    Read { path: PathBuf, cause: String },
    #[error("the PostgreSQL CA file {path} holds no PEM certificate")]
    Empty { path: PathBuf },
    #[error("the PostgreSQL CA file {path}: a certificate was refused: {cause}")]
    Refused { path: PathBuf, cause: String },
}

/// TLS to PostgreSQL trusting only the certificates of one CA file.
#[derive(Clone)]
pub struct Tls {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// Trust the PEM certificates in `ca_file` (and nothing else).
    pub fn from_ca_file(ca_file: &Path) -> Result<Tls, TlsError> {
        let path = ca_file.to_path_buf();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| TlsError::Read {
                path: path.clone(),
                cause: e.to_string(),
            })?
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::Read {
                path: path.clone(),
                cause: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TlsError::Empty { path });
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs {
            roots.add(cert).map_err(|e| TlsError::Refused {
                path: path.clone(),
                cause: e.to_string(),
            })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Refused {
                path: path.clone(),
                cause: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls {
            config: Arc::new(config),
        })
    }

    /// From an optional CA file setting (`None` or empty: plain text).
    pub fn from_setting(ca_file: Option<&Path>) -> Result<Option<Tls>, TlsError> {
        match ca_file {
            Some(p) if !p.as_os_str().is_empty() => Self::from_ca_file(p).map(Some),
            _ => Ok(None),
        }
    }
}

/// Why a connection failed: the connection string, or the server.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "the PostgreSQL connection string says sslmode=disable, but a CA file is set: TLS is required"
    )]
    SslDisabled,
    #[error("{}", crate::archive::db::pg_text(.0))]
    Pg(#[from] tokio_postgres::Error),
}

impl ConnectError {
    /// The server's or client's error, if it got that far.
    pub fn pg(&self) -> Option<&tokio_postgres::Error> {
        match self {
            ConnectError::Pg(e) => Some(e),
            ConnectError::SslDisabled => None,
        }
    }
}

/// Which kind of server a session needs, among the hosts of a connection
/// string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Target {
    /// As the connection string says (its `target_session_attrs`).
    #[default]
    AsGiven,
    /// A server that accepts writes (`read-write`).
    Primary,
    /// A hot standby (`read-only`) if one of the hosts is; else any.
    PreferStandby,
}

/// A client and its connection's task (ended on drop of the client).
pub type Session = (tokio_postgres::Client, tokio::task::JoinHandle<()>);

/// Connect (TLS when `tls` is given) and spawn the connection's task,
/// which logs at debug how it ended.
pub async fn connect(dsn: &str, tls: Option<&Tls>) -> Result<Session, ConnectError> {
    connect_to(dsn, tls, Target::AsGiven).await
}

/// [`connect`] to a server of the `target` kind.
pub async fn connect_to(
    dsn: &str,
    tls: Option<&Tls>,
    target: Target,
) -> Result<Session, ConnectError> {
    let mut config: tokio_postgres::Config = dsn.parse()?;
    match target {
        Target::AsGiven => {}
        Target::Primary => {
            config.target_session_attrs(TargetSessionAttrs::ReadWrite);
        }
        Target::PreferStandby => {
            let mut standby = config.clone();
            standby.target_session_attrs(TargetSessionAttrs::ReadOnly);
            match connect_config(standby, tls).await {
                Ok(s) => return Ok(s),
                Err(e) => tracing::info!(
                    error = %e,
                    "no standby among the PostgreSQL hosts; reading from any of them"
                ),
            }
            config.target_session_attrs(TargetSessionAttrs::Any);
        }
    }
    connect_config(config, tls).await
}

async fn connect_config(
    mut config: tokio_postgres::Config,
    tls: Option<&Tls>,
) -> Result<Session, ConnectError> {
    let Some(tls) = tls else {
        let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
        return Ok((client, spawn(conn)));
    };
    match config.get_ssl_mode() {
        SslMode::Disable => return Err(ConnectError::SslDisabled),
        _ => {
            config.ssl_mode(SslMode::Require);
        }
    }
    let (client, conn) = config.connect(tls.clone()).await?;
    Ok((client, spawn(conn)))
}

fn spawn<F>(conn: F) -> tokio::task::JoinHandle<()>
where
    F: Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    })
}

impl<S> MakeTlsConnect<S> for Tls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type TlsConnect = Connect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Connect, Self::Error> {
        Ok(Connect {
            config: self.config.clone(),
            name: ServerName::try_from(domain)?.to_owned(),
        })
    }
}

/// One handshake, to the server named `name`.
pub struct Connect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let s = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await?;
            Ok(TlsStream(s))
        })
    }
}

/// The TLS stream under a PostgreSQL connection.
pub struct TlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for TlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // Trust authentication or SCRAM without channel binding.
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
