//! Text from a server is untrusted: a unit location (or an instance id) carrying escape
//! sequences and a line break cannot paint the operator's screen or add a line that looks
//! like `tke`'s own. Through the real binaries: a `tke-unitd` whose configuration gives a
//! unit such a location, and an embedded fleet whose `fleet.json` was edited.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{fs, process::Output};

use common::{snap, Workstation};
use tke_test_support::server::Server;

/// The fake verdict a hostile location tries to print on a line of its own.
const FAKE: &str = "All crypto units are configured identically.";
/// Clear the screen, home the cursor, then a line break and the fake verdict, then a
/// right-to-left override.
const HOSTILE: &str = "\u{1b}[2J\u{1b}[H[zone].[host].[01].[01]\nAll crypto units are configured identically.\u{202e}";

/// No control character but the line feed (no ESC, no CR, no C1), no format or separator
/// character, and no line that starts with the fake verdict.
fn assert_cannot_paint(what: &str, o: &Output) {
    for (stream, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        let text = String::from_utf8(bytes.clone()).unwrap();
        for c in text.chars() {
            assert!(
                c == '\n' || !tke_client::untrusted::is_unsafe(c),
                "{what}: {stream} holds {c:?}:\n{text}"
            );
        }
        assert!(
            !text.lines().any(|l| l.trim_start().starts_with(FAKE)),
            "{what}: {stream} has the injected line:\n{text}"
        );
    }
    // The location is still there, visibly escaped.
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("\\u{1b}[2J\\u{1b}[H[zone].[host].[01].[01]\\u{a}All crypto"),
        "{what}:\n{out}"
    );
}

#[test]
fn a_server_cannot_paint_the_screen_with_a_unit_location() {
    let root = tempfile::tempdir().unwrap();
    let mut srv = Server::init(
        root.path(),
        "srv",
        &["--operational", "1", "--recovery", "0"],
    );
    // The server sends what its configuration says: give the unit a hostile location.
    let config = srv.path("unitd.toml");
    let text = fs::read_to_string(&config).unwrap();
    let start = text.find("location = \"").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    let escaped = HOSTILE
        .replace('\u{1b}', "\\u001B")
        .replace('\n', "\\n")
        .replace('\u{202e}', "\\u202E");
    let text = format!("{}location = \"{escaped}\"{}", &text[..start], &text[end..]);
    fs::write(&config, text).unwrap();
    srv.start();

    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.add_target(&srv, &srv);
    let paths = [(w.path(), "[WS]"), (root.path(), "[ROOT]")];
    let o = w.run(&["cryptounits"]);
    assert_cannot_paint("cryptounits", &o);
    snap::assert_run("untrusted_location_remote_cryptounits", &o, 0, &paths);
    // Selecting the unit shows the listing again.
    let o = w.run(&["cryptounit-add", "1"]);
    assert_cannot_paint("cryptounit-add", &o);
    // The comparison shows no location, but its verdict line is the one imitated: it is
    // the only one.
    let o = w.run(&["cryptounit-compare"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(!out.lines().any(|l| l.starts_with(FAKE)), "{out}");
    snap::assert_run("untrusted_location_remote_compare", &o, 0, &paths);
    srv.stop();
}

#[test]
fn an_edited_fleet_file_cannot_paint_the_screen() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init"]);
    let fleet = w.path().join("local").join("fleet.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&fleet).unwrap()).unwrap();
    let units = v
        .pointer_mut("/instances/0/units")
        .and_then(|u| u.as_array_mut())
        .expect("fleet.json lists units");
    units[0]["location"] = serde_json::Value::String(HOSTILE.to_owned());
    fs::write(&fleet, serde_json::to_string_pretty(&v).unwrap()).unwrap();

    let o = w.run(&["cryptounits"]);
    assert_cannot_paint("embedded cryptounits", &o);
    snap::assert_run(
        "untrusted_location_embedded_cryptounits",
        &o,
        0,
        &[(w.path(), "[WS]")],
    );
}
