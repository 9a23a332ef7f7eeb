//! `tke-unitd init`: creates what one server hosts.
//!
//! ```text
//! DIR/unitd.toml           the configuration (written last: its presence marks a complete init)
//! DIR/ca.pem               the fleet CA certificate (clients pin it)
//! DIR/ca.key.pem           the fleet CA key, 0600 — only when init made a new CA
//! DIR/instance-id          the service instance id(s), one a line, for scripts
//! DIR/api-key              the API key of the instance, 0600 (api-key-1, api-key-2, ... for several)
//! DIR/tls/server.pem       the TLS certificate, issued by the fleet CA
//! DIR/tls/server.key.pem   its key, 0600
//! DIR/units/<uuid>/        one directory per crypto unit (see tke-unit)
//! ```
//!
//! Units of one service instance may live on several servers. The second and later servers
//! are made with `--ca-dir` (the first server's directory, or any directory with `ca.pem`
//! and `ca.key.pem`), `--instance-id` (the instance to add units to) and `--api-key-file`
//! (an existing key file: every server of the instance then accepts the same key). Everything
//! is built in a temporary directory beside DIR and renamed into place, so a failure leaves
//! nothing half-made.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use p256::{
    ecdsa::{signature::Signer as _, DerSignature, Signature, SigningKey},
    pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding},
    PublicKey, SecretKey,
};
use tke_fs::atomic;
use tke_proto::{CaCertificate, DeviceCertificate, UnitId, UnitType};
use tke_unit::Unit;

use crate::{
    apikey::ApiKey,
    config::{self, ApiKeyConfig, ConfigFile, InstanceConfig, Limits, UnitConfig, CONFIG_FILE},
    error::io_err,
    tlscert, ServerError,
};

/// What to create.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// The server's directory (absent or empty).
    pub dir: PathBuf,
    /// Service instances (1 to 16). Defaults to the number of `instance_ids`, else 1.
    pub instances: Option<u32>,
    /// Operational units per instance (0 to 6).
    pub operational: u32,
    /// Recovery units per instance (0 to 2).
    pub recovery: u32,
    /// Failover units per instance (0 to 3).
    pub failover: u32,
    /// The zone named in the units' locations.
    pub zone: String,
    /// An existing fleet CA to issue from (`ca.pem` + `ca.key.pem`); else a new CA.
    pub ca_dir: Option<PathBuf>,
    /// Where to listen.
    pub listen: SocketAddr,
    /// Existing instance ids to add units to (the first instances); new ids for the rest.
    pub instance_ids: Vec<String>,
    /// The API key file for the (single) instance: reused if it exists, else created.
    pub api_key_file: Option<PathBuf>,
    /// Extra names (DNS or IP) for the TLS certificate.
    pub tls_names: Vec<String>,
}

/// One API key file made or reused.
#[derive(Clone, Debug)]
pub struct KeyFileReport {
    /// The instance it opens.
    pub instance: String,
    /// The file.
    pub path: PathBuf,
    /// Whether init made it (else it was reused).
    pub created: bool,
}

/// One unit made.
#[derive(Clone, Debug)]
pub struct UnitReport {
    /// Its instance.
    pub instance: String,
    /// Its id.
    pub id: UnitId,
    /// Its type.
    pub unit_type: UnitType,
    /// Its location.
    pub location: String,
}

/// What init made: the paths a client needs.
#[derive(Clone, Debug)]
pub struct InitReport {
    /// `DIR/unitd.toml`.
    pub config: PathBuf,
    /// The CA file clients pin.
    pub ca: PathBuf,
    /// Whether a new fleet CA was made.
    pub new_ca: bool,
    /// `DIR/instance-id`.
    pub instance_id_file: PathBuf,
    /// The API key files.
    pub api_keys: Vec<KeyFileReport>,
    /// The endpoint URL.
    pub endpoint: String,
    /// The units.
    pub units: Vec<UnitReport>,
}

fn layout(what: &'static str) -> ServerError {
    ServerError::Layout { what }
}

impl InitOptions {
    fn instance_count(&self) -> Result<u32, ServerError> {
        let n = self.instances.unwrap_or(
            u32::try_from(self.instance_ids.len())
                .unwrap_or(u32::MAX)
                .max(1),
        );
        if !(1..=16).contains(&n) {
            return Err(layout("the number of instances must be between 1 and 16"));
        }
        if self.instance_ids.len() > n as usize {
            return Err(layout(
                "more --instance-id values than instances: give --instances to match",
            ));
        }
        if self.operational > 6 {
            return Err(layout(
                "the number of operational units must be between 0 and 6",
            ));
        }
        if self.recovery > 2 {
            return Err(layout(
                "the number of recovery units must be between 0 and 2",
            ));
        }
        if self.failover > 3 {
            return Err(layout(
                "the number of failover units must be between 0 and 3",
            ));
        }
        if self.operational + self.recovery + self.failover == 0 {
            return Err(layout("a server must host at least one crypto unit"));
        }
        if self.api_key_file.is_some() && n != 1 {
            return Err(layout(
                "--api-key-file applies to a server of one instance; with several, init writes one key file per instance",
            ));
        }
        let zone_ok = !self.zone.is_empty()
            && self.zone.len() <= 32
            && self
                .zone
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !zone_ok {
            return Err(layout(
                "the zone must be 1 to 32 letters, digits, '-' or '_'",
            ));
        }
        for id in &self.instance_ids {
            if !config::is_uuid(id) {
                return Err(ServerError::InstanceId { value: id.clone() });
            }
        }
        Ok(n)
    }
}

/// The names a server's TLS certificate carries: the listen address (unless it is a
/// wildcard), `127.0.0.1`, `::1`, `localhost`, then the extra names.
pub fn tls_names(listen: &SocketAddr, extra: &[String]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    let mut push = |s: String| {
        if !v.contains(&s) {
            v.push(s);
        }
    };
    if !listen.ip().is_unspecified() {
        push(listen.ip().to_string());
    }
    for n in extra {
        push(n.clone());
    }
    push("127.0.0.1".into());
    push("::1".into());
    push("localhost".into());
    v
}

/// The URL clients use for `listen`.
pub fn endpoint(listen: &SocketAddr) -> String {
    let host = if listen.ip().is_unspecified() {
        if listen.is_ipv4() {
            "127.0.0.1".to_owned()
        } else {
            "[::1]".to_owned()
        }
    } else if listen.is_ipv6() {
        format!("[{}]", listen.ip())
    } else {
        listen.ip().to_string()
    };
    format!("https://{host}:{}", listen.port())
}

fn ca_signer(key: &SigningKey) -> Box<tke_proto::cert::SignFn<'static>> {
    let key = key.clone();
    Box::new(
        move |m: &[u8]| -> Result<DerSignature, tke_proto::BoxError> {
            let s: Signature = key.try_sign(m)?;
            Ok(s.to_der())
        },
    )
}

/// Loads an existing fleet CA from `dir` (`ca.pem` and `ca.key.pem`), checking that the
/// key belongs to the certificate.
///
/// # Errors
/// [`ServerError::Io`], [`ServerError::Certificate`], [`ServerError::BadFile`].
pub fn load_ca(dir: &Path) -> Result<(CaCertificate, SigningKey), ServerError> {
    let cert_path = dir.join("ca.pem");
    let key_path = dir.join("ca.key.pem");
    let pem = fs::read_to_string(&cert_path).map_err(io_err("read", &cert_path))?;
    let ca = CaCertificate::from_pem(&pem).map_err(|source| ServerError::Certificate {
        path: cert_path.clone(),
        source,
    })?;
    let key_pem =
        zeroize::Zeroizing::new(fs::read_to_string(&key_path).map_err(io_err("read", &key_path))?);
    let key = SigningKey::from_pkcs8_pem(&key_pem).map_err(|_| ServerError::BadFile {
        path: key_path.clone(),
        what: "not a PKCS#8 P-256 private key",
    })?;
    if *key.verifying_key() != ca.verifying_key() {
        return Err(ServerError::BadFile {
            path: key_path,
            what: "this key does not belong to the CA certificate beside it",
        });
    }
    Ok((ca, key))
}

fn write_key_pem(path: &Path, secret: &SecretKey) -> Result<(), ServerError> {
    let pem = secret
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|_| ServerError::BadFile {
            path: path.to_path_buf(),
            what: "cannot encode the private key",
        })?;
    atomic::create_private(path, pem.as_bytes()).map_err(io_err("write", path))
}

fn pem_cert(der_bytes: &[u8]) -> String {
    // A CERTIFICATE label and base64 lines: `der` does the encoding.
    der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, der_bytes).unwrap_or_default()
}

fn check_target(dir: &Path) -> Result<(), ServerError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ServerError::DirectoryNotEmpty {
                    path: dir.to_path_buf(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            Err(ServerError::DirectoryNotEmpty {
                path: dir.to_path_buf(),
            })
        }
        Err(e) => Err(io_err("read", dir)(e)),
    }
}

/// Runs `init`.
///
/// # Errors
/// [`ServerError`] naming what failed; nothing is left behind in `dir` then, and an API
/// key file that init had created is removed.
pub fn init(opts: &InitOptions) -> Result<InitReport, ServerError> {
    let n = opts.instance_count()?;
    let dir = std::path::absolute(&opts.dir).unwrap_or_else(|_| opts.dir.clone());
    check_target(&dir)?;
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("/"))
        .to_path_buf();
    atomic::create_private_dir(&parent).map_err(io_err("create", &parent))?;

    // The API key of a single instance may be shared with other servers.
    let shared_key = match &opts.api_key_file {
        Some(p) => {
            let p = std::path::absolute(p).unwrap_or_else(|_| p.clone());
            if ApiKey::file_exists(&p)? {
                Some((ApiKey::read_file(&p)?, p, false))
            } else {
                let k = ApiKey::generate();
                k.write_new_file(&p)?;
                Some((k, p, true))
            }
        }
        None => None,
    };
    let tmp = parent.join(format!(".unitd-init-{}", UnitId::random().to_hex()));
    let result = build(opts, n, &tmp, &dir, shared_key.as_ref()).and_then(|report| {
        if dir.exists() {
            fs::remove_dir(&dir).map_err(io_err("replace", &dir))?;
        }
        fs::rename(&tmp, &dir).map_err(io_err("create", &dir))?;
        Ok(report)
    });
    match result {
        Ok(r) => Ok(r),
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            if let Some((_, p, true)) = &shared_key {
                let _ = fs::remove_file(p);
            }
            Err(e)
        }
    }
}

/// Builds everything in `tmp`; paths in the report are those under `dir`.
fn build(
    opts: &InitOptions,
    n: u32,
    tmp: &Path,
    dir: &Path,
    shared_key: Option<&(ApiKey, PathBuf, bool)>,
) -> Result<InitReport, ServerError> {
    atomic::create_private_dir(tmp).map_err(io_err("create", tmp))?;
    let (ca, ca_key, new_ca) = match &opts.ca_dir {
        Some(d) => {
            let (ca, key) = load_ca(d)?;
            (ca, key, false)
        }
        None => {
            let secret = SecretKey::random(&mut rand_core::OsRng);
            let key = SigningKey::from(&secret);
            let name = format!("unitd-{}", &UnitId::random().to_hex()[..8]);
            let ca = CaCertificate::build(&name, &secret.public_key(), ca_signer(&key)).map_err(
                |source| ServerError::Certificate {
                    path: dir.join("ca.pem"),
                    source,
                },
            )?;
            write_key_pem(&tmp.join("ca.key.pem"), &secret)?;
            (ca, key, true)
        }
    };
    let ca_pem = ca.to_pem().map_err(|source| ServerError::Certificate {
        path: dir.join("ca.pem"),
        source,
    })?;
    atomic::write_private(&tmp.join("ca.pem"), ca_pem.as_bytes())
        .map_err(io_err("write", &tmp.join("ca.pem")))?;

    // TLS certificate.
    let tls_dir = tmp.join("tls");
    atomic::create_private_dir(&tls_dir).map_err(io_err("create", &tls_dir))?;
    let tls_secret = SecretKey::random(&mut rand_core::OsRng);
    let names = tls_names(&opts.listen, &opts.tls_names);
    let tls_der =
        tlscert::issue(&ca, &ca_key, &tls_secret.public_key(), &names).map_err(|e| match e {
            tlscert::TlsCertError::BadName { .. } | tlscert::TlsCertError::NoName => {
                ServerError::Layout {
                    what: "a --tls-name is neither an IP address nor a DNS name",
                }
            }
            _ => ServerError::BadFile {
                path: dir.join("tls/server.pem"),
                what: "cannot encode the TLS certificate",
            },
        })?;
    write_key_pem(&tls_dir.join("server.key.pem"), &tls_secret)?;
    atomic::write_private(&tls_dir.join("server.pem"), pem_cert(&tls_der).as_bytes())
        .map_err(io_err("write", &tls_dir.join("server.pem")))?;

    // Units.
    let mut instances = Vec::new();
    let mut reports = Vec::new();
    let mut domain = 0u32;
    let host = format!("unitd-{}", opts.listen.port());
    for i in 0..n as usize {
        let id = opts
            .instance_ids
            .get(i)
            .cloned()
            .unwrap_or_else(|| UnitId::random().uuid());
        let plan = std::iter::repeat_n(UnitType::Operational, opts.operational as usize)
            .chain(std::iter::repeat_n(
                UnitType::Recovery,
                opts.recovery as usize,
            ))
            .chain(std::iter::repeat_n(
                UnitType::Failover,
                opts.failover as usize,
            ));
        let mut units = Vec::new();
        for unit_type in plan {
            domain += 1;
            let unit_id = UnitId::random();
            let unit_dir = tmp.join("units").join(unit_id.uuid());
            let mut issue =
                |key: &PublicKey| DeviceCertificate::issue(&ca, &unit_id, key, ca_signer(&ca_key));
            Unit::create_soft(&unit_dir, unit_id, unit_type, &ca, &mut issue).map_err(
                |source| ServerError::Unit {
                    unit: unit_id,
                    path: dir.join("units").join(unit_id.uuid()),
                    source: Box::new(source),
                },
            )?;
            let location = format!("[{}].[{host}].[01].[{domain:02}]", opts.zone);
            units.push(UnitConfig {
                id: unit_id.uuid(),
                unit_type: config::type_name(unit_type).to_owned(),
                location: location.clone(),
                backend: "soft".to_owned(),
            });
            reports.push(UnitReport {
                instance: id.clone(),
                id: unit_id,
                unit_type,
                location,
            });
        }
        instances.push(InstanceConfig { id, units });
    }

    // API keys: one per instance.
    let mut api_keys = Vec::new();
    let mut key_reports = Vec::new();
    for (i, inst) in instances.iter().enumerate() {
        let (hash, path, created) = match shared_key {
            Some((k, p, created)) => (k.hash(), p.clone(), *created),
            None => {
                let name = if n == 1 {
                    "api-key".to_owned()
                } else {
                    format!("api-key-{}", i + 1)
                };
                let k = ApiKey::generate();
                k.write_new_file(&tmp.join(&name))?;
                (k.hash(), dir.join(name), true)
            }
        };
        api_keys.push(ApiKeyConfig {
            instance: inst.id.clone(),
            sha256: hash.to_hex(),
            label: if created {
                format!("made by tke-unitd init (key id {})", hash.id())
            } else {
                format!("shared key from {} (key id {})", path.display(), hash.id())
            },
        });
        key_reports.push(KeyFileReport {
            instance: inst.id.clone(),
            path,
            created,
        });
    }

    let ids: String = instances.iter().map(|i| format!("{}\n", i.id)).collect();
    atomic::write_private(&tmp.join("instance-id"), ids.as_bytes())
        .map_err(io_err("write", &tmp.join("instance-id")))?;

    let file = ConfigFile {
        version: 1,
        listen: opts.listen.to_string(),
        ca: "ca.pem".into(),
        tls_certificate: "tls/server.pem".into(),
        tls_key: "tls/server.key.pem".into(),
        units_dir: "units".into(),
        limits: Limits::default(),
        instances,
        api_keys,
    };
    let text = toml::to_string_pretty(&file).map_err(|_| ServerError::BadFile {
        path: dir.join(CONFIG_FILE),
        what: "cannot encode the configuration",
    })?;
    let text = format!(
        "# tke-unitd configuration, made by `tke-unitd init`. Paths are relative to this file.\n\
         # API keys are stored as SHA-256 hashes; the keys themselves are in the key files.\n{text}"
    );
    atomic::write_private(&tmp.join(CONFIG_FILE), text.as_bytes())
        .map_err(io_err("write", &tmp.join(CONFIG_FILE)))?;

    Ok(InitReport {
        config: dir.join(CONFIG_FILE),
        ca: dir.join("ca.pem"),
        new_ca,
        instance_id_file: dir.join("instance-id"),
        api_keys: key_reports,
        endpoint: endpoint(&opts.listen),
        units: reports,
    })
}
