//! Helpers shared by the integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::{path::Path, process::Command};

use tke_proto::{
    p256::{
        ecdsa::{signature::Signer as _, Signature, SigningKey},
        SecretKey,
    },
    AdminCertificate, AdminName,
};
use tke_workstation::FilesDir;

/// A fresh workstation directory.
pub fn files_dir() -> (tempfile::TempDir, FilesDir) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = FilesDir::resolve(Some(&tmp.path().join("tke"))).unwrap();
    (tmp, dir)
}

/// The self-signed administrator certificate of `secret`, named `name`.
pub fn cert_for(name: &AdminName, secret: &SecretKey) -> AdminCertificate {
    let key = SigningKey::from(secret);
    AdminCertificate::build(
        name,
        &secret.public_key(),
        Box::new(move |tbs| {
            let sig: Signature = key.try_sign(tbs)?;
            Ok(sig.to_der())
        }),
    )
    .unwrap()
}

/// A new administrator key and its certificate.
pub fn admin(name: &str) -> (AdminName, SecretKey, AdminCertificate) {
    let name = AdminName::new(name).unwrap();
    let secret = SecretKey::random(&mut rand_core::OsRng);
    let cert = cert_for(&name, &secret);
    (name, secret, cert)
}

/// Runs `openssl` with `args`. A missing `openssl` fails the test: it is never a skip.
pub fn openssl(args: &[&str]) -> std::process::Output {
    match Command::new("openssl").args(args).output() {
        Ok(out) => out,
        Err(e) => panic!(
            "this test needs the `openssl` command-line tool and could not run it ({e}); \
             install OpenSSL (e.g. `apt-get install openssl`)"
        ),
    }
}

/// Runs `openssl` and requires success; returns its stdout.
pub fn openssl_ok(args: &[&str]) -> String {
    let out = openssl(args);
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A file's path as `&str` (temporary directories are UTF-8 here).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Decodes a PEM file, lets `edit` change its DER bytes, and writes it back.
pub fn edit_pem_der(path: &Path, edit: impl FnOnce(&mut Vec<u8>)) {
    let text = std::fs::read(path).unwrap();
    let (label, mut der) = tke_proto::der::pem::decode_vec(&text).unwrap();
    let label = label.to_owned();
    edit(&mut der);
    let pem = tke_proto::der::pem::encode_string(&label, tke_proto::der::pem::LineEnding::LF, &der)
        .unwrap();
    std::fs::write(path, pem).unwrap();
}
