//! Helpers shared by the integration tests: fixed keys, signing closures, a small fleet
//! (CA + device certificates), hand-built certificates, and the `openssl` runner.
//!
//! Every key here is fixed, so that ECDSA signatures (RFC 6979, deterministic) and all
//! derived values are reproducible; only certificate serial numbers are random.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command as Process, Output};

use der::{
    asn1::{BitString, GeneralizedTime, OctetString, SetOfVec, UtcTime},
    oid::ObjectIdentifier,
    Any, DateTime, Decode, Encode, Tag,
};
use p256::{
    ecdsa::{signature::Signer as _, DerSignature, SigningKey},
    pkcs8::EncodePublicKey,
    PublicKey, SecretKey,
};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use tke_proto::{
    cert::SignFn, AdminCertificate, AdminName, BoxError, CaCertificate, DeviceCertificate,
    DeviceContext, InstanceId, UnitDescription, UnitId, UnitType,
};
use x509_cert::{
    attr::AttributeTypeAndValue,
    ext::{pkix::SubjectKeyIdentifier, Extension},
    name::{RdnSequence, RelativeDistinguishedName},
    serial_number::SerialNumber,
    time::{Time, Validity},
    Certificate, TbsCertificate, Version,
};

/// Decodes test hex (panics on a typo in a vector).
pub fn h(s: &str) -> Vec<u8> {
    hex::decode(s).expect("test vector is valid hex")
}

/// A P-256 signing key from a fixed scalar made of one repeated byte.
pub fn signing_key(byte: u8) -> SigningKey {
    SigningKey::from_bytes(&[byte; 32].into()).expect("a valid P-256 scalar")
}

/// The public key of [`signing_key`].
pub fn public_key(key: &SigningKey) -> PublicKey {
    PublicKey::from(key.verifying_key())
}

/// A boxed certificate-signing closure for `key`.
pub fn cert_signer(key: &SigningKey) -> Box<SignFn<'_>> {
    Box::new(move |msg: &[u8]| -> Result<DerSignature, BoxError> { Ok(key.sign(msg)) })
}

/// A plain signing closure for `key` (certified importers, envelopes).
pub fn signer(key: &SigningKey) -> impl FnOnce(&[u8]) -> Result<DerSignature, BoxError> + '_ {
    move |msg: &[u8]| Ok(key.sign(msg))
}

/// A device signing closure (deterministic ECDSA) over `label ‖ message`: protocol v3.
pub fn device_signer(
    key: &SigningKey,
) -> impl FnOnce(DeviceContext, &[u8]) -> Result<DerSignature, BoxError> + '_ {
    move |context: DeviceContext, msg: &[u8]| Ok(key.sign(&context.signed_bytes(msg)))
}

/// A device signer of an older protocol `version`: version 1 signs the bare message,
/// version 2 under its own label.
pub fn older_signer(
    key: &SigningKey,
    version: u32,
) -> impl FnOnce(DeviceContext, &[u8]) -> Result<DerSignature, BoxError> + '_ {
    move |context: DeviceContext, msg: &[u8]| {
        Ok(key.sign(&context.signed_bytes_of_version(version, msg)))
    }
}

/// An administrator certificate for `name` on the key made of `byte`.
pub fn admin_cert(name: &str, byte: u8) -> (SigningKey, AdminCertificate) {
    let key = signing_key(byte);
    let cert = AdminCertificate::build(
        &AdminName::new(name).unwrap(),
        &public_key(&key),
        cert_signer(&key),
    )
    .unwrap();
    (key, cert)
}

/// A fleet CA named `name` on the key made of `byte`.
pub fn ca(name: &str, byte: u8) -> (SigningKey, CaCertificate) {
    let key = signing_key(byte);
    let cert = CaCertificate::build(name, &public_key(&key), cert_signer(&key)).unwrap();
    (key, cert)
}

/// A unit of a fleet: its id, device key and device certificate.
pub struct Unit {
    pub id: UnitId,
    pub key: SigningKey,
    pub cert: DeviceCertificate,
}

/// The service instance of the test fleet's units.
pub const INSTANCE: [u8; 16] = [
    0x0b, 0x6f, 0x0c, 0x8e, 0x5d, 0x6a, 0x4b, 0x8e, 0x9a, 0x51, 0x0c, 0x2f, 0x8e, 0x7d, 0x6b, 0x1a,
];

/// A unit of type `unit_type` in the test instance.
pub fn described(unit_type: UnitType) -> UnitDescription {
    UnitDescription {
        unit_type,
        instance_id: InstanceId(INSTANCE),
    }
}

/// Issues a device certificate for `id` (device key made of `byte`) from `ca`, describing
/// an operational unit of the test instance.
pub fn unit(ca_key: &SigningKey, ca: &CaCertificate, id: UnitId, byte: u8) -> Unit {
    unit_described(ca_key, ca, id, byte, described(UnitType::Operational))
}

/// Issues a device certificate for `id` (device key made of `byte`) from `ca`, with the
/// unit description `description`.
pub fn unit_described(
    ca_key: &SigningKey,
    ca: &CaCertificate,
    id: UnitId,
    byte: u8,
    description: UnitDescription,
) -> Unit {
    let key = signing_key(byte);
    let cert = DeviceCertificate::issue(
        ca,
        &id,
        &description,
        &public_key(&key),
        cert_signer(ca_key),
    )
    .unwrap();
    Unit { id, key, cert }
}

pub const UNIT_A: [u8; 16] = [
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
];
pub const UNIT_B: [u8; 16] = [
    0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00,
];

/// A fleet: CA, a recovery unit A (source) and a unit B (target).
pub struct Fleet {
    pub ca_key: SigningKey,
    pub ca: CaCertificate,
    pub a: Unit,
    pub b: Unit,
}

pub fn fleet() -> Fleet {
    let (ca_key, ca) = ca("fleet-1", 0x0c);
    let a = unit_described(
        &ca_key,
        &ca,
        UnitId(UNIT_A),
        0x0a,
        described(UnitType::Recovery),
    );
    let b = unit(&ca_key, &ca, UnitId(UNIT_B), 0x0b);
    Fleet { ca_key, ca, a, b }
}

// ---------------------------------------------------------------------------------------
// Hand-built certificates, to make the malformed ones that our builders refuse to make.

const OID_CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const OID_OU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_SKI: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");

fn rdn(oid: ObjectIdentifier, v: &str) -> RelativeDistinguishedName {
    let mut set = SetOfVec::new();
    set.insert(AttributeTypeAndValue {
        oid,
        value: Any::new(Tag::Utf8String, v.as_bytes()).unwrap(),
    })
    .unwrap();
    RelativeDistinguishedName(set)
}

/// A SubjectKeyIdentifier extension holding `id`.
pub fn ski_extension(id: &[u8]) -> Extension {
    Extension {
        extn_id: OID_SKI,
        critical: false,
        extn_value: OctetString::new(
            SubjectKeyIdentifier(OctetString::new(id.to_vec()).unwrap())
                .to_der()
                .unwrap(),
        )
        .unwrap(),
    }
}

/// A self-signed v3 certificate `OU=<ou>, CN=<cn>` on `key` with the given extensions,
/// built field by field exactly as tke-proto builds its own.
pub fn self_signed(cn: &str, ou: &str, key: &SigningKey, extensions: Vec<Extension>) -> Vec<u8> {
    let name = RdnSequence(vec![rdn(OID_OU, ou), rdn(OID_CN, cn)]);
    let alg = AlgorithmIdentifierOwned {
        oid: OID_ECDSA_SHA256,
        parameters: None,
    };
    let spki_der = public_key(key).to_public_key_der().unwrap();
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&[0x01, 0x02, 0x03, 0x04]).unwrap(),
        signature: alg.clone(),
        issuer: name.clone(),
        validity: Validity {
            not_before: Time::UtcTime(
                UtcTime::from_date_time(DateTime::new(2000, 1, 1, 0, 0, 0).unwrap()).unwrap(),
            ),
            not_after: Time::GeneralTime(GeneralizedTime::from_date_time(
                DateTime::new(2100, 12, 31, 23, 59, 59).unwrap(),
            )),
        },
        subject: name,
        subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes()).unwrap(),
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: if extensions.is_empty() {
            None
        } else {
            Some(extensions)
        },
    };
    let sig: DerSignature = key.sign(&tbs.to_der().unwrap());
    Certificate {
        tbs_certificate: tbs,
        signature_algorithm: alg,
        signature: BitString::from_bytes(sig.as_bytes()).unwrap(),
    }
    .to_der()
    .unwrap()
}

// ---------------------------------------------------------------------------------------
// openssl

/// The openssl binary: `$OPENSSL` or `openssl` on the PATH.
fn openssl_bin() -> std::ffi::OsString {
    std::env::var_os("OPENSSL").unwrap_or_else(|| "openssl".into())
}

/// Runs openssl with `args` in `dir`. A missing openssl FAILS the test: these
/// cross-checks are the point of the test and must never be skipped silently.
pub fn openssl_in(dir: &Path, args: &[&str]) -> Output {
    Process::new(openssl_bin())
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "this test needs the `openssl` command line tool (OpenSSL 3) and could not run \
                 it: {e}. Install it (e.g. `apt-get install openssl`) or point $OPENSSL at it."
            )
        })
}

/// Runs openssl and requires success; returns stdout.
pub fn openssl_ok(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = openssl_in(dir, args);
    assert!(
        out.status.success(),
        "openssl {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// Writes `bytes` to `dir/name` and returns the name (for openssl arguments).
pub fn write(dir: &Path, name: &'static str, bytes: &[u8]) -> &'static str {
    std::fs::write(dir.join(name), bytes).unwrap();
    name
}

/// The secret key of [`signing_key`]`(byte)` as a P-256 `SecretKey`.
pub fn secret_key(byte: u8) -> SecretKey {
    SecretKey::from_bytes(&[byte; 32].into()).unwrap()
}
