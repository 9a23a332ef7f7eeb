//! Text from a server is untrusted: a unit location (or an instance id) carrying escape
//! sequences and a line break cannot paint the operator's screen or add a line that looks
//! like `tke`'s own. Through the real binaries: a `tke-unitd` whose configuration gives a
//! unit such a location, an embedded fleet whose `fleet.json` was edited, and a server
//! with the fleet's TLS certificate whose error answers carry them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    fs,
    io::{Read as _, Write as _},
    net::TcpListener,
    path::Path,
    process::Output,
    sync::Arc,
};

use common::{snap, Workstation};
use tke_test_support::server::Server;

/// The fake verdict a hostile location tries to print on a line of its own.
const FAKE: &str = "All crypto units are configured identically.";
/// Clear the screen, home the cursor, then a line break and the fake verdict, then a
/// right-to-left override.
const HOSTILE: &str = "\u{1b}[2J\u{1b}[H[zone].[host].[01].[01]\nAll crypto units are configured identically.\u{202e}";

/// No control character but the line feed (no ESC, no CR, no C1), no format or separator
/// character, and no line that starts with the fake verdict; the hostile text is shown
/// escaped.
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
    // The hostile text is still there, visibly escaped.
    let all = [&o.stdout[..], &o.stderr[..]].concat();
    let all = String::from_utf8_lossy(&all);
    assert!(
        all.contains("\\u{1b}[2J\\u{1b}[H[zone].[host].[01].[01]\\u{a}All crypto"),
        "{what}:\n{all}"
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

/// A server with `srv`'s TLS certificate that answers every request with HTTP 403 and a
/// JSON error whose code and message hold `HOSTILE`. Returns its URL; it serves until the
/// test process ends.
fn hostile_server(srv: &Path) -> String {
    let der = |file: &str| {
        let text = fs::read_to_string(srv.join("tls").join(file)).unwrap();
        tke_proto::der::pem::decode_vec(text.as_bytes()).unwrap().1
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![der("server.pem").into()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(der("server.key.pem").into()),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let body = serde_json::json!({ "code": HOSTILE, "message": HOSTILE }).to_string();
    std::thread::spawn(move || {
        for sock in listener.incoming().flatten() {
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            // Read the request head (the body, if any, is left unread: we close).
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match tls.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let answer = format!(
                "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(answer.as_bytes());
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    url
}

#[test]
fn a_server_cannot_paint_the_screen_with_an_error_message() {
    let root = tempfile::tempdir().unwrap();
    let srv = Server::init(
        root.path(),
        "srv",
        &["--operational", "1", "--recovery", "0"],
    );
    let url = hostile_server(&root.path().join("srv"));
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let args = [
        "target",
        "add",
        "hostile",
        &url,
        "--ca",
        &srv.path("ca.pem"),
        "--api-key-file",
        &srv.path("api-key"),
    ];
    // `target add` asks the server at once: refused, and its error paints nothing.
    let o = w.run(&args);
    assert_eq!(o.status.code(), Some(1));
    assert_cannot_paint("error message at target add", &o);
    w.ok(&[&args[..], &["--no-check"]].concat());
    // Listing the units asks the server: it answers its error.
    let o = w.run(&["cryptounits"]);
    assert_cannot_paint("error message", &o);
    let paths = [(w.path(), "[WS]"), (root.path(), "[ROOT]")];
    snap::assert_run("untrusted_error_message_remote", &o, 1, &paths);
}
