//! Helpers of the tke-unitd tests: the server-process fixture and in-memory
//! administrators of `tke-test-support`, and raw HTTP requests to a server.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]

use std::{
    fs,
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    sync::Arc,
    time::Duration,
};

use tke_client::Client;
use tke_proto::{CaCertificate, Command, Threshold};
use tke_sigkey::Signer as _;

pub use tke_test_support::{server::*, MemSigner};

/// The server binary Cargo built for these tests.
pub const UNITD: &str = env!("CARGO_BIN_EXE_tke-unitd");

/// An HTTP answer read raw.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A TLS 1.3 client configuration trusting `ca` only.
pub fn tls_client(ca: &CaCertificate) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca.der().to_vec()))
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(cfg)
}

/// Sends `bytes` as they are over a TLS connection trusting `ca`, and reads one answer.
pub fn raw(port: u16, ca: &CaCertificate, bytes: &[u8]) -> Raw {
    let conn = rustls::ClientConnection::new(
        tls_client(ca),
        rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    s.write_all(bytes).unwrap();
    s.flush().unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(used) = r.parse(&buf).unwrap() {
            let headers: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let len: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.parse().unwrap())
                .unwrap();
            let status = r.code.unwrap();
            while buf.len() < used + len {
                let n = s.read(&mut chunk).unwrap();
                assert!(n > 0, "answer cut short");
                buf.extend_from_slice(&chunk[..n]);
            }
            return Raw {
                status,
                headers,
                body: buf[used..used + len].to_vec(),
            };
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed without an answer");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A request with headers and a body, as raw bytes.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut v = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n").into_bytes();
    for (n, h) in headers {
        v.extend_from_slice(format!("{n}: {h}\r\n").as_bytes());
    }
    v.extend_from_slice(b"\r\n");
    v.extend_from_slice(body);
    v
}

pub fn key(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name))
        .unwrap()
        .trim()
        .to_owned()
}

pub fn instance_ids(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("instance-id"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Installs `alice` on every unit of `client` (in imprint mode) and sets both thresholds to
/// one, so that she alone signs commands.
pub fn set_up(client: &Client, alice: &MemSigner) {
    let one = Threshold::new(1).unwrap();
    for u in client.units() {
        client
            .run(u, &Command::AddAdmin(alice.certificate().clone()), &[])
            .unwrap();
        client
            .run(
                u,
                &Command::SetThresholds {
                    signature: one,
                    revocation: one,
                },
                &[alice],
            )
            .unwrap();
    }
}
