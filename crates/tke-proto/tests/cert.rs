#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Certificates: what we build, openssl reads and verifies; what we parse is checked
//! strictly.
//!
//! These tests run the `openssl` command line tool (OpenSSL 3). Without it they fail
//! with a message saying so; they are never skipped.

mod common;

use common::{admin_cert, ca, openssl_in, openssl_ok, tempdir, unit, write};
use sha2::{Digest, Sha256};
use tke_proto::{
    cert::{ADMIN_OU, CA_OU, DEVICE_OU},
    AdminCertificate, AdminName, CertificateError, DeviceCertificate, ErrorChain, InstanceId,
    ProtoError, Ski, UnitId, UnitType,
};

/// openssl's rendering of a key identifier: colon-separated upper-case hex.
fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `openssl x509 -noout -text` of DER bytes.
fn x509_text(der: &[u8]) -> String {
    let dir = tempdir();
    write(dir.path(), "cert.der", der);
    let out = openssl_ok(
        dir.path(),
        &[
            "x509", "-inform", "DER", "-in", "cert.der", "-noout", "-text",
        ],
    );
    String::from_utf8(out).unwrap()
}

#[test]
fn openssl_reads_admin_certificate() {
    let (key, cert) = admin_cert("Alice Example", 0x21);
    assert_eq!(cert.name().as_str(), "Alice Example");
    assert_eq!(cert.ski(), Ski::of_public_key(&common::public_key(&key)));

    let text = x509_text(cert.der());
    for needle in [
        "Version: 3 (0x2)",
        "Subject: OU = TKE Administration, CN = Alice Example",
        "Issuer: OU = TKE Administration, CN = Alice Example",
        "Signature Algorithm: ecdsa-with-SHA256",
        "Public Key Algorithm: id-ecPublicKey",
        "prime256v1",
        "P-256",
        "X509v3 Subject Key Identifier",
        &colon_hex(&cert.ski().0),
    ] {
        assert!(text.contains(needle), "`{needle}` not in:\n{text}");
    }
    assert!(text.contains(&format!("CN = {}", cert.name())), "{text}");
    assert!(text.contains(&format!("OU = {ADMIN_OU}")), "{text}");

    // The SKI is SHA-256 of the 65-byte uncompressed point: recompute it from the public
    // key that openssl extracts, independently of our code.
    let dir = tempdir();
    write(dir.path(), "cert.der", cert.der());
    let pubkey = openssl_ok(
        dir.path(),
        &[
            "x509", "-inform", "DER", "-in", "cert.der", "-noout", "-pubkey",
        ],
    );
    write(dir.path(), "pub.pem", &pubkey);
    let spki = openssl_ok(
        dir.path(),
        &["pkey", "-pubin", "-in", "pub.pem", "-outform", "DER"],
    );
    // The SPKI of a P-256 key ends with the BIT STRING holding 00 ‖ 04 ‖ X ‖ Y.
    let point = &spki[spki.len() - 65..];
    assert_eq!(point[0], 0x04);
    assert_eq!(Sha256::digest(point).as_slice(), &cert.ski().0);

    // openssl checks the self-signature.
    let pem = cert.to_pem().unwrap();
    write(dir.path(), "admin.pem", pem.as_bytes());
    let out = openssl_ok(
        dir.path(),
        &[
            "verify",
            "-check_ss_sig",
            "-partial_chain",
            "-CAfile",
            "admin.pem",
            "admin.pem",
        ],
    );
    assert!(String::from_utf8_lossy(&out).contains("admin.pem: OK"));

    // PEM round trip.
    assert_eq!(AdminCertificate::from_pem(&pem).unwrap(), cert);
}

#[test]
fn openssl_reads_ca_and_device_certificates() {
    let fleet = common::fleet();
    let text = x509_text(fleet.ca.der());
    for needle in [
        "Subject: OU = TKE fleet CA, CN = fleet-1",
        "CA:TRUE, pathlen:0",
        "Certificate Sign, CRL Sign",
        "ecdsa-with-SHA256",
    ] {
        assert!(text.contains(needle), "`{needle}` not in:\n{text}");
    }
    let text = x509_text(fleet.a.cert.der());
    // The device certificate names its issuer's key: AKI = the CA's SKI.
    let ca_ski = Ski::of_public_key(&common::public_key(&fleet.ca_key));
    assert!(text.contains("X509v3 Authority Key Identifier"), "{text}");
    assert!(text.contains(&colon_hex(&ca_ski.0)), "{text}");
    let subject = format!("Subject: OU = {DEVICE_OU}, CN = {}", fleet.a.id.uuid());
    let issuer = format!("Issuer: OU = {CA_OU}, CN = fleet-1");
    for needle in [
        subject.as_str(),
        issuer.as_str(),
        "ecdsa-with-SHA256",
        "prime256v1",
    ] {
        assert!(text.contains(needle), "`{needle}` not in:\n{text}");
    }
    assert_eq!(fleet.a.cert.unit_id(), fleet.a.id);
    // openssl shows the unit description as an unknown critical extension, with its DER.
    assert!(
        text.contains("1.3.6.1.4.1.61178.1.1: critical"),
        "no unit description in:\n{text}"
    );
    // With `-certopt ext_dump` it shows the extension's bytes: the golden vector of
    // golden.rs (a recovery unit of the test instance).
    let dir = tempdir();
    write(dir.path(), "cert.der", fleet.a.cert.der());
    let dump = String::from_utf8(openssl_ok(
        dir.path(),
        &[
            "x509", "-inform", "DER", "-in", "cert.der", "-noout", "-text", "-certopt", "ext_dump",
        ],
    ))
    .unwrap();
    assert!(
        dump.contains("0000 - 30 15 0a 01 01 04 10 0b-6f 0c 8e 5d 6a "),
        "{dump}"
    );
    assert!(
        dump.contains("000d - 4b 8e 9a 51 0c 2f 8e 7d-6b 1a "),
        "{dump}"
    );
    assert_eq!(fleet.a.cert.unit_type(), UnitType::Recovery);
    assert_eq!(fleet.a.cert.instance_id(), InstanceId(common::INSTANCE));
    assert_eq!(fleet.b.cert.unit_type(), UnitType::Operational);
}

/// A change to a certificate's extensions.
type Edit = Box<dyn FnOnce(&mut Vec<x509_cert::ext::Extension>)>;

/// Re-issues `device` (a device certificate of `ca_key`) with its extensions passed
/// through `edit`, signed by `ca_key`: certificates our issuer refuses to make.
fn reissued(
    device: &[u8],
    ca_key: &p256::ecdsa::SigningKey,
    edit: impl FnOnce(&mut Vec<x509_cert::ext::Extension>),
) -> Vec<u8> {
    use der::{asn1::BitString, Decode, Encode};
    use p256::ecdsa::{signature::Signer as _, DerSignature};
    let mut cert = x509_cert::Certificate::from_der(device).unwrap();
    edit(cert.tbs_certificate.extensions.as_mut().unwrap());
    let sig: DerSignature = ca_key.sign(&cert.tbs_certificate.to_der().unwrap());
    cert.signature = BitString::from_bytes(sig.as_bytes()).unwrap();
    cert.to_der().unwrap()
}

#[test]
fn device_certificate_without_a_critical_unit_description_refused() {
    let fleet = common::fleet();
    let oid = tke_proto::cert::OID_UNIT_DESCRIPTION;
    // Unchanged, the re-signed certificate passes: only the edits below make it fail.
    let same = reissued(fleet.a.cert.der(), &fleet.ca_key, |_| {});
    assert!(DeviceCertificate::verify(&same, &fleet.ca).is_ok());
    let cases: [(&str, Edit, CertificateError); 3] = [
        (
            "missing",
            Box::new(move |e| e.retain(|x| x.extn_id != oid)),
            CertificateError::MissingUnitDescription,
        ),
        (
            "not critical",
            Box::new(move |e| {
                for x in e.iter_mut().filter(|x| x.extn_id == oid) {
                    x.critical = false;
                }
            }),
            CertificateError::UnitDescriptionNotCritical,
        ),
        (
            "twice",
            Box::new(move |e| {
                let copy = e.iter().find(|x| x.extn_id == oid).unwrap().clone();
                e.push(copy);
            }),
            CertificateError::DuplicateUnitDescription,
        ),
    ];
    for (what, edit, expected) in cases {
        let der = reissued(fleet.a.cert.der(), &fleet.ca_key, edit);
        match DeviceCertificate::verify(&der, &fleet.ca) {
            Err(ProtoError::Certificate(kind)) => assert_eq!(kind, expected, "{what}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    // A unit type outside the three is refused by the DER decoder.
    let der = reissued(fleet.a.cert.der(), &fleet.ca_key, move |e| {
        let x = e.iter_mut().find(|x| x.extn_id == oid).unwrap();
        let mut v = x.extn_value.as_bytes().to_vec();
        v[4] = 7; // unitType ENUMERATED 7
        x.extn_value = der::asn1::OctetString::new(v).unwrap();
    });
    assert!(matches!(
        DeviceCertificate::verify(&der, &fleet.ca),
        Err(ProtoError::Der(_))
    ));
}

/// `openssl verify` (with `options`) of `device.pem` under `ca.pem` in `d` succeeds, once
/// told that the unit description is ours to check (`-ignore_critical`).
fn assert_verifies(d: &std::path::Path, options: &[&str]) {
    let mut args = vec!["verify"];
    args.extend_from_slice(options);
    args.extend(["-ignore_critical", "-CAfile", "ca.pem", "device.pem"]);
    let out = openssl_ok(d, &args);
    assert!(String::from_utf8_lossy(&out).contains("device.pem: OK"));
}

#[test]
fn openssl_verifies_device_certificate_chain() {
    let fleet = common::fleet();
    let (other_key, other_ca) = ca("fleet-2", 0x0d);
    let foreign = unit(&other_key, &other_ca, UnitId(common::UNIT_A), 0x0a);
    // Same CA name, another key: only the signature tells them apart.
    let (twin_key, twin_ca) = ca("fleet-1", 0x0e);
    let twin = unit(&twin_key, &twin_ca, UnitId(common::UNIT_A), 0x0a);

    let dir = tempdir();
    let d = dir.path();
    write(d, "ca.pem", fleet.ca.to_pem().unwrap().as_bytes());
    write(d, "device.pem", fleet.a.cert.to_pem().unwrap().as_bytes());
    write(d, "foreign.pem", foreign.cert.to_pem().unwrap().as_bytes());
    write(d, "twin.pem", twin.cert.to_pem().unwrap().as_bytes());

    // The unit description is a critical extension openssl does not know: it refuses the
    // certificate as a generic one, as it should, and checks the chain when told to
    // leave that extension to us.
    let out = openssl_in(d, &["verify", "-CAfile", "ca.pem", "device.pem"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unhandled critical extension"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_verifies(d, &[]);
    // Also with RFC 5280 strictness (which requires, among others, the Authority Key
    // Identifier in certificates that are not self-signed).
    assert_verifies(d, &["-x509_strict"]);

    for name in ["foreign.pem", "twin.pem"] {
        let out = openssl_in(
            d,
            &["verify", "-ignore_critical", "-CAfile", "ca.pem", name],
        );
        assert!(
            !out.status.success(),
            "openssl accepted {name}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn device_certificate_from_another_ca_refused() {
    let fleet = common::fleet();
    assert_eq!(
        DeviceCertificate::verify(fleet.b.cert.der(), &fleet.ca).unwrap(),
        fleet.b.cert
    );
    for (name, byte) in [("fleet-2", 0x0d), ("fleet-1", 0x0e)] {
        let (other_key, other_ca) = ca(name, byte);
        let foreign = unit(&other_key, &other_ca, fleet.b.id, 0x0b);
        match DeviceCertificate::verify(foreign.cert.der(), &fleet.ca) {
            Err(ProtoError::Certificate(kind)) => {
                assert_eq!(kind, CertificateError::NotIssuedByFleetCa)
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    // An administrator certificate is no device certificate, even if the CA key signed it.
    let admin = common::self_signed("x", DEVICE_OU, &fleet.ca_key, vec![]);
    assert!(DeviceCertificate::verify(&admin, &fleet.ca).is_err());
    // Nor is the CA certificate itself.
    assert!(DeviceCertificate::verify(fleet.ca.der(), &fleet.ca).is_err());
}

#[test]
fn admin_certificate_refuses_any_flipped_bit() {
    let (_, cert) = admin_cert("alice", 0x21);
    let der = cert.der().to_vec();
    assert!(AdminCertificate::from_der(&der).is_ok());
    for i in 0..der.len() {
        let mut bad = der.clone();
        bad[i] ^= 0x01;
        assert!(
            AdminCertificate::from_der(&bad).is_err(),
            "accepted with byte {i} flipped"
        );
    }
}

#[test]
fn admin_certificate_tampered_name_fails_signature() {
    let (_, cert) = admin_cert("alice", 0x21);
    let mut der = cert.der().to_vec();
    // The last "alice" is the subject CN: make it "blice" (still a valid name).
    let pos = der.windows(5).rposition(|w| w == b"alice").unwrap();
    der[pos] = b'b';
    match AdminCertificate::from_der(&der) {
        Err(ProtoError::Certificate(kind)) => assert_eq!(kind, CertificateError::BadSignature),
        other => panic!("{other:?}"),
    }
}

#[test]
fn admin_certificate_requires_sha256_ski() {
    let key = common::signing_key(0x23);
    let ski = Ski::of_public_key(&common::public_key(&key));

    // Built like ours, with the right SKI: accepted (checks the helper).
    let good = common::self_signed("carol", ADMIN_OU, &key, vec![common::ski_extension(&ski.0)]);
    assert_eq!(AdminCertificate::from_der(&good).unwrap().ski(), ski);

    // No SKI extension at all.
    let none = common::self_signed("carol", ADMIN_OU, &key, vec![]);
    match AdminCertificate::from_der(&none) {
        Err(ProtoError::Certificate(kind)) => {
            assert_eq!(kind, CertificateError::MissingSubjectKeyIdentifier)
        }
        other => panic!("{other:?}"),
    }

    // The RFC 5280 method 1 SKI (SHA-1 of the point, what `openssl req` writes), and a
    // SHA-256 SKI of another key.
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let point = common::public_key(&key).to_encoded_point(false);
    let sha1 = openssl_sha1(point.as_bytes());
    let other = Ski::of_public_key(&common::public_key(&common::signing_key(0x24)));
    for wrong in [sha1, other.0.to_vec()] {
        let der = common::self_signed("carol", ADMIN_OU, &key, vec![common::ski_extension(&wrong)]);
        match AdminCertificate::from_der(&der) {
            Err(ProtoError::Certificate(kind)) => {
                assert_eq!(kind, CertificateError::SubjectKeyIdentifierMismatch)
            }
            other => panic!("{other:?}"),
        }
    }
}

fn openssl_sha1(data: &[u8]) -> Vec<u8> {
    let dir = tempdir();
    write(dir.path(), "data", data);
    openssl_ok(dir.path(), &["dgst", "-sha1", "-binary", "data"])
}

#[test]
fn admin_certificate_refuses_other_kinds_and_bad_names() {
    let fleet = common::fleet();
    // A fleet CA certificate given as an administrator certificate.
    match AdminCertificate::from_der(fleet.ca.der()) {
        Err(ProtoError::Certificate(kind)) => assert_eq!(kind, CertificateError::NotAdministrator),
        other => panic!("{other:?}"),
    }
    // A device certificate: not self-signed.
    assert!(AdminCertificate::from_der(fleet.a.cert.der()).is_err());
    // A self-signed certificate whose CN breaks the name rules.
    let key = common::signing_key(0x25);
    let ski = Ski::of_public_key(&common::public_key(&key));
    for cn in ["x".repeat(31), " alice".to_owned()] {
        let der = common::self_signed(&cn, ADMIN_OU, &key, vec![common::ski_extension(&ski.0)]);
        assert!(
            matches!(
                AdminCertificate::from_der(&der),
                Err(ProtoError::AdminName { .. })
            ),
            "{cn:?}"
        );
    }
    // A PEM block that is not a certificate.
    let pem =
        der::pem::encode_string("PUBLIC KEY", der::pem::LineEnding::LF, &[0x30, 0x00]).unwrap();
    assert!(AdminCertificate::from_pem(&pem).is_err());
    // Trailing bytes after the certificate.
    let (_, cert) = admin_cert("alice", 0x21);
    let trailing = [cert.der(), &[0u8][..]].concat();
    assert!(AdminCertificate::from_der(&trailing).is_err());
}

#[test]
fn admin_certificate_build_is_deterministic_but_for_the_serial() {
    let name = AdminName::new("dave").unwrap();
    let key = common::signing_key(0x26);
    let a = AdminCertificate::build(&name, &common::public_key(&key), common::cert_signer(&key))
        .unwrap();
    assert_eq!(a.name(), &name);
    assert_eq!(a.public_key(), &common::public_key(&key));
    assert_eq!(a.verifying_key(), *key.verifying_key());
    // A signer that fails makes no certificate, and says why.
    let failing: Box<tke_proto::cert::SignFn<'_>> = Box::new(|_| Err("token removed".into()));
    match AdminCertificate::build(&name, &common::public_key(&key), failing) {
        Err(e @ ProtoError::Signing { .. }) => {
            assert_eq!(ErrorChain(&e).to_string(), "signing failed: token removed")
        }
        other => panic!("{other:?}"),
    }
}

/// A fleet CA certificate made by another tool (here `openssl req`, whose subject puts
/// the CN first and whose SKI is the SHA-1 of the key): device certificates issued under
/// it must name it exactly as it names itself, so that openssl builds the chain.
#[test]
fn device_certificates_chain_to_a_ca_made_by_openssl() {
    use p256::pkcs8::{EncodePrivateKey, LineEnding};
    let ca_key = common::signing_key(0x0f);
    let dir = tempdir();
    let d = dir.path();
    let pem = p256::SecretKey::from(&ca_key)
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap();
    write(d, "ca.key", pem.as_bytes());
    openssl_ok(
        d,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-sha256",
            "-days",
            "3650",
            "-subj",
            "/CN=fleet-x/OU=TKE fleet CA",
            "-out",
            "ca.pem",
        ],
    );
    let ca_pem = std::fs::read_to_string(d.join("ca.pem")).unwrap();
    let ca = tke_proto::CaCertificate::from_pem(&ca_pem).unwrap();
    assert_eq!(ca.name(), "fleet-x");

    let dev = unit(&ca_key, &ca, UnitId(common::UNIT_B), 0x0b);
    assert_eq!(
        DeviceCertificate::verify(dev.cert.der(), &ca).unwrap(),
        dev.cert
    );
    write(d, "device.pem", dev.cert.to_pem().unwrap().as_bytes());
    // (Not -x509_strict: `openssl req`'s own CA certificate has no keyUsage, which
    // strict mode requires of a CA.)
    assert_verifies(d, &[]);
}
