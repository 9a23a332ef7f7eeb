//! Test fixtures shared by every backend's tests: a fleet CA, administrators with
//! in-memory keys, a unit factory per backend, and helpers that send requests and verify
//! every response exactly as a client does.

#![allow(dead_code)]

pub mod softhsm;

use std::path::Path;

use tke_proto::{
    der::{Decode, Encode},
    p256::{
        ecdsa::{signature::Signer as _, DerSignature, Signature, SigningKey},
        PublicKey,
    },
    AdminCertificate, AdminName, CaCertificate, Command, DeviceCertificate, ModuleError, Nonce,
    ProtoError, Query, Request, ResponseBody, SignedCommand, SignedResponse, UnitId, UnitStatus,
    UnitType,
};
use tke_sigkey::{sign_command, SignError, Signer, SignerKind};
use tke_unit::{Pkcs11Config, Unit};

/// An administrator whose key is in memory.
pub struct TestAdmin {
    key: SigningKey,
    cert: AdminCertificate,
}

impl TestAdmin {
    pub fn new(name: &str) -> Self {
        let key = SigningKey::random(&mut rand_core::OsRng);
        let k2 = key.clone();
        let cert = AdminCertificate::build(
            &AdminName::new(name).unwrap(),
            &PublicKey::from(key.verifying_key()),
            Box::new(move |m| {
                let s: Signature = k2.sign(m);
                Ok(s.to_der())
            }),
        )
        .unwrap();
        Self { key, cert }
    }

    pub fn cert(&self) -> AdminCertificate {
        self.cert.clone()
    }
}

impl Signer for TestAdmin {
    fn certificate(&self) -> &AdminCertificate {
        &self.cert
    }
    fn kind(&self) -> SignerKind {
        SignerKind::File
    }
    fn sign(&self, msg: &[u8]) -> Result<DerSignature, SignError> {
        let sig: Signature = self.key.sign(msg);
        Ok(sig.to_der())
    }
}

/// `n` administrators named admin1..adminN.
pub fn admins(n: usize) -> Vec<TestAdmin> {
    (1..=n)
        .map(|i| TestAdmin::new(&format!("admin{i}")))
        .collect()
}

/// A fleet CA whose key the test holds.
pub struct Fleet {
    key: SigningKey,
    pub ca: CaCertificate,
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
        Self { key, ca }
    }

    /// Issues a device certificate for `unit_id`.
    pub fn issue(
        &self,
        unit_id: UnitId,
        device_key: &PublicKey,
    ) -> Result<DeviceCertificate, ProtoError> {
        let k = self.key.clone();
        DeviceCertificate::issue(
            &self.ca,
            &unit_id,
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
            fleet.issue(unit_id, pk)
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
            fleet.issue(unit_id, pk)
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

/// Sends raw bytes and verifies the answer as a client does: signed by the unit's device
/// key (whose certificate chains to `ca`), bound to this unit and these exact bytes,
/// carrying the unit's counter.
pub fn send_raw(unit: &mut Unit, ca: &CaCertificate, request: &[u8]) -> ResponseBody {
    let device = DeviceCertificate::verify(unit.device_certificate().der(), ca).unwrap();
    let answer = unit.handle(request);
    let signed = SignedResponse::from_der(&answer).unwrap();
    let body = signed
        .verify(&device.verifying_key(), &unit.id(), request)
        .unwrap();
    assert_eq!(
        body.counter,
        unit.status().counter,
        "the response carries the unit's counter"
    );
    body
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
    signers: &[&TestAdmin],
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
    signers: &[&TestAdmin],
) -> ResponseBody {
    let signed = signed_command(unit.id(), counter, command, signers);
    send(unit, ca, &Request::Command(signed))
}

/// A signed command for `unit_id` at `counter`.
pub fn signed_command(
    unit_id: UnitId,
    counter: u64,
    command: &Command,
    signers: &[&TestAdmin],
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
pub fn init(unit: &mut Unit, ca: &CaCertificate, admins: &[TestAdmin], sig: u32, rev: u32) {
    for a in admins {
        ok(run(unit, ca, &Command::AddAdmin(a.cert()), &[]));
    }
    let signers: Vec<&TestAdmin> = admins.iter().take(sig as usize).collect();
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
