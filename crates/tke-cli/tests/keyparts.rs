//! `mks`, `mk-add`, `mk-rm` through the real binary: random and given parts, the
//! verification patterns shown, JSON, deletion with and without `--yes`, and every bad
//! input refused with a snapshot of what the operator reads, changing nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{fs, os::unix::fs::PermissionsExt, path::PathBuf};

use common::{
    terminal::{
        check_steps as check_terminal,
        Answer::{End, Hidden, Line},
        Terminal,
    },
    Workstation,
};
use serde_json::{json, Value};
use tke_proto::{MasterKey, Vp};

/// A part value, as its owner would type it (upper and lower case).
const VALUE: &str = "00112233445566778899AABBCCDDEEFF0123456789abcdef0f1e2d3c4b5a6978";

/// Passwords by description, as a secrets file holds them (quoted TOML keys).
const PW: &[(&str, &str)] = &[
    ("\"alice's part\"", "alice-part-password"),
    ("bob", "bob-part-password-2"),
    ("carol", "carol-part-password-3"),
];

fn tke() -> Workstation {
    Workstation::new(env!("CARGO_BIN_EXE_tke"))
}

/// The VP of a hex value, computed here with `tke_proto` (docs/protocol.md §12).
fn vp_of(hex: &str) -> Vp {
    let bytes: Vec<u8> = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    MasterKey::from_slice(&bytes).unwrap().vp()
}

/// Writes `text` to `name` in the workstation directory with `mode`; returns its path.
fn file(w: &Workstation, name: &str, text: &str, mode: u32) -> String {
    let p = w.path().join(name);
    fs::write(&p, text).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    p.to_str().unwrap().to_owned()
}

/// `mks --output json`.
fn mks_json(w: &Workstation) -> Value {
    serde_json::from_str(&w.ok(&["mks", "--output", "json"])).unwrap()
}

/// The part files of the workstation.
fn part_files(w: &Workstation) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(w.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().unwrap().ends_with(".mkpart.toml"))
        .collect();
    v.sort();
    v
}

/// `mk-add --random --description DESCRIPTION`, its password from the secrets file `s`;
/// returns what it printed.
fn add_random(w: &Workstation, s: &str, description: &str) -> String {
    w.ok(&[
        "--secrets",
        s,
        "mk-add",
        "--random",
        "--description",
        description,
    ])
}

/// A workstation with a secrets file, and parts "alice's part" (random) and "bob" (of
/// [`VALUE`], from a value file written in two lines).
fn with_parts() -> (Workstation, String) {
    let w = tke();
    let s = w.secrets(PW).to_str().unwrap().to_owned();
    add_random(&w, &s, "alice's part");
    let value = file(
        &w,
        "value.hex",
        &format!("{}\n{}\n", &VALUE[..32], &VALUE[32..]),
        0o600,
    );
    w.ok(&[
        "--secrets",
        &s,
        "mk-add",
        "--value-file",
        &value,
        "--description",
        "bob",
    ]);
    (w, s)
}

#[test]
fn random_and_given_parts_are_listed_with_their_verification_patterns() {
    let (w, s) = with_parts();
    let bob_vp = vp_of(VALUE).to_hex();

    // The table: the VP on two lines of 32 hex digits, under its column.
    let out = w.ok(&["mks"]);
    let lines: Vec<&str> = out.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.starts_with("KEYNUM"))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        lines[header],
        "KEYNUM   DESCRIPTION    VERIFICATION PATTERN"
    );
    let column = lines[header].find("VERIFICATION").unwrap();
    assert!(
        lines[header + 1].starts_with("1        alice's part   "),
        "{out}"
    );
    assert_eq!(
        lines[header + 3],
        format!("2        bob            {}", &bob_vp[..32])
    );
    assert_eq!(
        lines[header + 4],
        format!("{}{}", " ".repeat(column), &bob_vp[32..])
    );

    // JSON: exactly keynum, description and vp.
    let v = mks_json(&w);
    let alice_vp = v[0]["vp"].as_str().unwrap().to_owned();
    assert_eq!(
        v,
        json!([
            {"keynum": 1, "description": "alice's part", "vp": alice_vp},
            {"keynum": 2, "description": "bob", "vp": bob_vp},
        ])
    );
    assert_ne!(alice_vp, bob_vp);
    assert!(lines[header + 1].ends_with(&alice_vp[..32]), "{out}");

    // A third part is added after them: the others keep their KEYNUMs. mk-add prints
    // the updated list.
    let out = w.ok(&[
        "--secrets",
        &s,
        "mk-add",
        "--random",
        "--description",
        "carol",
    ]);
    assert!(out.contains("Master key part \"carol\" saved in "), "{out}");
    assert!(out.contains("3        carol"), "{out}");
    assert!(out.ends_with("\nOK\n"), "{out}");
    let v = mks_json(&w);
    assert_eq!(v[1]["vp"], bob_vp);
    assert_eq!(v[2]["description"], "carol");

    // No password was needed to list; the files are 0600 and never hold the value.
    for p in part_files(&w) {
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
        let text = fs::read_to_string(&p).unwrap().to_lowercase();
        assert!(!text.contains(&VALUE.to_lowercase()[..16]), "{text}");
    }
    w.check("ok_mks", &["mks"], 0, &[]);
}

#[test]
fn mk_rm_asks_and_removes_only_what_it_was_told() {
    let (w, _) = with_parts();
    let bob_vp = vp_of(VALUE).to_hex();

    // Without --yes and without a terminal: the error names the flag; nothing removed.
    let before = w.snapshot();
    w.check("no_terminal_mk_rm_confirmation", &["mk-rm", "bob"], 1, &[]);
    // Declined at the terminal: exit code 3, nothing removed.
    check_terminal(
        &w,
        "cancelled_mk_rm",
        &["mk-rm", "bob"],
        &[("> ", Line("n"))],
        3,
    );
    assert_eq!(before, w.snapshot());

    // By KEYNUM at the prompt, confirmed.
    let mut t = Terminal::spawn(&w, &["mk-rm"]);
    t.expect("> ");
    t.answer(&Line("1"));
    t.expect("(y/N)\r\n> ");
    t.answer(&Line("y"));
    t.check("mk_rm_by_keynum", 0, &[(w.path(), "[WS]")]);
    assert_eq!(
        mks_json(&w),
        json!([{"keynum": 1, "description": "bob", "vp": bob_vp}])
    );

    // With --yes: the list that is left, or in JSON, the parts left.
    let out = w.ok(&["mk-rm", "bob", "--yes"]);
    assert!(
        out.contains("may be the only backup of the master key"),
        "{out}"
    );
    assert!(out.contains("No master key parts were found."), "{out}");
    assert!(part_files(&w).is_empty());
    // The creation records went with the parts.
    let left: Vec<_> = fs::read_dir(w.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".mkpart."))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn mk_rm_with_json_prints_the_parts_left() {
    let (w, s) = with_parts();
    add_random(&w, &s, "carol");
    let before = mks_json(&w);
    let o = w.run(&["mk-rm", "bob", "--yes", "--output", "json"]);
    assert!(o.status.success(), "{o:?}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    // Alice's part keeps KEYNUM 1; carol follows it.
    assert_eq!(
        v,
        json!([
            {"keynum": 1, "description": "alice's part", "vp": before[0]["vp"]},
            {"keynum": 2, "description": "carol", "vp": before[2]["vp"]},
        ])
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("WARNING:"), "{err}");
}

#[test]
fn bad_inputs_are_refused_clearly_and_change_nothing() {
    let (w, s) = with_parts();
    let value = |name: &str, text: &str, mode: u32| file(&w, name, text, mode);
    let short = value("short.hex", &VALUE[..62], 0o600);
    let not_hex = value("not-hex.hex", &VALUE.replace('A', "G"), 0o600);
    let zero = value("zero.hex", &"0".repeat(64), 0o600);
    let open = value("open.hex", VALUE, 0o644);
    let good = value("good.hex", VALUE, 0o600);
    let long = "x".repeat(65);
    let before = w.snapshot();
    let add = |source: &[&'static str], description: &'static str| -> Vec<String> {
        let mut v: Vec<String> = ["--secrets", &s, "mk-add"].map(String::from).to_vec();
        v.extend(source.iter().map(|a| a.to_string()));
        v.extend(["--description".to_owned(), description.to_owned()]);
        v
    };
    let from = |path: &str, description: &'static str| -> Vec<String> {
        let mut v: Vec<String> = ["--secrets", &s, "mk-add", "--value-file", path]
            .map(String::from)
            .to_vec();
        v.extend(["--description".to_owned(), description.to_owned()]);
        v
    };
    let cases: Vec<(&str, Vec<String>, i32)> = vec![
        ("mk_add_value_wrong_length", from(&short, "carol"), 1),
        ("mk_add_value_not_hex", from(&not_hex, "carol"), 1),
        ("mk_add_value_all_zero", from(&zero, "carol"), 1),
        (
            "mk_add_value_file_readable_by_others",
            from(&open, "carol"),
            1,
        ),
        (
            "mk_add_value_file_missing",
            from(&format!("{}/missing.hex", w.path().display()), "carol"),
            1,
        ),
        ("mk_add_description_taken", from(&good, "bob"), 1),
        ("mk_add_description_lookalike", add(&["--random"], "Bob"), 1),
        ("mk_add_description_empty", add(&["--random"], ""), 1),
        (
            "mk_add_description_too_long",
            {
                let mut v = add(&["--random"], "x");
                *v.last_mut().unwrap() = long.clone();
                v
            },
            1,
        ),
        (
            "mk_rm_unknown_part",
            ["mk-rm", "Bob", "--yes"].map(String::from).to_vec(),
            1,
        ),
        (
            "mk_add_without_source",
            ["mk-add"].map(String::from).to_vec(),
            2,
        ),
        (
            "mk_add_two_sources",
            add(&["--random", "--value"], "carol"),
            2,
        ),
        (
            "no_terminal_mk_add_value",
            ["mk-add", "--value"].map(String::from).to_vec(),
            1,
        ),
        (
            "no_terminal_mk_add_description",
            ["mk-add", "--random"].map(String::from).to_vec(),
            1,
        ),
        (
            "no_terminal_mk_add_password",
            ["mk-add", "--random", "--description", "carol"]
                .map(String::from)
                .to_vec(),
            1,
        ),
        (
            "no_terminal_mk_rm_keynum",
            ["mk-rm"].map(String::from).to_vec(),
            1,
        ),
    ];
    for (name, args, code) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        w.check(name, &args, *code, &[]);
    }
    assert_eq!(before, w.snapshot(), "a refused command changed files");
    // The value is never echoed in an error.
    for (name, args, _) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = w.run(&args);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!all.contains(&VALUE[..16]), "{name}: {all}");
    }
}

#[test]
fn a_damaged_part_file_fails_mks_and_is_named() {
    let (w, _) = with_parts();
    let bob = part_files(&w)
        .into_iter()
        .find(|p| p.to_str().unwrap().contains("/bob-"))
        .unwrap();
    let text = fs::read_to_string(&bob).unwrap();
    fs::write(&bob, text.replace("version = 1", "version = 7")).unwrap();
    w.check("mks_damaged_part_file", &["mks"], 1, &[]);
    // The other part is still listed, in JSON too; the problem goes to standard error.
    let o = w.run(&["mks", "--output", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["description"], "alice's part");
}

#[test]
fn interactive_mk_add_asks_as_the_vendor_does_and_again_after_a_bad_answer() {
    let (w, _) = with_parts();
    let mut t = Terminal::spawn(&w, &["mk-add", "--value"]);
    for answer in [
        // The value: too short, not hex, all zeros, then good.
        Hidden(&VALUE[..10]),
        Hidden("zz"),
        Hidden(&"0".repeat(64)),
        Hidden(VALUE),
        // The description: taken, empty, then new.
        Line("bob"),
        Line(""),
        Line("dave"),
        // The password: twice, the second differing; then twice the same.
        Hidden("dave-part-password-1"),
        Hidden("dave-part-password-2"),
        Hidden("dave-part-password-1"),
        Hidden("dave-part-password-1"),
    ] {
        t.expect("> ");
        t.answer(&answer);
    }
    t.check("interactive_mk_add_value", 0, &[(w.path(), "[WS]")]);
    let v = mks_json(&w);
    // The VP shown is that of the value typed (the same value as bob's part).
    assert_eq!(v[2]["description"], "dave");
    assert_eq!(v[2]["vp"], vp_of(VALUE).to_hex());
}

#[test]
fn passwords_for_parts_on_a_terminal() {
    let (w, _) = with_parts();
    // A weak password is explained and needs a confirmation; declined, it is asked again.
    check_terminal(
        &w,
        "prompt_mk_add_weak_password",
        &["mk-add", "--random", "--description", "erin"],
        &[
            ("> ", Hidden("short")),
            ("> ", Hidden("short")),
            ("> ", Line("n")),
            ("> ", End),
        ],
        1,
    );
    // From a secrets file (a script), a weak password is taken with a warning.
    let weak = file(&w, "weak.toml", "erin = \"erin\"\n", 0o600);
    let o = w.run(&[
        "--secrets",
        &weak,
        "mk-add",
        "--random",
        "--description",
        "erin",
    ]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "Warning: the password for the master key part \"erin\" in the secrets file is \
         weak: it is shorter than 12 characters.\n"
    );
}

#[test]
fn help_says_what_to_do_next() {
    let w = tke();
    let out = w.ok(&["help", "mk-add"]);
    for s in [
        "--random",
        "--value-file",
        "--description",
        "--secrets FILE",
        "hidden prompt",
        "cryptounit-mk-load --part D1 --part D2",
    ] {
        assert!(out.contains(s), "{s:?} not in:\n{out}");
    }
    assert_eq!(out, w.ok(&["mk-add", "--help"]));
    let out = w.ok(&["mk-rm", "--help"]);
    assert!(
        out.contains("only backup") && out.contains("--yes"),
        "{out}"
    );
    let out = w.ok(&["mks", "--help"]);
    assert!(
        out.contains("Needs no password") && out.contains("cryptounit-mk-load --part"),
        "{out}"
    );
    // No longer "a command tke does not have yet".
    for c in ["mks", "mk-add", "mk-rm"] {
        let o = w.run(&[c, "--help"]);
        assert!(o.status.success(), "{c}: {o:?}");
    }
}
