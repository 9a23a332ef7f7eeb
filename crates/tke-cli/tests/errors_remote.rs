//! Every error path of `tke` with remote fleets, through the real binary against real
//! `tke-unitd` servers on loopback: targets that cannot be added, target files that cannot
//! be read, servers that are down or refuse. The exit code is asserted and what the
//! operator reads is committed as a snapshot in `tests/snapshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use common::{
    snap,
    terminal::{Answer::Line, Terminal},
    Workstation,
};
use tke_test_support::server::{free_port, Server};

/// `target add NAME URL --ca CA --api-key-file KEY` and `extra`.
fn add<'a>(
    name: &'a str,
    url: &'a str,
    ca: &'a str,
    key: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut v = vec![
        "target",
        "add",
        name,
        url,
        "--ca",
        ca,
        "--api-key-file",
        key,
    ];
    v.extend_from_slice(extra);
    v
}

/// Runs `tke` with environment variables set and checks the snapshot `name`.
fn check_env(
    w: &Workstation,
    name: &str,
    vars: &[(&str, &str)],
    args: &[&str],
    code: i32,
    root: &Path,
) {
    let mut c = w.tke();
    for (k, v) in vars {
        c.env(k, v);
    }
    let o = c.args(args).output().unwrap();
    snap::assert_run(name, &o, code, &[(w.path(), "[WS]"), (root, "[ROOT]")]);
}

#[test]
fn targets_that_cannot_be_added_or_read() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    // Never started: its files are all these cases need.
    let srv = Server::init(r, "srv", &["--operational", "1", "--recovery", "0"]);
    let (ca, key) = (srv.path("ca.pem"), srv.path("api-key"));
    let url = srv.url();
    let labels = [(r, "[ROOT]")];
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let missing = r.join("no-such-file").to_str().unwrap().to_owned();
    let open_key = r.join("open-key");
    fs::copy(&key, &open_key).unwrap();
    fs::set_permissions(&open_key, fs::Permissions::from_mode(0o644)).unwrap();
    let open_key = open_key.to_str().unwrap();
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("target_add_invalid_name", add("a b", &url, &ca, &key, &[])),
        (
            "target_add_instance_not_a_uuid",
            add("x", &url, &ca, &key, &["--instance", "instance-1"]),
        ),
        ("target_add_ca_missing", add("x", &url, &missing, &key, &[])),
        (
            "target_add_ca_not_a_certificate",
            add("x", &url, &key, &key, &[]),
        ),
        (
            "target_add_api_key_missing",
            add("x", &url, &ca, &missing, &[]),
        ),
        (
            "target_add_api_key_readable_by_others",
            add("x", &url, &ca, open_key, &[]),
        ),
        (
            "target_add_url_not_https",
            add("x", "http://127.0.0.1:1", &ca, &key, &[]),
        ),
        (
            "target_add_url_invalid",
            add("x", "not a url", &ca, &key, &[]),
        ),
        // The server is contacted at once: one that is down is refused.
        ("target_add_server_down", add("x", &url, &ca, &key, &[])),
        ("target_rm_none", vec!["target", "rm", "x"]),
    ];
    for (name, args) in &cases {
        w.check(name, args, 1, &labels);
    }
    assert!(w.snapshot().is_empty(), "a refused target was written");
    // JSON: the table's column widths would follow the length of the temporary paths.
    // Down on purpose: `--no-check` adds it without contacting it.
    let ok = [
        &add("srv", &url, &ca, &key, &["--no-check"])[..],
        &["--output", "json"],
    ]
    .concat();
    w.check("ok_target_add", &ok, 0, &labels);
    w.check(
        "target_add_name_taken",
        &add("srv", &url, &ca, &key, &[]),
        1,
        &labels,
    );
    w.check("target_rm_unknown", &["target", "rm", "x"], 1, &labels);

    // targets.toml edited by hand.
    let file = w.path().join("targets.toml");
    fs::write(&file, "version = 1\n[[target]]\nname = \"a\"\n").unwrap();
    w.check("targets_file_invalid", &["cryptounits"], 1, &labels);
    fs::write(&file, "version = 2\n").unwrap();
    w.check(
        "targets_file_unknown_version",
        &["target", "list"],
        1,
        &labels,
    );
    fs::remove_file(&file).unwrap();
    fs::create_dir(&file).unwrap();
    w.check("targets_file_unreadable", &["target", "list"], 1, &labels);
    fs::remove_dir(&file).unwrap();

    // TKE_TARGETS for automation.
    check_env(
        &w,
        "env_targets_without_ca_and_key",
        &[("TKE_TARGETS", &url)],
        &["cryptounits"],
        1,
        r,
    );
    check_env(
        &w,
        "env_targets_without_url",
        &[
            ("TKE_TARGETS", " , "),
            ("TKE_CA_FILE", &ca),
            ("TKE_API_KEY_FILE", &key),
        ],
        &["cryptounits"],
        1,
        r,
    );
    check_env(
        &w,
        "env_targets_ca_missing",
        &[
            ("TKE_TARGETS", &url),
            ("TKE_CA_FILE", &missing),
            ("TKE_API_KEY_FILE", &key),
        ],
        &["cryptounits"],
        1,
        r,
    );
}

#[test]
fn servers_down_or_refusing() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let mut two = Server::init(
        r,
        "two",
        &["--instances", "2", "--operational", "1", "--recovery", "0"],
    );
    let mut other = Server::init(r, "other", &["--operational", "1", "--recovery", "0"]);
    let mut stopped = Server::init(r, "stopped", &["--operational", "1", "--recovery", "0"]);
    // Its TLS certificate names another host than the 127.0.0.1 the target gives.
    let mut named = Server::init(
        r,
        "named",
        &[
            "--operational",
            "1",
            "--recovery",
            "0",
            "--tls-name",
            "unitd.example",
        ],
    );
    two.start();
    other.start();
    named.start();
    stopped.start();
    stopped.stop();
    let ids: Vec<String> = fs::read_to_string(two.dir.join("instance-id"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let (ca, key1) = (two.path("ca.pem"), two.path("api-key-1"));
    let (url, nobody) = (two.url(), format!("https://127.0.0.1:{}", free_port()));
    let (other_ca, other_key) = (other.path("ca.pem"), other.path("api-key"));
    let (named_url, named_ca, named_key) =
        (named.url(), named.path("ca.pem"), named.path("api-key"));
    let (stopped_url, stopped_ca, stopped_key) = (
        stopped.url(),
        stopped.path("ca.pem"),
        stopped.path("api-key"),
    );
    let unknown = "0f0e0d0c-0b0a-4988-8776-655443322110";
    let labels = [(r, "[ROOT]")];
    let cases: Vec<(&str, Vec<Vec<&str>>)> = vec![
        (
            "server_nothing_listening",
            vec![add("nobody", &nobody, &ca, &key1, &[])],
        ),
        (
            "server_stopped",
            vec![add("stopped", &stopped_url, &stopped_ca, &stopped_key, &[])],
        ),
        (
            "server_wrong_ca",
            vec![add("wrong-ca", &url, &other_ca, &key1, &[])],
        ),
        (
            "server_certificate_for_another_host",
            vec![add("named", &named_url, &named_ca, &named_key, &[])],
        ),
        (
            "server_wrong_api_key",
            vec![add("wrong-key", &url, &ca, &other_key, &[])],
        ),
        (
            "server_other_instance",
            vec![add(
                "other-instance",
                &url,
                &ca,
                &key1,
                &["--instance", &ids[1]],
            )],
        ),
        (
            "server_unknown_instance",
            vec![add(
                "unknown-instance",
                &url,
                &ca,
                &key1,
                &["--instance", unknown],
            )],
        ),
        (
            "server_listed_by_two_targets",
            vec![
                add("first", &url, &ca, &key1, &[]),
                add("second", &url, &ca, &key1, &[]),
            ],
        ),
    ];
    for (name, targets) in &cases {
        let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
        for t in targets {
            // Added unchecked: what `cryptounits` says about them is the point here.
            w.ok(&[&t[..], &["--no-check"]].concat());
        }
        w.check(name, &["cryptounits"], 1, &labels);
    }
    // `target add` contacts the server at once and refuses a wrong CA or API key, writing
    // nothing.
    for (name, args) in [
        (
            "target_add_wrong_ca",
            add("wrong-ca", &url, &other_ca, &key1, &[]),
        ),
        (
            "target_add_wrong_api_key",
            add("wrong-key", &url, &ca, &other_key, &[]),
        ),
    ] {
        let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
        w.check(name, &args, 1, &labels);
        assert!(
            w.snapshot().is_empty(),
            "{name}: a refused target was written"
        );
    }
    // A ceremony meets the same explanation.
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&add("nobody", &nobody, &ca, &key1, &["--no-check"]));
    w.check(
        "server_nothing_listening_compare",
        &["cryptounit-compare"],
        1,
        &labels,
    );
}

/// With one of two servers down, the read commands show the reachable units, name the
/// unreachable target and exit 1; a ceremony still refuses to start.
#[test]
fn one_server_down_of_two() {
    let root = tempfile::tempdir().unwrap();
    let (_a, mut b, w, _) = two_servers(root.path());
    let labels = [(root.path(), "[ROOT]")];
    w.ok(&["cryptounit-add", "1", "2", "3"]);
    b.stop();
    w.check("one_server_down_cryptounits", &["cryptounits"], 1, &labels);
    w.check(
        "one_server_down_compare",
        &["cryptounit-compare"],
        1,
        &labels,
    );
    w.check("one_server_down_mk", &["cryptounit-mk"], 1, &labels);
    w.check("one_server_down_admins", &["cryptounit-admins"], 1, &labels);
    w.check(
        "one_server_down_thrhlds",
        &["cryptounit-thrhlds"],
        1,
        &labels,
    );
    w.fails(&["cryptounit-zeroize", "--yes"], 1);
    // The numbers shown without b may change when it is back: commands that take numbers
    // wait for every target.
    let before = w.snapshot();
    w.fails(&["cryptounit-add", "1"], 1);
    assert_eq!(
        before,
        w.snapshot(),
        "the selection changed while a target was down"
    );
}

/// A tke-unitd server cannot add units: failover-enable refuses before asking anything
/// and says how to add them on the server side.
#[test]
fn failover_enable_on_servers_says_how_to_add_units() {
    let root = tempfile::tempdir().unwrap();
    let (_a, _b, w, _) = two_servers(root.path());
    w.ok(&["cryptounit-add", "1", "2", "3"]);
    let before = w.snapshot();
    w.check(
        "failover_enable_on_servers",
        &["failover-enable", "--total", "2", "--yes"],
        1,
        &[(root.path(), "[ROOT]")],
    );
    assert_eq!(before, w.snapshot());
}

/// One instance on two servers: `a` (one operational, one recovery unit) and `b` (one
/// operational unit), both targets of a workstation with a key for alice.
fn two_servers(root: &Path) -> (Server, Server, Workstation, String) {
    let mut a = Server::init(root, "a", &["--operational", "1", "--recovery", "1"]);
    let mut b = Server::join(
        root,
        "b",
        &a,
        &[
            "--operational",
            "1",
            "--recovery",
            "0",
            "--instance-id",
            "@a/instance-id",
            "--api-key-file",
            "a/api-key",
        ],
    );
    a.start();
    b.start();
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let (ca, key) = (a.path("ca.pem"), a.path("api-key"));
    for s in [&a, &b] {
        w.ok(&add(s.name, &s.url(), &ca, &key, &[]));
    }
    let secrets = w.secrets(&[("alice", "alice-password-1")]);
    let secrets = secrets.to_str().unwrap().to_owned();
    w.ok(&["--secrets", &secrets, "sigkey-add", "--name", "alice"]);
    (a, b, w, secrets)
}

#[test]
fn a_server_lost_while_the_operator_confirms() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let (_a, mut b, w, s) = two_servers(r);
    let labels = [(w.path(), "[WS]"), (r, "[ROOT]")];
    let auto_init = [
        "--secrets",
        &s,
        "auto-init",
        "--sig-threshold",
        "1",
        "--rev-threshold",
        "1",
        "--admin",
        "alice",
    ];
    // auto-init checked every unit before the question; the plan finds one unreachable.
    let mut t = Terminal::spawn(&w, &auto_init);
    t.expect("> ");
    b.stop();
    t.answer(&Line("y"));
    t.check("server_lost_before_auto_init", 1, &labels);

    // The same with the server back: initialized. Then zeroize loses it at its question:
    // the other units are zeroized, the lost one is named.
    b.start();
    let yes = [&auto_init[..], &["--yes"]].concat();
    w.ok(&yes);
    let mut t = Terminal::spawn(&w, &["--secrets", &s, "cryptounit-zeroize"]);
    t.expect("> ");
    b.stop();
    t.answer(&Line("y"));
    t.check("server_lost_before_zeroize", 1, &labels);
}
