#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a fuzz target's asserts are its findings

use std::sync::{Mutex, OnceLock};

use p256::{
    ecdsa::{signature::Signer as _, Signature, SigningKey},
    PublicKey,
};
use tke_ceremony::approvals::{CeremonyFile, Round, UnitCommand};
use tke_proto::{
    der::{Decode, Encode},
    parts::{seal_parts, MasterKeyPart, MkPartsRequest},
    transport::{CertifiedImporter, ExportRequest, MkEnvelope, SignedEnvelope},
    AdminCertificate, AdminCommand, AuditLog, AuditPage, AuditQuery, AuditRecord, CaCertificate,
    Command, ControlPoint, ControlPoints, DeviceCertificate, InstanceId, Nonce, Query, Register,
    Request, ResponseBody, SignedCommand, SignedResponse, Threshold, UnitDescription, UnitId,
    UnitStatus, UnitType,
};
use tke_sigkey::{sign_command, Signer};
use tke_test_support::MemSigner;
use tke_unit::{MemorySecrets, MemoryStore, SoftBackend, Unit};

/// A fuzz target: panics only on a bug.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus directory and fuzzer binary.
pub const TARGETS: [(&str, Target); 9] = [
    ("request", request),
    ("response", response),
    ("envelope", envelope),
    ("certificate", certificate),
    ("key_file", key_file),
    ("pkcs11_uri", pkcs11_uri),
    ("http_head", http_head),
    ("unit", unit),
    ("ceremony_file", ceremony_file),
];

/// Asserts that DER `input`, which decoded to `value`, encodes back to exactly `input`.
fn canonical<T: Encode>(what: &str, value: &T, input: &[u8]) {
    let again = value.to_der().expect("a decoded value encodes");
    assert_eq!(
        again, input,
        "{what} decoded from bytes it does not encode to"
    );
}

/// What a client sends a unit: `Request`, then the `AdminCommand` inside a command, then
/// the typed command input (`Command::from_wire`).
pub fn request(data: &[u8]) {
    let Ok(req) = Request::from_der(data) else {
        return;
    };
    canonical("Request", &req, data);
    let Request::Command(signed) = req else {
        return;
    };
    let Ok(wire) = AdminCommand::from_der(signed.command.as_bytes()) else {
        return;
    };
    canonical("AdminCommand", &wire, signed.command.as_bytes());
    if let Ok(typed) = Command::from_wire(wire.command, wire.input.as_bytes()) {
        assert_eq!(
            typed.input_bytes().expect("a decoded input encodes"),
            wire.input.as_bytes(),
            "the input of {:?} decoded from bytes it does not encode to",
            wire.command
        );
    }
}

/// What a unit answers: `SignedResponse` (verified as a client verifies it), and the
/// `ResponseBody`, `UnitStatus` and `AuditPage` inside one (which a fuzzer cannot sign, so
/// they are decoded directly); a page's records are checked as `tke cryptounit-audit`
/// checks them.
pub fn response(data: &[u8]) {
    let w = world();
    if let Ok(r) = SignedResponse::from_der(data) {
        canonical("SignedResponse", &r, data);
        let _ = r.verify(&w.device_cert.verifying_key(), &w.unit_id, b"request");
    }
    if let Ok(b) = ResponseBody::from_der(data) {
        canonical("ResponseBody", &b, data);
    }
    if let Ok(s) = UnitStatus::decode_checked(data) {
        canonical("UnitStatus", &s, data);
    }
    if let Ok(p) = AuditPage::decode_checked(data) {
        canonical("AuditPage", &p, data);
        let records: Vec<Vec<u8>> = p.records.iter().map(|r| r.as_bytes().to_vec()).collect();
        for r in &records {
            if let Ok(record) = AuditRecord::decode_checked(r) {
                canonical("AuditRecord", &record, r);
            }
        }
        let log = AuditLog {
            counter: p
                .first
                .saturating_add(records.len() as u64)
                .saturating_sub(1),
            first: p.first,
            head: p.head,
            start: p.first,
            prev: p.prev,
            records,
        };
        let _ = tke_proto::audit::verify_chain(&log);
    }
}

/// What moves a master key: `SignedEnvelope` (verified against the fleet CA), `MkEnvelope`,
/// `CertifiedImporter` (verified against a device certificate), `ExportRequest`, and the
/// key parts of `importMkParts` (`MkPartsRequest`).
pub fn envelope(data: &[u8]) {
    let w = world();
    if let Ok(e) = SignedEnvelope::from_der(data) {
        canonical("SignedEnvelope", &e, data);
        let _ = e.verify(&w.ca);
    }
    if let Ok(e) = MkEnvelope::from_der(data) {
        canonical("MkEnvelope", &e, data);
    }
    if let Ok(c) = CertifiedImporter::from_der(data) {
        canonical("CertifiedImporter", &c, data);
        let _ = c.verify(&w.device_cert);
    }
    if let Ok(r) = ExportRequest::from_der(data) {
        canonical("ExportRequest", &r, data);
    }
    if let Ok(r) = MkPartsRequest::from_der(data) {
        canonical("MkPartsRequest", &r, data);
    }
}

/// A ceremony file (`tke approve`, `tke apply`): whatever decodes writes back to JSON
/// that decodes to the same file, and that JSON is stable.
pub fn ceremony_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = CeremonyFile::from_json(text) else {
        return;
    };
    let json = file.to_json();
    let again = CeremonyFile::from_json(&json).expect("a ceremony file's own JSON decodes");
    assert_eq!(
        again, file,
        "a ceremony file decodes to another file than it wrote"
    );
    assert_eq!(
        again.to_json(),
        json,
        "a ceremony file's JSON is not stable"
    );
}

/// A ceremony file of two units' commands, approved by the world's administrator.
fn ceremony_file_seed(w: &World) -> Vec<u8> {
    let two = Threshold::new(2).unwrap();
    let commands = [
        Command::AddAdmin(w.admin.certificate().clone()),
        Command::SetThresholds {
            signature: two,
            revocation: two,
        },
    ];
    let commands = commands
        .into_iter()
        .enumerate()
        .map(|(i, command)| {
            let admin_command = command.to_wire(UnitId::random(), 5 + i as u64).unwrap();
            UnitCommand {
                num: i + 1,
                bytes: admin_command.to_der().unwrap(),
                admin_command,
                command,
                approvals: Vec::new(),
                answer: None,
            }
        })
        .collect();
    let mut file = CeremonyFile {
        ceremony: None,
        rounds: vec![Round::planned(commands)],
        force_with_keys: Vec::new(),
    };
    file.approve(&w.admin).unwrap();
    file.to_json().into_bytes()
}

/// Certificates: administrator, fleet CA, device (verified against the fleet CA).
pub fn certificate(data: &[u8]) {
    let w = world();
    if let Ok(c) = AdminCertificate::from_der(data) {
        assert_eq!(
            c.der(),
            data,
            "AdminCertificate keeps other bytes than it read"
        );
    }
    if let Ok(c) = CaCertificate::from_der(data) {
        assert_eq!(
            c.der(),
            data,
            "CaCertificate keeps other bytes than it read"
        );
    }
    let _ = DeviceCertificate::verify(data, &w.ca);
}

/// An encrypted key file as read before any password is asked (`tke_pkcs8::check`: the
/// PEM, the PBES2 parameters and their limits). Decryption itself is not fuzzed: it runs
/// the KDF (scrypt, by design tens of milliseconds) before anything else is read.
pub fn key_file(data: &[u8]) {
    let _ = tke_pkcs8::check(data);
}

/// An RFC 7512 PKCS#11 URI: one that parses prints back to a URI that parses to the same.
pub fn pkcs11_uri(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(uri) = tke_sigkey_pkcs11::Pkcs11Uri::parse(text) {
        let printed = uri.to_string();
        let again = tke_sigkey_pkcs11::Pkcs11Uri::parse(&printed).unwrap_or_else(|e| {
            panic!("{text:?} parses, prints as {printed:?}, which does not: {e}")
        });
        assert_eq!(again.to_string(), printed, "{text:?} does not print stably");
    }
}

/// The HTTP request head as `tke-unitd` reads it.
pub fn http_head(data: &[u8]) {
    const MAX: usize = 16 * 1024;
    if let Ok(Some((_, used))) = tke_server::http::parse_head(data, MAX) {
        assert!(used <= data.len() && used <= MAX, "head of {used} bytes");
    }
}

/// A crypto unit (in memory, soft backend) answering the input as a request: every answer
/// must be a response signed by the unit's device key and bound to that request, and no
/// input may cause an internal error.
pub fn unit(data: &[u8]) {
    let w = world();
    let mut unit = w.unit.lock().unwrap_or_else(|p| p.into_inner());
    let answer = unit.answer(data);
    assert!(
        answer.internal_errors.is_empty(),
        "internal errors: {:?}",
        answer.internal_errors
    );
    let signed = SignedResponse::from_der(&answer.response).expect("the answer decodes");
    signed
        .verify(&w.device_cert.verifying_key(), &w.unit_id, data)
        .expect("the answer is signed and bound to the request");
}

/// The fixed world the targets run in: a fleet CA, one operational unit in memory (imprint
/// mode at first; the fuzzer may install administrators), an administrator.
struct World {
    ca: CaCertificate,
    ca_key: SigningKey,
    instance: InstanceId,
    unit_id: UnitId,
    device_cert: DeviceCertificate,
    unit: Mutex<Unit>,
    admin: MemSigner,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(World::new)
}

impl World {
    fn new() -> Self {
        let ca_key = SigningKey::random(&mut rand_core::OsRng);
        let k = ca_key.clone();
        let ca = CaCertificate::build(
            "Fuzz fleet CA",
            &PublicKey::from(ca_key.verifying_key()),
            Box::new(move |m| Ok(Signature::to_der(&k.sign(m)))),
        )
        .unwrap();
        let instance = InstanceId::random();
        let (unit, unit_id, device_cert) = make_unit(&ca, &ca_key, instance, UnitType::Operational);
        Self {
            ca,
            ca_key,
            instance,
            unit_id,
            device_cert,
            unit: Mutex::new(unit),
            admin: MemSigner::new("fuzz-admin"),
        }
    }
}

/// A new in-memory unit of `instance`, certified by the CA.
fn make_unit(
    ca: &CaCertificate,
    ca_key: &SigningKey,
    instance: InstanceId,
    unit_type: UnitType,
) -> (Unit, UnitId, DeviceCertificate) {
    let id = UnitId::random();
    let backend = SoftBackend::create_in_memory(&MemorySecrets::new(), id).unwrap();
    let mut cert = None;
    let unit = Unit::create_from_parts(
        Box::new(MemoryStore::new()),
        Box::new(backend),
        id,
        unit_type,
        ca,
        &mut |pk| {
            let k = ca_key.clone();
            let c = DeviceCertificate::issue(
                ca,
                &id,
                &UnitDescription {
                    unit_type,
                    instance_id: instance,
                },
                pk,
                Box::new(move |m| Ok(Signature::to_der(&k.sign(m)))),
            )?;
            cert = Some(c.clone());
            Ok(c)
        },
    )
    .unwrap();
    (unit, id, cert.unwrap())
}

/// Runs `command` on `unit` at counter `counter + 1`, signed by `signers`; panics on a
/// refusal (seeds are made from commands that succeed).
fn run(
    unit: &mut Unit,
    id: UnitId,
    counter: u64,
    command: &Command,
    signers: &[&dyn Signer],
) -> (Vec<u8>, Vec<u8>) {
    let wire = command.to_wire(id, counter + 1).unwrap();
    let signed = if signers.is_empty() {
        SignedCommand::unsigned(&wire).unwrap()
    } else {
        sign_command(&wire, signers).unwrap()
    };
    let request = Request::Command(signed).to_der().unwrap();
    let answer = unit.answer(&request);
    let resp = SignedResponse::from_der(&answer.response).unwrap();
    let body = ResponseBody::from_der(resp.body.as_bytes()).unwrap();
    assert_eq!(
        body.return_code,
        0,
        "seed command {:?} refused",
        command.id()
    );
    (request, body.output.as_bytes().to_vec())
}

/// A starting corpus for every target: valid inputs of each kind, made by running a small
/// ceremony between two units of the world's fleet (administrator installed, thresholds
/// set, a random master key generated in a recovery unit and exported to the world's
/// unit's importer key). The world's unit itself is left in imprint mode.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let w = world();
    let mut out: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let admin: &dyn Signer = &w.admin;
    out.push(("ceremony_file", ceremony_file_seed(w)));

    // A query and its signed answer, from the world's unit.
    let query = Request::Query(Query {
        unit_id: w.unit_id,
        nonce: Nonce::random(),
    })
    .to_der()
    .unwrap();
    let answer = w.unit.lock().unwrap().answer(&query).response;
    let signed = SignedResponse::from_der(&answer).unwrap();
    let body = ResponseBody::from_der(signed.body.as_bytes()).unwrap();
    out.push(("request", query.clone()));
    out.push(("unit", query));
    out.push(("response", answer));
    out.push(("response", signed.body.as_bytes().to_vec()));
    out.push(("response", body.output.as_bytes().to_vec()));

    // A recovery unit R and an operational unit T of the same instance, initialized.
    let (mut r, r_id, r_cert) = make_unit(&w.ca, &w.ca_key, w.instance, UnitType::Recovery);
    let (mut t, t_id, t_cert) = make_unit(&w.ca, &w.ca_key, w.instance, UnitType::Operational);
    let one = Threshold::new(1).unwrap();
    let add = Command::AddAdmin(w.admin.certificate().clone());
    let thresholds = Command::SetThresholds {
        signature: one,
        revocation: one,
    };
    for (u, id) in [(&mut r, r_id), (&mut t, t_id)] {
        let (req, _) = run(u, id, 0, &add, &[]);
        out.push(("request", req.clone()));
        out.push(("unit", req));
        let (req, _) = run(u, id, 1, &thresholds, &[admin]);
        out.push(("request", req));
    }
    run(&mut r, r_id, 2, &Command::GenerateRandomMk, &[admin]);
    let (req, importer) = run(&mut t, t_id, 2, &Command::GenerateImporter, &[admin]);
    out.push(("request", req));
    out.push(("envelope", importer.clone()));
    let export = ExportRequest {
        register: Register::Current,
        target_certificate: tke_proto::der::asn1::OctetString::new(t_cert.der().to_vec()).unwrap(),
        importer: CertifiedImporter::from_der(&importer).unwrap(),
        target_instance: None,
    };
    out.push(("envelope", export.to_der().unwrap()));
    let (req, envelope) = run(
        &mut r,
        r_id,
        3,
        &Command::ExportMk(Box::new(export)),
        &[admin],
    );
    out.push(("request", req));
    out.push(("envelope", envelope.clone()));
    let signed_env = SignedEnvelope::from_der(&envelope).unwrap();
    out.push(("envelope", signed_env.envelope.as_bytes().to_vec()));
    let (req, _) = run(
        &mut t,
        t_id,
        3,
        &Command::ImportMk(Box::new(signed_env)),
        &[admin],
    );
    out.push(("request", req));

    // Protocol v3: control points, and a new register loaded from two key parts.
    let btc = ControlPoints::of(&[ControlPoint::BTC]);
    let (req, _) = run(
        &mut t,
        t_id,
        4,
        &Command::RemoveControlPoints(btc),
        &[admin],
    );
    out.push(("request", req));
    let (req, _) = run(&mut t, t_id, 5, &Command::AddControlPoints(btc), &[admin]);
    out.push(("request", req));
    run(&mut t, t_id, 6, &Command::ClearNew, &[admin]);
    let (_, importer) = run(&mut t, t_id, 7, &Command::GenerateImporter, &[admin]);
    let importer = CertifiedImporter::from_der(&importer).unwrap();
    let parts = [MasterKeyPart::random(), MasterKeyPart::random()];
    let sealed = seal_parts(&parts, &importer, &t_cert).unwrap();
    out.push(("envelope", sealed.to_der().unwrap()));
    let (req, _) = run(
        &mut t,
        t_id,
        8,
        &Command::ImportMkParts(Box::new(sealed)),
        &[admin],
    );
    out.push(("request", req.clone()));
    out.push(("unit", req));

    // An audit query of R, which ran commands, and its signed page.
    let audit = Request::Audit(AuditQuery::new(r_id, 0)).to_der().unwrap();
    let answer = r.answer(&audit).response;
    let signed = SignedResponse::from_der(&answer).unwrap();
    let body = ResponseBody::from_der(signed.body.as_bytes()).unwrap();
    out.push(("request", audit.clone()));
    out.push(("unit", audit));
    out.push(("response", answer));
    out.push(("response", body.output.as_bytes().to_vec()));

    // Certificates.
    out.push(("certificate", w.admin.certificate().der().to_vec()));
    out.push(("certificate", w.ca.der().to_vec()));
    out.push(("certificate", r_cert.der().to_vec()));

    // A key file, PKCS#11 URIs, HTTP heads.
    let key = p256::SecretKey::random(&mut rand_core::OsRng);
    let pem = tke_pkcs8::encrypt(&key, &tke_pkcs8::Password::new("fuzz")).unwrap();
    out.push(("key_file", pem.as_bytes().to_vec()));
    for uri in [
        "pkcs11:token=TKE%20admins;object=alice;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so",
        "pkcs11:serial=0123456789abcdef;id=%01%02?pin-source=file:/run/pin",
    ] {
        out.push(("pkcs11_uri", uri.as_bytes().to_vec()));
    }
    for head in [
        "POST /v1/units/00000000-0000-0000-0000-000000000000 HTTP/1.1\r\nHost: unitd\r\nAuthorization: Bearer key\r\nContent-Type: application/octet-stream\r\nContent-Length: 4\r\n\r\n",
        "GET /v1/units HTTP/1.1\r\nHost: unitd\r\n\r\n",
    ] {
        out.push(("http_head", head.as_bytes().to_vec()));
    }
    out
}
