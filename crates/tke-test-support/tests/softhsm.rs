//! The SoftHSM2 fixture itself: private token directories whose tokens OpenSC finds by
//! label, with private PIN files of their own, and `isolated` running a test body in a
//! child process that sees only its own tokens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{fs, os::unix::fs::PermissionsExt as _, path::PathBuf};

use tke_test_support::{isolated, softhsm, Tokens};

#[test]
fn tokens_are_found_by_label_with_private_pins_of_their_own() {
    let t = Tokens::temp(&["alpha", "beta"]);
    let slots = t.pkcs11_tool_ok(&["--list-token-slots"]);
    for label in ["alpha", "beta"] {
        assert!(
            slots.contains(&format!("token label        : {label}")),
            "{slots}"
        );
        let mode = fs::metadata(t.pin_path(label))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{label}.pin is readable by others");
        // The PIN opens its token.
        t.pkcs11_tool_ok(&[
            "--token-label",
            label,
            "--login",
            "--pin",
            &t.pin(label),
            "--list-objects",
        ]);
    }
    assert_ne!(t.pin("alpha"), t.pin("beta"));
    assert_ne!(t.pin("alpha"), t.so_pin("alpha"));
    // A wrong PIN does not.
    let wrong = t.pkcs11_tool(&[
        "--token-label",
        "alpha",
        "--login",
        "--pin",
        "not-it",
        "--list-objects",
    ]);
    assert!(!wrong.status.success());
    assert_eq!(
        t.uri("alpha", "k"),
        format!(
            "pkcs11:token=alpha;object=k?module-path={}",
            softhsm::module_text()
        )
    );
    // A temporary token directory goes with its value.
    let dir = t.dir().to_path_buf();
    drop(t);
    assert!(!dir.exists());
}

#[test]
fn isolated_runs_the_body_in_a_child_that_sees_only_its_tokens() {
    let parent_conf = std::env::var_os("SOFTHSM2_CONF");
    isolated(
        "isolated_runs_the_body_in_a_child_that_sees_only_its_tokens",
        &["only-mine"],
        |t| {
            // In the child: SOFTHSM2_CONF names this test's directory.
            assert_eq!(
                std::env::var_os("SOFTHSM2_CONF").map(PathBuf::from),
                Some(t.conf())
            );
            let slots = t.pkcs11_tool_ok(&["--list-token-slots"]);
            assert!(slots.contains("only-mine"), "{slots}");
            assert_eq!(slots.matches("token label").count(), 1, "{slots}");
        },
    );
    // The parent's environment is untouched.
    assert_eq!(std::env::var_os("SOFTHSM2_CONF"), parent_conf);
}
