//! Detached approvals through the real binary: `tke plan`, `tke approve` on each
//! administrator's own workstation directory (holding only that administrator's key),
//! `tke approve --merge`, and `tke apply` from a third directory that holds no key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{fs, path::Path, path::PathBuf};

use common::{snap, Workstation};
use serde_json::Value;

/// The operator's workstation (the embedded fleet, every unit selected, after auto-init
/// with alice and bob, signature threshold 2, revocation threshold 1, and no key left on
/// it), and the administrators' own workstations, each with its own key only.
struct Setup {
    operator: Workstation,
    alice: (Workstation, String),
    bob: (Workstation, String),
}

fn admin(name: &str, password: &str) -> (Workstation, String) {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let s = w.file_keys(&[(name, password)]);
    (w, s)
}

/// The key files (`.key.pem`, `.crt.pem`) of a workstation directory.
fn key_files(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.ends_with(".key.pem") || n.ends_with(".crt.pem")
        })
        .collect()
}

fn setup() -> Setup {
    let operator = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    operator.ok(&["local", "init"]);
    operator.ok(&["cryptounit-add", "1", "2", "3", "4"]);
    let alice = admin("alice", "alice-password-1");
    let bob = admin("bob", "bob-password-22");
    // Auto-init signs with both keys here; then the operator's directory holds none.
    let copied: Vec<PathBuf> = [alice.0.path(), bob.0.path()]
        .iter()
        .flat_map(|d| key_files(d))
        .map(|from| {
            let to = operator.path().join(from.file_name().unwrap());
            fs::copy(&from, &to).unwrap();
            to
        })
        .collect();
    let s = operator.secrets(&[("alice", "alice-password-1"), ("bob", "bob-password-22")]);
    operator.auto_init(s.to_str().unwrap(), (2, 1), &["alice", "bob"]);
    for f in copied {
        fs::remove_file(f).unwrap();
    }
    fs::remove_file(s).unwrap();
    Setup {
        operator,
        alice,
        bob,
    }
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Copies the ceremony file to `w`'s directory (as if mailed) and returns the copy.
fn mail(from: &Path, w: &Workstation) -> PathBuf {
    let to = w.path().join("ceremony.json");
    fs::copy(from, &to).unwrap();
    to
}

/// `--secrets S approve FILE --admin NAME` on the administrator's workstation.
fn approving<'a>(admin: &'a (Workstation, String), file: &'a Path, name: &'a str) -> Vec<&'a str> {
    vec!["--secrets", &admin.1, "approve", arg(file), "--admin", name]
}

fn approve(admin: &(Workstation, String), file: &Path, name: &str) -> String {
    admin
        .0
        .ok(&[approving(admin, file, name), vec!["--yes"]].concat())
}

/// Each unit's thresholds, `(signature, revocation)`.
fn thresholds(w: &Workstation) -> Vec<(u64, u64)> {
    let out = w.ok(&["cryptounit-thrhlds", "--output", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["sig_threshold"].as_u64().unwrap(),
                u["rev_threshold"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn plan_thresholds(w: &Workstation, sig: &str, rev: &str, out: &Path) {
    w.ok(&[
        "plan",
        "cryptounit-thrhld-set",
        "--sig-threshold",
        sig,
        "--rev-threshold",
        rev,
        "--out",
        arg(out),
    ]);
}

/// Stderr of a failed run, with the directories labelled, for a snapshot.
fn failure(w: &Workstation, args: &[&str], code: i32, paths: &[(&Path, &str)]) -> String {
    let stderr = w.fails(args, code);
    let mut all = vec![(w.path(), "[WS]")];
    all.extend_from_slice(paths);
    snap::redact_paths(&stderr, &all)
}

/// `tke apply FILE` exits with code 4 (stderr as snapshot `name`) and changes nothing:
/// the units keep thresholds 2/1.
fn lacks_approvals(operator: &Workstation, file: &Path, name: &str) {
    let stderr = failure(operator, &["apply", arg(file), "--yes"], 4, &[]);
    snap::assert_snapshot(name, &stderr);
    assert_eq!(thresholds(operator), vec![(2, 1); 4]);
}

#[test]
fn two_administrators_approve_a_threshold_change_on_their_own_workstations() {
    let Setup {
        operator,
        alice,
        bob,
    } = setup();
    assert!(
        key_files(operator.path()).is_empty(),
        "the operator holds no key"
    );
    let plan = operator.path().join("thresholds.json");
    plan_thresholds(&operator, "2", "2", &plan);
    // The file carries no secret, and each summary is what its bytes say.
    let text = fs::read_to_string(&plan).unwrap();
    assert!(!text.contains("password"));
    let v: Value = serde_json::from_str(&text).unwrap();
    let commands = v["rounds"][0]["commands"].as_array().unwrap();
    assert_eq!(commands.len(), 4, "one command per unit");
    for c in commands {
        assert_eq!(
            c["summary"],
            "set the signature threshold to 2 and the revocation signature threshold to 2"
        );
        assert!(c["approvals"].as_array().unwrap().is_empty());
    }

    // Refusals that change nothing: an existing file is never replaced, an administrator
    // who is not installed cannot be planned away.
    let exists = failure(
        &operator,
        &[
            "plan",
            "cryptounit-thrhld-set",
            "--sig-threshold",
            "2",
            "--rev-threshold",
            "2",
            "--out",
            arg(&plan),
        ],
        1,
        &[],
    );
    snap::assert_snapshot("approvals_plan_out_exists", &exists);
    assert_eq!(fs::read_to_string(&plan).unwrap(), text);
    let nobody = failure(
        &operator,
        &[
            "plan",
            "cryptounit-admin-rm",
            "--admin",
            "carol",
            "--out",
            "rm.json",
        ],
        1,
        &[],
    );
    snap::assert_snapshot("approvals_plan_rm_not_installed", &nobody);

    let at_alice = mail(&plan, &alice.0);
    let at_bob = mail(&plan, &bob.0);
    // Without a terminal, the confirmation needs --yes; a key this workstation does not
    // hold cannot approve. Neither changes the file.
    let no_yes = failure(&alice.0, &approving(&alice, &at_alice, "alice"), 1, &[]);
    snap::assert_snapshot("approvals_approve_needs_yes", &no_yes);
    let not_here = failure(
        &alice.0,
        &[approving(&alice, &at_alice, "bob"), vec!["--yes"]].concat(),
        1,
        &[],
    );
    snap::assert_snapshot("approvals_approve_key_not_here", &not_here);
    assert_eq!(fs::read_to_string(&at_alice).unwrap(), text);
    let out = approve(&alice, &at_alice, "alice");
    assert!(
        out.contains("alice (") && out.contains("approved 4 command(s)"),
        "{out}"
    );
    // Offline: the administrators' directories have no fleet and no target to reach.
    assert!(!alice.0.path().join("local").exists());
    // Approving twice adds nothing.
    let again = approve(&alice, &at_alice, "alice");
    assert!(
        again.contains("approved every command of this file already"),
        "{again}"
    );

    // One approval of the two the signature threshold asks: exit code 4, nothing sent.
    lacks_approvals(&operator, &at_alice, "approvals_apply_lacks_approvals");

    approve(&bob, &at_bob, "bob");
    let merged = operator.path().join("merged.json");
    operator.ok(&[
        "approve",
        "--merge",
        arg(&merged),
        arg(&at_alice),
        arg(&at_bob),
    ]);
    let out = operator.ok(&["apply", arg(&merged), "--yes"]);
    assert!(
        out.contains("Crypto unit 1: signed by alice, bob."),
        "{out}"
    );
    assert_eq!(thresholds(&operator), vec![(2, 2); 4]);

    // Applying twice does nothing the second time.
    let counters = operator.ok(&["cryptounit-compare", "--output", "json"]);
    let out = operator.ok(&["apply", arg(&merged), "--yes"]);
    assert!(out.contains("applied already; nothing was sent"), "{out}");
    assert_eq!(
        operator.ok(&["cryptounit-compare", "--output", "json"]),
        counters
    );
}

/// A change made to one command of a ceremony file.
type Edit = Box<dyn Fn(&mut Value)>;

/// Edits `field` of the first command of the ceremony file at `path` with `edit`.
fn edit(path: &Path, edit: impl Fn(&mut Value)) {
    let mut v: Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v["rounds"][0]["commands"][0]);
    fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn edited_files_outsiders_and_stale_counters_are_refused_before_sending() {
    let Setup {
        operator,
        alice,
        bob,
    } = setup();
    let plan = operator.path().join("thresholds.json");
    plan_thresholds(&operator, "2", "2", &plan);
    let at_alice = mail(&plan, &alice.0);
    approve(&alice, &at_alice, "alice");
    let approved = fs::read_to_string(&at_alice).unwrap();
    let paths = [(alice.0.path(), "[ALICE]"), (bob.0.path(), "[BOB]")];

    // One byte of the command, the summary with it (so that only the signature tells),
    // the summary alone, the counter: refused by approve and by apply.
    let edits: [(&str, Edit); 4] = [
        (
            "approvals_edited_command_byte",
            Box::new(|c: &mut Value| {
                let hex = c["command"].as_str().unwrap().to_owned();
                c["command"] = Value::from(format!("{}3", &hex[..hex.len() - 1]));
            }),
        ),
        (
            "approvals_edited_command_and_summary",
            Box::new(|c: &mut Value| {
                let hex = c["command"].as_str().unwrap().to_owned();
                c["command"] = Value::from(format!("{}3", &hex[..hex.len() - 1]));
                c["summary"] = Value::from(
                    "set the signature threshold to 2 and the revocation signature threshold to 3",
                );
            }),
        ),
        (
            "approvals_edited_summary",
            Box::new(|c: &mut Value| {
                c["summary"] = Value::from(
                    "set the signature threshold to 1 and the revocation signature threshold to 1",
                );
            }),
        ),
        (
            "approvals_edited_counter",
            Box::new(|c: &mut Value| {
                c["counter"] = Value::from(c["counter"].as_u64().unwrap() + 1);
            }),
        ),
    ];
    for (name, change) in &edits {
        let at_bob = mail(&at_alice, &bob.0);
        edit(&at_bob, change);
        let before = fs::read(&at_bob).unwrap();
        let args = [approving(&bob, &at_bob, "bob"), vec!["--yes"]].concat();
        let refused = failure(&bob.0, &args, 1, &paths);
        snap::assert_snapshot(&format!("{name}_approve"), &refused);
        assert_eq!(
            fs::read(&at_bob).unwrap(),
            before,
            "{name}: the file is unchanged"
        );
        let refused = failure(&operator, &["apply", arg(&at_bob), "--yes"], 1, &paths);
        snap::assert_snapshot(&format!("{name}_apply"), &refused);
        assert_eq!(
            thresholds(&operator),
            vec![(2, 1); 4],
            "{name}: nothing was sent"
        );
    }

    // An approval by someone who is not an administrator does not count: exit code 4,
    // naming her, before anything is sent.
    let mallory = admin("mallory", "mallory-password-3");
    let at_mallory = mail(&at_alice, &mallory.0);
    approve(&mallory, &at_mallory, "mallory");
    lacks_approvals(
        &operator,
        &at_mallory,
        "approvals_apply_not_an_administrator",
    );

    // Another approved ceremony runs first (carol is added, from her certificate file):
    // the threshold plan is stale, and the error names the unit.
    let carol = admin("carol", "carol-password-4");
    let cert = key_files(carol.0.path())
        .into_iter()
        .find(|p| p.to_str().unwrap().ends_with(".crt.pem"))
        .unwrap();
    let add = operator.path().join("add.json");
    operator.ok(&[
        "plan",
        "cryptounit-admin-add",
        "--admin-cert",
        arg(&cert),
        "--out",
        arg(&add),
    ]);
    let add_alice = alice.0.path().join("add.json");
    fs::copy(&add, &add_alice).unwrap();
    approve(&alice, &add_alice, "alice");
    approve(&bob, &add_alice, "bob");
    let other_plan = operator.path().join("other.json");
    let mismatch = failure(
        &operator,
        &[
            "approve",
            "--merge",
            arg(&other_plan),
            arg(&at_alice),
            arg(&add_alice),
        ],
        1,
        &paths,
    );
    snap::assert_snapshot("approvals_merge_other_plan", &mismatch);
    assert!(!other_plan.exists());
    operator.ok(&["apply", arg(&add_alice), "--yes"]);
    let at_bob = mail(&at_alice, &bob.0);
    fs::write(&at_bob, &approved).unwrap();
    approve(&bob, &at_bob, "bob");
    let stale = failure(&operator, &["apply", arg(&at_bob), "--yes"], 1, &paths);
    snap::assert_snapshot("approvals_apply_stale", &stale);
    assert_eq!(thresholds(&operator), vec![(2, 1); 4]);
}

/// The certificate file of the only key of `w`'s directory.
fn certificate(w: &Workstation) -> PathBuf {
    key_files(w.path())
        .into_iter()
        .find(|p| p.to_str().unwrap().ends_with(".crt.pem"))
        .unwrap()
}

/// Administrator names installed on each unit, sorted.
fn admin_names(w: &Workstation) -> Vec<Vec<String>> {
    let out = w.ok(&["cryptounit-admins", "--output", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|u| {
            let mut names: Vec<String> = u["admins"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["name"].as_str().unwrap().to_owned())
                .collect();
            names.sort();
            names
        })
        .collect()
}

#[test]
fn a_desired_state_plans_the_difference_in_a_safe_order() {
    let Setup {
        operator,
        alice,
        bob,
    } = setup();
    let carol = admin("carol", "carol-password-4");
    // The desired state names certificate files, copied next to it (they are public).
    let dir = operator.path().join("desired");
    fs::create_dir(&dir).unwrap();
    for (w, name) in [(&alice.0, "alice"), (&bob.0, "bob"), (&carol.0, "carol")] {
        fs::copy(certificate(w), dir.join(format!("{name}.crt.pem"))).unwrap();
    }
    let desired = dir.join("instance.toml");
    let out = operator.path().join("desired.json");
    let plan = ["plan", "--desired", arg(&desired), "--out", arg(&out)];

    // Desired = current: nothing to plan, no file.
    fs::write(
        &desired,
        "admins = [\"alice.crt.pem\", \"bob.crt.pem\"]\nsig_threshold = 2\nrev_threshold = 1\n",
    )
    .unwrap();
    let same = operator.ok(&plan);
    assert!(same.contains("hold this already"), "{same}");
    assert!(!out.exists());

    // Carol added and the revocation threshold raised: carol first, then the thresholds
    // (there would be too few administrators for 3 before her).
    fs::write(
        &desired,
        "admins = [\"alice.crt.pem\", \"bob.crt.pem\", \"carol.crt.pem\"]\nsig_threshold = 2\nrev_threshold = 3\n",
    )
    .unwrap();
    operator.check("approvals_plan_desired", &plan, 0, &[]);
    let at_alice = mail(&out, &alice.0);
    approve(&alice, &at_alice, "alice");
    approve(&bob, &at_alice, "bob");
    operator.ok(&["apply", arg(&at_alice), "--yes"]);
    assert_eq!(thresholds(&operator), vec![(2, 3); 4]);
    assert_eq!(
        admin_names(&operator),
        vec![vec!["alice", "bob", "carol"]; 4]
    );

    // Now in the desired state: nothing more to plan.
    let out = operator.path().join("again.json");
    let plan = ["plan", "--desired", arg(&desired), "--out", arg(&out)];
    let again = operator.ok(&plan);
    assert!(!out.exists());
    assert!(again.contains("hold this already"), "{again}");

    // An entry that is neither a certificate file nor a key here changes nothing.
    fs::write(
        &desired,
        "admins = [\"alice.crt.pem\", \"dave\"]\nsig_threshold = 1\nrev_threshold = 1\n",
    )
    .unwrap();
    let refused = failure(&operator, &plan, 1, &[]);
    snap::assert_snapshot("approvals_plan_desired_unknown_admin", &refused);
}

/// An administrator whose key is on a PKCS#11 token (SoftHSM2) approves as one with a key
/// file does: the same signing code, the PIN from `--secrets`.
#[test]
fn an_administrator_approves_with_a_key_on_a_pkcs11_token() {
    let tokens = tke_test_support::Tokens::temp(&["bob"]);
    let operator = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    operator.ok(&["local", "init"]);
    operator.ok(&["cryptounit-add", "1", "2", "3", "4"]);
    let alice = admin("alice", "alice-password-1");
    for from in key_files(alice.0.path()) {
        fs::copy(&from, operator.path().join(from.file_name().unwrap())).unwrap();
    }
    let s = operator.secrets(&[("alice", "alice-password-1")]);
    operator.auto_init(s.to_str().unwrap(), (1, 1), &["alice"]);
    for f in key_files(operator.path()) {
        fs::remove_file(f).unwrap();
    }

    let mut bob_ws = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    bob_ws.set_env("SOFTHSM2_CONF", tokens.conf());
    let pin = tokens.pin("bob");
    let secrets = bob_ws.secrets(&[("bob", &pin)]);
    let uri = tokens.uri("bob", "bob");
    let bob = (bob_ws, secrets.to_str().unwrap().to_owned());
    bob.0.ok(&[
        "--secrets",
        &bob.1,
        "sigkey-add",
        "--pkcs11",
        &uri,
        "--name",
        "bob",
    ]);

    // Bob is added (alice approves), then bob alone approves raising the signature
    // threshold (the current threshold, 1, is what it needs): his token's signature is the
    // one the units check.
    let add = operator.path().join("add.json");
    let bob_cert = certificate(&bob.0);
    operator.ok(&[
        "plan",
        "cryptounit-admin-add",
        "--admin-cert",
        arg(&bob_cert),
        "--out",
        arg(&add),
    ]);
    approve(&alice, &add, "alice");
    operator.ok(&["apply", arg(&add), "--yes"]);
    let raise = operator.path().join("raise.json");
    plan_thresholds(&operator, "2", "1", &raise);
    let out = approve(&bob, &raise, "bob");
    assert!(out.contains("approved 4 command(s)"), "{out}");
    let out = operator.ok(&["apply", arg(&raise), "--yes"]);
    assert!(out.contains("Crypto unit 1: signed by bob."), "{out}");
    assert_eq!(thresholds(&operator), vec![(2, 1); 4]);
    assert_eq!(admin_names(&operator), vec![vec!["alice", "bob"]; 4]);
}
