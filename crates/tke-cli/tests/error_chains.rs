//! Chained errors through the real `tke` binary: a wrong PKCS#11 module path, a wrong
//! key-file password, a server that is down, a server the pinned CA did not certify. Each
//! cause is printed exactly once (the libraries leave their causes to `source()` and `tke`
//! prints the chain, skipping a cause a message already shows).
//!
//! `tke-unitd` is found next to the `tke` binary: `cargo test --workspace` builds both.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::Workstation;

/// Runs `tke`, asserts it failed with exit code 1 and `FAILED`, and returns stderr.
fn failure(w: &Workstation, args: &[&str]) -> String {
    let o = w.run(args);
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(o.status.code(), Some(1), "tke {args:?}: {err}");
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
    let w = Workstation::new();
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
    let w = Workstation::new();
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

fn unitd() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_tke")).with_file_name("tke-unitd");
    assert!(
        p.is_file(),
        "{} is missing: build it with `cargo build -p tke-server`",
        p.display()
    );
    p
}

/// A `tke-unitd` with one operational unit, and its process once started (killed when
/// dropped).
struct Server {
    dir: PathBuf,
    url: String,
    child: Option<Child>,
}

impl Server {
    fn init(root: &Path, name: &str) -> Self {
        let dir = root.join(name);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = Command::new(unitd())
            .arg("init")
            .arg("--dir")
            .arg(&dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--operational", "1", "--recovery", "0"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            dir,
            url: format!("https://127.0.0.1:{port}"),
            child: None,
        }
    }

    fn start(&mut self) {
        let log = self.dir.join("unitd.log");
        self.child = Some(
            Command::new(unitd())
                .args(["serve", "--config"])
                .arg(self.dir.join("unitd.toml"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        let start = Instant::now();
        while !fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("tke-unitd listening on")
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "tke-unitd did not start:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn add_target(w: &Workstation, name: &str, url: &str, ca: &str, key: &str) {
    w.ok(&[
        "target",
        "add",
        name,
        url,
        "--ca",
        ca,
        "--api-key-file",
        key,
    ]);
}

#[test]
fn server_down() {
    let root = tempfile::tempdir().unwrap();
    // Initialized, never started: nothing listens on its port.
    let down = Server::init(root.path(), "down");
    let w = Workstation::new();
    add_target(
        &w,
        "down",
        &down.url,
        &down.file("ca.pem"),
        &down.file("api-key"),
    );
    let err = failure(&w, &["cryptounits"]);
    each_once(
        &err,
        &["Target: down", "Cannot connect", "Connection refused"],
    );
}

#[test]
fn wrong_ca() {
    let root = tempfile::tempdir().unwrap();
    let mut server = Server::init(root.path(), "server");
    let other = Server::init(root.path(), "other");
    server.start();
    let w = Workstation::new();
    add_target(
        &w,
        "wrong-ca",
        &server.url,
        &other.file("ca.pem"),
        &server.file("api-key"),
    );
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
