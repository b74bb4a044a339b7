//! TLS on the client port and the status port, as etcd configures it:
//! `--cert-file`, `--key-file`, `--trusted-ca-file`, `--client-cert-auth`.
//!
//! - [`TlsFiles`] names the PEM files; [`ServerTls::load`] reads them into
//!   a rustls server config (ring provider, TLS 1.2 and 1.3) or says which
//!   file is wrong and how (missing, no certificate in it, a key that does
//!   not match the certificate, a CA file without a certificate).
//! - Client certificates: as etcd (`transport.TLSInfo.ServerConfig`), a
//!   client must present a certificate signed by a trusted CA whenever
//!   `trusted_ca_file` is set or `client_cert_auth` is on (Go's
//!   `RequireAndVerifyClientCert`); otherwise none is asked for.
//!   `client_cert_auth` without `trusted_ca_file` is refused at load: there
//!   would be nothing to verify against.
//! - [`ServerTls::reload`] (SIGHUP) reads the same files again and swaps
//!   the config for new connections; connections already open keep the
//!   session they have. A reload that fails changes nothing and returns the
//!   reason.
//! - [`common_name`]: the subject Common Name of a verified client
//!   certificate (etcd takes it as the user name under
//!   `--client-cert-auth`), exposed per connection by
//!   [`crate::client_port::ConnHandle::peer_common_name`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// ALPN protocols offered on the client port: gRPC's HTTP/2 first, then
/// HTTP/1.1 (the JSON gateway).
pub const ALPN_CLIENT_PORT: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN protocols offered on the status port (served over HTTP/1.1).
pub const ALPN_STATUS_PORT: &[&[u8]] = &[b"http/1.1"];

/// The PEM files of a TLS listener (etcd's flag in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain, leaf first (`--cert-file`).
    pub cert_file: PathBuf,
    /// The private key of the leaf certificate: PKCS#8, PKCS#1 or SEC1
    /// (`--key-file`).
    pub key_file: PathBuf,
    /// CA certificates that client certificates must chain to
    /// (`--trusted-ca-file`); `None` = no client certificates.
    pub trusted_ca_file: Option<PathBuf>,
    /// Require a client certificate (`--client-cert-auth`). Needs
    /// `trusted_ca_file`; with a `trusted_ca_file` certificates are
    /// required whether this is set or not, as in etcd.
    pub client_cert_auth: bool,
}

impl TlsFiles {
    /// Whether clients must present a certificate signed by a trusted CA.
    pub fn requires_client_cert(&self) -> bool {
        self.trusted_ca_file.is_some() || self.client_cert_auth
    }
}

/// Why TLS files were refused. Each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path}: {reason}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "key_file {key} does not belong to cert_file {cert}: {reason} (give the key the \
         certificate was issued for)"
    )]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("client_cert_auth is on but no trusted_ca_file is set: name the CA that signs client certificates")]
    ClientAuthWithoutCa,
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

/// A server TLS configuration read from [`TlsFiles`], reloadable.
pub struct ServerTls {
    files: TlsFiles,
    alpn: Vec<Vec<u8>>,
    /// The config in force and its leaf certificate's serial (hex).
    current: RwLock<(Arc<ServerConfig>, String)>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads `files` into a server config offering `alpn` (e.g.
    /// [`ALPN_CLIENT_PORT`]).
    ///
    /// # Errors
    /// A file that cannot be read or holds no usable PEM item, a key that
    /// does not match the certificate, `client_cert_auth` without a CA.
    pub fn load(files: TlsFiles, alpn: &[&[u8]]) -> Result<Arc<Self>, TlsError> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let (config, serial) = build(&files, &alpn)?;
        Ok(Arc::new(Self {
            files,
            alpn,
            current: RwLock::new((Arc::new(config), serial)),
        }))
    }

    /// The files this config was read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The config new connections get now.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.read().expect("tls config lock").0.clone()
    }

    /// The serial number of the certificate in force, hex (for logs).
    pub fn serial_hex(&self) -> String {
        self.current.read().expect("tls config lock").1.clone()
    }

    /// Reads the files again; new connections get the new config, open
    /// ones keep theirs.
    ///
    /// # Errors
    /// As [`ServerTls::load`]; the config in force is then left as it was.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (config, serial) = build(&self.files, &self.alpn)?;
        *self.current.write().expect("tls config lock") = (Arc::new(config), serial);
        Ok(())
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Every CERTIFICATE block of the PEM file at `path`; at least one.
fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let pem_err = |reason: String| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_err(
            "no \"BEGIN CERTIFICATE\" block: expected PEM certificates".into(),
        ));
    }
    for (i, c) in certs.iter().enumerate() {
        x509_parser::parse_x509_certificate(c)
            .map_err(|e| pem_err(format!("certificate {} does not parse: {e}", i + 1)))?;
    }
    Ok(certs)
}

/// rustls with *ring* (no C toolchain or cmake for aws-lc in the build).
/// rustls 0.23.48 deprecates it for lacking post-quantum key exchange
/// (X25519MLKEM768); the clients this port serves (etcd's Go 3.4/3.5
/// clients, kube-apiserver) negotiate X25519 or P-256 either way.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server config of `files` and its leaf certificate's serial.
fn build(files: &TlsFiles, alpn: &[Vec<u8>]) -> Result<(ServerConfig, String), TlsError> {
    let certs = read_certs("cert_file", &files.cert_file)?;
    let serial = serial_hex(&certs[0]).unwrap_or_default();
    let key_pem = read("key_file", &files.key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        what: "key_file",
        path: files.key_file.clone(),
        reason: format!("no private key (PKCS#8, PKCS#1 or SEC1 PEM block): {e}"),
    })?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match (&files.trusted_ca_file, files.client_cert_auth) {
        (None, true) => return Err(TlsError::ClientAuthWithoutCa),
        (None, false) => builder.with_no_client_auth(),
        (Some(ca), _) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs("trusted_ca_file", ca)? {
                roots.add(c).map_err(|e| TlsError::Pem {
                    what: "trusted_ca_file",
                    path: ca.clone(),
                    reason: format!("not a usable CA certificate: {e}"),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Pem {
                    what: "trusted_ca_file",
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(why) => TlsError::KeyMismatch {
            cert: files.cert_file.clone(),
            key: files.key_file.clone(),
            reason: format!("{why:?}"),
        },
        other => TlsError::Pem {
            what: "key_file",
            path: files.key_file.clone(),
            reason: other.to_string(),
        },
    })?;
    config.alpn_protocols = alpn.to_vec();
    Ok((config, serial))
}

/// The first subject Common Name of a DER certificate, if it has one that
/// is a string.
pub fn common_name(cert: &[u8]) -> Option<String> {
    let (_, c) = x509_parser::parse_x509_certificate(cert).ok()?;
    let cn = c.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// The serial number of the first certificate of a DER chain, hex (for
/// logs: which certificate a reload put in force).
pub fn serial_hex(cert: &[u8]) -> Option<String> {
    let (_, c) = x509_parser::parse_x509_certificate(cert).ok()?;
    Some(c.raw_serial_as_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A CA and a leaf it signed, PEM, in a fresh directory.
    pub struct Pki {
        pub dir: PathBuf,
    }

    pub fn ca(cn: &str) -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        (rcgen::Issuer::new(p, key), cert.pem())
    }

    pub fn leaf(
        issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
        cn: &str,
        sans: &[&str],
    ) -> (String, String) {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut p = rcgen::CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    impl Pki {
        pub fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("api-tls-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Pki { dir }
        }

        pub fn write(&self, name: &str, text: &str) -> PathBuf {
            let p = self.dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn bad_files_are_refused_with_the_file_and_the_reason() {
        let pki = Pki::new("bad");
        let (issuer, ca_pem) = ca("test CA");
        let (cert, key) = leaf(&issuer, "server", &["localhost"]);
        let (_, other_key) = leaf(&issuer, "other", &["localhost"]);
        let files = TlsFiles {
            cert_file: pki.write("cert.pem", &cert),
            key_file: pki.write("key.pem", &key),
            trusted_ca_file: Some(pki.write("ca.pem", &ca_pem)),
            client_cert_auth: true,
        };
        ServerTls::load(files.clone(), ALPN_CLIENT_PORT).unwrap();

        let missing = TlsFiles {
            cert_file: pki.dir.join("nope.pem"),
            ..files.clone()
        };
        let e = ServerTls::load(missing, ALPN_CLIENT_PORT).unwrap_err();
        assert!(e.to_string().contains("cannot read cert_file"), "{e}");

        let swapped = TlsFiles {
            cert_file: files.key_file.clone(),
            ..files.clone()
        };
        let e = ServerTls::load(swapped, ALPN_CLIENT_PORT).unwrap_err();
        assert!(e.to_string().contains("no \"BEGIN CERTIFICATE\""), "{e}");

        let mismatch = TlsFiles {
            key_file: pki.write("other-key.pem", &other_key),
            ..files.clone()
        };
        let e = ServerTls::load(mismatch, ALPN_CLIENT_PORT).unwrap_err();
        assert!(
            e.to_string().contains("does not belong to cert_file"),
            "{e}"
        );

        let no_ca = TlsFiles {
            trusted_ca_file: None,
            ..files.clone()
        };
        let e = ServerTls::load(no_ca, ALPN_CLIENT_PORT).unwrap_err();
        assert!(e.to_string().contains("no trusted_ca_file"), "{e}");

        let bad_ca = TlsFiles {
            trusted_ca_file: Some(pki.write("empty-ca.pem", "")),
            ..files
        };
        let e = ServerTls::load(bad_ca, ALPN_CLIENT_PORT).unwrap_err();
        assert!(e.to_string().contains("trusted_ca_file"), "{e}");
    }

    #[test]
    fn a_failed_reload_keeps_the_config_in_force() {
        let pki = Pki::new("reload");
        let (issuer, _) = ca("test CA");
        let (cert, key) = leaf(&issuer, "server", &["localhost"]);
        let files = TlsFiles {
            cert_file: pki.write("cert.pem", &cert),
            key_file: pki.write("key.pem", &key),
            trusted_ca_file: None,
            client_cert_auth: false,
        };
        let tls = ServerTls::load(files, ALPN_STATUS_PORT).unwrap();
        let before = tls.config();
        let serial = tls.serial_hex();
        assert!(!serial.is_empty());
        assert_eq!(before.alpn_protocols, vec![b"http/1.1".to_vec()]);
        pki.write("cert.pem", "garbage");
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&before, &tls.config()), "old config kept");
        let (cert2, key2) = leaf(&issuer, "server", &["localhost"]);
        pki.write("cert.pem", &cert2);
        pki.write("key.pem", &key2);
        tls.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &tls.config()), "new config in force");
        assert_ne!(serial, tls.serial_hex());
    }

    #[test]
    fn common_name_and_serial_read_from_a_certificate() {
        let (issuer, _) = ca("test CA");
        let (cert, _) = leaf(&issuer, "root", &[]);
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        assert_eq!(common_name(&der).as_deref(), Some("root"));
        assert!(serial_hex(&der).is_some());
        assert_eq!(common_name(b"not a certificate"), None);
    }
}
