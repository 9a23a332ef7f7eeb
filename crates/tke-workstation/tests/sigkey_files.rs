//! Signature key files: format, listing, decryption and every way a file can be wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{fs, os::unix::fs::PermissionsExt};

use common::{admin, cert_for, edit_pem_der, files_dir, openssl, openssl_ok, s};
use tke_proto::{p256::SecretKey, AdminName};
use tke_workstation::{KeyFileError, Password, ScryptCost, SigKeyKind};

const PW: &str = "Tr0ub4dor&3-test";

fn pw() -> Password {
    Password::new(PW)
}

#[test]
fn round_trip_write_list_decrypt() {
    let (_t, dir) = files_dir();
    let (name, secret, cert) = admin("alice");
    let written = dir
        .write_signature_key(&name, &secret, &cert, &pw())
        .unwrap();
    assert_eq!(written.name, name);
    assert_eq!(written.ski, cert.ski());
    assert_eq!(written.kind, SigKeyKind::File);

    let listing = dir.signature_keys().unwrap();
    assert!(listing.problems.is_empty(), "{:?}", listing.problems);
    assert_eq!(listing.entries, vec![written.clone()]);
    let opened = listing.entries[0].decrypt(&pw()).unwrap();
    assert_eq!(opened.to_bytes(), secret.to_bytes());
}

#[test]
fn files_are_named_by_stem_0600_and_pem() {
    let (_t, dir) = files_dir();
    let (name, secret, cert) = admin("Bob Smith");
    let e = dir
        .write_signature_key(&name, &secret, &cert, &pw())
        .unwrap();
    let stem = format!("Bob_Smith-{}", &cert.ski().to_hex()[..8]);
    assert_eq!(e.key_path, dir.path().join(format!("{stem}.key.pem")));
    assert_eq!(e.cert_path, dir.path().join(format!("{stem}.crt.pem")));
    for p in [&e.key_path, &e.cert_path] {
        assert_eq!(
            fs::metadata(p).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            p.display()
        );
    }
    let key = fs::read_to_string(&e.key_path).unwrap();
    assert!(
        key.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"),
        "{key}"
    );
    let crt = fs::read_to_string(&e.cert_path).unwrap();
    assert!(crt.starts_with("-----BEGIN CERTIFICATE-----\n"), "{crt}");
    // Exactly the two files and the creation record; no temporary file left behind.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3);
}

#[test]
fn keynum_order_is_creation_order_and_stable() {
    let (_t, dir) = files_dir();
    let mut alices = Vec::new();
    for n in ["carol", "alice", "bob", "alice"] {
        let (name, secret, cert) = admin(n);
        dir.write_signature_key(&name, &secret, &cert, &pw())
            .unwrap();
        if n == "alice" {
            alices.push(cert.ski());
        }
    }
    let listing = dir.signature_keys().unwrap();
    assert!(listing.problems.is_empty(), "{:?}", listing.problems);
    let order: Vec<_> = listing
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e.ski))
        .collect();
    let names: Vec<_> = order.iter().map(|(n, _)| *n).collect();
    // In the order added, not by name: adding a key never renumbers the others.
    assert_eq!(names, ["carol", "alice", "bob", "alice"]);
    assert_eq!([order[1].1, order[3].1], [alices[0], alices[1]]);
    // The same order every time.
    for _ in 0..3 {
        assert_eq!(dir.signature_keys().unwrap().entries, listing.entries);
    }
}

#[test]
fn lookups_by_keynum_ski_and_name() {
    let (_t, dir) = files_dir();
    let (n1, s1, c1) = admin("bob");
    let (n2, s2, c2) = admin("alice");
    dir.write_signature_key(&n1, &s1, &c1, &pw()).unwrap();
    dir.write_signature_key(&n2, &s2, &c2, &pw()).unwrap();
    let listing = dir.signature_keys().unwrap();

    // KEYNUMs in the order added.
    assert_eq!(listing.by_keynum(1).unwrap().name.as_str(), "bob");
    assert_eq!(listing.by_keynum(2).unwrap().name.as_str(), "alice");
    assert!(listing.by_keynum(0).is_none());
    assert!(listing.by_keynum(3).is_none());

    assert_eq!(listing.by_ski(&c1.ski()).unwrap().name.as_str(), "bob");
    assert_eq!(listing.keynum_of(&c1.ski()), Some(1));
    assert!(listing.by_ski(&tke_proto::Ski([0; 32])).is_none());

    let bobs: Vec<_> = listing.by_name("bob").collect();
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].ski, c1.ski());
    assert_eq!(listing.by_name("nobody").count(), 0);
}

#[test]
fn openssl_reads_our_key_and_certificate() {
    let (_t, dir) = files_dir();
    let (name, secret, cert) = admin("alice");
    let e = dir
        .write_signature_key(&name, &secret, &cert, &pw())
        .unwrap();

    openssl_ok(&[
        "pkey",
        "-in",
        s(&e.key_path),
        "-passin",
        &format!("pass:{PW}"),
        "-noout",
    ]);
    // The same key: openssl's public key is ours.
    let pub_pem = openssl_ok(&[
        "pkey",
        "-in",
        s(&e.key_path),
        "-passin",
        &format!("pass:{PW}"),
        "-pubout",
    ]);
    use tke_proto::p256::pkcs8::DecodePublicKey;
    assert_eq!(
        tke_proto::p256::PublicKey::from_public_key_pem(&pub_pem).unwrap(),
        secret.public_key()
    );
    // And openssl refuses a wrong password, as it should.
    assert!(!openssl(&[
        "pkey",
        "-in",
        s(&e.key_path),
        "-passin",
        "pass:wrong",
        "-noout"
    ])
    .status
    .success());

    let text = openssl_ok(&["x509", "-in", s(&e.cert_path), "-noout", "-text"]);
    assert!(text.contains("CN = alice"), "{text}");
    let ski_colons = cert
        .ski()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    assert!(text.contains("X509v3 Subject Key Identifier"), "{text}");
    assert!(
        text.contains(&ski_colons),
        "SKI {ski_colons} not in:\n{text}"
    );
}

/// The scrypt (N, r, p) that the key file at `path` carries, read from its PBES2
/// parameters.
fn scrypt_of(path: &std::path::Path) -> (u64, u16, u16) {
    use pkcs8::der::Decode as _;
    let text = fs::read(path).unwrap();
    let (_, der) = pkcs8::der::pem::decode_vec(&text).unwrap();
    let info = pkcs8::EncryptedPrivateKeyInfo::from_der(&der).unwrap();
    let pkcs5::EncryptionScheme::Pbes2(params) = info.encryption_algorithm else {
        panic!("not PBES2");
    };
    let pkcs5::pbes2::Kdf::Scrypt(s) = params.kdf else {
        panic!("not scrypt");
    };
    (s.cost_parameter, s.block_size, s.parallelization)
}

#[test]
fn new_key_files_cost_scrypt_2_16_within_openssl_memory() {
    let (_t, dir) = files_dir();
    let (name, secret, cert) = admin("alice");
    let e = dir
        .write_signature_key(&name, &secret, &cert, &pw())
        .unwrap();
    assert_eq!(ScryptCost::NEW.log_n, 16);
    assert_eq!(scrypt_of(&e.key_path), (1 << 16, 3, 4));
    // OpenSSL 3.0 refuses more than 32 MiB (128 · r · (N + 2) + 128 · r · p bytes).
    let (n, r, p) = scrypt_of(&e.key_path);
    let memory = 128 * u64::from(r) * (n + 2) + 128 * u64::from(r) * u64::from(p);
    assert!(memory <= 32 << 20, "{memory} bytes");
    // And work at least four times that of the files written before.
    let v1 = ScryptCost::V1;
    assert!(n * u64::from(r) * u64::from(p) >= 4 * (1 << v1.log_n) * u64::from(v1.r * v1.p));
}

#[test]
fn a_key_file_of_the_former_cost_still_opens() {
    let (_t, dir) = files_dir();
    let (name, secret, cert) = admin("alice");
    let e = dir
        .write_signature_key_with_cost(&name, &secret, &cert, &pw(), ScryptCost::V1)
        .unwrap();
    assert_eq!(scrypt_of(&e.key_path), (1 << 14, 8, 1));
    let listing = dir.signature_keys().unwrap();
    assert!(listing.problems.is_empty(), "{:?}", listing.problems);
    let opened = listing.entries[0].decrypt(&pw()).unwrap();
    assert_eq!(opened.to_bytes(), secret.to_bytes());
    assert!(matches!(
        listing.entries[0].decrypt(&Password::new("guess")),
        Err(KeyFileError::WrongPassword { .. })
    ));
}

#[test]
fn wrong_password_is_clear_and_changes_nothing() {
    let (_t, dir) = files_dir();
    let (name, secret, cert) = admin("alice");
    let e = dir
        .write_signature_key(&name, &secret, &cert, &pw())
        .unwrap();
    let key_before = fs::read(&e.key_path).unwrap();
    let crt_before = fs::read(&e.cert_path).unwrap();

    let err = e.decrypt(&Password::new("not-the-password")).unwrap_err();
    assert!(
        matches!(err, KeyFileError::WrongPassword { ref path, .. } if path == &e.key_path),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "wrong password for signature key alice ({})",
            e.key_path.display()
        )),
        "{msg}"
    );
    assert!(msg.contains("altered"), "{msg}");
    assert!(!msg.contains("not-the-password") && !format!("{err:?}").contains("not-the-password"));

    assert_eq!(fs::read(&e.key_path).unwrap(), key_before);
    assert_eq!(fs::read(&e.cert_path).unwrap(), crt_before);
    // The right password still works afterwards.
    e.decrypt(&pw()).unwrap();
}

#[test]
fn a_truncated_key_file_is_named_with_what_is_wrong() {
    let (_t, dir) = files_dir();
    let (name, secret, cert) = admin("alice");
    let e = dir
        .write_signature_key(&name, &secret, &cert, &pw())
        .unwrap();
    let bytes = fs::read(&e.key_path).unwrap();
    fs::write(&e.key_path, &bytes[..bytes.len() / 2]).unwrap();

    let err = e.decrypt(&pw()).unwrap_err();
    assert!(
        matches!(err, KeyFileError::KeyFileEncoding { ref path, .. } if path == &e.key_path),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&e.key_path.display().to_string()) && msg.contains("not a complete PEM block"),
        "{msg}"
    );

    // The listing reports it too, naming the file.
    let listing = dir.signature_keys().unwrap();
    assert!(listing.entries.is_empty());
    assert_eq!(listing.problems.len(), 1);
    assert!(listing.problems[0]
        .to_string()
        .contains(&e.key_path.display().to_string()));
}

#[test]
fn a_key_file_cut_at_an_aes_block_boundary_is_malformed() {
    let (_t, dir) = files_dir();
    let (name, secret, cert) = admin("alice");
    let e = dir
        .write_signature_key(&name, &secret, &cert, &pw())
        .unwrap();
    // A well-formed PEM and DER structure whose encrypted data lost its last 5 bytes.
    edit_pem_der(&e.key_path, |der| {
        use pkcs8::{
            der::{Decode, Encode},
            EncryptedPrivateKeyInfo,
        };
        let rebuilt = {
            let info = EncryptedPrivateKeyInfo::from_der(der).unwrap();
            let data = &info.encrypted_data[..info.encrypted_data.len() - 5];
            EncryptedPrivateKeyInfo {
                encryption_algorithm: info.encryption_algorithm.clone(),
                encrypted_data: data,
            }
            .to_der()
            .unwrap()
        };
        *der = rebuilt;
    });
    let err = e.decrypt(&pw()).unwrap_err();
    assert!(
        matches!(err, KeyFileError::MalformedKeyFile { ref path, .. } if path == &e.key_path),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("whole number of AES blocks"),
        "{err}"
    );
}

#[test]
fn one_edited_ciphertext_byte_reads_as_wrong_password_or_altered() {
    let (_t, dir) = files_dir();
    let (name, secret, cert) = admin("alice");
    let e = dir
        .write_signature_key(&name, &secret, &cert, &pw())
        .unwrap();
    // Flip a bit in the last byte: the last CBC block decrypts to noise.
    edit_pem_der(&e.key_path, |der| {
        let last = der.len() - 1;
        der[last] ^= 0x01;
    });
    let err = e.decrypt(&pw()).unwrap_err();
    assert!(matches!(err, KeyFileError::WrongPassword { .. }), "{err:?}");
    assert!(
        err.to_string().contains("encrypted data was altered"),
        "{err}"
    );
}

#[test]
fn one_edited_character_in_the_key_file_is_malformed() {
    let (_t, dir) = files_dir();
    let (name, secret, cert) = admin("alice");
    let e = dir
        .write_signature_key(&name, &secret, &cert, &pw())
        .unwrap();
    let mut bytes = fs::read(&e.key_path).unwrap();
    let i = "-----BEGIN ENCRYPTED PRIVATE KEY-----\n".len() + 10;
    bytes[i] = b'*'; // not a base64 character
    fs::write(&e.key_path, &bytes).unwrap();
    let err = e.decrypt(&pw()).unwrap_err();
    assert!(
        matches!(err, KeyFileError::KeyFileEncoding { ref path, .. } if path == &e.key_path),
        "{err:?}"
    );
}

#[test]
fn an_unencrypted_key_file_is_refused() {
    let (_t, dir) = files_dir();
    let (name, secret, cert) = admin("alice");
    let e = dir
        .write_signature_key(&name, &secret, &cert, &pw())
        .unwrap();
    use tke_proto::p256::pkcs8::EncodePrivateKey;
    let plain = secret
        .to_pkcs8_pem(tke_proto::der::pem::LineEnding::LF)
        .unwrap();
    fs::write(&e.key_path, plain.as_bytes()).unwrap();
    let err = e.decrypt(&pw()).unwrap_err();
    assert!(
        matches!(err, KeyFileError::MalformedKeyFile { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("not encrypted"), "{err}");
}

#[test]
fn one_edited_byte_in_the_cert_file_is_reported_and_hides_nothing() {
    let (_t, dir) = files_dir();
    let (name, secret, cert) = admin("alice");
    let bad = dir
        .write_signature_key(&name, &secret, &cert, &pw())
        .unwrap();
    let (name2, secret2, cert2) = admin("bob");
    let good = dir
        .write_signature_key(&name2, &secret2, &cert2, &pw())
        .unwrap();

    // Change one byte of the certificate's DER (inside the subject name).
    edit_pem_der(&bad.cert_path, |der| {
        let i = der.windows(5).position(|w| w == b"alice").unwrap();
        der[i] = b'A';
    });
    let listing = dir.signature_keys().unwrap();
    assert_eq!(listing.entries, vec![good]);
    assert_eq!(listing.problems.len(), 1);
    let p = &listing.problems[0];
    assert!(
        matches!(p, KeyFileError::Certificate { path, .. } if path == &bad.cert_path),
        "{p:?}"
    );
    assert!(
        p.to_string().contains(&bad.cert_path.display().to_string()),
        "{p}"
    );

    // One edited PEM character is reported the same way.
    let mut bytes = fs::read(&bad.cert_path).unwrap();
    bytes["-----BEGIN CERTIFICATE-----\n".len() + 3] = b'#';
    fs::write(&bad.cert_path, &bytes).unwrap();
    let listing = dir.signature_keys().unwrap();
    assert!(
        matches!(&listing.problems[..], [KeyFileError::Certificate { path, .. }] if path == &bad.cert_path)
    );
}

#[test]
fn a_certificate_of_another_key_is_a_key_mismatch() {
    let (_t, dir) = files_dir();
    let (name, secret, cert) = admin("alice");
    let e = dir
        .write_signature_key(&name, &secret, &cert, &pw())
        .unwrap();
    // Replace the certificate by one for another key, same name.
    let other = cert_for(&name, &SecretKey::random(&mut rand_core::OsRng));
    fs::write(&e.cert_path, other.to_pem().unwrap()).unwrap();

    let listing = dir.signature_keys().unwrap();
    let entry = listing.by_ski(&other.ski()).unwrap();
    let err = entry.decrypt(&pw()).unwrap_err();
    assert!(
        matches!(err, KeyFileError::KeyMismatch { ref key_path, ref cert_path, ski, .. }
            if key_path == &e.key_path && cert_path == &e.cert_path && ski == other.ski()),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("does not match the certificate"),
        "{err}"
    );
}

#[test]
fn writing_with_the_certificate_of_another_key_or_name_is_refused() {
    let (_t, dir) = files_dir();
    let (name, secret, _) = admin("alice");
    let (_, _, other_cert) = admin("alice");
    let err = dir
        .write_signature_key(&name, &secret, &other_cert, &pw())
        .unwrap_err();
    assert!(
        matches!(
            err,
            KeyFileError::WrongCertificate {
                problem: "is for another key",
                ..
            }
        ),
        "{err:?}"
    );

    let bob = cert_for(&AdminName::new("bob").unwrap(), &secret);
    let err = dir
        .write_signature_key(&name, &secret, &bob, &pw())
        .unwrap_err();
    assert!(
        matches!(
            err,
            KeyFileError::WrongCertificate {
                problem: "names another administrator",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn an_empty_password_is_refused() {
    let (_t, dir) = files_dir();
    let (name, secret, cert) = admin("alice");
    let err = dir
        .write_signature_key(&name, &secret, &cert, &Password::new(""))
        .unwrap_err();
    assert!(matches!(err, KeyFileError::EmptyPassword { .. }), "{err:?}");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn existing_files_are_never_overwritten() {
    let (_t, dir) = files_dir();
    let (name, secret, cert) = admin("alice");
    let e = dir
        .write_signature_key(&name, &secret, &cert, &pw())
        .unwrap();
    let key_before = fs::read(&e.key_path).unwrap();
    let err = dir
        .write_signature_key(&name, &secret, &cert, &Password::new("other"))
        .unwrap_err();
    assert!(
        matches!(err, KeyFileError::AlreadyExists { ref path } if path == &e.key_path),
        "{err:?}"
    );
    assert_eq!(fs::read(&e.key_path).unwrap(), key_before);

    // A stray certificate file alone also blocks the write, and no key file is left.
    dir.remove_signature_key(&e).unwrap();
    fs::write(&e.cert_path, b"stray").unwrap();
    let err = dir
        .write_signature_key(&name, &secret, &cert, &pw())
        .unwrap_err();
    assert!(
        matches!(err, KeyFileError::AlreadyExists { ref path } if path == &e.cert_path),
        "{err:?}"
    );
    assert!(!e.key_path.exists());
    assert_eq!(fs::read(&e.cert_path).unwrap(), b"stray");
}

#[test]
fn half_pairs_and_duplicates_are_reported_not_skipped() {
    let (_t, dir) = files_dir();
    let (n1, s1, c1) = admin("alice");
    let a = dir.write_signature_key(&n1, &s1, &c1, &pw()).unwrap();
    let (n2, s2, c2) = admin("bob");
    let b = dir.write_signature_key(&n2, &s2, &c2, &pw()).unwrap();
    let (n3, s3, c3) = admin("carol");
    let c = dir.write_signature_key(&n3, &s3, &c3, &pw()).unwrap();
    // Bob loses his certificate, carol her key; alice is copied under another stem.
    fs::remove_file(&b.cert_path).unwrap();
    fs::remove_file(&c.key_path).unwrap();
    fs::copy(&a.key_path, dir.path().join("zz-copy.key.pem")).unwrap();
    fs::copy(&a.cert_path, dir.path().join("zz-copy.crt.pem")).unwrap();
    // Files that are not signature keys are ignored.
    fs::write(dir.path().join("notes.txt"), b"x").unwrap();
    fs::write(dir.path().join(".hidden.key.pem"), b"x").unwrap();

    let listing = dir.signature_keys().unwrap();
    assert_eq!(listing.entries, vec![a.clone()]);
    assert_eq!(listing.problems.len(), 3, "{:?}", listing.problems);
    assert!(listing.problems.iter().any(
        |p| matches!(p, KeyFileError::MissingCertificate { key_path, .. } if key_path == &b.key_path)
    ));
    assert!(listing.problems.iter().any(
        |p| matches!(p, KeyFileError::MissingKey { cert_path, .. } if cert_path == &c.cert_path)
    ));
    assert!(listing.problems.iter().any(
        |p| matches!(p, KeyFileError::DuplicateKey { ski, first, .. } if *ski == c1.ski() && first == &a.cert_path)
    ));
}

#[test]
fn remove_deletes_both_files() {
    let (_t, dir) = files_dir();
    let (name, secret, cert) = admin("alice");
    let e = dir
        .write_signature_key(&name, &secret, &cert, &pw())
        .unwrap();
    let (n2, s2, c2) = admin("bob");
    let keep = dir.write_signature_key(&n2, &s2, &c2, &pw()).unwrap();
    dir.remove_signature_key(&e).unwrap();
    assert!(!e.key_path.exists() && !e.cert_path.exists());
    assert_eq!(dir.signature_keys().unwrap().entries, vec![keep]);
    // Removing again is not an error.
    dir.remove_signature_key(&e).unwrap();
}

#[test]
fn debug_output_never_shows_the_password_or_the_key() {
    let (_t, dir) = files_dir();
    let (name, secret, cert) = admin("alice");
    let password = pw();
    let e = dir
        .write_signature_key(&name, &secret, &cert, &password)
        .unwrap();
    let secret_lower: String = secret
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let secret_upper = secret_lower.to_uppercase();
    let decrypted = e.decrypt(&password).unwrap();
    let wrong = e
        .decrypt(&Password::new(format!("{PW}-wrong")))
        .unwrap_err();
    let listing = dir.signature_keys().unwrap();

    for text in [
        format!("{e:?}"),
        format!("{e:#?}"),
        format!("{listing:?}"),
        format!("{password:?}"),
        format!("{decrypted:?}"),
        format!("{wrong:?}"),
        format!("{wrong}"),
    ] {
        assert!(!text.contains(PW), "password in {text}");
        assert!(
            !text.contains(&secret_lower) && !text.contains(&secret_upper),
            "key in {text}"
        );
    }
}

#[test]
fn reading_never_modifies_the_files() {
    let (_t, dir) = files_dir();
    let (name, secret, cert) = admin("alice");
    let e = dir
        .write_signature_key(&name, &secret, &cert, &pw())
        .unwrap();
    let snapshot = || {
        [&e.key_path, &e.cert_path].map(|p| {
            (
                fs::read(p).unwrap(),
                fs::metadata(p).unwrap().modified().unwrap(),
            )
        })
    };
    let before = snapshot();
    dir.signature_keys().unwrap();
    e.decrypt(&pw()).unwrap();
    let _ = e.decrypt(&Password::new("wrong"));
    assert_eq!(snapshot(), before);
    // The key, its certificate and its creation record.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3);
}
