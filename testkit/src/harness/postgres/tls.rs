//! A PostgreSQL that requires TLS: a test CA and a server certificate for
//! `127.0.0.1` and `localhost` made with the `openssl` command, `ssl = on`,
//! and a `pg_hba.conf` that accepts TCP only over TLS.

use super::PgCluster;
use crate::harness::HarnessError;
use crate::harness::process;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn openssl(dir: &Path, args: &[&str]) -> Result<(), HarnessError> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| HarnessError::io("running openssl (install the openssl package)", e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(HarnessError::CommandFailed {
        server: "postgres".to_owned(),
        what: format!("openssl {}", args.join(" ")),
        status: process::status_text(out.status),
        output: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

/// A self-signed test CA in `dir`: `<name>.pem` (returned) and `<name>.key`.
pub fn make_ca(dir: &Path, name: &str) -> Result<PathBuf, HarnessError> {
    let (pem, key) = (format!("{name}.pem"), format!("{name}.key"));
    let subject = format!("/CN=tspi test CA {name}");
    let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
    args.extend(EC);
    args.extend([
        "-keyout",
        &key,
        "-out",
        &pem,
        "-subj",
        &subject,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &args)?;
    Ok(dir.join(pem))
}

/// A server key and certificate for `127.0.0.1` and `localhost`, signed by
/// the CA `ca` made by [`make_ca`] in the same directory.
fn make_server_cert(dir: &Path, ca: &str) -> Result<(PathBuf, PathBuf), HarnessError> {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n\
         basicConstraints = CA:FALSE\n\
         keyUsage = critical, digitalSignature, keyEncipherment\n\
         extendedKeyUsage = serverAuth\n",
    )
    .map_err(|e| HarnessError::io("writing server.ext", e))?;
    let mut args = vec!["req", "-nodes"];
    args.extend(EC);
    args.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &args)?;
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    )?;
    Ok((dir.join("server.pem"), dir.join("server.key")))
}

impl PgCluster {
    /// A server that requires TLS on TCP: its certificate (for `127.0.0.1`
    /// and `localhost`) is signed by a fresh test CA, [`PgCluster::tls_ca`];
    /// `pg_hba.conf` rejects TCP without TLS (`hostnossl ... reject`).
    pub fn start_requiring_tls() -> Result<PgCluster, HarnessError> {
        let tls = tempfile::Builder::new()
            .prefix("tspi-pg-tls-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating a directory for certificates", e))?;
        make_ca(tls.path(), "ca")?;
        let (cert, key) = make_server_cert(tls.path(), "ca")?;
        let settings = [
            "ssl=on".to_owned(),
            format!("ssl_cert_file={}", cert.display()),
            format!("ssl_key_file={}", key.display()),
        ];
        let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
        PgCluster::start_prepared(&settings, |pg| {
            // Into the cluster's directory, owned by the server's account
            // (PostgreSQL refuses a key others can read or it does not own).
            let dir = pg.dir.path().join("tls");
            std::fs::create_dir(&dir).map_err(|e| HarnessError::io("mkdir tls", e))?;
            for f in ["ca.pem", "server.pem", "server.key"] {
                std::fs::copy(tls.path().join(f), dir.join(f))
                    .map_err(|e| HarnessError::io(format!("copying {f}"), e))?;
            }
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(
                    dir.join("server.key"),
                    std::fs::Permissions::from_mode(0o600),
                )
                .map_err(|e| HarnessError::io("chmod server.key", e))?;
            }
            if let Some(a) = &pg.account {
                for f in ["", "ca.pem", "server.pem", "server.key"] {
                    std::os::unix::fs::chown(dir.join(f), Some(a.uid), Some(a.gid))
                        .map_err(|e| HarnessError::io(format!("chown {f}"), e))?;
                }
            }
            for s in &mut pg.settings {
                *s = s.replace(
                    &tls.path().display().to_string(),
                    &dir.display().to_string(),
                );
            }
            std::fs::write(
                pg.data_dir.join("pg_hba.conf"),
                "local all all trust\n\
                 hostssl all all 127.0.0.1/32 trust\n\
                 hostnossl all all 127.0.0.1/32 reject\n",
            )
            .map_err(|e| HarnessError::io("writing pg_hba.conf", e))?;
            pg.tls_ca = Some(dir.join("ca.pem"));
            Ok(())
        })
    }

    /// The CA file that verifies this server's certificate (servers started
    /// by [`PgCluster::start_requiring_tls`]).
    pub fn tls_ca(&self) -> Option<&Path> {
        self.tls_ca.as_deref()
    }
}
