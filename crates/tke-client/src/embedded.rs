//! The embedded fleet: service instances of units that run in-process, in a directory of
//! the workstation (`<files-dir>/local` by default), behind the same [`Transport`] trait as
//! a network fleet. Units keep their secrets in the soft backend, or in PKCS#11 tokens (one
//! token per unit, [`Placement`]); a fleet may mix both.
//!
//! Layout:
//! ```text
//! <fleet>/fleet.json        instances and their units (id, type, location), and the
//!                           units' simulated latency (`latency_ms`, when set)
//! <fleet>/ca.pem            the fleet CA certificate (clients pin it)
//! <fleet>/ca.key.pem        the fleet CA key (PKCS#8, 0600): issues device certificates
//! <fleet>/units/<uuid>/     one directory per unit (see tke-unit)
//! <fleet>/keys/<uuid>.keys  each instance's key storage (SQLite, 0600; made on first use)
//! <fleet>/.lock             held while a process uses the fleet
//! ```

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use p256::{
    ecdsa::{signature::Signer as _, DerSignature, Signature, SigningKey},
    pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding},
    PublicKey,
};
use serde::{Deserialize, Serialize};
use tke_fs::atomic;
use tke_proto::{CaCertificate, DeviceCertificate, UnitDescription, UnitId, UnitType};
/// The simulated round trip of the fleet's units ([`EmbeddedFleet::set_latency`]).
pub use tke_unit::Latency;
#[cfg(feature = "pkcs11")]
use tke_unit::Pkcs11Config;
use tke_unit::Unit;

use crate::{
    provision::FailoverLimits, ClientError, InstanceId, Provisioning, Transport, UnitDescriptor,
};

/// How many units of each type each instance of a new fleet gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FleetSpec {
    /// Number of service instances (1 to 16).
    pub instances: u32,
    /// Operational units per instance (1 to 6).
    pub operational: u32,
    /// Recovery units per instance (0 to 2).
    pub recovery: u32,
    /// Failover units per instance (0 to 3, at most the operational count).
    pub failover: u32,
}

impl Default for FleetSpec {
    /// The default fleet: one instance of 2 operational and 2 recovery units.
    fn default() -> Self {
        Self {
            instances: 1,
            operational: 2,
            recovery: 2,
            failover: 0,
        }
    }
}

impl FleetSpec {
    /// Checks the ranges.
    ///
    /// # Errors
    /// [`ClientError::FleetSpec`] naming the first value out of range.
    pub fn validate(&self) -> Result<(), ClientError> {
        let what = if !(1..=16).contains(&self.instances) {
            "the number of instances must be between 1 and 16"
        } else if !(1..=6).contains(&self.operational) {
            "the number of operational units must be between 1 and 6"
        } else if self.recovery > 2 {
            "the number of recovery units must be between 0 and 2"
        } else if self.failover > 3 || self.failover > self.operational {
            "the number of failover units must be between 0 and 3 and at most the number of operational units"
        } else {
            return Ok(());
        };
        Err(ClientError::FleetSpec { what })
    }
}

/// Which units of a new fleet are placed on PKCS#11 tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pkcs11Units {
    /// Every unit.
    #[default]
    All,
    /// Operational and failover units (recovery units stay soft).
    Operational,
    /// Recovery units only.
    Recovery,
}

impl Pkcs11Units {
    /// Whether a unit of this type goes on a token.
    pub fn selects(self, unit_type: UnitType) -> bool {
        match self {
            Self::All => true,
            Self::Operational => unit_type != UnitType::Recovery,
            Self::Recovery => unit_type == UnitType::Recovery,
        }
    }
}

/// Units on PKCS#11 tokens: the module, which units, and one token label per such unit,
/// taken in creation order (per instance: operational, recovery, then failover units).
/// The tokens exist already (e.g. made by `softhsm-config/make-tokens.sh`) and hold no
/// TKE objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkcs11Placement {
    /// The PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// Which units go on tokens.
    pub units: Pkcs11Units,
    /// One token label per unit placed, in creation order.
    pub tokens: Vec<String>,
    /// The user PIN file of the tokens; `{label}` in it stands for each token's label
    /// (`make-tokens.sh` writes `<dir>/<label>.pin`).
    pub pin_file: PathBuf,
}

impl Pkcs11Placement {
    /// The PIN file of the token `label`.
    pub fn pin_file_for(&self, label: &str) -> PathBuf {
        PathBuf::from(self.pin_file.to_string_lossy().replace("{label}", label))
    }

    /// The configuration of the unit on token `label`.
    #[cfg(feature = "pkcs11")]
    pub fn config_for(&self, label: &str) -> Pkcs11Config {
        Pkcs11Config::new(self.module.clone(), label, self.pin_file_for(label))
    }

    /// How many units of `spec` this placement puts on tokens.
    pub fn units_placed(&self, spec: &FleetSpec) -> usize {
        let per_instance = [
            (UnitType::Operational, spec.operational),
            (UnitType::Recovery, spec.recovery),
            (UnitType::Failover, spec.failover),
        ]
        .into_iter()
        .filter(|(t, _)| self.units.selects(*t))
        .map(|(_, n)| n as usize)
        .sum::<usize>();
        per_instance * spec.instances as usize
    }

    /// Checks the placement against `spec`: one distinct label per unit placed.
    ///
    /// # Errors
    /// [`ClientError::FleetSpec`].
    pub fn validate(&self, spec: &FleetSpec) -> Result<(), ClientError> {
        let what = if self.tokens.len() != self.units_placed(spec) {
            "the number of PKCS#11 token labels must equal the number of units placed on tokens"
        } else if self.tokens.iter().any(|t| t.is_empty() || t.len() > 32) {
            "a PKCS#11 token label must be 1 to 32 bytes"
        } else if (1..self.tokens.len()).any(|i| self.tokens[..i].contains(&self.tokens[i])) {
            "each unit needs a PKCS#11 token of its own: a token label is given twice"
        } else {
            return Ok(());
        };
        Err(ClientError::FleetSpec { what })
    }
}

/// Where the units of a new fleet keep their secrets: the soft backend (the default), or
/// PKCS#11 tokens for some or all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// Units on PKCS#11 tokens; `None`: every unit soft.
    pub pkcs11: Option<Pkcs11Placement>,
}

impl Placement {
    /// Every unit on the soft backend.
    pub fn soft() -> Self {
        Self::default()
    }

    /// The units `placement` selects on PKCS#11 tokens, the others soft.
    pub fn pkcs11(placement: Pkcs11Placement) -> Self {
        Self {
            pkcs11: Some(placement),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct FleetFile {
    version: u32,
    name: String,
    instances: Vec<InstanceEntry>,
    /// The units' simulated round trip ([`EmbeddedFleet::set_latency`]); absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    latency_ms: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct InstanceEntry {
    id: InstanceId,
    units: Vec<UnitEntry>,
}

impl FleetFile {
    /// Reads and checks `<dir>/fleet.json`.
    fn read(dir: &Path) -> Result<Self, ClientError> {
        let path = dir.join("fleet.json");
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let file: FleetFile =
            serde_json::from_slice(&bytes).map_err(|_| ClientError::FleetCorrupt {
                path: path.clone(),
                what: "not a valid fleet.json",
            })?;
        if file.version != 1 {
            return Err(ClientError::FleetCorrupt {
                path,
                what: "unsupported fleet.json version",
            });
        }
        Ok(file)
    }

    /// The units' latency the file records.
    fn latency(&self, dir: &Path) -> Result<Latency, ClientError> {
        Latency::from_millis(self.latency_ms.unwrap_or(0)).map_err(|_| ClientError::FleetCorrupt {
            path: dir.join("fleet.json"),
            what: "latency_ms must be 0 to 10000 (milliseconds)",
        })
    }

    /// Writes `<dir>/fleet.json` atomically.
    fn write(&self, dir: &Path) -> Result<(), ClientError> {
        let path = dir.join("fleet.json");
        let json = serde_json::to_vec_pretty(self).map_err(|_| ClientError::FleetCorrupt {
            path: path.clone(),
            what: "cannot encode the fleet file",
        })?;
        atomic::write_private(&path, &json).map_err(io_err(&path))
    }
}

#[derive(Serialize, Deserialize)]
struct UnitEntry {
    id: String,
    #[serde(rename = "type")]
    unit_type: String,
    location: String,
}

/// An open embedded fleet. Holds the fleet's lock for its lifetime, so two `tke`
/// processes never drive the same units at once.
pub struct EmbeddedFleet {
    dir: PathBuf,
    ca: CaCertificate,
    /// Grows when failover units are added ([`Provisioning`]).
    listing: RwLock<Vec<UnitDescriptor>>,
    units: RwLock<HashMap<UnitId, Arc<Mutex<Unit>>>>,
    /// Set on every unit, those added later included.
    latency: RwLock<Latency>,
    _lock: tke_fs::DirLock,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ClientError + '_ {
    move |source| ClientError::FleetIo {
        path: path.to_path_buf(),
        source,
    }
}

fn parse_type(s: &str) -> Option<UnitType> {
    match s {
        "operational" => Some(UnitType::Operational),
        "recovery" => Some(UnitType::Recovery),
        "failover" => Some(UnitType::Failover),
        _ => None,
    }
}

/// How long a command waits for another `tke` process to finish with the fleet.
const FLEET_WAIT: Duration = Duration::from_secs(30);

fn lock(dir: &Path) -> Result<tke_fs::DirLock, ClientError> {
    tke_fs::DirLock::acquire(dir, FLEET_WAIT).map_err(|e| match e {
        tke_fs::LockError::Busy { .. } => ClientError::FleetBusy {
            path: dir.to_path_buf(),
        },
        tke_fs::LockError::Io { lock, source } => io_err(&lock)(source),
    })
}

/// Why a fleet with units on tokens cannot be made by a build without PKCS#11 support.
#[cfg_attr(feature = "pkcs11", allow(dead_code))]
const NO_PKCS11: &str =
    "this build of tke-client has no PKCS#11 support (its cargo feature `pkcs11` is off)";

/// Signs with the fleet CA key, for certificates it issues.
fn sign_ca(k: &SigningKey) -> Box<tke_proto::cert::SignFn<'static>> {
    let k = k.clone();
    Box::new(
        move |m: &[u8]| -> Result<DerSignature, tke_proto::BoxError> {
            let s: Signature = k.sign(m);
            Ok(s.to_der())
        },
    )
}

/// Issues the device certificate of unit `id` with the fleet CA.
fn issuer<'a>(
    ca: &'a CaCertificate,
    ca_key: &'a SigningKey,
    id: UnitId,
    description: UnitDescription,
) -> impl FnMut(&PublicKey) -> Result<DeviceCertificate, tke_proto::ProtoError> + 'a {
    move |key: &PublicKey| DeviceCertificate::issue(ca, &id, &description, key, sign_ca(ca_key))
}

fn location(region: &str, zone: u32, module: u32, domain: u32) -> String {
    format!("[{region}].[AZ{zone}-CS{module}].[{module:02}].[{domain:02}]")
}

impl EmbeddedFleet {
    /// Whether `dir` holds a fleet.
    pub fn exists(dir: &Path) -> bool {
        dir.join("fleet.json").is_file()
    }

    /// Creates a fleet in `dir`: a fleet CA, then every unit in imprint mode, all on the
    /// soft backend. The fleet is built in a temporary directory beside `dir` and renamed
    /// into place, so a failure leaves nothing half-made.
    ///
    /// # Errors
    /// [`ClientError::FleetExists`] if `dir` already holds a fleet; spec, I/O and unit errors.
    pub fn create(dir: &Path, spec: FleetSpec) -> Result<Self, ClientError> {
        Self::create_with(dir, spec, &Placement::soft())
    }

    /// Creates a fleet as [`EmbeddedFleet::create`] does, with its units placed as
    /// `placement` says (some or all on PKCS#11 tokens). Everything is checked before any
    /// unit is made; if a unit cannot be made, the units made before it are destroyed
    /// (their tokens are left empty, ready for another try).
    ///
    /// # Errors
    /// As [`EmbeddedFleet::create`]; [`ClientError::FleetSpec`] for a placement that does
    /// not fit `spec`; [`ClientError::Unit`] naming the token (label and module) that
    /// could not be used.
    pub fn create_with(
        dir: &Path,
        spec: FleetSpec,
        placement: &Placement,
    ) -> Result<Self, ClientError> {
        spec.validate()?;
        if let Some(p) = &placement.pkcs11 {
            if cfg!(not(feature = "pkcs11")) {
                return Err(ClientError::FleetSpec { what: NO_PKCS11 });
            }
            p.validate(&spec)?;
        }
        if Self::exists(dir)
            || dir.exists()
                && fs::read_dir(dir)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(true)
        {
            return Err(ClientError::FleetExists {
                path: dir.to_path_buf(),
            });
        }
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        atomic::create_private_dir(parent).map_err(io_err(parent))?;
        let tmp = parent.join(format!(".fleet-tmp-{}", UnitId::random().to_hex()));
        let result = Self::build(&tmp, spec, placement).and_then(|()| {
            if dir.exists() {
                // An empty directory (checked above) may be replaced.
                fs::remove_dir(dir).map_err(io_err(dir))?;
            }
            fs::rename(&tmp, dir).map_err(io_err(dir))
        });
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        Self::open(dir)
    }

    fn build(dir: &Path, spec: FleetSpec, placement: &Placement) -> Result<(), ClientError> {
        atomic::create_private_dir(dir).map_err(io_err(dir))?;
        // Units are discarded unless the fleet is complete: a token keeps its objects
        // otherwise, and could not be used again.
        let mut made: Vec<Unit> = Vec::new();
        let result = Self::build_units(dir, spec, placement, &mut made);
        if result.is_err() {
            for unit in made {
                let _ = unit.discard();
            }
        }
        result
    }

    fn build_units(
        dir: &Path,
        spec: FleetSpec,
        placement: &Placement,
        made: &mut Vec<Unit>,
    ) -> Result<(), ClientError> {
        #[cfg_attr(not(feature = "pkcs11"), allow(unused_mut, unused_variables))]
        let mut tokens = placement
            .pkcs11
            .as_ref()
            .map(|p| p.tokens.iter())
            .into_iter()
            .flatten();
        let ca_key = SigningKey::random(&mut rand_core::OsRng);
        let name = format!("local-{}", &UnitId::random().to_hex()[..8]);
        let ca = CaCertificate::build(
            &name,
            &PublicKey::from(ca_key.verifying_key()),
            sign_ca(&ca_key),
        )
        .map_err(|source| ClientError::FleetCa {
            path: dir.to_path_buf(),
            source,
        })?;
        let key_path = dir.join("ca.key.pem");
        let pem = ca_key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| ClientError::FleetCorrupt {
                path: key_path.clone(),
                what: "cannot encode the CA key",
            })?;
        atomic::write_private(&key_path, pem.as_bytes()).map_err(io_err(&key_path))?;
        let ca_path = dir.join("ca.pem");
        let ca_pem = ca.to_pem().map_err(|_| ClientError::FleetCorrupt {
            path: ca_path.clone(),
            what: "cannot encode the CA certificate",
        })?;
        atomic::write_private(&ca_path, ca_pem.as_bytes()).map_err(io_err(&ca_path))?;

        let mut instances = Vec::new();
        let mut domain = 0;
        for _ in 0..spec.instances {
            let instance = tke_proto::InstanceId::random();
            let mut units = Vec::new();
            let plan = (0..spec.operational)
                .map(|i| (UnitType::Operational, "local", i + 1, i + 1))
                .chain((0..spec.recovery).map(|i| {
                    // One recovery unit in the region, one in its disaster-recovery region.
                    let region = if i == 0 { "local" } else { "local-dr" };
                    (UnitType::Recovery, region, 1, 9)
                }))
                .chain(
                    (0..spec.failover)
                        .map(|i| (UnitType::Failover, "local-failover", i + 1, i + 1)),
                );
            for (unit_type, region, zone, module) in plan {
                domain += 1;
                let id = UnitId::random();
                let unit_dir = dir.join("units").join(id.uuid());
                let description = UnitDescription {
                    unit_type,
                    instance_id: instance,
                };
                let mut issue = issuer(&ca, &ca_key, id, description);
                let on_token = placement
                    .pkcs11
                    .as_ref()
                    .filter(|p| p.units.selects(unit_type));
                let unit = match on_token {
                    #[cfg(feature = "pkcs11")]
                    Some(p) => {
                        let label = tokens.next().ok_or(ClientError::FleetSpec {
                            what: "the number of PKCS#11 token labels must equal the number of units placed on tokens",
                        })?;
                        Unit::create_pkcs11(
                            &unit_dir,
                            id,
                            unit_type,
                            &ca,
                            &p.config_for(label),
                            &mut issue,
                        )
                    }
                    #[cfg(not(feature = "pkcs11"))]
                    Some(_) => return Err(ClientError::FleetSpec { what: NO_PKCS11 }),
                    None => Unit::create_soft(&unit_dir, id, unit_type, &ca, &mut issue),
                }
                .map_err(|source| ClientError::Unit {
                    path: unit_dir.clone(),
                    source: Box::new(source),
                })?;
                made.push(unit);
                units.push(UnitEntry {
                    id: id.uuid(),
                    unit_type: unit_type.json_name().to_owned(),
                    location: location(region, zone, module, domain),
                });
            }
            instances.push(InstanceEntry {
                id: InstanceId(instance.uuid()),
                units,
            });
        }
        FleetFile {
            version: 1,
            name,
            instances,
            latency_ms: None,
        }
        .write(dir)
    }

    /// Opens the fleet in `dir` and every unit in it.
    ///
    /// # Errors
    /// [`ClientError::FleetMissing`], [`ClientError::FleetCorrupt`], [`ClientError::FleetBusy`],
    /// unit errors.
    pub fn open(dir: &Path) -> Result<Self, ClientError> {
        if !Self::exists(dir) {
            return Err(ClientError::FleetMissing {
                path: dir.to_path_buf(),
            });
        }
        let lock = lock(dir)?;
        let file = FleetFile::read(dir)?;
        let latency = file.latency(dir)?;
        let ca_path = dir.join("ca.pem");
        let ca_pem = fs::read_to_string(&ca_path).map_err(io_err(&ca_path))?;
        let ca = CaCertificate::from_pem(&ca_pem).map_err(|_| ClientError::FleetCorrupt {
            path: ca_path.clone(),
            what: "not a TKE fleet CA certificate",
        })?;
        let mut listing = Vec::new();
        let mut units = HashMap::new();
        for inst in file.instances {
            for u in inst.units {
                let corrupt = |what| ClientError::FleetCorrupt {
                    path: dir.join("fleet.json"),
                    what,
                };
                let id =
                    UnitId::from_uuid(&u.id).map_err(|_| corrupt("a unit id is not a UUID"))?;
                let unit_type =
                    parse_type(&u.unit_type).ok_or_else(|| corrupt("unknown unit type"))?;
                let unit_dir = dir.join("units").join(id.uuid());
                let mut unit = Unit::open(&unit_dir).map_err(|source| ClientError::Unit {
                    path: unit_dir.clone(),
                    source: Box::new(source),
                })?;
                unit.set_latency(latency);
                if unit.id() != id || unit.unit_type() != unit_type {
                    return Err(corrupt("a unit directory does not match fleet.json"));
                }
                listing.push(UnitDescriptor {
                    instance: inst.id.clone(),
                    unit_id: id,
                    unit_type,
                    // fleet.json may have been edited: its text is not trusted either.
                    location: crate::untrusted::sanitize(&u.location).into_owned(),
                    device_certificate: unit.device_certificate().der().to_vec(),
                });
                units.insert(id, Arc::new(Mutex::new(unit)));
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            ca,
            listing: RwLock::new(listing),
            units: RwLock::new(units),
            latency: RwLock::new(latency),
            _lock: lock,
        })
    }

    /// Makes every unit of the fleet wait `latency` before answering each request
    /// ([`Unit::set_latency`]; test and benchmark tooling, standing in for a real HSM's
    /// round trip), and records it in `fleet.json` so that the fleet reopens with it.
    /// [`Latency::NONE`] turns it off.
    ///
    /// # Errors
    /// [`ClientError::FleetIo`] / [`ClientError::FleetCorrupt`] when `fleet.json` cannot
    /// be read or written; the units are then left as they were.
    pub fn set_latency(&self, latency: Latency) -> Result<(), ClientError> {
        // The fleet's lock is held: the file is this process's to change.
        let mut file = FleetFile::read(&self.dir)?;
        file.latency_ms = (!latency.is_none()).then(|| latency.as_millis());
        file.write(&self.dir)?;
        *self.latency.write().unwrap_or_else(|p| p.into_inner()) = latency;
        for unit in read(&self.units).values() {
            unit.lock()
                .unwrap_or_else(|p| p.into_inner())
                .set_latency(latency);
        }
        Ok(())
    }

    /// The units' latency ([`EmbeddedFleet::set_latency`]; [`Latency::NONE`] unless set).
    pub fn latency(&self) -> Latency {
        *read(&self.latency)
    }

    /// The fleet CA certificate, which clients pin.
    pub fn ca(&self) -> &CaCertificate {
        &self.ca
    }

    /// The fleet directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads the fleet CA private key (for tools that add units later).
    ///
    /// # Errors
    /// [`ClientError::FleetIo`] or [`ClientError::FleetCorrupt`].
    pub fn ca_key(&self) -> Result<SigningKey, ClientError> {
        let path = self.dir.join("ca.key.pem");
        let pem = zeroize::Zeroizing::new(fs::read_to_string(&path).map_err(io_err(&path))?);
        SigningKey::from_pkcs8_pem(&pem).map_err(|_| ClientError::FleetCorrupt {
            path,
            what: "not a PKCS#8 P-256 key",
        })
    }
}

impl Transport for EmbeddedFleet {
    fn describe(&self) -> String {
        format!("embedded fleet {}", self.dir.display())
    }

    fn list_units(&self) -> Result<Vec<UnitDescriptor>, ClientError> {
        Ok(read(&self.listing).clone())
    }

    fn exchange(&self, unit: &UnitId, request_der: &[u8]) -> Result<Vec<u8>, ClientError> {
        let u = read(&self.units)
            .get(unit)
            .cloned()
            .ok_or(ClientError::UnknownUnit { unit: *unit })?;
        // Commands to one unit run one at a time, as on a real unit.
        let mut guard = u.lock().unwrap_or_else(|p| p.into_inner());
        Ok(guard.handle(request_der))
    }

    fn provisioning(&self) -> Option<&dyn Provisioning> {
        Some(self)
    }

    /// The instance's key store is `<fleet>/keys/<instance id>.keys` (made on first use,
    /// 0600 in a 0700 directory); its units are this fleet's, shared with it.
    fn key_service(
        &self,
        instance: &InstanceId,
    ) -> Result<Option<Arc<dyn tke_kms::KeyService>>, ClientError> {
        let listing: Vec<UnitDescriptor> = read(&self.listing)
            .iter()
            .filter(|d| &d.instance == instance)
            .cloned()
            .collect();
        if listing.is_empty() {
            return Ok(None);
        }
        let all = read(&self.units);
        let units = listing
            .iter()
            .filter_map(|d| all.get(&d.unit_id).map(|u| (d.unit_id, u.clone())))
            .collect();
        drop(all);
        let shared = SharedUnits::new(self.describe(), listing, units);
        let workers = shared.rewrap_workers();
        let transport: Arc<dyn Transport> = Arc::new(shared);
        let client = crate::Client::connect(vec![(transport, self.ca.clone())])?;
        let kms = crate::kms::open_local(&self.dir.join(KEYS_DIR), client, instance, workers)?;
        Ok(Some(kms))
    }
}

/// The directory of the fleet's key stores, one file per instance.
const KEYS_DIR: &str = "keys";

/// In-process units shared with their owner (an embedded fleet, a `tke-unitd` server),
/// as a transport: what an instance's key service talks to, next to the units.
pub struct SharedUnits {
    describe: String,
    listing: Vec<UnitDescriptor>,
    units: HashMap<UnitId, Arc<Mutex<Unit>>>,
}

impl SharedUnits {
    /// The transport over `units`, which `listing` describes; `describe` names it in
    /// messages.
    pub fn new(
        describe: String,
        listing: Vec<UnitDescriptor>,
        units: HashMap<UnitId, Arc<Mutex<Unit>>>,
    ) -> Self {
        Self {
            describe,
            listing,
            units,
        }
    }

    /// How many of these units should rewrap at once during a rotation's re-encryption,
    /// by their backends ([`tke_kms::default_rewrap_workers`]).
    pub fn rewrap_workers(&self) -> std::num::NonZeroUsize {
        let kinds: Vec<&'static str> = self
            .units
            .values()
            .map(|u| u.lock().unwrap_or_else(|p| p.into_inner()).backend_kind())
            .collect();
        tke_kms::default_rewrap_workers(kinds)
    }
}

impl Transport for SharedUnits {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn list_units(&self) -> Result<Vec<UnitDescriptor>, ClientError> {
        Ok(self.listing.clone())
    }

    fn exchange(&self, unit: &UnitId, request_der: &[u8]) -> Result<Vec<u8>, ClientError> {
        let u = self
            .units
            .get(unit)
            .ok_or(ClientError::UnknownUnit { unit: *unit })?;
        Ok(u.lock()
            .unwrap_or_else(|p| p.into_inner())
            .handle(request_der))
    }
}

impl EmbeddedFleet {
    /// Refuses an instance with units on PKCS#11 tokens: new units are soft, and a
    /// failover unit would hold the master key outside a token.
    fn soft_only(&self, instance: &InstanceId) -> Result<(), ClientError> {
        let ids: Vec<UnitId> = read(&self.listing)
            .iter()
            .filter(|u| u.instance == *instance)
            .map(|u| u.unit_id)
            .collect();
        let units = read(&self.units);
        let on_tokens = ids
            .iter()
            .filter_map(|id| units.get(id))
            .any(|m| m.lock().unwrap_or_else(|p| p.into_inner()).backend_kind() != "soft");
        if on_tokens {
            return Err(ClientError::FleetSpec {
                what: "failover units are added only to a service instance whose units are all soft; this one has units on PKCS#11 tokens",
            });
        }
        Ok(())
    }
}

/// Reads behind a lock that a panicked writer may have poisoned: the fleet's maps are
/// replaced whole, so what they hold stays consistent.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

/// Adds failover units as the vendor's `failover-enable` does: new units in imprint mode,
/// in the failover region, on the soft backend. An instance with units on PKCS#11 tokens
/// is refused: its failover units would hold the master key outside a token.
impl Provisioning for EmbeddedFleet {
    fn can_add_failover_units(&self, instance: &InstanceId) -> Result<(), ClientError> {
        if !read(&self.listing).iter().any(|u| u.instance == *instance) {
            return Err(ClientError::UnknownInstance {
                instance: instance.clone(),
            });
        }
        self.soft_only(instance)
    }

    fn add_failover_units(
        &self,
        instance: &InstanceId,
        total: usize,
    ) -> Result<Vec<UnitDescriptor>, ClientError> {
        // The fleet's lock is held: the file is this process's to change.
        let mut file = FleetFile::read(&self.dir)?;
        let fleet_size: usize = file.instances.iter().map(|i| i.units.len()).sum();
        let index = file
            .instances
            .iter()
            .position(|i| i.id == *instance)
            .ok_or_else(|| ClientError::UnknownInstance {
                instance: instance.clone(),
            })?;
        let count = |t: UnitType| {
            file.instances[index]
                .units
                .iter()
                .filter(|u| parse_type(&u.unit_type) == Some(t))
                .count()
        };
        let failover = count(UnitType::Failover);
        FailoverLimits {
            operational: count(UnitType::Operational),
            failover,
        }
        .check(total)
        .map_err(|source| ClientError::FailoverTotal {
            instance: instance.clone(),
            source,
        })?;
        self.soft_only(instance)?;
        let ca_key = self.ca_key()?;
        let instance_id = tke_proto::InstanceId::from_uuid(&instance.0).map_err(|_| {
            ClientError::FleetCorrupt {
                path: self.dir.join("fleet.json"),
                what: "an instance id is not a UUID",
            }
        })?;
        let mut made: Vec<Unit> = Vec::new();
        let mut added = Vec::new();
        let result = (|| {
            for (i, domain) in (failover..total).zip(fleet_size + 1..) {
                let id = UnitId::random();
                let unit_dir = self.dir.join("units").join(id.uuid());
                let description = UnitDescription {
                    unit_type: UnitType::Failover,
                    instance_id,
                };
                let mut issue = issuer(&self.ca, &ca_key, id, description);
                let mut unit =
                    Unit::create_soft(&unit_dir, id, UnitType::Failover, &self.ca, &mut issue)
                        .map_err(|source| ClientError::Unit {
                            path: unit_dir.clone(),
                            source: Box::new(source),
                        })?;
                unit.set_latency(self.latency());
                let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
                let entry = UnitEntry {
                    id: id.uuid(),
                    unit_type: UnitType::Failover.json_name().to_owned(),
                    location: location(
                        "local-failover",
                        n,
                        n,
                        u32::try_from(domain).unwrap_or(u32::MAX),
                    ),
                };
                added.push(UnitDescriptor {
                    instance: instance.clone(),
                    unit_id: id,
                    unit_type: UnitType::Failover,
                    location: entry.location.clone(),
                    device_certificate: unit.device_certificate().der().to_vec(),
                });
                made.push(unit);
                file.instances[index].units.push(entry);
            }
            file.write(&self.dir)
        })();
        if let Err(e) = result {
            for unit in made {
                let _ = unit.discard();
            }
            return Err(e);
        }
        let mut units = self.units.write().unwrap_or_else(|p| p.into_inner());
        for unit in made {
            units.insert(unit.id(), Arc::new(Mutex::new(unit)));
        }
        drop(units);
        self.listing
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(added.iter().cloned());
        Ok(added)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn placement(units: Pkcs11Units, tokens: &[&str]) -> Pkcs11Placement {
        Pkcs11Placement {
            module: PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
            units,
            tokens: tokens.iter().map(|t| (*t).to_owned()).collect(),
            pin_file: PathBuf::from("/srv/tokens/{label}.pin"),
        }
    }

    #[test]
    fn placement_counts_and_checks_tokens() {
        let spec = FleetSpec {
            instances: 2,
            operational: 2,
            recovery: 1,
            failover: 1,
        };
        assert_eq!(placement(Pkcs11Units::All, &[]).units_placed(&spec), 8);
        assert_eq!(
            placement(Pkcs11Units::Operational, &[]).units_placed(&spec),
            6
        );
        assert_eq!(placement(Pkcs11Units::Recovery, &[]).units_placed(&spec), 2);
        assert!(placement(Pkcs11Units::Recovery, &["a", "b"])
            .validate(&spec)
            .is_ok());
        for bad in [&["a"][..], &["a", "a"], &["a", ""], &["a", "b", "c"]] {
            let e = placement(Pkcs11Units::Recovery, bad).validate(&spec);
            assert!(matches!(e, Err(ClientError::FleetSpec { .. })), "{bad:?}");
        }
        let p = placement(Pkcs11Units::All, &["op-1"]);
        assert_eq!(
            p.pin_file_for("op-1"),
            PathBuf::from("/srv/tokens/op-1.pin")
        );
        assert_eq!(p.config_for("op-1").token_label, "op-1");
    }

    #[test]
    fn failover_units_are_added_within_the_limits_and_persist() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("fleet");
        let spec = FleetSpec {
            instances: 2,
            operational: 3,
            recovery: 1,
            failover: 0,
        };
        let fleet = EmbeddedFleet::create(&dir, spec).unwrap();
        let instance = fleet.list_units().unwrap()[0].instance.clone();
        let p = fleet.provisioning().unwrap();
        let refused = |total| match p.add_failover_units(&instance, total) {
            Err(ClientError::FailoverTotal { source, .. }) => source,
            other => panic!("{total}: {other:?}"),
        };
        assert!(matches!(
            refused(4),
            crate::FailoverTotalError::OutOfRange { min: 2, max: 3, .. }
        ));
        assert!(matches!(
            refused(1),
            crate::FailoverTotalError::OutOfRange { .. }
        ));
        assert_eq!(
            fleet.list_units().unwrap().len(),
            8,
            "a refusal adds nothing"
        );
        let added = p.add_failover_units(&instance, 2).unwrap();
        assert_eq!(added.len(), 2);
        assert!(added
            .iter()
            .all(|u| u.unit_type == UnitType::Failover && u.instance == instance));
        assert_eq!(fleet.list_units().unwrap().len(), 10);
        // Only the third fits now; then the instance is full.
        assert!(matches!(
            refused(2),
            crate::FailoverTotalError::OutOfRange { min: 3, .. }
        ));
        assert_eq!(p.add_failover_units(&instance, 3).unwrap().len(), 1);
        assert_eq!(refused(3), crate::FailoverTotalError::Full { failover: 3 });
        let stranger = InstanceId(UnitId::random().uuid());
        assert!(matches!(
            p.add_failover_units(&stranger, 2),
            Err(ClientError::UnknownInstance { .. })
        ));
        // The new units answer, and the fleet reopens with them.
        let ca = fleet.ca().clone();
        let fleet: std::sync::Arc<dyn Transport> = std::sync::Arc::new(fleet);
        let client = crate::Client::connect(vec![(fleet.clone(), ca)]).unwrap();
        let unit = client.unit(&added[0].unit_id).unwrap();
        assert!(client.query(unit).unwrap().imprint_mode());
        drop((client, fleet));
        let reopened = EmbeddedFleet::open(&dir).unwrap();
        let listing = reopened.list_units().unwrap();
        assert_eq!(listing.len(), 11);
        assert_eq!(
            listing
                .iter()
                .filter(|u| u.instance == instance && u.unit_type == UnitType::Failover)
                .count(),
            3
        );
    }

    #[test]
    fn the_latency_is_applied_persisted_and_checked() {
        use std::time::{Duration, Instant};

        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("fleet");
        let spec = FleetSpec {
            instances: 1,
            operational: 2,
            recovery: 1,
            failover: 0,
        };
        let fleet = EmbeddedFleet::create(&dir, spec).unwrap();
        assert_eq!(fleet.latency(), Latency::NONE);
        let json = fs::read_to_string(dir.join("fleet.json")).unwrap();
        assert!(!json.contains("latency_ms"), "off: not written");
        let latency = Latency::from_millis(150).unwrap();
        fleet.set_latency(latency).unwrap();
        drop(fleet);

        let reopened = EmbeddedFleet::open(&dir).unwrap();
        assert_eq!(reopened.latency(), latency);
        let instance = reopened.list_units().unwrap()[0].instance.clone();
        // Failover units added later answer as slowly as the others.
        let added = reopened
            .provisioning()
            .unwrap()
            .add_failover_units(&instance, 2)
            .unwrap();
        let ca = reopened.ca().clone();
        let t: Arc<dyn Transport> = Arc::new(reopened);
        let client = crate::Client::connect(vec![(t.clone(), ca)]).unwrap();
        let ids: Vec<UnitId> = client.units().iter().map(|u| u.id()).collect();
        assert!(ids.contains(&added[0].unit_id));
        for id in ids {
            let start = Instant::now();
            client.query(client.unit(&id).unwrap()).unwrap();
            assert!(start.elapsed() >= Duration::from_millis(150), "{id:?}");
        }
        drop((client, t));

        // Off again: recorded as absent.
        let fleet = EmbeddedFleet::open(&dir).unwrap();
        fleet.set_latency(Latency::NONE).unwrap();
        drop(fleet);
        assert_eq!(EmbeddedFleet::open(&dir).unwrap().latency(), Latency::NONE);

        // A hand-edited value out of range is named, and opens nothing.
        let json = fs::read_to_string(dir.join("fleet.json")).unwrap();
        let edited = json.replacen(
            "\"version\": 1,",
            "\"version\": 1, \"latency_ms\": 10001,",
            1,
        );
        assert_ne!(json, edited);
        fs::write(dir.join("fleet.json"), edited).unwrap();
        match EmbeddedFleet::open(&dir) {
            Err(ClientError::FleetCorrupt { what, .. }) => assert!(what.contains("latency_ms")),
            other => panic!("{:?}", other.err()),
        }
    }

    #[test]
    fn a_bad_placement_makes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("fleet");
        let e = EmbeddedFleet::create_with(
            &dir,
            FleetSpec::default(),
            &Placement::pkcs11(placement(Pkcs11Units::All, &["only-one"])),
        );
        assert!(matches!(e, Err(ClientError::FleetSpec { .. })));
        assert!(!dir.exists());
        // The soft default still works as before.
        let fleet = EmbeddedFleet::create(&dir, FleetSpec::default()).unwrap();
        assert_eq!(fleet.list_units().unwrap().len(), 4);
    }
}
