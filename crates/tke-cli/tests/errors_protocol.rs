//! `tke` against a server whose unit speaks protocol version 1: its device signatures
//! carry no context label (`docs/protocol.md` §10.1). The real binary refuses the answers,
//! names the unit and both versions, and exits 1; what the operator reads is a snapshot.
//!
//! No version 1 server exists any more, so the test plays one: a small HTTPS server on
//! loopback with the TLS certificate, fleet CA and API key that `tke-unitd init` made,
//! listing one unit certified by that CA and signing its answers the version 1 way.
//!
//! The same fake server also lists its operational unit as a recovery unit: the real
//! binary refuses the listing, naming the unit, because the unit's device certificate
//! states its type.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    sync::Arc,
    thread,
};

use common::Workstation;
use tke_proto::{
    der::pem::{self, LineEnding},
    p256::{
        ecdsa::{signature::Signer as _, SigningKey},
        pkcs8::DecodePrivateKey,
    },
    DeviceCertificate, UnitId,
};
use tke_test_support::{
    server::{free_port, init, CA_PASSPHRASE},
    versions::imprint_answer,
};

/// The fake unit's id, fixed so that the snapshot is stable.
const UNIT: [u8; 16] = [
    0x0f, 0x0e, 0x0d, 0x0c, 0x0b, 0x0a, 0x49, 0x88, 0x87, 0x76, 0x65, 0x54, 0x43, 0x32, 0x21, 0x10,
];

/// A unit that signs the protocol version 1 way, behind an HTTPS listing.
struct OldUnit {
    instance: String,
    /// The type the listing gives the unit (its certificate says operational).
    listed_type: &'static str,
    key: SigningKey,
    certificate_pem: String,
}

impl OldUnit {
    /// The answer to one request (method, path, body): status, content type, body.
    fn answer(&self, method: &str, path: &str, body: &[u8]) -> (u16, &'static str, Vec<u8>) {
        let json = |v: serde_json::Value| (200, "application/json", v.to_string().into_bytes());
        let id = UnitId(UNIT).uuid();
        let inst = &self.instance;
        match (method, path) {
            ("GET", "/v1/instances") => {
                json(serde_json::json!({"instances": [{"id": inst, "units": 1}]}))
            }
            ("GET", p) if p == format!("/v1/tke/{inst}/hsms") => json(serde_json::json!({
                "instance": inst,
                "units": [{
                    "id": id,
                    "type": self.listed_type,
                    "location": "[zone-a].[old].[01].[01]",
                    "device_certificate": self.certificate_pem,
                }],
            })),
            ("POST", p) if p == format!("/v1/tke/{inst}/hsms/{id}/query") => (
                200,
                "application/vnd.tke.response+der",
                imprint_answer(UnitId(UNIT), &self.key, body, 1),
            ),
            _ => (
                404,
                "application/json",
                br#"{"status":404,"code":"not_found","message":"No such resource."}"#.to_vec(),
            ),
        }
    }

    /// Serves one connection: one request, one answer, then `Connection: close`.
    fn serve(&self, tls: Arc<rustls::ServerConfig>, tcp: TcpStream) {
        let conn = rustls::ServerConnection::new(tls).unwrap();
        let mut reader = BufReader::new(rustls::StreamOwned::new(conn, tcp));
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut words = line.split_whitespace();
        let (method, path) = (
            words.next().unwrap_or_default().to_owned(),
            words.next().unwrap_or_default().to_owned(),
        );
        let mut length = 0;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            if h.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = h.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let (status, content_type, answer) = self.answer(&method, &path, &body);
        let mut stream = reader.into_inner();
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            answer.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&answer).unwrap();
        stream.flush().unwrap();
        stream.conn.send_close_notify();
        let _ = stream.flush();
    }
}

fn pem_der(path: &Path) -> Vec<u8> {
    pem::decode_vec(fs::read_to_string(path).unwrap().as_bytes())
        .unwrap()
        .1
}

/// Plays a version 1 unit on `port` with what `tke-unitd init` made in `dir`, listed
/// with the type `listed_type`.
fn start_old_server(dir: &Path, port: u16, listed_type: &'static str) {
    let ca_pem = fs::read_to_string(dir.join("ca.pem")).unwrap();
    let ca = tke_proto::CaCertificate::from_pem(&ca_pem).unwrap();
    // `tke-unitd init` keeps the fleet CA key encrypted under the tests' passphrase.
    let ca_key = SigningKey::from_pkcs8_encrypted_pem(
        &fs::read_to_string(dir.join("ca.key.pem")).unwrap(),
        CA_PASSPHRASE,
    )
    .unwrap();
    let key = SigningKey::random(&mut rand_core::OsRng);
    let instance = fs::read_to_string(dir.join("instance-id"))
        .unwrap()
        .trim()
        .to_owned();
    let description = tke_proto::UnitDescription {
        unit_type: tke_proto::UnitType::Operational,
        instance_id: tke_proto::InstanceId::from_uuid(&instance).unwrap(),
    };
    let cert = DeviceCertificate::issue(
        &ca,
        &UnitId(UNIT),
        &description,
        &key.verifying_key().into(),
        Box::new(move |m| Ok(ca_key.sign(m))),
    )
    .unwrap();
    let unit = Arc::new(OldUnit {
        instance,
        listed_type,
        key,
        certificate_pem: pem::encode_string("CERTIFICATE", LineEnding::LF, cert.der()).unwrap(),
    });
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![pem_der(&dir.join("tls/server.pem")).into()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(
                pem_der(&dir.join("tls/server.key.pem")).into(),
            ),
        )
        .unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = Arc::new(tls);
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    // Serves until the test process ends.
    thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let (unit, tls) = (unit.clone(), tls.clone());
            thread::spawn(move || unit.serve(tls, tcp));
        }
    });
}

#[test]
fn a_unit_that_signs_the_protocol_version_1_way_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("old");
    let port = free_port();
    init(&dir, port, &["--operational", "1", "--recovery", "0"]);
    start_old_server(&dir, port, "operational");
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let path = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    w.ok(&[
        "target",
        "add",
        "old",
        &format!("https://127.0.0.1:{port}"),
        "--ca",
        &path("ca.pem"),
        "--api-key-file",
        &path("api-key"),
    ]);
    w.ok(&["cryptounit-add", "1"]);
    w.check(
        "server_unit_protocol_version_1",
        &["cryptounit-compare"],
        1,
        &[(root.path(), "[ROOT]")],
    );
}

#[test]
fn a_listing_that_gives_a_unit_another_type_than_its_certificate_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("liar");
    let port = free_port();
    init(&dir, port, &["--operational", "1", "--recovery", "0"]);
    start_old_server(&dir, port, "recovery");
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let path = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    w.ok(&[
        "target",
        "add",
        "liar",
        &format!("https://127.0.0.1:{port}"),
        "--ca",
        &path("ca.pem"),
        "--api-key-file",
        &path("api-key"),
        // `target add` would refuse it at once; this test is about `cryptounits`.
        "--no-check",
    ]);
    w.check(
        "server_lists_another_unit_type",
        &["cryptounits"],
        1,
        &[(root.path(), "[ROOT]")],
    );
}
