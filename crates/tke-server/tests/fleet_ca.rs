//! The fleet CA key stays offline: `serve` runs without it, a new server joins through a
//! request the CA holder signs (and its units take part in an auto-init), and the commands
//! that open the key refuse a wrong passphrase, a passphrase file open to others and a
//! missing `--ca-passphrase-file` without a terminal — changing nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use common::*;
use tke_ceremony::{AutoInit, Silent};
use tke_client::Transport;
use tke_proto::{RegisterState, Threshold};
use tke_sigkey::Signer;
use tke_test_support::cli::{
    snap::assert_run,
    terminal::{Answer, Terminal},
};

fn unitd(cwd: &Path, args: &[&str]) -> Output {
    Command::new(UNITD)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Every file under `dir` with its bytes: to show that a refused command changed nothing.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push((p.clone(), fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn serve_runs_without_the_ca_key_and_init_left_it_encrypted() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("srv");
    let port = free_port();
    init(&dir, port, &["--operational", "1", "--recovery", "0"]);
    let key = fs::read_to_string(dir.join("ca.key.pem")).unwrap();
    assert!(key.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    // Offline: the key leaves the server directory.
    fs::rename(dir.join("ca.key.pem"), d.path().join("ca.key.pem")).unwrap();
    let server = ServerProc::start(&dir, port);
    let list = transport(&server.url(), &ca_of(&dir), &dir.join("api-key"))
        .list_units()
        .unwrap();
    assert_eq!(list.len(), 1);
    assert!(!dir.join("ca.key.pem").exists());
}

#[test]
fn a_server_joins_through_a_signed_request_and_its_units_take_part_in_auto_init() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let (a_dir, b_dir) = (root.join("a"), root.join("b"));
    let (a_port, b_port) = (free_port(), free_port());
    init(&a_dir, a_port, &["--operational", "1", "--recovery", "0"]);
    let instance_id = format!("@{}", a_dir.join("instance-id").display());
    let api_key = a_dir.join("api-key");
    let out = join(
        &b_dir,
        b_port,
        &a_dir,
        &[
            "--operational",
            "1",
            "--recovery",
            "1",
            "--instance-id",
            &instance_id,
            "--api-key-file",
            api_key.to_str().unwrap(),
        ],
    );
    // Both sides print the request's SHA-256, for the operators to compare.
    let sha = |prefix: &str| {
        out.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let shas = sha("Request SHA-256:");
    assert_eq!(shas.len(), 2, "{out}");
    assert_eq!(shas[0], shas[1]);
    // The CA key never reached the joining server, and nothing of the join is left.
    assert!(!b_dir.join("ca.key.pem").exists());
    assert!(!b_dir.join("join").exists());

    let a = ServerProc::start(&a_dir, a_port);
    let b = ServerProc::start(&b_dir, b_port);
    let client = fleet_client(&[&a, &b], &ca_of(&a_dir), &api_key);
    let instances = client.instances();
    assert_eq!(instances.len(), 1, "one instance over both servers");
    let units = client.instance_units(&instances[0]);
    assert_eq!(units.len(), 3);
    let admins = [MemSigner::new("alice"), MemSigner::new("bob")];
    let report = AutoInit {
        instance: instances[0].clone(),
        sig_threshold: Threshold::new(2).unwrap(),
        rev_threshold: Threshold::new(2).unwrap(),
        admins: admins.iter().map(|s| s as &dyn Signer).collect(),
    }
    .plan(&client)
    .unwrap()
    .execute(&Silent)
    .unwrap();
    for u in &units {
        let s = client.query(u).unwrap();
        assert_eq!(s.current_register.state, RegisterState::Valid, "{}", u.num);
        assert_eq!(s.current_register.vp, Some(report.vp), "{}", u.num);
    }
}

#[test]
fn certificates_for_another_request_are_refused_and_the_join_stays_pending() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let a_dir = root.join("a");
    init(
        &a_dir,
        free_port(),
        &["--operational", "1", "--recovery", "0"],
    );
    // Two pending joins; b is offered c's certificates.
    let pass = ca_passphrase_file(root);
    for name in ["b", "c"] {
        let o = unitd(
            root,
            &[
                "join",
                "--dir",
                name,
                "--ca",
                "a/ca.pem",
                "--tls-name",
                "127.0.0.1",
                "--request",
                &format!("{name}.req"),
                "--operational",
                "1",
                "--recovery",
                "0",
            ],
        );
        assert!(o.status.success(), "{o:?}");
    }
    let o = unitd(
        root,
        &[
            "ca-sign",
            "--ca-dir",
            "a",
            "--request",
            "c.req",
            "--out",
            "c.crt",
            "--ca-passphrase-file",
            pass.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let before = tree(&root.join("b"));
    let o = unitd(root, &["join", "--dir", "b", "--certificates", "c.crt"]);
    assert_run(
        "join_certificates_of_another_request",
        &o,
        1,
        &[(root, "[ROOT]")],
    );
    assert_eq!(tree(&root.join("b")), before, "a refused install changed b");
    // c's own certificates complete c.
    let o = unitd(root, &["join", "--dir", "c", "--certificates", "c.crt"]);
    assert!(o.status.success(), "{o:?}");
    assert!(root.join("c/unitd.toml").is_file());
}

/// A fleet with its CA in `root/a`, a pending join `root/b` and its request `root/b.req`,
/// and passphrase files: right (0600), wrong (0600), right but readable by others.
fn fleet_and_request(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
    init(
        &root.join("a"),
        free_port(),
        &["--operational", "1", "--recovery", "0"],
    );
    let o = unitd(
        root,
        &[
            "join",
            "--dir",
            "b",
            "--ca",
            "a/ca.pem",
            "--tls-name",
            "127.0.0.1",
            "--request",
            "b.req",
            "--operational",
            "1",
            "--recovery",
            "0",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let right = ca_passphrase_file(root);
    let wrong = root.join("wrong-passphrase");
    fs::write(&wrong, "not-the-passphrase\n").unwrap();
    fs::set_permissions(&wrong, fs::Permissions::from_mode(0o600)).unwrap();
    let open = root.join("open-passphrase");
    fs::copy(&right, &open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
    (right, wrong, open)
}

/// Runs `tke-unitd ARGS` in `root` (see [`fleet_and_request`]) with a wrong passphrase, a
/// passphrase file open to others and no passphrase without a terminal: each fails with
/// the snapshot `PREFIX_wrong_passphrase`, `PREFIX_passphrase_file_open_to_others`,
/// `PREFIX_no_passphrase_no_terminal`, and changes no file.
fn refused_three_ways(root: &Path, prefix: &str, args: &[&str]) {
    let (_, wrong, open) = fleet_and_request(root);
    let before = tree(root);
    for (case, extra) in [
        (
            "wrong_passphrase",
            vec!["--ca-passphrase-file", wrong.to_str().unwrap()],
        ),
        (
            "passphrase_file_open_to_others",
            vec!["--ca-passphrase-file", open.to_str().unwrap()],
        ),
        ("no_passphrase_no_terminal", vec![]),
    ] {
        let name = format!("{prefix}_{case}");
        let mut all = args.to_vec();
        all.extend(extra);
        let o = unitd(root, &all);
        assert_run(&name, &o, 1, &[(root, "[ROOT]")]);
        assert_eq!(tree(root), before, "{name} changed a file");
    }
}

#[test]
fn ca_sign_refuses_a_wrong_passphrase_an_open_file_and_no_passphrase_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    refused_three_ways(
        root,
        "ca_sign",
        &[
            "ca-sign",
            "--ca-dir",
            "a",
            "--request",
            "b.req",
            "--out",
            "b.crt",
        ],
    );
    assert!(!root.join("b.crt").exists());
}

#[test]
fn init_from_the_ca_refuses_a_wrong_passphrase_an_open_file_and_no_passphrase() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    refused_three_ways(
        root,
        "init_ca_dir",
        &[
            "init",
            "--dir",
            "c",
            "--ca-dir",
            "a",
            "--operational",
            "1",
            "--recovery",
            "0",
            "--api-key-file",
            "c-api-key",
        ],
    );
    assert!(!root.join("c").exists() && !root.join("c-api-key").exists());
    // A new CA needs a passphrase as much.
    let o = unitd(root, &["init", "--dir", "d"]);
    assert_run(
        "init_new_ca_no_passphrase_no_terminal",
        &o,
        1,
        &[(root, "[ROOT]")],
    );
    assert!(!root.join("d").exists());
}

/// `tke-unitd ARGS` in `cwd` on a pseudo-terminal.
fn on_terminal(cwd: &Path, args: &[&str]) -> Terminal {
    let mut c = Command::new(UNITD);
    c.args(args).current_dir(cwd);
    Terminal::spawn_command(c, args)
}

#[test]
fn on_a_terminal_the_passphrase_is_asked_twice_for_a_new_ca_and_once_to_sign() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let paths = [(root, "[ROOT]")];
    // Two different entries make no CA.
    let mut t = on_terminal(root, &["init", "--dir", "x", "--listen", "127.0.0.1:9"]);
    t.expect("Fleet CA key passphrase: ");
    t.answer(&Answer::Hidden("first-phrase"));
    t.expect("Repeat it: ");
    t.answer(&Answer::Hidden("other-phrase"));
    t.check("init_new_ca_passphrases_differ", 1, &paths);
    assert!(!root.join("x").exists());

    let mut t = on_terminal(
        root,
        &[
            "init",
            "--dir",
            "a",
            "--operational",
            "1",
            "--recovery",
            "0",
            "--tls-name",
            "127.0.0.1",
        ],
    );
    t.expect("Fleet CA key passphrase: ");
    t.answer(&Answer::Hidden("typed-phrase"));
    t.expect("Repeat it: ");
    t.answer(&Answer::Hidden("typed-phrase"));
    let (_, code) = t.finish();
    assert_eq!(code, 0);
    let o = unitd(
        root,
        &[
            "join",
            "--dir",
            "b",
            "--ca",
            "a/ca.pem",
            "--tls-name",
            "127.0.0.1",
            "--request",
            "b.req",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let sign = [
        "ca-sign",
        "--ca-dir",
        "a",
        "--request",
        "b.req",
        "--out",
        "b.crt",
    ];

    let before = tree(root);
    let mut t = on_terminal(root, &sign);
    t.expect("Fleet CA key passphrase: ");
    t.answer(&Answer::Hidden("not-the-phrase"));
    t.check("ca_sign_wrong_passphrase_on_the_terminal", 1, &paths);
    assert_eq!(tree(root), before, "a refused ca-sign changed a file");

    let mut t = on_terminal(root, &sign);
    t.expect("Fleet CA key passphrase: ");
    t.answer(&Answer::Hidden("typed-phrase"));
    let (text, code) = t.finish();
    assert_eq!(code, 0, "{text}");
    let o = unitd(root, &["join", "--dir", "b", "--certificates", "b.crt"]);
    assert!(o.status.success(), "{o:?}");
}

/// The CA holder signs what the request file it is given says. If that file was changed
/// on the way to name another service instance for the units, the joining server refuses
/// the certificates (each states the instance it was issued for), and the join stays
/// pending.
#[test]
fn certificates_for_another_instance_are_refused_and_the_join_stays_pending() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let (right, _, _) = fleet_and_request(root);
    let mut req = tke_server::ca::JoinRequest::read(&root.join("b.req")).unwrap();
    for u in &mut req.units {
        u.instance = tke_proto::InstanceId::random().uuid();
    }
    fs::write(root.join("changed.req"), req.to_pem().unwrap()).unwrap();
    ca_sign(root, "changed.req", "b.crt", &right);
    let before = tree(&root.join("b"));
    let o = unitd(root, &["join", "--dir", "b", "--certificates", "b.crt"]);
    assert_run(
        "join_certificates_for_another_instance",
        &o,
        1,
        &[(root, "[ROOT]")],
    );
    assert_eq!(tree(&root.join("b")), before, "a refused install changed b");
    // Certificates for the request as it was made complete the join.
    ca_sign(root, "b.req", "b-right.crt", &right);
    let o = unitd(
        root,
        &["join", "--dir", "b", "--certificates", "b-right.crt"],
    );
    assert!(o.status.success(), "{o:?}");
}

/// `tke-unitd ca-sign --ca-dir a --request REQUEST --out OUT` in `root` with the
/// passphrase file `passphrase`, which must succeed.
fn ca_sign(root: &Path, request: &str, out: &str, passphrase: &Path) {
    let o = unitd(
        root,
        &[
            "ca-sign",
            "--ca-dir",
            "a",
            "--request",
            request,
            "--out",
            out,
            "--ca-passphrase-file",
            passphrase.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{o:?}");
}
