//! Chained errors through the real `tke` binary: a wrong PKCS#11 module path, a wrong
//! key-file password, a server that is down, a server the pinned CA did not certify. Each
//! cause is printed exactly once (the libraries leave their causes to `source()` and `tke`
//! prints the chain, skipping a cause a message already shows).
//!
//! `tke-unitd` is found next to the `tke` binary: `cargo test --workspace` builds both.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::Workstation;
use tke_test_support::server::Server;

/// Runs `tke`, asserts it failed (exit code 1, `FAILED`), and returns stderr.
fn failure(w: &Workstation, args: &[&str]) -> String {
    let err = w.fails(args, 1);
    assert!(err.starts_with("FAILED\n"), "{err}");
    err
}

/// Each text occurs exactly once in `err`, and no part of a message (between `: ` and
/// line ends) of some length is printed twice.
fn each_once(err: &str, texts: &[&str]) {
    for t in texts {
        assert_eq!(
            err.matches(t).count(),
            1,
            "{t:?} is not printed once in:\n{err}"
        );
    }
    for part in err.lines().flat_map(|l| l.split(": ")) {
        let part = part.trim_end_matches('.');
        if part.len() >= 16 {
            assert_eq!(
                err.matches(part).count(),
                1,
                "{part:?} is printed more than once in:\n{err}"
            );
        }
    }
}

#[test]
fn wrong_pkcs11_module_path() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let s = w.secrets(&[("tokadmin", "123456")]);
    let err = failure(
        &w,
        &[
            "--secrets",
            s.to_str().unwrap(),
            "sigkey-add",
            "--pkcs11",
            "pkcs11:token=admins;object=k?module-path=/nonexistent/lib.so",
            "--name",
            "tokadmin",
        ],
    );
    each_once(
        &err,
        &[
            "cannot load the PKCS#11 module /nonexistent/lib.so",
            // The dynamic loader's reason, below cryptoki's error.
            "cannot open shared object file",
        ],
    );
}

#[test]
fn wrong_key_file_password() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init", "--operational", "1", "--recovery", "1"]);
    let good = w.secrets(&[("alice", "alice-password-1")]);
    w.ok(&[
        "--secrets",
        good.to_str().unwrap(),
        "sigkey-add",
        "--name",
        "alice",
    ]);
    let bad = w.secrets(&[("alice", "not-the-password")]);
    let err = failure(
        &w,
        &[
            "--secrets",
            bad.to_str().unwrap(),
            "auto-init",
            "--sig-threshold",
            "1",
            "--rev-threshold",
            "1",
            "--admin",
            "alice",
            "--yes",
        ],
    );
    each_once(
        &err,
        &[
            "cannot open the signature key of alice",
            "wrong password for signature key alice",
        ],
    );
}

/// A `tke-unitd` with one operational unit (not started).
fn server(root: &Path, name: &'static str) -> Server {
    Server::init(root, name, &["--operational", "1", "--recovery", "0"])
}

#[test]
fn server_down() {
    let root = tempfile::tempdir().unwrap();
    // Initialized, never started: nothing listens on its port.
    let down = server(root.path(), "down");
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.add_target_unchecked(&down, &down);
    let err = failure(&w, &["cryptounits"]);
    each_once(
        &err,
        &["Target: down", "Cannot connect", "Connection refused"],
    );
}

#[test]
fn wrong_ca() {
    let root = tempfile::tempdir().unwrap();
    let mut unitd = server(root.path(), "wrong-ca");
    let other = server(root.path(), "other");
    unitd.start();
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    // The other fleet's CA (and API key: TLS refuses the server before the key is sent).
    w.add_target_unchecked(&unitd, &other);
    let err = failure(&w, &["cryptounits"]);
    each_once(
        &err,
        &[
            "Target: wrong-ca",
            "not issued by the pinned CA",
            // rustls' reason.
            "invalid peer certificate",
        ],
    );
}
