//! The `cli` helpers themselves, on a stand-in for `tke` (a shell script): the binary they
//! are given runs in the workstation directory with no terminal and no `CLOUDTKEFILES`,
//! exit codes and `FAILED` are asserted, snapshots are redacted and compared, and the
//! pseudo-terminal transcript shows what an operator sees.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{fs, os::unix::fs::PermissionsExt as _, path::PathBuf};

use tke_test_support::cli::{
    assert_failed, snap,
    terminal::{Answer, Terminal},
    Workstation,
};

/// A stand-in for `tke` (`@VERSION@` is this version): refuses to run without
/// `--files-dir`, then does what its first argument says.
const FAKE_TKE: &str = r#"#!/bin/sh
[ "$1" = --files-dir ] || { echo "no --files-dir" >&2; exit 99; }
dir=$2
shift 2
case "$1" in
args)
    shift
    echo "files-dir=$dir"
    echo "CLOUDTKEFILES=${CLOUDTKEFILES-unset}"
    echo "args=$*"
    if [ -t 0 ]; then echo "stdin=terminal"; else echo "stdin=[$(cat)]"; fi
    ;;
fail)
    echo FAILED >&2
    echo "$3" >&2
    exit "$2"
    ;;
exit)
    exit "$2"
    ;;
show)
    echo "tke @VERSION@ in $dir, unit 0123abcd-0123-4567-89ab-0123456789ab"
    echo FAILED >&2
    echo "key alice-0123abcd.key.pem, SKI 00112233445566778899aabbccddeeff" >&2
    echo "server https://127.0.0.1:40123 (unitd-40123) in $3" >&2
    exit 1
    ;;
ask)
    printf "Name: "
    read -r name
    echo "hello $name"
    exit 3
    ;;
esac
"#;

/// The stand-in written to a directory of its own (kept alive with it).
fn fake_tke() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("tke");
    fs::write(&p, FAKE_TKE.replace("@VERSION@", env!("CARGO_PKG_VERSION"))).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    (d, p)
}

#[test]
fn the_given_binary_runs_in_the_workstation_without_terminal_or_cloudtkefiles() {
    let (_d, tke) = fake_tke();
    let w = Workstation::new(&tke);
    // The runner's own CLOUDTKEFILES (it would name another directory) is removed.
    assert!(w
        .tke()
        .get_envs()
        .any(|(k, v)| k == "CLOUDTKEFILES" && v.is_none()));
    assert_eq!(
        w.ok(&["args", "a b", "c"]),
        format!(
            "files-dir={}\nCLOUDTKEFILES=unset\nargs=a b c\nstdin=[]\n",
            w.path().display()
        )
    );
}

#[test]
fn fails_asserts_the_exit_code_and_failed_on_code_1() {
    let (_d, tke) = fake_tke();
    let w = Workstation::new(&tke);
    let stderr = w.fails(&["fail", "1", "the reason"], 1);
    assert_eq!(stderr, "FAILED\nthe reason\n");
    // Codes 2 and 3 need no FAILED.
    w.fails(&["exit", "2"], 2);
    w.fails(&["exit", "3"], 3);
}

#[test]
#[should_panic(expected = "expected exit code 2")]
fn fails_refuses_another_exit_code() {
    let (_d, tke) = fake_tke();
    Workstation::new(&tke).fails(&["exit", "3"], 2);
}

#[test]
#[should_panic(expected = "no FAILED")]
fn a_failure_without_failed_is_refused() {
    let (_d, tke) = fake_tke();
    let w = Workstation::new(&tke);
    assert_failed(&w.run(&["exit", "1"]), 1, &["exit", "1"]);
}

#[test]
#[should_panic(expected = "failed")]
fn ok_refuses_a_failure() {
    let (_d, tke) = fake_tke();
    Workstation::new(&tke).ok(&["exit", "1"]);
}

#[test]
fn files_are_listed_with_their_bytes_and_lock_files_left_out() {
    let (_d, tke) = fake_tke();
    let w = Workstation::new(&tke);
    fs::create_dir(w.path().join("sub")).unwrap();
    fs::write(w.path().join("sub/b"), b"two").unwrap();
    fs::write(w.path().join("sub/.lock"), b"").unwrap();
    let secrets = w.secrets(&[("alice", "pw-1")]);
    assert_eq!(
        fs::metadata(&secrets).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        w.snapshot(),
        vec![
            (secrets, b"alice = \"pw-1\"\n".to_vec()),
            (w.path().join("sub/b"), b"two".to_vec()),
        ]
    );
}

#[test]
fn paths_are_shown_by_their_labels_the_innermost_first() {
    let (_d, tke) = fake_tke();
    let w = Workstation::new(&tke);
    let inner = w.path().join("tokens");
    let text = format!("{} and {}/x", w.path().display(), inner.display());
    assert_eq!(
        snap::redact_paths(&text, &[(w.path(), "[WS]"), (&inner, "[TOKENS]")]),
        "[WS] and [TOKENS]/x"
    );
}

/// Committed in `tests/snapshots/cli_redactions.snap`: labelled and unlabelled temporary
/// directories, the version, a UUID, a key file's SKI digits, an SKI, a port.
#[test]
fn what_changes_between_runs_is_redacted_in_snapshots() {
    let (_d, tke) = fake_tke();
    let w = Workstation::new(&tke);
    let other = tempfile::tempdir().unwrap();
    w.check(
        "cli_redactions",
        &["show", "x", other.path().to_str().unwrap()],
        1,
        &[],
    );
}

#[test]
fn the_terminal_transcript_shows_prompts_and_answers() {
    let (_d, tke) = fake_tke();
    let w = Workstation::new(&tke);
    let mut t = Terminal::spawn(&w, &["ask"]);
    t.expect("Name: ");
    t.answer(&Answer::Line("alice"));
    assert_eq!(t.finish(), ("Name: alice\nhello alice\n".to_owned(), 3));
}
