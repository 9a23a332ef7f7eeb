//! Reference files: signature keys held on a YubiKey, recorded on the workstation by
//! serial number and slot with their certificate, and no secret.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{fs, os::unix::fs::PermissionsExt};

use common::{admin, files_dir};
use tke_workstation::{KeyFileError, Password, SigKeyKind, YubiKeyRef};

const R: YubiKeyRef = YubiKeyRef {
    serial: 12345678,
    slot: 0x9c,
};

#[test]
fn write_list_and_remove_a_yubikey_reference() {
    let (_t, dir) = files_dir();
    let (name, _secret, cert) = admin("carol");
    let e = dir.write_yubikey_reference(&name, &cert, R).unwrap();
    assert_eq!(e.kind, SigKeyKind::YubiKey(R));
    assert_eq!(e.kind.label(), "yubikey");
    let stem = format!("carol-{}", &cert.ski().to_hex()[..8]);
    assert_eq!(e.key_path, dir.path().join(format!("{stem}.ref.toml")));
    assert_eq!(e.cert_path, dir.path().join(format!("{stem}.crt.pem")));
    for p in [&e.key_path, &e.cert_path] {
        assert_eq!(fs::metadata(p).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let text = fs::read_to_string(&e.key_path).unwrap();
    assert!(text.contains("kind = \"yubikey\"\n"), "{text}");
    assert!(text.contains("serial = 12345678\n"), "{text}");
    assert!(text.contains("slot = \"9c\"\n"), "{text}");

    let listing = dir.signature_keys().unwrap();
    assert!(listing.problems.is_empty(), "{:?}", listing.problems);
    assert_eq!(listing.entries, vec![e.clone()]);

    // A key on a token is not decrypted from a file, whatever the password.
    let err = e.decrypt(&Password::new("x")).unwrap_err();
    assert!(matches!(err, KeyFileError::KeyOnToken { .. }), "{err:?}");
    assert!(err.to_string().contains("yubikey"), "{err}");

    // Never overwritten.
    let err = dir.write_yubikey_reference(&name, &cert, R).unwrap_err();
    assert!(matches!(err, KeyFileError::AlreadyExists { .. }), "{err:?}");

    dir.remove_signature_key(&e).unwrap();
    assert!(dir.signature_keys().unwrap().entries.is_empty());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn file_and_yubikey_keys_list_together_in_the_order_added() {
    let (_t, dir) = files_dir();
    let (bob, bob_secret, bob_cert) = admin("bob");
    let (alice, _, alice_cert) = admin("alice");
    dir.write_signature_key(&bob, &bob_secret, &bob_cert, &Password::new("pw-bob-1"))
        .unwrap();
    dir.write_yubikey_reference(&alice, &alice_cert, R).unwrap();
    let listing = dir.signature_keys().unwrap();
    let kinds: Vec<(&str, &str)> = listing
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e.kind.label()))
        .collect();
    // bob was added first: KEYNUMs follow creation, not names.
    assert_eq!(kinds, [("bob", "file"), ("alice", "yubikey")]);
}

#[test]
fn a_bad_reference_is_reported_and_hides_nothing_else() {
    let (_t, dir) = files_dir();
    let (alice, _, alice_cert) = admin("alice");
    let (bob, _, bob_cert) = admin("bob");
    let a = dir.write_yubikey_reference(&alice, &alice_cert, R).unwrap();
    let b = dir
        .write_yubikey_reference(
            &bob,
            &bob_cert,
            YubiKeyRef {
                serial: 7,
                slot: 0x9a,
            },
        )
        .unwrap();
    fs::write(
        &a.key_path,
        "kind = \"yubikey\"\nserial = 1\nslot = \"9b\"\n",
    )
    .unwrap();
    let listing = dir.signature_keys().unwrap();
    assert_eq!(listing.entries, vec![b]);
    assert_eq!(listing.problems.len(), 1);
    let msg = listing.problems[0].to_string();
    assert!(msg.contains(&a.key_path.display().to_string()), "{msg}");
    assert!(msg.contains("PIV key slot"), "{msg}");

    // A reference without its certificate, and a key file beside a reference.
    fs::remove_file(&a.cert_path).unwrap();
    fs::write(a.key_path.with_extension("").with_extension("key.pem"), "x").unwrap();
    let listing = dir.signature_keys().unwrap();
    let msgs: Vec<String> = listing.problems.iter().map(ToString::to_string).collect();
    assert!(
        msgs.iter()
            .any(|m| m.contains("both claim the same signature key")),
        "{msgs:?}"
    );
}

#[test]
fn reference_for_a_slot_that_holds_no_key_is_refused() {
    let (_t, dir) = files_dir();
    let (name, _, cert) = admin("dave");
    let err = dir
        .write_yubikey_reference(
            &name,
            &cert,
            YubiKeyRef {
                serial: 1,
                slot: 0x9b,
            },
        )
        .unwrap_err();
    assert!(
        matches!(err, KeyFileError::BadSlot { slot: 0x9b }),
        "{err:?}"
    );
    let (other, _, _) = admin("erin");
    let err = dir.write_yubikey_reference(&other, &cert, R).unwrap_err();
    assert!(
        matches!(err, KeyFileError::WrongCertificate { .. }),
        "{err:?}"
    );
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}
