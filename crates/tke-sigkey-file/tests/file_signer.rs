//! The file signer: generate, list, open, sign; the shared signer conformance suite;
//! secrets kept out of `Debug`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{fs, process::Command};

use tke_proto::{p256::ecdsa::signature::Verifier, AdminName};
use tke_sigkey::{conformance, Signer, SignerKind};
use tke_sigkey_file::{FileSigner, FileSignerError};
use tke_workstation::{FilesDir, KeyFileError, Password};

const PW: &str = "s3cret-Passw0rd!";

fn pw() -> Password {
    Password::new(PW)
}

fn files_dir() -> (tempfile::TempDir, FilesDir) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = FilesDir::resolve(Some(&tmp.path().join("tke"))).unwrap();
    (tmp, dir)
}

fn name(n: &str) -> AdminName {
    AdminName::new(n).unwrap()
}

/// Runs `openssl`; a missing `openssl` fails the test, never skips it.
fn openssl_ok(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().unwrap_or_else(|e| {
        panic!("this test needs the `openssl` command-line tool and could not run it ({e}); install OpenSSL")
    });
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn generate_list_open_sign_verify() {
    let (_t, dir) = files_dir();
    let generated = FileSigner::generate(&dir, &name("alice"), &pw()).unwrap();
    assert_eq!(generated.kind(), SignerKind::File);
    assert_eq!(generated.name().as_str(), "alice");

    let listing = dir.signature_keys().unwrap();
    assert!(listing.problems.is_empty(), "{:?}", listing.problems);
    assert_eq!(listing.entries, vec![generated.entry().clone()]);

    let opened = FileSigner::open(listing.by_keynum(1).unwrap(), &pw()).unwrap();
    assert_eq!(opened.ski(), generated.ski());
    assert_eq!(opened.certificate(), generated.certificate());
    let msg = b"a TKE command";
    let sig = opened.sign(msg).unwrap();
    generated
        .certificate()
        .verifying_key()
        .verify(msg, &sig)
        .unwrap();
    // And the other way round: both hold the same key.
    let sig = generated.sign(msg).unwrap();
    opened
        .certificate()
        .verifying_key()
        .verify(msg, &sig)
        .unwrap();
}

#[test]
fn conformance_suite_passes_for_file_signers() {
    let (_t, dir) = files_dir();
    FileSigner::generate(&dir, &name("alice"), &pw()).unwrap();
    FileSigner::generate(&dir, &name("bob"), &Password::new("another password")).unwrap();
    // Run the suite on signers opened from disk, as a ceremony would.
    let listing = dir.signature_keys().unwrap();
    let alice = FileSigner::open(listing.by_name("alice").next().unwrap(), &pw()).unwrap();
    let bob = FileSigner::open(
        listing.by_name("bob").next().unwrap(),
        &Password::new("another password"),
    )
    .unwrap();
    conformance::run_all(&alice, &bob);
}

#[test]
fn keynum_order_is_stable_across_generations() {
    let (_t, dir) = files_dir();
    for n in ["dave", "bob", "carol", "alice"] {
        FileSigner::generate(&dir, &name(n), &pw()).unwrap();
    }
    let names = |d: &FilesDir| -> Vec<String> {
        d.signature_keys()
            .unwrap()
            .entries
            .iter()
            .map(|e| e.name.to_string())
            .collect()
    };
    // In the order generated, not by name: a new key never renumbers the others.
    assert_eq!(names(&dir), ["dave", "bob", "carol", "alice"]);
    assert_eq!(names(&dir), names(&dir));
}

#[test]
fn openssl_reads_the_generated_files() {
    let (_t, dir) = files_dir();
    let s = FileSigner::generate(&dir, &name("Alice Admin"), &pw()).unwrap();
    let key = s.entry().key_path.to_str().unwrap();
    let crt = s.entry().cert_path.to_str().unwrap();
    openssl_ok(&[
        "pkey",
        "-in",
        key,
        "-passin",
        &format!("pass:{PW}"),
        "-noout",
    ]);
    let text = openssl_ok(&["x509", "-in", crt, "-noout", "-text"]);
    assert!(text.contains("CN = Alice Admin"), "{text}");
    let ski = s
        .ski()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    assert!(text.contains(&ski), "SKI {ski} not in:\n{text}");
}

#[test]
fn open_with_a_wrong_password_is_clear_and_changes_nothing() {
    let (_t, dir) = files_dir();
    let s = FileSigner::generate(&dir, &name("alice"), &pw()).unwrap();
    let before = (
        fs::read(&s.entry().key_path).unwrap(),
        fs::read(&s.entry().cert_path).unwrap(),
    );
    let err = FileSigner::open(s.entry(), &Password::new("wrong")).unwrap_err();
    assert!(
        matches!(
            err,
            FileSignerError::KeyFile(KeyFileError::WrongPassword { .. })
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("wrong password for signature key alice ("),
        "{err}"
    );
    let after = (
        fs::read(&s.entry().key_path).unwrap(),
        fs::read(&s.entry().cert_path).unwrap(),
    );
    assert_eq!(before, after);
}

#[test]
fn generate_refuses_an_empty_password_and_writes_nothing() {
    let (_t, dir) = files_dir();
    let err = FileSigner::generate(&dir, &name("alice"), &Password::new("")).unwrap_err();
    assert!(
        matches!(
            err,
            FileSignerError::KeyFile(KeyFileError::EmptyPassword { .. })
        ),
        "{err:?}"
    );
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn debug_shows_name_and_ski_never_the_key_or_password() {
    let (_t, dir) = files_dir();
    let password = pw();
    let s = FileSigner::generate(&dir, &name("alice"), &password).unwrap();
    let secret = s.entry().decrypt(&password).unwrap();
    let secret_hex: String = secret
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    let debug = format!("{s:?}");
    assert!(
        debug.contains("alice") && debug.contains(&s.ski().to_hex()),
        "{debug}"
    );
    for text in [
        debug,
        format!("{s:#?}"),
        format!("{:?}", s.entry()),
        format!("{password:?}"),
    ] {
        assert!(!text.contains(PW), "password in {text}");
        assert!(
            !text.contains(&secret_hex) && !text.contains(&secret_hex.to_uppercase()),
            "private key in {text}"
        );
    }
}
