//! `ordo certs`: a development certificate authority and the node and client key pairs signed by
//! it, in the layout [`ordo_net::tls`] describes. Existing files are kept, so running it again
//! with more clients or nodes only adds what is missing: no file is ever overwritten (each is
//! created exclusively), a key that exists without its certificate gets a certificate for that
//! key, and key files are created readable by their owner only, never briefly wider.

use std::path::Path;

use ordo_net::tls::{CLUSTER_SERVER_NAME, node_name};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Why certificates could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read the existing CA in {path}: {detail} (remove the directory to start over)")]
    ExistingCa { path: String, detail: String },
    #[error(
        "{path} exists without its key {key}; refusing to replace it (restore the key, or remove \
         the certificate to issue a new pair)"
    )]
    KeyMissing { path: String, key: String },
    #[error("cannot read the existing key {path}: {detail}; refusing to replace it")]
    ExistingKey { path: String, detail: String },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("client name {0:?} must be 1-64 characters of a-z, 0-9 and '-'")]
    BadClientName(String),
    #[error("{0:?} is not a certificate of this directory (node-N or client-NAME, issued already)")]
    UnknownLeaf(String),
    #[error("cannot read {path}: {detail}")]
    Unreadable { path: String, detail: String },
}

/// The revocation list `ordo certs` keeps in a TLS directory, for `transport.crl_files`.
pub const CRL_FILE: &str = "crl.pem";
/// The serials the list revokes, one per line (`hex-serial unix-seconds stem`), from which
/// [`CRL_FILE`] is rebuilt.
pub const REVOKED_FILE: &str = "revoked.txt";
/// How long a revocation list is valid; `ordo certs` rewrites it at every change.
pub const CRL_VALIDITY_DAYS: i64 = 825;

/// Validity of generated certificates.
pub const CERTIFICATE_VALIDITY_DAYS: i64 = 825;

/// Creates what is missing in `dir`: the CA, `node-1..=nodes`, and `client-NAME` for each name.
/// Returns the paths written.
pub fn generate(dir: &Path, nodes: u64, clients: &[String]) -> Result<Vec<String>, CertsError> {
    for name in clients {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(CertsError::BadClientName(name.clone()));
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| write_error(dir, source))?;
    let mut written = Vec::new();
    let issuer = load_or_create_ca(dir, &mut written)?;
    for id in 1..=nodes {
        let stem = format!("node-{id}");
        if !leaf_exists(dir, &stem)? {
            write_leaf(dir, &stem, &node_params(id)?, &issuer, &mut written)?;
        }
    }
    for name in clients {
        let stem = format!("client-{name}");
        if !leaf_exists(dir, &stem)? {
            write_leaf(dir, &stem, &client_params(name)?, &issuer, &mut written)?;
        }
    }
    if !dir.join(CRL_FILE).exists() {
        write_crl(dir, &issuer, &mut written)?;
    }
    Ok(written)
}

/// Replaces `stem`'s key and certificate (`node-N` or `client-NAME`) with a new pair, and
/// revokes the old certificate in [`CRL_FILE`]. Nodes pick both up on SIGHUP.
pub fn renew(dir: &Path, stem: &str) -> Result<Vec<String>, CertsError> {
    let mut written = Vec::new();
    let issuer = load_or_create_ca(dir, &mut written)?;
    let params = if let Some(id) = stem.strip_prefix("node-").and_then(|id| id.parse().ok()) {
        node_params(id)?
    } else if let Some(name) = stem.strip_prefix("client-") {
        client_params(name)?
    } else {
        return Err(CertsError::UnknownLeaf(stem.to_string()));
    };
    if !leaf_exists(dir, stem)? {
        return Err(CertsError::UnknownLeaf(stem.to_string()));
    }
    let (cert_path, key_path) = leaf_paths(dir, stem);
    let old_serial = certificate_serial(&cert_path)?;
    let key = KeyPair::generate()?;
    let certificate = params.signed_by(&key, &issuer)?;
    // The key first: a certificate never sits beside a key it does not match for longer than
    // the two renames.
    replace_file(&key_path, key.serialize_pem().as_bytes(), &mut written)?;
    replace_file(&cert_path, certificate.pem().as_bytes(), &mut written)?;
    add_revoked(dir, &old_serial, stem)?;
    write_crl(dir, &issuer, &mut written)?;
    Ok(written)
}

/// Revokes `stem`'s current certificate in [`CRL_FILE`] (its files stay).
pub fn revoke(dir: &Path, stem: &str) -> Result<Vec<String>, CertsError> {
    let mut written = Vec::new();
    let issuer = load_or_create_ca(dir, &mut written)?;
    if !leaf_exists(dir, stem)? {
        return Err(CertsError::UnknownLeaf(stem.to_string()));
    }
    let serial = certificate_serial(&leaf_paths(dir, stem).0)?;
    add_revoked(dir, &serial, stem)?;
    write_crl(dir, &issuer, &mut written)?;
    Ok(written)
}

fn node_params(id: u64) -> Result<CertificateParams, CertsError> {
    let names = vec![
        node_name(id),
        CLUSTER_SERVER_NAME.into(),
        "localhost".into(),
    ];
    let mut params = leaf_params(&format!("node-{id}"), names)?;
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(params)
}

fn client_params(name: &str) -> Result<CertificateParams, CertsError> {
    let stem = format!("client-{name}");
    let mut params = leaf_params(&stem, vec![format!("{stem}.ordo")])?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

/// The serial number of the certificate in `path`, as hex.
fn certificate_serial(path: &Path) -> Result<String, CertsError> {
    let unreadable = |detail: String| CertsError::Unreadable {
        path: path.display().to_string(),
        detail,
    };
    let pem = std::fs::read(path).map_err(|error| unreadable(error.to_string()))?;
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(&pem).map_err(|error| unreadable(error.to_string()))?;
    let certificate = pem
        .parse_x509()
        .map_err(|error| unreadable(error.to_string()))?;
    let serial = certificate.tbs_certificate.raw_serial();
    Ok(serial.iter().map(|byte| format!("{byte:02x}")).collect())
}

fn add_revoked(dir: &Path, serial: &str, stem: &str) -> Result<(), CertsError> {
    use std::io::Write;
    let path = dir.join(REVOKED_FILE);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| {
            writeln!(file, "{serial} {now} {stem}")?;
            file.sync_all()
        })
        .map_err(|source| write_error(&path, source))
}

/// Rebuilds [`CRL_FILE`] from [`REVOKED_FILE`], signed by the CA.
fn write_crl(
    dir: &Path,
    issuer: &Issuer<'_, KeyPair>,
    written: &mut Vec<String>,
) -> Result<(), CertsError> {
    let revoked_path = dir.join(REVOKED_FILE);
    let text = match std::fs::read_to_string(&revoked_path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(write_error(&revoked_path, error)),
    };
    let mut revoked_certs = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let parsed = (|| {
            let serial = fields.next()?;
            let bytes = (0..serial.len())
                .step_by(2)
                .map(|at| u8::from_str_radix(serial.get(at..at + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            let when = fields.next()?.parse::<i64>().ok()?;
            let when = time::OffsetDateTime::from_unix_timestamp(when).ok()?;
            Some((bytes, when))
        })();
        let Some((serial, revocation_time)) = parsed else {
            return Err(CertsError::Unreadable {
                path: revoked_path.display().to_string(),
                detail: format!("bad line {line:?}"),
            });
        };
        revoked_certs.push(rcgen::RevokedCertParams {
            serial_number: serial.into(),
            revocation_time,
            reason_code: Some(rcgen::RevocationReason::Superseded),
            invalidity_date: None,
        });
    }
    let now = time::OffsetDateTime::now_utc();
    let params = rcgen::CertificateRevocationListParams {
        this_update: now - time::Duration::hours(1),
        next_update: now + time::Duration::days(CRL_VALIDITY_DAYS),
        crl_number: rcgen::SerialNumber::from(now.unix_timestamp() as u64),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(issuer)?;
    let path = dir.join(CRL_FILE);
    replace_file(&path, crl.pem()?.as_bytes(), written)
}

/// Replaces `path` with `bytes` atomically: [`write_file`], renamed over what was there.
fn replace_file(path: &Path, bytes: &[u8], written: &mut Vec<String>) -> Result<(), CertsError> {
    put_file(path, bytes, written, Placing::Replace)
}

/// Issues one leaf with explicit validity, for tests that need an expired certificate or a
/// node certificate naming another id.
pub fn issue_leaf(
    dir: &Path,
    stem: &str,
    names: Vec<String>,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> Result<(), CertsError> {
    let issuer = load_or_create_ca(dir, &mut Vec::new())?;
    let mut params = leaf_params(stem, names)?;
    params.not_before = not_before;
    params.not_after = not_after;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    write_leaf(dir, stem, &params, &issuer, &mut Vec::new())
}

/// Where `stem`'s certificate and key live.
fn leaf_paths(dir: &Path, stem: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    )
}

/// Whether `stem`'s certificate exists (then its key must too).
fn leaf_exists(dir: &Path, stem: &str) -> Result<bool, CertsError> {
    let (cert_path, key_path) = leaf_paths(dir, stem);
    if !cert_path.exists() {
        return Ok(false);
    }
    if !key_path.exists() {
        return Err(CertsError::KeyMissing {
            path: cert_path.display().to_string(),
            key: key_path.display().to_string(),
        });
    }
    Ok(true)
}

fn load_or_create_ca(
    dir: &Path,
    written: &mut Vec<String>,
) -> Result<Issuer<'static, KeyPair>, CertsError> {
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    if !cert_path.exists() && key_path.exists() {
        // A CA key without its certificate: issuing a new CA would leave every certificate it
        // signed orphaned, and replacing the key would lose it.
        return Err(CertsError::ExistingCa {
            path: cert_path.display().to_string(),
            detail: format!("it is missing, but {} exists", key_path.display()),
        });
    }
    if cert_path.exists() {
        let existing = |detail: String| CertsError::ExistingCa {
            path: cert_path.display().to_string(),
            detail,
        };
        let key_pem = std::fs::read_to_string(&key_path).map_err(|e| existing(e.to_string()))?;
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(|e| existing(e.to_string()))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| existing(e.to_string()))?;
        return Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| existing(e.to_string()));
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    // A distinct name per CA: a certificate from another cluster's CA is then reported as an
    // unknown issuer, not as a bad signature.
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    name.push(
        DnType::CommonName,
        format!("Ordo cluster CA {:x}", nanos as u64),
    );
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params);
    let certificate = params.self_signed(&key)?;
    write_file(&cert_path, certificate.pem().as_bytes(), written)?;
    write_file(&key_path, key.serialize_pem().as_bytes(), written)?;
    Ok(Issuer::new(params, key))
}

fn leaf_params(common_name: &str, names: Vec<String>) -> Result<CertificateParams, CertsError> {
    let mut params = CertificateParams::new(names)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params);
    Ok(params)
}

fn set_validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(CERTIFICATE_VALIDITY_DAYS);
}

fn write_leaf(
    dir: &Path,
    stem: &str,
    params: &CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
    written: &mut Vec<String>,
) -> Result<(), CertsError> {
    let (cert_path, key_path) = leaf_paths(dir, stem);
    let key = if key_path.exists() {
        // Keep the key: only its certificate is missing.
        let existing = |detail: String| CertsError::ExistingKey {
            path: key_path.display().to_string(),
            detail,
        };
        let pem = std::fs::read_to_string(&key_path).map_err(|e| existing(e.to_string()))?;
        KeyPair::from_pem(&pem).map_err(|e| existing(e.to_string()))?
    } else {
        let key = KeyPair::generate()?;
        write_file(&key_path, key.serialize_pem().as_bytes(), written)?;
        key
    };
    let certificate = params.signed_by(&key, issuer)?;
    write_file(&cert_path, certificate.pem().as_bytes(), written)
}

/// Creates `path` with `bytes`; fails if it exists. A `.key` file is created with mode 0600.
/// The bytes go to `path.partial` first and are linked into place once synced, so a failed or
/// interrupted write never leaves a truncated file under the real name (which a later run would
/// keep).
fn write_file(path: &Path, bytes: &[u8], written: &mut Vec<String>) -> Result<(), CertsError> {
    put_file(path, bytes, written, Placing::Create)
}

/// How [`put_file`] moves the synced `.partial` file into place.
#[derive(Clone, Copy)]
enum Placing {
    /// A hard link: fails if `path` exists.
    Create,
    /// A rename over whatever `path` holds.
    Replace,
}

fn put_file(
    path: &Path,
    bytes: &[u8],
    written: &mut Vec<String>,
    placing: Placing,
) -> Result<(), CertsError> {
    use std::io::Write;
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    // A leftover from an interrupted run is ours to replace: it was never moved into place.
    let _ = std::fs::remove_file(&partial);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if path.extension().is_some_and(|ext| ext == "key") {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = options
        .open(&partial)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| match placing {
            Placing::Create => std::fs::hard_link(&partial, path),
            Placing::Replace => std::fs::rename(&partial, path),
        });
    let _ = std::fs::remove_file(&partial);
    result.map_err(|source| write_error(path, source))?;
    written.push(path.display().to_string());
    Ok(())
}

fn write_error(path: &Path, source: std::io::Error) -> CertsError {
    CertsError::Write {
        path: path.display().to_string(),
        source,
    }
}
