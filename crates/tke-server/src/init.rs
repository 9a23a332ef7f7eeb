//! `tke-unitd init` and `tke-unitd join`: create what one server hosts.
//!
//! ```text
//! DIR/unitd.toml           the configuration (written last: its presence marks a complete server)
//! DIR/ca.pem               the fleet CA certificate (clients pin it)
//! DIR/ca.key.pem           the fleet CA key, encrypted, 0600 — only when init made a new CA;
//!                          `serve` never reads it: keep it offline
//! DIR/instance-id          the service instance id(s), one a line, for scripts
//! DIR/api-key              the API key of the instance, 0600 (api-key-1, api-key-2, ... for several)
//! DIR/tls/server.pem       the TLS certificate, issued by the fleet CA
//! DIR/tls/server.key.pem   its key, 0600
//! DIR/units/<uuid>/        one directory per crypto unit (see tke-unit)
//! ```
//!
//! Units of one service instance may live on several servers. `init` makes the first one
//! (and the fleet CA, whose key it encrypts with a passphrase). The others join without
//! the CA key ([`join_request`], then [`join_install`]): the joining server makes its units'
//! device keys and its TLS key and writes a join request (see [`crate::ca`]), the CA holder
//! signs it ([`crate::ca::sign_request`]), and the joining server installs the
//! certificates. Until then DIR holds `join/` (the request, the device keys, the
//! configuration to be) and no `unitd.toml`. `init --ca-dir` issues from an existing CA
//! directly, where its key is at hand. Every server of an instance gets `--instance-id`
//! (the instance to add units to) and `--api-key-file` (an existing key file: every server
//! of the instance then accepts the same key). Everything is built in a temporary
//! directory beside DIR and renamed into place, so a failure leaves nothing half-made.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use p256::{
    ecdsa::SigningKey,
    pkcs8::{EncodePrivateKey, LineEnding},
    PublicKey, SecretKey,
};
use tke_fs::atomic;
use tke_pkcs8::Password;
use tke_proto::{CaCertificate, DeviceCertificate, InstanceId, UnitDescription, UnitId, UnitType};
use tke_unit::{Backend as _, SoftBackend, Unit, UnitError, SECRETS_FILE};
use zeroize::Zeroizing;

use crate::{
    apikey::ApiKey,
    ca::{self, JoinRequest, UnitRequest, CA_FILE},
    config::{self, ApiKeyConfig, ConfigFile, InstanceConfig, Limits, UnitConfig, CONFIG_FILE},
    error::io_err,
    tlscert, Config, ServerError,
};

/// The directory of a pending join, inside the server directory.
pub const JOIN_DIR: &str = "join";
/// The join request kept in [`JOIN_DIR`] (the copy the joining server checks against).
const JOIN_REQUEST: &str = "request.pem";

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
    /// `init`: an existing fleet CA to issue from (`ca.pem` + the encrypted `ca.key.pem`);
    /// else a new CA. Ignored by [`join_request`].
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
/// wildcard or a loopback address), then the `--tls-name` names. Loopback names
/// (`127.0.0.1`, `::1`, `localhost`) only when asked for: every server of a fleet answers
/// to them, so a certificate naming them lets any one server pass for another to a client
/// that connects through a loopback address (a tunnel, a proxy).
pub fn tls_names(listen: &SocketAddr, extra: &[String]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    let mut push = |s: String| {
        if !v.contains(&s) {
            v.push(s);
        }
    };
    if !listen.ip().is_unspecified() && !listen.ip().is_loopback() {
        push(listen.ip().to_string());
    }
    for n in extra {
        push(n.clone());
    }
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

fn write_key_pem(path: &Path, secret: &SecretKey) -> Result<(), ServerError> {
    let pem = secret
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|_| ServerError::BadFile {
            path: path.to_path_buf(),
            what: "cannot encode the private key",
        })?;
    atomic::create_private(path, pem.as_bytes()).map_err(io_err("write", path))
}

/// Checks that `dir` can become a new server's directory (absent or empty): callers check
/// it before asking for the CA passphrase, which `init` checks again.
///
/// # Errors
/// [`ServerError::DirectoryNotEmpty`], [`ServerError::Io`].
pub fn check_target(dir: &Path) -> Result<(), ServerError> {
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

/// Where the fleet CA comes from, and so whether certificates are issued now.
#[derive(Clone, Copy)]
enum CaSource<'a> {
    /// A new CA, its key encrypted with this passphrase.
    New(&'a Password),
    /// The CA of a directory, opened with this passphrase.
    Dir(&'a Path, &'a Password),
    /// Only the CA certificate (this file): the keys go into a join request.
    Request(&'a Path),
}

/// Who certifies the keys `build` makes.
enum Issuer {
    /// The fleet CA, with its key: now.
    Ca(SigningKey),
    /// The CA holder, later: the keys go into this request.
    Request(JoinRequest),
}

/// Runs `init`: a new fleet CA whose key `ca_passphrase` encrypts, or with
/// [`InitOptions::ca_dir`] the CA of that directory, which `ca_passphrase` opens.
///
/// # Errors
/// [`ServerError`] naming what failed ([`ServerError::CaKey`] for a wrong passphrase);
/// nothing is left behind in `dir` then, and an API key file that init had created is
/// removed.
pub fn init(opts: &InitOptions, ca_passphrase: &Password) -> Result<InitReport, ServerError> {
    let source = match &opts.ca_dir {
        Some(d) => CaSource::Dir(d, ca_passphrase),
        None => CaSource::New(ca_passphrase),
    };
    create_server(opts, source, None).map(|(report, _)| report)
}

/// What [`join_request`] made.
#[derive(Clone, Debug)]
pub struct JoinReport {
    /// The server as it will be once joined (its `config` does not exist yet).
    pub server: InitReport,
    /// The request file written.
    pub request: PathBuf,
    /// The request file's SHA-256 (hex), to compare with what the CA holder signs.
    pub request_sha256: String,
}

/// `tke-unitd join --request`: makes the server's directory as [`init`] does, but without
/// the CA key: the units' device keys and the TLS key wait in `DIR/join/`, and the join
/// request for them is written to `request` (created; never overwritten). `ca` is the
/// fleet CA certificate (`ca.pem`) the certificates must come from.
///
/// # Errors
/// As [`init`]; nothing is left behind then.
pub fn join_request(
    opts: &InitOptions,
    ca: &Path,
    request: &Path,
) -> Result<JoinReport, ServerError> {
    if fs::symlink_metadata(request).is_ok() {
        return Err(io_err("write", request)(
            std::io::ErrorKind::AlreadyExists.into(),
        ));
    }
    let (server, _) = create_server(opts, CaSource::Request(ca), Some(request))?;
    let request_sha256 = ca::file_sha256(request)?;
    Ok(JoinReport {
        server,
        request: request.to_path_buf(),
        request_sha256,
    })
}

/// Creates the server directory; with a request path, writes the join request there
/// before `dir` is renamed into place (and removes it if that fails).
fn create_server(
    opts: &InitOptions,
    source: CaSource<'_>,
    request: Option<&Path>,
) -> Result<(InitReport, Option<JoinRequest>), ServerError> {
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
    let mut request_written = false;
    let result = build(opts, n, source, &tmp, &dir, shared_key.as_ref()).and_then(|built| {
        if let (Some(path), Some(req)) = (request, &built.1) {
            let pem = req.to_pem().map_err(|_| ServerError::BadFile {
                path: path.to_path_buf(),
                what: "cannot encode the join request",
            })?;
            let kept = tmp.join(JOIN_DIR).join(JOIN_REQUEST);
            atomic::write_private(&kept, pem.as_bytes()).map_err(io_err("write", &kept))?;
            atomic::create_private(path, pem.as_bytes()).map_err(io_err("write", path))?;
            request_written = true;
        }
        if dir.exists() {
            fs::remove_dir(&dir).map_err(io_err("replace", &dir))?;
        }
        fs::rename(&tmp, &dir).map_err(io_err("create", &dir))?;
        Ok(built)
    });
    match result {
        Ok(r) => Ok(r),
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            if let (Some(path), true) = (request, request_written) {
                let _ = fs::remove_file(path);
            }
            if let Some((_, p, true)) = &shared_key {
                let _ = fs::remove_file(p);
            }
            Err(e)
        }
    }
}

/// Builds everything in `tmp`; paths in the report are those under `dir`. Without the CA
/// key ([`CaSource::Request`]) the keys go into the returned join request instead of
/// certificates, and the configuration into `tmp/join/`.
fn build(
    opts: &InitOptions,
    n: u32,
    source: CaSource<'_>,
    tmp: &Path,
    dir: &Path,
    shared_key: Option<&(ApiKey, PathBuf, bool)>,
) -> Result<(InitReport, Option<JoinRequest>), ServerError> {
    atomic::create_private_dir(tmp).map_err(io_err("create", tmp))?;
    let (ca, ca_key, new_ca) = match source {
        CaSource::Dir(d, passphrase) => {
            let (ca, key) = ca::load(d, passphrase)?;
            (ca, Some(key), false)
        }
        CaSource::New(passphrase) => {
            let name = format!("unitd-{}", &UnitId::random().to_hex()[..8]);
            let (ca, key) = ca::create(tmp, &name, passphrase)?;
            (ca, Some(key), true)
        }
        CaSource::Request(file) => (ca::read_certificate(file)?, None, false),
    };
    let ca_pem = ca.to_pem().map_err(|source| ServerError::Certificate {
        path: dir.join(CA_FILE),
        source,
    })?;
    atomic::write_private(&tmp.join(CA_FILE), ca_pem.as_bytes())
        .map_err(io_err("write", &tmp.join(CA_FILE)))?;

    // TLS certificate.
    let tls_dir = tmp.join("tls");
    atomic::create_private_dir(&tls_dir).map_err(io_err("create", &tls_dir))?;
    let tls_secret = SecretKey::random(&mut rand_core::OsRng);
    let names = tls_names(&opts.listen, &opts.tls_names);
    let bad_name = |e| {
        match e {
        tlscert::TlsCertError::BadName { .. } => ServerError::Layout {
            what: "a --tls-name is neither an IP address nor a DNS name",
        },
        tlscert::TlsCertError::NoName => ServerError::Layout {
            what: "the TLS certificate would name no host: the listen address is a wildcard or loopback address and no --tls-name is given",
        },
        _ => ServerError::BadFile {
            path: dir.join("tls/server.pem"),
            what: "cannot encode the TLS certificate",
        },
    }
    };
    let mut issuer = match ca_key {
        Some(key) => {
            let der =
                tlscert::issue(&ca, &key, &tls_secret.public_key(), &names).map_err(bad_name)?;
            let path = tls_dir.join("server.pem");
            atomic::write_private(&path, ca::pem_cert(&der).as_bytes())
                .map_err(io_err("write", &path))?;
            Issuer::Ca(key)
        }
        None => {
            tlscert::check_names(&names).map_err(bad_name)?;
            Issuer::Request(JoinRequest {
                tls_key: tls_secret.public_key(),
                tls_names: names,
                units: Vec::new(),
            })
        }
    };
    write_key_pem(&tls_dir.join("server.key.pem"), &tls_secret)?;

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
        let instance_id = InstanceId::from_uuid(&id)
            .map_err(|_| ServerError::InstanceId { value: id.clone() })?;
        let mut units = Vec::new();
        for unit_type in plan {
            domain += 1;
            let unit_id = UnitId::random();
            let unit_err = |source| ServerError::Unit {
                unit: unit_id,
                path: dir.join("units").join(unit_id.uuid()),
                source: Box::new(source),
            };
            match &mut issuer {
                Issuer::Ca(ca_key) => {
                    let unit_dir = tmp.join("units").join(unit_id.uuid());
                    let description = UnitDescription {
                        unit_type,
                        instance_id,
                    };
                    let mut issue = |key: &PublicKey| {
                        DeviceCertificate::issue(
                            &ca,
                            &unit_id,
                            &description,
                            key,
                            ca::signer(ca_key),
                        )
                    };
                    Unit::create_soft(&unit_dir, unit_id, unit_type, &ca, &mut issue)
                        .map_err(unit_err)?;
                }
                Issuer::Request(req) => {
                    // The device key now; the unit once its certificate comes back.
                    let keys_dir = tmp.join(JOIN_DIR).join("units").join(unit_id.uuid());
                    atomic::create_private_dir(&keys_dir).map_err(io_err("create", &keys_dir))?;
                    let backend = SoftBackend::create(&keys_dir, unit_id).map_err(|source| {
                        unit_err(UnitError::Backend {
                            unit: unit_id,
                            dir: keys_dir.clone(),
                            source,
                        })
                    })?;
                    req.units.push(UnitRequest {
                        instance: id.clone(),
                        id: unit_id,
                        unit_type,
                        device_key: backend.device_public_key(),
                    });
                }
            }
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
        latency_ms: None,
        state_store: None,
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
    // A joining server's configuration waits in join/: without units it cannot be served.
    let (config_path, request) = match issuer {
        Issuer::Request(req) => (tmp.join(JOIN_DIR).join(CONFIG_FILE), Some(req)),
        Issuer::Ca(_) => (tmp.join(CONFIG_FILE), None),
    };
    atomic::write_private(&config_path, text.as_bytes()).map_err(io_err("write", &config_path))?;

    Ok((
        InitReport {
            config: dir.join(CONFIG_FILE),
            ca: dir.join(CA_FILE),
            new_ca,
            instance_id_file: dir.join("instance-id"),
            api_keys: key_reports,
            endpoint: endpoint(&opts.listen),
            units: reports,
        },
        request,
    ))
}

/// `tke-unitd join --certificates`: completes a server made by [`join_request`] with the
/// certificates the CA holder issued for its request: creates the units, installs the TLS
/// certificate, and writes `DIR/unitd.toml`.
///
/// # Errors
/// [`ServerError::JoinState`] when `dir` has no pending join; [`ServerError::BadFile`]
/// when `certificates` is not what the request asked for; [`ServerError::Unit`] when a
/// device certificate is refused (not the fleet CA's, another unit or key). Nothing is
/// changed then: the join can be completed with the right file.
pub fn join_install(dir: &Path, certificates: &Path) -> Result<InitReport, ServerError> {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let join = dir.join(JOIN_DIR);
    let state = |what| ServerError::JoinState {
        dir: dir.clone(),
        what,
    };
    if dir.join(CONFIG_FILE).exists() {
        return Err(state("this server is complete already (it has unitd.toml)"));
    }
    if !join.join(JOIN_REQUEST).is_file() {
        return Err(state("no join is pending here (no join/request.pem)"));
    }
    let req = JoinRequest::read(&join.join(JOIN_REQUEST))?;
    let ca = ca::read_certificate(&dir.join(CA_FILE))?;
    let bad = |what| ServerError::BadFile {
        path: certificates.to_path_buf(),
        what,
    };
    let text = fs::read_to_string(certificates).map_err(io_err("read", certificates))?;
    let ders = ca::pem_certs(&text).ok_or_else(|| bad("not a file of PEM certificates"))?;
    if ders.len() != 1 + req.units.len() {
        return Err(bad(
            "it does not hold one TLS certificate and one certificate per unit of this server's request",
        ));
    }
    if !ca::check_tls_certificate(&ders[0], &ca, &req.tls_key) {
        return Err(bad(
            "its first certificate is not one the fleet CA issued for this server's TLS key",
        ));
    }
    // Creating a unit checks its certificate's unit, key and type; the instance is the
    // request's to check.
    for (u, der) in req.units.iter().zip(&ders[1..]) {
        if DeviceCertificate::verify(der, &ca).is_ok_and(|c| c.instance_id().uuid() != u.instance) {
            return Err(bad(
                "a device certificate names another service instance than this server's request",
            ));
        }
    }
    let new_units = join.join("units-new");
    let _ = fs::remove_dir_all(&new_units);
    let result = install_units(&req, &ders[1..], &ca, &join, &new_units, &dir).and_then(|()| {
        let tls = dir.join("tls/server.pem");
        atomic::write_private(&tls, ca::pem_cert(&ders[0]).as_bytes())
            .map_err(io_err("write", &tls))?;
        let units = dir.join("units");
        fs::rename(&new_units, &units).map_err(io_err("create", &units))
    });
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&new_units);
        return Err(e);
    }
    // The configuration last: its presence marks a complete server.
    fs::rename(join.join(CONFIG_FILE), dir.join(CONFIG_FILE))
        .map_err(io_err("create", &dir.join(CONFIG_FILE)))?;
    fs::remove_dir_all(&join).map_err(io_err("remove", &join))?;
    let config = Config::load(&dir.join(CONFIG_FILE))?;
    Ok(InitReport {
        config: config.path.clone(),
        ca: dir.join(CA_FILE),
        new_ca: false,
        instance_id_file: dir.join("instance-id"),
        api_keys: Vec::new(),
        endpoint: endpoint(&config.listen),
        units: config
            .units
            .iter()
            .map(|u| UnitReport {
                instance: u.instance.clone(),
                id: u.id,
                unit_type: u.unit_type,
                location: u.location.clone(),
            })
            .collect(),
    })
}

/// Creates the units of `req` in `new_units`, each with the device key kept in `join` and
/// its certificate from `ders` (in the request's order).
fn install_units(
    req: &JoinRequest,
    ders: &[Vec<u8>],
    ca: &CaCertificate,
    join: &Path,
    new_units: &Path,
    dir: &Path,
) -> Result<(), ServerError> {
    for (u, der) in req.units.iter().zip(ders) {
        let keys = join.join("units").join(u.id.uuid()).join(SECRETS_FILE);
        // A copy: the pending join stays whole if a later unit fails.
        let make_backend = Box::new(move |d: &Path, id: UnitId| {
            let bytes =
                Zeroizing::new(
                    fs::read(&keys).map_err(|source| tke_unit::BackendError::Io {
                        action: "read",
                        path: keys.clone(),
                        source,
                    })?,
                );
            let to = d.join(SECRETS_FILE);
            atomic::create_private(&to, &bytes).map_err(|source| tke_unit::BackendError::Io {
                action: "write",
                path: to.clone(),
                source,
            })?;
            Ok(Box::new(SoftBackend::open(d, id)?) as Box<dyn tke_unit::Backend>)
        });
        let mut issue = |_: &PublicKey| DeviceCertificate::verify(der, ca);
        Unit::create(
            &new_units.join(u.id.uuid()),
            u.id,
            u.unit_type,
            ca,
            make_backend,
            &mut issue,
        )
        .map_err(|source| ServerError::Unit {
            unit: u.id,
            path: dir.join("units").join(u.id.uuid()),
            source: Box::new(source),
        })?;
    }
    Ok(())
}
