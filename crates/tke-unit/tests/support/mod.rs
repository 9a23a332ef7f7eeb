//! Test fixtures shared by every backend's tests: a fleet CA, administrators with
//! in-memory keys, a unit factory per backend and state store, and helpers that send
//! requests and verify every response exactly as a client does.

#![allow(dead_code)]

pub mod softhsm;

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use tke_proto::{
    der::{Decode, Encode},
    p256::{
        ecdsa::{signature::Signer as _, Signature, SigningKey},
        PublicKey,
    },
    CaCertificate, Command, DeviceCertificate, InstanceId, ModuleError, Nonce, ProtoError, Query,
    Request, ResponseBody, SignedCommand, SignedResponse, UnitDescription, UnitId, UnitStatus,
    UnitType,
};
use tke_sigkey::{sign_command, Signer};
use tke_unit::{
    Backend, InternalError, MemorySecrets, MemoryStore, Pkcs11Backend, Pkcs11Config, SoftBackend,
    StateStore, Unit,
};

/// Administrators whose keys are in memory (shared with the benches).
pub use tke_test_support::MemSigner;

/// `n` administrators named admin1..adminN.
pub fn admins(n: usize) -> Vec<MemSigner> {
    (1..=n)
        .map(|i| MemSigner::new(&format!("admin{i}")))
        .collect()
}

/// A fleet CA whose key the test holds, and the service instance its units belong to.
pub struct Fleet {
    key: SigningKey,
    pub ca: CaCertificate,
    pub instance: InstanceId,
}

impl Fleet {
    pub fn new(name: &str) -> Self {
        let key = SigningKey::random(&mut rand_core::OsRng);
        let k2 = key.clone();
        let ca = CaCertificate::build(
            name,
            &PublicKey::from(key.verifying_key()),
            Box::new(move |m| {
                let s: Signature = k2.sign(m);
                Ok(s.to_der())
            }),
        )
        .unwrap();
        Self {
            key,
            ca,
            instance: InstanceId::random(),
        }
    }

    /// The same fleet CA for units of another service instance.
    pub fn another_instance(&self) -> Self {
        Self {
            key: self.key.clone(),
            ca: self.ca.clone(),
            instance: InstanceId::random(),
        }
    }

    /// Issues a device certificate for `unit_id`, a unit of `unit_type` in the fleet's
    /// instance.
    pub fn issue(
        &self,
        unit_id: UnitId,
        unit_type: UnitType,
        device_key: &PublicKey,
    ) -> Result<DeviceCertificate, ProtoError> {
        let description = UnitDescription {
            unit_type,
            instance_id: self.instance,
        };
        self.issue_described(unit_id, &description, device_key)
    }

    /// Issues a device certificate for `unit_id` that states `description` (which may
    /// name another instance than the fleet's).
    pub fn issue_described(
        &self,
        unit_id: UnitId,
        description: &UnitDescription,
        device_key: &PublicKey,
    ) -> Result<DeviceCertificate, ProtoError> {
        let k = self.key.clone();
        DeviceCertificate::issue(
            &self.ca,
            &unit_id,
            description,
            device_key,
            Box::new(move |m| {
                let s: Signature = k.sign(m);
                Ok(s.to_der())
            }),
        )
    }
}

/// Makes and reopens units of one backend. Every shared test body takes one.
pub trait UnitFactory {
    /// The backend's name, for messages.
    fn name(&self) -> &'static str;
    /// Creates a unit in `dir` (absent or empty) for `fleet`.
    fn create(&self, dir: &Path, unit_id: UnitId, unit_type: UnitType, fleet: &Fleet) -> Unit;
    /// Reopens the unit in `dir`.
    fn reopen(&self, dir: &Path) -> Unit;
}

/// The soft backend.
pub struct SoftFactory;

impl UnitFactory for SoftFactory {
    fn name(&self) -> &'static str {
        "soft"
    }
    fn create(&self, dir: &Path, unit_id: UnitId, unit_type: UnitType, fleet: &Fleet) -> Unit {
        Unit::create_soft(dir, unit_id, unit_type, &fleet.ca, &mut |pk| {
            fleet.issue(unit_id, unit_type, pk)
        })
        .unwrap()
    }
    fn reopen(&self, dir: &Path) -> Unit {
        Unit::open(dir).unwrap()
    }
}

/// The PKCS#11 backend on SoftHSM2: each unit gets a token of its own from the test
/// binary's pool ([`softhsm::pool`]).
pub struct Pkcs11Factory;

impl Pkcs11Factory {
    /// Creates a unit on the token of `config`.
    pub fn create_on(
        dir: &Path,
        unit_id: UnitId,
        unit_type: UnitType,
        fleet: &Fleet,
        config: &Pkcs11Config,
    ) -> Unit {
        Unit::create_pkcs11(dir, unit_id, unit_type, &fleet.ca, config, &mut |pk| {
            fleet.issue(unit_id, unit_type, pk)
        })
        .unwrap()
    }
}

impl UnitFactory for Pkcs11Factory {
    fn name(&self) -> &'static str {
        "pkcs11"
    }
    fn create(&self, dir: &Path, unit_id: UnitId, unit_type: UnitType, fleet: &Fleet) -> Unit {
        let config = softhsm::pool().config();
        Self::create_on(dir, unit_id, unit_type, fleet, &config)
    }
    fn reopen(&self, dir: &Path) -> Unit {
        Unit::open(dir).unwrap()
    }
}

/// Where a [`MemoryFactory`] keeps a unit's secrets.
#[derive(Clone, Copy, Debug)]
pub enum MemorySecretsIn {
    /// A soft backend in memory: the unit touches no file.
    Soft,
    /// A token of the pool ([`softhsm::pool`]).
    Token,
}

/// Units made from parts with their state in memory (a [`MemoryStore`] behind a
/// [`SwitchStore`]), and their secrets in memory or on a token. The factory keeps each
/// unit's parts under the directory name the test gives it (nothing is written there) to
/// reopen it from them.
pub struct MemoryFactory {
    secrets: MemorySecretsIn,
    units: Mutex<HashMap<PathBuf, MemoryParts>>,
}

/// What reopens a unit of a [`MemoryFactory`].
struct MemoryParts {
    id: UnitId,
    unit_type: UnitType,
    store: SwitchStore,
    soft: Option<MemorySecrets>,
    token: Option<Pkcs11Config>,
    ca: CaCertificate,
    device: DeviceCertificate,
}

impl MemoryFactory {
    /// State and secrets in memory.
    pub fn soft() -> Self {
        Self::new(MemorySecretsIn::Soft)
    }

    /// State in memory, secrets on a SoftHSM2 token.
    pub fn token() -> Self {
        Self::new(MemorySecretsIn::Token)
    }

    fn new(secrets: MemorySecretsIn) -> Self {
        Self {
            secrets,
            units: Mutex::new(HashMap::new()),
        }
    }

    /// Makes every later save of the unit created under `dir` fail (or succeed again).
    pub fn fail_saves(&self, dir: &Path, fail: bool) {
        self.units.lock().unwrap()[dir]
            .store
            .fail
            .store(fail, Ordering::SeqCst);
    }

    /// The token configuration of the unit created under `dir` (secrets on a token).
    pub fn token_config(&self, dir: &Path) -> Pkcs11Config {
        self.units.lock().unwrap()[dir].token.clone().unwrap()
    }

    /// The record the state store of the unit created under `dir` holds.
    pub fn saved(&self, dir: &Path) -> Option<Vec<u8>> {
        self.units.lock().unwrap()[dir].store.load().unwrap()
    }
}

impl UnitFactory for MemoryFactory {
    fn name(&self) -> &'static str {
        match self.secrets {
            MemorySecretsIn::Soft => "memory store, soft secrets in memory",
            MemorySecretsIn::Token => "memory store, secrets on a token",
        }
    }
    fn create(&self, dir: &Path, unit_id: UnitId, unit_type: UnitType, fleet: &Fleet) -> Unit {
        let store = SwitchStore::default();
        let (backend, soft, token): (Box<dyn Backend>, _, _) = match self.secrets {
            MemorySecretsIn::Soft => {
                let secrets = MemorySecrets::new();
                let backend = SoftBackend::create_in_memory(&secrets, unit_id).unwrap();
                (Box::new(backend), Some(secrets), None)
            }
            MemorySecretsIn::Token => {
                let config = softhsm::pool().config();
                let backend = Pkcs11Backend::create_on_token(&config, unit_id, unit_type).unwrap();
                (Box::new(backend), None, Some(config))
            }
        };
        let unit = Unit::create_from_parts(
            Box::new(store.clone()),
            backend,
            unit_id,
            unit_type,
            &fleet.ca,
            &mut |pk| fleet.issue(unit_id, unit_type, pk),
        )
        .unwrap();
        assert_eq!(unit.dir(), None);
        assert!(!dir.exists(), "a unit made from parts writes no file");
        let parts = MemoryParts {
            id: unit_id,
            unit_type,
            store,
            soft,
            token,
            ca: unit.ca_certificate().clone(),
            device: unit.device_certificate().clone(),
        };
        assert!(self
            .units
            .lock()
            .unwrap()
            .insert(dir.to_owned(), parts)
            .is_none());
        unit
    }
    fn reopen(&self, dir: &Path) -> Unit {
        let units = self.units.lock().unwrap();
        let p = &units[dir];
        let backend: Box<dyn Backend> = match (&p.soft, &p.token) {
            (Some(secrets), _) => Box::new(SoftBackend::open_in_memory(secrets, p.id).unwrap()),
            (None, Some(config)) => {
                Box::new(Pkcs11Backend::open_on_token(config, p.id, p.unit_type).unwrap())
            }
            (None, None) => unreachable!("every unit has its secrets somewhere"),
        };
        Unit::from_parts(
            Box::new(p.store.clone()),
            backend,
            p.ca.clone(),
            p.device.clone(),
        )
        .unwrap()
    }
}

/// A [`MemoryStore`] whose saves fail while its switch is on (clones share both).
#[derive(Clone, Debug, Default)]
pub struct SwitchStore {
    inner: MemoryStore,
    fail: Arc<AtomicBool>,
}

/// The error a [`SwitchStore`] fails with.
pub const SAVE_FAILURE: &str = "the test made this save fail";

impl StateStore for SwitchStore {
    fn location(&self) -> &Path {
        self.inner.location()
    }
    fn load(&self) -> io::Result<Option<Vec<u8>>> {
        self.inner.load()
    }
    fn save(&mut self, record: &[u8]) -> io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::StorageFull, SAVE_FAILURE));
        }
        self.inner.save(record)
    }
    fn remove(&mut self) -> io::Result<()> {
        self.inner.remove()
    }
}

/// Sends raw bytes and verifies the answer as a client does: signed by the unit's device
/// key (whose certificate chains to `ca`), bound to this unit and these exact bytes,
/// carrying the unit's counter.
pub fn send_raw(unit: &mut Unit, ca: &CaCertificate, request: &[u8]) -> ResponseBody {
    send_reporting(unit, ca, request).0
}

/// As [`send_raw`], and returns what the unit reports to its host beside the response:
/// every internal error's cause, present exactly when the answer is an internal error.
pub fn send_reporting(
    unit: &mut Unit,
    ca: &CaCertificate,
    request: &[u8],
) -> (ResponseBody, Vec<InternalError>) {
    let device = DeviceCertificate::verify(unit.device_certificate().der(), ca).unwrap();
    let answer = unit.answer(request);
    let signed = SignedResponse::from_der(&answer.response).unwrap();
    let body = signed
        .verify(&device.verifying_key(), &unit.id(), request)
        .unwrap();
    assert_eq!(
        body.counter,
        unit.status().counter,
        "the response carries the unit's counter"
    );
    assert_eq!(
        answer.internal_errors.is_empty(),
        body.error() != Some(ModuleError::INTERNAL),
        "causes reported exactly for internal errors: {:?}",
        answer.internal_errors
    );
    (body, answer.internal_errors)
}

/// Sends a request.
pub fn send(unit: &mut Unit, ca: &CaCertificate, request: &Request) -> ResponseBody {
    send_raw(unit, ca, &request.to_der().unwrap())
}

/// Signs `command` for the unit's next counter with `signers` and sends it.
pub fn run(
    unit: &mut Unit,
    ca: &CaCertificate,
    command: &Command,
    signers: &[&MemSigner],
) -> ResponseBody {
    let counter = unit.status().counter + 1;
    run_at(unit, ca, command, counter, signers)
}

/// Signs `command` for `counter` and sends it.
pub fn run_at(
    unit: &mut Unit,
    ca: &CaCertificate,
    command: &Command,
    counter: u64,
    signers: &[&MemSigner],
) -> ResponseBody {
    let signed = signed_command(unit.id(), counter, command, signers);
    send(unit, ca, &Request::Command(signed))
}

/// Signs the raw command `id` with `input` (which need not decode) for the unit's next
/// counter with `signers`, and sends it.
pub fn run_raw(
    unit: &mut Unit,
    ca: &CaCertificate,
    id: tke_proto::CommandId,
    input: Vec<u8>,
    signers: &[&MemSigner],
) -> ResponseBody {
    let wire = tke_proto::AdminCommand {
        unit_id: unit.id(),
        counter: unit.status().counter + 1,
        command: id,
        input: tke_proto::der::asn1::OctetString::new(input).unwrap(),
    };
    let signers: Vec<&dyn Signer> = signers.iter().map(|s| *s as &dyn Signer).collect();
    let signed = sign_command(&wire, &signers).unwrap();
    send(unit, ca, &Request::Command(signed))
}

/// A signed command for `unit_id` at `counter`.
pub fn signed_command(
    unit_id: UnitId,
    counter: u64,
    command: &Command,
    signers: &[&MemSigner],
) -> SignedCommand {
    let wire = command.to_wire(unit_id, counter).unwrap();
    let signers: Vec<&dyn Signer> = signers.iter().map(|s| *s as &dyn Signer).collect();
    sign_command(&wire, &signers).unwrap()
}

/// Queries the unit (signed, verified, invariants checked).
pub fn query(unit: &mut Unit, ca: &CaCertificate) -> UnitStatus {
    let q = Request::Query(Query {
        unit_id: unit.id(),
        nonce: Nonce::random(),
    });
    let body = send(unit, ca, &q);
    assert_eq!(body.error(), None);
    let status = UnitStatus::decode_checked(body.output.as_bytes()).unwrap();
    assert_eq!(status, unit.status(), "a query answers what status() says");
    status
}

/// Asserts success and returns the output.
#[track_caller]
pub fn ok(body: ResponseBody) -> Vec<u8> {
    assert_eq!(
        body.error(),
        None,
        "expected success, got {:?}",
        body.error().map(|e| e.to_string())
    );
    body.output.as_bytes().to_vec()
}

/// Asserts the module error.
#[track_caller]
pub fn fails(body: &ResponseBody, expected: ModuleError) {
    assert_eq!(
        body.error(),
        Some(expected),
        "expected {expected}, got {:?}",
        body.error().map(|e| e.to_string())
    );
    assert!(
        body.output.as_bytes().is_empty(),
        "an error carries no output"
    );
}

/// Installs `admins` in imprint mode (unsigned) and leaves imprint mode with thresholds
/// `sig`/`rev`, signed by the first `sig` administrators.
pub fn init(unit: &mut Unit, ca: &CaCertificate, admins: &[MemSigner], sig: u32, rev: u32) {
    add_admins(unit, ca, admins);
    leave_imprint_mode(unit, ca, admins, sig, rev);
}

/// Installs `admins` in imprint mode (unsigned).
pub fn add_admins(unit: &mut Unit, ca: &CaCertificate, admins: &[MemSigner]) {
    for a in admins {
        ok(run(
            unit,
            ca,
            &Command::AddAdmin(a.certificate().clone()),
            &[],
        ));
    }
}

/// Sets the thresholds `sig`/`rev`, signed by the first `sig` of `admins`.
pub fn leave_imprint_mode(
    unit: &mut Unit,
    ca: &CaCertificate,
    admins: &[MemSigner],
    sig: u32,
    rev: u32,
) {
    let signers: Vec<&MemSigner> = admins.iter().take(sig as usize).collect();
    ok(run(
        unit,
        ca,
        &Command::SetThresholds {
            signature: tke_proto::Threshold::new(sig).unwrap(),
            revocation: tke_proto::Threshold::new(rev).unwrap(),
        },
        &signers,
    ));
}
