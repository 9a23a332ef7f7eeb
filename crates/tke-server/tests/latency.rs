//! The simulated HSM round trip of `tke-unitd` (test tooling): `latency_ms` in
//! unitd.toml and `serve --latency-ms`, which overrides it; values out of range refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    fs,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use tke_test_support::cli::snap::assert_run;

/// The time one query through the server takes.
fn timed_query(server: &ServerProc) -> Duration {
    let client = client(server);
    let unit = &client.units()[0];
    let start = Instant::now();
    client.query(unit).unwrap();
    start.elapsed()
}

#[test]
fn the_latency_comes_from_the_configuration_or_the_flag_and_is_checked() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let dir = root.join("srv");
    let port = free_port();
    init(&dir, port, &["--operational", "1", "--recovery", "0"]);
    let config = dir.join("unitd.toml");
    let serve = |extra: &[&str]| {
        Command::new(UNITD)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // Refused before the server opens anything.
    for (name, ms) in [
        ("serve_latency_too_large", "10001"),
        ("serve_latency_not_a_number", "1e3"),
    ] {
        assert_run(name, &serve(&["--latency-ms", ms]), 2, &[(root, "[ROOT]")]);
    }
    let text = fs::read_to_string(&config).unwrap();
    let with_latency = |ms: &str| {
        text.replacen(
            "units_dir = \"units\"",
            &format!("units_dir = \"units\"\nlatency_ms = {ms}"),
            1,
        )
    };
    fs::write(&config, with_latency("10001")).unwrap();
    assert_run(
        "serve_config_latency_too_large",
        &serve(&[]),
        1,
        &[(root, "[ROOT]")],
    );

    // From the configuration: every answer waits.
    let latency = Duration::from_millis(500);
    fs::write(&config, with_latency("500")).unwrap();
    let server = ServerProc::start(&dir, port);
    assert!(timed_query(&server) >= latency);
    assert!(
        server.logs().contains("latency_ms=500"),
        "{}",
        server.logs()
    );
    drop(server);

    // The flag overrides it; 0 is none.
    let server = ServerProc::start_with(&dir, port, &["--latency-ms", "0"]);
    let plain = timed_query(&server);
    assert!(plain < latency, "{plain:?}");
    assert!(!server.logs().contains("latency_ms"), "{}", server.logs());
    drop(server);
    fs::write(&config, text).unwrap();
    let server = ServerProc::start_with(&dir, port, &["--latency-ms", "500"]);
    assert!(timed_query(&server) >= latency);
}
