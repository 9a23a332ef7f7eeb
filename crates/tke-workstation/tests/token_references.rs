//! Keys on PKCS#11 tokens, as the workstation records them: a reference file (the key's
//! PKCS#11 URI, no secret) and the certificate file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{fs, os::unix::fs::PermissionsExt};

use common::{admin, files_dir};
use tke_workstation::{KeyFileError, Password, SigKeyKind};

const URI: &str =
    "pkcs11:token=admins;object=tokadmin;id=%01%02?module-path=/usr/lib/softhsm/libsofthsm2.so";

#[test]
fn a_token_key_is_a_reference_and_a_certificate_0600() {
    let (_t, dir) = files_dir();
    let (name, _secret, cert) = admin("tokadmin");
    let e = dir.write_token_reference(&cert, URI).unwrap();
    assert_eq!(e.kind, SigKeyKind::Pkcs11);
    assert_eq!(e.kind.label(), "pkcs11");
    assert_eq!(e.name, name);
    assert_eq!(e.ski, cert.ski());
    assert_eq!(e.token_uri.as_deref(), Some(URI));
    let stem = format!("tokadmin-{}", &cert.ski().to_hex()[..8]);
    assert_eq!(e.key_path, dir.path().join(format!("{stem}.ref.toml")));
    assert_eq!(e.cert_path, dir.path().join(format!("{stem}.crt.pem")));
    for p in [&e.key_path, &e.cert_path] {
        assert_eq!(
            fs::metadata(p).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            p.display()
        );
    }
    let text = fs::read_to_string(&e.key_path).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(table.len(), 2, "{text}");
    assert_eq!(table["kind"].as_str(), Some("pkcs11"));
    assert_eq!(table["uri"].as_str(), Some(URI));
    // Exactly the two files and the creation record; no temporary file left behind.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3);
}

#[test]
fn listing_shows_file_and_token_keys_together_in_order() {
    let (_t, dir) = files_dir();
    let pw = Password::new("pw-for-files");
    let (n1, s1, c1) = admin("carol");
    dir.write_signature_key(&n1, &s1, &c1, &pw).unwrap();
    let (_, _, c2) = admin("alice");
    dir.write_token_reference(&c2, URI).unwrap();
    let (n3, s3, c3) = admin("bob");
    dir.write_signature_key(&n3, &s3, &c3, &pw).unwrap();

    let listing = dir.signature_keys().unwrap();
    assert!(listing.problems.is_empty(), "{:?}", listing.problems);
    let rows: Vec<_> = listing
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e.kind, e.token_uri.as_deref()))
        .collect();
    assert_eq!(
        rows,
        // In the order added.
        [
            ("carol", SigKeyKind::File, None),
            ("alice", SigKeyKind::Pkcs11, Some(URI)),
            ("bob", SigKeyKind::File, None),
        ]
    );
    assert_eq!(listing.by_ski(&c2.ski()).unwrap().certificate, c2);
}

#[test]
fn a_token_key_is_not_decrypted() {
    let (_t, dir) = files_dir();
    let (_, _, cert) = admin("tokadmin");
    let e = dir.write_token_reference(&cert, URI).unwrap();
    let err = e.decrypt(&Password::new("anything")).unwrap_err();
    assert!(
        matches!(err, KeyFileError::NotAKeyFile { kind: "pkcs11", .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("opened through its token"),
        "{err}"
    );
}

#[test]
fn removing_a_token_key_removes_its_two_files_only() {
    let (_t, dir) = files_dir();
    let (_, _, cert) = admin("tokadmin");
    let e = dir.write_token_reference(&cert, URI).unwrap();
    let (n, s, c) = admin("filekey");
    dir.write_signature_key(&n, &s, &c, &Password::new("pw"))
        .unwrap();
    dir.remove_signature_key(&e).unwrap();
    assert!(!e.key_path.exists() && !e.cert_path.exists());
    let listing = dir.signature_keys().unwrap();
    assert_eq!(listing.entries.len(), 1);
    assert_eq!(listing.entries[0].name.as_str(), "filekey");
}

#[test]
fn a_pin_or_a_foreign_uri_is_never_recorded() {
    let (_t, dir) = files_dir();
    let (_, _, cert) = admin("tokadmin");
    for (uri, problem) in [
        (
            "pkcs11:token=a;object=b?module-path=/m.so&pin-value=123456",
            "holds a PIN",
        ),
        ("pkcs11:token=a?pin-value", "holds a PIN"),
        ("https://example.invalid/key", "not a PKCS#11 URI"),
    ] {
        let err = dir.write_token_reference(&cert, uri).unwrap_err();
        assert!(
            matches!(err, KeyFileError::InvalidTokenUri { .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(problem) && msg.contains("tokadmin") && !msg.contains("123456"),
            "{msg}"
        );
    }
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn an_existing_reference_is_never_overwritten() {
    let (_t, dir) = files_dir();
    let (_, _, cert) = admin("tokadmin");
    let e = dir.write_token_reference(&cert, URI).unwrap();
    let before = fs::read(&e.key_path).unwrap();
    let err = dir
        .write_token_reference(&cert, "pkcs11:token=other?module-path=/m.so")
        .unwrap_err();
    assert!(
        matches!(err, KeyFileError::AlreadyExists { ref path } if path == &e.key_path),
        "{err:?}"
    );
    assert_eq!(fs::read(&e.key_path).unwrap(), before);
}

#[test]
fn bad_reference_files_are_named_and_do_not_hide_other_keys() {
    let (_t, dir) = files_dir();
    let (n, s, c) = admin("good");
    dir.write_signature_key(&n, &s, &c, &Password::new("pw"))
        .unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "kind = \"yubikey\"\nuri = \"pkcs11:token=a\"\n",
            "kind is not",
        ),
        (
            "kind = \"pkcs11\"\nuri = \"file:/x\"\n",
            "not a PKCS#11 URI",
        ),
        (
            "kind = \"pkcs11\"\nuri = \"pkcs11:token=a?pin-value=99\"\n",
            "holds a PIN",
        ),
        ("kind = \"pkcs11\"\n", "must hold"),
        (
            "kind = \"pkcs11\"\nuri = \"pkcs11:token=a\"\nextra = 1\n",
            "must hold",
        ),
        ("not toml at all", "must hold"),
    ];
    for (i, (content, problem)) in cases.iter().enumerate() {
        let (_, _, cert) = admin(&format!("bad{i}"));
        let e = dir.write_token_reference(&cert, URI).unwrap();
        fs::write(&e.key_path, content).unwrap();
        let listing = dir.signature_keys().unwrap();
        let names: Vec<_> = listing.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["good"], "{content}");
        assert_eq!(listing.problems.len(), 1, "{content}");
        let msg = listing.problems[0].to_string();
        assert!(
            msg.contains(&e.key_path.display().to_string()) && msg.contains(problem),
            "{content}: {msg}"
        );
        dir.remove_signature_key(&e).unwrap();
    }
}

#[test]
fn a_reference_without_certificate_or_beside_a_key_file_is_a_problem() {
    let (_t, dir) = files_dir();
    let (_, _, cert) = admin("lonely");
    let e = dir.write_token_reference(&cert, URI).unwrap();
    fs::remove_file(&e.cert_path).unwrap();
    let listing = dir.signature_keys().unwrap();
    assert!(listing.entries.is_empty());
    assert!(
        matches!(&listing.problems[..], [KeyFileError::MissingCertificate { key_path, .. }] if key_path == &e.key_path),
        "{:?}",
        listing.problems
    );

    let (n, s, c) = admin("both");
    let f = dir
        .write_signature_key(&n, &s, &c, &Password::new("pw"))
        .unwrap();
    let stem = tke_workstation::file_stem(&n, &c.ski());
    let ref_path = dir.path().join(format!("{stem}.ref.toml"));
    fs::write(&ref_path, format!("kind = \"pkcs11\"\nuri = \"{URI}\"\n")).unwrap();
    let listing = dir.signature_keys().unwrap();
    assert!(listing.entries.is_empty(), "{:?}", listing.entries);
    assert!(
        listing
            .problems
            .iter()
            .any(|p| matches!(p, KeyFileError::KeyAndReference { key_path, .. } if key_path == &f.key_path)),
        "{:?}",
        listing.problems
    );
}
