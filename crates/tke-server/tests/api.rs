//! tke-unitd over loopback HTTPS: the init contract, the HTTP API, API keys, refusals,
//! replay, and the graceful stop. Every test runs real `tke-unitd` processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use common::*;
use tke_client::{ClientError, HttpsError, Transport, UnitDescriptor};
use tke_proto::{
    der::{Decode, Encode},
    Command, ModuleError, Nonce, Query, Request, SignedResponse, Threshold, UnitId,
};
use tke_sigkey::Signer as _;

#[test]
fn init_writes_what_a_client_needs_and_the_server_lists_its_units() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("srv");
    let port = free_port();
    let out = init(
        &dir,
        port,
        &[
            "--operational",
            "1",
            "--recovery",
            "1",
            "--failover",
            "1",
            "--zone",
            "zone-a",
        ],
    );
    for line in [
        format!("Configuration:    {}", dir.join("unitd.toml").display()),
        format!("CA file:          {}", dir.join("ca.pem").display()),
        format!("API key file:     {}", dir.join("api-key").display()),
        format!("Endpoint:         https://127.0.0.1:{port}"),
    ] {
        assert!(out.contains(&line), "missing {line:?} in:\n{out}");
    }
    for private in ["api-key", "ca.key.pem", "tls/server.key.pem", "unitd.toml"] {
        let mode = fs::metadata(dir.join(private))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{private} is readable by others");
    }
    // The configuration holds the key's hash, never the key.
    let api_key = key(&dir, "api-key");
    let config = fs::read_to_string(dir.join("unitd.toml")).unwrap();
    assert!(!config.contains(&api_key[5..]));
    assert!(config.contains(&tke_server::apikey::KeyHash::of(api_key.as_bytes()).to_hex()));
    // init never overwrites a server.
    let again = std::process::Command::new(UNITD)
        .args(["init", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists and is not empty"));

    let server = ServerProc::start(&dir, port);
    let ca = ca_of(&dir);
    let client = client(&server);
    let units = client.units();
    let types: Vec<&str> = units.iter().map(|u| u.unit_type().json_name()).collect();
    assert_eq!(types, ["operational", "recovery", "failover"]);
    let inst = instance_ids(&dir)[0].clone();
    for u in units {
        assert_eq!(u.instance().0, inst);
        assert!(
            u.descriptor.location.starts_with("[zone-a]."),
            "{}",
            u.descriptor.location
        );
        assert!(client.query(u).unwrap().imprint_mode());
    }
    // The start-up line names the address and every unit.
    let logs = server.logs();
    let start = logs
        .lines()
        .find(|l| l.contains("tke-unitd listening on"))
        .unwrap();
    assert!(start.contains(&format!("127.0.0.1:{port}")), "{start}");
    for u in units {
        assert!(start.contains(&u.id().uuid()), "{start}");
    }

    // Health needs no key; version and the certificate do.
    let auth = format!("Bearer {api_key}");
    let r = raw(port, &ca, &request("GET", "/v1/health", &[], b""));
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("ok")));
    let r = raw(
        port,
        &ca,
        &request("GET", "/v1/version", &[("Authorization", &auth)], b""),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["server"], "tke-unitd");
    assert_eq!(r.json()["api"], "v1");
    assert_eq!(r.json()["protocol"], "TKE-Protocol-v4");
    let u = &units[0];
    let r = raw(
        port,
        &ca,
        &request(
            "GET",
            &format!("/v1/tke/{inst}/hsms/{}/certificate", u.id().uuid()),
            &[("Authorization", &auth)],
            b"",
        ),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/pkix-cert"));
    assert_eq!(r.body, u.certificate.der());
}

#[test]
fn api_keys_open_one_instance_only() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("srv");
    let port = free_port();
    init(
        &dir,
        port,
        &["--instances", "2", "--operational", "1", "--recovery", "0"],
    );
    let server = ServerProc::start(&dir, port);
    let ca = ca_of(&dir);
    let ids = instance_ids(&dir);
    let (k1, k2) = (key(&dir, "api-key-1"), key(&dir, "api-key-2"));
    let list2 = transport(&server.url(), &ca, &dir.join("api-key-2"))
        .list_units()
        .unwrap();
    assert_eq!(list2.len(), 1);
    assert_eq!(list2[0].instance.0, ids[1]);
    let u2 = list2[0].unit_id.uuid();
    let list1 = transport(&server.url(), &ca, &dir.join("api-key-1"))
        .list_units()
        .unwrap();
    assert_eq!(list1.len(), 1, "key 1 sees only instance 1");
    assert_eq!(list1[0].instance.0, ids[0]);

    let get = |path: &str, auth: Option<&str>| {
        let h: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
        raw(port, &ca, &request("GET", path, &h, b""))
    };
    // No key, a wrong key, another scheme: 401 with a JSON error.
    let wrong = format!("Bearer tkek_{}", "0".repeat(64));
    for (auth, code) in [
        (None, "missing_api_key"),
        (Some(wrong.as_str()), "invalid_api_key"),
        (Some("Basic dXNlcjpwYXNz"), "invalid_api_key"),
    ] {
        let r = get("/v1/instances", auth);
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(r.json()["code"], code);
        assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    }
    // Key 1 on instance 2: 403, whatever the resource.
    let b1 = format!("Bearer {k1}");
    let r = get(&format!("/v1/tke/{}/hsms", ids[1]), Some(&b1));
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["code"], "forbidden");
    assert!(r.json()["message"].as_str().unwrap().contains(&ids[1]));
    let query = Request::Query(Query {
        unit_id: list2[0].unit_id,
        nonce: Nonce::random(),
    })
    .to_der()
    .unwrap();
    let len = query.len().to_string();
    let post = |path: String| {
        raw(
            port,
            &ca,
            &request(
                "POST",
                &path,
                &[
                    ("Authorization", &b1),
                    ("Content-Type", "application/vnd.tke.request+der"),
                    ("Content-Length", &len),
                ],
                &query,
            ),
        )
    };
    let r = post(format!("/v1/tke/{}/hsms/{u2}/query", ids[1]));
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (403, Some("forbidden"))
    );
    // ... and through its own instance's path, the unit is not found there.
    let r = post(format!("/v1/tke/{}/hsms/{u2}/query", ids[0]));
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (404, Some("unit_not_found"))
    );
    // The client transport reports the 403 with the server's words.
    let err = transport(&server.url(), &ca, &dir.join("api-key-1"))
        .for_instance(tke_client::InstanceId(ids[1].clone()))
        .list_units()
        .unwrap_err();
    match err {
        ClientError::Network { ref source, .. } => match source.as_ref() {
            HttpsError::Status {
                status: 403, code, ..
            } => assert_eq!(code, "forbidden"),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    // The logs name keys by id only.
    let logs = server.logs();
    assert!(logs.contains("key_id="));
    for k in [&k1, &k2] {
        assert!(!logs.contains(&k[5..25]), "a key is in the logs");
    }
}

#[test]
fn a_server_not_certified_by_the_pinned_ca_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    let port = free_port();
    init(&a, port, &["--operational", "1", "--recovery", "0"]);
    init(&b, free_port(), &["--operational", "1", "--recovery", "0"]);
    let server = ServerProc::start(&a, port);
    let err = transport(&server.url(), &ca_of(&b), &a.join("api-key"))
        .list_units()
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ClientError::Network { source, .. }
                if matches!(source.as_ref(), HttpsError::UntrustedServer { .. })
        ),
        "{err:?}"
    );
    assert!(
        tke_proto::ErrorChain(&err)
            .to_string()
            .contains("not trusted"),
        "{err:?}"
    );
    // Nothing was sent: the server logged no request.
    assert!(!server.logs().contains(" request "), "{}", server.logs());
}

#[test]
fn bad_requests_get_a_json_4xx_and_the_server_keeps_serving() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("srv");
    let port = free_port();
    init(&dir, port, &["--operational", "1", "--recovery", "0"]);
    let server = ServerProc::start(&dir, port);
    let ca = ca_of(&dir);
    let client = client(&server);
    let unit = &client.units()[0];
    let inst = unit.instance().0.clone();
    let auth = format!("Bearer {}", key(&dir, "api-key"));
    let q = format!("/v1/tke/{inst}/hsms/{}/query", unit.id().uuid());
    let c = format!("/v1/tke/{inst}/hsms/{}/command", unit.id().uuid());
    let good = Request::Query(Query {
        unit_id: unit.id(),
        nonce: Nonce::random(),
    })
    .to_der()
    .unwrap();
    let mut trailing = good.clone();
    trailing.push(0);
    let der = "application/vnd.tke.request+der";
    let post = |path: &str, ct: Option<&str>, body: &[u8]| {
        let len = body.len().to_string();
        let mut h = vec![("Authorization", auth.as_str()), ("Content-Length", &len)];
        if let Some(ct) = ct {
            h.push(("Content-Type", ct));
        }
        request("POST", path, &h, body)
    };
    let big = format!("X-Big: {}\r\n", "b".repeat(10_000));
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed DER",
            post(&q, Some(der), &[0x30, 0x03, 0x02, 0x01]),
            400,
            "malformed_request",
        ),
        (
            "trailing bytes",
            post(&q, Some(der), &trailing),
            400,
            "malformed_request",
        ),
        (
            "not DER",
            post(&q, Some(der), b"hello"),
            400,
            "malformed_request",
        ),
        (
            "a query to the command endpoint",
            post(&c, Some(der), &good),
            400,
            "wrong_request_kind",
        ),
        (
            "oversize body",
            request(
                "POST",
                &q,
                &[
                    ("Authorization", &auth),
                    ("Content-Type", der),
                    ("Content-Length", "1000000"),
                ],
                b"",
            ),
            413,
            "payload_too_large",
        ),
        (
            "wrong method",
            request("GET", &q, &[("Authorization", &auth)], b""),
            405,
            "method_not_allowed",
        ),
        (
            "wrong content type",
            post(&q, Some("application/json"), &good),
            415,
            "unsupported_media_type",
        ),
        (
            "no content type",
            post(&q, None, &good),
            415,
            "unsupported_media_type",
        ),
        (
            "no content length",
            request(
                "POST",
                &q,
                &[("Authorization", &auth), ("Content-Type", der)],
                b"",
            ),
            411,
            "length_required",
        ),
        (
            "chunked body",
            request(
                "POST",
                &q,
                &[
                    ("Authorization", &auth),
                    ("Content-Type", der),
                    ("Transfer-Encoding", "chunked"),
                ],
                b"0\r\n\r\n",
            ),
            501,
            "unsupported_transfer_encoding",
        ),
        (
            "unknown path",
            request("GET", "/v1/nothing", &[("Authorization", &auth)], b""),
            404,
            "not_found",
        ),
        (
            "unknown unit",
            post(
                &format!("/v1/tke/{inst}/hsms/{}/query", UnitId::random().uuid()),
                Some(der),
                &good,
            ),
            404,
            "unit_not_found",
        ),
        (
            "not HTTP",
            b"\x00\x01GARBAGE\r\n\r\n".to_vec(),
            400,
            "bad_http",
        ),
        (
            "huge headers",
            format!("GET /v1/health HTTP/1.1\r\n{big}\r\n").into_bytes(),
            431,
            "headers_too_large",
        ),
    ];
    // An oversize body sent whole, as clients send it before they read, a few times (the
    // reset it used to cause raced with the answer): the server reads it before answering,
    // so the client reads the 413 instead of a reset connection.
    let whole = post(&q, Some(der), &vec![0x30; 1000 * 1024]);
    let cases = cases.into_iter().chain((0..8).map(|_| {
        (
            "oversize body sent whole",
            whole.clone(),
            413,
            "payload_too_large",
        )
    }));
    for (name, bytes, status, code) in cases {
        let r = raw(port, &ca, &bytes);
        assert_eq!(
            r.status,
            status,
            "{name}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.header("content-type"), Some("application/json"), "{name}");
        let j = r.json();
        assert_eq!(j["code"], code, "{name}");
        assert_eq!(j["status"], status, "{name}");
        assert!(
            j["message"].as_str().is_some_and(|m| m.len() > 10),
            "{name}: {j}"
        );
        if status == 405 {
            assert_eq!(r.header("allow"), Some("POST"));
        }
        // The server keeps serving.
        assert!(client.query(unit).unwrap().imprint_mode(), "after {name}");
    }
}

/// Wraps a transport and keeps a copy of every request it carries (the wire, as an
/// eavesdropper on the TLS endpoint would see it).
struct Recorder {
    inner: tke_client::HttpsTransport,
    seen: Mutex<Vec<Vec<u8>>>,
}

impl Transport for Recorder {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn list_units(&self) -> Result<Vec<UnitDescriptor>, ClientError> {
        self.inner.list_units()
    }
    fn exchange(&self, unit: &UnitId, request_der: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.seen.lock().unwrap().push(request_der.to_vec());
        self.inner.exchange(unit, request_der)
    }
}

#[test]
fn a_captured_signed_command_sent_again_is_refused_as_a_replay() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("srv");
    let port = free_port();
    init(&dir, port, &["--operational", "1", "--recovery", "0"]);
    let mut server = ServerProc::start(&dir, port);
    let ca = ca_of(&dir);
    let rec = Arc::new(Recorder {
        inner: transport(&server.url(), &ca, &dir.join("api-key")),
        seen: Mutex::new(Vec::new()),
    });
    let t: Arc<dyn Transport> = rec.clone();
    let client = tke_client::Client::connect(vec![(t, ca.clone())]).unwrap();
    let u = &client.units()[0];
    let alice = MemSigner::new("alice");
    client
        .run(u, &Command::AddAdmin(alice.certificate().clone()), &[])
        .unwrap();
    let one = Threshold::new(1).unwrap();
    client
        .run(
            u,
            &Command::SetThresholds {
                signature: one,
                revocation: one,
            },
            &[&alice],
        )
        .unwrap();
    client.run(u, &Command::ClearNew, &[&alice]).unwrap();
    let captured = rec
        .seen
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r.first() == Some(&0xa1))
        .cloned()
        .unwrap();
    let before = client.query(u).unwrap().counter;

    let r = raw(
        port,
        &ca,
        &request(
            "POST",
            &format!("/v1/tke/{}/hsms/{}/command", u.instance().0, u.id().uuid()),
            &[
                ("Authorization", &format!("Bearer {}", key(&dir, "api-key"))),
                ("Content-Type", "application/vnd.tke.request+der"),
                ("Content-Length", &captured.len().to_string()),
            ],
            &captured,
        ),
    );
    assert_eq!(r.status, 200, "the unit itself answers, signed");
    let body = SignedResponse::from_der(&r.body)
        .unwrap()
        .verify(&u.certificate.verifying_key(), &u.id(), &captured)
        .unwrap();
    assert_eq!(body.error(), Some(ModuleError::INVALID_COUNTER));
    assert_eq!(body.counter, before);
    assert_eq!(client.query(u).unwrap().counter, before, "nothing ran");
    // The request's log line is written once its answer is sent: wait for it.
    server.wait_for_log("rc=\"163/0\"", Duration::from_secs(10));
}

#[test]
fn a_unit_that_cannot_save_its_state_answers_an_internal_error_and_the_log_says_why() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("srv");
    let port = free_port();
    init(&dir, port, &["--operational", "1", "--recovery", "0"]);
    // The file store writes into the unit's directory at each command (the journal's
    // failed appends are tested in tke-unit).
    let mut server = ServerProc::start_with(&dir, port, &["--state-store", "file"]);
    let client = client(&server);
    let u = &client.units()[0];
    let before = client.query(u).unwrap();
    // The unit's directory goes away under the running server: its next write fails (the
    // command's audit record, appended before the state is saved).
    let unit_dir = dir.join("units").join(u.id().uuid());
    fs::rename(&unit_dir, dir.join("units").join("moved-away")).unwrap();
    let alice = MemSigner::new("alice");
    let refused = client
        .run(u, &Command::AddAdmin(alice.certificate().clone()), &[])
        .unwrap_err();
    assert!(
        matches!(&refused, ClientError::Module { error, .. } if *error == ModuleError::INTERNAL),
        "{refused:?}"
    );
    assert_eq!(client.query(u).unwrap(), before, "the unit kept its state");
    server.wait_for_log(
        "the unit answered an internal error",
        Duration::from_secs(10),
    );
    let logs = server.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("the unit answered an internal error"))
        .unwrap_or_else(|| panic!("no internal error logged:\n{logs}"));
    let uuid = u.id().uuid().to_string();
    for part in [
        uuid.as_str(),
        "cannot append the command's record to its audit log",
        &unit_dir.join("audit.log").display().to_string(),
        "No such file or directory",
    ] {
        assert!(line.contains(part), "{part:?} missing in {line}");
    }
    assert!(logs.contains("rc=\"500/0\""), "{logs}");
}

#[test]
fn sigterm_lets_commands_in_progress_finish_and_every_answered_command_is_on_disk() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("srv");
    let port = free_port();
    init(&dir, port, &["--operational", "2", "--recovery", "0"]);
    let mut server = ServerProc::start(&dir, port);
    let client = client(&server);
    let alice = MemSigner::new("alice");
    set_up(&client, &alice);
    let start: Vec<u64> = client
        .units()
        .iter()
        .map(|u| client.query(u).unwrap().counter)
        .collect();
    // Two threads per unit send signed commands until the server goes away.
    let answered = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let per_unit: Vec<AtomicU64> = client.units().iter().map(|_| AtomicU64::new(0)).collect();
    std::thread::scope(|s| {
        for (i, u) in client.units().iter().enumerate() {
            for _ in 0..2 {
                let (client, alice, answered, stop, per_unit) =
                    (&client, &alice, &answered, &stop, &per_unit);
                s.spawn(move || {
                    for _ in 0..2000 {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        match client.run(u, &Command::ClearNew, &[alice]) {
                            Ok(_) => {
                                answered.fetch_add(1, Ordering::SeqCst);
                                per_unit[i].fetch_add(1, Ordering::SeqCst);
                            }
                            Err(_) => break,
                        }
                    }
                });
            }
        }
        while answered.load(Ordering::SeqCst) < 20 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = server.signal_and_wait("TERM", Duration::from_secs(30));
        stop.store(true, Ordering::SeqCst);
        assert!(status.success(), "graceful stop exits 0: {status}");
    });
    let logs = server.logs();
    assert!(
        logs.contains("signal received: stopping gracefully"),
        "{logs}"
    );
    assert!(logs.contains("tke-unitd stopped"), "{logs}");
    drop(server);

    // Restarted, each unit's counter counts exactly the commands that were answered:
    // none ran unanswered, none answered was lost.
    let server = ServerProc::start(&dir, port);
    let client = common::client(&server);
    for (i, u) in client.units().iter().enumerate() {
        let counter = client.query(u).unwrap().counter;
        assert_eq!(
            counter,
            start[i] + per_unit[i].load(Ordering::SeqCst),
            "unit {i}"
        );
    }
}

#[test]
fn slow_clients_are_cut_off_by_the_read_deadline() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("srv");
    let port = free_port();
    init(&dir, port, &["--operational", "1", "--recovery", "0"]);
    let config = dir.join("unitd.toml");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        text.replace("read_timeout_secs = 10", "read_timeout_secs = 1"),
    )
    .unwrap();
    let server = ServerProc::start(&dir, port);
    let ca = ca_of(&dir);
    // A head that never ends: 408 after the deadline, with a JSON error.
    let started = std::time::Instant::now();
    let r = raw(port, &ca, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n");
    assert_eq!(r.status, 408);
    assert_eq!(r.json()["code"], "request_timeout");
    assert!(started.elapsed() < Duration::from_secs(10));
    // A connection that never even starts TLS is closed.
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut rest = Vec::new();
    let ended = std::io::Read::read_to_end(&mut tcp, &mut rest);
    assert!(
        ended.is_ok() && rest.len() < 64,
        "the server closes an idle connection (at most a TLS alert first): {ended:?}"
    );
    // And the server keeps serving.
    assert!(client(&server).query(&client(&server).units()[0]).is_ok());
}

/// The peer address (`127.0.0.1:PORT`) of each exchange the server logged, in order: one
/// port per client connection.
fn exchange_peers(logs: &str) -> Vec<String> {
    logs.lines()
        .filter(|l| l.contains(" request ") && l.contains("/hsms/"))
        .filter_map(|l| l.split("peer=").nth(1))
        .filter_map(|p| p.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_client_reuses_connections_but_sends_a_command_only_on_one_used_moments_ago() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("srv");
    let port = free_port();
    init(&dir, port, &["--operational", "1", "--recovery", "0"]);
    let server = ServerProc::start(&dir, port);
    let t = transport(&server.url(), &ca_of(&dir), &dir.join("api-key"));
    let unit = t.list_units().unwrap()[0].unit_id;
    let query = Request::Query(Query {
        unit_id: unit,
        nonce: Nonce::random(),
    })
    .to_der()
    .unwrap();
    // A command the server refuses (400, body read): enough to see which connection
    // carries it.
    let command = [0xa1, 0x00];
    let is_refused = |r: Result<Vec<u8>, ClientError>| match r {
        Err(ClientError::Network { source, .. }) => assert_eq!(source.status(), Some(400)),
        other => panic!("{other:?}"),
    };
    t.exchange(&unit, &query).unwrap();
    t.exchange(&unit, &query).unwrap();
    // 0.5 s later: a query still reuses the connection, a command does not.
    std::thread::sleep(Duration::from_millis(500));
    t.exchange(&unit, &query).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    is_refused(t.exchange(&unit, &command));
    // Right after: a command reuses the connection.
    is_refused(t.exchange(&unit, &command));
    let mut peers = Vec::new();
    for _ in 0..100 {
        peers = exchange_peers(&server.logs());
        if peers.len() == 5 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(peers.len(), 5, "{}", server.logs());
    assert_eq!(peers[0], peers[1], "queries share a connection");
    assert_eq!(peers[1], peers[2], "a query reuses one used within 2 s");
    assert_ne!(
        peers[2], peers[3],
        "a command never goes on one idle for 0.5 s"
    );
    assert_eq!(peers[3], peers[4], "a command reuses one used moments ago");
}
