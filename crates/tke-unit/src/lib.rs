#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod answer;
mod audit;
mod backend;
mod error;
mod journal;
mod kwp;
mod latency;
mod machine;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;
mod soft;
mod state;
mod store;

use std::{
    fs,
    path::{Path, PathBuf},
};

use tke_fs::atomic;
use tke_proto::{
    p256::{ecdsa::VerifyingKey, PublicKey},
    CaCertificate, DeviceCertificate, ProtoError, UnitId, UnitStatus, UnitType,
};

pub use answer::{Answer, InternalError};
pub use audit::AUDIT_FILE;
pub use backend::{Backend, BackendError, KeyHandle, LiveSecrets};
pub use error::UnitError;
pub use journal::{
    Journal, JournalError, JournalOptions, JournalStats, JournalStore, Replay, JOURNAL_FILE,
};
pub use latency::{Latency, LatencyError, LatencyParseError};
#[cfg(feature = "pkcs11")]
pub use pkcs11::{Pkcs11Backend, Pkcs11Config, TokenRef, WrapMechanism};
pub use soft::{MemorySecrets, SoftBackend, SECRETS_FILE};
pub use state::{CA_FILE, DEVICE_FILE, PKCS11_FILE, STATE_FILE};
pub use store::{FileStore, MemoryStore, StateStore};

/// One crypto unit: its state, its certificates and the backend holding its secrets.
///
/// A strict emulator: [`Unit::handle`] takes the DER of a [`tke_proto::Request`] and
/// makes every check a real unit makes (see the crate docs). One process at a time may
/// have a unit directory open.
pub struct Unit {
    /// The unit directory; `None` for a unit made from parts ([`Unit::from_parts`]).
    dir: Option<PathBuf>,
    store: Box<dyn StateStore>,
    backend: Box<dyn Backend>,
    state: state::State,
    ca: CaCertificate,
    device_cert: DeviceCertificate,
    /// The causes of the internal errors of the request being handled.
    internal_errors: Vec<InternalError>,
    /// Waited before each answer ([`Unit::set_latency`]).
    latency: Latency,
    /// One record per command that consumed the counter.
    audit: audit::AuditLog,
}

// The client keeps units behind a `Mutex` and drives them from several threads.
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<Unit>();
};

impl core::fmt::Debug for Unit {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Unit")
            .field("dir", &self.dir)
            .field("store", &self.store)
            .field("unit_id", &self.state.unit_id.uuid())
            .field("unit_type", &self.state.unit_type)
            .field("counter", &self.state.counter)
            .field("backend", &self.backend)
            .field("latency", &self.latency)
            .finish_non_exhaustive()
    }
}

/// A function that makes a backend for a new unit in its directory.
pub type MakeBackend<'a> = dyn FnOnce(&Path, UnitId) -> Result<Box<dyn Backend>, BackendError> + 'a;

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> UnitError {
    let path = path.to_owned();
    move |source| UnitError::Io {
        action,
        path,
        source,
    }
}

impl Unit {
    /// Creates a new unit in imprint mode in `dir` (created if missing, must be empty or
    /// absent) with a [`SoftBackend`]: the backend makes the device key; `issue` turns
    /// the device public key into the device certificate signed by the fleet CA (the
    /// caller holds the CA key); writes everything.
    ///
    /// # Errors
    /// [`UnitError::DirectoryNotEmpty`], [`UnitError::Io`], [`UnitError::Issue`] /
    /// [`UnitError::IssuedCertificate`] when `issue` fails or certifies something else,
    /// [`UnitError::Backend`]. On error, nothing is left in `dir`.
    pub fn create_soft(
        dir: &Path,
        unit_id: UnitId,
        unit_type: UnitType,
        ca: &CaCertificate,
        issue: &mut dyn FnMut(&PublicKey) -> Result<DeviceCertificate, ProtoError>,
    ) -> Result<Unit, UnitError> {
        Self::create(
            dir,
            unit_id,
            unit_type,
            ca,
            Box::new(|dir, id| Ok(Box::new(SoftBackend::create(dir, id)?) as Box<dyn Backend>)),
            issue,
        )
    }

    #[cfg(feature = "pkcs11")]
    /// Creates a new unit in `dir` whose secrets live in the PKCS#11 token of `config`
    /// ([`Pkcs11Backend`]); `config` is recorded in `dir` so that [`Unit::open`] reopens
    /// the unit. The token must hold no TKE objects yet (one token per unit). See
    /// [`Unit::create_soft`].
    ///
    /// # Errors
    /// As [`Unit::create_soft`]; token errors are [`UnitError::Backend`] and name the token
    /// label and the module path. On error, nothing is left in `dir` nor on the token.
    pub fn create_pkcs11(
        dir: &Path,
        unit_id: UnitId,
        unit_type: UnitType,
        ca: &CaCertificate,
        config: &Pkcs11Config,
        issue: &mut dyn FnMut(&PublicKey) -> Result<DeviceCertificate, ProtoError>,
    ) -> Result<Unit, UnitError> {
        Self::create(
            dir,
            unit_id,
            unit_type,
            ca,
            Box::new(|dir, id| {
                Ok(Box::new(Pkcs11Backend::create(dir, id, unit_type, config)?)
                    as Box<dyn Backend>)
            }),
            issue,
        )
    }

    /// Creates a new unit with the backend `make_backend` returns (called once `dir`
    /// exists and is empty). See [`Unit::create_soft`].
    ///
    /// # Errors
    /// As [`Unit::create_soft`].
    pub fn create(
        dir: &Path,
        unit_id: UnitId,
        unit_type: UnitType,
        ca: &CaCertificate,
        make_backend: Box<MakeBackend<'_>>,
        issue: &mut dyn FnMut(&PublicKey) -> Result<DeviceCertificate, ProtoError>,
    ) -> Result<Unit, UnitError> {
        let existed = dir.exists();
        if existed {
            let empty = dir.is_dir()
                && fs::read_dir(dir)
                    .map_err(io_err("read", dir))?
                    .next()
                    .is_none();
            if !empty {
                return Err(UnitError::DirectoryNotEmpty {
                    dir: dir.to_owned(),
                });
            }
        }
        atomic::create_private_dir(dir).map_err(io_err("create", dir))?;
        let result = Self::create_in(dir, unit_id, unit_type, ca, make_backend, issue);
        if result.is_err() {
            // The directory was empty: whatever is in it now is ours.
            if let Ok(entries) = fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_file()) {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
            if !existed {
                let _ = fs::remove_dir(dir);
            }
        }
        result
    }

    fn create_in(
        dir: &Path,
        unit_id: UnitId,
        unit_type: UnitType,
        ca: &CaCertificate,
        make_backend: Box<MakeBackend<'_>>,
        issue: &mut dyn FnMut(&PublicKey) -> Result<DeviceCertificate, ProtoError>,
    ) -> Result<Unit, UnitError> {
        let backend = make_backend(dir, unit_id).map_err(|source| UnitError::Backend {
            unit: unit_id,
            dir: dir.to_owned(),
            source,
        })?;
        Self::start(
            Some(dir),
            Box::new(FileStore::new(dir)),
            backend,
            unit_id,
            unit_type,
            ca,
            issue,
        )
    }

    /// Creates a new unit in imprint mode from its parts, with no directory: `store`
    /// must hold no unit, and `backend` must be new, made for `unit_id` (such as
    /// [`SoftBackend::create_in_memory`] or [`Pkcs11Backend::create_on_token`]). `issue`
    /// certifies the device key as for [`Unit::create_soft`]. With a [`MemoryStore`] and a
    /// [`SoftBackend`] in memory the unit touches no file; [`Unit::from_parts`] reopens it
    /// from the same store and secrets.
    ///
    /// # Errors
    /// [`UnitError::StoreNotEmpty`], [`UnitError::Io`] when the store cannot be read or
    /// written, [`UnitError::Issue`] / [`UnitError::IssuedCertificate`] when `issue` fails
    /// or certifies something else. On error the backend is discarded
    /// ([`Backend::discard`]) and the store holds no unit.
    pub fn create_from_parts(
        store: Box<dyn StateStore>,
        mut backend: Box<dyn Backend>,
        unit_id: UnitId,
        unit_type: UnitType,
        ca: &CaCertificate,
        issue: &mut dyn FnMut(&PublicKey) -> Result<DeviceCertificate, ProtoError>,
    ) -> Result<Unit, UnitError> {
        let location = store.location().to_owned();
        let held = match store.load() {
            Ok(None) => None,
            Ok(Some(_)) => Some(UnitError::StoreNotEmpty { location }),
            Err(e) => Some(io_err("read", &location)(e)),
        };
        if let Some(e) = held {
            let _ = backend.discard();
            return Err(e);
        }
        Self::start(None, store, backend, unit_id, unit_type, ca, issue)
    }

    /// Certifies the backend's device key, writes the certificates in `dir` if there is
    /// one, then saves the first state: last, as its presence marks a complete unit.
    fn start(
        dir: Option<&Path>,
        store: Box<dyn StateStore>,
        mut backend: Box<dyn Backend>,
        unit_id: UnitId,
        unit_type: UnitType,
        ca: &CaCertificate,
        issue: &mut dyn FnMut(&PublicKey) -> Result<DeviceCertificate, ProtoError>,
    ) -> Result<Unit, UnitError> {
        let result = Self::certify(unit_id, unit_type, ca, backend.as_ref(), issue).and_then(
            |cert| match dir {
                Some(dir) => write_certificates(dir, unit_id, ca, &cert).map(|()| cert),
                None => Ok(cert),
            },
        );
        let device_cert = match result {
            Ok(cert) => cert,
            Err(e) => {
                // The unit does not exist: what the backend made goes (its files with the
                // directory's, a token's objects here).
                let _ = backend.discard();
                return Err(e);
            }
        };
        let log = match dir {
            Some(dir) => {
                audit::AuditLog::create(dir).map_err(io_err("write", &dir.join(AUDIT_FILE)))
            }
            None => Ok(audit::AuditLog::in_memory()),
        };
        let audit = match log {
            Ok(log) => log,
            Err(e) => {
                let _ = backend.discard();
                return Err(e);
            }
        };
        let state = state::State::new(unit_id, unit_type, backend.kind());
        let mut unit = Unit {
            dir: dir.map(Path::to_owned),
            store,
            backend,
            state,
            ca: ca.clone(),
            device_cert,
            internal_errors: Vec::new(),
            latency: Latency::NONE,
            audit,
        };
        if let Err(e) = unit.write_state() {
            let _ = unit.backend.discard();
            return Err(e);
        }
        Ok(unit)
    }

    /// Has the device key certified, and checks what `issue` returned.
    fn certify(
        unit_id: UnitId,
        unit_type: UnitType,
        ca: &CaCertificate,
        backend: &dyn Backend,
        issue: &mut dyn FnMut(&PublicKey) -> Result<DeviceCertificate, ProtoError>,
    ) -> Result<DeviceCertificate, UnitError> {
        let device_key = backend.device_public_key();
        let issued = issue(&device_key).map_err(|source| UnitError::Issue {
            unit: unit_id,
            source,
        })?;
        // Trust nothing the callback returns: it must chain to `ca`, name this unit and
        // certify this device key.
        let device_cert =
            DeviceCertificate::verify(issued.der(), ca).map_err(|source| UnitError::Issue {
                unit: unit_id,
                source,
            })?;
        if device_cert.unit_id() != unit_id {
            return Err(UnitError::IssuedCertificate {
                unit: unit_id,
                what: "names another unit",
            });
        }
        if device_cert.verifying_key() != VerifyingKey::from(&device_key) {
            return Err(UnitError::IssuedCertificate {
                unit: unit_id,
                what: "certifies another key than the unit's device key",
            });
        }
        if device_cert.unit_type() != unit_type {
            return Err(UnitError::IssuedCertificate {
                unit: unit_id,
                what: "states another unit type",
            });
        }
        Ok(device_cert)
    }

    /// Opens an existing unit directory with the backend recorded in it: soft, or PKCS#11
    /// (the token, module and PIN file recorded in [`PKCS11_FILE`]).
    ///
    /// Leftover temporary files of an interrupted write are removed, every register's
    /// reference is checked against the backend, and secrets no register refers to
    /// (left by a crash between the backend's write and the state's) are destroyed.
    ///
    /// # Errors
    /// [`UnitError::NotAUnit`] for a missing directory or one without a state file;
    /// [`UnitError::StateSyntax`] / [`UnitError::CorruptState`] / [`UnitError::Certificate`]
    /// for damaged files; [`UnitError::ForeignCertificate`] / [`UnitError::Backend`]
    /// (with [`BackendError::Foreign`]) for files of another unit;
    /// [`UnitError::Inconsistent`] when the state refers to secrets the backend lacks;
    /// [`UnitError::StateInJournal`] when the directory's [`Journal`] holds records not yet
    /// compacted (open it with [`Unit::open_with_store`] and the journal's store).
    pub fn open(dir: &Path) -> Result<Unit, UnitError> {
        refuse_pending_journal(dir)?;
        Self::open_with_store(dir, Box::new(FileStore::new(dir)))
    }

    /// Opens an existing unit directory as [`Unit::open`] does, with its state kept in
    /// `store` rather than in the directory's own [`STATE_FILE`]: a [`JournalStore`]
    /// shared with the other units of a host, as `tke-unitd` keeps them.
    ///
    /// # Errors
    /// As [`Unit::open`]; a store holding no unit is [`UnitError::NotAUnit`].
    pub fn open_with_store(dir: &Path, store: Box<dyn StateStore>) -> Result<Unit, UnitError> {
        let (state, ca, device_cert) = Self::read_files(dir, store.as_ref())?;
        let backend: Box<dyn Backend> = match state.backend.as_str() {
            "soft" => Box::new(SoftBackend::open(dir, state.unit_id).map_err(|source| {
                UnitError::Backend {
                    unit: state.unit_id,
                    dir: dir.to_owned(),
                    source,
                }
            })?),
            #[cfg(feature = "pkcs11")]
            "pkcs11" => Box::new(
                Pkcs11Backend::open(dir, state.unit_id, state.unit_type).map_err(|source| {
                    UnitError::Backend {
                        unit: state.unit_id,
                        dir: dir.to_owned(),
                        source,
                    }
                })?,
            ),
            _ => {
                return Err(UnitError::BackendKind {
                    path: dir.join(STATE_FILE),
                    recorded: state.backend,
                    problem: "is unknown to this build",
                })
            }
        };
        Self::assemble(Some(dir), store, state, ca, device_cert, backend)
    }

    /// Opens an existing unit directory with a backend opened by the caller (for
    /// backends that need parameters, such as a token PIN). The backend's kind must be
    /// the one recorded in the directory.
    ///
    /// # Errors
    /// As [`Unit::open`], plus [`UnitError::BackendKind`] when the kinds differ.
    pub fn open_with_backend(dir: &Path, backend: Box<dyn Backend>) -> Result<Unit, UnitError> {
        refuse_pending_journal(dir)?;
        let (state, ca, device_cert) = Self::read_files(dir, &FileStore::new(dir))?;
        if state.backend != backend.kind() {
            return Err(UnitError::BackendKind {
                path: dir.join(STATE_FILE),
                recorded: state.backend,
                problem: "differs from the backend given",
            });
        }
        Self::assemble(
            Some(dir),
            Box::new(FileStore::new(dir)),
            state,
            ca,
            device_cert,
            backend,
        )
    }

    /// Reopens a unit from its parts, with no directory: the state `store` holds, the
    /// `backend` holding its secrets (such as [`SoftBackend::open_in_memory`] or
    /// [`Pkcs11Backend::open_on_token`]), the fleet CA certificate it trusts and its device
    /// certificate. Checks them as [`Unit::open`] does and destroys orphan secrets.
    ///
    /// # Errors
    /// [`UnitError::EmptyStore`]; [`UnitError::Io`] when the store cannot be read;
    /// [`UnitError::StateSyntax`] / [`UnitError::CorruptState`] for a damaged record;
    /// [`UnitError::Certificate`] when `device_cert` does not chain to `ca`;
    /// [`UnitError::ForeignCertificate`] when it names another unit than the state;
    /// [`UnitError::BackendKind`] when the state records another backend kind;
    /// [`UnitError::DeviceKeyMismatch`], [`UnitError::Inconsistent`] and
    /// [`UnitError::Backend`] as for [`Unit::open`]. Errors name the store's
    /// [`StateStore::location`].
    pub fn from_parts(
        store: Box<dyn StateStore>,
        backend: Box<dyn Backend>,
        ca: CaCertificate,
        device_cert: DeviceCertificate,
    ) -> Result<Unit, UnitError> {
        let location = store.location().to_owned();
        let record = store
            .load()
            .map_err(io_err("read", &location))?
            .ok_or_else(|| UnitError::EmptyStore {
                location: location.clone(),
            })?;
        let state = state::State::from_json(&record, &location)?;
        let device_cert = DeviceCertificate::verify(device_cert.der(), &ca).map_err(|source| {
            UnitError::Certificate {
                path: location.clone(),
                source,
            }
        })?;
        if device_cert.unit_id() != state.unit_id {
            return Err(UnitError::ForeignCertificate {
                path: location,
                expected: state.unit_id,
                found: device_cert.unit_id(),
            });
        }
        if state.backend != backend.kind() {
            return Err(UnitError::BackendKind {
                path: location,
                recorded: state.backend,
                problem: "differs from the backend given",
            });
        }
        Self::assemble(None, store, state, ca, device_cert, backend)
    }

    fn read_files(
        dir: &Path,
        store: &dyn StateStore,
    ) -> Result<(state::State, CaCertificate, DeviceCertificate), UnitError> {
        let state_path = store.location().to_owned();
        if !dir.is_dir() {
            return Err(UnitError::NotAUnit {
                dir: dir.to_owned(),
                file: state_path,
            });
        }
        remove_stale_temporaries(dir);
        let bytes = store
            .load()
            .map_err(io_err("read", &state_path))?
            .ok_or_else(|| UnitError::NotAUnit {
                dir: dir.to_owned(),
                file: state_path.clone(),
            })?;
        let state = state::State::from_json(&bytes, &state_path)?;

        let ca_path = dir.join(CA_FILE);
        let ca_pem = fs::read_to_string(&ca_path).map_err(io_err("read", &ca_path))?;
        let ca = CaCertificate::from_pem(&ca_pem).map_err(|source| UnitError::Certificate {
            path: ca_path.clone(),
            source,
        })?;

        let dev_path = dir.join(DEVICE_FILE);
        let dev_pem = fs::read_to_string(&dev_path).map_err(io_err("read", &dev_path))?;
        let cert_err = |source| UnitError::Certificate {
            path: dev_path.clone(),
            source,
        };
        let (_, dev_der) = tke_proto::der::pem::decode_vec(dev_pem.as_bytes())
            .map_err(|e| cert_err(ProtoError::from(e)))?;
        let device_cert = DeviceCertificate::verify(&dev_der, &ca).map_err(cert_err)?;
        if device_cert.unit_id() != state.unit_id {
            return Err(UnitError::ForeignCertificate {
                path: dev_path,
                expected: state.unit_id,
                found: device_cert.unit_id(),
            });
        }
        Ok((state, ca, device_cert))
    }

    /// Checks the backend against the state and certificate, then destroys orphans.
    /// Errors name the files of `dir`, or the store's location for a unit without one.
    fn assemble(
        dir: Option<&Path>,
        store: Box<dyn StateStore>,
        state: state::State,
        ca: CaCertificate,
        device_cert: DeviceCertificate,
        mut backend: Box<dyn Backend>,
    ) -> Result<Unit, UnitError> {
        let unit = state.unit_id;
        let location = store.location().to_owned();
        let place = dir.map_or_else(|| location.clone(), Path::to_owned);
        let backend_err = |source| UnitError::Backend {
            unit,
            dir: place.clone(),
            source,
        };
        let cert_path = || dir.map_or_else(|| location.clone(), |d| d.join(DEVICE_FILE));
        if device_cert.verifying_key() != VerifyingKey::from(&backend.device_public_key()) {
            return Err(UnitError::DeviceKeyMismatch {
                unit,
                path: cert_path(),
                backend: backend.kind(),
            });
        }
        // The certificate's type is what peers and clients trust: the state must agree.
        if device_cert.unit_type() != state.unit_type {
            return Err(UnitError::CertifiedTypeMismatch {
                unit,
                path: cert_path(),
                recorded: state.unit_type,
                certified: device_cert.unit_type(),
            });
        }
        let inconsistent = |what| UnitError::Inconsistent {
            unit,
            dir: place.clone(),
            path: location.clone(),
            what,
        };
        let registers = [
            (
                state.current.slot(),
                "the backend lacks the current register's key",
                "the current register's key has another verification pattern than recorded",
            ),
            (
                state.new.slot(),
                "the backend lacks the new register's key",
                "the new register's key has another verification pattern than recorded",
            ),
        ];
        for (slot, missing, other_vp) in registers {
            let Some(slot) = slot else { continue };
            match backend.master_key_vp(&slot.key) {
                Ok(vp) if vp == slot.vp => {}
                Ok(_) => return Err(inconsistent(other_vp)),
                Err(BackendError::UnknownMasterKey { .. }) => return Err(inconsistent(missing)),
                Err(e) => return Err(backend_err(e)),
            }
        }
        if let Some(id) = state.importer {
            if !backend.has_importer(&id).map_err(backend_err)? {
                return Err(inconsistent("the backend lacks the pending importer key"));
            }
        }
        backend.retain(&state.live()).map_err(backend_err)?;
        let audit = match dir {
            Some(dir) => audit::AuditLog::open(dir, state.counter)
                .map_err(io_err("read", &dir.join(AUDIT_FILE)))?,
            None => audit::AuditLog::in_memory(),
        };
        Ok(Unit {
            dir: dir.map(Path::to_owned),
            store,
            backend,
            state,
            ca,
            device_cert,
            internal_errors: Vec::new(),
            latency: Latency::NONE,
            audit,
        })
    }

    fn write_state(&mut self) -> Result<(), UnitError> {
        let location = self.store.location().to_owned();
        let record = self
            .state
            .to_json()
            .map_err(|source| UnitError::StateSyntax {
                path: location.clone(),
                source,
            })?;
        self.store.save(&record).map_err(io_err("write", &location))
    }

    /// The unit's directory, or for a unit without one its store's location: where
    /// errors say the unit is.
    fn place(&self) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| self.store.location().to_owned())
    }

    /// The unit's id.
    pub fn id(&self) -> UnitId {
        self.state.unit_id
    }

    /// The unit's type.
    pub fn unit_type(&self) -> UnitType {
        self.state.unit_type
    }

    /// The unit's device certificate.
    pub fn device_certificate(&self) -> &DeviceCertificate {
        &self.device_cert
    }

    /// The fleet CA certificate the unit trusts.
    pub fn ca_certificate(&self) -> &CaCertificate {
        &self.ca
    }

    /// Where the unit keeps its secrets: its backend's kind (`soft`, `pkcs11`).
    pub fn backend_kind(&self) -> &'static str {
        self.backend.kind()
    }

    /// The unit's directory; `None` for a unit made from parts ([`Unit::from_parts`]).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Executes one request (DER of [`tke_proto::Request`]) and returns the DER of a
    /// [`tke_proto::SignedResponse`], signed by the device key. Never panics; malformed
    /// input gets a signed error response (rc 32) whose request hash is SHA-256 of the
    /// raw bytes. State changes are saved in the unit's store before the answer is
    /// returned. [`Unit::answer`] also tells why an internal error was answered.
    pub fn handle(&mut self, request_der: &[u8]) -> Vec<u8> {
        self.answer(request_der).response
    }

    /// As [`Unit::handle`], and returns beside the response the cause of every internal
    /// error the unit answered (such as a state save that failed), for the host to log:
    /// the client only sees "internal error".
    pub fn answer(&mut self, request_der: &[u8]) -> Answer {
        if !self.latency.is_none() {
            // Stands in for a real HSM's round trip (test and benchmark tooling): the
            // unit stays busy meanwhile, as a real one does.
            std::thread::sleep(self.latency.duration());
        }
        self.answer_request(request_der)
    }

    /// Makes the unit wait `latency` before answering each request, query or command
    /// (test and benchmark tooling, off by default): an emulated unit then answers as
    /// slowly as a real HSM, so that fan-out figures measure the ceremony's design rather
    /// than the cores the emulated units share with the client. Not saved with the unit:
    /// whoever opens it sets it.
    pub fn set_latency(&mut self, latency: Latency) {
        self.latency = latency;
    }

    /// The latency set by [`Unit::set_latency`] ([`Latency::NONE`] by default).
    pub fn latency(&self) -> Latency {
        self.latency
    }

    /// Destroys the unit: every secret of its backend, the device key included (a token's
    /// objects are destroyed; the token itself stays, free for another unit), then its
    /// state (removed from its store), then the unit's own files in its directory, and the
    /// directory if it is left empty. For a unit that must not survive, such as one of a
    /// fleet whose creation failed.
    ///
    /// # Errors
    /// [`UnitError::Backend`] when the backend cannot destroy its secrets (the state and
    /// files are then kept, so that the unit can be opened and discarded again);
    /// [`UnitError::Io`] for a state or file that cannot be removed.
    pub fn discard(mut self) -> Result<(), UnitError> {
        let unit = self.state.unit_id;
        self.backend
            .discard()
            .map_err(|source| UnitError::Backend {
                unit,
                dir: self.place(),
                source,
            })?;
        // The state first: without it, what is left is no unit.
        self.store
            .remove()
            .map_err(io_err("remove", self.store.location()))?;
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        for name in [CA_FILE, DEVICE_FILE, SECRETS_FILE, PKCS11_FILE, AUDIT_FILE] {
            let path = dir.join(name);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(UnitError::Io {
                        action: "remove",
                        path,
                        source,
                    })
                }
            }
        }
        let _ = fs::remove_dir(dir);
        Ok(())
    }

    /// The current status (same as a query's answer), for tests and tools.
    pub fn status(&self) -> UnitStatus {
        self.state.status()
    }
}

/// A unit directory of a journal that holds records not yet in the unit files is opened
/// through the journal only: its `unit.json` may be older than what the unit answered.
fn refuse_pending_journal(dir: &Path) -> Result<(), UnitError> {
    match journal::pending(dir) {
        Some(journal) => Err(UnitError::StateInJournal {
            dir: dir.to_owned(),
            journal,
        }),
        None => Ok(()),
    }
}

/// Writes the certificates of a new unit in its directory.
fn write_certificates(
    dir: &Path,
    unit_id: UnitId,
    ca: &CaCertificate,
    device_cert: &DeviceCertificate,
) -> Result<(), UnitError> {
    let pem = |r: Result<String, ProtoError>| {
        r.map_err(|source| UnitError::Issue {
            unit: unit_id,
            source,
        })
    };
    let ca_path = dir.join(CA_FILE);
    atomic::write_private(&ca_path, pem(ca.to_pem())?.as_bytes())
        .map_err(io_err("write", &ca_path))?;
    let dev_path = dir.join(DEVICE_FILE);
    atomic::write_private(&dev_path, pem(device_cert.to_pem())?.as_bytes())
        .map_err(io_err("write", &dev_path))
}

/// Removes the temporary files an interrupted atomic write leaves
/// (`.<name>.tmp-<random>`, for the unit's own files only).
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let stale = [
            STATE_FILE,
            CA_FILE,
            DEVICE_FILE,
            SECRETS_FILE,
            PKCS11_FILE,
            AUDIT_FILE,
        ]
        .iter()
        .any(|f| name.starts_with(&format!(".{f}.tmp-")));
        if stale && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod redaction_tests;
