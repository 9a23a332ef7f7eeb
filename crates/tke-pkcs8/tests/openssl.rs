//! Cross-checks with OpenSSL: keys `openssl pkcs8 -topk8 -v2 aes-256-cbc` encrypts
//! decrypt here, and `openssl pkey` opens what [`tke_pkcs8::encrypt`] writes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{fs, path::Path, process::Command};

use p256::{
    pkcs8::{DecodePrivateKey, DecodePublicKey},
    PublicKey, SecretKey,
};
use tke_pkcs8::{FileError, Password};

const PW: &str = "Tr0ub4dor&3-test";

/// Runs `openssl` with `args` and returns whether it succeeded, and its stdout. A missing
/// `openssl` fails the test: it is never a skip.
fn openssl(args: &[&str]) -> (bool, String) {
    let out = match Command::new("openssl").args(args).output() {
        Ok(out) => out,
        Err(e) => panic!(
            "this test needs the `openssl` command-line tool and could not run it ({e}); \
             install OpenSSL (e.g. `apt-get install openssl`)"
        ),
    };
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Runs `openssl` and requires success; returns its stdout.
fn openssl_ok(args: &[&str]) -> String {
    let (ok, stdout) = openssl(args);
    assert!(ok, "openssl {args:?} failed");
    stdout
}

/// A path as `&str` (temporary directories are UTF-8 here).
fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Makes a P-256 key with `openssl genpkey`, encrypts it with `openssl pkcs8 -topk8 -v2
/// aes-256-cbc` plus `extra` options, and checks that we decrypt it to the same key.
fn openssl_key_decrypts(extra: &[&str]) {
    let t = tempfile::tempdir().unwrap();
    let plain = t.path().join("plain.pem");
    let key_path = t.path().join("key.pem");
    openssl_ok(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        s(&plain),
    ]);
    let secret = SecretKey::from_pkcs8_pem(&fs::read_to_string(&plain).unwrap()).unwrap();
    let mut args = vec!["pkcs8", "-topk8", "-v2", "aes-256-cbc"];
    args.extend_from_slice(extra);
    let passout = format!("pass:{PW}");
    args.extend_from_slice(&["-in", s(&plain), "-out", s(&key_path), "-passout", &passout]);
    openssl_ok(&args);

    let pem = fs::read(&key_path).unwrap();
    tke_pkcs8::check(&pem).unwrap();
    let opened = tke_pkcs8::decrypt_file(&key_path, &Password::new(PW)).unwrap();
    assert_eq!(opened.to_bytes(), secret.to_bytes());
    assert!(matches!(
        tke_pkcs8::decrypt_file(&key_path, &Password::new("wrong")),
        Err(FileError::WrongPassword { .. })
    ));
}

#[test]
fn a_key_encrypted_by_openssl_with_scrypt_decrypts() {
    openssl_key_decrypts(&["-scrypt"]);
}

#[test]
fn a_key_encrypted_by_openssl_with_pbkdf2_decrypts() {
    openssl_key_decrypts(&[]);
}

#[test]
fn openssl_opens_our_key_with_its_password_only() {
    let t = tempfile::tempdir().unwrap();
    let key_path = t.path().join("key.pem");
    let secret = SecretKey::random(&mut rand_core::OsRng);
    let pem = tke_pkcs8::encrypt(&secret, &Password::new(PW)).unwrap();
    fs::write(&key_path, pem.as_bytes()).unwrap();

    let passin = format!("pass:{PW}");
    let pub_pem = openssl_ok(&["pkey", "-in", s(&key_path), "-passin", &passin, "-pubout"]);
    // The same key: openssl's public key is ours.
    assert_eq!(
        PublicKey::from_public_key_pem(&pub_pem).unwrap(),
        secret.public_key()
    );
    let (ok, _) = openssl(&[
        "pkey",
        "-in",
        s(&key_path),
        "-passin",
        "pass:wrong",
        "-noout",
    ]);
    assert!(!ok, "openssl opened the key with a wrong password");
}
