//! `tke` against remote fleets: real `tke-unitd` processes on loopback, one service
//! instance spread over three servers, a server killed in the middle of `auto-init`, and
//! the refusals an operator may meet.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use common::Workstation;
use serde_json::Value;
use tke_test_support::Server;

const PW: &[(&str, &str)] = &[
    ("alice", "alice-password-1"),
    ("bob", "bob-password-22"),
    ("carol", "carol-password-333"),
];

/// One service instance on three servers: zone A (operational), zone B (operational +
/// failover), DR (the two recovery units). One fleet CA, one instance id, one API key.
fn three_servers(root: &Path) -> Vec<Server> {
    let a = Server::init(
        root,
        "a",
        &["--operational", "1", "--recovery", "0", "--zone", "zone-a"],
    );
    let join = [
        "--instance-id",
        "@a/instance-id",
        "--api-key-file",
        "a/api-key",
    ];
    let mut b_args = vec![
        "--operational",
        "1",
        "--failover",
        "1",
        "--recovery",
        "0",
        "--zone",
        "zone-b",
    ];
    b_args.extend(join);
    let b = Server::join(root, "b", &a, &b_args);
    let mut dr_args = vec!["--operational", "0", "--recovery", "2", "--zone", "dr"];
    dr_args.extend(join);
    let dr = Server::join(root, "dr", &a, &dr_args);
    let mut servers = vec![a, b, dr];
    for s in &mut servers {
        s.start();
    }
    servers
}

fn add_targets(w: &Workstation, servers: &[Server]) {
    for s in servers {
        w.add_target(s, &servers[0]);
    }
}

fn auto_init_args(secrets: &str, new: bool) -> Vec<&str> {
    let flag = if new { "--new-admin" } else { "--admin" };
    vec![
        "--secrets",
        secrets,
        "auto-init",
        "--sig-threshold",
        "2",
        "--rev-threshold",
        "2",
        flag,
        "alice",
        flag,
        "bob",
        flag,
        "carol",
        "--yes",
    ]
}

/// Every unit valid with one and the same verification pattern; returns it.
fn assert_one_valid_key(units: &Value, count: usize) -> String {
    let units = units.as_array().unwrap();
    assert_eq!(units.len(), count);
    let vp = units[0]["current_mk"]["vp"].as_str().unwrap().to_owned();
    for u in units {
        assert_eq!(u["imprint_mode"], Value::Bool(false), "{u}");
        assert_eq!(u["current_mk"]["state"], "valid", "{u}");
        assert_eq!(u["current_mk"]["vp"], Value::String(vp.clone()), "{u}");
        assert_eq!(u["new_mk"]["state"], "empty", "{u}");
        assert_eq!(u["admins"].as_array().unwrap().len(), 3, "{u}");
    }
    vp
}

#[test]
fn auto_init_of_one_instance_spread_over_three_servers() {
    let root = tempfile::tempdir().unwrap();
    let servers = three_servers(root.path());
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    add_targets(&w, &servers);

    let list = w.ok(&["target", "list"]);
    for s in &servers {
        assert!(list.contains(&s.url()), "{list}");
    }
    // One running sequence over every target, in the vendor's order.
    let units: Value = serde_json::from_str(&w.ok(&["cryptounits", "--output", "json"])).unwrap();
    let units = units.as_array().unwrap();
    let nums: Vec<u64> = units.iter().map(|u| u["num"].as_u64().unwrap()).collect();
    assert_eq!(nums, [1, 2, 3, 4, 5]);
    let types: Vec<&str> = units.iter().map(|u| u["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "operational",
            "operational",
            "recovery",
            "recovery",
            "failover"
        ]
    );
    let instance = units[0]["instance"].as_str().unwrap();
    assert!(units.iter().all(|u| u["instance"] == instance));
    let zone = |i: usize| units[i]["location"].as_str().unwrap().to_owned();
    assert!(zone(0).starts_with("[zone-a]") && zone(1).starts_with("[zone-b]"));
    assert!(zone(2).starts_with("[dr]") && zone(4).starts_with("[zone-b]"));
    // The context header names every target used.
    let table = w.ok(&["cryptounits"]);
    for s in &servers {
        assert!(
            table.contains(&format!("API endpoint:   {} (target {})", s.url(), s.name)),
            "{table}"
        );
    }
    assert_eq!(table.matches("SERVICE INSTANCE:").count(), 1, "{table}");

    let secrets = w.secrets(PW);
    let out = w.ok(&auto_init_args(secrets.to_str().unwrap(), true));
    assert!(out.contains("Transferring the master key value to 4 of 4 crypto units...."));
    assert!(out.contains("OK"));
    assert_one_valid_key(&w.compare_json(), 5);
    let table = w.ok(&["cryptounit-compare"]);
    assert!(table.contains("configured identically"), "{table}");
    assert_eq!(table.matches("API endpoint:").count(), 3, "{table}");

    // A rotation across the three servers: a new value in all five units.
    let before = assert_one_valid_key(&w.compare_json(), 5);
    let out = w.ok(&[
        "--secrets",
        secrets.to_str().unwrap(),
        "auto-mk-rotate",
        "--yes",
    ]);
    assert!(out.contains("Master key rotation successful."), "{out}");
    assert_ne!(assert_one_valid_key(&w.compare_json(), 5), before);

    // The selection works across servers (units are kept by id).
    w.ok(&["cryptounit-rm", "5"]);
    assert_eq!(w.compare_json().as_array().unwrap().len(), 4);
    w.ok(&["cryptounit-add", "5"]);
    assert_one_valid_key(&w.compare_json(), 5);

    // Dropping a target drops its units.
    w.ok(&["target", "rm", "dr"]);
    let units: Value = serde_json::from_str(&w.ok(&["cryptounits", "--output", "json"])).unwrap();
    assert_eq!(units.as_array().unwrap().len(), 3);
    let err = w.fails(&["target", "rm", "dr"], 1);
    assert!(err.contains("no target named"), "{err}");
}

/// Runs `auto-init` and SIGKILLs `victim` as soon as the ceremony reports `at`. Returns
/// whether auto-init failed, and its standard error.
fn auto_init_with_crash(
    w: &Workstation,
    args: &[&str],
    victim: &mut Server,
    at: &str,
) -> (bool, String) {
    let (killed, seen, out) = w.run_reacting(args, at, |_| victim.kill());
    assert!(killed, "auto-init never printed {at:?}:\n{seen}");
    (
        !out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Reads a unit's state straight from its directory (the truth on disk), as JSON shaped
/// like `cryptounit-compare --output json`.
fn on_disk(dir: &Path, id: &str) -> Value {
    let unit = tke_unit::Unit::open(&dir.join("units").join(id)).unwrap();
    let s = unit.status();
    let reg = |r: &tke_proto::RegisterStatus| serde_json::json!({"state": r.state.json_name(), "vp": r.vp.map(|v| v.to_hex())});
    serde_json::json!({
        "imprint_mode": s.imprint_mode(),
        "sig_threshold": s.sig_threshold,
        "rev_threshold": s.rev_threshold,
        "admins": s.admins.iter().map(|a| serde_json::json!({"name": a.name.as_str(), "ski": a.ski.to_hex()})).collect::<Vec<_>>(),
        "new_mk": reg(&s.new_register),
        "current_mk": reg(&s.current_register),
        "counter": s.counter,
    })
}

#[test]
fn a_server_killed_during_auto_init_is_reported_truthfully_and_the_operator_finishes() {
    let root = tempfile::tempdir().unwrap();
    let mut servers = three_servers(root.path());
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    add_targets(&w, &servers);
    let secrets = w.secrets(PW);
    let s = secrets.to_str().unwrap();

    // Zone B's server dies (SIGKILL) once the master key is being generated: the units
    // are out of imprint mode and the key is on its way. If the ceremony happened to
    // finish before the kill landed, start over (zeroize) and crash it again.
    let mut failure = None;
    for attempt in 0..3 {
        let args = auto_init_args(s, attempt == 0);
        let (failed, stderr) = auto_init_with_crash(
            &w,
            &args,
            &mut servers[1],
            "Generating a random master key value",
        );
        servers[1].start();
        if failed {
            failure = Some(stderr);
            break;
        }
        w.ok(&["--secrets", s, "cryptounit-zeroize", "--yes"]);
    }
    let stderr = failure.expect("the crash never landed before auto-init finished");
    assert!(stderr.contains("FAILED"), "{stderr}");
    assert!(stderr.contains("cryptounit-compare"), "{stderr}");
    assert!(stderr.contains("tke auto-init --resume"), "{stderr}");

    // After the restart, compare answers for every unit, and what it shows is what each
    // unit has on disk.
    let shown = w.compare_json();
    let shown = shown.as_array().unwrap();
    assert_eq!(shown.len(), 5);
    assert!(
        shown
            .iter()
            .any(|u| u["imprint_mode"] == Value::Bool(false)),
        "the crash came after the thresholds were set"
    );
    for srv in servers.iter_mut() {
        srv.stop();
    }
    for u in shown {
        let id = u["id"].as_str().unwrap();
        let srv = servers
            .iter()
            .find(|srv| srv.dir.join("units").join(id).is_dir())
            .unwrap();
        let disk = on_disk(&srv.dir, id);
        for field in [
            "imprint_mode",
            "sig_threshold",
            "rev_threshold",
            "admins",
            "new_mk",
            "current_mk",
            "counter",
        ] {
            assert_eq!(u[field], disk[field], "unit {id}, {field}");
        }
    }
    for srv in servers.iter_mut() {
        srv.start();
    }

    // A plain rerun changes nothing and names --resume, which finishes from where the
    // ceremony stopped: no zeroize, the keys the first run made, the key already
    // generated if it was.
    let err = w.fails(&auto_init_args(s, false), 1);
    assert!(err.contains("was interrupted"), "{err}");
    assert!(err.contains("tke auto-init --resume"), "{err}");
    let out = w.ok(&["--secrets", s, "auto-init", "--resume", "--yes"]);
    assert!(out.contains("OK"), "{out}");
    let keys: Value = serde_json::from_str(&w.ok(&["sigkeys", "--output", "json"])).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 3);
    assert_one_valid_key(&w.compare_json(), 5);
}

#[test]
fn refusals_say_what_is_wrong() {
    let root = tempfile::tempdir().unwrap();
    let mut two = Server::init(
        root.path(),
        "two",
        &["--instances", "2", "--operational", "1", "--recovery", "0"],
    );
    let mut other = Server::init(
        root.path(),
        "other",
        &["--operational", "1", "--recovery", "0"],
    );
    two.start();
    other.start();
    let ids: Vec<String> = fs::read_to_string(two.dir.join("instance-id"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let (ca, key1) = (two.path("ca.pem"), two.path("api-key-1"));

    let case = |name: &str, ca: &str, key: &str, extra: &[&str], expect: &[&str]| {
        let mut args = vec![
            "target",
            "add",
            name,
            "URL",
            "--ca",
            ca,
            "--api-key-file",
            key,
        ];
        let url = two.url();
        args[3] = &url;
        args.extend(extra);
        // Unchecked: `target add` would refuse most of these (errors_remote.rs); what
        // `cryptounits` says is the point here.
        args.push("--no-check");
        w.ok(&args);
        let err = w.fails(&["cryptounits"], 1);
        for e in expect {
            assert!(err.contains(e), "{name}: missing {e:?} in:\n{err}");
        }
        w.ok(&["target", "rm", name]);
    };
    // A server whose certificate the pinned CA did not issue.
    case(
        "wrong-ca",
        &other.path("ca.pem"),
        &key1,
        &[],
        &[
            "FAILED\nError querying crypto units.",
            "Target: wrong-ca",
            "not issued by the pinned CA",
            &other.path("ca.pem"),
        ],
    );
    // A key the server does not know.
    case(
        "wrong-key",
        &ca,
        &other.path("api-key"),
        &[],
        &[
            "Status code: 401",
            "Message: The API key is not valid for this server.",
            "The API key was refused",
        ],
    );
    // The key of another instance.
    case(
        "other-instance",
        &ca,
        &key1,
        &["--instance", &ids[1]],
        &[
            "Status code: 403",
            &format!("does not give access to service instance {}", ids[1]),
            "Use the key of the instance you want",
        ],
    );
    // Missing or unprotected key files are refused when the target is added.
    let missing = root.path().join("no-such-key");
    let err = w.fails(
        &[
            "target",
            "add",
            "x",
            &two.url(),
            "--ca",
            &ca,
            "--api-key-file",
            missing.to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("cannot read the API key file"), "{err}");
    let open = root.path().join("open-key");
    fs::copy(&key1, &open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
    let err = w.fails(
        &[
            "target",
            "add",
            "x",
            &two.url(),
            "--ca",
            &ca,
            "--api-key-file",
            open.to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("chmod 600"), "{err}");
    assert!(w.ok(&["target", "list"]).contains("No targets"));

    // A server that is down.
    w.ok(&[
        "target",
        "add",
        "down",
        &two.url(),
        "--ca",
        &ca,
        "--api-key-file",
        &key1,
    ]);
    two.kill();
    let err = w.fails(&["cryptounits"], 1);
    assert!(err.contains("Cannot connect"), "{err}");
    assert!(err.contains("tke-unitd is running"), "{err}");
    w.ok(&["target", "rm", "down"]);
    two.start();

    // Automation: the environment names the targets and replaces targets.toml.
    let env_run = |vars: &[(&str, &str)], args: &[&str]| {
        let mut c = w.tke();
        for (k, v) in vars {
            c.env(k, v);
        }
        c.args(args).output().unwrap()
    };
    let url = two.url();
    let o = env_run(&[("TKE_TARGETS", &url)], &["cryptounits"]);
    common::assert_failed(&o, 1, &["cryptounits"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("TKE_CA_FILE"));
    let vars = [
        ("TKE_TARGETS", url.as_str()),
        ("TKE_CA_FILE", ca.as_str()),
        ("TKE_API_KEY_FILE", key1.as_str()),
    ];
    let o = env_run(&vars, &["cryptounits"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains(&format!("API endpoint:   {url} (target env-1)")),
        "{out}"
    );
    assert!(out.contains(&ids[0]) && !out.contains(&ids[1]), "{out}");
    let o = env_run(&vars, &["target", "list"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("from TKE_TARGETS"));
}
