//! `bftd init --tls` and `bftd demo --tls`: a CA and certificates for a
//! test cluster (rcgen, ECDSA P-256), and the `[client_tls]` that uses
//! them. For production, bring certificates from your own CA and name them
//! in `[client_tls]`.
//!
//! Files, under `<dir>/tls/` (keys mode 0600):
//! - `ca.pem`, `ca-key.pem`: the CA (CN "bftd test CA").
//! - `replica-<i>.pem`, `replica-<i>-key.pem`: replica i's server
//!   certificate; its subject alternative names are the IPs of the
//!   replica's client, plaintext-client and status addresses (unspecified
//!   ones skipped) plus `localhost` and `127.0.0.1`. Extended key usage:
//!   server and client authentication.
//! - `client-root.pem`, `client-root-key.pem`: a client certificate with
//!   CN "root" (the user name etcd auth takes from it) for etcdctl.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::config::{ClientTls, ClusterConfig};

/// Directory of the generated files, relative to the config.
pub const TLS_DIR: &str = "tls";
/// Common Name of the generated client certificate.
pub const CLIENT_CN: &str = "root";

/// A certificate authority held in memory.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA's private key, PEM.
    pub key_pem: String,
}

/// A certificate and its private key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

fn err(e: rcgen::Error) -> String {
    format!("generating a certificate: {e}")
}

/// Validity of generated certificates: from a day ago for ten years
/// (calendar years from the system clock, coarse on purpose).
fn validity(p: &mut CertificateParams) {
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let year = 1970 + (now_s / 31_556_952) as i32;
    p.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    p.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
}

impl Ca {
    /// A new self-signed CA with Common Name `cn`.
    ///
    /// # Errors
    /// Key generation or signing failed (rcgen's error).
    pub fn generate(cn: &str) -> Result<Self, String> {
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut p);
        let key = KeyPair::generate().map_err(err)?;
        let cert = p.self_signed(&key).map_err(err)?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            issuer: Issuer::new(p, key),
            cert_pem: cert.pem(),
            key_pem,
        })
    }

    /// A server certificate (server and client authentication) for `sans`
    /// (IP addresses or DNS names).
    ///
    /// # Errors
    /// A name that is neither an IP nor a DNS name; signing failed.
    pub fn server(&self, cn: &str, sans: &[String]) -> Result<Issued, String> {
        self.issue(
            cn,
            sans,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// A client certificate with Common Name `cn`.
    ///
    /// # Errors
    /// Signing failed.
    pub fn client(&self, cn: &str) -> Result<Issued, String> {
        self.issue(cn, &[], vec![ExtendedKeyUsagePurpose::ClientAuth])
    }

    fn issue(
        &self,
        cn: &str,
        sans: &[String],
        eku: Vec<ExtendedKeyUsagePurpose>,
    ) -> Result<Issued, String> {
        let mut p = CertificateParams::new(sans.to_vec()).map_err(err)?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = eku;
        validity(&mut p);
        let key = KeyPair::generate().map_err(err)?;
        let cert = p.signed_by(&key, &self.issuer).map_err(err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Writes `text` to `path` (replacing it), mode 0600 when `secret`.
///
/// # Errors
/// The file could not be written; the message names it.
pub fn write_pem(path: &Path, text: &str, secret: bool) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let e = |e: std::io::Error| format!("{}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(e)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(e)?;
    f.write_all(text.as_bytes()).map_err(e)?;
    f.sync_all().map_err(e)
}

/// The subject alternative names of replica `id`'s certificate.
pub fn replica_sans(cfg: &ClusterConfig, id: u16) -> Vec<String> {
    let r = &cfg.replicas[id as usize];
    let mut ips: Vec<IpAddr> = [Some(r.client_addr), r.client_plain_addr, Some(r.http_addr)]
        .into_iter()
        .flatten()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
        .collect();
    ips.push(IpAddr::from([127, 0, 0, 1]));
    let mut sans: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
    sans.push("localhost".into());
    sans.sort();
    sans.dedup();
    sans
}

/// The files etcdctl needs to talk to a cluster from [`init_tls`].
#[derive(Debug, Clone)]
pub struct EtcdctlTls {
    pub cacert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl EtcdctlTls {
    /// etcdctl's flags: `--cacert=... --cert=... --key=...`.
    pub fn flags(&self) -> String {
        format!(
            "--cacert={} --cert={} --key={}",
            self.cacert.display(),
            self.cert.display(),
            self.key.display()
        )
    }
}

/// Writes a CA, a server certificate per replica and a client certificate
/// (CN [`CLIENT_CN`]) under `<config dir>/tls/`, and turns mutual TLS on
/// in the config at `config_path` (`[client_tls]` with
/// `client_cert_auth = true`). Returns etcdctl's files.
///
/// # Errors
/// The config does not load or validate, a file cannot be written, or
/// `[client_tls]` is already on (nothing is changed then).
pub fn init_tls(config_path: &Path) -> Result<EtcdctlTls, String> {
    let mut cfg = ClusterConfig::load(config_path).map_err(|e| e.to_string())?;
    if cfg.client_tls.is_on() {
        return Err(format!(
            "{}: [client_tls] is on already; remove it first to write new certificates",
            config_path.display()
        ));
    }
    let dir = cfg.base_dir.join(TLS_DIR);
    let ca = Ca::generate("bftd test CA")?;
    write_pem(&dir.join("ca.pem"), &ca.cert_pem, false)?;
    write_pem(&dir.join("ca-key.pem"), &ca.key_pem, true)?;
    for i in 0..cfg.n() as u16 {
        let s = ca.server(&format!("bftd-{i}"), &replica_sans(&cfg, i))?;
        write_pem(&dir.join(format!("replica-{i}.pem")), &s.cert_pem, false)?;
        write_pem(&dir.join(format!("replica-{i}-key.pem")), &s.key_pem, true)?;
    }
    let c = ca.client(CLIENT_CN)?;
    let client = EtcdctlTls {
        cacert: dir.join("ca.pem"),
        cert: dir.join(format!("client-{CLIENT_CN}.pem")),
        key: dir.join(format!("client-{CLIENT_CN}-key.pem")),
    };
    write_pem(&client.cert, &c.cert_pem, false)?;
    write_pem(&client.key, &c.key_pem, true)?;
    cfg.client_tls = ClientTls {
        cert_file: format!("{TLS_DIR}/replica-{{id}}.pem"),
        key_file: format!("{TLS_DIR}/replica-{{id}}-key.pem"),
        trusted_ca_file: format!("{TLS_DIR}/ca.pem"),
        client_cert_auth: true,
        http_tls: false,
    };
    cfg.validate().map_err(|e| e.to_string())?;
    for i in 0..cfg.n() as u16 {
        crate::serve::load_tls(&cfg, i)?;
    }
    std::fs::write(config_path, cfg.to_toml())
        .map_err(|e| format!("{}: {e}", config_path.display()))?;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{init_loopback, Durability};

    #[test]
    fn init_tls_writes_certificates_every_replica_loads_and_turns_mutual_tls_on() {
        let dir = std::env::temp_dir().join(format!("bftd-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = init_loopback(&dir, 4, 31000, Durability::Memory).unwrap();
        let client = init_tls(&path).unwrap();
        let c = ClusterConfig::load(&path).unwrap();
        assert!(c.client_tls.is_on() && c.client_tls.client_cert_auth);
        assert_eq!(c.client_scheme(), "https");
        for i in 0..4 {
            let (tls, http) = crate::serve::load_tls(&c, i).unwrap();
            assert!(tls.unwrap().files().requires_client_cert());
            assert!(http.is_none(), "the status port stays plaintext");
        }
        let pem = std::fs::read(&client.cert).unwrap();
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
        let der: rustls_pki_types::CertificateDer = der;
        assert_eq!(api::tls::common_name(&der).as_deref(), Some("root"));
        let mode = |p: &Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).unwrap().permissions().mode() & 0o777
        };
        assert_eq!(mode(&client.key), 0o600);
        assert_eq!(mode(&dir.join("tls/ca-key.pem")), 0o600);
        assert_eq!(
            replica_sans(&c, 2),
            vec!["127.0.0.1".to_string(), "localhost".to_string()]
        );
        let again = init_tls(&path).unwrap_err();
        assert!(again.contains("is on already"), "{again}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
